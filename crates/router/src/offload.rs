//! Super-frames through the router: a packet that came with a virtio-net header (a TCP
//! segment of up to 64 KiB, or a checksum left partial) is routed and translated as one
//! packet, and leaves as a super-frame on links that speak the header, or as ordinary
//! frames (segmented, checksums completed) on links that do not.
//!
//! With a partial checksum (`F_NEEDS_CSUM`), the TCP/UDP checksum field holds only the folded
//! sum of the pseudo-header, and whoever completes it sums the segment (ports included) on
//! top. So a translation that rewrites addresses and ports must change that field by the
//! change of the pseudo-header's addresses only: [`Offload::fix`] does that after the hooks,
//! whatever they wrote in the field.

use filo_vnl::wire::checksum::sum16;
use filo_vnl::wire::vnet::{self, Header};

/// Length of the Ethernet header in front of the IP packet of a super-frame (no VLAN tag:
/// the router neither takes nor sends tagged frames).
const ETH: usize = 14;

/// A packet's virtio-net header, with what the partial checksum needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Offload {
    pub hdr: Header,
    /// With `F_NEEDS_CSUM`: where the checksum field is in the IP packet, what it held and
    /// the folded sum of the source and destination addresses when the packet came in.
    partial: Option<(usize, u16, u16)>,
}

/// Ones-complement sum of two folded sums.
fn add(a: u16, b: u16) -> u16 {
    let s = u32::from(a) + u32::from(b);
    ((s & 0xffff) + (s >> 16)) as u16
}

/// Folded (not complemented) sum of the packet's source and destination addresses.
fn addr_sum(packet: &[u8]) -> u16 {
    let range = if packet.first().is_some_and(|b| b >> 4 == 6) {
        8..40
    } else {
        12..20
    };
    let mut s = sum16(0, packet.get(range).unwrap_or(&[]));
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]))
}

/// The IP header length and transport protocol of a whole (unfragmented) IP packet; IPv6
/// without extension headers.
fn transport(packet: &[u8]) -> Option<(usize, u8)> {
    match packet.first()? >> 4 {
        4 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            if ihl < 20 || u16_at(packet, 6)? & 0x3fff != 0 {
                return None;
            }
            Some((ihl, *packet.get(9)?))
        }
        6 => Some((40, *packet.get(6)?)),
        _ => None,
    }
}

impl Offload {
    /// The offload of IP `packet` (as sent in a frame after `hdr`), or None when `hdr` asks
    /// for something the router does not carry through as it is (the frame is then turned
    /// into ordinary frames at once, with [`vnet::finish`]).
    pub fn new(hdr: Header, packet: &[u8]) -> Option<Offload> {
        let (ihl, proto) = transport(packet)?;
        let v6 = packet[0] >> 4 == 6;
        match hdr.gso_type & !vnet::GSO_ECN {
            vnet::GSO_NONE => {}
            vnet::GSO_TCPV4 if !v6 && proto == 6 && hdr.gso_size > 0 => {}
            vnet::GSO_TCPV6 if v6 && proto == 6 && hdr.gso_size > 0 => {}
            _ => return None,
        }
        if hdr.gso_type != vnet::GSO_NONE {
            // The TCP header must be whole.
            let doff = usize::from(*packet.get(ihl + 12)? >> 4) * 4;
            if doff < 20 || ihl + doff > packet.len() {
                return None;
            }
        }
        let partial = if hdr.flags & vnet::F_NEEDS_CSUM != 0 {
            let field = match (proto, hdr.csum_offset) {
                (6, 16) | (17, 6) => ihl + usize::from(hdr.csum_offset),
                _ => return None,
            };
            if usize::from(hdr.csum_start) != ETH + ihl {
                return None;
            }
            Some((field, u16_at(packet, field)?, addr_sum(packet)))
        } else {
            None
        };
        Some(Offload { hdr, partial })
    }

    pub fn is_gso(&self) -> bool {
        self.hdr.gso_type & !vnet::GSO_ECN != vnet::GSO_NONE
    }

    /// The size of the largest IP packet this one stands for: a segment's for a GSO packet
    /// (as the kernel's `skb_gso_validate_network_len`), else its own.
    pub fn wire_len(&self, packet: &[u8]) -> usize {
        if !self.is_gso() {
            return packet.len();
        }
        let Some((ihl, _)) = transport(packet) else {
            return packet.len();
        };
        let doff = packet.get(ihl + 12).map_or(20, |b| usize::from(b >> 4) * 4);
        (ihl + doff + usize::from(self.hdr.gso_size)).min(packet.len())
    }

    /// After the hooks: the partial checksum field becomes the one it held plus the change
    /// of the addresses (NAT may have rewritten the field for a full checksum; that is
    /// undone, since the ports it also counted are summed when the checksum is completed).
    pub fn fix(&self, packet: &mut [u8]) {
        let Some((field, held, old)) = self.partial else {
            return;
        };
        let new = addr_sum(packet);
        let v = add(add(held, !old), new);
        if let Some(b) = packet.get_mut(field..field + 2) {
            b.copy_from_slice(&v.to_be_bytes());
        }
    }

    /// The ordinary IP packets this one stands for (segments with complete checksums), each
    /// with room for an Ethernet header in front; None if it cannot be segmented.
    pub fn plain(&self, packet: &[u8], scratch: &mut Vec<u8>) -> Option<Vec<Vec<u8>>> {
        let mut frame = Vec::with_capacity(ETH + packet.len());
        let ethertype: u16 = if packet[0] >> 4 == 6 { 0x86dd } else { 0x0800 };
        frame.extend_from_slice(&[0; 12]);
        frame.extend_from_slice(&ethertype.to_be_bytes());
        frame.extend_from_slice(packet);
        self.fix(&mut frame[ETH..]);
        let mut out = Vec::new();
        vnet::finish(&self.hdr, &frame, scratch, |seg| {
            out.push(crate::core::with_headroom(&seg[ETH..]))
        })
        .ok()?;
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use filo_vnl::wire::checksum::fold;

    /// An IPv4 TCP packet from 10.1.0.10:40000 to 10.2.0.10:5201 with `payload` bytes, its
    /// checksum partial (the pseudo-header sum, as Linux sends TSO segments).
    fn partial_tcp4(payload: usize) -> Vec<u8> {
        let mut p = vec![0u8; 40 + payload];
        p[0] = 0x45;
        let total = p.len() as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[10, 1, 0, 10]);
        p[16..20].copy_from_slice(&[10, 2, 0, 10]);
        let c = fold(sum16(0, &p[..20]));
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p[20..22].copy_from_slice(&40000u16.to_be_bytes());
        p[22..24].copy_from_slice(&5201u16.to_be_bytes());
        p[24..28].copy_from_slice(&7u32.to_be_bytes());
        p[32] = 5 << 4;
        p[33] = 0x18;
        for (i, b) in p[40..].iter_mut().enumerate() {
            *b = (i * 7 % 253) as u8;
        }
        let mut sum = sum16(0, &p[12..20]);
        sum += 6 + (20 + payload) as u32;
        let pseudo = !fold(sum);
        p[36..38].copy_from_slice(&pseudo.to_be_bytes());
        p
    }

    fn tso(mss: u16) -> Header {
        Header {
            flags: vnet::F_NEEDS_CSUM,
            gso_type: vnet::GSO_TCPV4,
            hdr_len: 54,
            gso_size: mss,
            csum_start: 34,
            csum_offset: 16,
        }
    }

    /// Whether an IPv4 TCP packet's checksum is right (summed from scratch).
    fn tcp_ok(p: &[u8]) -> bool {
        let mut sum = sum16(0, &p[12..20]);
        sum += 6 + (p.len() - 20) as u32;
        fold(sum16(sum, &p[20..])) == 0
    }

    /// Masquerade as a NAT does it, incrementally (RFC 1624) for a full checksum: source
    /// address and port rewritten, the TCP checksum field adjusted for both.
    fn masquerade(p: &mut [u8], addr: [u8; 4], port: u16) {
        let old: Vec<u8> = [&p[12..16], &p[20..22]].concat();
        p[12..16].copy_from_slice(&addr);
        p[20..22].copy_from_slice(&port.to_be_bytes());
        let new: Vec<u8> = [&p[12..16], &p[20..22]].concat();
        let c = u16::from_be_bytes([p[36], p[37]]);
        let s = sum16(
            sum16(u32::from(!c), &new),
            &old.iter().map(|b| !b).collect::<Vec<_>>(),
        );
        p[36..38].copy_from_slice(&fold(s).to_be_bytes());
        p[10..12].copy_from_slice(&[0, 0]);
        let ip = fold(sum16(0, &p[..20]));
        p[10..12].copy_from_slice(&ip.to_be_bytes());
    }

    #[test]
    fn a_translated_partial_checksum_completes_to_the_full_checksum_of_each_segment() {
        let original = partial_tcp4(20000);
        let hdr = tso(1448);
        let off = Offload::new(hdr, &original).unwrap();
        assert!(off.is_gso());
        assert_eq!(off.wire_len(&original), 1488);
        let mut p = original.clone();
        masquerade(&mut p, [192, 168, 9, 2], 61000);
        off.fix(&mut p);
        // The field is the pseudo-header sum of the new addresses, as the sender would have
        // written it for them.
        let mut sum = sum16(0, &p[12..20]);
        sum += 6 + (p.len() - 20) as u32;
        assert_eq!(u16::from_be_bytes([p[36], p[37]]), !fold(sum));
        // Completed as one packet (a receiver that takes super-frames) it is right...
        let mut frame = [&[0u8; 12][..], &[8, 0], &p].concat();
        vnet::complete(&hdr, &mut frame).unwrap();
        assert!(tcp_ok(&frame[14..]));
        // ...and so is each segment, compared with a checksum summed from scratch.
        let segs = off.plain(&p, &mut Vec::new()).unwrap();
        assert_eq!(segs.len(), 20000usize.div_ceil(1448));
        for s in &segs {
            assert!(s.len() <= 1488);
            assert!(tcp_ok(s));
            assert_eq!(&s[12..16], &[192, 168, 9, 2]);
            assert_eq!(&s[20..22], &61000u16.to_be_bytes());
        }
        // Without the fix, the NAT's adjustment (ports included) would be wrong.
        let mut wrong = original.clone();
        masquerade(&mut wrong, [192, 168, 9, 2], 61000);
        let mut frame = [&[0u8; 12][..], &[8, 0], &wrong].concat();
        vnet::complete(&hdr, &mut frame).unwrap();
        assert!(!tcp_ok(&frame[14..]));
    }

    #[test]
    fn headers_the_router_cannot_carry_are_refused() {
        let p = partial_tcp4(100);
        assert!(Offload::new(tso(1448), &p).is_some());
        let udp = Header {
            gso_type: vnet::GSO_UDP,
            ..tso(1448)
        };
        assert!(Offload::new(udp, &p).is_none());
        let v6_on_v4 = Header {
            gso_type: vnet::GSO_TCPV6,
            ..tso(1448)
        };
        assert!(Offload::new(v6_on_v4, &p).is_none());
        let odd_start = Header {
            csum_start: 40,
            ..tso(1448)
        };
        assert!(Offload::new(odd_start, &p).is_none());
        let no_mss = Header {
            gso_size: 0,
            ..tso(1448)
        };
        assert!(Offload::new(no_mss, &p).is_none());
        assert!(Offload::new(tso(1448), &p[..30]).is_none());
        let mut frag = p.clone();
        frag[6] = 0x20; // more fragments
        assert!(Offload::new(tso(1448), &frag).is_none());
    }
}
