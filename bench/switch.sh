#!/usr/bin/env bash
# filo switch beside Debian's vde_switch, measured in the same run.
#   - delivered frames/s and loss for 64- and 1514-byte unicast, one pair and four pairs, with
#     the same libvdeplug C clients (bench/vdeclient.c) on both switches, and with filo's
#     batched plugs (plugbench) on filo's switch; the C-client rows are medians of
#     FLOOD_ROUNDS rounds (default 3), the switches interleaved, the order reversed every other
#     round; ratios are medians of the per-round ratios (both sides of a ratio from one round);
#   - fairness rows from the same rounds: vde_switch under `chrt -b 0` (SCHED_BATCH, the
#     policy filo's switch thread gives itself) and filo's switch under `--scheduling normal`
#     (SCHED_OTHER, vde_switch's), with how often the senders were preempted;
#   - the switch process's CPU time per delivered frame (/proc/PID/task/*/schedstat);
#   - for filo's switch, the frames it counted as dropped (port/drops on its console), so that
#     loss nobody accounted for shows ("unacct": sent - delivered - counted drops);
#   - round trip p50/p99 (64-byte ping through an echo client; medians of RTT_ROUNDS interleaved
#     runs on fresh switches, default 7, order reversed every other round; vde_switch also under
#     chrt -b 0; and the same clients over ptp:// with no switch);
#   - TCP Gbit/s (iperf3) between two namespaces whose taps are plugged into the switch: vde_plug
#     at both ends on either switch, filo plug at both ends on filo's; medians of TCP_ROUNDS
#     rounds (default 3), order reversed every other round.
# Usage: bench/switch.sh [FRAMES_64] [FRAMES_1514]    (defaults 300000 100000). Run as root.
#        bench/switch.sh --perf [FRAMES_64]   only where each switch's CPU goes under the
#        one-pair 64-byte flood (perf record -e cpu-clock; Debian package linux-perf).
set -euo pipefail
cd "$(dirname "$0")/.."
PERF=0
if [ "${1:-}" = --perf ]; then
  PERF=1; shift
  command -v perf >/dev/null || { echo "bench/switch.sh --perf: perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
fi
N64=${1:-300000}
N1514=${2:-100000}
FLOOD_ROUNDS=${FLOOD_ROUNDS:-3}
RTT_ROUNDS=${RTT_ROUNDS:-7}
TCP_ROUNDS=${TCP_ROUNDS:-3}
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

# deb: vde_switch; deb-batch: vde_switch under chrt -b 0 (SCHED_BATCH, as filo's switch thread
# runs by default); filo; filo-normal: filo switch --scheduling normal (SCHED_OTHER, as
# vde_switch runs); filo-busy: filo switch --busy-poll 200.
start_switch() { # $1 = deb|deb-batch|filo|filo-normal|filo-busy
  rm -rf "$T/sw" "$T/sw.pid" "$T/mgmt"
  case "$1" in
    deb) vde_switch -s "$T/sw" -d -p "$T/sw.pid" >/dev/null 2>&1 ;;
    deb-batch) chrt -b 0 vde_switch -s "$T/sw" -d -p "$T/sw.pid" >/dev/null 2>&1 ;;
    filo-busy) "$FILO" switch "$T/sw" --nostdin --busy-poll 200 -d -p "$T/sw.pid" >/dev/null 2>&1 ;;
    filo-normal) "$FILO" switch "$T/sw" --nostdin --scheduling normal -M "$T/mgmt" -d -p "$T/sw.pid" >/dev/null 2>&1 ;;
    filo) "$FILO" switch "$T/sw" --nostdin -M "$T/mgmt" -d -p "$T/sw.pid" >/dev/null 2>&1 ;;
  esac
  for _ in $(seq 50); do [ -S "$T/sw/ctl" ] && [ -s "$T/sw.pid" ] && break; sleep 0.1; done
  [ -S "$T/sw/ctl" ] && [ -s "$T/sw.pid" ] || { echo "FAILED: switch $1 did not start" >&2; exit 1; }
  SWPID=$(cat "$T/sw.pid")
  # Each kind runs the policy it claims (filo's switch forwards on its main thread).
  local want=SCHED_OTHER policy
  case "$1" in deb-batch|filo|filo-busy) want=SCHED_BATCH ;; esac
  policy=$(chrt -p "$SWPID" | awk -F': *' '/policy/ { print $2 }')
  [ "$policy" = "$want" ] || { echo "FAILED: switch $1 runs $policy, not $want" >&2; exit 1; }
}

stop_switch() { kill "$SWPID" 2>/dev/null || true; sleep 0.3; SWPID=""; }

counted_drops() { # frames filo's switch counted as dropped so far (0 without a console)
  [ -S "$T/mgmt" ] || { echo 0; return; }
  "$FILO" console "$T/mgmt" port/drops 2>/dev/null |
    awk '/^Port/ { s += $4 + $6 + $8 } END { printf "%d", s }'
}

# frames CLIENTKIND SIZE COUNT PAIRS
#   -> "delivered_fps loss_pct cpu_ns_per_frame unaccounted busy_cpus senders_preempted"
# busy_cpus: CPU time of the switch and all clients over the receivers' longest first-to-last
# frame interval, i.e. how many of the machine's CPUs the run kept busy. senders_preempted: the
# C senders' involuntary context switches (getrusage), "-" for filo's plugs.
frames() {
  local kind=$1 size=$2 count=$3 pairs=$4 vnl="vde://$T/sw"
  local rx_cmd tx_cmd
  if [ "$kind" = c ]; then rx_cmd="$CLIENT"; tx_cmd="$CLIENT"; else rx_cmd="$PB"; tx_cmd="$PB"; fi
  local i mine=()
  for i in $(seq 1 "$pairs"); do
    "$rx_cmd" "$vnl" recv 1000 "b$i" >"$T/rx.$i" &
    mine+=($!)
  done
  sleep 0.5
  local drops0; drops0=$(counted_drops)
  local cpu0; cpu0=$(cpu_ns "$SWPID")
  for i in $(seq 1 "$pairs"); do
    "$tx_cmd" "$vnl" send "$count" "$size" "b$i" "a$i" >"$T/txo.$i" 2>/dev/null &
    echo $! >"$T/tx.$i"
    mine+=($!)
  done
  for i in $(seq 1 "$pairs"); do
    while ! grep -q '^[0-9]' "$T/rx.$i" 2>/dev/null; do sleep 0.1; done
  done
  local cpu1; cpu1=$(cpu_ns "$SWPID")
  for i in $(seq 1 "$pairs"); do kill "$(cat "$T/tx.$i")" 2>/dev/null || true; done
  # Only this run's clients (a profiler may be running beside them).
  wait "${mine[@]}" 2>/dev/null || true
  local drops1; drops1=$(counted_drops)
  local unacct=-
  [ -S "$T/mgmt" ] && unacct=$((count * pairs - drops1 + drops0))
  local tx_cpu; tx_cpu=$(cat "$T"/txo.* | awk '/^[0-9]/ { s += $1 } END { printf "%.6f", s }')
  local preempted=-
  [ "$kind" = c ] && preempted=$(cat "$T"/txo.* | awk '/^[0-9]/ { s += $2 } END { printf "%d", s }')
  cat "$T"/rx.* | grep '^[0-9]' | awk -v sent=$((count * pairs)) -v cpu=$((cpu1 - cpu0)) -v u="$unacct" -v txcpu="$tx_cpu" -v pre="$preempted" '
    # Frames/s = all frames over the combined span (earliest first frame to latest last frame
    # of any receiver, on CLOCK_MONOTONIC), not the sum of per-receiver rates.
    { got += $1; if ($2 > wall) wall = $2; rxcpu += $3
      if ($1 > 0) { if (t0 == "" || $4 < t0) t0 = $4; if ($5 > t1) t1 = $5 } }
    END { if (u != "-") u -= got
          span = (t1 > t0 ? t1 - t0 : 0); fps = (span > 0 ? got / span : 0)
          printf "%.0f %.2f %.0f %s %.2f %s\n", fps, 100 * (sent - got) / sent, (got > 0 ? cpu / got : 0), u,
            (wall > 0 ? (cpu / 1e9 + rxcpu + txcpu) / wall : 0), pre }'
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
  # A failed transfer fails the script: a 0 in the median would hide it.
  ip netns exec "$NS1" iperf3 -c 10.98.0.2 -t 4 -J 2>/dev/null |
    python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))' ||
    { echo "FAILED: iperf3 over taps plugged with $1" >&2; return 1; }
  for ns in $NS1 $NS2; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
}

declare -A R
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
largest() { awk 'BEGIN { m = "-" } $1 != "-" { if (m == "-" || $1 + 0 > m + 0) m = $1 } END { print m }'; }
col() { awk -v i="$2" '{ print $i }' "$1"; } # FILE FIELD -> that field of every round
# per_round FILE_A FILE_B FIELD -> A/B of every round (line N of each file is round N)
per_round() { paste -d ' ' <(col "$1" "$3") <(col "$2" "$3") | awk '$2 > 0 { printf "%.4f\n", $1 / $2 }'; }
# The median of the per-round ratios: each ratio compares two runs of the same round.
rratio() { per_round "$@" | median | awk '$1 != "-" { printf "%.2fx", $1; next } { print "-" }'; }
# The smallest and largest per-round ratio.
rrange() { per_round "$@" | sort -n | awk 'NR == 1 { lo = $1 } { hi = $1 } END { if (NR) printf "%.2f-%.2fx", lo, hi; else print "-" }'; }
in_order() { # ROUND KIND... -> the kinds, reversed in even rounds (neither side always first)
  local round=$1; shift
  if [ $((round % 2)) = 1 ]; then echo "$@"; else echo "$@" | tr ' ' '\n' | tac | tr '\n' ' '; fi
}

if [ "$PERF" = 1 ]; then
  # Where each switch's CPU goes under the one-pair 64-byte flood of the table below: perf
  # samples the switch process on cpu-clock (software clock: works in VMs without PMU).
  printf '\n%s\n' "Switch CPU under the one-pair 64-byte flood ($N64 frames, C clients), perf record -e cpu-clock -p SWITCH:"
  printf '%-26s %8s %8s %14s %10s\n' "" samples kernel "switch binary" "libraries"
  for sw in deb filo; do
    start_switch "$sw"
    perf record -q -e cpu-clock -p "$SWPID" -o "$T/perf.data" >/dev/null 2>&1 &
    perf_pid=$!
    sleep 0.5
    frames c 64 "$N64" 1 >/dev/null
    # SIGTERM: a background job of a script ignores SIGINT; perf record ends cleanly on both.
    kill -TERM "$perf_pid"; wait "$perf_pid" 2>/dev/null || true
    bin=vde_switch; [ "$sw" = filo ] && bin=filo
    perf report -i "$T/perf.data" -n --sort dso --stdio 2>/dev/null | awk -v bin="$bin" -v name="$([ "$sw" = filo ] && echo "filo switch" || echo vde_switch)" '
      /^ *[0-9.]+%/ { n = $2; all += n; if ($3 ~ /^\[kernel/) k += n; else if ($3 == bin) own += n; else lib += n }
      END { if (all == 0) { print "FAILED: no perf samples for " name > "/dev/stderr"; exit 1 }
            printf "%-26s %8d %7.1f%% %13.1f%% %9.1f%%\n", name, all, 100 * k / all, 100 * own / all, 100 * lib / all }'
    rm -f "$T/perf.data"*
    stop_switch
  done
  exit 0
fi

for size in 64 1514; do
  n=$N64; [ "$size" = 1514 ] && n=$N1514
  R[ceil,$size]=$(ceiling "$size" "$n")
done
# With one datagram per frame, delivered frames/s swing by tens of percent between runs here:
# FLOOD_ROUNDS rounds on fresh switches, the kinds interleaved and their order reversed every
# other round; each cell is the median of its rounds (frames/s, loss, CPU, busy CPUs) and the
# largest unacct; each ratio the median of the per-round ratios. deb-batch and filo-normal are
# the fairness rows: each switch under the other's scheduling policy.
FLOOD_KINDS="deb deb-batch filo filo-normal"
for round in $(seq "$FLOOD_ROUNDS"); do
  for sw in $(in_order "$round" $FLOOD_KINDS); do
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
for sw in $FLOOD_KINDS; do
  for size in 64 1514; do
    for pairs in 1 4; do
      file=$T/flood.$sw.$size.$pairs
      R[$sw,c,$size,$pairs]="$(col "$file" 1 | median) $(col "$file" 2 | median) \
$(col "$file" 3 | median) $(col "$file" 4 | largest) $(col "$file" 5 | median) $(col "$file" 6 | median)"
    done
  done
done
# filo's own plugs: one round on filo's switch.
start_switch filo
for size in 64 1514; do
  n=$N64; [ "$size" = 1514 ] && n=$N1514
  for pairs in 1 4; do
    frames b "$size" "$n" "$pairs" >"$T/flood.filo-b.$size.$pairs"
    R[filo,b,$size,$pairs]=$(cat "$T/flood.filo-b.$size.$pairs")
  done
done
stop_switch
# TCP over taps: vde_plug at both ends on vde_switch and on filo's switch (the switch alone
# differs), filo plug at both ends on filo's switch (the plugs differ too); TCP_ROUNDS rounds,
# order reversed every other round.
for round in $(seq "$TCP_ROUNDS"); do
  for kind in $(in_order "$round" deb:deb filo:deb filo:filo); do
    start_switch "${kind%%:*}"
    tcp "${kind#*:}" >>"$T/tcp.$kind"
    stop_switch
  done
done
# Round trips vary with where the scheduler puts three processes on two CPUs: fresh switches,
# the kinds interleaved (order reversed every other round), RTT_ROUNDS rounds; the median p50
# and p99 of each kind count. "ptp" is the two C clients joined by ptp:// with no switch: the
# floor their own wake-ups set.
for round in $(seq "$RTT_ROUNDS"); do
  for kind in $(in_order "$round" deb deb-batch filo filo-busy ptp); do
    if [ "$kind" = ptp ]; then
      r=$(rtt "ptp://$T/ptp"); echo "$r" >>"$T/rtt.ptp"
    else
      start_switch "$kind"
      r=$(rtt "vde://$T/sw"); echo "$r" >>"$T/rtt.$kind"
      stop_switch
    fi
  done
done
for kind in deb deb-batch filo filo-busy ptp; do
  R[$kind,rtt]="$(col "$T/rtt.$kind" 1 | median) $(col "$T/rtt.$kind" 2 | median) $(awk '{ lost += 5000 - $3 } END { print lost + 0 }' "$T/rtt.$kind")"
done

f() { echo "${R[$1]}" | awk -v i="$2" '{ print $i }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }
fl() { echo "$T/flood.$1.$2.$3"; } # KIND SIZE PAIRS -> its per-round file

echo
echo "Delivered frames/s, loss and switch CPU per delivered frame (same run; C clients = libvdeplug;"
echo "their columns are medians of $FLOOD_ROUNDS interleaved rounds, filo's plugs one round; C ratios are"
echo "medians of per-round ratios, plug ratios against vde_switch's median)"
echo "unacct = frames sent - delivered - dropped as counted by filo's switch (port/drops): loss nobody saw"
printf '%-24s | %-28s | %-35s | %-35s | %s\n' "" "vde_switch + C clients" "filo switch + C clients" "filo switch + filo plugs (trains)" "filo/vde: f/s C, CPU C, f/s plugs, CPU plugs"
printf '%-24s | %12s %6s %8s | %12s %6s %8s %6s | %12s %6s %8s %6s |\n' "case" "frames/s" "loss%" "ns/frm" "frames/s" "loss%" "ns/frm" "unacct" "frames/s" "loss%" "ns/frm" "unacct"
for size in 64 1514; do
  for pairs in 1 4; do
    printf '%-24s | %12s %6s %8s | %12s %6s %8s %6s | %12s %6s %8s %6s | %s %s %s %s\n' "${size}B unicast, $pairs pair(s)" \
      "$(f deb,c,$size,$pairs 1)" "$(f deb,c,$size,$pairs 2)" "$(f deb,c,$size,$pairs 3)" \
      "$(f filo,c,$size,$pairs 1)" "$(f filo,c,$size,$pairs 2)" "$(f filo,c,$size,$pairs 3)" "$(f filo,c,$size,$pairs 4)" \
      "$(f filo,b,$size,$pairs 1)" "$(f filo,b,$size,$pairs 2)" "$(f filo,b,$size,$pairs 3)" "$(f filo,b,$size,$pairs 4)" \
      "$(rratio "$(fl filo $size $pairs)" "$(fl deb $size $pairs)" 1)" \
      "$(rratio "$(fl filo $size $pairs)" "$(fl deb $size $pairs)" 3)" \
      "$(ratio "$(f filo,b,$size,$pairs 1)" "$(f deb,c,$size,$pairs 1)")" \
      "$(ratio "$(f filo,b,$size,$pairs 3)" "$(f deb,c,$size,$pairs 3)")"
  done
done
echo "Scheduling: each switch under the other's policy (same rounds, C clients). filo's switch thread"
echo "runs SCHED_BATCH (a woken switch does not preempt the sender); vde_switch runs SCHED_OTHER."
echo "preempt = times the C senders were preempted (involuntary context switches, median of rounds)"
printf '%-24s | %-27s | %-27s | %-27s | %-27s | %s\n' "" "vde_switch (SCHED_OTHER)" "vde_switch chrt -b 0 (BATCH)" "filo switch (SCHED_BATCH)" "filo --scheduling normal" "f/s ratios: filo/vde-batch,"
printf '%-24s | %12s %6s %7s | %12s %6s %7s | %12s %6s %7s | %12s %6s %7s | %s\n' case frames/s ns/frm preempt frames/s ns/frm preempt frames/s ns/frm preempt frames/s ns/frm preempt "vde-batch/vde, filo-normal/vde"
for size in 64 1514; do
  for pairs in 1 4; do
    printf '%-24s |' "${size}B unicast, $pairs pair(s)"
    for sw in deb deb-batch filo filo-normal; do
      printf ' %12s %6s %7s |' "$(f $sw,c,$size,$pairs 1)" "$(f $sw,c,$size,$pairs 3)" "$(f $sw,c,$size,$pairs 6)"
    done
    printf ' %s %s %s\n' "$(rratio "$(fl filo $size $pairs)" "$(fl deb-batch $size $pairs)" 1)" \
      "$(rratio "$(fl deb-batch $size $pairs)" "$(fl deb $size $pairs)" 1)" \
      "$(rratio "$(fl filo-normal $size $pairs)" "$(fl deb $size $pairs)" 1)"
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
echo "Round trip, 64-byte frames (us, median of $RTT_ROUNDS interleaved runs; p50 ratios are medians of per-round ratios,"
echo "with the smallest and largest per-round ratio):"
echo "                                   vde_switch p50/p99 $(f deb,rtt 1)/$(f deb,rtt 2)   vde_switch chrt -b 0 p50/p99 $(f deb-batch,rtt 1)/$(f deb-batch,rtt 2) (p50 $(rratio "$T/rtt.deb-batch" "$T/rtt.deb" 1))"
echo "                                   filo switch p50/p99 $(f filo,rtt 1)/$(f filo,rtt 2) (p50 $(rratio "$T/rtt.filo" "$T/rtt.deb" 1), per round $(rrange "$T/rtt.filo" "$T/rtt.deb" 1); vs vde_switch chrt -b 0 $(rratio "$T/rtt.filo" "$T/rtt.deb-batch" 1))"
echo "                                   filo --busy-poll 200 p50/p99 $(f filo-busy,rtt 1)/$(f filo-busy,rtt 2) (p50 $(rratio "$T/rtt.filo-busy" "$T/rtt.deb" 1), per round $(rrange "$T/rtt.filo-busy" "$T/rtt.deb" 1))"
echo "                                   no switch (the C clients over ptp://) p50/p99 $(f ptp,rtt 1)/$(f ptp,rtt 2) (p50 $(rratio "$T/rtt.ptp" "$T/rtt.deb" 1) of vde_switch's)"
echo "                                   pings lost (of 5000 per round): vde_switch $(f deb,rtt 3)   vde_switch chrt -b 0 $(f deb-batch,rtt 3)   filo switch $(f filo,rtt 3)   filo --busy-poll $(f filo-busy,rtt 3)   ptp $(f ptp,rtt 3)"
echo "TCP over taps (iperf3, Gbit/s, median of $TCP_ROUNDS interleaved rounds; ratios are medians of per-round ratios to vde_switch+vde_plug):"
echo "                                   vde_switch+vde_plug $(col "$T/tcp.deb:deb" 1 | median)   filo switch+vde_plug $(col "$T/tcp.filo:deb" 1 | median) ($(rratio "$T/tcp.filo:deb" "$T/tcp.deb:deb" 1))   filo switch+filo plug $(col "$T/tcp.filo:filo" 1 | median) ($(rratio "$T/tcp.filo:filo" "$T/tcp.deb:deb" 1))"
