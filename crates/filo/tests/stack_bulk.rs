//! Bulk TCP between filo stacks: two stacks in two processes on a filo switch, and two in one
//! process on an in-process cable, with equal CRC-32 checksums on both sides.
//!
//! Each moves 1 GiB (`FILO_BULK_MIB` overrides); the workspace builds smoltcp and filo-stack
//! optimised even in the dev profile, so this takes seconds, not minutes.

use std::process::{Command, Stdio};
use std::time::Duration;

use filo_stack::{cable, perf, Driver, Stack};
use filo_test_support::*;

const FILO: &str = env!("CARGO_BIN_EXE_filo");

fn mib() -> u64 {
    std::env::var("FILO_BULK_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

/// `filo stack perf` receiver on `rx_vnl` (10.x.0.1) and sender on `tx_vnl` (10.x.0.2):
/// moves `n` MiB and checks that both sides saw every byte and the same CRC-32.
fn perf_between(rx_vnl: &str, tx_vnl: &str, net: &str, extra_conf: &str, n: u64, wait: Duration) {
    let mut server = Proc::spawn(
        Command::new(FILO)
            .args(["stack", "perf", "--server", "--vnl", rx_vnl])
            .args([
                "--conf",
                &format!("ip={net}.1/24{extra_conf}"),
                "--name",
                "rx",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let out = Command::new(FILO)
        .args(["stack", "perf", "--vnl", tx_vnl, "--name", "tx"])
        .args(["--conf", &format!("ip={net}.2/24{extra_conf}")])
        .args([
            "--connect",
            &format!("{net}.1:5201"),
            "--mib",
            &n.to_string(),
        ])
        .output()
        .unwrap();
    let sent = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{sent} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (st, received, _) = {
        let p = std::mem::replace(&mut server, Proc::spawn(&mut Command::new("true")));
        p.output(wait)
    };
    assert!(st.success(), "{received}");
    eprintln!("{sent}{received}");
    assert_eq!(field(&sent, "bytes="), (n << 20).to_string());
    assert_eq!(field(&received, "bytes="), (n << 20).to_string());
    assert_eq!(field(&sent, "crc32="), field(&received, "crc32="));
}

#[test]
fn two_stacks_in_two_processes_move_data_with_equal_checksums() {
    let tmp = TempDir::new("filo-bulk");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    perf_between(
        &sw.vnl(),
        &sw.vnl(),
        "10.60.0",
        ",mtu=9000",
        mib(),
        Duration::from_secs(30),
    );
}

/// On Debian's vde_switch the stacks' offer of super-frames is ignored: they fall back to
/// plain frames of the link's MTU, and data still flows with equal checksums (a stack that
/// sent virtio-net headers or 64 KiB segments there would get nothing through: Debian's
/// switch truncates frames at 1518 bytes).
#[test]
fn two_stacks_on_debians_vde_switch_use_plain_frames() {
    let tmp = TempDir::new("filo-bulkdeb");
    let sw = DebSwitch::start(&tmp, "sw");
    perf_between(
        &sw.vnl(),
        &sw.vnl(),
        "10.64.0",
        "",
        64,
        Duration::from_secs(60),
    );
}

#[test]
fn two_stacks_in_one_process_move_data_with_equal_checksums() {
    let (a, b) = cable().unwrap();
    let s1 = Stack::builder()
        .interface_plug(a, "ip=10.61.0.1/24,mtu=9000")
        .driver(&Driver::new().unwrap())
        .tcp_buffer(1 << 20)
        .build()
        .unwrap();
    let s2 = Stack::builder()
        .interface_plug(b, "ip=10.61.0.2/24,mtu=9000")
        .driver(&Driver::new().unwrap())
        .tcp_buffer(1 << 20)
        .build()
        .unwrap();
    let l = s1.tcp_listen("0.0.0.0:5001").unwrap();
    let rx = std::thread::spawn(move || perf::receive(&l.accept().unwrap().0).unwrap());
    let c = s2.tcp_connect("10.61.0.1:5001").unwrap();
    let sent = perf::send(&c, mib() << 20).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let got = rx.join().unwrap();
    eprintln!("sent {sent}\nreceived {got}");
    assert_eq!(sent.bytes, mib() << 20);
    assert_eq!(got.bytes, sent.bytes);
    assert_eq!(got.crc32, sent.crc32);
}

/// Two stacks in two processes, each on its own switch, the switches joined by
/// `filo wirefilter --loss 2`: TCP recovers every lost frame (filo-stack's loss recovery
/// beneath smoltcp) and the checksums agree. 1 GiB, as in the other bulk tests (about 20 s
/// here; `FILO_LOSSY_MIB` overrides).
#[test]
fn two_stacks_through_a_lossy_wirefilter_move_data_with_equal_checksums() {
    let tmp = TempDir::new("filo-bulkwf");
    let a = FiloSwitch::start(FILO, &tmp, "a", &[]);
    let b = FiloSwitch::start(FILO, &tmp, "b", &[]);
    let _wf = Proc::spawn(
        Command::new(FILO)
            .args([
                "wirefilter",
                "--loss",
                "2",
                "--seed",
                "3",
                &a.vnl(),
                &b.vnl(),
            ])
            .stdin(Stdio::null())
            .stderr(Stdio::null()),
    );
    assert!(wait_until(Duration::from_secs(5), || a.endpoints() == 1
        && b.endpoints() == 1));
    // Loss makes TCP slow; FILO_LOSSY_MIB overrides the size.
    let n: u64 = std::env::var("FILO_LOSSY_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    perf_between(
        &b.vnl(),
        &a.vnl(),
        "10.62.0",
        "",
        n,
        Duration::from_secs(300),
    );
}
