//! Named stacks: `filo stack serve`, msocket from C (libfilo), `filo mstack`, `filo stack
//! ip`, FILO_STACK, permissions, a daemon killed mid-use, bad input; and the README's four
//! "hard problems made easy".

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use filo_test_support::*;

const FILO: &str = env!("CARGO_BIN_EXE_filo");
const T: Duration = Duration::from_secs(20);

/// A TCP server that answers every connection with "peer ADDR" and a tag.
const PEER_SERVER: &str = "import socket,sys\n\
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16)\n\
while True:\n    c,a=s.accept(); c.sendall(('peer %s %s\\n' % (a[0], sys.argv[3])).encode()); c.close()\n";

/// libfilo.so and the C client `mconnect`, built once into a world-readable directory.
fn c_client() -> &'static (PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(|| {
        require("gcc");
        let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "libfilo"])
            .current_dir(&ws)
            .status()
            .expect("cargo build -p libfilo");
        assert!(status.success(), "cannot build libfilo");
        let lib = Path::new(FILO).parent().unwrap().join("libfilo.so");
        assert!(lib.exists(), "no {}", lib.display());
        // World-readable, so setpriv'd users can run it; dirs of earlier runs are removed.
        for e in std::fs::read_dir("/tmp").unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("filo-libfilo-") {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = PathBuf::from(format!("/tmp/filo-libfilo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(&lib, dir.join("libfilo.so")).unwrap();
        let bin = dir.join("mconnect");
        run(Command::new("gcc")
            .arg("-Wall")
            .arg("-Werror")
            .arg(ws.join("crates/libfilo/examples/mconnect.c"))
            .arg("-I")
            .arg(ws.join("crates/libfilo/include"))
            .arg("-L")
            .arg(&dir)
            .arg("-lfilo")
            .arg(format!("-Wl,-rpath,{}", dir.display()))
            .arg("-o")
            .arg(&bin));
        run(Command::new("chmod").args(["-R", "a+rX", &dir.to_string_lossy()]));
        (dir, bin)
    })
}

/// Runs mconnect as `uid` (None: root) with an optional FILO_STACK: (code, stdout).
fn mconnect(
    uid: Option<u32>,
    path: &str,
    addr: &str,
    port: u16,
    env: Option<&Path>,
) -> (i32, String) {
    let (_, bin) = c_client();
    let mut c = match uid {
        Some(u) => {
            let mut c = Command::new("setpriv");
            c.args([
                format!("--reuid={u}"),
                format!("--regid={u}"),
                "--clear-groups".into(),
            ])
            .arg(bin);
            c
        }
        None => Command::new(bin),
    };
    c.args([path, addr, &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match env {
        Some(p) => c.env("FILO_STACK", p),
        None => c.env_remove("FILO_STACK"),
    };
    let (s, out, err) = Proc::spawn(&mut c).output(T);
    (s.code().unwrap_or(-1), format!("{out}{err}"))
}

fn filo(args: &[&str]) -> (i32, String, String) {
    let mut c = Command::new(FILO);
    c.args(args)
        .env_remove("FILO_STACK")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (s, o, e) = Proc::spawn(&mut c).output(T);
    (s.code().unwrap_or(-1), o, e)
}

/// `curl -s -m 2 URL` inside the named stack `stack` (via `filo mstack`).
fn mstack_curl(stack: &str, url: &str) -> (i32, String, String) {
    filo(&["mstack", stack, "--", "curl", "-s", "-m", "2", url])
}

fn bg(args: &[&str]) -> Proc {
    let mut c = Command::new(FILO);
    c.args(args)
        .env_remove("FILO_STACK")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(test_log());
    Proc::spawn(&mut c)
}

/// `filo stack serve PATH --vnl VNL CONF...`, waiting until PATH answers.
fn serve(path: &Path, vnl: &str, conf: &[&str]) -> Proc {
    let p = path.to_string_lossy().into_owned();
    let mut args = vec!["stack", "serve", &p, "--vnl", vnl];
    args.extend_from_slice(conf);
    let proc = bg(&args);
    let up = wait_until(T, || filo(&["stack", "ip", &p, "link"]).0 == 0);
    assert!(up, "stack {p} did not come up");
    proc
}

/// A namespace on `vnl` at `ip` running the peer server on `port`, answering with `tag`.
fn peer_server(vnl: &str, ip_len: &str, port: u16, tag: &str) -> Proc {
    require("python3");
    let ip = ip_len.split('/').next().unwrap();
    let p = bg(&[
        "ns",
        "--ip",
        ip_len,
        vnl,
        "--",
        "python3",
        "-c",
        PEER_SERVER,
        ip,
        &port.to_string(),
        tag,
    ]);
    let prober = format!("{}.250/24", ip.rsplit_once('.').unwrap().0);
    let probe = format!("import socket; socket.create_connection((\"{ip}\", {port}), 1)");
    let ok = wait_until(T, || {
        Command::new(FILO)
            .args(["ns", "--ip", &prober, vnl, "--", "python3", "-c", &probe])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    });
    assert!(ok, "peer server {ip}:{port} did not start");
    p
}

#[test]
fn serve_then_mstack_stack_ip_msocket_and_filo_stack_env() {
    let tmp = TempDir::new("filo-nst");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let vnl = sw.vnl();
    let _srv = peer_server(&vnl, "10.70.0.1/24", 7000, "srv");
    let s = tmp.join("s1");
    let sp = s.to_string_lossy().into_owned();
    let _stack = serve(&s, &vnl, &["--ip", "10.70.0.7/24"]);
    // mstack: an unmodified program in the stack.
    let (code, out, err) = filo(&["mstack", &sp, "--", "ip", "-br", "addr", "show", "vde0"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("10.70.0.7/24"), "{out}");
    let (code, out, _) = filo(&["mstack", &sp, "--", "ping", "-c1", "-W2", "10.70.0.1"]);
    assert_eq!(code, 0, "{out}");
    // stack ip: change and show the configuration.
    assert_eq!(
        filo(&[
            "stack",
            "ip",
            &sp,
            "route",
            "add",
            "10.99.0.0/16",
            "via",
            "10.70.0.1"
        ])
        .0,
        0
    );
    let (_, out, _) = filo(&["stack", "ip", &sp, "route"]);
    assert!(out.contains("10.99.0.0/16 via 10.70.0.1 dev vde0"), "{out}");
    assert_eq!(
        filo(&[
            "stack",
            "ip",
            &sp,
            "addr",
            "add",
            "10.70.0.8/24",
            "dev",
            "vde0"
        ])
        .0,
        0
    );
    let (_, out, _) = filo(&["stack", "ip", &sp, "-br", "addr"]);
    assert!(out.contains("10.70.0.8/24"), "{out}");
    // msocket from C, by path and through FILO_STACK.
    let (code, out) = mconnect(None, &sp, "10.70.0.1", 7000, None);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("local 10.70.0.7") && out.contains("peer 10.70.0.7 srv"),
        "{out}"
    );
    let (code, out) = mconnect(None, "-", "10.70.0.1", 7000, Some(&s));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("peer 10.70.0.7 srv"), "{out}");
    // FILO_STACK for mstack, inherited by the command.
    let mut c = Command::new(FILO);
    c.args([
        "mstack",
        "--",
        "sh",
        "-c",
        "echo $FILO_STACK; ip -br addr show vde0",
    ])
    .env("FILO_STACK", &s)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let (st, out, err) = Proc::spawn(&mut c).output(T);
    assert!(st.success(), "{err}");
    assert!(
        out.starts_with(&format!("{sp}\n")) && out.contains("10.70.0.7"),
        "{out}"
    );
}

#[test]
fn permissions_on_the_path_are_the_access_control() {
    let tmp = TempDir::new("filo-nst");
    run(Command::new("chmod").args(["755", &tmp.path().to_string_lossy()]));
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let vnl = sw.vnl();
    let _srv = peer_server(&vnl, "10.71.0.1/24", 7001, "srv");
    let s = tmp.join("s");
    let sp = s.to_string_lossy().into_owned();
    let _stack = serve(&s, &vnl, &["--ip", "10.71.0.9/24", "--mode", "600"]);
    let (code, out) = mconnect(Some(65534), &sp, "10.71.0.1", 7001, None);
    assert_eq!(code, 13, "nobody used a root-only stack: {out}");
    assert!(out.contains("Permission denied"), "{out}");
    run(Command::new("chmod").args(["666", &sp]));
    let (code, out) = mconnect(Some(65534), &sp, "10.71.0.1", 7001, None);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("peer 10.71.0.9 srv"), "{out}");
    // Joining the namespace itself (mstack) is for root and the stack's owner; others are
    // told to use msocket.
    let bin = tmp.join("filo");
    std::fs::copy(FILO, &bin).unwrap();
    run(Command::new("chmod").args(["755", &bin.to_string_lossy()]));
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(["mstack", &sp, "--", "true"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (st, _, err) = Proc::spawn(&mut c).output(T);
    assert_eq!(st.code(), Some(1));
    assert!(err.contains("msocket"), "{err}");
}

/// A C client that asks `msocket(PATH, DOMAIN, TYPE, PROTOCOL)` and prints "ok" or the errno.
const MSOCK_C: &str = "#include <errno.h>\n#include <stdio.h>\n#include <stdlib.h>\n\
#include \"libfilo.h\"\n\
int main(int argc, char **argv) {\n\
    if (argc != 5) return 2;\n\
    int fd = msocket(argv[1], atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));\n\
    if (fd < 0) { printf(\"errno %d\\n\", errno); return 1; }\n\
    printf(\"ok\\n\");\n\
    return 0;\n\
}\n";

#[test]
fn a_stack_never_grants_a_caller_more_than_it_could_have() {
    require("setpriv");
    let (dir, _) = c_client();
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tmp = TempDir::new("filo-nst");
    run(Command::new("chmod").args(["755", &tmp.path().to_string_lossy()]));
    let src = tmp.join("msock.c");
    std::fs::write(&src, MSOCK_C).unwrap();
    let bin = tmp.join("msock");
    run(Command::new("gcc")
        .args(["-Wall", "-Werror"])
        .arg(&src)
        .arg("-I")
        .arg(ws.join("crates/libfilo/include"))
        .arg("-L")
        .arg(dir)
        .arg("-lfilo")
        .arg(format!("-Wl,-rpath,{}", dir.display()))
        .arg("-o")
        .arg(&bin));
    run(Command::new("chmod").args(["755", &bin.to_string_lossy()]));
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let s = tmp.join("s");
    let sp = s.to_string_lossy().into_owned();
    let _stack = serve(&s, &sw.vnl(), &["--ip", "10.73.0.9/24", "--mode", "666"]);
    let ask = |setpriv: &[&str], domain: i32, ty: i32, proto: i32| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(setpriv)
            .arg(&bin)
            .args([
                &sp,
                &domain.to_string(),
                &ty.to_string(),
                &proto.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let (_, out, err) = Proc::spawn(&mut c).output(T);
        format!("{out}{err}").trim().to_string()
    };
    let eperm = format!("errno {}", libc::EPERM);
    let eth_p_all = i32::from(0x0003u16.to_be());
    // Nobody could not open these itself: the root daemon must not open them for it.
    let privileged = [
        (libc::AF_PACKET, libc::SOCK_RAW, eth_p_all),
        (libc::AF_PACKET, libc::SOCK_DGRAM, eth_p_all),
        (libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP),
        (libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6),
        (libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE),
    ];
    for (d, t, p) in privileged {
        assert_eq!(ask(&[], d, t, p), eperm, "nobody got socket({d}, {t}, {p})");
    }
    // What an unprivileged user may open, it gets.
    for (d, t, p) in [
        (libc::AF_INET, libc::SOCK_STREAM, 0),
        (
            libc::AF_INET6,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            libc::IPPROTO_TCP,
        ),
        (libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_UDP),
    ] {
        assert_eq!(ask(&[], d, t, p), "ok", "socket({d}, {t}, {p})");
    }
    // A nobody process holding CAP_NET_RAW could open raw sockets itself: it gets them.
    let raw = ["--inh-caps=+net_raw", "--ambient-caps=+net_raw"];
    let (d, t, p) = privileged[0];
    assert_eq!(ask(&raw, d, t, p), "ok");
    // Root gets anything.
    let mut c = Command::new(&bin);
    c.args([&sp, &d.to_string(), &t.to_string(), &p.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    assert_eq!(Proc::spawn(&mut c).output(T).1.trim(), "ok");
}

#[test]
fn a_daemon_killed_mid_use_leaves_nothing_and_clients_get_clear_errors() {
    let tmp = TempDir::new("filo-nst");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let vnl = sw.vnl();
    let _srv = peer_server(&vnl, "10.72.0.1/24", 7002, "srv");
    let s = tmp.join("s");
    let sp = s.to_string_lossy().into_owned();
    let mut stack = serve(&s, &vnl, &["--ip", "10.72.0.9/24"]);
    assert_eq!(mconnect(None, &sp, "10.72.0.1", 7002, None).0, 0);
    assert_eq!(sw.endpoints(), 2);
    stack.child.kill().unwrap();
    stack.wait_exit(T);
    // The helper removes the socket file and leaves; the stack's plug leaves the switch.
    assert!(wait_until(T, || !s.exists()), "socket file left behind");
    assert!(
        wait_until(T, || sw.endpoints() == 1),
        "stack plug left on the switch"
    );
    let (code, out) = mconnect(None, &sp, "10.72.0.1", 7002, None);
    assert_eq!(code, 1);
    assert!(out.contains("No such file"), "{out}");
    let (code, _, err) = filo(&["mstack", &sp, "--", "true"]);
    assert_eq!(code, 1);
    assert!(err.contains(&sp) && err.contains("No such file"), "{err}");
    // A clean stop (SIGTERM) removes it too.
    let mut stack = serve(&s, &vnl, &["--ip", "10.72.0.9/24"]);
    assert_eq!(stack.terminate(T).code(), Some(0));
    assert!(!s.exists());
    assert!(wait_until(T, || sw.endpoints() == 1));
}

#[test]
fn bad_input_gives_clear_errors() {
    let tmp = TempDir::new("filo-nst");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let vnl = sw.vnl();
    // A directory that does not exist.
    let (code, _, err) = filo(&["stack", "serve", "/nonexistent-filo/dir/s", "--vnl", &vnl]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot bind") && err.contains("No such file"),
        "{err}"
    );
    // A missing switch: nothing left at PATH.
    let s = tmp.join("s");
    let sp = s.to_string_lossy().into_owned();
    let missing = format!("vde://{}", tmp.join("nosw").display());
    let (code, _, err) = filo(&["stack", "serve", &sp, "--vnl", &missing]);
    assert_eq!(code, 1);
    assert!(err.contains("no VDE switch"), "{err}");
    assert!(!s.exists());
    // A path already served.
    let _stack = serve(&s, &vnl, &[]);
    let (code, _, err) = filo(&["stack", "serve", &sp, "--vnl", &vnl]);
    assert_eq!(code, 1);
    assert!(err.contains("already served"), "{err}");
    assert!(s.exists());
    // Not a stack.
    let f = tmp.join("file");
    std::fs::write(&f, "x").unwrap();
    let (code, _, err) = filo(&["mstack", &f.to_string_lossy(), "--", "true"]);
    assert_eq!(code, 1);
    assert!(err.contains("Connection refused"), "{err}");
    let (code, _, err) = filo(&["mstack", "--", "true"]);
    assert_eq!(code, 1);
    assert!(err.contains("FILO_STACK"), "{err}");
    // A stack that is not there: what is missing, and how to create it; said once.
    let gone = tmp.join("gone").to_string_lossy().into_owned();
    let (code, _, err) = filo(&["mstack", &gone, "--", "true"]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("{gone}: no named stack there"))
            && err.contains("filo stack serve -d")
            && err.matches("os error 2").count() == 1,
        "{err}"
    );
    let (code, _, err) = filo(&["stack", "ip", &gone, "addr"]);
    assert_eq!(code, 1);
    assert!(err.contains("no named stack there"), "{err}");
    // A command that does not exist.
    let (code, _, err) = filo(&["mstack", &sp, "--", "filo-no-such-command"]);
    assert_eq!(code, 127);
    assert!(err.contains("filo-no-such-command"), "{err}");
}

#[test]
fn serve_daemon_returns_once_the_stack_serves_and_reports_errors() {
    let tmp = TempDir::new("filo-nsd");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let s = tmp.join("s");
    let sp = s.to_string_lossy().into_owned();
    let pidfile = tmp.join("s.pid");
    let pf = pidfile.to_string_lossy().into_owned();
    // `serve -d ... && next-step`: the foreground process returns only once PATH serves, with
    // a readiness line naming the path and the address.
    let (code, out, err) = filo(&[
        "stack",
        "serve",
        "-d",
        "--pidfile",
        &pf,
        &sp,
        "--vnl",
        &sw.vnl(),
        "--ip",
        "10.66.0.7/24",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains(&format!("{sp} serves a stack on {}", sw.vnl()))
            && err.contains("10.66.0.7/24"),
        "{err}"
    );
    let (code, out, _) = filo(&["stack", "ip", &sp, "-br", "addr", "show", "vde0"]);
    assert_eq!(code, 0);
    assert!(out.contains("10.66.0.7/24"), "{out}");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SIGTERM stops the daemon, which removes its socket and pid file.
    assert!(Command::new("kill")
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success());
    assert!(wait_until(T, || !s.exists() && !pidfile.exists()));
    // A start-up error still reaches the terminal, with exit status 1.
    let missing = format!("vde://{}", tmp.join("nosw").display());
    let (code, _, err) = filo(&["stack", "serve", "-d", &sp, "--vnl", &missing]);
    assert_eq!(code, 1);
    assert!(err.contains("no VDE switch"), "{err}");
    assert!(!s.exists());
}

// ---- The README's "hard problems made easy" -------------------------------------------

/// Different IP addresses for different users of one host: each user may open only their
/// own stack, and the server sees each user's address.
#[test]
fn example_different_addresses_for_different_users() {
    let tmp = TempDir::new("filo-nst");
    run(Command::new("chmod").args(["755", &tmp.path().to_string_lossy()]));
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let vnl = sw.vnl();
    let _srv = peer_server(&vnl, "10.73.0.1/24", 7003, "srv");
    let (a, b) = (tmp.join("alice"), tmp.join("bob"));
    let _sa = serve(&a, &vnl, &["--ip", "10.73.0.11/24"]);
    let _sb = serve(&b, &vnl, &["--ip", "10.73.0.12/24"]);
    run(Command::new("chown").args(["65534", &a.to_string_lossy()]));
    run(Command::new("chown").args(["65533", &b.to_string_lossy()]));
    let (code, out) = mconnect(Some(65534), &a.to_string_lossy(), "10.73.0.1", 7003, None);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("peer 10.73.0.11"), "{out}");
    let (code, out) = mconnect(Some(65533), &b.to_string_lossy(), "10.73.0.1", 7003, None);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("peer 10.73.0.12"), "{out}");
    assert_eq!(
        mconnect(Some(65534), &b.to_string_lossy(), "10.73.0.1", 7003, None).0,
        13
    );
    assert_eq!(
        mconnect(Some(65533), &a.to_string_lossy(), "10.73.0.1", 7003, None).0,
        13
    );
}

/// Two servers on the same port, in two stacks; a client reaches each.
#[test]
fn example_two_servers_on_the_same_port() {
    require("curl");
    let tmp = TempDir::new("filo-nst");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let vnl = sw.vnl();
    let (s1, s2) = (tmp.join("s1"), tmp.join("s2"));
    let _a = serve(&s1, &vnl, &["--ip", "10.74.0.1/24"]);
    let _b = serve(&s2, &vnl, &["--ip", "10.74.0.2/24"]);
    let mut servers = Vec::new();
    for (s, name) in [(&s1, "one"), (&s2, "two")] {
        let d = tmp.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("who"), name).unwrap();
        let (sp, dp) = (
            s.to_string_lossy().into_owned(),
            d.to_string_lossy().into_owned(),
        );
        servers.push(bg(&[
            "mstack",
            &sp,
            "--",
            "python3",
            "-m",
            "http.server",
            "-d",
            &dp,
            "8000",
        ]));
    }
    for (ip, name) in [("10.74.0.1", "one"), ("10.74.0.2", "two")] {
        let url = format!("http://{ip}:8000/who");
        let ok = wait_until(T, || {
            let (code, out, _) = filo(&[
                "ns",
                "--ip",
                "10.74.0.9/24",
                &vnl,
                "--",
                "curl",
                "-s",
                "-m",
                "2",
                &url,
            ]);
            code == 0 && out == name
        });
        assert!(ok, "{url} did not answer {name}");
    }
}

/// One program's traffic goes through a separate (VPN-like) network while the rest of the
/// host uses its own.
#[test]
fn example_one_program_through_a_separate_network() {
    require("curl");
    let tmp = TempDir::new("filo-nst");
    let vpn = FiloSwitch::start(FILO, &tmp, "vpn", &[]);
    std::fs::write(tmp.join("secret"), "inside the vpn").unwrap();
    let dir = tmp.path().to_string_lossy().into_owned();
    let _inner = bg(&[
        "ns",
        "--ip",
        "10.75.0.1/24",
        &vpn.vnl(),
        "--",
        "python3",
        "-m",
        "http.server",
        "-d",
        &dir,
        "8000",
    ]);
    let s = tmp.join("vpnstack");
    let sp = s.to_string_lossy().into_owned();
    let _stack = serve(&s, &vpn.vnl(), &["--ip", "10.75.0.2/24"]);
    let ok = wait_until(T, || {
        let (code, out, _) = mstack_curl(&sp, "http://10.75.0.1:8000/secret");
        code == 0 && out == "inside the vpn"
    });
    assert!(
        ok,
        "the program in the stack did not reach the private network"
    );
    // The host's own network is the host's: loopback works as usual, and the private
    // server is not reachable from it.
    let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = host.local_addr().unwrap().port();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    // curl exits 7 when the connection is refused: the stack's own loopback has no listener.
    // On the host the same connection succeeds (and then times out waiting for HTTP: 28).
    let url = format!("http://127.0.0.1:{port}/");
    let (code, out, err) = filo(&["mstack", &sp, "--", "curl", "-s", "-m", "2", &url]);
    assert_eq!(code, 7, "the stack saw the host's loopback: {out}{err}");
    let host_code = Command::new("curl")
        .args(["-s", "-m", "1", &url])
        .status()
        .unwrap()
        .code();
    assert_eq!(host_code, Some(28), "the host's listener should accept");
    let mut c = Command::new("curl");
    c.args([
        "-s",
        "-m",
        "2",
        "--noproxy",
        "*",
        "http://10.75.0.1:8000/secret",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let (_, out, _) = Proc::spawn(&mut c).output(T);
    assert_ne!(out, "inside the vpn");
}

/// Per-process routing: the same destination, two routes, chosen by which stack a process
/// runs in.
#[test]
fn example_per_process_routing() {
    require("curl");
    let tmp = TempDir::new("filo-nst");
    let (net_a, net_b) = (
        FiloSwitch::start(FILO, &tmp, "a", &[]),
        FiloSwitch::start(FILO, &tmp, "b", &[]),
    );
    let mut routers = Vec::new();
    for (sw, gw, name) in [
        (&net_a, "10.76.1.1/24", "via-a"),
        (&net_b, "10.76.2.1/24", "via-b"),
    ] {
        let d = tmp.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("who"), name).unwrap();
        // Each network's router owns 203.0.113.5 and serves its own answer there.
        let dp = d.to_string_lossy().into_owned();
        routers.push(bg(&[
            "ns",
            "--ip",
            gw,
            "--ip",
            "203.0.113.5/32@vde0",
            &sw.vnl(),
            "--",
            "python3",
            "-m",
            "http.server",
            "-d",
            &dp,
            "8000",
        ]));
    }
    let (sa, sb) = (tmp.join("sa"), tmp.join("sb"));
    let _a = serve(
        &sa,
        &net_a.vnl(),
        &["--ip", "10.76.1.2/24", "--gw", "10.76.1.1"],
    );
    let _b = serve(
        &sb,
        &net_b.vnl(),
        &["--ip", "10.76.2.2/24", "--gw", "10.76.2.1"],
    );
    for (s, name) in [(&sa, "via-a"), (&sb, "via-b")] {
        let sp = s.to_string_lossy().into_owned();
        let ok = wait_until(T, || {
            let (code, out, _) = mstack_curl(&sp, "http://203.0.113.5:8000/who");
            code == 0 && out == name
        });
        assert!(ok, "{name}: wrong route");
        let (_, out, _) = filo(&["stack", "ip", &sp, "route", "get", "203.0.113.5"]);
        assert!(
            out.contains(if name == "via-a" {
                "via 10.76.1.1"
            } else {
                "via 10.76.2.1"
            }),
            "{out}"
        );
    }
}

/// A named stack configured by DHCP (dnsmasq in a namespace on the same switch).
#[test]
fn serve_with_dhcp_from_dnsmasq() {
    require("dnsmasq");
    let tmp = TempDir::new("filo-nst");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let vnl = sw.vnl();
    let dnsmasq = dnsmasq_dhcp(
        &tmp.join("leases"),
        "10.77.0.50,10.77.0.59",
        &["option:router,10.77.0.1"],
    );
    let mut args = vec!["ns", "--ip", "10.77.0.1/24", &vnl, "--"];
    args.extend(dnsmasq.iter().map(String::as_str));
    let _dnsmasq = Polite(bg(&args));
    let s = tmp.join("s");
    let sp = s.to_string_lossy().into_owned();
    let _stack = serve(&s, &vnl, &["--dhcp"]);
    let (_, out, _) = filo(&["stack", "ip", &sp, "-4", "-br", "addr", "show", "vde0"]);
    assert!(
        out.contains("10.77.0.5") && out.contains("/24"),
        "no lease: {out}"
    );
    let (_, out, _) = filo(&["stack", "ip", &sp, "route", "show", "default"]);
    assert!(out.contains("default via 10.77.0.1"), "{out}");
}

/// An ordinary user serves a stack and runs programs in it (user namespaces); with a VNL the
/// tap needs /dev/net/tun access, skipped with the reason when the host refuses it.
#[test]
fn unprivileged_user_serves_and_uses_a_stack_or_skip_with_reason() {
    let tmp = TempDir::new("filo-nst");
    let bin = copy_for_everyone(&tmp, FILO);
    // nobody creates the stack's socket here.
    run(Command::new("chmod").args(["777", &tmp.path().to_string_lossy()]));
    let nobody = |args: &[&str]| {
        let mut c = as_nobody(&bin);
        c.args(args).env_remove("FILO_STACK").stdin(Stdio::null());
        c
    };
    let s = tmp.join("s");
    let sp = s.to_string_lossy().into_owned();
    let mut server = Proc::spawn(nobody(&["stack", "serve", &sp]).stdout(Stdio::null()));
    if !wait_until(T, || s.exists()) || server.child.try_wait().unwrap().is_some() {
        let (_, _, err) = server.output(T);
        skip(&format!("unprivileged named stack: {err}"));
        assert!(err.contains("user namespace"), "unclear reason: {err}");
        return;
    }
    let (st, out, err) = Proc::spawn(&mut nobody(&[
        "mstack",
        &sp,
        "--",
        "sh",
        "-c",
        "id -u; ip -br link",
    ]))
    .output(T);
    assert!(st.success(), "{err}");
    assert!(out.starts_with("0\nlo "), "{out}");
    let (st, _, err) = Proc::spawn(&mut nobody(&[
        "stack",
        "ip",
        &sp,
        "addr",
        "add",
        "10.78.0.1/8",
        "dev",
        "lo",
    ]))
    .output(T);
    assert!(st.success(), "{err}");
    // Root sees the same stack.
    let (_, out, _) = filo(&["stack", "ip", &sp, "-br", "addr"]);
    assert!(out.contains("10.78.0.1/8"), "{out}");
    assert_eq!(server.terminate(T).code(), Some(0));
    assert!(!s.exists());
    // With a VNL: a tap, if the host lets ordinary users open /dev/net/tun.
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &["--mode", "777"]);
    let vnl = sw.vnl();
    let mut server =
        Proc::spawn(nobody(&["stack", "serve", &sp, "--vnl", &vnl]).stdout(Stdio::null()));
    // PATH appears at bind, before the stack (and its tap) is built: wait until the stack
    // answers, or the server gave up.
    let answers = || {
        Proc::spawn(&mut nobody(&["mstack", &sp, "--", "true"]))
            .output(T)
            .0
            .success()
    };
    assert!(wait_until(T, || server.child.try_wait().unwrap().is_some()
        || answers()));
    if server.child.try_wait().unwrap().is_some() {
        let (_, _, err) = server.output(T);
        skip(&format!("unprivileged stack with a tap: {err}"));
        assert!(err.contains("/dev/net/tun"), "unclear reason: {err}");
        assert!(!s.exists());
        return;
    }
    let (st, out, err) = Proc::spawn(&mut nobody(&[
        "mstack", &sp, "--", "ip", "-br", "link", "show", "vde0",
    ]))
    .output(T);
    assert!(st.success() && out.contains("vde0"), "{out} {err}");
    assert_eq!(server.terminate(T).code(), Some(0));
}
