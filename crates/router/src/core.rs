//! The sans-IO router: frames and time in ([`Router::handle_frame`],
//! [`Router::handle_timeout`]), frames per interface out ([`Router::poll_transmit`]).
//!
//! A frame is parsed once at the edge into smoltcp's typed views (`EthernetFrame`,
//! `ArpPacket`, `Ipv4Packet`, `Ipv6Packet`, `Icmpv6Packet`/`NdiscRepr`). IP packets then go
//! through the pipeline
//!
//! ```text
//! in ─ PREROUTING ─ route ─┬─ INPUT ─ local (ping, DHCP, RS)
//!                          └─ FORWARD ─ TTL ─ MTU ─┐
//!              local out ─ OUTPUT ─ route ─────────┴─ POSTROUTING ─ neighbour ─ out
//! ```
//!
//! where each stage runs the [`Hook`]s registered for it (a filter, NAT). Nothing here sends
//! redirects.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use filo_dhcp::ra::{self, Advertiser};
use filo_dhcp::server::{self as dhcp, Server};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, Icmpv4Message, Icmpv4Packet, Icmpv6Message, Icmpv6Packet, Icmpv6Repr, IpProtocol,
    Ipv4Packet, Ipv6Packet, NdiscNeighborFlags, NdiscRepr, RawHardwareAddress, UdpPacket,
};

use crate::icmp::{self, V4Error, V6Error};
use crate::neigh::{self, Lookup};
use crate::offload::Offload;
use crate::route::{Origin, Prefix, Route, Table};
use crate::Mac;
use filo_vnl::wire::vnet;

/// Interface number, in the order they were added (`vde0`, `vde1`, …).
pub type IfId = usize;

/// ICMP errors the router sends per second at most (a token bucket, like the kernel's
/// icmp_ratelimit), and the burst it allows.
const ICMP_RATE: u32 = 1000;
const ICMP_BURST: u32 = 100;

/// Why a frame or packet went nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Not a whole Ethernet frame.
    TooShort,
    /// Addressed to another host's MAC.
    OtherHost,
    /// Neither ARP, IPv4 nor IPv6.
    UnknownEthertype,
    /// ARP that is not Ethernet/IPv4, or not for us.
    Arp,
    /// An IP header that does not parse or whose checksum is wrong.
    Malformed,
    /// A source address no host has (unspecified, multicast, broadcast, loopback), or one of
    /// the router's own (spoofed: nothing the router sends comes back to it).
    BadSource,
    /// Link-local or other scope that is not forwarded.
    Scope,
    /// TTL / hop limit ran out (answered with time exceeded).
    TtlExceeded,
    /// No route to the destination (answered with unreachable).
    NoRoute,
    /// The next hop did not answer ARP / neighbour solicitations.
    NoNeighbour,
    /// The neighbour table is full of unresolved entries.
    NeighbourTableFull,
    /// Too many packets already wait for this neighbour.
    NeighbourQueueFull,
    /// Longer than the outgoing link's MTU and not fragmentable (answered with frag needed /
    /// packet too big).
    TooBig,
    /// To one of our addresses, but nothing here serves it.
    LocalUnhandled,
    /// A hook (filter, NAT) dropped it.
    Hook,
    /// A DHCP or router-solicitation message the servers refused.
    Server,
    /// The DHCP pool has no address free.
    PoolExhausted,
    /// An ICMP error not sent: over the rate limit.
    IcmpRateLimited,
    /// Reverse-path filtering: the source is not routed back out of the interface the packet
    /// came in on (a spoofed source).
    ReversePath,
    /// A fragment (IPv4, or IPv6 with a fragment header) for the router itself: it does not
    /// reassemble, and a fragment's data is no whole ICMP or UDP message.
    Fragment,
    /// A later fragment that came before its datagram's first one, which NAT could not hold
    /// until the first comes: the hold limits were reached.
    FragmentHoldFull,
    /// A later fragment NAT held for its datagram's first one, which did not come in time.
    FragmentHoldTimeout,
}

impl DropReason {
    pub const ALL: [DropReason; 22] = [
        DropReason::TooShort,
        DropReason::OtherHost,
        DropReason::UnknownEthertype,
        DropReason::Arp,
        DropReason::Malformed,
        DropReason::BadSource,
        DropReason::Scope,
        DropReason::TtlExceeded,
        DropReason::NoRoute,
        DropReason::NoNeighbour,
        DropReason::NeighbourTableFull,
        DropReason::NeighbourQueueFull,
        DropReason::TooBig,
        DropReason::LocalUnhandled,
        DropReason::Hook,
        DropReason::Server,
        DropReason::PoolExhausted,
        DropReason::IcmpRateLimited,
        DropReason::ReversePath,
        DropReason::Fragment,
        DropReason::FragmentHoldFull,
        DropReason::FragmentHoldTimeout,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::TooShort => "too_short",
            DropReason::OtherHost => "other_host",
            DropReason::UnknownEthertype => "unknown_ethertype",
            DropReason::Arp => "arp",
            DropReason::Malformed => "malformed",
            DropReason::BadSource => "bad_source",
            DropReason::Scope => "scope",
            DropReason::TtlExceeded => "ttl_exceeded",
            DropReason::NoRoute => "no_route",
            DropReason::NoNeighbour => "no_neighbour",
            DropReason::NeighbourTableFull => "neighbour_table_full",
            DropReason::NeighbourQueueFull => "neighbour_queue_full",
            DropReason::TooBig => "too_big",
            DropReason::LocalUnhandled => "local_unhandled",
            DropReason::Hook => "hook",
            DropReason::Server => "server",
            DropReason::PoolExhausted => "pool_exhausted",
            DropReason::IcmpRateLimited => "icmp_rate_limited",
            DropReason::ReversePath => "rp_filter",
            DropReason::Fragment => "fragment",
            DropReason::FragmentHoldFull => "fragment_hold_full",
            DropReason::FragmentHoldTimeout => "fragment_hold_timeout",
        }
    }
}

/// Drop counts, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropCounters {
    counts: [u64; DropReason::ALL.len()],
}

impl DropCounters {
    pub fn get(&self, reason: DropReason) -> u64 {
        self.counts[reason as usize]
    }

    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|&r| (r, self.get(r)))
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    fn add(&mut self, reason: DropReason) {
        self.counts[reason as usize] += 1;
    }
}

/// Where in the pipeline a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookPoint {
    /// Every IP packet that arrived, before routing (DNAT).
    Prerouting,
    /// Packets for the router itself.
    Input,
    /// Packets being forwarded (the filter).
    Forward,
    /// Packets the router itself sends, before routing.
    Output,
    /// Every IP packet about to leave, after routing (SNAT, masquerade).
    Postrouting,
}

/// What a hook knows about a packet besides its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketMeta {
    pub in_iface: Option<IfId>,
    pub out_iface: Option<IfId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookVerdict {
    Accept,
    Drop,
    /// Drop and tell the sender: TCP reset, or ICMP administratively prohibited.
    Reject,
    /// The hook took the packet (the buffer is left empty) and answers for it: its
    /// [`Hook::poll_output`] hands it back later to go on, or the reason it dropped it.
    Stolen,
}

/// What a hook hands back of the packets it took ([`HookVerdict::Stolen`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutput {
    /// A packet that goes on from where the hook took it: the hooks after it at `point`,
    /// then the rest of the pipeline.
    Resume {
        point: HookPoint,
        meta: PacketMeta,
        packet: Vec<u8>,
    },
    /// A packet it took and dropped, and why (counted in the router's drop counters).
    Dropped(DropReason),
}

/// A stage of packet processing (a filter, NAT): sees the IP packet and may rewrite it.
/// One hook may run at several points (NAT rewrites at PREROUTING and POSTROUTING).
pub trait Hook: Send {
    fn hook(
        &mut self,
        now: Instant,
        point: HookPoint,
        meta: &PacketMeta,
        packet: &mut Vec<u8>,
    ) -> HookVerdict;

    /// The name the console knows it by (`nat` for `nat/print`).
    fn name(&self) -> &'static str {
        ""
    }

    /// What the console prints for it: its table, its counters.
    fn print(&self, _now: Instant) -> Vec<String> {
        Vec::new()
    }

    /// A console command for it (`filter/add RULE`: `command("add", "RULE")`): None if it
    /// has no such command, else its output or what was wrong.
    fn command(&mut self, _cmd: &str, _args: &str) -> Option<Result<Vec<String>, String>> {
        None
    }

    /// The next of the packets it took that goes on or was dropped (see
    /// [`HookVerdict::Stolen`]); `now` lets it give up on what it held too long.
    fn poll_output(&mut self, _now: Instant) -> Option<HookOutput> {
        None
    }

    /// When [`Hook::poll_output`] next has something without a new packet (a timeout).
    fn poll_at(&self) -> Option<Instant> {
        None
    }
}

/// Hooks, each with the points it runs at, in the order they were added: the router's and a
/// forwarding stack's pipeline.
#[derive(Default)]
pub struct HookChain {
    list: Vec<(Vec<HookPoint>, Box<dyn Hook>)>,
}

impl HookChain {
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Runs `hook` at each of `points`, after the hooks already there.
    pub fn add(&mut self, points: &[HookPoint], hook: Box<dyn Hook>) {
        self.list.push((points.to_vec(), hook));
    }

    /// Runs a console command on the hooks called `name` in order, until one takes it (one
    /// NAT per interface: each takes its own); None when none does.
    pub fn command(
        &mut self,
        name: &str,
        cmd: &str,
        args: &str,
    ) -> Option<Result<Vec<String>, String>> {
        self.list
            .iter_mut()
            .filter(|(_, h)| h.name() == name)
            .find_map(|(_, h)| h.command(cmd, args))
    }

    /// Runs a console command on every hook called `name`: what each that takes it answers.
    pub fn command_all(
        &mut self,
        name: &str,
        cmd: &str,
        args: &str,
    ) -> Vec<Result<Vec<String>, String>> {
        self.list
            .iter_mut()
            .filter(|(_, h)| h.name() == name)
            .filter_map(|(_, h)| h.command(cmd, args))
            .collect()
    }

    /// What the hooks called `name` print (see [`Hook::print`]); None if there is none.
    pub fn print(&self, name: &str, now: Instant) -> Option<Vec<String>> {
        let mut found = None;
        for (_, h) in self.list.iter().filter(|(_, h)| h.name() == name) {
            found.get_or_insert_with(Vec::new).extend(h.print(now));
        }
        found
    }

    /// Runs the hooks of `point` in order until one does not accept the packet.
    pub fn run(
        &mut self,
        now: Instant,
        point: HookPoint,
        meta: &PacketMeta,
        packet: &mut Vec<u8>,
    ) -> HookVerdict {
        self.run_from(0, now, point, meta, packet)
    }

    /// [`HookChain::run`] from the hook at index `first` on (a packet a hook took and gave
    /// back goes on with the hooks after it).
    pub fn run_from(
        &mut self,
        first: usize,
        now: Instant,
        point: HookPoint,
        meta: &PacketMeta,
        packet: &mut Vec<u8>,
    ) -> HookVerdict {
        for (at, h) in self.list.iter_mut().skip(first) {
            if at.contains(&point) {
                let v = h.hook(now, point, meta, packet);
                if v != HookVerdict::Accept {
                    return v;
                }
            }
        }
        HookVerdict::Accept
    }

    /// The next output of a hook that took packets, with the hook's index (see
    /// [`Hook::poll_output`]).
    pub fn poll_output(&mut self, now: Instant) -> Option<(usize, HookOutput)> {
        self.list
            .iter_mut()
            .enumerate()
            .find_map(|(i, (_, h))| Some((i, h.poll_output(now)?)))
    }

    /// The earliest of the hooks' [`Hook::poll_at`].
    pub fn poll_at(&self) -> Option<Instant> {
        self.list.iter().filter_map(|(_, h)| h.poll_at()).min()
    }
}

/// One interface's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfaceConfig {
    pub name: String,
    pub mac: Mac,
    /// Addresses with their prefix length; each makes a connected route.
    pub addrs: Vec<(IpAddr, u8)>,
    /// The link MTU (IP packet size).
    pub mtu: u16,
}

impl IfaceConfig {
    pub fn new(name: &str, mac: Mac) -> IfaceConfig {
        IfaceConfig {
            name: name.to_string(),
            mac,
            addrs: Vec::new(),
            mtu: 1500,
        }
    }
}

/// Per-interface counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IfaceStats {
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub forwarded: u64,
    /// TCP super-frames (GSO) received, and sent as they are (see [`Router::set_vnet`]).
    pub super_rx: u64,
    pub super_tx: u64,
}

struct Iface {
    config: IfaceConfig,
    link_local: Ipv6Addr,
    dhcp: Option<Server>,
    ra: Option<Advertiser>,
    dhcp6: Option<filo_dhcp::v6::Server>,
    stats: IfaceStats,
    /// The link carries virtio-net headers (super-frames) both ways.
    vnet: bool,
}

impl Iface {
    fn v4(&self) -> Option<Ipv4Addr> {
        self.config.addrs.iter().find_map(|(a, _)| match a {
            IpAddr::V4(a) => Some(*a),
            _ => None,
        })
    }

    fn has(&self, a: IpAddr) -> bool {
        a == IpAddr::V6(self.link_local) || self.config.addrs.iter().any(|(x, _)| *x == a)
    }

    /// A directed broadcast to one of this interface's subnets.
    fn is_subnet_broadcast(&self, a: Ipv4Addr) -> bool {
        self.config.addrs.iter().any(|&(x, len)| match x {
            IpAddr::V4(x) if len < 31 => {
                let host = u32::MAX >> len;
                u32::from(a) == (u32::from(x) | host)
            }
            _ => false,
        })
    }

    /// Whether an NDP solicitation for `a` is ours to answer.
    fn owns_v6(&self, a: Ipv6Addr) -> bool {
        self.has(IpAddr::V6(a))
    }
}

/// What went wrong configuring the router.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("no interface {0}")]
    NoSuchInterface(String),
    #[error("gateway {0} is on no interface's subnet")]
    GatewayUnreachable(IpAddr),
    #[error("{iface}: DHCP server needs an IPv4 address on the interface")]
    DhcpWithoutAddress { iface: String },
    #[error("{iface}: DHCP server: {error}")]
    Dhcp {
        iface: String,
        error: dhcp::ConfigError,
    },
    #[error("{iface}: {error}")]
    Dhcp6 {
        iface: String,
        error: filo_dhcp::v6::ConfigError,
    },
    #[error("{iface}: router advertisements: {error}")]
    Ra {
        iface: String,
        error: ra::ConfigError,
    },
    #[error("MTU {0}: expected 1280..=65535")]
    Mtu(u16),
}

/// The router.
pub struct Router {
    ifaces: Vec<Iface>,
    routes: Table,
    neigh: neigh::Cache,
    hooks: HookChain,
    out: VecDeque<(IfId, Vec<u8>)>,
    drops: DropCounters,
    /// Times are kept relative to this, for the DHCP and RA servers' clocks.
    epoch: Instant,
    icmp_tokens: u32,
    icmp_refill: Instant,
    random: u32,
    /// Reused for segmenting super-frames.
    scratch: Vec<u8>,
    /// Spent frame buffers given back by the driver ([`Router::recycle`]), for the next
    /// forwarded packets: a 64 KiB super-frame in a fresh allocation costs page faults.
    pool: Vec<Vec<u8>>,
    /// Reverse-path filtering of forwarded packets ([`Router::set_rp_filter`]).
    rp_filter: bool,
}

impl Router {
    pub fn new(now: Instant) -> Router {
        Router {
            ifaces: Vec::new(),
            routes: Table::default(),
            neigh: neigh::Cache::default(),
            hooks: HookChain::default(),
            out: VecDeque::new(),
            drops: DropCounters::default(),
            epoch: now,
            icmp_tokens: ICMP_BURST,
            icmp_refill: now,
            random: 0x2545_f491,
            scratch: Vec::new(),
            pool: Vec::new(),
            rp_filter: false,
        }
    }

    /// Takes back a frame from [`Router::poll_transmit`] once it is sent, so that forwarding
    /// reuses its buffer instead of allocating (up to [`POOL`] buffers are kept).
    pub fn recycle(&mut self, mut frame: Vec<u8>) {
        if self.pool.len() < POOL {
            frame.clear();
            self.pool.push(frame);
        }
    }

    /// A copy of a received IP packet with room for the headers in front (see
    /// [`with_headroom`]), in a recycled buffer when there is one.
    fn copy_packet(&mut self, packet: &[u8]) -> Vec<u8> {
        match self.pool.pop() {
            Some(mut b) => {
                b.reserve(vnet::HEADER_LEN + ETHERNET_HEADER + packet.len());
                b.extend_from_slice(packet);
                b
            }
            None => with_headroom(packet),
        }
    }

    fn dhcp_now(&self, now: Instant) -> filo_dhcp::Instant {
        filo_dhcp::Instant::from_millis(now.saturating_duration_since(self.epoch).as_millis() as u64)
    }

    fn next_random(&mut self) -> u32 {
        // xorshift32: enough to spread advertisement intervals.
        let mut x = self.random;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.random = x;
        x
    }

    /// Adds an interface and the connected routes of its addresses.
    pub fn add_iface(&mut self, config: IfaceConfig) -> Result<IfId, ConfigError> {
        if config.mtu < 1280 {
            return Err(ConfigError::Mtu(config.mtu));
        }
        let id = self.ifaces.len();
        for &(a, len) in &config.addrs {
            if let Some(prefix) = Prefix::new(a, len) {
                self.routes.add(Route {
                    prefix,
                    via: None,
                    iface: id,
                    origin: Origin::Connected,
                });
            }
        }
        self.ifaces.push(Iface {
            link_local: ra::link_local(&config.mac),
            config,
            dhcp: None,
            ra: None,
            dhcp6: None,
            stats: IfaceStats::default(),
            vnet: false,
        });
        Ok(id)
    }

    /// The interface called `name`.
    pub fn iface_by_name(&self, name: &str) -> Option<IfId> {
        self.ifaces.iter().position(|i| i.config.name == name)
    }

    pub fn iface_config(&self, id: IfId) -> Option<&IfaceConfig> {
        self.ifaces.get(id).map(|i| &i.config)
    }

    pub fn iface_stats(&self, id: IfId) -> Option<IfaceStats> {
        self.ifaces.get(id).map(|i| i.stats)
    }

    /// Whether `iface`'s link carries a virtio-net header in front of every frame, both ways
    /// (the plug agreed on the `+vnet` framing): TCP super-frames and partial checksums
    /// come in on it and go out on it as they are; links without it get ordinary frames.
    pub fn set_vnet(&mut self, iface: IfId, on: bool) -> Result<(), ConfigError> {
        self.iface_mut(iface)?.vnet = on;
        Ok(())
    }

    pub fn iface_count(&self) -> usize {
        self.ifaces.len()
    }

    /// Adds a route to `prefix` via `gateway`, on the interface whose subnet holds it.
    pub fn add_route(&mut self, prefix: Prefix, gateway: IpAddr) -> Result<(), ConfigError> {
        let iface = self
            .routes
            .iter()
            .find(|r| r.origin == Origin::Connected && r.prefix.contains(gateway))
            .map(|r| r.iface)
            .ok_or(ConfigError::GatewayUnreachable(gateway))?;
        self.routes.add(Route {
            prefix,
            via: Some(gateway),
            iface,
            origin: Origin::Static,
        });
        Ok(())
    }

    pub fn remove_route(&mut self, prefix: Prefix) -> bool {
        self.routes.remove(prefix)
    }

    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }

    /// Serves DHCPv4 on `iface` with `config` (its `server_ip` should be the interface's
    /// address; the router option defaults to it).
    pub fn set_dhcp_server(
        &mut self,
        iface: IfId,
        mut config: dhcp::Config,
    ) -> Result<(), ConfigError> {
        let i = self.iface_mut(iface)?;
        let name = i.config.name.clone();
        if i.v4().is_none() {
            return Err(ConfigError::DhcpWithoutAddress { iface: name });
        }
        if config.router.is_none() {
            config.router = Some(config.server_ip);
        }
        if config.mtu.is_none() && i.config.mtu != 1500 {
            config.mtu = Some(i.config.mtu);
        }
        let server =
            Server::new(config).map_err(|error| ConfigError::Dhcp { iface: name, error })?;
        i.dhcp = Some(server);
        Ok(())
    }

    /// The DHCP server of `iface`, if it has one.
    pub fn dhcp_server(&self, iface: IfId) -> Option<&Server> {
        self.ifaces.get(iface).and_then(|i| i.dhcp.as_ref())
    }

    pub fn dhcp_server_mut(&mut self, iface: IfId) -> Option<&mut Server> {
        self.ifaces.get_mut(iface).and_then(|i| i.dhcp.as_mut())
    }

    /// The DHCP servers' clock for `now` (what their lease times are measured on).
    pub fn server_clock(&self, now: Instant) -> filo_dhcp::Instant {
        self.dhcp_now(now)
    }

    /// A stateless DHCPv6 server on `iface` (INFORMATION-REQUEST answered with `config`'s DNS
    /// servers and search list). Set it before [`Router::set_advertiser`] so the default
    /// advertisements carry the O flag.
    pub fn set_dhcpv6_server(
        &mut self,
        iface: IfId,
        config: filo_dhcp::v6::Config,
    ) -> Result<(), ConfigError> {
        let i = self.iface_mut(iface)?;
        let name = i.config.name.clone();
        i.dhcp6 = Some(
            filo_dhcp::v6::Server::new(config)
                .map_err(|error| ConfigError::Dhcp6 { iface: name, error })?,
        );
        Ok(())
    }

    pub fn dhcpv6_server(&self, iface: IfId) -> Option<&filo_dhcp::v6::Server> {
        self.ifaces.get(iface).and_then(|i| i.dhcp6.as_ref())
    }

    /// Sends router advertisements on `iface`: its IPv6 prefixes of length 64 for SLAAC, the
    /// link MTU, the O flag if it has a DHCPv6 server; `config` as given otherwise (None:
    /// those defaults).
    pub fn set_advertiser(
        &mut self,
        now: Instant,
        iface: IfId,
        config: Option<ra::Config>,
    ) -> Result<(), ConfigError> {
        let dnow = self.dhcp_now(now);
        let i = self.iface_mut(iface)?;
        let config = config.unwrap_or_else(|| {
            ra::Config::for_link(
                i.config.mac,
                &i.config.addrs,
                u32::from(i.config.mtu),
                i.dhcp6.is_some(),
            )
        });
        let name = i.config.name.clone();
        i.ra = Some(
            Advertiser::new(config, dnow)
                .map_err(|error| ConfigError::Ra { iface: name, error })?,
        );
        Ok(())
    }

    fn iface_mut(&mut self, iface: IfId) -> Result<&mut Iface, ConfigError> {
        self.ifaces
            .get_mut(iface)
            .ok_or_else(|| ConfigError::NoSuchInterface(format!("#{iface}")))
    }

    /// Strict reverse-path filtering (RFC 3704 §2.2, the kernel's rp_filter=1): a packet to
    /// be forwarded whose source the routes would not send back out of the interface it came
    /// in on is dropped and counted ([`DropReason::ReversePath`]). Off by default.
    pub fn set_rp_filter(&mut self, on: bool) {
        self.rp_filter = on;
    }

    /// Whether reverse-path filtering refuses a packet from `src` that came in on `iface`.
    fn rp_refused(&self, iface: IfId, src: IpAddr) -> bool {
        self.rp_filter && self.routes.lookup(src).is_none_or(|r| r.iface != iface)
    }

    /// Runs `hook` at each of `points`, after the hooks already there.
    pub fn add_hook(&mut self, points: &[HookPoint], hook: Box<dyn Hook>) {
        self.hooks.add(points, hook);
    }

    /// Runs a console command on the first hook called `name` that takes it.
    pub fn hook_command(
        &mut self,
        name: &str,
        cmd: &str,
        args: &str,
    ) -> Option<Result<Vec<String>, String>> {
        self.hooks.command(name, cmd, args)
    }

    /// Runs a console command on every hook called `name` (see [`HookChain::command_all`]).
    pub fn hook_command_all(
        &mut self,
        name: &str,
        cmd: &str,
        args: &str,
    ) -> Vec<Result<Vec<String>, String>> {
        self.hooks.command_all(name, cmd, args)
    }

    /// What the hooks called `name` print (see [`Hook::print`]); None if there is none.
    pub fn hook_print(&self, name: &str, now: Instant) -> Option<Vec<String>> {
        self.hooks.print(name, now)
    }

    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    /// The neighbour cache: interface, address, MAC (None while unresolved).
    pub fn neighbours(&self) -> impl Iterator<Item = (IfId, IpAddr, Option<Mac>)> + '_ {
        self.neigh.entries()
    }

    /// The next frame to send, and the interface it leaves on.
    pub fn poll_transmit(&mut self) -> Option<(IfId, Vec<u8>)> {
        let (i, f) = self.out.pop_front()?;
        if let Some(x) = self.ifaces.get_mut(i) {
            x.stats.tx_frames += 1;
        }
        Some((i, f))
    }

    /// When [`Router::handle_timeout`] next has work.
    pub fn poll_at(&self) -> Option<Instant> {
        let ra = self
            .ifaces
            .iter()
            .filter_map(|i| i.ra.as_ref())
            .map(|a| {
                let ms = a.poll_at().total_millis();
                self.epoch + Duration::from_millis(ms)
            })
            .min();
        [ra, self.neigh.poll_at(), self.hooks.poll_at()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Neighbour retries and give-ups, router advertisements due, packets hooks held too
    /// long.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.hook_outputs(now);
        let (again, failed) = self.neigh.poll(now);
        for (iface, addr) in again {
            self.solicit(iface, addr);
        }
        for f in failed {
            for p in f.queued {
                self.drops.add(DropReason::NoNeighbour);
                self.unreachable_host(now, f.iface, &p);
            }
        }
        let dnow = self.dhcp_now(now);
        for id in 0..self.ifaces.len() {
            let r = self.next_random();
            let Some(adv) = self.ifaces[id].ra.as_mut() else {
                continue;
            };
            if let Some(packet) = adv.poll(dnow, r) {
                let mac = self.ifaces[id].config.mac;
                self.push_frame(
                    id,
                    [0x33, 0x33, 0, 0, 0, 1],
                    mac,
                    EthernetProtocol::Ipv6,
                    &packet,
                );
            }
        }
    }

    fn push_frame(
        &mut self,
        iface: IfId,
        dst: Mac,
        src: Mac,
        ethertype: EthernetProtocol,
        payload: &[u8],
    ) {
        let repr = EthernetRepr {
            src_addr: EthernetAddress(src),
            dst_addr: EthernetAddress(dst),
            ethertype,
        };
        let mut f = vec![0; 14 + payload.len()];
        let mut frame = EthernetFrame::new_unchecked(&mut f[..]);
        repr.emit(&mut frame);
        frame.payload_mut().copy_from_slice(payload);
        self.enqueue(iface, f);
    }

    /// Queues an ordinary frame, behind a plain virtio-net header on a link that wants one.
    fn enqueue(&mut self, iface: IfId, mut frame: Vec<u8>) {
        if self.ifaces[iface].vnet {
            frame.splice(0..0, [0; vnet::HEADER_LEN]);
        }
        self.out.push_back((iface, frame));
    }

    fn drop(&mut self, reason: DropReason) {
        self.drops.add(reason);
    }

    /// A frame that arrived on `iface` (behind its virtio-net header if the link has them,
    /// see [`Router::set_vnet`]); then what hooks gave back because of it (NAT's held
    /// fragments go on right after their datagram's first one).
    pub fn handle_frame(&mut self, now: Instant, iface: IfId, frame: &[u8]) {
        self.receive(now, iface, frame);
        self.hook_outputs(now);
    }

    /// The packets hooks took and now give back: each goes on from after its hook, or is
    /// counted as dropped.
    fn hook_outputs(&mut self, now: Instant) {
        while let Some((at, out)) = self.hooks.poll_output(now) {
            let (point, meta, mut packet) = match out {
                HookOutput::Dropped(reason) => {
                    self.drop(reason);
                    continue;
                }
                HookOutput::Resume {
                    point,
                    meta,
                    packet,
                } => (point, meta, packet),
            };
            let v = self.hooks.run_from(at + 1, now, point, &meta, &mut packet);
            if !self.verdict(now, v, meta, &packet) {
                continue;
            }
            match (point, meta.in_iface, packet.first().map(|b| b >> 4)) {
                (HookPoint::Prerouting, Some(iface), Some(4)) => {
                    self.route_ipv4(now, iface, packet, None)
                }
                (HookPoint::Prerouting, Some(iface), Some(6)) => {
                    self.route_ipv6(now, iface, packet, None)
                }
                (HookPoint::Postrouting, _, _) => {
                    let Some(dst) = packet_dst(&packet) else {
                        self.drop(DropReason::Malformed);
                        continue;
                    };
                    let Some(route) = self.routes.lookup(dst).cloned() else {
                        self.drop(DropReason::NoRoute);
                        continue;
                    };
                    let next = route.via.unwrap_or(dst);
                    self.resolve(now, route.iface, next, packet, None);
                }
                // Nothing takes packets at the other points.
                _ => self.drop(DropReason::Hook),
            }
        }
    }

    fn receive(&mut self, now: Instant, iface: IfId, frame: &[u8]) {
        let Some(i) = self.ifaces.get_mut(iface) else {
            return;
        };
        if !i.vnet {
            return self.handle_ethernet(now, iface, frame, None);
        }
        let Ok(hdr) = vnet::Header::parse(frame) else {
            i.stats.rx_frames += 1;
            return self.drop(DropReason::TooShort);
        };
        let frame = &frame[vnet::HEADER_LEN..];
        if hdr.is_plain() {
            return self.handle_ethernet(now, iface, frame, None);
        }
        let ip = frame.get(ETHERNET_HEADER..).unwrap_or(&[]);
        if let Some(off) = Offload::new(hdr, ip) {
            if off.is_gso() {
                i.stats.super_rx += 1;
            }
            return self.handle_ethernet(now, iface, frame, Some(off));
        }
        // Something not carried through as it is: ordinary frames at once.
        let mut scratch = std::mem::take(&mut self.scratch);
        let r = vnet::finish(&hdr, frame, &mut scratch, |seg| {
            self.handle_ethernet(now, iface, seg, None)
        });
        self.scratch = scratch;
        if r.is_err() {
            self.ifaces[iface].stats.rx_frames += 1;
            self.drop(DropReason::Malformed);
        }
    }

    fn handle_ethernet(&mut self, now: Instant, iface: IfId, frame: &[u8], off: Option<Offload>) {
        let i = &mut self.ifaces[iface];
        i.stats.rx_frames += 1;
        let mac = i.config.mac;
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return self.drop(DropReason::TooShort);
        };
        let dst = eth.dst_addr();
        if dst.0 != mac && !dst.is_broadcast() && !dst.is_multicast() {
            return self.drop(DropReason::OtherHost);
        }
        match eth.ethertype() {
            EthernetProtocol::Arp => self.handle_arp(now, iface, eth.payload()),
            EthernetProtocol::Ipv4 => self.handle_ipv4(now, iface, eth.payload(), off),
            EthernetProtocol::Ipv6 => self.handle_ipv6(now, iface, eth.payload(), off),
            _ => self.drop(DropReason::UnknownEthertype),
        }
    }

    fn handle_arp(&mut self, now: Instant, iface: IfId, payload: &[u8]) {
        let Ok(p) = ArpPacket::new_checked(payload) else {
            return self.drop(DropReason::Arp);
        };
        let Ok(ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr,
            source_protocol_addr,
            target_protocol_addr,
            ..
        }) = ArpRepr::parse(&p)
        else {
            return self.drop(DropReason::Arp);
        };
        let me = &self.ifaces[iface];
        let ours = me.has(IpAddr::V4(target_protocol_addr));
        let mac = me.config.mac;
        if source_hardware_addr.is_unicast() && !source_protocol_addr.is_unspecified() {
            let waiting = self.neigh.learn(
                now,
                iface,
                IpAddr::V4(source_protocol_addr),
                source_hardware_addr.0,
                ours && operation == ArpOperation::Request,
            );
            for p in waiting {
                self.transmit_resolved(iface, source_hardware_addr.0, p, None);
            }
        }
        if operation == ArpOperation::Request && ours {
            let reply = ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Reply,
                source_hardware_addr: EthernetAddress(mac),
                source_protocol_addr: target_protocol_addr,
                target_hardware_addr: source_hardware_addr,
                target_protocol_addr: source_protocol_addr,
            };
            let mut b = vec![0; reply.buffer_len()];
            reply.emit(&mut ArpPacket::new_unchecked(&mut b[..]));
            self.push_frame(
                iface,
                source_hardware_addr.0,
                mac,
                EthernetProtocol::Arp,
                &b,
            );
        } else if operation != ArpOperation::Reply {
            self.drop(DropReason::Arp);
        }
    }

    /// Runs the hooks of `point`; false if one dropped or rejected the packet (counted; a
    /// rejected one is answered with a TCP reset or an ICMP "administratively prohibited").
    fn run_hooks(
        &mut self,
        now: Instant,
        point: HookPoint,
        meta: PacketMeta,
        packet: &mut Vec<u8>,
    ) -> bool {
        let v = self.hooks.run(now, point, &meta, packet);
        self.verdict(now, v, meta, packet)
    }

    /// Acts on a hook verdict about `packet`: true if it goes on.
    fn verdict(&mut self, now: Instant, v: HookVerdict, meta: PacketMeta, packet: &[u8]) -> bool {
        match v {
            HookVerdict::Accept => return true,
            // The hook answers for it (and counts it if it drops it).
            HookVerdict::Stolen => return false,
            HookVerdict::Drop => {}
            HookVerdict::Reject => {
                if let Some(iface) = meta.in_iface {
                    self.reject(now, iface, packet);
                }
            }
        }
        self.drops.add(DropReason::Hook);
        false
    }

    /// Answers a rejected packet: a reset for TCP, ICMP unreachable (administratively
    /// prohibited) otherwise.
    fn reject(&mut self, now: Instant, iface: IfId, packet: &[u8]) {
        if let Some((rst, dst)) = icmp::tcp_reset(packet) {
            return self.output(now, rst, dst);
        }
        match packet.first().map(|b| b >> 4) {
            Some(4) => self.icmp_v4_error(now, iface, packet, V4Error::ADMIN_PROHIBITED),
            Some(6) => self.icmp_v6_error(now, iface, packet, V6Error::ADMIN_PROHIBITED),
            _ => {}
        }
    }

    fn is_local(&self, iface: IfId, a: IpAddr) -> bool {
        match a {
            IpAddr::V6(v6) if v6.is_unicast_link_local() => self.ifaces[iface].has(a),
            _ => self.ifaces.iter().any(|i| i.has(a)),
        }
    }

    fn handle_ipv4(&mut self, now: Instant, iface: IfId, payload: &[u8], off: Option<Offload>) {
        let Ok(p) = Ipv4Packet::new_checked(payload) else {
            return self.drop(DropReason::Malformed);
        };
        if p.version() != 4 || !p.verify_checksum() {
            return self.drop(DropReason::Malformed);
        }
        let mut packet = self.copy_packet(&payload[..usize::from(p.total_len())]);
        let meta = PacketMeta {
            in_iface: Some(iface),
            out_iface: None,
        };
        if !self.run_hooks(now, HookPoint::Prerouting, meta, &mut packet) {
            return;
        }
        self.route_ipv4(now, iface, packet, off);
    }

    /// An IPv4 packet after PREROUTING: for the router, or forwarded.
    fn route_ipv4(&mut self, now: Instant, iface: IfId, mut packet: Vec<u8>, off: Option<Offload>) {
        let meta = PacketMeta {
            in_iface: Some(iface),
            out_iface: None,
        };
        let Ok(p) = Ipv4Packet::new_checked(&packet[..]) else {
            return self.drop(DropReason::Malformed);
        };
        let (src, dst) = (p.src_addr(), p.dst_addr());
        if self.is_local(iface, IpAddr::V4(src)) {
            return self.drop(DropReason::BadSource);
        }
        // DHCP clients send from 0.0.0.0 to the broadcast address.
        let local = dst.is_broadcast()
            || dst.is_multicast()
            || self.ifaces[iface].is_subnet_broadcast(dst)
            || self.is_local(iface, IpAddr::V4(dst));
        if local {
            if p.more_frags() || p.frag_offset() != 0 {
                return self.drop(DropReason::Fragment);
            }
            for mut packet in self.plain(off, packet) {
                if self.run_hooks(now, HookPoint::Input, meta, &mut packet) {
                    self.local_v4(now, iface, &packet);
                }
            }
            return;
        }
        if src.is_unspecified() || src.is_broadcast() || src.is_multicast() || src.is_loopback() {
            return self.drop(DropReason::BadSource);
        }
        if src.is_link_local() || dst.is_link_local() {
            return self.drop(DropReason::Scope);
        }
        if self.rp_refused(iface, IpAddr::V4(src)) {
            return self.drop(DropReason::ReversePath);
        }
        if p.hop_limit() <= 1 {
            self.drop(DropReason::TtlExceeded);
            return self.icmp_v4_error(now, iface, &packet, V4Error::TTL_EXCEEDED);
        }
        let Some(route) = self.routes.lookup(IpAddr::V4(dst)).cloned() else {
            self.drop(DropReason::NoRoute);
            return self.icmp_v4_error(now, iface, &packet, V4Error::NET_UNREACHABLE);
        };
        let meta = PacketMeta {
            in_iface: Some(iface),
            out_iface: Some(route.iface),
        };
        if !self.run_hooks(now, HookPoint::Forward, meta, &mut packet) {
            return;
        }
        {
            let mut p = Ipv4Packet::new_unchecked(&mut packet[..]);
            p.set_hop_limit(p.hop_limit() - 1);
            p.fill_checksum();
        }
        let mtu = usize::from(self.ifaces[route.iface].config.mtu);
        // A super-frame's size is its segments' (the kernel's skb_gso_validate_network_len).
        if off.map_or(packet.len(), |o| o.wire_len(&packet)) > mtu {
            let p = Ipv4Packet::new_unchecked(&packet[..]);
            if p.dont_frag() {
                self.drop(DropReason::TooBig);
                // The quoted header carries the decremented TTL, as the kernel's does.
                let e = V4Error::frag_needed(mtu as u16);
                return self.icmp_v4_error(now, iface, &packet, e);
            }
            let mut frags = Vec::new();
            for packet in self.plain(off, packet) {
                if !filo_vnl::wire::ipv4::fragment(&packet, mtu, |f| frags.push(f.to_vec())) {
                    return self.drop(DropReason::Malformed);
                }
            }
            self.ifaces[iface].stats.forwarded += 1;
            for f in frags {
                self.postroute(now, meta, &route, IpAddr::V4(dst), f, None);
            }
            return;
        }
        self.ifaces[iface].stats.forwarded += 1;
        self.postroute(now, meta, &route, IpAddr::V4(dst), packet, off);
    }

    /// The ordinary packets a packet with an offload stands for (segmented, checksums
    /// completed); none if it cannot be segmented (counted).
    fn plain(&mut self, off: Option<Offload>, packet: Vec<u8>) -> Vec<Vec<u8>> {
        let Some(o) = off else {
            return vec![packet];
        };
        let mut scratch = std::mem::take(&mut self.scratch);
        let out = o.plain(&packet, &mut scratch);
        self.scratch = scratch;
        out.unwrap_or_else(|| {
            self.drop(DropReason::Malformed);
            Vec::new()
        })
    }

    /// POSTROUTING, then the neighbour: out on `route.iface`.
    fn postroute(
        &mut self,
        now: Instant,
        meta: PacketMeta,
        route: &Route,
        dst: IpAddr,
        mut packet: Vec<u8>,
        off: Option<Offload>,
    ) {
        if !self.run_hooks(now, HookPoint::Postrouting, meta, &mut packet) {
            return;
        }
        let next = route.via.unwrap_or(dst);
        let out = route.iface;
        if let Some(o) = off {
            o.fix(&mut packet);
            if !self.neigh.is_known(out, next) {
                // Only ordinary packets wait for a neighbour.
                for p in self.plain(off, packet) {
                    self.resolve(now, out, next, p, None);
                }
                return;
            }
        }
        self.resolve(now, out, next, packet, off);
    }

    /// The neighbour, then out on `out` (or queued until it answers).
    fn resolve(
        &mut self,
        now: Instant,
        out: IfId,
        next: IpAddr,
        packet: Vec<u8>,
        off: Option<Offload>,
    ) {
        match self.neigh.lookup(now, out, next, &packet) {
            Lookup::Known { mac, probe } => {
                if probe {
                    self.solicit(out, next);
                }
                self.transmit_resolved(out, mac, packet, off);
            }
            Lookup::Queued { probe } => {
                if probe {
                    self.solicit(out, next);
                }
            }
            Lookup::QueueFull => self.drop(DropReason::NeighbourQueueFull),
            Lookup::TableFull => self.drop(DropReason::NeighbourTableFull),
        }
    }

    /// Sends an IP packet to `mac` on `iface`: the Ethernet header (and the virtio-net header
    /// on a link that has them) goes in front of the packet's own buffer (no new allocation
    /// when it was made with [`with_headroom`]). A super-frame leaves as it is on a link with
    /// virtio-net headers, else as ordinary frames.
    fn transmit_resolved(
        &mut self,
        iface: IfId,
        mac: Mac,
        mut packet: Vec<u8>,
        off: Option<Offload>,
    ) {
        let ethertype = if packet.first().is_some_and(|b| b >> 4 == 6) {
            EthernetProtocol::Ipv6
        } else {
            EthernetProtocol::Ipv4
        };
        let repr = EthernetRepr {
            src_addr: EthernetAddress(self.ifaces[iface].config.mac),
            dst_addr: EthernetAddress(mac),
            ethertype,
        };
        let vnet = self.ifaces[iface].vnet;
        let at = if vnet { vnet::HEADER_LEN } else { 0 };
        packet.splice(
            0..0,
            [0; vnet::HEADER_LEN + ETHERNET_HEADER][..at + ETHERNET_HEADER]
                .iter()
                .copied(),
        );
        repr.emit(&mut EthernetFrame::new_unchecked(&mut packet[at..]));
        match off {
            Some(o) if vnet => {
                if o.is_gso() {
                    self.ifaces[iface].stats.super_tx += 1;
                }
                packet[..at].copy_from_slice(&o.hdr.emit());
                self.out.push_back((iface, packet));
            }
            Some(o) if !o.is_gso() => {
                if vnet::complete(&o.hdr, &mut packet).is_err() {
                    return self.drop(DropReason::Malformed);
                }
                self.out.push_back((iface, packet));
            }
            Some(o) => {
                let mut segs = Vec::new();
                let r = vnet::finish(&o.hdr, &packet, &mut self.scratch, |s| {
                    segs.push(s.to_vec())
                });
                if r.is_err() {
                    return self.drop(DropReason::Malformed);
                }
                self.out.extend(segs.into_iter().map(|s| (iface, s)));
            }
            None => self.out.push_back((iface, packet)),
        }
    }

    /// Asks for `addr`'s MAC on `iface` (ARP request or neighbour solicitation).
    fn solicit(&mut self, iface: IfId, addr: IpAddr) {
        let i = &self.ifaces[iface];
        let mac = i.config.mac;
        match addr {
            IpAddr::V4(target) => {
                let Some(src) = i.v4() else { return };
                let req = ArpRepr::EthernetIpv4 {
                    operation: ArpOperation::Request,
                    source_hardware_addr: EthernetAddress(mac),
                    source_protocol_addr: src,
                    target_hardware_addr: EthernetAddress([0; 6]),
                    target_protocol_addr: target,
                };
                let mut b = vec![0; req.buffer_len()];
                req.emit(&mut ArpPacket::new_unchecked(&mut b[..]));
                self.push_frame(iface, [0xff; 6], mac, EthernetProtocol::Arp, &b);
            }
            IpAddr::V6(target) => {
                let src = i.link_local;
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
                let ns = Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
                    target_addr: target,
                    lladdr: Some(RawHardwareAddress::from_bytes(&mac)),
                });
                let packet = ndisc_packet(src, group, &ns);
                let g = group.octets();
                let dst = [0x33, 0x33, g[12], g[13], g[14], g[15]];
                self.push_frame(iface, dst, mac, EthernetProtocol::Ipv6, &packet);
            }
        }
    }

    /// Sends a locally made IP packet: OUTPUT, route, POSTROUTING.
    fn output(&mut self, now: Instant, packet: Vec<u8>, dst: IpAddr) {
        let mut packet = packet;
        let meta = PacketMeta {
            in_iface: None,
            out_iface: None,
        };
        if !self.run_hooks(now, HookPoint::Output, meta, &mut packet) {
            return;
        }
        let Some(route) = self.routes.lookup(dst).cloned() else {
            return self.drop(DropReason::NoRoute);
        };
        let meta = PacketMeta {
            in_iface: None,
            out_iface: Some(route.iface),
        };
        self.postroute(now, meta, &route, dst, packet, None);
    }

    /// Whether the ICMP error budget allows one more.
    fn icmp_allowed(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.icmp_refill);
        let add = (elapsed.as_millis() as u64 * u64::from(ICMP_RATE) / 1000) as u32;
        if add > 0 {
            self.icmp_tokens = (self.icmp_tokens.saturating_add(add)).min(ICMP_BURST);
            self.icmp_refill = now;
        }
        if self.icmp_tokens == 0 {
            self.drops.add(DropReason::IcmpRateLimited);
            return false;
        }
        self.icmp_tokens -= 1;
        true
    }

    fn icmp_v4_error(&mut self, now: Instant, iface: IfId, packet: &[u8], e: V4Error) {
        let p = Ipv4Packet::new_unchecked(packet);
        if !icmp::v4_may_answer(&p) || !self.icmp_allowed(now) {
            return;
        }
        // From the address of the interface the packet came in on (tracepath shows it).
        let src = self.ifaces[iface]
            .v4()
            .or_else(|| self.ifaces.iter().find_map(Iface::v4));
        let Some(src) = src else { return };
        let reply = icmp::v4_error(src, &p, e);
        self.output(now, reply, IpAddr::V4(p.src_addr()));
    }

    fn icmp_v6_error(&mut self, now: Instant, iface: IfId, packet: &[u8], e: V6Error) {
        let p = Ipv6Packet::new_unchecked(packet);
        if !icmp::v6_may_answer(&p) || !self.icmp_allowed(now) {
            return;
        }
        let to = p.src_addr();
        let src = self.v6_source(iface, to);
        let reply = icmp::v6_error(src, &p, e);
        self.output(now, reply, IpAddr::V6(to));
    }

    /// Our address to answer `to` from: a global one of `iface` for a global destination.
    fn v6_source(&self, iface: IfId, to: Ipv6Addr) -> Ipv6Addr {
        let i = &self.ifaces[iface];
        if to.is_unicast_link_local() {
            return i.link_local;
        }
        let global = |i: &Iface| {
            i.config.addrs.iter().find_map(|(a, _)| match a {
                IpAddr::V6(a) if !a.is_unicast_link_local() => Some(*a),
                _ => None,
            })
        };
        global(i)
            .or_else(|| self.ifaces.iter().find_map(global))
            .unwrap_or(i.link_local)
    }

    /// A packet whose next hop never answered: host unreachable to its source.
    fn unreachable_host(&mut self, now: Instant, iface: IfId, packet: &[u8]) {
        match packet.first().map(|b| b >> 4) {
            Some(4) => self.icmp_v4_error(now, iface, packet, V4Error::HOST_UNREACHABLE),
            Some(6) => self.icmp_v6_error(now, iface, packet, V6Error::ADDR_UNREACHABLE),
            _ => {}
        }
    }

    fn local_v4(&mut self, now: Instant, iface: IfId, packet: &[u8]) {
        let p = Ipv4Packet::new_unchecked(packet);
        let (src, dst) = (p.src_addr(), p.dst_addr());
        match p.next_header() {
            IpProtocol::Udp => {
                if let Some(payload) = dhcp::server_payload(packet) {
                    if self.ifaces[iface].dhcp.is_some() {
                        return self.serve_dhcp(now, iface, payload.to_vec());
                    }
                }
                if self.is_local(iface, IpAddr::V4(dst))
                    && UdpPacket::new_checked(p.payload()).is_ok()
                {
                    self.drop(DropReason::LocalUnhandled);
                    return self.icmp_v4_error(now, iface, packet, V4Error::PORT_UNREACHABLE);
                }
                self.drop(DropReason::LocalUnhandled)
            }
            IpProtocol::Icmp => {
                let Ok(icmp) = Icmpv4Packet::new_checked(p.payload()) else {
                    return self.drop(DropReason::Malformed);
                };
                if !icmp.verify_checksum() {
                    return self.drop(DropReason::Malformed);
                }
                if icmp.msg_type() == Icmpv4Message::EchoRequest
                    && self.is_local(iface, IpAddr::V4(dst))
                {
                    let reply = icmp::v4_echo_reply(dst, src, p.payload());
                    return self.output(now, reply, IpAddr::V4(src));
                }
                self.drop(DropReason::LocalUnhandled)
            }
            _ => self.drop(DropReason::LocalUnhandled),
        }
    }

    fn serve_dhcp(&mut self, now: Instant, iface: IfId, payload: Vec<u8>) {
        let dnow = self.dhcp_now(now);
        let mac = self.ifaces[iface].config.mac;
        let Some(server) = self.ifaces[iface].dhcp.as_mut() else {
            return;
        };
        match server.handle(dnow, &payload) {
            Ok(Some(reply)) => match reply.ethernet_frame(mac) {
                Some(frame) => self.enqueue(iface, frame),
                None => {
                    let dst = reply.dst_ip();
                    self.output(now, reply.ipv4_packet(), IpAddr::V4(dst));
                }
            },
            Ok(None) => {}
            Err(dhcp::Error::PoolExhausted(_)) => self.drop(DropReason::PoolExhausted),
            Err(e) => {
                tracing::debug!("{}: DHCP: {e}", self.ifaces[iface].config.name);
                self.drop(DropReason::Server)
            }
        }
    }

    fn handle_ipv6(&mut self, now: Instant, iface: IfId, payload: &[u8], off: Option<Offload>) {
        let Ok(p) = Ipv6Packet::new_checked(payload) else {
            return self.drop(DropReason::Malformed);
        };
        if p.version() != 6 {
            return self.drop(DropReason::Malformed);
        }
        let mut packet = self.copy_packet(&payload[..40 + usize::from(p.payload_len())]);
        let meta = PacketMeta {
            in_iface: Some(iface),
            out_iface: None,
        };
        if !self.run_hooks(now, HookPoint::Prerouting, meta, &mut packet) {
            return;
        }
        self.route_ipv6(now, iface, packet, off);
    }

    /// An IPv6 packet after PREROUTING: for the router, or forwarded.
    fn route_ipv6(&mut self, now: Instant, iface: IfId, mut packet: Vec<u8>, off: Option<Offload>) {
        let meta = PacketMeta {
            in_iface: Some(iface),
            out_iface: None,
        };
        let Ok(p) = Ipv6Packet::new_checked(&packet[..]) else {
            return self.drop(DropReason::Malformed);
        };
        let (src, dst) = (p.src_addr(), p.dst_addr());
        if self.is_local(iface, IpAddr::V6(src)) {
            return self.drop(DropReason::BadSource);
        }
        if dst.is_multicast() {
            if (dst.segments()[0] & 0x000f) <= 2 || self.is_local(iface, IpAddr::V6(dst)) {
                for mut packet in self.plain(off, packet) {
                    if self.run_hooks(now, HookPoint::Input, meta, &mut packet) {
                        self.local_v6(now, iface, &packet);
                    }
                }
            } else {
                self.drop(DropReason::Scope);
            }
            return;
        }
        if self.is_local(iface, IpAddr::V6(dst)) {
            for mut packet in self.plain(off, packet) {
                if self.run_hooks(now, HookPoint::Input, meta, &mut packet) {
                    self.local_v6(now, iface, &packet);
                }
            }
            return;
        }
        if src.is_unspecified() || src.is_multicast() || src.is_loopback() {
            return self.drop(DropReason::BadSource);
        }
        if src.is_unicast_link_local() || dst.is_unicast_link_local() {
            return self.drop(DropReason::Scope);
        }
        if self.rp_refused(iface, IpAddr::V6(src)) {
            return self.drop(DropReason::ReversePath);
        }
        if p.hop_limit() <= 1 {
            self.drop(DropReason::TtlExceeded);
            return self.icmp_v6_error(now, iface, &packet, V6Error::HOP_LIMIT_EXCEEDED);
        }
        let Some(route) = self.routes.lookup(IpAddr::V6(dst)).cloned() else {
            self.drop(DropReason::NoRoute);
            return self.icmp_v6_error(now, iface, &packet, V6Error::NO_ROUTE);
        };
        let mtu = usize::from(self.ifaces[route.iface].config.mtu);
        if off.map_or(packet.len(), |o| o.wire_len(&packet)) > mtu {
            self.drop(DropReason::TooBig);
            return self.icmp_v6_error(now, iface, &packet, V6Error::too_big(mtu as u32));
        }
        let meta = PacketMeta {
            in_iface: Some(iface),
            out_iface: Some(route.iface),
        };
        if !self.run_hooks(now, HookPoint::Forward, meta, &mut packet) {
            return;
        }
        {
            let mut p = Ipv6Packet::new_unchecked(&mut packet[..]);
            p.set_hop_limit(p.hop_limit() - 1);
        }
        self.ifaces[iface].stats.forwarded += 1;
        self.postroute(now, meta, &route, IpAddr::V6(dst), packet, off);
    }

    fn local_v6(&mut self, now: Instant, iface: IfId, packet: &[u8]) {
        let p = Ipv6Packet::new_unchecked(packet);
        let (src, dst) = (p.src_addr(), p.dst_addr());
        if p.next_header() == IpProtocol::Ipv6Frag {
            return self.drop(DropReason::Fragment);
        }
        if p.next_header() != IpProtocol::Icmpv6 {
            if self.ifaces[iface].dhcp6.is_some() {
                if let Some((client, msg)) = filo_dhcp::v6::server_payload(packet) {
                    return self.dhcpv6(now, iface, client, msg);
                }
            }
            if p.next_header() == IpProtocol::Udp && self.is_local(iface, IpAddr::V6(dst)) {
                self.drop(DropReason::LocalUnhandled);
                return self.icmp_v6_error(now, iface, packet, V6Error::PORT_UNREACHABLE);
            }
            return self.drop(DropReason::LocalUnhandled);
        }
        let Ok(icmp) = Icmpv6Packet::new_checked(p.payload()) else {
            return self.drop(DropReason::Malformed);
        };
        if !icmp.verify_checksum(&src, &dst) {
            return self.drop(DropReason::Malformed);
        }
        match icmp.msg_type() {
            Icmpv6Message::EchoRequest if !dst.is_multicast() => {
                let reply = icmp::v6_echo_reply(dst, src, p.payload());
                self.output(now, reply, IpAddr::V6(src));
            }
            Icmpv6Message::NeighborSolicit | Icmpv6Message::NeighborAdvert
                if p.hop_limit() == 255 =>
            {
                self.handle_ndisc(now, iface, src, &icmp)
            }
            Icmpv6Message::RouterSolicit => {
                let r = self.next_random();
                let dnow = self.dhcp_now(now);
                match self.ifaces[iface].ra.as_mut() {
                    Some(adv) => {
                        if adv.handle_packet(dnow, packet, r).is_err() {
                            self.drop(DropReason::Server);
                        }
                    }
                    None => self.drop(DropReason::LocalUnhandled),
                }
            }
            _ => self.drop(DropReason::LocalUnhandled),
        }
    }

    /// A DHCPv6 message from `client` on `iface`: the reply goes back from our link-local
    /// address.
    fn dhcpv6(&mut self, now: Instant, iface: IfId, client: Ipv6Addr, msg: &[u8]) {
        let Some(server) = self.ifaces[iface].dhcp6.as_ref() else {
            return;
        };
        let reply = match server.handle(msg) {
            Ok(Some(reply)) => reply,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!("{}: DHCPv6: {e}", self.ifaces[iface].config.name);
                return self.drop(DropReason::Server);
            }
        };
        let packet = filo_dhcp::v6::udp6(
            self.ifaces[iface].link_local,
            client,
            547,
            546,
            &reply.payload,
        );
        let route = Route {
            prefix: Prefix::default_for(IpAddr::V6(client)),
            via: None,
            iface,
            origin: crate::route::Origin::Connected,
        };
        let meta = PacketMeta {
            in_iface: None,
            out_iface: Some(iface),
        };
        self.postroute(now, meta, &route, IpAddr::V6(client), packet, None);
    }

    fn handle_ndisc(
        &mut self,
        now: Instant,
        iface: IfId,
        src: Ipv6Addr,
        icmp: &Icmpv6Packet<&[u8]>,
    ) {
        let Ok(repr) = NdiscRepr::parse(icmp) else {
            return self.drop(DropReason::Malformed);
        };
        let mac = self.ifaces[iface].config.mac;
        match repr {
            NdiscRepr::NeighborSolicit {
                target_addr,
                lladdr,
            } => {
                if !self.ifaces[iface].owns_v6(target_addr) {
                    return self.drop(DropReason::LocalUnhandled);
                }
                let their = lladdr.and_then(lladdr_mac);
                // Duplicate address detection (from ::) is answered to all nodes.
                let (to, to_mac) = match (src.is_unspecified(), their) {
                    (false, Some(m)) => {
                        let waiting = self.neigh.learn(now, iface, IpAddr::V6(src), m, true);
                        for p in waiting {
                            self.transmit_resolved(iface, m, p, None);
                        }
                        (src, m)
                    }
                    (true, _) => (
                        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
                        [0x33, 0x33, 0, 0, 0, 1],
                    ),
                    // A unicast solicitation without the option: answer the cached MAC.
                    (false, None) => {
                        let cached = self
                            .neigh
                            .entries()
                            .find(|(i, a, _)| *i == iface && *a == IpAddr::V6(src))
                            .and_then(|(_, _, m)| m);
                        match cached {
                            Some(m) => (src, m),
                            None => return self.drop(DropReason::NoNeighbour),
                        }
                    }
                };
                let mut flags = NdiscNeighborFlags::ROUTER | NdiscNeighborFlags::OVERRIDE;
                if !src.is_unspecified() {
                    flags |= NdiscNeighborFlags::SOLICITED;
                }
                let na = Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
                    flags,
                    target_addr,
                    lladdr: Some(RawHardwareAddress::from_bytes(&mac)),
                });
                let packet = ndisc_packet(target_addr, to, &na);
                self.push_frame(iface, to_mac, mac, EthernetProtocol::Ipv6, &packet);
            }
            NdiscRepr::NeighborAdvert {
                target_addr,
                lladdr: Some(l),
                ..
            } => {
                if let Some(m) = lladdr_mac(l) {
                    let waiting = self
                        .neigh
                        .learn(now, iface, IpAddr::V6(target_addr), m, false);
                    for p in waiting {
                        self.transmit_resolved(iface, m, p, None);
                    }
                }
            }
            _ => {}
        }
    }
}

/// An NDP message as an IPv6 packet with hop limit 255.
fn ndisc_packet(src: Ipv6Addr, dst: Ipv6Addr, repr: &Icmpv6Repr) -> Vec<u8> {
    let mut msg = vec![0; repr.buffer_len()];
    repr.emit(
        &src,
        &dst,
        &mut Icmpv6Packet::new_unchecked(&mut msg[..]),
        &smoltcp::phy::ChecksumCapabilities::default(),
    );
    icmp::ipv6_icmp(src, dst, 255, msg)
}

/// The Ethernet address in an NDP link-layer address option.
fn lladdr_mac(l: RawHardwareAddress) -> Option<Mac> {
    l.as_bytes().try_into().ok()
}

/// An IP packet's destination address, if it has a whole header.
fn packet_dst(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => Some(IpAddr::V4(Ipv4Packet::new_checked(packet).ok()?.dst_addr())),
        6 => Some(IpAddr::V6(Ipv6Packet::new_checked(packet).ok()?.dst_addr())),
        _ => None,
    }
}

/// Length of the Ethernet header the router puts in front of the packets it sends.
const ETHERNET_HEADER: usize = 14;
/// Most spent frame buffers the router keeps for reuse (at most 4 MiB of super-frames).
const POOL: usize = 64;

/// A copy of a received IP packet in a buffer with room for the Ethernet header in front, so
/// that sending it on ([`Router::transmit_resolved`]) moves the bytes instead of allocating
/// and copying a frame: one allocation per forwarded packet.
pub(crate) fn with_headroom(packet: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(vnet::HEADER_LEN + ETHERNET_HEADER + packet.len());
    b.extend_from_slice(packet);
    b
}
