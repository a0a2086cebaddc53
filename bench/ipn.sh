#!/usr/bin/env bash
# ipn:// (filo's shared-memory bus) beside a switch and a bare cable, measured in the same run.
#   - delivered frames/s per receiver and the CPU of every process involved per delivered frame,
#     64- and 1514-byte frames:
#       filo plugs (bench's plugbench, batched) on ipn://, 1 -> 1 and 1 -> 3 (hub, broadcast);
#       the same libvdeplug C client (bench/vdeclient.c, unmodified, one frame per call) on
#       ipn:// through libvdeplug_ipn.so, on Debian's vde_switch, on filo's switch, and on
#       ptp:// (UNIX datagrams between the two clients: the kernel floor, no switch);
#     medians of ROUNDS interleaved rounds (default 3); ipn:// rows are lossless buses, so
#     delivered = sent; the switch rows count what arrives.
#   - round trip p50/p99 (64-byte ping through an echo client, 5000 pings; medians of
#     RTT_ROUNDS rounds, default 5): the C clients on ipn:// (and with busypoll), vde_switch,
#     filo's switch and ptp://.
# Usage: bench/ipn.sh [FRAMES_64] [FRAMES_1514]   (defaults 2000000 500000). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
N64=${1:-2000000}
N1514=${2:-500000}
cargo build --release --quiet -p filo --bin filo --example plugbench
# The plugin separately: with --bin/--example, cargo builds only those targets of every package.
cargo build --release --quiet -p filo-vdeplug-ipn
[ -f target/release/libvdeplug_ipn.so ] || { echo "bench/ipn.sh: cargo built no target/release/libvdeplug_ipn.so" >&2; exit 1; }
FILO=$PWD/target/release/filo
PB=$PWD/target/release/examples/plugbench
export VDEPLUGIN_PATH=$PWD/target/release:/usr/lib/x86_64-linux-gnu/vdeplug
T=$(mktemp -d /tmp/filo-bipn-XXXXXX)
CLIENT=$T/vdeclient
gcc -O2 -o "$CLIENT" bench/vdeclient.c -lvdeplug
SWPID=""
cleanup() {
  [ -n "$SWPID" ] && kill "$SWPID" 2>/dev/null || true
  jobs -p | xargs -r kill 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT

cpu_ns() { # on-CPU ns of all threads of $1 (0 when none)
  [ -n "$1" ] || { echo 0; return; }
  cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%.0f", s }'
}

# setup KIND -> prints the VNL to use, starting a switch when the kind needs one
setup() {
  rm -rf "$T/sw" "$T/sw.pid" "$T/bus" "$T/bus.lock" "$T"/ptp*
  case $1 in
    ipn) echo "ipn://$T/bus[lossless/timeout=10]" ;;
    ipn-busy) echo "ipn://$T/bus[lossless/timeout=10/busypoll]" ;;
    ptp) echo "ptp://$T/ptp" ;;
    deb|filo)
      if [ "$1" = deb ]; then
        vde_switch -s "$T/sw" -d -p "$T/sw.pid" >/dev/null 2>&1
      else
        "$FILO" switch "$T/sw" --nostdin -d -p "$T/sw.pid" >/dev/null 2>&1
      fi
      for _ in $(seq 50); do [ -S "$T/sw/ctl" ] && [ -s "$T/sw.pid" ] && break; sleep 0.1; done
      echo "vde://$T/sw" ;;
  esac
}
teardown() {
  if [ -s "$T/sw.pid" ]; then kill "$(cat "$T/sw.pid")" 2>/dev/null || true; sleep 0.3; fi
  rm -rf "$T/sw" "$T/sw.pid"
}

# flood PROG VNL SIZE COUNT RECEIVERS -> "frames/s-per-receiver ns-CPU-per-delivered-frame loss%"
# With one receiver the sender sends to it (unicast); with several it broadcasts and each
# receiver counts every test frame. CPU: sender + receivers + the switch (if any).
flood() {
  local prog=$1 vnl=$2 size=$3 count=$4 recv=$5 i
  local sw=""; [ -s "$T/sw.pid" ] && sw=$(cat "$T/sw.pid")
  for i in $(seq 1 "$recv"); do
    if [ "$recv" = 1 ]; then
      "$prog" "$vnl" recv 1000 b1 >"$T/rx.$i" &
    else
      "$prog" "$vnl" recv 1000 "b$i" any >"$T/rx.$i" &
    fi
  done
  sleep 0.7
  local dst=b1; [ "$recv" = 1 ] || dst=ff
  local cpu0; cpu0=$(cpu_ns "$sw")
  "$prog" "$vnl" send "$count" "$size" "$dst" a1 >"$T/tx" 2>/dev/null &
  local tx=$!
  for i in $(seq 1 "$recv"); do
    while ! grep -q '^[0-9]' "$T/rx.$i" 2>/dev/null; do sleep 0.1; done
  done
  local cpu1; cpu1=$(cpu_ns "$sw")
  kill $tx 2>/dev/null || true
  wait 2>/dev/null || true
  local txcpu; txcpu=$(awk '/^[0-9]/ { print $1; exit }' "$T/tx")
  cat "$T"/rx.* | grep '^[0-9]' | awk -v sent="$count" -v n="$recv" -v swcpu=$((cpu1 - cpu0)) -v txcpu="${txcpu:-0}" '
    { got += $1; rate += ($2 > 0 ? $1 / $2 : 0); cpu += $3 }
    END { cpu += txcpu + swcpu / 1e9
          printf "%.0f %.0f %.2f\n", rate / n, (got > 0 ? cpu * 1e9 / got : 0), 100 * (sent * n - got) / (sent * n) }'
  rm -f "$T"/rx.* "$T/tx"
}

rtt() { # VNL -> "p50 p99 replies"
  "$CLIENT" "$1" echo >/dev/null 2>&1 &
  local echo_pid=$!
  sleep 0.5
  "$CLIENT" "$1" ping 5000 64 || { echo "FAILED: no round trip through $1" >&2; kill $echo_pid; return 1; }
  kill $echo_pid 2>/dev/null || true
  wait $echo_pid 2>/dev/null || true
}

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }

# rows: name|program|kind|receivers
ROWS=(
  "filo plugs, ipn 1->1|$PB|ipn|1"
  "filo plugs, ipn 1->3|$PB|ipn|3"
  "filo plugs, filo switch 1->1|$PB|filo|1"
  "C clients, ipn 1->1 (plugin)|$CLIENT|ipn|1"
  "C clients, vde_switch 1->1|$CLIENT|deb|1"
  "C clients, filo switch 1->1|$CLIENT|filo|1"
  "C clients, ptp 1->1|$CLIENT|ptp|1"
)
for round in $(seq "${ROUNDS:-3}"); do
  for r in "${!ROWS[@]}"; do
    IFS='|' read -r name prog kind recv <<<"${ROWS[$r]}"
    for size in 64 1514; do
      n=$N64; [ "$size" = 1514 ] && n=$N1514
      # The C clients on kernel paths run at 0.2-0.6 M frames/s: a tenth of the frames keeps
      # rounds short (rates are per second of flow either way).
      case $prog:$kind in "$CLIENT":deb|"$CLIENT":filo|"$CLIENT":ptp) n=$((n / 10)) ;; esac
      vnl=$(setup "$kind")
      flood "$prog" "$vnl" "$size" "$n" "$recv" >>"$T/res.$r.$size"
      teardown
    done
  done
done
for round in $(seq "${RTT_ROUNDS:-5}"); do
  for kind in ipn ipn-busy deb filo ptp; do
    vnl=$(setup "$kind")
    rtt "$vnl" >>"$T/rtt.$kind"
    teardown
  done
done

declare -a V
col() { awk -v i="$2" '{ print $i }' "$1" | median; }
echo
echo "Frames/s per receiver, CPU (all processes) per delivered frame, loss; medians of ${ROUNDS:-3} rounds"
printf '%-32s | %12s %9s %6s | %12s %9s %6s\n' "" "64B f/s" "ns/frame" "loss%" "1514B f/s" "ns/frame" "loss%"
for r in "${!ROWS[@]}"; do
  IFS='|' read -r name _ _ _ <<<"${ROWS[$r]}"
  printf '%-32s | %12s %9s %6s | %12s %9s %6s\n' "$name" \
    "$(col "$T/res.$r.64" 1)" "$(col "$T/res.$r.64" 2)" "$(col "$T/res.$r.64" 3)" \
    "$(col "$T/res.$r.1514" 1)" "$(col "$T/res.$r.1514" 2)" "$(col "$T/res.$r.1514" 3)"
  V[$r]="$(col "$T/res.$r.64" 1) $(col "$T/res.$r.64" 2) $(col "$T/res.$r.1514" 1) $(col "$T/res.$r.1514" 2)"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }
v() { echo "${V[$1]}" | awk -v i="$2" '{ print $i }'; }
echo "C clients on ipn (plugin) vs vde_switch: 64B frames/s $(ratio "$(v 3 1)" "$(v 4 1)"), CPU/frame $(ratio "$(v 3 2)" "$(v 4 2)");" \
  "1514B frames/s $(ratio "$(v 3 3)" "$(v 4 3)"), CPU/frame $(ratio "$(v 3 4)" "$(v 4 4)")"
echo "C clients on ipn (plugin) vs ptp:// (kernel floor): 64B frames/s $(ratio "$(v 3 1)" "$(v 6 1)")"
echo "filo plugs on ipn vs on filo's switch: 64B frames/s $(ratio "$(v 0 1)" "$(v 2 1)"), CPU/frame $(ratio "$(v 0 2)" "$(v 2 2)")"
echo
echo "Round trip, 64-byte frames, C clients (us, p50/p99, medians of ${RTT_ROUNDS:-5} rounds):"
for kind in ipn ipn-busy deb filo ptp; do
  printf '  %-10s %8s / %-8s\n' "$kind" "$(col "$T/rtt.$kind" 1)" "$(col "$T/rtt.$kind" 2)"
done
echo "  (ipn = ipn:// through libvdeplug_ipn.so; ipn-busy with busypoll; deb = vde_switch; filo = filo switch)"
