//! A DHCPv4 client (RFC 2131) as a sans-IO state machine: time and received payloads in,
//! IPv4/UDP packets and lease events out. filo-stack runs it in its own layer (smoltcp's
//! DHCP socket requires an Ethernet-medium interface, and filo runs smoltcp on `Medium::Ip`);
//! `filo ns` runs it on a kernel UDP socket ([`Outgoing::udp_payload`]).
//!
//! INIT → SELECTING (DISCOVER, wait for OFFER) → REQUESTING (REQUEST, wait for ACK) → BOUND;
//! at T1 RENEWING (unicast REQUEST to the server), at T2 REBINDING (broadcast REQUEST), at
//! the end of the lease back to INIT. A NAK restarts from INIT.
//!
//! The servers live in their own modules, sans-IO too: [`server`] (DHCPv4), [`ra`] (IPv6
//! router advertisements), [`v6`] (stateless DHCPv6) and [`names`] (domain names in DNS wire
//! format, shared by them).

use std::net::Ipv4Addr;

use std::time::Duration;

pub mod names;
pub mod ra;
pub mod server;
pub mod v6;

/// An Ethernet address.
pub type Mac = [u8; 6];

/// A point in time on the caller's monotonic clock, from any fixed origin (the client only
/// compares and adds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(Duration);

impl Instant {
    pub fn from_millis(ms: u64) -> Instant {
        Instant(Duration::from_millis(ms))
    }
    pub fn from_secs(s: u64) -> Instant {
        Instant(Duration::from_secs(s))
    }
    pub fn total_millis(&self) -> u64 {
        self.0.as_millis() as u64
    }
    /// How long after `earlier` this is; zero if it is not after it.
    pub fn saturating_duration_since(&self, earlier: Instant) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl std::ops::Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        Instant(self.0 + d)
    }
}

pub const CLIENT_PORT: u16 = 68;
pub const SERVER_PORT: u16 = 67;
const MAGIC: [u8; 4] = [99, 130, 83, 99];

/// An address lease and what came with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub server: Ipv4Addr,
    pub lease_secs: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Selecting,
    Requesting { offer: Ipv4Addr, server: Ipv4Addr },
    Bound,
    Renewing,
    Rebinding,
}

/// What the client asks its owner to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new or changed lease: configure it.
    Configured(Lease),
    /// The lease is gone: remove its address and routes.
    Deconfigured,
}

/// A packet to send: an IPv4 packet, broadcast on the link or routed to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub broadcast: bool,
    pub packet: Vec<u8>,
}

impl Outgoing {
    /// The DHCP message alone, for a sender that uses a UDP socket.
    pub fn udp_payload(&self) -> &[u8] {
        self.packet.get(28..).unwrap_or_default()
    }
}

#[derive(Debug)]
pub struct Client {
    mac: Mac,
    hostname: Option<String>,
    xid: u32,
    state: State,
    tries: u32,
    next: Instant,
    lease: Option<Lease>,
    bound_at: Instant,
    /// Ask for unicast replies (no broadcast flag): for a client that takes frames to its MAC
    /// before it has the address (a user-space stack), so the server's OFFER and ACK are not
    /// flooded to every port.
    unicast: bool,
    /// Leases renewed or acquired, for tests and counters.
    pub acks: u64,
    /// xorshift state for the retransmission jitter.
    rng: u32,
}

/// A message parsed from a server.
#[derive(Debug)]
struct Reply {
    kind: u8,
    yiaddr: Ipv4Addr,
    mask: Option<Ipv4Addr>,
    router: Option<Ipv4Addr>,
    dns: Vec<Ipv4Addr>,
    server: Option<Ipv4Addr>,
    lease: Option<u32>,
}

fn ip4(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

impl Client {
    pub fn new(mac: Mac, hostname: Option<String>, now: Instant, seed: u32) -> Client {
        let xid = seed ^ u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]);
        Client {
            mac,
            hostname,
            xid,
            state: State::Selecting,
            tries: 0,
            next: now,
            lease: None,
            bound_at: now,
            unicast: false,
            acks: 0,
            // The retry jitter's generator starts where the transaction ids do (never 0).
            rng: xid.max(1),
        }
    }

    /// Asks servers to answer with unicast frames to this client's MAC (RFC 2131 §4.1: no
    /// broadcast flag) instead of broadcasts: for a client that receives frames to its MAC
    /// before it has an address. A kernel UDP socket does not, so the default is broadcast.
    pub fn with_unicast_replies(mut self) -> Client {
        self.unicast = true;
        self
    }

    pub fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }

    /// When [`Client::poll`] next has something to do.
    pub fn poll_at(&self) -> Instant {
        self.next
    }

    /// The next retransmission: 1, 2, 4, 8, then 16 s, each less a random part of up to half
    /// of it (at most 1 s; RFC 2131 §4.1 asks for randomized delays), so that clients that
    /// started together — a thousand stacks asking at once — do not all ask again in the
    /// same millisecond, a burst a slow server's socket drops the most of.
    fn backoff(&mut self, now: Instant) {
        let ms = 1000u64 << self.tries.min(4);
        self.tries += 1;
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 17;
        self.rng ^= self.rng << 5;
        let jitter = u64::from(self.rng) % (ms / 2).min(1000);
        self.next = now + Duration::from_millis(ms - jitter);
    }

    /// Timers: (re)transmissions, renewal, rebinding, expiry.
    pub fn poll(&mut self, now: Instant) -> (Option<Outgoing>, Option<Event>) {
        if now < self.next {
            return (None, None);
        }
        match self.state.clone() {
            State::Selecting => {
                self.backoff(now);
                (Some(self.message(1, None, None, None, true)), None)
            }
            State::Requesting { offer, server } => {
                if self.tries > 4 {
                    self.restart(now);
                    return (None, None);
                }
                self.backoff(now);
                (
                    Some(self.message(3, Some(offer), Some(server), None, true)),
                    None,
                )
            }
            State::Bound | State::Renewing | State::Rebinding => {
                let Some(lease) = self.lease.clone() else {
                    self.restart(now);
                    return (None, None);
                };
                let secs = u64::from(lease.lease_secs.max(4));
                let t1 = self.bound_at + Duration::from_secs(secs / 2);
                let t2 = self.bound_at + Duration::from_secs(secs * 7 / 8);
                let end = self.bound_at + Duration::from_secs(secs);
                if now >= end {
                    self.lease = None;
                    self.restart(now);
                    return (None, Some(Event::Deconfigured));
                }
                if now >= t2 {
                    self.state = State::Rebinding;
                    self.next = (now + Duration::from_secs(2)).min(end);
                    return (
                        Some(self.message(3, None, None, Some(lease.addr), true)),
                        None,
                    );
                }
                if now >= t1 {
                    self.state = State::Renewing;
                    self.next = (now + Duration::from_secs(2)).min(t2);
                    let mut out = self.message(3, None, None, Some(lease.addr), false);
                    set_dst(&mut out.packet, lease.server);
                    return (Some(out), None);
                }
                self.next = t1;
                (None, None)
            }
        }
    }

    fn restart(&mut self, now: Instant) {
        self.state = State::Selecting;
        self.tries = 0;
        self.xid = self.xid.wrapping_mul(1_103_515_245).wrapping_add(12345);
        self.next = now;
    }

    /// Handles a UDP payload that arrived on port 68.
    pub fn handle(
        &mut self,
        now: Instant,
        payload: &[u8],
    ) -> Option<(Option<Outgoing>, Option<Event>)> {
        let r = self.parse(payload)?;
        match (&self.state, r.kind) {
            (State::Selecting, 2) => {
                let server = r.server?;
                self.state = State::Requesting {
                    offer: r.yiaddr,
                    server,
                };
                self.tries = 0;
                self.backoff(now);
                let out = self.message(3, Some(r.yiaddr), Some(server), None, true);
                Some((Some(out), None))
            }
            (State::Requesting { .. } | State::Renewing | State::Rebinding | State::Bound, 5) => {
                let prefix = r.mask.map_or(24, |m| u32::from(m).leading_ones() as u8);
                let lease = Lease {
                    addr: r.yiaddr,
                    prefix,
                    router: r.router,
                    dns: r.dns,
                    server: r.server.unwrap_or(Ipv4Addr::UNSPECIFIED),
                    lease_secs: r.lease.unwrap_or(3600),
                };
                self.acks += 1;
                self.state = State::Bound;
                self.tries = 0;
                self.bound_at = now;
                self.next = now + Duration::from_secs(u64::from(lease.lease_secs.max(4)) / 2);
                let changed = self.lease.as_ref() != Some(&lease);
                self.lease = Some(lease.clone());
                Some((None, changed.then_some(Event::Configured(lease))))
            }
            (State::Requesting { .. } | State::Renewing | State::Rebinding, 6) => {
                let had = self.lease.take().is_some();
                self.restart(now);
                Some((None, had.then_some(Event::Deconfigured)))
            }
            _ => None,
        }
    }

    fn parse(&self, p: &[u8]) -> Option<Reply> {
        if p.len() < 240 || p[0] != 2 || p[1] != 1 || p[2] != 6 {
            return None;
        }
        if p[4..8] != self.xid.to_be_bytes() || p[28..34] != self.mac || p[236..240] != MAGIC {
            return None;
        }
        let mut r = Reply {
            kind: 0,
            yiaddr: ip4(&p[16..20]),
            mask: None,
            router: None,
            dns: Vec::new(),
            server: None,
            lease: None,
        };
        let mut o = &p[240..];
        while let Some((&code, rest)) = o.split_first() {
            match code {
                0 => {
                    o = rest;
                    continue;
                }
                255 => break,
                _ => {}
            }
            let (&len, rest) = rest.split_first()?;
            let len = usize::from(len);
            if rest.len() < len {
                return None;
            }
            let v = &rest[..len];
            match (code, len) {
                (53, 1) => r.kind = v[0],
                (1, 4) => r.mask = Some(ip4(v)),
                (3, l) if l >= 4 => r.router = Some(ip4(v)),
                (6, l) if l >= 4 => r.dns = v.chunks_exact(4).map(ip4).collect(),
                (54, 4) => r.server = Some(ip4(v)),
                (51, 4) => r.lease = Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]])),
                _ => {}
            }
            o = &rest[len..];
        }
        (r.kind != 0).then_some(r)
    }

    /// Builds a DHCP message of `kind` inside an IPv4/UDP packet from `ciaddr` (or 0.0.0.0) to
    /// the broadcast address.
    fn message(
        &self,
        kind: u8,
        requested: Option<Ipv4Addr>,
        server: Option<Ipv4Addr>,
        ciaddr: Option<Ipv4Addr>,
        broadcast: bool,
    ) -> Outgoing {
        let mut d = vec![0u8; 240];
        d[0] = 1;
        d[1] = 1;
        d[2] = 6;
        d[4..8].copy_from_slice(&self.xid.to_be_bytes());
        if ciaddr.is_none() && !self.unicast {
            d[10] = 0x80; // ask for broadcast replies while we have no address
        }
        if let Some(c) = ciaddr {
            d[12..16].copy_from_slice(&c.octets());
        }
        d[28..34].copy_from_slice(&self.mac);
        d[236..240].copy_from_slice(&MAGIC);
        d.extend_from_slice(&[53, 1, kind]);
        d.extend_from_slice(&[61, 7, 1]);
        d.extend_from_slice(&self.mac);
        if let Some(a) = requested {
            d.extend_from_slice(&[50, 4]);
            d.extend_from_slice(&a.octets());
        }
        if let Some(s) = server {
            d.extend_from_slice(&[54, 4]);
            d.extend_from_slice(&s.octets());
        }
        if let Some(h) = &self.hostname {
            let h = h.split('.').next().unwrap_or("").as_bytes();
            if !h.is_empty() && h.len() < 64 {
                d.extend_from_slice(&[12, h.len() as u8]);
                d.extend_from_slice(h);
            }
        }
        d.extend_from_slice(&[55, 5, 1, 3, 6, 15, 51]);
        d.push(255);
        while d.len() < 300 {
            d.push(0);
        }
        let src = ciaddr.unwrap_or(Ipv4Addr::UNSPECIFIED);
        Outgoing {
            broadcast,
            packet: udp4(src, Ipv4Addr::BROADCAST, CLIENT_PORT, SERVER_PORT, &d),
        }
    }
}

fn checksum(b: &[u8]) -> u16 {
    let mut acc: u32 = 0;
    for c in b.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// An IPv4/UDP packet (UDP checksum left zero, which IPv4 allows).
pub fn udp4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let total = 28 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let ck = checksum(&p[..20]);
    p[10..12].copy_from_slice(&ck.to_be_bytes());
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}

fn set_dst(p: &mut [u8], dst: Ipv4Addr) {
    p[16..20].copy_from_slice(&dst.octets());
    p[10..12].copy_from_slice(&[0, 0]);
    let ck = checksum(&p[..20]);
    p[10..12].copy_from_slice(&ck.to_be_bytes());
}

/// The UDP payload of an IPv4 packet to port 68, if that is what `p` is.
pub fn dhcp_payload(p: &[u8]) -> Option<&[u8]> {
    udp4_payload_to(p, CLIENT_PORT)
}

/// The UDP payload of an IPv4 packet to UDP port `port`, if that is what `p` is.
fn udp4_payload_to(p: &[u8], port: u16) -> Option<&[u8]> {
    let ihl = usize::from(p.first()? & 0xf) * 4;
    // An IHL below 5 words is malformed (and would leave the protocol byte unchecked).
    if ihl < 20 || p.len() < ihl + 8 || p[9] != 17 {
        return None;
    }
    let udp = &p[ihl..];
    if u16::from_be_bytes([udp[2], udp[3]]) != port {
        return None;
    }
    Some(&udp[8..])
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = [2, 0, 0, 0, 0, 7];

    #[test]
    fn dhcp_payload_refuses_short_and_malformed_headers() {
        // IHL 0 on an 8-byte packet used to index past its end.
        assert_eq!(dhcp_payload(&[0x40, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(dhcp_payload(&[]), None);
        let mut p = udp4(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::BROADCAST,
            67,
            68,
            b"hi",
        );
        assert_eq!(dhcp_payload(&p), Some(&b"hi"[..]));
        p[0] = 0x44; // IHL 4 words: malformed
        assert_eq!(dhcp_payload(&p), None);
        p[0] = 0x45;
        p[9] = 6; // TCP
        assert_eq!(dhcp_payload(&p), None);
    }

    fn reply(c: &Client, kind: u8, yiaddr: [u8; 4], lease: u32) -> Vec<u8> {
        let mut d = vec![0u8; 240];
        d[0] = 2;
        d[1] = 1;
        d[2] = 6;
        d[4..8].copy_from_slice(&c.xid.to_be_bytes());
        d[16..20].copy_from_slice(&yiaddr);
        d[28..34].copy_from_slice(&MAC);
        d[236..240].copy_from_slice(&MAGIC);
        d.extend_from_slice(&[53, 1, kind, 54, 4, 10, 0, 0, 1, 1, 4, 255, 255, 255, 0]);
        d.extend_from_slice(&[3, 4, 10, 0, 0, 1, 6, 4, 10, 0, 0, 53, 51, 4]);
        d.extend_from_slice(&lease.to_be_bytes());
        d.push(255);
        d
    }

    #[test]
    fn the_broadcast_flag_is_set_unless_unicast_replies_are_asked_for() {
        let t0 = Instant::from_secs(100);
        // DHCP's flags are bytes 10-11 of the message, after the IPv4 and UDP headers.
        let flags = |c: &mut Client| {
            let out = c.poll(t0).0.expect("a DISCOVER");
            u16::from_be_bytes([out.packet[28 + 10], out.packet[28 + 11]])
        };
        assert_eq!(flags(&mut Client::new(MAC, None, t0, 1)), 0x8000);
        assert_eq!(
            flags(&mut Client::new(MAC, None, t0, 1).with_unicast_replies()),
            0
        );
        // The REQUEST after an OFFER asks the same way.
        let mut c = Client::new(MAC, None, t0, 1).with_unicast_replies();
        let _ = c.poll(t0);
        let (req, _) = c.handle(t0, &reply(&c, 2, [10, 0, 0, 50], 60)).unwrap();
        let req = req.unwrap();
        assert_eq!((req.packet[28 + 10], req.packet[28 + 240 + 2]), (0, 3));
    }

    #[test]
    fn retransmissions_back_off_with_jitter_that_differs_between_clients() {
        let t0 = Instant::from_secs(100);
        let mut firsts = std::collections::BTreeSet::new();
        for i in 0..20u8 {
            let mut c = Client::new([2, 0, 0, 0, 0, i], None, t0, 7);
            let mut t = t0;
            for base in [1000u64, 2000, 4000, 8000, 16000, 16000] {
                assert!(c.poll(t).0.is_some());
                let wait = c.poll_at().saturating_duration_since(t).as_millis() as u64;
                assert!(
                    wait <= base && wait > base - base.min(2000) / 2,
                    "{wait} {base}"
                );
                if base == 1000 {
                    firsts.insert(wait);
                }
                t = c.poll_at();
            }
        }
        assert!(firsts.len() > 10, "{firsts:?}");
    }

    #[test]
    fn discover_offer_request_ack_then_renew_and_expire() {
        let t0 = Instant::from_secs(100);
        let mut c = Client::new(MAC, Some("node.example".into()), t0, 42);
        let (out, _) = c.poll(t0);
        let out = out.expect("a DISCOVER");
        assert!(out.broadcast);
        let d = dhcp_payload(&out.packet).map(|_| ()).is_none();
        assert!(d, "the client's own packet goes to port 67, not 68");
        assert_eq!(&out.packet[16..20], &[255, 255, 255, 255]);
        assert_eq!(out.packet[28 + 240 + 2], 1, "DHCPDISCOVER");
        // OFFER → REQUEST
        let (req, ev) = c.handle(t0, &reply(&c, 2, [10, 0, 0, 50], 60)).unwrap();
        assert!(ev.is_none());
        let req = req.unwrap();
        assert_eq!(req.packet[28 + 240 + 2], 3, "DHCPREQUEST");
        // ACK → configured
        let (_, ev) = c.handle(t0, &reply(&c, 5, [10, 0, 0, 50], 60)).unwrap();
        let Some(Event::Configured(l)) = ev else {
            panic!("no lease")
        };
        assert_eq!((l.addr, l.prefix), (Ipv4Addr::new(10, 0, 0, 50), 24));
        assert_eq!(l.router, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(l.dns, vec![Ipv4Addr::new(10, 0, 0, 53)]);
        // T1: a unicast REQUEST to the server with ciaddr set.
        assert_eq!(c.poll_at(), t0 + Duration::from_secs(30));
        let (renew, _) = c.poll(t0 + Duration::from_secs(30));
        let renew = renew.unwrap();
        assert!(!renew.broadcast);
        assert_eq!(&renew.packet[16..20], &[10, 0, 0, 1]);
        assert_eq!(&renew.packet[28 + 12..28 + 16], &[10, 0, 0, 50]);
        // The same lease again is not a change.
        let (_, ev) = c
            .handle(
                t0 + Duration::from_secs(31),
                &reply(&c, 5, [10, 0, 0, 50], 60),
            )
            .unwrap();
        assert!(ev.is_none());
        assert_eq!(c.acks, 2);
        // No answer to renewals: at the end of the lease, deconfigured.
        let mut t = t0 + Duration::from_secs(31);
        let mut gone = false;
        for _ in 0..100 {
            t = c.poll_at().max(t);
            if let (_, Some(Event::Deconfigured)) = c.poll(t) {
                gone = true;
                break;
            }
        }
        assert!(gone);
        assert!(c.lease().is_none());
    }

    #[test]
    fn a_nak_starts_over_with_a_new_transaction_and_udp_payload_is_the_message() {
        let t0 = Instant::from_secs(5);
        let mut c = Client::new(MAC, None, t0, 9);
        let (discover, _) = c.poll(t0);
        let discover = discover.unwrap();
        assert_eq!(discover.udp_payload().len(), discover.packet.len() - 28);
        assert_eq!(&discover.udp_payload()[236..240], &MAGIC);
        let first_xid = c.xid;
        let _ = c.handle(t0, &reply(&c, 2, [10, 0, 0, 50], 60)).unwrap();
        let (_, ev) = c.handle(t0, &reply(&c, 6, [0, 0, 0, 0], 0)).unwrap();
        assert!(
            ev.is_none(),
            "a NAK before any lease changes nothing configured"
        );
        assert!(c.lease().is_none());
        let (again, _) = c.poll(t0);
        let again = again.expect("a new DISCOVER at once");
        assert_eq!(again.udp_payload()[240 + 2], 1, "DHCPDISCOVER");
        assert_ne!(c.xid, first_xid);
    }

    #[test]
    fn foreign_and_malformed_replies_are_ignored() {
        let t0 = Instant::from_secs(1);
        let mut c = Client::new(MAC, None, t0, 1);
        let _ = c.poll(t0);
        let mut r = reply(&c, 2, [10, 0, 0, 9], 60);
        r[4] ^= 1; // another transaction
        assert!(c.handle(t0, &r).is_none());
        let r = reply(&c, 2, [10, 0, 0, 9], 60);
        assert!(c.handle(t0, &r[..200]).is_none());
        let mut r = reply(&c, 2, [10, 0, 0, 9], 60);
        let n = r.len();
        r[n - 2] = 200; // an option longer than the message
        r.truncate(n - 1);
        assert!(c.handle(t0, &r[..r.len() - 2]).is_none() || c.lease().is_none());
    }
}
