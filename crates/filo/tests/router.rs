//! `filo router` between two filo switches, with kernel namespaces (`filo ns`) on each side
//! running real programs: ping, curl against python's http.server, tracepath, and
//! `filo ns --dhcp` / `--slaac` configured by the router's own DHCP server and RAs.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use filo_test_support::*;

const FILO: &str = env!("CARGO_BIN_EXE_filo");
const T: Duration = Duration::from_secs(30);
/// The router's WAN interface (vde1) unless a test says otherwise.
const WAN_CONF: &str = "ip=10.72.0.2/24,ip=fd72::2/64,mtu=1400";

/// Runs `filo ns ARGS` to completion: (exit code, stdout, stderr).
fn ns_out(args: &[&str]) -> (i32, String, String) {
    filo_ns_out(FILO, args, Duration::from_secs(60))
}

/// The client addresses of http.server's access log lines for GET /hello.txt.
fn requesters(log: &str) -> Vec<&str> {
    http_requesters(log, "/hello.txt")
}

fn ns_bg(args: &[&str]) -> Proc {
    let mut c = Command::new(FILO);
    c.arg("ns")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Proc::spawn(&mut c)
}

/// Two switches (LAN, WAN) and `filo router` between them: vde0 on the LAN 10.71.0.1/24,
/// fd71::1/64 (DHCP server, RAs); vde1 on the WAN 10.72.0.2/24, fd72::2/64, MTU 1400.
struct Net {
    tmp: TempDir,
    lan: FiloSwitch,
    wan: FiloSwitch,
    router: Proc,
    extra: Vec<String>,
    mgmt: PathBuf,
    lan_conf: String,
    wan_conf: String,
}

impl Net {
    fn start() -> Net {
        Net::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Net {
        Net::start_lan("ip=10.71.0.1/24,ip=fd71::1/64", extra)
    }

    /// With `lan_conf` as vde0's --conf.
    fn start_lan(lan_conf: &str, extra: &[&str]) -> Net {
        Net::start_confs(lan_conf, WAN_CONF, extra)
    }

    /// With `lan_conf` as vde0's --conf and `wan_conf` as vde1's.
    fn start_confs(lan_conf: &str, wan_conf: &str, extra: &[&str]) -> Net {
        let tmp = TempDir::new("filo-router");
        let lan = FiloSwitch::start(FILO, &tmp, "lan", &[]);
        let wan = FiloSwitch::start(FILO, &tmp, "wan", &[]);
        let mgmt = tmp.join("r.mgmt");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let router = Net::spawn_router(&lan, &wan, &mgmt, lan_conf, wan_conf, &extra);
        Net {
            tmp,
            lan,
            wan,
            router,
            extra,
            mgmt,
            lan_conf: lan_conf.to_string(),
            wan_conf: wan_conf.to_string(),
        }
    }

    fn spawn_router(
        lan: &FiloSwitch,
        wan: &FiloSwitch,
        mgmt: &PathBuf,
        lan_conf: &str,
        wan_conf: &str,
        extra: &[String],
    ) -> Proc {
        let mut c = Command::new(FILO);
        c.args(["router", "--vnl", &lan.vnl(), "--conf", lan_conf])
            .args(["--vnl", &wan.vnl(), "--conf", wan_conf])
            .args([
                "--dhcp-server",
                "vde0=10.71.0.100-10.71.0.199",
                "--radv",
                "vde0",
                "-M",
            ])
            .arg(mgmt)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(test_log());
        let router = Proc::spawn(&mut c);
        assert!(wait_until(T, || mgmt.exists()), "the router did not start");
        router
    }

    /// Stops the router (SIGTERM) and starts it again with the same flags.
    fn restart_router(&mut self) {
        assert!(self.router.terminate(T).success());
        assert!(
            !self.mgmt.exists(),
            "the management socket outlived the router"
        );
        self.router = Net::spawn_router(
            &self.lan,
            &self.wan,
            &self.mgmt,
            &self.lan_conf,
            &self.wan_conf,
            &self.extra,
        );
    }

    /// `sh -c SCRIPT` on a LAN host 10.71.0.10 routed through the router.
    fn lan_host(&self, script: &str) -> (i32, String, String) {
        ns_out(&[
            "--ip",
            "10.71.0.10/24",
            "--gw",
            "10.71.0.1",
            &self.lan.vnl(),
            "--",
            "sh",
            "-c",
            script,
        ])
    }

    /// A server on the WAN: 10.72.0.10, fd72::10, python's http.server on port 8000.
    fn server(&self) -> Proc {
        self.server_with(&["--gw", "10.72.0.2", "--gw", "fd72::2"])
    }

    /// The server with `extra` network flags; its request log goes to `access.log`.
    fn server_with(&self, extra: &[&str]) -> Proc {
        std::fs::write(self.tmp.join("hello.txt"), "hello across the router\n").unwrap();
        let dir = self.tmp.path().to_string_lossy().into_owned();
        let log = self.tmp.join("access.log");
        let script = format!(
            "exec python3 -m http.server -d {dir} 8000 2>{}",
            log.display()
        );
        let mut args = vec!["--ip", "10.72.0.10/24", "--ip", "fd72::10/64"];
        args.extend(extra);
        let vnl = self.wan.vnl();
        args.extend([vnl.as_str(), "--", "sh", "-c", &script]);
        let p = ns_bg(&args);
        // Reachable from the WAN side itself before anything crosses the router.
        let ok = wait_until(T, || {
            ns_out(&[
                "--ip",
                "10.72.0.11/24",
                &self.wan.vnl(),
                "--",
                "curl",
                "-s",
                "-m",
                "2",
                "http://10.72.0.10:8000/hello.txt",
            ])
            .0 == 0
        });
        assert!(ok, "the server did not come up");
        p
    }
}

impl Net {
    /// python's http.server on :: on the WAN at fd72::10 (the shared server() is IPv4-only,
    /// for the IPv4 logs), with `extra` network flags; its request log goes to `access.log`.
    fn server6(&self, extra: &[&str]) -> Proc {
        std::fs::write(self.tmp.join("hello.txt"), "hello across the router\n").unwrap();
        let script = format!(
            "exec python3 -m http.server --bind :: -d {} 8000 2>{}",
            self.tmp.path().display(),
            self.tmp.join("access.log").display()
        );
        let wan = self.wan.vnl();
        let mut args = vec!["--ip", "fd72::10/64"];
        args.extend(extra);
        args.extend([wan.as_str(), "--", "sh", "-c", &script]);
        ns_bg(&args)
    }
}

#[test]
fn ping_curl_ttl_expiry_and_path_mtu_across_the_router() {
    for p in ["ping", "curl", "python3", "tracepath"] {
        require(p);
    }
    let net = Net::start();
    let _server = net.server();
    let script = "ping -c 3 -i 0.2 -W 2 10.72.0.10; echo ping=$?; \
                  curl -s -m 5 http://10.72.0.10:8000/hello.txt; \
                  ping -c 1 -t 1 -W 2 10.72.0.10; \
                  ping -c 1 -W 2 -M do -s 1450 10.72.0.10; \
                  ping -c 1 -W 2 -M do -s 1450 10.72.0.10; \
                  tracepath -n 10.72.0.10; \
                  ping -c 1 -W 2 10.99.0.1; true";
    let (code, out, err) = net.lan_host(script);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("3 packets transmitted, 3 received"), "{out}");
    assert!(out.contains("ping=0"), "{out}");
    assert!(out.contains("hello across the router"), "curl: {out}");
    assert!(
        out.contains("From 10.71.0.1 icmp_seq=1 Time to live exceeded"),
        "ttl: {out}"
    );
    assert!(
        out.contains("mtu = 1400") || out.contains("mtu=1400"),
        "pmtu: {out}"
    );
    assert!(out.contains("pmtu 1400"), "tracepath: {out}");
    assert!(out.contains("1:  10.71.0.1"), "tracepath hop: {out}");
    assert!(
        out.contains("Destination Net Unreachable"),
        "no route: {out}"
    );
    let stat = console(&net.mgmt, "stat");
    let count = |name: &str| -> u64 {
        let line = format!("drop {name} ");
        stat.lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {stat}"))
    };
    // ping -t 1 and tracepath's first hop.
    assert!(count("ttl_exceeded") >= 2, "{stat}");
    assert_eq!(count("no_route"), 1, "{stat}");
    assert!(count("too_big") >= 1, "{stat}");
    let routes = console(&net.mgmt, "route/print");
    assert!(
        routes.contains("10.72.0.0/24 dev vde1 connected"),
        "{routes}"
    );
}

#[test]
fn dhcp_lease_and_slaac_from_the_router_then_ipv6_across() {
    require("ping");
    require("python3");
    require("curl");
    let net = Net::start();
    let _server = net.server();
    let (code, out, err) = ns_out(&[
        "--dhcp",
        "--slaac",
        &net.lan.vnl(),
        "--",
        "sh",
        "-c",
        "ip -4 -br addr show vde0; ip -6 -br addr show vde0 scope global; ip route show default; \
         ping -c 2 -i 0.2 -W 2 10.72.0.10; ping -6 -c 2 -i 0.2 -W 2 fd72::10; \
         ping -6 -c 1 -W 2 -M do -s 1400 fd72::10; ping -6 -c 1 -t 1 -W 2 fd72::10; true",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("10.71.0.1"), "no lease: {out}");
    assert!(out.contains("default via 10.71.0.1 dev vde0"), "{out}");
    assert!(out.contains("fd71::"), "no SLAAC address: {out}");
    assert_eq!(
        out.matches("2 packets transmitted, 2 received").count(),
        2,
        "{out}"
    );
    assert!(
        out.contains("Packet too big: mtu=1400"),
        "IPv6 path MTU: {out}"
    );
    assert!(
        out.contains("Time exceeded: Hop limit"),
        "IPv6 hop limit: {out}"
    );
    let leases = console(&net.mgmt, "leases/print");
    assert!(
        leases.contains("10.71.0.1") && leases.contains("dev vde0"),
        "{leases}"
    );
}

#[test]
fn masquerade_hides_the_lan_behind_the_routers_wan_address() {
    require("ping");
    require("python3");
    require("curl");
    let net = Net::start_with(&["--masquerade", "vde1"]);
    // No route back to the LAN: only translated packets can be answered.
    let _server = net.server_with(&[]);
    let (code, out, err) = net.lan_host(
        "curl -s -m 5 http://10.72.0.10:8000/hello.txt; ping -c 2 -i 0.2 -W 2 10.72.0.10",
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("hello across the router"), "{out}");
    assert!(out.contains("2 packets transmitted, 2 received"), "{out}");
    let log = std::fs::read_to_string(net.tmp.join("access.log")).unwrap();
    let from = requesters(&log);
    // The WAN side's own check came from 10.72.0.11; the LAN host's request from the router.
    assert!(from.contains(&"10.72.0.2"), "{log}");
    assert!(!from.contains(&"10.71.0.10"), "{log}");
    let nat = console(&net.mgmt, "nat/print");
    assert!(nat.contains("tcp 10.71.0.10:"), "{nat}");
    assert!(nat.contains("-> 10.72.0.10:8000 as 10.72.0.2:"), "{nat}");
    assert!(nat.contains("icmp 10.71.0.10:"), "{nat}");
    assert!(nat.contains("refused 0"), "{nat}");
}

#[test]
fn the_filter_rejects_drops_and_lets_established_traffic_through_with_counters() {
    require("curl");
    require("python3");
    require("ping");
    let tmp = TempDir::new("filo-router-rules");
    let rules = tmp.join("rules");
    std::fs::write(
        &rules,
        "# LAN to WAN\nreject in vde0 proto tcp dport 8001\ndrop in vde0 proto tcp dport 8002\n\
         accept state established,related\ndrop in vde1 state new\n",
    )
    .unwrap();
    let net = Net::start_with(&["--filter", rules.to_str().unwrap()]);
    let _server = net.server();
    let (code, out, err) = net.lan_host(
        "curl -s -m 5 http://10.72.0.10:8000/hello.txt; \
         curl -s -m 5 http://10.72.0.10:8001/; echo rejected=$?; \
         curl -s -m 2 http://10.72.0.10:8002/; echo dropped=$?",
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("hello across the router"), "{out}");
    // 7: connection refused (the reset); 28: timed out.
    assert!(out.contains("rejected=7"), "{out}");
    assert!(out.contains("dropped=28"), "{out}");
    // New connections from the WAN are dropped.
    let (_, out, _) = ns_out(&[
        "--ip",
        "10.72.0.12/24",
        "--gw",
        "10.72.0.2",
        &net.wan.vnl(),
        "--",
        "ping",
        "-c",
        "1",
        "-W",
        "1",
        "10.71.0.10",
    ]);
    assert!(out.contains("1 packets transmitted, 0 received"), "{out}");
    let rules = console(&net.mgmt, "filter/print");
    let count = |n: usize| -> u64 {
        let line = rules
            .lines()
            .find(|l| l.starts_with(&format!("{n} ")))
            .unwrap_or_else(|| panic!("no rule {n}: {rules}"));
        line.split(" packets ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|p| p.parse().ok())
            .unwrap()
    };
    assert_eq!(count(1), 1, "one SYN rejected: {rules}");
    assert!(count(2) >= 2, "the SYN and its retries: {rules}");
    assert!(count(3) >= 4, "the established HTTP exchange: {rules}");
    assert_eq!(count(4), 1, "the ping from the WAN: {rules}");
    // Live changes: a rule for the router's own input, a bad number, a bad rule.
    let added = console(&net.mgmt, "filter/add input drop in vde1 proto icmp");
    assert!(added.contains("rule 5 added"), "{added}");
    let deleted = console(&net.mgmt, "filter/del 9");
    assert!(deleted.contains("1022"), "{deleted}");
    let bad = console(&net.mgmt, "filter/add drop frm 10.0.0.0/8");
    assert!(bad.contains("\"frm\""), "{bad}");
    let (_, out, _) = ns_out(&[
        "--ip",
        "10.72.0.12/24",
        &net.wan.vnl(),
        "--",
        "ping",
        "-c",
        "1",
        "-W",
        "1",
        "10.72.0.2",
    ]);
    assert!(out.contains("1 packets transmitted, 0 received"), "{out}");
    assert!(
        console(&net.mgmt, "filter/print").contains("5 input drop in vde1 proto icmp packets 1 ")
    );
}

#[test]
fn leases_survive_a_router_restart() {
    let tmp = TempDir::new("filo-router-leases");
    let file = tmp.join("leases");
    let keep = format!("vde0={}", file.display());
    let mut net = Net::start_with(&["--dhcp-leases", &keep]);
    let lan = net.lan.vnl();
    let lease = |mac: &str| {
        let conf = format!("mac={mac},dhcp");
        let (code, out, err) = ns_out(&[
            "--conf", &conf, &lan, "--", "ip", "-4", "-br", "addr", "show", "vde0",
        ]);
        assert_eq!(code, 0, "{err}");
        out.split_whitespace()
            .find(|w| w.starts_with("10.71.0."))
            .unwrap_or_else(|| panic!("no lease: {out}"))
            .to_string()
    };
    let a = lease("02:00:00:00:71:0a");
    assert_eq!(a, "10.71.0.100/24");
    net.restart_router();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("02:00:00:00:71:0a 10.71.0.100"), "{text}");
    // Another client first: the restarted router knows .100 is taken.
    assert_eq!(lease("02:00:00:00:71:0b"), "10.71.0.101/24");
    assert_eq!(lease("02:00:00:00:71:0a"), "10.71.0.100/24");
}

#[test]
fn a_port_forward_reaches_a_lan_server_from_the_wan() {
    require("python3");
    require("curl");
    let net = Net::start_with(&["--forward", "vde1:tcp:8080=10.71.0.50:8000"]);
    std::fs::write(net.tmp.join("hello.txt"), "hello from the lan\n").unwrap();
    let log = net.tmp.join("lan-access.log");
    let script = format!(
        "exec python3 -m http.server -d {} 8000 2>{}",
        net.tmp.path().display(),
        log.display()
    );
    let lan = net.lan.vnl();
    let _server = ns_bg(&[
        "--ip",
        "10.71.0.50/24",
        "--gw",
        "10.71.0.1",
        &lan,
        "--",
        "sh",
        "-c",
        &script,
    ]);
    // A WAN host with no route to the LAN: only the router's WAN address is reachable.
    let wan = net.wan.vnl();
    let mut out = String::new();
    let wan_curl = |url: &str| {
        ns_out(&[
            "--ip",
            "10.72.0.11/24",
            &wan,
            "--",
            "curl",
            "-s",
            "-m",
            "2",
            url,
        ])
    };
    let ok = wait_until(T, || {
        let (code, o, _) = wan_curl("http://10.72.0.2:8080/hello.txt");
        out = o;
        code == 0
    });
    assert!(ok, "curl through the port forward failed: {out}");
    assert!(out.contains("hello from the lan"), "{out}");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.lines()
            .any(|l| l.starts_with("10.72.0.11 ") && l.contains("GET /hello.txt")),
        "the LAN server sees the WAN client's address: {log}"
    );
    let nat = console(&net.mgmt, "nat/print");
    assert!(
        nat.contains("forward tcp 10.72.0.2:8080 to 10.71.0.50:8000"),
        "{nat}"
    );
    assert!(
        nat.contains("tcp 10.72.0.11:") && nat.contains("forwarded to 10.71.0.50:8000"),
        "{nat}"
    );
    // Another port of the router's WAN address is not forwarded.
    assert_ne!(wan_curl("http://10.72.0.2:8000/hello.txt").0, 0);
}

#[test]
fn stateless_dhcpv6_hands_isc_dhclient_the_lan_dns_and_the_ras_say_so() {
    require("dhclient");
    require("rdisc6");
    let net = Net::start_lan(
        "ip=10.71.0.1/24,ip=fd71::1/64,dns=fd71::53,dns=10.71.0.53,domain=lab.example",
        &[],
    );
    let env = net.tmp.join("dhcp6.env");
    let hook = net.tmp.join("dhclient-script");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\n[ -n \"$new_dhcp6_name_servers\" ] && env > {}\nexit 0\n",
            env.display()
        ),
    )
    .unwrap();
    assert!(Command::new("chmod")
        .arg("755")
        .arg(&hook)
        .status()
        .unwrap()
        .success());
    let t = net.tmp.path().display().to_string();
    let script = format!(
        "for i in $(seq 50); do [ -z \"$(ip -6 addr show dev vde0 tentative)\" ] && break; sleep 0.2; done
         rdisc6 -1 vde0
         dhclient -6 -S -d -lf {t}/d6.leases -pf {t}/d6.pid -sf {} vde0 2>/dev/null &
         for i in $(seq 100); do [ -s {} ] && break; sleep 0.2; done
         kill $!; true",
        hook.display(),
        env.display()
    );
    let (code, out, err) = ns_out(&["--slaac", &net.lan.vnl(), "--", "sh", "-c", &script]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("Stateful other conf.") && l.ends_with("Yes")),
        "the RA's O flag: {out}"
    );
    let env = std::fs::read_to_string(&env).unwrap_or_default();
    let var = |name: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or("")
            .trim()
            .to_string()
    };
    assert_eq!(var("new_dhcp6_name_servers"), "fd71::53", "{env}\n{out}");
    assert_eq!(var("new_dhcp6_domain_search"), "lab.example.", "{env}");
}

#[test]
fn nptv6_gives_the_lan_the_external_prefix_on_the_wan_and_back() {
    require("python3");
    require("curl");
    let net = Net::start_with(&["--nptv6", "vde1=fd71::/64=2001:db8:71::/64"]);
    let _server = net.server6(&["--gw", "fd72::2"]);
    let (code, out, err) = net.lan_host(
        "ip -6 addr add fd71::10/64 dev vde0 nodad && ip -6 route add default via fd71::1 && \
         curl -sS -m 5 --retry 5 --retry-delay 1 --retry-all-errors 'http://[fd72::10]:8000/hello.txt'",
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("hello across the router"), "{out}");
    let log = std::fs::read_to_string(net.tmp.join("access.log")).unwrap();
    // fd71::10 with the prefix 2001:db8:71::/64 and the checksum adjustment (RFC 6296 §3.5)
    // in its identifier's first word.
    let from = requesters(&log);
    assert!(
        from.contains(&"2001:db8:71:0:cf47::10"),
        "the server sees the external prefix: {log}"
    );
    assert!(!from.iter().any(|a| a.starts_with("fd71:")), "{log}");
    let nat = console(&net.mgmt, "nat/print");
    assert!(
        nat.contains("nptv6 vde1 fd71::/64 = 2001:db8:71::/64"),
        "{nat}"
    );
}

/// The LAN host's IPv6 part: fd71::10 routed through the router, then `then`.
const LAN6: &str =
    "ip -6 addr add fd71::10/64 dev vde0 nodad && ip -6 route add default via fd71::1 && ";

#[test]
fn nat66_masquerade_hides_the_lan_behind_the_routers_wan_ipv6_address() {
    require("python3");
    require("curl");
    require("ping");
    let net = Net::start_with(&["--masquerade", "vde1"]);
    // No route back to the LAN: only translated packets can be answered.
    let _server = net.server6(&[]);
    let (code, out, err) = net.lan_host(&format!(
        "{LAN6} curl -sS -m 5 --retry 5 --retry-delay 1 --retry-all-errors \
         'http://[fd72::10]:8000/hello.txt' && ping -6 -c 2 -i 0.2 -W 2 fd72::10"
    ));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("hello across the router"), "{out}");
    assert!(out.contains("2 packets transmitted, 2 received"), "{out}");
    let log = std::fs::read_to_string(net.tmp.join("access.log")).unwrap();
    let from = requesters(&log);
    assert!(!from.is_empty(), "{log}");
    assert!(from.iter().all(|a| *a == "fd72::2"), "{log}");
    let nat = console(&net.mgmt, "nat/print");
    assert!(
        nat.contains("tcp [fd71::10]:") && nat.contains("-> [fd72::10]:8000 as [fd72::2]:"),
        "{nat}"
    );
    assert!(nat.contains("icmpv6 [fd71::10]:"), "{nat}");
    assert!(nat.contains("masquerade 10.72.0.2 fd72::2 conns"), "{nat}");
}

#[test]
fn snat_translates_to_the_chosen_address_of_the_interface() {
    require("python3");
    require("curl");
    let net = Net::start_confs(
        "ip=10.71.0.1/24,ip=fd71::1/64",
        "ip=10.72.0.2/24,ip=10.72.0.5/24,ip=fd72::2/64,ip=fd72::5/64,mtu=1400",
        &["--snat", "vde1=10.72.0.5", "--snat", "vde1=fd72::5"],
    );
    let _server = net.server6(&[]);
    let (code, out, err) = net.lan_host(&format!(
        "{LAN6} curl -sS -m 5 --retry 5 --retry-delay 1 --retry-all-errors \
         'http://[fd72::10]:8000/hello.txt'"
    ));
    assert_eq!(code, 0, "{out}\n{err}");
    let log = std::fs::read_to_string(net.tmp.join("access.log")).unwrap();
    assert_eq!(requesters(&log), ["fd72::5"], "{log}");
    drop(_server);
    let _server = net.server_with(&[]);
    let (code, out, err) = net.lan_host("curl -sS -m 5 http://10.72.0.10:8000/hello.txt");
    assert_eq!(code, 0, "{out}\n{err}");
    let log = std::fs::read_to_string(net.tmp.join("access.log")).unwrap();
    let from = requesters(&log);
    assert!(from.contains(&"10.72.0.5"), "{log}");
    assert!(
        !from.contains(&"10.72.0.2") && !from.contains(&"10.71.0.10"),
        "{log}"
    );
}

#[test]
fn static_dhcp_leases_by_mac_for_udhcpc_and_filo_ns() {
    require("busybox");
    // .50 is outside the range, .100 (the first of it) is fixed for a MAC that does not come.
    let net = Net::start_with(&[
        "--dhcp-host",
        "vde0=02:00:00:00:71:0d=10.71.0.50",
        "--dhcp-host",
        "vde0=02:00:00:00:71:0e=10.71.0.100",
        "--dhcp-host",
        "vde0=02:00:00:00:71:0f=10.71.0.150",
    ]);
    let script = net.tmp.join("udhcpc.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n[ \"$1\" = bound ] && echo \"lease=$ip\"\nexit 0\n",
    )
    .unwrap();
    run(Command::new("chmod").arg("+x").arg(&script));
    let lan = net.lan.vnl();
    let udhcpc = format!(
        "ip link set vde0 up; busybox udhcpc -i vde0 -n -q -f -t 10 -s {}",
        script.display()
    );
    let lease = |mac: &str| {
        let conf = format!("mac={mac}");
        let (code, out, err) = ns_out(&["--conf", &conf, &lan, "--", "sh", "-c", &udhcpc]);
        assert_eq!(code, 0, "{out}\n{err}");
        out
    };
    let out = lease("02:00:00:00:71:0d");
    assert!(out.contains("lease=10.71.0.50"), "{out}");
    // Another client gets the range, without the fixed .100.
    let out = lease("02:00:00:00:71:01");
    assert!(out.contains("lease=10.71.0.101"), "{out}");
    // filo ns's own DHCP client with a fixed MAC.
    let (code, out, err) = ns_out(&[
        "--conf",
        "mac=02:00:00:00:71:0f,dhcp",
        &lan,
        "--",
        "ip",
        "-4",
        "-br",
        "addr",
        "show",
        "vde0",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("10.71.0.150/24"), "{out}");
    let leases = console(&net.mgmt, "leases/print");
    assert!(
        leases.contains("10.71.0.50") && leases.contains("02:00:00:00:71:0d"),
        "{leases}"
    );
}

#[test]
fn reverse_path_filtering_drops_spoofed_sources_and_filter_rules_insert_live() {
    require("ping");
    let net = Net::start_with(&["--rp-filter"]);
    let wan = net.wan.vnl();
    let wan_ping = || {
        ns_out(&[
            "--ip",
            "10.72.0.12/24",
            &wan,
            "--",
            "ping",
            "-c",
            "1",
            "-W",
            "1",
            "10.72.0.2",
        ])
        .1
    };
    assert!(wan_ping().contains("1 packets transmitted, 1 received"));
    // A WAN host sending with a LAN source: dropped, counted.
    let (_, out, err) = ns_out(&[
        "--ip",
        "10.72.0.11/24",
        &wan,
        "--",
        "sh",
        "-c",
        "ip addr add 10.71.0.99/32 dev vde0 && ip route add 10.71.0.0/24 via 10.72.0.2 && \
         ping -c 2 -i 0.2 -W 1 -I 10.71.0.99 10.71.0.10; true",
    ]);
    assert!(out.contains("2 packets transmitted"), "{out}\n{err}");
    let stat = console(&net.mgmt, "stat");
    assert!(stat.contains("drop rp_filter 2"), "{stat}");
    // A rule inserted before the rest decides first.
    console(&net.mgmt, "filter/add input accept in vde1 proto icmp");
    let inserted = console(&net.mgmt, "filter/insert 1 input drop in vde1 proto icmp");
    assert!(inserted.contains("rule 1 inserted"), "{inserted}");
    assert!(wan_ping().contains("1 packets transmitted, 0 received"));
    let rules = console(&net.mgmt, "filter/print");
    assert!(
        rules.contains("1 input drop in vde1 proto icmp packets 1 ")
            && rules.contains("2 input accept in vde1 proto icmp packets 0 "),
        "{rules}"
    );
    let bad = console(&net.mgmt, "filter/insert 9 drop");
    assert!(bad.contains("position 9: expected 1..3"), "{bad}");
}

#[test]
fn a_port_forwards_icmp_port_unreachable_reaches_the_wan_client_translated() {
    require("python3");
    let net = Net::start_with(&["--forward", "vde1:udp:5353=10.71.0.10:53"]);
    // Nothing listens on the LAN host's port 53: its kernel answers port unreachable.
    let _lan = ns_bg(&[
        "--ip",
        "10.71.0.10/24",
        "--gw",
        "10.71.0.1",
        &net.lan.vnl(),
        "--",
        "sleep",
        "60",
    ]);
    // A connected UDP socket hears of it only if the quote names its own peer, the router.
    let client = udp_client("socket.AF_INET", "('10.72.0.2', 5353)");
    let (code, out, err) = ns_out(&[
        "--ip",
        "10.72.0.11/24",
        &net.wan.vnl(),
        "--",
        "python3",
        "-c",
        &client,
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("refused"), "{out}\n{err}");
    let nat = console(&net.mgmt, "nat/print");
    assert!(!nat.contains("icmp_errors 0"), "{nat}");
}

/// A python script: a UDP socket of `family` connected to `peer` sends until it is refused
/// (prints `refused`: an ICMP port unreachable whose quote names its peer came back).
fn udp_client(family: &str, peer: &str) -> String {
    format!(
        "import socket\n\
         s = socket.socket({family}, socket.SOCK_DGRAM)\n\
         s.settimeout(1)\n\
         s.connect({peer})\n\
         for _ in range(15):\n\
         \x20   try:\n\
         \x20       s.send(b'query')\n\
         \x20       s.recv(100)\n\
         \x20   except ConnectionRefusedError:\n\
         \x20       print('refused')\n\
         \x20       break\n\
         \x20   except OSError:\n\
         \x20       pass\n"
    )
}

#[test]
fn an_icmpv6_port_unreachable_comes_back_through_nat66() {
    require("python3");
    let net = Net::start_with(&["--masquerade", "vde1"]);
    // Nothing listens on the WAN host's port 9; it has no route back to the LAN.
    let _wan = ns_bg(&["--ip", "fd72::10/64", &net.wan.vnl(), "--", "sleep", "60"]);
    let client = udp_client("socket.AF_INET6", "('fd72::10', 9)");
    let (code, out, err) = net.lan_host(&format!("{LAN6} python3 -c \"{client}\""));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("refused"), "{out}\n{err}");
    let nat = console(&net.mgmt, "nat/print");
    assert!(nat.contains("udp [fd71::10]:"), "{nat}");
    assert!(!nat.contains("icmp_errors 0"), "{nat}");
}

/// `super_rx`/`super_tx` of `iface` in the router's `iface/print`.
fn super_counts(mgmt: &std::path::Path, iface: &str) -> (u64, u64) {
    let text = console(mgmt, "iface/print");
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{iface} ")))
        .unwrap_or_else(|| panic!("no {iface} in {text}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let count = |k: &str| -> u64 {
        let at = words.iter().position(|w| *w == k).unwrap();
        words[at + 1].parse().unwrap()
    };
    (count("super_rx"), count("super_tx"))
}

/// 64 MiB down (curl from http.server) and up (socat) between a LAN namespace on `lan` and
/// a WAN namespace on `wan`, through `filo router --masquerade vde1`; both arrive whole
/// (sha256). Returns the router's management socket path, the router still running.
fn large_file_through_masquerade(tmp: &TempDir, lan: &str, wan: &str) -> (Proc, PathBuf) {
    let dir = tmp.join("www");
    std::fs::create_dir(&dir).unwrap();
    let big = dir.join("big");
    run(Command::new("head")
        .args(["-c", "64M", "/dev/urandom"])
        .stdout(std::fs::File::create(&big).unwrap()));
    let sum = run(Command::new("sha256sum").arg(&big));
    let sum = sum.split_whitespace().next().unwrap().to_string();
    let mgmt = tmp.join("r.mgmt");
    let router = Proc::spawn(
        Command::new(FILO)
            .args(["router", "--vnl", lan, "--conf", "ip=10.73.0.1/24"])
            .args(["--vnl", wan, "--conf", "ip=10.74.0.1/24"])
            .args(["--masquerade", "vde1", "-M"])
            .arg(&mgmt)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(test_log()),
    );
    assert!(wait_until(T, || mgmt.exists()), "the router did not start");
    // Up: the server answers with the sum of what it got, before the client's namespace
    // (and its socket) goes away.
    let server_script = format!(
        "python3 -m http.server -d {} 8000 2>/dev/null & socat TCP-LISTEN:9000,reuseaddr EXEC:sha256sum; wait",
        dir.display(),
    );
    let _server = ns_bg(&[
        "--ip",
        "10.74.0.10/24",
        wan,
        "--",
        "sh",
        "-c",
        &server_script,
    ]);
    let client_script = format!(
        "for i in $(seq 100); do curl -sf -o /dev/null -m 2 http://10.74.0.10:8000/ && break; sleep 0.2; done; \
         curl -sf -m 120 http://10.74.0.10:8000/big | sha256sum; \
         socat -t 120 - TCP:10.74.0.10:9000 < {}",
        big.display()
    );
    let (code, out, err) = ns_out(&[
        "--ip",
        "10.73.0.10/24",
        "--gw",
        "10.73.0.1",
        lan,
        "--",
        "sh",
        "-c",
        &client_script,
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let sums: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(sums, [&sum, &sum], "down and up, expected {sum}: {out}");
    (router, mgmt)
}

#[test]
fn a_large_file_crosses_the_masquerade_as_super_frames_between_filo_switches() {
    require("python3");
    require("curl");
    require("socat");
    let tmp = TempDir::new("filo-router-super");
    let lan = FiloSwitch::start(FILO, &tmp, "lan", &[]);
    let wan = FiloSwitch::start(FILO, &tmp, "wan", &[]);
    let (_router, mgmt) = large_file_through_masquerade(&tmp, &lan.vnl(), &wan.vnl());
    assert_super_frames_both_ways(&mgmt);
}

/// Both ways as TCP super-frames, in and out of the router.
fn assert_super_frames_both_ways(mgmt: &std::path::Path) {
    let (lan_rx, lan_tx) = super_counts(mgmt, "vde0");
    let (wan_rx, wan_tx) = super_counts(mgmt, "vde1");
    assert!(
        lan_rx > 0 && wan_tx > 0,
        "upload: vde0 {lan_rx} in, vde1 {wan_tx} out"
    );
    assert!(
        wan_rx > 0 && lan_tx > 0,
        "download: vde1 {wan_rx} in, vde0 {lan_tx} out"
    );
}

#[test]
fn a_large_file_crosses_the_masquerade_segmented_for_a_debian_switch() {
    require("python3");
    require("curl");
    require("socat");
    let tmp = TempDir::new("filo-router-plain");
    let lan = FiloSwitch::start(FILO, &tmp, "lan", &[]);
    // vde_switch speaks no +vnet: the router segments what it sends there.
    let wan = DebSwitch::start(&tmp, "wan");
    let (_router, mgmt) = large_file_through_masquerade(&tmp, &lan.vnl(), &wan.vnl());
    let (lan_rx, _) = super_counts(&mgmt, "vde0");
    let (wan_rx, wan_tx) = super_counts(&mgmt, "vde1");
    assert!(lan_rx > 0, "the upload came in as super-frames");
    assert_eq!(
        (wan_rx, wan_tx),
        (0, 0),
        "plain frames on the Debian switch"
    );
}

/// `ipn://PATH[vnet/policy=switch]` for a bus named `name` in `tmp`: the router creates it.
fn vnet_bus(tmp: &TempDir, name: &str) -> String {
    format!("ipn://{}[vnet/policy=switch]", tmp.join(name).display())
}

#[test]
fn a_large_file_crosses_the_masquerade_as_super_frames_over_ipn_buses() {
    require("python3");
    require("curl");
    require("socat");
    let tmp = TempDir::new("filo-router-ipn");
    let (lan, wan) = (vnet_bus(&tmp, "lan"), vnet_bus(&tmp, "wan"));
    let (_router, mgmt) = large_file_through_masquerade(&tmp, &lan, &wan);
    assert_super_frames_both_ways(&mgmt);
}

/// A frame with a virtio-net header from `hdr` (10 bytes; num_buffers 0), addressed to
/// `dst` from `src`, `len` bytes after the header.
fn vnet_frame(hdr: [u8; 10], dst: [u8; 6], src: [u8; 6], ethertype: u16, len: usize) -> Vec<u8> {
    let mut f = hdr.to_vec();
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    // An IPv4 header that claims more than there is, then a TCP-ish tail.
    f.extend_from_slice(&[0x45, 0, 0xff, 0xff, 0, 0, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&[10, 73, 0, 10, 10, 74, 0, 10]);
    f.resize(12 + len, 0xa5);
    f
}

#[test]
fn bad_virtio_net_headers_on_an_ipn_bus_crash_neither_the_router_nor_a_namespace() {
    require("ping");
    let tmp = TempDir::new("filo-router-ipn-bad");
    let (lan, wan) = (vnet_bus(&tmp, "lan"), vnet_bus(&tmp, "wan"));
    let mgmt = tmp.join("r.mgmt");
    let mut router = Proc::spawn(
        Command::new(FILO)
            .args(["router", "--vnl", &lan, "--conf", "ip=10.73.0.1/24"])
            .args(["--vnl", &wan, "--conf", "ip=10.74.0.1/24", "-M"])
            .arg(&mgmt)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(test_log()),
    );
    assert!(wait_until(T, || mgmt.exists()), "the router did not start");
    let mut server = ns_bg(&[
        "--ip",
        "10.74.0.10/24",
        "--gw",
        "10.74.0.1",
        &wan,
        "--",
        "sleep",
        "120",
    ]);
    let ping = |count: &str| {
        ns_out(&[
            "--ip",
            "10.73.0.10/24",
            "--gw",
            "10.73.0.1",
            &lan,
            "--",
            "ping",
            "-c",
            count,
            "-i",
            "0.2",
            "-W",
            "2",
            "10.74.0.10",
        ])
    };
    let ok = wait_until(T, || ping("1").0 == 0);
    assert!(ok, "no ping through the router before the bad input");
    // A hostile member of the WAN bus (this process, speaking the framing): headers with
    // every GSO type and flag, checksum offsets and segment sizes out of range, frames
    // shorter than their headers, to the router's and the server's addresses and broadcast.
    filo_ipn::register();
    let opts = filo_vnl::OpenOptions {
        vnet: true,
        ..Default::default()
    };
    let mut hostile = opts.open(&wan).unwrap();
    assert!(hostile.vnet());
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..20_000u32 {
        let r = next();
        let b = r.to_le_bytes();
        let gso = [0, 1, 3, 4, 0x81, 5, 0xff][(r >> 40) as usize % 7];
        let hdr = [b[0], gso, b[2], b[3], b[4], b[5], b[6], b[7], b[1], b[3]];
        let len = [0, 1, 13, 33, 60, 1500, 9000, 65_000][(r >> 48) as usize % 8];
        let ethertype = [0x0800u16, 0x86dd, 0x0806, 0x1234][(r >> 56) as usize % 4];
        // Broadcast: the router and the server's namespace both take every one.
        let mut f = vnet_frame(hdr, [0xff; 6], [2, 0, 0, 0, 0x66, 0x66], ethertype, len);
        if i % 97 == 0 {
            f.truncate((r % 12) as usize);
        }
        let _ = hostile.send(&f);
    }
    assert!(
        router.child.try_wait().unwrap().is_none(),
        "the router died"
    );
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the namespace died"
    );
    let (code, out, err) = ping("3");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("3 packets transmitted, 3 received"), "{out}");
    drop(hostile);
    assert!(router.terminate(T).success());
}

#[test]
fn a_router_in_the_background_serves_the_ipn_bus_it_created() {
    require("ping");
    let tmp = TempDir::new("filo-router-ipn-d");
    let lan = vnet_bus(&tmp, "lan");
    let pidfile = tmp.join("r.pid");
    run(Command::new(FILO)
        .args([
            "router",
            "--vnl",
            &lan,
            "--conf",
            "ip=10.73.0.1/24",
            "-d",
            "-p",
        ])
        .arg(&pidfile));
    let (code, out, err) = ns_out(&[
        "--ip",
        "10.73.0.10/24",
        &lan,
        "--",
        "ping",
        "-c",
        "2",
        "-i",
        "0.2",
        "-w",
        "20",
        "10.73.0.1",
    ]);
    let pid: libc::pid_t = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    filo_test_support::sys::kill(pid, libc::SIGTERM);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("2 received"), "{out}");
}
