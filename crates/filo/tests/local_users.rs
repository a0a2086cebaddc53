//! What a hostile local user could do with the files filo creates: rename a switch's `ctl`
//! (the directory is sticky when others may write to it), have a regular file deleted that
//! sits where a socket is to be bound (only stale sockets are removed), or take a UDP port
//! another plug already uses (refused: no SO_REUSEADDR).

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use filo_test_support::*;

const FILO: &str = env!("CARGO_BIN_EXE_filo");
const T: Duration = Duration::from_secs(5);

#[test]
fn a_switch_directory_others_may_write_to_is_sticky() {
    let tmp = TempDir::new("filo-sticky");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &["-m", "666"]);
    let mode = std::fs::metadata(&sw.dir).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o3777, "{mode:o}");
    let own = FiloSwitch::start(FILO, &tmp, "own", &[]);
    let mode = std::fs::metadata(&own.dir).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o2700, "{mode:o}");
}

/// Runs `filo ARGS`, which must fail at once with an error naming `path`.
fn fails_naming(args: &[&str], path: &std::path::Path) {
    let mut p = Proc::spawn(
        Command::new(FILO)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let exited = wait_until(T, || p.child.try_wait().unwrap().is_some());
    assert!(exited, "filo {args:?} kept running over {}", path.display());
    let (status, _, err) = p.output(T);
    assert!(!status.success(), "{args:?}");
    let shown = path.display().to_string();
    assert!(
        err.contains(&shown) && err.contains("not a socket"),
        "{args:?}: {err}"
    );
}

#[test]
fn only_stale_sockets_are_removed_to_make_way() {
    let tmp = TempDir::new("filo-inway");
    let file = tmp.join("precious");
    std::fs::write(&file, "keep me").unwrap();
    let f = file.to_string_lossy().into_owned();
    let dir = tmp.join("sw").to_string_lossy().into_owned();
    fails_naming(&["switch", &dir, "--nostdin", "-M", &f], &file);
    fails_naming(&["wirefilter", "-M", &f, "null://", "null://"], &file);
    fails_naming(&["plug", &format!("ptp://{f}"), "null://"], &file);
    // A regular file where the switch's ctl goes.
    let taken = tmp.join("taken");
    std::fs::create_dir(&taken).unwrap();
    std::fs::write(taken.join("ctl"), "keep me").unwrap();
    let t = taken.to_string_lossy().into_owned();
    fails_naming(&["switch", &t, "--nostdin"], &taken.join("ctl"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    assert_eq!(
        std::fs::read_to_string(taken.join("ctl")).unwrap(),
        "keep me"
    );
    // A stale socket (its owner is gone) is replaced, as before.
    let stale = tmp.join("sw.mgmt");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let up = || std::os::unix::net::UnixStream::connect(&stale).is_ok();
    assert!(wait_until(T, up), "the stale socket was not replaced");
    assert!(sw.console("vlan/print").contains("1000 Success"));
}

#[test]
fn a_second_udp_plug_on_a_taken_port_is_refused() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let vnl = format!("udp://127.0.0.1:{port}->127.0.0.1:9");
    let plug = || {
        Proc::spawn(
            Command::new(FILO)
                .args(["plug", &vnl, "null://"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        )
    };
    let mut first = plug();
    let taken = || std::net::UdpSocket::bind(("127.0.0.1", port)).is_err();
    assert!(wait_until(T, taken), "the first plug did not bind {port}");
    let mut second = plug();
    let exited = wait_until(T, || second.child.try_wait().unwrap().is_some());
    assert!(exited, "a second plug bound the same UDP port {port}");
    let (status, _, err) = second.output(T);
    assert!(!status.success());
    assert!(
        err.contains(&format!("cannot bind 127.0.0.1:{port}: the port is in use")),
        "{err}"
    );
    assert!(
        first.child.try_wait().unwrap().is_none(),
        "the first plug died"
    );
}
