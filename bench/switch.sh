#!/usr/bin/env bash
# filo switch beside Debian's vde_switch, measured in the same run.
#   - delivered frames/s and loss for 64- and 1514-byte unicast, one pair and four pairs, with
#     the same libvdeplug C clients (bench/vdeclient.c) on both switches, and with filo's
#     batched plugs (plugbench) on filo's switch; the C-client rows are medians of
#     FLOOD_ROUNDS rounds (default 3), the two switches interleaved;
#   - the switch process's CPU time per delivered frame (/proc/PID/task/*/schedstat);
#   - for filo's switch, the frames it counted as dropped (port/drops on its console), so that
#     loss nobody accounted for shows ("unacct": sent - delivered - counted drops);
#   - round trip p50/p99 (64-byte ping through an echo client; medians of RTT_ROUNDS interleaved
#     runs on fresh switches, default 7; and the same clients over ptp:// with no switch);
#   - TCP Gbit/s (iperf3) between two namespaces whose taps are plugged into the switch.
# Usage: bench/switch.sh [FRAMES_64] [FRAMES_1514]    (defaults 300000 100000). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
N64=${1:-300000}
N1514=${2:-100000}
cargo build --release --quiet -p filo --bin filo --example plugbench
FILO=$PWD/target/release/filo
PB=$PWD/target/release/examples/plugbench
T=$(mktemp -d /tmp/filo-bsw-XXXXXX)
CLIENT=$T/vdeclient
gcc -O2 -o "$CLIENT" bench/vdeclient.c -lvdeplug
NS1=filo-bsw1-$$; NS2=filo-bsw2-$$
SWPID=""
cleanup() {
  [ -n "$SWPID" ] && kill "$SWPID" 2>/dev/null || true
  for ns in $NS1 $NS2; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  jobs -p | xargs -r kill 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT

cpu_ns() { # total on-CPU ns of all threads of $1
  cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%.0f", s }'
}

start_switch() { # $1 = deb|filo|filo-busy
  rm -rf "$T/sw" "$T/sw.pid"
  if [ "$1" = deb ]; then
    vde_switch -s "$T/sw" -d -p "$T/sw.pid" >/dev/null 2>&1
  elif [ "$1" = filo-busy ]; then
    "$FILO" switch "$T/sw" --nostdin --busy-poll 200 -d -p "$T/sw.pid" >/dev/null 2>&1
  else
    rm -f "$T/mgmt"
    "$FILO" switch "$T/sw" --nostdin -M "$T/mgmt" -d -p "$T/sw.pid" >/dev/null 2>&1
  fi
  for _ in $(seq 50); do [ -S "$T/sw/ctl" ] && [ -s "$T/sw.pid" ] && break; sleep 0.1; done
  SWPID=$(cat "$T/sw.pid")
}

stop_switch() { kill "$SWPID" 2>/dev/null || true; sleep 0.3; SWPID=""; }

counted_drops() { # frames filo's switch counted as dropped so far (0 without a console)
  [ -S "$T/mgmt" ] || { echo 0; return; }
  "$FILO" console "$T/mgmt" port/drops 2>/dev/null |
    awk '/^Port/ { s += $4 + $6 + $8 } END { printf "%d", s }'
}

# frames CLIENTKIND SIZE COUNT PAIRS
#   -> "delivered_fps loss_pct cpu_ns_per_frame unaccounted busy_cpus"
# busy_cpus: CPU time of the switch and all clients over the receivers' longest first-to-last
# frame interval, i.e. how many of the machine's CPUs the run kept busy.
frames() {
  local kind=$1 size=$2 count=$3 pairs=$4 vnl="vde://$T/sw"
  local rx_cmd tx_cmd
  if [ "$kind" = c ]; then rx_cmd="$CLIENT"; tx_cmd="$CLIENT"; else rx_cmd="$PB"; tx_cmd="$PB"; fi
  local i
  for i in $(seq 1 "$pairs"); do
    "$rx_cmd" "$vnl" recv 1000 "b$i" >"$T/rx.$i" &
  done
  sleep 0.5
  local drops0; drops0=$(counted_drops)
  local cpu0; cpu0=$(cpu_ns "$SWPID")
  for i in $(seq 1 "$pairs"); do
    "$tx_cmd" "$vnl" send "$count" "$size" "b$i" "a$i" >"$T/txo.$i" 2>/dev/null &
    echo $! >"$T/tx.$i"
  done
  for i in $(seq 1 "$pairs"); do
    while ! grep -q '^[0-9]' "$T/rx.$i" 2>/dev/null; do sleep 0.1; done
  done
  local cpu1; cpu1=$(cpu_ns "$SWPID")
  for i in $(seq 1 "$pairs"); do kill "$(cat "$T/tx.$i")" 2>/dev/null || true; done
  wait 2>/dev/null || true
  local drops1; drops1=$(counted_drops)
  local unacct=-
  [ -S "$T/mgmt" ] && unacct=$((count * pairs - drops1 + drops0))
  local tx_cpu; tx_cpu=$(cat "$T"/txo.* | awk '/^[0-9]/ { s += $1 } END { printf "%.6f", s }')
  cat "$T"/rx.* | grep '^[0-9]' | awk -v sent=$((count * pairs)) -v cpu=$((cpu1 - cpu0)) -v u="$unacct" -v txcpu="$tx_cpu" '
    # Frames/s = all frames over the combined span (earliest first frame to latest last frame
    # of any receiver, on CLOCK_MONOTONIC), not the sum of per-receiver rates.
    { got += $1; if ($2 > wall) wall = $2; rxcpu += $3
      if ($1 > 0) { if (t0 == "" || $4 < t0) t0 = $4; if ($5 > t1) t1 = $5 } }
    END { if (u != "-") u -= got
          span = (t1 > t0 ? t1 - t0 : 0); fps = (span > 0 ? got / span : 0)
          printf "%.0f %.2f %.0f %s %.2f\n", fps, 100 * (sent - got) / sent, (got > 0 ? cpu / got : 0), u,
            (wall > 0 ? (cpu / 1e9 + rxcpu + txcpu) / wall : 0) }'
  rm -f "$T"/rx.* "$T"/tx.* "$T"/txo.*
}

# ceiling SIZE COUNT -> frames/s one libvdeplug sender delivers to one libvdeplug receiver over
# ptp:// with no switch at all: what the C clients allow any switch to deliver.
ceiling() {
  "$CLIENT" "ptp://$T/ptp" recv 1000 b1 >"$T/rx.c" &
  sleep 0.5
  "$CLIENT" "ptp://$T/ptp" send "$2" "$1" b1 a1 >/dev/null 2>&1 &
  local tx=$!
  while ! grep -q '^[0-9]' "$T/rx.c" 2>/dev/null; do sleep 0.1; done
  kill "$tx" 2>/dev/null || true
  wait 2>/dev/null || true
  grep '^[0-9]' "$T/rx.c" | awk '{ printf "%.0f\n", ($2 > 0 ? $1 / $2 : 0) }'
  rm -f "$T/rx.c" "$T"/ptp*
}

rtt() { # VNL -> "p50 p99 replies" (microseconds; replies of the 5000 pings)
  "$CLIENT" "$1" echo >/dev/null 2>&1 &
  local echo_pid=$!
  sleep 0.3
  # A round with no replies is a failure, never a fast "0 0" in the median.
  "$CLIENT" "$1" ping 5000 64 || { echo "FAILED: no round trip through $1" >&2; kill $echo_pid; return 1; }
  kill $echo_pid 2>/dev/null || true
  wait $echo_pid 2>/dev/null || true
  rm -f "$T"/ptp*
}

tcp() { # $1 = plug program for the taps: deb|filo -> Gbit/s
  local i ns
  for i in 1 2; do
    ns=filo-bsw$i-$$
    ip netns add "$ns"
    ip netns exec "$ns" ip link set lo up
    ip netns exec "$ns" ip tuntap add tap0 mode tap
    ip netns exec "$ns" ip addr add 10.98.0.$i/24 dev tap0
    ip netns exec "$ns" ip link set tap0 up
    if [ "$1" = deb ]; then
      ip netns exec "$ns" vde_plug tap://tap0 "vde://$T/sw" </dev/null >/dev/null 2>&1 &
    else
      ip netns exec "$ns" "$FILO" plug tap://tap0 "vde://$T/sw" </dev/null >/dev/null 2>&1 &
    fi
  done
  sleep 0.5
  ip netns exec "$NS2" iperf3 -s -1 -B 10.98.0.2 >/dev/null 2>&1 &
  sleep 0.5
  ip netns exec "$NS1" ping -c 1 -W 2 10.98.0.2 >/dev/null 2>&1 || true
  ip netns exec "$NS1" iperf3 -c 10.98.0.2 -t 4 -J 2>/dev/null |
    python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))' || echo 0
  for ns in $NS1 $NS2; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
}

declare -A R
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
largest() { awk 'BEGIN { m = "-" } $1 != "-" { if (m == "-" || $1 + 0 > m + 0) m = $1 } END { print m }'; }
for size in 64 1514; do
  n=$N64; [ "$size" = 1514 ] && n=$N1514
  R[ceil,$size]=$(ceiling "$size" "$n")
done
# With one datagram per frame, delivered frames/s swing by tens of percent between runs here:
# FLOOD_ROUNDS rounds (default 3), vde_switch and filo interleaved on fresh switches; each cell
# is the median of its rounds (frames/s, loss, CPU, busy CPUs) and the largest unacct.
for round in $(seq "${FLOOD_ROUNDS:-3}"); do
  for sw in deb filo; do
    start_switch "$sw"
    for size in 64 1514; do
      n=$N64; [ "$size" = 1514 ] && n=$N1514
      for pairs in 1 4; do
        frames c "$size" "$n" "$pairs" >>"$T/flood.$sw.$size.$pairs"
      done
    done
    stop_switch
  done
done
for sw in deb filo; do
  for size in 64 1514; do
    for pairs in 1 4; do
      file=$T/flood.$sw.$size.$pairs
      R[$sw,c,$size,$pairs]="$(awk '{ print $1 }' "$file" | median) $(awk '{ print $2 }' "$file" | median) \
$(awk '{ print $3 }' "$file" | median) $(awk '{ print $4 }' "$file" | largest) $(awk '{ print $5 }' "$file" | median)"
    done
  done
done
# filo's own plugs and the TCP rows: one run each.
for sw in deb filo; do
  start_switch "$sw"
  R[$sw,tcp]=$(tcp deb)
  if [ "$sw" = filo ]; then
    for size in 64 1514; do
      n=$N64; [ "$size" = 1514 ] && n=$N1514
      for pairs in 1 4; do
        R[filo,b,$size,$pairs]=$(frames b "$size" "$n" "$pairs")
      done
    done
    R[filo,tcpb]=$(tcp filo)
  fi
  stop_switch
done
# Round trips vary with where the scheduler puts three processes on two CPUs: fresh switches,
# the kinds interleaved, RTT_ROUNDS rounds; the median p50 and p99 of each kind count. "ptp" is
# the two C clients joined by ptp:// with no switch: the floor their own wake-ups set.
for round in $(seq "${RTT_ROUNDS:-7}"); do
  for kind in deb filo filo-busy; do
    start_switch "$kind"
    r=$(rtt "vde://$T/sw"); echo "$r" >>"$T/rtt.$kind"
    stop_switch
  done
  r=$(rtt "ptp://$T/ptp"); echo "$r" >>"$T/rtt.ptp"
done
for kind in deb filo filo-busy ptp; do
  key=${kind/filo-busy/busy}
  R[$key,rtt]="$(awk '{ print $1 }' "$T/rtt.$kind" | median) $(awk '{ print $2 }' "$T/rtt.$kind" | median) $(awk '{ lost += 5000 - $3 } END { print lost + 0 }' "$T/rtt.$kind")"
done

f() { echo "${R[$1]}" | awk -v i="$2" '{ print $i }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }

echo
echo "Delivered frames/s, loss and switch CPU per delivered frame (same run; C clients = libvdeplug;"
echo "their columns are medians of ${FLOOD_ROUNDS:-3} interleaved rounds, filo's plugs one round)"
echo "unacct = frames sent - delivered - dropped as counted by filo's switch (port/drops): loss nobody saw"
printf '%-24s | %-28s | %-35s | %-35s | %s\n' "" "vde_switch + C clients" "filo switch + C clients" "filo switch + filo plugs (trains)" "filo/vde: f/s C, CPU C, f/s plugs, CPU plugs"
printf '%-24s | %12s %6s %8s | %12s %6s %8s %6s | %12s %6s %8s %6s |\n' "case" "frames/s" "loss%" "ns/frm" "frames/s" "loss%" "ns/frm" "unacct" "frames/s" "loss%" "ns/frm" "unacct"
for size in 64 1514; do
  for pairs in 1 4; do
    printf '%-24s | %12s %6s %8s | %12s %6s %8s %6s | %12s %6s %8s %6s | %s %s %s %s\n' "${size}B unicast, $pairs pair(s)" \
      "$(f deb,c,$size,$pairs 1)" "$(f deb,c,$size,$pairs 2)" "$(f deb,c,$size,$pairs 3)" \
      "$(f filo,c,$size,$pairs 1)" "$(f filo,c,$size,$pairs 2)" "$(f filo,c,$size,$pairs 3)" "$(f filo,c,$size,$pairs 4)" \
      "$(f filo,b,$size,$pairs 1)" "$(f filo,b,$size,$pairs 2)" "$(f filo,b,$size,$pairs 3)" "$(f filo,b,$size,$pairs 4)" \
      "$(ratio "$(f filo,c,$size,$pairs 1)" "$(f deb,c,$size,$pairs 1)")" \
      "$(ratio "$(f filo,c,$size,$pairs 3)" "$(f deb,c,$size,$pairs 3)")" \
      "$(ratio "$(f filo,b,$size,$pairs 1)" "$(f deb,c,$size,$pairs 1)")" \
      "$(ratio "$(f filo,b,$size,$pairs 3)" "$(f deb,c,$size,$pairs 3)")"
  done
done
echo "CPUs kept busy while frames flowed (switch + all clients; this machine has $(nproc)):"
for size in 64 1514; do
  for pairs in 1 4; do
    printf '%-24s | vde_switch + C %5s | filo + C %5s | filo + plugs %5s\n' "${size}B unicast, $pairs pair(s)" \
      "$(f deb,c,$size,$pairs 5)" "$(f filo,c,$size,$pairs 5)" "$(f filo,b,$size,$pairs 5)"
  done
done
echo "Ceiling of the C clients (one libvdeplug sender to one receiver over ptp://, no switch):" \
  "64B ${R[ceil,64]} f/s, 1514B ${R[ceil,1514]} f/s"
echo
echo "Round trip, 64-byte frames (us, median of ${RTT_ROUNDS:-7} interleaved runs):"
echo "                                   vde_switch p50/p99 $(f deb,rtt 1)/$(f deb,rtt 2)   filo switch p50/p99 $(f filo,rtt 1)/$(f filo,rtt 2) (p50 $(ratio "$(f filo,rtt 1)" "$(f deb,rtt 1)"))   filo --busy-poll 200 p50/p99 $(f busy,rtt 1)/$(f busy,rtt 2) (p50 $(ratio "$(f busy,rtt 1)" "$(f deb,rtt 1)"))"
echo "                                   no switch (the C clients over ptp://) p50/p99 $(f ptp,rtt 1)/$(f ptp,rtt 2) (p50 $(ratio "$(f ptp,rtt 1)" "$(f deb,rtt 1)") of vde_switch's)"
echo "                                   pings lost (of 5000 per round): vde_switch $(f deb,rtt 3)   filo switch $(f filo,rtt 3)   filo --busy-poll $(f busy,rtt 3)   ptp $(f ptp,rtt 3)"
echo "TCP over taps (iperf3, Gbit/s):    vde_switch+vde_plug ${R[deb,tcp]}   filo switch+vde_plug ${R[filo,tcp]} ($(ratio "${R[filo,tcp]}" "${R[deb,tcp]}"))   filo switch+filo plug ${R[filo,tcpb]} ($(ratio "${R[filo,tcpb]}" "${R[deb,tcp]}"))"
