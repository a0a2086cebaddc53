//! The gateway's I/O shell: one thread, one epoll set over the guest's plug and every host
//! socket, a smoltcp interface that terminates the guest's TCP, and the [`Core`] for the
//! rest. Each turn: frames in (the core classifies them), host sockets drained, smoltcp
//! polled, data spliced between smoltcp sockets and host sockets, frames out in one batch.
//!
//! TCP: a guest SYN to a new (remote, port) starts a non-blocking `connect()` on the host;
//! only when it succeeds does a smoltcp socket listen on the remote endpoint (the interface
//! accepts any address) and take the SYN, so a refused connection is a reset to the guest and
//! an unreachable one an ICMP error, as if the guest had talked to the remote host itself.
//! Data then flows between the two sockets with large windows; FIN and RST cross both ways.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket,
};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use filo_vnl::sys::{Epoll, EpollEvent};
use filo_vnl::wire::vnet;
use filo_vnl::{FrameBatch, Plug};
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpCidr, IpListenEndpoint, TcpOption, TcpPacket};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::config::{Config, Forward, Proto};
use crate::core::{canonical, is_host_local, split_ip, Core, Input};
use crate::dns;
use crate::ping::EchoSocket;

/// Bounds of the flow tables (host descriptors: one per flow).
pub const MAX_TCP: usize = 512;
pub const MAX_UDP: usize = 256;
pub const MAX_ICMP: usize = 64;
const UDP_IDLE: Duration = Duration::from_secs(60);
const DNS_IDLE: Duration = Duration::from_secs(10);
const ICMP_IDLE: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// A TCP flow with no traffic for this long is aborted.
const TCP_IDLE: Duration = Duration::from_secs(2 * 3600);
/// A flow the guest has closed (FIN sent) but the host has not, idle this long, is aborted
/// (conntrack's FIN_WAIT timeout).
const HALF_CLOSED_IDLE: Duration = Duration::from_secs(120);
/// A flow whose guest never completed the handshake is dropped after this long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Per-flow socket buffers (smoltcp scales its window to fit).
const TCP_BUFFER: usize = 1 << 20;
/// Frames waiting for the plug beyond which host sockets are not read.
const OUT_HIGH: usize = 512;
/// The IP MTU smoltcp uses on a super-frame plug: TCP segments of up to 64 KiB.
const GSO_MTU: usize = 65000;
/// The MSS the gateway tells smoltcp a super-frame guest offered (segmented on the way out).
const GSO_MSS: u16 = (GSO_MTU - 60) as u16;
const PLUG: u64 = 0;
const ETH_HEADER: usize = 14;

/// What the gateway counted.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub tcp_opened: u64,
    pub tcp_refused_full: u64,
    /// Flows the guest had closed, aborted to make room for new ones.
    pub tcp_evicted: u64,
    /// Half-open flows (host connect() still under way) dropped to make room for new ones.
    pub tcp_evicted_connecting: u64,
    pub tcp_refused_policy: u64,
    pub tcp_connect_failed: u64,
    pub udp_refused_full: u64,
    pub udp_refused_policy: u64,
    pub icmp_refused: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    pub frames_dropped_out: u64,
    pub fwd_accepted: u64,
}

type Key = (SocketAddr, SocketAddr);

enum TcpState {
    /// The host connect() is under way; the guest's SYN waits.
    Connecting {
        syn: Vec<u8>,
        since: Instant,
    },
    Open,
}

struct TcpFlow {
    host: Socket,
    handle: Option<SocketHandle>,
    state: TcpState,
    token: u64,
    host_eof: bool,
    host_shut: bool,
    interest: (bool, bool),
    /// The host socket may have data: set by epoll, cleared by a read that drained it (not
    /// read on every turn: a read that finds nothing is a wasted system call).
    host_readable: bool,
    last: Instant,
    /// The guest's own MSS when it offered super-frames (segments are cut to it on the way out).
    guest_mss: Option<u16>,
}

struct UdpFlow {
    sock: UdpSocket,
    token: u64,
    last: Instant,
    idle: Duration,
    /// For queries to the DNS forwarder: the resolver failover.
    dns: Option<dns::Relay>,
}

struct IcmpFlow {
    sock: EchoSocket,
    token: u64,
    last: Instant,
}

struct FwdListener {
    fwd: Forward,
    tcp: Option<TcpListener>,
    udp: Option<UdpSocket>,
    token: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Tok {
    Tcp(Key),
    Udp(Key),
    Icmp((IpAddr, IpAddr, u16)),
    Fwd(u64),
}

/// smoltcp's device: IP packets queued in and out by the engine, in buffers that are reused
/// (a fresh 64 KiB buffer per super-frame costs page faults and a memset each).
#[derive(Default)]
struct Dev {
    rx: VecDeque<Vec<u8>>,
    /// Packets from smoltcp, each behind [`Dev::room`] bytes for the headers of its frame.
    tx: Vec<Vec<u8>>,
    /// Buffers for reuse, and the received ones smoltcp is done with.
    pool: Vec<Vec<u8>>,
    spent: Vec<Vec<u8>>,
    /// Room before each packet from smoltcp: the Ethernet header, and the virtio-net header
    /// on a super-frame plug, written there so that the frame leaves without another copy.
    room: usize,
    mtu: usize,
    partial_tcp: bool,
}

/// Buffers kept for reuse (each up to one super-frame).
const POOL_MAX: usize = 128;

/// A buffer from `pool` (its contents are stale; callers overwrite them).
fn pooled(pool: &mut Vec<Vec<u8>>) -> Vec<u8> {
    pool.pop().unwrap_or_default()
}

fn recycle(pool: &mut Vec<Vec<u8>>, buf: Vec<u8>) {
    if pool.len() < POOL_MAX {
        pool.push(buf);
    }
}

struct RxToken<'a> {
    packet: Vec<u8>,
    spent: &'a mut Vec<Vec<u8>>,
}

struct TxToken<'a> {
    tx: &'a mut Vec<Vec<u8>>,
    pool: &'a mut Vec<Vec<u8>>,
    room: usize,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let r = f(&self.packet);
        recycle(self.spent, self.packet);
        r
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = pooled(self.pool);
        // Only a longer buffer is zero-filled at its end: smoltcp writes every byte of `len`.
        buf.resize(self.room + len, 0);
        let r = f(&mut buf[self.room..]);
        self.tx.push(buf);
        r
    }
}

impl phy::Device for Dev {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;
    fn receive(&mut self, _: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let packet = self.rx.pop_front()?;
        Some((
            RxToken {
                packet,
                spent: &mut self.spent,
            },
            TxToken {
                tx: &mut self.tx,
                pool: &mut self.pool,
                room: self.room,
            },
        ))
    }
    fn transmit(&mut self, _: Instant) -> Option<TxToken<'_>> {
        Some(TxToken {
            tx: &mut self.tx,
            pool: &mut self.pool,
            room: self.room,
        })
    }
    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        // The core checked the guest's checksums (or the guest's kernel left them to us on a
        // super-frame plug): smoltcp computes its own and verifies none.
        let mut csum = ChecksumCapabilities::default();
        // On a super-frame plug smoltcp leaves TCP checksums out: the engine writes the
        // pseudo-header sum and the receiver completes it (NEEDS_CSUM), as a NIC would.
        csum.tcp = if self.partial_tcp {
            Checksum::None
        } else {
            Checksum::Tx
        };
        csum.ipv4 = Checksum::Tx;
        caps.checksum = csum;
        caps
    }
}

/// smoltcp's device while it takes one guest segment straight from the plug's receive buffer
/// (no copy); what it sends goes to the engine's device.
struct Borrowed<'p, 'd> {
    packet: Option<&'p [u8]>,
    dev: &'d mut Dev,
}

struct BorrowedRx<'p>(&'p [u8]);

impl phy::RxToken for BorrowedRx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl phy::Device for Borrowed<'_, '_> {
    type RxToken<'a>
        = BorrowedRx<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a>
    where
        Self: 'a;
    fn receive(&mut self, now: Instant) -> Option<(BorrowedRx<'_>, TxToken<'_>)> {
        let packet = self.packet.take()?;
        let tx = self.dev.transmit(now)?;
        Some((BorrowedRx(packet), tx))
    }
    fn transmit(&mut self, now: Instant) -> Option<TxToken<'_>> {
        self.dev.transmit(now)
    }
    fn capabilities(&self) -> DeviceCapabilities {
        self.dev.capabilities()
    }
}

/// A command from a console or another thread, run between turns.
pub type Command = Box<dyn FnOnce(&mut Engine) + Send>;

/// The gateway.
pub struct Engine {
    core: Core,
    plug: Plug,
    iface: Interface,
    sockets: SocketSet<'static>,
    dev: Dev,
    epoll: Epoll,
    start: std::time::Instant,
    tcp: HashMap<Key, TcpFlow>,
    udp: HashMap<Key, UdpFlow>,
    icmp: HashMap<(IpAddr, IpAddr, u16), IcmpFlow>,
    fwds: Vec<FwdListener>,
    /// UDP forward peers: (guest, source the guest sees) → (listener token, real client).
    fwd_peers: HashMap<Key, (u64, SocketAddr)>,
    /// (listener token, real client) → (source the guest sees, last datagram).
    fwd_sources: HashMap<(u64, SocketAddr), (SocketAddr, Instant)>,
    next_port: u16,
    tokens: HashMap<u64, Tok>,
    next_token: u64,
    /// Frames for the guest, each with whether its TCP checksum is left open (see
    /// [`write_pseudo_header_sum`]).
    out: VecDeque<(Vec<u8>, bool)>,
    /// smoltcp's packets framed for the guest where they were written, sent as they are
    /// (with their virtio-net header on a super-frame plug), after `out`.
    tcp_out: VecDeque<Vec<u8>>,
    plug_blocked: bool,
    /// epoll watches the plug for writability too (set while it was blocked).
    plug_write_watched: bool,
    resolvers: Vec<IpAddr>,
    /// The resolver that last answered the DNS forwarder (asked first).
    dns_preferred: Option<IpAddr>,
    pub stats: Stats,
    ping_warned: bool,
    /// The last identifier given to a flow's echo requests on a raw ICMP socket.
    next_ping_ident: u16,
    last_sweep: Instant,
    scratch: Vec<u8>,
    extra: Vec<(RawFd, u64)>,
}

impl Engine {
    /// A gateway for the guest behind `plug`. Binds the configured forwards (an error names
    /// the forward that cannot listen).
    pub fn new(cfg: Config, plug: Plug) -> io::Result<Engine> {
        let vnet = plug.vnet();
        let mut dev = Dev {
            partial_tcp: vnet,
            room: ETH_HEADER + if vnet { vnet::HEADER_LEN } else { 0 },
            mtu: if vnet {
                GSO_MTU
            } else {
                usize::from(cfg.mtu).clamp(1500, filo_vnl::MAX_FRAME - 14)
            },
            ..Dev::default()
        };
        let mut icfg = IfaceConfig::new(HardwareAddress::Ip);
        icfg.random_seed = rand_seed();
        let start = std::time::Instant::now();
        let now = Instant::from_millis(0);
        let mut iface = Interface::new(icfg, &mut dev, now);
        iface.set_any_ip(true);
        iface.update_ip_addrs(|a| {
            if cfg.v4 {
                let _ = a.push(IpCidr::new(cfg.gateway.into(), cfg.prefix));
                let _ = a.push(IpCidr::new(cfg.dns.into(), cfg.prefix));
            }
            if cfg.v6 {
                let _ = a.push(IpCidr::new(cfg.gateway6.into(), cfg.prefix6));
                let _ = a.push(IpCidr::new(cfg.dns6.into(), cfg.prefix6));
            }
        });
        if cfg.v4 {
            let _ = iface.routes_mut().add_default_ipv4_route(cfg.gateway);
        }
        if cfg.v6 {
            let _ = iface.routes_mut().add_default_ipv6_route(cfg.gateway6);
        }
        let epoll = Epoll::new()?;
        epoll.add(plug.data_fd().as_raw_fd(), PLUG, true, false)?;
        let forwards = cfg.forwards.clone();
        let resolvers = crate::dns::host_resolvers();
        if cfg.verbose {
            for line in cfg.describe() {
                tracing::info!("slirp: {line}");
            }
        }
        let core = Core::new(cfg, 0, rand_seed())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut e = Engine {
            core,
            plug,
            iface,
            sockets: SocketSet::new(Vec::new()),
            dev,
            epoll,
            start,
            tcp: HashMap::new(),
            udp: HashMap::new(),
            icmp: HashMap::new(),
            fwds: Vec::new(),
            fwd_peers: HashMap::new(),
            fwd_sources: HashMap::new(),
            next_port: 49152,
            tokens: HashMap::new(),
            next_token: 1,
            out: VecDeque::new(),
            tcp_out: VecDeque::new(),
            plug_blocked: false,
            plug_write_watched: false,
            resolvers,
            dns_preferred: None,
            stats: Stats::default(),
            ping_warned: false,
            next_ping_ident: rand_seed() as u16,
            last_sweep: now,
            scratch: Vec::new(),
            extra: Vec::new(),
        };
        for f in forwards {
            e.add_forward(f)?;
        }
        Ok(e)
    }

    /// Serves the guest behind `plug` instead of the one it was made for (before [`Engine::run`]
    /// starts). Refused, with `plug` given back, when its framing (virtio-net header or not)
    /// differs: the interface's MTU and checksum handling were chosen for the first.
    pub fn replace_plug(&mut self, plug: Box<Plug>) -> Result<(), Box<Plug>> {
        if plug.vnet() != self.plug.vnet() {
            return Err(plug);
        }
        if let Err(e) = self
            .epoll
            .add(plug.data_fd().as_raw_fd(), PLUG, true, false)
        {
            tracing::debug!("slirp: cannot watch {}: {e}", plug.name());
            return Err(plug);
        }
        self.epoll.delete(self.plug.data_fd().as_raw_fd());
        self.plug = *plug;
        self.plug_blocked = false;
        self.plug_write_watched = false;
        Ok(())
    }

    pub fn config(&self) -> &Config {
        self.core.config()
    }

    fn millis(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.start.elapsed().as_micros() as i64)
    }

    /// Watches a host socket for `t`; its token, or None when epoll refuses it.
    fn register(&mut self, fd: RawFd, t: Tok, read: bool, write: bool) -> Option<u64> {
        let n = self.next_token;
        self.next_token += 1;
        self.epoll.add(fd, n, read, write).ok()?;
        self.tokens.insert(n, t);
        Some(n)
    }

    /// Watches `fd` too: [`Engine::run`] hands its readiness to the caller's hook with `token`
    /// (which must be at least 1 << 62).
    pub fn watch(&mut self, fd: RawFd, token: u64) -> io::Result<()> {
        self.epoll.add(fd, token, true, false)?;
        self.extra.push((fd, token));
        Ok(())
    }

    /// Stops watching a descriptor added with [`Engine::watch`].
    pub fn unwatch(&mut self, fd: RawFd) {
        self.epoll.delete(fd);
        self.extra.retain(|&(f, _)| f != fd);
    }

    /// Starts a host → guest forward.
    pub fn add_forward(&mut self, fwd: Forward) -> io::Result<()> {
        if self
            .fwds
            .iter()
            .any(|l| l.fwd.proto == fwd.proto && l.fwd.host == fwd.host)
        {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{fwd}: a forward from {} already exists", fwd.host),
            ));
        }
        let named = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("{fwd}: cannot listen on {}: {e}", fwd.host),
            )
        };
        let n = self.next_token;
        self.next_token += 1;
        let (tcp, udp, fd) = match fwd.proto {
            Proto::Tcp => {
                let l = TcpListener::bind(fwd.host).map_err(named)?;
                l.set_nonblocking(true)?;
                let fd = l.as_raw_fd();
                (Some(l), None, fd)
            }
            Proto::Udp => {
                let s = UdpSocket::bind(fwd.host).map_err(named)?;
                s.set_nonblocking(true)?;
                let fd = s.as_raw_fd();
                (None, Some(s), fd)
            }
        };
        self.epoll.add(fd, n, true, false)?;
        self.tokens.insert(n, Tok::Fwd(n));
        self.fwds.push(FwdListener {
            fwd,
            tcp,
            udp,
            token: n,
        });
        Ok(())
    }

    /// Stops the forward from `host` (established connections stay).
    pub fn del_forward(&mut self, proto: Proto, host: SocketAddr) -> io::Result<Forward> {
        let Some(i) = self
            .fwds
            .iter()
            .position(|l| l.fwd.proto == proto && l.fwd.host == host)
        else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no {} forward from {host}", proto.name()),
            ));
        };
        let l = self.fwds.remove(i);
        let fd = l
            .tcp
            .as_ref()
            .map(|t| t.as_raw_fd())
            .or(l.udp.as_ref().map(|u| u.as_raw_fd()));
        if let Some(fd) = fd {
            self.epoll.delete(fd);
        }
        self.tokens.remove(&l.token);
        self.fwd_peers.retain(|_, (t, _)| *t != l.token);
        self.fwd_sources.retain(|(t, _), _| *t != l.token);
        Ok(l.fwd)
    }

    pub fn forwards(&self) -> Vec<Forward> {
        self.fwds.iter().map(|l| l.fwd).collect()
    }

    /// The DHCP server's leases.
    pub fn leases(&self) -> Vec<String> {
        self.core.leases(self.millis())
    }

    /// One line per flow: protocol, guest end, remote end, state.
    pub fn flows(&self) -> Vec<String> {
        let mut v = Vec::new();
        for ((g, r), f) in &self.tcp {
            let state = match (&f.state, f.handle) {
                (TcpState::Connecting { .. }, _) => "connecting".to_string(),
                (TcpState::Open, Some(h)) => {
                    format!("{}", self.sockets.get::<tcp::Socket>(h).state())
                }
                (TcpState::Open, None) => "open".into(),
            };
            v.push(format!("tcp {g} {r} {state}"));
        }
        for (g, r) in self.udp.keys() {
            v.push(format!("udp {g} {r}"));
        }
        for (g, r, id) in self.icmp.keys() {
            v.push(format!("icmp {g} {r} id {id}"));
        }
        v.sort();
        v
    }

    /// Counters as `name value` lines.
    pub fn stat_lines(&self) -> Vec<String> {
        let s = &self.stats;
        let c = &self.core.counters;
        vec![
            format!(
                "flows tcp {} udp {} icmp {}",
                self.tcp.len(),
                self.udp.len(),
                self.icmp.len()
            ),
            format!("limits tcp {MAX_TCP} udp {MAX_UDP} icmp {MAX_ICMP}"),
            format!(
                "tcp opened {} connect_failed {} refused_full {} refused_policy {} evicted {} \
                 evicted_connecting {}",
                s.tcp_opened,
                s.tcp_connect_failed,
                s.tcp_refused_full,
                s.tcp_refused_policy,
                s.tcp_evicted,
                s.tcp_evicted_connecting
            ),
            format!(
                "udp refused_full {} refused_policy {}",
                s.udp_refused_full, s.udp_refused_policy
            ),
            format!("icmp refused {}", s.icmp_refused),
            format!("forwards {} accepted {}", self.fwds.len(), s.fwd_accepted),
            format!(
                "frames in {} out {} dropped_out {}",
                s.frames_in, s.frames_out, s.frames_dropped_out
            ),
            format!(
                "dropped malformed {} bad_checksum {} not_for_us {} unsupported {} no_neighbour {}",
                c.malformed, c.bad_checksum, c.not_for_us, c.unsupported, c.no_neighbour
            ),
        ]
    }

    /// Runs until the plug's peer goes away, `stop` is raised or `hook` returns false. `hook`
    /// gets the tokens of descriptors added with [`Engine::watch`] and may change the engine.
    pub fn run(
        &mut self,
        stop: &AtomicBool,
        mut hook: impl FnMut(&mut Engine, u64) -> bool,
    ) -> io::Result<()> {
        let mut events: Vec<EpollEvent> = Vec::new();
        let mut batch = FrameBatch::with_frame_size(
            64,
            if self.plug.vnet() {
                filo_vnl::plug::VNET_FRAME_BUF
            } else {
                filo_vnl::plug::FRAME_BUF
            },
        );
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let now = self.now();
            let mut timeout = self
                .iface
                .poll_delay(now, &self.sockets)
                .map(|d| Duration::from_micros(d.total_micros()))
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            if let Some(at) = self.core.poll_at() {
                timeout = timeout.min(Duration::from_millis(at.saturating_sub(self.millis())));
            }
            if self.plug.has_pending_input() {
                timeout = Duration::ZERO;
            }
            self.epoll.wait(&mut events, Some(timeout))?;
            let mut plug_ready = self.plug.has_pending_input();
            for ev in &events {
                if ev.token == PLUG {
                    plug_ready |= ev.readable || ev.hangup;
                    if ev.writable {
                        self.plug_blocked = false;
                    }
                    continue;
                }
                if self.extra.iter().any(|&(_, t)| t == ev.token) {
                    if !hook(self, ev.token) {
                        return Ok(());
                    }
                    continue;
                }
                let Some(tok) = self.tokens.get(&ev.token).copied() else {
                    continue;
                };
                match tok {
                    Tok::Tcp(key) => self.tcp_ready(key, ev.readable || ev.hangup),
                    Tok::Udp(key) => self.udp_ready(key),
                    Tok::Icmp(key) => self.icmp_ready(key),
                    Tok::Fwd(t) => self.fwd_ready(t),
                }
            }
            if plug_ready && !self.read_plug(&mut batch)? {
                return Ok(());
            }
            self.turn();
        }
    }

    /// Reads frames from the plug; false when its peer is gone.
    fn read_plug(&mut self, batch: &mut FrameBatch) -> io::Result<bool> {
        for _ in 0..16 {
            match self.plug.recv_batch(batch) {
                Ok(0) => break,
                Ok(n) => {
                    self.stats.frames_in += n as u64;
                    for frame in batch.frames_mut().take(n) {
                        self.handle_plug_frame(frame);
                    }
                    if n < batch.len().max(1) && !self.plug.has_pending_input() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::debug!("slirp: plug closed: {e}");
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// One frame from the guest (with its virtio-net header on a super-frame plug).
    pub fn handle_plug_frame(&mut self, frame: &mut [u8]) {
        let mut trusted = false;
        let frame = if self.plug.vnet() {
            let Ok(hdr) = vnet::Header::parse(frame) else {
                self.core.counters.malformed += 1;
                return;
            };
            // A checksum left open by the guest's kernel (or checked by it) is not computed
            // here: the TCP it protects ends in this process, and UDP payloads are taken as
            // the kernel gave them.
            trusted = hdr.flags & (vnet::F_NEEDS_CSUM | vnet::F_DATA_VALID) != 0;
            &frame[vnet::HEADER_LEN..]
        } else {
            &frame[..]
        };
        let ms = self.millis();
        let input = self.core.handle_frame_with(ms, frame, trusted);
        match input {
            Input::Reply(f) => self.out.push_back((f, false)),
            Input::Tcp {
                packet,
                guest,
                remote,
                syn,
                rst,
            } => {
                if !syn && self.segment_in_place(guest, remote, packet) {
                    return;
                }
                let mut buf = pooled(&mut self.dev.pool);
                buf.clear();
                buf.extend_from_slice(packet);
                self.guest_tcp(buf, guest, remote, syn, rst)
            }
            Input::Udp {
                guest,
                remote,
                payload,
            } => {
                let payload = payload.to_vec();
                self.guest_udp(guest, remote, &payload)
            }
            Input::Echo {
                guest,
                remote,
                ident,
                seq,
                data,
            } => {
                let data = data.to_vec();
                self.guest_echo(guest, remote, ident, seq, &data)
            }
            Input::Drop => {}
        }
    }

    /// Gives smoltcp a segment of an open flow where it lies in the plug's buffer, the data
    /// path's common case. False (nothing done) when the segment must be queued instead: a
    /// SYN (its MSS is rewritten), or segments already waiting before it.
    fn segment_in_place(&mut self, guest: SocketAddr, remote: SocketAddr, packet: &[u8]) -> bool {
        if !self.dev.rx.is_empty() || (self.plug.vnet() && carries_syn(packet)) {
            return false;
        }
        let now = self.now();
        let Some(flow) = self.tcp.get_mut(&(guest, remote)) else {
            return false;
        };
        if !matches!(flow.state, TcpState::Open) {
            return false;
        }
        flow.last = now;
        let mut dev = Borrowed {
            packet: Some(packet),
            dev: &mut self.dev,
        };
        self.iface
            .poll_ingress_single(now, &mut dev, &mut self.sockets);
        true
    }

    /// Where the guest's `remote` is on the host, or None when policy refuses it.
    fn map_remote(&self, remote: SocketAddr, proto: Proto) -> Option<SocketAddr> {
        let cfg = self.core.config();
        let ip = remote.ip();
        if (ip == IpAddr::V4(cfg.dns) || ip == IpAddr::V6(cfg.dns6)) && remote.port() == 53 {
            let r = self
                .resolvers
                .iter()
                .find(|r| r.is_ipv4() == ip.is_ipv4())
                .or(self.resolvers.first())?;
            return Some(SocketAddr::new(*r, 53));
        }
        let _ = proto;
        if cfg.restricted {
            return None;
        }
        if ip == IpAddr::V4(cfg.gateway) || ip == IpAddr::V6(cfg.gateway6) {
            if !cfg.hostloopback {
                return None;
            }
            let lo = if ip.is_ipv4() {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                IpAddr::V6(Ipv6Addr::LOCALHOST)
            };
            return Some(SocketAddr::new(lo, remote.port()));
        }
        if cfg.is_own(ip) || is_host_local(ip) || ip.is_multicast() || self.core.on_link(ip) {
            return None;
        }
        Some(remote)
    }

    fn guest_tcp(
        &mut self,
        packet: Vec<u8>,
        guest: SocketAddr,
        remote: SocketAddr,
        syn: bool,
        rst: bool,
    ) {
        let key = (guest, remote);
        let now = self.now();
        let vnet = self.plug.vnet();
        if let Some(flow) = self.tcp.get_mut(&key) {
            flow.last = now;
            match &mut flow.state {
                TcpState::Connecting { syn: stored, .. } => {
                    if syn {
                        *stored = packet;
                    } else if rst {
                        self.drop_tcp(key, false);
                    }
                }
                TcpState::Open => {
                    // On a super-frame plug every SYN the guest sends (a retransmitted one,
                    // or the SYN-ACK answering a forwarded connection) offers a large MSS.
                    let packet = if vnet && carries_syn(&packet) {
                        let (p, mss) = raise_mss(packet);
                        if mss.is_some() {
                            flow.guest_mss = mss;
                        }
                        p
                    } else {
                        packet
                    };
                    self.dev.rx.push_back(packet);
                }
            }
            return;
        }
        if !syn {
            // Not ours (anymore): smoltcp answers with a reset unless it is one.
            if !rst {
                self.dev.rx.push_back(packet);
            }
            return;
        }
        if self.tcp.len() >= MAX_TCP && !self.make_room() {
            self.stats.tcp_refused_full += 1;
            self.reset(&packet);
            return;
        }
        let Some(target) = self.map_remote(remote, Proto::Tcp) else {
            self.stats.tcp_refused_policy += 1;
            self.reset(&packet);
            return;
        };
        let sock = match Socket::new(
            Domain::for_address(target),
            Type::STREAM,
            Some(Protocol::TCP),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("slirp: tcp socket: {e}");
                self.stats.tcp_connect_failed += 1;
                self.reset(&packet);
                return;
            }
        };
        let _ = sock.set_nonblocking(true);
        let _ = sock.set_tcp_nodelay(true);
        match sock.connect(&SockAddr::from(target)) {
            Ok(()) => {}
            Err(e)
                if e.raw_os_error() == Some(libc::EINPROGRESS)
                    || e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                self.connect_failed(&packet, &e);
                return;
            }
        }
        let Some(token) = self.register(sock.as_raw_fd(), Tok::Tcp(key), false, true) else {
            self.reset(&packet);
            return;
        };
        self.tcp.insert(
            key,
            TcpFlow {
                host: sock,
                handle: None,
                state: TcpState::Connecting {
                    syn: packet,
                    since: now,
                },
                token,
                host_eof: false,
                host_shut: false,
                interest: (false, true),
                last: now,
                guest_mss: None,
                host_readable: true,
            },
        );
    }

    /// Makes room in a full TCP table for a new flow: drops the oldest half-open flow (its
    /// host connect() still under way, e.g. to a black-holed port during a SYN flood), else
    /// the least recently active flow the guest has closed. False when neither exists: the
    /// table is full of live connections and the new one is refused.
    fn make_room(&mut self) -> bool {
        self.evict_connecting() || self.evict_half_closed()
    }

    /// Drops the half-open flow whose connect() started first. Its guest hears nothing (as
    /// from a remote that does not answer) and may retry with a new SYN.
    fn evict_connecting(&mut self) -> bool {
        let victim = self
            .tcp
            .iter()
            .filter_map(|(k, f)| match f.state {
                TcpState::Connecting { since, .. } => Some((since, *k)),
                TcpState::Open => None,
            })
            .min()
            .map(|(_, k)| k);
        let Some(key) = victim else {
            return false;
        };
        self.drop_tcp(key, true);
        self.stats.tcp_evicted_connecting += 1;
        true
    }

    /// Makes room in a full TCP table: aborts the least recently active flow that the guest
    /// has already closed (its FIN sent, the host's side still open). False when there is none.
    fn evict_half_closed(&mut self) -> bool {
        let victim = self
            .tcp
            .iter()
            .filter(|(_, f)| {
                f.handle
                    .is_some_and(|h| guest_closed(self.sockets.get::<tcp::Socket>(h).state()))
            })
            .min_by_key(|(_, f)| f.last)
            .map(|(k, _)| *k);
        let Some(key) = victim else {
            return false;
        };
        if let Some(h) = self.tcp.get(&key).and_then(|f| f.handle) {
            self.sockets.get_mut::<tcp::Socket>(h).abort();
            let now = self.now();
            self.iface.poll(now, &mut self.dev, &mut self.sockets);
        }
        self.drop_tcp(key, true);
        self.stats.tcp_evicted += 1;
        true
    }

    fn reset(&mut self, packet: &[u8]) {
        if let Some(f) = self.core.tcp_reset(packet) {
            self.out.push_back((f, false));
        }
    }

    fn connect_failed(&mut self, syn: &[u8], e: &io::Error) {
        self.stats.tcp_connect_failed += 1;
        tracing::debug!("slirp: connect failed: {e}");
        match e.raw_os_error() {
            Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::ETIMEDOUT | libc::EHOSTDOWN) => {
                if let Some(f) = self.core.unreachable(syn, false) {
                    self.out.push_back((f, false));
                }
            }
            _ => self.reset(syn),
        }
    }

    fn tcp_ready(&mut self, key: Key, readable: bool) {
        let Some(flow) = self.tcp.get_mut(&key) else {
            return;
        };
        flow.host_readable |= readable;
        let TcpState::Connecting { syn, .. } = &mut flow.state else {
            return;
        };
        let err = match flow.host.take_error() {
            Ok(Some(e)) => Some(e),
            Ok(None) => match flow.host.peer_addr() {
                Ok(_) => None,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    // Not finished yet (a spurious wake-up).
                    return;
                }
                Err(e) => Some(e),
            },
            Err(e) => Some(e),
        };
        let syn = std::mem::take(syn);
        if let Some(e) = err {
            self.drop_tcp(key, false);
            self.connect_failed(&syn, &e);
            return;
        }
        // Connected: a smoltcp socket takes the guest's SYN.
        let (syn, guest_mss) = if self.plug.vnet() {
            raise_mss(syn)
        } else {
            (syn, None)
        };
        let mut s = guest_socket();
        if s.listen(IpListenEndpoint {
            addr: Some(key.1.ip().into()),
            port: key.1.port(),
        })
        .is_err()
        {
            self.drop_tcp(key, false);
            self.reset(&syn);
            return;
        }
        let handle = self.sockets.add(s);
        self.stats.tcp_opened += 1;
        if let Some(flow) = self.tcp.get_mut(&key) {
            flow.handle = Some(handle);
            flow.state = TcpState::Open;
            flow.guest_mss = guest_mss;
        }
        self.dev.rx.push_back(syn);
        // Taken now, before another listener for the same endpoint could see it.
        let now = self.now();
        self.iface.poll(now, &mut self.dev, &mut self.sockets);
    }

    fn drop_tcp(&mut self, key: Key, abort_host: bool) {
        if let Some(flow) = self.tcp.remove(&key) {
            self.epoll.delete(flow.host.as_raw_fd());
            self.tokens.remove(&flow.token);
            if abort_host {
                let _ = flow.host.set_linger(Some(Duration::ZERO));
            }
            if let Some(h) = flow.handle {
                self.sockets.remove(h);
            }
        }
    }

    /// Moves data between every open flow's two sockets.
    fn pump(&mut self) {
        let now = self.now();
        let congested = self.out.len() + self.tcp_out.len() >= OUT_HIGH;
        let mut done = Vec::new();
        for (key, flow) in self.tcp.iter_mut() {
            let Some(h) = flow.handle else {
                if let TcpState::Connecting { since, .. } = flow.state {
                    if now - since
                        > smoltcp::time::Duration::from_micros(CONNECT_TIMEOUT.as_micros() as u64)
                    {
                        done.push((*key, false));
                    }
                }
                continue;
            };
            let s = self.sockets.get_mut::<tcp::Socket>(h);
            let mut want_write = false;
            let mut moved = false;
            // Guest → host.
            while s.can_recv() {
                let host = &flow.host;
                match s.recv(|buf| match (&*host).write(buf) {
                    Ok(n) => (n, Ok((n, buf.len()))),
                    Err(e) => (0, Err(e)),
                }) {
                    Ok(Ok((0, _))) => break,
                    Ok(Ok((n, offered))) => {
                        moved = true;
                        if n < offered {
                            // The host socket's buffer is full: epoll says when it drained.
                            want_write = true;
                            break;
                        }
                    }
                    Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                        want_write = true;
                        break;
                    }
                    Ok(Err(_)) => {
                        s.abort();
                        break;
                    }
                    Err(_) => break,
                }
            }
            let state = s.state();
            use tcp::State as S;
            if matches!(state, S::CloseWait | S::LastAck | S::Closing | S::TimeWait)
                && !flow.host_shut
                && s.recv_queue() == 0
            {
                let _ = flow.host.shutdown(Shutdown::Write);
                flow.host_shut = true;
            }
            // Host → guest.
            if !flow.host_eof && !congested && flow.host_readable {
                while s.can_send() {
                    let host = &flow.host;
                    match s.send(|buf| match (&*host).read(buf) {
                        Ok(n) => (n, Ok((n, buf.len()))),
                        Err(e) => (0, Err(e)),
                    }) {
                        Ok(Ok((0, _))) => {
                            flow.host_eof = true;
                            s.close();
                            break;
                        }
                        Ok(Ok((n, asked))) => {
                            moved = true;
                            if n < asked {
                                // Drained (epoll is level-triggered: more data wakes it).
                                flow.host_readable = false;
                                break;
                            }
                        }
                        Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                            flow.host_readable = false;
                            break;
                        }
                        Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Ok(Err(_)) => {
                            s.abort();
                            break;
                        }
                        Err(_) => break,
                    }
                }
            }
            if moved {
                flow.last = now;
            }
            let state = s.state();
            let idle = now - flow.last;
            if state == S::Closed || state == S::TimeWait {
                // A reset from the guest resets the host connection too.
                let clean = flow.host_shut && flow.host_eof;
                done.push((*key, !clean));
                continue;
            }
            let over =
                |d: Duration| idle > smoltcp::time::Duration::from_micros(d.as_micros() as u64);
            if (matches!(state, S::Listen | S::SynReceived) && over(HANDSHAKE_TIMEOUT))
                || (guest_closed(state) && over(HALF_CLOSED_IDLE))
                || over(TCP_IDLE)
            {
                done.push((*key, true));
                continue;
            }
            let want_read = !flow.host_eof && s.can_send() && !congested;
            let interest = (want_read, want_write);
            if interest != flow.interest {
                let _ = self
                    .epoll
                    .modify(flow.host.as_raw_fd(), flow.token, want_read, want_write);
                flow.interest = interest;
            }
        }
        for (key, abort) in done {
            if abort {
                if let Some(h) = self.tcp.get(&key).and_then(|f| f.handle) {
                    let s = self.sockets.get_mut::<tcp::Socket>(h);
                    if s.state() != tcp::State::Closed {
                        s.abort();
                        let now = self.now();
                        self.iface.poll(now, &mut self.dev, &mut self.sockets);
                    }
                }
            }
            self.drop_tcp(key, abort);
        }
    }

    fn guest_udp(&mut self, guest: SocketAddr, remote: SocketAddr, payload: &[u8]) {
        let key = (guest, remote);
        let now = self.now();
        if let Some(&peer) = self.fwd_peers.get(&key) {
            self.fwd_reply(peer, payload);
            return;
        }
        if let Some(flow) = self.udp.get_mut(&key) {
            flow.last = now;
            let _ = flow.sock.send(payload);
            if let Some(r) = &mut flow.dns {
                r.sent(payload, now.total_millis() as u64);
            }
            return;
        }
        if let Some(peer) = self.fwd_peer_from_other_address(guest, remote) {
            self.fwd_reply(peer, payload);
            return;
        }
        if remote.port() == 67 || remote.port() == 547 {
            // DHCP is answered by the DHCP server when there is one.
            return;
        }
        if self.udp.len() >= MAX_UDP {
            self.stats.udp_refused_full += 1;
            return;
        }
        let mut relay = self.dns_relay(remote);
        let Some(target) = relay
            .as_ref()
            .map(dns::Relay::target)
            .or_else(|| self.map_remote(remote, Proto::Udp))
        else {
            self.stats.udp_refused_policy += 1;
            return;
        };
        let sock = match connected_udp(target) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("slirp: udp to {target}: {e}");
                return;
            }
        };
        let _ = sock.send(payload);
        if let Some(r) = &mut relay {
            r.sent(payload, now.total_millis() as u64);
        }
        let Some(token) = self.register(sock.as_raw_fd(), Tok::Udp(key), true, false) else {
            return;
        };
        let idle = if remote.port() == 53 {
            DNS_IDLE
        } else {
            UDP_IDLE
        };
        self.udp.insert(
            key,
            UdpFlow {
                sock,
                token,
                last: now,
                idle,
                dns: relay,
            },
        );
    }

    /// A guest's answer to a forwarded datagram goes back to the client through the
    /// forward's host socket.
    fn fwd_reply(&self, (token, client): (u64, SocketAddr), payload: &[u8]) {
        if let Some(u) = self
            .fwds
            .iter()
            .find(|l| l.token == token)
            .and_then(|l| l.udp.as_ref())
        {
            let _ = u.send_to(payload, client);
        }
    }

    /// The forwarded client a guest answers from another of its addresses than the one the
    /// forward names (a server bound to the wildcard address replies from the address the
    /// kernel picks, e.g. its SLAAC one): matched by the guest's port and the source the
    /// gateway gave the client.
    fn fwd_peer_from_other_address(
        &self,
        guest: SocketAddr,
        remote: SocketAddr,
    ) -> Option<(u64, SocketAddr)> {
        self.fwd_peers
            .iter()
            .find(|((g, r), _)| *r == remote && g.port() == guest.port())
            .map(|(_, peer)| *peer)
    }

    /// The failover state for a datagram to the DNS forwarder's `remote`, or None for any
    /// other destination (or when the host has no resolver).
    fn dns_relay(&self, remote: SocketAddr) -> Option<dns::Relay> {
        let cfg = self.core.config();
        let ip = remote.ip();
        if remote.port() != 53 || (ip != IpAddr::V4(cfg.dns) && ip != IpAddr::V6(cfg.dns6)) {
            return None;
        }
        dns::Relay::new(dns::resolver_order(
            &self.resolvers,
            ip.is_ipv4(),
            self.dns_preferred,
        ))
    }

    /// Sends flow `key`'s unanswered DNS queries to the next resolver, through a new socket;
    /// false when there is none left.
    fn dns_failover(&mut self, key: Key) -> bool {
        let ms = self.millis();
        let Some((target, resend)) = self
            .udp
            .get_mut(&key)
            .and_then(|f| f.dns.as_mut())
            .and_then(|r| r.next(ms))
        else {
            return false;
        };
        tracing::debug!("slirp: DNS: no answer, asking {target}");
        let Ok(sock) = connected_udp(target) else {
            return false;
        };
        for q in &resend {
            let _ = sock.send(q);
        }
        let Some(token) = self.register(sock.as_raw_fd(), Tok::Udp(key), true, false) else {
            return false;
        };
        if let Some(flow) = self.udp.get_mut(&key) {
            self.epoll.delete(flow.sock.as_raw_fd());
            self.tokens.remove(&flow.token);
            flow.sock = sock;
            flow.token = token;
        }
        true
    }

    /// Moves DNS flows whose resolver has not answered in time on to the next one.
    fn dns_retry(&mut self) {
        let ms = self.millis();
        let late: Vec<Key> = self
            .udp
            .iter()
            .filter(|(_, f)| f.dns.as_ref().is_some_and(|r| r.timed_out(ms)))
            .map(|(k, _)| *k)
            .collect();
        for key in late {
            self.dns_failover(key);
        }
    }

    fn udp_ready(&mut self, key: Key) {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.resize(65536, 0);
        let now = self.now();
        for _ in 0..64 {
            let Some(flow) = self.udp.get_mut(&key) else {
                break;
            };
            match flow.sock.recv(&mut buf) {
                Ok(n) => {
                    flow.last = now;
                    if let Some(r) = &mut flow.dns {
                        if r.answer(&buf[..n]) == dns::Answer::TryNext {
                            self.dns_failover(key);
                            break;
                        }
                        self.dns_preferred = Some(r.target().ip());
                    }
                    if let Some(f) = self.core.udp_frame(key.1, key.0, &buf[..n]) {
                        self.out.push_back((f, false));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    let refused = e.kind() == io::ErrorKind::ConnectionRefused;
                    let unreachable = no_way_to_remote(&e);
                    if refused || unreachable {
                        drain_error_queue(&flow.sock);
                    }
                    let dns = flow.dns.is_some();
                    if dns && self.dns_failover(key) {
                        break;
                    }
                    // The remote answered with a port unreachable, or a router on the way
                    // with host or network unreachable (or time exceeded): the gateway
                    // answers the guest in kind (a host unreachable for the latter).
                    if refused || unreachable {
                        self.udp_unreachable(key, refused);
                    }
                    break;
                }
            }
        }
        self.scratch = buf;
    }

    /// An ICMP port (or host) unreachable to the guest about its datagrams of flow `key`.
    fn udp_unreachable(&mut self, (guest, remote): Key, port: bool) {
        let Some(mac) = self.core.neighbour(guest.ip()) else {
            return;
        };
        // The error quotes a datagram of the flow (the guest matches it by its ports).
        let Some(orig) = self.core.udp_frame_to(mac, guest, remote, &[]) else {
            return;
        };
        if let Some(f) = orig
            .get(14..)
            .and_then(|packet| self.core.unreachable(packet, port))
        {
            self.out.push_back((f, false));
        }
    }

    fn guest_echo(&mut self, guest: IpAddr, remote: IpAddr, ident: u16, seq: u16, data: &[u8]) {
        let key = (guest, remote, ident);
        let now = self.now();
        if !self.icmp.contains_key(&key) {
            let cfg = self.core.config();
            if cfg.restricted
                || is_host_local(remote)
                || remote.is_multicast()
                || self.core.on_link(remote)
            {
                self.stats.icmp_refused += 1;
                return;
            }
            if self.icmp.len() >= MAX_ICMP {
                self.stats.icmp_refused += 1;
                return;
            }
            self.next_ping_ident = self.next_ping_ident.wrapping_add(1);
            let sock = match EchoSocket::open(remote, self.next_ping_ident) {
                Ok(s) => s,
                Err(e) => {
                    self.stats.icmp_refused += 1;
                    if !self.ping_warned {
                        self.ping_warned = true;
                        tracing::warn!(
                            "slirp: guests cannot ping: no ICMP echo socket ({e}); \
                             the sysctl net.ipv4.ping_group_range must include this process's group, \
                             or the process needs CAP_NET_RAW"
                        );
                    }
                    return;
                }
            };
            let Some(token) = self.register(sock.sock.as_raw_fd(), Tok::Icmp(key), true, false)
            else {
                return;
            };
            self.icmp.insert(
                key,
                IcmpFlow {
                    sock,
                    token,
                    last: now,
                },
            );
        }
        let Some(flow) = self.icmp.get_mut(&key) else {
            return;
        };
        flow.last = now;
        let _ = flow.sock.send(ident, seq, data);
    }

    fn icmp_ready(&mut self, key: (IpAddr, IpAddr, u16)) {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.resize(65536, 0);
        for _ in 0..64 {
            let Some(flow) = self.icmp.get_mut(&key) else {
                break;
            };
            match (&flow.sock.sock).read(&mut buf) {
                Ok(n) => {
                    let Some((seq, data)) = flow.sock.wire.reply(&buf[..n]) else {
                        continue;
                    };
                    if let Some(f) = self.core.echo_reply(key.1, key.0, key.2, seq, data) {
                        self.out.push_back((f, false));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => continue,
            }
        }
        self.scratch = buf;
    }

    /// The source address a forwarded client appears from: itself where the guest can
    /// answer it, else the gateway (with a port of its own).
    fn fwd_source(&mut self, client: SocketAddr, guest: SocketAddr) -> SocketAddr {
        let client = canonical(client);
        let cfg = self.core.config();
        if client.is_ipv4() == guest.is_ipv4()
            && !is_host_local(client.ip())
            && !self.core.on_link(client.ip())
            && !cfg.is_own(client.ip())
        {
            return client;
        }
        let gw = if guest.is_ipv4() {
            IpAddr::V4(cfg.gateway)
        } else {
            IpAddr::V6(cfg.gateway6)
        };
        self.next_port = if self.next_port == u16::MAX {
            49152
        } else {
            self.next_port + 1
        };
        SocketAddr::new(gw, self.next_port)
    }

    fn fwd_ready(&mut self, token: u64) {
        let Some(i) = self.fwds.iter().position(|l| l.token == token) else {
            return;
        };
        let fwd = self.fwds[i].fwd;
        match fwd.proto {
            Proto::Tcp => loop {
                let Some(l) = self.fwds[i].tcp.as_ref() else {
                    return;
                };
                let (stream, client) = match l.accept() {
                    Ok(x) => x,
                    Err(_) => return,
                };
                self.fwd_accept(fwd, stream, client);
            },
            Proto::Udp => {
                let mut buf = std::mem::take(&mut self.scratch);
                buf.resize(65536, 0);
                for _ in 0..64 {
                    let Some(u) = self.fwds.get(i).and_then(|l| l.udp.as_ref()) else {
                        break;
                    };
                    let (n, client) = match u.recv_from(&mut buf) {
                        Ok(x) => x,
                        Err(_) => break,
                    };
                    let now = self.now();
                    let src = match self.fwd_sources.get_mut(&(token, client)) {
                        Some((s, last)) => {
                            *last = now;
                            *s
                        }
                        None => {
                            if self.fwd_sources.len() >= MAX_UDP {
                                self.stats.udp_refused_full += 1;
                                continue;
                            }
                            let s = self.fwd_source(client, fwd.guest);
                            self.fwd_sources.insert((token, client), (s, now));
                            self.fwd_peers.insert((fwd.guest, s), (token, client));
                            s
                        }
                    };
                    if let Some(f) = self.core.udp_frame(src, fwd.guest, &buf[..n]) {
                        self.out.push_back((f, false));
                    } else {
                        self.arp_for(fwd.guest.ip());
                    }
                }
                self.scratch = buf;
            }
        }
    }

    fn arp_for(&mut self, ip: IpAddr) {
        if let Some(f) = self.core.solicit(ip) {
            self.out.push_back((f, false));
        }
    }

    fn fwd_accept(&mut self, fwd: Forward, stream: TcpStream, client: SocketAddr) {
        if self.tcp.len() >= MAX_TCP && !self.make_room() {
            self.stats.tcp_refused_full += 1;
            return;
        }
        let src = self.fwd_source(client, fwd.guest);
        let key = (fwd.guest, src);
        if self.tcp.contains_key(&key) {
            return;
        }
        let _ = stream.set_nonblocking(true);
        let _ = stream.set_nodelay(true);
        let mut s = guest_socket();
        let cx = self.iface.context();
        if s.connect(
            cx,
            (fwd.guest.ip(), fwd.guest.port()),
            (src.ip(), src.port()),
        )
        .is_err()
        {
            return;
        }
        if self.core.neighbour(fwd.guest.ip()).is_none() {
            self.arp_for(fwd.guest.ip());
        }
        let handle = self.sockets.add(s);
        let host: Socket = stream.into();
        let Some(token) = self.register(host.as_raw_fd(), Tok::Tcp(key), false, false) else {
            self.sockets.remove(handle);
            return;
        };
        self.stats.fwd_accepted += 1;
        let now = self.now();
        self.tcp.insert(
            key,
            TcpFlow {
                host,
                handle: Some(handle),
                state: TcpState::Open,
                token,
                host_eof: false,
                host_shut: false,
                interest: (false, false),
                last: now,
                guest_mss: None,
                host_readable: true,
            },
        );
    }

    /// Expires idle UDP and ICMP flows.
    fn sweep(&mut self, now: Instant) {
        let micros = |d: Duration| smoltcp::time::Duration::from_micros(d.as_micros() as u64);
        // Forwarded UDP clients quiet for as long as a UDP flow are forgotten.
        let quiet: Vec<_> = self
            .fwd_sources
            .iter()
            .filter(|(_, (_, last))| now - *last > micros(UDP_IDLE))
            .map(|(k, (s, _))| (*k, *s))
            .collect();
        for ((token, client), src) in quiet {
            self.fwd_sources.remove(&(token, client));
            self.fwd_peers
                .retain(|(_, seen), (t, _)| !(*t == token && *seen == src));
        }
        self.dns_retry();
        let old: Vec<Key> = self
            .udp
            .iter()
            .filter(|(_, f)| now - f.last > micros(f.idle))
            .map(|(k, _)| *k)
            .collect();
        for k in old {
            if let Some(f) = self.udp.remove(&k) {
                self.epoll.delete(f.sock.as_raw_fd());
                self.tokens.remove(&f.token);
            }
        }
        let old: Vec<_> = self
            .icmp
            .iter()
            .filter(|(_, f)| now - f.last > micros(ICMP_IDLE))
            .map(|(k, _)| *k)
            .collect();
        for k in old {
            if let Some(f) = self.icmp.remove(&k) {
                self.epoll.delete(f.sock.sock.as_raw_fd());
                self.tokens.remove(&f.token);
            }
        }
    }

    /// smoltcp, the splice, smoltcp again, then the frames out.
    fn turn(&mut self) {
        let now = self.now();
        self.iface.poll(now, &mut self.dev, &mut self.sockets);
        self.pump();
        let now = self.now();
        self.iface.poll(now, &mut self.dev, &mut self.sockets);
        if now - self.last_sweep > smoltcp::time::Duration::from_secs(1) {
            self.last_sweep = now;
            self.sweep(now);
        }
        let ms = self.millis();
        while let Some(f) = self.core.poll(ms) {
            self.out.push_back((f, false));
        }
        self.drain_tx();
        self.flush();
        for buf in self.dev.spent.drain(..) {
            recycle(&mut self.dev.pool, buf);
        }
    }

    /// Frames smoltcp's packets where they lie: the pseudo-header sum of an open checksum,
    /// the Ethernet header and, on a super-frame plug, the virtio-net header in front.
    fn drain_tx(&mut self) {
        let mut tx = std::mem::take(&mut self.dev.tx);
        let room = self.dev.room;
        for mut buf in tx.drain(..) {
            if self.dev.partial_tcp {
                write_pseudo_header_sum(&mut buf[room..]);
            }
            let eth = room - ETH_HEADER;
            if !self.core.frame_ip(&mut buf[eth..]) {
                if let Some((_, dst, _)) = split_ip(&buf[room..]) {
                    self.arp_for(dst);
                }
                recycle(&mut self.dev.pool, buf);
                continue;
            }
            if eth > 0 {
                let h = self.vnet_header(&buf[eth..], self.dev.partial_tcp).emit();
                buf[..eth].copy_from_slice(&h);
            }
            self.tcp_out.push_back(buf);
        }
        self.dev.tx = tx;
    }

    fn flush(&mut self) {
        if self.plug_blocked {
            return;
        }
        let vnet = self.plug.vnet();
        while !self.out.is_empty() {
            let n = self.out.len().min(64);
            let frames: Vec<&(Vec<u8>, bool)> = self.out.iter().take(n).collect();
            let res = if vnet {
                let hdrs: Vec<[u8; vnet::HEADER_LEN]> = frames
                    .iter()
                    .map(|(f, partial)| self.vnet_header(f, *partial).emit())
                    .collect();
                let msgs: Vec<[&[u8]; 2]> = hdrs
                    .iter()
                    .zip(&frames)
                    .map(|(h, (f, _))| [&h[..], &f[..]])
                    .collect();
                self.plug.send_batch_joined(&msgs)
            } else {
                let refs: Vec<&[u8]> = frames.iter().map(|(f, _)| &f[..]).collect();
                self.plug.send_batch(&refs)
            };
            let Some(k) = self.sent(res) else { break };
            self.out.drain(..k);
        }
        while !self.tcp_out.is_empty() && !self.plug_blocked {
            let n = self.tcp_out.len().min(64);
            let refs: Vec<&[u8]> = self.tcp_out.iter().take(n).map(|f| &f[..]).collect();
            let res = self.plug.send_batch(&refs);
            let Some(k) = self.sent(res) else { break };
            for buf in self.tcp_out.drain(..k) {
                recycle(&mut self.dev.pool, buf);
            }
        }
        if self.plug_blocked {
            return;
        }
        // Not a system call per turn: only a watch left from a blocked plug is taken off.
        if self.plug_write_watched {
            self.plug_write_watched = false;
            let _ = self
                .epoll
                .modify(self.plug.data_fd().as_raw_fd(), PLUG, true, false);
        }
    }

    /// How many frames a batch send took off the front of its queue (an invalid one counts,
    /// dropped), or None when it took none: the plug is full (epoll then says when it takes
    /// more) or took nothing.
    fn sent(&mut self, res: io::Result<usize>) -> Option<usize> {
        match res {
            Ok(0) => None,
            Ok(k) => {
                self.stats.frames_out += k as u64;
                Some(k)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.plug_blocked = true;
                self.plug_write_watched = true;
                let _ = self
                    .epoll
                    .modify(self.plug.data_fd().as_raw_fd(), PLUG, true, true);
                None
            }
            Err(_) => {
                self.stats.frames_dropped_out += 1;
                Some(1)
            }
        }
    }

    /// The virtio-net header for a frame to the guest: TCP segments larger than the guest's
    /// MSS are cut by the receiving kernel (or plug), and an open TCP checksum (`partial`) is
    /// left to it.
    fn vnet_header(&self, frame: &[u8], partial: bool) -> vnet::Header {
        let mtu = self
            .tcp_mss_for(frame)
            .map(|mss| {
                usize::from(mss)
                    + if frame.get(12..14) == Some(&[0x86, 0xdd]) {
                        60
                    } else {
                        40
                    }
            })
            .unwrap_or(1500);
        let mut h = vnet::header_for(frame, mtu);
        if let Some(start) = partial.then(|| partial_tcp_start(frame)).flatten() {
            h.flags |= vnet::F_NEEDS_CSUM;
            h.csum_start = start as u16;
            h.csum_offset = 16;
        }
        h
    }

    fn tcp_mss_for(&self, frame: &[u8]) -> Option<u16> {
        if frame.len() <= 1514 {
            return None;
        }
        let (src, dst, l4) = split_ip(frame.get(14..)?)?;
        let t = TcpPacket::new_checked(l4).ok()?;
        let (sport, dport) = (t.src_port(), t.dst_port());
        self.tcp
            .get(&(SocketAddr::new(dst, dport), SocketAddr::new(src, sport)))
            .and_then(|f| f.guest_mss)
    }
}

/// Where the TCP header starts in an Ethernet frame whose TCP checksum is left open (the
/// engine's own frames on a super-frame plug), or None for other frames.
fn partial_tcp_start(frame: &[u8]) -> Option<usize> {
    match (frame.get(12..14)?, frame.get(14)? >> 4) {
        ([0x08, 0x00], 4) if frame.get(23) == Some(&6) => {
            Some(14 + usize::from(frame[14] & 0xf) * 4)
        }
        ([0x86, 0xdd], 6) if frame.get(20) == Some(&6) => Some(14 + 40),
        _ => None,
    }
}

/// Stores the pseudo-header sum in the checksum field of a TCP segment smoltcp left without
/// one (the receiver adds the segment's own sum).
fn write_pseudo_header_sum(p: &mut [u8]) {
    use filo_vnl::wire::checksum::{fold, sum16};
    let (sum, at) = match p.first().map(|b| b >> 4) {
        Some(4) if p.len() >= 20 && p[9] == 6 => {
            let ihl = usize::from(p[0] & 0xf) * 4;
            let len = (p.len().saturating_sub(ihl)) as u32;
            let mut sum = sum16(0, &p[12..20]);
            sum += 6 + len;
            (sum, ihl + 16)
        }
        Some(6) if p.len() >= 40 && p[6] == 6 => {
            let len = (p.len() - 40) as u32;
            let mut sum = sum16(0, &p[8..40]);
            sum += (len >> 16) + (len & 0xffff) + 6;
            (sum, 40 + 16)
        }
        _ => return,
    };
    if p.len() >= at + 2 {
        // fold() complements; the field holds the sum itself.
        let v = !fold(sum);
        p[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }
}

/// A smoltcp socket for one guest connection: large buffers (the window scales to them), no
/// Nagle, no delayed ACKs, aborted after 2 minutes without progress.
fn guest_socket() -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0u8; TCP_BUFFER]),
        tcp::SocketBuffer::new(vec![0u8; TCP_BUFFER]),
    );
    s.set_nagle_enabled(false);
    s.set_ack_delay(None);
    s.set_timeout(Some(smoltcp::time::Duration::from_secs(120)));
    s
}

/// Whether an IP packet is a TCP segment with SYN set (SYN or SYN-ACK).
fn carries_syn(packet: &[u8]) -> bool {
    split_ip(packet)
        .and_then(|(_, _, l4)| TcpPacket::new_checked(l4).ok())
        .is_some_and(|t| t.syn())
}

/// The guest has sent its FIN (or more): only the host's side of the flow is open.
fn guest_closed(state: tcp::State) -> bool {
    matches!(
        state,
        tcp::State::CloseWait | tcp::State::LastAck | tcp::State::Closing
    )
}

/// Rewrites a SYN's MSS option to [`GSO_MSS`] (the guest takes super-frames: smoltcp may
/// send segments of up to 64 KiB, which the guest's kernel cuts to its real MSS). Returns the
/// packet and the guest's own MSS.
fn raise_mss(mut packet: Vec<u8>) -> (Vec<u8>, Option<u16>) {
    let (hdr, v6) = match packet.first().map(|b| b >> 4) {
        Some(4) => (usize::from(packet[0] & 0xf) * 4, false),
        Some(6) => (40, true),
        _ => return (packet, None),
    };
    let Some(l4) = packet.get(hdr..) else {
        return (packet, None);
    };
    let Ok(tcp) = TcpPacket::new_checked(l4) else {
        return (packet, None);
    };
    let opts_end = usize::from(tcp.header_len());
    let mut i = 20;
    let mut found = None;
    let opts = &l4[..opts_end];
    while i < opts_end {
        match TcpOption::parse(&opts[i..]) {
            Ok((rest, TcpOption::MaxSegmentSize(m))) => {
                found = Some((m, i));
                let _ = rest;
                break;
            }
            Ok((_, TcpOption::EndOfList)) => break,
            Ok((rest, _)) => i = opts_end - rest.len(),
            Err(_) => break,
        }
    }
    let Some((mss, at)) = found else {
        return (packet, None);
    };
    let pos = hdr + at + 2;
    packet[pos..pos + 2].copy_from_slice(&GSO_MSS.to_be_bytes());
    // The checksum no longer matches; smoltcp does not verify it (the core did).
    let _ = v6;
    (packet, Some(mss))
}

/// A non-blocking UDP socket connected to `target`.
fn connected_udp(target: SocketAddr) -> io::Result<UdpSocket> {
    let bind: SocketAddr = if target.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = UdpSocket::bind(bind)?;
    s.set_nonblocking(true)?;
    s.connect(target)?;
    if let Err(e) = crate::sys::set_recv_err(s.as_fd(), target.is_ipv6()) {
        tracing::debug!("slirp: udp to {target}: no soft ICMP errors: {e}");
    }
    Ok(s)
}

/// Whether a host socket's error says the remote cannot be reached (a router's ICMP host or
/// network unreachable, or time exceeded).
fn no_way_to_remote(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EHOSTUNREACH | libc::ENETUNREACH)
    )
}

/// Empties a UDP socket's error queue (the ICMP errors `IP_RECVERR` keeps there, which
/// would otherwise hold on to its receive buffer).
fn drain_error_queue(sock: &UdpSocket) {
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 64];
    let sock = socket2::SockRef::from(sock);
    for _ in 0..16 {
        if sock.recv_with_flags(&mut buf, libc::MSG_ERRQUEUE).is_err() {
            break;
        }
    }
}

fn rand_seed() -> u64 {
    let mut b = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    u64::from_ne_bytes(b)
}
