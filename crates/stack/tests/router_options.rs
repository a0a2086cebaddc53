//! A stack as a router, in process: its DHCP server and router advertisements configure
//! another stack over a cable (and busybox udhcpc in a namespace), their answers passing the
//! OUTPUT and POSTROUTING hooks; NAT options become filo-router's NAT with the right addresses
//! (and follow an address given at run time), changed at run time; bad options are refused
//! by name.

use std::io::{Read, Write};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use filo_stack::forward::{Hook, HookPoint, HookVerdict, PacketMeta};
use filo_stack::{
    cable, DhcpServer, Dhcpv6Server, DropReason, RouterAdverts, Stack, StackBuilder, TcpStream,
};
use filo_test_support::*;

const T: Duration = Duration::from_secs(20);

fn ip<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().unwrap()
}

#[test]
fn a_host_stack_gets_a_lease_and_a_slaac_address_from_a_router_stack() {
    let (a, b) = cable().unwrap();
    let router = Stack::builder()
        .interface_plug(a, "ip=10.61.0.1/24,ip=fd61::1/64")
        .interface_unplugged("ip=10.62.0.1/24")
        .forwarding(true)
        .dhcp_server(
            0,
            DhcpServer::new(ip("10.61.0.100"), ip("10.61.0.109")).dns(ip("10.61.0.53")),
        )
        .router_adverts(0, RouterAdverts::new())
        .dhcpv6_server(
            0,
            Dhcpv6Server {
                dns: vec![ip("fd61::53")],
                search: vec!["lab.example".into()],
            },
        )
        .build()
        .unwrap();
    let host = Stack::builder()
        .interface_plug(b, "dhcp,slaac")
        .build()
        .unwrap();
    let v4 = host.wait_for_address(false, T).expect("a DHCP lease");
    assert_eq!(v4.to_string(), "10.61.0.100/24");
    let v6 = host.wait_for_address(true, T).expect("a SLAAC address");
    assert!(v6.to_string().starts_with("fd61::"), "{v6}");
    assert!(host.dns_servers().contains(&ip::<IpAddr>("10.61.0.53")));
    // The host's default route is the router: it reaches the router's other interface.
    assert!(host
        .ping(ip("10.62.0.1"), 1, 56, Duration::from_secs(2))
        .is_ok());
    let leases = router.lease_print();
    assert_eq!(leases.len(), 1, "{leases:?}");
    let mac = host.links()[0].mac;
    let mac = mac.map(|b| format!("{b:02x}")).join(":");
    assert!(
        leases[0].starts_with(&format!("10.61.0.100 {mac} dev vde0 ")),
        "{leases:?}"
    );
    assert_eq!(router.leases()[0].0, 0);
    assert!(router.remove_router_adverts(0));
    assert!(!router.remove_router_adverts(0), "gone already");
    assert!(router.remove_dhcpv6_server(0));
    assert!(router.remove_dhcp_server(0));
    assert!(router.leases().is_empty());
}

#[test]
fn nat_options_become_the_routers_nat_and_masquerade_follows_a_new_address() {
    let router = Stack::builder()
        .interface_unplugged("ip=10.1.0.1/24")
        .interface_unplugged("ip=10.9.0.2/24,ip=10.9.0.5/24,ip=fd09::2/64")
        .forwarding(true)
        .snat(1, ip("10.9.0.5"))
        .port_forward(1, "tcp:8080=10.1.0.50:80")
        .build()
        .unwrap();
    let nat = router.hook_print("nat").unwrap().join("\n");
    assert!(
        nat.contains("forward tcp 10.9.0.5:8080 to 10.1.0.50:80"),
        "{nat}"
    );
    assert!(nat.contains("masquerade 10.9.0.5 fd09::2 conns"), "{nat}");
    // At run time: another forward, then no NAT, then a masquerade again.
    router.add_port_forward(1, "udp:53=10.1.0.53").unwrap();
    let nat = router.hook_print("nat").unwrap().join("\n");
    assert!(
        nat.contains("forward udp 10.9.0.5:53 to 10.1.0.53:53"),
        "{nat}"
    );
    router
        .add_port_forward(1, "tcp:8443=[fd01::50]:443")
        .unwrap();
    let nat = router.hook_print("nat").unwrap().join("\n");
    assert!(
        nat.contains("forward tcp [fd09::2]:8443 to [fd01::50]:443"),
        "an IPv6 one, to the NAT66 address: {nat}"
    );
    assert!(router.add_port_forward(1, "udp:53").is_err());
    assert!(
        router.add_snat(1, ip("10.9.0.77")).is_err(),
        "not its address"
    );
    router.remove_nat(1).unwrap();
    let nat = router.hook_print("nat").unwrap().join("\n");
    assert!(nat.starts_with("nat 10.9.0.2 conns"), "{nat}");
    router.add_masquerade(1).unwrap();
    let nat = router.hook_print("nat").unwrap().join("\n");
    assert!(
        nat.starts_with("masquerade 10.9.0.2 fd09::2 conns"),
        "{nat}"
    );
    assert!(router.add_masquerade(7).is_err());
    let router = Stack::builder()
        .interface_unplugged("ip=10.1.0.1/24")
        .interface_unplugged("")
        .forwarding(true)
        .masquerade(1)
        .nptv6(1, "fd01::/64=2001:db8:1::/64")
        .build()
        .unwrap();
    let nat = router.hook_print("nat").unwrap().join("\n");
    assert!(
        nat.contains("masquerade  conns"),
        "no address on vde1 yet: {nat}"
    );
    // An address given later (as DHCP or SLAAC would): the masquerade takes it; its IPv6 is
    // NPTv6's, so NAT66 stays off there.
    router.addr_add(1, ip("10.7.0.9/24")).unwrap();
    router.addr_add(1, ip("2001:db8:1::9/64")).unwrap();
    let nat = router.hook_print("nat").unwrap().join("\n");
    assert!(nat.contains("masquerade 10.7.0.9 conns"), "{nat}");
    // Started at run time there, the masquerade still leaves IPv6 to NPTv6.
    router.remove_nat(1).unwrap();
    router.add_masquerade(1).unwrap();
    let nat = router.hook_print("nat").unwrap().join("\n");
    assert!(nat.contains("masquerade 10.7.0.9 conns"), "{nat}");
}

/// A host (10.71.0.2, its gateway the router), a forwarding router with `nat` between
/// 10.71.0.0/24 (interface 0) and 10.72.0.0/24 (interface 1), and a server (10.72.0.2) with
/// no route back to 10.71.0.0/24: it reaches the host only through the router's NAT.
fn host_router_server(nat: Options) -> (Stack, Stack, Stack) {
    let (a, b) = cable().unwrap();
    let (c, d) = cable().unwrap();
    let host = Stack::builder()
        .interface_plug(a, "ip=10.71.0.2/24,gw=10.71.0.1")
        .build()
        .unwrap();
    let router = nat(Stack::builder()
        .interface_plug(b, "ip=10.71.0.1/24")
        .interface_plug(c, "ip=10.72.0.1/24")
        .forwarding(true))
    .build()
    .unwrap();
    let server = Stack::builder()
        .interface_plug(d, "ip=10.72.0.2/24")
        .build()
        .unwrap();
    (host, router, server)
}

/// `speaker` sends 100 bytes of `n`, `other` answers 100 bytes of `n + 1`. The speaker is
/// on the side whose segment must cross the NAT first: only a connection the NAT still
/// tracks takes it on (else the router's own stack answers it with a reset).
fn exchange(speaker: &mut TcpStream, other: &mut TcpStream, n: u8) {
    speaker.write_all(&[n; 100]).unwrap();
    let mut buf = [0u8; 100];
    other.read_exact(&mut buf).unwrap();
    assert_eq!(buf, [n; 100]);
    other.write_all(&[n + 1; 100]).unwrap();
    speaker.read_exact(&mut buf).unwrap();
    assert_eq!(buf, [n + 1; 100]);
}

/// The router's NAT lists `what`.
fn tracked(router: &Stack, what: &str) {
    let nat = router.hook_print("nat").unwrap().join("\n");
    assert!(nat.contains(what), "{what}: {nat}");
}

#[test]
fn port_forwards_changed_at_run_time_keep_the_masqueraded_connections() {
    let (host, router, server) = host_router_server(|b| b.masquerade(1));
    let l = server.tcp_listen("0.0.0.0:7").unwrap();
    let mut conn = host.tcp_connect("10.72.0.2:7").unwrap();
    conn.set_read_timeout(Some(T)).unwrap();
    let (mut peer, from) = l.accept().unwrap();
    assert_eq!(from.ip(), ip::<IpAddr>("10.72.0.1"), "masqueraded");
    peer.set_read_timeout(Some(T)).unwrap();
    exchange(&mut peer, &mut conn, 1);
    let host_end = conn.local_addr().unwrap();
    let masqueraded = format!("tcp {host_end} -> 10.72.0.2:7 as 10.72.0.1:");
    tracked(&router, &masqueraded);
    router.add_port_forward(1, "udp:53=10.71.0.53").unwrap();
    router
        .add_port_forward(1, "tcp:2222=10.71.0.22:22")
        .unwrap();
    tracked(&router, &masqueraded);
    exchange(&mut peer, &mut conn, 3);
    assert!(
        router.add_port_forward(1, "udp:53=10.71.0.54").is_err(),
        "port 53 is forwarded already"
    );
    // Without NAT there, its connections are forgotten; a masquerade again starts empty.
    router.remove_nat(1).unwrap();
    let nat = router.hook_print("nat").unwrap().join("\n");
    assert!(!nat.contains("forward ") && !nat.contains("tcp "), "{nat}");
    router.add_masquerade(1).unwrap();
    router.add_masquerade(1).unwrap();
    let nat = router.hook_print("nat").unwrap().join("\n");
    assert!(!nat.contains("tcp "), "{nat}");
}

#[test]
fn a_masquerade_started_at_run_time_keeps_the_port_forwarded_connections() {
    let (host, router, server) = host_router_server(|b| b.port_forward(1, "tcp:8080=10.71.0.2:7"));
    let l = host.tcp_listen("0.0.0.0:7").unwrap();
    let mut conn = server.tcp_connect("10.72.0.1:8080").unwrap();
    conn.set_read_timeout(Some(T)).unwrap();
    let (mut peer, from) = l.accept().unwrap();
    assert_eq!(from.ip(), ip::<IpAddr>("10.72.0.2"));
    peer.set_read_timeout(Some(T)).unwrap();
    exchange(&mut peer, &mut conn, 1);
    let forwarded = "-> 10.72.0.1:8080 forwarded to 10.71.0.2:7";
    tracked(&router, forwarded);
    router.add_masquerade(1).unwrap();
    tracked(&router, forwarded);
    exchange(&mut peer, &mut conn, 3);
    // The host's own connections out are masqueraded now.
    let l2 = server.tcp_listen("0.0.0.0:9").unwrap();
    let _out = host.tcp_connect("10.72.0.2:9").unwrap();
    let (_, from) = l2.accept().unwrap();
    assert_eq!(from.ip(), ip::<IpAddr>("10.72.0.1"));
}

/// Options added to a builder.
type Options = fn(filo_stack::StackBuilder) -> filo_stack::StackBuilder;

#[test]
fn bad_router_options_are_refused_by_name() {
    let build = |f: Options| {
        f(Stack::builder()
            .interface_unplugged("ip=10.1.0.1/24")
            .interface_unplugged("ip=fd09::2/64"))
        .build()
        .expect_err("an error")
        .to_string()
    };
    let cases: [(Options, &str); 8] = [
        (|b| b.masquerade(5), "no interface 5"),
        (
            |b| {
                b.port_forward(0, "tcp:80=10.1.0.9")
                    .port_forward(0, "tcp:80=10.1.0.8:8080")
            },
            "port forward tcp:80=10.1.0.8:8080: its port is forwarded already (tcp:80=10.1.0.9",
        ),
        (|b| b.snat(1, ip("10.9.0.5")), "not a static address"),
        (|b| b.port_forward(1, "tcp:80"), "PROTO:PORT=ADDR"),
        (|b| b.nptv6(1, "fd01::/64"), "INTERNAL/LEN=EXTERNAL/LEN"),
        (
            |b| b.dhcp_server(1, DhcpServer::new(ip("10.1.0.5"), ip("10.1.0.9"))),
            "DHCP server on vde1: the link has no IPv4 address",
        ),
        (
            |b| b.dhcp_server(0, DhcpServer::new(ip("10.2.0.5"), ip("10.2.0.9"))),
            "10.2.0.5",
        ),
        (
            |b| b.router_adverts(0, RouterAdverts::new().mtu(1000)),
            "MTU 1000",
        ),
    ];
    for (f, want) in cases {
        let e = build(f);
        assert!(e.contains(want), "{want}: {e}");
    }
}

#[test]
fn the_filters_input_rules_apply_to_the_stacks_servers() {
    let (a, b) = cable().unwrap();
    let router = Stack::builder()
        .interface_plug(a, "ip=10.63.0.1/24")
        .forwarding(true)
        .filter("input drop in vde0 proto udp dport 67")
        .dhcp_server(0, DhcpServer::new(ip("10.63.0.100"), ip("10.63.0.109")))
        .build()
        .unwrap();
    let host = Stack::builder().interface_plug(b, "dhcp").build().unwrap();
    assert_eq!(
        host.wait_for_address(false, Duration::from_secs(2)),
        None,
        "the filter drops the DISCOVERs"
    );
    assert!(router.lease_print().is_empty());
    assert!(matches!(
        router.hook_command("filter", "del", "1"),
        Some(Ok(_))
    ));
    // The client asks again within its back-off (at most 16 s).
    let v4 = host
        .wait_for_address(false, T)
        .expect("a lease once the rule is gone");
    assert_eq!(v4.to_string(), "10.63.0.100/24");
}

/// A forwarding `router` with `router_conf` on its first interface and a DHCP server there
/// (addresses 100 to 109 of its /24), cabled to `host` with `host_conf`.
fn router_and_host(
    router: StackBuilder,
    router_conf: &str,
    host: StackBuilder,
    host_conf: &str,
) -> (Stack, Stack) {
    let (a, b) = cable().unwrap();
    let base = router_conf.split(['/', ',']).next().unwrap();
    let range = |last: u8| {
        let mut o = ip::<std::net::Ipv4Addr>(base.trim_start_matches("ip=")).octets();
        o[3] = last;
        std::net::Ipv4Addr::from(o)
    };
    let router = router
        .interface_plug(a, router_conf)
        .forwarding(true)
        .dhcp_server(0, DhcpServer::new(range(100), range(109)))
        .build()
        .unwrap();
    let host = host.interface_plug(b, host_conf).build().unwrap();
    (router, host)
}

/// `host` has no IPv4 address after 2 s (something stops its DHCP).
fn no_lease_yet(host: &Stack, why: &str) {
    assert_eq!(
        host.wait_for_address(false, Duration::from_secs(2)),
        None,
        "{why}"
    );
}

/// What a [`Watch`] saw: the hook point, the outgoing link, what kind of answer.
type Seen = Arc<Mutex<Vec<(HookPoint, Option<usize>, &'static str)>>>;

/// A hook that records the servers' answers it sees (the point, the outgoing link, what
/// kind) and, while `block` holds, drops DHCPv4 answers (UDP to port 68) at OUTPUT.
struct Watch {
    block: Arc<AtomicBool>,
    seen: Seen,
}

/// What a server answer `p` is: a DHCPv4 answer, a router advertisement, or neither.
fn server_answer(p: &[u8]) -> Option<&'static str> {
    match p.first()? >> 4 {
        4 => {
            let ihl = usize::from(p[0] & 0xf) * 4;
            let dport = p.get(ihl + 2..ihl + 4)?;
            (p[9] == 17 && dport == [0, 68]).then_some("dhcp")
        }
        6 => (p.get(6) == Some(&58) && p.get(40) == Some(&134)).then_some("ra"),
        _ => None,
    }
}

impl Hook for Watch {
    fn hook(
        &mut self,
        _now: std::time::Instant,
        point: HookPoint,
        meta: &PacketMeta,
        packet: &mut Vec<u8>,
    ) -> HookVerdict {
        let Some(kind) = server_answer(packet) else {
            return HookVerdict::Accept;
        };
        if point == HookPoint::Output && kind == "dhcp" && self.block.load(Ordering::SeqCst) {
            return HookVerdict::Drop;
        }
        self.seen
            .lock()
            .unwrap()
            .push((point, meta.out_iface, kind));
        HookVerdict::Accept
    }
}

#[test]
fn the_servers_answers_pass_the_output_and_postrouting_hooks() {
    let block = Arc::new(AtomicBool::new(true));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let watch = Watch {
        block: block.clone(),
        seen: seen.clone(),
    };
    let (router, host) = router_and_host(
        Stack::builder()
            .hook(
                &[HookPoint::Output, HookPoint::Postrouting],
                Box::new(watch),
            )
            .router_adverts(0, RouterAdverts::new()),
        "ip=10.64.0.1/24,ip=fd64::1/64",
        Stack::builder(),
        "dhcp,slaac",
    );
    no_lease_yet(&host, "the hook drops the OFFERs");
    let offers = router.dhcp_server_stats(0).unwrap().offers;
    assert!(offers >= 1, "the server answered");
    assert!(router.counters().get(DropReason::Hook) >= offers);
    assert!(router.lease_print().is_empty());
    let dhcp_seen = |at: HookPoint| {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|&&(p, out, k)| p == at && out == Some(0) && k == "dhcp")
            .count()
    };
    assert_eq!(dhcp_seen(HookPoint::Postrouting), 0, "dropped before");
    block.store(false, Ordering::SeqCst);
    // The client asks again within its back-off (at most 16 s).
    let v4 = host
        .wait_for_address(false, T)
        .expect("a lease once the hook lets the answers go");
    assert_eq!(v4.to_string(), "10.64.0.100/24");
    assert!(dhcp_seen(HookPoint::Output) >= 2, "the OFFER and the ACK");
    assert!(
        dhcp_seen(HookPoint::Postrouting) >= 2,
        "the OFFER and the ACK"
    );
    let v6 = host.wait_for_address(true, T).expect("a SLAAC address");
    assert!(v6.to_string().starts_with("fd64::"), "{v6}");
    for at in [HookPoint::Output, HookPoint::Postrouting] {
        assert!(
            seen.lock().unwrap().contains(&(at, Some(0), "ra")),
            "a router advertisement at {at:?}"
        );
    }
    let s = router.dhcp_server_stats(0).unwrap();
    assert_eq!((s.malformed, s.pool_exhausted), (0, 0), "{s:?}");
}

/// Drops IPv4 UDP packets to port `.0` while `.1` holds.
struct DropUdpTo(u16, Arc<AtomicBool>);

impl Hook for DropUdpTo {
    fn hook(
        &mut self,
        _now: std::time::Instant,
        _point: HookPoint,
        _meta: &PacketMeta,
        p: &mut Vec<u8>,
    ) -> HookVerdict {
        let ihl = usize::from(p[0] & 0xf) * 4;
        let port = p.get(ihl + 2..ihl + 4) == Some(&self.0.to_be_bytes()[..]);
        if p[0] >> 4 == 4 && p[9] == 17 && port && self.1.load(Ordering::SeqCst) {
            return HookVerdict::Drop;
        }
        HookVerdict::Accept
    }
}

#[test]
fn a_hosts_dhcp_client_passes_its_output_hooks() {
    let block = Arc::new(AtomicBool::new(true));
    let (router, host) = router_and_host(
        Stack::builder(),
        "ip=10.65.0.1/24",
        Stack::builder().hook(&[HookPoint::Output], Box::new(DropUdpTo(67, block.clone()))),
        "dhcp",
    );
    no_lease_yet(&host, "the hook drops the DISCOVERs");
    assert!(host.counters().get(DropReason::Hook) >= 1);
    assert_eq!(router.dhcp_server_stats(0).unwrap().offers, 0);
    block.store(false, Ordering::SeqCst);
    let v4 = host
        .wait_for_address(false, T)
        .expect("a lease without the hook");
    assert_eq!(v4.to_string(), "10.65.0.100/24");
}

/// The same against a real client: busybox udhcpc in a network namespace whose tap Debian's
/// vde_plug carries to Debian's vde_switch, where the stack has its interface.
#[test]
fn an_output_hook_dropping_udp_to_port_68_stops_udhcpcs_leases() {
    require("busybox");
    require("vde_plug");
    let tmp = TempDir::new("filo-stack-udhcpc");
    let sw = DebSwitch::start(&tmp, "sw");
    let ns = Netns::new("filo-udhcpc");
    ns.tap(&[]);
    let mut plug = ns.plug_tap(&["vde_plug"], &sw.vnl());
    let block = Arc::new(AtomicBool::new(true));
    let stack = Stack::builder()
        .interface(sw.vnl(), "ip=10.67.0.1/24")
        .forwarding(true)
        .hook(&[HookPoint::Output], Box::new(DropUdpTo(68, block.clone())))
        .dhcp_server(0, DhcpServer::new(ip("10.67.0.100"), ip("10.67.0.109")))
        .build()
        .unwrap();
    let script = write_script(tmp.join("udhcpc.sh"), UDHCPC_PRINT_LEASE);
    let udhcpc = |tries: &str| {
        let mut c = ns.command("busybox");
        c.args([
            "udhcpc", "-i", "tap0", "-n", "-q", "-f", "-t", tries, "-T", "1", "-s",
        ])
        .arg(&script)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
        Proc::spawn(&mut c).output(Duration::from_secs(60))
    };
    let (status, out, err) = udhcpc("3");
    assert!(
        !status.success() && !out.contains("lease="),
        "no lease while the hook drops the answers: {out}\n{err}"
    );
    let offers = stack.dhcp_server_stats(0).unwrap().offers;
    assert!(offers >= 1, "the server answered the DISCOVERs");
    assert!(
        stack.counters().get(DropReason::Hook) >= offers,
        "{:?}",
        stack.counters()
    );
    assert!(stack.leases().is_empty());
    block.store(false, Ordering::SeqCst);
    let (status, out, err) = udhcpc("5");
    assert!(
        status.success() && out.contains("lease=10.67.0.100"),
        "a lease without the hook: {out}\n{err}"
    );
    assert_eq!(stack.leases().len(), 1);
    let s = stack.dhcp_server_stats(0).unwrap();
    assert_eq!((s.malformed, s.pool_exhausted), (0, 0), "{s:?}");
    drop(stack);
    plug.terminate(Duration::from_secs(5));
}
