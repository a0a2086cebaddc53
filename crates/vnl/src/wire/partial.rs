//! TCP and UDP checksums a sender left to an offload that never ran.
//!
//! Linux hands a segment to a device with its checksum "partial" (CHECKSUM_PARTIAL): the field
//! holds only the folded pseudo-header sum, and the NIC is to finish it. A kernel vxlan device
//! keeps that offload for the inner frame; over a real wire the NIC completes it, but when the
//! encapsulated datagram stays inside the host (a veth into another namespace) nothing does:
//! the receiving kernel trusts the skb's CHECKSUM_PARTIAL mark, which a user-space UDP socket
//! does not deliver. So the inner frames that reach a `vxlan://` plug carry checksums that
//! every receiver (a tap's kernel, smoltcp) rejects.
//!
//! [`complete`] finishes such checksums, as the NIC would have: a TCP or UDP checksum field
//! that equals the folded sum of its own pseudo-header is taken as partial and replaced with
//! the full checksum. A frame with any other checksum is left alone, for its receiver to
//! verify. What this gives up: a frame whose checksum field was *damaged into* exactly its
//! pseudo-header sum is accepted (about one damaged frame in 65536, as likely as damage the
//! checksum itself misses), and a partial frame damaged on the way is not caught by the inner
//! checksum, which was never computed — only by the outer UDP checksum, which the kernel
//! verifies before the datagram reaches the socket when the sender set one. Only the
//! VXLAN transports call this; frames from every other transport are passed on untouched.

use super::checksum::{fold, sum16};

const TCP: u8 = 6;
const UDP: u8 = 17;

/// Where an IP packet's TCP or UDP segment lies in a frame, and its pseudo-header sum.
struct Segment {
    start: usize,
    end: usize,
    /// Offset of the checksum field from `start`.
    field: usize,
    udp: bool,
    pseudo: u32,
}

/// The TCP or UDP segment of an Ethernet frame (optionally VLAN-tagged) carrying a whole,
/// unfragmented IPv4 packet or an IPv6 packet without extension headers.
fn segment(frame: &[u8]) -> Option<Segment> {
    let u16_at = |i: usize| Some(u16::from_be_bytes([*frame.get(i)?, *frame.get(i + 1)?]));
    let mut ip = 14;
    let mut ethertype = u16_at(12)?;
    if ethertype == 0x8100 {
        ip = 18;
        ethertype = u16_at(16)?;
    }
    let (start, end, proto, addrs) = match ethertype {
        0x0800 => {
            let ihl = usize::from(*frame.get(ip)? & 0x0f) * 4;
            let frag = u16_at(ip + 6)? & 0x3fff; // more-fragments flag and offset
            if *frame.get(ip)? >> 4 != 4 || ihl < 20 || frag != 0 {
                return None;
            }
            let end = ip + usize::from(u16_at(ip + 2)?);
            (ip + ihl, end, *frame.get(ip + 9)?, ip + 12..ip + 20)
        }
        0x86dd => {
            let end = ip + 40 + usize::from(u16_at(ip + 4)?);
            (ip + 40, end, *frame.get(ip + 6)?, ip + 8..ip + 40)
        }
        _ => return None,
    };
    let (field, min_len) = match proto {
        TCP => (16, 20),
        UDP => (6, 8),
        _ => return None,
    };
    if end > frame.len() || start + min_len > end {
        return None;
    }
    let len = (end - start) as u32;
    let pseudo = sum16(0, frame.get(addrs)?) + u32::from(proto) + (len >> 16) + (len & 0xffff);
    Some(Segment {
        start,
        end,
        field,
        udp: proto == UDP,
        pseudo,
    })
}

/// Completes `frame`'s TCP or UDP checksum in place when it was left partial (see the module
/// documentation); returns whether it did.
pub fn complete(frame: &mut [u8]) -> bool {
    let Some(s) = segment(frame) else {
        return false;
    };
    let at = s.start + s.field;
    let field = u16::from_be_bytes([frame[at], frame[at + 1]]);
    // What Linux leaves in the field: the pseudo-header sum, folded but not inverted.
    if field != !fold(s.pseudo) || (s.udp && field == 0) {
        return false;
    }
    // The field already holds the pseudo-header's share: the sum of the segment is the rest.
    let mut c = fold(sum16(0, &frame[s.start..s.end]));
    if s.udp && c == 0 {
        c = 0xffff; // 0 means "no checksum" for UDP
    }
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet frame with an IPv4 (or IPv6) packet of protocol `proto` whose segment is
    /// `seg` (checksum field zero), behind `pad` bytes of Ethernet padding.
    fn frame(v6: bool, proto: u8, seg: &[u8], pad: usize) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        if v6 {
            f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
            let mut ip = [0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&(seg.len() as u16).to_be_bytes());
            ip[6] = proto;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            ip[24..40].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            f.extend_from_slice(&ip);
        } else {
            f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&(20 + seg.len() as u16).to_be_bytes());
            ip[6] = 0x40; // don't fragment
            ip[8] = 64;
            ip[9] = proto;
            ip[12..16].copy_from_slice(&[10, 96, 0, 1]);
            ip[16..20].copy_from_slice(&[10, 96, 0, 3]);
            let c = fold(sum16(0, &ip));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&ip);
        }
        f.extend_from_slice(seg);
        f.resize(f.len() + pad, 0);
        f
    }

    fn tcp_segment(payload: usize) -> Vec<u8> {
        let mut s = vec![0u8; 20 + payload];
        s[0..4].copy_from_slice(&[0x1f, 0x90, 0xc3, 0x50]);
        s[12] = 5 << 4;
        s[13] = 0x18;
        for (i, b) in s[20..].iter_mut().enumerate() {
            *b = (i * 7 % 253) as u8;
        }
        s
    }

    /// Whether the segment's checksum verifies; also where it is.
    fn verifies(f: &[u8]) -> (bool, usize) {
        let s = segment(f).unwrap();
        (
            fold(sum16(s.pseudo, &f[s.start..s.end])) == 0,
            s.start + s.field,
        )
    }

    /// Writes what a Linux sender with checksum offload leaves in the field.
    fn make_partial(f: &mut [u8]) {
        let s = segment(f).unwrap();
        let p = !fold(s.pseudo);
        f[s.start + s.field..s.start + s.field + 2].copy_from_slice(&p.to_be_bytes());
    }

    /// Writes the full checksum.
    fn make_full(f: &mut [u8]) {
        let s = segment(f).unwrap();
        let c = fold(sum16(s.pseudo, &f[s.start..s.end]));
        f[s.start + s.field..s.start + s.field + 2].copy_from_slice(&c.to_be_bytes());
    }

    #[test]
    fn partial_tcp_and_udp_checksums_are_completed_over_ipv4_and_ipv6() {
        let mut udp = vec![0u8; 8 + 33];
        udp[0..4].copy_from_slice(&[0x00, 0x35, 0xd4, 0x31]);
        udp[4..6].copy_from_slice(&41u16.to_be_bytes());
        udp[8..].fill(0x5a);
        for v6 in [false, true] {
            for (proto, seg) in [
                (TCP, tcp_segment(1400)),
                (TCP, tcp_segment(0)),
                (UDP, udp.clone()),
            ] {
                // Ethernet padding behind a short packet is not part of the sum.
                let mut f = frame(v6, proto, &seg, 6);
                make_partial(&mut f);
                assert!(!verifies(&f).0);
                assert!(complete(&mut f), "v6={v6} proto={proto}");
                assert!(verifies(&f).0, "v6={v6} proto={proto}");
                // Done once: nothing more to do.
                let before = f.clone();
                assert!(!complete(&mut f));
                assert_eq!(f, before);
            }
        }
    }

    #[test]
    fn full_and_damaged_checksums_are_left_for_the_receiver_to_judge() {
        let mut f = frame(false, TCP, &tcp_segment(500), 0);
        make_full(&mut f);
        let good = f.clone();
        assert!(!complete(&mut f));
        assert_eq!(f, good);
        // A damaged byte: still wrong after complete(), so the receiver drops it.
        f[100] ^= 0x01;
        assert!(!complete(&mut f));
        assert!(!verifies(&f).0);
        // A damaged checksum field (not into the pseudo-header sum) stays wrong too.
        let mut f = good.clone();
        let at = verifies(&f).1;
        f[at] ^= 0x80;
        assert!(!complete(&mut f));
        assert!(!verifies(&f).0);
    }

    #[test]
    fn other_frames_are_not_touched_and_truncation_is_no_panic() {
        let tcp = tcp_segment(100);
        let mut ipv4 = frame(false, TCP, &tcp, 0);
        make_partial(&mut ipv4);
        // A fragment: its checksum covers bytes not in this frame.
        let mut frag = ipv4.clone();
        frag[20] |= 0x20;
        // ICMP, ARP, and a total length past the frame's end.
        let mut icmp = ipv4.clone();
        icmp[23] = 1;
        let mut arp = ipv4.clone();
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        let mut long = ipv4.clone();
        long[16..18].copy_from_slice(&2000u16.to_be_bytes());
        for mut f in [frag, icmp, arp, long] {
            let before = f.clone();
            assert!(!complete(&mut f));
            assert_eq!(f, before);
        }
        for n in 0..ipv4.len() {
            let mut cut = ipv4[..n].to_vec();
            assert!(!complete(&mut cut));
        }
        // Behind a VLAN tag it is found.
        let mut tagged = ipv4[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
        tagged.extend_from_slice(&ipv4[12..]);
        assert!(complete(&mut tagged));
        let untagged = [&tagged[..12], &tagged[16..]].concat();
        assert!(verifies(&untagged).0);
    }
}
