//! The gateway's sans-IO core: the guest side's layers 2 and 3. Frames in, typed decisions
//! out ([`Input`]); frames built for the guest from what the host side produced. It answers
//! ARP and neighbour solicitations for the gateway's own addresses, learns each guest
//! address's MAC from the frames it sends, checks lengths and checksums (everything malformed
//! is dropped and counted), and builds UDP, ICMP echo reply, TCP reset and ICMP unreachable
//! frames. No sockets and no clock: the engine ([`crate::engine`]) does the I/O.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, Icmpv4DstUnreachable, Icmpv4Packet, Icmpv4Repr, Icmpv6DstUnreachable,
    Icmpv6Packet, Icmpv6Repr, IpAddress, IpProtocol, IpRepr, Ipv4Packet, Ipv4Repr, Ipv6Packet,
    Ipv6Repr, NdiscNeighborFlags, NdiscRepr, RawHardwareAddress, TcpControl, TcpPacket, TcpRepr,
    TcpSeqNumber, UdpPacket, UdpRepr,
};

use filo_dhcp::{ra, server as dhcp4, v6 as dhcp6};

use crate::config::Config;

/// The gateway's Ethernet address (libslirp's, 52:55:0a:00:02:02).
pub const GATEWAY_MAC: EthernetAddress = EthernetAddress([0x52, 0x55, 0x0a, 0x00, 0x02, 0x02]);
const ETH: usize = 14;
const HOP_LIMIT: u8 = 64;
/// At most this many guest addresses are remembered (the oldest learned is forgotten).
const MAX_NEIGHBOURS: usize = 256;

/// What a frame from the guest asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Input<'a> {
    /// Send this frame back (an ARP reply, a neighbour advertisement, an echo reply from
    /// the gateway itself).
    Reply(Vec<u8>),
    /// A TCP segment: the IP packet (without Ethernet padding), the guest's and the remote
    /// end, and whether it is a connection attempt (SYN without ACK).
    Tcp {
        packet: &'a [u8],
        guest: SocketAddr,
        remote: SocketAddr,
        syn: bool,
        rst: bool,
    },
    Udp {
        guest: SocketAddr,
        remote: SocketAddr,
        payload: &'a [u8],
    },
    /// An ICMP echo request to an address beyond the gateway.
    Echo {
        guest: IpAddr,
        remote: IpAddr,
        ident: u16,
        seq: u16,
        data: &'a [u8],
    },
    /// Dropped; the reason was counted.
    Drop,
}

/// Dropped frames, by reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CoreCounters {
    pub malformed: u64,
    pub bad_checksum: u64,
    pub not_for_us: u64,
    pub unsupported: u64,
    pub no_neighbour: u64,
}

/// The guest-side state: configuration, learned guest MACs and the address servers
/// (filo-dhcp's DHCPv4 server, router advertiser and stateless DHCPv6 server).
pub struct Core {
    cfg: Config,
    neighbours: HashMap<IpAddr, EthernetAddress>,
    caps: ChecksumCapabilities,
    dhcp: Option<dhcp4::Server>,
    ra: Option<ra::Advertiser>,
    dhcp6: Option<dhcp6::Server>,
    /// The gateway's IPv6 link-local address (the advertisements' source).
    link_local: Ipv6Addr,
    random: u64,
    /// Set for the frame being handled: skip TCP and UDP checksum checks.
    l4_trusted: bool,
    pub counters: CoreCounters,
}

/// The time as filo-dhcp counts it: milliseconds from any fixed origin.
pub type Millis = u64;

fn dhcp_time(now: Millis) -> filo_dhcp::Instant {
    filo_dhcp::Instant::from_millis(now)
}

impl Core {
    /// A core for `cfg`; `seed` feeds the advertisement timers' jitter. Fails when the
    /// address servers refuse the configuration (e.g. a DHCP start that leaves no room).
    pub fn new(cfg: Config, now: Millis, seed: u64) -> Result<Core, String> {
        let mac = GATEWAY_MAC.0;
        let mut dhcp = None;
        if cfg.v4 {
            let p = u32::from(cfg.prefix);
            let host_mask = if p == 0 { u32::MAX } else { u32::MAX >> p };
            let broadcast = u32::from(cfg.gateway) | host_mask;
            let end = Ipv4Addr::from(broadcast - 1);
            let mut c = dhcp4::Config::new(cfg.gateway, cfg.prefix, cfg.dhcp_start, end);
            c.router = Some(cfg.gateway);
            c.dns = vec![cfg.dns];
            c.search = cfg.dns_search.clone();
            c.mtu = Some(cfg.mtu);
            c.hostname = cfg.hostname.clone();
            for own in [cfg.gateway, cfg.dns] {
                if (cfg.dhcp_start..=end).contains(&own) {
                    return Err(format!(
                        "option dhcp: the first lease {} must be above the gateway's and DNS addresses ({}, {})",
                        cfg.dhcp_start, cfg.gateway, cfg.dns
                    ));
                }
            }
            dhcp = Some(dhcp4::Server::new(c).map_err(|e| e.to_string())?);
        }
        let (mut ra_adv, mut dhcp6) = (None, None);
        if cfg.v6 {
            let mut c = ra::Config::new(mac);
            let p = u32::from(cfg.prefix6);
            let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
            let net = Ipv6Addr::from(u128::from(cfg.gateway6) & mask);
            c.prefixes = vec![ra::Prefix::new(net, cfg.prefix6)];
            c.rdnss = vec![cfg.dns6];
            c.dnssl = cfg.dns_search.clone();
            c.mtu = Some(u32::from(cfg.mtu));
            c.other = true;
            ra_adv = Some(ra::Advertiser::new(c, dhcp_time(now)).map_err(|e| e.to_string())?);
            let mut c = dhcp6::Config::new(mac);
            c.dns = vec![cfg.dns6];
            c.search = cfg.dns_search.clone();
            dhcp6 = Some(dhcp6::Server::new(c).map_err(|e| e.to_string())?);
        }
        Ok(Core {
            cfg,
            neighbours: HashMap::new(),
            caps: ChecksumCapabilities::default(),
            dhcp,
            ra: ra_adv,
            dhcp6,
            link_local: ra::link_local(&mac),
            random: seed | 1,
            l4_trusted: false,
            counters: CoreCounters::default(),
        })
    }

    fn random(&mut self) -> u32 {
        // xorshift64: jitter only.
        let mut x = self.random;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.random = x;
        (x >> 32) as u32
    }

    /// When [`Core::poll`] next has something to send (router advertisements).
    pub fn poll_at(&self) -> Option<Millis> {
        self.ra.as_ref().map(|r| r.poll_at().total_millis())
    }

    /// Frames due at `now` (an unsolicited router advertisement).
    pub fn poll(&mut self, now: Millis) -> Option<Vec<u8>> {
        let random = self.random();
        let packet = self.ra.as_mut()?.poll(dhcp_time(now), random)?;
        ra::ethernet_frame(GATEWAY_MAC.0, None, &packet)
    }

    /// The current DHCP leases as text lines.
    pub fn leases(&self, now: Millis) -> Vec<String> {
        self.dhcp
            .as_ref()
            .map(|d| {
                d.leases(dhcp_time(now))
                    .iter()
                    .map(|l| {
                        format!(
                            "{} {} {} expires in {} s",
                            l.addr,
                            dhcp4::mac_string(&l.mac),
                            l.hostname.as_deref().unwrap_or("*"),
                            l.expires.total_millis().saturating_sub(now) / 1000
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn is_own6(&self, a: Ipv6Addr) -> bool {
        self.cfg.v6 && (a == self.link_local || self.cfg.is_own(IpAddr::V6(a)))
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The MAC learned for a guest address.
    pub fn neighbour(&self, ip: IpAddr) -> Option<EthernetAddress> {
        self.neighbours.get(&ip).copied()
    }

    /// Remembers that `ip` is at `mac` (a unicast guest address in one of our networks).
    pub fn learn(&mut self, ip: IpAddr, mac: EthernetAddress) {
        if !mac.is_unicast() || self.cfg.is_own(ip) || !self.on_link(ip) {
            return;
        }
        if self.neighbours.len() >= MAX_NEIGHBOURS && !self.neighbours.contains_key(&ip) {
            if let Some(k) = self.neighbours.keys().next().copied() {
                self.neighbours.remove(&k);
            }
        }
        self.neighbours.insert(ip, mac);
    }

    /// Whether `ip` is in the guest network (v4 prefix, v6 prefix or link-local).
    pub fn on_link(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => {
                let p = u32::from(self.cfg.prefix);
                let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
                u32::from(a) & mask == u32::from(self.cfg.gateway) & mask && !a.is_broadcast()
            }
            IpAddr::V6(a) => {
                let p = u32::from(self.cfg.prefix6);
                let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
                u128::from(a) & mask == u128::from(self.cfg.gateway6) & mask
                    || a.segments()[0] & 0xffc0 == 0xfe80
            }
        }
    }

    fn drop(&mut self, f: impl FnOnce(&mut CoreCounters)) -> Input<'static> {
        f(&mut self.counters);
        Input::Drop
    }

    /// Classifies one frame from the guest.
    pub fn handle_frame<'a>(&mut self, now: Millis, frame: &'a [u8]) -> Input<'a> {
        self.handle_frame_with(now, frame, false)
    }

    /// [`Core::handle_frame`] for a frame whose TCP and UDP checksums need no check
    /// (`l4_trusted`): a local kernel left them for the receiver to fill in (virtio-net
    /// `NEEDS_CSUM`) or checked them itself (`DATA_VALID`).
    pub fn handle_frame_with<'a>(
        &mut self,
        now: Millis,
        frame: &'a [u8],
        l4_trusted: bool,
    ) -> Input<'a> {
        self.l4_trusted = l4_trusted;
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return self.drop(|c| c.malformed += 1);
        };
        let dst = eth.dst_addr();
        if !(dst == GATEWAY_MAC || dst.is_broadcast() || dst.is_multicast()) {
            return self.drop(|c| c.not_for_us += 1);
        }
        let src_mac = eth.src_addr();
        let payload = &frame[ETH..];
        match eth.ethertype() {
            EthernetProtocol::Arp if self.cfg.v4 => self.arp(src_mac, payload),
            EthernetProtocol::Ipv4 if self.cfg.v4 => self.ipv4(now, src_mac, payload),
            EthernetProtocol::Ipv6 if self.cfg.v6 => self.ipv6(now, src_mac, payload),
            _ => self.drop(|c| c.unsupported += 1),
        }
    }

    fn arp<'a>(&mut self, src_mac: EthernetAddress, payload: &[u8]) -> Input<'a> {
        let Ok(repr) = ArpPacket::new_checked(payload).and_then(|p| ArpRepr::parse(&p)) else {
            return self.drop(|c| c.malformed += 1);
        };
        let ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr,
            source_protocol_addr,
            target_protocol_addr,
            ..
        } = repr
        else {
            return self.drop(|c| c.unsupported += 1);
        };
        if source_hardware_addr == src_mac && !source_protocol_addr.is_unspecified() {
            self.learn(IpAddr::V4(source_protocol_addr), src_mac);
        }
        if operation != ArpOperation::Request || !self.cfg.is_own(IpAddr::V4(target_protocol_addr))
        {
            return self.drop(|c| c.not_for_us += 1);
        }
        let reply = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr: GATEWAY_MAC,
            source_protocol_addr: target_protocol_addr,
            target_hardware_addr: source_hardware_addr,
            target_protocol_addr: source_protocol_addr,
        };
        let mut out = vec![0u8; ETH + reply.buffer_len()];
        emit_eth(&mut out, source_hardware_addr, EthernetProtocol::Arp);
        reply.emit(&mut ArpPacket::new_unchecked(&mut out[ETH..]));
        Input::Reply(out)
    }

    fn ipv4<'a>(&mut self, now: Millis, src_mac: EthernetAddress, payload: &'a [u8]) -> Input<'a> {
        let Ok(ip) = Ipv4Packet::new_checked(payload) else {
            return self.drop(|c| c.malformed += 1);
        };
        if !ip.verify_checksum() {
            return self.drop(|c| c.bad_checksum += 1);
        }
        if ip.more_frags() || ip.frag_offset() != 0 {
            return self.drop(|c| c.unsupported += 1);
        }
        let total = usize::from(ip.total_len());
        let packet = &payload[..total];
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let l4 = &packet[ip.header_len().into()..];
        if !src.is_unspecified() {
            self.learn(IpAddr::V4(src), src_mac);
        }
        let (src, dst) = (IpAddr::V4(src), IpAddr::V4(dst));
        match ip.next_header() {
            IpProtocol::Tcp => self.tcp(packet, l4, src, dst),
            IpProtocol::Udp => self.udp(now, src_mac, l4, src, dst),
            IpProtocol::Icmp => {
                let Ok(icmp) = Icmpv4Packet::new_checked(l4) else {
                    return self.drop(|c| c.malformed += 1);
                };
                match Icmpv4Repr::parse(&icmp, &self.caps) {
                    Ok(Icmpv4Repr::EchoRequest {
                        ident,
                        seq_no,
                        data,
                    }) => self.echo(src, dst, ident, seq_no, data),
                    Ok(_) => self.drop(|c| c.unsupported += 1),
                    Err(_) => self.drop(|c| c.bad_checksum += 1),
                }
            }
            _ => self.drop(|c| c.unsupported += 1),
        }
    }

    fn ipv6<'a>(&mut self, now: Millis, src_mac: EthernetAddress, payload: &'a [u8]) -> Input<'a> {
        let Ok(ip) = Ipv6Packet::new_checked(payload) else {
            return self.drop(|c| c.malformed += 1);
        };
        let total = ip.header_len() + usize::from(ip.payload_len());
        let packet = &payload[..total];
        let (s6, d6) = (ip.src_addr(), ip.dst_addr());
        let l4 = &packet[ip.header_len()..];
        let (src, dst) = (IpAddr::V6(s6), IpAddr::V6(d6));
        if !s6.is_unspecified() {
            self.learn(src, src_mac);
        }
        match ip.next_header() {
            IpProtocol::Tcp => self.tcp(packet, l4, src, dst),
            IpProtocol::Udp => self.udp(now, src_mac, l4, src, dst),
            IpProtocol::Icmpv6 => {
                let Ok(icmp) = Icmpv6Packet::new_checked(l4) else {
                    return self.drop(|c| c.malformed += 1);
                };
                match Icmpv6Repr::parse(&s6, &d6, &icmp, &self.caps) {
                    Ok(Icmpv6Repr::EchoRequest {
                        ident,
                        seq_no,
                        data,
                    }) => self.echo(src, dst, ident, seq_no, data),
                    Ok(Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
                        target_addr,
                        lladdr,
                    })) => self.neighbour_solicit(src_mac, s6, target_addr, lladdr),
                    Ok(Icmpv6Repr::Ndisc(NdiscRepr::RouterSolicit { .. })) => {
                        let random = self.random();
                        let hop = ip.hop_limit();
                        match self
                            .ra
                            .as_mut()
                            .map(|r| r.handle_icmpv6(dhcp_time(now), s6, d6, hop, l4, random))
                        {
                            Some(Ok(_)) => Input::Drop,
                            _ => self.drop(|c| c.malformed += 1),
                        }
                    }
                    Ok(_) => self.drop(|c| c.unsupported += 1),
                    Err(_) => self.drop(|c| c.bad_checksum += 1),
                }
            }
            _ => self.drop(|c| c.unsupported += 1),
        }
    }

    fn neighbour_solicit<'a>(
        &mut self,
        src_mac: EthernetAddress,
        src: Ipv6Addr,
        target: Ipv6Addr,
        lladdr: Option<RawHardwareAddress>,
    ) -> Input<'a> {
        if !self.is_own6(target) {
            return self.drop(|c| c.not_for_us += 1);
        }
        let mac = lladdr
            .filter(|l| l.len() == 6)
            .map(|l| EthernetAddress::from_bytes(l.as_bytes()))
            .unwrap_or(src_mac);
        // Duplicate address detection (from ::) is answered to all nodes.
        let (dst, dst_mac, flags) = if src.is_unspecified() {
            (
                Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
                EthernetAddress([0x33, 0x33, 0, 0, 0, 1]),
                NdiscNeighborFlags::ROUTER | NdiscNeighborFlags::OVERRIDE,
            )
        } else {
            (
                src,
                mac,
                NdiscNeighborFlags::ROUTER
                    | NdiscNeighborFlags::SOLICITED
                    | NdiscNeighborFlags::OVERRIDE,
            )
        };
        let repr = Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
            flags,
            target_addr: target,
            lladdr: Some(GATEWAY_MAC.into()),
        });
        Input::Reply(self.icmpv6_frame(dst_mac, target, dst, 255, &repr))
    }

    fn tcp<'a>(&mut self, packet: &'a [u8], l4: &'a [u8], src: IpAddr, dst: IpAddr) -> Input<'a> {
        let Ok(tcp) = TcpPacket::new_checked(l4) else {
            return self.drop(|c| c.malformed += 1);
        };
        if !self.l4_trusted && !tcp.verify_checksum(&src.into(), &dst.into()) {
            return self.drop(|c| c.bad_checksum += 1);
        }
        if !self.on_link(src) || tcp.src_port() == 0 || tcp.dst_port() == 0 {
            return self.drop(|c| c.not_for_us += 1);
        }
        Input::Tcp {
            packet,
            guest: SocketAddr::new(src, tcp.src_port()),
            remote: SocketAddr::new(dst, tcp.dst_port()),
            syn: tcp.syn() && !tcp.ack(),
            rst: tcp.rst(),
        }
    }

    fn udp<'a>(
        &mut self,
        now: Millis,
        src_mac: EthernetAddress,
        l4: &'a [u8],
        src: IpAddr,
        dst: IpAddr,
    ) -> Input<'a> {
        let Ok(udp) = UdpPacket::new_checked(l4) else {
            return self.drop(|c| c.malformed += 1);
        };
        let caps = if self.l4_trusted {
            ChecksumCapabilities::ignored()
        } else {
            self.caps.clone()
        };
        if UdpRepr::parse(&udp, &src.into(), &dst.into(), &caps).is_err() {
            return self.drop(|c| c.bad_checksum += 1);
        }
        let len = usize::from(udp.len()).min(l4.len());
        let payload = &l4[8..len];
        match (dst, udp.dst_port()) {
            (IpAddr::V4(d), filo_dhcp::SERVER_PORT)
                if d.is_broadcast() || d == self.cfg.gateway =>
            {
                let Some(server) = self.dhcp.as_mut() else {
                    return self.drop(|c| c.unsupported += 1);
                };
                return match server.handle(dhcp_time(now), payload) {
                    Ok(Some(reply)) => match reply.ethernet_frame(GATEWAY_MAC.0) {
                        Some(f) => Input::Reply(f),
                        None => self.drop(|c| c.unsupported += 1),
                    },
                    Ok(None) => Input::Drop,
                    Err(dhcp4::Error::PoolExhausted(_)) => {
                        tracing::warn!("slirp: DHCP: no address left to hand out");
                        self.drop(|c| c.unsupported += 1)
                    }
                    Err(_) => self.drop(|c| c.malformed += 1),
                };
            }
            (IpAddr::V6(d), dhcp6::SERVER_PORT) if d == dhcp6::ALL_SERVERS || self.is_own6(d) => {
                let IpAddr::V6(s6) = src else {
                    return Input::Drop;
                };
                let Some(server) = self.dhcp6.as_ref() else {
                    return self.drop(|c| c.unsupported += 1);
                };
                return match server.handle(payload) {
                    Ok(Some(reply)) => {
                        let packet = dhcp6::udp6(
                            self.link_local,
                            s6,
                            dhcp6::SERVER_PORT,
                            udp.src_port(),
                            &reply.payload,
                        );
                        match ra::ethernet_frame(GATEWAY_MAC.0, Some(src_mac.0), &packet) {
                            Some(f) => Input::Reply(f),
                            None => Input::Drop,
                        }
                    }
                    Ok(None) => Input::Drop,
                    Err(_) => self.drop(|c| c.malformed += 1),
                };
            }
            _ => {}
        }
        Input::Udp {
            guest: SocketAddr::new(src, udp.src_port()),
            remote: SocketAddr::new(dst, udp.dst_port()),
            payload,
        }
    }

    fn echo<'a>(
        &mut self,
        src: IpAddr,
        dst: IpAddr,
        ident: u16,
        seq: u16,
        data: &'a [u8],
    ) -> Input<'a> {
        if !self.on_link(src) {
            return self.drop(|c| c.not_for_us += 1);
        }
        let own = match dst {
            IpAddr::V6(d) => self.is_own6(d),
            v4 => self.cfg.is_own(v4),
        };
        if own {
            return match self.echo_reply(dst, src, ident, seq, data) {
                Some(f) => Input::Reply(f),
                None => self.drop(|c| c.no_neighbour += 1),
            };
        }
        Input::Echo {
            guest: src,
            remote: dst,
            ident,
            seq,
            data,
        }
    }

    fn dst_mac(&mut self, ip: IpAddr) -> Option<EthernetAddress> {
        let mac = self.neighbours.get(&ip).copied();
        if mac.is_none() {
            self.counters.no_neighbour += 1;
        }
        mac
    }

    /// A request for a guest address's MAC: ARP (IPv4) or a neighbour solicitation (IPv6).
    pub fn solicit(&mut self, ip: IpAddr) -> Option<Vec<u8>> {
        match ip {
            IpAddr::V4(target) => {
                if !self.cfg.v4 || !self.on_link(ip) {
                    return None;
                }
                let repr = ArpRepr::EthernetIpv4 {
                    operation: ArpOperation::Request,
                    source_hardware_addr: GATEWAY_MAC,
                    source_protocol_addr: self.cfg.gateway,
                    target_hardware_addr: EthernetAddress([0; 6]),
                    target_protocol_addr: target,
                };
                let mut out = vec![0u8; ETH + repr.buffer_len()];
                emit_eth(&mut out, EthernetAddress::BROADCAST, EthernetProtocol::Arp);
                repr.emit(&mut ArpPacket::new_unchecked(&mut out[ETH..]));
                Some(out)
            }
            IpAddr::V6(target) => {
                if !self.cfg.v6 || !self.on_link(ip) {
                    return None;
                }
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
                let mac = EthernetAddress([0x33, 0x33, 0xff, t[13], t[14], t[15]]);
                let repr = Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
                    target_addr: target,
                    lladdr: Some(GATEWAY_MAC.into()),
                });
                let src = self.cfg.gateway6;
                Some(self.icmpv6_frame(mac, src, group, 255, &repr))
            }
        }
    }

    /// Frames an IP packet (from smoltcp) for the guest it is addressed to, in place: the
    /// packet is `frame[14..]` and its Ethernet header is written into `frame[..14]`.
    pub fn frame_ip(&mut self, frame: &mut [u8]) -> bool {
        let Some(packet) = frame.get(ETH..) else {
            return false;
        };
        let dst = match packet.first().map(|b| b >> 4) {
            Some(4) => match Ipv4Packet::new_checked(packet) {
                Ok(p) => IpAddr::V4(p.dst_addr()),
                Err(_) => return false,
            },
            Some(6) => match Ipv6Packet::new_checked(packet) {
                Ok(p) => IpAddr::V6(p.dst_addr()),
                Err(_) => return false,
            },
            _ => return false,
        };
        let Some(mac) = self.dst_mac(dst) else {
            return false;
        };
        emit_eth(
            frame,
            mac,
            if dst.is_ipv6() {
                EthernetProtocol::Ipv6
            } else {
                EthernetProtocol::Ipv4
            },
        );
        true
    }

    /// Builds an IP frame to `dst` from `src` carrying `len` bytes of `proto` that `fill`
    /// writes (with its checksum).
    fn ip_frame(
        &mut self,
        mac: EthernetAddress,
        (src, dst): (IpAddr, IpAddr),
        proto: IpProtocol,
        hop_limit: u8,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Option<Vec<u8>> {
        if src.is_ipv4() != dst.is_ipv4() {
            return None;
        }
        let ip = IpRepr::new(src.into(), dst.into(), proto, len, hop_limit);
        let ethertype = if src.is_ipv4() {
            EthernetProtocol::Ipv4
        } else {
            EthernetProtocol::Ipv6
        };
        let hlen = ip.header_len();
        let mut out = vec![0u8; ETH + hlen + len];
        emit_eth(&mut out, mac, ethertype);
        ip.emit(&mut out[ETH..ETH + hlen], &self.caps);
        fill(&mut out[ETH + hlen..]);
        Some(out)
    }

    fn icmpv6_frame(
        &mut self,
        mac: EthernetAddress,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        hop_limit: u8,
        repr: &Icmpv6Repr,
    ) -> Vec<u8> {
        let caps = self.caps.clone();
        self.ip_frame(
            mac,
            (IpAddr::V6(src), IpAddr::V6(dst)),
            IpProtocol::Icmpv6,
            hop_limit,
            repr.buffer_len(),
            |b| repr.emit(&src, &dst, &mut Icmpv6Packet::new_unchecked(b), &caps),
        )
        .unwrap_or_default()
    }

    /// A UDP datagram from `from` to the guest at `to`.
    pub fn udp_frame(
        &mut self,
        from: SocketAddr,
        to: SocketAddr,
        payload: &[u8],
    ) -> Option<Vec<u8>> {
        let mac = self.dst_mac(to.ip())?;
        self.udp_frame_to(mac, from, to, payload)
    }

    /// A UDP datagram to an explicit MAC (DHCP replies to a guest without an address yet).
    pub fn udp_frame_to(
        &mut self,
        mac: EthernetAddress,
        from: SocketAddr,
        to: SocketAddr,
        payload: &[u8],
    ) -> Option<Vec<u8>> {
        let repr = UdpRepr {
            src_port: from.port(),
            dst_port: to.port(),
        };
        let caps = self.caps.clone();
        let (s, d): (IpAddress, IpAddress) = (from.ip().into(), to.ip().into());
        self.ip_frame(
            mac,
            (from.ip(), to.ip()),
            IpProtocol::Udp,
            HOP_LIMIT,
            8 + payload.len(),
            |b| {
                repr.emit(
                    &mut UdpPacket::new_unchecked(b),
                    &s,
                    &d,
                    payload.len(),
                    |p| p.copy_from_slice(payload),
                    &caps,
                )
            },
        )
    }

    /// An echo reply from `from` to the guest at `to`.
    pub fn echo_reply(
        &mut self,
        from: IpAddr,
        to: IpAddr,
        ident: u16,
        seq_no: u16,
        data: &[u8],
    ) -> Option<Vec<u8>> {
        let mac = self.dst_mac(to)?;
        let caps = self.caps.clone();
        match (from, to) {
            (IpAddr::V4(_), IpAddr::V4(_)) => {
                let repr = Icmpv4Repr::EchoReply {
                    ident,
                    seq_no,
                    data,
                };
                self.ip_frame(
                    mac,
                    (from, to),
                    IpProtocol::Icmp,
                    HOP_LIMIT,
                    repr.buffer_len(),
                    |b| repr.emit(&mut Icmpv4Packet::new_unchecked(b), &caps),
                )
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let repr = Icmpv6Repr::EchoReply {
                    ident,
                    seq_no,
                    data,
                };
                Some(self.icmpv6_frame(mac, s, d, HOP_LIMIT, &repr))
            }
            _ => None,
        }
    }

    /// A reset answering the guest's TCP segment `packet` (an IP packet).
    pub fn tcp_reset(&mut self, packet: &[u8]) -> Option<Vec<u8>> {
        let (src, dst, l4) = split_ip(packet)?;
        let tcp = TcpPacket::new_checked(l4).ok()?;
        let mac = self.dst_mac(src)?;
        let seg_len = tcp.payload().len() as i32 + i32::from(tcp.syn()) + i32::from(tcp.fin());
        let (seq, ack) = if tcp.ack() {
            (tcp.ack_number(), None)
        } else {
            (TcpSeqNumber(0), Some(tcp.seq_number() + seg_len as usize))
        };
        let repr = TcpRepr {
            src_port: tcp.dst_port(),
            dst_port: tcp.src_port(),
            control: TcpControl::Rst,
            seq_number: seq,
            ack_number: ack,
            window_len: 0,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &[],
        };
        let caps = self.caps.clone();
        let (s, d): (IpAddress, IpAddress) = (dst.into(), src.into());
        self.ip_frame(
            mac,
            (dst, src),
            IpProtocol::Tcp,
            HOP_LIMIT,
            repr.buffer_len(),
            |b| repr.emit(&mut TcpPacket::new_unchecked(b), &s, &d, &caps),
        )
    }

    /// An ICMP destination unreachable (host, or port when `port`) about the guest's IP
    /// packet `packet`, from the address it was sent to.
    pub fn unreachable(&mut self, packet: &[u8], port: bool) -> Option<Vec<u8>> {
        let (src, dst, _) = split_ip(packet)?;
        let mac = self.dst_mac(src)?;
        let caps = self.caps.clone();
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let orig = Ipv4Packet::new_checked(packet).ok()?;
                let header = Ipv4Repr::parse(&orig, &ChecksumCapabilities::ignored()).ok()?;
                let data = &orig.payload()[..orig.payload().len().min(8)];
                let repr = Icmpv4Repr::DstUnreachable {
                    reason: if port {
                        Icmpv4DstUnreachable::PortUnreachable
                    } else {
                        Icmpv4DstUnreachable::HostUnreachable
                    },
                    header,
                    data,
                };
                let _ = (s, d);
                self.ip_frame(
                    mac,
                    (dst, src),
                    IpProtocol::Icmp,
                    HOP_LIMIT,
                    repr.buffer_len(),
                    |b| repr.emit(&mut Icmpv4Packet::new_unchecked(b), &caps),
                )
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let orig = Ipv6Packet::new_checked(packet).ok()?;
                let header = Ipv6Repr::parse(&orig).ok()?;
                // The whole original packet fits in the minimum MTU, cut to 1232 bytes.
                let data = &orig.payload()[..orig.payload().len().min(1232 - 48)];
                let repr = Icmpv6Repr::DstUnreachable {
                    reason: if port {
                        Icmpv6DstUnreachable::PortUnreachable
                    } else {
                        Icmpv6DstUnreachable::AddrUnreachable
                    },
                    header,
                    data,
                };
                Some(self.icmpv6_frame(mac, d, s, HOP_LIMIT, &repr))
            }
            _ => None,
        }
    }
}

fn emit_eth(out: &mut [u8], dst: EthernetAddress, ethertype: EthernetProtocol) {
    EthernetRepr {
        src_addr: GATEWAY_MAC,
        dst_addr: dst,
        ethertype,
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut out[..ETH]));
}

/// Source, destination and layer-4 bytes of an IP packet.
pub fn split_ip(packet: &[u8]) -> Option<(IpAddr, IpAddr, &[u8])> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let p = Ipv4Packet::new_checked(packet).ok()?;
            let h = usize::from(p.header_len());
            Some((p.src_addr().into(), p.dst_addr().into(), &packet[h..]))
        }
        Some(6) => {
            let p = Ipv6Packet::new_checked(packet).ok()?;
            Some((p.src_addr().into(), p.dst_addr().into(), &packet[40..]))
        }
        _ => None,
    }
}

/// The IPv4 or IPv6 address of a socket address, with IPv4-mapped IPv6 turned back into IPv4.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => addr,
        },
        v4 => v4,
    }
}

/// Whether the guest may not reach `ip` directly: the host's loopback and unspecified
/// addresses.
pub fn is_host_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_loopback() || a.is_unspecified() || a == Ipv4Addr::BROADCAST,
        IpAddr::V6(a) => {
            a.is_loopback()
                || a.is_unspecified()
                || a.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests;
