#!/usr/bin/env bash
# filo-stack measured in one run, beside the kernel's TCP/IP as the reference:
#   - TCP throughput (1 GiB, CRC-32 checked) and 1-byte round-trip latency:
#       stack <-> stack   two processes, each a filo stack, on a filo switch (super-frames)
#       stack <-> kernel  a filo stack and a namespace whose tap is on a filo switch (MTU 9000)
#       kernel <-> kernel two namespaces joined by a veth pair (the reference)
#   - the same through `filo wirefilter --loss 2` joining two switches: filo stacks, and
#     kernel TCP in two namespaces on the very same path (LOSSY_MIB, CRC-32 checked)
#   - resident memory per idle stack and the time to create 1,000 and 10,000 stacks in one
#     process (examples/many.rs): on an in-process switch, and on null:// plugs.
# Usage: bench/stack.sh [MIB] [ROUND_TRIPS] [LOSSY_MIB]   (defaults 1024, 5000, 256). As root.
set -euo pipefail
cd "$(dirname "$0")/.."
MIB=${1:-1024}
RR=${2:-5000}
LOSSY_MIB=${3:-256}
cargo build --release --quiet -p filo --bin filo
cargo build --release --quiet -p filo-stack --example many
FILO=$PWD/target/release/filo
MANY=$PWD/target/release/examples/many
T=$(mktemp -d /tmp/filo-bst-XXXXXX)
NS1=filo-bst1-$$; NS2=filo-bst2-$$; NS3=filo-bst3-$$; NS4=filo-bst4-$$; NS5=filo-bst5-$$
cleanup() {
  for ns in $NS1 $NS2 $NS3 $NS4 $NS5; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  jobs -p | xargs -r kill 2>/dev/null || true
  for f in "$T"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  rm -rf "$T"
}
trap cleanup EXIT

field() { tr ' ' '\n' | sed -n "s/^$1=//p" | head -1; }

start_switch() { # $1 = name
  "$FILO" switch "$T/$1" --nostdin -d -p "$T/$1.pid" >/dev/null 2>&1
  for _ in $(seq 50); do [ -S "$T/$1/ctl" ] && break; sleep 0.1; done
}

# measure NAME SERVER_PREFIX CLIENT_PREFIX TARGET -> "gbit p50 p99"
#   SERVER_PREFIX / CLIENT_PREFIX: commands (with args) that run `filo stack perf ...`
measure() {
  local server=$1 client=$2 target=$3
  timeout 120 $server --server >"$T/rx.out" 2>/dev/null &
  local spid=$!
  sleep 0.5
  # A failed sender, receiver or checksum fails the row and the script: no number is printed
  # for a transfer that did not arrive intact.
  if ! timeout 120 $client --connect "$target" --mib "$MIB" >"$T/tx.out" 2>"$T/tx.err"; then
    cat "$T/tx.err" >&2
    echo "FAILED: the sender ($client) failed" >&2
    return 1
  fi
  wait "$spid" || { echo "FAILED: the receiver ($server) failed" >&2; return 1; }
  local gbit crc_tx crc_rx
  gbit=$(field gbit_per_s <"$T/rx.out")
  crc_rx=$(field crc32 <"$T/rx.out"); crc_tx=$(field crc32 <"$T/tx.out")
  if [ -z "$crc_rx" ] || [ "$crc_rx" != "$crc_tx" ]; then
    echo "FAILED: checksums differ (sent $crc_tx, received $crc_rx)" >&2
    return 1
  fi
  timeout 120 $server --server --echo >/dev/null 2>&1 &
  spid=$!
  sleep 0.5
  timeout 120 $client --connect "$target" --rr "$RR" >"$T/rr.out" 2>/dev/null || true
  wait "$spid" || true
  echo "$gbit $(field p50_us <"$T/rr.out") $(field p99_us <"$T/rr.out")"
}

# 1. stack <-> stack, two processes on a filo switch.
start_switch sw1
SS=$(measure "$FILO stack perf --vnl vde://$T/sw1 --conf ip=10.70.0.1/24,mtu=9000 --name rx" \
             "$FILO stack perf --vnl vde://$T/sw1 --conf ip=10.70.0.2/24,mtu=9000 --name tx" \
             10.70.0.1:5201)

# 2. stack <-> kernel: a namespace whose tap is on a filo switch; the kernel receives.
start_switch sw2
ip netns add "$NS1"
ip -n "$NS1" link set lo up
ip -n "$NS1" tuntap add tap0 mode tap
ip -n "$NS1" addr add 10.71.0.1/24 dev tap0
ip -n "$NS1" link set tap0 mtu 9000 up
ip netns exec "$NS1" "$FILO" plug tap://tap0 "vde://$T/sw2" </dev/null >/dev/null 2>&1 &
sleep 0.5
SK=$(measure "ip netns exec $NS1 $FILO stack perf --kernel" \
             "$FILO stack perf --vnl vde://$T/sw2 --conf ip=10.71.0.2/24,mtu=9000 --name tx" \
             10.71.0.1:5201)

# 3. kernel <-> kernel over a veth pair (reference).
ip netns add "$NS2"; ip netns add "$NS3"
ip link add bsta netns "$NS2" type veth peer name bstb netns "$NS3"
ip -n "$NS2" addr add 10.72.0.1/24 dev bsta; ip -n "$NS2" link set bsta up
ip -n "$NS3" addr add 10.72.0.2/24 dev bstb; ip -n "$NS3" link set bstb up
sleep 0.5
KK=$(measure "ip netns exec $NS2 $FILO stack perf --kernel" \
             "ip netns exec $NS3 $FILO stack perf --kernel" \
             10.72.0.1:5201)

# 4. Through `filo wirefilter --loss 2` between two switches: filo stacks, and kernel TCP in
#    two namespaces (taps carried by filo plugs) on the very same path, same seed.
start_switch lwa
start_switch lwb
"$FILO" wirefilter --loss 2 --seed 3 "vde://$T/lwa" "vde://$T/lwb" </dev/null >/dev/null 2>&1 &
sleep 0.5
FULL_MIB=$MIB; MIB=$LOSSY_MIB
LS=$(measure "$FILO stack perf --vnl vde://$T/lwb --conf ip=10.73.0.1/24 --name rx" \
             "$FILO stack perf --vnl vde://$T/lwa --conf ip=10.73.0.2/24 --name tx" \
             10.73.0.1:5201)
ip netns add "$NS4"; ip netns add "$NS5"
for pair in "$NS4 lwb 10.74.0.1" "$NS5 lwa 10.74.0.2"; do
  set -- $pair
  ip -n "$1" link set lo up
  ip -n "$1" tuntap add tap0 mode tap
  ip -n "$1" addr add "$3/24" dev tap0
  ip -n "$1" link set tap0 up
  ip netns exec "$1" "$FILO" plug tap://tap0 "vde://$T/$2" </dev/null >/dev/null 2>&1 &
done
sleep 1
LK=$(measure "ip netns exec $NS4 $FILO stack perf --kernel" \
             "ip netns exec $NS5 $FILO stack perf --kernel" \
             10.74.0.1:5201)
MIB=$FULL_MIB

# 5. Many stacks in one process.
M1K=$("$MANY" 1000 switch 1000)
M5K=$("$MANY" 4900 switch 100)
M10K=$("$MANY" 10000 null)

row() { printf "%-34s %10s %10s %10s\n" "$@"; }
echo
row "TCP, 1 GiB / 1-byte round trips" "Gbit/s" "p50 us" "p99 us"
row "stack <-> stack (2 processes)" $SS
row "stack <-> kernel (tap on switch)" $SK
row "kernel <-> kernel (veth)" $KK
echo
row "TCP through wirefilter --loss 2, $LOSSY_MIB MiB" "Gbit/s" "p50 us" "p99 us"
row "stack <-> stack (2 processes)" $LS
row "kernel <-> kernel (taps, filo plugs)" $LK
echo
echo "many stacks in one process (one driver thread):"
echo "  $M1K" | sed 's/^/ /'
echo "  $M5K" | sed 's/^/ /'
echo "  $M10K" | sed 's/^/ /'
echo
echo "ratios: stack<->stack / kernel<->kernel = $(echo "$SS $KK" | awk '{ if ($4 > 0) printf "%.2f", $1 / $4; else print "n/a" }'); through loss 2 % = $(echo "$LS $LK" | awk '{ if ($4 > 0) printf "%.2f", $1 / $4; else print "n/a" }')"
