//! `filo stack` as a new user runs it: several stack processes on one switch without
//! `--name`, the shared configuration flags, and error messages that name the problem once.

use std::process::Command;
use std::time::Duration;

use filo_test_support::*;

const FILO: &str = env!("CARGO_BIN_EXE_filo");
const T: Duration = Duration::from_secs(20);

/// The MAC a stack process used, read from the switch's MAC table after it sent something.
fn macs(sw: &FiloSwitch) -> Vec<String> {
    sw.console("hash/print")
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.len() == 17 && w.matches(':').count() == 5)
                .map(str::to_string)
        })
        .collect()
}

#[test]
fn stack_processes_without_a_name_never_share_a_mac() {
    let tmp = TempDir::new("filo-scli1");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    let www = tmp.join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello from a stack\n").unwrap();
    // The README's pair: a server and a client, neither named.
    let _server = Proc::spawn(
        Command::new(FILO)
            .args(["stack", "http-serve", "--vnl", &sw.vnl()])
            .args(["--ip", "10.61.0.80/24"])
            .arg(&www)
            .stderr(test_log()),
    );
    let out = Proc::spawn(
        Command::new(FILO)
            .args(["stack", "fetch", "--vnl", &sw.vnl(), "--ip", "10.61.0.7/24"])
            .args(["-t", "10", "http://10.61.0.80/index.html"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped()),
    )
    .output(T);
    assert!(out.0.success(), "fetch failed: {}", out.2);
    assert_eq!(out.1, "hello from a stack\n");
    // And a third, pinging the server: three unnamed processes, three MACs.
    let ping = Proc::spawn(
        Command::new(FILO)
            .args([
                "stack",
                "ping",
                "--vnl",
                &sw.vnl(),
                "--conf",
                "ip=10.61.0.8/24",
            ])
            .args(["-c", "6", "-i", "0.3", "10.61.0.80"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped()),
    );
    // While the server and the pinger both live, the switch knows two MACs (a shared one
    // would be one entry, moving between their ports).
    let two = wait_until(Duration::from_secs(5), || {
        let mut m = macs(&sw);
        m.sort();
        m.dedup();
        m.len() >= 2
    });
    let (status, text, err) = ping.output(T);
    assert!(status.success(), "{text}{err}");
    assert!(
        text.contains("6 packets transmitted, 6 received, 0% packet loss"),
        "{text}"
    );
    assert!(text.contains("rtt min/avg/max/mdev = "), "{text}");
    assert!(two, "the switch never saw two MACs: {:?}", macs(&sw));
}

#[test]
fn a_named_stack_keeps_its_mac_across_runs() {
    let tmp = TempDir::new("filo-scli2");
    let sw = FiloSwitch::start(FILO, &tmp, "sw", &[]);
    // Nobody answers: each run announces itself (ARP) with its MAC; read the switch's
    // table while it runs (a port's entries go when it closes).
    let mac_of_a_run = |name: &str| {
        let mut p = Proc::spawn(
            Command::new(FILO)
                .args(["stack", "ping", "--vnl", &sw.vnl(), "--name", name])
                .args(["--ip", "10.62.0.8/24", "-c", "20", "-W", "0.3", "10.62.0.9"])
                .stdout(test_log())
                .stderr(test_log()),
        );
        let mut m = Vec::new();
        assert!(wait_until(Duration::from_secs(5), || {
            m = macs(&sw);
            !m.is_empty()
        }));
        p.terminate(Duration::from_secs(5));
        assert!(wait_until(Duration::from_secs(5), || macs(&sw).is_empty()));
        m
    };
    let first = mac_of_a_run("steady");
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(
        mac_of_a_run("steady"),
        first,
        "the same name gave another MAC"
    );
    assert_ne!(
        mac_of_a_run("other"),
        first,
        "another name gave the same MAC"
    );
}

fn filo_err(args: &[&str]) -> String {
    let out = Command::new(FILO).args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn configuration_is_one_dialect_everywhere() {
    // The same bad item gets the same words from a user-space stack, filo ns and a named
    // stack (a prefix length is required everywhere).
    let want = "bad configuration item `ip=10.0.0.1`: the prefix length is missing";
    for args in [
        &[
            "stack",
            "ping",
            "--vnl",
            "null://",
            "--conf",
            "ip=10.0.0.1",
            "10.0.0.2",
        ][..],
        &[
            "stack", "ping", "--vnl", "null://", "--ip", "10.0.0.1", "10.0.0.2",
        ],
        &["ns", "--ip", "10.0.0.1", "null://", "--", "true"],
        &["ns", "--conf", "ip=10.0.0.1", "null://", "--", "true"],
        &[
            "stack",
            "serve",
            "/nonexistent/s",
            "--vnl",
            "null://",
            "--ip",
            "10.0.0.1",
        ],
    ] {
        let e = filo_err(args);
        assert!(e.contains(want), "{args:?}: {e}");
    }
    // MTU limits: the help and the error say the same range, for flags and items alike.
    for args in [
        &[
            "stack", "ping", "--vnl", "null://", "--mtu", "100", "10.0.0.2",
        ][..],
        &["ns", "--mtu", "100", "null://", "--", "true"],
        &["ns", "--conf", "mtu=100", "null://", "--", "true"],
    ] {
        let e = filo_err(args);
        assert!(e.contains("1280 <= N <= 65000"), "{args:?}: {e}");
    }
    let help = Command::new(FILO)
        .args(["stack", "ping", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("1280..65000") && !help.contains("9216"),
        "{help}"
    );
    // Items only one side knew: hostname= for stacks, eth/auto/mac= for filo ns.
    let ns = Command::new(FILO)
        .args([
            "ns",
            "--conf",
            "eth,mac=02:00:00:00:12:34,hostname=box",
            "null://",
        ])
        .args(["--", "sh", "-c", "ip -o link show vde0; hostname"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&ns.stdout);
    assert!(
        ns.status.success(),
        "{out} {}",
        String::from_utf8_lossy(&ns.stderr)
    );
    assert!(out.contains("link/ether 02:00:00:00:12:34 "), "{out}");
    assert!(out.ends_with("\nbox\n"), "{out}");
}

#[test]
fn a_command_without_its_double_dash_is_explained() {
    let e = filo_err(&["ns", "null://", "ip", "link"]);
    assert!(
        e.contains("\"ip\" is not a VNL") && e.contains("put `--` before it"),
        "{e}"
    );
    // --vnl works for filo ns as for every other command.
    let out = Command::new(FILO)
        .args(["ns", "--vnl", "null://", "--", "ip", "link", "show", "vde0"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn help_has_no_repeated_notes() {
    for sub in [&["ns"][..], &["stack", "ping"], &["switch"], &["plug"]] {
        let out = Command::new(FILO).args(sub).arg("--help").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("No short form"), "{sub:?}: {text}");
    }
}
