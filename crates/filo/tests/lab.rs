//! `filo lab` with real processes: a lab of two switches joined by an impaired link, two `ns`
//! nodes and a stack comes up, its nodes ping each other, `status --json` shows the counters,
//! `set` changes the link's loss (a ping across fails, then works again), `exec` runs in a
//! node, and `down` leaves no process and no socket; a lab with a failing node comes down
//! again naming it; bad files are refused before anything starts; a slirp node takes a
//! switch to the host's network (DHCP, out to a server, a forward in); a router node joins two
//! switches (DHCP from it, a ping across, its counters in status); two ns nodes on an ipn://
//! bus ping each other.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use filo_test_support::*;

const FILO: &str = env!("CARGO_BIN_EXE_filo");
const T: Duration = Duration::from_secs(120);

/// Runs `filo ARGS` with the lab state under `root`: (success, stdout, stderr).
fn filo(root: &Path, args: &[&str]) -> (bool, String, String) {
    let p = Proc::spawn(
        Command::new(FILO)
            .args(args)
            .env("FILO_LAB_DIR", root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let (st, out, err) = p.output(T);
    (st.success(), out, err)
}

/// `filo lab up FILE` with the lab state under `root`.
fn up(root: &Path, file: &Path) -> (bool, String, String) {
    filo(root, &["lab", "up", file.to_str().unwrap()])
}

/// `filo lab down`, which must succeed.
fn down(root: &Path) {
    let (ok, out, err) = filo(root, &["lab", "down"]);
    assert!(ok, "down: {out} {err}");
}

/// `ping -c COUNT -W WAIT ADDR` in a node of the lab under `root`: (success, stdout, stderr).
fn ping(root: &Path, node: &str, count: u32, wait: u32, addr: &str) -> (bool, String, String) {
    let (count, wait) = (count.to_string(), wait.to_string());
    filo(
        root,
        &[
            "lab", "exec", node, "--", "ping", "-c", &count, "-W", &wait, addr,
        ],
    )
}

/// No process mentions `path` (within 5 s: stopped processes take a moment to go).
fn assert_nothing_left(path: &Path) {
    assert!(
        wait_until(Duration::from_secs(5), || processes_mentioning(path)
            .is_empty()),
        "left running: {:?}",
        processes_mentioning(path)
    );
}

/// Every socket file under `dir`.
fn sockets_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if std::os::unix::fs::FileTypeExt::is_socket(&ft) {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}

/// Brings any lab under the root down when a test ends, even a failing one.
struct Cleanup<'a>(&'a Path, &'a str);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = filo(self.0, &["lab", "down", "--name", self.1]);
    }
}

fn write_lab(tmp: &TempDir, text: &str) -> std::path::PathBuf {
    let file = tmp.join("lab.toml");
    std::fs::write(&file, text).unwrap();
    file
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The node `name` of a running lab's `status --json` (under `root`).
fn status_node(root: &Path, name: &str) -> serde_json::Value {
    let (ok, out, err) = filo(root, &["lab", "status", "--json"]);
    assert!(ok, "{out} {err}");
    let s = json(&out);
    s["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no {name}: {s}"))
}

/// A counter of a slirp or router node's status.
fn counter(node: &serde_json::Value, name: &str) -> u64 {
    node["counters"]
        .as_array()
        .and_then(|c| c.iter().find(|p| p[0] == name))
        .and_then(|p| p[1].as_u64())
        .unwrap_or_else(|| panic!("no {name}: {node}"))
}

#[test]
fn two_switches_an_impaired_link_and_nodes_that_ping() {
    require("ping");
    require("nsenter");
    let tmp = TempDir::new("filo-lab");
    let root = tmp.join("state");
    let file = write_lab(
        &tmp,
        r#"
name = "pair"
env = { LABVAR = "pair" }

[switch.sw1]
[switch.sw2]
ports = 8

[[link]]
name = "wan"
a = "sw1"
b = "sw2"
delay = 5

[node.h1]
kind = "ns"
net = ["sw1"]
ip = ["10.61.0.1/24"]

[node.h2]
kind = "ns"
net = ["sw2:4"]
ip = ["10.61.0.2/24"]
run = ["ping -c 1 -W 5 10.61.0.1", "test \"$LABVAR$NODEVAR\" = pair2"]
env = { NODEVAR = "2" }

[node.s3]
kind = "stack"
net = ["sw2"]
ip = ["10.61.0.3/24"]
"#,
    );
    let _down = Cleanup(&root, "pair");
    let (ok, out, err) = up(&root, &file);
    assert!(ok, "up failed: {out} {err}");
    assert!(
        out.contains("lab pair up: 2 switches, 1 links, 3 nodes"),
        "{out}"
    );
    let dir = root.join("pair");

    // Across the impaired link, from h1's namespace; and to the stack.
    let (ok, out, err) = ping(&root, "h1", 3, 5, "10.61.0.2");
    assert!(ok && out.contains("3 received"), "{out} {err}");
    let (ok, out, err) = ping(&root, "h1", 1, 5, "10.61.0.3");
    assert!(ok && out.contains("1 received"), "{out} {err}");
    // exec in the stack node runs in the stack (mstack): its address is there.
    let (ok, out, err) = filo(&root, &["lab", "exec", "s3", "--", "ip", "-br", "addr"]);
    assert!(ok && out.contains("10.61.0.3/24"), "{out} {err}");
    let (ok, out, _) = filo(&root, &["lab", "exec", "h2", "--", "ip", "-br", "addr"]);
    assert!(
        ok && out.contains("10.61.0.2/24") && !out.contains("10.61.0.1/"),
        "{out}"
    );

    // Status: the switches' ports and the link's counters.
    let (ok, out, err) = filo(&root, &["lab", "status", "--json"]);
    assert!(ok, "{err}");
    let s = json(&out);
    assert_eq!(s["name"], "pair");
    let sw2 = &s["switches"][1];
    assert_eq!(sw2["name"], "sw2");
    assert_eq!(sw2["alive"], true);
    let port4 = sw2["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == 4)
        .unwrap_or_else(|| panic!("h2's port 4 is not in {sw2}"));
    assert!(port4["in_frames"].as_u64().unwrap() >= 4, "{port4}");
    assert!(
        port4["endpoints"][0]
            .as_str()
            .unwrap()
            .starts_with("filo-ns"),
        "{port4}"
    );
    let wan = &s["links"][0];
    assert_eq!(wan["name"], "wan");
    assert!(wan["a_to_b"]["in_frames"].as_u64().unwrap() >= 4, "{wan}");
    assert!(
        wan["settings"]["delay"]
            .as_str()
            .unwrap()
            .contains("L->R 5"),
        "{wan}"
    );
    assert_eq!(s["nodes"].as_array().unwrap().len(), 3);

    // set: with 100 % loss nothing crosses the link; back to 0 and pings work again.
    let (ok, out, err) = filo(&root, &["lab", "set", "wan", "loss=100"]);
    assert!(ok && out.contains("loss L->R 100"), "{out} {err}");
    let (ok, out, _) = ping(&root, "h1", 2, 1, "10.61.0.2");
    assert!(!ok && out.contains("0 received"), "{out}");
    let (_, out, _) = filo(&root, &["lab", "status", "--json"]);
    let lost = json(&out)["links"][0]["a_to_b"]["dropped_loss"]
        .as_u64()
        .unwrap();
    assert!(lost >= 2, "{out}");
    let (ok, _, err) = filo(&root, &["lab", "set", "wan", "loss=0", "delay=1"]);
    assert!(ok, "{err}");
    let (ok, out, err) = ping(&root, "h1", 2, 5, "10.61.0.2");
    assert!(ok && out.contains("2 received"), "{out} {err}");
    // A bad value is refused by name.
    let (ok, _, err) = filo(&root, &["lab", "set", "wan", "loss=lots"]);
    assert!(
        !ok && err.contains("loss") && err.contains("[LR|RL]VALUE"),
        "{err}"
    );
    let (ok, _, err) = filo(&root, &["lab", "set", "nolink", "loss=1"]);
    assert!(
        !ok && err.contains("no link \"nolink\" (links: wan)"),
        "{err}"
    );

    // The graph of the running lab.
    let svg = tmp.join("lab.svg");
    let (ok, _, err) = filo(&root, &["lab", "graph", "-o", svg.to_str().unwrap()]);
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.contains("id=\"link-wan\"") && text.contains("id=\"node-s3\""),
        "{text}"
    );

    // down: no process and no socket left.
    assert!(!processes_mentioning(&dir).is_empty());
    assert!(!sockets_under(&dir).is_empty());
    let (ok, out, err) = filo(&root, &["lab", "down"]);
    assert!(
        ok && out.contains("lab pair down: 6 processes stopped"),
        "{out} {err}"
    );
    assert_nothing_left(&dir);
    assert!(!dir.exists(), "the state directory is still there");
    assert!(
        sockets_under(tmp.path()).is_empty(),
        "{:?}",
        sockets_under(tmp.path())
    );
}

#[test]
fn a_failing_node_brings_the_lab_down_and_names_it() {
    let tmp = TempDir::new("filo-lab");
    let root = tmp.join("state");
    let file = write_lab(
        &tmp,
        r#"
[switch.sw]
[switch.other]
[[link]]
a = "sw"
b = "other"
loss = 1
[node.good]
kind = "ns"
net = ["sw"]
ip = ["10.62.0.1/24"]
[node.bad]
kind = "ns"
net = ["other"]
command = ["no-such-command-filo-lab"]
"#,
    );
    let _down = Cleanup(&root, "lab");
    let (ok, out, err) = up(&root, &file);
    assert!(!ok, "up succeeded: {out}");
    assert!(
        err.contains("lab lab did not come up: node bad failed")
            && err.contains("no-such-command-filo-lab: command not found"),
        "{err}"
    );
    let dir = root.join("lab");
    assert_nothing_left(&dir);
    assert!(!dir.exists());
    // Nothing is up, and status says so.
    let (ok, _, err) = filo(&root, &["lab", "status"]);
    assert!(!ok && err.contains("no lab is up"), "{err}");

    // A command given as a shell string whose program does not exist ends right after its
    // node said ready: up notices and names it.
    let file = write_lab(
        &tmp,
        "[switch.sw]\n[node.typo]\nkind = \"ns\"\nnet = [\"sw\"]\ncommand = \"no-such-filo-lab-cmd --x\"\n",
    );
    let (ok, _, err) = up(&root, &file);
    assert!(
        !ok && err.contains("node typo exited right after starting")
            && err.contains("no-such-filo-lab-cmd"),
        "{err}"
    );
    assert_nothing_left(&dir);

    // A run command that fails once everything is up takes the lab down too.
    let file = write_lab(
        &tmp,
        "[switch.sw]\n[node.n]\nkind = \"ns\"\nnet = [\"sw\"]\nrun = [\"exit 3\"]\n",
    );
    let (ok, _, err) = up(&root, &file);
    assert!(
        !ok && err.contains("node n: run command \"exit 3\" failed (exit status: 3)"),
        "{err}"
    );
    assert_nothing_left(&dir);
}

#[test]
fn a_lab_is_not_brought_up_twice() {
    let tmp = TempDir::new("filo-lab");
    let root = tmp.join("state");
    let file = write_lab(&tmp, "name = \"once\"\n[switch.a]\n");
    let _down = Cleanup(&root, "once");
    let (ok, _, err) = up(&root, &file);
    assert!(ok, "{err}");
    let (ok, _, err) = up(&root, &file);
    assert!(!ok && err.contains("lab once is already up"), "{err}");
    // Another name is another lab.
    let (ok, _, err) = filo(
        &root,
        &["lab", "up", "--name", "twice", file.to_str().unwrap()],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = filo(&root, &["lab", "status"]);
    assert!(
        !ok && err.contains("several labs are up (once, twice)"),
        "{err}"
    );
    let (ok, _, err) = filo(&root, &["lab", "down", "--name", "twice"]);
    assert!(ok, "{err}");
    down(&root);
    assert_nothing_left(tmp.path());
}

#[test]
fn bad_files_are_refused_before_anything_starts() {
    let tmp = TempDir::new("filo-lab");
    let root = tmp.join("state");
    let cases: &[(&str, &str)] = &[
        (
            "[switch.a]\nports = \"many\"\n",
            "lab.toml: line 2: ports: invalid type: string \"many\", expected u16",
        ),
        (
            "[switch.a]\nhubb = true\n",
            "lab.toml: line 2: hubb: unknown field `hubb`",
        ),
        (
            "[switch.a]\n[node.h]\nkind = \"ns\"\nnet = [\"b\"]\n",
            "lab.toml: line 4: node.h.net: \"b\" is not a switch of this lab (switches: a)",
        ),
        (
            "[switch.a]\n[switch.b]\n[[link]]\na = \"a\"\nb = \"b\"\ndelay = \"soon\"\n",
            "lab.toml: line 6: link[0].delay:",
        ),
        (
            "[switch.a]\n[switch.a]\n",
            "lab.toml: line 2: switch.a: duplicate key",
        ),
        (
            "[switch.a]\n[node.a]\nkind = \"ns\"\nnet = [\"a\"]\n",
            "lab.toml: line 2: node.a: the name \"a\" is already used by a switch",
        ),
    ];
    for (text, expected) in cases {
        let file = write_lab(&tmp, text);
        let (ok, _, err) = up(&root, &file);
        assert!(!ok, "accepted: {text}");
        assert!(
            err.contains(expected),
            "{text}\nexpected {expected:?} in:\n{err}"
        );
        assert!(!root.exists(), "{text}: a state directory was made");
    }
    // Names long enough for a socket path over what UNIX sockets allow: said before starting.
    let long = "x".repeat(32);
    let file = write_lab(&tmp, &format!("[switch.{long}]\n"));
    let (ok, _, err) = filo(
        &root,
        &["lab", "up", "--name", &long, file.to_str().unwrap()],
    );
    assert!(
        !ok && err.contains("bytes long, over the 107 UNIX sockets allow"),
        "{err}"
    );
    assert!(!root.exists(), "a state directory was made");
    let (ok, _, err) = filo(
        &root,
        &["lab", "up", tmp.join("missing.toml").to_str().unwrap()],
    );
    assert!(!ok && err.contains("cannot read"), "{err}");
}

#[test]
fn graph_of_a_file_as_svg_and_dot() {
    let tmp = TempDir::new("filo-lab");
    let file = write_lab(
        &tmp,
        "[switch.a]\n[switch.b]\n[[link]]\nname = \"l\"\na = \"a\"\nb = \"b\"\nloss = 3\n[node.n]\nkind = \"ns\"\nnet = [\"a\"]\n",
    );
    let (ok, out, err) = filo(
        tmp.path(),
        &["lab", "graph", file.to_str().unwrap(), "-o", "-"],
    );
    assert!(ok, "{err}");
    for id in ["switch-a", "switch-b", "node-n", "link-l"] {
        assert!(out.contains(&format!("id=\"{id}\"")), "{id}: {out}");
    }
    let dot = tmp.join("g.dot");
    let (ok, _, err) = filo(
        tmp.path(),
        &[
            "lab",
            "graph",
            file.to_str().unwrap(),
            "-o",
            dot.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(dot).unwrap();
    assert!(
        text.contains("\"switch-a\" -- \"switch-b\" [label=\"l: loss 3\"]"),
        "{text}"
    );
}

/// One HTTP/1.1 request over a fresh connection: (status, body).
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    http_with(addr, method, path, body, "")
}

/// [`http`] with extra header lines (each ending in \r\n).
fn http_with(addr: &str, method: &str, path: &str, body: &str, headers: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // Up to the end of the head, then Content-Length bytes (chromedriver keeps connections
    // open), else to the end.
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break out.len(),
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&out[..head_end]).into_owned();
    let length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    });
    match length {
        Some(n) => {
            while out.len() < head_end + n {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => out.extend_from_slice(&buf[..k]),
                }
            }
        }
        None => {
            let _ = s.read_to_end(&mut out);
        }
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {head:?}"));
    let body = String::from_utf8_lossy(&out[head_end.min(out.len())..]).into_owned();
    (status, body)
}

/// The value of the one sample line of `/metrics` that starts with `prefix`.
fn sample(metrics: &str, prefix: &str) -> u64 {
    let line = metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{metrics}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// `filo lab web` on a free port of 127.0.0.1 for the lab under `root`: (process, address).
fn start_web(root: &Path) -> (Proc, String) {
    let mut web = Proc::spawn(
        Command::new(FILO)
            .args(["lab", "web", "--listen", "127.0.0.1:0"])
            .env("FILO_LAB_DIR", root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(test_log()),
    );
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(web.child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    (web, addr)
}

/// The status line of a request with `Host: HOST` (DNS rebinding: a page of another site
/// whose name resolves to the server sends its own name).
fn status_with_host(addr: &str, method: &str, path: &str, host: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 6\r\n\r\nloss=1"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines().next().unwrap_or_default().to_string()
}

#[test]
fn the_web_view_answers_only_to_its_address_and_localhost() {
    let tmp = TempDir::new("filo-lab");
    let root = tmp.join("state");
    let file = write_lab(
        &tmp,
        "name = \"hosts\"\n[switch.a]\n[switch.b]\n[[link]]\nname = \"ab\"\na = \"a\"\nb = \"b\"\n",
    );
    let _down = Cleanup(&root, "hosts");
    let (ok, _, err) = up(&root, &file);
    assert!(ok, "{err}");
    let (_web, addr) = start_web(&root);
    let port = addr.rsplit(':').next().unwrap();
    for path in ["/", "/graph.svg", "/api/status", "/metrics", "/api/node/x"] {
        for host in [
            format!("evil.example:{port}"),
            format!("localhost.evil.example:{port}"),
            "localhost:1".to_string(),
            "".to_string(),
        ] {
            let st = status_with_host(&addr, "GET", path, &host);
            assert!(st.contains(" 421 "), "GET {path} Host {host:?}: {st}");
        }
        for host in [
            addr.clone(),
            format!("localhost:{port}"),
            format!("LocalHost:{port}"),
        ] {
            let st = status_with_host(&addr, "GET", path, &host);
            assert!(!st.contains(" 421 "), "GET {path} Host {host}: {st}");
        }
    }
    let st = status_with_host(
        &addr,
        "POST",
        "/api/link/ab",
        &format!("evil.example:{port}"),
    );
    assert!(st.contains(" 421 "), "{st}");
    let st = status_with_host(&addr, "POST", "/api/link/ab", &format!("localhost:{port}"));
    assert!(st.contains(" 200 "), "{st}");
    let (st, body) = http_with(&addr, "GET", "/api/status", "", "");
    assert!(st == 200 && body.contains("\"hosts\""), "{st} {body}");
    down(&root);
    assert_nothing_left(&root);
}

#[test]
fn the_web_view_serves_metrics_status_changes_and_a_live_page() {
    require("ping");
    let tmp = TempDir::new("filo-lab");
    let root = tmp.join("state");
    let file = write_lab(
        &tmp,
        r#"
name = "web"
[switch.sw1]
[switch.sw2]
[[link]]
name = "wan"
a = "sw1"
b = "sw2"
[node.h1]
kind = "ns"
net = ["sw1"]
ip = ["10.63.0.1/24"]
[node.h2]
kind = "ns"
net = ["sw2"]
ip = ["10.63.0.2/24"]
"#,
    );
    let _down = Cleanup(&root, "web");
    let (ok, _, err) = up(&root, &file);
    assert!(ok, "{err}");
    let (ok, out, _) = ping(&root, "h1", 3, 5, "10.63.0.2");
    assert!(ok && out.contains("3 received"), "{out}");

    let (mut web, addr) = start_web(&root);

    // /metrics: OpenMetrics text, every sample line NAME{LABELS} VALUE, with the link's frames.
    let (st, m) = http(&addr, "GET", "/metrics", "");
    assert_eq!(st, 200, "{m}");
    assert!(m.trim_end().ends_with("# EOF"), "{m}");
    for l in m.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("{l:?}"));
        assert!(value.parse::<f64>().is_ok(), "{l:?}");
        assert!(
            series.starts_with("filo_") && series.ends_with('}'),
            "{l:?}"
        );
    }
    assert!(
        sample(
            &m,
            r#"filo_link_frames_total{lab="web",link="wan",direction="a_to_b"}"#
        ) >= 3,
        "{m}"
    );
    assert_eq!(
        sample(&m, r#"filo_lab_up{lab="web",kind="ns",name="h2"}"#),
        1,
        "{m}"
    );
    assert!(
        m.contains(
            r#"filo_switch_port_drops_total{lab="web",switch="sw1",port="1",reason="queue_full"}"#
        ),
        "{m}"
    );

    // Prometheus' own parser reads it (promtool parses the text format; it reads OpenMetrics'
    // HELP, given for the family without _total, as missing, a lint and not an error).
    match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Err(_) => skip("promtool is not installed: /metrics is not checked by Prometheus' parser"),
        Ok(mut p) => {
            use std::io::Write;
            p.stdin.take().unwrap().write_all(m.as_bytes()).unwrap();
            let out = p.wait_with_output().unwrap();
            let report = String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout);
            let code = out.status.code();
            assert!(
                code == Some(0) || code == Some(3),
                "promtool: {code:?} {report}\n{m}"
            );
            for l in report.lines().filter(|l| !l.trim().is_empty()) {
                assert!(l.ends_with("_total no help text"), "promtool: {l}\n{m}");
            }
        }
    }

    // The JSON endpoint is status --json.
    let (st, s) = http(&addr, "GET", "/api/status", "");
    assert_eq!(st, 200);
    let s = json(&s);
    assert_eq!(s["links"][0]["name"], "wan");
    assert!(
        s["links"][0]["b_to_a"]["in_frames"].as_u64().unwrap() >= 3,
        "{s}"
    );

    // A node's addresses, read inside it.
    let (st, n) = http(&addr, "GET", "/api/node/h2", "");
    assert_eq!(st, 200, "{n}");
    assert!(
        json(&n)["addresses"]
            .as_str()
            .unwrap()
            .contains("10.63.0.2/24"),
        "{n}"
    );

    // Changing a link reaches its wirefilter (what the page's form posts).
    let (st, r) = http(&addr, "POST", "/api/link/wan", "loss=100&delay=3");
    assert_eq!(st, 200, "{r}");
    assert!(
        json(&r)["loss"].as_str().unwrap().contains("L->R 100"),
        "{r}"
    );
    let (_, out, _) = filo(&root, &["lab", "status", "--json"]);
    assert!(
        json(&out)["links"][0]["settings"]["delay"]
            .as_str()
            .unwrap()
            .contains("L->R 3"),
        "{out}"
    );
    let (ok, _, _) = ping(&root, "h1", 1, 1, "10.63.0.2");
    assert!(!ok, "a ping crossed a link with 100 % loss");
    let (st, _) = http(&addr, "POST", "/api/link/wan", "loss=0");
    assert_eq!(st, 200);

    // Bad requests get clear 4xx answers, and the server keeps serving.
    let (st, r) = http_with(
        &addr,
        "POST",
        "/api/link/wan",
        "loss=99",
        "Origin: http://evil.example\r\n",
    );
    assert!(st == 403 && r.contains("evil.example"), "{st} {r}");
    let own = format!("Origin: http://{addr}\r\n");
    let (st, r) = http_with(&addr, "POST", "/api/link/wan", "loss=0", &own);
    assert_eq!(st, 200, "{r}");
    let (st, r) = http(&addr, "POST", "/api/link/wan", "loss=lots");
    assert!(st == 400 && r.contains("loss"), "{st} {r}");
    let (st, r) = http(&addr, "POST", "/api/link/nosuch", "loss=1");
    assert!(
        st == 404 && r.contains("no link \\\"nosuch\\\""),
        "{st} {r}"
    );
    let (st, _) = http(&addr, "POST", "/api/link/wan", &"x".repeat(10_000));
    assert_eq!(st, 413);
    let (st, _) = http(&addr, "DELETE", "/metrics", "");
    assert_eq!(st, 405);
    let (st, _) = http(&addr, "GET", "/nothing-here", "");
    assert_eq!(st, 404);
    let (st, r) = http(&addr, "GET", "/api/node/nosuch", "");
    assert!(st == 404 && r.contains("no node"), "{st} {r}");
    for _ in 0..200 {
        use std::io::Write;
        if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
            let _ = s.write_all(b"\x00\x01GARBAGE \xff\r\n\r\n");
        }
    }
    let (st, page) = http(&addr, "GET", "/", "");
    assert!(st == 200 && page.contains("/api/status"), "{st}");

    // The page in a real browser: the drawing and the live counters are in the DOM.
    if std::process::Command::new("chromium")
        .arg("--version")
        .output()
        .is_err()
    {
        skip("chromium is not installed: the page is not checked in a browser");
    } else {
        let profile = TempDir::new("filo-lab-chromium");
        let browser = Proc::spawn(
            Command::new("chromium")
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--virtual-time-budget=5000",
                    "--dump-dom",
                ])
                .arg(format!("--user-data-dir={}", profile.path().display()))
                .arg(format!("http://{addr}/"))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        );
        let (st, dom, _) = browser.output(T);
        assert!(st.success(), "chromium failed");
        for id in ["switch-sw1", "switch-sw2", "node-h1", "node-h2", "link-wan"] {
            assert!(
                dom.contains(&format!("id=\"{id}\"")),
                "{id} is not drawn:\n{dom}"
            );
        }
        let updates: u32 = dom
            .split("data-updates=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(updates >= 2, "the counters were not polled:\n{dom}");
        let row = dom
            .split("<tr id=\"row-link-wan\">")
            .nth(1)
            .unwrap_or_else(|| panic!("no counters row for the link:\n{dom}"));
        let frames: u64 = row
            .split("<td class=\"frames\">")
            .nth(1)
            .and_then(|r| r.split('<').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(frames >= 6, "the link's frames are not shown: {row}");
        assert!(dom.contains(" f/s · "), "no rates on the drawing:\n{dom}");
        click_through_the_page(&addr, &root);
    }
    web.terminate(Duration::from_secs(5));
}

/// A WebDriver session on chromedriver (the W3C protocol, JSON over HTTP).
struct Driver {
    addr: String,
    session: String,
    _chromedriver: Proc,
    _profile: TempDir,
}

impl Driver {
    fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let chromedriver = Proc::spawn(
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let addr = format!("127.0.0.1:{port}");
        assert!(
            wait_until(Duration::from_secs(20), || std::net::TcpStream::connect(
                &addr
            )
            .is_ok()),
            "chromedriver did not listen"
        );
        let profile = TempDir::new("filo-lab-chromium");
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                format!("--user-data-dir={}", profile.path().display())]}}}});
        let (st, r) = http(&addr, "POST", "/session", &caps.to_string());
        assert_eq!(st, 200, "no WebDriver session: {r}");
        let session = json(&r)["value"]["sessionId"].as_str().unwrap().to_string();
        Driver {
            addr,
            session,
            _chromedriver: chromedriver,
            _profile: profile,
        }
    }

    fn call(&self, method: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
        let (st, r) = http(
            &self.addr,
            method,
            &format!("/session/{}{path}", self.session),
            &body.to_string(),
        );
        assert_eq!(st, 200, "{method} {path}: {r}");
        json(&r)["value"].clone()
    }

    /// The element a CSS selector finds, waiting for the page's scripts to draw it.
    fn find(&self, css: &str) -> String {
        let mut found = None;
        wait_until(Duration::from_secs(20), || {
            let (st, r) = http(
                &self.addr,
                "POST",
                &format!("/session/{}/element", self.session),
                &serde_json::json!({"using": "css selector", "value": css}).to_string(),
            );
            if st == 200 {
                found = json(&r)["value"]
                    .as_object()
                    .and_then(|o| o.values().next())
                    .and_then(|v| v.as_str())
                    .map(String::from);
            }
            found.is_some()
        });
        found.unwrap_or_else(|| panic!("no {css} on the page"))
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.call(
            "POST",
            &format!("/element/{e}/click"),
            serde_json::json!({}),
        );
    }

    fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.call("GET", &format!("/element/{e}/text"), serde_json::json!({}))
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = http(
            &self.addr,
            "DELETE",
            &format!("/session/{}", self.session),
            "",
        );
    }
}

/// Clicks the link on the drawn page, changes its loss in the form and checks the wirefilter
/// has it; clicks a node and reads its addresses.
fn click_through_the_page(addr: &str, root: &Path) {
    if std::process::Command::new("chromedriver")
        .arg("--version")
        .output()
        .is_err()
    {
        skip("chromedriver is not installed: the page's forms are not clicked");
        return;
    }
    let d = Driver::start();
    d.call(
        "POST",
        "/url",
        serde_json::json!({"url": format!("http://{addr}/")}),
    );
    d.click("#link-wan");
    let loss = d.find("#set input[name=loss]");
    d.call(
        "POST",
        &format!("/element/{loss}/value"),
        serde_json::json!({"text": "42"}),
    );
    d.click("#set button[type=submit]");
    let mut shown = String::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            shown = d.text("#result");
            shown.contains("L->R 42")
        }),
        "the page did not show the new loss: {shown:?}"
    );
    let (_, out, _) = filo(root, &["lab", "status", "--json"]);
    let loss = json(&out)["links"][0]["settings"]["loss"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        loss.contains("L->R 42") && loss.contains("R->L 42"),
        "{loss}"
    );
    d.click("#close");
    d.click("#node-h2");
    let mut addresses = String::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            addresses = d.text("#addresses");
            addresses.contains("10.63.0.2/24")
        }),
        "the node's addresses are not shown: {addresses:?}"
    );
}

/// Runs `filo ARGS` inside namespace `ns` with the lab state under `root`.
fn filo_in(ns: &Netns, root: &Path, args: &[&str]) -> (bool, String, String) {
    let p = Proc::spawn(
        ns.command(FILO)
            .args(args)
            .env("FILO_LAB_DIR", root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let (st, out, err) = p.output(T);
    (st.success(), out, err)
}

/// Two "hosts" (namespaces joined by a veth, multicast routed on it), each with a lab whose
/// switch extends over vxvde://: ns nodes on the two sites ping each other; site A's tap node
/// is a kernel interface the host configures; VLANs keep two nodes of site A apart.
#[test]
fn remote_segments_tap_nodes_and_vlans() {
    require("ping");
    let tmp = TempDir::new("filo-lab");
    let host_a = Netns::new("filo-lab-a");
    let host_b = Netns::new("filo-lab-b");
    let (va, vb) = veth(&host_a, "10.96.0.1/24", &host_b, "10.96.0.2/24");
    host_a.exec_ok(&["ip", "route", "add", "224.0.0.0/4", "dev", &va]);
    host_b.exec_ok(&["ip", "route", "add", "224.0.0.0/4", "dev", &vb]);
    let tap = unique("lt").replace('-', "");
    let tap = &tap[tap.len().saturating_sub(12)..];
    let site_a = tmp.join("a.toml");
    std::fs::write(
        &site_a,
        format!(
            r#"
name = "sitea"
[switch.lan]
vlan = [{{ id = 20, untagged = [5, 6] }}, {{ id = 30, untagged = [7] }}]
[remote.wan]
switch = "lan"
vnl = "vxvde://239.0.0.9/vni=19"
[node.h1]
kind = "ns"
net = ["lan"]
ip = ["10.65.0.1/24"]
[node.gw]
kind = "tap"
net = ["lan"]
ifname = "{tap}"
[node.v1]
kind = "ns"
net = ["lan:5"]
ip = ["10.66.0.1/24"]
[node.v2]
kind = "ns"
net = ["lan:6"]
ip = ["10.66.0.2/24"]
[node.v3]
kind = "ns"
net = ["lan:7"]
ip = ["10.66.0.3/24"]
"#
        ),
    )
    .unwrap();
    let site_b = tmp.join("b.toml");
    std::fs::write(
        &site_b,
        r#"
name = "siteb"
[switch.lan]
[remote.wan]
switch = "lan"
vnl = "vxvde://239.0.0.9/vni=19"
[node.h2]
kind = "ns"
net = ["lan"]
ip = ["10.65.0.2/24"]
"#,
    )
    .unwrap();
    let (root_a, root_b) = (tmp.join("state-a"), tmp.join("state-b"));
    let _down_a = Cleanup(&root_a, "sitea");
    let _down_b = Cleanup(&root_b, "siteb");
    let (ok, _, err) = filo_in(&host_a, &root_a, &["lab", "up", site_a.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (ok, _, err) = filo_in(&host_b, &root_b, &["lab", "up", site_b.to_str().unwrap()]);
    assert!(ok, "{err}");

    // Across the two hosts, over vxvde.
    let (ok, out, err) = ping(&root_a, "h1", 3, 5, "10.65.0.2");
    assert!(ok && out.contains("3 received"), "{out} {err}");
    // The tap node is a kernel interface of host A, on the lab's switch.
    host_a.exec_ok(&["ip", "addr", "add", "10.65.0.9/24", "dev", tap]);
    host_a.exec_ok(&["ip", "link", "set", tap, "up"]);
    let (ok, out, err) = ping(&root_b, "h2", 2, 5, "10.65.0.9");
    assert!(ok && out.contains("2 received"), "{out} {err}");
    // VLAN 20 joins v1 and v2; v3 is alone on VLAN 30, h1 on the untagged VLAN 0.
    let (ok, out, _) = ping(&root_a, "v1", 1, 5, "10.66.0.2");
    assert!(ok && out.contains("1 received"), "{out}");
    let (ok, out, _) = ping(&root_a, "v1", 1, 1, "10.66.0.3");
    assert!(!ok, "VLAN 20 reached VLAN 30: {out}");

    down(&root_a);
    down(&root_b);
    // The tap went with its plug.
    let links = host_a.exec_ok(&["ip", "-br", "link"]);
    assert!(!links.contains(tap), "{links}");
    assert_nothing_left(tmp.path());
}

/// A qemu node: the VM's command line joined to the lab's switch with -nic vde; its NIC's
/// iPXE sends DHCP requests, which the switch counts on the VM's port.
#[test]
fn a_qemu_node_joins_its_switch() {
    require("qemu-system-x86_64");
    let tmp = TempDir::new("filo-lab");
    let root = tmp.join("state");
    let file = write_lab(
        &tmp,
        r#"
name = "vm"
[switch.lan]
[node.vm]
kind = "qemu"
net = ["lan:3"]
command = ["qemu-system-x86_64", "-m", "64", "-boot", "n", "-display", "none", "-nodefaults"]
"#,
    );
    let _down = Cleanup(&root, "vm");
    let (ok, _, err) = up(&root, &file);
    assert!(ok, "{err}");
    let mut last = String::new();
    let joined = wait_until(Duration::from_secs(90), || {
        let (_, out, _) = filo(&root, &["lab", "status", "--json"]);
        last = out;
        let s = json(&last);
        s["switches"][0]["ports"].as_array().is_some_and(|ports| {
            ports.iter().any(|p| {
                p["port"] == 3
                    && p["in_frames"].as_u64().unwrap_or(0) > 0
                    && p["endpoints"][0].as_str().unwrap_or("").starts_with("QEMU")
            })
        })
    });
    assert!(joined, "no frames from the VM on port 3: {last}");
    down(&root);
    assert_nothing_left(tmp.path());
}

/// A qemu node whose program is not installed is refused by name before anything starts
/// (and one whose shell command fails, when it starts).
#[test]
fn a_missing_program_is_refused_before_anything_starts() {
    let tmp = TempDir::new("filo-lab");
    let root = tmp.join("state");
    let file = write_lab(
        &tmp,
        "[switch.lan]\n[node.vm]\nkind = \"qemu\"\nnet = [\"lan\"]\ncommand = \"qemu-system-nosuch -m 64\"\n",
    );
    let (ok, _, err) = up(&root, &file);
    // The shell form runs sh, which exists: the VM fails when it starts instead.
    assert!(!ok && err.contains("node vm failed"), "{err}");
    let file = write_lab(
        &tmp,
        "[switch.lan]\n[node.vm]\nkind = \"qemu\"\nnet = [\"lan\"]\ncommand = [\"qemu-system-nosuch\", \"-m\", \"64\"]\n",
    );
    let (ok, _, err) = up(&root, &file);
    assert!(
        !ok && err.contains("node vm: qemu-system-nosuch is not installed"),
        "{err}"
    );
    assert_nothing_left(tmp.path());
}

/// An ordinary user runs a lab: switches and links need no privileges; ns nodes need user
/// namespaces and /dev/net/tun by file permissions (a clear error where it is 0600); a tap
/// node is refused up front as needing root.
#[test]
fn an_ordinary_user_runs_a_lab() {
    let tmp = TempDir::new("filo-lab");
    let bin = copy_for_everyone(&tmp, FILO);
    let root = tmp.join("state");
    std::fs::create_dir(&root).unwrap();
    std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let nobody = |args: &[&str]| {
        let mut c = as_nobody(&bin);
        c.args(args)
            .env("FILO_LAB_DIR", &root)
            .env_remove("XDG_RUNTIME_DIR")
            .stdin(Stdio::null());
        let (s, o, e) = Proc::spawn(&mut c).output(T);
        (s.success(), o, e)
    };
    let lab = |name: &str, text: &str| {
        let f = tmp.join(name);
        std::fs::write(&f, text).unwrap();
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        f.display().to_string()
    };
    let cables = lab(
        "cables.toml",
        "[switch.a]\n[switch.b]\n[[link]]\nname = \"ab\"\na = \"a\"\nb = \"b\"\ndelay = 7\n",
    );
    let _down = Cleanup(&root, "cables");
    let (ok, _, err) = nobody(&["lab", "up", &cables]);
    assert!(ok, "{err}");
    let (ok, out, err) = nobody(&["lab", "status", "--json"]);
    assert!(ok, "{err}");
    let s = json(&out);
    assert_eq!(
        (
            s["switches"][0]["alive"].as_bool(),
            s["links"][0]["alive"].as_bool()
        ),
        (Some(true), Some(true)),
        "{s}"
    );
    let (ok, out, err) = nobody(&["lab", "set", "ab", "delay=9"]);
    assert!(ok && out.contains("L->R 9"), "{out} {err}");
    let (ok, _, err) = nobody(&["lab", "down"]);
    assert!(ok, "{err}");

    let tap = lab(
        "tap.toml",
        "[switch.a]\n[node.t]\nkind = \"tap\"\nnet = [\"a\"]\nifname = \"labtap9\"\n",
    );
    let (ok, _, err) = nobody(&["lab", "up", &tap]);
    assert!(
        !ok && err.contains("node t is a tap node") && err.contains("needs root"),
        "{err}"
    );

    let ns = lab(
        "ns.toml",
        "[switch.a]\n[node.n]\nkind = \"ns\"\nnet = [\"a\"]\nip = [\"10.67.0.1/24\"]\n",
    );
    let _down_ns = Cleanup(&root, "ns");
    let (ok, _, err) = nobody(&["lab", "up", &ns]);
    if ok {
        let (ok, out, err) = nobody(&["lab", "exec", "n", "--", "ip", "-br", "addr"]);
        assert!(ok && out.contains("10.67.0.1/24"), "{out} {err}");
        let (ok, _, err) = nobody(&["lab", "down"]);
        assert!(ok, "{err}");
    } else {
        skip(&format!("unprivileged ns nodes: {err}"));
        assert!(
            err.contains("node n failed")
                && (err.contains("/dev/net/tun") || err.contains("user namespace")),
            "unclear reason: {err}"
        );
    }
    assert_nothing_left(tmp.path());
}

/// Every lab of examples/labs comes up (its `run` commands are its checks: pings that must
/// and must not get through), shows its links' counters, and goes down leaving nothing.
#[test]
fn the_example_labs_come_up_and_down() {
    require("ping");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/labs");
    let tmp = TempDir::new("filo-lab");
    for name in ["lossy-wan", "vlan-trunk"] {
        let root = tmp.join(&format!("state-{name}"));
        let file = examples.join(format!("{name}.toml"));
        let _down = Cleanup(&root, name);
        let (ok, out, err) = up(&root, &file);
        assert!(ok, "{name}: {out} {err}");
        let (ok, out, _) = filo(&root, &["lab", "status", "--json"]);
        assert!(ok);
        let s = json(&out);
        let link = &s["links"][0];
        assert!(
            link["a_to_b"]["in_frames"].as_u64().unwrap() > 0,
            "{name}: {link}"
        );
        let (ok, _, err) = filo(&root, &["lab", "down"]);
        assert!(ok, "{name}: {err}");
        assert_nothing_left(&root);
    }
    // Two LANs and a router: h1's `run` pings h2 across the router with the address its DHCP
    // server gave; the router counts what it forwarded.
    {
        let name = "two-lans-router";
        let root = tmp.join(&format!("state-{name}"));
        let _down = Cleanup(&root, name);
        let (ok, out, err) = up(&root, &examples.join(format!("{name}.toml")));
        assert!(ok, "{name}: {out} {err}");
        let r = status_node(&root, "r");
        assert!(counter(&r, "vde0_forwarded") >= 3, "{r}");
        assert!(counter(&r, "vde1_forwarded") >= 3, "{r}");
        assert!(r["leases"].to_string().contains("\"10.11.0.1"), "{r}");
        let (ok, _, err) = filo(&root, &["lab", "down"]);
        assert!(ok, "{name}: {err}");
        assert_nothing_left(&root);
    }
    // The two-host example, with two namespaces as the hosts.
    let host_a = Netns::new("filo-lab-xa");
    let host_b = Netns::new("filo-lab-xb");
    let (va, vb) = veth(&host_a, "10.97.0.1/24", &host_b, "10.97.0.2/24");
    host_a.exec_ok(&["ip", "route", "add", "224.0.0.0/4", "dev", &va]);
    host_b.exec_ok(&["ip", "route", "add", "224.0.0.0/4", "dev", &vb]);
    let (root_a, root_b) = (tmp.join("state-a"), tmp.join("state-b"));
    let _down_a = Cleanup(&root_a, "site-a");
    let _down_b = Cleanup(&root_b, "site-b");
    let site = |s: &str| {
        examples
            .join(format!("site-{s}.toml"))
            .display()
            .to_string()
    };
    let (ok, _, err) = filo_in(&host_a, &root_a, &["lab", "up", &site("a")]);
    assert!(ok, "{err}");
    // site-b's run command pings site A's node over vxvde.
    let (ok, _, err) = filo_in(&host_b, &root_b, &["lab", "up", &site("b")]);
    assert!(ok, "{err}");
    for root in [&root_a, &root_b] {
        down(root);
    }
    assert_nothing_left(tmp.path());
}

/// Nodes that take their addresses by DHCP (from dnsmasq in another node) and SLAAC (from its
/// router adverts) are up only once they have them: their `run` commands see the addresses.
#[test]
fn dhcp_and_slaac_nodes_are_up_once_configured() {
    require("dnsmasq");
    let tmp = TempDir::new("filo-lab");
    let root = tmp.join("state");
    let mut server = dnsmasq_dhcp(&tmp.join("leases"), "10.68.0.100,10.68.0.150", &[]);
    server.extend([
        "--enable-ra".to_string(),
        "--dhcp-range=fd68::,ra-only".to_string(),
    ]);
    let command = serde_json::to_string(&server).unwrap();
    let file = write_lab(
        &tmp,
        &format!(
            r#"
name = "auto"
[switch.lan]
[node.server]
kind = "ns"
net = ["lan"]
ip = ["10.68.0.1/24", "fd68::1/64"]
command = {command}
[node.client]
kind = "ns"
net = ["lan"]
dhcp = true
slaac = true
run = ["ip -4 -br addr show vde0 | grep -q ' 10.68.0.1[0-9][0-9]/24'", "ip -6 -br addr show vde0 | grep -q ' fd68::'"]
"#
        ),
    );
    let _down = Cleanup(&root, "auto");
    let (ok, out, err) = up(&root, &file);
    assert!(ok, "{out} {err}");
    let (ok, out, _) = filo(
        &root,
        &[
            "lab", "exec", "client", "--", "ip", "-br", "addr", "show", "vde0",
        ],
    );
    assert!(
        ok && out.contains("10.68.0.1") && out.contains("fd68::"),
        "{out}"
    );
    down(&root);
    assert_nothing_left(tmp.path());
}

/// Ctrl-C during `up` stops what was started (daemons still starting are waited for, so
/// that none is left detached and unrecorded).
#[test]
fn an_interrupted_up_leaves_nothing() {
    let tmp = TempDir::new("filo-lab");
    let root = tmp.join("state");
    let mut text = String::from("name = \"int\"\n");
    for i in 0..30 {
        text.push_str(&format!(
            "[switch.s{i}]\n[node.n{i}]\nkind = \"ns\"\nnet = [\"s{i}\"]\nip = [\"10.69.0.{}/24\"]\n",
            i + 1
        ));
    }
    let file = write_lab(&tmp, &text);
    let _down = Cleanup(&root, "int");
    let up = Proc::spawn(
        Command::new(FILO)
            .args(["lab", "up", file.to_str().unwrap()])
            .env("FILO_LAB_DIR", &root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    // Once the first switches are up.
    assert!(wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(root.join("int/state.json")).is_ok_and(|t| t.contains("switch s"))
    }));
    filo_test_support::sys::kill(up.pid() as libc::pid_t, libc::SIGINT);
    let (st, _, err) = up.output(T);
    assert!(
        !st.success() && err.contains("lab int did not come up: interrupted"),
        "{err}"
    );
    assert_nothing_left(tmp.path());
    assert!(!root.join("int").exists());
}

/// A kernel interface already held by another program: the tap node fails, named, and the
/// lab comes down.
#[test]
fn a_busy_tap_fails_its_node_by_name() {
    let tmp = TempDir::new("filo-lab");
    let root = tmp.join("state");
    let host = Netns::new("filo-lab-t");
    let holder = Proc::spawn(
        host.command(FILO)
            .args(["plug", "tap://labbusy0", "null://"])
            .stdin(Stdio::null())
            .stderr(Stdio::null()),
    );
    assert!(wait_until(Duration::from_secs(10), || host
        .exec_ok(&["ip", "-br", "link"])
        .contains("labbusy0")));
    let file = write_lab(
        &tmp,
        "name = \"busy\"\n[switch.lan]\n[node.n]\nkind = \"ns\"\nnet = [\"lan\"]\n[node.t]\nkind = \"tap\"\nnet = [\"lan\"]\nifname = \"labbusy0\"\n",
    );
    let _down = Cleanup(&root, "busy");
    let (ok, _, err) = filo_in(&host, &root, &["lab", "up", file.to_str().unwrap()]);
    assert!(!ok && err.contains("node t failed"), "{err}");
    assert_nothing_left(&root);
    drop(holder);
}

/// A slirp node gives a switch the "host's" network: the lab runs in a host namespace joined
/// by a veth to an "inet" namespace with an HTTP server; an ns node on the switch takes its
/// address from the gateway's DHCP server and fetches a page from inet, a forward from the
/// host's loopback reaches the node's own server, `status` shows the gateway's counters and
/// lease, and `down` stops it.
/// The web view of a daemon node (slirp, router): a `/metrics` sample at least `metric.1`,
/// its page (`/api/node/NODE`, from its console) with each of `info`, its class in the drawing.
fn check_daemon_in_web(root: &Path, metric: (&str, u64), node: &str, info: &[&str], class: &str) {
    let (mut web, addr) = start_web(root);
    let (st, m) = http(&addr, "GET", "/metrics", "");
    assert_eq!(st, 200, "{m}");
    assert!(sample(&m, metric.0) >= metric.1, "{m}");
    let (st, text) = http(&addr, "GET", &format!("/api/node/{node}"), "");
    assert_eq!(st, 200, "{text}");
    assert!(info.iter().all(|i| text.contains(i)), "{text}");
    let (st, svg) = http(&addr, "GET", "/graph.svg", "");
    assert_eq!(st, 200);
    assert!(svg.contains(&format!(r#"class="{class}""#)), "{svg}");
    web.terminate(Duration::from_secs(5));
}

#[test]
fn a_slirp_node_takes_a_switch_to_the_hosts_network() {
    require("python3");
    require("curl");
    require("nsenter");
    let tmp = TempDir::new("filo-lab");
    let host = Netns::new("filo-lab-sh");
    let inet = Netns::new("filo-lab-si");
    veth(&host, "198.18.7.1/24", &inet, "198.18.7.2/24");
    let serve = |dir: &Path, text: &str| {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("index.html"), text).unwrap();
        vec![
            "python3".to_string(),
            "-m".into(),
            "http.server".into(),
            "8000".into(),
            "-d".into(),
            dir.display().to_string(),
        ]
    };
    let inet_www = serve(&tmp.join("inet"), "hello from inet\n");
    let _http = Proc::spawn(
        inet.command(&inet_www[0])
            .args(&inet_www[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    assert!(
        host.curl_until("http://198.18.7.2:8000/", &tmp.join("probe"), T),
        "the inet namespace's HTTP server did not come up"
    );
    let node_www = serde_json::to_string(&serve(&tmp.join("node"), "hello from h1\n")).unwrap();
    let root = tmp.join("state");
    let file = write_lab(
        &tmp,
        &format!(
            r#"
name = "gwlab"
[switch.lan]
[node.gw]
kind = "slirp"
net = ["lan"]
ip = ["10.70.0.2/24"]
dhcp_start = "10.70.0.50"
tcpfwd = ["127.0.0.1:18080:10.70.0.50:8000"]
[node.h1]
kind = "ns"
net = ["lan"]
dhcp = true
command = {node_www}
"#
        ),
    );
    let _down = Cleanup(&root, "gwlab");
    let (ok, out, err) = filo_in(&host, &root, &["lab", "up", file.to_str().unwrap()]);
    assert!(ok, "{out} {err}");

    // Out through the gateway, to a server the host reaches.
    let (ok, out, err) = filo(
        &root,
        &[
            "lab",
            "exec",
            "h1",
            "--",
            "curl",
            "-sf",
            "--max-time",
            "10",
            "http://198.18.7.2:8000/",
        ],
    );
    assert!(ok && out == "hello from inet\n", "{out} {err}");
    // In from the host's loopback, through the forward, to the node's server.
    let got = tmp.join("fwd");
    assert!(
        host.curl_until("http://127.0.0.1:18080/", &got, T),
        "the forward did not reach the node"
    );
    assert_eq!(std::fs::read_to_string(&got).unwrap(), "hello from h1\n");

    let gw = status_node(&root, "gw");
    assert_eq!((&gw["kind"], &gw["alive"]), (&"slirp".into(), &true.into()));
    let counter = |name: &str| counter(&gw, name);
    assert!(counter("tcp_opened") >= 1, "{gw}");
    assert!(counter("forwards_accepted") >= 1, "{gw}");
    assert!(gw["leases"].to_string().contains("10.70.0.50"), "{gw}");
    let (ok, text, _) = filo(&root, &["lab", "status"]);
    assert!(
        ok && text.contains("node gw (slirp)") && text.contains("lease "),
        "{text}"
    );

    // The web view: the gateway's counters in /metrics, its console's view as its addresses.
    check_daemon_in_web(
        &root,
        (
            r#"filo_slirp{lab="gwlab",node="gw",counter="tcp_opened"}"#,
            1,
        ),
        "gw",
        &["10.70.0.2", "10.70.0.50"],
        "node slirp",
    );

    down(&root);
    assert_nothing_left(&root);
}

#[test]
fn a_router_node_joins_two_switches() {
    let tmp = TempDir::new("filo-lab");
    let root = tmp.join("state");
    let file = write_lab(
        &tmp,
        r#"
name = "rtlab"
[switch.lan]
[switch.wan]
[node.r]
kind = "router"
net = ["lan", "wan"]
conf = ["ip=10.71.0.1/24", "ip=10.72.0.1/24"]
dhcp_server = ["lan=10.71.0.100-10.71.0.150"]
filter = ["reject proto tcp dport 23"]
[node.h1]
kind = "ns"
net = ["lan"]
dhcp = true
[node.h2]
kind = "ns"
net = ["wan"]
ip = ["10.72.0.10/24"]
gw = "10.72.0.1"
"#,
    );
    let _down = Cleanup(&root, "rtlab");
    let (ok, out, err) = up(&root, &file);
    assert!(ok, "{out} {err}");

    // h1 took its address and route from the router's DHCP server; across the router to h2.
    let (ok, out, err) = ping(&root, "h1", 3, 5, "10.72.0.10");
    assert!(ok && out.contains("3 received"), "{out} {err}");

    let r = status_node(&root, "r");
    assert_eq!((&r["kind"], &r["alive"]), (&"router".into(), &true.into()));
    let counter = |name: &str| counter(&r, name);
    // Three echo requests in on vde0 and out on vde1; their replies the other way.
    assert!(counter("vde0_forwarded") >= 3, "{r}");
    assert!(counter("vde1_forwarded") >= 3, "{r}");
    assert_eq!(counter("drop_no_route"), 0, "{r}");
    let leases = r["leases"].to_string();
    assert!(
        leases.contains("\"10.71.0.1") && leases.contains("dev vde0"),
        "{r}"
    );
    assert!(r["ifaces"].to_string().contains("10.72.0.1/24"), "{r}");
    let (ok, text, _) = filo(&root, &["lab", "status"]);
    assert!(
        ok && text.contains("node r (router)") && text.contains("iface vde1"),
        "{text}"
    );

    // Its page shows its console's interfaces and leases (it has no namespace to look in).
    check_daemon_in_web(
        &root,
        (
            r#"filo_router{lab="rtlab",node="r",counter="vde0_forwarded"}"#,
            3,
        ),
        "r",
        &["10.72.0.1/24", "dev vde0"],
        "node router",
    );

    down(&root);
    assert_nothing_left(&root);
    assert!(
        sockets_under(&root).is_empty(),
        "{:?}",
        sockets_under(&root)
    );
}

#[test]
fn two_ns_nodes_on_an_ipn_bus_ping_each_other() {
    let tmp = TempDir::new("filo-lab");
    let root = tmp.join("state");
    let file = write_lab(
        &tmp,
        r#"
name = "buslab"
[bus.b]
policy = "switch"
[node.h1]
kind = "ns"
net = ["b"]
ip = ["10.81.0.1/24"]
[node.h2]
kind = "ns"
net = ["b"]
ip = ["10.81.0.2/24"]
"#,
    );
    let _down = Cleanup(&root, "buslab");
    let (ok, out, err) = up(&root, &file);
    assert!(
        ok && out.contains("0 switches, 1 buses, 0 links"),
        "{out} {err}"
    );
    let (ok, out, err) = ping(&root, "h1", 3, 5, "10.81.0.2");
    assert!(ok && out.contains("3 received"), "{out} {err}");

    let (ok, out, _) = filo(&root, &["lab", "status", "--json"]);
    assert!(ok);
    let s = json(&out);
    let b = &s["buses"][0];
    assert_eq!(
        (&b["name"], &b["alive"]),
        (&"b".into(), &true.into()),
        "{s}"
    );
    assert_eq!(b["stat"]["policy"], "switch", "{b}");
    let members = b["stat"]["members"]
        .as_array()
        .unwrap_or_else(|| panic!("{b}"));
    assert_eq!(members.len(), 2, "{b}");
    assert!(
        members.iter().all(|m| m["frames_in"].as_u64() >= Some(3)),
        "{b}"
    );
    // The web page counts a node's frames by its pid among the members.
    let h1 = s["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == "h1"))
        .unwrap_or_else(|| panic!("{s}"));
    assert!(members.iter().any(|m| m["pid"] == h1["pid"]), "{s}");
    let (ok, text, _) = filo(&root, &["lab", "status"]);
    assert!(ok && text.contains("bus b (switch): up"), "{text}");
    let (ok, svg, _) = filo(&root, &["lab", "graph", "-o", "-", file.to_str().unwrap()]);
    assert!(ok && svg.contains(r#"class="bus""#), "{svg}");

    down(&root);
    assert_nothing_left(&root);
}

#[test]
fn ns_nodes_on_vnet_buses_reach_each_other_through_a_router_node_with_super_frames() {
    let tmp = TempDir::new("filo-lab");
    let root = tmp.join("state");
    let www = tmp.join("www");
    std::fs::create_dir(&www).unwrap();
    run(Command::new("head")
        .args(["-c", "8M", "/dev/urandom"])
        .stdout(std::fs::File::create(www.join("big")).unwrap()));
    let file = write_lab(
        &tmp,
        &format!(
            r#"
name = "vnetlab"
[bus.lan]
policy = "switch"
vnet = true
[bus.wan]
policy = "switch"
vnet = true
[node.r]
kind = "router"
net = ["lan", "wan"]
conf = ["ip=10.83.0.1/24", "ip=10.84.0.1/24"]
[node.c]
kind = "ns"
net = ["lan"]
ip = ["10.83.0.10/24"]
gw = "10.83.0.1"
[node.s]
kind = "ns"
net = ["wan"]
ip = ["10.84.0.10/24"]
gw = "10.84.0.1"
command = "python3 -m http.server 8000 -d {}"
"#,
            www.display()
        ),
    );
    let _down = Cleanup(&root, "vnetlab");
    let (ok, out, err) = up(&root, &file);
    assert!(ok, "{out} {err}");
    let (ok, out, err) = filo(
        &root,
        &[
            "lab",
            "exec",
            "c",
            "--",
            "curl",
            "-sf",
            "--retry",
            "10",
            "--retry-delay",
            "1",
            "--retry-all-errors",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            "http://10.84.0.10:8000/big",
        ],
    );
    assert!(ok && out.trim() == "8388608", "{out} {err}");
    let (ok, out, _) = filo(&root, &["lab", "status", "--json"]);
    assert!(ok);
    let s = json(&out);
    let buses = s["buses"].as_array().unwrap_or_else(|| panic!("{s}"));
    assert!(
        buses.len() == 2 && buses.iter().all(|b| b["stat"]["vnet"] == true),
        "{s}"
    );
    // The download crossed the router as TCP super-frames (only the +vnet framing has them).
    let mgmt = root.join("vnetlab").join("rt").join("r.mgmt");
    let text = console(&mgmt, "iface/print");
    let super_rx = |iface: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{iface} ")))
            .unwrap_or_else(|| panic!("{text}"));
        let w: Vec<&str> = line.split_whitespace().collect();
        let at = w.iter().position(|x| *x == "super_rx").unwrap();
        w[at + 1].parse().unwrap()
    };
    assert!(super_rx("vde1") > 0, "{text}");
    down(&root);
    assert_nothing_left(&root);
}
