//! Servers a stack runs on its links, as a router does: DHCPv4 (ranges, static leases, a
//! lease file), IPv6 router advertisements (answering router solicitations) and stateless
//! DHCPv6. The servers are filo-dhcp's sans-IO ones, the same `filo router` and `filo slirp`
//! run; this module hands them the packets for them and sends what they answer, past the
//! OUTPUT and POSTROUTING hooks as the stack's other packets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use filo_dhcp::server::{self as dhcp4, LeaseFile, LeaseInfo};
use filo_dhcp::{ra, v6 as dhcp6};
use smoltcp::time::Instant;

use crate::net::{to_dhcp_time, Link, Net};
use crate::wire::{Mac, ETH_HDR};
use crate::Error;

/// A DHCPv4 server for one of a stack's links ([`crate::StackBuilder::dhcp_server`]): it
/// answers from the link's first IPv4 address and hands out addresses of its subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpServer {
    /// The first and last address handed out (both in the link's subnet).
    pub range: (Ipv4Addr, Ipv4Addr),
    /// Clients (by MAC) that always get the same address, in the range or not.
    pub static_leases: Vec<(Mac, Ipv4Addr)>,
    /// The router option: the link's address unless set.
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    /// The DNS search list (option 119).
    pub search: Vec<String>,
    pub lease_time: Duration,
    /// Where the leases are kept across restarts (loaded at start, written when they change).
    pub leases_file: Option<PathBuf>,
}

impl DhcpServer {
    /// Addresses `first` to `last`, one-hour leases, the link's address as the router.
    pub fn new(first: Ipv4Addr, last: Ipv4Addr) -> DhcpServer {
        DhcpServer {
            range: (first, last),
            static_leases: Vec::new(),
            router: None,
            dns: Vec::new(),
            domain: None,
            search: Vec::new(),
            lease_time: Duration::from_secs(3600),
            leases_file: None,
        }
    }

    /// The client with `mac` always gets `addr` (and nobody else does).
    pub fn static_lease(mut self, mac: Mac, addr: Ipv4Addr) -> Self {
        self.static_leases.push((mac, addr));
        self
    }

    pub fn router(mut self, addr: Ipv4Addr) -> Self {
        self.router = Some(addr);
        self
    }

    pub fn dns(mut self, addr: Ipv4Addr) -> Self {
        self.dns.push(addr);
        self
    }

    pub fn domain(mut self, name: impl Into<String>) -> Self {
        self.domain = Some(name.into());
        self
    }

    pub fn search(mut self, name: impl Into<String>) -> Self {
        self.search.push(name.into());
        self
    }

    pub fn lease_time(mut self, d: Duration) -> Self {
        self.lease_time = d;
        self
    }

    pub fn leases_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.leases_file = Some(path.into());
        self
    }
}

/// Router advertisements on one of a stack's links ([`crate::StackBuilder::router_adverts`]).
/// By default: the link's IPv6 prefixes (not link-local) for SLAAC, advertised again when they
/// change, its MTU when not 1500, a default-router lifetime of 30 minutes, the O flag when the
/// link has a DHCPv6 server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouterAdverts {
    /// Prefixes to advertise instead of the link's own (prefix, length).
    pub prefixes: Option<Vec<(Ipv6Addr, u8)>>,
    /// Recursive DNS servers (RFC 8106).
    pub rdnss: Vec<Ipv6Addr>,
    /// The DNS search list (RFC 8106).
    pub dnssl: Vec<String>,
    /// The MTU option instead of the link's.
    pub mtu: Option<u32>,
    /// How long hosts may use the stack as their default router (zero: not at all).
    pub router_lifetime: Option<Duration>,
}

impl RouterAdverts {
    pub fn new() -> RouterAdverts {
        RouterAdverts::default()
    }

    pub fn prefix(mut self, prefix: Ipv6Addr, len: u8) -> Self {
        self.prefixes
            .get_or_insert_with(Vec::new)
            .push((prefix, len));
        self
    }

    pub fn rdnss(mut self, addr: Ipv6Addr) -> Self {
        self.rdnss.push(addr);
        self
    }

    pub fn dnssl(mut self, name: impl Into<String>) -> Self {
        self.dnssl.push(name.into());
        self
    }

    pub fn mtu(mut self, mtu: u32) -> Self {
        self.mtu = Some(mtu);
        self
    }

    pub fn router_lifetime(mut self, d: Duration) -> Self {
        self.router_lifetime = Some(d);
        self
    }
}

/// A stateless DHCPv6 server (RFC 8415 §6.1: INFORMATION-REQUEST answered with DNS servers
/// and a search list) on one of a stack's links.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dhcpv6Server {
    pub dns: Vec<Ipv6Addr>,
    pub search: Vec<String>,
}

/// The servers of one link.
#[derive(Debug, Default)]
pub(crate) struct LinkServers {
    dhcp: Option<(dhcp4::Server, Option<LeaseFile>)>,
    ra: Option<(ra::Advertiser, RouterAdverts)>,
    dhcp6: Option<dhcp6::Server>,
    random: u32,
}

impl LinkServers {
    /// Whether a server here takes UDP packets (DHCPv4, DHCPv6).
    fn takes_udp(&self) -> bool {
        self.dhcp.is_some() || self.dhcp6.is_some()
    }

    fn next_random(&mut self, mac: &Mac) -> u32 {
        // xorshift32, seeded from the MAC: enough to spread advertisement intervals.
        let mut x = self.random;
        if x == 0 {
            x = u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]) | 1;
        }
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.random = x;
        x
    }
}

fn server_error(what: &str, link: &Link, e: impl std::fmt::Display) -> Error {
    Error::BadValue(format!("{what} on {}: {e}", link.name))
}

impl Net {
    fn link_checked(&self, index: usize) -> Result<&Link, Error> {
        self.links.get(index).ok_or(Error::NoSuchLink(index))
    }

    /// Serves DHCPv4 on link `index` (replacing a server there); returns the lease-file lines
    /// that could not be loaded.
    pub(crate) fn set_dhcp_server(
        &mut self,
        now: Instant,
        index: usize,
        s: &DhcpServer,
    ) -> Result<Vec<String>, Error> {
        let l = self.link_checked(index)?;
        let Some((ip, len)) = l.addrs.iter().find_map(|c| match c.addr {
            IpAddr::V4(a) => Some((a, c.prefix)),
            IpAddr::V6(_) => None,
        }) else {
            return Err(server_error(
                "DHCP server",
                l,
                "the link has no IPv4 address to serve from",
            ));
        };
        let mut c = dhcp4::Config::new(ip, len, s.range.0, s.range.1);
        c.router = Some(s.router.unwrap_or(ip));
        c.dns = s.dns.clone();
        c.domain = s.domain.clone();
        c.search = s.search.clone();
        c.lease_time = s.lease_time;
        c.static_leases = s.static_leases.clone();
        if l.mtu != 1500 && !l.vnet() {
            c.mtu = u16::try_from(l.mtu).ok();
        }
        let mut server = dhcp4::Server::new(c).map_err(|e| server_error("DHCP server", l, e))?;
        let mut errors = Vec::new();
        let file = match &s.leases_file {
            Some(path) => {
                let (f, e) = LeaseFile::open(&mut server, path.clone(), to_dhcp_time(now))?;
                errors = e
                    .iter()
                    .map(|e| format!("{}: {e}", path.display()))
                    .collect();
                Some(f)
            }
            None => None,
        };
        self.links[index].servers.dhcp = Some((server, file));
        Ok(errors)
    }

    /// Sends router advertisements on link `index` (replacing those there).
    pub(crate) fn set_router_adverts(
        &mut self,
        now: Instant,
        index: usize,
        a: &RouterAdverts,
    ) -> Result<(), Error> {
        let l = self.link_checked(index)?;
        let addrs: Vec<(IpAddr, u8)> = match &a.prefixes {
            Some(p) => p.iter().map(|&(p, len)| (IpAddr::V6(p), len)).collect(),
            None => l.addrs.iter().map(|c| (c.addr, c.prefix)).collect(),
        };
        let mtu = if l.vnet() { 1500 } else { l.mtu as u32 };
        let mut c = ra::Config::for_link(l.mac, &addrs, mtu, l.servers.dhcp6.is_some());
        c.rdnss = a.rdnss.clone();
        c.dnssl = a.dnssl.clone();
        if a.mtu.is_some() {
            c.mtu = a.mtu;
        }
        if let Some(d) = a.router_lifetime {
            c.router_lifetime = d;
        }
        let adv =
            ra::Advertiser::new(c, to_dhcp_time(now)).map_err(|e| server_error("RA", l, e))?;
        self.links[index].servers.ra = Some((adv, a.clone()));
        Ok(())
    }

    /// A stateless DHCPv6 server on link `index`; router advertisements there get the O flag.
    pub(crate) fn set_dhcpv6_server(
        &mut self,
        now: Instant,
        index: usize,
        s: &Dhcpv6Server,
    ) -> Result<(), Error> {
        let l = self.link_checked(index)?;
        let mut c = dhcp6::Config::new(l.mac);
        c.dns = s.dns.clone();
        c.search = s.search.clone();
        let server = dhcp6::Server::new(c).map_err(|e| server_error("DHCPv6 server", l, e))?;
        self.links[index].servers.dhcp6 = Some(server);
        self.readvertise(now, index)
    }

    /// The links' addresses changed: advertisements of a link's own prefixes are made again
    /// when its prefixes are not those advertised (sent at once, as a new router's).
    pub(crate) fn readvertise_prefixes(&mut self, now: Instant) {
        for i in 0..self.links.len() {
            let l = &self.links[i];
            let Some((adv, a)) = l.servers.ra.as_ref() else {
                continue;
            };
            if a.prefixes.is_some() {
                continue;
            }
            let addrs: Vec<(IpAddr, u8)> = l.addrs.iter().map(|c| (c.addr, c.prefix)).collect();
            let now_prefixes = ra::Config::for_link(l.mac, &addrs, 1500, false).prefixes;
            if now_prefixes != adv.config().prefixes {
                if let Err(e) = self.readvertise(now, i) {
                    tracing::warn!("{}: router advertisements: {e}", self.links[i].name);
                }
            }
        }
    }

    /// Router advertisements made again from their settings (the O flag changed).
    fn readvertise(&mut self, now: Instant, index: usize) -> Result<(), Error> {
        match self.links[index]
            .servers
            .ra
            .as_ref()
            .map(|(_, a)| a.clone())
        {
            Some(a) => self.set_router_adverts(now, index, &a),
            None => Ok(()),
        }
    }

    /// Stops the DHCPv4 server on link `index` (its leases are written a last time); false
    /// when there was none.
    pub(crate) fn remove_dhcp_server(&mut self, now: Instant, index: usize) -> bool {
        let Some(l) = self.links.get_mut(index) else {
            return false;
        };
        match l.servers.dhcp.take() {
            Some((server, Some(mut file))) => {
                save(&mut file, &server, now);
                true
            }
            Some(_) => true,
            None => false,
        }
    }

    /// Stops router advertisements on link `index`, with a last one saying the stack is no
    /// default router any more (router lifetime 0, RFC 4861 §6.2.5); false when there were
    /// none.
    pub(crate) fn remove_router_adverts(&mut self, now: Instant, index: usize) -> bool {
        let Some(l) = self.links.get_mut(index) else {
            return false;
        };
        let Some((adv, _)) = l.servers.ra.take() else {
            return false;
        };
        let mut c = adv.config().clone();
        c.router_lifetime = Duration::ZERO;
        let last = ra::Advertiser::new(c, to_dhcp_time(now))
            .ok()
            .and_then(|mut a| a.poll(to_dhcp_time(now), 0))
            .and_then(|p| ra::ethernet_frame(l.mac, None, &p));
        if let Some(f) = last {
            self.server_output(now, index, f);
        }
        true
    }

    pub(crate) fn remove_dhcpv6_server(&mut self, now: Instant, index: usize) -> bool {
        let removed = self
            .links
            .get_mut(index)
            .is_some_and(|l| l.servers.dhcp6.take().is_some());
        if removed {
            let _ = self.readvertise(now, index);
        }
        removed
    }

    /// The leases of every DHCP server, each with its link's index.
    pub(crate) fn leases(&self, now: Instant) -> Vec<(usize, LeaseInfo)> {
        let clock = to_dhcp_time(now);
        let mut out = Vec::new();
        for (i, l) in self.links.iter().enumerate() {
            if let Some((s, _)) = &l.servers.dhcp {
                out.extend(s.leases(clock).into_iter().map(|x| (i, x)));
            }
        }
        out
    }

    /// When the next router advertisement is due.
    pub(crate) fn servers_poll_at(&self) -> Option<Instant> {
        self.links
            .iter()
            .filter(|l| l.up)
            .filter_map(|l| l.servers.ra.as_ref())
            .map(|(a, _)| Instant::from_millis(a.poll_at().total_millis() as i64))
            .min()
    }

    /// Router advertisements that are due.
    pub(crate) fn servers_on_timer(&mut self, now: Instant) {
        self.servers_rescheduled = false;
        for i in 0..self.links.len() {
            let l = &mut self.links[i];
            if !l.up {
                continue;
            }
            let mac = l.mac;
            let r = l.servers.next_random(&mac);
            let Some((adv, _)) = l.servers.ra.as_mut() else {
                continue;
            };
            let packet = adv.poll(to_dhcp_time(now), r);
            if let Some(f) = packet.and_then(|p| ra::ethernet_frame(mac, None, &p)) {
                self.server_output(now, i, f);
            }
        }
    }

    /// A packet for the stack itself (past the PREROUTING and INPUT hooks) that came in on
    /// link `i`: for one of the link's servers, or for smoltcp.
    #[inline]
    pub(crate) fn deliver(&mut self, now: Instant, i: usize, p: &[u8]) {
        if self.links[i].servers.takes_udp() && self.serve(now, i, p) {
            return;
        }
        self.take_ip(now, p)
    }

    /// True when `p` was for a server of link `i` (and answered).
    #[inline(never)]
    fn serve(&mut self, now: Instant, i: usize, p: &[u8]) -> bool {
        match p[0] >> 4 {
            4 => self.serve_v4(now, i, p),
            _ => self.serve_v6(now, i, p),
        }
    }

    /// An IPv4 packet `p` that arrived on link `i`: true when it was for the link's DHCP
    /// server (and answered).
    fn serve_v4(&mut self, now: Instant, i: usize, p: &[u8]) -> bool {
        let l = &mut self.links[i];
        let Some((server, file)) = l.servers.dhcp.as_mut() else {
            return false;
        };
        let Some(payload) = dhcp4::server_payload(p) else {
            return false;
        };
        let clock = to_dhcp_time(now);
        let reply = server.handle(clock, payload);
        if let Some(file) = file {
            save(file, server, now);
        }
        let mac = l.mac;
        match reply {
            Ok(Some(reply)) => match reply.ethernet_frame(mac) {
                Some(frame) => self.server_output(now, i, frame),
                None => {
                    // To a relay: routed, as any packet of the stack's own.
                    let mut f = vec![0u8; ETH_HDR];
                    f.extend_from_slice(&reply.ipv4_packet());
                    self.output(now, f);
                }
            },
            // Taken, or ignored (counted in the server's stats).
            Ok(None) => {}
            Err(dhcp4::Error::PoolExhausted(_)) => {
                self.counters.drop(crate::DropReason::PoolExhausted, 1);
            }
            Err(e) => {
                tracing::debug!("{}: DHCP server: {e}", self.links[i].name);
                self.counters.drop(crate::DropReason::Server, 1);
            }
        }
        true
    }

    /// What the DHCPv4 server of link `index` did with the messages it got; None when the
    /// link has none.
    pub(crate) fn dhcp_server_stats(&self, index: usize) -> Option<dhcp4::Stats> {
        let (server, _) = self.links.get(index)?.servers.dhcp.as_ref()?;
        Some(*server.stats())
    }

    /// Sends `frame`, which a server of link `i` wrote whole (Ethernet header and all: a
    /// DHCP reply to a client without an address yet, a router advertisement), out of link
    /// `i` past the OUTPUT and POSTROUTING hooks, as the stack's other packets go.
    fn server_output(&mut self, now: Instant, i: usize, frame: Vec<u8>) {
        if let Some(frame) = self.hooked_on_link(now, i, frame) {
            self.send_frame(i, frame);
        }
    }

    /// An IPv6 packet `p` that arrived on link `i`: true when it was for the link's DHCPv6
    /// server (and answered, from the link's link-local address).
    fn serve_v6(&mut self, now: Instant, i: usize, p: &[u8]) -> bool {
        let l = &self.links[i];
        let Some(server) = l.servers.dhcp6.as_ref() else {
            return false;
        };
        let Some((client, msg)) = dhcp6::server_payload(p) else {
            return false;
        };
        let reply = match server.handle(msg) {
            Ok(Some(r)) => r,
            Ok(None) => return true,
            Err(e) => {
                tracing::debug!("{}: DHCPv6 server: {e}", l.name);
                self.counters.drop(crate::DropReason::Server, 1);
                return true;
            }
        };
        let packet = dhcp6::udp6(
            l.link_local(),
            client,
            dhcp6::SERVER_PORT,
            dhcp6::CLIENT_PORT,
            &reply.payload,
        );
        let mut f = vec![0u8; ETH_HDR];
        f.extend_from_slice(&packet);
        if let Some(f) = self.hooked_on_link(now, i, f) {
            self.send_on_link(now, i, IpAddr::V6(client), f);
        }
        true
    }

    /// A router solicitation (the whole IPv6 packet) on link `i`: the advertiser there, if
    /// any, answers within half a second.
    pub(crate) fn router_solicited(&mut self, now: Instant, i: usize, packet: &[u8]) {
        let l = &mut self.links[i];
        let mac = l.mac;
        let r = l.servers.next_random(&mac);
        if let Some((adv, _)) = l.servers.ra.as_mut() {
            match adv.handle_packet(to_dhcp_time(now), packet, r) {
                Ok(answered) => self.servers_rescheduled |= answered,
                Err(e) => {
                    tracing::debug!("{}: router solicitation: {e}", l.name);
                    self.counters.drop(crate::DropReason::BadNd, 1);
                }
            }
        }
    }
}

fn save(file: &mut LeaseFile, server: &dhcp4::Server, now: Instant) {
    if let Err(e) = file.save(server, to_dhcp_time(now)) {
        tracing::warn!("{}: leases not saved: {e}", file.path().display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire;
    use smoltcp::wire::{Ipv4Packet, Ipv6Packet};

    const MAC: Mac = [2, 0, 0, 0, 0, 1];

    fn net() -> Net {
        let mut n = Net::new();
        let mut l = Link::new("vde0".into(), MAC);
        l.addrs.push("10.1.0.1/24".parse().unwrap());
        l.addrs.push("fd01::1/64".parse().unwrap());
        n.links.push(l);
        n
    }

    fn now() -> Instant {
        Instant::from_millis(1000)
    }

    fn sent(n: &mut Net) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        n.poll_transmit(0, &mut v);
        v
    }

    #[test]
    fn filo_dhcps_client_gets_an_offer_and_an_ack_from_the_links_server() {
        let mut n = net();
        let s = DhcpServer::new("10.1.0.100".parse().unwrap(), "10.1.0.109".parse().unwrap())
            .search("lab.example");
        n.set_dhcp_server(now(), 0, &s).unwrap();
        let search = b"\x03lab\x07example\x00";
        let mut searched = false;
        let peer: Mac = [2, 0, 0, 0, 0, 9];
        let mut client = filo_dhcp::Client::new(peer, None, to_dhcp_time(now()), 7);
        let mut lease = None;
        let (mut out, _) = client.poll(to_dhcp_time(now()));
        // DISCOVER → OFFER, REQUEST → ACK.
        for _ in 0..2 {
            let o = out.take().expect("a message from the client");
            let mut f = vec![0u8; ETH_HDR];
            f.extend_from_slice(&o.packet);
            wire::write_eth(&mut f, wire::BROADCAST, peer, wire::ETHERTYPE_IPV4);
            n.handle_frame(now(), 0, &f);
            let replies = sent(&mut n);
            assert_eq!(replies.len(), 1, "one answer");
            let ip = Ipv4Packet::new_checked(&replies[0][ETH_HDR..]).unwrap();
            let d = filo_dhcp::dhcp_payload(ip.into_inner()).unwrap();
            searched |= d.windows(search.len()).any(|w| w == search);
            let (o, ev) = client
                .handle(to_dhcp_time(now()), d)
                .expect("for the client");
            out = o;
            if let Some(filo_dhcp::Event::Configured(l)) = ev {
                lease = Some(l);
            }
        }
        let lease = lease.expect("a lease");
        assert!(searched, "the search list (option 119)");
        assert_eq!(lease.addr, Ipv4Addr::new(10, 1, 0, 100));
        assert_eq!(lease.router, Some(Ipv4Addr::new(10, 1, 0, 1)));
        let leases = n.leases(now());
        assert_eq!(leases.len(), 1);
        assert_eq!(leases[0].1.mac, peer);
        assert!(n.remove_dhcp_server(now(), 0));
        assert!(n.leases(now()).is_empty());
    }

    /// A frame from `mac` carrying a DHCP message (a UDP payload) to the server's port.
    fn to_server(mac: Mac, payload: &[u8]) -> Vec<u8> {
        let p = filo_dhcp::udp4(
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            filo_dhcp::CLIENT_PORT,
            filo_dhcp::SERVER_PORT,
            payload,
        );
        let mut f = vec![0u8; ETH_HDR];
        f.extend_from_slice(&p);
        wire::write_eth(&mut f, wire::BROADCAST, mac, wire::ETHERTYPE_IPV4);
        f
    }

    /// A BOOTREQUEST from `mac` of DHCP type `kind` with options `opts` (code, data).
    fn dhcp_msg(kind: u8, mac: Mac, opts: &[(u8, &[u8])]) -> Vec<u8> {
        let mut d = vec![0u8; 240];
        d[0..3].copy_from_slice(&[1, 1, 6]);
        d[4..8].copy_from_slice(&[1, 2, 3, 4]);
        d[28..34].copy_from_slice(&mac);
        d[236..240].copy_from_slice(&[99, 130, 83, 99]);
        d.extend_from_slice(&[53, 1, kind]);
        for (code, data) in opts {
            d.extend_from_slice(&[*code, data.len() as u8]);
            d.extend_from_slice(data);
        }
        d.push(255);
        d
    }

    /// The sum of every counter of the link's DHCPv4 server.
    fn handled(n: &Net) -> u64 {
        n.dhcp_server_stats(0).unwrap().iter().map(|(_, v)| v).sum()
    }

    #[test]
    fn what_the_dhcp_server_refuses_or_ignores_is_counted() {
        let mut n = net();
        let one = Ipv4Addr::new(10, 1, 0, 100);
        n.set_dhcp_server(now(), 0, &DhcpServer::new(one, one))
            .unwrap();
        assert_eq!(n.dhcp_server_stats(1), None, "no such link");
        let (a, b): (Mac, Mac) = ([2, 0, 0, 0, 0, 0xa], [2, 0, 0, 0, 0, 0xb]);
        n.handle_frame(now(), 0, &to_server(a, &dhcp_msg(1, a, &[])));
        assert_eq!(sent(&mut n).len(), 1, "an OFFER for a");
        // The only address is a's: b gets nothing.
        n.handle_frame(now(), 0, &to_server(b, &dhcp_msg(1, b, &[])));
        assert!(sent(&mut n).is_empty());
        assert_eq!(n.counters.get(crate::DropReason::PoolExhausted), 1);
        // a chose another server; b releases an address it does not hold.
        let other = [(50, &one.octets()[..]), (54, &[10, 1, 0, 2][..])];
        n.handle_frame(now(), 0, &to_server(a, &dhcp_msg(3, a, &other)));
        n.handle_frame(now(), 0, &to_server(b, &dhcp_msg(7, b, &[])));
        // Malformed: a BOOTREPLY, and no message type.
        let mut reply = dhcp_msg(1, b, &[]);
        reply[0] = 2;
        n.handle_frame(now(), 0, &to_server(b, &reply));
        n.handle_frame(now(), 0, &to_server(b, &dhcp_msg(1, b, &[])[..240]));
        assert!(sent(&mut n).is_empty(), "none of them is answered");
        assert_eq!(n.counters.get(crate::DropReason::Server), 2);
        let s = n.dhcp_server_stats(0).unwrap();
        let got = (
            s.offers,
            s.pool_exhausted,
            s.other_server,
            s.not_held,
            s.malformed,
        );
        assert_eq!(got, (1, 1, 1, 1, 2), "{s:?}");
        // A malformed DHCPv6 message is counted too.
        n.set_dhcpv6_server(now(), 0, &Dhcpv6Server::default())
            .unwrap();
        let p = dhcp6::udp6(
            wire::link_local(&b),
            "ff02::1:2".parse().unwrap(),
            dhcp6::CLIENT_PORT,
            dhcp6::SERVER_PORT,
            &[11, 0],
        );
        let mut f = vec![0u8; ETH_HDR];
        f.extend_from_slice(&p);
        wire::write_eth(&mut f, [0x33, 0x33, 0, 1, 0, 2], b, wire::ETHERTYPE_IPV6);
        n.handle_frame(now(), 0, &f);
        assert_eq!(n.counters.get(crate::DropReason::Server), 3);
    }

    #[test]
    fn truncated_and_garbage_dhcp_messages_are_counted_without_a_panic() {
        let mut n = net();
        let s = DhcpServer::new("10.1.0.100".parse().unwrap(), "10.1.0.109".parse().unwrap());
        n.set_dhcp_server(now(), 0, &s).unwrap();
        n.set_dhcpv6_server(now(), 0, &Dhcpv6Server::default())
            .unwrap();
        let peer: Mac = [2, 0, 0, 0, 0, 9];
        let good = dhcp_msg(1, peer, &[(61, &[1, 2, 0, 0, 0, 0, 9]), (12, b"host")]);
        let mut fed = 0;
        // Every truncation of a good DISCOVER, in a whole UDP datagram.
        for len in 0..good.len() {
            n.handle_frame(now(), 0, &to_server(peer, &good[..len]));
            fed += 1;
        }
        // Garbage after a valid header: options of any code and length (xorshift bytes).
        let mut x = 0x2545_f491u32;
        for round in 0..500 {
            let mut m = good[..240].to_vec();
            for _ in 0..(round % 64) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                m.push(x as u8);
            }
            n.handle_frame(now(), 0, &to_server(peer, &m));
            fed += 1;
        }
        assert_eq!(handled(&n), fed, "each message counted once");
        let _ = sent(&mut n);
        // Frames cut inside the IPv4 or UDP header, and UDP lengths that lie: not for the
        // server (the IP layer counts or smoltcp takes them).
        let whole = to_server(peer, &good);
        for len in ETH_HDR..ETH_HDR + 28 {
            n.handle_frame(now(), 0, &whole[..len]);
        }
        for udp_len in [0u16, 7, 8, 9, 600, 0xffff] {
            let mut f = whole.clone();
            f[ETH_HDR + 24..ETH_HDR + 26].copy_from_slice(&udp_len.to_be_bytes());
            n.handle_frame(now(), 0, &f);
        }
        // DHCPv6: truncated messages and garbage options.
        let mut v6 = vec![11u8, 1, 2, 3];
        v6.extend_from_slice(&[0, 1, 0, 200, 1, 2]);
        for len in 0..v6.len() {
            let p = dhcp6::udp6(
                wire::link_local(&peer),
                "ff02::1:2".parse().unwrap(),
                dhcp6::CLIENT_PORT,
                dhcp6::SERVER_PORT,
                &v6[..len],
            );
            let mut f = vec![0u8; ETH_HDR];
            f.extend_from_slice(&p);
            wire::write_eth(&mut f, [0x33, 0x33, 0, 1, 0, 2], peer, wire::ETHERTYPE_IPV6);
            n.handle_frame(now(), 0, &f);
        }
        let stats = n.dhcp_server_stats(0).unwrap();
        assert!(stats.malformed >= 240, "{stats:?}");
        assert!(
            n.counters.get(crate::DropReason::Server) >= stats.malformed + 4,
            "{:?}",
            n.counters
        );
    }

    /// Drops at OUTPUT what `drop` picks; counts what reaches POSTROUTING on link 0.
    struct Gate {
        drop: fn(&[u8]) -> bool,
        post: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl crate::forward::Hook for Gate {
        fn hook(
            &mut self,
            _: std::time::Instant,
            point: crate::forward::HookPoint,
            meta: &crate::forward::PacketMeta,
            packet: &mut Vec<u8>,
        ) -> crate::forward::HookVerdict {
            use crate::forward::{HookPoint, HookVerdict};
            if point == HookPoint::Output && (self.drop)(packet) {
                return HookVerdict::Drop;
            }
            if point == HookPoint::Postrouting && meta.out_iface == Some(0) {
                self.post.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            HookVerdict::Accept
        }
    }

    #[test]
    fn dhcpv6_answers_and_router_adverts_pass_the_output_and_postrouting_hooks() {
        use crate::forward::HookPoint;
        use std::sync::atomic::Ordering;
        let peer: Mac = [2, 0, 0, 0, 0, 9];
        let inform = {
            let p = dhcp6::udp6(
                wire::link_local(&peer),
                "ff02::1:2".parse().unwrap(),
                dhcp6::CLIENT_PORT,
                dhcp6::SERVER_PORT,
                &[11, 1, 2, 3],
            );
            let mut f = vec![0u8; ETH_HDR];
            f.extend_from_slice(&p);
            wire::write_eth(&mut f, [0x33, 0x33, 0, 1, 0, 2], peer, wire::ETHERTYPE_IPV6);
            f
        };
        // Dropping UDP from port 547 at OUTPUT, then router advertisements.
        let udp_547: fn(&[u8]) -> bool = |p| p[0] >> 4 == 6 && p[6] == 17 && p[40..42] == [2, 35];
        let icmp6: fn(&[u8]) -> bool = |p| p[0] >> 4 == 6 && p[6] == 58 && p[40] == 134;
        for (drop, what) in [(udp_547, "DHCPv6"), (icmp6, "RA")] {
            let mut n = net();
            let post = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let gate = Gate {
                drop,
                post: post.clone(),
            };
            let t = (now(), std::time::Instant::now());
            n.hooks.add(
                t,
                &[HookPoint::Output, HookPoint::Postrouting],
                Box::new(gate),
            );
            n.set_dhcpv6_server(now(), 0, &Dhcpv6Server::default())
                .unwrap();
            n.set_router_adverts(now(), 0, &RouterAdverts::new())
                .unwrap();
            n.handle_frame(now(), 0, &inform);
            n.servers_on_timer(now());
            // The peer answers the solicitation for its address: the DHCPv6 answer goes.
            let ll = wire::link_local(&peer);
            let na = wire::nd_message(136, 0x60, &ll, 2, &peer);
            let mut f = Vec::new();
            wire::ndp_frame(&mut f, MAC, peer, &ll, &n.links[0].link_local(), &na);
            n.handle_frame(now(), 0, &f);
            let out = sent(&mut n);
            let is = |f: &Vec<u8>, pick: fn(&[u8]) -> bool| pick(&f[ETH_HDR..]);
            let answers = out.iter().filter(|f| is(f, udp_547)).count();
            let adverts = out.iter().filter(|f| is(f, icmp6)).count();
            let want = if what == "RA" { (1, 0) } else { (0, 1) };
            assert_eq!(
                (answers, adverts),
                want,
                "{what} dropped, the other one sent"
            );
            assert_eq!(n.counters.get(crate::DropReason::Hook), 1, "{what}");
            assert_eq!(post.load(Ordering::SeqCst), 1, "{what}: one at POSTROUTING");
            assert!(n.remove_router_adverts(now(), 0));
            let last = sent(&mut n).len();
            assert_eq!(last, usize::from(what == "DHCPv6"), "{what}: the last RA");
        }
    }

    #[test]
    fn a_dhcp_server_needs_an_ipv4_address_on_its_link() {
        let mut n = Net::new();
        n.links.push(Link::new("vde0".into(), MAC));
        let s = DhcpServer::new("10.1.0.100".parse().unwrap(), "10.1.0.109".parse().unwrap());
        let e = n.set_dhcp_server(now(), 0, &s).unwrap_err().to_string();
        assert!(e.contains("vde0") && e.contains("no IPv4 address"), "{e}");
        let e = n.set_dhcp_server(now(), 3, &s).unwrap_err().to_string();
        assert!(e.contains('3'), "{e}");
    }

    #[test]
    fn router_adverts_go_out_with_the_links_prefix_and_answer_solicitations() {
        let mut n = net();
        n.set_dhcpv6_server(now(), 0, &Dhcpv6Server::default())
            .unwrap();
        n.set_router_adverts(
            now(),
            0,
            &RouterAdverts::new().rdnss("fd01::53".parse().unwrap()),
        )
        .unwrap();
        assert_eq!(n.servers_poll_at(), Some(Instant::from_millis(1000)));
        n.servers_on_timer(now());
        let out = sent(&mut n);
        assert_eq!(out.len(), 1, "the first advertisement");
        let ip = Ipv6Packet::new_checked(&out[0][ETH_HDR..]).unwrap();
        let ra = match wire::parse_nd(ip.payload()) {
            Some(wire::Nd::RouterAdvert(ra)) => ra,
            other => panic!("{other:?}"),
        };
        assert_eq!(ra.prefixes[0].0, "fd01::".parse::<Ipv6Addr>().unwrap());
        assert_eq!(ip.payload()[5] & 0x40, 0x40, "the O flag: DHCPv6 is there");
        // A solicitation (from another stack) brings the next one within half a second.
        let next = n.servers_poll_at().unwrap();
        let later = now() + smoltcp::time::Duration::from_secs(10);
        assert!(next > later, "the next unsolicited one is not due yet");
        let mut host = Net::new();
        host.links
            .push(Link::new("eth0".into(), [2, 0, 0, 0, 0, 9]));
        host.router_solicit(0);
        let mut rs = Vec::new();
        host.poll_transmit(0, &mut rs);
        n.handle_frame(later, 0, &rs[0]);
        assert_eq!(n.counters.get(crate::DropReason::BadNd), 0);
        assert!(
            n.has_work(),
            "the driver takes a turn to schedule the answer"
        );
        let at = n.servers_poll_at().unwrap();
        assert!(
            at <= later + smoltcp::time::Duration::from_millis(500),
            "{at}"
        );
        n.servers_on_timer(at);
        assert_eq!(sent(&mut n).len(), 1, "the answer");
        // A new address: its prefix is advertised too.
        n.links[0].addrs.push("fd02::1/64".parse().unwrap());
        n.readvertise_prefixes(later);
        n.servers_on_timer(later);
        let out = sent(&mut n);
        assert_eq!(out.len(), 1, "advertised at once");
        let ip = Ipv6Packet::new_checked(&out[0][ETH_HDR..]).unwrap();
        match wire::parse_nd(ip.payload()) {
            Some(wire::Nd::RouterAdvert(ra)) => assert_eq!(ra.prefixes.len(), 2),
            other => panic!("{other:?}"),
        }
        n.readvertise_prefixes(later);
        assert!(n.servers_poll_at().unwrap() > later, "unchanged: not again");
        assert!(n.remove_router_adverts(later, 0));
        assert_eq!(n.servers_poll_at(), None);
        let out = sent(&mut n);
        assert_eq!(out.len(), 1, "a last advertisement");
        let ip = Ipv6Packet::new_checked(&out[0][ETH_HDR..]).unwrap();
        match wire::parse_nd(ip.payload()) {
            Some(wire::Nd::RouterAdvert(ra)) => assert_eq!(ra.router_lifetime, 0),
            other => panic!("{other:?}"),
        }
        assert!(!n.remove_router_adverts(later, 0));
    }
}
