//! A filo user-space stack as a router, from Rust (`Stack::builder().forwarding(true)`): two
//! interfaces on two filo switches, kernel namespaces (`filo ns`) on each side running real
//! programs: ping, curl against python's http.server, and ping with a TTL of 1.

use std::process::{Command, Stdio};
use std::time::Duration;

use filo_stack::{DropReason, Stack};
use filo_test_support::*;

const FILO: &str = env!("CARGO_BIN_EXE_filo");
const T: Duration = Duration::from_secs(30);

/// Runs `filo ns ARGS` to completion: (exit code, stdout, stderr).
fn ns_out(args: &[&str]) -> (i32, String, String) {
    let mut c = Command::new(FILO);
    c.arg("ns")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (status, out, err) = Proc::spawn(&mut c).output(Duration::from_secs(90));
    (status.code().unwrap_or(-1), out, err)
}

#[test]
fn a_stack_with_forwarding_routes_ping_and_curl_between_two_namespaces() {
    for p in ["ping", "curl", "python3"] {
        require(p);
    }
    let tmp = TempDir::new("filo-stack-fwd");
    let lan = FiloSwitch::start(FILO, &tmp, "lan", &[]);
    let wan = FiloSwitch::start(FILO, &tmp, "wan", &[]);
    let router = Stack::builder()
        .name("fwd-router")
        .interface(lan.vnl(), "ip=10.81.0.1/24,ip=fd81::1/64")
        .interface(wan.vnl(), "ip=10.82.0.1/24,ip=fd82::1/64,mtu=1400")
        .forwarding(true)
        .build()
        .unwrap();
    // The server on the WAN side: python's http.server on 10.82.0.10 and fd82::10.
    std::fs::write(tmp.join("hello.txt"), "hello across the stack\n").unwrap();
    let script = format!(
        "exec python3 -m http.server -b :: -d {} 8000 2>/dev/null",
        tmp.path().display()
    );
    let wan_vnl = wan.vnl();
    let mut c = Command::new(FILO);
    c.args(["ns", "--ip", "10.82.0.10/24", "--ip", "fd82::10/64"])
        .args(["--gw", "10.82.0.1", "--gw", "fd82::1", &wan_vnl])
        .args(["--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _server = Polite(Proc::spawn(&mut c));
    // The stack itself reaches the server (its own traffic, not forwarded) once it is up. The
    // namespaces' IPv6 addresses are usable once duplicate address detection is done: the LAN
    // host waits for one ping6 before counting.
    assert!(
        wait_until(T, || router
            .ping("10.82.0.10".parse().unwrap(), 1, 56, Duration::from_secs(1))
            .is_ok()),
        "the server's namespace did not come up"
    );
    let lan_script = "for i in 1 2 3 4 5 6 7 8 9 10; do \
                        curl -s -m 2 -o /dev/null http://10.82.0.10:8000/hello.txt && break; \
                        sleep 0.5; done; \
                      for i in 1 2 3 4 5 6 7 8 9 10; do \
                        ping -6 -c 1 -W 1 fd82::10 >/dev/null && break; sleep 0.5; done; \
                      ping -c 3 -i 0.2 -W 2 10.82.0.10; echo ping=$?; \
                      ping -6 -c 3 -i 0.2 -W 2 fd82::10; echo ping6=$?; \
                      curl -s -m 5 http://10.82.0.10:8000/hello.txt; \
                      curl -s -m 5 'http://[fd82::10]:8000/hello.txt'; \
                      ping -c 1 -t 1 -W 2 10.82.0.10; \
                      ping -c 1 -W 2 10.99.0.1; true";
    let (code, out, err) = ns_out(&[
        "--ip",
        "10.81.0.10/24",
        "--ip",
        "fd81::10/64",
        "--gw",
        "10.81.0.1",
        "--gw",
        "fd81::1",
        &lan.vnl(),
        "--",
        "sh",
        "-c",
        lan_script,
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("ping=0"), "{out}");
    assert!(out.contains("ping6=0"), "{out}");
    assert_eq!(
        out.matches("hello across the stack").count(),
        2,
        "curl over IPv4 and IPv6: {out}"
    );
    assert!(
        out.contains("From 10.81.0.1 icmp_seq=1 Time to live exceeded"),
        "ttl: {out}"
    );
    assert!(
        out.contains("Destination Net Unreachable"),
        "no route: {out}"
    );
    let c = router.counters();
    assert!(c.forwarded >= 12, "{c:?}");
    assert!(c.get(DropReason::TtlExceeded) >= 1, "{c:?}");
    assert!(c.get(DropReason::NoRoute) >= 1, "{c:?}");
}
