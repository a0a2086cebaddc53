use super::*;

const GUEST_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x15]);

fn guest() -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 2, 15)
}

fn core() -> Core {
    Core::new(Config::default(), 0, 1).unwrap()
}

fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    let repr = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: GUEST_MAC,
        source_protocol_addr: guest(),
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    };
    let mut f = vec![0u8; ETH + repr.buffer_len()];
    EthernetRepr {
        src_addr: GUEST_MAC,
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Arp,
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut f[..]));
    repr.emit(&mut ArpPacket::new_unchecked(&mut f[ETH..]));
    f
}

/// A frame from the guest: UDP from 10.0.2.15:5000 to `dst`.
fn guest_udp(dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut c = core();
    c.neighbours.insert(dst.ip(), GATEWAY_MAC);
    let mut f = c
        .udp_frame_to(
            GATEWAY_MAC,
            SocketAddr::new(guest().into(), 5000),
            dst,
            payload,
        )
        .unwrap();
    f[6..12].copy_from_slice(&GUEST_MAC.0);
    f
}

#[test]
fn arp_for_the_gateway_and_dns_is_answered_and_teaches_the_guest_mac() {
    let mut c = core();
    for own in [Ipv4Addr::new(10, 0, 2, 2), Ipv4Addr::new(10, 0, 2, 3)] {
        let Input::Reply(r) = c.handle_frame(0, &arp_request(own)) else {
            panic!("no reply for {own}");
        };
        let p = ArpPacket::new_checked(&r[ETH..]).unwrap();
        let ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr,
            source_protocol_addr,
            target_protocol_addr,
            ..
        } = ArpRepr::parse(&p).unwrap()
        else {
            panic!()
        };
        assert_eq!(operation, ArpOperation::Reply);
        assert_eq!(source_hardware_addr, GATEWAY_MAC);
        assert_eq!(source_protocol_addr, own);
        assert_eq!(target_protocol_addr, guest());
    }
    assert_eq!(c.neighbour(guest().into()), Some(GUEST_MAC));
    // Another guest's address is not ours to answer.
    assert_eq!(
        c.handle_frame(0, &arp_request(Ipv4Addr::new(10, 0, 2, 16))),
        Input::Drop
    );
}

#[test]
fn udp_is_classified_and_a_bad_checksum_dropped() {
    let mut c = core();
    let dst: SocketAddr = "192.0.2.1:7".parse().unwrap();
    let f = guest_udp(dst, b"hello");
    assert_eq!(
        c.handle_frame(0, &f),
        Input::Udp {
            guest: "10.0.2.15:5000".parse().unwrap(),
            remote: dst,
            payload: b"hello"
        }
    );
    let mut bad = f.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_eq!(c.handle_frame(0, &bad), Input::Drop);
    assert_eq!(c.counters.bad_checksum, 1);
}

#[test]
fn truncated_and_garbage_frames_are_dropped_and_counted() {
    let mut c = core();
    let f = guest_udp("192.0.2.1:7".parse().unwrap(), b"hello");
    for n in 0..f.len() {
        let _ = c.handle_frame(0, &f[..n]);
    }
    let mut junk = f.clone();
    for (i, b) in junk.iter_mut().enumerate().skip(14) {
        *b = (i * 37) as u8;
    }
    assert_eq!(c.handle_frame(0, &junk), Input::Drop);
    assert!(c.counters.malformed > 0);
}

fn echo_request(dst: Ipv4Addr, ident: u16, seq_no: u16) -> Vec<u8> {
    let repr = Icmpv4Repr::EchoRequest {
        ident,
        seq_no,
        data: b"ping",
    };
    let ip = Ipv4Repr {
        src_addr: guest(),
        dst_addr: dst,
        next_header: IpProtocol::Icmp,
        payload_len: repr.buffer_len(),
        hop_limit: 64,
    };
    let caps = ChecksumCapabilities::default();
    let mut f = vec![0u8; ETH + 20 + repr.buffer_len()];
    EthernetRepr {
        src_addr: GUEST_MAC,
        dst_addr: GATEWAY_MAC,
        ethertype: EthernetProtocol::Ipv4,
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut f[..]));
    ip.emit(&mut Ipv4Packet::new_unchecked(&mut f[ETH..]), &caps);
    repr.emit(&mut Icmpv4Packet::new_unchecked(&mut f[ETH + 20..]), &caps);
    f
}

#[test]
fn echo_to_the_gateway_is_answered_here_and_others_go_out() {
    let mut c = core();
    match c.handle_frame(0, &echo_request(Ipv4Addr::new(10, 0, 2, 2), 7, 1)) {
        Input::Reply(r) => {
            let ip = Ipv4Packet::new_checked(&r[ETH..]).unwrap();
            assert_eq!(ip.src_addr(), Ipv4Addr::new(10, 0, 2, 2));
            assert_eq!(ip.dst_addr(), guest());
            let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
            assert_eq!(
                Icmpv4Repr::parse(&icmp, &ChecksumCapabilities::default()).unwrap(),
                Icmpv4Repr::EchoReply {
                    ident: 7,
                    seq_no: 1,
                    data: b"ping"
                }
            );
        }
        other => panic!("{other:?}"),
    }
    let remote = Ipv4Addr::new(192, 0, 2, 9);
    assert!(matches!(
        c.handle_frame(0, &echo_request(remote, 7, 2)),
        Input::Echo { remote: r, ident: 7, seq: 2, .. } if r == IpAddr::V4(remote)
    ));
}

#[test]
fn a_reset_answers_a_syn() {
    let mut c = core();
    c.learn(guest().into(), GUEST_MAC);
    let syn = TcpRepr {
        src_port: 40000,
        dst_port: 80,
        control: TcpControl::Syn,
        seq_number: TcpSeqNumber(1000),
        ack_number: None,
        window_len: 1000,
        window_scale: None,
        max_seg_size: Some(1460),
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    };
    let (s, d) = (guest(), Ipv4Addr::new(127, 0, 0, 1));
    let ip = Ipv4Repr {
        src_addr: s,
        dst_addr: d,
        next_header: IpProtocol::Tcp,
        payload_len: syn.buffer_len(),
        hop_limit: 64,
    };
    let mut pkt = vec![0u8; 20 + syn.buffer_len()];
    ip.emit(&mut Ipv4Packet::new_unchecked(&mut pkt[..]), &c.caps);
    syn.emit(
        &mut TcpPacket::new_unchecked(&mut pkt[20..]),
        &s.into(),
        &d.into(),
        &c.caps,
    );
    let rst = c.tcp_reset(&pkt).unwrap();
    let ipr = Ipv4Packet::new_checked(&rst[ETH..]).unwrap();
    assert_eq!(ipr.src_addr(), d);
    let t = TcpPacket::new_checked(ipr.payload()).unwrap();
    assert!(t.rst() && t.ack());
    assert_eq!(t.ack_number(), TcpSeqNumber(1001));
    assert!(t.verify_checksum(&d.into(), &s.into()));
    let unreach = c.unreachable(&pkt, false).unwrap();
    let ipu = Ipv4Packet::new_checked(&unreach[ETH..]).unwrap();
    assert_eq!(ipu.next_header(), IpProtocol::Icmp);
}

#[test]
fn host_local_addresses() {
    for a in [
        "127.0.0.1",
        "127.9.9.9",
        "::1",
        "::ffff:127.0.0.1",
        "0.0.0.0",
    ] {
        assert!(is_host_local(a.parse().unwrap()), "{a}");
    }
    assert!(!is_host_local("192.0.2.1".parse().unwrap()));
}

#[test]
fn filo_dhcps_client_gets_the_first_lease_with_router_and_dns() {
    let mut c = core();
    let mac = GUEST_MAC.0;
    let t = filo_dhcp::Instant::from_millis(0);
    let mut client = filo_dhcp::Client::new(mac, None, t, 7);
    let frame = |packet: &[u8]| {
        let mut f = Vec::new();
        f.extend_from_slice(&[0xff; 6]);
        f.extend_from_slice(&mac);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(packet);
        f
    };
    let (out, _) = client.poll(t);
    let mut out = out.expect("a DISCOVER");
    for _ in 0..2 {
        let Input::Reply(reply) = c.handle_frame(0, &frame(&out.packet)) else {
            panic!("no reply to the client");
        };
        let ip = Ipv4Packet::new_checked(&reply[ETH..]).unwrap();
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        match client.handle(t, udp.payload()) {
            Some((Some(next), None)) => out = next,
            Some((None, Some(filo_dhcp::Event::Configured(lease)))) => {
                assert_eq!(lease.addr, guest());
                assert_eq!(lease.prefix, 24);
                assert_eq!(lease.router, Some(Ipv4Addr::new(10, 0, 2, 2)));
                assert_eq!(lease.dns, vec![Ipv4Addr::new(10, 0, 2, 3)]);
                assert_eq!(c.leases(0).len(), 1);
                return;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    panic!("no lease after OFFER and ACK");
}

#[test]
fn a_router_solicitation_brings_an_advertisement_and_the_gateway_answers_ndp() {
    let mut c = core();
    // Unsolicited advertisements start at once.
    let ra = c.poll(0).expect("an advertisement");
    let ip = Ipv6Packet::new_checked(&ra[ETH..]).unwrap();
    assert_eq!(ip.dst_addr(), Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1));
    assert!(c.poll_at().is_some_and(|at| at > 0));
    // A neighbour solicitation for fd00::2 from a guest gets an advertisement back.
    let guest6 = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x15);
    let target = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
    let ns = Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
        target_addr: target,
        lladdr: Some(GUEST_MAC.into()),
    });
    let mut helper = core();
    let mut f = helper.icmpv6_frame(GATEWAY_MAC, guest6, target, 255, &ns);
    f[6..12].copy_from_slice(&GUEST_MAC.0);
    let Input::Reply(na) = c.handle_frame(0, &f) else {
        panic!("no neighbour advertisement");
    };
    assert_eq!(&na[0..6], &GUEST_MAC.0);
    let ip = Ipv6Packet::new_checked(&na[ETH..]).unwrap();
    let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
    match Icmpv6Repr::parse(&ip.src_addr(), &ip.dst_addr(), &icmp, &c.caps).unwrap() {
        Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert { target_addr, .. }) => {
            assert_eq!(target_addr, target)
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.neighbour(IpAddr::V6(guest6)), Some(GUEST_MAC));
}

#[test]
fn malformed_dhcp_and_dns_queries_are_dropped_or_passed_on_without_panicking() {
    let mut c = core();
    let server: SocketAddr = "255.255.255.255:67".parse().unwrap();
    for junk in [&b""[..], b"\x01", &[0u8; 239], &[1u8; 300], &[0xffu8; 600]] {
        let mut f = guest_udp(server, junk);
        // From port 68, as a client.
        let udp_at = ETH + 20;
        f[udp_at..udp_at + 2].copy_from_slice(&68u16.to_be_bytes());
        let ip = Ipv4Packet::new_checked(&f[ETH..]).unwrap();
        let (s, d) = (ip.src_addr(), ip.dst_addr());
        UdpPacket::new_unchecked(&mut f[udp_at..]).fill_checksum(&s.into(), &d.into());
        assert_eq!(c.handle_frame(0, &f), Input::Drop, "{junk:?}");
    }
    assert!(c.counters.malformed >= 5);
    // A DNS query of any shape is the resolver's business: passed on as UDP.
    let dns: SocketAddr = "10.0.2.3:53".parse().unwrap();
    assert!(matches!(
        c.handle_frame(0, &guest_udp(dns, b"\x00")),
        Input::Udp { remote, .. } if remote == dns
    ));
}
