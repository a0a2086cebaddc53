//! Fuzz filo-stack's TCP loss recovery: a sequence of packets (each a one-byte tag for the
//! direction or a timer tick, a one-byte length, then the bytes) goes through `Recovery`.
//! Nothing may panic, and whatever it resends must be a copy of a packet it was given,
//! trimmed: the same IP and TCP headers but for the lengths, sequence and acknowledgment
//! numbers, window, FIN and checksums; a payload that is the given one's bytes at the offset
//! its sequence number says; a FIN only where the given packet's ended; a valid TCP checksum.
#![no_main]

use filo_stack::recovery::Recovery;
use libfuzzer_sys::fuzz_target;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{IpAddress, Ipv4Packet, Ipv6Packet, TcpPacket};

fuzz_target!(|data: &[u8]| {
    let mut r = Recovery::new();
    let mut now = Instant::from_millis(1);
    let mut out = Vec::new();
    // Every packet given to on_output that parses as TCP: what a resend must be cut from.
    let mut given: Vec<Tcp> = Vec::new();
    let mut rest = data;
    while let [tag, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (packet, next) = tail.split_at(n);
        match tag % 3 {
            0 => {
                given.extend(Tcp::parse(packet));
                let _ = r.on_output(now, packet, &mut out);
            }
            1 => r.on_input(now, packet, &mut out),
            _ => {
                now += Duration::from_millis(u64::from(*len));
                r.on_timer(now, &mut out);
            }
        }
        for p in out.drain(..) {
            assert!(p.len() <= 65535 + 60);
            let Some(resent) = Tcp::parse(&p) else {
                panic!("resent packet is no IP packet carrying TCP: {p:02x?}");
            };
            assert!(
                resent.checksum_ok(&p),
                "resent packet with a bad TCP checksum: {p:02x?}"
            );
            assert!(
                given.iter().any(|g| resent.is_trimmed_copy_of(g)),
                "resent packet is no trimmed copy of a packet given to on_output: {p:02x?}"
            );
        }
        rest = next;
    }
});

/// The parts of an IP packet carrying TCP that a trimmed resend keeps or may change.
struct Tcp {
    /// The IP header with its length and checksum fields zeroed.
    ip_header: Vec<u8>,
    /// The TCP header with sequence and acknowledgment numbers, FIN, window and checksum
    /// zeroed.
    tcp_header: Vec<u8>,
    seq: u32,
    fin: bool,
    payload: Vec<u8>,
    src: IpAddress,
    dst: IpAddress,
}

impl Tcp {
    /// `packet` as far as its IP header says it goes, if it is IPv4 (unfragmented) or IPv6
    /// with TCP right behind the IP header.
    fn parse(packet: &[u8]) -> Option<Tcp> {
        let (ip_len, end, src, dst, zero): (usize, usize, IpAddress, IpAddress, &[usize]) =
            match packet.first()? >> 4 {
                4 => {
                    let ip = Ipv4Packet::new_checked(packet).ok()?;
                    if ip.next_header() != smoltcp::wire::IpProtocol::Tcp
                        || ip.more_frags()
                        || ip.frag_offset() != 0
                    {
                        return None;
                    }
                    (
                        usize::from(ip.header_len()),
                        usize::from(ip.total_len()),
                        ip.src_addr().into(),
                        ip.dst_addr().into(),
                        &[2, 3, 10, 11],
                    )
                }
                6 => {
                    let ip = Ipv6Packet::new_checked(packet).ok()?;
                    if ip.next_header() != smoltcp::wire::IpProtocol::Tcp {
                        return None;
                    }
                    (
                        40,
                        40 + usize::from(ip.payload_len()),
                        ip.src_addr().into(),
                        ip.dst_addr().into(),
                        &[4, 5],
                    )
                }
                _ => return None,
            };
        let packet = packet.get(..end)?;
        let tcp = TcpPacket::new_checked(packet.get(ip_len..)?).ok()?;
        let mut ip_header = packet[..ip_len].to_vec();
        for &i in zero {
            ip_header[i] = 0;
        }
        let data_at = usize::from(tcp.header_len());
        let mut tcp_header = packet[ip_len..ip_len + data_at].to_vec();
        // seq 4..8, ack 8..12, window 14..16, checksum 16..18; FIN is bit 0 of byte 13.
        for b in &mut tcp_header[4..12] {
            *b = 0;
        }
        for b in &mut tcp_header[14..18] {
            *b = 0;
        }
        tcp_header[13] &= !0x01;
        Some(Tcp {
            ip_header,
            tcp_header,
            seq: tcp.seq_number().0 as u32,
            fin: tcp.fin(),
            payload: tcp.payload().to_vec(),
            src,
            dst,
        })
    }

    /// Whether the whole IP packet `p` (which parsed as `self`) has a correct TCP checksum.
    fn checksum_ok(&self, p: &[u8]) -> bool {
        let at = self.ip_header.len();
        TcpPacket::new_unchecked(&p[at..]).verify_checksum(&self.src, &self.dst)
    }

    /// Whether `self` is `given` cut down to a part of its sequence range.
    fn is_trimmed_copy_of(&self, given: &Tcp) -> bool {
        if self.ip_header != given.ip_header || self.tcp_header != given.tcp_header {
            return false;
        }
        let offset = self.seq.wrapping_sub(given.seq) as usize;
        let Some(end) = offset.checked_add(self.payload.len()) else {
            return false;
        };
        if given.payload.get(offset..end) != Some(&self.payload[..]) {
            return false;
        }
        !self.fin || (given.fin && end == given.payload.len())
    }
}
