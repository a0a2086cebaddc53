//! filo's layer beneath smoltcp: links (Ethernet interfaces over plugs), ARP and IPv6
//! neighbour discovery, the routing table, loopback, and per-reason drop counters.
//!
//! smoltcp sees one `Medium::Ip` device. Packets it emits go to [`Net::output`], which picks an
//! interface and next hop by longest-prefix match, resolves the neighbour and frames the packet;
//! frames from plugs go to [`Net::handle_frame`], which answers ARP and NDP itself and queues IP
//! packets for smoltcp in [`Net::rx`]. A sans-IO core: frames and time in, frames per link out
//! ([`Net::poll_transmit`]), which the driver sends on the links' plugs. Nothing here reads the
//! clock or touches a descriptor.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use filo_vnl::wire::vnet;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, IpProtocol,
    Ipv4Packet, Ipv6Packet,
};

use crate::wire::{self, Arp, Mac, Nd, RouterAdvert, ETH_HDR};

/// An address with a prefix length: `10.0.0.1/24`, `fd00::1/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Checks the prefix length against the family.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    /// True when `ip` is inside this prefix (same family).
    pub fn contains(&self, ip: &IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let m = mask32(self.prefix);
                u32::from(a) & m == u32::from(*b) & m
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let m = mask128(self.prefix);
                u128::from(a) & m == u128::from(*b) & m
            }
            _ => false,
        }
    }

    /// The subnet-directed broadcast address (IPv4 only, prefixes shorter than /31).
    pub fn broadcast(&self) -> Option<Ipv4Addr> {
        match self.addr {
            IpAddr::V4(a) if self.prefix < 31 => {
                Some(Ipv4Addr::from(u32::from(a) | !mask32(self.prefix)))
            }
            _ => None,
        }
    }

    pub(crate) fn to_smoltcp(self) -> smoltcp::wire::IpCidr {
        smoltcp::wire::IpCidr::new(self.addr.into(), self.prefix)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::str::FromStr for Cidr {
    type Err = ();
    fn from_str(s: &str) -> Result<Cidr, ()> {
        let (a, p) = s.split_once('/').ok_or(())?;
        let addr: IpAddr = a.parse().map_err(|_| ())?;
        let prefix: u8 = p.parse().map_err(|_| ())?;
        Cidr::new(addr, prefix).ok_or(())
    }
}

fn mask32(p: u8) -> u32 {
    if p == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(p))
    }
}

fn mask128(p: u8) -> u128 {
    if p == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(p))
    }
}

/// A route: destination prefix, optional gateway, optional interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub dst: Cidr,
    pub via: Option<IpAddr>,
    pub ifindex: Option<usize>,
}

/// Why a frame or packet went nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than an Ethernet header (or a virtio-net header on a super-frame link).
    Short,
    /// Unicast to another MAC address.
    OtherHost,
    /// Received or to be sent on a link that is down (or being reconnected).
    LinkDown,
    /// An ethertype other than IPv4, IPv6 and ARP.
    UnknownEthertype,
    /// A malformed ARP packet.
    BadArp,
    /// A malformed IPv4 packet (or a super-frame whose checksum cannot be completed).
    BadIpv4,
    /// A malformed IPv6 packet.
    BadIpv6,
    /// A malformed neighbour-discovery message, or one with a hop limit other than 255.
    BadNd,
    /// No route to the destination.
    NoRoute,
    /// The next hop's link-layer address could not be resolved (or too many waited for it).
    Unresolved,
    /// The queue toward smoltcp was full.
    RxFull,
    /// The link's transmit backlog was full.
    TxFull,
    /// Larger than the link's MTU and not fragmentable.
    TooBig,
    /// The plug refused the frame with an error other than "would block".
    SendError,
    /// Forwarding: the hop limit (TTL) ran out (answered with ICMP time exceeded).
    TtlExceeded,
    /// A hook (the filter, NAT) dropped or rejected the packet.
    Hook,
    /// Forwarding with reverse-path filtering: the source is not routed back out of the link
    /// the packet came in on (see `StackBuilder::rp_filter`).
    ReversePath,
    /// An ICMP error not sent: over the rate limit (1000 a second, bursts of 100).
    IcmpRateLimited,
    /// A malformed message for one of the stack's DHCPv4 or DHCPv6 servers (the DHCPv4
    /// server's other unanswered messages are in `Stack::dhcp_server_stats`).
    Server,
    /// A DHCPv4 client got no address: the server's pool had none free.
    PoolExhausted,
}

impl DropReason {
    pub const ALL: [DropReason; 20] = [
        DropReason::Short,
        DropReason::OtherHost,
        DropReason::LinkDown,
        DropReason::UnknownEthertype,
        DropReason::BadArp,
        DropReason::BadIpv4,
        DropReason::BadIpv6,
        DropReason::BadNd,
        DropReason::NoRoute,
        DropReason::Unresolved,
        DropReason::RxFull,
        DropReason::TxFull,
        DropReason::TooBig,
        DropReason::SendError,
        DropReason::TtlExceeded,
        DropReason::Hook,
        DropReason::ReversePath,
        DropReason::IcmpRateLimited,
        DropReason::Server,
        DropReason::PoolExhausted,
    ];

    /// A stable name for the counter, for reports.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Short => "short",
            DropReason::OtherHost => "other_host",
            DropReason::LinkDown => "link_down",
            DropReason::UnknownEthertype => "unknown_ethertype",
            DropReason::BadArp => "bad_arp",
            DropReason::BadIpv4 => "bad_ipv4",
            DropReason::BadIpv6 => "bad_ipv6",
            DropReason::BadNd => "bad_nd",
            DropReason::NoRoute => "no_route",
            DropReason::Unresolved => "unresolved",
            DropReason::RxFull => "rx_full",
            DropReason::TxFull => "tx_full",
            DropReason::TooBig => "too_big",
            DropReason::SendError => "send_error",
            DropReason::TtlExceeded => "ttl_exceeded",
            DropReason::Hook => "hook",
            DropReason::ReversePath => "rp_filter",
            DropReason::IcmpRateLimited => "icmp_rate_limited",
            DropReason::Server => "server",
            DropReason::PoolExhausted => "pool_exhausted",
        }
    }
}

/// Frames in and out, packets forwarded, and drops by reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub frames_in: u64,
    pub frames_out: u64,
    /// IP packets forwarded between the links (see `StackBuilder::forwarding`).
    pub forwarded: u64,
    drops: [u64; DropReason::ALL.len()],
}

impl Counters {
    /// Drops for one reason.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// Every reason with its count.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|&r| (r, self.get(r)))
    }

    /// Sum of every drop counter.
    pub fn dropped(&self) -> u64 {
        self.drops.iter().sum()
    }

    pub(crate) fn drop(&mut self, reason: DropReason, n: u64) {
        self.drops[reason as usize] += n;
    }
}

/// One interface: an Ethernet link. The plug it runs over is the driver's; this is what the
/// layer knows of it.
pub(crate) struct Link {
    pub name: String,
    pub mac: Mac,
    pub mtu: usize,
    pub up: bool,
    pub addrs: Vec<Cidr>,
    /// Frames carry a virtio-net header (a filo switch agreed): TCP segments up to
    /// [`GSO_MTU`] travel whole as super-frames, segmented only toward plain peers.
    pub vnet: bool,
    /// The link's DHCPv4 client, when `dhcp` was configured.
    pub dhcp: Option<filo_dhcp::Client>,
    /// The plug was lost and a thread is opening its VNL again (the link is down meanwhile).
    pub reconnecting: bool,
    /// Frames to send on the link, taken by [`Net::poll_transmit`].
    tx: Vec<Vec<u8>>,
    /// The servers the stack runs on the link (DHCP, router advertisements).
    pub(crate) servers: crate::serve::LinkServers,
}

impl Link {
    pub fn vnet(&self) -> bool {
        self.vnet
    }

    pub fn new(name: String, mac: Mac) -> Link {
        let ll = wire::link_local(&mac);
        Link {
            name,
            mac,
            mtu: 1500,
            up: true,
            addrs: vec![Cidr {
                addr: IpAddr::V6(ll),
                prefix: 64,
            }],
            vnet: false,
            dhcp: None,
            reconnecting: false,
            tx: Vec::new(),
            servers: Default::default(),
        }
    }

    pub(crate) fn first_v4(&self, toward: &IpAddr) -> Option<Ipv4Addr> {
        let v4 = self.addrs.iter().filter(|c| c.addr.is_ipv4());
        let best = v4
            .clone()
            .find(|c| c.contains(toward))
            .or_else(|| v4.clone().next());
        match best?.addr {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        }
    }

    pub(crate) fn link_local(&self) -> Ipv6Addr {
        wire::link_local(&self.mac)
    }
}

struct Neigh {
    mac: Option<Mac>,
    /// When the entry was last confirmed.
    confirmed: Instant,
    tries: u8,
    next_try: Instant,
    pending: Vec<Vec<u8>>,
}

impl Neigh {
    /// An entry whose link-layer address is not known yet.
    fn unresolved(now: Instant) -> Neigh {
        Neigh {
            mac: None,
            confirmed: now,
            tries: 0,
            next_try: now,
            pending: Vec::new(),
        }
    }
}

/// smoltcp's clock as the DHCP client's (both count from the Unix epoch here).
pub(crate) fn to_dhcp_time(t: Instant) -> filo_dhcp::Instant {
    filo_dhcp::Instant::from_millis(t.total_millis().max(0) as u64)
}

fn from_dhcp_time(t: filo_dhcp::Instant) -> Instant {
    Instant::from_millis(t.total_millis() as i64)
}

/// The IP MTU smoltcp sees on a super-frame link: TCP segments of up to 64 KiB.
pub const GSO_MTU: usize = 65000;
const NEIGH_STALE: Duration = Duration::from_secs(120);
const NEIGH_RETRY: Duration = Duration::from_millis(1000);
const NEIGH_TRIES: u8 = 3;
const NEIGH_PENDING: usize = 16;
const RX_QUEUE: usize = 4096;
/// Frames a link holds for the driver (more than a turn makes; a link nobody drains fills).
const TX_QUEUE: usize = 4096;
const FAILED_FOR: Duration = Duration::from_secs(3);

/// Where an outgoing packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHop {
    /// One of our own addresses.
    Loopback,
    /// Out of `ifindex` toward `hop` (the destination itself or a gateway).
    Link { ifindex: usize, hop: IpAddr },
    /// Multicast or broadcast: every link that is up.
    Flood,
}

/// The layer's state: links, routes, neighbours, the queue toward smoltcp.
pub(crate) struct Net {
    pub links: Vec<Link>,
    pub routes: Vec<Route>,
    neigh: HashMap<(usize, IpAddr), Neigh>,
    /// Hops whose resolution failed recently, with when.
    failed: HashMap<IpAddr, Instant>,
    pub rx: VecDeque<Vec<u8>>,
    pub counters: Counters,
    /// Router advertisements received: (link, advert), for SLAAC to apply.
    pub adverts: Vec<(usize, IpAddr, RouterAdvert)>,
    /// DHCP lease changes: (link, event), for the stack to apply.
    pub dhcp_events: Vec<(usize, filo_dhcp::Event)>,
    scratch: Vec<u8>,
    /// Spent frame buffers, reused so the hot path does not allocate.
    pool: Vec<Vec<u8>>,
    /// TCP loss recovery beneath smoltcp (None when turned off).
    pub recovery: Option<crate::recovery::Recovery>,
    resend: Vec<Vec<u8>>,
    /// IP packets for others are forwarded between the links (a router), not dropped.
    pub forwarding: bool,
    /// Stages packets pass through (a filter, NAT): see [`crate::forward`].
    pub hooks: crate::forward::Hooks,
    /// Forwarded packets whose source is not routed back out of the link they came in on
    /// are dropped.
    pub rp_filter: bool,
    /// The ICMP error budget: tokens left, and when it was last refilled.
    pub(crate) icmp_tokens: u32,
    pub(crate) icmp_refill: Instant,
    /// A server's next deadline moved earlier (a router solicitation was answered): the
    /// driver must take a turn to schedule it, though nothing went to smoltcp.
    pub(crate) servers_rescheduled: bool,
}

impl Net {
    pub fn new() -> Net {
        Net {
            links: Vec::new(),
            routes: Vec::new(),
            neigh: HashMap::new(),
            failed: HashMap::new(),
            rx: VecDeque::new(),
            counters: Counters::default(),
            adverts: Vec::new(),
            dhcp_events: Vec::new(),
            scratch: Vec::new(),
            pool: Vec::new(),
            recovery: crate::recovery::enabled().then(crate::recovery::Recovery::new),
            resend: Vec::new(),
            forwarding: false,
            hooks: crate::forward::Hooks::default(),
            rp_filter: false,
            icmp_tokens: crate::forward::ICMP_BURST,
            icmp_refill: Instant::from_millis(0),
            servers_rescheduled: false,
        }
    }

    /// The IP MTU smoltcp may use: the smallest MTU of the links (1500 with none), where a
    /// link with super-frames counts as [`GSO_MTU`] (its TCP segments are sent whole; other
    /// packets larger than its MTU are fragmented here).
    pub fn ip_mtu(&self) -> usize {
        self.links
            .iter()
            .map(|l| if l.vnet() { GSO_MTU } else { l.mtu })
            .min()
            .unwrap_or(1500)
    }

    pub fn is_own(&self, ip: &IpAddr) -> bool {
        ip.is_loopback()
            || match ip {
                IpAddr::V6(a) => a
                    .to_ipv4_mapped()
                    .is_some_and(|v4| self.is_own(&IpAddr::V4(v4))),
                IpAddr::V4(_) => false,
            }
            || self
                .links
                .iter()
                .any(|l| l.up && l.addrs.iter().any(|c| c.addr == *ip))
    }

    /// Longest-prefix match over connected prefixes and routes.
    pub fn route(&self, dst: &IpAddr) -> Option<NextHop> {
        if self.is_own(dst) {
            return Some(NextHop::Loopback);
        }
        if wire::multicast_mac(dst).is_some() {
            return Some(NextHop::Flood);
        }
        let mut best: Option<(u8, NextHop)> = None;
        fn consider(best: &mut Option<(u8, NextHop)>, len: u8, hop: NextHop) {
            if best.is_none_or(|(b, _)| len > b) {
                *best = Some((len, hop));
            }
        }
        for (i, l) in self.links.iter().enumerate().filter(|(_, l)| l.up) {
            for c in &l.addrs {
                if c.contains(dst) {
                    consider(
                        &mut best,
                        c.prefix,
                        NextHop::Link {
                            ifindex: i,
                            hop: *dst,
                        },
                    );
                }
                if c.broadcast().map(IpAddr::V4) == Some(*dst) {
                    return Some(NextHop::Flood);
                }
            }
        }
        for r in &self.routes {
            if !r.dst.contains(dst) || best.is_some_and(|(b, _)| r.dst.prefix <= b) {
                continue;
            }
            let hop = r.via.unwrap_or(*dst);
            let ifindex = match r.ifindex {
                Some(i) => Some(i),
                None => self.connected_link(&hop),
            };
            if let Some(i) = ifindex.filter(|&i| self.links.get(i).is_some_and(|l| l.up)) {
                consider(&mut best, r.dst.prefix, NextHop::Link { ifindex: i, hop });
            }
        }
        best.map(|(_, h)| h)
    }

    fn connected_link(&self, ip: &IpAddr) -> Option<usize> {
        if let IpAddr::V6(a) = ip {
            if a.is_unicast_link_local() {
                return self.links.iter().position(|l| l.up);
            }
        }
        self.links
            .iter()
            .enumerate()
            .filter(|(_, l)| l.up)
            .filter_map(|(i, l)| {
                l.addrs
                    .iter()
                    .filter(|c| c.contains(ip))
                    .map(|c| c.prefix)
                    .max()
                    .map(|p| (p, i))
            })
            .max()
            .map(|(_, i)| i)
    }

    /// The source address to use toward `dst`: an address of the outgoing link.
    pub fn source_for(&self, dst: &IpAddr) -> Option<IpAddr> {
        match self.route(dst)? {
            NextHop::Loopback => Some(*dst),
            NextHop::Flood => None,
            NextHop::Link { ifindex, hop } => {
                let l = &self.links[ifindex];
                match dst {
                    IpAddr::V4(_) => l.first_v4(&hop).map(IpAddr::V4),
                    IpAddr::V6(d) => {
                        let global = !d.is_unicast_link_local();
                        l.addrs
                            .iter()
                            .filter_map(|c| match c.addr {
                                IpAddr::V6(a) if a.is_unicast_link_local() != global => Some(a),
                                _ => None,
                            })
                            .max_by_key(|a| {
                                // Prefer the longest common prefix with the destination.
                                (u128::from(*a) ^ u128::from(*d)).leading_zeros()
                            })
                            .map(IpAddr::V6)
                    }
                }
            }
        }
    }

    /// True when resolving the next hop toward `dst` failed in the last few seconds.
    pub fn unreachable(&self, now: Instant, dst: &IpAddr) -> bool {
        let hop = match self.route(dst) {
            Some(NextHop::Link { hop, .. }) => hop,
            _ => return false,
        };
        self.failed.get(&hop).is_some_and(|&t| now < t + FAILED_FOR)
    }

    /// A buffer with room for an Ethernet header, reused across calls.
    pub fn take_frame_buf(&mut self) -> Vec<u8> {
        if self.scratch.capacity() > 0 {
            return std::mem::take(&mut self.scratch);
        }
        self.pool.pop().unwrap_or_default()
    }

    /// Takes back a spent frame buffer, so that the hot path does not allocate.
    pub fn recycle(&mut self, mut b: Vec<u8>) {
        if self.pool.len() < 256 {
            b.clear();
            self.pool.push(b);
        }
    }

    /// True when input left work for the stack above this layer: packets for smoltcp, or
    /// DHCP lease changes and router advertisements to apply. A driver that skips the
    /// stack's turn while this holds leaves a new lease unused until some timer fires.
    pub fn has_work(&self) -> bool {
        !self.rx.is_empty()
            || !self.dhcp_events.is_empty()
            || !self.adverts.is_empty()
            || self.servers_rescheduled
    }

    /// The frames to send on link `ifindex`, oldest first, appended to `out`. Spent buffers
    /// may be given back with [`Net::recycle`].
    pub fn poll_transmit(&mut self, ifindex: usize, out: &mut Vec<Vec<u8>>) {
        if let Some(l) = self.links.get_mut(ifindex) {
            if out.is_empty() {
                std::mem::swap(out, &mut l.tx);
            } else {
                out.append(&mut l.tx);
            }
        }
    }

    /// Sends the IP packet in `frame[14..]` (the first 14 bytes are room for the header).
    pub fn output(&mut self, now: Instant, frame: Vec<u8>) {
        if let Some(r) = self.recovery.as_mut() {
            if r.on_output(now, &frame[ETH_HDR..], &mut self.resend)
                == crate::recovery::Verdict::Replaced
            {
                self.recycle(frame);
                self.send_resends(now);
                return;
            }
        }
        if self.hooks.is_empty() {
            self.send_ip(now, frame);
        } else {
            self.output_hooked(now, frame);
        }
    }

    /// Sends segments the recovery layer wants resent.
    fn send_resends(&mut self, now: Instant) {
        if self.resend.is_empty() {
            return;
        }
        // Taken and put back, so that its capacity is kept; the copies go back to the
        // recovery layer's pool.
        let mut resend = std::mem::take(&mut self.resend);
        for p in resend.drain(..) {
            let mut f = self.take_frame_buf();
            f.clear();
            f.resize(ETH_HDR, 0);
            f.extend_from_slice(&p);
            self.send_ip(now, f);
            if let Some(r) = self.recovery.as_mut() {
                r.give_back(p);
            }
        }
        self.resend = resend;
    }

    /// Routes and sends the IP packet in `frame[14..]`.
    pub(crate) fn send_ip(&mut self, now: Instant, mut frame: Vec<u8>) {
        let Some(dst) = wire::ip_dst(&frame[ETH_HDR..]) else {
            self.counters.drop(DropReason::NoRoute, 1);
            self.scratch = frame;
            return;
        };
        match self.route(&dst) {
            None => {
                self.counters.drop(DropReason::NoRoute, 1);
                self.scratch = frame;
            }
            Some(NextHop::Loopback) => {
                self.enqueue_rx(&frame[ETH_HDR..]);
                self.scratch = frame;
            }
            Some(NextHop::Flood) => {
                let Some(mac) = wire::multicast_mac(&dst) else {
                    return;
                };
                let ethertype = ethertype_of(&frame[ETH_HDR..]);
                for i in 0..self.links.len() {
                    if !self.links[i].up {
                        continue;
                    }
                    let src = self.links[i].mac;
                    wire::write_eth(&mut frame, mac, src, ethertype);
                    let copy = frame.clone();
                    self.send_frame(i, copy);
                }
                self.scratch = frame;
            }
            Some(NextHop::Link { ifindex, hop }) => self.send_on_link(now, ifindex, hop, frame),
        }
    }

    /// Sends the IP packet in `frame[14..]` out of link `ifindex` toward `hop` (resolved by
    /// ARP or NDP there; fragmented to the link's MTU where IPv4 allows).
    pub(crate) fn send_on_link(
        &mut self,
        now: Instant,
        ifindex: usize,
        hop: IpAddr,
        mut frame: Vec<u8>,
    ) {
        let l = &self.links[ifindex];
        if frame.len() - ETH_HDR > l.mtu {
            let ip = &frame[ETH_HDR..];
            if !(l.vnet() && wire::is_tcp(ip)) {
                let mtu = l.mtu;
                let mut pieces = Vec::new();
                let split = ip[0] >> 4 == 4
                    && wire::fragment_ipv4(ip, mtu, |f| {
                        let mut b = vec![0u8; ETH_HDR];
                        b.extend_from_slice(f);
                        pieces.push(b);
                    });
                if !split {
                    self.counters.drop(DropReason::TooBig, 1);
                }
                self.scratch = frame;
                for p in pieces {
                    self.send_ip(now, p);
                }
                return;
            }
        }
        let src = self.links[ifindex].mac;
        let ethertype = ethertype_of(&frame[ETH_HDR..]);
        let key = (ifindex, hop);
        let known = self
            .neigh
            .get(&key)
            .and_then(|n| n.mac.map(|m| (m, n.confirmed)));
        match known {
            Some((mac, confirmed)) => {
                wire::write_eth(&mut frame, mac, src, ethertype);
                self.send_frame(ifindex, frame);
                if now > confirmed + NEIGH_STALE {
                    if let Some(n) = self.neigh.get_mut(&key) {
                        if now >= n.next_try {
                            n.next_try = now + NEIGH_RETRY;
                            self.solicit(ifindex, hop, false);
                        }
                    }
                }
            }
            None => {
                let fresh = !self.neigh.contains_key(&key);
                let n = self
                    .neigh
                    .entry(key)
                    .or_insert_with(|| Neigh::unresolved(now));
                if n.pending.len() < NEIGH_PENDING {
                    wire::write_eth(&mut frame, [0; 6], src, ethertype);
                    n.pending.push(frame);
                } else {
                    self.counters.drop(DropReason::Unresolved, 1);
                }
                if fresh {
                    if let Some(n) = self.neigh.get_mut(&key) {
                        n.tries = 1;
                        n.next_try = now + NEIGH_RETRY;
                    }
                    self.solicit(ifindex, hop, true);
                }
            }
        }
    }

    /// When the layer next needs [`Net::on_timer`].
    pub fn poll_at(&self) -> Option<Instant> {
        let dhcp = self
            .links
            .iter()
            .filter(|l| l.up)
            .filter_map(|l| l.dhcp.as_ref().map(|d| from_dhcp_time(d.poll_at())));
        self.neigh
            .values()
            .filter(|n| n.mac.is_none())
            .map(|n| n.next_try)
            .chain(dhcp)
            .chain(self.servers_poll_at())
            .chain(self.recovery.as_ref().and_then(|r| r.poll_at()))
            .chain(self.hooks.poll_at())
            .min()
    }

    fn dhcp_out(&mut self, now: Instant, i: usize, out: filo_dhcp::Outgoing) {
        let mut f = vec![0u8; ETH_HDR];
        f.extend_from_slice(&out.packet);
        if out.broadcast {
            let mac = self.links[i].mac;
            wire::write_eth(&mut f, wire::BROADCAST, mac, wire::ETHERTYPE_IPV4);
            if let Some(f) = self.hooked_on_link(now, i, f) {
                self.send_frame(i, f);
            }
        } else {
            self.output(now, f);
        }
    }

    fn dhcp_result(
        &mut self,
        now: Instant,
        i: usize,
        (out, ev): (Option<filo_dhcp::Outgoing>, Option<filo_dhcp::Event>),
    ) {
        if let Some(o) = out {
            self.dhcp_out(now, i, o);
        }
        if let Some(e) = ev {
            self.dhcp_events.push((i, e));
        }
    }

    /// Retries or gives up neighbour resolutions that are due.
    pub fn on_timer(&mut self, now: Instant) {
        let mut retry = Vec::new();
        let mut failed = Vec::new();
        for (k, n) in self.neigh.iter_mut() {
            if n.mac.is_some() || now < n.next_try {
                continue;
            }
            if n.tries >= NEIGH_TRIES {
                failed.push(*k);
            } else {
                n.tries += 1;
                n.next_try = now + NEIGH_RETRY;
                retry.push(*k);
            }
        }
        for k in failed {
            if let Some(n) = self.neigh.remove(&k) {
                self.counters
                    .drop(DropReason::Unresolved, n.pending.len() as u64);
            }
            self.failed.insert(k.1, now);
        }
        for (i, hop) in retry {
            self.solicit(i, hop, true);
        }
        for i in 0..self.links.len() {
            if !self.links[i].up {
                continue;
            }
            let r = match self.links[i].dhcp.as_mut() {
                Some(d) if to_dhcp_time(now) >= d.poll_at() => d.poll(to_dhcp_time(now)),
                _ => continue,
            };
            self.dhcp_result(now, i, r);
        }
        self.servers_on_timer(now);
        self.failed.retain(|_, t| now < *t + FAILED_FOR);
        if let Some(r) = self.recovery.as_mut() {
            r.on_timer(now, &mut self.resend);
            self.send_resends(now);
        }
        self.hook_outputs(now);
    }

    fn solicit(&mut self, ifindex: usize, hop: IpAddr, broadcast: bool) {
        let l = &self.links[ifindex];
        let mut f = Vec::new();
        match hop {
            IpAddr::V4(t) => {
                let spa = l.first_v4(&hop).unwrap_or(Ipv4Addr::UNSPECIFIED);
                f.resize(ETH_HDR + wire::ARP_LEN, 0);
                wire::write_eth(&mut f, wire::BROADCAST, l.mac, wire::ETHERTYPE_ARP);
                Arp {
                    op: 1,
                    sha: l.mac,
                    spa,
                    tha: [0; 6],
                    tpa: t,
                }
                .write(&mut f[ETH_HDR..]);
            }
            IpAddr::V6(t) => {
                let _ = broadcast;
                let dst = wire::solicited_node(&t);
                let Some(mac) = wire::multicast_mac(&IpAddr::V6(dst)) else {
                    return;
                };
                let msg = wire::nd_message(135, 0, &t, 1, &l.mac);
                wire::ndp_frame(&mut f, mac, l.mac, &l.link_local(), &dst, &msg);
            }
        }
        self.send_frame(ifindex, f);
    }

    /// Announces `ip` as ours on `ifindex` (RFC 5227 ARP announcement: a request with sender
    /// and target both `ip`). Neighbours that already hold an entry for `ip` update it — for
    /// one, a DHCP server's kernel whose probe of the address, made before offering it, left a
    /// failed entry that would refuse the new owner for seconds.
    pub fn announce(&mut self, ifindex: usize, ip: Ipv4Addr) {
        let Some(l) = self.links.get(ifindex) else {
            return;
        };
        let mut f = vec![0u8; ETH_HDR + wire::ARP_LEN];
        wire::write_eth(&mut f, wire::BROADCAST, l.mac, wire::ETHERTYPE_ARP);
        Arp {
            op: 1,
            sha: l.mac,
            spa: ip,
            tha: [0; 6],
            tpa: ip,
        }
        .write(&mut f[ETH_HDR..]);
        self.send_frame(ifindex, f);
    }

    /// Sends a router solicitation on `ifindex`.
    pub fn router_solicit(&mut self, ifindex: usize) {
        let Some(l) = self.links.get(ifindex) else {
            return;
        };
        let dst: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
        let mut f = Vec::new();
        wire::ndp_frame(
            &mut f,
            [0x33, 0x33, 0, 0, 0, 2],
            l.mac,
            &l.link_local(),
            &dst,
            &wire::rs_message(&l.mac),
        );
        self.send_frame(ifindex, f);
    }

    fn learn(&mut self, now: Instant, ifindex: usize, ip: IpAddr, mac: Mac, create: bool) {
        if wire::is_multicast_mac(&mac) {
            return;
        }
        let key = (ifindex, ip);
        if !create && !self.neigh.contains_key(&key) {
            return;
        }
        let n = self
            .neigh
            .entry(key)
            .or_insert_with(|| Neigh::unresolved(now));
        n.mac = Some(mac);
        n.confirmed = now;
        n.tries = 0;
        let pending = std::mem::take(&mut n.pending);
        self.failed.remove(&ip);
        for mut f in pending {
            f[0..6].copy_from_slice(&mac);
            self.send_frame(ifindex, f);
        }
    }

    /// Queues a frame for link `ifindex` (see [`Net::poll_transmit`]).
    pub fn send_frame(&mut self, ifindex: usize, frame: Vec<u8>) {
        let l = &mut self.links[ifindex];
        if !l.up || l.reconnecting {
            self.counters.drop(DropReason::LinkDown, 1);
            return;
        }
        if l.tx.len() >= TX_QUEUE {
            self.counters.drop(DropReason::TxFull, 1);
            return;
        }
        l.tx.push(frame);
    }

    /// Handles one frame as the link's plug delivered it: with a virtio-net header on a
    /// super-frame link (a super-frame is taken whole, its checksum completed in place if
    /// left open).
    pub fn handle_link_frame(&mut self, now: Instant, ifindex: usize, frame: &mut [u8]) {
        if !self.links.get(ifindex).is_some_and(|l| l.vnet()) {
            return self.handle_frame(now, ifindex, frame);
        }
        let Ok(hdr) = vnet::Header::parse(frame) else {
            self.counters.drop(DropReason::Short, 1);
            return;
        };
        let frame = &mut frame[vnet::HEADER_LEN..];
        if vnet::complete(&hdr, frame).is_ok() {
            self.handle_frame(now, ifindex, frame);
        } else {
            self.counters.drop(DropReason::BadIpv4, 1);
        }
    }

    /// An IP packet for smoltcp: the recovery layer sees it first (ACKs and SACKs of the
    /// stack's own segments), then it is queued.
    pub(crate) fn take_ip(&mut self, now: Instant, packet: &[u8]) {
        if let Some(r) = self.recovery.as_mut() {
            r.on_input(now, packet, &mut self.resend);
            self.send_resends(now);
        }
        self.enqueue_rx(packet);
    }

    pub(crate) fn enqueue_rx(&mut self, packet: &[u8]) {
        if self.rx.len() >= RX_QUEUE {
            self.counters.drop(DropReason::RxFull, 1);
            return;
        }
        let mut b = self.pool.pop().unwrap_or_default();
        b.extend_from_slice(packet);
        self.rx.push_back(b);
    }

    /// Handles one received Ethernet frame from link `ifindex`: parsed here, once, into
    /// smoltcp's typed views (Ethernet, ARP, IPv4, IPv6), which the layers above get.
    pub fn handle_frame(&mut self, now: Instant, ifindex: usize, frame: &[u8]) {
        self.counters.frames_in += 1;
        let Some(l) = self.links.get(ifindex) else {
            return;
        };
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            self.counters.drop(DropReason::Short, 1);
            return;
        };
        if !l.up {
            self.counters.drop(DropReason::LinkDown, 1);
            return;
        }
        let dst = eth.dst_addr();
        if dst.0 != l.mac && !dst.is_multicast() {
            self.counters.drop(DropReason::OtherHost, 1);
            return;
        }
        let src_mac = eth.src_addr().0;
        let payload = eth.payload();
        match eth.ethertype() {
            EthernetProtocol::Arp => self.handle_arp(now, ifindex, payload),
            EthernetProtocol::Ipv4 => match Ipv4Packet::new_checked(payload) {
                Ok(ip) if ip.version() == 4 => {
                    let p = &payload[..usize::from(ip.total_len())];
                    let dhcp = self.links[ifindex].dhcp.is_some();
                    match filo_dhcp::dhcp_payload(p).filter(|_| dhcp) {
                        Some(d) => {
                            let r = self.links[ifindex]
                                .dhcp
                                .as_mut()
                                .and_then(|c| c.handle(to_dhcp_time(now), d));
                            if let Some(r) = r {
                                self.dhcp_result(now, ifindex, r);
                            }
                        }
                        None => self.input_ip(now, ifindex, p),
                    }
                }
                _ => self.counters.drop(DropReason::BadIpv4, 1),
            },
            EthernetProtocol::Ipv6 => match Ipv6Packet::new_checked(payload) {
                Ok(ip) if ip.version() == 6 => {
                    let p = &payload[..ip.total_len()];
                    let ip = Ipv6Packet::new_unchecked(p);
                    let nd = ip.next_header() == IpProtocol::Icmpv6
                        && ip
                            .payload()
                            .first()
                            .is_some_and(|t| (133..=137).contains(t));
                    if nd {
                        self.handle_nd(now, ifindex, src_mac, &ip);
                    } else {
                        self.input_ip(now, ifindex, p);
                    }
                }
                _ => self.counters.drop(DropReason::BadIpv6, 1),
            },
            _ => self.counters.drop(DropReason::UnknownEthertype, 1),
        }
    }

    fn handle_arp(&mut self, now: Instant, ifindex: usize, payload: &[u8]) {
        let parsed = ArpPacket::new_checked(payload).and_then(|p| ArpRepr::parse(&p));
        let Ok(ArpRepr::EthernetIpv4 {
            operation: op @ (ArpOperation::Request | ArpOperation::Reply),
            source_hardware_addr: sha,
            source_protocol_addr: spa,
            target_protocol_addr: tpa,
            ..
        }) = parsed
        else {
            self.counters.drop(DropReason::BadArp, 1);
            return;
        };
        let l = &self.links[ifindex];
        let for_us = l.addrs.iter().any(|c| c.addr == IpAddr::V4(tpa));
        if !spa.is_unspecified() {
            self.learn(now, ifindex, IpAddr::V4(spa), sha.0, for_us);
        }
        if for_us && op == ArpOperation::Request {
            let l = &self.links[ifindex];
            let mut f = vec![0u8; ETH_HDR + wire::ARP_LEN];
            wire::write_eth(&mut f, sha.0, l.mac, wire::ETHERTYPE_ARP);
            ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Reply,
                source_hardware_addr: EthernetAddress(l.mac),
                source_protocol_addr: tpa,
                target_hardware_addr: sha,
                target_protocol_addr: spa,
            }
            .emit(&mut ArpPacket::new_unchecked(&mut f[ETH_HDR..]));
            self.send_frame(ifindex, f);
        }
    }

    fn handle_nd(&mut self, now: Instant, ifindex: usize, src_mac: Mac, ip: &Ipv6Packet<&[u8]>) {
        if ip.hop_limit() != 255 {
            self.counters.drop(DropReason::BadNd, 1);
            return;
        }
        let src = ip.src_addr();
        let icmp = ip.payload();
        if icmp[0] == 133 {
            return self.router_solicited(now, ifindex, ip.as_ref());
        }
        if icmp[0] == 137 {
            return; // redirects: not followed
        }
        match wire::parse_nd(icmp) {
            None => self.counters.drop(DropReason::BadNd, 1),
            Some(Nd::Solicit { target, lla }) => {
                let l = &self.links[ifindex];
                if !l.addrs.iter().any(|c| c.addr == IpAddr::V6(target)) {
                    return;
                }
                let mac = l.mac;
                let (dst_ip, dst_mac, flags) = if src.is_unspecified() {
                    (
                        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
                        [0x33, 0x33, 0, 0, 0, 1],
                        0x20,
                    )
                } else {
                    (src, lla.unwrap_or(src_mac), 0x60)
                };
                if let (false, Some(m)) = (src.is_unspecified(), lla) {
                    self.learn(now, ifindex, IpAddr::V6(src), m, true);
                }
                let msg = wire::nd_message(136, flags, &target, 2, &mac);
                let mut f = Vec::new();
                wire::ndp_frame(&mut f, dst_mac, mac, &target, &dst_ip, &msg);
                self.send_frame(ifindex, f);
            }
            Some(Nd::Advert { target, lla }) => {
                self.learn(
                    now,
                    ifindex,
                    IpAddr::V6(target),
                    lla.unwrap_or(src_mac),
                    false,
                );
            }
            Some(Nd::RouterAdvert(ra)) => {
                if let Some(m) = ra.lla {
                    self.learn(now, ifindex, IpAddr::V6(src), m, true);
                }
                if self.adverts.len() < 16 {
                    self.adverts.push((ifindex, IpAddr::V6(src), ra));
                }
            }
        }
    }
}

fn ethertype_of(ip: &[u8]) -> u16 {
    if ip.first().is_some_and(|b| b >> 4 == 6) {
        wire::ETHERTYPE_IPV6
    } else {
        wire::ETHERTYPE_IPV4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = [2, 0, 0, 0, 0, 1];
    const PEER: Mac = [2, 0, 0, 0, 0, 2];

    fn net() -> Net {
        let mut n = Net::new();
        let mut l = Link::new("eth0".into(), MAC);
        l.addrs.push("10.0.0.1/24".parse().unwrap());
        l.addrs.push("fd00::1/64".parse().unwrap());
        n.links.push(l);
        n
    }

    /// The frames the layer sent on link 0 since last asked.
    fn sent(n: &mut Net) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        n.poll_transmit(0, &mut v);
        v
    }

    fn now() -> Instant {
        Instant::from_millis(1000)
    }

    #[test]
    fn longest_prefix_wins_and_default_route_catches_the_rest() {
        let mut n = net();
        n.routes.push(Route {
            dst: "0.0.0.0/0".parse().unwrap(),
            via: Some("10.0.0.254".parse().unwrap()),
            ifindex: None,
        });
        n.routes.push(Route {
            dst: "192.168.0.0/16".parse().unwrap(),
            via: Some("10.0.0.2".parse().unwrap()),
            ifindex: None,
        });
        let hop = |d: &str| match n.route(&d.parse().unwrap()) {
            Some(NextHop::Link { hop, .. }) => Some(hop.to_string()),
            _ => None,
        };
        assert_eq!(hop("10.0.0.9").as_deref(), Some("10.0.0.9"));
        assert_eq!(hop("192.168.3.4").as_deref(), Some("10.0.0.2"));
        assert_eq!(hop("8.8.8.8").as_deref(), Some("10.0.0.254"));
        assert_eq!(hop("2001:db8::1"), None, "no IPv6 default route");
        assert_eq!(
            n.route(&"10.0.0.1".parse().unwrap()),
            Some(NextHop::Loopback)
        );
        assert_eq!(
            n.route(&"10.0.0.255".parse().unwrap()),
            Some(NextHop::Flood)
        );
    }

    #[test]
    fn arp_request_for_us_is_answered_and_teaches_the_sender() {
        let mut n = net();
        let mut f = vec![0u8; ETH_HDR + wire::ARP_LEN];
        wire::write_eth(&mut f, wire::BROADCAST, PEER, wire::ETHERTYPE_ARP);
        Arp {
            op: 1,
            sha: PEER,
            spa: "10.0.0.2".parse().unwrap(),
            tha: [0; 6],
            tpa: "10.0.0.1".parse().unwrap(),
        }
        .write(&mut f[ETH_HDR..]);
        n.handle_frame(now(), 0, &f);
        let reply = sent(&mut n).pop().expect("an ARP reply");
        assert_eq!(&reply[0..6], &PEER);
        let arp = Arp::parse(&reply[ETH_HDR..]).unwrap();
        assert_eq!((arp.op, arp.sha), (2, MAC));
        // Learned: a packet to 10.0.0.2 goes straight out, no ARP request.
        let mut p = vec![0u8; ETH_HDR + 20];
        p[ETH_HDR] = 0x45;
        p[ETH_HDR + 3] = 20;
        p[ETH_HDR + 16..ETH_HDR + 20].copy_from_slice(&[10, 0, 0, 2]);
        n.output(now(), p);
        let out = sent(&mut n).pop().unwrap();
        assert_eq!(&out[0..6], &PEER);
        assert_eq!(u16::from_be_bytes([out[12], out[13]]), wire::ETHERTYPE_IPV4);
    }

    #[test]
    fn an_announcement_names_the_address_as_sender_and_target() {
        let mut n = net();
        n.announce(0, "10.0.0.9".parse().unwrap());
        let f = sent(&mut n).pop().expect("an announcement");
        assert_eq!(&f[0..6], &wire::BROADCAST);
        let arp = Arp::parse(&f[ETH_HDR..]).unwrap();
        assert_eq!((arp.op, arp.sha, arp.tha), (1, MAC, [0; 6]));
        assert_eq!(arp.spa, arp.tpa);
        assert_eq!(arp.spa, "10.0.0.9".parse::<Ipv4Addr>().unwrap());
    }

    #[test]
    fn unresolved_packets_wait_then_are_dropped_and_counted() {
        let mut n = net();
        let mut p = vec![0u8; ETH_HDR + 20];
        p[ETH_HDR] = 0x45;
        p[ETH_HDR + 3] = 20;
        p[ETH_HDR + 16..ETH_HDR + 20].copy_from_slice(&[10, 0, 0, 77]);
        n.output(now(), p);
        let mut out = Vec::new();
        n.poll_transmit(0, &mut out);
        assert_eq!(out.len(), 1, "one ARP request");
        let mut t = now();
        for _ in 0..4 {
            t += Duration::from_millis(1001);
            n.on_timer(t);
        }
        n.poll_transmit(0, &mut out);
        assert_eq!(out.len(), 3, "three ARP requests in all");
        assert_eq!(n.counters.get(DropReason::Unresolved), 1);
        assert!(n.unreachable(t, &"10.0.0.77".parse().unwrap()));
    }

    #[test]
    fn neighbour_solicitation_for_our_address_gets_an_advertisement() {
        let mut n = net();
        let target: Ipv6Addr = "fd00::1".parse().unwrap();
        let src: Ipv6Addr = "fd00::2".parse().unwrap();
        let dst = wire::solicited_node(&target);
        let msg = wire::nd_message(135, 0, &target, 1, &PEER);
        let mut f = Vec::new();
        wire::ndp_frame(&mut f, [0x33, 0x33, 0xff, 0, 0, 1], PEER, &src, &dst, &msg);
        n.handle_frame(now(), 0, &f);
        let na = sent(&mut n).pop().expect("a neighbour advertisement");
        assert_eq!(&na[0..6], &PEER);
        let icmp = &na[ETH_HDR + 40..];
        assert_eq!(icmp[0], 136);
        assert_eq!(wire::icmpv6_checksum(&target, &src, icmp), 0);
        assert!(n.rx.is_empty(), "NDP is not passed to smoltcp");
    }

    #[test]
    fn malformed_frames_are_dropped_and_counted_by_reason() {
        let mut n = net();
        let t = now();
        n.handle_frame(t, 0, &[1, 2, 3]);
        let mut f = vec![0u8; 60];
        wire::write_eth(&mut f, MAC, PEER, 0x1234);
        n.handle_frame(t, 0, &f);
        wire::write_eth(&mut f, [2, 9, 9, 9, 9, 9], PEER, wire::ETHERTYPE_IPV4);
        n.handle_frame(t, 0, &f);
        // Truncated IPv4: header says 1000 bytes.
        wire::write_eth(&mut f, MAC, PEER, wire::ETHERTYPE_IPV4);
        f[ETH_HDR] = 0x45;
        f[ETH_HDR + 2..ETH_HDR + 4].copy_from_slice(&1000u16.to_be_bytes());
        n.handle_frame(t, 0, &f);
        // IPv6 with a bad version nibble.
        wire::write_eth(&mut f, MAC, PEER, wire::ETHERTYPE_IPV6);
        n.handle_frame(t, 0, &f);
        // Truncated ARP.
        wire::write_eth(&mut f, wire::BROADCAST, PEER, wire::ETHERTYPE_ARP);
        n.handle_frame(t, 0, &f[..30]);
        let c = n.counters;
        assert_eq!(c.frames_in, 6);
        assert_eq!(c.get(DropReason::Short), 1);
        assert_eq!(c.get(DropReason::UnknownEthertype), 1);
        assert_eq!(c.get(DropReason::OtherHost), 1);
        assert_eq!(c.get(DropReason::BadIpv4), 1);
        assert_eq!(c.get(DropReason::BadIpv6), 1);
        assert_eq!(c.get(DropReason::BadArp), 1);
        assert!(n.rx.is_empty());
        assert!(sent(&mut n).is_empty());
    }

    #[test]
    fn ethernet_padding_is_trimmed_before_smoltcp() {
        let mut n = net();
        let mut f = vec![0u8; 60];
        wire::write_eth(&mut f, MAC, PEER, wire::ETHERTYPE_IPV4);
        f[ETH_HDR] = 0x45;
        f[ETH_HDR + 3] = 28;
        n.handle_frame(now(), 0, &f);
        assert_eq!(n.rx.pop_front().map(|p| p.len()), Some(28));
    }
}
