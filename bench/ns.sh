#!/usr/bin/env bash
# filo ns beside Debian's vdens, measured in the same run:
#   - TCP Gbit/s (iperf3, 5 s) between two `filo ns` on a filo switch, between two `vdens` on
#     Debian's vde_switch, and over a bare veth pair between two namespaces (the reference);
#   - start-up time of `filo ns VNL -- true` and `vdens VNL true` (mean of N runs).
#   - the same with 9000-byte MTU on filo (vde_switch cannot carry jumbo frames).
# Usage: bench/ns.sh [SECONDS] [RUNS]   (defaults 5 and 20). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
RUNS=${2:-20}
command -v vdens >/dev/null || { echo "bench/ns.sh: vdens is not installed (apt-get install vdens)" >&2; exit 1; }
cargo build --release --quiet -p filo --bin filo
FILO=$PWD/target/release/filo
T=$(mktemp -d /tmp/filo-bns-XXXXXX)
NS1=filo-bns1-$$; NS2=filo-bns2-$$
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do pkill -TERM -P "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
  for f in "$T"/*.pid; do [ -s "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  ip netns del "$NS1" 2>/dev/null || true
  ip netns del "$NS2" 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT

gbits() { # iperf3 -J output on stdin -> Gbit/s received
  python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'
}

wait_sock() { for _ in $(seq 50); do [ -S "$1" ] && return 0; sleep 0.1; done; echo "no $1" >&2; exit 1; }

# --- filo ns on filo switch
"$FILO" switch "$T/fsw" --nostdin -d -p "$T/fsw.pid" >/dev/null 2>&1
wait_sock "$T/fsw/ctl"
"$FILO" ns --ip 10.0.0.1/24 "vde://$T/fsw" -- iperf3 -s -1 >/dev/null 2>&1 & PIDS+=($!)
sleep 1
FILO_G=$("$FILO" ns --ip 10.0.0.2/24 "vde://$T/fsw" -- iperf3 -c 10.0.0.1 -t "$SECS" -J | gbits)
# Jumbo frames: filo's switch and plugs carry up to 9234-byte frames (vde_switch truncates at 1518).
"$FILO" ns --mtu 9000 --ip 10.0.0.1/24 "vde://$T/fsw" -- iperf3 -s -1 >/dev/null 2>&1 & PIDS+=($!)
sleep 1
FILO_J=$("$FILO" ns --mtu 9000 --ip 10.0.0.2/24 "vde://$T/fsw" -- iperf3 -c 10.0.0.1 -t "$SECS" -J | gbits)

# --- vdens on vde_switch
vde_switch -s "$T/dsw" -d -p "$T/dsw.pid" >/dev/null 2>&1
wait_sock "$T/dsw/ctl"
vdens "vde://$T/dsw" sh -c 'ip link set lo up; ip addr add 10.0.0.1/24 dev vde0; ip link set vde0 up; exec iperf3 -s -1' >/dev/null 2>&1 & PIDS+=($!)
sleep 1
DEB_G=$(vdens "vde://$T/dsw" sh -c "ip addr add 10.0.0.2/24 dev vde0; ip link set vde0 up; sleep 0.5; exec iperf3 -c 10.0.0.1 -t $SECS -J" | gbits)

# --- bare veth pair
ip netns add "$NS1"; ip netns add "$NS2"
ip link add "v1-$$" netns "$NS1" type veth peer name "v2-$$" netns "$NS2"
ip -n "$NS1" addr add 10.0.0.1/24 dev "v1-$$"; ip -n "$NS1" link set "v1-$$" up
ip -n "$NS2" addr add 10.0.0.2/24 dev "v2-$$"; ip -n "$NS2" link set "v2-$$" up
ip netns exec "$NS1" iperf3 -s -1 >/dev/null 2>&1 & PIDS+=($!)
sleep 1
VETH_G=$(ip netns exec "$NS2" iperf3 -c 10.0.0.1 -t "$SECS" -J | gbits)

# --- start-up time
ms() { # mean wall ms of RUNS runs of "$@"
  local t0 t1
  t0=$(date +%s%N)
  for _ in $(seq "$RUNS"); do
    # A failing start-up would time as a fast one: fail the script instead.
    "$@" >/dev/null 2>&1 || { echo "FAILED: $* exited $?" >&2; return 1; }
  done
  t1=$(date +%s%N)
  echo "scale=1; ($t1 - $t0) / $RUNS / 1000000" | bc
}
FILO_MS=$(ms "$FILO" ns "vde://$T/fsw" -- true)
DEB_MS=$(ms vdens "vde://$T/dsw" true)

ratio() { echo "scale=2; $1 / $2" | bc; }
printf '\n%-44s %10s %10s\n' "TCP between two namespaces (iperf3, ${SECS}s)" "Gbit/s" "vs vdens"
printf '%-44s %10s %10s\n' "filo ns + filo switch" "$FILO_G" "$(ratio "$FILO_G" "$DEB_G")"
printf '%-44s %10s %10s\n' "filo ns --mtu 9000 + filo switch" "$FILO_J" "$(ratio "$FILO_J" "$DEB_G")"
printf '%-44s %10s %10s\n' "vdens + vde_switch (Debian)" "$DEB_G" "1.00"
printf '%-44s %10s %10s\n' "bare veth pair (reference)" "$VETH_G" "$(ratio "$VETH_G" "$DEB_G")"
printf '%-44s %10s\n' "filo ns / veth" "$(ratio "$FILO_G" "$VETH_G")"
printf '\n%-44s %10s %10s\n' "start-up, mean of $RUNS runs" "ms" "vs vdens"
printf '%-44s %10s %10s\n' "filo ns VNL -- true" "$FILO_MS" "$(ratio "$FILO_MS" "$DEB_MS")"
printf '%-44s %10s %10s\n' "vdens VNL true" "$DEB_MS" "1.00"
