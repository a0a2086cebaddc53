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
    /// python's http.server on port 8000 of a LAN host at `ip` (routed by `gw`), listening
    /// on `bind`, serving hello.txt "hello from the lan"; its request log is the path
    /// returned.
    fn lan_server(&self, ip: &str, gw: &str, bind: &str) -> (Proc, PathBuf) {
        std::fs::write(self.tmp.join("hello.txt"), "hello from the lan\n").unwrap();
        let log = self.tmp.join("lan-access.log");
        let script = format!(
            "exec python3 -m http.server --bind {bind} -d {} 8000 2>{}",
            self.tmp.path().display(),
            log.display()
        );
        let lan = self.lan.vnl();
        let p = ns_bg(&["--ip", ip, "--gw", gw, &lan, "--", "sh", "-c", &script]);
        (p, log)
    }

    /// `sh -c SCRIPT` on a WAN host 10.72.0.11, fd72::11 with no route to the LAN (fd72::11
    /// without duplicate address detection: usable at once, in each new namespace).
    fn wan_host(&self, script: &str) -> (i32, String, String) {
        ns_out(&[
            "--ip",
            "10.72.0.11/24",
            &self.wan.vnl(),
            "--",
            "sh",
            "-c",
            &format!("ip -6 addr add fd72::11/64 dev vde0 nodad && {script}"),
        ])
    }

    /// Runs `curl` (through the port forward from `public` to the LAN server at `server`)
    /// until it fetches hello.txt; the server's `log` and nat/print show the WAN client
    /// (`client`: its address as the log and as nat/print write it).
    fn check_port_forward(
        &self,
        curl: impl Fn() -> (i32, String, String),
        log: &std::path::Path,
        client: (&str, &str),
        public: &str,
        server: &str,
    ) {
        let mut out = String::new();
        let ok = wait_until(T, || {
            let (code, o, _) = curl();
            out = o;
            code == 0
        });
        assert!(ok, "curl through the port forward failed: {out}");
        assert!(out.contains("hello from the lan"), "{out}");
        let log = std::fs::read_to_string(log).unwrap();
        assert!(
            log.lines()
                .any(|l| l.starts_with(&format!("{} ", client.0)) && l.contains("GET /hello.txt")),
            "the LAN server sees the WAN client's address: {log}"
        );
        let nat = console(&self.mgmt, "nat/print");
        assert!(
            nat.contains(&format!("forward tcp {public} to {server}")),
            "{nat}"
        );
        assert!(
            nat.contains(&format!("tcp {}:", client.1))
                && nat.contains(&format!("forwarded to {server}")),
            "{nat}"
        );
    }

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

impl Net {
    /// curl from the WAN host for hello.txt at the router's 10.72.0.2:8080.
    fn wan_curl_8080(&self) -> (i32, String, String) {
        self.wan_host("curl -s -m 2 http://10.72.0.2:8080/hello.txt")
    }

    /// [`Net::check_port_forward`] of the router's 10.72.0.2:8080 to the LAN server at
    /// 10.71.0.50:8000 (its request `log`), from the WAN host.
    fn check_forward_8080(&self, log: &std::path::Path) {
        self.check_port_forward(
            || self.wan_curl_8080(),
            log,
            ("10.72.0.11", "10.72.0.11"),
            "10.72.0.2:8080",
            "10.71.0.50:8000",
        );
    }
}

#[test]
fn a_port_forward_reaches_a_lan_server_from_the_wan() {
    require("python3");
    require("curl");
    let net = Net::start_with(&["--forward", "vde1:tcp:8080=10.71.0.50:8000"]);
    let (_server, log) = net.lan_server("10.71.0.50/24", "10.71.0.1", "0.0.0.0");
    // A WAN host with no route to the LAN: only the router's WAN address is reachable.
    let wan_curl = |url: &str| net.wan_host(&format!("curl -s -m 2 {url}"));
    net.check_forward_8080(&log);
    // Another port of the router's WAN address is not forwarded.
    assert_ne!(wan_curl("http://10.72.0.2:8000/hello.txt").0, 0);
}

#[test]
fn port_forwards_added_and_removed_on_the_console_at_run_time() {
    require("python3");
    require("curl");
    require("ping");
    let net = Net::start_with(&["--masquerade", "vde1"]);
    // Both serve hello.txt of the test's directory: the LAN server's, written last.
    let _wan_server = net.server();
    let (_lan_server, log) = net.lan_server("10.71.0.50/24", "10.71.0.1", "0.0.0.0");
    // A masqueraded connection (an echo, 30 s) that the changes below must not forget.
    let (code, out, err) = net.lan_host("ping -c 1 -W 2 10.72.0.10");
    assert_eq!(code, 0, "{out}\n{err}");
    let nat = console(&net.mgmt, "nat/print");
    let echo = nat
        .lines()
        .find(|l| l.starts_with("icmp 10.71.0.10:"))
        .and_then(|l| l.split(" expires_in").next())
        .unwrap_or_else(|| panic!("{nat}"))
        .to_string();
    assert_ne!(net.wan_curl_8080().0, 0, "forwarded already");
    let added = console(&net.mgmt, "fwd/add vde1:tcp:8080=10.71.0.50:8000");
    assert!(
        added.contains("forward tcp:8080=10.71.0.50:8000 added") && added.contains("1000 Success"),
        "{added}"
    );
    net.check_forward_8080(&log);
    let (code, json) = filo_console_json(FILO, &net.mgmt, "fwd/print");
    assert_eq!(code, 0, "{json}");
    assert!(
        json.contains(r#""lines":["vde1:tcp:8080=10.71.0.50:8000"]"#),
        "{json}"
    );
    // Bad specs: the error names the part that is wrong; nothing changes.
    for (bad, what) in [
        (
            "fwd/add vde1:tcp:80x=10.71.0.50",
            "port \"80x\" is not a number",
        ),
        (
            "fwd/add vde1:gre:80=10.71.0.50",
            "protocol \"gre\" is not tcp or udp",
        ),
        (
            "fwd/add vde1:tcp:80=10.71.0.5o",
            "\"10.71.0.5o\" is not an IPv4 address",
        ),
        ("fwd/add vde9:tcp:80=10.71.0.50", "no interface \"vde9\""),
        (
            "fwd/add vde1:tcp:8080=10.71.0.51:80",
            "is forwarded already",
        ),
        ("fwd/del vde1:tcp:8080=10.71.0.51:80", "no such forward"),
        ("fwd/add", "expected IFACE:PROTO:PORT=ADDR[:PORT]"),
    ] {
        let reply = console(&net.mgmt, bad);
        assert!(
            reply.contains("1022 ") || reply.contains("1019 "),
            "{bad}: {reply}"
        );
        assert!(reply.contains(what), "{bad}: {reply}");
    }
    let deleted = console(&net.mgmt, "fwd/del vde1:tcp:8080=10.71.0.50:8000");
    assert!(deleted.contains("1000 Success"), "{deleted}");
    assert_ne!(net.wan_curl_8080().0, 0, "still forwarded");
    let (_, json) = filo_console_json(FILO, &net.mgmt, "fwd/print");
    assert!(json.contains(r#""lines":[]"#), "{json}");
    // The masquerade's connection is still the one it was.
    let nat = console(&net.mgmt, "nat/print");
    assert!(nat.contains(&echo), "{echo} forgotten:\n{nat}");
    assert!(nat.contains(" created 2 "), "{nat}");
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
    let lan = net.lan.vnl();
    let lease = |mac: &str| {
        let (code, out, err) = net.udhcpc(mac, 10);
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

/// The router's drop counters by reason (`drop NAME N` lines of `stat`), read through
/// `filo console --json` on its management socket.
fn drop_counts(mgmt: &std::path::Path) -> std::collections::HashMap<String, u64> {
    let (code, out) = filo_console_json(FILO, mgmt, "stat");
    assert_eq!(code, 0, "stat: {out}");
    let reply: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("stat is no JSON ({e}): {out}"));
    let lines = reply["lines"].as_array().cloned().unwrap_or_default();
    lines
        .iter()
        .filter_map(|l| {
            let mut w = l.as_str()?.strip_prefix("drop ")?.split(' ');
            Some((w.next()?.to_string(), w.next()?.parse().ok()?))
        })
        .collect()
}

impl Net {
    /// Debian's dhcpcd on a LAN namespace (IPv4 and SLAAC, EUI-64 addresses) until its hook
    /// saw each reason of `wait_for` (e.g. BOUND, ROUTERADVERT, INFORM6) or 80 s passed,
    /// then `then` in the same shell: (exit code, output, error output, the events the hook
    /// saw, one a line: `REASON IFACE ip=… routers=… dns4=… dns6=… search6=…`). Its lease,
    /// DUID and pid files go to tmpfs in a private mount namespace, and its hook only
    /// records, so it touches nothing of the host's (/etc/resolv.conf above all; checked).
    fn dhcpcd(&self, wait_for: &[&str], then: &str) -> (i32, String, String, String) {
        require("dhcpcd");
        require("unshare");
        let conf = self.tmp.join("dhcpcd.conf");
        std::fs::write(&conf, "noipv4ll\nslaac hwaddr\n").unwrap();
        let events = self.tmp.join("dhcpcd.events");
        let hook = self.tmp.join("dhcpcd-hook");
        std::fs::write(
            &hook,
            format!(
                "#!/bin/sh\necho \"$reason $interface ip=$new_ip_address routers=$new_routers \
                 dns4=$new_domain_name_servers dns6=$new_dhcp6_name_servers \
                 search6=$new_dhcp6_domain_search\" >> {}\n",
                events.display()
            ),
        )
        .unwrap();
        run(Command::new("chmod").arg("+x").arg(&hook));
        let resolv = std::fs::read("/etc/resolv.conf").ok();
        // Not -1: with the RA's O flag, oneshot dhcpcd exits once the DHCPv6 information
        // came, before its IPv4 address is bound.
        let seen: Vec<String> = wait_for
            .iter()
            .map(|r| format!("grep -q ^{r} {}", events.display()))
            .collect();
        let seen = seen.join(" && ");
        let script = format!(
            "mount -t tmpfs none /var/lib && mkdir /var/lib/dhcpcd && mount -t tmpfs none /run && \
             dhcpcd -f {} -c {} -B -t 30 vde0 & pid=$!; \
             for i in $(seq 400); do {seen} && break; sleep 0.2; done; \
             {then}; kill $pid 2>/dev/null; wait $pid",
            conf.display(),
            hook.display()
        );
        let (code, out, err) = filo_ns_out(
            FILO,
            &[&self.lan.vnl(), "--", "unshare", "-m", "sh", "-c", &script],
            Duration::from_secs(120),
        );
        assert_eq!(
            std::fs::read("/etc/resolv.conf").ok(),
            resolv,
            "dhcpcd changed the host's /etc/resolv.conf"
        );
        let events = std::fs::read_to_string(&events).unwrap_or_default();
        (code, out, err, events)
    }
}

#[test]
fn dhcpcd_gets_a_lease_and_slaac_from_the_router_and_reaches_the_wan_through_the_masquerade() {
    for p in ["python3", "curl", "ping"] {
        require(p);
    }
    let net = Net::start_lan(
        "ip=10.71.0.1/24,ip=fd71::1/64,dns=fd71::53,dns=10.71.0.53,domain=lab.example",
        &["--masquerade", "vde1"],
    );
    // No route back to the LAN: only translated packets can be answered.
    let _server = net.server_with(&[]);
    let (code, out, err, events) = net.dhcpcd(
        &["BOUND", "ROUTERADVERT", "INFORM6"],
        "ip -4 -br addr show vde0; ip -6 -br addr show vde0 scope global; \
         ip route show default; ip -6 route show default; \
         curl -sS -m 5 http://10.72.0.10:8000/hello.txt; \
         ping -6 -c 2 -i 0.2 -W 2 fd72::10; \
         dhcpcd -k vde0; echo released=$?",
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let lease = out
        .split_whitespace()
        .find(|w| w.starts_with("10.71.0.") && w.ends_with("/24"))
        .unwrap_or_else(|| panic!("no lease: {out}\n{err}"));
    assert_eq!(lease, "10.71.0.100/24", "{out}");
    assert!(out.contains("default via 10.71.0.1 dev vde0"), "{out}");
    // SLAAC from the router's RA, its link-local address the default router.
    assert!(
        out.lines()
            .any(|l| l.starts_with("vde0") && l.contains(" fd71::") && l.contains("/64")),
        "no SLAAC address: {out}"
    );
    assert!(
        out.contains("default via fe80::"),
        "no IPv6 default route: {out}"
    );
    assert!(out.contains("hello across the router"), "{out}\n{err}");
    // The server has no route back: IPv6 answers only through NAT66.
    assert!(out.contains("2 packets transmitted, 2 received"), "{out}");
    assert!(
        events
            .lines()
            .any(|l| l.starts_with("BOUND vde0 ip=10.71.0.100 routers=10.71.0.1 dns4=10.71.0.53 ")),
        "{events}"
    );
    assert!(events.contains("ROUTERADVERT vde0"), "{events}");
    // Stateless DHCPv6, as the RA's O flag says.
    assert!(
        events.lines().any(|l| l.starts_with("INFORM6 vde0")
            && l.contains(" dns6=fd71::53 ")
            && l.ends_with(" search6=lab.example")),
        "{events}"
    );
    // `dhcpcd -k` released the lease: the router lists it no more.
    assert!(out.contains("released=0"), "{out}\n{err}");
    assert!(err.contains("releasing lease of 10.71.0.100"), "{err}");
    let leases = console(&net.mgmt, "leases/print");
    assert!(!leases.contains("10.71.0.100 "), "{leases}");
    let log = std::fs::read_to_string(net.tmp.join("access.log")).unwrap();
    assert!(!requesters(&log).contains(&"10.71.0.100"), "{log}");
}

#[test]
fn dhcpcd_declines_an_address_in_use_and_the_router_offers_another() {
    require("ping");
    let net = Net::start();
    // A host that took the pool's first address by hand.
    let _squatter = ns_bg(&[
        "--ip",
        "10.71.0.100/24",
        &net.lan.vnl(),
        "--",
        "sleep",
        "120",
    ]);
    assert!(
        wait_until(T, || net
            .lan_host("ping -c 1 -W 1 10.71.0.100")
            .1
            .contains("1 received")),
        "the squatter did not come up"
    );
    // dhcpcd's ARP probe finds the offered address taken: DECLINE, then a new offer.
    let (code, out, err, events) = net.dhcpcd(&["BOUND"], "ip -4 -br addr show vde0");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        err.contains("10.71.0.100") && err.contains("DAD detected"),
        "{err}"
    );
    assert!(out.contains("10.71.0.101/24"), "{out}\n{err}");
    assert!(events.contains("BOUND vde0 ip=10.71.0.101 "), "{events}");
    let leases = console(&net.mgmt, "leases/print");
    assert!(leases.contains("10.71.0.101 "), "{leases}");
}

#[test]
fn qemu_on_the_lan_switch_is_leased_by_the_router() {
    require("qemu-system-x86_64");
    let net = Net::start();
    // No disk: the NIC's iPXE ROM network-boots, asking for an address by DHCP.
    let _qemu = qemu_netboot(&net.lan.dir, "52:54:00:71:00:57");
    let mut leases = String::new();
    assert!(
        wait_until(Duration::from_secs(90), || {
            leases = filo_console_json(FILO, &net.mgmt, "leases/print").1;
            leases.contains("52:54:00:71:00:57")
        }),
        "no lease for QEMU: {leases}"
    );
    assert!(
        leases.contains("10.71.0.100 52:54:00:71:00:57 dev vde0"),
        "{leases}"
    );
}

#[test]
fn tracepath_and_traceroute_over_two_routers_list_both_hops_and_find_the_middle_links_mtu() {
    require("tracepath");
    require("traceroute");
    require("ping");
    let tmp = TempDir::new("filo-router-two");
    let lan = FiloSwitch::start(FILO, &tmp, "lan", &[]);
    let mid = FiloSwitch::start(FILO, &tmp, "mid", &[]);
    let wan = FiloSwitch::start(FILO, &tmp, "wan", &[]);
    // LAN 10.75/fd75 -- r1 -- middle link 10.76/fd76, MTU 1300 -- r2 -- WAN 10.77/fd77.
    // `args`: words (the temp dir's paths have no spaces).
    let router = |name: &str, args: &str| {
        let mgmt = tmp.join(name);
        let p = Proc::spawn(
            Command::new(FILO)
                .arg("router")
                .args(args.split_whitespace())
                .arg("-M")
                .arg(&mgmt)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(test_log()),
        );
        assert!(wait_until(T, || mgmt.exists()), "{name} did not start");
        p
    };
    let _r1 = router(
        "r1.mgmt",
        &format!(
            "--vnl {} --conf ip=10.75.0.1/24,ip=fd75::1/64 \
             --vnl {} --conf ip=10.76.0.1/24,ip=fd76::1/64,mtu=1300 \
             --route 10.77.0.0/24 via 10.76.0.2 --route fd77::/64 via fd76::2",
            lan.vnl(),
            mid.vnl()
        ),
    );
    let _r2 = router(
        "r2.mgmt",
        &format!(
            "--vnl {} --conf ip=10.76.0.2/24,ip=fd76::2/64,mtu=1300 \
             --vnl {} --conf ip=10.77.0.1/24,ip=fd77::1/64 \
             --route 10.75.0.0/24 via 10.76.0.1 --route fd75::/64 via fd76::1",
            mid.vnl(),
            wan.vnl()
        ),
    );
    let _server = ns_bg(&[
        "--ip",
        "10.77.0.10/24",
        "--ip",
        "fd77::10/64",
        "--gw",
        "10.77.0.1",
        "--gw",
        "fd77::1",
        &wan.vnl(),
        "--",
        "sleep",
        "120",
    ]);
    let (code, out, err) = ns_out(&[
        "--ip",
        "10.75.0.10/24",
        "--ip",
        "fd75::10/64",
        "--gw",
        "10.75.0.1",
        "--gw",
        "fd75::1",
        &lan.vnl(),
        "--",
        "sh",
        "-c",
        "for i in $(seq 50); do ping -c 1 -W 1 10.77.0.10 >/dev/null && \
         ping -6 -c 1 -W 1 fd77::10 >/dev/null && break; sleep 0.2; done; \
         tracepath -n 10.77.0.10; tracepath -6 -n fd77::10; \
         traceroute -n -q 1 -w 3 10.77.0.10; traceroute -6 -n -q 1 -w 3 fd77::10; true",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    for hop in [
        " 1:  10.75.0.1 ",
        " 2:  10.76.0.2 ",
        " 1:  fd75::1 ",
        " 2:  fd76::2 ",
        // traceroute's UDP probes: both routers' time exceeded, then the server's port
        // unreachable.
        "\n 1  10.75.0.1 ",
        "\n 2  10.76.0.2 ",
        "\n 3  10.77.0.10 ",
        "\n 1  fd75::1 ",
        "\n 2  fd76::2 ",
        "\n 3  fd77::10 ",
    ] {
        assert!(out.contains(hop), "no hop {hop:?}: {out}");
    }
    assert!(
        out.contains("10.77.0.10") && out.contains("fd77::10"),
        "{out}"
    );
    assert_eq!(
        out.matches("Resume: pmtu 1300 hops 3").count(),
        2,
        "the middle link's MTU and three hops, IPv4 and IPv6: {out}"
    );
}

/// Hand-made frames for a plug on a switch (`filo_vnl::open`): Ethernet, IPv4, IPv6, ICMP,
/// ARP and DHCP, each with correct checksums unless a test spoils them.
mod raw {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use filo_vnl::wire::checksum::{fold, internet_checksum, sum16};

    pub const IPV4: u16 = 0x0800;
    pub const IPV6: u16 = 0x86dd;

    pub fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = [&dst[..], &src[..], &ethertype.to_be_bytes()].concat();
        f.extend_from_slice(payload);
        f
    }

    /// An IPv4 packet; `frag` is the flags and fragment offset field (0x2000: more
    /// fragments; the offset in 8-byte units).
    pub fn ipv4(
        src: Ipv4Addr,
        dst: Ipv4Addr,
        ttl: u8,
        proto: u8,
        frag: u16,
        data: &[u8],
    ) -> Vec<u8> {
        let mut p = vec![0u8; 20];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((20 + data.len()) as u16).to_be_bytes());
        p[4..6].copy_from_slice(&0x7101u16.to_be_bytes());
        p[6..8].copy_from_slice(&frag.to_be_bytes());
        p[8] = ttl;
        p[9] = proto;
        p[12..16].copy_from_slice(&src.octets());
        p[16..20].copy_from_slice(&dst.octets());
        let ck = internet_checksum(&p);
        p[10..12].copy_from_slice(&ck.to_be_bytes());
        p.extend_from_slice(data);
        p
    }

    /// A UDP header (checksum zero, which IPv4 allows) and `data`.
    pub fn udp(sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
        let mut u = [sport.to_be_bytes(), dport.to_be_bytes()].concat();
        u.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(data);
        u
    }

    /// An ICMP message: type, code, the 4 bytes after the checksum, `data`.
    pub fn icmp4(kind: u8, code: u8, rest: [u8; 4], data: &[u8]) -> Vec<u8> {
        let mut m = vec![kind, code, 0, 0];
        m.extend_from_slice(&rest);
        m.extend_from_slice(data);
        let ck = internet_checksum(&m);
        m[2..4].copy_from_slice(&ck.to_be_bytes());
        m
    }

    pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, hop: u8, next: u8, data: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(data.len() as u16).to_be_bytes());
        p.extend_from_slice(&[next, hop]);
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(data);
        p
    }

    /// An ICMPv6 message from `src` to `dst`: type, code, the 4 bytes after the checksum,
    /// `data`.
    pub fn icmp6(
        src: Ipv6Addr,
        dst: Ipv6Addr,
        kind: u8,
        code: u8,
        rest: [u8; 4],
        data: &[u8],
    ) -> Vec<u8> {
        let mut m = vec![kind, code, 0, 0];
        m.extend_from_slice(&rest);
        m.extend_from_slice(data);
        let mut sum = sum16(0, &src.octets());
        sum = sum16(sum, &dst.octets());
        sum = sum16(sum, &(m.len() as u32).to_be_bytes());
        sum = sum16(sum, &[0, 0, 0, 58]);
        let ck = fold(sum16(sum, &m));
        m[2..4].copy_from_slice(&ck.to_be_bytes());
        m
    }

    /// A neighbour solicitation for `target` from `src` (hop limit `hop`, 255 is valid)
    /// with `options` (e.g. the source link-layer address: type 1, length 1, the MAC).
    pub fn ns(mac: [u8; 6], src: Ipv6Addr, target: Ipv6Addr, hop: u8, options: &[u8]) -> Vec<u8> {
        let t = target.octets();
        let group = Ipv6Addr::new(
            0xff02,
            0,
            0,
            0,
            0,
            1,
            0xff00 | u16::from(t[13]),
            u16::from_be_bytes([t[14], t[15]]),
        );
        let mut data = t.to_vec();
        data.extend_from_slice(options);
        let g = group.octets();
        let msg = icmp6(src, group, 135, 0, [0; 4], &data);
        eth(
            [0x33, 0x33, g[12], g[13], g[14], g[15]],
            mac,
            IPV6,
            &ipv6(src, group, hop, 58, &msg),
        )
    }

    /// The source link-layer address option with `mac`.
    pub fn slla(mac: [u8; 6]) -> Vec<u8> {
        [&[1u8, 1][..], &mac[..]].concat()
    }

    /// An ARP request from `mac`/`ip` for `target`, broadcast.
    pub fn arp_request(mac: [u8; 6], ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
        let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
        a.extend_from_slice(&mac);
        a.extend_from_slice(&ip.octets());
        a.extend_from_slice(&[0; 6]);
        a.extend_from_slice(&target.octets());
        eth([0xff; 6], mac, 0x0806, &a)
    }

    pub const DISCOVER: u8 = 1;
    pub const OFFER: u8 = 2;
    pub const REQUEST: u8 = 3;
    pub const ACK: u8 = 5;
    pub const RELEASE: u8 = 7;

    /// A DHCP client message of `kind` from `mac` (broadcast flag set) with `options`
    /// (code, data) after the message type.
    pub fn dhcp(mac: [u8; 6], kind: u8, ciaddr: Ipv4Addr, options: &[(u8, &[u8])]) -> Vec<u8> {
        let mut m = vec![0u8; 240];
        m[..3].copy_from_slice(&[1, 1, 6]);
        m[4..8].copy_from_slice(&mac[2..]);
        m[10] = 0x80;
        m[12..16].copy_from_slice(&ciaddr.octets());
        m[28..34].copy_from_slice(&mac);
        m[236..240].copy_from_slice(&[99, 130, 83, 99]);
        m.extend_from_slice(&[53, 1, kind]);
        for (code, data) in options {
            m.extend_from_slice(&[*code, data.len() as u8]);
            m.extend_from_slice(data);
        }
        m.push(255);
        m
    }

    /// `dhcp` as a broadcast frame from `mac` (source `ciaddr`) to the server's port.
    pub fn dhcp_frame(
        mac: [u8; 6],
        kind: u8,
        ciaddr: Ipv4Addr,
        options: &[(u8, &[u8])],
    ) -> Vec<u8> {
        let m = dhcp(mac, kind, ciaddr, options);
        eth(
            [0xff; 6],
            mac,
            IPV4,
            &ipv4(ciaddr, Ipv4Addr::BROADCAST, 64, 17, 0, &udp(68, 67, &m)),
        )
    }

    /// A DHCP reply in `frame`: (message type, client MAC, your address).
    pub fn dhcp_reply(frame: &[u8]) -> Option<(u8, [u8; 6], Ipv4Addr)> {
        if frame.get(12..14)? != [8, 0] {
            return None;
        }
        let m = filo_dhcp::dhcp_payload(&frame[14..])?;
        if m.len() < 240 || m[0] != 2 {
            return None;
        }
        let mac: [u8; 6] = m[28..34].try_into().ok()?;
        let yiaddr = Ipv4Addr::new(m[16], m[17], m[18], m[19]);
        let mut opts = &m[240..];
        while let [code, rest @ ..] = opts {
            match code {
                0 => opts = rest,
                255 => break,
                _ => {
                    let len = usize::from(*rest.first()?);
                    if *code == 53 && len == 1 {
                        return Some((*rest.get(1)?, mac, yiaddr));
                    }
                    opts = rest.get(1 + len..)?;
                }
            }
        }
        None
    }
}

/// Sends `frames` on `plug` (a few at a time, reading what comes back in between) and
/// records each DHCP reply of type `want` in `got` (client MAC → address); returns once
/// nothing came for a second.
fn dhcp_round(
    plug: &mut filo_vnl::Plug,
    frames: &[Vec<u8>],
    want: u8,
    got: &mut std::collections::HashMap<[u8; 6], std::net::Ipv4Addr>,
) {
    let mut buf = vec![0u8; 9216];
    let mut take = |plug: &mut filo_vnl::Plug, wait: Duration| {
        while let Ok(n) = plug.recv_timeout(&mut buf, Some(wait)) {
            if let Some((kind, mac, addr)) = raw::dhcp_reply(&buf[..n]) {
                if kind == want {
                    got.insert(mac, addr);
                }
            }
        }
    };
    for chunk in frames.chunks(20) {
        for f in chunk {
            plug.send_timeout(f, Some(T))
                .expect("send to the LAN switch");
        }
        take(plug, Duration::from_millis(20));
    }
    take(plug, Duration::from_secs(1));
}

impl Net {
    /// busybox udhcpc on a LAN namespace with `mac`, asking `tries` times: (exit code,
    /// output with `lease=ADDR` once bound).
    fn udhcpc(&self, mac: &str, tries: u32) -> (i32, String, String) {
        let script = self.tmp.join("udhcpc.sh");
        if !script.exists() {
            write_script(script.clone(), UDHCPC_PRINT_LEASE);
        }
        let udhcpc = format!(
            "ip link set vde0 up; busybox udhcpc -i vde0 -n -q -f -t {tries} -T 1 -s {}",
            script.display()
        );
        let conf = format!("mac={mac}");
        ns_out(&["--conf", &conf, &self.lan.vnl(), "--", "sh", "-c", &udhcpc])
    }
}

#[test]
fn a_dhcp_flood_from_1000_macs_exhausts_the_pool_cleanly_and_a_released_address_serves_udhcpc() {
    use std::net::Ipv4Addr;
    require("busybox");
    require("ping");
    let mut net = Net::start();
    let mut plug = filo_vnl::open(&net.lan.vnl()).expect("a plug on the LAN switch");
    let macs: Vec<[u8; 6]> = (0..1000u16)
        .map(|i| {
            let b = i.to_be_bytes();
            [0x02, 0, 0x5e, 0x71, b[0], b[1]]
        })
        .collect();
    let before = drop_counts(&net.mgmt);
    let none = Ipv4Addr::UNSPECIFIED;
    // DISCOVER from all; those without an offer ask again (a reply may be lost on the way).
    let mut offers = std::collections::HashMap::new();
    for _ in 0..4 {
        let ask: Vec<Vec<u8>> = macs
            .iter()
            .filter(|m| !offers.contains_key(*m))
            .map(|m| raw::dhcp_frame(*m, raw::DISCOVER, none, &[]))
            .collect();
        dhcp_round(&mut plug, &ask, raw::OFFER, &mut offers);
        if offers.len() >= 100 {
            break;
        }
    }
    // The range .100-.199: 100 offers, then no more.
    assert_eq!(offers.len(), 100, "{offers:?}");
    let mut acks = std::collections::HashMap::new();
    for _ in 0..4 {
        let ask: Vec<Vec<u8>> = offers
            .iter()
            .filter(|(m, _)| !acks.contains_key(*m))
            .map(|(m, a): (&[u8; 6], &Ipv4Addr)| {
                raw::dhcp_frame(
                    *m,
                    raw::REQUEST,
                    none,
                    &[(50, &a.octets()), (54, &[10, 71, 0, 1])],
                )
            })
            .collect();
        dhcp_round(&mut plug, &ask, raw::ACK, &mut acks);
        if acks.len() == offers.len() {
            break;
        }
    }
    assert_eq!(acks, offers, "every offer acknowledged as offered");
    let mut addrs: Vec<Ipv4Addr> = acks.values().copied().collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 100);
    assert!(addrs
        .iter()
        .all(|a| (100..=199).contains(&a.octets()[3]) && a.octets()[..3] == [10, 71, 0]));
    let after = drop_counts(&net.mgmt);
    let delta = |k: &str| after[k] - before[k];
    assert!(delta("pool_exhausted") >= 900, "{after:?}");
    assert_eq!(delta("server"), 0, "no message was malformed: {after:?}");
    let leases = console(&net.mgmt, "leases/print");
    assert_eq!(leases.matches(" dev vde0 ").count(), 100, "{leases}");
    // The server's own account in `stat`: 100 acknowledged, the refusals as the drops.
    let stat = console(&net.mgmt, "stat");
    let dhcp: Vec<&str> = stat
        .lines()
        .find_map(|l| l.strip_prefix("dhcp vde0 "))
        .unwrap_or_else(|| panic!("{stat}"))
        .split_whitespace()
        .collect();
    let count = |k: &str| -> u64 {
        let at = dhcp.iter().position(|w| *w == k).unwrap();
        dhcp[at + 1].parse().unwrap()
    };
    assert_eq!(count("acks"), 100, "{stat}");
    assert_eq!(count("malformed"), 0, "{stat}");
    assert_eq!(count("pool_exhausted"), delta("pool_exhausted"), "{stat}");
    // A real client while the pool is full: no lease, and counted.
    let (code, out, _) = net.udhcpc("02:00:00:00:71:ee", 2);
    assert_ne!(code, 0, "a lease from a full pool: {out}");
    assert!(drop_counts(&net.mgmt)["pool_exhausted"] > after["pool_exhausted"]);
    // One of the flood's clients lets its address go: the real client gets it.
    let (mac, addr) = acks.iter().next().map(|(m, a)| (*m, *a)).unwrap();
    let release = raw::dhcp(mac, raw::RELEASE, addr, &[(54, &[10, 71, 0, 1])]);
    let frame = raw::eth(
        [0xff; 6],
        mac,
        raw::IPV4,
        &raw::ipv4(
            addr,
            Ipv4Addr::new(10, 71, 0, 1),
            64,
            17,
            0,
            &raw::udp(68, 67, &release),
        ),
    );
    plug.send_timeout(&frame, Some(T)).unwrap();
    let (code, out, err) = net.udhcpc("02:00:00:00:71:ee", 5);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&format!("lease={addr}")), "{out}");
    // Still routing, still alive.
    let (code, out, err) = net.lan_host("ping -c 2 -i 0.2 -W 2 10.71.0.1");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("2 packets transmitted, 2 received"), "{out}");
    assert!(
        net.router.child.try_wait().unwrap().is_none(),
        "the router exited"
    );
}

/// The first frame `plug` receives within `within` that satisfies `pred`.
fn wait_frame(
    plug: &mut filo_vnl::Plug,
    within: Duration,
    mut pred: impl FnMut(&[u8]) -> bool,
) -> Option<Vec<u8>> {
    let deadline = std::time::Instant::now() + within;
    let mut buf = vec![0u8; 9216];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let n = plug.recv_timeout(&mut buf, Some(left)).ok()?;
        if pred(&buf[..n]) {
            return Some(buf[..n].to_vec());
        }
    }
}

/// Whether `f` is an IP packet that is more than neighbour discovery or router
/// advertisements: something the router answered or forwarded.
fn is_traffic(f: &[u8]) -> bool {
    match f.get(12..14) {
        Some([8, 0]) => true,
        Some([0x86, 0xdd]) => !(f.get(20) == Some(&58) && matches!(f.get(54), Some(133..=137))),
        _ => false,
    }
}

/// The MAC of the router's interface `iface`, from its `iface/print`.
fn router_mac(mgmt: &std::path::Path, iface: &str) -> [u8; 6] {
    let text = console(mgmt, "iface/print");
    let word = text
        .lines()
        .find(|l| l.starts_with(&format!("{iface} ")))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or_else(|| panic!("no {iface} in {text}"));
    let b: Vec<u8> = word
        .split(':')
        .map(|x| u8::from_str_radix(x, 16).unwrap())
        .collect();
    b.try_into().unwrap()
}

/// A raw frame sent on the LAN and what must come of it: the drop counter it adds one to
/// (and nothing else), the answer the sender gets, what arrives on the WAN.
struct Case {
    what: &'static str,
    frame: Vec<u8>,
    reason: Option<&'static str>,
    answer: Option<fn(&[u8]) -> bool>,
    forwarded: Option<fn(&[u8]) -> bool>,
}

impl Case {
    /// Dropped, counted as `reason`, unanswered.
    fn dropped(what: &'static str, frame: Vec<u8>, reason: &'static str) -> Case {
        Case {
            what,
            frame,
            reason: Some(reason),
            answer: None,
            forwarded: None,
        }
    }
}

#[test]
fn malformed_expiring_and_fragmented_packets_at_the_router_are_dropped_answered_or_forwarded_and_counted(
) {
    use std::net::{Ipv4Addr, Ipv6Addr};
    require("ping");
    require("python3");
    require("curl");
    let mut net = Net::start();
    let mut lan = filo_vnl::open(&net.lan.vnl()).expect("a plug on the LAN switch");
    let mut wan = filo_vnl::open(&net.wan.vnl()).expect("a plug on the WAN switch");
    let r0 = router_mac(&net.mgmt, "vde0");
    const L: [u8; 6] = [2, 0, 0, 0, 0x71, 0x99];
    const W: [u8; 6] = [2, 0, 0, 0, 0x72, 0x30];
    let l4 = Ipv4Addr::new(10, 71, 0, 99);
    let w4 = Ipv4Addr::new(10, 72, 0, 30);
    let me4 = Ipv4Addr::new(10, 71, 0, 1);
    let l6: Ipv6Addr = "fd71::99".parse().unwrap();
    let w6: Ipv6Addr = "fd72::30".parse().unwrap();
    let me6: Ipv6Addr = "fd71::1".parse().unwrap();
    // The router learns both hosts (ARP, NDP) and answers them: the plugs work.
    let send = |p: &mut filo_vnl::Plug, f: &[u8]| p.send_timeout(f, Some(T)).expect("send");
    send(&mut lan, &raw::arp_request(L, l4, me4));
    send(
        &mut wan,
        &raw::arp_request(W, w4, Ipv4Addr::new(10, 72, 0, 2)),
    );
    send(&mut lan, &raw::ns(L, l6, me6, 255, &raw::slla(L)));
    send(
        &mut wan,
        &raw::ns(W, w6, "fd72::2".parse().unwrap(), 255, &raw::slla(W)),
    );
    for (plug, side) in [(&mut lan, "LAN"), (&mut wan, "WAN")] {
        let arp = wait_frame(plug, T, |f| f[12..14] == [8, 6] && f[20..22] == [0, 2]);
        assert!(arp.is_some(), "no ARP reply on the {side}");
        let na = wait_frame(plug, T, |f| {
            f[12..14] == [0x86, 0xdd] && f.get(54) == Some(&136)
        });
        assert!(na.is_some(), "no neighbour advertisement on the {side}");
    }
    let v4 = |dst: Ipv4Addr, ttl: u8, proto: u8, frag: u16, data: &[u8]| {
        raw::eth(
            r0,
            L,
            raw::IPV4,
            &raw::ipv4(l4, dst, ttl, proto, frag, data),
        )
    };
    let v6 = |dst: Ipv6Addr, hop: u8, next: u8, data: &[u8]| {
        raw::eth(r0, L, raw::IPV6, &raw::ipv6(l6, dst, hop, next, data))
    };
    let udp = raw::udp(4000, 9, b"sixteen bytes!!!");
    let echo4 = raw::icmp4(8, 0, [0x71, 1, 0, 1], b"ping");
    // A port unreachable quoting a UDP datagram from W.
    let unreachable = raw::icmp4(3, 3, [0; 4], &raw::ipv4(w4, l4, 64, 17, 0, &udp));
    let echo6 = raw::icmp6(l6, me6, 128, 0, [0x71, 1, 0, 1], b"ping");
    let spoil = |mut p: Vec<u8>, at: usize, b: u8| {
        p[at] ^= b;
        p
    };
    // An IPv4 header with a fixed-up checksum after a change.
    let refix = |mut p: Vec<u8>| {
        p[10..12].copy_from_slice(&[0, 0]);
        let ck = filo_vnl::wire::checksum::internet_checksum(&p[..20]);
        p[10..12].copy_from_slice(&ck.to_be_bytes());
        p
    };
    let mut long = raw::ipv4(l4, w4, 64, 17, 0, &udp);
    long[2..4].copy_from_slice(&400u16.to_be_bytes());
    let mut ihl4 = raw::ipv4(l4, w4, 64, 17, 0, &udp);
    ihl4[0] = 0x44;
    let mut long6 = raw::ipv6(l6, w6, 64, 17, &udp);
    long6[4..6].copy_from_slice(&1000u16.to_be_bytes());
    let mut bootreply = raw::dhcp(L, raw::DISCOVER, Ipv4Addr::UNSPECIFIED, &[]);
    bootreply[0] = 2;
    let mut long_hw = raw::dhcp(L, raw::DISCOVER, Ipv4Addr::UNSPECIFIED, &[]);
    long_hw[2] = 16;
    let mut no_magic = raw::dhcp(L, raw::DISCOVER, Ipv4Addr::UNSPECIFIED, &[]);
    no_magic[236] = 0;
    let dhcp = |m: &[u8]| {
        raw::eth(
            [0xff; 6],
            L,
            raw::IPV4,
            &raw::ipv4(
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::BROADCAST,
                64,
                17,
                0,
                &raw::udp(68, 67, m),
            ),
        )
    };
    let all_routers: Ipv6Addr = "ff02::2".parse().unwrap();
    let all_nodes: Ipv6Addr = "ff02::1".parse().unwrap();
    let ll: Ipv6Addr = "fe80::99".parse().unwrap();
    let bad_option = [1u8, 0, 0, 0, 0, 0, 0, 0];
    let rs = raw::icmp6(ll, all_routers, 133, 0, [0; 4], &bad_option);
    let ra = raw::icmp6(ll, all_nodes, 134, 0, [64, 0, 7, 8], &[0; 8]);
    // An ICMPv6 message from fe80::99 to the all-nodes or all-routers group, hop limit 255.
    let link_local = |group: Ipv6Addr, msg: &[u8]| {
        let g = group.octets();
        let mac = [0x33, 0x33, g[12], g[13], g[14], g[15]];
        raw::eth(mac, L, raw::IPV6, &raw::ipv6(ll, group, 255, 58, msg))
    };
    // An IPv6 fragment header: next header, reserved, offset and M flag, identification.
    let frag6 = |next: u8, more: bool, data: &[u8]| {
        let mut h = vec![next, 0, 0, u8::from(more), 0, 0, 0x71, 1];
        h.extend_from_slice(data);
        h
    };
    let echo6_frag = raw::icmp6(l6, me6, 128, 0, [0x71, 2, 0, 1], b"ping");
    let cases = vec![
        Case::dropped(
            "an IPv4 header cut short",
            raw::eth(r0, L, raw::IPV4, &raw::ipv4(l4, w4, 64, 17, 0, &udp)[..12]),
            "malformed",
        ),
        Case::dropped(
            "an IPv4 total length beyond the frame",
            raw::eth(r0, L, raw::IPV4, &refix(long)),
            "malformed",
        ),
        Case::dropped(
            "an IPv4 header checksum that does not add up",
            raw::eth(
                r0,
                L,
                raw::IPV4,
                &spoil(raw::ipv4(l4, w4, 64, 17, 0, &udp), 10, 0x55),
            ),
            "malformed",
        ),
        Case::dropped(
            "an IPv4 header length of 4 words",
            raw::eth(r0, L, raw::IPV4, &refix(ihl4)),
            "malformed",
        ),
        Case::dropped(
            "an IPv6 header cut short",
            raw::eth(r0, L, raw::IPV6, &raw::ipv6(l6, w6, 64, 17, &udp)[..30]),
            "malformed",
        ),
        Case::dropped(
            "an IPv6 payload length beyond the frame",
            raw::eth(r0, L, raw::IPV6, &long6),
            "malformed",
        ),
        Case::dropped(
            "an ICMP echo request with a bad checksum",
            v4(me4, 64, 1, 0, &spoil(echo4.clone(), 2, 0x55)),
            "malformed",
        ),
        Case::dropped(
            "an ICMP message of 3 bytes",
            v4(me4, 64, 1, 0, &echo4[..3]),
            "malformed",
        ),
        Case::dropped(
            "an ICMPv6 echo request with a bad checksum",
            v6(me6, 64, 58, &spoil(echo6.clone(), 2, 0x55)),
            "malformed",
        ),
        Case::dropped(
            "a neighbour solicitation with hop limit 64 (not 255)",
            raw::ns(L, l6, me6, 64, &raw::slla(L)),
            "local_unhandled",
        ),
        Case::dropped(
            "a neighbour solicitation with an option of length 0",
            raw::ns(L, l6, me6, 255, &bad_option),
            "malformed",
        ),
        Case::dropped(
            "a router solicitation with an option of length 0",
            link_local(all_routers, &rs),
            "server",
        ),
        Case::dropped(
            "a router advertisement from a host",
            link_local(all_nodes, &ra),
            "local_unhandled",
        ),
        Case::dropped(
            "an echo request to the LAN's broadcast address (no smurf answers)",
            v4(Ipv4Addr::new(10, 71, 0, 255), 64, 1, 0, &echo4),
            "local_unhandled",
        ),
        Case::dropped(
            "an ICMP redirect for the router",
            v4(
                me4,
                64,
                1,
                0,
                &raw::icmp4(5, 1, [10, 71, 0, 99], &unreachable[..28]),
            ),
            "local_unhandled",
        ),
        Case::dropped(
            "an ICMPv6 redirect for the router",
            v6(me6, 255, 58, &raw::icmp6(l6, me6, 137, 0, [0; 4], &[0; 32])),
            "local_unhandled",
        ),
        Case::dropped(
            // RFC 1812 §4.3.2.7: no ICMP error about an ICMP error.
            "an ICMP error across the router with TTL 1 (not answered)",
            v4(w4, 1, 1, 0, &unreachable),
            "ttl_exceeded",
        ),
        Case::dropped("a DHCP message of 100 bytes", dhcp(&[1; 100]), "server"),
        Case::dropped(
            "a DHCP reply sent to the server",
            dhcp(&bootreply),
            "server",
        ),
        Case::dropped(
            "a DHCP request with a 16-byte hardware address",
            dhcp(&long_hw),
            "server",
        ),
        Case::dropped(
            "a DHCP request without the magic cookie",
            dhcp(&no_magic),
            "server",
        ),
        Case {
            what: "TTL 1 across the router",
            frame: v4(w4, 1, 17, 0, &udp),
            reason: Some("ttl_exceeded"),
            // Time exceeded (11/0) from the router's LAN address.
            answer: Some(|f| {
                f[12..14] == [8, 0]
                    && f[23] == 1
                    && f[26..30] == [10, 71, 0, 1]
                    && f[34] == 11
                    && f[35] == 0
            }),
            forwarded: None,
        },
        Case {
            // RFC 1812 §5.3.1: TTL 0 "reduced to zero (or less)": discarded and answered.
            what: "TTL 0 across the router",
            frame: v4(w4, 0, 17, 0, &udp),
            reason: Some("ttl_exceeded"),
            answer: Some(|f| f[12..14] == [8, 0] && f[23] == 1 && f[34] == 11),
            forwarded: None,
        },
        Case {
            what: "hop limit 1 across the router",
            frame: v6(w6, 1, 17, &udp),
            reason: Some("ttl_exceeded"),
            // Time exceeded (3/0).
            answer: Some(|f| f[12..14] == [0x86, 0xdd] && f[20] == 58 && f[54] == 3 && f[55] == 0),
            forwarded: None,
        },
        Case {
            what: "hop limit 0 across the router",
            frame: v6(w6, 0, 17, &udp),
            reason: Some("ttl_exceeded"),
            answer: Some(|f| f[12..14] == [0x86, 0xdd] && f[20] == 58 && f[54] == 3),
            forwarded: None,
        },
        Case {
            what: "the first IPv4 fragment across the router",
            frame: v4(w4, 64, 17, 0x2000, &udp[..16]),
            reason: None,
            answer: None,
            // The flags and offset kept, the TTL one less.
            forwarded: Some(|f| {
                f[0..6] == W && f[20..22] == [0x20, 0] && f[22] == 63 && f.len() >= 50
            }),
        },
        Case {
            what: "the last IPv4 fragment across the router",
            frame: v4(w4, 64, 17, 2, &udp[16..]),
            reason: None,
            answer: None,
            forwarded: Some(|f| f[0..6] == W && f[20..22] == [0, 2] && f[22] == 63),
        },
        Case {
            what: "an IPv6 fragment across the router",
            frame: v6(w6, 64, 44, &frag6(17, true, &udp)),
            reason: None,
            answer: None,
            forwarded: Some(|f| f[0..6] == W && f[20] == 44 && f[21] == 63),
        },
        Case {
            what: "an IPv4 fragment for the router (it does not reassemble)",
            // The second part of an echo request whose data looks like an echo request.
            frame: v4(me4, 64, 1, 1, &echo4),
            reason: Some("fragment"),
            answer: None,
            forwarded: None,
        },
        Case::dropped(
            "an IPv6 fragment for the router (it does not reassemble)",
            v6(me6, 64, 44, &frag6(58, false, &echo6_frag)),
            "fragment",
        ),
        Case::dropped(
            "an echo request from the router's own address to itself",
            raw::eth(r0, L, raw::IPV4, &raw::ipv4(me4, me4, 64, 1, 0, &echo4)),
            "bad_source",
        ),
        Case::dropped(
            "a packet across the router from the router's own WAN address",
            raw::eth(
                r0,
                L,
                raw::IPV4,
                &raw::ipv4(Ipv4Addr::new(10, 72, 0, 2), w4, 64, 17, 0, &udp),
            ),
            "bad_source",
        ),
        Case::dropped(
            "an IPv6 packet across the router from the router's own WAN address",
            raw::eth(
                r0,
                L,
                raw::IPV6,
                &raw::ipv6("fd72::2".parse().unwrap(), w6, 64, 17, &udp),
            ),
            "bad_source",
        ),
        Case::dropped(
            "an unknown EtherType",
            raw::eth(r0, L, 0x88b5, &[0; 50]),
            "unknown_ethertype",
        ),
    ];
    for c in cases {
        let what = c.what;
        let before = drop_counts(&net.mgmt);
        send(&mut lan, &c.frame);
        if let Some(r) = c.reason {
            let mut now = before.clone();
            assert!(
                wait_until(T, || {
                    now = drop_counts(&net.mgmt);
                    now.get(r) > before.get(r)
                }),
                "{what}: not counted as {r}: {now:?}"
            );
        }
        if let Some(pred) = c.answer {
            assert!(wait_frame(&mut lan, T, pred).is_some(), "{what}: no answer");
        }
        if let Some(pred) = c.forwarded {
            assert!(
                wait_frame(&mut wan, T, pred).is_some(),
                "{what}: not forwarded"
            );
        }
        // Nothing else came back or went through.
        for (plug, side) in [(&mut lan, "LAN"), (&mut wan, "WAN")] {
            let extra = wait_frame(plug, Duration::from_millis(300), is_traffic);
            assert!(
                extra.is_none(),
                "{what}: unexpected on the {side}: {extra:02x?}"
            );
        }
        let after = drop_counts(&net.mgmt);
        let changed: Vec<(&String, u64)> = after
            .iter()
            .filter(|(k, v)| *k != "total" && before.get(*k) != Some(v))
            .map(|(k, v)| (k, v - before.get(k).copied().unwrap_or(0)))
            .collect();
        let want: Vec<(&String, u64)> = c
            .reason
            .map(|r| (after.keys().find(|k| *k == r).unwrap(), 1))
            .into_iter()
            .collect();
        assert_eq!(changed, want, "{what}: {after:?}");
    }
    // A real namespace across the router afterwards.
    let _server = net.server();
    let (code, out, err) = net.lan_host("ping -c 2 -i 0.2 -W 2 10.72.0.10");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("2 packets transmitted, 2 received"), "{out}");
    assert!(
        net.router.child.try_wait().unwrap().is_none(),
        "the router exited"
    );
}

#[test]
fn an_ipv6_port_forward_reaches_a_lan_server_from_the_wan_and_its_icmpv6_errors_come_back() {
    require("python3");
    require("curl");
    let net = Net::start_with(&[
        "--forward",
        "vde1:tcp:8080=[fd71::50]:8000",
        "--forward",
        "vde1:udp:5353=[fd71::10]:53",
    ]);
    let (_server, log) = net.lan_server("fd71::50/64", "fd71::1", "::");
    let lan = net.lan.vnl();
    // A WAN host with no route to the LAN: only the router's WAN address is reachable.
    net.check_port_forward(
        || net.wan_host("curl -6 -s -m 2 'http://[fd72::2]:8080/hello.txt'"),
        &log,
        ("fd72::11", "[fd72::11]"),
        "[fd72::2]:8080",
        "[fd71::50]:8000",
    );
    // Nothing listens on the LAN host's port 53: its port unreachable reaches the WAN
    // client, whose connected socket hears of it only if the quote names the router.
    let _lan_host = ns_bg(&[
        "--ip",
        "fd71::10/64",
        "--gw",
        "fd71::1",
        &lan,
        "--",
        "sleep",
        "60",
    ]);
    let client = udp_client("socket.AF_INET6", "('fd72::2', 5353)");
    let (code, out, err) = net.wan_host(&format!("python3 -c \"{client}\""));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("refused"), "{out}\n{err}");
    let nat = console(&net.mgmt, "nat/print");
    assert!(!nat.contains("icmp_errors 0"), "{nat}");
}

/// `filo ns ARGS` (addresses, routes, the VNL last) running the python script `server` after
/// the shell commands `setup` (ending in `&&`, or empty).
fn python_ns(args: &[&str], setup: &str, server: &str) -> Proc {
    let script = format!("{setup} exec python3 -c \"$0\"");
    let mut args = args.to_vec();
    args.extend(["--", "sh", "-c", &script, server]);
    ns_bg(&args)
}

/// A UDP server on the WAN host answering every datagram with itself, both families, port
/// 9999; it logs `ADDR LEN` of each to `log`.
fn udp_echo_server(log: &std::path::Path) -> String {
    format!(
        "import select, socket\n\
         socks = []\n\
         for fam, any in ((socket.AF_INET, '0.0.0.0'), (socket.AF_INET6, '::')):\n\
         \x20   s = socket.socket(fam, socket.SOCK_DGRAM)\n\
         \x20   if fam == socket.AF_INET6:\n\
         \x20       s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)\n\
         \x20   s.bind((any, 9999))\n\
         \x20   socks.append(s)\n\
         log = open('{}', 'a')\n\
         while True:\n\
         \x20   for s in select.select(socks, [], [])[0]:\n\
         \x20       d, a = s.recvfrom(65535)\n\
         \x20       log.write('%s %d\\n' % (a[0], len(d)))\n\
         \x20       log.flush()\n\
         \x20       s.sendto(d, a)\n",
        log.display()
    )
}

/// A UDP client sending a 3000-byte datagram to `to` (IPv4, IPv6) port 9999 until it is
/// echoed whole, each try after 3000 bytes to `nobody` when given
/// ([`REORDER_FIRST_FRAGMENTS`], so that its later fragments overtake its first): prints
/// `v4 LEN SAME`, `v6 LEN SAME`.
fn udp_big_client(to: (&str, &str), nobody: Option<(&str, &str)>) -> String {
    let (prime, nobody) = match nobody {
        Some(n) => ("        s.sendto(bytes(3000), (nobody, 9))\n", n),
        None => ("", ("", "")),
    };
    format!(
        "import socket\n\
         data = bytes(range(250)) * 12\n\
         for name, fam, addr, nobody in (('v4', socket.AF_INET, '{}', '{}'), ('v6', socket.AF_INET6, '{}', '{}')):\n\
         \x20   s = socket.socket(fam, socket.SOCK_DGRAM)\n\
         \x20   s.settimeout(1)\n\
         \x20   for _ in range(15):\n\
         {prime}\
         \x20       s.sendto(data, (addr, 9999))\n\
         \x20       try:\n\
         \x20           d = s.recv(65535)\n\
         \x20       except OSError:\n\
         \x20           continue\n\
         \x20       print(name, len(d), d == data)\n\
         \x20       break\n",
        to.0, nobody.0, to.1, nobody.1
    )
}

#[test]
fn fragmented_pings_and_udp_datagrams_cross_the_masquerade_and_nat66_whole() {
    require("python3");
    require("ping");
    // The WAN's MTU is 1400: the router cuts the LAN host's 1500-byte IPv4 fragments again
    // (each piece after the first translated as the first); the LAN host learns the IPv6
    // path MTU from packet too big on the UDP client's first tries and fragments to fit.
    let net = Net::start_with(&["--masquerade", "vde1"]);
    // No route back to the LAN: only translated packets can be answered.
    let log = net.tmp.join("udp.log");
    let wan = net.wan.vnl();
    let wan_server = ["--ip", "10.72.0.10/24", "--ip", "fd72::10/64", &wan];
    let _server = python_ns(&wan_server, "", &udp_echo_server(&log));
    let (code, out, err) = net.lan_host(&format!(
        "{LAN6} python3 -c \"{}\" && ping -c 2 -i 0.2 -W 2 -s 3000 10.72.0.10 \
         && ping -6 -c 2 -i 0.2 -W 2 -s 3000 fd72::10",
        udp_big_client(("10.72.0.10", "fd72::10"), None)
    ));
    let nat = console(&net.mgmt, "nat/print");
    let udp_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(code, 0, "{out}\n{err}\n{nat}\n{udp_log}");
    assert!(out.contains("v4 3000 True"), "{out}\n{nat}");
    assert!(out.contains("v6 3000 True"), "{out}\n{nat}");
    assert_eq!(
        out.matches("2 packets transmitted, 2 received").count(),
        2,
        "{out}"
    );
    // The server saw the router's addresses, whole datagrams.
    assert!(udp_log.lines().any(|l| l == "10.72.0.2 3000"), "{udp_log}");
    assert!(udp_log.lines().any(|l| l == "fd72::2 3000"), "{udp_log}");
    assert!(
        !udp_log.contains("10.71.0.10") && !udp_log.contains("fd71::10"),
        "{udp_log}"
    );
    assert!(nat.contains("fragments_dropped 0"), "{nat}");
    assert!(!nat.contains("fragments_translated 0 "), "{nat}");
}

impl Net {
    /// After a UDP exchange whose fragments may have overtaken their first ones (the
    /// client's exit code, output and errors, [`udp_big_client`]): both families' datagrams
    /// came back whole (a slow try is tried again, not a loss) and the router dropped no
    /// fragment. Returns the echo server's `log` and how many later fragments the router
    /// has held so far.
    fn check_held_exchange(
        &self,
        (code, out, err): (i32, String, String),
        log: &std::path::Path,
    ) -> (String, u64) {
        let nat = console(&self.mgmt, "nat/print");
        let stat = console(&self.mgmt, "stat");
        let udp_log = std::fs::read_to_string(log).unwrap_or_default();
        let all = format!("{out}\n{err}\n{nat}\n{stat}\n{udp_log}");
        assert_eq!(code, 0, "{all}");
        assert!(out.contains("v4 3000 True"), "{all}");
        assert!(out.contains("v6 3000 True"), "{all}");
        assert!(udp_log.lines().all(|l| l.ends_with(" 3000")), "{all}");
        let held: u64 = nat
            .split("fragments_held ")
            .nth(1)
            .and_then(|t| t.split(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{nat}"));
        assert!(nat.contains("fragments_dropped 0"), "{all}");
        assert!(stat.contains("drop fragment_hold_full 0"), "{all}");
        assert!(stat.contains("drop fragment_hold_timeout 0"), "{all}");
        (udp_log, held)
    }

    /// Runs `exchange` (a UDP exchange through the router, see [`Net::check_held_exchange`])
    /// until the router has held later fragments of both families' datagrams (two each at
    /// least): whether the kernel's later fragments overtake the first depends on timing,
    /// which a loaded machine can upset, so up to 5 exchanges; each must come back whole.
    fn held_exchanges(
        &self,
        log: &std::path::Path,
        mut exchange: impl FnMut() -> (i32, String, String),
    ) -> String {
        let mut udp_log = String::new();
        for _ in 0..5 {
            let (l, held) = self.check_held_exchange(exchange(), log);
            udp_log = l;
            if held >= 4 {
                return udp_log;
            }
        }
        panic!("no later fragment overtook its first one in 5 exchanges: {udp_log}");
    }
}

/// Shell commands that make a namespace's vde0 send every first fragment (IPv4: offset 0
/// and more fragments; IPv6: a fragment header right after the fixed header, offset 0, M)
/// through a 400 kbit/s HTB class, the rest at once: a first fragment that finds that class
/// in debt (30 ms for 1500 bytes) leaves after its datagram's later fragments. netem is
/// not in every kernel; htb and u32 are. 10.72.0.99 and fd72::99 (a MAC nobody has) are
/// where the namespace sends a datagram that puts the class in debt ([`prime`]).
const REORDER_FIRST_FRAGMENTS: &str = "tc qdisc add dev vde0 root handle 1: htb default 20 \
    && tc class add dev vde0 parent 1: classid 1:10 htb rate 400kbit burst 1b cburst 1b \
    && tc class add dev vde0 parent 1: classid 1:20 htb rate 1gbit \
    && tc filter add dev vde0 parent 1: protocol ip prio 1 u32 match u16 0x2000 0x3fff at 6 flowid 1:10 \
    && tc filter add dev vde0 parent 1: protocol ipv6 prio 2 u32 match u8 44 0xff at 6 \
       match u16 0x0001 0xfff9 at 42 flowid 1:10 \
    && ip neigh add 10.72.0.99 lladdr 02:00:00:00:00:99 dev vde0 \
    && ip -6 neigh add fd72::99 lladdr 02:00:00:00:00:99 dev vde0";

/// [`udp_echo_server`] that, before each answer, sends 3000 bytes to nobody
/// ([`REORDER_FIRST_FRAGMENTS`]): its answer's first fragment waits behind them, so the
/// answer's later fragments reach the router first.
fn reordering_udp_echo_server(log: &std::path::Path) -> String {
    let prime = "        s.sendto(bytes(3000), \
                 ('10.72.0.99' if s.family == socket.AF_INET else 'fd72::99', 9))\n";
    udp_echo_server(log).replace(
        "        s.sendto(d, a)\n",
        &format!("{prime}        s.sendto(d, a)\n"),
    )
}

#[test]
fn fragments_that_overtake_their_first_one_are_held_and_cross_the_masquerade_and_nat66() {
    require("python3");
    require("tc");
    // The WAN at MTU 1500, as the server's: the router cuts nothing again.
    let net = Net::start_confs(
        "ip=10.71.0.1/24,ip=fd71::1/64",
        "ip=10.72.0.2/24,ip=fd72::2/64",
        &["--masquerade", "vde1"],
    );
    let log = net.tmp.join("udp.log");
    let server = reordering_udp_echo_server(&log);
    assert!(server.contains("10.72.0.99"), "{server}");
    let wan = net.wan.vnl();
    let wan_server = ["--ip", "10.72.0.10/24", "--ip", "fd72::10/64", &wan];
    let setup = format!("{REORDER_FIRST_FRAGMENTS} &&");
    let _server = python_ns(&wan_server, &setup, &server);
    let client = udp_big_client(("10.72.0.10", "fd72::10"), None);
    let udp_log = net.held_exchanges(&log, || {
        net.lan_host(&format!("{LAN6} python3 -c \"{client}\""))
    });
    assert!(udp_log.lines().any(|l| l == "10.72.0.2 3000"), "{udp_log}");
}

#[test]
fn fragments_that_overtake_their_first_one_are_held_and_cross_port_forwards_both_families() {
    require("python3");
    require("tc");
    let net = Net::start_confs(
        "ip=10.71.0.1/24,ip=fd71::1/64",
        "ip=10.72.0.2/24,ip=fd72::2/64",
        &[
            "--forward",
            "vde1:udp:9999=10.71.0.10:9999",
            "--forward",
            "vde1:udp:9999=[fd71::10]:9999",
        ],
    );
    let log = net.tmp.join("udp.log");
    let lan = net.lan.vnl();
    let lan_server = ["--ip", "10.71.0.10/24", "--gw", "10.71.0.1", &lan];
    let _server = python_ns(&lan_server, LAN6, &udp_echo_server(&log));
    let client = udp_big_client(("10.72.0.2", "fd72::2"), Some(("10.72.0.99", "fd72::99")));
    let udp_log = net.held_exchanges(&log, || {
        net.wan_host(&format!(
            "{REORDER_FIRST_FRAGMENTS} && python3 -c \"{client}\""
        ))
    });
    // The LAN server got the requests whole, from the WAN client itself.
    for client in ["10.72.0.11 3000", "fd72::11 3000"] {
        assert!(udp_log.lines().any(|l| l == client), "{udp_log}");
    }
}

#[test]
fn malformed_or_impossible_ipv6_port_forwards_are_refused_naming_the_problem() {
    for (conf, forward, what) in [
        (
            "ip=10.72.0.2/24,ip=fd72::2/64",
            "vde0:tcp:80=fd71::50:80",
            "in brackets",
        ),
        (
            "ip=10.72.0.2/24,ip=fd72::2/64",
            "vde0:tcp:80=[fd71::50",
            "no ']'",
        ),
        (
            "ip=10.72.0.2/24,ip=fd72::2/64",
            "vde0:tcp:80=[fd71::5g]:80",
            "not an IPv6 address",
        ),
        (
            "ip=10.72.0.2/24",
            "vde0:tcp:80=[fd71::50]:80",
            "no global IPv6 address",
        ),
        (
            "ip=fd72::2/64",
            "vde0:tcp:80=10.71.0.50:80",
            "no IPv4 address",
        ),
    ] {
        let out = Command::new(FILO)
            .args([
                "router",
                "--vnl",
                "vde:///nonexistent/filo-nat6",
                "--conf",
                conf,
            ])
            .args(["--forward", forward])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{forward}: {err}");
        assert!(
            err.contains("--forward") && err.contains(what),
            "{forward}: {err}"
        );
    }
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
    let pid: libc::pid_t = pidfile_pid(&pidfile, T);
    filo_test_support::sys::kill(pid, libc::SIGTERM);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("2 received"), "{out}");
}

/// `filo router` on two taps (`tap://TAG{l,w}ID`, vde0 and vde1 with `router_addrs`, plus
/// `extra` flags), each moved into a namespace of its own and given `host_addrs`; returns
/// the router, its management socket and each tap's name with its namespace.
fn router_on_taps(
    tmp: &TempDir,
    tag: &str,
    router_addrs: [&str; 2],
    host_addrs: [&str; 2],
    extra: &[&str],
    stderr: Stdio,
) -> (Proc, PathBuf, [(String, Netns); 2]) {
    // Interface names are at most 15 bytes.
    let id = std::process::id() % 100_000;
    let taps = [format!("{tag}l{id}"), format!("{tag}w{id}")];
    let mgmt = tmp.join("r.mgmt");
    let router = Proc::spawn(
        Command::new(FILO)
            .args(["router", "--vnl", &format!("tap://{}", taps[0])])
            .args(["--conf", &format!("ip={}", router_addrs[0])])
            .args(["--vnl", &format!("tap://{}", taps[1])])
            .args(["--conf", &format!("ip={}", router_addrs[1])])
            .args(extra)
            .arg("-M")
            .arg(&mgmt)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr),
    );
    assert!(wait_until(T, || mgmt.exists()), "the router did not start");
    let nets = taps.map(|tap| {
        let ns = Netns::new(&format!("{tag}-ns"));
        run(Command::new("ip").args(["link", "set", &tap, "netns", &ns.name]));
        (tap, ns)
    });
    for ((tap, ns), addr) in nets.iter().zip(host_addrs) {
        ns.exec_ok(&["ip", "addr", "add", addr, "dev", tap]);
        ns.exec_ok(&["ip", "link", "set", tap, "up"]);
    }
    (router, mgmt, nets)
}

/// As root, the router can hold a tap per side moved into the namespaces it joins (no switch,
/// bus or `filo ns` between): the taps speak the +vnet framing, so a large download crosses
/// the masquerade as TCP super-frames, whole, and the server sees the router's WAN address.
#[test]
fn a_router_holding_taps_moved_into_namespaces_masquerades_super_frames() {
    require("python3");
    require("curl");
    let tmp = TempDir::new("filo-router-taps");
    let (_router, mgmt, [(_, lan), (_, wan)]) = router_on_taps(
        &tmp,
        "frt",
        ["10.75.0.1/24", "10.76.0.2/24"],
        ["10.75.0.10/24", "10.76.0.10/24"],
        &["--masquerade", "vde1"],
        test_log(),
    );
    // No route back from the WAN: only translated packets can be answered.
    lan.exec_ok(&["ip", "route", "add", "default", "via", "10.75.0.1"]);
    let dir = tmp.join("www");
    std::fs::create_dir(&dir).unwrap();
    let big = dir.join("big");
    run(Command::new("head")
        .args(["-c", "16M", "/dev/urandom"])
        .stdout(std::fs::File::create(&big).unwrap()));
    let sum = run(Command::new("sha256sum").arg(&big));
    let log = tmp.join("access.log");
    let _server = Proc::spawn(
        wan.command("python3")
            .args(["-m", "http.server", "-d"])
            .arg(&dir)
            .arg("8000")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap()),
    );
    let got = tmp.join("got");
    assert!(
        lan.curl_until("http://10.76.0.10:8000/big", &got, T),
        "no download through the router's taps"
    );
    let got_sum = run(Command::new("sha256sum").arg(&got));
    assert_eq!(
        got_sum.split_whitespace().next(),
        sum.split_whitespace().next()
    );
    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(http_requesters(&log, "/big"), ["10.76.0.2"], "{log}");
    let (wan_rx, _) = super_counts(&mgmt, "vde1");
    let (_, lan_tx) = super_counts(&mgmt, "vde0");
    assert!(
        wan_rx > 0 && lan_tx > 0,
        "download: vde1 {wan_rx} super-frames in, vde0 {lan_tx} out"
    );
}

/// A router holding two taps, one moved into a namespace that is then deleted (its tap goes
/// with it): the router routes on with the other interface, drops and counts what it had for
/// the lost one and says why in `stat`; when the last interface goes too, it exits with a
/// failure naming both.
#[test]
fn a_lost_interface_leaves_the_router_routing_on_the_others_and_losing_all_ends_it() {
    require("ping");
    let tmp = TempDir::new("filo-router-down");
    let (mut router, mgmt, [(a, lan), (b, wan)]) = router_on_taps(
        &tmp,
        "frd",
        ["10.77.0.1/24", "10.78.0.1/24"],
        ["10.77.0.10/24", "10.78.0.10/24"],
        &[],
        Stdio::piped(),
    );
    lan.exec_ok(&["ip", "route", "add", "default", "via", "10.77.0.1"]);
    wan.exec_ok(&["ip", "route", "add", "default", "via", "10.78.0.1"]);
    lan.exec_ok(&["ping", "-c", "1", "-W", "5", "10.78.0.10"]);
    // The LAN's namespace goes, and its tap with it.
    drop(lan);
    let stat = || console(&mgmt, "stat");
    assert!(
        wait_until(T, || stat().contains(&format!("down vde0 tap://{a}: "))),
        "{}",
        stat()
    );
    // The WAN side still gets answers, and the replies meant for the LAN are counted.
    wan.exec_ok(&["ping", "-c", "2", "-i", "0.2", "-W", "5", "10.78.0.1"]);
    let _ = wan
        .command("ping")
        .args(["-c", "2", "-i", "0.2", "-W", "1", "10.77.0.10"])
        .status();
    let text = stat();
    let link_down: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("drop link_down "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(link_down >= 1, "{text}");
    // The last interface goes: the router ends, failing, naming both.
    drop(wan);
    let status = router.wait_exit(T);
    assert_eq!(status.code(), Some(1));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut router.child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("every interface is down"), "{err}");
    assert!(
        err.contains(&format!("tap://{a}")) && err.contains(&format!("tap://{b}")),
        "{err}"
    );
}

/// `tap://IFNAME[netns=NAME]` makes the tap inside an `ip netns` namespace at once (no move
/// afterwards), so both sides can have the same name, eth0, each in its own namespace; a
/// namespace that does not exist is refused naming it.
#[test]
fn a_router_makes_its_taps_inside_named_namespaces() {
    require("ping");
    let tmp = TempDir::new("filo-router-netns");
    let lan = Netns::new("frn-lan");
    let wan = Netns::new("frn-wan");
    let mgmt = tmp.join("r.mgmt");
    let _router = Proc::spawn(
        Command::new(FILO)
            .args([
                "router",
                "--vnl",
                &format!("tap://eth0[netns={}]", lan.name),
            ])
            .args(["--conf", "ip=10.79.0.1/24"])
            .args(["--vnl", &format!("tap://eth0[netns={}]", wan.name)])
            .args(["--conf", "ip=10.80.0.1/24", "--masquerade", "vde1", "-M"])
            .arg(&mgmt)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(test_log()),
    );
    assert!(wait_until(T, || mgmt.exists()), "the router did not start");
    for (ns, addr) in [(&lan, "10.79.0.10/24"), (&wan, "10.80.0.10/24")] {
        ns.exec_ok(&["ip", "addr", "add", addr, "dev", "eth0"]);
        ns.exec_ok(&["ip", "link", "set", "eth0", "up"]);
    }
    lan.exec_ok(&["ip", "route", "add", "default", "via", "10.79.0.1"]);
    let out = lan.exec_ok(&["ping", "-c", "2", "-i", "0.2", "-W", "5", "10.80.0.10"]);
    assert!(out.contains("2 received"), "{out}");
    let nat = console(&mgmt, "nat/print");
    assert!(nat.contains("icmp 10.79.0.10:"), "{nat}");
    let missing = unique("frn-none");
    let out = Command::new(FILO)
        .args(["router", "--vnl", &format!("tap://eth0[netns={missing}]")])
        .args(["--conf", "ip=10.81.0.1/24"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("network namespace /run/netns/{missing}")),
        "{err}"
    );
}
