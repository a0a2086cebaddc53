//! The servers against real clients over a veth pair between two private network namespaces:
//! busybox's `udhcpc` gets a lease from [`server::Server`]; `rdisc6` (ndisc6) and the Linux
//! kernel's SLAAC read [`ra::Advertiser`]'s advertisements; ISC `dhclient -6 -S` gets DNS
//! servers and the search list from [`v6::Server`].
//!
//! The server side is this test binary itself, run again inside the server's namespace with
//! `FILO_DHCP_SERVE` set, as the ignored test `serve_dhcp_in_namespace`: a UDP socket on
//! port 67 bound to the veth end. It sends a reply the way [`server::Reply`] says: broadcast,
//! or unicast to an address the client does not have yet at the client's MAC (the harness puts
//! that MAC in the neighbour table first, as dnsmasq does), and writes the lease file after
//! each reply. `serve_ra_in_namespace` likewise runs the advertiser on a raw ICMPv6 socket,
//! `serve_v6_in_namespace` the DHCPv6 server on UDP port 547.

use std::net::{Ipv4Addr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use filo_dhcp::server::{self, Destination};
use filo_dhcp::{ra, v6};
use filo_test_support::{require, run, unique, Netns, Proc, TempDir};

const SERVE_ENV: &str = "FILO_DHCP_SERVE";
const RA_ENV: &str = "FILO_RA_SERVE";
const V6_ENV: &str = "FILO_DHCP6_SERVE";
/// Where a server side says it is listening (an empty file).
const READY_ENV: &str = "FILO_SERVE_READY";

/// Tells the test that started this server side that its socket is ready.
fn ready() {
    if let Some(path) = std::env::var_os(READY_ENV) {
        std::fs::write(path, "").expect("ready file");
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// The server loop, in the server's namespace: `FILO_DHCP_SERVE=IFACE LEASEFILE`.
#[test]
#[ignore = "the server side of the peer tests, run by them in a namespace"]
fn serve_dhcp_in_namespace() {
    let Ok(arg) = std::env::var(SERVE_ENV) else {
        return;
    };
    let (iface, leases) = arg.split_once(' ').expect("IFACE LEASEFILE");
    let mut config = server::Config::new(ip("10.0.2.2"), 24, ip("10.0.2.15"), ip("10.0.2.20"));
    config.router = Some(ip("10.0.2.2"));
    config.dns = vec![ip("10.0.2.3"), ip("10.0.2.4")];
    config.domain = Some("lab.example".into());
    config.search = vec!["lab.example".into(), "example.org".into()];
    config.mtu = Some(1400);
    config.lease_time = Duration::from_secs(600);
    let mut srv = server::Server::new(config).expect("config");
    let sock = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .expect("socket");
    sock.set_reuse_address(true).expect("SO_REUSEADDR");
    sock.set_broadcast(true).expect("SO_BROADCAST");
    sock.bind_device(Some(iface.as_bytes()))
        .expect("SO_BINDTODEVICE");
    sock.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 67).into())
        .expect("bind port 67");
    let sock: UdpSocket = sock.into();
    ready();
    let start = std::time::Instant::now();
    let mut buf = [0u8; 1500];
    while start.elapsed() < Duration::from_secs(120) {
        let (n, from) = sock.recv_from(&mut buf).expect("recv");
        let now = filo_dhcp::Instant::from_millis(start.elapsed().as_millis() as u64);
        let reply = match srv.handle(now, &buf[..n]) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                eprintln!("serve: from {from}: {e}");
                continue;
            }
        };
        if let Destination::Unicast { ip, mac } = reply.to {
            let mac = server::mac_string(&mac);
            run(Command::new("ip").args([
                "neigh",
                "replace",
                &ip.to_string(),
                "lladdr",
                &mac,
                "dev",
                iface,
            ]));
        }
        eprintln!("serve: {:?} to {:?}", reply.kind, reply.to);
        sock.send_to(
            &reply.payload,
            SocketAddrV4::new(reply.dst_ip(), reply.dst_port()),
        )
        .expect("send");
        std::fs::write(leases, srv.save_leases(now, 1_000_000)).expect("lease file");
    }
}

/// A veth pair `a` (server namespace, 10.0.2.2/24) — `b` (client namespace, no address).
fn link(srv: &Netns, cli: &Netns) -> (String, String) {
    let (a, b) = (unique("ds"), unique("dc"));
    run(Command::new("ip").args([
        "link", "add", &a, "netns", &srv.name, "type", "veth", "peer", "name", &b, "netns",
        &cli.name,
    ]));
    srv.exec_ok(&["ip", "addr", "add", "10.0.2.2/24", "dev", &a]);
    srv.exec_ok(&["ip", "link", "set", &a, "up"]);
    cli.exec_ok(&["ip", "link", "set", &b, "up"]);
    (a, b)
}

/// This test binary in `srv`, running the ignored test `name` with `env` set to `value`,
/// once it is listening.
fn start_server(tmp: &TempDir, srv: &Netns, name: &str, env: &str, value: &str) -> Proc {
    let me = std::env::current_exe().expect("test binary");
    let ready = tmp.join(name);
    let mut c = srv.command(&me.to_string_lossy());
    c.args(["--exact", name, "--ignored", "--nocapture"])
        .env(env, value)
        .env(READY_ENV, &ready)
        .stdout(Stdio::null())
        .stderr(filo_test_support::test_log());
    let p = Proc::spawn(&mut c);
    assert!(
        filo_test_support::wait_until(Duration::from_secs(60), || ready.exists()),
        "{name} did not start in {} (FILO_TEST_LOGS=1 shows why)",
        srv.name
    );
    p
}

/// A client's hook script that writes its environment to `env` when `condition` holds.
fn env_script(tmp: &TempDir, condition: &str, env: &std::path::Path) -> std::path::PathBuf {
    let script = tmp.join("script");
    let text = format!(
        "#!/bin/sh\n{condition} && env > {}\nexit 0\n",
        env.display()
    );
    std::fs::write(&script, text).expect("script");
    run(Command::new("chmod").arg("755").arg(&script));
    script
}

/// Runs udhcpc once in `cli` on `iface` with `extra` arguments; returns the variables its
/// script saw when bound.
fn udhcpc(tmp: &TempDir, cli: &Netns, iface: &str, extra: &[&str]) -> String {
    let env = tmp.join("bound.env");
    let _ = std::fs::remove_file(&env);
    let script = env_script(tmp, "[ \"$1\" = bound ]", &env);
    let mut c = cli.command("busybox");
    c.args([
        "udhcpc", "-i", iface, "-n", "-q", "-f", "-t", "5", "-T", "1",
    ])
    .args(extra)
    .arg("-s")
    .arg(&script)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let (status, out, err) = Proc::spawn(&mut c).output(Duration::from_secs(30));
    assert!(status.success(), "udhcpc failed: {out}{err}");
    std::fs::read_to_string(&env).unwrap_or_else(|e| panic!("no bound event ({e}): {out}{err}"))
}

fn var<'a>(env: &'a str, name: &str) -> &'a str {
    env.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("udhcpc gave no ${name}: {env}"))
}

#[test]
fn busybox_udhcpc_gets_a_lease_with_router_dns_and_search_list() {
    require("busybox");
    let tmp = TempDir::new("dhcp-peer");
    let (srv, cli) = (Netns::new("dhsrv"), Netns::new("dhcli"));
    let (a, b) = link(&srv, &cli);
    let leases = tmp.join("leases");
    let _server = start_server(
        &tmp,
        &srv,
        "serve_dhcp_in_namespace",
        SERVE_ENV,
        &format!("{a} {}", leases.display()),
    );
    let mac = cli.exec_ok(&["cat", &format!("/sys/class/net/{b}/address")]);
    let mac = mac.trim();

    // Without the broadcast flag: the server unicasts to the offered address at the MAC.
    let env = udhcpc(&tmp, &cli, &b, &["-O", "search", "-O", "mtu"]);
    assert_eq!(var(&env, "ip"), "10.0.2.15", "{env}");
    assert_eq!(var(&env, "subnet"), "255.255.255.0");
    assert_eq!(var(&env, "router"), "10.0.2.2");
    assert_eq!(var(&env, "dns").trim(), "10.0.2.3 10.0.2.4");
    assert_eq!(var(&env, "domain"), "lab.example");
    assert_eq!(var(&env, "search").trim(), "lab.example example.org");
    assert_eq!(var(&env, "mtu"), "1400");
    assert_eq!(var(&env, "lease"), "600");
    assert_eq!(var(&env, "serverid"), "10.0.2.2");
    let file = std::fs::read_to_string(&leases).expect("the server's lease file");
    assert!(
        file.contains(&format!("{mac} 10.0.2.15 ")),
        "{mac} missing in {file}"
    );

    // With the broadcast flag (-B), a second time: a broadcast reply, the same address.
    let env = udhcpc(&tmp, &cli, &b, &["-B"]);
    assert_eq!(var(&env, "ip"), "10.0.2.15", "{env}");

    // Another client identifier is another client: the next address.
    let env = udhcpc(&tmp, &cli, &b, &["-x", "0x3d:ff00112233"]);
    assert_eq!(var(&env, "ip"), "10.0.2.16", "{env}");
}

/// The advertiser loop, in the server's namespace: `FILO_RA_SERVE=IFACE`.
#[test]
#[ignore = "the server side of the peer tests, run by them in a namespace"]
fn serve_ra_in_namespace() {
    let Ok(iface) = std::env::var(RA_ENV) else {
        return;
    };
    let (index, mac) = index_and_mac(&iface);
    let mut config = ra::Config::new(mac);
    config.prefixes = vec![ra::Prefix::new("fd00:1::".parse().unwrap(), 64)];
    config.rdnss = vec!["fd00:1::3".parse().unwrap()];
    config.dnssl = vec!["lab.example".into()];
    config.mtu = Some(1400);
    config.other = true;
    let start = std::time::Instant::now();
    let now = || filo_dhcp::Instant::from_millis(start.elapsed().as_millis() as u64);
    let mut adv = ra::Advertiser::new(config, now()).expect("config");
    let sock = socket2::Socket::new(
        socket2::Domain::IPV6,
        socket2::Type::RAW,
        Some(socket2::Protocol::ICMPV6),
    )
    .expect("raw ICMPv6 socket");
    sock.bind_device(Some(iface.as_bytes()))
        .expect("SO_BINDTODEVICE");
    sock.set_multicast_hops_v6(255).expect("hops");
    sock.set_unicast_hops_v6(255).expect("hops");
    sock.set_multicast_loop_v6(false).expect("loop");
    sock.join_multicast_v6(&ra::ALL_ROUTERS, index)
        .expect("join ff02::2");
    // A datagram socket's recv_from and send_to work on any datagram-like descriptor, and
    // spare us socket2's uninitialised buffers.
    let sock: UdpSocket = sock.into();
    ready();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut buf = [0u8; 1500];
    let mut random = 12345u32;
    while start.elapsed() < Duration::from_secs(120) {
        random = random.wrapping_mul(1_103_515_245).wrapping_add(12345);
        if let Some(pkt) = adv.poll(now(), random) {
            // The kernel writes the IPv6 header (and the ICMPv6 checksum) itself.
            let to = SocketAddrV6::new(ra::ALL_NODES, 0, 0, index);
            sock.send_to(&pkt[40..], to).expect("send");
            eprintln!("serve: advertisement");
        }
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let std::net::SocketAddr::V6(from) = from else {
                continue;
            };
            // Without ancillary data the socket tells neither the hop limit nor the
            // destination: the unit tests check those; here solicitations go to ff02::2.
            let r = adv.handle_icmpv6(now(), *from.ip(), ra::ALL_ROUTERS, 255, &buf[..n], random);
            eprintln!("serve: from {from}: {r:?}");
        }
    }
}

/// A veth pair `a` (server namespace) — `b` (client namespace) without duplicate address
/// detection, up, once the client has its link-local address.
fn link6(srv: &Netns, cli: &Netns) -> (String, String) {
    let (a, b) = (unique("rs"), unique("rc"));
    run(Command::new("ip").args([
        "link", "add", &a, "netns", &srv.name, "type", "veth", "peer", "name", &b, "netns",
        &cli.name,
    ]));
    for (ns, i) in [(srv, &a), (cli, &b)] {
        ns.exec_ok(&["sysctl", "-q", &format!("net.ipv6.conf.{i}.accept_dad=0")]);
        ns.exec_ok(&["ip", "link", "set", i, "up"]);
    }
    // The link-local address comes once the link has its carrier.
    for (ns, i) in [(srv, &a), (cli, &b)] {
        let ready = filo_test_support::wait_until(Duration::from_secs(10), || {
            ns.exec_ok(&["ip", "-6", "addr", "show", "dev", i])
                .contains("inet6 fe80::")
        });
        assert!(ready, "no link-local address on {i}");
    }
    (a, b)
}

#[test]
fn rdisc6_and_the_kernel_read_the_router_advertisements() {
    require("rdisc6");
    let (srv, cli) = (Netns::new("rasrv"), Netns::new("racli"));
    let tmp = TempDir::new("ra-peer");
    let (a, b) = link6(&srv, &cli);
    let _server = start_server(&tmp, &srv, "serve_ra_in_namespace", RA_ENV, &a);
    let mut c = cli.command("rdisc6");
    c.args(["-1", "-r", "10", "-w", "1000", &b])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (status, out, err) = Proc::spawn(&mut c).output(Duration::from_secs(30));
    assert!(status.success(), "rdisc6 failed: {out}{err}");
    let text: String = out.split_whitespace().collect::<Vec<_>>().join(" ");
    for expected in [
        "Stateful other conf. : Yes",
        "Router lifetime : 1800",
        "MTU : 1400 bytes",
        "Prefix : fd00:1::/64",
        "On-link : Yes",
        "Autonomous address conf.: Yes",
        "Recursive DNS server : fd00:1::3",
        "DNS search list : lab.example",
    ] {
        assert!(text.contains(expected), "{expected:?} missing in:\n{out}");
    }
    // The client's kernel forms an address in the prefix and takes the default route.
    let formed = filo_test_support::wait_until(Duration::from_secs(20), || {
        cli.exec_ok(&["ip", "-6", "addr", "show", "dev", &b])
            .contains("inet6 fd00:1::")
    });
    assert!(formed, "{}", cli.exec_ok(&["ip", "-6", "addr"]));
    let routes = cli.exec_ok(&["ip", "-6", "route", "show", "default"]);
    assert!(routes.contains(&format!("dev {b}")), "{routes}");
}

/// The interface's index and MAC, from /sys (the namespace's own, under `ip netns exec`).
fn index_and_mac(iface: &str) -> (u32, filo_dhcp::Mac) {
    let index = std::fs::read_to_string(format!("/sys/class/net/{iface}/ifindex"))
        .expect("ifindex")
        .trim()
        .parse()
        .expect("ifindex");
    let mac = std::fs::read_to_string(format!("/sys/class/net/{iface}/address")).expect("mac");
    let mac: Vec<u8> = mac
        .trim()
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).expect("mac"))
        .collect();
    (index, mac.try_into().expect("mac"))
}

/// The DHCPv6 server loop, in the server's namespace: `FILO_DHCP6_SERVE=IFACE`.
#[test]
#[ignore = "the server side of the peer tests, run by them in a namespace"]
fn serve_v6_in_namespace() {
    let Ok(iface) = std::env::var(V6_ENV) else {
        return;
    };
    let (index, mac) = index_and_mac(&iface);
    let mut config = v6::Config::new(mac);
    config.dns = vec!["fd00:1::3".parse().unwrap(), "fd00:1::4".parse().unwrap()];
    config.search = vec!["lab.example".into(), "example.org".into()];
    let srv = v6::Server::new(config).expect("config");
    let sock = socket2::Socket::new(
        socket2::Domain::IPV6,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .expect("socket");
    sock.set_only_v6(true).expect("IPV6_V6ONLY");
    sock.bind_device(Some(iface.as_bytes()))
        .expect("SO_BINDTODEVICE");
    sock.bind(&SocketAddrV6::new(std::net::Ipv6Addr::UNSPECIFIED, v6::SERVER_PORT, 0, 0).into())
        .expect("bind port 547");
    sock.join_multicast_v6(&v6::ALL_SERVERS, index)
        .expect("join ff02::1:2");
    let sock: UdpSocket = sock.into();
    ready();
    let start = std::time::Instant::now();
    let mut buf = [0u8; 1500];
    while start.elapsed() < Duration::from_secs(120) {
        let (n, from) = sock.recv_from(&mut buf).expect("recv");
        match srv.handle(&buf[..n]) {
            Ok(Some(r)) => {
                eprintln!("serve: {:?} to {from}", r.kind);
                sock.send_to(&r.payload, from).expect("send");
            }
            other => eprintln!("serve: from {from}: {other:?}"),
        }
    }
}

#[test]
fn isc_dhclient_gets_dns_servers_and_search_list_by_stateless_dhcpv6() {
    require("dhclient");
    let tmp = TempDir::new("dhcp6-peer");
    let (srv, cli) = (Netns::new("d6srv"), Netns::new("d6cli"));
    let (a, b) = link6(&srv, &cli);
    let _server = start_server(&tmp, &srv, "serve_v6_in_namespace", V6_ENV, &a);
    let env = tmp.join("inform.env");
    // dhclient 4.4 reports a stateless reply as RENEW6 (INFORM6 in other versions): whatever
    // the reason, the options are what counts.
    let script = env_script(&tmp, "[ -n \"$new_dhcp6_name_servers\" ]", &env);
    let mut c = cli.command("dhclient");
    c.args(["-6", "-S", "-d", "-v", "-lf"])
        .arg(tmp.join("leases"))
        .arg("-pf")
        .arg(tmp.join("pid"))
        .arg("-sf")
        .arg(&script)
        .arg(&b)
        .stdout(Stdio::null())
        .stderr(filo_test_support::test_log());
    let _client = Proc::spawn(&mut c);
    let got = filo_test_support::wait_until(Duration::from_secs(30), || {
        std::fs::read_to_string(&env).is_ok_and(|e| e.contains("new_dhcp6_domain_search"))
    });
    let env = std::fs::read_to_string(&env).unwrap_or_default();
    assert!(got, "dhclient reported no DNS options: {env}");
    assert_eq!(
        var(&env, "new_dhcp6_name_servers").trim(),
        "fd00:1::3 fd00:1::4",
        "{env}"
    );
    assert_eq!(
        var(&env, "new_dhcp6_domain_search").trim(),
        "lab.example. example.org.",
        "{env}"
    );
}
