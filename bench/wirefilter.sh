#!/usr/bin/env bash
# Frames/s through a wirefilter with no impairment: filo wirefilter beside Debian's wirefilter,
# in the same run. Both sit between the same two (filo) switches; a libvdeplug sender on one
# switch, a receiver on the other (bench/vdeclient.c). Also the wirefilter process's CPU
# time per delivered frame.
# Usage: bench/wirefilter.sh [FRAMES]   (default 200000)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200000}
cargo build --release --quiet -p filo --bin filo
FILO=$PWD/target/release/filo
T=$(mktemp -d /tmp/filo-bwf-XXXXXX)
CLIENT=$T/vdeclient
gcc -O2 -o "$CLIENT" bench/vdeclient.c -lvdeplug
cleanup() { jobs -p | xargs -r kill 2>/dev/null || true; for f in "$T"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT
mkfifo "$T/hold"; exec 3<>"$T/hold"
# The two switches are filo's (the same for both wirefilters): Debian's vde_switch drops
# silently under load and would dominate what is measured.
"$FILO" switch "$T/a" --nostdin -d -p "$T/a.pid"; "$FILO" switch "$T/b" --nostdin -d -p "$T/b.pid"
sleep 0.3

cpu_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%.0f", s }'; }

run() { # $1 = deb|filo, $2 = size -> "fps loss% ns/frame"
  if [ "$1" = deb ]; then
    wirefilter -v "$T/a:$T/b" <"$T/hold" >/dev/null 2>&1 &
  else
    "$FILO" wirefilter "vde://$T/a" "vde://$T/b" </dev/null >/dev/null 2>&1 &
  fi
  local wf=$!
  sleep 0.5
  "$CLIENT" "vde://$T/b" recv 1000 b1 >"$T/rx" &
  local rx=$!
  sleep 0.5
  local c0; c0=$(cpu_ns $wf)
  "$CLIENT" "vde://$T/a" send "$N" "$2" b1 a1 >/dev/null 2>&1 &
  local tx=$!
  wait $rx || true
  local c1; c1=$(cpu_ns $wf)
  kill $tx $wf 2>/dev/null || true; wait $tx $wf 2>/dev/null || true
  grep '^[0-9]' "$T/rx" | awk -v n="$N" -v cpu=$((c1 - c0)) '{ printf "%.0f %.2f %.0f\n", ($2 > 0 ? $1 / $2 : 0), 100 * (n - $1) / n, ($1 > 0 ? cpu / $1 : 0) }'
}

printf '%-8s | %12s %7s %9s | %12s %7s %9s | %s\n' size "deb f/s" "loss%" "ns/frame" "filo f/s" "loss%" "ns/frame" "ratio f/s, CPU/frame"
for size in 64 1514; do
  read -r df dl dc < <(run deb $size)
  read -r ff fl fc < <(run filo $size)
  printf '%-8s | %12s %7s %9s | %12s %7s %9s | %s %s\n' "${size}B" "$df" "$dl" "$dc" "$ff" "$fl" "$fc" \
    "$(awk -v a="$ff" -v b="$df" 'BEGIN { printf "%.2fx", (b > 0 ? a / b : 0) }')" \
    "$(awk -v a="$fc" -v b="$dc" 'BEGIN { printf "%.2fx", (b > 0 ? a / b : 0) }')"
done
