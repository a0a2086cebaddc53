#!/usr/bin/env bash
# Frames/s through plugs, filo beside Debian's vde_plug in the same run.
#   - ptp://: a point-to-point cable between two plugs
#   - vde://: two plugs on Debian's vde_switch
# Each endpoint is a plug in stream mode (stdin/stdout), fed by streamgen and drained by
# streamcount, so the only difference between the rows is the plug program.
# Every case runs ROUNDS times, vde_plug first in odd rounds and filo first in even ones; each
# cell is the median of its rounds and the ratio the median of the per-round ratios.
# Usage: bench/plug.sh [FRAMES] [ROUNDS]   (defaults 200000 per run and 3). Needs vde2 and vdeplug.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200000}
ROUNDS=${2:-3}
cargo build --release --quiet -p filo --bin filo --example streamgen --example streamcount
FILO=$PWD/target/release/filo
GEN=$PWD/target/release/examples/streamgen
COUNT=$PWD/target/release/examples/streamcount
T=$(mktemp -d /tmp/filo-bench-XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$T"; }
trap cleanup EXIT

plug_cmd() { # $1 = filo|deb, $2 = VNL
  if [ "$1" = filo ]; then echo "$FILO plug $2"; else echo "vde_plug $2"; fi
}

# A fifo held open read-write by this shell: a plug reading it never sees EOF.
mkfifo "$T/hold"
exec 3<>"$T/hold"

# run KIND VNL_RX VNL_TX SIZE -> prints "delivered seconds"
run() {
  local kind=$1 rx=$2 tx=$3 size=$4
  rm -f "$T/rxfifo" "$T/txfifo"; mkfifo "$T/rxfifo" "$T/txfifo"
  $COUNT 1000 <"$T/rxfifo" >"$T/count" &
  local cnt=$!
  $(plug_cmd "$kind" "$rx") <"$T/hold" >"$T/rxfifo" 2>/dev/null &
  local rxp=$!
  sleep 0.5
  $GEN "$N" "$size" >"$T/txfifo" &
  local gen=$!
  $(plug_cmd "$kind" "$tx") <"$T/txfifo" >/dev/null 2>&1 &
  local txp=$!
  wait $cnt || true
  kill $rxp $txp $gen 2>/dev/null || true
  wait $rxp $txp $gen 2>/dev/null || true
  cat "$T/count"
}

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
for round in $(seq "$ROUNDS"); do
  order="deb filo"; [ $((round % 2)) = 0 ] && order="filo deb"
  for path in ptp vde; do
    for size in 64 1514; do
      for kind in $order; do
        if [ "$path" = vde ]; then
          vde_switch -s "$T/sw" -d -p "$T/sw.pid" >/dev/null 2>&1
          sleep 0.3
          rx="vde://$T/sw"; tx="vde://$T/sw"
        else
          rm -f "$T/link" "$T/link+"
          rx="ptp://$T/link"; tx="ptp://$T/link"
        fi
        read -r got secs < <(run "$kind" "$rx" "$tx" "$size")
        if [ "$path" = vde ]; then kill "$(cat "$T/sw.pid")" 2>/dev/null || true; sleep 0.2; rm -rf "$T/sw" "$T/sw.pid"; fi
        # Nothing delivered is a failure, never a 0 in the median.
        [ "${got:-0}" -gt 0 ] || { echo "FAILED: nothing came through $kind over $path:// ($size B)" >&2; exit 1; }
        # Line N of each file is round N.
        awk -v n="$got" -v s="$secs" -v t="$N" 'BEGIN { printf "%.0f %.1f\n", (s > 0 ? n / s : 0), 100 * (t - n) / t }' >>"$T/r.$path.$size.$kind"
      done
    done
  done
done

printf '%-10s %6s %10s %12s %8s %12s %8s %7s\n' path size frames "vde_plug f/s" "loss%" "filo f/s" "loss%" ratio
for path in ptp vde; do
  for size in 64 1514; do
    d=$T/r.$path.$size.deb; f=$T/r.$path.$size.filo
    ratio=$(paste -d ' ' "$f" "$d" | awk '$3 > 0 { printf "%.4f\n", $1 / $3 }' | median | awk '$1 != "-" { printf "%.2f", $1; next } { print "-" }')
    printf '%-10s %6s %10s %12s %8s %12s %8s %7s\n' "$path://" "$size" "$N" \
      "$(awk '{ print $1 }' "$d" | median)" "$(awk '{ print $2 }' "$d" | median)" \
      "$(awk '{ print $1 }' "$f" | median)" "$(awk '{ print $2 }' "$f" | median)" "${ratio}x"
  done
done
echo "(medians of $ROUNDS rounds, vde_plug first in odd rounds, filo in even; ratio: median of per-round ratios)"
