//! `vxvde://` and `vxlan://`: Ethernet over UDP multicast with the RFC 7348 header, learning
//! each source MAC's sender address so unicast frames go straight to the right host.
//!
//! - vxvde (vdeplug4's design): a multicast socket on `GROUP:14789` shared by every process on
//!   the host (SO_REUSEADDR), and a unicast socket on an ephemeral port used for all sends, so
//!   many processes per host can be nodes. Own multicast copies are ignored; on close a
//!   header-only "goodbye" tells peers to forget us.
//! - vxlan (Linux kernel compatible): one socket on `0.0.0.0:4789`, sends from that port to the
//!   group or to the learned IP at port 4789. A non-multicast address names a single peer.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};

use super::normalize;
use crate::plug::Transport;
use crate::sys;
use crate::wire::{partial, vxlan};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Vxvde,
    Vxlan,
}

#[derive(Clone, Debug)]
pub struct VxConfig {
    pub flavor: Flavor,
    pub group: IpAddr,
    pub port: u16,
    pub vni: u32,
    pub ttl: u32,
    pub ifname: Option<String>,
    pub rcvbuf: Option<usize>,
    pub bind: Option<IpAddr>,
    pub expire: Duration,
    pub table_size: usize,
}

pub const VXVDE_GROUP_V4: &str = "239.0.0.1";
pub const VXVDE_GROUP_V6: &str = "ff05:56de::1";
pub const VXVDE_PORT: u16 = 14789;
pub const VXLAN_PORT: u16 = 4789;

impl VxConfig {
    pub fn new(flavor: Flavor, group: IpAddr) -> Self {
        VxConfig {
            flavor,
            group,
            port: match flavor {
                Flavor::Vxvde => VXVDE_PORT,
                Flavor::Vxlan => VXLAN_PORT,
            },
            vni: 1,
            ttl: 1,
            ifname: None,
            rcvbuf: None,
            bind: None,
            expire: Duration::from_secs(128),
            table_size: 1024,
        }
    }
}

struct Learned {
    addr: SocketAddr,
    seen: Instant,
}

pub struct Vx {
    cfg: VxConfig,
    /// Sends (and, for vxlan, receives).
    unicast: UdpSocket,
    /// vxvde's shared multicast listener.
    multicast: Option<UdpSocket>,
    /// Readable when either socket is (vxvde); absent for vxlan.
    epoll: Option<OwnedFd>,
    group_addr: SocketAddr,
    /// What our own multicast copies look like (vxvde): source address and port.
    own_source: Option<SocketAddr>,
    table: HashMap<[u8; 6], Learned>,
    rx: Vec<u8>,
    tx: Vec<u8>,
    header: [u8; vxlan::HEADER_LEN],
    /// What [`Transport::mtu`] tells: see [`inner_mtu`].
    mtu: usize,
}

/// The inner MTU: the largest IP packet whose frame, encapsulated, fits the underlay's path
/// MTU toward the group or peer (that of the `if=` interface, or the route's) without IP
/// fragmentation. As Linux sizes a vxlan device from its lower device: the underlay MTU less
/// 50 bytes over IPv4 (inner Ethernet 14, VXLAN 8, UDP 8, IPv4 20) or 70 over IPv6 (IPv6 40).
/// An unknown underlay counts as 1500. Never above 1500: a jumbo underlay does not make every
/// tap and stack on the segment send jumbo frames (mtu= does).
pub fn inner_mtu(underlay: Option<u32>, v6: bool) -> usize {
    let overhead = 14 + vxlan::HEADER_LEN + 8 + if v6 { 40 } else { 20 };
    let underlay = underlay.map_or(1500, |m| m as usize);
    underlay.saturating_sub(overhead).clamp(68, 1500)
}

/// What failed, for the caller to put after the VNL.
fn ctx(what: &str) -> impl Fn(io::Error) -> io::Error {
    let what = what.to_string();
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn new_socket(cfg: &VxConfig, domain: Domain) -> io::Result<Socket> {
    let sock =
        Socket::new(domain, Type::DGRAM.cloexec(), Some(Protocol::UDP)).map_err(ctx("socket"))?;
    if let Some(ifname) = &cfg.ifname {
        sock.bind_device(Some(ifname.as_bytes()))
            .map_err(ctx(&format!("cannot bind to interface {ifname}")))?;
    }
    if let Some(size) = cfg.rcvbuf {
        sock.set_recv_buffer_size(size).map_err(ctx("rcvbuf"))?;
    }
    if domain == Domain::IPV6 {
        sock.set_only_v6(true).map_err(ctx("IPV6_V6ONLY"))?;
    }
    Ok(sock)
}

fn join(cfg: &VxConfig, sock: &Socket) -> io::Result<()> {
    let ifindex = match &cfg.ifname {
        Some(name) => sys::interface_index(name)?,
        None => 0,
    };
    match cfg.group {
        IpAddr::V4(g) => sock.join_multicast_v4_n(&g, &InterfaceIndexOrAddress::Index(ifindex)),
        IpAddr::V6(g) => sock.join_multicast_v6(&g, ifindex),
    }
    .map_err(ctx("cannot join the multicast group"))
}

fn set_ttl(cfg: &VxConfig, sock: &Socket, multicast_loop: bool) -> io::Result<()> {
    let ifindex = match &cfg.ifname {
        Some(name) => Some(sys::interface_index(name)?),
        None => None,
    };
    match cfg.group {
        IpAddr::V4(_) => {
            sock.set_ttl_v4(cfg.ttl)?;
            sock.set_multicast_ttl_v4(cfg.ttl)?;
            sock.set_multicast_loop_v4(multicast_loop)?;
        }
        IpAddr::V6(_) => {
            sock.set_unicast_hops_v6(cfg.ttl)?;
            sock.set_multicast_hops_v6(cfg.ttl)?;
            sock.set_multicast_loop_v6(multicast_loop)?;
            if let Some(idx) = ifindex {
                sock.set_multicast_if_v6(idx)?;
            }
        }
    }
    Ok(())
}

impl Vx {
    pub fn open(cfg: VxConfig) -> io::Result<Vx> {
        if cfg.vni > vxlan::MAX_VNI {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "vni={} is out of range: expected 0 to {}",
                    cfg.vni,
                    vxlan::MAX_VNI
                ),
            ));
        }
        let domain = Domain::for_address(SocketAddr::new(cfg.group, 0));
        let group_addr = SocketAddr::new(cfg.group, cfg.port);
        let any = |port| match cfg.group {
            IpAddr::V4(_) => SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), port),
            IpAddr::V6(_) => SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), port),
        };
        let multicast = cfg.group.is_multicast();
        let (unicast, mcast_sock) = match cfg.flavor {
            Flavor::Vxvde => {
                if !multicast {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("vxvde needs a multicast group address (default {VXVDE_GROUP_V4} or {VXVDE_GROUP_V6})"),
                    ));
                }
                let m = new_socket(&cfg, domain)?;
                m.set_reuse_address(true).map_err(ctx("SO_REUSEADDR"))?;
                m.bind(&SockAddr::from(group_addr))
                    .map_err(ctx("cannot bind the multicast socket"))?;
                join(&cfg, &m)?;
                let u = new_socket(&cfg, domain)?;
                let local = cfg
                    .bind
                    .map(|ip| SocketAddr::new(ip, 0))
                    .unwrap_or_else(|| any(0));
                u.bind(&SockAddr::from(local))
                    .map_err(ctx("cannot bind the unicast socket"))?;
                set_ttl(&cfg, &u, true).map_err(ctx("socket options"))?;
                (u, Some(m))
            }
            Flavor::Vxlan => {
                let u = new_socket(&cfg, domain)?;
                u.set_reuse_address(true).map_err(ctx("SO_REUSEADDR"))?;
                let local = SocketAddr::new(cfg.bind.unwrap_or(any(0).ip()), cfg.port);
                u.bind(&SockAddr::from(local)).map_err(ctx(&format!(
                    "cannot bind UDP port {} (is a kernel vxlan device or another plug using it?)",
                    cfg.port
                )))?;
                if multicast {
                    join(&cfg, &u)?;
                }
                set_ttl(&cfg, &u, false).map_err(ctx("socket options"))?;
                (u, None)
            }
        };
        let unicast = UdpSocket::from(unicast);
        unicast.set_nonblocking(true)?;
        let multicast_sock = mcast_sock.map(UdpSocket::from);
        let mut epoll = None;
        let mut own_source = None;
        // A scratch socket connected toward the group tells what the kernel picks for it: the
        // path MTU and the source address.
        let scratch = new_socket(&cfg, domain)?;
        let routed = scratch.connect(&SockAddr::from(group_addr)).is_ok();
        let underlay_mtu = routed
            .then(|| sys::path_mtu(scratch.as_raw_fd(), domain == Domain::IPV6).ok())
            .flatten();
        if let Some(m) = &multicast_sock {
            m.set_nonblocking(true)?;
            epoll = Some(sys::epoll_of(&[unicast.as_raw_fd(), m.as_raw_fd()])?);
            // The source address the kernel picks toward the group is what our looped-back
            // copies carry.
            if routed {
                if let Some(ip) = scratch
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_socket())
                    .map(|a| a.ip())
                {
                    let port = unicast.local_addr()?.port();
                    own_source = Some(SocketAddr::new(ip, port));
                }
            }
        }
        let header = vxlan::header(cfg.vni);
        Ok(Vx {
            mtu: inner_mtu(underlay_mtu, cfg.group.is_ipv6()),
            cfg,
            unicast,
            multicast: multicast_sock,
            epoll,
            group_addr,
            own_source,
            table: HashMap::new(),
            rx: vec![0u8; 65536],
            tx: Vec::with_capacity(crate::plug::FRAME_BUF + vxlan::HEADER_LEN),
            header,
        })
    }

    fn is_own(&self, from: SocketAddr) -> bool {
        match self.own_source {
            Some(own) => {
                own.port() == from.port() && (own.ip() == from.ip() || from.ip().is_loopback())
            }
            None => false,
        }
    }

    fn learn(&mut self, src_mac: [u8; 6], from: SocketAddr, now: Instant) {
        if src_mac[0] & 1 != 0 {
            return;
        }
        if self.table.len() >= self.cfg.table_size && !self.table.contains_key(&src_mac) {
            let expire = self.cfg.expire;
            self.table
                .retain(|_, l| now.duration_since(l.seen) < expire);
            if self.table.len() >= self.cfg.table_size {
                return;
            }
        }
        self.table.insert(
            src_mac,
            Learned {
                addr: from,
                seen: now,
            },
        );
    }

    /// Handles one datagram already in `self.rx[..len]`; returns the frame length to deliver.
    fn accept(&mut self, len: usize, from: SocketAddr, buf: &mut [u8]) -> Option<usize> {
        let Ok(packet) = vxlan::Packet::new_checked(&self.rx[..len]) else {
            return None;
        };
        let ok = match self.cfg.flavor {
            Flavor::Vxvde => packet.is_exactly(self.cfg.vni),
            Flavor::Vxlan => packet.flags() == vxlan::FLAG_VNI && packet.vni() == self.cfg.vni,
        };
        if !ok {
            return None;
        }
        let payload_len = len - vxlan::HEADER_LEN;
        if payload_len == 0 {
            // Goodbye: forget everything learned from that sender.
            self.table.retain(|_, l| l.addr != from);
            return None;
        }
        let frame = &self.rx[vxlan::HEADER_LEN..len];
        if frame.len() >= 12 {
            let mut src = [0u8; 6];
            src.copy_from_slice(&frame[6..12]);
            let addr = match self.cfg.flavor {
                Flavor::Vxvde => from,
                Flavor::Vxlan => SocketAddr::new(from.ip(), self.cfg.port),
            };
            self.learn(src, addr, Instant::now());
        }
        let n = payload_len.min(buf.len());
        buf[..n].copy_from_slice(&self.rx[vxlan::HEADER_LEN..vxlan::HEADER_LEN + n]);
        // A Linux sender's checksum offload may have left the inner checksum for a NIC that
        // never saw the frame (a veth): finish it here, as that NIC would have.
        partial::complete(&mut buf[..n]);
        Some(payload_len)
    }

    fn destination(&self, frame: &[u8]) -> SocketAddr {
        let mut dst = [0u8; 6];
        dst.copy_from_slice(&frame[..6]);
        if dst[0] & 1 == 0 {
            if let Some(l) = self.table.get(&dst) {
                if l.seen.elapsed() < self.cfg.expire {
                    return l.addr;
                }
            }
        }
        self.group_addr
    }
}

impl Transport for Vx {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut got = None;
            for sock in std::iter::once(&self.unicast).chain(self.multicast.as_ref()) {
                match sock.recv_from(&mut self.rx) {
                    Ok(r) => {
                        got = Some(r);
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // ICMP errors from earlier sends surface here; they are not frames.
                    Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {}
                    Err(e) => return Err(e),
                }
            }
            let Some((len, from)) = got else {
                return Err(io::ErrorKind::WouldBlock.into());
            };
            if self.multicast.is_some() && self.is_own(from) {
                continue;
            }
            if let Some(n) = self.accept(len, from, buf) {
                return Ok(n);
            }
        }
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        let to = self.destination(frame);
        self.tx.clear();
        self.tx.extend_from_slice(&self.header);
        self.tx.extend_from_slice(frame);
        match self.unicast.send_to(&self.tx, to) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ECONNREFUSED) | Some(libc::EHOSTUNREACH) | Some(libc::ENETUNREACH)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(normalize(e)),
        }
    }

    fn data_fd(&self) -> BorrowedFd<'_> {
        match &self.epoll {
            Some(ep) => ep.as_fd(),
            None => self.unicast.as_fd(),
        }
    }

    fn write_fd(&self) -> BorrowedFd<'_> {
        self.unicast.as_fd()
    }

    fn close(&mut self) {
        if self.cfg.flavor == Flavor::Vxvde {
            let _ = self.unicast.send_to(&self.header, self.group_addr);
        }
    }

    fn mtu(&self) -> Option<usize> {
        Some(self.mtu)
    }

    fn kind(&self) -> &'static str {
        match self.cfg.flavor {
            Flavor::Vxvde => "vxvde",
            Flavor::Vxlan => "vxlan",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::inner_mtu;

    #[test]
    fn the_inner_mtu_is_the_underlay_less_the_encapsulation_and_at_most_1500() {
        assert_eq!(inner_mtu(Some(1500), false), 1450);
        assert_eq!(inner_mtu(Some(1500), true), 1430);
        assert_eq!(inner_mtu(None, false), 1450);
        assert_eq!(inner_mtu(Some(1400), false), 1350);
        assert_eq!(inner_mtu(Some(9000), false), 1500);
        assert_eq!(inner_mtu(Some(65536), true), 1500);
        assert_eq!(inner_mtu(Some(0), false), 68);
    }
}
