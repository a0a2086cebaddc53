//! Two stacks in one process joined by an in-process cable: TCP, UDP, ping, IPv6 and the
//! hybrid IPv4-mapped addressing, errors for unreachable addresses.

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use filo_stack::{cable, DropReason, Stack};

const T: Duration = Duration::from_secs(5);

fn pair() -> (Stack, Stack) {
    let (a, b) = cable().unwrap();
    let s1 = Stack::builder()
        .name("s1")
        .interface_plug(a, "eth,ip=10.9.0.1/24,ip=fd09::1/64")
        .build()
        .unwrap();
    let s2 = Stack::builder()
        .name("s2")
        .interface_plug(b, "eth,ip=10.9.0.2/24,ip=fd09::2/64")
        .build()
        .unwrap();
    (s1, s2)
}

#[test]
fn ping_both_ways_over_ipv4_and_ipv6() {
    let (s1, s2) = pair();
    for (s, dst) in [
        (&s1, "10.9.0.2"),
        (&s2, "10.9.0.1"),
        (&s1, "fd09::2"),
        (&s2, "fd09::1"),
    ] {
        let rtt = s.ping(dst.parse().unwrap(), 1, 56, T).unwrap();
        assert!(rtt < T, "{dst}: {rtt:?}");
    }
    // Loopback: a stack pings itself.
    s1.ping("10.9.0.1".parse().unwrap(), 2, 8, T).unwrap();
    s1.ping("127.0.0.1".parse().unwrap(), 3, 8, T).unwrap();
}

#[test]
fn tcp_echo_over_ipv4_with_std_like_api() {
    let (s1, s2) = pair();
    let l = s1.tcp_listen("0.0.0.0:7").unwrap();
    let server = std::thread::spawn(move || {
        let (mut c, peer) = l.accept().unwrap();
        assert_eq!(peer.ip(), "10.9.0.2".parse::<IpAddr>().unwrap());
        let mut buf = Vec::new();
        c.read_to_end(&mut buf).unwrap();
        c.write_all(&buf).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        c.drain(T).unwrap();
    });
    let mut c = s2.tcp_connect("10.9.0.1:7").unwrap();
    assert!(c.nodelay().unwrap());
    c.set_nodelay(false).unwrap();
    assert!(!c.nodelay().unwrap());
    assert_eq!(c.peer_addr().unwrap(), "10.9.0.1:7".parse().unwrap());
    assert_eq!(
        c.local_addr().unwrap().ip(),
        "10.9.0.2".parse::<IpAddr>().unwrap()
    );
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
    let mut w = &c;
    w.write_all(&data).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    c.set_read_timeout(Some(T)).unwrap();
    c.read_to_end(&mut back).unwrap();
    assert_eq!(back, data);
    server.join().unwrap();
}

#[test]
fn ipv6_listener_sees_ipv4_peers_as_mapped_addresses() {
    let (s1, s2) = pair();
    let l = s1.tcp_listen("[::]:80").unwrap();
    let c4 = s2.tcp_connect("10.9.0.1:80").unwrap();
    let (a4, p4) = l.accept().unwrap();
    assert_eq!(p4.ip(), "::ffff:10.9.0.2".parse::<IpAddr>().unwrap());
    let c6 = s2.tcp_connect("[fd09::1]:80").unwrap();
    let (_a6, p6) = l.accept().unwrap();
    assert_eq!(p6.ip(), "fd09::2".parse::<IpAddr>().unwrap());
    // A client connecting to a mapped address reaches the IPv4 peer.
    let cm = s2.tcp_connect("[::ffff:10.9.0.1]:80").unwrap();
    assert_eq!(
        cm.peer_addr().unwrap().ip(),
        "::ffff:10.9.0.1".parse::<IpAddr>().unwrap()
    );
    let (_am, pm) = l.accept().unwrap();
    assert_eq!(pm.ip(), "::ffff:10.9.0.2".parse::<IpAddr>().unwrap());
    (&c4).write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    (&a4).read_exact(&mut b).unwrap();
    assert_eq!(&b, b"x");
    drop(c6);
}

#[test]
fn udp_datagrams_both_ways() {
    let (s1, s2) = pair();
    let u1 = s1.udp_bind("0.0.0.0:5353").unwrap();
    let u2 = s2.udp_bind("0.0.0.0:0").unwrap();
    u2.send_to(b"hello", "10.9.0.1:5353".parse().unwrap())
        .unwrap();
    u1.set_read_timeout(Some(T)).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = u1.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello");
    assert_eq!(from.ip(), "10.9.0.2".parse::<IpAddr>().unwrap());
    u1.send_to(b"world", from).unwrap();
    u2.set_read_timeout(Some(T)).unwrap();
    let (n, _) = u2.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"world");
}

#[test]
fn unreachable_addresses_fail_with_the_right_error_in_time() {
    let (_s1, s2) = pair();
    // No route at all: at once.
    let t0 = Instant::now();
    let e = s2.tcp_connect("192.168.77.1:80").unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NetworkUnreachable, "{e}");
    assert!(t0.elapsed() < Duration::from_millis(100));
    // On-link but nobody answers ARP: host unreachable after the resolution retries.
    let t0 = Instant::now();
    let e = s2
        .tcp_connect_timeout("10.9.0.99:80", Some(Duration::from_secs(10)))
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::HostUnreachable, "{e}");
    assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());
    // A host that answers with a reset: refused.
    let e = s2.tcp_connect("10.9.0.1:81").unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    // A timeout shorter than the resolution gives TimedOut.
    let t0 = Instant::now();
    let e = s2
        .tcp_connect_timeout("10.9.0.98:80", Some(Duration::from_millis(500)))
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
    assert!(t0.elapsed() < Duration::from_secs(2));
    let e = s2
        .ping(
            "10.9.0.97".parse().unwrap(),
            1,
            8,
            Duration::from_millis(300),
        )
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
}

#[test]
fn malformed_frames_on_a_live_stack_are_counted_and_harmless() {
    let s = Stack::builder()
        .interface_unplugged("ip=10.1.0.1/24")
        .build()
        .unwrap();
    let before = s.counters();
    s.inject_frame(0, &[0u8; 5]);
    let mut f = vec![0u8; 60];
    f[0..6].copy_from_slice(&s.links()[0].mac);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f[14] = 0x4f; // IHL 60 bytes, longer than the packet
    s.inject_frame(0, &f);
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    s.inject_frame(0, &f);
    let c = s.counters();
    assert_eq!(c.frames_in - before.frames_in, 3);
    assert_eq!(c.get(DropReason::Short), 1);
    assert_eq!(c.get(DropReason::BadIpv4), 1);
    assert_eq!(c.get(DropReason::UnknownEthertype), 1);
    let _: SocketAddr = "10.1.0.1:1".parse().unwrap();
}

#[test]
fn netlink_like_configuration_changes_take_effect() {
    use filo_stack::{Cidr, NextHop, Route};
    let (s1, s2) = pair();
    // A new address on s1 is reachable from s2 once s2 has a route for it.
    let extra: Cidr = "10.44.0.1/24".parse().unwrap();
    s1.addr_add(0, extra).unwrap();
    assert!(s1.addrs().iter().any(|(i, a)| *i == 0 && *a == extra));
    let dst: IpAddr = "10.44.0.1".parse().unwrap();
    assert_eq!(s2.route_get(dst), None);
    let e = s2.ping(dst, 1, 8, T).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NetworkUnreachable);
    let r = Route {
        dst: "10.44.0.0/16".parse().unwrap(),
        via: Some("10.9.0.1".parse().unwrap()),
        ifindex: None,
    };
    s2.route_add(r).unwrap();
    assert_eq!(
        s2.route_get(dst),
        Some(NextHop::Link {
            ifindex: 0,
            hop: "10.9.0.1".parse().unwrap()
        })
    );
    s2.ping(dst, 2, 8, T).unwrap();
    assert!(s2.route_del(&r));
    assert!(!s2.route_del(&r));
    // Removing the address: no more answers.
    s1.addr_del(0, extra).unwrap();
    s2.route_add(r).unwrap();
    assert!(s2.ping(dst, 3, 8, Duration::from_millis(500)).is_err());
    // Link down: the peer gets no answer; up again: it does.
    s1.link_set_up(0, false).unwrap();
    assert!(!s1.links()[0].up);
    assert!(s2
        .ping(
            "10.9.0.1".parse().unwrap(),
            4,
            8,
            Duration::from_millis(500)
        )
        .is_err());
    s1.link_set_up(0, true).unwrap();
    s2.ping("10.9.0.1".parse().unwrap(), 5, 8, T).unwrap();
    // MTU and MAC, with errors that say what is accepted.
    s1.link_set_mtu(0, 9000).unwrap();
    assert_eq!(s1.links()[0].mtu, 9000);
    assert!(s1
        .link_set_mtu(0, 100)
        .unwrap_err()
        .to_string()
        .contains("1280"));
    assert!(s1.link_set_mac(0, [1, 0, 0, 0, 0, 1]).is_err());
    assert!(matches!(
        s1.link_set_up(7, true),
        Err(filo_stack::Error::NoSuchLink(7))
    ));
    // Stable MACs derived from the stack name.
    assert_eq!(s1.links()[0].mac, filo_stack::config::mac_from_name("s1/0"));
}

#[test]
fn raw_sockets_carry_a_protocol_the_stack_does_not_know() {
    let (s1, s2) = pair();
    let r1 = filo_stack::RawSocket::bind(&s1, false, 253).unwrap();
    let r2 = filo_stack::RawSocket::bind(&s2, false, 253).unwrap();
    // Resolve the neighbour first (raw packets are routed like any other).
    s2.ping("10.9.0.1".parse().unwrap(), 1, 8, T).unwrap();
    let payload = b"an experimental protocol";
    let mut p = vec![0u8; 20 + payload.len()];
    p[0] = 0x45;
    let total = p.len() as u16;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p[8] = 64;
    p[9] = 253;
    p[12..16].copy_from_slice(&[10, 9, 0, 2]);
    p[16..20].copy_from_slice(&[10, 9, 0, 1]);
    p[20..].copy_from_slice(payload);
    r2.send(&p).unwrap();
    let mut buf = [0u8; 256];
    let n = r1.recv(&mut buf, Some(T)).unwrap();
    assert_eq!(&buf[n - payload.len()..n], payload);
    assert_eq!(buf[9], 253);
    assert_eq!(&buf[12..16], &[10, 9, 0, 2]);
}

#[test]
fn a_stack_hosts_a_switch_another_joins_it_by_vde() {
    // switch:// is implemented by filo-switch; the builder opens it like any VNL, with no
    // registration by the program.
    let tmp = filo_test_support::TempDir::new("stack-hosted");
    let sw = tmp.join("sw");
    let host = Stack::builder()
        .name("host")
        .interface(format!("switch://{}", sw.display()), "eth,ip=10.9.1.1/24")
        .build()
        .unwrap();
    let guest = Stack::builder()
        .name("guest")
        .interface(format!("vde://{}", sw.display()), "eth,ip=10.9.1.2/24")
        .build()
        .unwrap();
    for (s, dst) in [(&host, "10.9.1.2"), (&guest, "10.9.1.1")] {
        let rtt = s.ping(dst.parse().unwrap(), 1, 56, T).unwrap();
        assert!(rtt < T, "{dst}: {rtt:?}");
    }
}
