//! Capture files read by tshark: counts and protocols match what was sent.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use filo_test_support::*;

const FILO: &str = env!("CARGO_BIN_EXE_filo");
const T: Duration = Duration::from_secs(5);

fn tshark(file: &std::path::Path, filter: &str) -> Vec<String> {
    require("tshark");
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(["-Y", filter, "-T", "fields", "-e", "frame.protocols"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_switch_port_capture_shows_the_pings_that_crossed_it() {
    require("ping");
    let tmp = TempDir::new("filo-cap1");
    let file = tmp.join("port1.pcapng");
    let sw = FiloSwitch::start(
        FILO,
        &tmp,
        "sw",
        &["--capture", &format!("1={}", file.display())],
    );
    let ns1 = Netns::new("filo-cp1");
    let ns2 = Netns::new("filo-cp2");
    let mut plugs = Vec::new();
    for (ns, ip, port) in [(&ns1, "10.99.0.1/24", 1), (&ns2, "10.99.0.2/24", 2)] {
        ns.tap(&[ip]);
        plugs.push(ns.plug_tap(&[FILO, "plug"], &format!("{}[{port}]", sw.vnl())));
    }
    assert!(wait_until(T, || sw.endpoints() == 2));
    ns1.exec_ok(&["ping", "-c", "5", "-i", "0.2", "-W", "2", "10.99.0.2"]);
    std::thread::sleep(Duration::from_millis(200));
    let icmp = tshark(&file, "icmp");
    assert_eq!(
        icmp.len(),
        10,
        "5 requests in and 5 replies out of port 1: {icmp:?}"
    );
    assert!(
        icmp.iter().all(|p| p == "eth:ethertype:ip:icmp:data"),
        "{icmp:?}"
    );
    assert!(!tshark(&file, "arp").is_empty(), "ARP was captured too");
    // The console stops and restarts captures.
    let again = tmp.join("again.pcapng");
    assert!(sw
        .console(&format!("port/capture 1 {}", again.display()))
        .contains("1000 Success"));
    ns1.exec_ok(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.99.0.2"]);
    assert!(sw.console("port/capture 1 off").contains("1000 Success"));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(tshark(&again, "icmp").len(), 4);
}

#[test]
fn filo_capture_writes_pcap_and_pcapng_with_a_frame_limit_and_to_a_pipe() {
    let tmp = TempDir::new("filo-cap2");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    for (format, name) in [(None, "a.pcapng"), (Some("--pcap"), "a.pcap")] {
        let file = tmp.join(name);
        let mut c = Command::new(FILO);
        c.args(["capture", &sw.vnl(), "-c", "3", "-w"])
            .arg(&file)
            .stderr(Stdio::piped());
        if let Some(f) = format {
            c.arg(f);
        }
        let cap = Proc::spawn(&mut c);
        assert!(wait_until(T, || sw.endpoints() == 1));
        let mut sender = filo_vnl::open(&sw.vnl()).unwrap();
        for i in 0..5 {
            sender
                .send(&test_frame([0xff; 6], [2, 0, 0, 0, 0, 1], i, 100))
                .unwrap();
        }
        let (status, _, err) = cap.output(T);
        assert!(
            status.success() && err.contains("3 frames captured"),
            "{err}"
        );
        let frames = tshark(&file, "eth");
        assert_eq!(frames.len(), 3, "{name}: {frames:?}");
        drop(sender);
        assert!(wait_until(T, || sw.endpoints() == 0));
    }
    // Live to a pipe: tshark reads stdin.
    let mut cap = Proc::spawn(
        Command::new(FILO)
            .args(["capture", &sw.vnl(), "-c", "2", "-w", "-"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let stdout = cap.child.stdout.take().unwrap();
    let mut tshark = Proc::spawn(
        Command::new("tshark")
            .args(["-r", "-", "-T", "fields", "-e", "eth.src"])
            .stdin(stdout)
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    assert!(wait_until(T, || sw.endpoints() == 1));
    let mut sender = filo_vnl::open(&sw.vnl()).unwrap();
    for i in 0..2 {
        sender
            .send(&test_frame([0xff; 6], [2, 0, 0, 0, 0, 7], i, 80))
            .unwrap();
    }
    cap.wait_exit(T);
    let mut out = String::new();
    std::io::Read::read_to_string(tshark.child.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert_eq!(
        out.lines().filter(|l| *l == "02:00:00:00:00:07").count(),
        2,
        "{out}"
    );
    let _ = std::io::stdout().flush();
}
