#!/usr/bin/env bash
# Frames/s through plugs, filo beside Debian's vde_plug in the same run.
#   - ptp://: a point-to-point cable between two plugs
#   - vde://: two plugs on Debian's vde_switch
# Each endpoint is a plug in stream mode (stdin/stdout), fed by streamgen and drained by
# streamcount, so the only difference between the rows is the plug program.
# Usage: bench/plug.sh [FRAMES]   (default 200000 per run). Needs vde2 and vdeplug.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200000}
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

printf '%-10s %6s %10s %12s %8s %12s %8s %7s\n' path size frames "vde_plug f/s" "loss%" "filo f/s" "loss%" ratio
for path in ptp vde; do
  for size in 64 1514; do
    declare -A fps loss
    for kind in deb filo; do
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
      fps[$kind]=$(awk -v n="$got" -v s="$secs" 'BEGIN { printf "%.0f", (s > 0 ? n / s : 0) }')
      loss[$kind]=$(awk -v n="$got" -v t="$N" 'BEGIN { printf "%.1f", 100 * (t - n) / t }')
    done
    ratio=$(awk -v a="${fps[filo]}" -v b="${fps[deb]}" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
    printf '%-10s %6s %10s %12s %8s %12s %8s %7s\n' "$path://" "$size" "$N" "${fps[deb]}" "${loss[deb]}" "${fps[filo]}" "${loss[filo]}" "${ratio}x"
  done
done
