//! The servers against real clients: busybox's `udhcpc` gets a lease from [`server::Server`]
//! over a veth pair between two private network namespaces.
//!
//! The server side is this test binary itself, run again inside the server's namespace with
//! `FILO_DHCP_SERVE` set, as the ignored test `serve_dhcp_in_namespace`: a UDP socket on
//! port 67 bound to the veth end. It sends a reply the way [`server::Reply`] says: broadcast,
//! or unicast to an address the client does not have yet at the client's MAC (the harness puts
//! that MAC in the neighbour table first, as dnsmasq does), and writes the lease file after
//! each reply.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use filo_dhcp::server::{self, Destination};
use filo_test_support::{require, run, unique, Netns, Proc, TempDir};

const SERVE_ENV: &str = "FILO_DHCP_SERVE";

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

fn start_server(srv: &Netns, iface: &str, leases: &std::path::Path) -> Proc {
    let me = std::env::current_exe().expect("test binary");
    let mut c = srv.command(&me.to_string_lossy());
    c.args([
        "--exact",
        "serve_dhcp_in_namespace",
        "--ignored",
        "--nocapture",
    ])
    .env(SERVE_ENV, format!("{iface} {}", leases.display()))
    .stdout(Stdio::null())
    .stderr(filo_test_support::test_log());
    Proc::spawn(&mut c)
}

/// Runs udhcpc once in `cli` on `iface` with `extra` arguments; returns the variables its
/// script saw when bound.
fn udhcpc(tmp: &TempDir, cli: &Netns, iface: &str, extra: &[&str]) -> String {
    let env = tmp.join("bound.env");
    let _ = std::fs::remove_file(&env);
    let script = tmp.join("script");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = bound ] && env > {}\nexit 0\n",
            env.display()
        ),
    )
    .expect("script");
    run(Command::new("chmod").arg("755").arg(&script));
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
    let _server = start_server(&srv, &a, &leases);
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
