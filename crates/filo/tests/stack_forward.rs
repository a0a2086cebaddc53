//! A filo user-space stack as a router, from Rust (`Stack::builder().forwarding(true)`): two
//! interfaces on two filo switches, kernel namespaces (`filo ns`) on each side running real
//! programs: ping, curl against python's http.server, and ping with a TTL of 1; busybox
//! udhcpc, the kernel's SLAAC and rdisc6 against the stack's DHCP server and router
//! advertisements.

use std::process::{Command, Stdio};
use std::time::Duration;

use filo_stack::{DhcpServer, DropReason, RouterAdverts, Stack, StackBuilder};
use filo_test_support::*;

const FILO: &str = env!("CARGO_BIN_EXE_filo");
const T: Duration = Duration::from_secs(30);

/// Runs `filo ns ARGS` to completion: (exit code, stdout, stderr).
fn ns_out(args: &[&str]) -> (i32, String, String) {
    filo_ns_out(FILO, args, Duration::from_secs(90))
}

/// Two switches (LAN 10.81.0.0/24, fd81::/64; WAN 10.82.0.0/24, fd82::/64, MTU 1400), a
/// stack routing between them (vde0 .1 on the LAN, vde1 .1 on the WAN) made by `builder`,
/// and a server on the WAN: python's http.server on 10.82.0.10 and fd82::10, port 8000, its
/// access log in `access.log`; with `route_back` its gateway is the stack.
struct Lab {
    tmp: TempDir,
    lan: FiloSwitch,
    _wan: FiloSwitch,
    router: Stack,
    _server: Polite,
}

impl Lab {
    fn start(route_back: bool, builder: impl FnOnce(StackBuilder) -> StackBuilder) -> Lab {
        for p in ["ping", "curl", "python3"] {
            require(p);
        }
        let tmp = TempDir::new("filo-stack-fwd");
        let lan = FiloSwitch::start(FILO, &tmp, "lan", &[]);
        let wan = FiloSwitch::start(FILO, &tmp, "wan", &[]);
        let router = builder(
            Stack::builder()
                .interface(lan.vnl(), "ip=10.81.0.1/24,ip=fd81::1/64")
                .interface(wan.vnl(), "ip=10.82.0.1/24,ip=fd82::1/64,mtu=1400"),
        )
        .build()
        .unwrap();
        std::fs::write(tmp.join("hello.txt"), "hello across the stack\n").unwrap();
        let script = format!(
            "exec python3 -m http.server -b :: -d {} 8000 2>{}",
            tmp.path().display(),
            tmp.join("access.log").display()
        );
        let wan_vnl = wan.vnl();
        let mut c = Command::new(FILO);
        c.args(["ns", "--ip", "10.82.0.10/24", "--ip", "fd82::10/64"]);
        if route_back {
            c.args(["--gw", "10.82.0.1", "--gw", "fd82::1"]);
        }
        c.args([&wan_vnl, "--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let server = Polite(Proc::spawn(&mut c));
        // The stack itself reaches the server (its own traffic, not forwarded) once it is up.
        assert!(
            wait_until(T, || router
                .ping("10.82.0.10".parse().unwrap(), 1, 56, Duration::from_secs(1))
                .is_ok()),
            "the server's namespace did not come up"
        );
        // Its IPv6 address too (usable once duplicate address detection is done; until then
        // the kernel does not answer neighbour solicitations for it).
        assert!(
            wait_until(T, || router
                .ping("fd82::10".parse().unwrap(), 1, 56, Duration::from_secs(1))
                .is_ok()),
            "the server's IPv6 address did not come up"
        );
        Lab {
            tmp,
            lan,
            _wan: wan,
            router,
            _server: server,
        }
    }

    /// `sh -c SCRIPT` on a LAN host 10.81.0.10, fd81::10 whose gateway is the stack.
    fn lan_host(&self, script: &str) -> (i32, String, String) {
        ns_out(&[
            "--ip",
            "10.81.0.10/24",
            "--ip",
            "fd81::10/64",
            "--gw",
            "10.81.0.1",
            "--gw",
            "fd81::1",
            &self.lan.vnl(),
            "--",
            "sh",
            "-c",
            script,
        ])
    }
}

#[test]
fn a_stack_with_forwarding_routes_ping_and_curl_between_two_namespaces() {
    let lab = Lab::start(true, |b| b.name("fwd-router").forwarding(true));
    let router = &lab.router;
    // The namespaces' IPv6 addresses are usable once duplicate address detection is done: the
    // LAN host waits for one ping6 before counting.
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
    let (code, out, err) = lab.lan_host(lan_script);
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

#[test]
fn masquerade_and_a_filter_as_builder_options_and_a_rule_added_at_run_time() {
    // The server has no route back to the LAN: only masquerade lets it answer.
    let lab = Lab::start(false, |b| {
        b.forwarding(true)
            .masquerade(1)
            .filter("forward reject out vde1 proto tcp dport 8001")
    });
    let script = "for i in 1 2 3 4 5 6 7 8 9 10; do \
                    curl -s -m 2 http://10.82.0.10:8000/hello.txt && break; sleep 0.5; done; \
                  curl -s -m 5 http://10.82.0.10:8001/; echo refused=$?";
    let (code, out, err) = lab.lan_host(script);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("hello across the stack"), "{out}");
    // curl's 7: could not connect (a reset at once, not a timeout's 28).
    assert!(out.contains("refused=7"), "{out}");
    let log = std::fs::read_to_string(lab.tmp.join("access.log")).unwrap();
    let from = http_requesters(&log, "/hello.txt");
    assert!(!from.is_empty(), "{log}");
    assert!(
        from.iter()
            .all(|a| a.trim_start_matches("::ffff:") == "10.82.0.1"),
        "the server sees the stack's WAN address: {log}"
    );
    let rules = lab
        .router
        .hook_print("filter")
        .unwrap_or_default()
        .join("\n");
    assert!(rules.contains("dport 8001"), "{rules}");
    // A rule added at run time takes effect at once.
    let before = lab.router.counters().get(DropReason::Hook);
    assert!(
        matches!(
            lab.router
                .hook_command("filter", "add", "forward drop proto icmp"),
            Some(Ok(_))
        ),
        "filter/add"
    );
    let (_, out, _) = lab.lan_host("ping -c 1 -W 1 10.82.0.10; echo ping=$?");
    assert!(out.contains("ping=1"), "{out}");
    assert!(lab.router.counters().get(DropReason::Hook) > before);
}

#[test]
fn tcp_super_frames_from_a_filo_switch_are_segmented_toward_a_plain_switch() {
    for p in ["curl", "python3", "sha256sum"] {
        require(p);
    }
    // LAN: a filo switch (TCP super-frames of up to 64 KiB); WAN: Debian's vde_switch (plain
    // frames of at most the MTU). A server on the LAN sends a file to a client on the WAN.
    let tmp = TempDir::new("filo-stack-seg");
    let lan = FiloSwitch::start(FILO, &tmp, "lan", &[]);
    let wan = DebSwitch::start(&tmp, "wan");
    let router = Stack::builder()
        .interface(lan.vnl(), "ip=10.83.0.1/24")
        .interface(wan.vnl(), "ip=10.84.0.1/24")
        .forwarding(true)
        .build()
        .unwrap();
    let www = tmp.join("www");
    std::fs::create_dir(&www).unwrap();
    let page: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(www.join("big.bin"), &page).unwrap();
    let script = format!(
        "exec python3 -m http.server -d {} 8000 2>/dev/null",
        www.display()
    );
    let lan_vnl = lan.vnl();
    let mut c = Command::new(FILO);
    c.args(["ns", "--ip", "10.83.0.10/24", "--gw", "10.83.0.1", &lan_vnl])
        .args(["--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _server = Polite(Proc::spawn(&mut c));
    assert!(
        wait_until(T, || router
            .ping("10.83.0.10".parse().unwrap(), 1, 56, Duration::from_secs(1))
            .is_ok()),
        "the server's namespace did not come up"
    );
    let got = tmp.join("got.bin");
    let script = format!(
        "for i in 1 2 3 4 5 6 7 8 9 10; do \
           curl -s -m 20 -o {got} http://10.83.0.10:8000/big.bin && break; sleep 0.5; done; \
         sha256sum {got} {want}",
        got = got.display(),
        want = www.join("big.bin").display()
    );
    let (code, out, err) = ns_out(&[
        "--ip",
        "10.84.0.10/24",
        "--gw",
        "10.84.0.1",
        &wan.vnl(),
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(std::fs::read(&got).unwrap_or_default().len(), page.len());
    let sums: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(sums.len() == 2 && sums[0] == sums[1], "{out}");
    let c = router.counters();
    assert_eq!(c.get(DropReason::TooBig), 0, "{c:?}");
}

/// busybox udhcpc's script: configures the lease (address, default route) and prints it.
const UDHCPC_SCRIPT: &str = "#!/bin/sh
case \"$1\" in bound|renew)
  ip addr add \"$ip/${mask:-24}\" dev \"$interface\"
  ip route replace default via \"$router\"
  echo \"lease=$ip router=$router dns=$dns domain=$domain\";;
esac
exit 0
";

#[test]
fn a_router_in_one_thread_serves_dhcp_and_slaac_to_a_namespace_and_masquerades_it() {
    for p in ["busybox", "rdisc6"] {
        require(p);
    }
    let files = TempDir::new("filo-stack-serve");
    let leases = files.join("leases");
    let script = write_script(files.join("udhcpc.sh"), UDHCPC_SCRIPT);
    let ip = |s: &str| s.parse().unwrap();
    let dhcp = DhcpServer::new(ip("10.81.0.100"), ip("10.81.0.199"))
        .static_lease([2, 0, 0, 0, 0x81, 0x0d], ip("10.81.0.50"))
        .dns(ip("10.81.0.53"))
        .domain("lab.example")
        .leases_file(&leases);
    // No route back to the LAN on the server: only the masquerade (and NAT66) lets it answer.
    let lab = Lab::start(false, |b| {
        b.forwarding(true)
            .dhcp_server(0, dhcp)
            .router_adverts(0, RouterAdverts::new().rdnss("fd81::53".parse().unwrap()))
            .masquerade(1)
            .rp_filter(true)
    });
    let host = |mac: &str, then: &str| {
        let conf = format!("mac={mac},slaac");
        let sh = format!(
            "ip link set vde0 up; busybox udhcpc -i vde0 -n -q -f -t 5 -T 1 -s {}; {then}",
            script.display()
        );
        let (code, out, err) = ns_out(&["--conf", &conf, &lab.lan.vnl(), "--", "sh", "-c", &sh]);
        assert_eq!(code, 0, "{out}\n{err}");
        out
    };
    // filo ns --slaac waits for the kernel's SLAAC address before running the script; rdisc6
    // solicits for 5 s (the stack answers within 0.5 s, but at least 3 s after its last
    // advertisement, RFC 4861 §6.2.6, which may have answered the kernel's solicitation).
    let out = host(
        "02:00:00:00:81:0d",
        "ip -6 -br addr show vde0 scope global; rdisc6 -1 -r 5 -w 1000 vde0; \
         for i in $(seq 10); do curl -s -m 2 http://10.82.0.10:8000/hello.txt && break; sleep 0.5; done; \
         for i in $(seq 10); do curl -s -m 2 'http://[fd82::10]:8000/hello.txt' && break; sleep 0.5; done",
    );
    assert!(
        out.contains("lease=10.81.0.50 router=10.81.0.1 dns=10.81.0.53 domain=lab.example"),
        "the static lease: {out}"
    );
    assert!(out.contains("fd81::ff:fe00:810d/64"), "SLAAC: {out}");
    assert!(out.contains("fd81::/64"), "rdisc6's prefix: {out}");
    assert!(out.contains("fd81::53"), "rdisc6's RDNSS: {out}");
    assert_eq!(
        out.matches("hello across the stack").count(),
        2,
        "IPv4 and IPv6 through the masquerade: {out}"
    );
    let log = std::fs::read_to_string(lab.tmp.join("access.log")).unwrap();
    let mut from = http_requesters(&log, "/hello.txt");
    from.sort();
    from.dedup();
    assert_eq!(
        from,
        ["10.82.0.1", "fd82::1"].map(|a| if a.contains(':') {
            a.to_string()
        } else {
            format!("::ffff:{a}")
        }),
        "the server sees the stack's WAN addresses: {log}"
    );
    let printed = lab.router.lease_print().join("\n");
    assert!(
        printed.starts_with("10.81.0.50 02:00:00:00:81:0d dev vde0 "),
        "{printed}"
    );
    let file = std::fs::read_to_string(&leases).unwrap_or_default();
    assert!(file.contains("02:00:00:00:81:0d 10.81.0.50"), "{file}");
    let nat = lab.router.hook_print("nat").unwrap_or_default().join("\n");
    assert!(nat.contains("tcp 10.81.0.50:"), "{nat}");
    // At run time: the server replaced by one with another range.
    assert!(lab.router.remove_dhcp_server(0));
    assert!(lab.router.lease_print().is_empty());
    let errors = lab
        .router
        .add_dhcp_server(0, &DhcpServer::new(ip("10.81.0.200"), ip("10.81.0.209")))
        .unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    let out = host("02:00:00:00:81:0e", "true");
    assert!(out.contains("lease=10.81.0.200 "), "{out}");
    assert_eq!(lab.router.leases().len(), 1);
}

#[test]
fn the_masquerade_translates_to_the_wan_address_dnsmasq_leased_to_the_stack() {
    for p in ["dnsmasq", "curl", "python3"] {
        require(p);
    }
    let tmp = TempDir::new("filo-stack-dhcpwan");
    let lan = FiloSwitch::start(FILO, &tmp, "lan", &[]);
    let wan = FiloSwitch::start(FILO, &tmp, "wan", &[]);
    std::fs::write(tmp.join("hello.txt"), "hello across the stack\n").unwrap();
    // The WAN: dnsmasq leasing 10.85.0.100-109, and a web server with no route to the LAN.
    let script = format!(
        "dnsmasq --conf-file=/dev/null --no-resolv --port=0 \
           --dhcp-range=10.85.0.100,10.85.0.109 --dhcp-leasefile={t}/dnsmasq.leases \
           --pid-file={t}/dnsmasq.pid; \
         exec python3 -m http.server -b :: -d {t} 8000 2>{t}/access.log",
        t = tmp.path().display()
    );
    let wan_vnl = wan.vnl();
    let mut c = Command::new(FILO);
    c.args([
        "ns",
        "--ip",
        "10.85.0.10/24",
        &wan_vnl,
        "--",
        "sh",
        "-c",
        &script,
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let _server = Polite(Proc::spawn(&mut c));
    let router = Stack::builder()
        .interface(lan.vnl(), "ip=10.86.0.1/24")
        .interface(wan.vnl(), "dhcp")
        .forwarding(true)
        .masquerade(1)
        .build()
        .unwrap();
    let leased = || {
        router.addrs().into_iter().find_map(|(i, c)| match c.addr {
            std::net::IpAddr::V4(a) if i == 1 => Some(a),
            _ => None,
        })
    };
    assert!(wait_until(T, || leased().is_some()), "no lease on the WAN");
    let addr = leased().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
    assert!(addr.to_string().starts_with("10.85.0.10"), "{addr}");
    let (code, out, err) = ns_out(&[
        "--ip",
        "10.86.0.10/24",
        "--gw",
        "10.86.0.1",
        &lan.vnl(),
        "--",
        "sh",
        "-c",
        "for i in $(seq 20); do \
           curl -s -m 2 http://10.85.0.10:8000/hello.txt && break; sleep 0.5; done",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("hello across the stack"), "{out}");
    let log = std::fs::read_to_string(tmp.join("access.log")).unwrap_or_default();
    let from = http_requesters(&log, "/hello.txt");
    assert!(
        !from.is_empty() && from.iter().all(|a| *a == format!("::ffff:{addr}")),
        "the server sees the leased address {addr}: {log}"
    );
    let nat = router.hook_print("nat").unwrap_or_default().join("\n");
    assert!(nat.contains(&format!("masquerade {addr} ")), "{nat}");
}

#[test]
fn the_stacks_stateless_dhcpv6_hands_isc_dhclient_its_dns_and_the_ras_set_the_o_flag() {
    for p in ["dhclient", "rdisc6"] {
        require(p);
    }
    let lab = Lab::start(true, |b| {
        b.forwarding(true)
            .dhcpv6_server(
                0,
                filo_stack::Dhcpv6Server {
                    dns: vec!["fd81::53".parse().unwrap()],
                    search: vec!["lab.example".into()],
                },
            )
            .router_adverts(0, RouterAdverts::new())
    });
    // dhclient's script keeps what it was told (the environment) in a file.
    let t = lab.tmp.path().display().to_string();
    std::fs::write(
        lab.tmp.join("dhclient-script"),
        format!("#!/bin/sh\n[ -n \"$new_dhcp6_name_servers\" ] && env > {t}/dhcp6.env\nexit 0\n"),
    )
    .unwrap();
    run(Command::new("chmod")
        .arg("755")
        .arg(lab.tmp.join("dhclient-script")));
    let script = format!(
        "rdisc6 -1 -r 5 -w 1000 vde0
         dhclient -6 -S -d -lf {t}/d6.leases -pf {t}/d6.pid -sf {t}/dhclient-script vde0 2>/dev/null &
         for i in $(seq 100); do [ -s {t}/dhcp6.env ] && break; sleep 0.2; done
         kill $!; true"
    );
    let (code, out, err) = ns_out(&["--slaac", &lab.lan.vnl(), "--", "sh", "-c", &script]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("Stateful other conf.") && l.ends_with("Yes")),
        "the RA's O flag: {out}"
    );
    let env = std::fs::read_to_string(lab.tmp.join("dhcp6.env")).unwrap_or_default();
    assert!(
        env.lines()
            .any(|l| l.trim() == "new_dhcp6_name_servers=fd81::53"),
        "{env}\n{out}"
    );
    assert!(
        env.lines()
            .any(|l| l.trim() == "new_dhcp6_domain_search=lab.example."),
        "{env}"
    );
}
