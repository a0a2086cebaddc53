//! `filo switch` and `filo wirefilter` sandbox themselves once set up (seccomp allowlist,
//! no_new_privs, Landlock): they still forward, answer their consoles and take new plugs
//! (filo's and Debian's vde_plug), and a file outside the directories they serve is out of
//! reach. `--no-sandbox` runs them as before.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use filo_test_support::*;

const FILO: &str = env!("CARGO_BIN_EXE_filo");
const T: Duration = Duration::from_secs(5);
const A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const BCAST: [u8; 6] = [0xff; 6];

/// `field` of /proc/PID/status (`Seccomp`, `NoNewPrivs`).
fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Whether this kernel has Landlock (asked without restricting the test): the daemons must
/// then enforce it.
fn kernel_has_landlock() -> bool {
    use landlock::{Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr, ABI};
    Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(ABI::V1))
        .and_then(|r| r.create())
        .is_ok()
}

/// Waits until `field` of /proc/PID/status is `value` (the daemon sandboxes itself a moment
/// after its sockets appear); false if it never is.
fn becomes(pid: u32, field: &str, value: &str) -> bool {
    wait_until(T, || status_field(pid, field) == value)
}

/// The log at `path` once it has a line with `text` (fails the test after a while).
fn logged(path: &Path, text: &str) -> String {
    let read = || std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        wait_until(T, || read().contains(text)),
        "{text:?} not in the log: {}",
        read()
    );
    read()
}

/// A `filo switch --verbose` on `tmp/name` (management socket `tmp/name.mgmt`) whose log
/// goes to `tmp/name.log`.
fn switch(tmp: &TempDir, name: &str, extra: &[&str]) -> (Proc, PathBuf, PathBuf) {
    let log = std::fs::File::create(tmp.join(&format!("{name}.log"))).unwrap();
    let args: Vec<&str> = ["--verbose"].iter().chain(extra).copied().collect();
    let FiloSwitch { dir, mgmt, proc } = FiloSwitch::start_logging(FILO, tmp, name, &args, log);
    // The socket file appears at bind(), a moment before listen().
    assert!(wait_until(T, || std::os::unix::net::UnixStream::connect(
        &mgmt
    )
    .is_ok()));
    (proc, dir, mgmt)
}

/// A plug speaking the VDE stream encoding on stdin/stdout (`filo plug VNL`, `vde_plug VNL`):
/// frames are written to `input` and arrive on `frames`.
struct StreamPlug {
    _proc: Proc,
    input: std::process::ChildStdin,
    frames: std::sync::mpsc::Receiver<Vec<u8>>,
}

fn stream_plug(program: &str, vnl: &str) -> StreamPlug {
    let mut cmd = Command::new(program);
    if program == FILO {
        cmd.arg("plug");
    }
    let mut proc = Proc::spawn(
        cmd.arg(vnl)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let frames = record_reader(proc.child.stdout.take().unwrap());
    let input = proc.child.stdin.take().unwrap();
    StreamPlug {
        _proc: proc,
        input,
        frames,
    }
}

fn endpoints(mgmt: &Path) -> usize {
    console(mgmt, "port/print").matches("-- endpoint").count()
}

/// Frames cross between `a` and `b` both ways.
fn exchange(a: &mut StreamPlug, b: &mut StreamPlug) {
    for (seq, len) in [(1u32, 60usize), (2, 1514), (3, 400)] {
        let f = test_frame(BCAST, A, seq, len);
        a.input.write_all(&stream_record(&f)).unwrap();
        assert_eq!(expect_frame(&b.frames, T, |g| g[6..12] == A), f);
        let g = test_frame(A, B, seq + 100, len);
        b.input.write_all(&stream_record(&g)).unwrap();
        assert_eq!(expect_frame(&a.frames, T, |g| g[6..12] == B), g);
    }
}

#[test]
fn sandboxed_switch_forwards_answers_takes_plugs_and_keeps_out_of_other_directories() {
    require("vde_plug");
    let tmp = TempDir::new("filo-sbx1");
    let elsewhere = TempDir::new("filo-sbx1-out");
    let (mut sw, dir, mgmt) = switch(&tmp, "sw", &[]);
    let pid = sw.pid();
    assert!(becomes(pid, "Seccomp", "2"), "a seccomp filter");
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    let log = logged(
        &tmp.join("sw.log"),
        "filo switch: sandboxed: seccomp allows",
    );
    // Plugs join after the sandbox is on (filo's and Debian's), and frames cross.
    let vnl = format!("vde://{}", dir.display());
    let mut filo = stream_plug(FILO, &vnl);
    let mut deb = stream_plug("vde_plug", &vnl);
    assert!(wait_until(T, || endpoints(&mgmt) == 2), "both plugs joined");
    exchange(&mut filo, &mut deb);
    // The console answers, and its file commands work beside the switch.
    assert!(console(&mgmt, "port/create 7").contains("1000 Success"));
    let inside = tmp.join("inside.pcapng");
    console(&mgmt, &format!("port/capture 7 {}", inside.display()));
    assert!(
        wait_until(T, || inside.exists()),
        "capture beside the switch"
    );
    let script = tmp.join("ok.rc");
    std::fs::write(&script, "vlan/create 42\n").unwrap();
    let reply = console(&mgmt, &format!("load {}", script.display()));
    assert!(reply.contains("1000 Success"), "{reply}");
    assert!(console(&mgmt, "vlan/print").contains("VLAN 0042"));
    // ... and not elsewhere: Landlock refuses, where the kernel has it.
    let landlocked = kernel_has_landlock();
    let outside = elsewhere.join("outside.pcapng");
    let capture_reply = console(&mgmt, &format!("port/capture 7 {}", outside.display()));
    let foreign = elsewhere.join("foreign.rc");
    std::fs::write(&foreign, "vlan/create 43\n").unwrap();
    let reply = console(&mgmt, &format!("load {}", foreign.display()));
    if landlocked {
        assert!(
            log.contains("Landlock fully enforced") || log.contains("Landlock partly enforced"),
            "{log}"
        );
        assert!(reply.contains("1013 Permission denied"), "{reply}");
        assert!(!console(&mgmt, "vlan/print").contains("VLAN 0043"));
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            !outside.exists(),
            "no capture file outside the switch's tree"
        );
        // The refusal is said: in the console's answer or the switch's log.
        let log = std::fs::read_to_string(tmp.join("sw.log")).unwrap();
        let said = |text: &str| {
            text.lines().any(|l| {
                l.contains(&outside.display().to_string()) && l.contains("Permission denied")
            })
        };
        assert!(
            capture_reply.contains("Permission denied") || said(&log),
            "{capture_reply}\n{log}"
        );
    } else {
        skip("this kernel has no Landlock: the switch's file confinement is untested");
    }
    // Still forwarding, still taking plugs after all that.
    let mut late = stream_plug(FILO, &vnl);
    assert!(
        wait_until(T, || endpoints(&mgmt) == 3),
        "a late plug joined: {}\n{}",
        console(&mgmt, "port/print"),
        std::fs::read_to_string(tmp.join("sw.log")).unwrap_or_default()
    );
    drop(filo);
    exchange(&mut late, &mut deb);
    // On exit it still removes its sockets and its directory.
    drop((late, deb));
    assert!(sw.terminate(T).success());
    assert!(!dir.exists(), "{} removed", dir.display());
    assert!(!mgmt.exists(), "{} removed", mgmt.display());
}

#[test]
fn no_sandbox_switch_has_no_filter_and_writes_where_it_is_told() {
    let tmp = TempDir::new("filo-sbx2");
    let elsewhere = TempDir::new("filo-sbx2-out");
    let (mut sw, _dir, mgmt) = switch(&tmp, "sw", &["--no-sandbox"]);
    // Once the console answers, the loop runs: a sandbox would be on by now.
    console(&mgmt, "port/print");
    assert_eq!(status_field(sw.pid(), "Seccomp"), "0");
    assert_eq!(status_field(sw.pid(), "NoNewPrivs"), "0");
    console(&mgmt, "port/create 7");
    let outside = elsewhere.join("outside.pcapng");
    console(&mgmt, &format!("port/capture 7 {}", outside.display()));
    assert!(wait_until(T, || outside.exists()), "captures go anywhere");
    let foreign = elsewhere.join("foreign.rc");
    std::fs::write(&foreign, "vlan/create 43\n").unwrap();
    let reply = console(&mgmt, &format!("load {}", foreign.display()));
    assert!(reply.contains("1000 Success"), "{reply}");
    assert!(sw.terminate(T).success());
}

/// filo plug — switch a — wirefilter — switch b — filo plug, the wirefilter with `extra`.
fn wirefilter_lab(
    tmp: &TempDir,
    extra: &[&str],
) -> (Proc, PathBuf, Vec<StreamPlug>, FiloSwitch, FiloSwitch) {
    let a = FiloSwitch::start(FILO, tmp, "a", &[]);
    let b = FiloSwitch::start(FILO, tmp, "b", &[]);
    let mgmt = tmp.join("wf.mgmt");
    let log = std::fs::File::create(tmp.join("wf.log")).unwrap();
    let wf = Proc::spawn(
        Command::new(FILO)
            .args(["--verbose", "wirefilter", "-M"])
            .arg(&mgmt)
            .args(extra)
            .arg(a.vnl())
            .arg(b.vnl())
            .stdin(Stdio::null())
            .stderr(log),
    );
    assert!(
        wait_until(T, || std::os::unix::net::UnixStream::connect(&mgmt).is_ok()),
        "the wirefilter started"
    );
    let plugs = vec![stream_plug(FILO, &a.vnl()), stream_plug(FILO, &b.vnl())];
    assert!(
        wait_until(T, || a.endpoints() == 2 && b.endpoints() == 2),
        "the wirefilter and a plug on each switch"
    );
    (wf, mgmt, plugs, a, b)
}

#[test]
fn sandboxed_wirefilter_carries_frames_answers_and_reads_no_foreign_script() {
    let tmp = TempDir::new("filo-sbx3");
    let elsewhere = TempDir::new("filo-sbx3-out");
    let (mut wf, mgmt, mut plugs, _a, _b) = wirefilter_lab(&tmp, &[]);
    assert!(becomes(wf.pid(), "Seccomp", "2"), "a seccomp filter");
    assert_eq!(status_field(wf.pid(), "NoNewPrivs"), "1");
    let log = logged(
        &tmp.join("wf.log"),
        "filo wirefilter: sandboxed: seccomp allows",
    );
    let (mut left, mut right) = (plugs.remove(0), plugs.remove(0));
    exchange(&mut left, &mut right);
    assert!(console(&mgmt, "delay 1").contains("1000 Success"));
    let script = tmp.join("ok.rc");
    std::fs::write(&script, "loss 0\n").unwrap();
    assert!(console(&mgmt, &format!("load {}", script.display())).starts_with("1000 Success"));
    let foreign = elsewhere.join("foreign.rc");
    std::fs::write(&foreign, "loss 7\n").unwrap();
    let reply = console(&mgmt, &format!("load {}", foreign.display()));
    if kernel_has_landlock() {
        assert!(log.contains("Landlock fully enforced"), "{log}");
        assert!(reply.starts_with("1013 Permission denied"), "{reply}");
        assert!(console(&mgmt, "showinfo").contains("Loss   L->R 0+0U"));
    } else {
        // (`skip()` of test-support once merged with main.)
        eprintln!(
            "SKIP this kernel has no Landlock: the wirefilter's file confinement is untested"
        );
    }
    // Shut down from the console: its plugs' sockets and the management socket go away.
    let own = format!(".{}-", wf.pid());
    console_shutdown(&mgmt);
    assert!(wf.wait_exit(T).success());
    assert!(!mgmt.exists());
    for side in ["a", "b"] {
        let leftovers: Vec<_> = std::fs::read_dir(tmp.join(side))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&own))
            .collect();
        assert!(leftovers.is_empty(), "{side}: {leftovers:?}");
    }
}

#[test]
fn no_sandbox_wirefilter_has_no_filter_and_loads_any_script() {
    let tmp = TempDir::new("filo-sbx4");
    let elsewhere = TempDir::new("filo-sbx4-out");
    let (wf, mgmt, _plugs, _a, _b) = wirefilter_lab(&tmp, &["--no-sandbox"]);
    console(&mgmt, "showinfo");
    assert_eq!(status_field(wf.pid(), "Seccomp"), "0");
    let foreign = elsewhere.join("foreign.rc");
    std::fs::write(&foreign, "loss 7\n").unwrap();
    let reply = console(&mgmt, &format!("load {}", foreign.display()));
    assert!(reply.starts_with("1000 Success"), "{reply}");
}

/// `shutdown` on a console (which closes without a status line).
fn console_shutdown(mgmt: &Path) {
    let mut s = std::os::unix::net::UnixStream::connect(mgmt).unwrap();
    s.write_all(b"shutdown\n").unwrap();
}

/// A switch hosted inside the wirefilter (switch://) needs far more than the wirefilter's
/// allowlist: the wirefilter says so and runs unsandboxed rather than breaking that switch.
#[test]
fn wirefilter_hosting_a_switch_says_it_is_not_sandboxed() {
    let tmp = TempDir::new("filo-sbx5");
    let sw_b = FiloSwitch::start(FILO, &tmp, "b", &[]);
    let mgmt = tmp.join("wf.mgmt");
    let hosted = tmp.join("hosted");
    let log = std::fs::File::create(tmp.join("wf.log")).unwrap();
    let wf = Proc::spawn(
        Command::new(FILO)
            .args(["wirefilter", "-M"])
            .arg(&mgmt)
            .arg(format!("switch://{}", hosted.display()))
            .arg(sw_b.vnl())
            .stdin(Stdio::null())
            .stderr(log),
    );
    logged(
        &tmp.join("wf.log"),
        "filo wirefilter: not sandboxed: switch://",
    );
    assert_eq!(status_field(wf.pid(), "Seccomp"), "0");
    // The hosted switch serves plugs.
    let mut a = stream_plug(FILO, &format!("vde://{}", hosted.display()));
    let mut b = stream_plug(FILO, &sw_b.vnl());
    // (`a` reads its input only once it has joined, so its first frame is not lost.)
    assert!(wait_until(T, || sw_b.endpoints() == 2));
    exchange(&mut a, &mut b);
}
