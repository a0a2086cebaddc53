//! `filo ns` with real programs: ping, iperf3, curl against python's http.server, ip,
//! dnsmasq (DHCP), radvd (SLAAC); exit codes, signals and bad input.

use std::process::{Command, Stdio};
use std::time::Duration;

use filo_test_support::*;

const FILO: &str = env!("CARGO_BIN_EXE_filo");
const T: Duration = Duration::from_secs(20);

fn ns(args: &[&str]) -> Command {
    ns_from(Command::new(FILO), args)
}

/// `filo ns ARGS` from `c`, a command running filo (in a test's namespace, say).
fn ns_from(mut c: Command, args: &[&str]) -> Command {
    c.arg("ns")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Runs `filo ns ARGS` to completion: (exit code, stdout, stderr).
fn ns_out(args: &[&str]) -> (i32, String, String) {
    let (status, out, err) = Proc::spawn(&mut ns(args)).output(T);
    (status.code().unwrap_or(-1), out, err)
}

/// A `filo ns` running in the background (killed on drop).
fn ns_bg(args: &[&str]) -> Proc {
    let mut c = Command::new(FILO);
    c.arg("ns")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Proc::spawn(&mut c)
}

fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Waits until the ns at `ip` answers a ping from a second namespace on `vnl`.
fn wait_reachable(vnl: &str, ip: &str, me: &str) {
    let ok = wait_until(T, || {
        ns_out(&["--ip", me, vnl, "--", "ping", "-c1", "-W1", ip]).0 == 0
    });
    assert!(ok, "{ip} not reachable on {vnl}");
}

#[test]
fn two_namespaces_on_a_filo_switch_ping_and_move_data_with_iperf3() {
    require("ping");
    require("iperf3");
    let tmp = TempDir::new("filo-ns");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let vnl = sw.vnl();
    let _server = ns_bg(&["--ip", "10.61.0.1/24", &vnl, "--", "iperf3", "-s", "-1"]);
    wait_reachable(&vnl, "10.61.0.1", "10.61.0.3/24");
    let (code, out, err) = ns_out(&[
        "--ip",
        "10.61.0.2/24",
        &vnl,
        "--",
        "iperf3",
        "-c",
        "10.61.0.1",
        "-t",
        "2",
        "-J",
    ]);
    assert_eq!(code, 0, "iperf3 failed: {out} {err}");
    let bytes: f64 = out
        .split("\"sum_received\"")
        .nth(1)
        .and_then(|s| s.split("\"bytes\":").nth(1))
        .and_then(|s| s.split([',', '\n']).next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(bytes > 1e6, "iperf3 moved only {bytes} bytes: {out}");
}

#[test]
fn curl_fetches_from_python_http_server_with_hostname_and_private_dns() {
    require("curl");
    require("python3");
    let tmp = TempDir::new("filo-ns");
    std::fs::write(tmp.join("hello.txt"), "hello from the namespace\n").unwrap();
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let vnl = sw.vnl();
    let dir = tmp.path().to_string_lossy().into_owned();
    let _server = ns_bg(&[
        "--ip",
        "10.62.0.1/24",
        &vnl,
        "--",
        "python3",
        "-m",
        "http.server",
        "-b",
        "10.62.0.1",
        "-d",
        &dir,
        "8000",
    ]);
    let ok = wait_until(T, || {
        let (code, out, _) = ns_out(&[
            "--ip",
            "10.62.0.2/24",
            &vnl,
            "--",
            "curl",
            "-s",
            "-m",
            "2",
            "http://10.62.0.1:8000/hello.txt",
        ]);
        code == 0 && out == "hello from the namespace\n"
    });
    assert!(ok, "curl did not fetch the file");
    let (code, out, err) = ns_out(&[
        "--ip",
        "10.62.0.3/24",
        "--gw",
        "10.62.0.1",
        "--hostname",
        "filo-test-host",
        "--dns",
        "10.62.0.1",
        &vnl,
        "--",
        "sh",
        "-c",
        "hostname; cat /etc/resolv.conf; ip route show default; ip -br link show lo",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("filo-test-host\n"), "{out}");
    assert!(out.contains("nameserver 10.62.0.1"), "{out}");
    assert!(out.contains("default via 10.62.0.1 dev vde0"), "{out}");
    assert!(out.contains("UP") || out.contains("UNKNOWN"), "{out}");
    // The host's files are untouched and no temporary file is left.
    assert!(!std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .contains("nameserver 10.62.0.1"));
    assert!(!std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with(".filo-resolv")));
}

#[test]
fn exit_code_is_the_commands() {
    let (code, _, _) = ns_out(&["--", "sh", "-c", "exit 7"]);
    assert_eq!(code, 7);
    let (code, _, _) = ns_out(&["--", "true"]);
    assert_eq!(code, 0);
    let (code, _, _) = ns_out(&["--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(code, 128 + 15);
    let (code, _, err) = ns_out(&["--", "filo-no-such-command"]);
    assert_eq!(code, 127);
    assert!(err.contains("cannot run filo-no-such-command"), "{err}");
    // Only lo in a namespace without VNLs.
    let (code, out, _) = ns_out(&["--", "ip", "-br", "link"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 1, "{out}");
}

#[test]
fn signals_are_forwarded_and_a_killed_command_is_reported() {
    let tmp = TempDir::new("filo-ns");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    // SIGTERM to filo ns reaches the command.
    let mut p = ns_bg(&[&sw.vnl(), "--", "sleep", "30"]);
    assert!(wait_until(T, || !children_of(p.pid()).is_empty()));
    let child = children_of(p.pid())[0];
    let status = p.terminate(T);
    assert_eq!(status.code(), Some(128 + 15));
    assert!(
        !std::path::Path::new(&format!("/proc/{child}")).exists() || {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .map_or(true, |s| s.contains(") Z"))
        }
    );
    // The command killed from outside: 128 + 9.
    let mut p = ns_bg(&[&sw.vnl(), "--", "sleep", "30"]);
    assert!(wait_until(T, || !children_of(p.pid()).is_empty()));
    let child = children_of(p.pid())[0];
    run(Command::new("kill").args(["-KILL", &child.to_string()]));
    assert_eq!(p.wait_exit(T).code(), Some(128 + 9));
    // filo ns killed outright: the command goes too, and the switch sees its plugs leave.
    let mut p = ns_bg(&[&sw.vnl(), "--", "sleep", "30"]);
    assert!(wait_until(T, || !children_of(p.pid()).is_empty()));
    let child = children_of(p.pid())[0];
    p.child.kill().unwrap();
    p.wait_exit(T);
    assert!(wait_until(T, || !std::path::Path::new(&format!(
        "/proc/{child}"
    ))
    .exists()));
    assert!(
        wait_until(T, || sw.endpoints() == 0),
        "plugs left on the switch"
    );
}

#[test]
fn bad_input_is_a_clear_error_and_leaves_nothing() {
    let tmp = TempDir::new("filo-ns");
    let missing = format!("vde://{}", tmp.join("nosw").display());
    let (code, _, err) = ns_out(&[&missing, "--", "true"]);
    assert_eq!(code, 1);
    assert!(err.contains("no VDE switch"), "{err}");
    let (code, _, err) = ns_out(&["nosuchscheme://x", "--", "true"]);
    assert_eq!(code, 1);
    assert!(!err.is_empty());
    let (code, _, err) = ns_out(&["--ip", "10.0.0.300/24", "--", "true"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = ns_out(&["--ip", "10.63.0.1/24", "--", "true"]);
    assert_eq!(code, 1);
    assert!(err.contains("no interface"), "{err}");
    // Flags are checked as the --conf items they stand for, as usage errors (like --ip).
    let (code, _, err) = ns_out(&["--hostname", "a/b", "--", "true"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("bad configuration item `hostname=a/b`"),
        "{err}"
    );
    // A switch that exists: after the command, no plug remains on it.
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let (code, _, _) = ns_out(&[&sw.vnl(), &sw.vnl(), "--", "ip", "link", "show", "vde1"]);
    assert_eq!(code, 0);
    assert!(wait_until(T, || sw.endpoints() == 0));
    let (code, _, _) = ns_out(&[&sw.vnl(), "--", "filo-no-such-command"]);
    assert_eq!(code, 127);
    assert!(wait_until(T, || sw.endpoints() == 0));
}

#[test]
fn unprivileged_user_or_skip_with_reason() {
    let tmp = TempDir::new("filo-ns");
    // The test binary lives under a root-only target dir on some hosts: copy it out.
    let bin = copy_for_everyone(&tmp, FILO);
    let nobody = |args: &[&str]| {
        let mut c = as_nobody(&bin);
        c.arg("ns").args(args).stdin(Stdio::null());
        let (s, o, e) = Proc::spawn(&mut c).output(T);
        (s.code().unwrap_or(-1), o, e)
    };
    // Without a VNL no tap is needed: a user namespace is enough.
    let (code, out, err) = nobody(&["--", "sh", "-c", "id -u; ip -br link"]);
    if code != 0 {
        skip(&format!("unprivileged filo ns: {err}"));
        assert!(err.contains("user namespace"), "unclear reason: {err}");
        return;
    }
    assert!(out.starts_with("0\n"), "{out}");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &["--mode", "777"]);
    let (code, out, err) = nobody(&[&sw.vnl(), "--", "ip", "-br", "link", "show", "vde0"]);
    if code != 0 {
        skip(&format!("unprivileged taps: {err}"));
        assert!(err.contains("/dev/net/tun"), "unclear reason: {err}");
        return;
    }
    assert!(out.contains("vde0"), "{out}");
}

#[test]
fn dhcp_from_dnsmasq_on_the_same_switch() {
    require("dnsmasq");
    let tmp = TempDir::new("filo-ns");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let vnl = sw.vnl();
    let dnsmasq = dnsmasq_dhcp(
        &tmp.join("leases"),
        "10.64.0.50,10.64.0.59",
        &["option:router,10.64.0.1", "option:dns-server,10.64.0.53"],
    );
    let mut args = vec!["--ip", "10.64.0.1/24", &vnl, "--"];
    args.extend(dnsmasq.iter().map(String::as_str));
    let _dnsmasq = Polite(ns_bg(&args));
    wait_reachable(&vnl, "10.64.0.1", "10.64.0.2/24");
    let (code, out, err) = ns_out(&[
        "--dhcp",
        &vnl,
        "--",
        "sh",
        "-c",
        "ip -4 -br addr show vde0; ip route show default; cat /etc/resolv.conf",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("10.64.0.5"), "no lease address: {out}");
    assert!(out.contains("/24"), "{out}");
    assert!(out.contains("default via 10.64.0.1 dev vde0"), "{out}");
    assert!(out.contains("nameserver 10.64.0.53"), "{out}");
}

#[test]
fn slaac_from_radvd_on_the_same_switch() {
    require("radvd");
    let tmp = TempDir::new("filo-ns");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let conf = tmp.join("radvd.conf");
    std::fs::write(
        &conf,
        "interface vde0 { AdvSendAdvert on; MinRtrAdvInterval 3; MaxRtrAdvInterval 4;\n prefix fd42:64::/64 { AdvOnLink on; AdvAutonomous on; }; };\n",
    )
    .unwrap();
    let pid = tmp.join("radvd.pid").to_string_lossy().into_owned();
    let script = format!(
        "sysctl -qw net.ipv6.conf.all.forwarding=1; exec radvd -n -C {} -p {pid} -u root",
        conf.display()
    );
    let _radvd = Polite(ns_bg(&[
        "--ip",
        "fd42:64::1/64",
        &sw.vnl(),
        "--",
        "sh",
        "-c",
        &script,
    ]));
    let (code, out, err) = ns_out(&[
        "--slaac",
        &sw.vnl(),
        "--",
        "sh",
        "-c",
        // No waiting here: filo ns starts the command once the address is there.
        "ip -6 -br addr show vde0 scope global",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("fd42:64::"), "no SLAAC address: {out}");
}

#[test]
fn slaac_without_a_router_is_a_clear_error_after_the_timeout() {
    let tmp = TempDir::new("filo-ns");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let (code, out, err) = ns_out(&[
        "--slaac",
        "--conf-timeout",
        "2",
        &sw.vnl(),
        "--",
        "echo",
        "started",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(!out.contains("started"), "the command ran: {out}");
    assert!(
        err.contains("no SLAAC address on vde0 within 2 s") && err.contains("radvd"),
        "{err}"
    );
}

/// `FragCreates` from the IP line of `/proc/net/snmp` in `u`: datagrams the kernel fragmented.
fn frag_creates(u: &Netns) -> u64 {
    let snmp = u.exec_ok(&["cat", "/proc/net/snmp"]);
    let mut ip = snmp.lines().filter(|l| l.starts_with("Ip:"));
    let (names, values) = (ip.next().unwrap(), ip.next().unwrap());
    let i = names.split_whitespace().position(|n| n == "FragCreates");
    let v = values.split_whitespace().nth(i.unwrap()).unwrap();
    v.parse().unwrap()
}

#[test]
fn vxvde_interfaces_get_the_inner_mtu_and_transfers_are_not_fragmented_underneath() {
    require("curl");
    require("python3");
    // Two hosts on a 1500-byte underlay; vxvde:// between them costs 50 bytes a frame.
    let u1 = Netns::new("filo-nsu1");
    let u2 = Netns::new("filo-nsu2");
    let (v1, v2) = veth(&u1, "10.98.0.1/24", &u2, "10.98.0.2/24");
    u1.exec_ok(&["ip", "route", "add", "224.0.0.0/4", "dev", &v1]);
    u2.exec_ok(&["ip", "route", "add", "224.0.0.0/4", "dev", &v2]);
    let vnl = "vxvde://239.0.0.1/vni=8";
    let filo_ns = |u: &Netns, args: &[&str]| Proc::spawn(&mut ns_from(u.command(FILO), args));
    // `ip link show vde0` in a filo ns with `args`.
    let link = |args: &[&str]| {
        let mut args = args.to_vec();
        args.extend(["--", "ip", "-o", "link", "show", "vde0"]);
        let (st, out, err) = filo_ns(&u1, &args).output(T);
        assert!(st.success(), "{err}");
        out
    };
    let out = link(&[vnl]);
    assert!(out.contains("mtu 1450 "), "{out}");
    // mtu= is kept; an if= interface with a smaller MTU lowers the inner one.
    let out = link(&["--mtu", "1400", vnl]);
    assert!(out.contains("mtu 1400 "), "{out}");
    u1.exec_ok(&["ip", "link", "set", &v1, "mtu", "1400"]);
    let out = link(&[&format!("{vnl}/if={v1}")]);
    u1.exec_ok(&["ip", "link", "set", &v1, "mtu", "1500"]);
    assert!(out.contains("mtu 1350 "), "{out}");

    // 2 MiB from python's http.server behind one filo ns to curl behind another, then from a
    // filo stack: every datagram on the underlay fits its MTU. The client's tap keeps 1500, so
    // its MSS does not hide what the servers chose.
    let tmp = TempDir::new("filo-nsu");
    let blob: Vec<u8> = (0..2u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    std::fs::write(tmp.join("blob"), &blob).unwrap();
    let dir = tmp.path().to_string_lossy().into_owned();
    let py = [
        "python3",
        "-m",
        "http.server",
        "-b",
        "10.99.0.1",
        "-d",
        &dir,
        "8000",
    ];
    let _py = filo_ns(
        &u1,
        &[&["--ip", "10.99.0.1/24", vnl, "--"][..], &py].concat(),
    );
    let mut c = u1.command(FILO);
    c.args(["stack", "http-serve", "--vnl", vnl])
        .args(["--conf", "eth,ip=10.99.0.3/24", "-p", "8080", &dir])
        .stdout(Stdio::null());
    let _stack = Proc::spawn(&mut c);
    let got = tmp.join("got");
    let got_s = got.to_string_lossy().into_owned();
    for url in ["http://10.99.0.1:8000/blob", "http://10.99.0.3:8080/blob"] {
        let _ = std::fs::remove_file(&got);
        let frags = frag_creates(&u1);
        let ok = wait_until(T, || {
            let client = ["--ip", "10.99.0.2/24", "--mtu", "1500", vnl, "--", "curl"];
            let curl = ["-sf", "-m", "10", "-o", &got_s, url];
            let mut p = filo_ns(&u2, &[&client[..], &curl].concat());
            p.wait_exit(T).success()
        });
        assert!(ok, "curl {url} failed");
        assert!(
            std::fs::read(&got).unwrap() == blob,
            "{url}: content differs"
        );
        let frags = frag_creates(&u1) - frags;
        assert_eq!(frags, 0, "{url}: the underlay fragmented {frags} datagrams");
    }
}

/// Processes whose command line has `arg` (a unique argument such as `20.123` to `sleep`).
fn procs_with_arg(arg: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|&b| b == 0).any(|a| a == arg.as_bytes()))
        })
        .collect()
}

/// Kills the processes a failed test left (ours: found by their unique argument).
fn kill_leftovers(arg: &str) -> Vec<u32> {
    let left = procs_with_arg(arg);
    for pid in &left {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    left
}

#[test]
fn nothing_the_command_started_outlives_it() {
    let arg = format!("60.{}", std::process::id());
    // The sleep keeps no pipe of ours open, so filo ns returns as soon as sh exits.
    let script = format!("sleep {arg} >/dev/null 2>&1 & exit 3");
    let (code, _, err) = ns_out(&["--", "sh", "-c", &script]);
    assert_eq!(code, 3, "{err}");
    let gone = wait_until(Duration::from_secs(5), || procs_with_arg(&arg).is_empty());
    let left = kill_leftovers(&arg);
    assert!(gone, "left behind: {left:?}");
    // The command's own status and signals still come back as before.
    let (code, _, _) = ns_out(&["--", "sh", "-c", "sleep 0.1 & kill -TERM $$"]);
    assert_eq!(code, 128 + 15);
}

#[test]
fn kill_9_of_filo_ns_takes_the_grandchildren_with_it() {
    let arg = format!("61.{}", std::process::id());
    let script = format!("(sleep {arg} &); sleep {arg} & sleep {arg}");
    let mut p = ns_bg(&["--", "sh", "-c", &script]);
    let started = wait_until(T, || procs_with_arg(&arg).len() == 3);
    p.child.kill().unwrap();
    p.wait_exit(T);
    let gone = wait_until(Duration::from_secs(5), || procs_with_arg(&arg).is_empty());
    let left = kill_leftovers(&arg);
    assert!(started, "the command did not start its sleeps");
    assert!(gone, "left behind: {left:?}");
}
