#!/usr/bin/env bash
# filo lab beside mininet and a shell script of Debian's vde_switch + wirefilter + vdens,
# measured in the same run, on the same topology: mininet's `linear,N` (N switches in a line,
# one host on each: N switches, N-1 cables, N hosts).
#   - filo lab up / down of that topology as a lab file (ns nodes, wirefilter links);
#   - the same started by a shell script with Debian's vde_switch -d, wirefilter and vdens,
#     up = every vdens has started its command, down = every process gone;
#   - mininet (`mn --topo linear,N --switch lxbr --controller none --test none`: Linux
#     bridges, up and down in one command), when mn is installed;
#   - with STACKS="M ...", M stack nodes (named stacks) on one switch, up and down, a row
#     per M (a lab that does not come up prints why and the next row runs);
#   - with STACKS set, a 10,000-stack-node file: up (and down) if it comes up, else the
#     refusal `filo lab up` gives before starting anything, and how long that took.
#   - the web view of linear,100 (100 nodes, 100 switches, 99 links): headless Chromium, driven
#     by chromedriver, loads `filo lab web`'s page ROUNDS times (default 5); page ready = from
#     navigation start until the drawing's 100 nodes and the first live counters are in the
#     DOM (WEB=0 skips it; it needs chromium and chromedriver).
#   - with USERSTACKS="M ...", M userstack nodes (each a `filo stack http-serve` process,
#     a user-space stack with its own address) on one switch: up (every server listening),
#     the last node's page fetched, down.
# Usage: sudo bench/lab.sh [N ...]   (default 10 50 100; STACKS="100 500 1000" adds
# stack-node rows; N = 0 skips the linear rows).
# FILO=path uses that filo binary instead of building the release one.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(10 50 100)
if [ -z "${FILO:-}" ]; then
  cargo build --release --quiet -p filo --bin filo
  FILO=$PWD/target/release/filo
fi
T=$(mktemp -d /tmp/filo-blab-XXXXXX)
export FILO_LAB_DIR=$T/state
cleanup() {
  for n in "$FILO_LAB_DIR"/*/; do [ -d "$n" ] && "$FILO" lab down --name "$(basename "$n")" >/dev/null 2>&1 || true; done
  for f in "$T"/deb/*.pid; do [ -s "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  rm -rf "$T"
}
trap cleanup EXIT

now() { date +%s.%N; }
secs() { python3 -c "print('%.2f' % ($2 - $1))"; }

linear_lab() { # N -> a lab file on stdout
  local n=$1
  echo "name = \"linear$n\""
  for i in $(seq 1 "$n"); do echo "[switch.s$i]"; done
  for i in $(seq 1 $((n - 1))); do printf '[[link]]\na = "s%d"\nb = "s%d"\n' "$i" $((i + 1)); done
  for i in $(seq 1 "$n"); do
    printf '[node.h%d]\nkind = "ns"\nnet = ["s%d"]\nip = ["10.%d.%d.%d/8"]\n' "$i" "$i" $((i / 65536 % 256)) $((i / 256 % 256)) $((i % 256))
  done
}

# Debian's tools, started as a script would: every switch, then the cables, then the hosts.
deb_up() { # N
  local n=$1 d=$T/deb
  rm -rf "$d"; mkdir -p "$d"
  for i in $(seq 1 "$n"); do vde_switch -s "$d/s$i" -d -p "$d/s$i.pid" >/dev/null 2>&1; done
  for i in $(seq 1 $((n - 1))); do
    wirefilter -v "$d/s$i:$d/s$((i + 1))" --daemon --pidfile "$d/w$i.pid" >/dev/null 2>&1
  done
  for i in $(seq 1 "$n"); do
    ( vdens "vde://$d/s$i" sh -c "echo \$\$ > $d/h$i.pid; touch $d/h$i.up; exec sleep 1000" >/dev/null 2>&1 & )
  done
  for i in $(seq 1 "$n"); do
    while [ ! -e "$d/h$i.up" ]; do sleep 0.01; done
  done
}
deb_down() {
  local d=$T/deb pids=()
  for f in "$d"/*.pid; do [ -s "$f" ] && pids+=("$(cat "$f")"); done
  kill "${pids[@]}" 2>/dev/null || true
  for p in "${pids[@]}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.01; done; done
  rm -rf "$d"
}

printf '%-28s %10s %10s\n' "linear,N (N switches+hosts)" "up s" "down s"
for n in "${SIZES[@]}"; do
  [ "$n" -gt 0 ] || continue
  linear_lab "$n" > "$T/linear$n.toml"
  t0=$(now); "$FILO" lab up "$T/linear$n.toml" >/dev/null 2>"$T/up.log" || { cat "$T/up.log" >&2; exit 1; }
  t1=$(now); "$FILO" lab down --name "linear$n" >/dev/null
  t2=$(now)
  printf '%-28s %10s %10s\n' "filo lab, N=$n" "$(secs "$t0" "$t1")" "$(secs "$t1" "$t2")"
  if command -v vdens >/dev/null && command -v wirefilter >/dev/null; then
    t0=$(now); deb_up "$n"; t1=$(now); deb_down; t2=$(now)
    printf '%-28s %10s %10s\n' "vde_switch+vdens script" "$(secs "$t0" "$t1")" "$(secs "$t1" "$t2")"
  fi
  if command -v mn >/dev/null; then
    mn -c >/dev/null 2>&1 || true
    t0=$(now)
    mn --topo "linear,$n" --switch lxbr --controller none --test none >/dev/null 2>&1 || echo "(mn failed)"
    t1=$(now)
    printf '%-28s %21s\n' "mininet lxbr (up+down)" "$(secs "$t0" "$t1")"
  fi
done

stacks_lab() { # M -> a lab file of M stack nodes on one switch, on stdout
  local m=$1
  echo 'name = "stacks"'
  echo '[switch.lan]'
  echo "ports = $((m + 2 > 4096 ? 4096 : m + 2))"
  for i in $(seq 1 "$m"); do
    printf '[node.st%d]\nkind = "stack"\nnet = ["lan"]\nip = ["10.%d.%d.%d/8"]\n' "$i" $((i / 65536 % 256)) $((i / 256 % 256)) $((i % 256))
  done
}

userstacks_lab() { # M -> a lab file of M userstack nodes (user-space stack processes, each an
  # HTTP server with its own address) on one switch, on stdout
  local m=$1
  echo 'name = "stacks"'
  echo '[switch.lan]'
  echo "ports = $((m + 2 > 4096 ? 4096 : m + 2))"
  for i in $(seq 1 "$m"); do
    printf '[node.us%d]\nkind = "userstack"\nnet = ["lan"]\nip = ["10.%d.%d.%d/8"]\ncommand = "http-serve www"\n' "$i" $((i / 65536 % 256)) $((i / 256 % 256)) $((i % 256))
  done
}

if [ -n "${USERSTACKS:-}" ]; then
  mkdir -p "$T/www" && echo hello > "$T/www/index.html"
  for m in $USERSTACKS; do
    userstacks_lab "$m" > "$T/userstacks.toml"
    t0=$(now)
    if "$FILO" lab up "$T/userstacks.toml" >/dev/null 2>"$T/up.log"; then
      t1=$(now)
      # The last node answers (a fresh stack on the same switch fetches its page).
      last=$(printf '10.%d.%d.%d' $((m / 65536 % 256)) $((m / 256 % 256)) $((m % 256)))
      dir=$("$FILO" lab status --name stacks --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["dir"])')
      got=$("$FILO" stack fetch --vnl "vde://$dir/sw/lan" --ip 10.255.255.254/8 "http://$last/" 2>&1 || true)
      t2=$(now); "$FILO" lab down --name stacks >/dev/null
      t3=$(now)
      [ "$got" = hello ] || { echo "the last userstack node ($last) did not answer: $got" >&2; exit 1; }
      printf '%-28s %10s %10s\n' "filo lab, $m userstack nodes" "$(secs "$t0" "$t1")" "$(secs "$t2" "$t3")"
    else
      t1=$(now)
      printf '%-28s %10s   %s\n' "filo lab, $m userstack nodes" "failed" "after $(secs "$t0" "$t1") s: $(tail -1 "$T/up.log")"
    fi
  done
fi

if [ -n "${STACKS:-}" ]; then
  for m in $STACKS 10000; do
    stacks_lab "$m" > "$T/stacks.toml"
    t0=$(now)
    if "$FILO" lab up "$T/stacks.toml" >/dev/null 2>"$T/up.log"; then
      t1=$(now); "$FILO" lab down --name stacks >/dev/null
      t2=$(now)
      printf '%-28s %10s %10s\n' "filo lab, $m stack nodes" "$(secs "$t0" "$t1")" "$(secs "$t1" "$t2")"
    else
      t1=$(now)
      printf '%-28s %10s   %s\n' "filo lab, $m stack nodes" "failed" "after $(secs "$t0" "$t1") s: $(tail -1 "$T/up.log")"
    fi
  done
fi

if [ "${WEB:-1}" != 0 ] && command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  linear_lab 100 | sed 's/^name = .*/name = "web100"/' > "$T/web100.toml"
  "$FILO" lab up "$T/web100.toml" >/dev/null 2>"$T/up.log" || { cat "$T/up.log" >&2; exit 1; }
  "$FILO" lab web --name web100 --listen 127.0.0.1:0 > "$T/web.out" 2>/dev/null &
  web_pid=$!
  for _ in $(seq 1 500); do grep -q http:// "$T/web.out" && break; sleep 0.01; done
  addr=$(sed -n 's|.*http://\([^/]*\)/ .*|\1|p' "$T/web.out" | head -1)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  chromedriver --port="$port" >/dev/null 2>&1 &
  driver_pid=$!
  status_s=$( { /usr/bin/time -f %e curl -s -o /dev/null "http://$addr/api/status"; } 2>&1 )
  python3 - "$addr" "$port" "$T/chromium" "${ROUNDS:-5}" > "$T/web.times" <<'PY' || echo "(the page-ready measurement failed)"
import json, statistics, sys, time, urllib.request
addr, port, profile, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
base = "http://127.0.0.1:%s" % port
def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)["value"]
for _ in range(500):
    try:
        call("GET", "/status"); break
    except OSError:
        time.sleep(0.02)
caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
    "binary": "/usr/bin/chromium", "args": ["--headless", "--no-sandbox", "--disable-gpu",
    "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--user-data-dir=" + profile]}}}}
sid = call("POST", "/session", caps)["sessionId"]
# Ready: the drawing has its 100 nodes and the counters table its first rows; the time is
# performance.now() then, milliseconds since the navigation started.
ready = """
const done = arguments[arguments.length - 1];
(function check() {
  if (document.querySelectorAll('#graph g.node').length >= 100 &&
      document.body.dataset.updates && document.querySelector('#counters tbody tr')) {
    done(performance.now());
  } else { setTimeout(check, 5); }
})();
"""
call("POST", "/session/%s/timeouts" % sid, {"script": 60000})
times = []
try:
    for _ in range(rounds):
        call("POST", "/session/%s/url" % sid, {"url": "http://%s/" % addr})
        times.append(call("POST", "/session/%s/execute/async" % sid, {"script": ready, "args": []}) / 1000)
finally:
    call("DELETE", "/session/%s" % sid)
print("%.2f %.2f %.2f" % (statistics.median(times), times[0], max(times)))
PY
  kill "$driver_pid" "$web_pid" 2>/dev/null || true
  wait "$driver_pid" "$web_pid" 2>/dev/null || true
  "$FILO" lab down --name web100 >/dev/null
  if [ -s "$T/web.times" ]; then
    read -r median first worst < "$T/web.times"
    printf '%-28s %10s %10s\n' "lab web page, 100 nodes" "ready s" "(first/max)"
    printf '%-28s %10s %10s\n' "median of ${ROUNDS:-5} loads" "$median" "$first/$worst"
    printf '%-28s %10s\n' "  its /api/status alone" "$status_s"
  fi
fi
