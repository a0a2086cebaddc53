//! A DHCPv4 server (RFC 2131, RFC 2132 options) as a sans-IO state machine: a UDP payload that
//! arrived on port 67 and the time in, the reply to send and where to send it out. No sockets,
//! no clock, no timers: leases expire lazily when the server looks at them.
//!
//! API (for slirp, routers, `filo ns`):
//! - [`Config::new`]`(server_ip, prefix_len, range_start, range_end)` with defaults (1 h leases,
//!   1024 leases at most), then set the public fields (`router`, `dns`, `domain`, `search`,
//!   `mtu`, `static_leases`, …); [`Server::new`]`(config)` validates it ([`ConfigError`] names
//!   what is wrong: range outside the subnet, server address in the range, bad names, …).
//! - [`Server::handle`]`(now, udp_payload) -> Result<Option<Reply>, Error>`: DISCOVER → OFFER,
//!   REQUEST (selecting, init-reboot, renewing, rebinding) → ACK or NAK, RELEASE and DECLINE →
//!   nothing, INFORM → ACK without a lease. `Ok(None)`: nothing to send (a REQUEST for another
//!   server, a RELEASE, …). [`Error::PoolExhausted`] is the "no address free" outcome (count
//!   and log it); the other errors are malformed messages.
//! - [`Reply`]: `payload` is the DHCP message to send from port 67 to [`Reply::dst_port`] at
//!   [`Reply::dst_ip`]; [`Reply::dst_mac`] is the Ethernet destination to use without ARP (the
//!   client has no address yet); [`Reply::ipv4_packet`] and [`Reply::ethernet_frame`] wrap it
//!   for senders that write frames (slirp). The destination follows RFC 2131 §4.1: to the relay
//!   (giaddr) if any, NAKs broadcast, else unicast to ciaddr, else broadcast if the client set
//!   the broadcast flag, else unicast to yiaddr at the client's MAC.
//! - [`Server::stats`]: what became of the messages, one counter per outcome ([`Stats`]: the
//!   answers, and the messages ignored or refused, which get none).
//! - [`server_payload`]: the UDP payload of an IPv4 packet to port 67.
//! - [`Server::leases`]: the current leases; [`Server::save_leases`] / [`Server::load_leases`]:
//!   the lease file (format below).
//!
//! Clients are told apart by their client identifier (option 61) or, without one, by their
//! MAC; a client gets back the address it had, even after its lease expired, as long as no
//! other client needed it. Static leases are by MAC. A DECLINEd address is not offered again
//! for [`Config::decline_hold`]. The table holds at most [`Config::max_leases`] entries; when
//! it is full the entry that expired first is reused.
//!
//! Lease file: one lease a line, dnsmasq's order, `#` starts a comment line:
//! `EXPIRY MAC ADDRESS HOSTNAME CLIENT-ID`, EXPIRY in seconds since the Unix epoch (the caller
//! passes the wall clock, so leases survive a restart), MAC as `02:00:00:00:00:07`, HOSTNAME
//! and CLIENT-ID `*` when absent, CLIENT-ID as colon-separated hex bytes.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::Duration;

use smoltcp::wire::{ArpHardware, DhcpFlags, DhcpOpCode, DhcpPacket, EthernetAddress};

use crate::names::{self, NameError};
use crate::{udp4, Instant, Mac, CLIENT_PORT, SERVER_PORT};

const MAGIC: u32 = 0x6382_5363;
/// How long an OFFERed address stays reserved for the client it was offered to.
const OFFER_HOLD: Duration = Duration::from_secs(60);
/// The largest DHCP message every client accepts (RFC 2131 §2: 576-byte IP datagrams).
const MIN_MAX_MESSAGE: usize = 576 - 28;

// Message types (RFC 2132 §9.6).
const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const REQUEST: u8 = 3;
const DECLINE: u8 = 4;
const ACK: u8 = 5;
const NAK: u8 = 6;
const RELEASE: u8 = 7;
const INFORM: u8 = 8;

/// The server's configuration; [`Server::new`] validates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The server's own address (option 54, the source of replies).
    pub server_ip: Ipv4Addr,
    /// The subnet's prefix length (1 to 30).
    pub prefix_len: u8,
    /// The first address handed out.
    pub range_start: Ipv4Addr,
    /// The last address handed out.
    pub range_end: Ipv4Addr,
    /// The default gateway (option 3).
    pub router: Option<Ipv4Addr>,
    /// DNS servers (option 6).
    pub dns: Vec<Ipv4Addr>,
    /// The domain name (option 15).
    pub domain: Option<String>,
    /// The host name given to every client (option 12), as libslirp's `vhostname`.
    pub hostname: Option<String>,
    /// The domain search list (option 119).
    pub search: Vec<String>,
    /// Lease duration (option 51); T1 is half of it, T2 seven eighths.
    pub lease_time: Duration,
    /// Interface MTU (option 26).
    pub mtu: Option<u16>,
    /// Fixed addresses by MAC; they may lie outside the range but not outside the subnet.
    pub static_leases: Vec<(Mac, Ipv4Addr)>,
    /// The most leases (and offers and declined addresses) remembered at once.
    pub max_leases: usize,
    /// How long a DECLINEd address (in use by someone else) is not handed out.
    pub decline_hold: Duration,
}

/// What is wrong with a [`Config`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("DHCP server: prefix length /{0}: expected 1 to 30")]
    PrefixLen(u8),
    #[error("DHCP server: address {addr} ({what}) is not a host address of the subnet {net}")]
    OutsideSubnet {
        what: &'static str,
        addr: Ipv4Addr,
        net: String,
    },
    #[error("DHCP server: range {start} - {end}: the start is after the end")]
    RangeOrder { start: Ipv4Addr, end: Ipv4Addr },
    #[error("DHCP server: the server address {0} is inside the range it hands out")]
    ServerInRange(Ipv4Addr),
    #[error("DHCP server: static lease {addr} is {why}")]
    Static { addr: Ipv4Addr, why: &'static str },
    #[error("DHCP server: lease time {0:?}: expected 10 s to 136 years")]
    LeaseTime(Duration),
    #[error("DHCP server: decline hold {0:?}: expected at most 136 years")]
    DeclineHold(Duration),
    #[error("DHCP server: MTU {0}: expected at least 68")]
    Mtu(u16),
    #[error("DHCP server: {0} DNS servers: at most 63 fit in option 6")]
    TooManyDns(usize),
    #[error("DHCP server: max_leases 0: expected at least 1")]
    NoLeases,
    #[error("DHCP server: {0}")]
    Name(#[from] NameError),
    #[error("DHCP server: the options (DNS servers, domain, search list) take {0} bytes: more than fit in a 576-byte message")]
    OptionsTooLong(usize),
}

/// A message the server cannot serve: malformed, or (for [`Error::PoolExhausted`]) a client
/// for which no address is free.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("DHCP message of {0} bytes: shorter than the 240-byte header")]
    Truncated(usize),
    #[error("DHCP message with op {0}: not a BOOTREQUEST (1)")]
    NotARequest(u8),
    #[error("DHCP message with hardware type {0}, length {1}: only Ethernet (1, 6) is served")]
    Hardware(u8, u8),
    #[error("DHCP message without the magic cookie 99.130.83.99")]
    NoMagic,
    #[error("DHCP message from client hardware address {}: expected a unicast MAC (not all-zero, broadcast or multicast)", mac_string(.0))]
    NotUnicastMac(Mac),
    #[error("DHCP message without a message type (option 53)")]
    NoMessageType,
    #[error("DHCP message type {0}: not one a client sends")]
    UnexpectedType(u8),
    #[error("DHCP {0} without a requested address (option 50)")]
    NoRequestedAddress(&'static str),
    #[error("DHCP: no address free for client {}", mac_string(.0))]
    PoolExhausted(Mac),
}

/// What a [`Server`] did with the messages [`Server::handle`] got: each message is counted
/// once, under its outcome. Those without an answer (the last five) are the server's drops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// DISCOVERs answered with an OFFER.
    pub offers: u64,
    /// REQUESTs and INFORMs answered with an ACK.
    pub acks: u64,
    /// REQUESTs refused with a NAK (an address not the client's, not free, or of another
    /// subnet).
    pub naks: u64,
    /// RELEASEs of the client's own address, taken.
    pub releases: u64,
    /// DECLINEs of the client's own address, taken.
    pub declines: u64,
    /// REQUESTs naming another server (the client chose it): ignored.
    pub other_server: u64,
    /// RELEASEs and DECLINEs of an address the client does not hold: ignored.
    pub not_held: u64,
    /// Clients for which no address was free: no OFFER, no ACK ([`Error::PoolExhausted`]).
    pub pool_exhausted: u64,
    /// Malformed messages (every other [`Error`]): ignored.
    pub malformed: u64,
}

impl Stats {
    /// Every counter with a stable name, in the order of the fields.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> {
        [
            ("offers", self.offers),
            ("acks", self.acks),
            ("naks", self.naks),
            ("releases", self.releases),
            ("declines", self.declines),
            ("other_server", self.other_server),
            ("not_held", self.not_held),
            ("pool_exhausted", self.pool_exhausted),
            ("malformed", self.malformed),
        ]
        .into_iter()
    }

    /// Messages that got no answer and changed nothing: ignored, refused or malformed.
    pub fn unanswered(&self) -> u64 {
        self.other_server + self.not_held + self.pool_exhausted + self.malformed
    }
}

/// The kind of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Offer,
    Ack,
    Nak,
}

/// Where a reply goes (RFC 2131 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// To 255.255.255.255 and the Ethernet broadcast address.
    Broadcast,
    /// To `ip` at `mac` (without ARP when the client has no address yet).
    Unicast { ip: Ipv4Addr, mac: Mac },
    /// To a relay agent (giaddr), port 67, routed.
    Relay(Ipv4Addr),
}

/// A reply to send from [`Reply::src`] port 67.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub kind: Kind,
    /// The DHCP message (the UDP payload).
    pub payload: Vec<u8>,
    pub to: Destination,
    /// The server's address.
    pub src: Ipv4Addr,
}

impl Reply {
    pub fn dst_ip(&self) -> Ipv4Addr {
        match self.to {
            Destination::Broadcast => Ipv4Addr::BROADCAST,
            Destination::Unicast { ip, .. } | Destination::Relay(ip) => ip,
        }
    }

    pub fn dst_port(&self) -> u16 {
        match self.to {
            Destination::Relay(_) => SERVER_PORT,
            _ => CLIENT_PORT,
        }
    }

    /// The Ethernet destination; `None` for a relay (route it).
    pub fn dst_mac(&self) -> Option<Mac> {
        match self.to {
            Destination::Broadcast => Some([0xff; 6]),
            Destination::Unicast { mac, .. } => Some(mac),
            Destination::Relay(_) => None,
        }
    }

    /// The IPv4/UDP packet (UDP checksum zero, which IPv4 allows).
    pub fn ipv4_packet(&self) -> Vec<u8> {
        udp4(
            self.src,
            self.dst_ip(),
            SERVER_PORT,
            self.dst_port(),
            &self.payload,
        )
    }

    /// The Ethernet frame from `src_mac`; `None` for a relay.
    pub fn ethernet_frame(&self, src_mac: Mac) -> Option<Vec<u8>> {
        let dst = self.dst_mac()?;
        let mut f = Vec::with_capacity(14 + 28 + self.payload.len());
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src_mac);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&self.ipv4_packet());
        Some(f)
    }
}

/// The UDP payload of an IPv4 packet to port 67, if that is what `p` is.
pub fn server_payload(p: &[u8]) -> Option<&[u8]> {
    crate::udp4_payload_to(p, SERVER_PORT)
}

/// A lease as [`Server::leases`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    pub addr: Ipv4Addr,
    pub mac: Mac,
    pub hostname: Option<String>,
    pub expires: Instant,
}

impl LeaseInfo {
    /// The line a console's `leases/print` shows for it on interface `iface` at `now`:
    /// `ADDR MAC dev IFACE HOSTNAME expires_in SECONDS` (`*` for no hostname).
    pub fn line(&self, iface: &str, now: Instant) -> String {
        format!(
            "{} {} dev {iface} {} expires_in {}",
            self.addr,
            mac_string(&self.mac),
            self.hostname.as_deref().unwrap_or("*"),
            self.expires.saturating_duration_since(now).as_secs()
        )
    }
}

/// A server's leases kept in a file (the router's `--dhcp-leases`, a stack's
/// `dhcp_leases`): loaded once by [`LeaseFile::open`], then written by [`LeaseFile::save`]
/// when they changed, through a temporary file renamed over it.
#[derive(Debug)]
pub struct LeaseFile {
    path: std::path::PathBuf,
    /// What was last written, without the expiry column (which moves with the clock).
    last: String,
}

/// The wall clock in Unix seconds (what lease files count in).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl LeaseFile {
    /// Loads the leases in `path` (a missing file is none) into `server`; lines that cannot
    /// be loaded are returned as errors (the others are loaded).
    pub fn open(
        server: &mut Server,
        path: std::path::PathBuf,
        now: Instant,
    ) -> std::io::Result<(LeaseFile, Vec<LeaseFileError>)> {
        let errors = match std::fs::read_to_string(&path) {
            Ok(text) => server.load_leases(&text, now, unix_now()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("{}: {e}", path.display()),
                ))
            }
        };
        Ok((
            LeaseFile {
                path,
                last: String::new(),
            },
            errors,
        ))
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Writes `server`'s leases if they changed since the last write.
    pub fn save(&mut self, server: &Server, now: Instant) -> std::io::Result<()> {
        let text = server.save_leases(now, unix_now());
        let key: String = text
            .lines()
            .map(|l| l.split_once(' ').map_or(l, |(_, r)| r))
            .collect();
        if key == self.last {
            return Ok(());
        }
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, &text).and_then(|()| std::fs::rename(&tmp, &self.path))?;
        self.last = key;
        Ok(())
    }
}

/// A line of a lease file that was not loaded, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("leases line {line}: {message}")]
pub struct LeaseFileError {
    pub line: usize,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Offered,
    Bound,
    Declined,
}

#[derive(Debug, Clone)]
struct Entry {
    /// The client's key: its client identifier, or 1 (Ethernet) and its MAC.
    client: Vec<u8>,
    mac: Mac,
    hostname: Option<String>,
    expires: Instant,
    state: State,
}

/// A client message's fields the server uses.
struct Request {
    kind: u8,
    xid: u32,
    flags: u16,
    ciaddr: Ipv4Addr,
    giaddr: Ipv4Addr,
    mac: Mac,
    key: Vec<u8>,
    requested: Option<Ipv4Addr>,
    server_id: Option<Ipv4Addr>,
    hostname: Option<String>,
    client_id: Option<Vec<u8>>,
}

#[derive(Debug)]
pub struct Server {
    config: Config,
    mask: u32,
    /// The options every ACK and OFFER carries, encoded once.
    options: Vec<u8>,
    leases: BTreeMap<Ipv4Addr, Entry>,
    clients: HashMap<Vec<u8>, Ipv4Addr>,
    statics: HashMap<Mac, Ipv4Addr>,
    stats: Stats,
}

fn prefix_mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

/// `02:00:00:00:00:07`.
pub fn mac_string(mac: &Mac) -> String {
    hex_string(mac)
}

fn hex_string(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 3);
    for (i, x) in b.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        let _ = write!(s, "{x:02x}");
    }
    s
}

fn parse_hex(s: &str) -> Option<Vec<u8>> {
    s.split(':')
        .map(|b| {
            if b.is_empty() || b.len() > 2 {
                None
            } else {
                u8::from_str_radix(b, 16).ok()
            }
        })
        .collect()
}

/// Appends option `code` with `data`, split into several options of at most 255 bytes if
/// longer (RFC 3396).
fn put_option(out: &mut Vec<u8>, code: u8, data: &[u8]) {
    if data.is_empty() {
        out.extend_from_slice(&[code, 0]);
    }
    for chunk in data.chunks(255) {
        out.extend_from_slice(&[code, chunk.len() as u8]);
        out.extend_from_slice(chunk);
    }
}

impl Config {
    /// A server at `server_ip`/`prefix_len` handing out `range_start`..=`range_end`, with 1 h
    /// leases and nothing else configured.
    pub fn new(
        server_ip: Ipv4Addr,
        prefix_len: u8,
        range_start: Ipv4Addr,
        range_end: Ipv4Addr,
    ) -> Config {
        Config {
            server_ip,
            prefix_len,
            range_start,
            range_end,
            router: None,
            dns: Vec::new(),
            domain: None,
            hostname: None,
            search: Vec::new(),
            lease_time: Duration::from_secs(3600),
            mtu: None,
            static_leases: Vec::new(),
            max_leases: 1024,
            decline_hold: Duration::from_secs(600),
        }
    }

    /// Checks the configuration and encodes its constant options.
    fn options(&self) -> Result<(u32, Vec<u8>), ConfigError> {
        if !(1..=30).contains(&self.prefix_len) {
            return Err(ConfigError::PrefixLen(self.prefix_len));
        }
        let mask = prefix_mask(self.prefix_len);
        let net = u32::from(self.server_ip) & mask;
        let host = |what: &'static str, addr: Ipv4Addr| {
            let a = u32::from(addr);
            if a & mask == net && a != net && a != net | !mask {
                Ok(())
            } else {
                Err(ConfigError::OutsideSubnet {
                    what,
                    addr,
                    net: format!("{}/{}", Ipv4Addr::from(net), self.prefix_len),
                })
            }
        };
        host("server", self.server_ip)?;
        host("range start", self.range_start)?;
        host("range end", self.range_end)?;
        if let Some(r) = self.router {
            host("router", r)?;
        }
        let (start, end) = (u32::from(self.range_start), u32::from(self.range_end));
        if start > end {
            return Err(ConfigError::RangeOrder {
                start: self.range_start,
                end: self.range_end,
            });
        }
        if (start..=end).contains(&u32::from(self.server_ip)) {
            return Err(ConfigError::ServerInRange(self.server_ip));
        }
        let mut seen = HashMap::new();
        for (mac, addr) in &self.static_leases {
            host("static lease", *addr)?;
            let why = if *addr == self.server_ip {
                Some("the server's address")
            } else if Some(*addr) == self.router {
                Some("the router's address")
            } else if seen.insert(*mac, *addr).is_some() {
                Some("a second static lease for the same MAC")
            } else if seen.values().filter(|a| *a == addr).count() > 1 {
                Some("given to two MACs")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(ConfigError::Static { addr: *addr, why });
            }
        }
        let secs = self.lease_time.as_secs();
        if !(10..u64::from(u32::MAX)).contains(&secs) {
            return Err(ConfigError::LeaseTime(self.lease_time));
        }
        if self.decline_hold.as_secs() > u64::from(u32::MAX) {
            return Err(ConfigError::DeclineHold(self.decline_hold));
        }
        if let Some(m) = self.mtu.filter(|m| *m < 68) {
            return Err(ConfigError::Mtu(m));
        }
        if self.dns.len() > 63 {
            return Err(ConfigError::TooManyDns(self.dns.len()));
        }
        if self.max_leases == 0 {
            return Err(ConfigError::NoLeases);
        }
        let mut o = Vec::new();
        put_option(&mut o, 1, &mask.to_be_bytes());
        if let Some(r) = self.router {
            put_option(&mut o, 3, &r.octets());
        }
        if !self.dns.is_empty() {
            let d: Vec<u8> = self.dns.iter().flat_map(|a| a.octets()).collect();
            put_option(&mut o, 6, &d);
        }
        if let Some(m) = self.mtu {
            put_option(&mut o, 26, &m.to_be_bytes());
        }
        if let Some(d) = &self.domain {
            // Validated as a name, sent as text (RFC 2132 §3.17).
            names::encode(d, &mut Vec::new())?;
            put_option(&mut o, 15, d.trim_end_matches('.').as_bytes());
        }
        if let Some(h) = &self.hostname {
            // Validated as a name, sent as text (RFC 2132 §3.14).
            names::encode(h, &mut Vec::new())?;
            put_option(&mut o, 12, h.trim_end_matches('.').as_bytes());
        }
        if !self.search.is_empty() {
            put_option(&mut o, 119, &names::encode_list(&self.search)?);
        }
        // Header, message type, server id, lease time, T1, T2, end.
        if 240 + o.len() + 3 + 6 + 3 * 6 + 1 > MIN_MAX_MESSAGE {
            return Err(ConfigError::OptionsTooLong(o.len()));
        }
        Ok((mask, o))
    }
}

impl Server {
    pub fn new(config: Config) -> Result<Server, ConfigError> {
        let (mask, options) = config.options()?;
        let statics = config.static_leases.iter().copied().collect();
        Ok(Server {
            config,
            mask,
            options,
            leases: BTreeMap::new(),
            clients: HashMap::new(),
            statics,
            stats: Stats::default(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What the server did with the messages it got so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    fn in_range(&self, a: Ipv4Addr) -> bool {
        (u32::from(self.config.range_start)..=u32::from(self.config.range_end))
            .contains(&u32::from(a))
    }

    fn in_subnet(&self, a: Ipv4Addr) -> bool {
        let (a, net) = (u32::from(a), u32::from(self.config.server_ip) & self.mask);
        a & self.mask == net && a != net && a != net | !self.mask
    }

    /// Whether `a` may be given to the client `key` with `mac` now.
    fn free_for(&self, a: Ipv4Addr, key: &[u8], mac: Mac, now: Instant) -> bool {
        if a == self.config.server_ip || Some(a) == self.config.router {
            return false;
        }
        if self.statics.iter().any(|(m, s)| *s == a && *m != mac) {
            return false;
        }
        match self.leases.get(&a) {
            None => true,
            Some(e) if e.state == State::Declined => e.expires <= now,
            Some(e) => e.client == key || e.expires <= now,
        }
    }

    /// The address for a client: its static one, the one it had, the one it asks for, a
    /// never-used one, or the one that expired first.
    fn pick(
        &self,
        key: &[u8],
        mac: Mac,
        requested: Option<Ipv4Addr>,
        now: Instant,
    ) -> Option<Ipv4Addr> {
        if let Some(a) = self.statics.get(&mac) {
            return Some(*a);
        }
        if let Some(a) = self.clients.get(key) {
            if self.free_for(*a, key, mac, now) {
                return Some(*a);
            }
        }
        if let Some(a) = requested {
            if self.in_range(a) && self.free_for(a, key, mac, now) {
                return Some(a);
            }
        }
        let (start, end) = (
            u32::from(self.config.range_start),
            u32::from(self.config.range_end),
        );
        // Each address skipped is in the table or reserved, so this ends quickly.
        for a in (start..=end).map(Ipv4Addr::from) {
            if !self.leases.contains_key(&a) && self.free_for(a, key, mac, now) {
                return Some(a);
            }
        }
        self.leases
            .iter()
            .filter(|(a, e)| e.expires <= now && self.in_range(**a))
            .filter(|(a, _)| self.free_for(**a, key, mac, now))
            .min_by_key(|(_, e)| e.expires)
            .map(|(a, _)| *a)
    }

    /// Records `addr` for the client, dropping what it or the address had before. `false`
    /// when the table is full of live entries.
    fn assign(
        &mut self,
        req: &Request,
        addr: Ipv4Addr,
        state: State,
        now: Instant,
        expires: Instant,
    ) -> bool {
        if let Some(old) = self.clients.get(&req.key).copied() {
            if old != addr {
                self.leases.remove(&old);
            }
        }
        if let Some(e) = self.leases.remove(&addr) {
            self.clients.remove(&e.client);
        }
        if self.leases.len() >= self.config.max_leases && !self.evict(now) {
            return false;
        }
        self.leases.insert(
            addr,
            Entry {
                client: req.key.clone(),
                mac: req.mac,
                hostname: req.hostname.clone(),
                expires,
                state,
            },
        );
        self.clients.insert(req.key.clone(), addr);
        true
    }

    /// Removes the entry that expired first, if any expired before `now`, making room.
    fn evict(&mut self, now: Instant) -> bool {
        let victim = self
            .leases
            .iter()
            .filter(|(_, e)| e.expires <= now)
            .min_by_key(|(_, e)| e.expires)
            .map(|(a, _)| *a);
        match victim.and_then(|a| self.leases.remove(&a)) {
            Some(e) => {
                self.clients.remove(&e.client);
                true
            }
            None => false,
        }
    }

    fn parse(&self, payload: &[u8]) -> Result<Request, Error> {
        let p = DhcpPacket::new_checked(payload).map_err(|_| Error::Truncated(payload.len()))?;
        if p.opcode() != DhcpOpCode::Request {
            return Err(Error::NotARequest(u8::from(p.opcode())));
        }
        if p.hardware_type() != ArpHardware::Ethernet || p.hardware_len() != 6 {
            return Err(Error::Hardware(
                u16::from(p.hardware_type()) as u8,
                p.hardware_len(),
            ));
        }
        if p.magic_number() != MAGIC {
            return Err(Error::NoMagic);
        }
        let mut mac = [0u8; 6];
        mac.copy_from_slice(p.client_hardware_address().as_bytes());
        // A lease is by MAC: one no client can own (all-zero, or the group bit set, which
        // includes broadcast) would be a lease for nobody, or for everybody.
        if mac == [0; 6] || mac[0] & 1 == 1 {
            return Err(Error::NotUnicastMac(mac));
        }
        let mut r = Request {
            kind: 0,
            xid: p.transaction_id(),
            flags: p.flags().bits(),
            ciaddr: p.client_ip(),
            giaddr: p.relay_agent_ip(),
            mac,
            key: Vec::new(),
            requested: None,
            server_id: None,
            hostname: None,
            client_id: None,
        };
        let ip = |d: &[u8]| Ipv4Addr::new(d[0], d[1], d[2], d[3]);
        for o in p.options() {
            match (o.kind, o.data.len()) {
                (53, 1) => r.kind = o.data[0],
                (50, 4) => r.requested = Some(ip(o.data)),
                (54, 4) => r.server_id = Some(ip(o.data)),
                (61, n) if n >= 2 => r.client_id = Some(o.data.to_vec()),
                (12, 1..=63) => {
                    r.hostname = std::str::from_utf8(o.data)
                        .ok()
                        // One token in the lease file, where "*" means none.
                        .filter(|h| *h != "*" && h.bytes().all(|b| b.is_ascii_graphic()))
                        .map(str::to_owned)
                }
                _ => {}
            }
        }
        r.key = match &r.client_id {
            Some(id) => id.clone(),
            None => [&[1u8][..], &mac].concat(),
        };
        if r.kind == 0 {
            return Err(Error::NoMessageType);
        }
        Ok(r)
    }

    /// Handles a UDP payload that arrived on port 67 (and counts it, see [`Server::stats`]).
    /// See the module header.
    pub fn handle(&mut self, now: Instant, payload: &[u8]) -> Result<Option<Reply>, Error> {
        let r = self.serve(now, payload);
        let s = &mut self.stats;
        match &r {
            Ok(Some(reply)) => match reply.kind {
                Kind::Offer => s.offers += 1,
                Kind::Ack => s.acks += 1,
                Kind::Nak => s.naks += 1,
            },
            // Counted where the message was taken or ignored.
            Ok(None) => {}
            Err(Error::PoolExhausted(_)) => s.pool_exhausted += 1,
            Err(_) => s.malformed += 1,
        }
        r
    }

    fn serve(&mut self, now: Instant, payload: &[u8]) -> Result<Option<Reply>, Error> {
        let req = self.parse(payload)?;
        match req.kind {
            DISCOVER => {
                let addr = self
                    .pick(&req.key, req.mac, req.requested, now)
                    .ok_or(Error::PoolExhausted(req.mac))?;
                if !self.assign(&req, addr, State::Offered, now, now + OFFER_HOLD) {
                    return Err(Error::PoolExhausted(req.mac));
                }
                Ok(Some(self.reply(&req, Kind::Offer, addr, true)))
            }
            REQUEST => self.request(now, &req),
            DECLINE => {
                let addr = req.requested.ok_or(Error::NoRequestedAddress("DECLINE"))?;
                if self.clients.get(&req.key) == Some(&addr) {
                    self.clients.remove(&req.key);
                    if let Some(e) = self.leases.get_mut(&addr) {
                        e.state = State::Declined;
                        e.client = Vec::new();
                        e.expires = now + self.config.decline_hold;
                    }
                    self.stats.declines += 1;
                } else {
                    self.stats.not_held += 1;
                }
                Ok(None)
            }
            RELEASE => {
                if self.clients.get(&req.key) == Some(&req.ciaddr) {
                    if let Some(e) = self.leases.get_mut(&req.ciaddr) {
                        // Kept, expired: the client gets the same address back if it is free.
                        e.expires = now;
                    }
                    self.stats.releases += 1;
                } else {
                    self.stats.not_held += 1;
                }
                Ok(None)
            }
            INFORM => Ok(Some(self.reply(
                &req,
                Kind::Ack,
                Ipv4Addr::UNSPECIFIED,
                false,
            ))),
            k => Err(Error::UnexpectedType(k)),
        }
    }

    /// A REQUEST: selecting (server id and requested address), init-reboot (requested address,
    /// no ciaddr), renewing or rebinding (ciaddr).
    fn request(&mut self, now: Instant, req: &Request) -> Result<Option<Reply>, Error> {
        let addr = match (req.server_id, req.requested) {
            (Some(s), _) if s != self.config.server_ip => {
                // The client chose another server: forget our offer.
                if let Some(a) = self.clients.get(&req.key).copied() {
                    if self
                        .leases
                        .get(&a)
                        .is_some_and(|e| e.state == State::Offered)
                    {
                        self.leases.remove(&a);
                        self.clients.remove(&req.key);
                    }
                }
                self.stats.other_server += 1;
                return Ok(None);
            }
            (Some(_), None) => return Err(Error::NoRequestedAddress("REQUEST")),
            (_, Some(a)) if req.ciaddr.is_unspecified() => a,
            (_, _) if !req.ciaddr.is_unspecified() => req.ciaddr,
            (_, _) => return Err(Error::NoRequestedAddress("REQUEST")),
        };
        let ours = self.clients.get(&req.key) == Some(&addr);
        let ok = self.in_subnet(addr)
            && if ours || self.statics.get(&req.mac) == Some(&addr) {
                self.free_for(addr, &req.key, req.mac, now)
            } else {
                // No record of this client (a restart without a lease file, or a client of a
                // previous server): ours to give if it is in the range and free.
                req.server_id.is_none()
                    && !self.statics.contains_key(&req.mac)
                    && self.in_range(addr)
                    && self.free_for(addr, &req.key, req.mac, now)
            };
        if !ok {
            return Ok(Some(self.reply(
                req,
                Kind::Nak,
                Ipv4Addr::UNSPECIFIED,
                false,
            )));
        }
        if !self.assign(req, addr, State::Bound, now, now + self.config.lease_time) {
            return Err(Error::PoolExhausted(req.mac));
        }
        Ok(Some(self.reply(req, Kind::Ack, addr, true)))
    }

    fn reply(&self, req: &Request, kind: Kind, yiaddr: Ipv4Addr, lease: bool) -> Reply {
        let mut buf = vec![0u8; 240];
        {
            let mut p = DhcpPacket::new_unchecked(&mut buf[..]);
            p.set_opcode(DhcpOpCode::Reply);
            p.set_hardware_type(ArpHardware::Ethernet);
            p.set_hardware_len(6);
            p.set_transaction_id(req.xid);
            p.set_flags(DhcpFlags::from_bits_truncate(req.flags));
            if kind != Kind::Nak {
                p.set_client_ip(req.ciaddr);
            }
            p.set_your_ip(yiaddr);
            p.set_relay_agent_ip(req.giaddr);
            p.set_client_hardware_address(EthernetAddress(req.mac));
            p.set_magic_number(MAGIC);
        }
        let code = match kind {
            Kind::Offer => OFFER,
            Kind::Ack => ACK,
            Kind::Nak => NAK,
        };
        put_option(&mut buf, 53, &[code]);
        put_option(&mut buf, 54, &self.config.server_ip.octets());
        if kind != Kind::Nak {
            if lease {
                let secs = self.config.lease_time.as_secs() as u32;
                put_option(&mut buf, 51, &secs.to_be_bytes());
                put_option(&mut buf, 58, &(secs / 2).to_be_bytes());
                put_option(&mut buf, 59, &(secs / 8 * 7).to_be_bytes());
            }
            buf.extend_from_slice(&self.options);
        }
        if let Some(id) = req.client_id.as_deref().filter(|_| kind == Kind::Nak) {
            // RFC 6842: the client identifier goes back (here only in NAKs, which carry nothing
            // else to match on; the others match on xid and chaddr).
            put_option(&mut buf, 61, id);
        }
        buf.push(255);
        if buf.len() < 300 {
            buf.resize(300, 0);
        }
        // Every reply fits in 576 bytes (checked by Config::options), the size every client
        // takes, so the client's maximum message size (option 57) does not matter.
        let to = if !req.giaddr.is_unspecified() {
            Destination::Relay(req.giaddr)
        } else if kind == Kind::Nak {
            Destination::Broadcast
        } else if !req.ciaddr.is_unspecified() {
            Destination::Unicast {
                ip: req.ciaddr,
                mac: req.mac,
            }
        } else if req.flags & 0x8000 != 0 || yiaddr.is_unspecified() {
            // (An INFORM without ciaddr has nowhere else to go.)
            Destination::Broadcast
        } else {
            Destination::Unicast {
                ip: yiaddr,
                mac: req.mac,
            }
        };
        Reply {
            kind,
            payload: buf,
            to,
            src: self.config.server_ip,
        }
    }

    /// The addresses leased now (offers and declined addresses left out), lowest first.
    pub fn leases(&self, now: Instant) -> Vec<LeaseInfo> {
        self.leases
            .iter()
            .filter(|(_, e)| e.state == State::Bound && e.expires > now)
            .map(|(a, e)| LeaseInfo {
                addr: *a,
                mac: e.mac,
                hostname: e.hostname.clone(),
                expires: e.expires,
            })
            .collect()
    }

    /// The lease file (see the module header): the current leases, their expiry converted to
    /// Unix time with `unix_now`, the wall clock's seconds at `now`.
    pub fn save_leases(&self, now: Instant, unix_now: u64) -> String {
        let mut s = String::from(
            "# filo DHCP leases: EXPIRY(unix seconds) MAC ADDRESS HOSTNAME CLIENT-ID\n",
        );
        for (a, e) in &self.leases {
            if e.state != State::Bound || e.expires <= now {
                continue;
            }
            let expiry = unix_now + e.expires.saturating_duration_since(now).as_secs();
            let id = if e.client == [&[1u8][..], &e.mac].concat() {
                "*".to_string()
            } else {
                hex_string(&e.client)
            };
            let _ = writeln!(
                s,
                "{expiry} {} {a} {} {id}",
                mac_string(&e.mac),
                e.hostname.as_deref().unwrap_or("*"),
            );
        }
        s
    }

    /// Loads a lease file written by [`Server::save_leases`]; `now` and `unix_now` are the
    /// current monotonic and wall-clock times. Expired leases are skipped; lines that cannot
    /// be loaded are returned (the others are loaded).
    pub fn load_leases(&mut self, text: &str, now: Instant, unix_now: u64) -> Vec<LeaseFileError> {
        let mut errors = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Err(message) = self.load_line(line, now, unix_now) {
                errors.push(LeaseFileError {
                    line: i + 1,
                    message,
                });
            }
        }
        errors
    }

    fn load_line(&mut self, line: &str, now: Instant, unix_now: u64) -> Result<(), String> {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [expiry, mac, addr, host, id] = f[..] else {
            return Err(format!(
                "{} fields: expected 5 (EXPIRY MAC ADDRESS HOSTNAME CLIENT-ID)",
                f.len()
            ));
        };
        let expiry: u64 = expiry
            .parse()
            .map_err(|_| format!("expiry {expiry:?}: expected seconds since 1970"))?;
        let mac: Mac = parse_hex(mac)
            .and_then(|m| m.try_into().ok())
            .ok_or_else(|| format!("MAC {mac:?}: expected six hex bytes like 02:00:00:00:00:07"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("address {addr:?}: expected an IPv4 address"))?;
        let key = if id == "*" {
            [&[1u8][..], &mac].concat()
        } else {
            parse_hex(id)
                .filter(|k| k.len() >= 2)
                .ok_or_else(|| format!("client id {id:?}: expected '*' or hex bytes"))?
        };
        if expiry <= unix_now {
            return Ok(());
        }
        if !self.in_subnet(addr) {
            return Err(format!("address {addr} is outside the served subnet"));
        }
        if !self.free_for(addr, &key, mac, now) {
            return Err(format!("address {addr} is already leased or reserved"));
        }
        let req = Request {
            kind: REQUEST,
            xid: 0,
            flags: 0,
            ciaddr: addr,
            giaddr: Ipv4Addr::UNSPECIFIED,
            mac,
            key,
            requested: None,
            server_id: None,
            hostname: (host != "*").then(|| host.to_string()),
            client_id: None,
        };
        let left = expiry - unix_now;
        if left > u64::from(u32::MAX) {
            return Err(format!("expiry {expiry}: more than 136 years ahead"));
        }
        let expires = now + Duration::from_secs(left);
        if !self.assign(&req, addr, State::Bound, now, expires) {
            return Err(format!(
                "the lease table is full ({} leases)",
                self.config.max_leases
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{dhcp_payload, Client, Event};

    const A: Mac = [2, 0, 0, 0, 0, 0xa];
    const B: Mac = [2, 0, 0, 0, 0, 0xb];
    const C: Mac = [2, 0, 0, 0, 0, 0xc];

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn config() -> Config {
        let mut c = Config::new(ip("10.0.2.2"), 24, ip("10.0.2.15"), ip("10.0.2.17"));
        c.router = Some(ip("10.0.2.2"));
        c.dns = vec![ip("10.0.2.3"), ip("10.0.2.4")];
        c.domain = Some("lab.example".into());
        c.hostname = Some("guest".into());
        c.search = vec!["lab.example".into(), "example".into()];
        c.mtu = Some(1400);
        c
    }

    /// A client message: `opts` are (code, data) pairs after the message type.
    struct Msg {
        kind: u8,
        mac: Mac,
        flags: u16,
        ciaddr: Ipv4Addr,
        giaddr: Ipv4Addr,
        opts: Vec<(u8, Vec<u8>)>,
    }

    impl Msg {
        fn new(kind: u8, mac: Mac) -> Msg {
            Msg {
                kind,
                mac,
                flags: 0,
                ciaddr: Ipv4Addr::UNSPECIFIED,
                giaddr: Ipv4Addr::UNSPECIFIED,
                opts: Vec::new(),
            }
        }
        fn opt(mut self, code: u8, data: &[u8]) -> Msg {
            self.opts.push((code, data.to_vec()));
            self
        }
        fn requested(self, a: &str) -> Msg {
            self.opt(50, &ip(a).octets())
        }
        fn server(self, a: &str) -> Msg {
            self.opt(54, &ip(a).octets())
        }
        fn ciaddr(mut self, a: &str) -> Msg {
            self.ciaddr = ip(a);
            self
        }
        fn bytes(&self) -> Vec<u8> {
            let mut d = vec![0u8; 240];
            d[0] = 1;
            d[1] = 1;
            d[2] = 6;
            d[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
            d[10..12].copy_from_slice(&self.flags.to_be_bytes());
            d[12..16].copy_from_slice(&self.ciaddr.octets());
            d[24..28].copy_from_slice(&self.giaddr.octets());
            d[28..34].copy_from_slice(&self.mac);
            d[236..240].copy_from_slice(&MAGIC.to_be_bytes());
            d.extend_from_slice(&[53, 1, self.kind]);
            for (c, v) in &self.opts {
                d.extend_from_slice(&[*c, v.len() as u8]);
                d.extend_from_slice(v);
            }
            d.push(255);
            d
        }
    }

    /// A reply's yiaddr and options (code → data, concatenated per RFC 3396).
    fn parse(r: &Reply) -> (Ipv4Addr, HashMap<u8, Vec<u8>>) {
        let p = DhcpPacket::new_checked(&r.payload[..]).unwrap();
        assert_eq!(p.opcode(), DhcpOpCode::Reply);
        let mut opts: HashMap<u8, Vec<u8>> = HashMap::new();
        for o in p.options() {
            opts.entry(o.kind).or_default().extend_from_slice(o.data);
        }
        (p.your_ip(), opts)
    }

    fn offer(s: &mut Server, now: Instant, mac: Mac) -> Ipv4Addr {
        let r = s
            .handle(now, &Msg::new(DISCOVER, mac).bytes())
            .unwrap()
            .unwrap();
        assert_eq!(r.kind, Kind::Offer);
        parse(&r).0
    }

    /// DISCOVER, then REQUEST in the selecting state: the bound address.
    fn lease(s: &mut Server, now: Instant, mac: Mac) -> Ipv4Addr {
        let a = offer(s, now, mac);
        let m = Msg::new(REQUEST, mac)
            .requested(&a.to_string())
            .server("10.0.2.2");
        let r = s.handle(now, &m.bytes()).unwrap().unwrap();
        assert_eq!(r.kind, Kind::Ack);
        assert_eq!(parse(&r).0, a);
        a
    }

    #[test]
    fn filo_client_gets_a_lease_with_every_option_from_the_server() {
        let mut s = Server::new(config()).unwrap();
        let t0 = Instant::from_secs(10);
        let mut c = Client::new(A, Some("node".into()), t0, 7);
        let mut lease = None;
        let mut out = c.poll(t0).0;
        for _ in 0..4 {
            let Some(o) = out.take() else { break };
            let payload = server_payload(&o.packet).expect("a packet to port 67");
            let r = s.handle(t0, payload).unwrap().expect("a reply");
            let (_, opts) = parse(&r);
            assert_eq!(opts[&1], vec![255, 255, 255, 0]);
            assert_eq!(opts[&3], vec![10, 0, 2, 2]);
            assert_eq!(opts[&6], vec![10, 0, 2, 3, 10, 0, 2, 4]);
            assert_eq!(opts[&15], b"lab.example".to_vec());
            assert_eq!(opts[&12], b"guest".to_vec());
            assert_eq!(
                names::decode_list(&opts[&119]).unwrap(),
                vec!["lab.example".to_string(), "example".to_string()]
            );
            assert_eq!(opts[&26], 1400u16.to_be_bytes().to_vec());
            assert_eq!(opts[&51], 3600u32.to_be_bytes().to_vec());
            assert_eq!(opts[&58], 1800u32.to_be_bytes().to_vec());
            assert_eq!(opts[&59], 3150u32.to_be_bytes().to_vec());
            assert_eq!(opts[&54], vec![10, 0, 2, 2]);
            // filo's client sets the broadcast flag.
            assert_eq!(r.to, Destination::Broadcast);
            assert_eq!(r.dst_port(), 68);
            let frame = r.ethernet_frame([2, 0, 0, 0, 0, 2]).unwrap();
            assert_eq!(&frame[..6], &[0xff; 6]);
            let (o2, ev) = c
                .handle(t0, dhcp_payload(&frame[14..]).unwrap())
                .expect("the client takes the reply");
            if let Some(Event::Configured(l)) = ev {
                lease = Some(l);
            }
            out = o2;
        }
        let l = lease.expect("configured");
        assert_eq!(l.addr, ip("10.0.2.15"));
        assert_eq!((l.prefix, l.router), (24, Some(ip("10.0.2.2"))));
        assert_eq!(l.lease_secs, 3600);
        let leases = s.leases(t0);
        assert_eq!(leases.len(), 1);
        assert_eq!((leases[0].addr, leases[0].mac), (l.addr, A));
        assert_eq!(leases[0].hostname.as_deref(), Some("node"));
        // Renewal at T1: unicast to the server, answered by unicast to ciaddr.
        let t1 = t0 + Duration::from_secs(1800);
        let renew = c.poll(t1).0.unwrap();
        let r = s
            .handle(t1, server_payload(&renew.packet).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(r.kind, Kind::Ack);
        assert_eq!(r.to, Destination::Unicast { ip: l.addr, mac: A });
        assert_eq!(s.leases(t1)[0].expires, t1 + Duration::from_secs(3600));
    }

    #[test]
    fn replies_go_where_rfc_2131_section_4_1_says() {
        let mut s = Server::new(config()).unwrap();
        let t = Instant::from_secs(1);
        // No broadcast flag, no ciaddr: unicast to yiaddr at the client's MAC.
        let r = s
            .handle(t, &Msg::new(DISCOVER, A).bytes())
            .unwrap()
            .unwrap();
        assert_eq!(
            r.to,
            Destination::Unicast {
                ip: ip("10.0.2.15"),
                mac: A
            }
        );
        assert_eq!(r.dst_mac(), Some(A));
        assert_eq!(
            &r.payload[4..8],
            &0x1234_5678u32.to_be_bytes(),
            "xid copied"
        );
        let pkt = r.ipv4_packet();
        assert_eq!(&pkt[12..20], &[10, 0, 2, 2, 10, 0, 2, 15]);
        assert_eq!(&pkt[20..24], &[0, 67, 0, 68]);
        // Broadcast flag: broadcast.
        let mut m = Msg::new(DISCOVER, A);
        m.flags = 0x8000;
        let r = s.handle(t, &m.bytes()).unwrap().unwrap();
        assert_eq!(r.to, Destination::Broadcast);
        assert_eq!(&r.payload[10..12], &[0x80, 0], "flags copied");
        // Through a relay: to giaddr, port 67.
        let mut m = Msg::new(DISCOVER, A);
        m.giaddr = ip("10.0.2.254");
        let r = s.handle(t, &m.bytes()).unwrap().unwrap();
        assert_eq!(r.to, Destination::Relay(ip("10.0.2.254")));
        assert_eq!((r.dst_port(), r.dst_mac()), (67, None));
        assert_eq!(r.ethernet_frame(A), None);
        // A NAK is broadcast even to a client with an address.
        let m = Msg::new(REQUEST, B).ciaddr("10.0.2.15");
        let r = s.handle(t, &m.bytes()).unwrap().unwrap();
        assert_eq!((r.kind, r.to), (Kind::Nak, Destination::Broadcast));
        assert_eq!(parse(&r).0, Ipv4Addr::UNSPECIFIED);
    }

    #[test]
    fn a_client_gets_its_address_back_and_others_get_their_own() {
        let mut s = Server::new(config()).unwrap();
        let t = Instant::from_secs(1);
        let a = lease(&mut s, t, A);
        let b = lease(&mut s, t, B);
        assert_ne!(a, b);
        assert_eq!(offer(&mut s, t, A), a, "same client, same address");
        // After its lease expired and after a RELEASE, too.
        let later = t + Duration::from_secs(7200);
        assert_eq!(lease(&mut s, later, A), a);
        let m = Msg::new(RELEASE, A).ciaddr(&a.to_string());
        assert_eq!(s.handle(later, &m.bytes()).unwrap(), None);
        assert!(s.leases(later).iter().all(|l| l.mac != A));
        assert_eq!(lease(&mut s, later, A), a);
        assert_eq!(lease(&mut s, later, B), b);
        // A client identifier, not the MAC, names the client: two identifiers behind one MAC
        // are two clients (the range has three addresses).
        let id = |n: u8| Msg::new(DISCOVER, C).opt(61, &[0xff, 0, 0, 0, n]);
        let r1 = s.handle(later, &id(1).bytes()).unwrap().unwrap();
        assert_eq!(parse(&r1).0, ip("10.0.2.17"));
        assert_eq!(
            s.handle(later, &id(2).bytes()),
            Err(Error::PoolExhausted(C))
        );
        let again = s.handle(later, &id(1).bytes()).unwrap().unwrap();
        assert_eq!(parse(&again).0, ip("10.0.2.17"));
        // The offer lapses after a minute: the second identifier gets the address.
        let after = later + OFFER_HOLD;
        let r2 = s.handle(after, &id(2).bytes()).unwrap().unwrap();
        assert_eq!(parse(&r2).0, ip("10.0.2.17"));
    }

    #[test]
    fn declined_addresses_rest_and_requests_are_checked() {
        let mut s = Server::new(config()).unwrap();
        let t = Instant::from_secs(1);
        let a = lease(&mut s, t, A);
        // DECLINE: someone else uses the address; A gets another one, nobody gets it for
        // decline_hold.
        let m = Msg::new(DECLINE, A).requested(&a.to_string());
        assert_eq!(s.handle(t, &m.bytes()).unwrap(), None);
        let a2 = lease(&mut s, t, A);
        assert_ne!(a2, a);
        assert_ne!(lease(&mut s, t, B), a);
        let free_again = t + Duration::from_secs(600);
        assert_eq!(lease(&mut s, free_again, C), a);
        assert_eq!(
            s.handle(t, &Msg::new(DECLINE, A).bytes()),
            Err(Error::NoRequestedAddress("DECLINE"))
        );
        // INIT-REBOOT: A's own address is ACKed, another client's is NAKed, an address of
        // another subnet too.
        let m = Msg::new(REQUEST, A).requested(&a2.to_string());
        assert_eq!(s.handle(t, &m.bytes()).unwrap().unwrap().kind, Kind::Ack);
        let m = Msg::new(REQUEST, B).requested(&a2.to_string());
        assert_eq!(s.handle(t, &m.bytes()).unwrap().unwrap().kind, Kind::Nak);
        let m = Msg::new(REQUEST, B).requested("192.168.1.9");
        assert_eq!(s.handle(t, &m.bytes()).unwrap().unwrap().kind, Kind::Nak);
        // REBINDING with an address the server never gave but that is free in its range (a
        // restart without a lease file): ACKed.
        let mut s = Server::new(config()).unwrap();
        let m = Msg::new(REQUEST, B).ciaddr("10.0.2.16");
        let r = s.handle(t, &m.bytes()).unwrap().unwrap();
        assert_eq!((r.kind, parse(&r).0), (Kind::Ack, ip("10.0.2.16")));
        // Selecting another server: our offer is withdrawn, nothing sent.
        let o = offer(&mut s, t, C);
        let m = Msg::new(REQUEST, C)
            .requested(&o.to_string())
            .server("10.0.2.99");
        assert_eq!(s.handle(t, &m.bytes()).unwrap(), None);
        assert_eq!(offer(&mut s, t, A), o, "the withdrawn offer is free again");
        // Selecting us for an address we did not offer: NAK.
        let m = Msg::new(REQUEST, C)
            .requested("10.0.2.17")
            .server("10.0.2.2");
        assert_eq!(s.handle(t, &m.bytes()).unwrap().unwrap().kind, Kind::Nak);
    }

    #[test]
    fn inform_gets_the_options_without_a_lease() {
        let mut s = Server::new(config()).unwrap();
        let m = Msg::new(INFORM, A).ciaddr("10.0.2.50");
        let r = s
            .handle(Instant::from_secs(1), &m.bytes())
            .unwrap()
            .unwrap();
        assert_eq!(r.kind, Kind::Ack);
        assert_eq!(
            r.to,
            Destination::Unicast {
                ip: ip("10.0.2.50"),
                mac: A
            }
        );
        let (yiaddr, opts) = parse(&r);
        assert_eq!(yiaddr, Ipv4Addr::UNSPECIFIED);
        assert_eq!(&r.payload[12..16], &[10, 0, 2, 50], "ciaddr copied");
        assert!(!opts.contains_key(&51) && !opts.contains_key(&58));
        assert_eq!(opts[&6], vec![10, 0, 2, 3, 10, 0, 2, 4]);
        assert!(s.leases(Instant::from_secs(1)).is_empty());
        // Without ciaddr (a broken client): broadcast, not unicast to 0.0.0.0.
        let r = s.handle(Instant::from_secs(1), &Msg::new(INFORM, A).bytes());
        assert_eq!(r.unwrap().unwrap().to, Destination::Broadcast);
    }

    #[test]
    fn static_leases_are_kept_for_their_mac() {
        let mut c = config();
        c.static_leases = vec![(C, ip("10.0.2.100")), (B, ip("10.0.2.15"))];
        let mut s = Server::new(c).unwrap();
        let t = Instant::from_secs(1);
        assert_eq!(lease(&mut s, t, C), ip("10.0.2.100"));
        assert_eq!(
            lease(&mut s, t, A),
            ip("10.0.2.16"),
            "B's address is skipped"
        );
        assert_eq!(lease(&mut s, t, B), ip("10.0.2.15"));
        let m = Msg::new(DISCOVER, A).requested("10.0.2.15");
        let r = s.handle(t, &m.bytes()).unwrap().unwrap();
        assert_eq!(parse(&r).0, ip("10.0.2.16"));
    }

    #[test]
    fn the_pool_and_the_table_run_out_with_a_distinct_error() {
        let t = Instant::from_secs(1);
        let mut s = Server::new(config()).unwrap();
        for mac in [A, B, C] {
            lease(&mut s, t, mac);
        }
        let d: Mac = [2, 0, 0, 0, 0, 0xd];
        let m = Msg::new(DISCOVER, d).bytes();
        assert_eq!(s.handle(t, &m), Err(Error::PoolExhausted(d)));
        assert!(Error::PoolExhausted(d)
            .to_string()
            .contains("02:00:00:00:00:0d"));
        // Once a lease expired, its address goes to the newcomer.
        let later = t + Duration::from_secs(3600);
        assert!(s.handle(later, &m).unwrap().is_some());
        // A bounded table: two entries for a range of three.
        let mut c = config();
        c.max_leases = 2;
        let mut s = Server::new(c).unwrap();
        lease(&mut s, t, A);
        lease(&mut s, t, B);
        assert_eq!(s.handle(t, &m), Err(Error::PoolExhausted(d)));
        let r = s.handle(later, &m).unwrap().unwrap();
        assert_eq!(parse(&r).0, ip("10.0.2.17"));
        let kept: Vec<Ipv4Addr> = s.leases.keys().copied().collect();
        assert_eq!(
            kept,
            vec![ip("10.0.2.16"), ip("10.0.2.17")],
            "A's expired entry made room"
        );
    }

    #[test]
    fn every_message_is_counted_once_under_its_outcome() {
        let mut c = config();
        c.range_end = ip("10.0.2.15");
        let mut s = Server::new(c).unwrap();
        let t = Instant::from_secs(1);
        let a = lease(&mut s, t, A);
        let m = Msg::new(REQUEST, B).requested(&a.to_string());
        assert_eq!(s.handle(t, &m.bytes()).unwrap().unwrap().kind, Kind::Nak);
        let m = Msg::new(REQUEST, B)
            .requested(&a.to_string())
            .server("10.0.2.99");
        assert_eq!(s.handle(t, &m.bytes()), Ok(None), "for another server");
        let m = Msg::new(RELEASE, B).ciaddr(&a.to_string());
        assert_eq!(s.handle(t, &m.bytes()), Ok(None), "not B's to release");
        let m = Msg::new(DECLINE, B).requested(&a.to_string());
        assert_eq!(s.handle(t, &m.bytes()), Ok(None), "not B's to decline");
        let m = Msg::new(DISCOVER, B).bytes();
        assert_eq!(s.handle(t, &m), Err(Error::PoolExhausted(B)));
        assert_eq!(s.handle(t, &m[..100]), Err(Error::Truncated(100)));
        assert_eq!(s.handle(t, &[]), Err(Error::Truncated(0)));
        let m = Msg::new(RELEASE, A).ciaddr(&a.to_string());
        assert_eq!(s.handle(t, &m.bytes()), Ok(None));
        let a = lease(&mut s, t, A);
        let m = Msg::new(DECLINE, A).requested(&a.to_string());
        assert_eq!(s.handle(t, &m.bytes()), Ok(None));
        let want = Stats {
            offers: 2,
            acks: 2,
            naks: 1,
            releases: 1,
            declines: 1,
            other_server: 1,
            not_held: 2,
            pool_exhausted: 1,
            malformed: 2,
        };
        assert_eq!(*s.stats(), want);
        assert_eq!(s.stats().unanswered(), 6);
        let names: Vec<_> = s.stats().iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), 9);
        assert_eq!(s.stats().iter().map(|(_, v)| v).sum::<u64>(), 13);
    }

    #[test]
    fn malformed_messages_are_explicit_errors() {
        let mut s = Server::new(config()).unwrap();
        let t = Instant::from_secs(1);
        let good = Msg::new(DISCOVER, A).bytes();
        assert_eq!(s.handle(t, &good[..100]), Err(Error::Truncated(100)));
        let mut m = good.clone();
        m[0] = 2;
        assert_eq!(s.handle(t, &m), Err(Error::NotARequest(2)));
        let mut m = good.clone();
        m[2] = 8;
        assert_eq!(s.handle(t, &m), Err(Error::Hardware(1, 8)));
        let mut m = good.clone();
        m[236] = 0;
        assert_eq!(s.handle(t, &m), Err(Error::NoMagic));
        for bad in [[0u8; 6], [0xff; 6], [0x01, 0, 0x5e, 0, 0, 1]] {
            let mut m = good.clone();
            m[28..34].copy_from_slice(&bad);
            assert_eq!(s.handle(t, &m), Err(Error::NotUnicastMac(bad)));
        }
        assert_eq!(s.handle(t, &good[..240]), Err(Error::NoMessageType));
        let m = Msg::new(OFFER, A).bytes();
        assert_eq!(s.handle(t, &m), Err(Error::UnexpectedType(2)));
        // An option running past the end is where the options stop.
        let mut m = good.clone();
        m.truncate(241);
        m.push(200);
        assert_eq!(s.handle(t, &m), Err(Error::NoMessageType));
    }

    #[test]
    fn bad_configurations_are_named() {
        let bad = |f: &dyn Fn(&mut Config)| {
            let mut c = config();
            f(&mut c);
            Server::new(c).unwrap_err()
        };
        assert_eq!(bad(&|c| c.prefix_len = 31), ConfigError::PrefixLen(31));
        let e = bad(&|c| c.range_end = ip("10.0.3.5"));
        assert!(
            e.to_string().contains("10.0.3.5 (range end)") && e.to_string().contains("10.0.2.0/24"),
            "{e}"
        );
        assert_eq!(
            bad(&|c| c.range_start = ip("10.0.2.18")),
            ConfigError::RangeOrder {
                start: ip("10.0.2.18"),
                end: ip("10.0.2.17")
            }
        );
        assert_eq!(
            bad(&|c| c.server_ip = ip("10.0.2.16")),
            ConfigError::ServerInRange(ip("10.0.2.16"))
        );
        assert!(matches!(
            bad(&|c| c.range_end = ip("10.0.2.255")),
            ConfigError::OutsideSubnet { .. }
        ));
        assert!(matches!(
            bad(&|c| c.static_leases = vec![(A, ip("10.0.2.2"))]),
            ConfigError::Static { .. }
        ));
        assert!(matches!(
            bad(&|c| c.static_leases = vec![(A, ip("10.0.2.9")), (B, ip("10.0.2.9"))]),
            ConfigError::Static { .. }
        ));
        assert_eq!(
            bad(&|c| c.lease_time = Duration::from_secs(1)),
            ConfigError::LeaseTime(Duration::from_secs(1))
        );
        assert_eq!(bad(&|c| c.mtu = Some(40)), ConfigError::Mtu(40));
        assert!(matches!(
            bad(&|c| c.search = vec!["a..b".into()]),
            ConfigError::Name(_)
        ));
        assert!(matches!(
            bad(&|c| c.search = (0..20).map(|i| format!("domain{i}.example.org")).collect()),
            ConfigError::OptionsTooLong(_)
        ));
        assert_eq!(bad(&|c| c.max_leases = 0), ConfigError::NoLeases);
        assert_eq!(
            bad(&|c| c.decline_hold = Duration::MAX),
            ConfigError::DeclineHold(Duration::MAX)
        );
    }

    #[test]
    fn leases_survive_a_restart_through_the_lease_file() {
        let t = Instant::from_secs(50);
        let mut s = Server::new(config()).unwrap();
        let a = lease(&mut s, t, A);
        let m = Msg::new(DISCOVER, B)
            .opt(61, &[0xff, 1, 2, 3])
            .opt(12, b"bee");
        let b = parse(&s.handle(t, &m.bytes()).unwrap().unwrap()).0;
        let m = Msg::new(REQUEST, B)
            .opt(61, &[0xff, 1, 2, 3])
            .opt(12, b"bee")
            .requested(&b.to_string())
            .server("10.0.2.2");
        s.handle(t, &m.bytes()).unwrap().unwrap();
        offer(&mut s, t, C); // an offer is not saved
        let file = s.save_leases(t, 1_000_000);
        assert!(
            file.contains("1003600 02:00:00:00:00:0a 10.0.2.15 * *\n"),
            "{file}"
        );
        assert!(
            file.contains("1003600 02:00:00:00:00:0b 10.0.2.16 bee ff:01:02:03\n"),
            "{file}"
        );
        assert_eq!(file.lines().count(), 3);

        // The restarted server's clock starts elsewhere; 100 s went by.
        let t2 = Instant::from_secs(7);
        let mut s2 = Server::new(config()).unwrap();
        let text = format!(
            "{file}\n# comment\ngarbage\n999 02:00:00:00:00:0c 10.0.2.17 * *\n\
             2000000 02:00:00:00:00:0c 10.0.9.1 * *\n2000000 zz 10.0.2.17 * *\n\
             2000000 02:00:00:00:00:0c 10.0.2.15 * *\n\
             18446744073709551615 02:00:00:00:00:0c 10.0.2.18 * *\n"
        );
        let errors = s2.load_leases(&text, t2, 1_000_100);
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![6, 8, 9, 10, 11], "{errors:?}");
        assert!(errors[4].message.contains("136 years"), "{errors:?}");
        assert!(errors[0].to_string().starts_with("leases line 6: 1 fields"));
        assert!(errors[1].message.contains("outside"), "{errors:?}");
        assert!(errors[2].message.contains("MAC \"zz\""), "{errors:?}");
        assert!(errors[3].message.contains("already leased"), "{errors:?}");
        let leases = s2.leases(t2);
        assert_eq!(leases.len(), 2);
        assert_eq!(leases[0].expires, t2 + Duration::from_secs(3500));
        assert_eq!(leases[1].hostname.as_deref(), Some("bee"));
        // The clients get their addresses back.
        assert_eq!(offer(&mut s2, t2, A), a);
        let m = Msg::new(DISCOVER, B).opt(61, &[0xff, 1, 2, 3]);
        assert_eq!(parse(&s2.handle(t2, &m.bytes()).unwrap().unwrap()).0, b);
    }

    #[test]
    fn a_hostname_of_a_star_is_no_hostname() {
        // "*" means "none" in the lease file: taken as a name it came back as none after a
        // restart (seen while writing the dhcp_server fuzz target's lease file round trip).
        let t = Instant::from_secs(1);
        let mut s = Server::new(config()).unwrap();
        let m = Msg::new(REQUEST, A).requested("10.0.2.15").opt(12, b"*");
        assert_eq!(s.handle(t, &m.bytes()).unwrap().unwrap().kind, Kind::Ack);
        assert_eq!(s.leases(t)[0].hostname, None);
    }

    #[test]
    fn a_lease_file_is_written_when_the_leases_change_and_loaded_again() {
        let dir = filo_test_support::TempDir::new("filo-dhcp-leasefile");
        let path = dir.join("leases");
        let config = Config::new(
            Ipv4Addr::new(10, 0, 0, 1),
            24,
            Ipv4Addr::new(10, 0, 0, 100),
            Ipv4Addr::new(10, 0, 0, 109),
        );
        let mut s = Server::new(config.clone()).unwrap();
        let t = Instant::from_secs(10);
        let (mut file, errors) = LeaseFile::open(&mut s, path.clone(), t).unwrap();
        assert!(errors.is_empty());
        file.save(&s, t).unwrap();
        let empty = std::fs::read_to_string(&path).unwrap();
        let line = format!("{} 02:00:00:00:00:07 10.0.0.105 * *", unix_now() + 3600);
        assert!(s.load_leases(&line, t, unix_now()).is_empty());
        std::fs::write(&path, "").unwrap();
        file.save(&s, t + Duration::from_secs(1)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("02:00:00:00:00:07 10.0.0.105"), "{text}");
        assert_ne!(text, empty);
        // Unchanged (but for the clock): not written again.
        std::fs::write(&path, "").unwrap();
        file.save(&s, t + Duration::from_secs(2)).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        let mut again = Server::new(config).unwrap();
        std::fs::write(&path, &text).unwrap();
        let (_, errors) = LeaseFile::open(&mut again, path, t).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        let l = &again.leases(t)[0];
        assert_eq!(
            l.line("vde0", t),
            format!(
                "10.0.0.105 02:00:00:00:00:07 dev vde0 * expires_in {}",
                l.expires.saturating_duration_since(t).as_secs()
            )
        );
    }
}
