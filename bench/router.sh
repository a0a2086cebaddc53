#!/usr/bin/env bash
# filo router beside the Linux kernel forwarding, measured in the same run: TCP throughput
# (iperf3, SECS seconds) and 64-byte frames/s (iperf3 -u with 18-byte payloads, sent as fast
# as the client can; packets/s received) from a client namespace through a router to a
# server namespace, RUNS rounds each running every configuration once (interleaved, for a
# shared and noisy machine):
#   - filo: the namespaces are `filo ns`, `filo router` between them, forwarding only and
#     with --masquerade on the server side; joined by two filo switches (vde://), and by two
#     ipn:// buses with the +vnet framing (ipn://PATH[vnet/policy=switch], no switch process);
#     and filo router alone, holding one tap per side (tap://, +vnet) moved into the client's
#     and the server's namespaces: the same place the kernel's router namespace takes;
#   - kernel: the namespaces are joined by veth pairs to a router namespace with
#     ip_forward=1, forwarding only and with nftables masquerade.
# Prints the medians and filo's ratio to the kernel's.
# Then LEASES (default 1000) user-space stacks in one process take DHCP leases at once from
# filo router and from dnsmasq on the same kind of switch: the time until the last lease and
# the rate. The server's switch port is set as a DHCP server port (port/dhcpserver), so the
# switch's DHCP snooping sends the clients' broadcasts there instead of to all ports; one
# more filo router row leaves the switch to learn the port from the server's first answers,
# and one more dnsmasq row runs on a switch without snooping (every broadcast flooded, as
# before it): a burst delivered at once can cost a slow server more than a flooded one.
# Usage: bench/router.sh [SECS] [RUNS]   (defaults 5 and 3; LEASES=0 leaves DHCP out; ROWS
# picks configurations, e.g. ROWS="ipn-fwd kern-fwd"; IPN_OPTS the buses' options). Run as
# root; needs iperf3, nft, dnsmasq.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
RUNS=${2:-3}
for p in iperf3 nft python3 dnsmasq; do
  command -v "$p" >/dev/null || { echo "bench/router.sh: $p is not installed" >&2; exit 1; }
done
if [ -z "${FILO:-}" ]; then
  cargo build --release --quiet -p filo --bin filo
  FILO=$PWD/target/release/filo
fi
T=$(mktemp -d /tmp/filo-brt-XXXXXX)
C=filo-brt-c-$$; R=filo-brt-r-$$; S=filo-brt-s-$$
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for f in "$T"/*.pid; do [ -s "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  for n in "$C" "$R" "$S" "filo-brt-tc-$$" "filo-brt-ts-$$"; do ip netns del "$n" 2>/dev/null || true; done
  rm -rf "$T"
}
trap cleanup EXIT
trap "exit 143" TERM INT

gbits() { # iperf3 -J output on stdin -> Gbit/s received; nothing if the test did not run
  python3 -c 'import json,sys
try: print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))
except Exception: pass'
}
pps() { # iperf3 -u -J output on stdin -> packets/s received; nothing if the test did not run
  python3 -c 'import json,sys
try:
  s = json.load(sys.stdin)["end"]["sum"]
  print("%d" % ((s["packets"] - s["lost_packets"]) / s["seconds"]))
except Exception: pass'
}
measure() { # measure KIND CLIENT-COMMAND...: one iperf3 run (KIND tcp: Gbit/s; udp64: 64-byte
  # frames, i.e. 18-byte UDP payloads, sent as fast as the client can: packets/s received),
  # trying again while the path comes up
  local kind=$1 g; shift
  for _ in 1 2 3 4 5; do
    if [ "$kind" = tcp ]; then
      g=$(timeout $((SECS + 30)) "$@" iperf3 -c 10.82.0.10 -t "$SECS" --connect-timeout 3000 -J | gbits || true)
    else
      g=$(timeout $((SECS + 30)) "$@" iperf3 -c 10.82.0.10 -t "$SECS" --connect-timeout 3000 -u -l 18 -b 0 -J | pps || true)
    fi
    [ -n "$g" ] && [ "$g" != 0 ] && { echo "$g"; return 0; }
    echo "  (no result yet, again)" >&2
    sleep 1
  done
  echo "bench/router.sh: no iperf3 result from: $*" >&2; return 1
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
wait_sock() { for _ in $(seq 50); do [ -S "$1" ] && return 0; sleep 0.1; done; echo "no $1" >&2; exit 1; }
record() { # record ROW KIND VALUE: one result, kept in $T/ROW.KIND
  echo "$3" >>"$T/$1.$2"; echo "  $1 $2: $3" >&2
}
reap() { # reap PID: waits up to 5 s for an iperf3 server that ran its one test, then kills it
  # (after a UDP flood its end of the results exchange can get stuck)
  for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
result() { if [ -s "$T/$1.$2" ]; then median <"$T/$1.$2"; else echo -; fi; }

# --- filo: filo ns on each side and filo router between, joined either by two filo
# switches (vde://) or by two ipn:// buses with the +vnet framing (the router creates them)
"$FILO" switch "$T/lan" --nostdin -d -p "$T/lan.pid" >/dev/null 2>&1
"$FILO" switch "$T/wan" --nostdin -d -p "$T/wan.pid" >/dev/null 2>&1
wait_sock "$T/lan/ctl"; wait_sock "$T/wan/ctl"
filo_run() { # filo_run ROW LAN-VNL WAN-VNL [ROUTER FLAGS...]: one TCP and one 64-byte run
  local row=$1 lan=$2 wan=$3; shift 3
  "$FILO" router --vnl "$lan" --conf ip=10.81.0.1/24 --vnl "$wan" --conf ip=10.82.0.1/24 \
    -M "$T/r.mgmt" -d -p "$T/router.pid" "$@"
  wait_sock "$T/r.mgmt"
  local server_gw=(--gw 10.82.0.1)
  [ "$*" = "--masquerade vde1" ] && server_gw=()
  for kind in tcp udp64; do
    # The same MAC every run: the router's neighbour cache stays right across server restarts.
    "$FILO" ns --ip 10.82.0.10/24 "${server_gw[@]}" --conf mac=02:00:00:00:82:0a "$wan" -- iperf3 -s -1 >/dev/null 2>&1 &
    local server=$!; PIDS+=("$server")
    sleep 1
    record "$row" "$kind" "$(measure "$kind" "$FILO" ns --ip 10.81.0.10/24 --gw 10.81.0.1 --conf mac=02:00:00:00:81:0a "$lan" --)"
    reap "$server"
  done
  for _ in $(seq 50); do [ -s "$T/router.pid" ] && break; sleep 0.1; done
  kill "$(cat "$T/router.pid")"
  for _ in $(seq 50); do [ -e "$T/r.mgmt" ] || break; sleep 0.1; done
  rm -f "$T/router.pid"
}

netns_run() { # netns_run ROW CLIENT-NS SERVER-NS: one TCP and one 64-byte run between
  # two kernel namespaces
  for kind in tcp udp64; do
    ip netns exec "$3" iperf3 -s -1 >/dev/null 2>&1 &
    local server=$!; PIDS+=("$server")
    sleep 1
    record "$1" "$kind" "$(measure "$kind" ip netns exec "$2")"
    reap "$server"
  done
}

# --- filo router on taps: it opens one tap per side (with the +vnet framing) and the taps
# are moved into the client's and the server's namespaces, so the router stands where the
# kernel's router namespace stands below (no switch, no filo ns: the one process between)
tap_run() { # tap_run ROW [ROUTER FLAGS...]: one TCP and one 64-byte run
  local row=$1; shift
  local tc=filo-brt-tc-$$ ts=filo-brt-ts-$$ a=fbta$$ b=fbtb$$
  "$FILO" router --vnl "tap://$a" --conf ip=10.81.0.1/24 --vnl "tap://$b" --conf ip=10.82.0.1/24 \
    -M "$T/t.mgmt" -d -p "$T/trouter.pid" "$@"
  for n in "$tc" "$ts"; do ip netns add "$n"; ip -n "$n" link set lo up; done
  ip link set "$a" netns "$tc"; ip link set "$b" netns "$ts"
  ip -n "$tc" addr add 10.81.0.10/24 dev "$a"; ip -n "$tc" link set "$a" up
  ip -n "$tc" route add default via 10.81.0.1
  ip -n "$ts" addr add 10.82.0.10/24 dev "$b"; ip -n "$ts" link set "$b" up
  [ "$*" = "--masquerade vde1" ] || ip -n "$ts" route add default via 10.82.0.1
  netns_run "$row" "$tc" "$ts"
  kill "$(cat "$T/trouter.pid")"
  for _ in $(seq 50); do [ -e "$T/t.mgmt" ] || break; sleep 0.1; done
  rm -f "$T/trouter.pid"
  ip netns del "$tc"; ip netns del "$ts"
}

# --- kernel: veth pairs to a router namespace
for n in "$C" "$R" "$S"; do ip netns add "$n"; ip -n "$n" link set lo up; done
ip link add "c-$$" netns "$C" type veth peer name "rc-$$" netns "$R"
ip link add "s-$$" netns "$S" type veth peer name "rs-$$" netns "$R"
ip -n "$C" addr add 10.81.0.10/24 dev "c-$$"; ip -n "$C" link set "c-$$" up
ip -n "$C" route add default via 10.81.0.1
ip -n "$R" addr add 10.81.0.1/24 dev "rc-$$"; ip -n "$R" link set "rc-$$" up
ip -n "$R" addr add 10.82.0.1/24 dev "rs-$$"; ip -n "$R" link set "rs-$$" up
ip -n "$S" addr add 10.82.0.10/24 dev "s-$$"; ip -n "$S" link set "s-$$" up
ip netns exec "$R" sysctl -qw net.ipv4.ip_forward=1
kernel_run() { # kernel_run ROW: one TCP and one 64-byte run
  netns_run "$1" "$C" "$S"
}
kernel_fwd() {
  ip -n "$S" route add default via 10.82.0.1
  kernel_run kern-fwd
  ip -n "$S" route del default
}
kernel_nat() {
  ip netns exec "$R" nft -f - <<EOF
table ip nat {
  chain post {
    type nat hook postrouting priority srcnat;
    oifname "rs-$$" masquerade
  }
}
EOF
  kernel_run kern-nat
  ip netns exec "$R" nft delete table ip nat
}

# Rounds: every configuration once per round, so a noisy machine hits them all alike.
IPN_OPTS=${IPN_OPTS:-vnet/policy=switch}
# Fresh bus paths for every router run: a bus lives while it has members, and a path reused
# at once can still be served by a member of the previous bus that is exiting.
ipn_bus() { echo "ipn://$T/$1-$round[$IPN_OPTS]"; }
ROWS=${ROWS:-sw-fwd sw-nat ipn-fwd ipn-nat tap-fwd tap-nat kern-fwd kern-nat}
for round in $(seq "$RUNS"); do
  echo "round $round of $RUNS" >&2
  for r in $ROWS; do
    case $r in
      sw-fwd) filo_run sw-fwd "vde://$T/lan" "vde://$T/wan" ;;
      sw-nat) filo_run sw-nat "vde://$T/lan" "vde://$T/wan" --masquerade vde1 ;;
      ipn-fwd) filo_run ipn-fwd "$(ipn_bus flan)" "$(ipn_bus fwan)" ;;
      ipn-nat) filo_run ipn-nat "$(ipn_bus nlan)" "$(ipn_bus nwan)" --masquerade vde1 ;;
      tap-fwd) tap_run tap-fwd ;;
      tap-nat) tap_run tap-nat --masquerade vde1 ;;
      kern-fwd) kernel_fwd ;;
      kern-nat) kernel_nat ;;
      *) echo "bench/router.sh: unknown row $r in ROWS" >&2; exit 1 ;;
    esac
  done
done

ratio() { # ratio A B -> A/B, or - when either is missing
  python3 -c 'import sys
try: print("%.2f" % (float(sys.argv[1]) / float(sys.argv[2])))
except Exception: print("-")' "$1" "$2"
}
echo "Through a router, medians of $RUNS interleaved rounds (iperf3 ${SECS} s each; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg))"
row() { # row LABEL FILO-ROW KERNEL-ROW KIND
  local f k
  f=$(result "$2" "$4"); k=$(result "$3" "$4")
  printf '  %-40s %9s %9s %6s\n' "$1" "$f" "$k" "$(ratio "$f" "$k")"
}
for kind in tcp udp64; do
  if [ "$kind" = tcp ]; then title="TCP, Gbit/s"; else title="64-byte frames (UDP), packets/s recvd"; fi
  printf '  %-40s %9s %9s %6s\n' "$title" filo kernel ratio
  row "forwarding, filo switches" sw-fwd kern-fwd "$kind"
  row "forwarding + masquerade, filo switches" sw-nat kern-nat "$kind"
  row "forwarding, ipn:// buses (vnet)" ipn-fwd kern-fwd "$kind"
  row "forwarding + masquerade, ipn:// (vnet)" ipn-nat kern-nat "$kind"
  row "forwarding, taps in the namespaces" tap-fwd kern-fwd "$kind"
  row "forwarding + masquerade, taps" tap-nat kern-nat "$kind"
done
echo "(filo: filo ns on each side, filo router between, on filo switches or on ipn:// buses, or filo router alone holding a tap in each namespace; kernel: veth to a namespace with ip_forward=1, nftables masquerade)"
[ "${LEASES:-1000}" = 0 ] && exit 0


# --- DHCP: LEASES user-space stacks in one process (examples/leases.rs: plugs opened first,
# then every stack asks at once) take leases from filo router, then from dnsmasq (in a
# namespace on the same switch, its defaults but for the range and lease limit)
cargo build --release --quiet -p filo-stack --example leases
LEASE_CLIENTS=$PWD/target/release/examples/leases
LEASES=${LEASES:-1000}
lease_run() { # -> "seconds rate" of one run, its line on stderr
  local line
  line=$("$LEASE_CLIENTS" "vde://$DHCP_SW" "$LEASES" "${LEASE_TIMEOUT:-30}" || true)
  echo "  $line" >&2
  python3 -c 'import sys
f = dict(kv.split("=") for kv in sys.argv[1].split() if "=" in kv)
done = int(f.get("leases", "0/1").split("/")[0])
print(f.get("seconds", "nan"), f.get("rate_per_s", "0"), done)' "$line"
}
dhcp_switch() { # NAME [SWITCH FLAGS]: a switch of its own for one server, so nothing of an
  # earlier one is left
  "$FILO" switch "$T/$1" --nostdin -n $((LEASES + 8)) -M "$T/$1.mgmt" -d -p "$T/$1.pid" "${@:2}" >/dev/null 2>&1
  wait_sock "$T/$1/ctl"
}
server_port() { # NAME: marks the port of the one endpoint on switch NAME as a DHCP server port
  local port=""
  for _ in $(seq 50); do
    port=$("$FILO" console "$T/$1.mgmt" port/print | awk '/^Port/ {print $2 + 0; exit}')
    [ -n "$port" ] && break
    sleep 0.1
  done
  "$FILO" console "$T/$1.mgmt" "port/dhcpserver $port 1" >/dev/null
}
filo_lease_run() { # NAME [learn] -> "seconds rate leases" of one run
  dhcp_switch "$1"
  "$FILO" router --vnl "vde://$T/$1" --conf ip=10.84.0.1/16 --dhcp-server vde0=10.84.1.0-10.84.8.255 \
    -M "$T/$1.r.mgmt" -d -p "$T/$1.r.pid"
  wait_sock "$T/$1.r.mgmt"
  [ "${2:-}" = learn ] || server_port "$1"
  echo "filo router ${2:-}: $LEASES leases" >&2
  DHCP_SW=$T/$1 lease_run
  kill "$(cat "$T/$1.r.pid")" "$(cat "$T/$1.pid")" 2>/dev/null || true
}
read -r FILO_LEASE_S FILO_LEASE_RATE FILO_LEASES < <(filo_lease_run dhcp-filo)
read -r FILOL_LEASE_S FILOL_LEASE_RATE FILOL_LEASES < <(filo_lease_run dhcp-filol learn)
dnsmasq_run() { # NAME [EXTRA DNSMASQ FLAGS] -> "seconds rate leases" of one run; a NAME
  # ending in -flood: on a switch without DHCP snooping
  local sw=$T/$1 name=$1; shift
  if [ "${name%-flood}" != "$name" ]; then dhcp_switch "$name" --no-dhcp-snooping; else dhcp_switch "$name"; fi
  "$FILO" ns --vnl "vde://$sw" --conf ip=10.84.0.1/16 -- dnsmasq -k --port=0 "$@" \
    --dhcp-range=10.84.1.0,10.84.8.255,1h --dhcp-lease-max=5000 --dhcp-leasefile="$sw.leases" \
    --interface=vde0 --bind-interfaces >/dev/null 2>&1 &
  for _ in $(seq 100); do pgrep -f "dhcp-leasefile=$sw.leases" >/dev/null && break; sleep 0.1; done
  [ "${name%-flood}" != "$name" ] || server_port "$name"
  sleep 1
  echo "dnsmasq $*: $LEASES leases" >&2
  DHCP_SW=$sw lease_run
  pkill -f "dhcp-leasefile=$sw.leases" || true
  kill "$(cat "$sw.pid")" 2>/dev/null || true
}
# dnsmasq pings each address before it offers it (its default); --no-ping leaves that out.
read -r DM_LEASE_S DM_LEASE_RATE DM_LEASES < <(dnsmasq_run dhcp-dm)
read -r DMN_LEASE_S DMN_LEASE_RATE DMN_LEASES < <(dnsmasq_run dhcp-dmn --no-ping)
read -r DMF_LEASE_S DMF_LEASE_RATE DMF_LEASES < <(dnsmasq_run dhcp-dmn-flood --no-ping)
echo "DHCP: $LEASES user-space stacks in one process ask at once (leases, seconds until the last, leases/s)"
printf '  %-34s %8s %8s %8s\n' "filo router" "$FILO_LEASES" "$FILO_LEASE_S" "$FILO_LEASE_RATE"
printf '  %-34s %8s %8s %8s\n' "filo router, server port learned" "$FILOL_LEASES" "$FILOL_LEASE_S" "$FILOL_LEASE_RATE"
printf '  %-34s %8s %8s %8s\n' "dnsmasq (defaults)" "$DM_LEASES" "$DM_LEASE_S" "$DM_LEASE_RATE"
printf '  %-34s %8s %8s %8s\n' "dnsmasq --no-ping" "$DMN_LEASES" "$DMN_LEASE_S" "$DMN_LEASE_RATE"
printf '  %-34s %8s %8s %8s\n' "dnsmasq --no-ping, no snooping" "$DMF_LEASES" "$DMF_LEASE_S" "$DMF_LEASE_RATE"
printf '  %-34s %8s\n' "filo router / dnsmasq rate" "$(ratio "$FILO_LEASE_RATE" "$DM_LEASE_RATE")"
printf '  %-34s %8s\n' "filo router / dnsmasq --no-ping" "$(ratio "$FILO_LEASE_RATE" "$DMN_LEASE_RATE")"
printf '  %-34s %8s\n' "filo router / --no-ping, no snooping" "$(ratio "$FILO_LEASE_RATE" "$DMF_LEASE_RATE")"
