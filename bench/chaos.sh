#!/usr/bin/env bash
# Chaos run: a small lab with a checked transfer running while a random component is killed
# with kill -9 and restarted, ROUNDS times; then every component must work and nothing may
# be left behind.
#
#   sw1 ──(filo wirefilter)── sw2          two filo switches, consoles $T/m1 $T/m2
#    │ http-serve 10.77.0.1               filo stack http-serve of a random 2 MiB file
#    │ ns1 10.77.0.11 (filo ns)           filo stack fetch 10.77.0.2 on sw2: one checked
#    │ capture (filo capture)             transfer per round (cmp against the file)
#   sw2: ns2 10.77.0.12 (filo ns), fetch
#
# Each round starts a fetch, waits a random moment, kill -9s one of sw1, sw2, wf, http, ns1,
# ns2, cap or the fetch itself, and restarts it. Until plugs, stacks and `filo ns` reconnect
# to a switch restarted on the same path, a killed switch strands its clients: its
# dependents (wf, http, cap, ns1 for sw1; wf, ns2 for sw2) are stopped and restarted with
# it. FILO_CHAOS_RECONNECT=1 restarts the switch alone (for once reconnecting lands).
#
# Afterwards: ns1 pings ns2 across the wirefilter, a last fetch is checked, the capture is
# still writing; no component died that was not killed (exit status, core files); once all
# is stopped, no process carrying the run's tag (a namespace outlives the lab only in one, or
# in a bind mount: new `ip netns` names are noted), no core file, no panic in any log, and
# nothing left in the switches' directories. A fetch that failed because its path was killed
# counts as interrupted; a fetch that returned different bytes is a failure. The switches'
# port/drops and the wirefilter's showinfo are printed as the losses they counted.
#
# Usage: bench/chaos.sh [ROUNDS]   (default 100, a few minutes). Run as root.
#   FILO=path/to/filo  the binary (default: cargo build -p filo, target/debug/filo)
#   FILO_CHAOS_SEED=N  the random sequence (default: the PID)
#   FILO_CHAOS_RECONNECT=1  restart a killed switch without its dependents
set -uo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-100}
case "$ROUNDS" in '' | *[!0-9]*) echo "usage: bench/chaos.sh [ROUNDS]" >&2; exit 2 ;; esac
if [ -z "${FILO:-}" ]; then
  cargo build --quiet -p filo --bin filo || exit 1
  FILO=$PWD/target/debug/filo
fi
RANDOM=${FILO_CHAOS_SEED:-$$}
RECONNECT=${FILO_CHAOS_RECONNECT:-0}
# Every process of the lab carries this in its environment (`env TAG=…` in front of each):
# what is left of it afterwards is found by it, whatever its name or parent.
TAG=chaos-$$-$RANDOM
T=$(mktemp -d /tmp/filo-chaos-XXXXXX)
export RUST_LOG=${RUST_LOG:-warn}
NET=10.77.0
# The transfer: long enough that kills land in the middle of it.
MIB=${FILO_CHAOS_MIB:-16}
# The components run in $T with core dumps on: a crash leaves core* there (with the default
# core_pattern), besides its exit status.
FILO=$(realpath "$(command -v "$FILO")") || exit 1
ulimit -c unlimited 2>/dev/null || true
cd "$T" || exit 1
netns_before=$(ip netns list | cut -d' ' -f1 | sort)

declare -A PID      # component -> pid
declare -A STARTS   # component -> times started
FAIL=0
finding() { echo "FINDING: $*" | tee -a "$T/findings"; FAIL=1; }

tagged_pids() { # processes whose environment carries the tag (not this script)
  grep -lsz "^FILO_CHAOS_TAG=$TAG\$" /proc/[0-9]*/environ 2>/dev/null |
    sed 's|/proc/\([0-9]*\)/environ|\1|'
}

# Until the switch's console answers (it is bound after ctl). Not the socket file: a killed
# switch leaves a stale one that clients would find before the new switch binds it.
answers() {
  for _ in $(seq 100); do "$FILO" console "$1" showinfo >/dev/null 2>&1 && return 0; sleep 0.05; done
  return 1
}

start() { # start COMPONENT: (re)start it in the background, its output in $T/log/NAME
  local c=$1 log
  STARTS[$c]=$(( ${STARTS[$c]:-0} + 1 ))
  log=$T/log/$c.${STARTS[$c]}
  case $c in
    sw1 | sw2)
      env FILO_CHAOS_TAG="$TAG" "$FILO" switch "$T/$c" --nostdin -M "$T/m${c#sw}" >"$log" 2>&1 &
      PID[$c]=$!
      answers "$T/m${c#sw}" || finding "$c did not come up ($log)"
      ;;
    wf) env FILO_CHAOS_TAG="$TAG" "$FILO" wirefilter "vde://$T/sw1" "vde://$T/sw2" -M "$T/mwf" >"$log" 2>&1 & PID[$c]=$! ;;
    http)
      env FILO_CHAOS_TAG="$TAG" "$FILO" stack http-serve "$T/www" --vnl "vde://$T/sw1" --ip $NET.1/24 -p 80 >"$log" 2>&1 &
      PID[$c]=$!
      ;;
    ns1 | ns2)
      local n=${c#ns} sw=sw${c#ns}
      # A sleep of a length nobody else uses, so that ping can enter its namespace; a
      # grandchild of filo ns, which must not outlive it.
      env FILO_CHAOS_TAG="$TAG" "$FILO" ns "vde://$T/$sw" --ip $NET.1$n/24 -- \
        sh -c "sleep $((900000 + $$ % 1000 * 10 + n)) & wait" >"$log" 2>&1 &
      PID[$c]=$!
      ;;
    cap) env FILO_CHAOS_TAG="$TAG" "$FILO" capture "vde://$T/sw1" -w "$T/cap.${STARTS[$c]}.pcapng" >"$log" 2>&1 & PID[$c]=$! ;;
  esac
}

# stop COMPONENT SIGNAL [dependent]: kill it and collect its status; anything but death by
# SIGNAL (or a clean exit after SIGTERM) is a finding. A dependent of a killed switch may
# have ended on its own (status 0 or 1, with a message): that is noted, not a finding.
stop() {
  local c=$1 sig=$2 p=${PID[$1]:-} status
  [ -n "$p" ] || return 0
  if ! kill -0 "$p" 2>/dev/null; then
    wait "$p" 2>/dev/null; status=$?
    if [ "${3:-}" = dependent ] && [ "$status" -le 1 ]; then
      echo "$c: status $status: $(tail -1 "$T/log/$c.${STARTS[$c]}")" >>"$T/stranded"
    else
      finding "$c (pid $p) had already exited with status $status: $(tail -3 "$T/log/$c.${STARTS[$c]}" | tr '\n' ' ')"
    fi
  else
    kill "-$sig" "$p" 2>/dev/null
    wait "$p" 2>/dev/null; status=$?
    case "$sig:$status" in
      KILL:137 | TERM:143 | TERM:0 | TERM:130 | TERM:1) ;;
      *) finding "$c (pid $p) ended with status $status after SIG$sig: $(tail -3 "$T/log/$c.${STARTS[$c]}" | tr '\n' ' ')" ;;
    esac
  fi
  PID[$c]=""
}

ns_ping() { # ns_ping N ADDR: ping from namespace N (through its sleep's namespace)
  local p
  p=$(pgrep -n -x -f "sleep $((900000 + $$ % 1000 * 10 + $1))")
  [ -n "$p" ] || return 1
  nsenter -t "$p" -n ping -c 1 -W 2 "$2" >/dev/null 2>&1
}

fetch_start() { # a checked transfer from sw2 to http-serve on sw1
  rm -f "$T/got"
  env FILO_CHAOS_TAG="$TAG" timeout 30 "$FILO" stack fetch --vnl "vde://$T/sw2" --ip $NET.2/24 -t 5 -o "$T/got" \
    "http://$NET.1/file" >"$T/log/fetch" 2>&1 &
  PID[fetch]=$!
}
fetched=0; interrupted=0
fetch_end() { # fetch_end KILLED: collect the transfer's status and check its bytes
  local status
  wait "${PID[fetch]}" 2>/dev/null; status=$?
  PID[fetch]=""
  if [ "$status" = 0 ]; then
    if cmp -s "$T/got" "$T/www/file"; then
      fetched=$((fetched + 1))
    else
      finding "round $round: fetch returned different bytes ($(stat -c %s "$T/got" 2>/dev/null) bytes)"
    fi
  elif [ "$status" = 137 ] && [ "$1" = fetch ]; then
    interrupted=$((interrupted + 1))
  elif [ "$status" = 1 ] || [ "$status" = 124 ]; then
    # Failed with a message (or timed out) while a component on its path was restarting.
    interrupted=$((interrupted + 1))
    echo "round $round ($1 killed): fetch failed: $(tail -1 "$T/log/fetch")" >>"$T/interrupted"
  else
    finding "round $round ($1 killed): fetch ended with status $status: $(tail -2 "$T/log/fetch" | tr '\n' ' ')"
  fi
}

cleanup() {
  for c in "${!PID[@]}"; do [ -n "${PID[$c]}" ] && kill -9 "${PID[$c]}" 2>/dev/null; done
  wait 2>/dev/null
  for p in $(tagged_pids); do kill -9 "$p" 2>/dev/null; done
  if [ "$FAIL" = 0 ]; then rm -rf "$T"; else echo "logs kept in $T/log"; fi
}
trap cleanup EXIT

mkdir -p "$T/log" "$T/www"
head -c $((MIB << 20)) /dev/urandom >"$T/www/file"
order=(sw1 sw2 wf http ns1 ns2 cap)
for c in "${order[@]}"; do start "$c"; done
# Up: the server answers (the first fetch waits out address and ARP set-up).
up=0
for _ in $(seq 10); do
  fetch_start; fetch_end setup 2>/dev/null
  if cmp -s "$T/got" "$T/www/file"; then up=1; break; fi
  sleep 0.5
done
[ "$up" = 1 ] || { finding "the lab did not come up: $(tail -2 "$T/log/fetch")"; exit 1; }
fetched=0; interrupted=0; : >"$T/findings"
echo "chaos: $ROUNDS rounds, seed ${FILO_CHAOS_SEED:-$$}, tag $TAG, reconnect=$RECONNECT"

victims=(sw1 sw2 wf http ns1 ns2 cap fetch)
declare -A KILLS
for round in $(seq 1 "$ROUNDS"); do
  v=${victims[RANDOM % ${#victims[@]}]}
  KILLS[$v]=$(( ${KILLS[$v]:-0} + 1 ))
  fetch_start
  sleep "0.$((RANDOM % 10))"
  case $v in
    fetch) kill -9 "${PID[fetch]}" 2>/dev/null ;;
    sw1 | sw2)
      stop "$v" KILL
      if [ "$RECONNECT" = 1 ]; then
        deps=()
      elif [ "$v" = sw1 ]; then
        deps=(wf http ns1 cap)
      else
        deps=(wf ns2)
      fi
      for d in "${deps[@]}"; do stop "$d" TERM dependent; done
      start "$v"
      for d in "${deps[@]}"; do start "$d"; done
      ;;
    *) stop "$v" KILL; start "$v" ;;
  esac
  fetch_end "$v"
  # Everything else must still be running.
  for c in "${order[@]}"; do
    if [ -n "${PID[$c]}" ] && ! kill -0 "${PID[$c]}" 2>/dev/null; then
      stop "$c" TERM # collects the status and reports it
      start "$c"
    fi
  done
  [ -t 1 ] && eol='\r' || eol='\n'
  printf "round %d/%d: killed %-5s fetched %d interrupted %d$eol" "$round" "$ROUNDS" "$v" "$fetched" "$interrupted"
done
echo

# After the storm: give the stacks a moment, then everything must work.
sleep 2
ok=0
for _ in $(seq 10); do ns_ping 1 $NET.12 && { ok=1; break; }; sleep 0.5; done
[ "$ok" = 1 ] || finding "ns1 cannot ping ns2 across the wirefilter after the run"
ok=0
for _ in $(seq 5); do
  fetch_start; fetch_end final
  cmp -s "$T/got" "$T/www/file" && { ok=1; break; }
done
[ "$ok" = 1 ] || finding "the last fetch failed after the run"
capfile="$T/cap.${STARTS[cap]}.pcapng"
[ -s "$capfile" ] || finding "the capture wrote nothing ($capfile)"

echo "== losses the components counted"
# The switches' drop totals and the ports that dropped anything; the wirefilter's counters.
for sw in 1 2; do
  "$FILO" console "$T/m$sw" port/drops 2>&1 |
    awk -v sw="sw$sw" '/^total/ { print "   " sw " dropped " $2 " frames (port/drops)" }
      /^Port/ && ($5 + $7 + $9) > 0 { print "   " sw " " $0 }'
done
"$FILO" console "$T/mwf" showinfo 2>&1 | grep '^Counters' | sed 's/^/   wirefilter /'

# Stop everything in order (clients first) and check what is left.
for c in cap ns1 ns2 http wf sw2 sw1; do stop "$c" TERM; done
sleep 1
left=$(tagged_pids)
[ -z "$left" ] || finding "processes left: $(for p in $left; do tr '\0' ' ' <"/proc/$p/cmdline"; echo -n "($p); "; done)"
for sw in sw1 sw2; do
  if [ -d "$T/$sw" ]; then
    extra=$(find "$T/$sw" -mindepth 1 | sed "s|$T/||")
    [ -z "$extra" ] || finding "left in the switch directory: $(echo $extra)"
  fi
done
for f in m1 m2 mwf; do [ -e "$T/$f" ] && finding "console socket $f left"; done
# A namespace of the lab outlives it only in a process (found above by the tag) or in a bind
# mount (ip netns). Other users' tests may add and remove named namespaces meanwhile: a new
# name that is still there a few seconds later is reported as a note, for a look.
new_ns=$(comm -13 <(echo "$netns_before") <(ip netns list | cut -d' ' -f1 | sort))
[ -z "$new_ns" ] || { sleep 3; new_ns=$(comm -13 <(echo "$netns_before") <(ip netns list | cut -d' ' -f1 | sort)); }
[ -z "$new_ns" ] || echo "note: named network namespaces that appeared during the run (another user's?): $(echo $new_ns)"
cores=$(find "$T" -maxdepth 1 -name 'core*' | wc -l)
[ "$cores" = 0 ] || finding "$cores core file(s) in $T"
if grep -l "panicked" "$T"/log/* 2>/dev/null; then finding "a component panicked (logs above)"; fi

echo "== $ROUNDS rounds: kills $(for v in "${victims[@]}"; do echo -n "$v=${KILLS[$v]:-0} "; done)"
echo "   transfers: $fetched checked, $interrupted interrupted by a kill, restarts: $(for c in "${order[@]}"; do echo -n "$c=$((${STARTS[$c]} - 1)) "; done)"
[ -s "$T/stranded" ] && { echo "   dependents that ended when their switch was killed: $(cut -d: -f1 "$T/stranded" | sort | uniq -c | tr '\n' ' ')"; sort -u -t: -k1,1 "$T/stranded" | sed 's/^/     /'; }
[ -s "$T/interrupted" ] && { echo "   interrupted fetches (first 5):"; head -5 "$T/interrupted" | sed 's/^/     /'; }
if [ "$FAIL" = 0 ]; then echo "chaos: no finding"; else echo "chaos: $(wc -l <"$T/findings") finding(s)"; fi
exit "$FAIL"
