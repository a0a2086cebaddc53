//! Builders (and a few helpers) for the link-layer formats filo's stack handles itself:
//! Ethernet II, ARP (RFC 826) and the ICMPv6 neighbour-discovery messages (RFC 4861) it needs
//! (NS, NA, RS, RA). Received frames are parsed at the edge with smoltcp's typed views
//! (Ethernet, ARP, IPv4, IPv6: see [`crate::net`]); the neighbour-discovery parser stays here
//! because smoltcp's `NdiscRepr` keeps only one prefix option of a router advertisement.
//! Parsers return `None` for malformed input; builders write into caller buffers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use filo_vnl::wire::checksum::internet_checksum;
use filo_vnl::wire::checksum::{fold, sum16};

pub const ETH_HDR: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const BROADCAST: [u8; 6] = [0xff; 6];

pub type Mac = [u8; 6];

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn mac_to_string(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff` (or with `-`): the iothconf parser's.
pub use filo_vnl::iothconf::parse_mac;

pub fn is_multicast_mac(mac: &[u8]) -> bool {
    mac[0] & 1 == 1
}

/// Writes an Ethernet header into `buf[..14]`.
pub fn write_eth(buf: &mut [u8], dst: Mac, src: Mac, ethertype: u16) {
    buf[0..6].copy_from_slice(&dst);
    buf[6..12].copy_from_slice(&src);
    buf[12..14].copy_from_slice(&ethertype.to_be_bytes());
}

/// The Ethernet destination of an IP multicast/broadcast address, if it is one.
pub fn multicast_mac(ip: &IpAddr) -> Option<Mac> {
    match ip {
        IpAddr::V4(a) if a.is_broadcast() => Some(BROADCAST),
        IpAddr::V4(a) if a.is_multicast() => {
            let o = a.octets();
            Some([0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]])
        }
        IpAddr::V6(a) if a.is_multicast() => {
            let o = a.octets();
            Some([0x33, 0x33, o[12], o[13], o[14], o[15]])
        }
        _ => None,
    }
}

/// An ARP packet for IPv4 over Ethernet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    pub op: u16,
    pub sha: Mac,
    pub spa: Ipv4Addr,
    pub tha: Mac,
    pub tpa: Ipv4Addr,
}

pub const ARP_LEN: usize = 28;

impl Arp {
    pub fn parse(b: &[u8]) -> Option<Arp> {
        if b.len() < ARP_LEN || b[0..2] != [0, 1] || b[2..4] != [8, 0] || b[4] != 6 || b[5] != 4 {
            return None;
        }
        let op = u16::from_be_bytes([b[6], b[7]]);
        if op != 1 && op != 2 {
            return None;
        }
        let mut sha = [0; 6];
        sha.copy_from_slice(&b[8..14]);
        let mut tha = [0; 6];
        tha.copy_from_slice(&b[18..24]);
        Some(Arp {
            op,
            sha,
            spa: Ipv4Addr::new(b[14], b[15], b[16], b[17]),
            tha,
            tpa: Ipv4Addr::new(b[24], b[25], b[26], b[27]),
        })
    }

    pub fn write(&self, b: &mut [u8]) {
        b[0..6].copy_from_slice(&[0, 1, 8, 0, 6, 4]);
        b[6..8].copy_from_slice(&self.op.to_be_bytes());
        b[8..14].copy_from_slice(&self.sha);
        b[14..18].copy_from_slice(&self.spa.octets());
        b[18..24].copy_from_slice(&self.tha);
        b[24..28].copy_from_slice(&self.tpa.octets());
    }
}

/// IPv4 packet length checks and fragmentation, shared with filo-router.
pub use filo_vnl::wire::ipv4::fragment as fragment_ipv4;

/// True for an IPv4 or IPv6 packet carrying TCP directly.
pub fn is_tcp(p: &[u8]) -> bool {
    match p.first().map(|b| b >> 4) {
        Some(4) => p.len() >= 20 && p[9] == 6,
        Some(6) => p.len() >= 40 && p[6] == 6,
        _ => false,
    }
}

/// Destination address of an IP packet whose header was checked.
pub fn ip_dst(p: &[u8]) -> Option<IpAddr> {
    ip_addr_at(p, 16, 24)
}

/// Source address of an IP packet whose header was checked.
pub fn ip_src(p: &[u8]) -> Option<IpAddr> {
    ip_addr_at(p, 12, 8)
}

/// The IPv4 address at byte `v4` or the IPv6 address at byte `v6` of the header, by version.
fn ip_addr_at(p: &[u8], v4: usize, v6: usize) -> Option<IpAddr> {
    match p.first()? >> 4 {
        4 if p.len() >= 20 => Some(IpAddr::V4(Ipv4Addr::new(
            p[v4],
            p[v4 + 1],
            p[v4 + 2],
            p[v4 + 3],
        ))),
        6 if p.len() >= 40 => {
            let o: [u8; 16] = p[v6..v6 + 16].try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(o)))
        }
        _ => None,
    }
}

/// ICMPv6 checksum over the pseudo-header and `msg` (whose checksum field must be zero).
pub fn icmpv6_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, msg: &[u8]) -> u16 {
    let mut acc = sum16(0, &src.octets());
    acc = sum16(acc, &dst.octets());
    acc += msg.len() as u32;
    acc += 58;
    fold(sum16(acc, msg))
}

/// Solicited-node multicast address of `a` (ff02::1:ffXX:XXXX).
pub fn solicited_node(a: &Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// Link-local addresses and EUI-64 identifiers, shared with filo-dhcp's router advertiser.
pub use filo_dhcp::ra::{eui64, link_local};

/// Builds an Ethernet+IPv6+ICMPv6 frame into `out` (cleared first) with hop limit 255.
pub fn ndp_frame(
    out: &mut Vec<u8>,
    eth_dst: Mac,
    eth_src: Mac,
    src: &Ipv6Addr,
    dst: &Ipv6Addr,
    icmp: &[u8],
) {
    out.clear();
    out.resize(ETH_HDR + 40 + icmp.len(), 0);
    write_eth(out, eth_dst, eth_src, ETHERTYPE_IPV6);
    let ip = &mut out[ETH_HDR..];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&(icmp.len() as u16).to_be_bytes());
    ip[6] = 58;
    ip[7] = 255;
    ip[8..24].copy_from_slice(&src.octets());
    ip[24..40].copy_from_slice(&dst.octets());
    ip[40..].copy_from_slice(icmp);
    let ck = icmpv6_checksum(src, dst, &ip[40..]);
    ip[42..44].copy_from_slice(&ck.to_be_bytes());
}

/// An ICMPv6 neighbour solicitation (135) or advertisement (136) body.
pub fn nd_message(ty: u8, flags: u8, target: &Ipv6Addr, opt_type: u8, mac: &Mac) -> [u8; 32] {
    let mut m = [0u8; 32];
    m[0] = ty;
    m[4] = flags;
    m[8..24].copy_from_slice(&target.octets());
    m[24] = opt_type;
    m[25] = 1;
    m[26..32].copy_from_slice(mac);
    m
}

/// A router solicitation body with a source link-layer address option.
pub fn rs_message(mac: &Mac) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[0] = 133;
    m[8] = 1;
    m[9] = 1;
    m[10..16].copy_from_slice(mac);
    m
}

/// The neighbour-discovery messages filo's layer consumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nd {
    Solicit { target: Ipv6Addr, lla: Option<Mac> },
    Advert { target: Ipv6Addr, lla: Option<Mac> },
    RouterAdvert(RouterAdvert),
}

/// What a router advertisement says that SLAAC uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouterAdvert {
    pub router_lifetime: u16,
    pub lla: Option<Mac>,
    pub mtu: Option<u32>,
    /// Autonomous prefixes: (prefix, length, valid lifetime s, preferred lifetime s).
    pub prefixes: Vec<(Ipv6Addr, u8, u32, u32)>,
}

fn nd_options(mut o: &[u8], mut each: impl FnMut(u8, &[u8])) -> Option<()> {
    while !o.is_empty() {
        if o.len() < 8 {
            return None;
        }
        let len = usize::from(o[1]) * 8;
        if len == 0 || len > o.len() {
            return None;
        }
        each(o[0], &o[..len]);
        o = &o[len..];
    }
    Some(())
}

fn opt_mac(o: &[u8]) -> Mac {
    let mut m = [0u8; 6];
    m.copy_from_slice(&o[2..8]);
    m
}

/// Parses an ICMPv6 message (the IPv6 payload) when it is NS, NA or RA; `None` for other types
/// or malformed messages. The caller has checked the hop limit is 255.
pub fn parse_nd(icmp: &[u8]) -> Option<Nd> {
    let ty = *icmp.first()?;
    match ty {
        135 | 136 => {
            if icmp.len() < 24 || icmp[1] != 0 {
                return None;
            }
            let mut t = [0u8; 16];
            t.copy_from_slice(&icmp[8..24]);
            let target = Ipv6Addr::from(t);
            let want = if ty == 135 { 1 } else { 2 };
            let mut lla = None;
            nd_options(&icmp[24..], |k, o| {
                if k == want {
                    lla = Some(opt_mac(o));
                }
            })?;
            Some(if ty == 135 {
                Nd::Solicit { target, lla }
            } else {
                Nd::Advert { target, lla }
            })
        }
        134 => {
            if icmp.len() < 16 || icmp[1] != 0 {
                return None;
            }
            let mut ra = RouterAdvert {
                router_lifetime: u16::from_be_bytes([icmp[6], icmp[7]]),
                ..Default::default()
            };
            nd_options(&icmp[16..], |k, o| match k {
                1 => ra.lla = Some(opt_mac(o)),
                5 if o.len() >= 8 => ra.mtu = Some(u32::from_be_bytes([o[4], o[5], o[6], o[7]])),
                3 if o.len() >= 32 => {
                    let plen = o[2];
                    let autonomous = o[3] & 0x40 != 0;
                    let valid = u32::from_be_bytes([o[4], o[5], o[6], o[7]]);
                    let pref = u32::from_be_bytes([o[8], o[9], o[10], o[11]]);
                    let mut p = [0u8; 16];
                    p.copy_from_slice(&o[16..32]);
                    if autonomous && plen == 64 {
                        ra.prefixes.push((Ipv6Addr::from(p), plen, valid, pref));
                    }
                }
                _ => {}
            })?;
            Some(Nd::RouterAdvert(ra))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_fragments_reassemble_to_the_original_payload() {
        // A 3000-byte UDP-ish payload in one IPv4 packet, DF set as smoltcp sets it.
        let payload: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let mut p = vec![0u8; 20];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
        p[4..6].copy_from_slice(&7u16.to_be_bytes());
        p[6] = 0x40;
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        p.extend_from_slice(&payload);
        let mut frags = Vec::new();
        assert!(fragment_ipv4(&p, 1500, |f| frags.push(f.to_vec())));
        assert_eq!(frags.len(), 3);
        let mut joined = vec![0u8; payload.len()];
        for (i, f) in frags.iter().enumerate() {
            assert!(f.len() <= 1500);
            assert_eq!(fold(sum16(0, &f[..20])), 0, "header checksum");
            assert_eq!(usize::from(u16::from_be_bytes([f[2], f[3]])), f.len());
            assert_eq!(&f[4..6], &[0, 7], "same identification");
            let field = u16::from_be_bytes([f[6], f[7]]);
            assert_eq!(
                field & 0x2000 != 0,
                i + 1 < frags.len(),
                "MF on all but the last"
            );
            let at = usize::from(field & 0x1fff) * 8;
            joined[at..at + f.len() - 20].copy_from_slice(&f[20..]);
        }
        assert_eq!(joined, payload);
        assert!(
            !fragment_ipv4(&p[..10], 1500, |_| {}),
            "truncated input is refused"
        );
        assert!(is_tcp(&{
            let mut t = p.clone();
            t[9] = 6;
            t
        }));
        assert!(!is_tcp(&p));
    }

    #[test]
    fn mac_text_round_trip_and_rejects() {
        let m = parse_mac("02:00:0a:ff:10:01").unwrap();
        assert_eq!(mac_to_string(&m), "02:00:0a:ff:10:01");
        assert!(parse_mac("02:00:0a:ff:10").is_none());
        assert!(parse_mac("02:00:0a:ff:10:01:02").is_none());
        assert!(parse_mac("zz:00:0a:ff:10:01").is_none());
    }

    #[test]
    fn arp_round_trip_and_truncation() {
        let a = Arp {
            op: 1,
            sha: [2, 0, 0, 0, 0, 1],
            spa: Ipv4Addr::new(10, 0, 0, 1),
            tha: [0; 6],
            tpa: Ipv4Addr::new(10, 0, 0, 2),
        };
        let mut b = [0u8; ARP_LEN];
        a.write(&mut b);
        assert_eq!(Arp::parse(&b), Some(a));
        assert_eq!(Arp::parse(&b[..27]), None);
        b[7] = 9;
        assert_eq!(Arp::parse(&b), None);
    }

    #[test]
    fn ns_built_here_parses_and_has_a_valid_checksum() {
        let mac = [2, 0, 0, 0, 0, 1];
        let src = link_local(&mac);
        let target: Ipv6Addr = "fd00::2".parse().unwrap();
        let dst = solicited_node(&target);
        assert_eq!(dst, "ff02::1:ff00:2".parse::<Ipv6Addr>().unwrap());
        let msg = nd_message(135, 0, &target, 1, &mac);
        let mut f = Vec::new();
        ndp_frame(&mut f, [0x33, 0x33, 0xff, 0, 0, 2], mac, &src, &dst, &msg);
        let icmp = &f[ETH_HDR + 40..];
        assert_eq!(icmpv6_checksum(&src, &dst, icmp), 0);
        assert_eq!(
            parse_nd(icmp),
            Some(Nd::Solicit {
                target,
                lla: Some(mac)
            })
        );
        // A zero-length option is malformed.
        let mut bad = icmp.to_vec();
        bad[25] = 0;
        assert_eq!(parse_nd(&bad), None);
    }
}
