//! IPv6 router advertisements (RFC 4861 §6.2, RFC 8106 for DNS) as a sans-IO state machine:
//! router solicitations and the time in, advertisements out. No sockets, no clock, no random
//! source: the caller passes a random `u32` wherever RFC 4861 asks for jitter.
//!
//! API (for slirp and routers):
//! - [`Config::new`]`(mac)`: defaults (RFC 4861 §6.2.1: advertisements every 200–600 s, router
//!   lifetime 1800 s, hop limit 64), then set the public fields: `prefixes` ([`Prefix::new`]:
//!   on-link, autonomous, RFC lifetimes), `rdnss` (RFC 8106 DNS servers), `dnssl` (search
//!   list), `mtu`, `router_lifetime` (0: not a default router), the M and O flags.
//!   [`Advertiser::new`]`(config, now)` validates it ([`ConfigError`]).
//! - [`Advertiser::poll_at`] / [`Advertiser::poll`]`(now, random)`: when due, the unsolicited
//!   (or solicited, see below) advertisement as a whole IPv6 packet from the router's
//!   link-local address to ff02::1, hop limit 255, checksummed. The first three come at most
//!   16 s apart (MAX_INITIAL_RTR_ADVERTISEMENTS), then every `min_interval..=max_interval`.
//! - [`Advertiser::handle_packet`]`(now, ipv6_packet, random)` or
//!   [`Advertiser::handle_icmpv6`]`(now, src, dst, hop_limit, icmp, random)`: a router
//!   solicitation, validated per RFC 4861 §6.1.1 ([`Error`] says why not); `Ok(true)` when it
//!   moved the next multicast advertisement earlier (within 0.5 s, at least 3 s after the
//!   previous one, §6.2.6); `Ok(false)` for other ICMPv6 messages.
//! - [`Advertiser::icmpv6`]`(dst)`: the ICMPv6 message alone, for a raw ICMPv6 socket sender;
//!   [`ethernet_frame`] wraps an IPv6 packet for a frame sender; [`link_local`] is the EUI-64
//!   link-local address of a MAC.
//! - [`RdnssView`] and [`DnsslView`]: typed views of the two RFC 8106 options smoltcp lacks
//!   (smoltcp's `NdiscRepr` writes the header, source link-layer address, MTU and first
//!   prefix; further prefixes, RDNSS and DNSSL are appended here).

use std::net::Ipv6Addr;
use std::time::Duration;

use smoltcp::time::Duration as SDuration;
use smoltcp::wire::{
    Icmpv6Message, Icmpv6Packet, IpProtocol, Ipv6Packet, Ipv6Repr, NdiscOption, NdiscOptionRepr,
    NdiscPrefixInfoFlags, NdiscPrefixInformation, NdiscRepr, NdiscRouterFlags, RawHardwareAddress,
};

use crate::names::{self, NameError};
use crate::{Instant, Mac};

/// ff02::1, where advertisements go.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// ff02::2, where solicitations go.
pub const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

const MAX_INITIAL_RTR_ADVERT_INTERVAL: Duration = Duration::from_secs(16);
const MAX_INITIAL_RTR_ADVERTISEMENTS: u32 = 3;
const MIN_DELAY_BETWEEN_RAS: Duration = Duration::from_secs(3);
const MAX_RA_DELAY_TIME_MS: u32 = 500;
const OPT_RDNSS: u8 = 25;
const OPT_DNSSL: u8 = 31;

/// A prefix to advertise (a Prefix Information option, RFC 4861 §4.6.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix {
    pub prefix: Ipv6Addr,
    pub len: u8,
    /// The L flag: addresses with this prefix are on the link.
    pub on_link: bool,
    /// The A flag: hosts may form addresses in it (SLAAC; needs a /64).
    pub autonomous: bool,
    pub valid: Duration,
    pub preferred: Duration,
}

impl Prefix {
    /// On-link and autonomous, valid 30 days, preferred 7 (RFC 4861 §6.2.1's defaults).
    pub fn new(prefix: Ipv6Addr, len: u8) -> Prefix {
        Prefix {
            prefix,
            len,
            on_link: true,
            autonomous: true,
            valid: Duration::from_secs(2_592_000),
            preferred: Duration::from_secs(604_800),
        }
    }
}

/// What the advertisements say, and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The router's MAC: the source link-layer address option.
    pub mac: Mac,
    /// The router's link-local address, the advertisements' source ([`link_local`] of `mac`
    /// by default).
    pub src: Ipv6Addr,
    pub prefixes: Vec<Prefix>,
    /// Recursive DNS servers (RFC 8106 §5.1).
    pub rdnss: Vec<Ipv6Addr>,
    /// The DNS search list (RFC 8106 §5.2).
    pub dnssl: Vec<String>,
    /// How long RDNSS and DNSSL stay valid (default: 3 × `max_interval`).
    pub dns_lifetime: Duration,
    /// The link MTU option.
    pub mtu: Option<u32>,
    /// How long hosts may use this router as a default router; zero: not a default router.
    pub router_lifetime: Duration,
    /// The hop limit hosts should use; 0: unspecified.
    pub hop_limit: u8,
    /// The M flag: addresses by DHCPv6.
    pub managed: bool,
    /// The O flag: other configuration (DNS) by DHCPv6, e.g. by [`crate::v6`].
    pub other: bool,
    pub min_interval: Duration,
    pub max_interval: Duration,
}

impl Config {
    pub fn new(mac: Mac) -> Config {
        Config {
            mac,
            src: link_local(&mac),
            prefixes: Vec::new(),
            rdnss: Vec::new(),
            dnssl: Vec::new(),
            dns_lifetime: Duration::from_secs(1800),
            mtu: None,
            router_lifetime: Duration::from_secs(1800),
            hop_limit: 64,
            managed: false,
            other: false,
            min_interval: Duration::from_secs(200),
            max_interval: Duration::from_secs(600),
        }
    }
}

impl Config {
    /// A router's advertisements on a link with MAC `mac`, addresses `addrs` (address,
    /// prefix length) and IP MTU `mtu`: each non-link-local IPv6 prefix for SLAAC, the MTU
    /// when it is not 1500, the O flag when `other` (a stateless DHCPv6 server is there),
    /// every 30 to 90 s.
    pub fn for_link(mac: Mac, addrs: &[(std::net::IpAddr, u8)], mtu: u32, other: bool) -> Config {
        let mut c = Config::new(mac);
        for &(a, len) in addrs {
            let std::net::IpAddr::V6(a) = a else { continue };
            if a.is_unicast_link_local() || len > 128 {
                continue;
            }
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            let p = Prefix::new(Ipv6Addr::from(u128::from(a) & mask), len);
            if !c.prefixes.contains(&p) {
                c.prefixes.push(p);
            }
        }
        if mtu != 1500 {
            c.mtu = Some(mtu);
        }
        c.other = other;
        c.min_interval = Duration::from_secs(30);
        c.max_interval = Duration::from_secs(90);
        c
    }
}

/// What is wrong with a [`Config`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("router advertisements: max_interval {0:?}: expected 4 to 1800 s")]
    MaxInterval(Duration),
    #[error("router advertisements: min_interval {0:?}: expected 3 s to 0.75 × max_interval")]
    MinInterval(Duration),
    #[error("router advertisements: router_lifetime {0:?}: expected 0 or max_interval to 9000 s")]
    RouterLifetime(Duration),
    #[error("router advertisements: prefix {0}: {1}")]
    Prefix(String, &'static str),
    #[error("router advertisements: MTU {0}: expected at least 1280")]
    Mtu(u32),
    #[error("router advertisements: source {0}: expected a link-local address (fe80::/10)")]
    Source(Ipv6Addr),
    #[error("router advertisements: {0}")]
    Name(#[from] NameError),
    #[error("router advertisements: the message would take {0} bytes: more than the 1232 an IPv6 minimum MTU allows")]
    TooLong(usize),
}

/// A message that is not a valid router solicitation (RFC 4861 §6.1.1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("IPv6 packet: malformed or truncated")]
    Ipv6,
    #[error("ICMPv6 message: malformed or truncated")]
    Icmpv6,
    #[error("router solicitation: hop limit {0}, expected 255 (sent from off the link?)")]
    HopLimit(u8),
    #[error("router solicitation: bad ICMPv6 checksum")]
    Checksum,
    #[error("router solicitation: code {0}, expected 0")]
    Code(u8),
    #[error("router solicitation: malformed options")]
    Options,
    #[error("router solicitation from :: with a source link-layer address option")]
    UnspecifiedWithLladdr,
}

/// The link-local address of `mac`: fe80::/64 and its modified EUI-64 identifier.
pub fn link_local(mac: &Mac) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o[0] = 0xfe;
    o[1] = 0x80;
    o[8..16].copy_from_slice(&eui64(mac));
    Ipv6Addr::from(o)
}

/// The modified EUI-64 interface identifier of `mac` (RFC 4291 appendix A).
pub fn eui64(mac: &Mac) -> [u8; 8] {
    [
        mac[0] ^ 2,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ]
}

/// An Ethernet frame from `src_mac` carrying `ipv6_packet` to its destination's multicast MAC
/// (33:33 and the address's last four bytes), or to `unicast_mac` for a unicast destination;
/// `None` if the packet has no IPv6 header, or is unicast and `unicast_mac` is `None`.
pub fn ethernet_frame(
    src_mac: Mac,
    unicast_mac: Option<Mac>,
    ipv6_packet: &[u8],
) -> Option<Vec<u8>> {
    let dst: [u8; 16] = ipv6_packet.get(24..40)?.try_into().ok()?;
    let dst_mac = if dst[0] == 0xff {
        [0x33, 0x33, dst[12], dst[13], dst[14], dst[15]]
    } else {
        unicast_mac?
    };
    let mut f = Vec::with_capacity(14 + ipv6_packet.len());
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x86, 0xdd]);
    f.extend_from_slice(ipv6_packet);
    Some(f)
}

/// A Recursive DNS Server option (RFC 8106 §5.1): type 25, length, reserved, lifetime,
/// addresses.
#[derive(Debug, Clone, Copy)]
pub struct RdnssView<'a>(&'a [u8]);

impl<'a> RdnssView<'a> {
    /// `b` is one whole option (its length field says how long).
    pub fn new_checked(b: &'a [u8]) -> Option<RdnssView<'a>> {
        let len = usize::from(*b.get(1)?) * 8;
        (b[0] == OPT_RDNSS && len >= 24 && (len - 8) % 16 == 0 && b.len() == len)
            .then_some(RdnssView(b))
    }
    pub fn lifetime(&self) -> Duration {
        Duration::from_secs(u64::from(u32::from_be_bytes([
            self.0[4], self.0[5], self.0[6], self.0[7],
        ])))
    }
    pub fn servers(&self) -> impl Iterator<Item = Ipv6Addr> + 'a {
        self.0[8..].chunks_exact(16).filter_map(|c| {
            let a: [u8; 16] = c.try_into().ok()?;
            Some(Ipv6Addr::from(a))
        })
    }
}

/// A DNS Search List option (RFC 8106 §5.2): type 31, length, reserved, lifetime, names in
/// DNS wire format padded with zeros to 8 bytes.
#[derive(Debug, Clone, Copy)]
pub struct DnsslView<'a>(&'a [u8]);

impl<'a> DnsslView<'a> {
    /// `b` is one whole option.
    pub fn new_checked(b: &'a [u8]) -> Option<DnsslView<'a>> {
        let len = usize::from(*b.get(1)?) * 8;
        (b[0] == OPT_DNSSL && len >= 16 && b.len() == len).then_some(DnsslView(b))
    }
    pub fn lifetime(&self) -> Duration {
        Duration::from_secs(u64::from(u32::from_be_bytes([
            self.0[4], self.0[5], self.0[6], self.0[7],
        ])))
    }
    /// The names; `None` if they are malformed.
    pub fn names(&self) -> Option<Vec<String>> {
        let body = &self.0[8..];
        // The padding is zero bytes after the last name: empty names, dropped.
        let end = body.iter().rposition(|b| *b != 0).map_or(0, |i| i + 2);
        names::decode_list(body.get(..end)?)
    }
}

/// An option header (type, length in units of 8 bytes) with a 4-byte lifetime after two
/// reserved bytes, then `body`, padded to 8 bytes.
fn dns_option(kind: u8, lifetime: Duration, body: &[u8]) -> Vec<u8> {
    let len = (8 + body.len()).div_ceil(8) * 8;
    let mut o = Vec::with_capacity(len);
    o.extend_from_slice(&[kind, (len / 8) as u8, 0, 0]);
    o.extend_from_slice(&(lifetime.as_secs().min(u64::from(u32::MAX)) as u32).to_be_bytes());
    o.extend_from_slice(body);
    o.resize(len, 0);
    o
}

fn sdur(d: Duration) -> SDuration {
    SDuration::from_millis(d.as_millis() as u64)
}

/// The advertisement state machine: see the module header.
#[derive(Debug)]
pub struct Advertiser {
    config: Config,
    /// The ICMPv6 message with a zero checksum.
    message: Vec<u8>,
    next: Instant,
    initial_left: u32,
    last_sent: Option<Instant>,
}

impl Advertiser {
    /// Validates `config`; the first advertisement is due at `now`.
    pub fn new(config: Config, now: Instant) -> Result<Advertiser, ConfigError> {
        let message = Self::build(&config)?;
        Ok(Advertiser {
            config,
            message,
            next: now,
            initial_left: MAX_INITIAL_RTR_ADVERTISEMENTS,
            last_sent: None,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    fn build(c: &Config) -> Result<Vec<u8>, ConfigError> {
        let max = c.max_interval;
        if !(Duration::from_secs(4)..=Duration::from_secs(1800)).contains(&max) {
            return Err(ConfigError::MaxInterval(max));
        }
        if c.min_interval < Duration::from_secs(3) || c.min_interval > max * 3 / 4 {
            return Err(ConfigError::MinInterval(c.min_interval));
        }
        let rl = c.router_lifetime;
        if !rl.is_zero() && !(max..=Duration::from_secs(9000)).contains(&rl) {
            return Err(ConfigError::RouterLifetime(rl));
        }
        if let Some(m) = c.mtu.filter(|m| *m < 1280) {
            return Err(ConfigError::Mtu(m));
        }
        if c.src.segments()[0] & 0xffc0 != 0xfe80 {
            return Err(ConfigError::Source(c.src));
        }
        let mut infos = Vec::new();
        for p in &c.prefixes {
            let name = format!("{}/{}", p.prefix, p.len);
            if p.len > 128 {
                return Err(ConfigError::Prefix(name, "length above 128"));
            }
            let host_bits = u128::MAX.checked_shr(u32::from(p.len)).unwrap_or(0);
            if u128::from(p.prefix) & host_bits != 0 {
                return Err(ConfigError::Prefix(
                    name,
                    "bits set after the prefix length",
                ));
            }
            if p.valid.as_secs() > u64::from(u32::MAX) {
                return Err(ConfigError::Prefix(
                    name,
                    "valid lifetime above 2^32 - 1 s (infinity)",
                ));
            }
            if p.preferred > p.valid {
                return Err(ConfigError::Prefix(
                    name,
                    "preferred lifetime longer than the valid one",
                ));
            }
            let mut flags = NdiscPrefixInfoFlags::empty();
            flags.set(NdiscPrefixInfoFlags::ON_LINK, p.on_link);
            flags.set(NdiscPrefixInfoFlags::ADDRCONF, p.autonomous);
            infos.push(NdiscPrefixInformation {
                prefix_len: p.len,
                flags,
                valid_lifetime: sdur(p.valid),
                preferred_lifetime: sdur(p.preferred),
                prefix: p.prefix,
            });
        }
        let mut flags = NdiscRouterFlags::empty();
        flags.set(NdiscRouterFlags::MANAGED, c.managed);
        flags.set(NdiscRouterFlags::OTHER, c.other);
        let repr = NdiscRepr::RouterAdvert {
            hop_limit: c.hop_limit,
            flags,
            router_lifetime: sdur(rl),
            reachable_time: SDuration::ZERO,
            retrans_time: SDuration::ZERO,
            lladdr: Some(RawHardwareAddress::from_bytes(&c.mac)),
            mtu: c.mtu,
            prefix_info: infos.first().copied(),
        };
        let mut extra = Vec::new();
        for info in infos.iter().skip(1) {
            let opt = NdiscOptionRepr::PrefixInformation(*info);
            let mut b = vec![0u8; opt.buffer_len()];
            opt.emit(&mut NdiscOption::new_unchecked(&mut b[..]));
            extra.extend_from_slice(&b);
        }
        if !c.rdnss.is_empty() {
            let body: Vec<u8> = c.rdnss.iter().flat_map(|a| a.octets()).collect();
            extra.extend_from_slice(&dns_option(OPT_RDNSS, c.dns_lifetime, &body));
        }
        if !c.dnssl.is_empty() {
            let body = names::encode_list(&c.dnssl)?;
            extra.extend_from_slice(&dns_option(OPT_DNSSL, c.dns_lifetime, &body));
        }
        let len = repr.buffer_len() + extra.len();
        if len > 1280 - 48 {
            return Err(ConfigError::TooLong(len));
        }
        let mut msg = vec![0u8; len];
        repr.emit(&mut Icmpv6Packet::new_unchecked(&mut msg[..]));
        msg[repr.buffer_len()..].copy_from_slice(&extra);
        Ok(msg)
    }

    /// The ICMPv6 router advertisement from the configured source to `dst`, checksummed.
    pub fn icmpv6(&self, dst: Ipv6Addr) -> Vec<u8> {
        let mut m = self.message.clone();
        Icmpv6Packet::new_unchecked(&mut m[..]).fill_checksum(&self.config.src, &dst);
        m
    }

    /// The whole IPv6 packet (hop limit 255) carrying the advertisement to `dst`.
    pub fn ipv6_packet(&self, dst: Ipv6Addr) -> Vec<u8> {
        let icmp = self.icmpv6(dst);
        let repr = Ipv6Repr {
            src_addr: self.config.src,
            dst_addr: dst,
            next_header: IpProtocol::Icmpv6,
            payload_len: icmp.len(),
            hop_limit: 255,
        };
        let mut p = vec![0u8; repr.buffer_len() + icmp.len()];
        repr.emit(&mut Ipv6Packet::new_unchecked(&mut p[..]));
        p[repr.buffer_len()..].copy_from_slice(&icmp);
        p
    }

    /// When [`Advertiser::poll`] next has something to send.
    pub fn poll_at(&self) -> Instant {
        self.next
    }

    /// The advertisement to send to ff02::1 now (an IPv6 packet), if one is due; `random`
    /// picks the interval to the next one.
    pub fn poll(&mut self, now: Instant, random: u32) -> Option<Vec<u8>> {
        if now < self.next {
            return None;
        }
        let (min, max) = (
            self.config.min_interval.as_millis() as u64,
            self.config.max_interval.as_millis() as u64,
        );
        let mut interval = Duration::from_millis(min + u64::from(random) % (max - min + 1));
        if self.initial_left > 0 {
            self.initial_left -= 1;
            interval = interval.min(MAX_INITIAL_RTR_ADVERT_INTERVAL);
        }
        self.last_sent = Some(now);
        self.next = now + interval;
        Some(self.ipv6_packet(ALL_NODES))
    }

    /// A valid solicitation arrived: the next advertisement goes out within 0.5 s (`random`
    /// picks when), but not sooner than 3 s after the previous one.
    pub fn solicited(&mut self, now: Instant, random: u32) {
        let mut at = now + Duration::from_millis(u64::from(random % MAX_RA_DELAY_TIME_MS));
        if let Some(last) = self.last_sent {
            at = at.max(last + MIN_DELAY_BETWEEN_RAS);
        }
        self.next = self.next.min(at);
    }

    /// An ICMPv6 message that arrived from `src` to `dst` with IPv6 hop limit `hop_limit`:
    /// `Ok(true)` if it was a valid router solicitation (the answer is scheduled, see
    /// [`Advertiser::solicited`]), `Ok(false)` if it was another ICMPv6 message.
    pub fn handle_icmpv6(
        &mut self,
        now: Instant,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        hop_limit: u8,
        icmp: &[u8],
        random: u32,
    ) -> Result<bool, Error> {
        let p = Icmpv6Packet::new_checked(icmp).map_err(|_| Error::Icmpv6)?;
        if p.msg_type() != Icmpv6Message::RouterSolicit {
            return Ok(false);
        }
        if hop_limit != 255 {
            return Err(Error::HopLimit(hop_limit));
        }
        if !p.verify_checksum(&src, &dst) {
            return Err(Error::Checksum);
        }
        if p.msg_code() != 0 {
            return Err(Error::Code(p.msg_code()));
        }
        let lladdr = match NdiscRepr::parse(&p) {
            Ok(NdiscRepr::RouterSolicit { lladdr }) => lladdr,
            _ => return Err(Error::Options),
        };
        if src.is_unspecified() && lladdr.is_some() {
            return Err(Error::UnspecifiedWithLladdr);
        }
        self.solicited(now, random);
        Ok(true)
    }

    /// Like [`Advertiser::handle_icmpv6`], from a whole IPv6 packet (without extension
    /// headers); `Ok(false)` for packets that are not ICMPv6.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        packet: &[u8],
        random: u32,
    ) -> Result<bool, Error> {
        let p = Ipv6Packet::new_checked(packet).map_err(|_| Error::Ipv6)?;
        let repr = Ipv6Repr::parse(&p).map_err(|_| Error::Ipv6)?;
        if repr.next_header != IpProtocol::Icmpv6 {
            return Ok(false);
        }
        let icmp = p.payload();
        self.handle_icmpv6(
            now,
            repr.src_addr,
            repr.dst_addr,
            repr.hop_limit,
            icmp,
            random,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::Ipv6Address;

    const MAC: Mac = [2, 0, 0, 0, 0, 1];

    fn config() -> Config {
        let mut c = Config::new(MAC);
        c.prefixes = vec![
            Prefix::new("fd00:1::".parse().unwrap(), 64),
            Prefix {
                autonomous: false,
                valid: Duration::from_secs(600),
                preferred: Duration::from_secs(300),
                ..Prefix::new("fd00:2::".parse().unwrap(), 48)
            },
        ];
        c.rdnss = vec!["fd00:1::3".parse().unwrap(), "fd00:1::4".parse().unwrap()];
        c.dnssl = vec!["lab.example".into()];
        c.mtu = Some(1400);
        c.other = true;
        c
    }

    /// The options of an advertisement, each whole.
    fn options(icmp: &[u8]) -> Vec<&[u8]> {
        let mut o = &icmp[16..];
        let mut out = Vec::new();
        while !o.is_empty() {
            let len = usize::from(o[1]) * 8;
            assert!(len > 0 && len <= o.len());
            out.push(&o[..len]);
            o = &o[len..];
        }
        out
    }

    #[test]
    fn an_advertisement_carries_every_option_and_a_valid_checksum() {
        let a = Advertiser::new(config(), Instant::from_secs(0)).unwrap();
        let pkt = a.ipv6_packet(ALL_NODES);
        let ip = Ipv6Packet::new_checked(&pkt[..]).unwrap();
        assert_eq!(ip.hop_limit(), 255);
        assert_eq!(
            ip.src_addr(),
            "fe80::ff:fe00:1".parse::<Ipv6Address>().unwrap()
        );
        let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum(&ip.src_addr(), &ALL_NODES));
        let Ok(NdiscRepr::RouterAdvert {
            hop_limit,
            flags,
            router_lifetime,
            lladdr,
            mtu,
            prefix_info,
            ..
        }) = NdiscRepr::parse(&icmp)
        else {
            panic!("not a router advertisement");
        };
        assert_eq!((hop_limit, mtu), (64, Some(1400)));
        assert_eq!(flags, NdiscRouterFlags::OTHER);
        assert_eq!(router_lifetime, SDuration::from_secs(1800));
        assert_eq!(lladdr.unwrap().as_bytes(), &MAC);
        // smoltcp's parser keeps the last prefix.
        assert_eq!(prefix_info.unwrap().prefix_len, 48);
        let opts = options(ip.payload());
        // Source link-layer address, MTU, two prefixes, RDNSS, DNSSL.
        assert_eq!(opts.len(), 6);
        let prefix = |o: &[u8]| {
            let opt = NdiscOption::new_checked(o).unwrap();
            match NdiscOptionRepr::parse(&opt) {
                Ok(NdiscOptionRepr::PrefixInformation(p)) => p,
                other => panic!("not a prefix: {other:?}"),
            }
        };
        let p = prefix(opts[2]);
        assert_eq!((p.prefix_len, p.prefix), (64, "fd00:1::".parse().unwrap()));
        assert_eq!(
            p.flags,
            NdiscPrefixInfoFlags::ON_LINK | NdiscPrefixInfoFlags::ADDRCONF
        );
        assert_eq!(p.valid_lifetime, SDuration::from_secs(2_592_000));
        let p2 = prefix(opts[3]);
        assert_eq!(
            (p2.prefix_len, p2.flags),
            (48, NdiscPrefixInfoFlags::ON_LINK)
        );
        assert_eq!(p2.preferred_lifetime, SDuration::from_secs(300));
        let r = RdnssView::new_checked(opts[4]).unwrap();
        assert_eq!(r.lifetime(), Duration::from_secs(1800));
        let servers: Vec<Ipv6Addr> = r.servers().collect();
        assert_eq!(servers, config().rdnss);
        let d = DnsslView::new_checked(opts[5]).unwrap();
        assert_eq!(d.names().unwrap(), vec!["lab.example".to_string()]);
        assert_eq!(opts[5].len(), 24, "8 + 13 bytes of name, padded to 8");
        // The frame goes to 33:33:00:00:00:01.
        let f = ethernet_frame(MAC, None, &pkt).unwrap();
        assert_eq!(&f[..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
    }

    #[test]
    fn unsolicited_timing_follows_rfc_4861() {
        let t0 = Instant::from_secs(100);
        let mut a = Advertiser::new(config(), t0).unwrap();
        assert!(a.poll(t0, 0).is_some(), "the first one at once");
        // The first three at most 16 s apart, even with a large random value.
        assert_eq!(a.poll_at(), t0 + Duration::from_secs(16));
        assert!(a.poll(t0 + Duration::from_secs(15), 0).is_none());
        let mut t = a.poll_at();
        for _ in 0..2 {
            assert!(a.poll(t, u32::MAX).is_some());
            assert!(a.poll_at() <= t + Duration::from_secs(16));
            t = a.poll_at();
        }
        // Then min_interval + random % (max - min): 200 s + 123 ms.
        assert!(a.poll(t, 123).is_some());
        assert_eq!(a.poll_at(), t + Duration::from_millis(200_123));
        let t = a.poll_at();
        assert!(a.poll(t, 400_000).is_some());
        assert_eq!(a.poll_at(), t + Duration::from_secs(600));
    }

    /// A router solicitation from `src` (with a source link-layer option unless `src` is ::).
    fn solicitation(src: Ipv6Addr, hop_limit: u8) -> Vec<u8> {
        let lladdr =
            (!src.is_unspecified()).then(|| RawHardwareAddress::from_bytes(&[2, 0, 0, 0, 0, 9]));
        let repr = NdiscRepr::RouterSolicit { lladdr };
        let mut icmp = vec![0u8; repr.buffer_len()];
        let mut p = Icmpv6Packet::new_unchecked(&mut icmp[..]);
        repr.emit(&mut p);
        p.fill_checksum(&src, &ALL_ROUTERS);
        let ip = Ipv6Repr {
            src_addr: src,
            dst_addr: ALL_ROUTERS,
            next_header: IpProtocol::Icmpv6,
            payload_len: icmp.len(),
            hop_limit,
        };
        let mut pkt = vec![0u8; 40 + icmp.len()];
        ip.emit(&mut Ipv6Packet::new_unchecked(&mut pkt[..]));
        pkt[40..].copy_from_slice(&icmp);
        pkt
    }

    #[test]
    fn solicitations_are_checked_and_answered_soon_but_not_too_often() {
        let t0 = Instant::from_secs(10);
        let mut a = Advertiser::new(config(), t0).unwrap();
        a.poll(t0, 0).unwrap();
        let host: Ipv6Addr = "fe80::9".parse().unwrap();
        // 1 s after an advertisement: the answer waits until 3 s after it.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(a.handle_packet(t1, &solicitation(host, 255), 100), Ok(true));
        assert_eq!(a.poll_at(), t0 + MIN_DELAY_BETWEEN_RAS);
        a.poll(a.poll_at(), 5_000_000).unwrap();
        // Later: within 0.5 s (random 1234 → 234 ms).
        let t2 = t0 + Duration::from_secs(10); // 7 s after the last one, before the next
        assert_eq!(
            a.handle_packet(t2, &solicitation(Ipv6Addr::UNSPECIFIED, 255), 1234),
            Ok(true)
        );
        assert_eq!(a.poll_at(), t2 + Duration::from_millis(234));
        // Invalid ones change nothing.
        let before = a.poll_at();
        let t3 = t2 + Duration::from_millis(1);
        assert_eq!(
            a.handle_packet(t3, &solicitation(host, 64), 0),
            Err(Error::HopLimit(64))
        );
        let mut bad = solicitation(host, 255);
        bad[42] ^= 1;
        assert_eq!(a.handle_packet(t3, &bad, 0), Err(Error::Checksum));
        let mut from_unspecified = solicitation(host, 255);
        from_unspecified[8..24].copy_from_slice(&[0; 16]);
        let fixed = {
            let mut icmp = from_unspecified[40..].to_vec();
            let mut p = Icmpv6Packet::new_unchecked(&mut icmp[..]);
            p.fill_checksum(&Ipv6Addr::UNSPECIFIED, &ALL_ROUTERS);
            icmp
        };
        from_unspecified[40..].copy_from_slice(&fixed);
        assert_eq!(
            a.handle_packet(t3, &from_unspecified, 0),
            Err(Error::UnspecifiedWithLladdr)
        );
        assert_eq!(a.handle_packet(t3, &[0x60, 0, 0], 0), Err(Error::Ipv6));
        assert_eq!(a.poll_at(), before);
        // An advertisement is not a solicitation.
        let ra = a.ipv6_packet(ALL_NODES);
        assert_eq!(a.handle_packet(t3, &ra, 0), Ok(false));
    }

    #[test]
    fn bad_configurations_are_named() {
        let bad = |f: &dyn Fn(&mut Config)| {
            let mut c = config();
            f(&mut c);
            Advertiser::new(c, Instant::from_secs(0)).unwrap_err()
        };
        assert!(matches!(
            bad(&|c| c.max_interval = Duration::from_secs(2)),
            ConfigError::MaxInterval(_)
        ));
        assert!(matches!(
            bad(&|c| c.min_interval = Duration::from_secs(500)),
            ConfigError::MinInterval(_)
        ));
        assert!(matches!(
            bad(&|c| c.router_lifetime = Duration::from_secs(10)),
            ConfigError::RouterLifetime(_)
        ));
        let e = bad(&|c| c.prefixes = vec![Prefix::new("fd00::1".parse().unwrap(), 64)]);
        assert_eq!(
            e.to_string(),
            "router advertisements: prefix fd00::1/64: bits set after the prefix length"
        );
        assert_eq!(bad(&|c| c.mtu = Some(1000)), ConfigError::Mtu(1000));
        let e = bad(&|c| c.prefixes[0].valid = Duration::MAX);
        assert!(e.to_string().contains("infinity"), "{e}");
        assert!(matches!(
            bad(&|c| c.src = "fd00::1".parse().unwrap()),
            ConfigError::Source(_)
        ));
        assert!(matches!(
            bad(&|c| c.dnssl = vec!["-bad name".into()]),
            ConfigError::Name(_)
        ));
        assert!(matches!(
            bad(&|c| c.rdnss = vec![Ipv6Addr::LOCALHOST; 80]),
            ConfigError::TooLong(_)
        ));
        let mut c = config();
        c.router_lifetime = Duration::ZERO;
        assert!(
            Advertiser::new(c, Instant::from_secs(0)).is_ok(),
            "0: not a default router"
        );
    }

    #[test]
    fn a_links_advertisements_carry_its_prefixes_masked_and_not_link_local() {
        let addrs = [
            ("fe80::1".parse().unwrap(), 64),
            ("fd01::1".parse().unwrap(), 64),
            ("fd01::2".parse().unwrap(), 64),
            ("10.1.0.1".parse().unwrap(), 24),
        ];
        let c = Config::for_link([2, 0, 0, 0, 0, 1], &addrs, 1400, true);
        assert_eq!(
            c.prefixes,
            [Prefix::new("fd01::".parse().unwrap(), 64)],
            "one prefix, host bits cleared"
        );
        assert_eq!((c.mtu, c.other), (Some(1400), true));
        assert!(Advertiser::new(c, Instant::from_secs(0)).is_ok());
        assert_eq!(Config::for_link([2; 6], &addrs, 1500, false).mtu, None);
    }
}
