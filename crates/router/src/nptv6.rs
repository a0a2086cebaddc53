//! NPTv6 (RFC 6296): stateless, checksum-neutral IPv6 prefix translation as a [`Hook`] on an
//! outgoing interface. At POSTROUTING the source of a packet leaving there inside the
//! internal prefix gets the external prefix; at PREROUTING the destination of a packet
//! arriving there inside the external prefix gets the internal one back. One 16-bit word
//! below the prefix is adjusted so the one's-complement sum of the address is unchanged
//! (§3.2), hence no transport checksum changes: for prefixes of /48 or shorter the subnet
//! word (bits 48-63), for longer ones the first interface-identifier word that is not
//! 0xFFFF (§3.5); an address whose identifier words are all 0xFFFF cannot be translated and
//! is dropped and counted. The headers quoted in ICMPv6 errors are translated too (the
//! quoted destination going out, the quoted source coming in).

use std::net::Ipv6Addr;
use std::time::Instant;

use crate::core::{Hook, HookPoint, HookVerdict, IfId, PacketMeta};

/// One prefix pair: `internal`/`len` ↔ `external`/`len`, `len` at most 64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub iface: IfId,
    pub internal: Ipv6Addr,
    pub external: Ipv6Addr,
    pub len: u8,
}

impl Config {
    /// Parses `INTERNAL/LEN=EXTERNAL/LEN`, e.g. `fd01::/64=2001:db8:1::/64`.
    pub fn parse(iface: IfId, text: &str) -> Result<Config, String> {
        let err = |what: String| {
            format!("{text:?}: {what} (expected INTERNAL/LEN=EXTERNAL/LEN, e.g. fd01::/64=2001:db8:1::/64)")
        };
        let (a, b) = text.split_once('=').ok_or_else(|| err("no '='".into()))?;
        let prefix = |p: &str| -> Result<(Ipv6Addr, u8), String> {
            let (addr, len) = p
                .split_once('/')
                .ok_or_else(|| err(format!("{p:?} has no /LEN")))?;
            let addr: Ipv6Addr = addr
                .parse()
                .map_err(|_| err(format!("{addr:?} is not an IPv6 address")))?;
            let len: u8 = len
                .parse()
                .ok()
                .filter(|l| (1..=64).contains(l))
                .ok_or_else(|| err(format!("prefix length {len:?}: expected 1-64")))?;
            Ok((mask(addr, len), len))
        };
        let (internal, l1) = prefix(a)?;
        let (external, l2) = prefix(b)?;
        if l1 != l2 {
            return Err(err(format!("lengths /{l1} and /{l2} differ")));
        }
        Ok(Config {
            iface,
            internal,
            external,
            len: l1,
        })
    }
}

fn mask(addr: Ipv6Addr, len: u8) -> Ipv6Addr {
    let bits = u128::from(addr);
    let m = if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    };
    Ipv6Addr::from(bits & m)
}

fn in_prefix(addr: &[u8], prefix: Ipv6Addr, len: u8) -> bool {
    let a = u128::from_be_bytes(addr.try_into().unwrap_or([0; 16]));
    mask(Ipv6Addr::from(a), len) == prefix
}

fn ones_sum(words: impl Iterator<Item = u16>) -> u16 {
    let mut s: u32 = 0;
    for w in words {
        s += u32::from(w);
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

fn words(a: &[u8; 16]) -> impl Iterator<Item = u16> + '_ {
    a.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]]))
}

/// `addr` with its first `len` bits from `to`, checksum-neutral; None if no word can take
/// the adjustment.
pub fn translate(addr: [u8; 16], to: Ipv6Addr, len: u8) -> Option<[u8; 16]> {
    let m = u128::MAX << (128 - u32::from(len));
    let old = u128::from_be_bytes(addr);
    let mut new = ((u128::from(to) & m) | (old & !m)).to_be_bytes();
    let diff = ones_sum([ones_sum(words(&addr)), !ones_sum(words(&new))].into_iter());
    let at = if len <= 48 {
        3
    } else {
        (4..8).find(|&w| u16::from_be_bytes([new[2 * w], new[2 * w + 1]]) != 0xffff)?
    };
    let w = u16::from_be_bytes([new[2 * at], new[2 * at + 1]]);
    let mut v = ones_sum([w, diff].into_iter());
    if v == 0xffff {
        v = 0;
    }
    new[2 * at..2 * at + 2].copy_from_slice(&v.to_be_bytes());
    Some(new)
}

pub struct Nptv6 {
    config: Config,
    translated: u64,
    untranslatable: u64,
}

impl Nptv6 {
    pub fn new(config: Config) -> Nptv6 {
        Nptv6 {
            config,
            translated: 0,
            untranslatable: 0,
        }
    }

    /// Rewrites the address at `at` from prefix `from` to `to`, if it is in `from`.
    fn rewrite(
        &mut self,
        packet: &mut [u8],
        at: usize,
        from: Ipv6Addr,
        to: Ipv6Addr,
    ) -> HookVerdict {
        let Some(a) = packet.get(at..at + 16) else {
            return HookVerdict::Accept;
        };
        if !in_prefix(a, from, self.config.len) {
            return HookVerdict::Accept;
        }
        let addr: [u8; 16] = a.try_into().unwrap_or([0; 16]);
        match translate(addr, to, self.config.len) {
            Some(new) => {
                packet[at..at + 16].copy_from_slice(&new);
                self.translated += 1;
                HookVerdict::Accept
            }
            None => {
                self.untranslatable += 1;
                HookVerdict::Drop
            }
        }
    }
}

impl Hook for Nptv6 {
    fn hook(
        &mut self,
        _now: Instant,
        point: HookPoint,
        meta: &PacketMeta,
        packet: &mut Vec<u8>,
    ) -> HookVerdict {
        if packet.len() < 40 || packet[0] >> 4 != 6 {
            return HookVerdict::Accept;
        }
        let c = self.config;
        // An ICMPv6 error (no extension headers) quotes the packet it is about at 48.
        let error = packet[6] == 58 && matches!(packet.get(40), Some(1..=4));
        let (at, from, to) = match point {
            HookPoint::Postrouting if meta.out_iface == Some(c.iface) => {
                (8, c.internal, c.external)
            }
            HookPoint::Prerouting if meta.in_iface == Some(c.iface) => (24, c.external, c.internal),
            _ => return HookVerdict::Accept,
        };
        let verdict = self.rewrite(packet, at, from, to);
        if verdict == HookVerdict::Accept && error && packet.len() >= 48 + 40 {
            // The quote's other end: its destination going out, its source coming in. The
            // translation is checksum-neutral, so the ICMPv6 checksum stays right.
            let quoted = if at == 8 { 48 + 24 } else { 48 + 8 };
            return self.rewrite(packet, quoted, from, to);
        }
        verdict
    }

    fn name(&self) -> &'static str {
        "nat"
    }

    fn print(&self, _now: Instant) -> Vec<String> {
        let c = self.config;
        vec![format!(
            "nptv6 vde{} {}/{} = {}/{} translated {} untranslatable {}",
            c.iface, c.internal, c.len, c.external, c.len, self.translated, self.untranslatable
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::{IpAddress, IpProtocol, Ipv6Packet, Ipv6Repr, UdpPacket};

    fn addr(s: &str) -> [u8; 16] {
        s.parse::<Ipv6Addr>().unwrap().octets()
    }

    #[test]
    fn rfc6296_example_translation_is_checksum_neutral_and_reversible() {
        // RFC 6296 appendix B's example: FD01:0203:0405:/48 ↔ 2001:0DB8:0001:/48.
        let inside = addr("fd01:203:405:1::1234");
        let out = translate(inside, "2001:db8:1::".parse().unwrap(), 48).unwrap();
        assert_eq!(
            Ipv6Addr::from(out),
            "2001:db8:1:d550::1234".parse::<Ipv6Addr>().unwrap()
        );
        let back = translate(out, "fd01:203:405::".parse().unwrap(), 48).unwrap();
        assert_eq!(back, inside);
        // A /64: the adjustment goes into the interface identifier.
        let a = addr("fd01::10");
        let b = translate(a, "2001:db8:1::".parse().unwrap(), 64).unwrap();
        assert_eq!(ones_sum(words(&a)), ones_sum(words(&b)));
        assert_eq!(translate(b, "fd01::".parse().unwrap(), 64).unwrap(), a);
        // All-ones identifiers cannot take it.
        assert!(translate(
            addr("fd01::ffff:ffff:ffff:ffff"),
            "2001:db8:1::".parse().unwrap(),
            64
        )
        .is_none());
    }

    #[test]
    fn udp_checksums_stay_valid_both_ways() {
        let c = Config::parse(1, "fd01::/64=2001:db8:1::/64").unwrap();
        let mut n = Nptv6::new(c);
        let (src, dst): (Ipv6Addr, Ipv6Addr) =
            ("fd01::10".parse().unwrap(), "fd72::10".parse().unwrap());
        let repr = Ipv6Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Udp,
            payload_len: 12,
            hop_limit: 64,
        };
        let mut p = vec![0u8; 52];
        repr.emit(&mut Ipv6Packet::new_unchecked(&mut p[..]));
        let mut u = UdpPacket::new_unchecked(&mut p[40..]);
        u.set_src_port(1000);
        u.set_dst_port(53);
        u.set_len(12);
        u.payload_mut().copy_from_slice(b"data");
        u.fill_checksum(&IpAddress::Ipv6(src), &IpAddress::Ipv6(dst));
        let out = PacketMeta {
            in_iface: Some(0),
            out_iface: Some(1),
        };
        assert_eq!(
            n.hook(Instant::now(), HookPoint::Postrouting, &out, &mut p),
            HookVerdict::Accept
        );
        let ip = Ipv6Packet::new_checked(&p[..]).unwrap();
        let new_src = ip.src_addr();
        assert!(
            in_prefix(&new_src.octets(), "2001:db8:1::".parse().unwrap(), 64),
            "{new_src}"
        );
        let u = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(u.verify_checksum(&IpAddress::Ipv6(new_src), &IpAddress::Ipv6(dst)));
        // The reply comes back to the inside address.
        let mut r = p.clone();
        r[8..24].copy_from_slice(&dst.octets());
        r[24..40].copy_from_slice(&new_src.octets());
        let inb = PacketMeta {
            in_iface: Some(1),
            out_iface: None,
        };
        n.hook(Instant::now(), HookPoint::Prerouting, &inb, &mut r);
        assert_eq!(Ipv6Packet::new_checked(&r[..]).unwrap().dst_addr(), src);
        assert!(n.print(Instant::now())[0].contains("translated 2"));
        for bad in [
            "fd01::/64",
            "fd01::/64=2001:db8::/48",
            "fd01::/80=2001:db8::/80",
            "x/64=fd02::/64",
        ] {
            assert!(Config::parse(1, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn icmpv6_errors_have_their_quoted_header_translated_with_valid_checksums() {
        let c = Config::parse(1, "fd01::/64=2001:db8:1::/64").unwrap();
        let mut n = Nptv6::new(c);
        let inside: Ipv6Addr = "fd01::10".parse().unwrap();
        let outside = Ipv6Addr::from(translate(inside.octets(), c.external, 64).unwrap());
        let (remote, far): (Ipv6Addr, Ipv6Addr) =
            ("fd72::10".parse().unwrap(), "fd72::1".parse().unwrap());
        let sent = filo_dhcp::v6::udp6(outside, remote, 1000, 53, b"data");
        let mut err = crate::icmp::v6_error(
            far,
            &Ipv6Packet::new_checked(&sent[..]).unwrap(),
            crate::icmp::V6Error::HOP_LIMIT_EXCEEDED,
        );
        let inb = PacketMeta {
            in_iface: Some(1),
            out_iface: None,
        };
        n.hook(Instant::now(), HookPoint::Prerouting, &inb, &mut err);
        let ip = Ipv6Packet::new_checked(&err[..]).unwrap();
        assert_eq!(ip.dst_addr(), inside);
        let icmp = smoltcp::wire::Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum(&far, &inside));
        let quoted = Ipv6Packet::new_checked(&ip.payload()[8..]).unwrap();
        assert_eq!((quoted.src_addr(), quoted.dst_addr()), (inside, remote));
        // The inside host's port unreachable about a packet to it leaves quoting the outside
        // address.
        let got = filo_dhcp::v6::udp6(remote, inside, 53, 1000, b"data");
        let mut err = crate::icmp::v6_error(
            inside,
            &Ipv6Packet::new_checked(&got[..]).unwrap(),
            crate::icmp::V6Error::PORT_UNREACHABLE,
        );
        let out = PacketMeta {
            in_iface: Some(0),
            out_iface: Some(1),
        };
        n.hook(Instant::now(), HookPoint::Postrouting, &out, &mut err);
        let ip = Ipv6Packet::new_checked(&err[..]).unwrap();
        assert_eq!(ip.src_addr(), outside);
        let icmp = smoltcp::wire::Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum(&outside, &remote));
        let quoted = Ipv6Packet::new_checked(&ip.payload()[8..]).unwrap();
        assert_eq!(quoted.dst_addr(), outside);
    }
}
