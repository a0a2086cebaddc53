#!/usr/bin/env bash
# Frames/s through a wirefilter with no impairment: filo wirefilter beside Debian's wirefilter,
# in the same run. All sit between the same two (filo) switches; a libvdeplug sender on one
# switch, a receiver on the other (bench/vdeclient.c). Debian's wirefilter runs three ways, so
# that the filter and what connects it to the switches are separated:
#   - with its own libvdeplug connections (`wirefilter -v A:B`): the baseline;
#   - in stream mode between two `vde_plug`s (`dpipe vde_plug A = wirefilter = vde_plug B`);
#   - in stream mode between two `filo plug`s (`dpipe filo plug A = wirefilter = filo plug B`).
# Also the CPU time per delivered frame of every process between the two switches (the
# wirefilter, and in the dpipe rows dpipe and both plugs too).
# Every case runs ROUNDS times, the order of the rows reversed every other round; each cell is
# the median of its rounds and each ratio the median of the per-round ratios to Debian's
# `wirefilter -v` (both sides of a ratio from the same round).
# Usage: bench/wirefilter.sh [FRAMES] [ROUNDS]   (defaults 200000 and 3)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200000}
ROUNDS=${2:-3}
cargo build --release --quiet -p filo --bin filo
FILO=$PWD/target/release/filo
T=$(mktemp -d /tmp/filo-bwf-XXXXXX)
CLIENT=$T/vdeclient
gcc -O2 -o "$CLIENT" bench/vdeclient.c -lvdeplug
cleanup() { jobs -p | xargs -r kill 2>/dev/null || true; for f in "$T"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT
mkfifo "$T/hold"; exec 3<>"$T/hold"
# The two switches are filo's (the same for every wirefilter): Debian's vde_switch drops
# silently under load and would dominate what is measured.
"$FILO" switch "$T/a" --nostdin -d -p "$T/a.pid"; "$FILO" switch "$T/b" --nostdin -d -p "$T/b.pid"
sleep 0.3

cpu_ns() { # on-CPU ns of every thread of the processes named
  local p
  for p in "$@"; do cat /proc/"$p"/task/*/schedstat 2>/dev/null || true; done | awk '{ s += $1 } END { printf "%.0f", s }'
}
tree() { # PID -> PID and its children
  echo "$1"
  cat /proc/"$1"/task/*/children 2>/dev/null | tr ' ' '\n' | grep . || true
}

run() { # $1 = deb|deb-vdeplug|deb-filoplug|filo, $2 = size -> "fps loss% ns/frame"
  case "$1" in
    deb) wirefilter -v "$T/a:$T/b" <"$T/hold" >/dev/null 2>&1 & ;;
    deb-vdeplug) dpipe vde_plug "vde://$T/a" = wirefilter = vde_plug "vde://$T/b" </dev/null >/dev/null 2>&1 & ;;
    deb-filoplug) dpipe "$FILO" plug "vde://$T/a" = wirefilter = "$FILO" plug "vde://$T/b" </dev/null >/dev/null 2>&1 & ;;
    filo) "$FILO" wirefilter "vde://$T/a" "vde://$T/b" </dev/null >/dev/null 2>&1 & ;;
  esac
  local wf=$!
  sleep 0.5
  "$CLIENT" "vde://$T/b" recv 1000 b1 >"$T/rx" &
  local rx=$!
  sleep 0.5
  local procs; procs=$(tree $wf)
  # shellcheck disable=SC2086
  local c0; c0=$(cpu_ns $procs)
  "$CLIENT" "vde://$T/a" send "$N" "$2" b1 a1 >/dev/null 2>&1 &
  local tx=$!
  wait $rx || true
  # shellcheck disable=SC2086
  local c1; c1=$(cpu_ns $procs)
  # shellcheck disable=SC2086
  kill $tx $procs 2>/dev/null || true; wait $tx $wf 2>/dev/null || true
  # A run that delivered nothing is a failure, never a 0 in the median.
  grep '^[0-9]' "$T/rx" | awk -v n="$N" -v cpu=$((c1 - c0)) -v kind="$1" '
    $1 == 0 { print "FAILED: nothing came through " kind > "/dev/stderr"; exit 1 }
    { printf "%.0f %.2f %.0f\n", ($2 > 0 ? $1 / $2 : 0), 100 * (n - $1) / n, cpu / $1 }'
}

in_order() { # ROUND KIND... -> the kinds, reversed in even rounds (neither side always first)
  local round=$1; shift
  if [ $((round % 2)) = 1 ]; then echo "$@"; else echo "$@" | tr ' ' '\n' | tac | tr '\n' ' '; fi
}

KINDS="deb deb-vdeplug deb-filoplug filo"
for round in $(seq "$ROUNDS"); do
  for size in 64 1514; do
    for kind in $(in_order "$round" $KINDS); do
      r=$(run "$kind" "$size")
      echo "$r" >>"$T/wf.$kind.$size"
    done
  done
done

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
col() { awk -v i="$2" '{ print $i }' "$1"; }
rratio() { # FILE_A FILE_B FIELD -> median over rounds of A/B (line N of each file is round N)
  paste -d ' ' <(col "$1" "$3") <(col "$2" "$3") | awk '$2 > 0 { printf "%.4f\n", $1 / $2 }' | median |
    awk '$1 != "-" { printf "%.2fx", $1; next } { print "-" }'
}
label() {
  case "$1" in
    deb) echo "Debian's, wirefilter -v A:B (libvdeplug)" ;;
    deb-vdeplug) echo "Debian's, dpipe between two vde_plug" ;;
    deb-filoplug) echo "Debian's, dpipe between two filo plug" ;;
    filo) echo "filo wirefilter vde://A vde://B" ;;
  esac
}
echo "Medians of $ROUNDS rounds, order reversed every other round; ratios are medians of per-round ratios to"
echo "Debian's wirefilter -v; ns/frame = CPU of every process between the switches per delivered frame"
printf '%-42s %-6s | %12s %7s %9s | %s\n' wirefilter size "f/s" "loss%" "ns/frame" "vs Debian's -v: f/s, CPU/frame"
for size in 64 1514; do
  for kind in $KINDS; do
    file=$T/wf.$kind.$size
    printf '%-42s %-6s | %12s %7s %9s | %s %s\n' "$(label "$kind")" "${size}B" \
      "$(col "$file" 1 | median)" "$(col "$file" 2 | median)" "$(col "$file" 3 | median)" \
      "$(rratio "$file" "$T/wf.deb.$size" 1)" "$(rratio "$file" "$T/wf.deb.$size" 3)"
  done
done
