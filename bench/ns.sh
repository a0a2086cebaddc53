#!/usr/bin/env bash
# filo ns beside Debian's vdens, measured in the same run:
#   - TCP Gbit/s (iperf3, SECONDS s) between two `filo ns` on a filo switch, between two `vdens`
#     on Debian's vde_switch, between two `vdens` on filo's switch (the namespace tool and the
#     switch separated), and over a bare veth pair between two namespaces (the reference);
#   - the same with 9000-byte MTU on filo (vde_switch cannot carry jumbo frames);
#   - start-up time of `filo ns VNL -- true` and `vdens VNL true` (mean of RUNS runs), vdens on
#     either switch.
# Every measurement runs ROUNDS times, the order of the rows reversed every other round; each
# cell is the median of its rounds and each ratio the median of the per-round ratios to
# vdens + vde_switch (both sides of a ratio from the same round).
# Usage: bench/ns.sh [SECONDS] [RUNS] [ROUNDS]   (defaults 5, 20 and 3). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
RUNS=${2:-20}
ROUNDS=${3:-3}
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

# Both switches run for the whole script.
"$FILO" switch "$T/fsw" --nostdin -d -p "$T/fsw.pid" >/dev/null 2>&1
wait_sock "$T/fsw/ctl"
vde_switch -s "$T/dsw" -d -p "$T/dsw.pid" >/dev/null 2>&1
wait_sock "$T/dsw/ctl"
ip netns add "$NS1"; ip netns add "$NS2"
ip link add "v1-$$" netns "$NS1" type veth peer name "v2-$$" netns "$NS2"
ip -n "$NS1" addr add 10.0.0.1/24 dev "v1-$$"; ip -n "$NS1" link set "v1-$$" up
ip -n "$NS2" addr add 10.0.0.2/24 dev "v2-$$"; ip -n "$NS2" link set "v2-$$" up

# tcp KIND -> Gbit/s of one iperf3 run between two namespaces of that kind; a failure fails
# the script.
tcp() {
  local srv
  case "$1" in
    filo|filo-jumbo)
      local mtu=(); [ "$1" = filo-jumbo ] && mtu=(--mtu 9000)
      "$FILO" ns "${mtu[@]}" --ip 10.0.0.1/24 "vde://$T/fsw" -- iperf3 -s -1 >/dev/null 2>&1 & srv=$!
      PIDS+=("$srv")
      sleep 1
      "$FILO" ns "${mtu[@]}" --ip 10.0.0.2/24 "vde://$T/fsw" -- iperf3 -c 10.0.0.1 -t "$SECS" -J | gbits ;;
    vdens-deb|vdens-filo)
      local sw=$T/dsw; [ "$1" = vdens-filo ] && sw=$T/fsw
      vdens "vde://$sw" sh -c 'ip link set lo up; ip addr add 10.0.0.1/24 dev vde0; ip link set vde0 up; exec iperf3 -s -1' >/dev/null 2>&1 & srv=$!
      PIDS+=("$srv")
      sleep 1
      vdens "vde://$sw" sh -c "ip addr add 10.0.0.2/24 dev vde0; ip link set vde0 up; sleep 0.5; exec iperf3 -c 10.0.0.1 -t $SECS -J" | gbits ;;
    veth)
      ip netns exec "$NS1" iperf3 -s -1 >/dev/null 2>&1 & srv=$!
      PIDS+=("$srv")
      sleep 1
      ip netns exec "$NS2" iperf3 -c 10.0.0.1 -t "$SECS" -J | gbits ;;
  esac
  # The server's iperf3 exits after one test; its namespace tool should follow. vdens does
  # not always notice its command's exit until a frame wakes it: end it after 3 s.
  for _ in $(seq 30); do kill -0 "$srv" 2>/dev/null || break; sleep 0.1; done
  pkill -TERM -P "$srv" 2>/dev/null || true; kill "$srv" 2>/dev/null || true
  wait "$srv" 2>/dev/null || true
}

ms() { # mean wall ms of RUNS runs of "$@"
  local t0 t1
  t0=$(date +%s%N)
  for _ in $(seq "$RUNS"); do
    # A failing start-up would time as a fast one: fail the script instead.
    "$@" >/dev/null 2>&1 || { echo "FAILED: $* exited $?" >&2; return 1; }
  done
  t1=$(date +%s%N)
  awk -v a="$t0" -v b="$t1" -v n="$RUNS" 'BEGIN { printf "%.1f\n", (b - a) / n / 1e6 }'
}

startup() { # KIND -> mean ms
  case "$1" in
    filo) ms "$FILO" ns "vde://$T/fsw" -- true ;;
    vdens-deb) ms vdens "vde://$T/dsw" true ;;
    vdens-filo) ms vdens "vde://$T/fsw" true ;;
  esac
}

in_order() { # ROUND KIND... -> the kinds, reversed in even rounds (neither side always first)
  local round=$1; shift
  if [ $((round % 2)) = 1 ]; then echo "$@"; else echo "$@" | tr ' ' '\n' | tac | tr '\n' ' '; fi
}

TCP_KINDS="filo filo-jumbo vdens-filo vdens-deb veth"
START_KINDS="filo vdens-filo vdens-deb"
for round in $(seq "$ROUNDS"); do
  for kind in $(in_order "$round" $TCP_KINDS); do tcp "$kind" >>"$T/tcp.$kind"; done
  for kind in $(in_order "$round" $START_KINDS); do startup "$kind" >>"$T/start.$kind"; done
done

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
# rratio FILE_A FILE_B -> median over rounds of A/B (line N of each file is round N)
rratio() {
  paste -d ' ' "$1" "$2" | awk '$2 > 0 { printf "%.4f\n", $1 / $2 }' | median |
    awk '$1 != "-" { printf "%.2f\n", $1; next } { print "-" }'
}
row() { # LABEL FILE [BASELINE_FILE [DECIMALS]]
  printf '%-44s %10.*f %10s\n' "$1" "${4:-2}" "$(median <"$2")" "$(rratio "$2" "${3:-$T/tcp.vdens-deb}")"
}
printf '\n%-44s %10s %10s\n' "TCP between two namespaces (iperf3, ${SECS}s)" "Gbit/s" "vs vdens"
row "filo ns + filo switch" "$T/tcp.filo"
row "filo ns --mtu 9000 + filo switch" "$T/tcp.filo-jumbo"
row "vdens + filo switch" "$T/tcp.vdens-filo"
row "vdens + vde_switch (Debian)" "$T/tcp.vdens-deb"
row "bare veth pair (reference)" "$T/tcp.veth"
printf '%-44s %10s\n' "filo ns / vdens, both on filo switch" "$(rratio "$T/tcp.filo" "$T/tcp.vdens-filo")"
printf '%-44s %10s\n' "filo ns / veth" "$(rratio "$T/tcp.filo" "$T/tcp.veth")"
printf '\n%-44s %10s %10s\n' "start-up, mean of $RUNS runs" "ms" "vs vdens"
row "filo ns VNL -- true (filo switch)" "$T/start.filo" "$T/start.vdens-deb" 1
row "vdens VNL true (filo switch)" "$T/start.vdens-filo" "$T/start.vdens-deb" 1
row "vdens VNL true (vde_switch)" "$T/start.vdens-deb" "$T/start.vdens-deb" 1
echo "(medians of $ROUNDS rounds, order reversed every other round; ratios are medians of per-round ratios)"
