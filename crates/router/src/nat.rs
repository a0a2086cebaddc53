//! Masquerade (IPv4, and NAT66 for IPv6) with connection tracking, as a [`Hook`] at
//! POSTROUTING (the source of packets leaving on the outgoing interface becomes the router's
//! address there, or a chosen one (SNAT), the source port or ICMP echo identifier a free one)
//! and PREROUTING (replies get the original destination back), plus port forwards (DNAT,
//! IPv4 and IPv6). ICMP and ICMPv6 errors about a translated or forwarded connection get
//! their quoted header translated too, both ways (time exceeded and fragmentation needed /
//! packet too big coming back to the inside host; port unreachable and the like from the
//! inside host going out), so traceroute and path-MTU discovery work through the NAT.
//!
//! Connections are TCP (states from the flags: SYN sent, established, closing, closed), UDP
//! (unreplied, replied) and ICMP / ICMPv6 echo, each with a timeout; the table holds at most
//! [`Config::max_conns`] (both families) and counts what it refuses; IPv4 and IPv6 each have
//! the port range [`Config::ports`]. IPv6 is translated only when [`Config::addr6`] is set;
//! its extension headers are walked to the transport header ([`crate::ext6`]): a packet to
//! translate whose chain is cut short, out of order or too long is dropped and counted. A
//! fragmented datagram's later fragments get the addresses its first one got (see
//! [`Masquerade`]).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use smoltcp::wire::{Icmpv6Packet, Ipv4Packet, Ipv6Packet};

use crate::core::{DropReason, Hook, HookOutput, HookPoint, HookVerdict, IfId, PacketMeta};
use crate::ext6::{self, Fragment};

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

/// The masquerade's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The outgoing interface.
    pub iface: IfId,
    /// The router's address on it: the translated source; unspecified (0.0.0.0) leaves
    /// IPv4 untranslated (an IPv6-only interface).
    pub addr: Ipv4Addr,
    /// The translated source of IPv6 (NAT66); None leaves IPv6 untranslated.
    pub addr6: Option<Ipv6Addr>,
    pub max_conns: usize,
    /// Ports (and echo identifiers) handed out.
    pub ports: (u16, u16),
    pub tcp_established: Duration,
    pub tcp_transitory: Duration,
    pub udp_unreplied: Duration,
    pub udp_replied: Duration,
    pub icmp: Duration,
    /// Whether forwarded packets leaving on [`Config::iface`] are masqueraded; false leaves
    /// only the port forwards.
    pub masquerade: bool,
    /// Port forwards (DNAT) on [`Config::iface`].
    pub forwards: Vec<PortForward>,
    /// IPv6 port forwards on [`Config::iface`], to [`Config::addr6`] (which they need).
    pub forwards6: Vec<PortForward6>,
    /// Fragmented datagrams whose later fragments are remembered at most (see
    /// [`Masquerade`]); beyond, a first fragment is translated but its later ones dropped.
    pub max_fragments: usize,
    /// How long a first fragment's translation waits for the datagram's later fragments,
    /// and a later fragment held for its first one waits for it.
    pub fragment_timeout: Duration,
    /// How many later fragments that come before their first one are held for it (see
    /// [`Masquerade`]).
    pub hold: HoldLimits,
}

/// Bounds on the later fragments NAT holds while their datagram's first fragment has not
/// come: in all, and per datagram, in packets and in bytes. A fragment beyond them is
/// dropped and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldLimits {
    pub packets: usize,
    pub bytes: usize,
    pub datagram_packets: usize,
    pub datagram_bytes: usize,
}

impl HoldLimits {
    /// Holds nothing: a fragment before its first one is dropped at once. For a runner that
    /// does not poll [`Hook::poll_output`] (the held packets come back only through it).
    pub const NONE: HoldLimits = HoldLimits {
        packets: 0,
        bytes: 0,
        datagram_packets: 0,
        datagram_bytes: 0,
    };
    /// The router's: 256 fragments and 1 MiB in all, 64 fragments and the largest datagram
    /// (64 KiB and the fragments' headers) per datagram.
    pub const DEFAULT: HoldLimits = HoldLimits {
        packets: 256,
        bytes: 1 << 20,
        datagram_packets: 64,
        datagram_bytes: 65_535 + 64 * 60,
    };
}

/// A port forward: TCP or UDP to the router's address at `port` goes to `to`:`to_port`
/// (and its replies come back from the router's address and `port`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortForward {
    /// [`TCP_PROTO`] or [`UDP_PROTO`].
    pub proto: u8,
    pub port: u16,
    pub to: Ipv4Addr,
    pub to_port: u16,
}

pub const TCP_PROTO: u8 = TCP;
pub const UDP_PROTO: u8 = UDP;

/// An IPv6 port forward: TCP or UDP to the router's IPv6 address ([`Config::addr6`]) at
/// `port` goes to `[to]:to_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortForward6 {
    /// [`TCP_PROTO`] or [`UDP_PROTO`].
    pub proto: u8,
    pub port: u16,
    pub to: Ipv6Addr,
    pub to_port: u16,
}

/// A port forward of either family, as [`Forward::parse`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    V4(PortForward),
    V6(PortForward6),
}

const FORWARD_SYNTAX: &str =
    "expected PROTO:PORT=ADDR[:PORT], e.g. tcp:8080=10.1.0.50:80 or tcp:8080=[fd01::50]:80";

impl Forward {
    /// Parses `PROTO:PORT=ADDR[:PORT]` with an IPv4 address or a bracketed IPv6 one, e.g.
    /// `tcp:8080=10.1.0.50:80`, `udp:5353=[fd01::50]:53` (the target port defaults to the
    /// same port).
    pub fn parse(text: &str) -> Result<Forward, String> {
        let err = |what: &str| format!("{text:?}: {what} ({FORWARD_SYNTAX})");
        let (from, to) = text.split_once('=').ok_or_else(|| err("no '='"))?;
        let (proto, port) = from
            .split_once(':')
            .ok_or_else(|| err("no PROTO:PORT before '='"))?;
        let proto = match proto {
            "tcp" => TCP,
            "udp" => UDP,
            other => return Err(err(&format!("protocol {other:?} is not tcp or udp"))),
        };
        let number = |p: &str| {
            p.parse::<u16>()
                .map_err(|_| err(&format!("port {p:?} is not a number 1-65535")))
        };
        let port = number(port)?;
        let (addr, to_port): (IpAddr, u16) = if let Some(rest) = to.strip_prefix('[') {
            let (a, after) = rest
                .split_once(']')
                .ok_or_else(|| err(&format!("{to:?} has no ']' after the IPv6 address")))?;
            let a: Ipv6Addr = a
                .parse()
                .map_err(|_| err(&format!("{a:?} is not an IPv6 address")))?;
            let to_port = match after {
                "" => port,
                _ => number(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| err(&format!("{after:?} after ']' is not :PORT")))?,
                )?,
            };
            (IpAddr::V6(a), to_port)
        } else if to.matches(':').count() > 1 {
            return Err(err(&format!(
                "{to:?}: an IPv6 address goes in brackets, [ADDR]:PORT"
            )));
        } else {
            let (a, p) = match to.split_once(':') {
                Some((a, p)) => (a, number(p)?),
                None => (to, port),
            };
            let a: Ipv4Addr = a
                .parse()
                .map_err(|_| err(&format!("{a:?} is not an IPv4 address")))?;
            (IpAddr::V4(a), p)
        };
        if port == 0 || to_port == 0 {
            return Err(err("port 0"));
        }
        Ok(match addr {
            IpAddr::V4(to) => Forward::V4(PortForward {
                proto,
                port,
                to,
                to_port,
            }),
            IpAddr::V6(to) => Forward::V6(PortForward6 {
                proto,
                port,
                to,
                to_port,
            }),
        })
    }
}

impl std::fmt::Display for Forward {
    /// As [`Forward::parse`] reads it, the target port always written.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (proto, port, to) = match self {
            Forward::V4(x) => (x.proto, x.port, endpoint(IpAddr::V4(x.to), x.to_port)),
            Forward::V6(x) => (x.proto, x.port, endpoint(IpAddr::V6(x.to), x.to_port)),
        };
        write!(f, "{}:{port}={to}", proto_name(proto))
    }
}

/// A port forward on a named interface, `IFACE:PROTO:PORT=ADDR[:PORT]`, as `filo router
/// --forward` and its console's `fwd/add` and `fwd/del` take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfaceForward {
    pub iface: String,
    pub forward: Forward,
}

impl IfaceForward {
    /// Parses `IFACE:PROTO:PORT=ADDR[:PORT]`, e.g. `vde1:tcp:8080=10.1.0.50:80` (see
    /// [`Forward::parse`]); the error names the part that is wrong.
    pub fn parse(text: &str) -> Result<IfaceForward, String> {
        let (iface, rule) = text.split_once(':').ok_or_else(|| {
            format!("{text:?}: expected IFACE:PROTO:PORT=ADDR[:PORT], e.g. vde1:tcp:8080=10.1.0.50:80 or vde1:tcp:8080=[fd01::50]:80")
        })?;
        let forward = Forward::parse(rule).map_err(|e| format!("{iface}:{e}"))?;
        Ok(IfaceForward {
            iface: iface.to_string(),
            forward,
        })
    }
}

impl PortForward {
    /// Parses `PROTO:PORT=ADDR[:PORT]`, e.g. `tcp:8080=10.1.0.50:80` (the target port
    /// defaults to the same port); IPv4 only, [`Forward::parse`] takes both.
    pub fn parse(text: &str) -> Result<PortForward, String> {
        match Forward::parse(text)? {
            Forward::V4(f) => Ok(f),
            Forward::V6(_) => Err(format!(
                "{text:?}: an IPv6 target where an IPv4 one is expected"
            )),
        }
    }
}

fn proto_name(proto: u8) -> &'static str {
    match proto {
        TCP => "tcp",
        UDP => "udp",
        ICMPV6 => "icmpv6",
        _ => "icmp",
    }
}

impl Config {
    /// The kernel's defaults, in the same order of magnitude.
    pub fn new(iface: IfId, addr: Ipv4Addr) -> Config {
        Config {
            iface,
            addr,
            addr6: None,
            max_conns: 16384,
            ports: (32768, 60999),
            tcp_established: Duration::from_secs(7200),
            tcp_transitory: Duration::from_secs(120),
            udp_unreplied: Duration::from_secs(30),
            udp_replied: Duration::from_secs(180),
            icmp: Duration::from_secs(30),
            masquerade: true,
            forwards: Vec::new(),
            forwards6: Vec::new(),
            max_fragments: 1024,
            fragment_timeout: Duration::from_secs(30),
            hold: HoldLimits::NONE,
        }
    }
}

/// A connection as the inside host sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Flow {
    proto: u8,
    host: IpAddr,
    host_port: u16,
    remote: IpAddr,
    remote_port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    SynSent,
    Established,
    Closing,
    Closed,
    Unreplied,
    Replied,
}

impl State {
    /// A new connection's state.
    fn initial(proto: u8) -> State {
        if proto == TCP {
            State::SynSent
        } else {
            State::Unreplied
        }
    }

    fn name(self) -> &'static str {
        match self {
            State::SynSent => "syn_sent",
            State::Established => "established",
            State::Closing => "closing",
            State::Closed => "closed",
            State::Unreplied => "unreplied",
            State::Replied => "replied",
        }
    }
}

#[derive(Debug, Clone)]
struct Conn {
    flow: Flow,
    port: u16,
    state: State,
    expires: Instant,
}

/// Counters `nat/print` shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub created: u64,
    pub expired: u64,
    /// New connections refused: the table was full or no port was free.
    pub refused: u64,
    /// Later fragments that could not be translated (their first fragment was not seen in
    /// time, or they could not be held for it), dropped.
    pub fragments: u64,
    /// Later fragments held for their first one, which came before it.
    pub fragments_held: u64,
    /// Later fragments not held for their first one: the hold limits were reached.
    pub fragment_hold_full: u64,
    /// Held fragments whose first one did not come in time.
    pub fragment_hold_timeout: u64,
    /// Later fragments translated as their first one was.
    pub fragments_translated: u64,
    /// First fragments whose datagram could not be remembered (the fragment table was
    /// full): their later fragments are dropped.
    pub fragment_table_full: u64,
    /// IPv6 packets dropped for their extension-header chain, by [`ext6::Error`].
    pub ext_truncated: u64,
    pub ext_too_long: u64,
    pub ext_misordered: u64,
    /// ICMP errors whose quoted header was translated.
    pub icmp_errors: u64,
    /// Connections opened through a port forward.
    pub forwarded: u64,
}

/// A masqueraded connection's key: (IPv6, protocol, translated port); IPv4 and IPv6 have
/// a port range each.
type Key = (bool, u8, u16);

/// A fragmented datagram as it arrives: IPv4's (source, destination, protocol,
/// identification), IPv6's (source, destination, identification) (RFC 8200 §4.5), and the
/// direction (inbound: arriving on the interface).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FragKey {
    inbound: bool,
    proto: u8,
    src: IpAddr,
    dst: IpAddr,
    id: u32,
}

/// What the datagram's first fragment became: the address its later fragments get
/// (inbound the destination, outbound the source), and how much of it went by.
#[derive(Debug, Clone, Copy)]
struct FragEntry {
    to: IpAddr,
    /// Its first fragment was left as it was (not translated): the entry only lets the later
    /// ones pass instead of being held, and gives way to a translated datagram's entry when
    /// the table is full (so first fragments nobody translates, for the router's own address
    /// say, cannot crowd out a connection's).
    pass: bool,
    /// Data bytes of its fragments seen, and its length once the last one was.
    seen: u32,
    total: Option<u32>,
    expires: Instant,
}

/// A later fragment held until its datagram's first one comes, and where it goes on then.
#[derive(Debug)]
struct Held {
    point: HookPoint,
    meta: PacketMeta,
    packet: Vec<u8>,
    expires: Instant,
}

/// The NAT: masquerade, SNAT and port forwards on one interface.
///
/// Fragments: only a datagram's first fragment carries the transport header, so it is
/// translated as any packet, and what it became is remembered by the datagram's identity
/// ([`FragKey`]) for [`Config::fragment_timeout`]; later fragments with that identity get
/// the same address (their ports are in the first fragment, so nothing else changes) until
/// all the datagram's bytes went by. This reassembles nothing (memory is
/// [`Config::max_fragments`] small entries) and lets fragments the router itself splits
/// further for a smaller MTU through. A later fragment that arrives before its first one
/// (a reordering link) is held ([`HookVerdict::Stolen`]), within [`Config::hold`], for at
/// most [`Config::fragment_timeout`]; right after the first one went by, the held ones go
/// on ([`Hook::poll_output`]), translated as it was, in the order they came. One beyond the
/// limits or held too long is dropped and counted (`Stats::fragments` and the router's
/// `fragment_hold_full` / `fragment_hold_timeout`). Held are the later fragments of what
/// arrives for our address, and outbound, with no masquerade, those of what may be a port
/// forward's reply; with a masquerade, an outbound later fragment with no remembered first
/// one gets the masquerade's address at once, which is what its first one gets. Where
/// fragments are held, a first fragment left as it was (not a translated connection's) is
/// remembered too, so its later fragments follow it as they are instead of waiting for it.
/// The IPv4 identification is kept: two inside hosts fragmenting to one remote with the same
/// identification at the same time would be mixed up by its reassembly (Linux's NAT
/// reassembles before translating, which avoids that at the cost of buffering).
pub struct Masquerade {
    config: Config,
    /// Translated port by flow.
    by_flow: HashMap<Flow, u16>,
    /// Connections by family, protocol and translated port.
    conns: HashMap<Key, Conn>,
    /// Fragmented datagrams whose later fragments are translated.
    frags: HashMap<FragKey, FragEntry>,
    /// Port-forwarded connections by flow as the inside server sees it (`host` the server,
    /// `remote` the client); `port` is the forward's public port.
    forwarded: HashMap<Flow, Conn>,
    /// Later fragments waiting for their first one, by datagram, in the order they came.
    held: HashMap<FragKey, Vec<Held>>,
    held_packets: usize,
    held_bytes: usize,
    /// When held fragments are next looked at for expiry: no later than the first expires
    /// (maybe earlier, if that one went on since); None when none are held.
    held_next: Option<Instant>,
    /// Held packets that go on or were dropped, for [`Hook::poll_output`].
    output: VecDeque<HookOutput>,
    next_port: u16,
    stats: Stats,
}

/// RFC 1624 incremental update of checksum `sum` when `old` bytes (16-bit aligned) become
/// `new`.
fn adjust(sum: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut s = u32::from(!sum);
    for c in old.chunks(2) {
        s += u32::from(!u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]));
    }
    for c in new.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]));
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn get16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn set16(b: &mut [u8], at: usize, v: u16) {
    if let Some(x) = b.get_mut(at..at + 2) {
        x.copy_from_slice(&v.to_be_bytes());
    }
}

/// Where the checksum sits in a transport header, and whether it covers the pseudo-header.
fn checksum_at(proto: u8) -> Option<(usize, bool)> {
    match proto {
        TCP => Some((16, true)),
        UDP => Some((6, true)),
        ICMP => Some((2, false)),
        ICMPV6 => Some((2, true)),
        _ => None,
    }
}

fn is_echo(proto: u8, l4: &[u8]) -> bool {
    match proto {
        ICMP => matches!(l4.first(), Some(0 | 8)),
        ICMPV6 => matches!(l4.first(), Some(128 | 129)),
        _ => false,
    }
}

/// Whether `l4` is an ICMP or ICMPv6 error (which quotes the packet it is about).
fn is_error(proto: u8, l4: &[u8]) -> bool {
    match proto {
        ICMP => matches!(l4.first(), Some(3 | 11 | 12)),
        ICMPV6 => matches!(l4.first(), Some(1..=4)),
        _ => false,
    }
}

/// The transport header's ports (for ICMP echo: the identifier twice), if it has them.
fn ports(proto: u8, l4: &[u8]) -> Option<(u16, u16)> {
    match proto {
        TCP | UDP => Some((get16(l4, 0)?, get16(l4, 2)?)),
        ICMP | ICMPV6 if is_echo(proto, l4) => {
            let id = get16(l4, 4)?;
            Some((id, id))
        }
        _ => None,
    }
}

/// Where a port is in the transport header: the source (ICMP echo: the identifier) or the
/// destination one.
fn port_at(proto: u8, source: bool) -> usize {
    match (proto, source) {
        (ICMP | ICMPV6, _) => 4,
        (_, true) => 0,
        (_, false) => 2,
    }
}

/// The parts of an IP header NAT looks at; `at` is where the header starts in the buffer.
#[derive(Debug, Clone, Copy)]
struct Ip {
    at: usize,
    v6: bool,
    /// The transport protocol (IPv6: at the end of the extension-header chain; for a later
    /// fragment the next header its fragment header names).
    proto: u8,
    src: IpAddr,
    dst: IpAddr,
    /// Where the transport header starts in the buffer (a later fragment: its data).
    l4: usize,
    /// The fragment header's fields (IPv4: identification, offset, MF) if it is one.
    frag: Option<Fragment>,
    /// Where the fragment's data starts and the packet ends (by its length fields).
    data: usize,
    end: usize,
}

/// Why a packet's headers are not looked into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unparsed {
    /// Not a whole IPv4 or IPv6 header.
    NotIp,
    /// An IPv6 packet (to `dst`) whose extension-header chain is refused.
    Chain(ext6::Error, Ipv6Addr),
}

impl Ip {
    /// A fragment other than a datagram's first (it has no transport header).
    fn is_later_fragment(&self) -> bool {
        self.frag.is_some_and(|f| f.offset != 0)
    }

    /// The header at `at` of `b`; `quoted` accepts one cut short (an ICMP error's quote),
    /// as long as the header and 8 bytes of transport header are there.
    fn parse(b: &[u8], at: usize, quoted: bool) -> Result<Ip, Unparsed> {
        let p = b.get(at..).ok_or(Unparsed::NotIp)?;
        match p.first().ok_or(Unparsed::NotIp)? >> 4 {
            4 => {
                let h = match Ipv4Packet::new_checked(p) {
                    Ok(h) => h,
                    Err(_) if quoted => Ipv4Packet::new_unchecked(p),
                    Err(_) => return Err(Unparsed::NotIp),
                };
                let hl = usize::from(h.header_len());
                if p.len() < 20 || hl < 20 || (quoted && p.len() < hl + 8) {
                    return Err(Unparsed::NotIp);
                }
                let frag = (h.more_frags() || h.frag_offset() != 0).then(|| Fragment {
                    id: u32::from(h.ident()),
                    offset: h.frag_offset(),
                    more: h.more_frags(),
                });
                Ok(Ip {
                    at,
                    v6: false,
                    proto: h.next_header().into(),
                    src: IpAddr::V4(h.src_addr()),
                    dst: IpAddr::V4(h.dst_addr()),
                    l4: at + hl,
                    frag,
                    data: at + hl,
                    end: at + usize::from(h.total_len()).max(hl).min(p.len()),
                })
            }
            6 => {
                let h = match Ipv6Packet::new_checked(p) {
                    Ok(h) => h,
                    Err(_) if quoted && p.len() >= 48 => Ipv6Packet::new_unchecked(p),
                    Err(_) => return Err(Unparsed::NotIp),
                };
                let end = (40 + usize::from(h.payload_len())).min(p.len());
                let upper = ext6::walk(h.next_header().into(), &p[40..end])
                    .map_err(|e| Unparsed::Chain(e, h.dst_addr()))?;
                let frag = upper.fragment;
                Ok(Ip {
                    at,
                    v6: true,
                    proto: upper.proto,
                    src: IpAddr::V6(h.src_addr()),
                    dst: IpAddr::V6(h.dst_addr()),
                    l4: at + 40 + upper.offset,
                    frag,
                    data: at + 40 + upper.fragment_data,
                    end: at + end,
                })
            }
            _ => Err(Unparsed::NotIp),
        }
    }

    /// Where the source (or destination) address is in the buffer.
    fn addr_at(&self, source: bool) -> usize {
        self.at
            + match (self.v6, source) {
                (false, true) => 12,
                (false, false) => 16,
                (true, true) => 8,
                (true, false) => 24,
            }
    }
}

/// An address's bytes without allocating: a buffer and how much of it is used.
fn octets(a: IpAddr) -> ([u8; 16], usize) {
    let mut b = [0; 16];
    match a {
        IpAddr::V4(a) => {
            b[..4].copy_from_slice(&a.octets());
            (b, 4)
        }
        IpAddr::V6(a) => (a.octets(), 16),
    }
}

/// Rewrites the source (or destination) address of `ip` in `packet` to `addr` and, when
/// `port` is given, the matching port, updating the transport checksum incrementally and
/// the IPv4 header checksum.
fn rewrite(packet: &mut [u8], ip: &Ip, source: bool, addr: IpAddr, port: Option<u16>) {
    let addr_at = ip.addr_at(source);
    let (new, len) = octets(addr);
    let new_addr = &new[..len];
    let mut old = [0; 16];
    match packet.get(addr_at..addr_at + len) {
        Some(a) => old[..len].copy_from_slice(a),
        None => return,
    }
    let old_addr = &old[..len];
    let p_at = ip.l4 + port_at(ip.proto, source);
    let old_port = get16(packet, p_at);
    if let Some((c, pseudo)) = checksum_at(ip.proto).filter(|_| !ip.is_later_fragment()) {
        if let Some(sum) = get16(packet, ip.l4 + c) {
            if !(ip.proto == UDP && sum == 0) {
                let mut s = sum;
                if let (Some(old), Some(new)) = (old_port, port) {
                    s = adjust(s, &old.to_be_bytes(), &new.to_be_bytes());
                }
                if pseudo {
                    s = adjust(s, old_addr, new_addr);
                }
                if ip.proto == UDP && s == 0 {
                    s = 0xffff;
                }
                set16(packet, ip.l4 + c, s);
            }
        }
    }
    packet[addr_at..addr_at + len].copy_from_slice(new_addr);
    if let Some(port) = port {
        set16(packet, p_at, port);
    }
    if !ip.v6 {
        if let Some(h) = packet.get_mut(ip.at..) {
            Ipv4Packet::new_unchecked(h).fill_checksum();
        }
    }
}

/// After an ICMP error and its quote changed: the quoted and outer IPv4 header checksums and
/// the ICMP checksum over the whole message (for ICMPv6 with the outer pseudo-header).
fn refill_error(packet: &mut [u8], quoted: &Ip) {
    if !quoted.v6 {
        if let Some(q) = packet.get_mut(quoted.at..) {
            Ipv4Packet::new_unchecked(q).fill_checksum();
        }
    }
    let Ok(outer) = Ip::parse(packet, 0, false) else {
        return;
    };
    match (outer.src, outer.dst) {
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let end = (40 + usize::from(Ipv6Packet::new_unchecked(&packet[..]).payload_len()))
                .min(packet.len());
            if let Some(m) = packet.get_mut(outer.l4..end) {
                Icmpv6Packet::new_unchecked(m).fill_checksum(&src, &dst);
            }
        }
        _ => {
            let end =
                usize::from(Ipv4Packet::new_unchecked(&packet[..]).total_len()).min(packet.len());
            set16(packet, outer.l4 + 2, 0);
            let sum = filo_vnl::wire::checksum::internet_checksum(
                packet.get(outer.l4..end).unwrap_or(&[]),
            );
            set16(packet, outer.l4 + 2, sum);
        }
    }
}

/// A connection's next state after a packet with transport header `l4`; `from_host` is true
/// for packets of the side that opened it.
fn next_state(proto: u8, state: State, l4: &[u8], from_host: bool) -> State {
    let mut state = state;
    if proto == TCP {
        let flags = l4.get(13).copied().unwrap_or(0);
        let (fin, syn, rst, ack) = (
            flags & 1 != 0,
            flags & 2 != 0,
            flags & 4 != 0,
            flags & 16 != 0,
        );
        state = if rst {
            State::Closed
        } else if fin || state == State::Closing {
            if state == State::Closed {
                State::Closed
            } else {
                State::Closing
            }
        } else if syn && !ack && from_host {
            State::SynSent
        } else if !from_host || (state == State::Established) || (ack && state != State::SynSent) {
            State::Established
        } else {
            state
        };
    } else if !from_host {
        state = State::Replied;
    }
    state
}

/// `addr:port`, with brackets around an IPv6 address.
fn endpoint(a: IpAddr, port: u16) -> String {
    match a {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

impl Masquerade {
    pub fn new(config: Config) -> Masquerade {
        Masquerade {
            next_port: config.ports.0,
            config,
            by_flow: HashMap::new(),
            conns: HashMap::new(),
            frags: HashMap::new(),
            forwarded: HashMap::new(),
            held: HashMap::new(),
            held_packets: 0,
            held_bytes: 0,
            held_next: None,
            output: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The port forwards, IPv4 first, in the order they were added.
    pub fn forwards(&self) -> Vec<Forward> {
        let v4 = self.config.forwards.iter().map(|f| Forward::V4(*f));
        v4.chain(self.config.forwards6.iter().map(|f| Forward::V6(*f)))
            .collect()
    }

    /// Adds a port forward at run time; connections already tracked stay. Refused when the
    /// family has no address here or the port is forwarded already.
    pub fn add_forward(&mut self, forward: Forward) -> Result<(), String> {
        let (v6, proto, port) = Self::forward_key(&forward);
        if self.my_addr(v6).is_none() {
            return Err(format!(
                "{forward}: no {} address to forward from on this interface",
                if v6 { "IPv6 (NAT66)" } else { "IPv4" }
            ));
        }
        if let Some(f) = self
            .forwards()
            .into_iter()
            .find(|f| Self::forward_key(f) == (v6, proto, port))
        {
            return Err(format!(
                "{forward}: {}:{port} is forwarded already ({f})",
                proto_name(proto)
            ));
        }
        match forward {
            Forward::V4(f) => self.config.forwards.push(f),
            Forward::V6(f) => self.config.forwards6.push(f),
        }
        Ok(())
    }

    /// A NAT that replaces `old` (its configuration changed in a way that cannot be done in
    /// place): `old`'s held fragments are dropped, and their drops (as
    /// `fragment_hold_timeout`) and whatever `old` had not handed over yet are this one's to
    /// hand over
    /// ([`Hook::poll_output`]), so nothing `old` took disappears uncounted.
    pub fn replacing(config: Config, old: &mut Masquerade) -> Masquerade {
        let mut m = Masquerade::new(config);
        m.output = std::mem::take(&mut old.output);
        let held = std::mem::take(&mut old.held)
            .into_values()
            .flatten()
            .count();
        for _ in 0..held {
            m.output
                .push_back(HookOutput::Dropped(DropReason::FragmentHoldTimeout));
        }
        m
    }

    /// Masquerades the forwarded packets leaving on the interface from now on (see
    /// [`Config::masquerade`]); the port-forwarded connections tracked stay.
    pub fn start_masquerade(&mut self) {
        self.config.masquerade = true;
    }

    /// Removes a port forward at run time and forgets its connections (its public port
    /// now belongs to the router again); other connections stay. The number forgotten.
    pub fn remove_forward(&mut self, forward: Forward) -> Result<usize, String> {
        let found = match forward {
            Forward::V4(f) => {
                let n = self.config.forwards.len();
                self.config.forwards.retain(|x| *x != f);
                n != self.config.forwards.len()
            }
            Forward::V6(f) => {
                let n = self.config.forwards6.len();
                self.config.forwards6.retain(|x| *x != f);
                n != self.config.forwards6.len()
            }
        };
        if !found {
            return Err(format!("{forward}: no such forward (fwd/print lists them)"));
        }
        let (_, proto, port) = Self::forward_key(&forward);
        let (to, to_port) = match forward {
            Forward::V4(f) => (IpAddr::V4(f.to), f.to_port),
            Forward::V6(f) => (IpAddr::V6(f.to), f.to_port),
        };
        let before = self.forwarded.len();
        self.forwarded.retain(|flow, c| {
            !(flow.proto == proto && c.port == port && flow.host == to && flow.host_port == to_port)
        });
        Ok(before - self.forwarded.len())
    }

    /// A forward's family, protocol and public port: what two forwards may not share.
    fn forward_key(f: &Forward) -> (bool, u8, u16) {
        match f {
            Forward::V4(f) => (false, f.proto, f.port),
            Forward::V6(f) => (true, f.proto, f.port),
        }
    }

    /// The router's address for the family of `ip`, if that family is translated.
    fn my_addr(&self, v6: bool) -> Option<IpAddr> {
        if v6 {
            self.config.addr6.map(IpAddr::V6)
        } else {
            Some(IpAddr::V4(self.config.addr)).filter(|_| !self.config.addr.is_unspecified())
        }
    }

    /// The port forward of `proto` at our `port` in the family of `v6`: its target address
    /// and port.
    fn forward_to(&self, v6: bool, proto: u8, port: u16) -> Option<(IpAddr, u16)> {
        if v6 {
            let f = self
                .config
                .forwards6
                .iter()
                .find(|f| f.proto == proto && f.port == port)?;
            Some((IpAddr::V6(f.to), f.to_port))
        } else {
            let f = self
                .config
                .forwards
                .iter()
                .find(|f| f.proto == proto && f.port == port)?;
            Some((IpAddr::V4(f.to), f.to_port))
        }
    }

    /// Whether the table (masqueraded and port-forwarded connections) is full.
    fn full(&self) -> bool {
        self.conns.len() + self.forwarded.len() >= self.config.max_conns
    }

    /// Removes `key` if it expired; true if it did.
    fn expire(&mut self, now: Instant, key: Key) -> bool {
        match self.conns.get(&key) {
            Some(c) if c.expires <= now => {
                let flow = c.flow;
                self.conns.remove(&key);
                self.by_flow.remove(&flow);
                self.stats.expired += 1;
                true
            }
            _ => false,
        }
    }

    fn sweep(&mut self, now: Instant) {
        let dead: Vec<Key> = self
            .conns
            .iter()
            .filter(|(_, c)| c.expires <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in dead {
            self.expire(now, k);
        }
        let before = self.forwarded.len();
        self.forwarded.retain(|_, c| c.expires > now);
        self.stats.expired += (before - self.forwarded.len()) as u64;
    }

    /// A translated port for a new connection of `proto` in the family of `v6`: the host's
    /// own (`wanted`) if free, else the next free one in the range.
    fn pick_port(&mut self, now: Instant, v6: bool, proto: u8, wanted: u16) -> Option<u16> {
        let (lo, hi) = self.config.ports;
        let free = |m: &mut Masquerade, p: u16| {
            !m.conns.contains_key(&(v6, proto, p)) || m.expire(now, (v6, proto, p))
        };
        // The host's own port when no other connection has it, as the kernel does.
        if wanted != 0 && free(self, wanted) {
            return Some(wanted);
        }
        for _ in 0..=(hi - lo) {
            let p = self.next_port;
            self.next_port = if p >= hi { lo } else { p + 1 };
            if free(self, p) {
                return Some(p);
            }
        }
        None
    }

    fn timeout(&self, state: State, proto: u8) -> Duration {
        match (proto, state) {
            (TCP, State::Established) => self.config.tcp_established,
            (TCP, State::Closed) => Duration::from_secs(10),
            (TCP, _) => self.config.tcp_transitory,
            (UDP, State::Replied) => self.config.udp_replied,
            (UDP, _) => self.config.udp_unreplied,
            _ => self.config.icmp,
        }
    }

    fn track(&mut self, now: Instant, key: Key, l4: &[u8], from_host: bool) {
        let Some(c) = self.conns.get(&key) else {
            return;
        };
        let proto = c.flow.proto;
        let state = next_state(proto, c.state, l4, from_host);
        let expires = now + self.timeout(state, proto);
        if let Some(c) = self.conns.get_mut(&key) {
            c.state = state;
            c.expires = expires;
        }
    }

    /// [`Masquerade::track`] for a port-forwarded connection; `from_client` is true for
    /// packets of the side that opened it.
    fn track_forwarded(&mut self, now: Instant, flow: Flow, l4: &[u8], from_client: bool) {
        let Some(c) = self.forwarded.get(&flow) else {
            return;
        };
        let state = next_state(flow.proto, c.state, l4, from_client);
        let expires = now + self.timeout(state, flow.proto);
        if let Some(c) = self.forwarded.get_mut(&flow) {
            c.state = state;
            c.expires = expires;
        }
    }

    /// The outer header of a packet NAT may translate; Err(verdict) when it is none (not
    /// IP: accepted), or an IPv6 packet of a translated family whose extension-header
    /// chain is refused (dropped and counted). `inbound` packets count only when they are
    /// for our address.
    fn outer(&mut self, packet: &[u8], inbound: bool) -> Result<Ip, HookVerdict> {
        match Ip::parse(packet, 0, false) {
            Ok(ip) => Ok(ip),
            Err(Unparsed::Chain(e, dst)) => {
                let me = self.my_addr(true);
                if me.is_none() || (inbound && me != Some(IpAddr::V6(dst))) {
                    return Err(HookVerdict::Accept);
                }
                match e {
                    ext6::Error::Truncated => self.stats.ext_truncated += 1,
                    ext6::Error::TooLong => self.stats.ext_too_long += 1,
                    ext6::Error::Misordered => self.stats.ext_misordered += 1,
                }
                Err(HookVerdict::Drop)
            }
            Err(Unparsed::NotIp) => Err(HookVerdict::Accept),
        }
    }

    fn frag_key(ip: &Ip, inbound: bool) -> Option<FragKey> {
        Some(FragKey {
            inbound,
            proto: if ip.v6 { 0 } else { ip.proto },
            src: ip.src,
            dst: ip.dst,
            id: ip.frag?.id,
        })
    }

    /// Counts the data of fragment `ip` into `e`; true once the whole datagram went by.
    fn frag_seen(e: &mut FragEntry, ip: &Ip) -> bool {
        let Some(f) = ip.frag else {
            return false;
        };
        let len = ip.end.saturating_sub(ip.data) as u32;
        e.seen = e.seen.saturating_add(len);
        if !f.more {
            e.total = Some(u32::from(f.offset) + len);
        }
        e.total.is_some_and(|t| e.seen >= t)
    }

    /// After a first fragment (`ip` as it arrived) was translated: its later fragments get
    /// `to` (inbound the destination, outbound the source).
    fn remember_fragment(&mut self, now: Instant, ip: &Ip, inbound: bool, to: IpAddr) {
        self.remember(now, ip, inbound, to, false);
    }

    /// As [`Masquerade::remember_fragment`]; `pass`: a first fragment left as it was.
    fn remember(&mut self, now: Instant, ip: &Ip, inbound: bool, to: IpAddr, pass: bool) {
        let Some(key) = Self::frag_key(ip, inbound).filter(|_| !ip.is_later_fragment()) else {
            return;
        };
        if self.frags.len() >= self.config.max_fragments && !self.frags.contains_key(&key) {
            self.frags.retain(|_, e| e.expires > now);
            // A translated datagram's entry takes the place of one that only lets fragments
            // pass.
            if self.frags.len() >= self.config.max_fragments && !pass {
                let evict = self.frags.iter().find(|(_, e)| e.pass).map(|(k, _)| *k);
                if let Some(k) = evict {
                    self.frags.remove(&k);
                }
            }
            if self.frags.len() >= self.config.max_fragments {
                self.stats.fragment_table_full += 1;
                return;
            }
        }
        let mut e = FragEntry {
            to,
            pass,
            seen: 0,
            total: None,
            expires: now + self.config.fragment_timeout,
        };
        // Later fragments the router split off this one follow it through here.
        if !Self::frag_seen(&mut e, ip) {
            self.frags.insert(key, e);
        }
    }

    /// The address a later fragment gets, as its first fragment did; None if that was not
    /// seen (or too long ago).
    fn later_fragment(&mut self, now: Instant, ip: &Ip, inbound: bool) -> Option<IpAddr> {
        let key = Self::frag_key(ip, inbound)?;
        let e = self.frags.get_mut(&key)?;
        if e.expires <= now {
            self.frags.remove(&key);
            return None;
        }
        let to = e.to;
        if Self::frag_seen(e, ip) {
            self.frags.remove(&key);
        }
        self.stats.fragments_translated += 1;
        Some(to)
    }

    /// Holds later fragment `ip` (`packet`, taken) until its first one comes, within the
    /// limits; beyond them (or with no holding) it is dropped and counted.
    fn hold(
        &mut self,
        now: Instant,
        ip: &Ip,
        inbound: bool,
        point: HookPoint,
        meta: &PacketMeta,
        packet: &mut Vec<u8>,
    ) -> HookVerdict {
        let limits = self.config.hold;
        let Some(key) = Self::frag_key(ip, inbound).filter(|_| limits.packets > 0) else {
            self.stats.fragments += 1;
            return HookVerdict::Drop;
        };
        self.expire_held(now);
        let len = packet.len();
        let (n, bytes) = self.held.get(&key).map_or((0, 0), |v| {
            (v.len(), v.iter().map(|h| h.packet.len()).sum::<usize>())
        });
        if self.held_packets >= limits.packets
            || self.held_bytes + len > limits.bytes
            || n >= limits.datagram_packets
            || bytes + len > limits.datagram_bytes
        {
            self.stats.fragments += 1;
            self.stats.fragment_hold_full += 1;
            packet.clear();
            self.output
                .push_back(HookOutput::Dropped(DropReason::FragmentHoldFull));
            return HookVerdict::Stolen;
        }
        // A buffer of its own size: a received one may be a recycled 64 KiB one.
        let copy = crate::core::with_headroom(packet);
        packet.clear();
        let expires = now + self.config.fragment_timeout;
        self.held.entry(key).or_default().push(Held {
            point,
            meta: *meta,
            packet: copy,
            expires,
        });
        self.held_next = Some(self.held_next.map_or(expires, |t| t.min(expires)));
        self.held_packets += 1;
        self.held_bytes += len;
        self.stats.fragments_held += 1;
        HookVerdict::Stolen
    }

    /// Drops (and counts) the held fragments whose first one did not come in time.
    fn expire_held(&mut self, now: Instant) {
        if self.held_next.is_none_or(|t| t > now) {
            return;
        }
        let mut expired = Vec::new();
        for list in self.held.values_mut() {
            list.retain(|h| {
                let keep = h.expires > now;
                if !keep {
                    expired.push(h.packet.len());
                }
                keep
            });
        }
        self.held.retain(|_, v| !v.is_empty());
        self.held_next = self.held.values().flatten().map(|h| h.expires).min();
        for len in expired {
            self.held_packets -= 1;
            self.held_bytes -= len;
            self.stats.fragments += 1;
            self.stats.fragment_hold_timeout += 1;
            self.output
                .push_back(HookOutput::Dropped(DropReason::FragmentHoldTimeout));
        }
    }

    /// After datagram `key`'s first fragment went by: its held fragments go on, translated
    /// as it was (as they came if it was not translated).
    fn release(&mut self, now: Instant, key: FragKey) {
        let Some(list) = self.held.remove(&key) else {
            return;
        };
        if self.held.is_empty() {
            self.held_next = None;
        }
        for h in list {
            self.held_packets -= 1;
            self.held_bytes -= h.packet.len();
            let mut packet = h.packet;
            if let Ok(ip) = Ip::parse(&packet, 0, false) {
                if let Some(to) = self.later_fragment(now, &ip, key.inbound) {
                    rewrite(&mut packet, &ip, !key.inbound, to, None);
                }
            }
            self.output.push_back(HookOutput::Resume {
                point: h.point,
                meta: h.meta,
                packet,
            });
        }
    }

    /// Whether later fragments that come before their first one are held.
    fn holds(&self) -> bool {
        self.config.hold.packets > 0
    }

    /// Whether the later fragments of `ip`'s datagram are held when they come first: inbound
    /// those for our address, outbound (with no masquerade, which gives them our address
    /// anyway) those that may be a port forward's reply.
    fn holds_for(&self, ip: &Ip, inbound: bool) -> bool {
        self.holds()
            && if inbound {
                self.my_addr(ip.v6) == Some(ip.dst)
            } else {
                !self.config.masquerade && self.has_forwards(ip.v6)
            }
    }

    /// Whether port forwards of the family of `v6` exist.
    fn has_forwards(&self, v6: bool) -> bool {
        if v6 {
            !self.config.forwards6.is_empty()
        } else {
            !self.config.forwards.is_empty()
        }
    }

    /// POSTROUTING: a forwarded packet leaving on our interface (`ip` its header).
    fn outbound(
        &mut self,
        now: Instant,
        meta: &PacketMeta,
        packet: &mut Vec<u8>,
        ip: Ip,
    ) -> HookVerdict {
        let Some(me) = self.my_addr(ip.v6) else {
            return HookVerdict::Accept;
        };
        let (proto, src, dst) = (ip.proto, ip.src, ip.dst);
        if src == me {
            return HookVerdict::Accept;
        }
        if ip.is_later_fragment() {
            if let Some(to) = self.later_fragment(now, &ip, false) {
                rewrite(packet, &ip, true, to, None);
                return HookVerdict::Accept;
            }
            // Maybe a port forward's reply whose first fragment is late.
            if self.holds_for(&ip, false) {
                return self.hold(now, &ip, false, HookPoint::Postrouting, meta, packet);
            }
        }
        let l4 = packet.get(ip.l4..).unwrap_or(&[]);
        let (error, l4_ports) = if ip.is_later_fragment() {
            (false, None)
        } else {
            (is_error(proto, l4), ports(proto, l4))
        };
        if error {
            if let Some(v) = self.outbound_error(packet, &ip, me) {
                return v;
            }
        }
        if !self.forwarded.is_empty() {
            if let Some((sport, dport)) = l4_ports {
                let flow = Flow {
                    proto,
                    host: src,
                    host_port: sport,
                    remote: dst,
                    remote_port: dport,
                };
                if let Some(c) = self.forwarded.get(&flow) {
                    if c.expires > now {
                        let port = c.port;
                        self.track_forwarded(now, flow, &packet[ip.l4..], false);
                        rewrite(packet, &ip, true, me, Some(port));
                        self.remember_fragment(now, &ip, false, me);
                        return HookVerdict::Accept;
                    }
                }
            }
        }
        if !self.config.masquerade {
            return HookVerdict::Accept;
        }
        let Some((sport, dport)) = l4_ports else {
            // A later fragment or another protocol: the address alone (one host at a time
            // per remote, as the kernel).
            rewrite(packet, &ip, true, me, None);
            return HookVerdict::Accept;
        };
        let echo = matches!(proto, ICMP | ICMPV6);
        let flow = Flow {
            proto,
            host: src,
            host_port: sport,
            remote: dst,
            remote_port: if echo { 0 } else { dport },
        };
        let v6 = ip.v6;
        let port = match self.by_flow.get(&flow).copied() {
            Some(port) if !self.expire(now, (v6, proto, port)) => port,
            _ => {
                if self.full() {
                    self.sweep(now);
                }
                let port = if self.full() {
                    None
                } else {
                    self.pick_port(now, v6, proto, sport)
                };
                let Some(port) = port else {
                    self.stats.refused += 1;
                    return HookVerdict::Drop;
                };
                let state = State::initial(proto);
                self.conns.insert(
                    (v6, proto, port),
                    Conn {
                        flow,
                        port,
                        state,
                        expires: now + self.timeout(state, proto),
                    },
                );
                self.by_flow.insert(flow, port);
                self.stats.created += 1;
                port
            }
        };
        self.track(now, (v6, proto, port), &packet[ip.l4..], true);
        rewrite(packet, &ip, true, me, Some(port));
        self.remember_fragment(now, &ip, false, me);
        HookVerdict::Accept
    }

    /// An ICMP error leaving from an inside host about a packet a translated connection
    /// brought it (port unreachable for a reply, …): the outer source and the quoted
    /// destination become ours again. None if the quote is no connection's.
    fn outbound_error(&mut self, packet: &mut [u8], outer: &Ip, me: IpAddr) -> Option<HookVerdict> {
        let q = Ip::parse(packet, outer.l4 + 8, true).ok()?;
        let (sport, dport) = ports(q.proto, packet.get(q.l4..)?)?;
        let echo = matches!(q.proto, ICMP | ICMPV6);
        let flow = Flow {
            proto: q.proto,
            host: q.dst,
            host_port: dport,
            remote: q.src,
            remote_port: if echo { 0 } else { sport },
        };
        let port = match self.by_flow.get(&flow) {
            Some(&p) => p,
            None => self.forwarded.get(&flow)?.port,
        };
        rewrite(packet, &q, false, me, Some(port));
        rewrite(packet, outer, true, me, None);
        refill_error(packet, &q);
        self.stats.icmp_errors += 1;
        Some(HookVerdict::Accept)
    }

    /// POSTROUTING of the router's own packets: an ICMP error it sends about a packet of a
    /// translated connection (time exceeded, host unreachable for a port forward's dead
    /// server) quotes it as the remote side sent it, to our address and port.
    fn local_error(&mut self, packet: &mut [u8]) -> HookVerdict {
        let Ok(ip) = Ip::parse(packet, 0, false) else {
            return HookVerdict::Accept;
        };
        if let Some(me) = self.my_addr(ip.v6) {
            if is_error(ip.proto, packet.get(ip.l4..).unwrap_or(&[])) {
                self.outbound_error(packet, &ip, me);
            }
        }
        HookVerdict::Accept
    }

    /// PREROUTING: a packet arriving on our interface for our address (`ip` its header).
    fn inbound(
        &mut self,
        now: Instant,
        meta: &PacketMeta,
        packet: &mut Vec<u8>,
        ip: Ip,
    ) -> HookVerdict {
        if self.my_addr(ip.v6) != Some(ip.dst) {
            return HookVerdict::Accept;
        }
        let (proto, src) = (ip.proto, ip.src);
        if ip.is_later_fragment() {
            let Some(to) = self.later_fragment(now, &ip, true) else {
                return self.hold(now, &ip, true, HookPoint::Prerouting, meta, packet);
            };
            rewrite(packet, &ip, false, to, None);
            return HookVerdict::Accept;
        }
        let l4 = packet.get(ip.l4..).unwrap_or(&[]);
        if is_error(proto, l4) {
            return self.inbound_error(packet, &ip);
        }
        // Echo requests (and NDP) to the router are its own to answer.
        if matches!(proto, ICMP | ICMPV6) && !matches!(l4.first(), Some(0 | 129)) {
            return HookVerdict::Accept;
        }
        let Some((sport, dport)) = ports(proto, l4) else {
            return HookVerdict::Accept;
        };
        let key = (ip.v6, proto, dport);
        self.expire(now, key);
        let remote_port = if matches!(proto, ICMP | ICMPV6) {
            0
        } else {
            sport
        };
        let Some(c) = self
            .conns
            .get(&key)
            .filter(|c| c.flow.remote == src && c.flow.remote_port == remote_port)
        else {
            // Not a reply to a masqueraded connection: a port forward's, or the router's own.
            return self.inbound_forward(now, packet, &ip, sport, dport);
        };
        let flow = c.flow;
        self.track(now, key, &packet[ip.l4..], false);
        rewrite(packet, &ip, false, flow.host, Some(flow.host_port));
        self.remember_fragment(now, &ip, true, flow.host);
        HookVerdict::Accept
    }

    /// PREROUTING: a TCP or UDP packet for our address that no masqueraded connection
    /// claims; a port forward's if one matches `dport` (new connections are tracked).
    fn inbound_forward(
        &mut self,
        now: Instant,
        packet: &mut [u8],
        ip: &Ip,
        sport: u16,
        dport: u16,
    ) -> HookVerdict {
        let proto = ip.proto;
        let Some((to, to_port)) = self.forward_to(ip.v6, proto, dport) else {
            return HookVerdict::Accept;
        };
        let flow = Flow {
            proto,
            host: to,
            host_port: to_port,
            remote: ip.src,
            remote_port: sport,
        };
        if self.forwarded.get(&flow).is_some_and(|c| c.expires <= now) {
            self.forwarded.remove(&flow);
            self.stats.expired += 1;
        }
        if !self.forwarded.contains_key(&flow) {
            if self.full() {
                self.sweep(now);
            }
            if self.full() {
                self.stats.refused += 1;
                return HookVerdict::Drop;
            }
            let state = State::initial(proto);
            self.forwarded.insert(
                flow,
                Conn {
                    flow,
                    port: dport,
                    state,
                    expires: now + self.timeout(state, proto),
                },
            );
            self.stats.created += 1;
            self.stats.forwarded += 1;
        }
        self.track_forwarded(now, flow, &packet[ip.l4..], true);
        rewrite(packet, ip, false, to, Some(to_port));
        self.remember_fragment(now, ip, true, to);
        HookVerdict::Accept
    }

    /// The connection a packet we sent (source our address and `port`, to `remote`:
    /// `remote_port`) belongs to: a masqueraded or a port-forwarded one.
    fn sent_by(&self, proto: u8, port: u16, remote: IpAddr, remote_port: u16) -> Option<Flow> {
        let v6 = remote.is_ipv6();
        if let Some(c) = self.conns.get(&(v6, proto, port)) {
            if c.flow.remote == remote {
                return Some(c.flow);
            }
        }
        let (to, to_port) = self.forward_to(v6, proto, port)?;
        let flow = Flow {
            proto,
            host: to,
            host_port: to_port,
            remote,
            remote_port,
        };
        self.forwarded.contains_key(&flow).then_some(flow)
    }

    /// An ICMP error to our address quoting a translated packet: the outer destination, the
    /// quoted source address and port go back to the inside host's.
    fn inbound_error(&mut self, packet: &mut [u8], outer: &Ip) -> HookVerdict {
        let Ok(q) = Ip::parse(packet, outer.l4 + 8, true) else {
            return HookVerdict::Accept;
        };
        if Some(q.src) != self.my_addr(q.v6) {
            return HookVerdict::Accept;
        }
        let Some((sport, dport)) = ports(q.proto, packet.get(q.l4..).unwrap_or(&[])) else {
            return HookVerdict::Accept;
        };
        let Some(flow) = self.sent_by(q.proto, sport, q.dst, dport) else {
            return HookVerdict::Accept;
        };
        // The quoted packet: source address and port back to the host's.
        rewrite(packet, &q, true, flow.host, Some(flow.host_port));
        // The outer destination, and the ICMP checksum over the changed message.
        rewrite(packet, outer, false, flow.host, None);
        refill_error(packet, &q);
        self.stats.icmp_errors += 1;
        HookVerdict::Accept
    }
}

impl Hook for Masquerade {
    fn hook(
        &mut self,
        now: Instant,
        point: HookPoint,
        meta: &PacketMeta,
        packet: &mut Vec<u8>,
    ) -> HookVerdict {
        let (inbound, v) = match point {
            HookPoint::Postrouting
                if meta.out_iface == Some(self.config.iface)
                    && meta.in_iface.is_some_and(|i| i != self.config.iface) =>
            {
                (false, None)
            }
            HookPoint::Postrouting
                if meta.out_iface == Some(self.config.iface) && meta.in_iface.is_none() =>
            {
                return self.local_error(packet);
            }
            HookPoint::Prerouting if meta.in_iface == Some(self.config.iface) => (true, None),
            _ => (false, Some(HookVerdict::Accept)),
        };
        if let Some(v) = v {
            return v;
        }
        let ip = match self.outer(packet, inbound) {
            Ok(ip) => ip,
            Err(v) => return v,
        };
        // A first fragment's datagram, as it arrived.
        let tracked = self.holds() || !self.held.is_empty();
        let first = match tracked && !ip.is_later_fragment() {
            true => Self::frag_key(&ip, inbound),
            false => None,
        };
        let v = if inbound {
            self.inbound(now, meta, packet, ip)
        } else {
            self.outbound(now, meta, packet, ip)
        };
        if let Some(key) = first {
            // A first fragment left as it was (not ours to translate) or translated without
            // remembering: its later fragments get what it got too, instead of being held
            // for a first fragment that went by already.
            if self.holds_for(&ip, inbound)
                && v == HookVerdict::Accept
                && !self.frags.contains_key(&key)
            {
                if let Ok(now_ip) = Ip::parse(packet, 0, false) {
                    let to = if inbound { now_ip.dst } else { now_ip.src };
                    let pass = to == if inbound { ip.dst } else { ip.src };
                    self.remember(now, &ip, inbound, to, pass);
                }
            }
            // Those held for it go on right after it.
            self.release(now, key);
        }
        v
    }

    fn poll_output(&mut self, now: Instant) -> Option<HookOutput> {
        self.expire_held(now);
        self.output.pop_front()
    }

    fn poll_at(&self) -> Option<Instant> {
        self.held_next
    }

    fn name(&self) -> &'static str {
        "nat"
    }

    /// `fwd/print`, `fwd/add IF RULE`, `fwd/del IF RULE`: the router console's port
    /// forwards, IF the interface number (another interface's: None, not ours) and RULE as
    /// [`Forward::parse`] reads it. `fwd/print` answers `IF RULE` lines.
    fn command(&mut self, cmd: &str, args: &str) -> Option<Result<Vec<String>, String>> {
        if cmd == "fwd/print" {
            let me = self.config.iface;
            return Some(Ok(self
                .forwards()
                .iter()
                .map(|f| format!("{me} {f}"))
                .collect()));
        }
        let (iface, rule) = args.trim().split_once(' ')?;
        if iface.parse::<IfId>().ok()? != self.config.iface {
            return None;
        }
        let forward = match Forward::parse(rule.trim()) {
            Ok(f) => f,
            Err(e) => return Some(Err(e)),
        };
        Some(match cmd {
            "fwd/add" => self
                .add_forward(forward)
                .map(|()| vec![format!("forward {forward} added")]),
            "fwd/del" => self.remove_forward(forward).map(|n| {
                vec![format!(
                    "forward {forward} deleted, {n} of its connections forgotten"
                )]
            }),
            _ => return None,
        })
    }

    fn print(&self, now: Instant) -> Vec<String> {
        let mut conns: Vec<&Conn> = self.conns.values().filter(|c| c.expires > now).collect();
        conns.sort_by_key(|c| c.flow);
        let mut out: Vec<String> = conns
            .iter()
            .map(|c| {
                let me = self.my_addr(c.flow.host.is_ipv6()).unwrap_or(c.flow.host);
                format!(
                    "{} {} -> {} as {} {} expires_in {}",
                    proto_name(c.flow.proto),
                    endpoint(c.flow.host, c.flow.host_port),
                    endpoint(c.flow.remote, c.flow.remote_port),
                    endpoint(me, c.port),
                    c.state.name(),
                    c.expires.saturating_duration_since(now).as_secs()
                )
            })
            .collect();
        let mut fwd: Vec<&Conn> = self
            .forwarded
            .values()
            .filter(|c| c.expires > now)
            .collect();
        fwd.sort_by_key(|c| c.flow);
        out.extend(fwd.iter().map(|c| {
            let me = self.my_addr(c.flow.host.is_ipv6()).unwrap_or(c.flow.host);
            format!(
                "{} {} -> {} forwarded to {} {} expires_in {}",
                proto_name(c.flow.proto),
                endpoint(c.flow.remote, c.flow.remote_port),
                endpoint(me, c.port),
                endpoint(c.flow.host, c.flow.host_port),
                c.state.name(),
                c.expires.saturating_duration_since(now).as_secs()
            )
        }));
        let forwards = self.config.forwards.iter().map(|f| {
            (
                f.proto,
                IpAddr::V4(self.config.addr),
                f.port,
                IpAddr::V4(f.to),
                f.to_port,
            )
        });
        let forwards6 = self.config.forwards6.iter().filter_map(|f| {
            Some((
                f.proto,
                self.my_addr(true)?,
                f.port,
                IpAddr::V6(f.to),
                f.to_port,
            ))
        });
        out.extend(
            forwards
                .chain(forwards6)
                .map(|(proto, me, port, to, to_port)| {
                    format!(
                        "forward {} {} to {}",
                        proto_name(proto),
                        endpoint(me, port),
                        endpoint(to, to_port)
                    )
                }),
        );
        let s = self.stats;
        let addrs: Vec<String> = [
            self.my_addr(false),
            self.config
                .addr6
                .map(IpAddr::V6)
                .filter(|_| self.config.masquerade || !self.config.forwards6.is_empty()),
        ]
        .into_iter()
        .flatten()
        .map(|a| a.to_string())
        .collect();
        out.push(format!(
            "{} {} conns {} max {} created {} expired {} refused {} fragments_dropped {} icmp_errors {} forwarded {}",
            if self.config.masquerade {
                "masquerade"
            } else {
                "nat"
            },
            addrs.join(" "),
            conns.len() + fwd.len(),
            self.config.max_conns,
            s.created,
            s.expired,
            s.refused,
            s.fragments,
            s.icmp_errors,
            s.forwarded
        ));
        out.push(format!(
            "fragment_table {} max {} fragments_translated {} fragment_table_full {} fragments_held {} held_now {} fragment_hold_full {} fragment_hold_timeout {} ext_truncated {} ext_too_long {} ext_misordered {}",
            self.frags.values().filter(|e| e.expires > now).count(),
            self.config.max_fragments,
            s.fragments_translated,
            s.fragment_table_full,
            s.fragments_held,
            self.held_packets,
            s.fragment_hold_full,
            s.fragment_hold_timeout,
            s.ext_truncated,
            s.ext_too_long,
            s.ext_misordered
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{IpAddress, IpProtocol, Ipv4Repr, TcpPacket, UdpPacket};
    use std::net::Ipv6Addr;

    const HOST: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 10);
    const REMOTE: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 20);
    const ME: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);
    const OUT: PacketMeta = PacketMeta {
        in_iface: Some(0),
        out_iface: Some(1),
    };
    const IN: PacketMeta = PacketMeta {
        in_iface: Some(1),
        out_iface: None,
    };

    fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
        let repr = Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Udp,
            payload_len: 12,
            hop_limit: 64,
        };
        let mut b = vec![0; 32];
        repr.emit(
            &mut Ipv4Packet::new_unchecked(&mut b[..]),
            &ChecksumCapabilities::default(),
        );
        let mut u = UdpPacket::new_unchecked(&mut b[20..]);
        u.set_src_port(sport);
        u.set_dst_port(dport);
        u.set_len(12);
        u.payload_mut().copy_from_slice(b"data");
        u.fill_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst));
        b
    }

    fn check_udp(b: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
        let p = Ipv4Packet::new_checked(b).unwrap();
        assert!(p.verify_checksum());
        let u = UdpPacket::new_checked(p.payload()).unwrap();
        assert!(u.verify_checksum(
            &IpAddress::Ipv4(p.src_addr()),
            &IpAddress::Ipv4(p.dst_addr())
        ));
        (p.src_addr(), u.src_port(), p.dst_addr(), u.dst_port())
    }

    /// The ICMP error `e` from `from` about `packet`.
    fn v4_err(from: Ipv4Addr, packet: &[u8], e: crate::icmp::V4Error) -> Vec<u8> {
        crate::icmp::v4_error(from, &Ipv4Packet::new_checked(packet).unwrap(), e)
    }

    /// An IPv4 ICMP error's outer source and destination and its quoted UDP packet's
    /// addresses and ports, every checksum checked.
    fn check_error(err: &[u8]) -> ((Ipv4Addr, Ipv4Addr), (Ipv4Addr, u16, Ipv4Addr, u16)) {
        let outer = Ipv4Packet::new_checked(err).unwrap();
        assert!(outer.verify_checksum());
        let icmp = smoltcp::wire::Icmpv4Packet::new_checked(outer.payload()).unwrap();
        assert!(icmp.verify_checksum());
        ((outer.src_addr(), outer.dst_addr()), check_udp(icmp.data()))
    }

    #[test]
    fn udp_is_translated_out_and_back_with_valid_checksums() {
        let now = Instant::now();
        let mut m = Masquerade::new(Config::new(1, ME));
        let mut p = udp(HOST, 40000, REMOTE, 53);
        assert_eq!(
            m.hook(now, HookPoint::Postrouting, &OUT, &mut p),
            HookVerdict::Accept
        );
        assert_eq!(
            check_udp(&p),
            (ME, 40000, REMOTE, 53),
            "the host's port is kept when free"
        );
        // A second host with the same port gets another one.
        let mut p2 = udp(Ipv4Addr::new(10, 1, 0, 11), 40000, REMOTE, 53);
        m.hook(now, HookPoint::Postrouting, &OUT, &mut p2);
        let (_, port2, _, _) = check_udp(&p2);
        assert_ne!(port2, 40000);
        let mut reply = udp(REMOTE, 53, ME, port2);
        m.hook(now, HookPoint::Prerouting, &IN, &mut reply);
        assert_eq!(
            check_udp(&reply),
            (REMOTE, 53, Ipv4Addr::new(10, 1, 0, 11), 40000)
        );
        // From another remote port: not a reply, left for the router.
        let mut stray = udp(REMOTE, 54, ME, port2);
        m.hook(now, HookPoint::Prerouting, &IN, &mut stray);
        assert_eq!(check_udp(&stray).2, ME);
        // After the timeout the mapping is gone.
        let later = now + Duration::from_secs(181);
        let mut late = udp(REMOTE, 53, ME, port2);
        m.hook(later, HookPoint::Prerouting, &IN, &mut late);
        assert_eq!(check_udp(&late).2, ME);
    }

    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 50);

    /// No masquerade, UDP to our port 8053 forwarded to [`SERVER`]:53.
    fn forwarding() -> Masquerade {
        let mut c = Config::new(1, ME);
        c.masquerade = false;
        c.forwards = vec![PortForward::parse("udp:8053=10.1.0.50:53").unwrap()];
        Masquerade::new(c)
    }

    #[test]
    fn forwards_added_and_removed_at_run_time_keep_the_other_connections() {
        let now = Instant::now();
        let mut c = Config::new(1, ME);
        c.forwards = vec![PortForward::parse("udp:8053=10.1.0.50:53").unwrap()];
        let mut m = Masquerade::new(c);
        // A masqueraded connection and one through the forward.
        let mut out = udp(HOST, 40000, REMOTE, 53);
        m.hook(now, HookPoint::Postrouting, &OUT, &mut out);
        let mut p = udp(REMOTE, 4000, ME, 8053);
        m.hook(now, HookPoint::Prerouting, &IN, &mut p);
        assert_eq!(check_udp(&p), (REMOTE, 4000, SERVER, 53));
        // Another forward, by the console's command (interface 1 is ours, 0 is not).
        let add = |m: &mut Masquerade, cmd: &str, args: &str| m.command(cmd, args);
        assert_eq!(add(&mut m, "fwd/add", "0 udp:9000=10.1.0.60:53"), None);
        assert_eq!(
            add(&mut m, "fwd/add", "1 udp:9000=10.1.0.60"),
            Some(Ok(
                vec!["forward udp:9000=10.1.0.60:9000 added".to_string()]
            ))
        );
        let e = add(&mut m, "fwd/add", "1 udp:9000=10.1.0.61:53")
            .unwrap()
            .unwrap_err();
        assert!(
            e.contains("forwarded already (udp:9000=10.1.0.60:9000)"),
            "{e}"
        );
        let e = add(&mut m, "fwd/add", "1 udp:9000=[fd01::5]:53")
            .unwrap()
            .unwrap_err();
        assert!(e.contains("no IPv6 (NAT66) address"), "{e}");
        let e = add(&mut m, "fwd/add", "1 sctp:9000=10.1.0.60")
            .unwrap()
            .unwrap_err();
        assert!(e.contains("protocol \"sctp\""), "{e}");
        let mut p2 = udp(REMOTE, 4001, ME, 9000);
        m.hook(now, HookPoint::Prerouting, &IN, &mut p2);
        assert_eq!(check_udp(&p2).2, Ipv4Addr::new(10, 1, 0, 60));
        assert_eq!(
            m.command("fwd/print", ""),
            Some(Ok(vec![
                "1 udp:8053=10.1.0.50:53".to_string(),
                "1 udp:9000=10.1.0.60:9000".to_string()
            ]))
        );
        // The first forward goes, and its connection with it; the rest stay.
        assert_eq!(
            m.command("fwd/del", "1 udp:8053=10.1.0.50:53"),
            Some(Ok(vec![
                "forward udp:8053=10.1.0.50:53 deleted, 1 of its connections forgotten".to_string()
            ]))
        );
        let e = m
            .command("fwd/del", "1 udp:8053=10.1.0.50:53")
            .unwrap()
            .unwrap_err();
        assert!(e.contains("no such forward"), "{e}");
        let print = m.print(now);
        assert!(
            print
                .iter()
                .any(|l| l.starts_with("udp 10.1.0.10:40000 -> 10.9.0.20:53 as 10.9.0.2:40000")),
            "{print:?}"
        );
        assert!(
            print
                .iter()
                .any(|l| l.starts_with("udp 10.9.0.20:4001 -> 10.9.0.2:9000 forwarded to")),
            "{print:?}"
        );
        assert!(!print.iter().any(|l| l.contains(":8053")), "{print:?}");
        // The masqueraded connection's reply still comes back; the old forward's port is
        // the router's own again.
        let mut reply = udp(REMOTE, 53, ME, 40000);
        m.hook(now, HookPoint::Prerouting, &IN, &mut reply);
        assert_eq!(check_udp(&reply).2, HOST);
        let mut p = udp(REMOTE, 4000, ME, 8053);
        m.hook(now, HookPoint::Prerouting, &IN, &mut p);
        assert_eq!(check_udp(&p).2, ME);
    }

    #[test]
    fn port_forwards_reach_the_inside_server_and_replies_come_back_from_the_router() {
        let now = Instant::now();
        let (server, mut m) = (SERVER, forwarding());
        let mut p = udp(REMOTE, 4000, ME, 8053);
        m.hook(now, HookPoint::Prerouting, &IN, &mut p);
        assert_eq!(check_udp(&p), (REMOTE, 4000, server, 53));
        let mut reply = udp(server, 53, REMOTE, 4000);
        m.hook(now, HookPoint::Postrouting, &OUT, &mut reply);
        assert_eq!(check_udp(&reply), (ME, 8053, REMOTE, 4000));
        // Another port is not forwarded; without masquerade the LAN's own traffic is not
        // translated.
        let mut other = udp(REMOTE, 4000, ME, 8054);
        m.hook(now, HookPoint::Prerouting, &IN, &mut other);
        assert_eq!(check_udp(&other).2, ME);
        let mut own = udp(server, 5000, REMOTE, 53);
        m.hook(now, HookPoint::Postrouting, &OUT, &mut own);
        assert_eq!(check_udp(&own).0, server);
        assert_eq!(m.stats().forwarded, 1);
        assert!(m.print(now)[0].contains("forwarded to 10.1.0.50:53"));
    }

    #[test]
    fn port_forward_syntax_errors_name_the_part() {
        assert_eq!(
            PortForward::parse("tcp:8080=10.1.0.50").unwrap(),
            PortForward {
                proto: TCP,
                port: 8080,
                to: Ipv4Addr::new(10, 1, 0, 50),
                to_port: 8080
            }
        );
        for (bad, what) in [
            ("sctp:80=10.1.0.5:80", "sctp"),
            ("tcp:x=10.1.0.5", "\"x\""),
            ("tcp:80", "no '='"),
            ("tcp:80=10.1.0:80", "\"10.1.0\""),
            ("tcp:0=10.1.0.5", "port 0"),
        ] {
            let e = PortForward::parse(bad).unwrap_err();
            assert!(e.contains(what), "{bad}: {e}");
        }
    }

    #[test]
    fn a_full_table_refuses_and_counts() {
        let now = Instant::now();
        let mut c = Config::new(1, ME);
        c.max_conns = 2;
        let mut m = Masquerade::new(c);
        for port in [1000, 1001] {
            let mut p = udp(HOST, port, REMOTE, 53);
            assert_eq!(
                m.hook(now, HookPoint::Postrouting, &OUT, &mut p),
                HookVerdict::Accept
            );
        }
        let mut p = udp(HOST, 1002, REMOTE, 53);
        assert_eq!(
            m.hook(now, HookPoint::Postrouting, &OUT, &mut p),
            HookVerdict::Drop
        );
        assert_eq!(m.stats().refused, 1);
        // Once the others expire there is room again.
        let mut p = udp(HOST, 1002, REMOTE, 53);
        let later = now + Duration::from_secs(31);
        assert_eq!(
            m.hook(later, HookPoint::Postrouting, &OUT, &mut p),
            HookVerdict::Accept
        );
        assert_eq!(m.stats().expired, 2);
    }

    #[test]
    fn icmp_errors_about_translated_packets_are_translated_back() {
        let now = Instant::now();
        let mut m = Masquerade::new(Config::new(1, ME));
        let mut p = udp(HOST, 40000, REMOTE, 33434);
        m.hook(now, HookPoint::Postrouting, &OUT, &mut p);
        // A router further on says time exceeded, quoting the translated packet.
        let far = Ipv4Addr::new(10, 9, 0, 1);
        let mut err = v4_err(far, &p, crate::icmp::V4Error::TTL_EXCEEDED);
        m.hook(now, HookPoint::Prerouting, &IN, &mut err);
        assert_eq!(
            check_error(&err),
            ((far, HOST), (HOST, 40000, REMOTE, 33434))
        );
        assert_eq!(m.stats().icmp_errors, 1);
    }

    #[test]
    fn tcp_states_follow_the_flags() {
        let now = Instant::now();
        let mut m = Masquerade::new(Config::new(1, ME));
        let tcp = |src: Ipv4Addr,
                   sport: u16,
                   dst: Ipv4Addr,
                   dport: u16,
                   syn: bool,
                   ack: bool,
                   fin: bool| {
            let repr = Ipv4Repr {
                src_addr: src,
                dst_addr: dst,
                next_header: IpProtocol::Tcp,
                payload_len: 20,
                hop_limit: 64,
            };
            let mut b = vec![0; 40];
            repr.emit(
                &mut Ipv4Packet::new_unchecked(&mut b[..]),
                &ChecksumCapabilities::default(),
            );
            let mut t = TcpPacket::new_unchecked(&mut b[20..]);
            t.set_src_port(sport);
            t.set_dst_port(dport);
            t.set_header_len(20);
            t.set_syn(syn);
            t.set_ack(ack);
            t.set_fin(fin);
            t.fill_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst));
            b
        };
        let state = |m: &Masquerade| m.print(now)[0].split(' ').nth(6).unwrap().to_string();
        let mut p = tcp(HOST, 5000, REMOTE, 80, true, false, false);
        m.hook(now, HookPoint::Postrouting, &OUT, &mut p);
        assert_eq!(state(&m), "syn_sent");
        let mut p = tcp(REMOTE, 80, ME, 5000, true, true, false);
        m.hook(now, HookPoint::Prerouting, &IN, &mut p);
        let t = TcpPacket::new_checked(&p[20..]).unwrap();
        assert!(t.verify_checksum(&IpAddress::Ipv4(REMOTE), &IpAddress::Ipv4(HOST)));
        assert_eq!(state(&m), "established");
        let mut p = tcp(HOST, 5000, REMOTE, 80, false, true, true);
        m.hook(now, HookPoint::Postrouting, &OUT, &mut p);
        assert_eq!(state(&m), "closing");
    }

    const HOST6: Ipv6Addr = Ipv6Addr::new(0xfd01, 0, 0, 0, 0, 0, 0, 0x10);
    const REMOTE6: Ipv6Addr = Ipv6Addr::new(0xfd09, 0, 0, 0, 0, 0, 0, 0x20);
    const ME6: Ipv6Addr = Ipv6Addr::new(0xfd09, 0, 0, 0, 0, 0, 0, 2);

    fn check_udp6(b: &[u8]) -> (Ipv6Addr, u16, Ipv6Addr, u16) {
        let p = Ipv6Packet::new_checked(b).unwrap();
        let u = UdpPacket::new_checked(p.payload()).unwrap();
        assert!(u.verify_checksum(
            &IpAddress::Ipv6(p.src_addr()),
            &IpAddress::Ipv6(p.dst_addr())
        ));
        (p.src_addr(), u.src_port(), p.dst_addr(), u.dst_port())
    }

    fn nat66() -> Masquerade {
        let mut c = Config::new(1, ME);
        c.addr6 = Some(ME6);
        Masquerade::new(c)
    }

    #[test]
    fn ipv6_passes_untranslated_without_an_ipv6_address() {
        let now = Instant::now();
        let mut m = Masquerade::new(Config::new(1, ME));
        let mut p = filo_dhcp::v6::udp6(HOST6, REMOTE6, 40000, 53, b"data");
        m.hook(now, HookPoint::Postrouting, &OUT, &mut p);
        assert_eq!(check_udp6(&p), (HOST6, 40000, REMOTE6, 53));
    }

    #[test]
    fn nat66_translates_udp_echo_and_icmpv6_errors_out_and_back() {
        let now = Instant::now();
        let mut m = nat66();
        let mut p = filo_dhcp::v6::udp6(HOST6, REMOTE6, 40000, 53, b"data");
        m.hook(now, HookPoint::Postrouting, &OUT, &mut p);
        assert_eq!(check_udp6(&p), (ME6, 40000, REMOTE6, 53));
        // An IPv4 connection from the same port keeps it too: each family has its ports.
        let mut p4 = udp(HOST, 40000, REMOTE, 53);
        m.hook(now, HookPoint::Postrouting, &OUT, &mut p4);
        assert_eq!(check_udp(&p4).1, 40000);
        let mut reply = filo_dhcp::v6::udp6(REMOTE6, ME6, 53, 40000, b"back");
        m.hook(now, HookPoint::Prerouting, &IN, &mut reply);
        assert_eq!(check_udp6(&reply), (REMOTE6, 53, HOST6, 40000));
        // A router further on says packet too big, quoting the translated packet.
        let far = Ipv6Addr::new(0xfd09, 0, 0, 0, 0, 0, 0, 1);
        let mut err = crate::icmp::v6_error(
            far,
            &Ipv6Packet::new_checked(&p[..]).unwrap(),
            crate::icmp::V6Error::too_big(1280),
        );
        m.hook(now, HookPoint::Prerouting, &IN, &mut err);
        let outer = Ipv6Packet::new_checked(&err[..]).unwrap();
        assert_eq!((outer.src_addr(), outer.dst_addr()), (far, HOST6));
        let icmp = Icmpv6Packet::new_checked(outer.payload()).unwrap();
        assert!(icmp.verify_checksum(&far, &HOST6));
        assert_eq!(
            check_udp6(&outer.payload()[8..]),
            (HOST6, 40000, REMOTE6, 53)
        );
        // Echo: the identifier is the port.
        let mut echo = vec![128, 0, 0, 0, 0x12, 0x34, 0, 1, b'x'];
        let mut req = crate::icmp::ipv6_icmp(HOST6, REMOTE6, 64, echo.clone());
        m.hook(now, HookPoint::Postrouting, &OUT, &mut req);
        let q = Ipv6Packet::new_checked(&req[..]).unwrap();
        assert_eq!(q.src_addr(), ME6);
        assert!(Icmpv6Packet::new_checked(q.payload())
            .unwrap()
            .verify_checksum(&ME6, &REMOTE6));
        let id = get16(q.payload(), 4).unwrap();
        echo[0] = 129;
        echo[4..6].copy_from_slice(&id.to_be_bytes());
        let mut rep = crate::icmp::ipv6_icmp(REMOTE6, ME6, 64, echo);
        m.hook(now, HookPoint::Prerouting, &IN, &mut rep);
        let r = Ipv6Packet::new_checked(&rep[..]).unwrap();
        assert_eq!(r.dst_addr(), HOST6);
        assert_eq!(get16(r.payload(), 4), Some(0x1234));
        assert!(Icmpv6Packet::new_checked(r.payload())
            .unwrap()
            .verify_checksum(&REMOTE6, &HOST6));
        assert!(m
            .print(now)
            .iter()
            .any(|l| l
                .starts_with("udp [fd01::10]:40000 -> [fd09::20]:53 as [fd09::2]:40000 replied")));
        assert!(m.print(now).iter().any(|l| l.starts_with("icmpv6 ")));
        assert_eq!(m.stats().icmp_errors, 1);
        // The inside host's own error about a reply (port unreachable) leaves as ours.
        let mut reply = filo_dhcp::v6::udp6(REMOTE6, ME6, 53, 40000, b"late");
        m.hook(now, HookPoint::Prerouting, &IN, &mut reply);
        let mut unreach = crate::icmp::v6_error(
            HOST6,
            &Ipv6Packet::new_checked(&reply[..]).unwrap(),
            crate::icmp::V6Error::PORT_UNREACHABLE,
        );
        m.hook(now, HookPoint::Postrouting, &OUT, &mut unreach);
        let outer = Ipv6Packet::new_checked(&unreach[..]).unwrap();
        assert_eq!((outer.src_addr(), outer.dst_addr()), (ME6, REMOTE6));
        let icmp = Icmpv6Packet::new_checked(outer.payload()).unwrap();
        assert!(icmp.verify_checksum(&ME6, &REMOTE6));
        assert_eq!(check_udp6(&outer.payload()[8..]), (REMOTE6, 53, ME6, 40000));
    }

    #[test]
    fn icmp_errors_about_port_forwarded_connections_are_translated_both_ways() {
        let now = Instant::now();
        let (server, mut m) = (SERVER, forwarding());
        let mut p = udp(REMOTE, 4000, ME, 8053);
        m.hook(now, HookPoint::Prerouting, &IN, &mut p);
        // The server answers port unreachable: the client must see the router's address and
        // the public port in the quote.
        let mut err = v4_err(server, &p, crate::icmp::V4Error::PORT_UNREACHABLE);
        m.hook(now, HookPoint::Postrouting, &OUT, &mut err);
        assert_eq!(check_error(&err), ((ME, REMOTE), (REMOTE, 4000, ME, 8053)));
        // A reply of the server's that a router on the way cannot deliver: the error comes
        // back to the server about its own packet.
        let mut reply = udp(server, 53, REMOTE, 4000);
        m.hook(now, HookPoint::Postrouting, &OUT, &mut reply);
        let far = Ipv4Addr::new(10, 9, 0, 1);
        let mut err = v4_err(far, &reply, crate::icmp::V4Error::TTL_EXCEEDED);
        m.hook(now, HookPoint::Prerouting, &IN, &mut err);
        assert_eq!(
            check_error(&err),
            ((far, server), (server, 53, REMOTE, 4000))
        );
        assert_eq!(m.stats().icmp_errors, 2);
    }

    /// A UDP datagram from `src`:`sport` to `dst`:`dport` with `len` bytes of data, split
    /// into IPv4 fragments of `cut`-byte pieces (identification `id`), in order.
    fn udp_fragments(
        (src, sport): (Ipv4Addr, u16),
        (dst, dport): (Ipv4Addr, u16),
        id: u16,
        len: usize,
        cut: usize,
    ) -> Vec<Vec<u8>> {
        let mut d = vec![0; 8 + len];
        let mut u = UdpPacket::new_unchecked(&mut d[..]);
        u.set_src_port(sport);
        u.set_dst_port(dport);
        u.set_len((8 + len) as u16);
        for (i, b) in u.payload_mut().iter_mut().enumerate() {
            *b = i as u8;
        }
        u.fill_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst));
        d.chunks(cut)
            .enumerate()
            .map(|(i, piece)| {
                let repr = Ipv4Repr {
                    src_addr: src,
                    dst_addr: dst,
                    next_header: IpProtocol::Udp,
                    payload_len: piece.len(),
                    hop_limit: 64,
                };
                let mut b = vec![0; 20 + piece.len()];
                let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
                repr.emit(&mut p, &ChecksumCapabilities::default());
                p.set_ident(id);
                p.set_frag_offset((i * cut) as u16);
                p.set_more_frags((i + 1) * cut < d.len());
                p.set_dont_frag(false);
                p.fill_checksum();
                p.payload_mut().copy_from_slice(piece);
                b
            })
            .collect()
    }

    /// Reassembles IPv4 fragments (any order, one datagram): the addresses, every header
    /// checksum checked, and the UDP datagram's ports, its checksum checked.
    fn reassemble(frags: &[Vec<u8>]) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
        let mut data = Vec::new();
        let mut addrs = None;
        let mut sorted: Vec<&Vec<u8>> = frags.iter().collect();
        sorted.sort_by_key(|f| Ipv4Packet::new_checked(&f[..]).unwrap().frag_offset());
        for f in sorted {
            let p = Ipv4Packet::new_checked(&f[..]).unwrap();
            assert!(p.verify_checksum());
            assert_eq!(usize::from(p.frag_offset()), data.len());
            let a = (p.src_addr(), p.dst_addr());
            assert_eq!(*addrs.get_or_insert(a), a, "a fragment's addresses differ");
            data.extend_from_slice(p.payload());
        }
        let (src, dst) = addrs.unwrap();
        let u = UdpPacket::new_checked(&data[..]).unwrap();
        assert!(u.verify_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst)));
        (src, u.src_port(), dst, u.dst_port())
    }

    #[test]
    fn a_fragmented_reply_crosses_the_masquerade_whole_and_a_reordered_one_is_counted() {
        let now = Instant::now();
        let mut m = Masquerade::new(Config::new(1, ME));
        let mut out = udp_fragments((HOST, 40000), (REMOTE, 53), 7, 3000, 1480);
        assert_eq!(out.len(), 3);
        // The host's own port is taken by another host: the translation changes it.
        let mut other = udp(Ipv4Addr::new(10, 1, 0, 11), 40000, REMOTE, 53);
        m.hook(now, HookPoint::Postrouting, &OUT, &mut other);
        for f in out.iter_mut() {
            assert_eq!(
                m.hook(now, HookPoint::Postrouting, &OUT, f),
                HookVerdict::Accept
            );
        }
        let (src, port, dst, dport) = reassemble(&out);
        assert_eq!((src, dst, dport), (ME, REMOTE, 53));
        assert_ne!(port, 40000);
        // The reply, in order: every fragment reaches the host.
        let mut back = udp_fragments((REMOTE, 53), (ME, port), 9, 3000, 1480);
        for f in back.iter_mut() {
            assert_eq!(
                m.hook(now, HookPoint::Prerouting, &IN, f),
                HookVerdict::Accept
            );
        }
        assert_eq!(reassemble(&back), (REMOTE, 53, HOST, 40000));
        assert_eq!(m.stats().fragments_translated, 2 + 2);
        // The datagram went by whole: its identity is forgotten.
        assert!(m
            .print(now)
            .iter()
            .any(|l| l.starts_with("fragment_table 0 ")));
        // Out of order: a later fragment before its first one is dropped and counted, the
        // rest still translated.
        let mut back = udp_fragments((REMOTE, 53), (ME, port), 10, 3000, 1480);
        let last = back.len() - 1;
        assert_eq!(
            m.hook(now, HookPoint::Prerouting, &IN, &mut back[last]),
            HookVerdict::Drop
        );
        assert_eq!(m.stats().fragments, 1);
        for f in back[..last].iter_mut() {
            assert_eq!(
                m.hook(now, HookPoint::Prerouting, &IN, f),
                HookVerdict::Accept
            );
        }
        assert_eq!(
            Ipv4Packet::new_checked(&back[1][..]).unwrap().dst_addr(),
            HOST
        );
        // After the timeout a straggler is not translated.
        let mut late = udp_fragments((REMOTE, 53), (ME, port), 10, 3000, 1480);
        let later = now + Duration::from_secs(31);
        assert_eq!(
            m.hook(later, HookPoint::Prerouting, &IN, &mut late[2]),
            HookVerdict::Drop
        );
        assert_eq!(m.stats().fragments, 2);
    }

    /// A masquerade that holds early fragments (its config too), with HOST:40000 ->
    /// REMOTE:53 tracked; the port that flow leaves from.
    fn holding_with_a_flow(now: Instant) -> (Config, Masquerade, u16) {
        let mut c = Config::new(1, ME);
        c.hold = HoldLimits::DEFAULT;
        let mut m = Masquerade::new(c.clone());
        let mut out = udp(HOST, 40000, REMOTE, 53);
        m.hook(now, HookPoint::Postrouting, &OUT, &mut out);
        let (_, port, _, _) = reassemble(std::slice::from_ref(&out));
        (c, m, port)
    }

    #[test]
    fn first_fragments_nobody_translates_give_way_to_a_connections_in_a_full_table() {
        let now = Instant::now();
        let (_, mut m, port) = holding_with_a_flow(now);
        // More first fragments for the router's own address, which no mapping translates,
        // than the table holds (a flood from the WAN).
        for id in 0..1100 {
            let mut f = udp_fragments((REMOTE, 5000), (ME, 9), 1000 + id, 3000, 1480);
            m.hook(now, HookPoint::Prerouting, &IN, &mut f[0]);
        }
        // The connection's fragmented reply, its last fragment first: held, then the first
        // takes an entry, and every fragment reaches the host.
        let mut back = udp_fragments((REMOTE, 53), (ME, port), 9, 3000, 1480);
        let last = back.len() - 1;
        assert_eq!(
            m.hook(now, HookPoint::Prerouting, &IN, &mut back[last]),
            HookVerdict::Stolen
        );
        for f in back[..last].iter_mut() {
            assert_eq!(
                m.hook(now, HookPoint::Prerouting, &IN, f),
                HookVerdict::Accept
            );
        }
        match m.poll_output(now) {
            Some(HookOutput::Resume { packet, .. }) => back[last] = packet,
            other => panic!("the held fragment did not go on: {other:?}"),
        }
        assert_eq!(reassemble(&back), (REMOTE, 53, HOST, 40000));
    }

    #[test]
    fn a_nat_that_replaces_another_hands_over_its_outputs_and_its_held_fragments_drops() {
        let now = Instant::now();
        let (c, mut old, port) = holding_with_a_flow(now);
        let mut back = udp_fragments((REMOTE, 53), (ME, port), 9, 3000, 1480);
        for f in back[1..].iter_mut() {
            assert_eq!(
                old.hook(now, HookPoint::Prerouting, &IN, f),
                HookVerdict::Stolen
            );
        }
        let mut new = Masquerade::replacing(c, &mut old);
        for _ in 1..back.len() {
            assert!(matches!(
                new.poll_output(now),
                Some(HookOutput::Dropped(DropReason::FragmentHoldTimeout))
            ));
        }
        assert!(new.poll_output(now).is_none());
    }

    #[test]
    fn the_fragment_table_is_bounded_and_counts_what_it_cannot_remember() {
        let now = Instant::now();
        let mut c = Config::new(1, ME);
        c.max_fragments = 1;
        let mut m = Masquerade::new(c);
        let mut p = udp(HOST, 40000, REMOTE, 53);
        m.hook(now, HookPoint::Postrouting, &OUT, &mut p);
        let mut a = udp_fragments((REMOTE, 53), (ME, 40000), 1, 3000, 1480);
        let mut b = udp_fragments((REMOTE, 53), (ME, 40000), 2, 3000, 1480);
        m.hook(now, HookPoint::Prerouting, &IN, &mut a[0]);
        m.hook(now, HookPoint::Prerouting, &IN, &mut b[0]);
        assert_eq!(m.stats().fragment_table_full, 1);
        assert_eq!(
            m.hook(now, HookPoint::Prerouting, &IN, &mut b[1]),
            HookVerdict::Drop
        );
        assert_eq!(
            m.hook(now, HookPoint::Prerouting, &IN, &mut a[1]),
            HookVerdict::Accept
        );
        // Once its entry expired there is room again.
        let later = now + Duration::from_secs(31);
        let mut c = udp_fragments((REMOTE, 53), (ME, 40000), 3, 3000, 1480);
        for f in c.iter_mut() {
            m.hook(later, HookPoint::Prerouting, &IN, f);
        }
        assert_eq!(m.stats().fragment_table_full, 1);
        assert_eq!(reassemble(&c), (REMOTE, 53, HOST, 40000));
    }

    #[test]
    fn a_port_forwarded_servers_fragmented_reply_leaves_from_the_router() {
        let now = Instant::now();
        let (server, mut m) = (SERVER, forwarding());
        let mut p = udp(REMOTE, 4000, ME, 8053);
        m.hook(now, HookPoint::Prerouting, &IN, &mut p);
        let mut reply = udp_fragments((server, 53), (REMOTE, 4000), 5, 2000, 1480);
        for f in reply.iter_mut() {
            m.hook(now, HookPoint::Postrouting, &OUT, f);
        }
        assert_eq!(reassemble(&reply), (ME, 8053, REMOTE, 4000));
        // And a fragmented request reaches the server.
        let mut req = udp_fragments((REMOTE, 4000), (ME, 8053), 6, 2000, 1480);
        for f in req.iter_mut() {
            m.hook(now, HookPoint::Prerouting, &IN, f);
        }
        assert_eq!(reassemble(&req), (REMOTE, 4000, server, 53));
    }

    /// `udp6`'s packet with `headers` (each: its own next header byte is set here) between
    /// the fixed header and UDP.
    fn with_headers(p: &[u8], headers: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut out = p[..40].to_vec();
        let mut next = UDP;
        let mut chain = Vec::new();
        for (kind, h) in headers.iter().rev() {
            let mut h = h.clone();
            h[0] = next;
            next = *kind;
            chain.splice(0..0, h);
        }
        out[6] = next;
        out.extend(chain);
        out.extend_from_slice(&p[40..]);
        let len = (out.len() - 40) as u16;
        out[4..6].copy_from_slice(&len.to_be_bytes());
        out
    }

    /// The UDP header after the chain of an IPv6 packet: addresses and ports, its checksum
    /// checked.
    fn check_udp6_ext(b: &[u8]) -> (Ipv6Addr, u16, Ipv6Addr, u16) {
        let p = Ipv6Packet::new_checked(b).unwrap();
        let up = ext6::walk(p.next_header().into(), p.payload()).unwrap();
        assert_eq!(up.proto, UDP);
        let u = UdpPacket::new_checked(&p.payload()[up.offset..]).unwrap();
        assert!(u.verify_checksum(
            &IpAddress::Ipv6(p.src_addr()),
            &IpAddress::Ipv6(p.dst_addr())
        ));
        (p.src_addr(), u.src_port(), p.dst_addr(), u.dst_port())
    }

    #[test]
    fn nat66_finds_the_ports_behind_extension_headers_and_drops_bad_chains() {
        let now = Instant::now();
        let mut m = nat66();
        // The port is taken by an earlier connection: only a translated port shows the
        // header was found.
        let mut first = filo_dhcp::v6::udp6(HOST6, REMOTE6, 40000, 53, b"data");
        m.hook(now, HookPoint::Postrouting, &OUT, &mut first);
        let host2 = Ipv6Addr::new(0xfd01, 0, 0, 0, 0, 0, 0, 0x11);
        let plain = filo_dhcp::v6::udp6(host2, REMOTE6, 40000, 53, b"data");
        let opts = |words: usize| {
            let mut h = vec![0; words * 8];
            h[1] = (words - 1) as u8;
            h
        };
        let mut p = with_headers(
            &plain,
            &[(ext6::HOP_BY_HOP, opts(1)), (ext6::DEST_OPTS, opts(2))],
        );
        assert_eq!(
            m.hook(now, HookPoint::Postrouting, &OUT, &mut p),
            HookVerdict::Accept
        );
        let (src, port, dst, dport) = check_udp6_ext(&p);
        assert_eq!((src, dst, dport), (ME6, REMOTE6, 53));
        assert_ne!(port, 40000);
        // The reply with a routing header comes back to host2's port.
        let reply = filo_dhcp::v6::udp6(REMOTE6, ME6, 53, port, b"back");
        let mut r = with_headers(&reply, &[(ext6::ROUTING, opts(3))]);
        m.hook(now, HookPoint::Prerouting, &IN, &mut r);
        assert_eq!(check_udp6_ext(&r), (REMOTE6, 53, host2, 40000));
        // Cut short, misordered, too long: dropped and counted, both ways.
        let mut cut = with_headers(&reply, &[(ext6::DEST_OPTS, opts(1))]);
        cut[41] = 200;
        let mut misordered = with_headers(
            &plain,
            &[(ext6::DEST_OPTS, opts(1)), (ext6::HOP_BY_HOP, opts(1))],
        );
        let mut long = with_headers(
            &reply,
            &vec![(ext6::DEST_OPTS, opts(1)); ext6::MAX_HEADERS + 1],
        );
        assert_eq!(
            m.hook(now, HookPoint::Prerouting, &IN, &mut cut),
            HookVerdict::Drop
        );
        assert_eq!(
            m.hook(now, HookPoint::Postrouting, &OUT, &mut misordered),
            HookVerdict::Drop
        );
        assert_eq!(
            m.hook(now, HookPoint::Prerouting, &IN, &mut long),
            HookVerdict::Drop
        );
        let s = m.stats();
        assert_eq!(
            (s.ext_truncated, s.ext_misordered, s.ext_too_long),
            (1, 1, 1)
        );
        assert!(m
            .print(now)
            .iter()
            .any(|l| l.contains("ext_truncated 1 ext_too_long 1 ext_misordered 1")));
        // Not for us: not ours to judge.
        let other = filo_dhcp::v6::udp6(REMOTE6, HOST6, 53, 40000, b"data");
        let mut other = with_headers(&other, &[(ext6::DEST_OPTS, opts(1))]);
        other[41] = 200;
        assert_eq!(
            m.hook(now, HookPoint::Prerouting, &IN, &mut other),
            HookVerdict::Accept
        );
    }

    #[test]
    fn nat66_translates_a_fragmented_datagrams_later_fragments() {
        let now = Instant::now();
        let mut m = nat66();
        let mut p = filo_dhcp::v6::udp6(HOST6, REMOTE6, 40000, 53, b"data");
        m.hook(now, HookPoint::Postrouting, &OUT, &mut p);
        // A 2000-byte reply in two fragments (fragment header: next, 0, offset|M, id).
        let whole = filo_dhcp::v6::udp6(REMOTE6, ME6, 53, 40000, &[7; 2000]);
        let data = &whole[40..];
        let frag = |offset: usize, more: bool, piece: &[u8]| {
            let mut h = vec![UDP, 0];
            h.extend((offset as u16 | u16::from(more)).to_be_bytes());
            h.extend(0xabcd_u32.to_be_bytes());
            let mut b = whole[..40].to_vec();
            b[6] = ext6::FRAGMENT;
            b.extend(h);
            b.extend_from_slice(piece);
            let len = (b.len() - 40) as u16;
            b[4..6].copy_from_slice(&len.to_be_bytes());
            b
        };
        let mut f1 = frag(0, true, &data[..1232]);
        let mut f2 = frag(1232, false, &data[1232..]);
        assert_eq!(
            m.hook(now, HookPoint::Prerouting, &IN, &mut f1),
            HookVerdict::Accept
        );
        assert_eq!(
            m.hook(now, HookPoint::Prerouting, &IN, &mut f2),
            HookVerdict::Accept
        );
        // Reassembled: the whole datagram to the host, its checksum right.
        let mut r = f1[..40].to_vec();
        r[6] = UDP;
        r.extend_from_slice(&f1[48..]);
        r.extend_from_slice(&f2[48..]);
        let len = (r.len() - 40) as u16;
        r[4..6].copy_from_slice(&len.to_be_bytes());
        assert_eq!(check_udp6(&r), (REMOTE6, 53, HOST6, 40000));
        assert_eq!(Ipv6Packet::new_checked(&f2[..]).unwrap().dst_addr(), HOST6);
        assert_eq!(m.stats().fragments_translated, 1);
    }

    #[test]
    fn ipv6_port_forwards_reach_the_inside_server_and_its_errors_go_back_translated() {
        let now = Instant::now();
        let server6 = Ipv6Addr::new(0xfd01, 0, 0, 0, 0, 0, 0, 0x50);
        let mut c = Config::new(1, ME);
        c.masquerade = false;
        c.addr6 = Some(ME6);
        match Forward::parse("udp:8053=[fd01::50]:53").unwrap() {
            Forward::V6(f) => c.forwards6.push(f),
            other => panic!("{other:?}"),
        }
        let mut m = Masquerade::new(c);
        let mut p = filo_dhcp::v6::udp6(REMOTE6, ME6, 4000, 8053, b"query");
        m.hook(now, HookPoint::Prerouting, &IN, &mut p);
        assert_eq!(check_udp6(&p), (REMOTE6, 4000, server6, 53));
        let mut reply = filo_dhcp::v6::udp6(server6, REMOTE6, 53, 4000, b"answer");
        m.hook(now, HookPoint::Postrouting, &OUT, &mut reply);
        assert_eq!(check_udp6(&reply), (ME6, 8053, REMOTE6, 4000));
        // The same port of our IPv4 address is not forwarded.
        let mut p4 = udp(REMOTE, 4000, ME, 8053);
        m.hook(now, HookPoint::Prerouting, &IN, &mut p4);
        assert_eq!(check_udp(&p4).2, ME);
        // The server's port unreachable about the request: the client sees our address
        // and the public port in the quote.
        let mut err = crate::icmp::v6_error(
            server6,
            &Ipv6Packet::new_checked(&p[..]).unwrap(),
            crate::icmp::V6Error::PORT_UNREACHABLE,
        );
        m.hook(now, HookPoint::Postrouting, &OUT, &mut err);
        let outer = Ipv6Packet::new_checked(&err[..]).unwrap();
        assert_eq!((outer.src_addr(), outer.dst_addr()), (ME6, REMOTE6));
        assert!(Icmpv6Packet::new_checked(outer.payload())
            .unwrap()
            .verify_checksum(&ME6, &REMOTE6));
        assert_eq!(
            check_udp6(&outer.payload()[8..]),
            (REMOTE6, 4000, ME6, 8053)
        );
        // A router on the way cannot deliver the server's reply: the error reaches the
        // server about its own packet.
        let far = Ipv6Addr::new(0xfd09, 0, 0, 0, 0, 0, 0, 1);
        let mut err = crate::icmp::v6_error(
            far,
            &Ipv6Packet::new_checked(&reply[..]).unwrap(),
            crate::icmp::V6Error::HOP_LIMIT_EXCEEDED,
        );
        m.hook(now, HookPoint::Prerouting, &IN, &mut err);
        let outer = Ipv6Packet::new_checked(&err[..]).unwrap();
        assert_eq!(outer.dst_addr(), server6);
        assert_eq!(
            check_udp6(&outer.payload()[8..]),
            (server6, 53, REMOTE6, 4000)
        );
        assert_eq!(m.stats().icmp_errors, 2);
        let print = m.print(now);
        assert!(print
            .iter()
            .any(|l| l == "forward udp [fd09::2]:8053 to [fd01::50]:53"));
        assert!(print
            .iter()
            .any(|l| l
                .starts_with("udp [fd09::20]:4000 -> [fd09::2]:8053 forwarded to [fd01::50]:53")));
    }

    #[test]
    fn ipv6_port_forward_syntax_errors_name_the_part() {
        assert_eq!(
            Forward::parse("tcp:8080=[fd01::50]").unwrap(),
            Forward::V6(PortForward6 {
                proto: TCP,
                port: 8080,
                to: Ipv6Addr::new(0xfd01, 0, 0, 0, 0, 0, 0, 0x50),
                to_port: 8080
            })
        );
        assert!(matches!(
            Forward::parse("udp:53=10.1.0.5"),
            Ok(Forward::V4(_))
        ));
        for (bad, what) in [
            ("tcp:80=fd01::50:80", "in brackets"),
            ("tcp:80=[fd01::50:80", "no ']'"),
            (
                "tcp:80=[fd01::zz]:80",
                "\"fd01::zz\" is not an IPv6 address",
            ),
            ("tcp:80=[fd01::50]80", "\"80\" after ']' is not :PORT"),
            ("tcp:80=[fd01::50]:x", "port \"x\""),
            ("tcp:80=[fd01::50]:0", "port 0"),
        ] {
            let e = Forward::parse(bad).unwrap_err();
            assert!(e.contains(what), "{bad}: {e}");
        }
        let e = PortForward::parse("tcp:80=[fd01::50]:80").unwrap_err();
        assert!(e.contains("IPv6"), "{e}");
    }
}
