//! Bad input gets a clear error or a clean exit — never a hang or a panic.

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use filo_test_support::*;

const FILO: &str = env!("CARGO_BIN_EXE_filo");

/// Runs filo with `args` and stdin closed; returns (exit code, stderr).
fn filo(args: &[&str]) -> (i32, String) {
    let p = Proc::spawn(
        Command::new(FILO)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let (status, _, err) = p.output(Duration::from_secs(10));
    assert!(!err.contains("panicked"), "filo panicked: {err}");
    (status.code().unwrap_or(-1), err)
}

#[test]
fn malformed_vnls_are_refused_with_the_accepted_syntax() {
    let cases: &[(&str, &[&str])] = &[
        ("bogus://x", &["unknown", "bogus"]),
        ("VDE:///tmp/x", &["VDE"]),
        ("vde:///tmp/sw[port=3", &["]"]),
        ("vde:///tmp/sw[3]x", &["x"]),
        (
            "vde:///tmp/sw[prot=3]",
            &["prot", "accepted: port, portgroup, group, mode"],
        ),
        ("vde:///tmp/sw[port=abc]", &["port", "abc"]),
        ("vde:///tmp/sw[mode=99]", &["mode", "octal"]),
        ("vxvde://239.0.0.1/vni", &["vni"]),
        ("vxvde://239.0.0.1/v4=1", &["v4"]),
        ("vxvde://not-an-ip", &["not an IP address"]),
        ("vxvde://239.0.0.1/ttl=0", &["ttl"]),
        ("vxvde://10.0.0.1", &["multicast"]),
        ("vxlan://239.0.0.1/vni=99999999", &["vni"]),
        ("vde:///x[%zz]", &["%"]),
        ("udp://2000", &["expected udp://"]),
        ("udp://x->127.0.0.1:1", &["expected udp://"]),
        ("seqpacket://abc", &["file descriptor"]),
        ("tap://this-name-is-far-too-long", &["tap interface name"]),
        ("ptp://", &["ptp:// needs a socket path"]),
        ("cmd://", &["cmd:// needs a command"]),
        ("vlan://3/untag=4/trunk{vde:///tmp/sw}", &["not available"]),
    ];
    for (vnl, needles) in cases {
        let start = Instant::now();
        let (code, err) = filo(&["plug", vnl, "null://"]);
        assert_eq!(code, 1, "{vnl}: {err}");
        for n in *needles {
            assert!(err.contains(n), "{vnl}: expected {n:?} in {err:?}");
        }
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{vnl}: one line expected: {err}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{vnl} took {:?}",
            start.elapsed()
        );
    }
}

#[test]
fn bad_command_lines_are_usage_errors() {
    for (args, needle) in [
        (&["plug", "a", "b", "c"][..], "too many arguments"),
        (
            &["plug", "null://", "="][..],
            "must be followed by a command",
        ),
        (&["plug", "-m", "999", "null://", "null://"][..], "octal"),
        (
            &["plug", "--timeout", "-1", "null://", "null://"][..],
            "timeout",
        ),
        (
            &["plug", "-d", "null://"][..],
            "--daemon needs the cable form",
        ),
        (
            &["plug", "null://", "=", "/nonexistent/program"][..],
            "cannot run",
        ),
    ] {
        let (code, err) = filo(args);
        assert_ne!(code, 0, "{args:?}");
        assert!(
            err.contains(needle),
            "{args:?}: expected {needle:?} in {err}"
        );
    }
}

#[test]
fn a_path_that_is_no_switch_is_named_in_the_error() {
    let tmp = TempDir::new("filo-ns");
    let dir = tmp.join("nothing");
    let (code, err) = filo(&["plug", dir.to_str().unwrap(), "null://"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no VDE switch there") && err.contains(dir.to_str().unwrap()),
        "{err}"
    );
}

#[test]
fn a_switch_that_accepts_but_never_answers_times_out() {
    let tmp = TempDir::new("filo-mute");
    let dir = tmp.join("sw");
    std::fs::create_dir(&dir).unwrap();
    let listener = UnixListener::bind(dir.join("ctl")).unwrap();
    let held = std::thread::spawn(move || {
        let conn = listener.accept().map(|(s, _)| s);
        std::thread::sleep(Duration::from_secs(3));
        drop(conn);
    });
    let start = Instant::now();
    let (code, err) = filo(&["plug", "--timeout", "1", dir.to_str().unwrap(), "null://"]);
    assert_eq!(code, 1);
    assert!(err.contains("did not answer within"), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
    held.join().unwrap();
    // Our bound data socket was removed again.
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| n != "ctl")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_switch_that_closes_without_reply_is_a_refusal() {
    let tmp = TempDir::new("filo-refuse");
    let dir = tmp.join("sw");
    std::fs::create_dir(&dir).unwrap();
    let listener = UnixListener::bind(dir.join("ctl")).unwrap();
    let t = std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 256];
            let _ = std::io::Read::read(&mut s, &mut buf);
        }
    });
    let (code, err) = filo(&["plug", &format!("{}[7]", dir.display()), "null://"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("closed the connection without a reply") && err.contains("port 7"),
        "{err}"
    );
    t.join().unwrap();
}

#[test]
fn a_port_beyond_the_debian_switch_is_an_error_not_a_hang() {
    // Debian's vde_switch neither answers nor closes for a port >= numports: our timeout fires.
    let tmp = TempDir::new("filo-p99");
    let sw = DebSwitch::start(&tmp, "sw");
    let start = Instant::now();
    let (code, err) = filo(&[
        "plug",
        "--timeout",
        "1",
        &format!("{}[99]", sw.vnl()),
        "null://",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("did not answer") || err.contains("without a reply"),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(4));
}

fn stream_filo(vnl: &str) -> Proc {
    Proc::spawn(
        Command::new(FILO)
            .args(["plug", vnl])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )
}

#[test]
fn an_oversized_stream_record_is_a_protocol_error() {
    let mut p = stream_filo("null://");
    let mut stdin = p.child.stdin.take().unwrap();
    stdin.write_all(&[0xff, 0xff, 1, 2, 3, 4]).unwrap();
    let (status, _, err) = p.output(Duration::from_secs(5));
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("exceeds the maximum of 9236"), "{err}");
    drop(stdin);
}

#[test]
fn a_truncated_stream_record_ends_cleanly_with_a_reason() {
    let mut p = stream_filo("null://");
    let mut stdin = p.child.stdin.take().unwrap();
    stdin.write_all(&stream_record(&[0x11; 60])).unwrap();
    stdin.write_all(&[0, 100, 1, 2, 3]).unwrap();
    drop(stdin);
    let (status, _, err) = p.output(Duration::from_secs(5));
    assert!(status.success(), "{err}");
    assert!(err.contains("middle of a record (3 of 100 bytes"), "{err}");
}

#[test]
fn a_command_that_exits_ends_the_plug_cleanly() {
    let (code, err) = filo(&["plug", "null://", "=", "sh", "-c", "exit 0"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("end of stream"), "{err}");
}

#[test]
fn sigterm_stops_a_cable_and_removes_its_sockets_and_pidfile() {
    let tmp = TempDir::new("filo-sig");
    let link = tmp.join("link");
    let pidfile = tmp.join("plug.pid");
    let mut p = Proc::spawn(
        Command::new(FILO)
            .args([
                "plug",
                "-p",
                pidfile.to_str().unwrap(),
                &format!("ptp://{}", link.display()),
                "null://",
            ])
            .stdin(Stdio::null())
            .stderr(Stdio::piped()),
    );
    // The pid file appears before its content: wait for the number.
    let pid_text = || {
        std::fs::read_to_string(&pidfile)
            .map(|t| t.trim().to_string())
            .unwrap_or_default()
    };
    assert!(wait_until(Duration::from_secs(5), || link.exists()
        && !pid_text().is_empty()));
    assert_eq!(pid_text(), p.pid().to_string());
    let status = p.terminate(Duration::from_secs(5));
    assert!(status.success(), "{status}");
    assert!(
        !pidfile.exists() && !link.exists(),
        "pidfile or socket left behind"
    );
}

#[test]
fn daemon_mode_returns_at_once_and_leaves_a_pidfile() {
    let tmp = TempDir::new("filo-daemon");
    let pidfile = tmp.join("plug.pid");
    let link = tmp.join("link");
    let status = Command::new(FILO)
        .args([
            "plug",
            "-d",
            "-p",
            pidfile.to_str().unwrap(),
            &format!("ptp://{}", link.display()),
            "null://",
        ])
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    // The pid file appears before its content: wait for a whole number.
    let read_pid = || {
        std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
    };
    assert!(wait_until(Duration::from_secs(5), || read_pid().is_some()));
    let pid = read_pid().unwrap_or_default();
    // Whatever happens below, the daemon does not outlive the test.
    struct KillOnDrop(i32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            // The pid is our daemon's (from its pid file).
            filo_test_support::sys::kill(self.0, libc::SIGKILL);
        }
    }
    let _guard = KillOnDrop(pid);
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "daemon is running"
    );
    // Signalling the daemon we just started (its pid is in our pid file).
    filo_test_support::sys::kill(pid, libc::SIGTERM);
    assert!(
        wait_until(Duration::from_secs(5), || !pidfile.exists()),
        "pid file removed on exit"
    );
    assert!(!link.exists());
}

/// Every error names its VNL (or switch directory) once, and the cause once: the exact
/// messages, for each module's open failure.
#[test]
fn open_errors_name_each_thing_once() {
    let tmp = TempDir::new("filo-once");
    let missing = tmp.join("missing");
    let ptp = format!("ptp://{}/link", missing.display());
    let vde = missing.display().to_string();
    let syntax = "udp://[SRC_ADDR:]SRC_PORT->DST_HOST:DST_PORT (IPv6 addresses in brackets)";
    let cases = [
        (
            "udp://x".to_string(),
            format!("filo: udp://x: missing \"->\"; expected {syntax}"),
        ),
        (
            // A TEST-NET-1 address, assigned to no interface here.
            "udp://192.0.2.1:1000->127.0.0.1:5".to_string(),
            "filo: udp://192.0.2.1:1000->127.0.0.1:5: cannot bind 192.0.2.1:1000: Cannot assign requested address (os error 99)".to_string(),
        ),
        (
            "tap://this-name-is-far-too-long".to_string(),
            "filo: tap://this-name-is-far-too-long: tap interface name \"this-name-is-far-too-long\" is invalid: expected 1 to 15 characters without '/', spaces or NUL".to_string(),
        ),
        (
            "cmd://filo-no-such-program".to_string(),
            "filo: cmd://filo-no-such-program: cannot run \"filo-no-such-program\": No such file or directory (os error 2)".to_string(),
        ),
        (
            ptp.clone(),
            format!("filo: {ptp}: cannot bind the first endpoint: No such file or directory (os error 2)"),
        ),
        (
            format!("vde://{vde}"),
            format!("filo: {vde}: no VDE switch there ({vde}/ctl does not exist)"),
        ),
        (
            format!("switch://{vde}[mode=999]"),
            format!(
                "filo: switch://: bad value \"999\" for option \"mode\" in \"switch://{vde}[mode=999]\": expected an octal mode such as 0660; syntax: switch://[PATH][mode=OCTAL/dirmode=OCTAL/grp=GROUP/hashsize=N/hashseed=N/expiretime=SECS]"
            ),
        ),
    ];
    for (vnl, expected) in &cases {
        let (code, err) = filo(&["plug", vnl, "null://"]);
        assert_eq!(code, 1, "{vnl}: {err}");
        assert_eq!(err.trim_end(), expected, "{vnl}");
    }
}

/// A control socket the user may not connect to is a permission problem, not a missing
/// switch.
#[test]
fn a_control_socket_without_permission_says_so() {
    require("setpriv");
    let tmp = TempDir::new("filo-denied");
    let dir = tmp.join("sw");
    std::fs::create_dir(&dir).unwrap();
    for d in [tmp.path(), dir.as_path()] {
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let ctl = dir.join("ctl");
    let _listener = UnixListener::bind(&ctl).unwrap();
    std::fs::set_permissions(&ctl, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    let p = Proc::spawn(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", FILO])
            .args(["plug", &format!("vde://{}", dir.display()), "null://"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let (status, _, err) = p.output(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(
        err.trim_end(),
        format!("filo: permission denied connecting to {}", ctl.display())
    );
}

#[test]
fn tap_errors_say_what_really_happened() {
    // lo is no tap: EINVAL, not a missing capability (we are root here).
    let (code, err) = filo(&["plug", "tap://lo", "null://"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("lo exists and is not a tap"), "{err}");
    assert!(!err.contains("CAP_NET_ADMIN"), "{err}");
    // A tap another plug holds: EBUSY.
    let ns = Netns::new("filo-tapbusy");
    ns.exec_ok(&["ip", "tuntap", "add", "tap0", "mode", "tap"]);
    ns.exec_ok(&["ip", "link", "set", "tap0", "up"]);
    let _first = ns.plug_tap(&[FILO, "plug"], "null://");
    // The first plug holds tap0 once the kernel sees a carrier on it; only then is a second
    // plug the one refused (otherwise the second could win and run on).
    let held = wait_until(Duration::from_secs(10), || {
        !ns.exec_ok(&["ip", "link", "show", "tap0"])
            .contains("NO-CARRIER")
    });
    assert!(held, "the first plug never attached tap0");
    let busy = wait_until(Duration::from_secs(10), || {
        let (_, _, err) = Proc::spawn(
            ns.command(FILO)
                .args(["plug", "tap://tap0", "null://"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .output(Duration::from_secs(5));
        if err.contains("Device or resource busy") {
            assert!(err.contains("tap0 is in use"), "{err}");
            assert!(!err.contains("CAP_NET_ADMIN"), "{err}");
            true
        } else {
            false
        }
    });
    assert!(busy, "the second plug on tap0 was not refused as busy");
}

#[test]
fn a_full_switch_says_it_is_full() {
    let tmp = TempDir::new("filo-full");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &["-n", "2"]);
    let mut plugs = Vec::new();
    let mut err = String::new();
    for _ in 0..3 {
        let (code, e) = match filo_vnl::open(&sw.vnl()) {
            Ok(p) => {
                plugs.push(p);
                continue;
            }
            Err(e) => (1, e.to_string()),
        };
        assert_eq!(code, 1);
        err = e;
        break;
    }
    assert!(err.contains("no free port: the switch is full"), "{err:?}");
    assert!(!err.contains("another user"), "{err}");
}

#[test]
fn library_timeouts_past_the_clock_do_not_panic() {
    let mut plug = filo_vnl::open("null://").unwrap();
    plug.send_timeout(&[0u8; 60], Some(Duration::MAX)).unwrap();
    let tmp = TempDir::new("filo-maxwait");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let options = filo_vnl::OpenOptions {
        timeout: Duration::MAX,
        ..Default::default()
    };
    let mut a = options.open(&sw.vnl()).unwrap();
    let mut b = options.open(&sw.vnl()).unwrap();
    a.send_timeout(
        &test_frame([0xff; 6], [2, 0, 0, 0, 0, 1], 1, 60),
        Some(Duration::MAX),
    )
    .unwrap();
    let mut big = vec![0u8; 9236];
    assert!(b.recv_timeout(&mut big, Some(Duration::MAX)).unwrap() >= 60);
}
