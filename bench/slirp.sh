#!/usr/bin/env bash
# User-mode NAT side by side, measured in the same run: TCP Gbit/s (iperf3) between a
# namespace and its host through
#   - filo:        `filo ns slirp:///hostloopback` (the guest dials 10.0.2.2 = host loopback),
#   - slirp4netns: Debian's slirp4netns (libslirp) on a namespace's tap (10.0.2.2 likewise),
#   - pasta:       Debian's passt package, run as nobody as rootless containers do (the guest
#                  dials its gateway, which pasta maps to the host's loopback),
#   - vdens:       Debian's `vdens slirp://` (libvdeplug_slirp, i.e. libslirp behind libvdeplug;
#                  10.0.2.2 is the host's loopback too), MTU 1500 only (its MTU is fixed),
#   - knat:        the physical reference: a rootful veth into the host namespace and the
#                  kernel's NAT (nftables masquerade; the forward an nftables dnat from the host's
#                  loopback, with route_localnet); the guest dials the next namespace's servers
#                  (198.18.0.2) through the NAT, both veths at the row's MTU,
# guest -> host and host -> guest (iperf3 -R), and host -> guest through a port forward (the
# iperf3 server in the guest, the client on the host's loopback: filo's tcpfwd=, slirp4netns's
# add_hostfwd API, pasta's -t), at MTU 1500 and 65520 (filo: 65000, the most `filo ns --mtu`
# takes), and the median round trip of 2,000 1-byte TCP exchanges (python both ends, the
# echo server on the host's loopback). The "host" is a namespace of its own with a veth and a default route
# (pasta copies them); iperf3 -s listens on its loopback. Rounds are interleaved (every system
# once per round) and the median of the rounds is printed with ratios to slirp4netns.
# Usage: bench/slirp.sh [SECONDS] [ROUNDS]   (defaults 5 and 3). Run as root.
# FILO_B=/path/to/another/filo adds a row "filo-b" run with that binary, interleaved with the
# others (an A/B comparison of two builds in the same run).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
ROUNDS=${2:-3}
for p in slirp4netns pasta iperf3 setpriv unshare vdens nft; do
  command -v "$p" >/dev/null || { echo "bench/slirp.sh: $p is not installed (apt-get install slirp4netns passt iperf3 util-linux vdens nftables)" >&2; exit 1; }
done
[ -e /usr/lib/x86_64-linux-gnu/vdeplug/libvdeplug_slirp.so ] || [ -n "$(find /usr/lib -name libvdeplug_slirp.so 2>/dev/null | head -1)" ] \
  || { echo "bench/slirp.sh: libvdeplug_slirp is not installed (apt-get install libvdeplug-slirp)" >&2; exit 1; }
cargo build --release --quiet -p filo --bin filo
FILO=$PWD/target/release/filo
FILO_B=${FILO_B:-}
[ -z "$FILO_B" ] || [ -x "$FILO_B" ] || { echo "bench/slirp.sh: FILO_B=$FILO_B is not an executable" >&2; exit 1; }
T=$(mktemp -d /tmp/filo-bslirp-XXXXXX)
H=filo-bsl-h-$$; I=filo-bsl-i-$$; G=filo-bsl-g-$$; K=filo-bsl-k-$$
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -s "$T/iperf.pid" ] && kill "$(cat "$T/iperf.pid")" 2>/dev/null || true
  [ -s "$T/iperf-i.pid" ] && kill "$(cat "$T/iperf-i.pid")" 2>/dev/null || true
  for n in "$H" "$I" "$G" "$K"; do ip netns del "$n" 2>/dev/null || true; done
  rm -rf "$T"
}
trap cleanup EXIT

ip netns add "$H"; ip netns add "$I"; ip netns add "$G"; ip netns add "$K"
ip link add "bs0-$$" netns "$H" type veth peer name "bs1-$$" netns "$I"
ip -n "$H" addr add 198.18.0.1/24 dev "bs0-$$"; ip -n "$H" link set "bs0-$$" up; ip -n "$H" link set lo up
ip -n "$I" addr add 198.18.0.2/24 dev "bs1-$$"; ip -n "$I" link set "bs1-$$" up
ip -n "$H" route add default via 198.18.0.2
# knat: K's veth into H, forwarding and masquerade in H; the forward is a dnat of the host's
# loopback port 5202 (route_localnet lets 127.0.0.1 leave, masqueraded, towards K), present
# only during knat's forward rows.
ip link add "bk0-$$" netns "$H" type veth peer name "bk1-$$" netns "$K"
ip -n "$H" addr add 10.0.3.1/24 dev "bk0-$$"; ip -n "$H" link set "bk0-$$" up
ip -n "$K" addr add 10.0.3.2/24 dev "bk1-$$"; ip -n "$K" link set "bk1-$$" up; ip -n "$K" link set lo up
ip -n "$K" route add default via 10.0.3.1
ip netns exec "$H" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.route_localnet=1
ip netns exec "$H" nft -f - <<NFT
table ip knat {
  chain post { type nat hook postrouting priority 100; ip saddr 10.0.3.0/24 oifname "bs0-$$" masquerade; oifname "bk0-$$" ip saddr 127.0.0.0/8 masquerade; }
  chain out { type nat hook output priority -100; }
}
NFT
ECHO_SERVER='import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5300))
s.listen()
while True:
    c, _ = s.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while d := c.recv(1):
        c.sendall(d)'
ip netns exec "$H" iperf3 -s -D -B 127.0.0.1 --pidfile "$T/iperf.pid"
ip netns exec "$H" python3 -c "$ECHO_SERVER" 127.0.0.1 >/dev/null 2>&1 &
PIDS+=($!)
# knat's servers: behind the NAT, in the next namespace.
ip netns exec "$I" iperf3 -s -D -B 198.18.0.2 --pidfile "$T/iperf-i.pid"
ip netns exec "$I" python3 -c "$ECHO_SERVER" 198.18.0.2 >/dev/null 2>&1 &
PIDS+=($!)
sleep 0.5
# pasta runs as nobody and needs /dev/net/tun: a private mount namespace gets a node nobody may
# open, bound over /dev/net/tun (the host's stays as it is).
mknod "$T/tun" c 10 200; chmod 666 "$T/tun"; chmod 755 "$T"

gbits() { # iperf3 -J output on stdin -> Gbit/s received; fails on anything else
  python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'
}

# The iperf3 client on the host through a forward from port 5202 to the guest's 5203 (not
# 5201: pasta mirrors the host's listening ports into its namespace), retried while the
# guest's server starts.
fwd_client() {
  local out
  for _ in $(seq 20); do
    sleep 0.5
    # A forwarder may accept before the guest's server listens: only a finished test counts.
    out=$(ip netns exec "$H" iperf3 -c 127.0.0.1 -p 5202 -t "$SECS" -J 2>/dev/null) || true
    if grep -q '"sum_received"' <<<"$out"; then echo "$out"; return 0; fi
  done
  grep '"error"' <<<"$out" >&2 || true
  return 1
}

RTT_CLIENT='import socket, sys, time
s = socket.create_connection((sys.argv[1], 5300), 10)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
t = []
for i in range(2000):
    a = time.perf_counter(); s.sendall(b"x"); s.recv(1); t.append(time.perf_counter() - a)
t.sort()
print("%.1f" % (t[len(t) // 2] * 1e6))'

# Commands for vdens's namespace: its vde0 configured by hand (no DHCP wait in the figures).
VDENS_UP='ip link set vde0 up && ip addr add 10.0.2.15/24 dev vde0 && ip route add default via 10.0.2.2'

# knat at MTU m: both veths of the path at m.
knat_mtu() {
  ip -n "$K" link set "bk1-$$" mtu "$1"; ip -n "$H" link set "bk0-$$" mtu "$1"
  ip -n "$H" link set "bs0-$$" mtu "$1"; ip -n "$I" link set "bs1-$$" mtu "$1"
}

filo_bin() { if [ "$1" = filo-b ]; then echo "$FILO_B"; else echo "$FILO"; fi; }

# run SYSTEM MTU DIR -> Gbit/s (or µs for rtt) on stdout (DIR: "" guest->host, -R host->guest,
# fwd: forwarded, rtt: round trips)
run() {
  local sys=$1 mtu=$2 dir=$3 out
  if [ "$dir" = fwd ]; then
    run_fwd "$sys" "$mtu" | gbits
    return
  fi
  if [ "$dir" = rtt ]; then
    run_rtt "$sys" "$mtu"
    return
  fi
  case $sys in
    filo|filo-b)
      local fm=$mtu; [ "$fm" -gt 65000 ] && fm=65000
      out=$(ip netns exec "$H" "$(filo_bin "$sys")" ns --mtu "$fm" --ip 10.0.2.15/24 --gw 10.0.2.2 \
        slirp:///hostloopback -- iperf3 -c 10.0.2.2 $dir -t "$SECS" -J) ;;
    slirp4netns)
      ip netns exec "$H" slirp4netns --netns-type=path --configure --mtu="$mtu" \
        "/run/netns/$G" tap0 >"$T/s4n.log" 2>&1 &
      local s=$!
      for _ in $(seq 50); do ip -n "$G" addr show tap0 2>/dev/null | grep -q 10.0.2.100 && break; sleep 0.1; done
      out=$(ip netns exec "$G" iperf3 -c 10.0.2.2 $dir -t "$SECS" -J) || { kill "$s"; wait "$s" 2>/dev/null; return 1; }
      kill "$s"; wait "$s" 2>/dev/null || true ;;
    pasta)
      out=$(ip netns exec "$H" unshare -m sh -c "mount --bind '$T/tun' /dev/net/tun && exec setpriv --reuid=65534 --regid=65534 --clear-groups pasta --config-net --mtu $mtu -- iperf3 -c 198.18.0.2 $dir -t $SECS -J") ;;
    vdens)
      out=$(timeout $((SECS + 30)) ip netns exec "$H" vdens slirp:// sh -c "$VDENS_UP && iperf3 -c 10.0.2.2 $dir -t $SECS -J") ;;
    knat)
      knat_mtu "$mtu"
      out=$(ip netns exec "$K" iperf3 -c 198.18.0.2 $dir -t "$SECS" -J) ;;
  esac
  echo "$out" | gbits
}

run_rtt() {
  local sys=$1 mtu=$2
  case $sys in
    filo|filo-b)
      local fm=$mtu; [ "$fm" -gt 65000 ] && fm=65000
      ip netns exec "$H" "$(filo_bin "$sys")" ns --mtu "$fm" --ip 10.0.2.15/24 --gw 10.0.2.2 \
        slirp:///hostloopback -- python3 -c "$RTT_CLIENT" 10.0.2.2 ;;
    slirp4netns)
      ip netns exec "$H" slirp4netns --netns-type=path --configure --mtu="$mtu" \
        "/run/netns/$G" tap0 >"$T/s4n.log" 2>&1 &
      local s=$! out
      for _ in $(seq 50); do ip -n "$G" addr show tap0 2>/dev/null | grep -q 10.0.2.100 && break; sleep 0.1; done
      out=$(ip netns exec "$G" python3 -c "$RTT_CLIENT" 10.0.2.2) || { kill "$s"; wait "$s" 2>/dev/null; return 1; }
      kill "$s"; wait "$s" 2>/dev/null || true
      echo "$out" ;;
    pasta)
      ip netns exec "$H" unshare -m sh -c "mount --bind '$T/tun' /dev/net/tun && exec setpriv --reuid=65534 --regid=65534 --clear-groups pasta --config-net --mtu $mtu -- python3 -c '$(sed "s/'/'\\''/g" <<<"$RTT_CLIENT")' 198.18.0.2" ;;
    vdens)
      ip netns exec "$H" vdens slirp:// sh -c "$VDENS_UP && python3 -c '$(sed "s/'/'\\''/g" <<<"$RTT_CLIENT")' 10.0.2.2" ;;
    knat)
      knat_mtu "$mtu"
      ip netns exec "$K" python3 -c "$RTT_CLIENT" 198.18.0.2 ;;
  esac
}

run_fwd() {
  local sys=$1 mtu=$2 s out=
  case $sys in
    filo|filo-b)
      local fm=$mtu; [ "$fm" -gt 65000 ] && fm=65000
      ip netns exec "$H" "$(filo_bin "$sys")" ns --mtu "$fm" --ip 10.0.2.15/24 --gw 10.0.2.2 \
        slirp:///tcpfwd=127.0.0.1:5202:10.0.2.15:5203 -- iperf3 -s -p 5203 -1 >/dev/null 2>&1 &
      s=$! ;;
    slirp4netns)
      rm -f "$T/api.sock"
      ip netns exec "$H" slirp4netns --netns-type=path --configure --mtu="$mtu" \
        --api-socket "$T/api.sock" "/run/netns/$G" tap0 >"$T/s4n.log" 2>&1 &
      s=$!
      for _ in $(seq 50); do [ -S "$T/api.sock" ] && break; sleep 0.1; done
      ip netns exec "$G" iperf3 -s -p 5203 -1 >/dev/null 2>&1 &
      python3 - "$T/api.sock" <<'PY' >/dev/null
import json, socket, sys
c = socket.socket(socket.AF_UNIX)
c.connect(sys.argv[1])
c.sendall(json.dumps({"execute": "add_hostfwd", "arguments": {"proto": "tcp",
    "host_addr": "127.0.0.1", "host_port": 5202, "guest_port": 5203}}).encode())
print(c.recv(4096))
PY
      ;;
    pasta)
      ip netns exec "$H" unshare -m sh -c "mount --bind '$T/tun' /dev/net/tun && exec setpriv --reuid=65534 --regid=65534 --clear-groups pasta --config-net --mtu $mtu -t 5202:5203 -- iperf3 -s -p 5203 -1" >"$T/pasta.log" 2>&1 &
      s=$! ;;
    vdens)
      ip netns exec "$H" vdens slirp:///tcpfwd=5202:10.0.2.15:5203 sh -c "$VDENS_UP && exec iperf3 -s -p 5203 -1" >"$T/vdens.log" 2>&1 &
      s=$! ;;
    knat)
      knat_mtu "$mtu"
      ip netns exec "$H" nft add rule ip knat out ip daddr 127.0.0.1 tcp dport 5202 dnat to 10.0.3.2:5203
      ip netns exec "$K" iperf3 -s -p 5203 -1 >/dev/null 2>&1 &
      s=$! ;;
  esac
  out=$(fwd_client) || { kill "$s" 2>/dev/null; wait "$s" 2>/dev/null; ip netns exec "$H" nft flush chain ip knat out; tail -3 "$T"/*.log >&2; return 1; }
  kill "$s" 2>/dev/null; wait "$s" 2>/dev/null || true
  ip netns exec "$H" nft flush chain ip knat out
  for n in "$G" "$K"; do ip netns pids "$n" 2>/dev/null | xargs -r kill 2>/dev/null || true; done
  echo "$out"
}

median() { [ $# -gt 0 ] || return 0; printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# BENCH_SYSTEMS / BENCH_DIRS / BENCH_MTUS narrow a run (e.g. BENCH_DIRS=fwd).
read -ra SYSTEMS <<<"${BENCH_SYSTEMS:-filo${FILO_B:+ filo-b} slirp4netns pasta vdens knat}"
read -ra DIRS <<<"${BENCH_DIRS:-guest -R fwd rtt}"
read -ra MTUS <<<"${BENCH_MTUS:-1500 65520}"
declare -A R
for round in $(seq "$ROUNDS"); do
  for mtu in "${MTUS[@]}"; do
    for d in "${DIRS[@]}"; do
      dir=$d; [ "$dir" = guest ] && dir=""
      for sys in "${SYSTEMS[@]}"; do
        [ "$sys" = vdens ] && [ "$mtu" != 1500 ] && continue
        # One retry: libvdeplug_slirp's iperf3 client hung once in ~100 runs (the timeout).
        v=$(run "$sys" "$mtu" "$dir") || v=$(run "$sys" "$mtu" "$dir") \
          || { echo "bench/slirp.sh: round $round: $sys (MTU $mtu ${dir:-guest->host}) FAILED" >&2; exit 1; }
        [ -n "$v" ] || { echo "bench/slirp.sh: round $round: $sys gave no result" >&2; exit 1; }
        [ "$sys" = knat ] && knat_mtu 1500
        R[$sys,$mtu,$dir]="${R[$sys,$mtu,$dir]:-} $v"
        echo "round $round: $sys MTU $mtu ${dir:-   } $v" >&2
      done
    done
  done
done

ratio() { if [ -n "${1:-}" ] && [ -n "${2:-}" ]; then echo "scale=2; $1 / $2" | bc; else echo -; fi; }
for d in "${DIRS[@]}"; do
  dir=$d; [ "$dir" = guest ] && dir=""
  case $dir in
    "") label="guest -> host" ;;
    -R) label="host -> guest (iperf3 -R)" ;;
    fwd) label="host -> guest, forward" ;;
    rtt) label="round trip p50 us (lower wins)" ;;
  esac
  printf '\n%-28s %9s %9s %12s %12s\n' "TCP $label" "MTU 1500" "MTU 65520" "vs s4n 1500" "vs s4n 65520"
  s1=$(median ${R[slirp4netns,1500,$dir]:-}); s6=$(median ${R[slirp4netns,65520,$dir]:-})
  for sys in "${SYSTEMS[@]}"; do
    a=$(median ${R[$sys,1500,$dir]:-}); b=$(median ${R[$sys,65520,$dir]:-})
    printf '%-28s %9s %9s %12s %12s\n' "$sys" "${a:--}" "${b:--}" "$(ratio "$a" "$s1")" "$(ratio "$b" "$s6")"
  done
done
printf "\nGbit/s (round trips: µs), median of %s interleaved rounds of %s s; filo at MTU 65000 in the 65520 column; vdens: MTU 1500 only.\n" "$ROUNDS" "$SECS"
