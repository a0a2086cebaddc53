//! ICMP messages the router writes: errors about a packet it could not deliver (RFC 792,
//! RFC 1812 §4.3.2, RFC 4443 §2.4) and echo replies, as whole IP packets.

use std::net::{Ipv4Addr, Ipv6Addr};

use smoltcp::wire::{
    Icmpv4Message, Icmpv4Packet, Icmpv6Message, Icmpv6Packet, IpProtocol, Ipv4Packet, Ipv4Repr,
    Ipv6Packet, Ipv6Repr,
};

/// An IPv4 ICMP error quotes the offending header and this much of its payload at most, so
/// the error fits in 576 bytes (RFC 1812 §4.3.2.3).
const V4_QUOTE: usize = 576 - 20 - 8;
/// An ICMPv6 error fits in the minimum MTU (RFC 4443 §2.4 (c)).
const V6_QUOTE: usize = 1280 - 40 - 8;

/// An IPv4 error: type, code, the 4 bytes after the checksum (the next-hop MTU for
/// "fragmentation needed"), quoting `original`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V4Error {
    pub msg: Icmpv4Message,
    pub code: u8,
    pub rest: [u8; 4],
}

impl V4Error {
    pub const TTL_EXCEEDED: V4Error = V4Error {
        msg: Icmpv4Message::TimeExceeded,
        code: 0,
        rest: [0; 4],
    };
    pub const NET_UNREACHABLE: V4Error = V4Error {
        msg: Icmpv4Message::DstUnreachable,
        code: 0,
        rest: [0; 4],
    };
    pub const HOST_UNREACHABLE: V4Error = V4Error {
        msg: Icmpv4Message::DstUnreachable,
        code: 1,
        rest: [0; 4],
    };
    pub const PORT_UNREACHABLE: V4Error = V4Error {
        msg: Icmpv4Message::DstUnreachable,
        code: 3,
        rest: [0; 4],
    };

    pub const ADMIN_PROHIBITED: V4Error = V4Error {
        msg: Icmpv4Message::DstUnreachable,
        code: 13,
        rest: [0; 4],
    };

    pub fn frag_needed(mtu: u16) -> V4Error {
        let m = mtu.to_be_bytes();
        V4Error {
            msg: Icmpv4Message::DstUnreachable,
            code: 4,
            rest: [0, 0, m[0], m[1]],
        }
    }
}

fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, proto: IpProtocol, payload: &[u8]) -> Vec<u8> {
    let repr = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: proto,
        payload_len: payload.len(),
        hop_limit: 64,
    };
    let mut out = vec![0; 20 + payload.len()];
    let mut p = Ipv4Packet::new_unchecked(&mut out[..]);
    repr.emit(&mut p, &smoltcp::phy::ChecksumCapabilities::default());
    p.payload_mut().copy_from_slice(payload);
    out
}

/// Whether an IPv4 packet may be answered with an error (RFC 1812 §4.3.2.7): not an ICMP
/// error itself, not a later fragment, not from or to a broadcast/multicast/unspecified
/// address.
pub fn v4_may_answer(p: &Ipv4Packet<&[u8]>) -> bool {
    let (src, dst) = (p.src_addr(), p.dst_addr());
    if src.is_unspecified() || src.is_broadcast() || src.is_multicast() || src.is_loopback() {
        return false;
    }
    if dst.is_broadcast() || dst.is_multicast() || p.frag_offset() != 0 {
        return false;
    }
    if p.next_header() == IpProtocol::Icmp {
        let t = p.payload().first().copied().unwrap_or(3);
        // Only queries (echo, timestamp, ...) may be answered with errors.
        return matches!(t, 0 | 8 | 13 | 14);
    }
    true
}

/// The ICMP error `e` from `src` about IPv4 packet `original` (header and payload), sent back
/// to its source.
pub fn v4_error(src: Ipv4Addr, original: &Ipv4Packet<&[u8]>, e: V4Error) -> Vec<u8> {
    let bytes: &[u8] = original.as_ref();
    let hl = usize::from(original.header_len());
    let quote = &bytes[..bytes.len().min(hl + V4_QUOTE.saturating_sub(hl))];
    let mut msg = vec![0; 8 + quote.len()];
    msg[4..8].copy_from_slice(&e.rest);
    msg[8..].copy_from_slice(quote);
    let mut p = Icmpv4Packet::new_unchecked(&mut msg[..]);
    p.set_msg_type(e.msg);
    p.set_msg_code(e.code);
    p.fill_checksum();
    ipv4_packet(src, original.src_addr(), IpProtocol::Icmp, &msg)
}

/// The echo reply from `src` to echo request `request` (an ICMP message) from `dst`.
pub fn v4_echo_reply(src: Ipv4Addr, dst: Ipv4Addr, request: &[u8]) -> Vec<u8> {
    let mut msg = request.to_vec();
    let mut p = Icmpv4Packet::new_unchecked(&mut msg[..]);
    p.set_msg_type(Icmpv4Message::EchoReply);
    p.set_msg_code(0);
    p.fill_checksum();
    ipv4_packet(src, dst, IpProtocol::Icmp, &msg)
}

/// An ICMPv6 error: type, code, the 4 bytes after the checksum (the MTU for packet too big).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V6Error {
    pub msg: Icmpv6Message,
    pub code: u8,
    pub rest: [u8; 4],
}

impl V6Error {
    pub const HOP_LIMIT_EXCEEDED: V6Error = V6Error {
        msg: Icmpv6Message::TimeExceeded,
        code: 0,
        rest: [0; 4],
    };
    pub const NO_ROUTE: V6Error = V6Error {
        msg: Icmpv6Message::DstUnreachable,
        code: 0,
        rest: [0; 4],
    };
    pub const ADDR_UNREACHABLE: V6Error = V6Error {
        msg: Icmpv6Message::DstUnreachable,
        code: 3,
        rest: [0; 4],
    };
    pub const PORT_UNREACHABLE: V6Error = V6Error {
        msg: Icmpv6Message::DstUnreachable,
        code: 4,
        rest: [0; 4],
    };

    pub const ADMIN_PROHIBITED: V6Error = V6Error {
        msg: Icmpv6Message::DstUnreachable,
        code: 1,
        rest: [0; 4],
    };

    pub fn too_big(mtu: u32) -> V6Error {
        V6Error {
            msg: Icmpv6Message::PktTooBig,
            code: 0,
            rest: mtu.to_be_bytes(),
        }
    }
}

/// Builds an IPv6 packet around an ICMPv6 message, filling its checksum.
pub fn ipv6_icmp(src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8, mut msg: Vec<u8>) -> Vec<u8> {
    let mut p = Icmpv6Packet::new_unchecked(&mut msg[..]);
    p.fill_checksum(&src, &dst);
    let repr = Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Icmpv6,
        payload_len: msg.len(),
        hop_limit,
    };
    let mut out = vec![0; 40 + msg.len()];
    let mut ip = Ipv6Packet::new_unchecked(&mut out[..]);
    repr.emit(&mut ip);
    ip.payload_mut().copy_from_slice(&msg);
    out
}

/// Whether an IPv6 packet may be answered with an error (RFC 4443 §2.4 (e)).
pub fn v6_may_answer(p: &Ipv6Packet<&[u8]>) -> bool {
    let (src, dst) = (p.src_addr(), p.dst_addr());
    if src.is_unspecified() || src.is_multicast() || src.is_loopback() || dst.is_multicast() {
        return false;
    }
    if p.next_header() == IpProtocol::Icmpv6 {
        // Errors have types below 128.
        return p.payload().first().is_some_and(|&t| t >= 128);
    }
    true
}

/// The ICMPv6 error `e` from `src` about IPv6 packet `original`, back to its source.
pub fn v6_error(src: Ipv6Addr, original: &Ipv6Packet<&[u8]>, e: V6Error) -> Vec<u8> {
    let bytes: &[u8] = original.as_ref();
    let quote = &bytes[..bytes.len().min(V6_QUOTE)];
    let mut msg = vec![0; 8 + quote.len()];
    msg[0] = e.msg.into();
    msg[1] = e.code;
    msg[4..8].copy_from_slice(&e.rest);
    msg[8..].copy_from_slice(quote);
    ipv6_icmp(src, original.src_addr(), 64, msg)
}

/// The echo reply from `src` to `dst` for echo request `request` (an ICMPv6 message).
pub fn v6_echo_reply(src: Ipv6Addr, dst: Ipv6Addr, request: &[u8]) -> Vec<u8> {
    let mut msg = request.to_vec();
    msg[0] = Icmpv6Message::EchoReply.into();
    msg[1] = 0;
    ipv6_icmp(src, dst, 64, msg)
}

/// The TCP reset answering TCP segment `packet` (IPv4 or IPv6, RFC 9293 §3.10.7.1), and where
/// it goes; None if `packet` is not TCP or is itself a reset.
pub fn tcp_reset(packet: &[u8]) -> Option<(Vec<u8>, std::net::IpAddr)> {
    use smoltcp::wire::{IpAddress, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber};
    let (src, dst, seg): (IpAddress, IpAddress, &[u8]) = match packet.first()? >> 4 {
        4 => {
            let p = Ipv4Packet::new_checked(packet).ok()?;
            if p.next_header() != IpProtocol::Tcp || p.frag_offset() != 0 {
                return None;
            }
            let hl = usize::from(p.header_len());
            let end = usize::from(p.total_len());
            (
                p.src_addr().into(),
                p.dst_addr().into(),
                packet.get(hl..end)?,
            )
        }
        6 => {
            let p = Ipv6Packet::new_checked(packet).ok()?;
            if p.next_header() != IpProtocol::Tcp {
                return None;
            }
            (p.src_addr().into(), p.dst_addr().into(), p.payload())
        }
        _ => return None,
    };
    let t = TcpPacket::new_checked(seg).ok()?;
    if t.rst() {
        return None;
    }
    let len = t.payload().len() + usize::from(t.syn()) + usize::from(t.fin());
    let (seq, ack) = if t.ack() {
        (t.ack_number(), None)
    } else {
        (TcpSeqNumber(0), Some(t.seq_number() + len))
    };
    let repr = TcpRepr {
        src_port: t.dst_port(),
        dst_port: t.src_port(),
        control: TcpControl::Rst,
        seq_number: seq,
        ack_number: ack,
        window_len: 0,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    };
    let mut seg = vec![0; repr.buffer_len()];
    repr.emit(
        &mut TcpPacket::new_unchecked(&mut seg[..]),
        &dst,
        &src,
        &smoltcp::phy::ChecksumCapabilities::default(),
    );
    match (dst, src) {
        (IpAddress::Ipv4(from), IpAddress::Ipv4(to)) => {
            Some((ipv4_packet(from, to, IpProtocol::Tcp, &seg), to.into()))
        }
        (IpAddress::Ipv6(from), IpAddress::Ipv6(to)) => {
            let repr = Ipv6Repr {
                src_addr: from,
                dst_addr: to,
                next_header: IpProtocol::Tcp,
                payload_len: seg.len(),
                hop_limit: 64,
            };
            let mut out = vec![0; 40 + seg.len()];
            let mut ip = Ipv6Packet::new_unchecked(&mut out[..]);
            repr.emit(&mut ip);
            ip.payload_mut().copy_from_slice(&seg);
            Some((out, to.into()))
        }
        _ => None,
    }
}
