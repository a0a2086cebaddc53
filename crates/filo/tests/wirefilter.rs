//! `filo wirefilter` between two switches, with kernel namespaces on taps as the endpoints:
//! ping loss and round trips follow --loss/--delay, iperf3 follows --bandwidth, --mtu drops,
//! and the console changes the delay live.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use filo_test_support::*;

const FILO: &str = env!("CARGO_BIN_EXE_filo");
const T: Duration = Duration::from_secs(5);

struct Lab {
    ns1: Netns,
    ns2: Netns,
    mgmt: std::path::PathBuf,
    _wf: Proc,
    _plugs: Vec<Proc>,
    _switches: (FiloSwitch, FiloSwitch),
    _tmp: TempDir,
}

/// ns1 (10.77.0.1) — tap — switch a — wirefilter(args) — switch b — tap — ns2 (10.77.0.2).
fn lab(args: &[&str]) -> Lab {
    require("ping");
    let tmp = TempDir::new("filo-wf");
    let a = FiloSwitch::start(FILO, &tmp, "a", &[]);
    let b = FiloSwitch::start(FILO, &tmp, "b", &[]);
    let mgmt = tmp.join("wf.mgmt");
    let wf = Proc::spawn(
        Command::new(FILO)
            .arg("wirefilter")
            .args(args)
            .args(["--seed", "7", "-M"])
            .arg(&mgmt)
            .args([&a.vnl(), &b.vnl()])
            .stdin(Stdio::null())
            .stderr(Stdio::null()),
    );
    let ns1 = Netns::new("filo-w1");
    let ns2 = Netns::new("filo-w2");
    let mut plugs = Vec::new();
    for (ns, ip, sw) in [(&ns1, "10.77.0.1/24", &a), (&ns2, "10.77.0.2/24", &b)] {
        ns.tap(&[ip]);
        plugs.push(ns.plug_tap(&[FILO, "plug"], &sw.vnl()));
    }
    assert!(wait_until(T, || a.endpoints() == 2
        && b.endpoints() == 2
        && mgmt.exists()));
    Lab {
        ns1,
        ns2,
        mgmt,
        _wf: wf,
        _plugs: plugs,
        _switches: (a, b),
        _tmp: tmp,
    }
}

/// Runs ping and returns (received, sent, average RTT ms).
fn ping(ns: &Netns, args: &[&str]) -> (u32, u32, f64) {
    let out = ns.command("ping").args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let stats = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("{text}"));
    let num = |key: &str| -> u32 {
        stats
            .split(',')
            .find(|p| p.contains(key))
            .and_then(|p| p.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let avg = text
        .lines()
        .find(|l| l.starts_with("rtt"))
        .and_then(|l| l.split('=').nth(1))
        .and_then(|v| v.trim().split('/').nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    (num("received"), num("transmitted"), avg)
}

#[test]
fn delay_sets_the_round_trip_and_the_console_changes_it_live() {
    let lab = lab(&["--delay", "40"]);
    let (got, sent, avg) = ping(&lab.ns1, &["-c", "5", "-i", "0.2", "-W", "3", "10.77.0.2"]);
    assert_eq!(got, sent);
    assert!(
        (75.0..140.0).contains(&avg),
        "rtt {avg} ms with 40 ms each way"
    );
    let reply = console(&lab.mgmt, "delay 150");
    assert!(reply.contains("1000 Success"), "{reply}");
    let start = Instant::now();
    let (got, _, avg) = ping(&lab.ns1, &["-c", "3", "-i", "0.3", "-W", "3", "10.77.0.2"]);
    assert_eq!(got, 3);
    assert!(
        (280.0..420.0).contains(&avg),
        "rtt {avg} ms after 'delay 150'"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    let info = console(&lab.mgmt, "showinfo");
    assert!(info.contains("Delay") && info.contains("150"), "{info}");
}

#[test]
fn loss_drops_about_the_set_share_of_pings() {
    let lab = lab(&["--loss", "LR30"]);
    // Warm the ARP caches first so the loss applies to pings only.
    let _ = ping(&lab.ns1, &["-c", "3", "-i", "0.1", "-W", "1", "10.77.0.2"]);
    let (got, sent, _) = ping(
        &lab.ns1,
        &["-c", "100", "-i", "0.01", "-W", "1", "10.77.0.2"],
    );
    let loss = 100.0 * f64::from(sent - got) / f64::from(sent);
    assert!(
        (15.0..45.0).contains(&loss),
        "{loss}% lost with --loss LR30"
    );
}

#[test]
fn frames_over_the_mtu_are_dropped() {
    let lab = lab(&["--mtu", "1000"]);
    let (got, _, _) = ping(
        &lab.ns1,
        &["-c", "3", "-i", "0.2", "-W", "1", "-s", "500", "10.77.0.2"],
    );
    assert_eq!(got, 3, "small pings pass");
    let (got, _, _) = ping(
        &lab.ns1,
        &[
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "1",
            "-s",
            "1200",
            "-M",
            "do",
            "10.77.0.2",
        ],
    );
    assert_eq!(got, 0, "pings larger than the MTU are dropped");
}

#[test]
fn iperf3_throughput_follows_the_bandwidth() {
    require("iperf3");
    let lab = lab(&["--bandwidth", "256K"]);
    let mut server = lab.ns2.command("iperf3");
    server
        .args(["-s", "-1", "-B", "10.77.0.2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _server = Proc::spawn(&mut server);
    std::thread::sleep(Duration::from_millis(400));
    let out = lab
        .ns1
        .command("iperf3")
        .args(["-c", "10.77.0.2", "-t", "4", "-J"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let bps: f64 = text
        .split("\"sum_received\"")
        .nth(1)
        .and_then(|s| s.split("\"bits_per_second\":").nth(1))
        .and_then(|s| s.split([',', '}']).next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no iperf3 result: {text}"));
    let set = 256.0 * 1024.0 * 8.0;
    assert!(
        bps > 0.6 * set && bps < 1.1 * set,
        "{bps} bit/s through a {set} bit/s link"
    );
}

#[test]
fn bad_values_name_the_option_and_the_form() {
    for (args, needle) in [
        (&["--loss", "abc"][..], "--loss \"abc\""),
        (&["--delay", "LR"][..], "--delay"),
        (
            &["--bandwidth", "10X"][..],
            "[LR|RL]VALUE[+DELTA][K|M|G][U|N][[NODE]]",
        ),
    ] {
        let out = Command::new(FILO)
            .arg("wirefilter")
            .args(args)
            .args(["null://", "null://"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let out = Command::new(FILO)
        .args(["wirefilter", "null://"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected two VNLs"));
}

/// The console over the real socket: a bad value's error names it, and `load` of something
/// that is no script (a FIFO nobody writes to, /dev/zero) is refused at once instead of
/// hanging the wirefilter or filling its memory.
#[test]
fn console_errors_are_detailed_and_load_refuses_non_scripts() {
    let tmp = TempDir::new("filo-wfc");
    let a = FiloSwitch::start(FILO, &tmp, "a", &[]);
    let b = FiloSwitch::start(FILO, &tmp, "b", &[]);
    let mgmt = tmp.join("wf.mgmt");
    let _wf = Proc::spawn(
        Command::new(FILO)
            .arg("wirefilter")
            .arg("-M")
            .arg(&mgmt)
            .args([&a.vnl(), &b.vnl()])
            .stdin(Stdio::null())
            .stderr(Stdio::null()),
    );
    assert!(wait_until(T, || mgmt.exists()));
    let reply = console(&mgmt, "delay abc");
    assert!(
        reply.contains("1022 Invalid argument: delay: \"abc\" is not [LR|RL]VALUE"),
        "{reply}"
    );
    let fifo = tmp.join("fifo");
    mkfifo(&fifo);
    for path in [fifo.display().to_string(), "/dev/zero".to_string()] {
        let reply = console(&mgmt, &format!("load {path}"));
        assert!(
            reply.starts_with("1022 Invalid argument\n"),
            "{path}: {reply}"
        );
    }
    let script = tmp.join("ok.rc");
    std::fs::write(&script, "loss 5\n").unwrap();
    let reply = console(&mgmt, &format!("load {}", script.display()));
    assert!(reply.starts_with("1000 Success\n"), "{reply}");
    assert!(console(&mgmt, "showinfo").contains("Loss   L->R 5+0U"));
}

/// `load` reads a file as the wirefilter's user: with `--mgmtmode 666` another user's console
/// client is refused it (SO_PEERCRED), and the file is not read.
#[test]
fn load_is_for_the_wirefilters_user() {
    let tmp = TempDir::new("filo-wfu");
    let bin = copy_for_everyone(&tmp, FILO);
    let mgmt = tmp.join("wf.mgmt");
    let _wf = Proc::spawn(
        Command::new(FILO)
            .args(["wirefilter", "--mgmtmode", "666", "-M"])
            .arg(&mgmt)
            .args(["null://", "null://"])
            .stdin(Stdio::null())
            .stderr(Stdio::null()),
    );
    assert!(wait_until(T, || mgmt.exists()));
    let script = tmp.join("root-only.rc");
    std::fs::write(&script, "loss 7\n").unwrap();
    run(Command::new("chmod").args(["600", &script.to_string_lossy()]));
    let load = format!("load {}", script.display());
    let mut c = as_nobody(&bin);
    c.arg("console").arg(&mgmt).arg(&load);
    let (st, out, err) = Proc::spawn(&mut c).output(T);
    assert!(!st.success());
    assert!(
        err.contains("Operation not permitted: file commands are for the wirefilter's user"),
        "{out}{err}"
    );
    assert!(!console(&mgmt, "showinfo").contains("L->R 7"));
    assert!(console(&mgmt, &load).starts_with("1000 Success\n"));
    assert!(console(&mgmt, "showinfo").contains("Loss   L->R 7+0U"));
}
