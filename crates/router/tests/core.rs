//! The router core without sockets: frames in, frames out, checked with smoltcp's views.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use filo_router::core::{DropReason, Hook, HookPoint, HookVerdict, PacketMeta};
use filo_router::{IfaceConfig, Router};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    Icmpv4Message, Icmpv4Packet, Icmpv6Message, Icmpv6Packet, Icmpv6Repr, IpProtocol, Ipv4Packet,
    Ipv4Repr, Ipv6Packet, Ipv6Repr, NdiscRepr, RawHardwareAddress,
};

const R0: [u8; 6] = [2, 0, 0, 0, 0, 0xa0];
const R1: [u8; 6] = [2, 0, 0, 0, 0, 0xa1];
const A: [u8; 6] = [2, 0, 0, 0, 0, 0x0a];
const B: [u8; 6] = [2, 0, 0, 0, 0, 0x0b];
const A4: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 10);
const B4: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 20);
const A6: Ipv6Addr = Ipv6Addr::new(0xfd01, 0, 0, 0, 0, 0, 0, 10);
const B6: Ipv6Addr = Ipv6Addr::new(0xfd09, 0, 0, 0, 0, 0, 0, 20);

/// vde0: 10.1.0.1/24 fd01::1/64 (MTU 1500); vde1: 10.9.0.2/24 fd09::2/64 (MTU 1400).
fn router(now: Instant) -> Router {
    let mut r = Router::new(now);
    let mut c0 = IfaceConfig::new("vde0", R0);
    c0.addrs = vec![
        ("10.1.0.1".parse().unwrap(), 24),
        ("fd01::1".parse().unwrap(), 64),
    ];
    let mut c1 = IfaceConfig::new("vde1", R1);
    c1.addrs = vec![
        ("10.9.0.2".parse().unwrap(), 24),
        ("fd09::2".parse().unwrap(), 64),
    ];
    c1.mtu = 1400;
    r.add_iface(c0).unwrap();
    r.add_iface(c1).unwrap();
    r
}

fn eth(dst: [u8; 6], src: [u8; 6], ty: EthernetProtocol, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0; 14 + payload.len()];
    let mut e = EthernetFrame::new_unchecked(&mut f[..]);
    e.set_dst_addr(EthernetAddress(dst));
    e.set_src_addr(EthernetAddress(src));
    e.set_ethertype(ty);
    e.payload_mut().copy_from_slice(payload);
    f
}

fn arp(op: ArpOperation, smac: [u8; 6], sip: Ipv4Addr, tmac: [u8; 6], tip: Ipv4Addr) -> Vec<u8> {
    let r = ArpRepr::EthernetIpv4 {
        operation: op,
        source_hardware_addr: EthernetAddress(smac),
        source_protocol_addr: sip,
        target_hardware_addr: EthernetAddress(tmac),
        target_protocol_addr: tip,
    };
    let mut b = vec![0; r.buffer_len()];
    r.emit(&mut ArpPacket::new_unchecked(&mut b[..]));
    let dst = if op == ArpOperation::Request {
        [0xff; 6]
    } else {
        tmac
    };
    eth(dst, smac, EthernetProtocol::Arp, &b)
}

fn ipv4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    proto: IpProtocol,
    payload: &[u8],
    df: bool,
) -> Vec<u8> {
    let repr = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: proto,
        payload_len: payload.len(),
        hop_limit: ttl,
    };
    let mut b = vec![0; 20 + payload.len()];
    let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
    repr.emit(&mut p, &ChecksumCapabilities::default());
    p.set_dont_frag(df);
    p.payload_mut().copy_from_slice(payload);
    p.fill_checksum();
    b
}

fn echo4(len: usize) -> Vec<u8> {
    let mut m = vec![0; 8 + len];
    let mut p = Icmpv4Packet::new_unchecked(&mut m[..]);
    p.set_msg_type(Icmpv4Message::EchoRequest);
    p.set_echo_ident(7);
    p.set_echo_seq_no(1);
    p.fill_checksum();
    m
}

fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, hop: u8, proto: IpProtocol, payload: &[u8]) -> Vec<u8> {
    let repr = Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: proto,
        payload_len: payload.len(),
        hop_limit: hop,
    };
    let mut b = vec![0; 40 + payload.len()];
    let mut p = Ipv6Packet::new_unchecked(&mut b[..]);
    repr.emit(&mut p);
    p.payload_mut().copy_from_slice(payload);
    b
}

fn icmp6(src: Ipv6Addr, dst: Ipv6Addr, repr: &Icmpv6Repr) -> Vec<u8> {
    let mut m = vec![0; repr.buffer_len()];
    repr.emit(
        &src,
        &dst,
        &mut Icmpv6Packet::new_unchecked(&mut m[..]),
        &ChecksumCapabilities::default(),
    );
    m
}

fn drain(r: &mut Router) -> Vec<(usize, Vec<u8>)> {
    std::iter::from_fn(|| r.poll_transmit()).collect()
}

/// Both hosts resolved: A asked for the router on vde0, B on vde1.
fn with_neighbours(now: Instant) -> Router {
    let mut r = router(now);
    r.handle_frame(
        now,
        0,
        &arp(
            ArpOperation::Request,
            A,
            A4,
            [0; 6],
            "10.1.0.1".parse().unwrap(),
        ),
    );
    r.handle_frame(
        now,
        1,
        &arp(
            ArpOperation::Request,
            B,
            B4,
            [0; 6],
            "10.9.0.2".parse().unwrap(),
        ),
    );
    let out = drain(&mut r);
    assert_eq!(out.len(), 2, "two ARP replies");
    r
}

#[test]
fn arp_is_answered_for_own_addresses_only() {
    let now = Instant::now();
    let mut r = router(now);
    r.handle_frame(
        now,
        0,
        &arp(
            ArpOperation::Request,
            A,
            A4,
            [0; 6],
            "10.1.0.1".parse().unwrap(),
        ),
    );
    let out = drain(&mut r);
    assert_eq!(out.len(), 1);
    let (i, f) = &out[0];
    assert_eq!(*i, 0);
    let e = EthernetFrame::new_checked(&f[..]).unwrap();
    assert_eq!(e.dst_addr().0, A);
    let a = ArpRepr::parse(&ArpPacket::new_checked(e.payload()).unwrap()).unwrap();
    let ArpRepr::EthernetIpv4 {
        operation,
        source_hardware_addr,
        source_protocol_addr,
        ..
    } = a
    else {
        unreachable!()
    };
    assert_eq!(operation, ArpOperation::Reply);
    assert_eq!(source_hardware_addr.0, R0);
    assert_eq!(source_protocol_addr, Ipv4Addr::new(10, 1, 0, 1));
    // Another host's address, or ours on the other interface's subnet asked on this one.
    r.handle_frame(
        now,
        0,
        &arp(
            ArpOperation::Request,
            A,
            A4,
            [0; 6],
            "10.1.0.99".parse().unwrap(),
        ),
    );
    assert!(drain(&mut r).is_empty());
    assert_eq!(r.drops().get(DropReason::Arp), 1);
}

#[test]
fn ipv4_is_forwarded_after_resolving_the_next_hop_with_ttl_decremented() {
    let now = Instant::now();
    let mut r = router(now);
    r.handle_frame(
        now,
        0,
        &arp(
            ArpOperation::Request,
            A,
            A4,
            [0; 6],
            "10.1.0.1".parse().unwrap(),
        ),
    );
    drain(&mut r);
    let packet = ipv4(A4, B4, 64, IpProtocol::Icmp, &echo4(56), false);
    r.handle_frame(now, 0, &eth(R0, A, EthernetProtocol::Ipv4, &packet));
    let out = drain(&mut r);
    assert_eq!(out.len(), 1, "an ARP request on vde1, the packet waits");
    let e = EthernetFrame::new_checked(&out[0].1[..]).unwrap();
    assert_eq!(
        (out[0].0, e.ethertype(), e.dst_addr().0),
        (1, EthernetProtocol::Arp, [0xff; 6])
    );
    r.handle_frame(
        now,
        1,
        &arp(ArpOperation::Reply, B, B4, R1, "10.9.0.2".parse().unwrap()),
    );
    let out = drain(&mut r);
    assert_eq!(out.len(), 1);
    let (i, f) = &out[0];
    assert_eq!(*i, 1);
    let e = EthernetFrame::new_checked(&f[..]).unwrap();
    assert_eq!((e.src_addr().0, e.dst_addr().0), (R1, B));
    let p = Ipv4Packet::new_checked(e.payload()).unwrap();
    assert_eq!(p.hop_limit(), 63);
    assert!(p.verify_checksum());
    assert_eq!(p.payload(), &echo4(56)[..]);
    assert_eq!(r.iface_stats(0).unwrap().forwarded, 1);
    assert_eq!(r.drops().total(), 0);
}

/// The ICMP error the router sent back to A on vde0.
fn icmp4_back(out: &[(usize, Vec<u8>)]) -> (Ipv4Addr, Icmpv4Message, u8, Vec<u8>) {
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].0, 0);
    let e = EthernetFrame::new_checked(&out[0].1[..]).unwrap();
    assert_eq!(e.dst_addr().0, A);
    let p = Ipv4Packet::new_checked(e.payload()).unwrap();
    assert!(p.verify_checksum());
    assert_eq!(p.dst_addr(), A4);
    let m = Icmpv4Packet::new_checked(p.payload()).unwrap();
    assert!(m.verify_checksum());
    (
        p.src_addr(),
        m.msg_type(),
        m.msg_code(),
        p.payload()[4..].to_vec(),
    )
}

#[test]
fn ttl_expiry_no_route_and_df_over_mtu_are_answered() {
    let now = Instant::now();
    let mut r = with_neighbours(now);
    r.handle_frame(
        now,
        0,
        &eth(
            R0,
            A,
            EthernetProtocol::Ipv4,
            &ipv4(A4, B4, 1, IpProtocol::Icmp, &echo4(8), false),
        ),
    );
    let (src, t, c, _) = icmp4_back(&drain(&mut r));
    assert_eq!(
        (src, t, c),
        (Ipv4Addr::new(10, 1, 0, 1), Icmpv4Message::TimeExceeded, 0)
    );

    let far: Ipv4Addr = "192.0.2.1".parse().unwrap();
    r.handle_frame(
        now,
        0,
        &eth(
            R0,
            A,
            EthernetProtocol::Ipv4,
            &ipv4(A4, far, 64, IpProtocol::Icmp, &echo4(8), false),
        ),
    );
    let (_, t, c, _) = icmp4_back(&drain(&mut r));
    assert_eq!((t, c), (Icmpv4Message::DstUnreachable, 0));

    // vde1's MTU is 1400: a 1450-byte packet with DF gets "fragmentation needed, MTU 1400".
    let big = ipv4(A4, B4, 64, IpProtocol::Icmp, &echo4(1450 - 28), true);
    r.handle_frame(now, 0, &eth(R0, A, EthernetProtocol::Ipv4, &big));
    let (_, t, c, rest) = icmp4_back(&drain(&mut r));
    assert_eq!((t, c), (Icmpv4Message::DstUnreachable, 4));
    assert_eq!(u16::from_be_bytes([rest[2], rest[3]]), 1400);
    // Without DF it is fragmented.
    let big = ipv4(A4, B4, 64, IpProtocol::Icmp, &echo4(1450 - 28), false);
    r.handle_frame(now, 0, &eth(R0, A, EthernetProtocol::Ipv4, &big));
    let out = drain(&mut r);
    assert_eq!(out.len(), 2);
    for (i, f) in &out {
        assert_eq!(*i, 1);
        assert!(f.len() - 14 <= 1400);
    }
    assert_eq!(r.drops().get(DropReason::TtlExceeded), 1);
    assert_eq!(r.drops().get(DropReason::NoRoute), 1);
    assert_eq!(r.drops().get(DropReason::TooBig), 1);
}

#[test]
fn ping_to_the_router_is_answered_from_the_address_pinged() {
    let now = Instant::now();
    let mut r = with_neighbours(now);
    // A pings the far interface's address.
    let to = Ipv4Addr::new(10, 9, 0, 2);
    r.handle_frame(
        now,
        0,
        &eth(
            R0,
            A,
            EthernetProtocol::Ipv4,
            &ipv4(A4, to, 64, IpProtocol::Icmp, &echo4(16), false),
        ),
    );
    let (src, t, _, _) = icmp4_back(&drain(&mut r));
    assert_eq!((src, t), (to, Icmpv4Message::EchoReply));
}

#[test]
fn a_packet_from_one_of_the_routers_own_addresses_is_dropped_as_a_bad_source() {
    let now = Instant::now();
    let mut r = with_neighbours(now);
    let own4: Ipv4Addr = "10.1.0.1".parse().unwrap();
    let wan4: Ipv4Addr = "10.9.0.2".parse().unwrap();
    let wan6: Ipv6Addr = "fd09::2".parse().unwrap();
    // An echo request to itself (it used to ARP for its own address to answer), and packets
    // to forward with its WAN address as their source, IPv4 and IPv6.
    let frames = [
        eth(
            R0,
            A,
            EthernetProtocol::Ipv4,
            &ipv4(own4, own4, 64, IpProtocol::Icmp, &echo4(8), false),
        ),
        eth(
            R0,
            A,
            EthernetProtocol::Ipv4,
            &ipv4(wan4, B4, 64, IpProtocol::Icmp, &echo4(8), false),
        ),
        eth(
            R0,
            A,
            EthernetProtocol::Ipv6,
            &ipv6(wan6, B6, 64, IpProtocol::Icmpv6, &echo6(wan6, B6, 8)),
        ),
    ];
    for f in &frames {
        r.handle_frame(now, 0, f);
        assert!(drain(&mut r).is_empty());
    }
    assert_eq!(r.drops().get(DropReason::BadSource), 3);
}

#[test]
fn a_fragment_for_the_router_is_dropped_not_taken_for_a_whole_message() {
    let now = Instant::now();
    let mut r = with_neighbours(now);
    let to = Ipv4Addr::new(10, 1, 0, 1);
    // A later fragment (offset 8 bytes) whose data reads as an echo request, and a first one
    // (more fragments) whose data is a whole echo request: neither is answered.
    for (offset, more) in [(8, false), (0, true)] {
        let mut p = ipv4(A4, to, 64, IpProtocol::Icmp, &echo4(16), false);
        {
            let mut h = Ipv4Packet::new_unchecked(&mut p[..]);
            h.set_frag_offset(offset);
            h.set_more_frags(more);
            h.fill_checksum();
        }
        r.handle_frame(now, 0, &eth(R0, A, EthernetProtocol::Ipv4, &p));
        assert!(drain(&mut r).is_empty(), "offset {offset}, more {more}");
    }
    // An IPv6 echo request behind a fragment header (an atomic fragment).
    let own6: Ipv6Addr = "fd01::1".parse().unwrap();
    let mut frag = vec![58, 0, 0, 0, 0, 0, 0, 1];
    frag.extend_from_slice(&echo6(A6, own6, 8));
    let p = ipv6(A6, own6, 64, IpProtocol::Ipv6Frag, &frag);
    r.handle_frame(now, 0, &eth(R0, A, EthernetProtocol::Ipv6, &p));
    assert!(drain(&mut r).is_empty());
    assert_eq!(r.drops().get(DropReason::Fragment), 3);
    // Across the router, fragments go on as they are.
    let mut p = ipv4(A4, B4, 64, IpProtocol::Icmp, &echo4(16), false);
    {
        let mut h = Ipv4Packet::new_unchecked(&mut p[..]);
        h.set_more_frags(true);
        h.fill_checksum();
    }
    r.handle_frame(now, 0, &eth(R0, A, EthernetProtocol::Ipv4, &p));
    assert_eq!(drain(&mut r).len(), 1);
}

#[test]
fn an_unanswered_next_hop_gives_host_unreachable_after_the_retries() {
    let now = Instant::now();
    let mut r = with_neighbours(now);
    let ghost = Ipv4Addr::new(10, 9, 0, 77);
    r.handle_frame(
        now,
        0,
        &eth(
            R0,
            A,
            EthernetProtocol::Ipv4,
            &ipv4(A4, ghost, 64, IpProtocol::Icmp, &echo4(8), false),
        ),
    );
    assert_eq!(drain(&mut r).len(), 1, "first ARP request");
    let mut t = now;
    let mut requests = 1;
    let mut errors = Vec::new();
    for _ in 0..10 {
        t += Duration::from_millis(500);
        r.handle_timeout(t);
        for (i, f) in drain(&mut r) {
            if i == 1 {
                requests += 1;
            } else {
                errors.push((i, f));
            }
        }
    }
    assert_eq!(requests, 3);
    let (_, ty, code, _) = icmp4_back(&errors);
    assert_eq!((ty, code), (Icmpv4Message::DstUnreachable, 1));
    assert_eq!(r.drops().get(DropReason::NoNeighbour), 1);
}

struct DropAll;
impl Hook for DropAll {
    fn hook(&mut self, _: Instant, p: HookPoint, m: &PacketMeta, _: &mut Vec<u8>) -> HookVerdict {
        assert_eq!(p, HookPoint::Forward);
        assert_eq!((m.in_iface, m.out_iface), (Some(0), Some(1)));
        HookVerdict::Drop
    }
}

/// A's echo request to B, as it arrives on vde0.
fn a_to_b() -> Vec<u8> {
    eth(
        R0,
        A,
        EthernetProtocol::Ipv4,
        &ipv4(A4, B4, 64, IpProtocol::Icmp, &echo4(8), false),
    )
}

#[test]
fn a_forwarded_packet_reuses_a_recycled_buffer() {
    let now = Instant::now();
    let mut r = with_neighbours(now);
    r.handle_frame(now, 0, &a_to_b());
    let (_, first) = drain(&mut r).pop().unwrap();
    let at = first.as_ptr();
    r.recycle(first);
    r.handle_frame(now, 0, &a_to_b());
    let out = drain(&mut r);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].1.as_ptr(),
        at,
        "the spent buffer carries the next packet"
    );
    assert_eq!(&out[0].1[..6], &B, "to B");
}

#[test]
fn a_forward_hook_drops_and_is_counted() {
    let now = Instant::now();
    let mut r = with_neighbours(now);
    r.add_hook(&[HookPoint::Forward], Box::new(DropAll));
    r.handle_frame(now, 0, &a_to_b());
    assert!(drain(&mut r).is_empty());
    assert_eq!(r.drops().get(DropReason::Hook), 1);
    // Packets for the router itself do not pass FORWARD.
    r.handle_frame(
        now,
        0,
        &eth(
            R0,
            A,
            EthernetProtocol::Ipv4,
            &ipv4(
                A4,
                "10.1.0.1".parse().unwrap(),
                64,
                IpProtocol::Icmp,
                &echo4(8),
                false,
            ),
        ),
    );
    assert_eq!(drain(&mut r).len(), 1);
}

/// A neighbour solicitation from `src` at `mac` for `target`, to its solicited-node group.
fn ns(mac: [u8; 6], src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
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
    let m = icmp6(
        src,
        group,
        &Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
            target_addr: target,
            lladdr: Some(RawHardwareAddress::from_bytes(&mac)),
        }),
    );
    let g = group.octets();
    eth(
        [0x33, 0x33, g[12], g[13], g[14], g[15]],
        mac,
        EthernetProtocol::Ipv6,
        &ipv6(src, group, 255, IpProtocol::Icmpv6, &m),
    )
}

fn echo6(src: Ipv6Addr, dst: Ipv6Addr, len: usize) -> Vec<u8> {
    icmp6(
        src,
        dst,
        &Icmpv6Repr::EchoRequest {
            ident: 1,
            seq_no: 1,
            data: &vec![0; len],
        },
    )
}

#[test]
fn ipv6_neighbours_forwarding_hop_limit_and_packet_too_big() {
    let now = Instant::now();
    let mut r = router(now);
    r.handle_frame(now, 0, &ns(A, A6, "fd01::1".parse().unwrap()));
    let out = drain(&mut r);
    assert_eq!(out.len(), 1);
    let e = EthernetFrame::new_checked(&out[0].1[..]).unwrap();
    assert_eq!(e.dst_addr().0, A);
    let p = Ipv6Packet::new_checked(e.payload()).unwrap();
    assert_eq!(
        (p.src_addr(), p.dst_addr(), p.hop_limit()),
        ("fd01::1".parse().unwrap(), A6, 255)
    );
    let m = Icmpv6Packet::new_checked(p.payload()).unwrap();
    assert!(m.verify_checksum(&p.src_addr(), &p.dst_addr()));
    match NdiscRepr::parse(&m).unwrap() {
        NdiscRepr::NeighborAdvert {
            target_addr,
            lladdr,
            ..
        } => {
            assert_eq!(target_addr, "fd01::1".parse::<Ipv6Addr>().unwrap());
            assert_eq!(lladdr.unwrap().as_bytes(), &R0);
        }
        other => panic!("{other:?}"),
    }

    // Forwarding: a solicitation for B on vde1, then B's advertisement releases the packet.
    let packet = ipv6(A6, B6, 64, IpProtocol::Icmpv6, &echo6(A6, B6, 8));
    r.handle_frame(now, 0, &eth(R0, A, EthernetProtocol::Ipv6, &packet));
    let out = drain(&mut r);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, 1);
    let e = EthernetFrame::new_checked(&out[0].1[..]).unwrap();
    assert_eq!(&e.dst_addr().0[..3], &[0x33, 0x33, 0xff]);
    let na = icmp6(
        B6,
        "fd09::2".parse().unwrap(),
        &Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
            flags: smoltcp::wire::NdiscNeighborFlags::SOLICITED,
            target_addr: B6,
            lladdr: Some(RawHardwareAddress::from_bytes(&B)),
        }),
    );
    r.handle_frame(
        now,
        1,
        &eth(
            R1,
            B,
            EthernetProtocol::Ipv6,
            &ipv6(B6, "fd09::2".parse().unwrap(), 255, IpProtocol::Icmpv6, &na),
        ),
    );
    let out = drain(&mut r);
    assert_eq!(out.len(), 1);
    let e = EthernetFrame::new_checked(&out[0].1[..]).unwrap();
    assert_eq!((out[0].0, e.dst_addr().0), (1, B));
    assert_eq!(
        Ipv6Packet::new_checked(e.payload()).unwrap().hop_limit(),
        63
    );

    // Hop limit 1: time exceeded; 1450 bytes towards the 1400-byte link: packet too big.
    let expired = ipv6(A6, B6, 1, IpProtocol::Icmpv6, &echo6(A6, B6, 8));
    r.handle_frame(now, 0, &eth(R0, A, EthernetProtocol::Ipv6, &expired));
    let big = ipv6(A6, B6, 64, IpProtocol::Icmpv6, &echo6(A6, B6, 1450 - 48));
    r.handle_frame(now, 0, &eth(R0, A, EthernetProtocol::Ipv6, &big));
    let out = drain(&mut r);
    let kinds: Vec<(Icmpv6Message, u32)> = out
        .iter()
        .map(|(i, f)| {
            assert_eq!(*i, 0);
            let e = EthernetFrame::new_checked(&f[..]).unwrap();
            let p = Ipv6Packet::new_checked(e.payload()).unwrap();
            assert_eq!(p.dst_addr(), A6);
            let m = Icmpv6Packet::new_checked(p.payload()).unwrap();
            assert!(m.verify_checksum(&p.src_addr(), &p.dst_addr()));
            let mtu = if m.msg_type() == Icmpv6Message::PktTooBig {
                m.pkt_too_big_mtu()
            } else {
                0
            };
            (m.msg_type(), mtu)
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            (Icmpv6Message::TimeExceeded, 0),
            (Icmpv6Message::PktTooBig, 1400)
        ]
    );
}

/// A client's DHCP message broadcast on vde0: the server's one reply.
fn dhcp_exchange(r: &mut Router, now: Instant, payload: &[u8]) -> Vec<u8> {
    let packet = filo_dhcp::udp4(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 68, 67, payload);
    r.handle_frame(now, 0, &eth([0xff; 6], A, EthernetProtocol::Ipv4, &packet));
    let out = drain(r);
    assert_eq!(out.len(), 1);
    let e = EthernetFrame::new_checked(&out[0].1[..]).unwrap();
    filo_dhcp::dhcp_payload(e.payload())
        .expect("a DHCP reply")
        .to_vec()
}

#[test]
fn dhcp_discover_is_offered_an_address_from_the_range() {
    let now = Instant::now();
    let mut r = router(now);
    let cfg = filo_dhcp::server::Config::new(
        "10.1.0.1".parse().unwrap(),
        24,
        "10.1.0.100".parse().unwrap(),
        "10.1.0.199".parse().unwrap(),
    );
    r.set_dhcp_server(0, cfg).unwrap();
    let mut c = filo_dhcp::Client::new(A, None, filo_dhcp::Instant::from_secs(0), 1);
    let (out, _) = c.poll(filo_dhcp::Instant::from_secs(0));
    let discover = out.unwrap();
    let offer = dhcp_exchange(&mut r, now, discover.udp_payload());
    let (request, event) = c
        .handle(filo_dhcp::Instant::from_secs(0), &offer)
        .expect("the client takes the offer");
    assert!(event.is_none(), "an offer, not a lease yet");
    let ack = dhcp_exchange(&mut r, now, request.expect("a request").udp_payload());
    let (_, event) = c
        .handle(filo_dhcp::Instant::from_secs(0), &ack)
        .expect("the client takes the ack");
    assert!(event.is_some(), "bound");
    let leases = r.dhcp_server(0).unwrap().leases(r.server_clock(now));
    assert_eq!(leases.len(), 1, "the offered address is held");
    let IpAddr::V4(a) = IpAddr::V4(leases[0].addr) else {
        unreachable!()
    };
    assert!((100..=199).contains(&a.octets()[3]), "{a}");
}

#[test]
fn router_advertisements_go_out_with_the_interface_prefix() {
    let now = Instant::now();
    let mut r = router(now);
    r.set_advertiser(now, 0, None).unwrap();
    r.handle_timeout(now);
    let out = drain(&mut r);
    assert_eq!(out.len(), 1);
    let e = EthernetFrame::new_checked(&out[0].1[..]).unwrap();
    assert_eq!(e.dst_addr().0, [0x33, 0x33, 0, 0, 0, 1]);
    let p = Ipv6Packet::new_checked(e.payload()).unwrap();
    let m = Icmpv6Packet::new_checked(p.payload()).unwrap();
    match NdiscRepr::parse(&m).unwrap() {
        NdiscRepr::RouterAdvert {
            prefix_info: Some(pi),
            ..
        } => {
            assert_eq!(pi.prefix, "fd01::".parse::<Ipv6Addr>().unwrap());
            assert_eq!(pi.prefix_len, 64);
        }
        other => panic!("{other:?}"),
    }
    assert!(r.poll_at().is_some_and(|t| t > now));
}

#[test]
fn mutated_frames_never_panic_and_every_drop_is_counted() {
    let now = Instant::now();
    let mut r = with_neighbours(now);
    r.set_dhcp_server(
        0,
        filo_dhcp::server::Config::new(
            "10.1.0.1".parse().unwrap(),
            24,
            "10.1.0.100".parse().unwrap(),
            "10.1.0.199".parse().unwrap(),
        ),
    )
    .unwrap();
    r.set_advertiser(now, 0, None).unwrap();
    let seeds = [
        eth(
            R0,
            A,
            EthernetProtocol::Ipv4,
            &ipv4(A4, B4, 2, IpProtocol::Icmp, &echo4(40), true),
        ),
        eth(
            R0,
            A,
            EthernetProtocol::Ipv6,
            &ipv6(A6, B6, 2, IpProtocol::Icmpv6, &echo6(A6, B6, 40)),
        ),
        ns(A, A6, "fd01::1".parse().unwrap()),
        arp(
            ArpOperation::Request,
            A,
            A4,
            [0; 6],
            "10.1.0.1".parse().unwrap(),
        ),
        eth(
            [0xff; 6],
            A,
            EthernetProtocol::Ipv4,
            &filo_dhcp::udp4(
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::BROADCAST,
                68,
                67,
                &[1; 300],
            ),
        ),
    ];
    let mut x: u32 = 0x1234_5678;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let mut t = now;
    for round in 0..200_000 {
        let mut f = seeds[round % seeds.len()].clone();
        for _ in 0..(next() % 4 + 1) {
            let at = next() as usize % f.len();
            f[at] = next() as u8;
        }
        if next() % 8 == 0 {
            f.truncate(next() as usize % (f.len() + 1));
        }
        r.handle_frame(t, (next() % 2) as usize, &f);
        if round % 1000 == 0 {
            t += Duration::from_millis(700);
            r.handle_timeout(t);
        }
        drain(&mut r);
    }
    assert!(r.drops().total() > 0);
}

#[test]
fn reverse_path_filtering_drops_spoofed_sources_and_counts_them() {
    let now = Instant::now();
    let mut r = with_neighbours(now);
    // From vde1 with a source of vde0's subnet, and one routed nowhere: forwarded while the
    // filter is off.
    let spoofed = |src: Ipv4Addr| {
        eth(
            R1,
            B,
            EthernetProtocol::Ipv4,
            &ipv4(src, A4, 64, IpProtocol::Icmp, &echo4(8), false),
        )
    };
    let spoofed6 = eth(
        R1,
        B,
        EthernetProtocol::Ipv6,
        &ipv6(
            "fd01::99".parse().unwrap(),
            A6,
            64,
            IpProtocol::Icmpv6,
            &[128, 0, 0, 0, 0, 1, 0, 1],
        ),
    );
    r.handle_frame(now, 1, &spoofed("10.1.0.99".parse().unwrap()));
    assert_eq!(drain(&mut r).len(), 1, "forwarded");
    r.set_rp_filter(true);
    r.handle_frame(now, 1, &spoofed("10.1.0.99".parse().unwrap()));
    r.handle_frame(now, 1, &spoofed("192.0.2.7".parse().unwrap()));
    r.handle_frame(now, 1, &spoofed6);
    assert!(drain(&mut r).is_empty());
    assert_eq!(r.drops().get(DropReason::ReversePath), 3);
    // The right way round still passes, both ways.
    for (iface, frame) in [(1, spoofed(B4)), (0, a_to_b())] {
        r.handle_frame(now, iface, &frame);
        assert_eq!(drain(&mut r).len(), 1);
    }
    assert_eq!(r.drops().get(DropReason::ReversePath), 3);
}

#[test]
fn the_routers_own_icmp_errors_about_a_port_forward_quote_the_public_address() {
    let now = Instant::now();
    let mut r = with_neighbours(now);
    let mut c = filo_router::nat::Config::new(1, "10.9.0.2".parse().unwrap());
    c.masquerade = false;
    c.forwards = vec![filo_router::nat::PortForward::parse("udp:8053=10.1.0.77:53").unwrap()];
    r.add_hook(
        &[HookPoint::Prerouting, HookPoint::Postrouting],
        Box::new(filo_router::nat::Masquerade::new(c)),
    );
    // TTL 1 to the forward: time exceeded after DNAT.
    let mut udp = vec![0x1f, 0x40, 0x1f, 0x75, 0, 12, 0, 0, b'd', b'a', b't', b'a'];
    let me: Ipv4Addr = "10.9.0.2".parse().unwrap();
    smoltcp::wire::UdpPacket::new_unchecked(&mut udp[..]).fill_checksum(&B4.into(), &me.into());
    let packet = ipv4(B4, me, 1, IpProtocol::Udp, &udp, false);
    r.handle_frame(now, 1, &eth(R1, B, EthernetProtocol::Ipv4, &packet));
    let out = drain(&mut r);
    assert_eq!(out.len(), 1, "{out:?}");
    let e = EthernetFrame::new_checked(&out[0].1[..]).unwrap();
    let p = Ipv4Packet::new_checked(e.payload()).unwrap();
    assert!(p.verify_checksum());
    assert_eq!((p.src_addr(), p.dst_addr()), (me, B4));
    let icmp = Icmpv4Packet::new_checked(p.payload()).unwrap();
    assert!(icmp.verify_checksum());
    assert_eq!(icmp.msg_type(), Icmpv4Message::TimeExceeded);
    let quoted = Ipv4Packet::new_checked(icmp.data()).unwrap();
    assert!(quoted.verify_checksum());
    assert_eq!((quoted.src_addr(), quoted.dst_addr()), (B4, me));
    let q = smoltcp::wire::UdpPacket::new_checked(quoted.payload()).unwrap();
    assert_eq!((q.src_port(), q.dst_port()), (8000, 8053));
    assert!(q.verify_checksum(&B4.into(), &me.into()));
}

/// Folded ones-complement sum of `data` on top of `sum`.
fn fold_sum(mut sum: u32, data: &[u8]) -> u16 {
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// A TCP segment `src`:40000 -> B4:5201 of `len` bytes with DF, its checksum partial (the
/// pseudo-header sum, as a Linux tap hands over TSO segments).
fn tso4(src: Ipv4Addr, len: usize) -> Vec<u8> {
    let mut tcp = vec![0u8; 20 + len];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&5201u16.to_be_bytes());
    tcp[4..8].copy_from_slice(&1u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x18;
    for (i, b) in tcp[20..].iter_mut().enumerate() {
        *b = (i % 241) as u8;
    }
    let mut p = ipv4(src, B4, 64, IpProtocol::Tcp, &tcp, true);
    let pseudo = fold_sum(6 + (20 + len) as u32, &p[12..20]);
    p[36..38].copy_from_slice(&pseudo.to_be_bytes());
    p
}

/// The virtio-net header of a TSO segment of IPv4 packet `p` with segments of `mss`.
fn tso_header(mss: u16) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[0] = 1; // NEEDS_CSUM
    h[1] = 1; // TCPv4
    h[2..4].copy_from_slice(&54u16.to_le_bytes());
    h[4..6].copy_from_slice(&mss.to_le_bytes());
    h[6..8].copy_from_slice(&34u16.to_le_bytes());
    h[8..10].copy_from_slice(&16u16.to_le_bytes());
    h
}

fn vnet_frame(h: [u8; 12], frame: &[u8]) -> Vec<u8> {
    [&h[..], frame].concat()
}

/// IPv4 `packet` from A into vde0 as a TSO super-frame of `mss`; what the router sends.
fn send_tso(r: &mut Router, now: Instant, mss: u16, packet: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let frame = eth(R0, A, EthernetProtocol::Ipv4, packet);
    r.handle_frame(now, 0, &vnet_frame(tso_header(mss), &frame));
    drain(r)
}

/// vde0 with virtio-net headers, vde1 as given; both neighbours resolved.
fn vnet_router(now: Instant, vde1_vnet: bool) -> Router {
    let mut r = router(now);
    r.set_vnet(0, true).unwrap();
    r.set_vnet(1, vde1_vnet).unwrap();
    let a = arp(
        ArpOperation::Request,
        A,
        A4,
        [0; 6],
        "10.1.0.1".parse().unwrap(),
    );
    r.handle_frame(now, 0, &vnet_frame([0; 12], &a));
    let b = arp(
        ArpOperation::Request,
        B,
        B4,
        [0; 6],
        "10.9.0.2".parse().unwrap(),
    );
    let b = if vde1_vnet {
        vnet_frame([0; 12], &b)
    } else {
        b
    };
    r.handle_frame(now, 1, &b);
    let out = drain(&mut r);
    assert_eq!(out.len(), 2, "two ARP replies");
    assert_eq!(&out[0].1[..12], &[0; 12], "a plain header in front on vde0");
    assert_eq!(
        EthernetFrame::new_checked(&out[0].1[12..])
            .unwrap()
            .dst_addr()
            .0,
        A
    );
    r
}

#[test]
fn a_super_frame_is_segmented_for_a_plain_link_and_its_segments_size_decides_the_mtu() {
    let now = Instant::now();
    let mut r = vnet_router(now, false);
    let packet = tso4(A4, 10000);
    // Segments of 1300 bytes fit vde1's MTU 1400: segmented there, checksums complete.
    let out = send_tso(&mut r, now, 1300, &packet);
    assert_eq!(out.len(), 10000usize.div_ceil(1300));
    let mut data = Vec::new();
    for (i, f) in &out {
        assert_eq!(*i, 1);
        let e = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(e.dst_addr().0, B);
        let p = Ipv4Packet::new_checked(e.payload()).unwrap();
        assert!(p.verify_checksum());
        assert!(p.total_len() <= 1400);
        assert_eq!(p.hop_limit(), 63);
        let t = smoltcp::wire::TcpPacket::new_checked(p.payload()).unwrap();
        assert!(
            t.verify_checksum(&A4.into(), &B4.into()),
            "TCP checksum of a segment"
        );
        data.extend_from_slice(t.payload());
    }
    assert_eq!(data, &packet[40..]);
    assert_eq!(r.iface_stats(0).unwrap().super_rx, 1);
    // Segments of 1448 do not fit: fragmentation needed, MTU 1400, with a header on vde0.
    let out = send_tso(&mut r, now, 1448, &packet);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, 0);
    let back = vec![(0, out[0].1[12..].to_vec())];
    let (_, t, c, rest) = icmp4_back(&back);
    assert_eq!((t, c), (Icmpv4Message::DstUnreachable, 4));
    assert_eq!(u16::from_be_bytes([rest[2], rest[3]]), 1400);
    assert_eq!(r.drops().get(DropReason::TooBig), 1);
}

#[test]
fn a_super_frame_leaves_whole_on_a_vnet_link() {
    let now = Instant::now();
    let mut r = vnet_router(now, true);
    let packet = tso4(A4, 10000);
    let out = send_tso(&mut r, now, 1300, &packet);
    assert_eq!(out.len(), 1);
    let (i, f) = &out[0];
    assert_eq!(*i, 1);
    assert_eq!(&f[..12], &tso_header(1300));
    let e = EthernetFrame::new_checked(&f[12..]).unwrap();
    let p = Ipv4Packet::new_checked(e.payload()).unwrap();
    assert!(p.verify_checksum());
    assert_eq!(p.hop_limit(), 63);
    // Addresses unchanged: the partial checksum is as it came.
    assert_eq!(p.payload(), &packet[20..]);
    assert_eq!(r.iface_stats(1).unwrap().super_tx, 1);
}

#[test]
fn a_masqueraded_super_frame_keeps_a_partial_checksum_that_completes_right() {
    let now = Instant::now();
    let mut r = vnet_router(now, true);
    let mut c = filo_router::nat::Config::new(1, "10.9.0.2".parse().unwrap());
    c.masquerade = true;
    r.add_hook(
        &[HookPoint::Prerouting, HookPoint::Postrouting],
        Box::new(filo_router::nat::Masquerade::new(c)),
    );
    // Not A4: 10.1.0.10 -> 10.9.0.2 happens to leave the address sum as it is.
    let packet = tso4(Ipv4Addr::new(10, 1, 0, 77), 10000);
    let out = send_tso(&mut r, now, 1300, &packet);
    assert_eq!(out.len(), 1);
    let mut f = out[0].1.clone();
    assert_eq!(&f[..12], &tso_header(1300));
    let wan: Ipv4Addr = "10.9.0.2".parse().unwrap();
    {
        let p = Ipv4Packet::new_checked(&f[26..]).unwrap();
        assert_eq!(p.src_addr(), wan);
        // The field holds the pseudo-header sum for the new source address.
        let len = p.payload().len() as u32;
        let want = fold_sum(6 + len, &f[26 + 12..26 + 20]);
        assert_eq!(&p.payload()[16..18], &want.to_be_bytes());
    }
    // Completed as the receiver's NIC or kernel would: the sum from the TCP header on, into
    // the field; then the full checksum verifies with the translated addresses.
    let tcp = 26 + 20;
    let sum = !fold_sum(0, &f[tcp..]);
    f[tcp + 16..tcp + 18].copy_from_slice(&sum.to_be_bytes());
    let p = Ipv4Packet::new_checked(&f[26..]).unwrap();
    let t = smoltcp::wire::TcpPacket::new_checked(p.payload()).unwrap();
    assert!(t.verify_checksum(&wan.into(), &B4.into()));
    assert_eq!(t.payload(), &packet[40..]);
}

#[test]
fn a_port_forwarded_servers_fragments_the_router_cuts_smaller_all_leave_from_its_address() {
    let now = Instant::now();
    let mut r = with_neighbours(now);
    let me: Ipv4Addr = "10.9.0.2".parse().unwrap();
    let mut c = filo_router::nat::Config::new(1, me);
    c.masquerade = false;
    c.forwards = vec![filo_router::nat::PortForward::parse("udp:8053=10.1.0.10:53").unwrap()];
    r.add_hook(
        &[HookPoint::Prerouting, HookPoint::Postrouting],
        Box::new(filo_router::nat::Masquerade::new(c)),
    );
    let mut udp = vec![0x1f, 0x40, 0x1f, 0x75, 0, 12, 0, 0, b'd', b'a', b't', b'a'];
    smoltcp::wire::UdpPacket::new_unchecked(&mut udp[..]).fill_checksum(&B4.into(), &me.into());
    let query = ipv4(B4, me, 64, IpProtocol::Udp, &udp, false);
    r.handle_frame(now, 1, &eth(R1, B, EthernetProtocol::Ipv4, &query));
    assert_eq!(drain(&mut r).len(), 1, "the query reaches the server");
    // The server's 2000-byte answer in two fragments of its 1500-byte LAN: vde1's MTU is
    // 1400, so the router cuts the first one again.
    let mut d = vec![0u8; 2008];
    {
        let mut u = smoltcp::wire::UdpPacket::new_unchecked(&mut d[..]);
        u.set_src_port(53);
        u.set_dst_port(8000);
        u.set_len(2008);
        u.fill_checksum(&A4.into(), &B4.into());
    }
    for (offset, piece, more) in [(0, &d[..1480], true), (1480, &d[1480..], false)] {
        let mut p = ipv4(A4, B4, 64, IpProtocol::Udp, piece, false);
        let mut h = Ipv4Packet::new_unchecked(&mut p[..]);
        h.set_ident(0x4242);
        h.set_frag_offset(offset);
        h.set_more_frags(more);
        h.fill_checksum();
        r.handle_frame(now, 0, &eth(R0, A, EthernetProtocol::Ipv4, &p));
    }
    let out = drain(&mut r);
    assert_eq!(out.len(), 3, "{out:?}");
    let mut data = vec![0u8; 2008];
    for (iface, frame) in &out {
        assert_eq!(*iface, 1);
        let e = EthernetFrame::new_checked(&frame[..]).unwrap();
        let p = Ipv4Packet::new_checked(e.payload()).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(
            (p.src_addr(), p.dst_addr()),
            (me, B4),
            "{}",
            p.frag_offset()
        );
        let at = usize::from(p.frag_offset());
        data[at..at + p.payload().len()].copy_from_slice(p.payload());
    }
    let u = smoltcp::wire::UdpPacket::new_checked(&data[..]).unwrap();
    assert_eq!((u.src_port(), u.dst_port()), (8053, 8000));
    assert!(u.verify_checksum(&me.into(), &B4.into()));
}

/// A NAT hook on vde1 (10.9.0.2, fd09::2) that holds early fragments, as `filo router`'s:
/// masquerade (and NAT66), or only `forward` (a port forward) when one is given.
fn nat_router(now: Instant, forward: Option<&str>) -> Router {
    let mut r = with_neighbours(now);
    r.handle_frame(now, 0, &ns(A, A6, "fd01::1".parse().unwrap()));
    r.handle_frame(now, 1, &ns(B, B6, "fd09::2".parse().unwrap()));
    drain(&mut r);
    let mut c = filo_router::nat::Config::new(1, "10.9.0.2".parse().unwrap());
    c.addr6 = Some("fd09::2".parse().unwrap());
    c.hold = filo_router::nat::HoldLimits::DEFAULT;
    if let Some(f) = forward {
        c.masquerade = false;
        match filo_router::nat::Forward::parse(f).unwrap() {
            filo_router::nat::Forward::V4(f) => c.forwards.push(f),
            filo_router::nat::Forward::V6(f) => c.forwards6.push(f),
        }
    }
    r.add_hook(
        &[HookPoint::Prerouting, HookPoint::Postrouting],
        Box::new(filo_router::nat::Masquerade::new(c)),
    );
    r
}

/// A UDP datagram from `src`:`sport` to `dst`:`dport` with `len` bytes of data, cut into
/// IPv4 fragments of 1480 bytes of data, or IPv6 ones of 1232 (with a fragment header),
/// first fragment first.
fn udp_fragments(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, len: usize) -> Vec<Vec<u8>> {
    let mut d = vec![0u8; 8 + len];
    for (i, b) in d[8..].iter_mut().enumerate() {
        *b = i as u8;
    }
    {
        let mut u = smoltcp::wire::UdpPacket::new_unchecked(&mut d[..]);
        u.set_src_port(sport);
        u.set_dst_port(dport);
        u.set_len((8 + len) as u16);
        u.fill_checksum(&src.into(), &dst.into());
    }
    let mut out = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(t)) => {
            for (i, piece) in d.chunks(1480).enumerate() {
                let mut p = ipv4(s, t, 64, IpProtocol::Udp, piece, false);
                let mut h = Ipv4Packet::new_unchecked(&mut p[..]);
                h.set_ident(0x4242);
                h.set_frag_offset((i * 1480) as u16);
                h.set_more_frags((i + 1) * 1480 < d.len());
                h.fill_checksum();
                out.push(p);
            }
        }
        (IpAddr::V6(s), IpAddr::V6(t)) => {
            for (i, piece) in d.chunks(1232).enumerate() {
                let more = (i + 1) * 1232 < d.len();
                let mut f = vec![17, 0];
                f.extend(((i * 1232) as u16 | u16::from(more)).to_be_bytes());
                f.extend(0x4242_u32.to_be_bytes());
                f.extend_from_slice(piece);
                out.push(ipv6(s, t, 64, IpProtocol::Ipv6Frag, &f));
            }
        }
        _ => unreachable!(),
    }
    out
}

/// The UDP datagram the fragments `out` (frames) carry, put back together: source,
/// destination, ports, data length; every checksum checked.
fn reassembled(out: &[(usize, Vec<u8>)]) -> (IpAddr, u16, IpAddr, u16, usize) {
    let mut data = vec![0u8; 65536];
    let (mut addrs, mut end) = (None, 0);
    for (_, frame) in out {
        let e = EthernetFrame::new_checked(&frame[..]).unwrap();
        let (src, dst, at, piece): (IpAddr, IpAddr, usize, Vec<u8>) = match e.ethertype() {
            EthernetProtocol::Ipv4 => {
                let p = Ipv4Packet::new_checked(e.payload()).unwrap();
                assert!(p.verify_checksum());
                let at = usize::from(p.frag_offset());
                (
                    p.src_addr().into(),
                    p.dst_addr().into(),
                    at,
                    p.payload().to_vec(),
                )
            }
            _ => {
                let p = Ipv6Packet::new_checked(e.payload()).unwrap();
                assert_eq!(p.next_header(), IpProtocol::Ipv6Frag);
                let f = p.payload();
                let at = usize::from(u16::from_be_bytes([f[2], f[3]]) & !7);
                (
                    p.src_addr().into(),
                    p.dst_addr().into(),
                    at,
                    f[8..].to_vec(),
                )
            }
        };
        assert!(addrs.is_none_or(|a| a == (src, dst)), "{out:?}");
        addrs = Some((src, dst));
        data[at..at + piece.len()].copy_from_slice(&piece);
        end = end.max(at + piece.len());
    }
    let (src, dst) = addrs.unwrap();
    let u = smoltcp::wire::UdpPacket::new_checked(&data[..end]).unwrap();
    assert!(u.verify_checksum(&src.into(), &dst.into()));
    (src, u.src_port(), dst, u.dst_port(), end - 8)
}

/// Where a frame's IP fragment starts in its datagram.
fn frag_offset(frame: &[u8]) -> usize {
    let e = EthernetFrame::new_checked(frame).unwrap();
    match e.ethertype() {
        EthernetProtocol::Ipv4 => {
            usize::from(Ipv4Packet::new_checked(e.payload()).unwrap().frag_offset())
        }
        _ => {
            let f = Ipv6Packet::new_checked(e.payload())
                .unwrap()
                .payload()
                .to_vec();
            usize::from(u16::from_be_bytes([f[2], f[3]]) & !7)
        }
    }
}

/// Sends `fragments` on `iface` last first: nothing comes out until the first one, then all,
/// the first one first.
fn reversed_through(
    r: &mut Router,
    now: Instant,
    iface: usize,
    fragments: &[Vec<u8>],
) -> Vec<(usize, Vec<u8>)> {
    let (mac, dst) = if iface == 0 { (A, R0) } else { (B, R1) };
    let ty = |p: &[u8]| match p[0] >> 4 {
        4 => EthernetProtocol::Ipv4,
        _ => EthernetProtocol::Ipv6,
    };
    assert!(fragments.len() >= 3);
    for p in fragments[1..].iter().rev() {
        r.handle_frame(now, iface, &eth(dst, mac, ty(p), p));
        assert_eq!(drain(r), vec![], "a fragment before its first one is held");
    }
    let p = &fragments[0];
    r.handle_frame(now, iface, &eth(dst, mac, ty(p), p));
    let out = drain(r);
    assert_eq!(frag_offset(&out[0].1), 0, "the first fragment first");
    out
}

#[test]
fn reordered_fragments_of_a_masqueraded_reply_are_held_until_the_first_and_all_arrive_translated() {
    let now = Instant::now();
    let mut r = nat_router(now, None);
    let me4: IpAddr = "10.9.0.2".parse().unwrap();
    let me6: IpAddr = "fd09::2".parse().unwrap();
    for (host, remote, me) in [
        (IpAddr::V4(A4), IpAddr::V4(B4), me4),
        (IpAddr::V6(A6), IpAddr::V6(B6), me6),
    ] {
        // The host's query opens the connection (its port kept).
        let q = udp_fragments(host, 40000, remote, 53, 10);
        let ty = if host.is_ipv4() {
            EthernetProtocol::Ipv4
        } else {
            EthernetProtocol::Ipv6
        };
        r.handle_frame(now, 0, &eth(R0, A, ty, &q[0]));
        assert_eq!(reassembled(&drain(&mut r)), (me, 40000, remote, 53, 10));
        // Its 3000-byte answer in three fragments, last first.
        let answer = udp_fragments(remote, 53, me, 40000, 3000);
        assert_eq!(answer.len(), 3);
        let out = reversed_through(&mut r, now, 1, &answer);
        let offsets: Vec<usize> = out.iter().map(|(_, f)| frag_offset(f)).collect();
        let piece = if host.is_ipv4() { 1480 } else { 1232 };
        assert_eq!(
            offsets,
            [0, 2 * piece, piece],
            "the others in the order they came"
        );
        assert!(out.iter().all(|(i, _)| *i == 0));
        assert_eq!(reassembled(&out), (remote, 53, host, 40000, 3000));
    }
    assert_eq!(r.drops().total(), 0, "{:?}", r.drops());
    let nat = r.hook_print("nat", now).unwrap().join("\n");
    assert!(nat.contains("fragments_held 4 held_now 0 "), "{nat}");
}

#[test]
fn reordered_fragments_of_a_port_forwarded_request_and_its_reply_are_held_and_translated() {
    let now = Instant::now();
    for (forward, client, me, server) in [
        (
            "udp:8053=10.1.0.10:53",
            IpAddr::V4(B4),
            "10.9.0.2",
            IpAddr::V4(A4),
        ),
        (
            "udp:8053=[fd01::a]:53",
            IpAddr::V6(B6),
            "fd09::2",
            IpAddr::V6(A6),
        ),
    ] {
        let me: IpAddr = me.parse().unwrap();
        let mut r = nat_router(now, Some(forward));
        // The request, last fragment first, reaches the server.
        let request = udp_fragments(client, 4000, me, 8053, 3500);
        let out = reversed_through(&mut r, now, 1, &request);
        assert!(out.iter().all(|(i, _)| *i == 0));
        assert_eq!(reassembled(&out), (client, 4000, server, 53, 3500));
        // The server's answer, last fragment first: it leaves from the router's address
        // (no masquerade: only the held ones can get it).
        let answer = udp_fragments(server, 53, client, 4000, 3500);
        let out = reversed_through(&mut r, now, 0, &answer);
        assert!(out.iter().all(|(i, _)| *i == 1));
        assert_eq!(reassembled(&out), (me, 8053, client, 4000, 3500));
        assert_eq!(r.drops().total(), 0, "{forward}: {:?}", r.drops());
    }
}

#[test]
fn held_fragments_are_bounded_and_time_out_and_every_one_dropped_is_counted() {
    let now = Instant::now();
    let mut r = nat_router(now, None);
    let me: IpAddr = "10.9.0.2".parse().unwrap();
    let q = udp_fragments(IpAddr::V4(A4), 40000, IpAddr::V4(B4), 53, 10);
    r.handle_frame(now, 0, &eth(R0, A, EthernetProtocol::Ipv4, &q[0]));
    drain(&mut r);
    // 70 datagrams' last fragments: 64 per datagram at most, 256 in all.
    let mut held = 0;
    for id in 0..300u16 {
        let mut f = udp_fragments(IpAddr::V4(B4), 53, me, 40000, 4000)
            .pop()
            .unwrap();
        let mut h = Ipv4Packet::new_unchecked(&mut f[..]);
        h.set_ident(id);
        h.fill_checksum();
        r.handle_frame(now, 1, &eth(R1, B, EthernetProtocol::Ipv4, &f));
        held += 1;
    }
    assert_eq!(held, 300);
    assert_eq!(r.drops().get(DropReason::FragmentHoldFull), 300 - 256);
    // One datagram's: at most 64 fragments (the same one sent again counts too).
    let f = udp_fragments(IpAddr::V4(B4), 53, me, 40000, 4000)
        .pop()
        .unwrap();
    let later = now + Duration::from_secs(31);
    assert!(r.poll_at().is_some_and(|t| t <= later));
    r.handle_timeout(later);
    assert_eq!(r.drops().get(DropReason::FragmentHoldTimeout), 256);
    assert_eq!(r.poll_at(), None);
    for _ in 0..65 {
        r.handle_frame(later, 1, &eth(R1, B, EthernetProtocol::Ipv4, &f));
    }
    assert_eq!(r.drops().get(DropReason::FragmentHoldFull), 300 - 256 + 1);
    assert_eq!(drain(&mut r), vec![]);
    let nat = r.hook_print("nat", later).unwrap().join("\n");
    assert!(
        nat.contains(
            "fragments_held 320 held_now 64 fragment_hold_full 45 fragment_hold_timeout 256 "
        ),
        "{nat}"
    );
}

#[test]
fn fragments_nat_leaves_alone_are_not_held_in_order_and_follow_their_first_one_out_of_order() {
    let now = Instant::now();
    // Port forwards only: the LAN host's own traffic to the WAN is routed as it is.
    let mut r = nat_router(now, Some("udp:8053=10.1.0.10:53"));
    let frames = |r: &mut Router, iface: usize, fragments: &[Vec<u8>]| {
        let (mac, dst) = if iface == 0 { (A, R0) } else { (B, R1) };
        for p in fragments {
            r.handle_frame(now, iface, &eth(dst, mac, EthernetProtocol::Ipv4, p));
        }
        drain(r)
    };
    let datagram = udp_fragments(IpAddr::V4(A4), 40000, IpAddr::V4(B4), 53, 2500);
    // In order (cut again for the WAN's MTU): out at once, untouched.
    let out = frames(&mut r, 0, &datagram);
    assert!(out.len() >= 2, "{out:?}");
    assert_eq!(reassembled(&out), (A4.into(), 40000, B4.into(), 53, 2500));
    // Out of order: held for their first one, then out with it, untouched.
    let mut datagram = datagram;
    for p in datagram.iter_mut() {
        let mut h = Ipv4Packet::new_unchecked(&mut p[..]);
        h.set_ident(0x4343);
        h.fill_checksum();
    }
    datagram.reverse();
    assert_eq!(frames(&mut r, 0, &datagram[..1]), vec![]);
    let out = frames(&mut r, 0, &datagram[1..]);
    assert_eq!(reassembled(&out), (A4.into(), 40000, B4.into(), 53, 2500));
    // Fragments for the router itself, in order: dropped at once as fragments, not held.
    let me: IpAddr = "10.9.0.2".parse().unwrap();
    let mine = udp_fragments(IpAddr::V4(B4), 4000, me, 9, 2500);
    assert_eq!(frames(&mut r, 1, &mine), vec![]);
    assert_eq!(r.drops().get(DropReason::Fragment), 2);
    assert_eq!(r.poll_at(), None, "nothing held");
    assert_eq!(r.drops().total(), 2, "{:?}", r.drops());
}
