//! The management console with the real clients: Debian's unixterm and vdeterm, and
//! `filo console` (also against Debian's vde_switch); VLANs configured through it.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use filo_test_support::*;

const FILO: &str = env!("CARGO_BIN_EXE_filo");
const T: Duration = Duration::from_secs(5);

/// Feeds `commands` to a console client one at a time (as a person would type them).
fn scripted(program: &str, args: &[&str], commands: &[&str], newline: &str) -> String {
    let mut p = Proc::spawn(
        Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let mut stdin = p.child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    for c in commands {
        stdin.write_all(format!("{c}{newline}").as_bytes()).unwrap();
        stdin.flush().unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(stdin);
    let (_, out, _) = p.output(Duration::from_secs(10));
    out
}

#[test]
fn unixterm_session_on_filo_switch() {
    require("unixterm");
    let tmp = TempDir::new("filo-c1");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let _plug = filo_vnl::open(&sw.vnl()).unwrap();
    let out = scripted(
        "unixterm",
        &[sw.mgmt.to_str().unwrap()],
        &[
            "port/print",
            "hash/print",
            "vlan/create 10",
            "port/setvlan 1 10",
            "vlan/print 10",
            "nosuch/command",
        ],
        "\n",
    );
    assert!(out.starts_with("VDE switch V.2.3.2\n"), "{out}");
    assert!(
        out.contains("Port 0001 untagged_vlan=0000 ACTIVE - Unnamed Allocatable"),
        "{out}"
    );
    assert!(out.contains("  -- endpoint ID"), "{out}");
    assert!(
        out.contains("module unix prog   : filo: user=root"),
        "{out}"
    );
    assert!(out.contains("VLAN 0010"), "{out}");
    assert!(out.contains(" -- Port 0001 tagged=0 active=1"), "{out}");
    assert!(out.contains("1038 Function not implemented"), "{out}");
    assert_eq!(out.matches("1000 Success").count(), 5, "{out}");
}

#[test]
fn vdeterm_session_on_filo_switch() {
    require("vdeterm");
    require("script");
    let tmp = TempDir::new("filo-c2");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    // vdeterm wants a terminal: `script` gives it one. It sends commands without a newline.
    let cmd = format!("vdeterm {}", sw.mgmt.display());
    let out = scripted(
        "script",
        &["-qfc", &cmd, "/dev/null"],
        &["port/showinfo", "vlan/create 12", "bogus", "logout"],
        "\r",
    );
    let out = out.replace('\u{8}', "");
    assert!(
        out.contains(&format!("vde[{}]:", sw.mgmt.display())),
        "vdeterm derived its prompt: {out}"
    );
    assert!(out.contains("Numports=32"), "{out}");
    assert!(out.contains("Success"), "{out}");
    assert!(out.contains("Function not implemented"), "{out}");
    assert!(sw.console("vlan/print").contains("VLAN 0012"));
}

#[test]
fn filo_console_scripts_filo_switch_and_debian_vde_switch() {
    let tmp = TempDir::new("filo-c3");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let deb = DebSwitch::start(&tmp, "deb");
    for mgmt in [&sw.mgmt, &deb.mgmt] {
        let out = Command::new(FILO)
            .arg("console")
            .arg(mgmt)
            .args(["vlan/create 20", "port/showinfo"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("Numports=32"), "{text}");
        let out = Command::new(FILO)
            .arg("console")
            .arg("--json")
            .arg(mgmt)
            .args(["vlan/print", "bogus"])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(1),
            "a failed command makes the exit status 1"
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(
                r#"{"command":"vlan/print","status":1000,"error":null,"lines":["VLAN 0000""#
            ) || text.contains(r#""lines":["VLAN 0000","#),
            "{text}"
        );
        assert!(
            text.contains(r#"{"command":"bogus","status":1038,"error":"Function not implemented""#),
            "{text}"
        );
    }
    let out = Command::new(FILO)
        .args(["console", "/nonexistent/sock", "help"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("cannot connect to management socket /nonexistent/sock"));
}

#[test]
fn console_garbage_and_flooding_do_not_disturb_the_switch() {
    let tmp = TempDir::new("filo-c4");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    // A client that sends megabytes without a newline, and one that never reads its output.
    let mut junk = std::os::unix::net::UnixStream::connect(&sw.mgmt).unwrap();
    let _ = junk.write_all(&vec![b'x'; 1 << 20]);
    let mut deaf = std::os::unix::net::UnixStream::connect(&sw.mgmt).unwrap();
    for _ in 0..2000 {
        if deaf.write_all(b"help\n").is_err() {
            break;
        }
    }
    let out = sw.console("port/showinfo");
    assert!(out.contains("Numports=32"), "{out}");
    let _ = T;
}

#[test]
fn vlans_isolate_and_trunk_across_two_filo_switches() {
    let tmp = TempDir::new("filo-vlan");
    let a = FiloSwitch::start(FILO, &tmp, "a", &[]);
    let b = FiloSwitch::start(FILO, &tmp, "b", &[]);
    for sw in [&a, &b] {
        for c in [
            "vlan/create 10",
            "vlan/create 20",
            "port/create 1",
            "port/create 2",
            "port/create 5",
            "port/setvlan 1 10",
            "port/setvlan 2 20",
            "vlan/addport 10 5",
            "vlan/addport 20 5",
        ] {
            assert!(sw.console(c).contains("1000 Success"), "{c}");
        }
    }
    // Port 5 of each switch is a trunk carrying VLANs 10 and 20 tagged.
    let _trunk = Proc::spawn(
        Command::new(FILO)
            .args([
                "plug",
                &format!("{}[5]", a.vnl()),
                &format!("{}[5]", b.vnl()),
            ])
            .stdin(Stdio::null())
            .stderr(Stdio::null()),
    );
    let mut a10 = filo_vnl::open(&format!("{}[1]", a.vnl())).unwrap();
    let mut a20 = filo_vnl::open(&format!("{}[2]", a.vnl())).unwrap();
    let mut b10 = filo_vnl::open(&format!("{}[1]", b.vnl())).unwrap();
    let mut b20 = filo_vnl::open(&format!("{}[2]", b.vnl())).unwrap();
    assert!(wait_until(T, || a
        .console("port/print 5")
        .contains("ACTIVE")
        && b.console("port/print 5").contains("ACTIVE")));
    let f = test_frame([0xff; 6], [2, 0, 0, 0, 0, 0x10], 1, 100);
    a10.send_timeout(&f, Some(T)).unwrap();
    let mut buf = vec![0u8; 9236];
    let n = b10
        .recv_timeout(&mut buf, Some(T))
        .expect("VLAN 10 crosses the trunk");
    assert_eq!(&buf[..n], &f[..], "delivered untagged on the access port");
    let g = test_frame([0xff; 6], [2, 0, 0, 0, 0, 0x20], 2, 100);
    b20.send_timeout(&g, Some(T)).unwrap();
    let n = a20
        .recv_timeout(&mut buf, Some(T))
        .expect("VLAN 20 crosses the trunk");
    assert_eq!(&buf[..n], &g[..]);
    // Nothing leaks between VLANs.
    assert!(
        a20.recv_timeout(&mut buf, Some(Duration::from_millis(300)))
            .is_err(),
        "VLAN 10 frame leaked into VLAN 20"
    );
    assert!(b20
        .recv_timeout(&mut buf, Some(Duration::from_millis(300)))
        .is_err());
    assert!(
        a10.recv_timeout(&mut buf, Some(Duration::from_millis(300)))
            .is_err(),
        "VLAN 20 frame leaked into VLAN 10"
    );
    // On the trunk itself frames are tagged: a plug on a third trunk port sees 81 00 00 0a.
    assert!(a.console("port/create 6").contains("1000"));
    assert!(a.console("vlan/addport 10 6").contains("1000"));
    assert!(a.console("port/setvlan 6 4095").contains("1000"));
    let mut tap = filo_vnl::open(&format!("{}[6]", a.vnl())).unwrap();
    a10.send_timeout(&f, Some(T)).unwrap();
    let n = tap
        .recv_timeout(&mut buf, Some(T))
        .expect("tagged copy on the trunk port");
    assert_eq!(&buf[12..16], &[0x81, 0x00, 0x00, 0x0a]);
    assert_eq!(n, f.len() + 4);
}

#[test]
fn debug_events_announce_endpoints_on_the_console() {
    let tmp = TempDir::new("filo-dbg");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let mut s = std::os::unix::net::UnixStream::connect(&sw.mgmt).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let mut seen = Vec::new();
    let mut read_until = |s: &mut std::os::unix::net::UnixStream, needle: &str| {
        let mut chunk = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains(needle) {
            let n = std::io::Read::read(s, &mut chunk).expect("console output");
            assert!(n > 0, "console closed");
            seen.extend_from_slice(&chunk[..n]);
        }
    };
    read_until(&mut s, "vde$ ");
    s.write_all(b"debug/add port/ep\n").unwrap();
    read_until(&mut s, "1000 Success");
    let plug = filo_vnl::open(&sw.vnl()).unwrap();
    read_until(&mut s, "3031 port/ep/+ Port 01");
    drop(plug);
    read_until(&mut s, "3032 port/ep/- Port 01");
}

/// `-f` and `load` (the daemon reads the scripts the console asks for), nested loads
/// included. (Debian's vde_switch echoes the same lines and status lines, but without the
/// data block around them.)
#[test]
fn rc_file_and_nested_load_through_the_daemon() {
    let tmp = TempDir::new("filo-c5");
    let inner = tmp.join("inner.rc");
    std::fs::write(&inner, "vlan/create 78\nport/create 5\n").unwrap();
    let outer = tmp.join("outer.rc");
    std::fs::write(
        &outer,
        format!("vlan/create 79\nload {}\nbogus\n", inner.display()),
    )
    .unwrap();
    let rc = tmp.join("start.rc");
    std::fs::write(
        &rc,
        format!(
            "vlan/create 77\nload {}\n",
            tmp.join("rc-inner.rc").display()
        ),
    )
    .unwrap();
    std::fs::write(tmp.join("rc-inner.rc"), "vlan/create 76\n").unwrap();
    let rc_arg = rc.to_string_lossy().into_owned();
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &["-f", &rc_arg]);
    let load = format!("load {}", outer.display());
    let out = Command::new(FILO)
        .arg("console")
        .arg("--json")
        .arg(&sw.mgmt)
        .arg(&load)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (o, i) = (outer.display(), inner.display());
    let expected = format!(
        "{{\"command\":\"{load}\",\"status\":1000,\"error\":null,\"lines\":[\
         \"vde[{o}]: vlan/create 79\",\"1000 Success\",\
         \"vde[{o}]: load {i}\",\"0000 DATA END WITH '.'\",\
         \"vde[{i}]: vlan/create 78\",\"1000 Success\",\
         \"vde[{i}]: port/create 5\",\"1000 Success\",\".\",\"1000 Success\",\
         \"vde[{o}]: bogus\",\"1038 Function not implemented\"],\"events\":[]}}\n"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    let vlans = sw.console("vlan/print");
    for v in ["0076", "0077", "0078", "0079"] {
        assert!(vlans.contains(&format!("VLAN {v}")), "{v}: {vlans}");
    }
    // A FIFO nobody writes to is no script: refused at once, not waited on.
    let fifo = tmp.join("fifo");
    mkfifo(&fifo);
    let reply = sw.console(&format!("load {}", fifo.display()));
    assert!(reply.contains(".\n1022 Invalid argument\n"), "{reply}");
}

/// File commands read and write files as the switch's user: a console client of another
/// user (`--mgmtmode 666`, judged by SO_PEERCRED) is refused `load` and `port/capture PATH`.
#[test]
fn console_file_commands_are_for_the_switchs_user() {
    let tmp = TempDir::new("filo-c6");
    let bin = copy_for_everyone(&tmp, FILO);
    let secret = tmp.join("secret");
    std::fs::write(&secret, "vlan/create 3\nTOP SECRET\n").unwrap();
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &["--mgmtmode", "666"]);
    let nobody = |command: &str| {
        let mut c = as_nobody(&bin);
        c.arg("console").arg(&sw.mgmt).arg(command);
        let (st, out, err) = Proc::spawn(&mut c).output(Duration::from_secs(10));
        (st.success(), format!("{out}{err}"))
    };
    assert!(sw.console("port/create 1").contains("1000 Success"));
    let refused = "Operation not permitted: file commands are for the switch's user";
    let (ok, out) = nobody(&format!("load {}", secret.display()));
    assert!(!ok && out.contains(refused), "{out}");
    assert!(
        !out.contains("SECRET") && !out.contains("vlan/create"),
        "{out}"
    );
    let victim = tmp.join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let (ok, out) = nobody(&format!("port/capture 1 {}", victim.display()));
    assert!(!ok && out.contains(refused), "{out}");
    let created = tmp.join("created.pcapng");
    let (ok, out) = nobody(&format!("port/capture 1 {}", created.display()));
    assert!(!ok && out.contains(refused), "{out}");
    // Other commands still work for nobody, and stopping a capture is no file command.
    assert_eq!(nobody("port/capture 1 off"), (true, String::new()));
    let (ok, out) = nobody("vlan/create 5");
    assert!(ok, "{out}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(!created.exists());
    // The switch's own user may.
    assert!(sw
        .console(&format!("load {}", secret.display()))
        .contains("SECRET"));
}

/// What a console names for a capture is opened without following links, without blocking
/// (a FIFO used to freeze the switch until a reader came), only as a regular file, and an
/// existing file is overwritten only when it is already a capture.
#[test]
fn capture_files_are_regular_files_opened_without_blocking_or_following_links() {
    let tmp = TempDir::new("filo-c7");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    assert!(sw.console("port/create 1").contains("1000 Success"));
    let fifo = tmp.join("fifo");
    mkfifo(&fifo);
    let t0 = std::time::Instant::now();
    sw.console(&format!("port/capture 1 {}", fifo.display()));
    assert!(sw.console("vlan/print").contains("1000 Success"));
    assert!(t0.elapsed() < T, "the switch froze on a FIFO");
    let precious = tmp.join("precious");
    std::fs::write(&precious, "not a capture").unwrap();
    let link = tmp.join("link.pcapng");
    std::os::unix::fs::symlink(&precious, &link).unwrap();
    for path in [&precious, &link] {
        sw.console(&format!("port/capture 1 {}", path.display()));
        sw.console("port/capture 1 off");
        assert_eq!(std::fs::read_to_string(&precious).unwrap(), "not a capture");
    }
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    // A capture of ours is overwritten; a new file is made.
    let ours = tmp.join("ours.pcapng");
    sw.console(&format!("port/capture 1 {}", ours.display()));
    sw.console("port/capture 1 off");
    let first = std::fs::read(&ours).unwrap();
    assert_eq!(first[..4], [0x0a, 0x0d, 0x0d, 0x0a]);
    std::fs::write(&ours, [&first[..], b"junk"].concat()).unwrap();
    sw.console(&format!("port/capture 1 {}", ours.display()));
    sw.console("port/capture 1 off");
    assert_eq!(std::fs::read(&ours).unwrap(), first);
}

#[test]
fn huge_console_durations_are_refused_and_the_switch_lives_on() {
    let tmp = TempDir::new("filo-c9");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    for cmd in ["hash/setgcint", "hash/setexpire", "hash/setminper"] {
        let reply = sw.console(&format!("{cmd} 18446744073709551615"));
        assert!(!reply.contains("1000 Success"), "{cmd}: {reply}");
        let reply = sw.console(&format!("{cmd} 1000001"));
        assert!(!reply.contains("1000 Success"), "{cmd}: {reply}");
        let reply = sw.console(&format!("{cmd} 1000"));
        assert!(reply.contains("1000 Success"), "{cmd}: {reply}");
    }
    let out = sw.console("port/showinfo");
    assert!(out.contains("Numports=32"), "{out}");
}
