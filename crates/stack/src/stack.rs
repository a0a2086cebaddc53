//! [`Stack`]: one user-space IP stack — links, addresses, routes, sockets — and its builder,
//! its netlink-like configuration API, and the glue that runs smoltcp over filo's [`Net`].

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};

use filo_vnl::Plug;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{HardwareAddress, IpListenEndpoint};

use crate::config::{mac_from_name, ConfigError, IfaceConfig};
use crate::driver::{Driver, DriverShared, Port};
use crate::forward::{Hook, HookPoint, NatOption, NatSpec};
use crate::net::{Cidr, Counters, Link, Net, NextHop, Route};
use crate::serve::{DhcpServer, Dhcpv6Server, RouterAdverts};
use crate::wire::{self, Mac, ETH_HDR};
use crate::Error;

/// smoltcp holds at most this many addresses for the whole stack (its build-time limit).
pub const MAX_ADDRS: usize = 8;
const LISTEN_SPARE: usize = 4;

pub(crate) struct Shared {
    pub name: String,
    /// What default MACs derive from: the name when one was given (stable across runs), or
    /// the generated name with a random part, so two stacks never collide by default.
    pub mac_key: String,
    pub inner: Mutex<Inner>,
    pub cond: Condvar,
    pub dirty: AtomicBool,
    pub slot: AtomicUsize,
    pub driver: Arc<DriverShared>,
    /// How a link whose switch went away is reconnected; None: it stays down.
    pub reconnect: Option<filo_vnl::reconnect::Policy>,
    /// Told when a link is gone for good (no reconnection, or it gave up).
    pub on_link_gone: Option<LinkGoneHook>,
}

/// Called with the link's name and why it is gone for good; see
/// [`StackBuilder::on_link_gone`].
pub type LinkGoneHook = Box<dyn Fn(&str, &str) + Send + Sync>;

impl Shared {
    /// Locks the stack state (a poisoned lock is still usable: state stays consistent).
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells the driver this stack has work (data queued, a socket opened or closed).
    pub fn kick(&self) {
        if !self.dirty.swap(true, Ordering::AcqRel) {
            self.driver.kick(self.slot.load(Ordering::Acquire));
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Let the driver free this stack's slot now rather than at its next timer.
        let slot = self.slot.load(Ordering::Acquire);
        if slot != usize::MAX {
            self.driver.kick(slot);
        }
    }
}

pub(crate) struct ListenerState {
    pub endpoint: IpListenEndpoint,
    pub listening: Vec<SocketHandle>,
    pub embryonic: Vec<SocketHandle>,
    pub ready: VecDeque<SocketHandle>,
}

struct LinkConf {
    slaac: bool,
    fqdn: Option<String>,
    dhcp_addr: Option<Cidr>,
    rs_left: u8,
    rs_at: Instant,
}

pub(crate) struct Inner {
    pub iface: Interface,
    /// The MTU `iface` was made with.
    iface_mtu: usize,
    pub sockets: SocketSet<'static>,
    pub net: Net,
    /// The links' plugs, by link index (the driver's side of each link).
    pub ports: Vec<Port>,
    /// Frames on their way from `net` to the plugs (kept for its capacity).
    txq: Vec<Vec<u8>>,
    pub listeners: HashMap<usize, ListenerState>,
    next_listener: usize,
    next_port: u16,
    pub links_changed: bool,
    /// Sockets closed by their owner, removed once smoltcp is done with them.
    pub closing: Vec<SocketHandle>,
    conf: Vec<LinkConf>,
    pub dns_servers: Vec<IpAddr>,
    pub tcp_buffer: usize,
    pub dhcp_events: u64,
    /// The deadline the driver last scheduled for this stack.
    pub scheduled: Option<Instant>,
}

struct Dev<'a> {
    net: &'a mut Net,
    now: Instant,
}

struct Rx(Vec<u8>);

struct Tx<'a> {
    net: &'a mut Net,
    now: Instant,
}

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut b = self.net.take_frame_buf();
        b.clear();
        b.resize(ETH_HDR + len, 0);
        let r = f(&mut b[ETH_HDR..]);
        self.net.output(self.now, b);
        r
    }
}

impl Device for Dev<'_> {
    type RxToken<'b>
        = Rx
    where
        Self: 'b;
    type TxToken<'b>
        = Tx<'b>
    where
        Self: 'b;

    fn receive(&mut self, _t: Instant) -> Option<(Rx, Tx<'_>)> {
        let p = self.net.rx.pop_front()?;
        Some((
            Rx(p),
            Tx {
                net: self.net,
                now: self.now,
            },
        ))
    }

    fn transmit(&mut self, _t: Instant) -> Option<Tx<'_>> {
        Some(Tx {
            net: self.net,
            now: self.now,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ip;
        c.max_transmission_unit = self.net.ip_mtu();
        c
    }
}

/// A smoltcp interface over `net` (which tells it the MTU).
fn new_iface(net: &mut Net, now: Instant) -> Interface {
    let mut cfg = Config::new(HardwareAddress::Ip);
    cfg.random_seed = seed();
    let mut iface = Interface::new(cfg, &mut Dev { net, now }, now);
    // Routing is filo's: smoltcp is told every destination is reachable.
    let _ = iface
        .routes_mut()
        .add_default_ipv4_route(Ipv4Addr::new(192, 0, 0, 8));
    let _ = iface
        .routes_mut()
        .add_default_ipv6_route(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0xfe));
    iface
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    static N: AtomicUsize = AtomicUsize::new(0);
    t ^ ((N.fetch_add(1, Ordering::Relaxed) as u64) << 32) ^ u64::from(std::process::id())
}

impl Inner {
    fn new() -> Inner {
        let mut net = Net::new();
        let now = Instant::now();
        let iface_mtu = net.ip_mtu();
        let iface = new_iface(&mut net, now);
        let mut inner = Inner {
            iface,
            iface_mtu,
            sockets: SocketSet::new(Vec::new()),
            net,
            ports: Vec::new(),
            txq: Vec::new(),
            listeners: HashMap::new(),
            next_listener: 0,
            next_port: 49152 + (seed() % 16000) as u16,
            links_changed: false,
            closing: Vec::new(),
            conf: Vec::new(),
            dns_servers: Vec::new(),
            tcp_buffer: 128 * 1024,
            dhcp_events: 0,
            scheduled: None,
        };
        inner.sync_addrs();
        inner
    }

    /// Mirrors the links' addresses into smoltcp (which accepts packets only for those), and
    /// their MTU: smoltcp reads a device's MTU once, so a changed MTU means a new interface
    /// (its state is only addresses and routes; the sockets live in the socket set).
    pub fn sync_addrs(&mut self) {
        self.net.hooks.readdress(&self.net.links);
        self.net.readvertise_prefixes(Instant::now());
        if self.net.ip_mtu() != self.iface_mtu {
            self.iface_mtu = self.net.ip_mtu();
            self.iface = new_iface(&mut self.net, Instant::now());
        }
        let mut all: Vec<Cidr> = Vec::new();
        for l in self.net.links.iter().filter(|l| l.up) {
            for c in &l.addrs {
                if !all.contains(c) {
                    all.push(*c);
                }
            }
        }
        if all.len() >= MAX_ADDRS {
            tracing::warn!("more than {MAX_ADDRS} addresses: the extra ones are ignored");
            all.truncate(MAX_ADDRS - 1);
        }
        // Loopback last: smoltcp falls back to the first IPv4 address as a source.
        all.push(Cidr {
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            prefix: 8,
        });
        self.iface.update_ip_addrs(|v| {
            v.clear();
            for c in &all {
                let _ = v.push(c.to_smoltcp());
            }
        });
    }

    /// Where a socket bound to `addr` listens: its port (a free one for port 0) and its
    /// address with IPv4-mapped IPv6 unmapped (none for `0.0.0.0`/`::`, i.e. every address).
    pub fn listen_endpoint(&mut self, addr: SocketAddr) -> IpListenEndpoint {
        let port = if addr.port() == 0 {
            self.ephemeral_port()
        } else {
            addr.port()
        };
        let ip = unmap(addr.ip());
        IpListenEndpoint {
            addr: (!ip.is_unspecified()).then(|| ip.into()),
            port,
        }
    }

    pub fn ephemeral_port(&mut self) -> u16 {
        self.next_port = if self.next_port == u16::MAX {
            49152
        } else {
            self.next_port + 1
        };
        self.next_port
    }

    pub fn new_tcp(&mut self) -> SocketHandle {
        let rx = tcp::SocketBuffer::new(vec![0u8; self.tcp_buffer]);
        let tx = tcp::SocketBuffer::new(vec![0u8; self.tcp_buffer]);
        let mut s = tcp::Socket::new(rx, tx);
        s.set_nagle_enabled(false);
        // smoltcp's delayed ACK (10 ms, but immediate once two segments are unacknowledged)
        // halves the ACKs of a bulk transfer; request/response traffic piggybacks its ACKs.
        self.sockets.add(s)
    }

    pub fn add_listener(&mut self, endpoint: IpListenEndpoint) -> io::Result<usize> {
        let in_use = self.listeners.values().any(|l| {
            l.endpoint.port == endpoint.port
                && (l.endpoint.addr.is_none()
                    || endpoint.addr.is_none()
                    || l.endpoint.addr == endpoint.addr)
        });
        if in_use {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("port {} is already listened on", endpoint.port),
            ));
        }
        let id = self.next_listener;
        self.next_listener += 1;
        self.listeners.insert(
            id,
            ListenerState {
                endpoint,
                listening: Vec::new(),
                embryonic: Vec::new(),
                ready: VecDeque::new(),
            },
        );
        self.refill_listeners();
        Ok(id)
    }

    fn refill_listeners(&mut self) {
        let ids: Vec<usize> = self.listeners.keys().copied().collect();
        for id in ids {
            while let Some(l) = self.listeners.get_mut(&id) {
                if l.listening.len() >= LISTEN_SPARE {
                    break;
                }
                let ep = l.endpoint;
                let h = self.new_tcp();
                if self.sockets.get_mut::<tcp::Socket>(h).listen(ep).is_err() {
                    self.sockets.remove(h);
                    break;
                }
                if let Some(l) = self.listeners.get_mut(&id) {
                    l.listening.push(h);
                }
            }
        }
    }

    pub fn remove_listener(&mut self, id: usize) {
        if let Some(l) = self.listeners.remove(&id) {
            for h in l.listening.into_iter().chain(l.embryonic).chain(l.ready) {
                self.sockets.get_mut::<tcp::Socket>(h).abort();
                self.closing.push(h);
            }
        }
    }

    /// filo's bookkeeping after each smoltcp turn, one job each.
    fn after_poll(&mut self, now: Instant) {
        self.settle_listeners();
        self.reap_closed();
        self.apply_dhcp_events();
        self.apply_router_adverts();
        self.solicit_routers(now);
    }

    /// Listeners: moves sockets through listening -> embryonic -> ready, keeping spares.
    fn settle_listeners(&mut self) {
        let sockets = &mut self.sockets;
        let mut refill = false;
        for l in self.listeners.values_mut() {
            let mut i = 0;
            while i < l.listening.len() {
                if sockets.get::<tcp::Socket>(l.listening[i]).state() != tcp::State::Listen {
                    l.embryonic.push(l.listening.swap_remove(i));
                    refill = true;
                } else {
                    i += 1;
                }
            }
            let mut i = 0;
            while i < l.embryonic.len() {
                let h = l.embryonic[i];
                match sockets.get::<tcp::Socket>(h).state() {
                    tcp::State::SynReceived | tcp::State::Listen => i += 1,
                    tcp::State::Closed | tcp::State::TimeWait => {
                        l.embryonic.swap_remove(i);
                        sockets.remove(h);
                    }
                    _ => {
                        l.embryonic.swap_remove(i);
                        l.ready.push_back(h);
                    }
                }
            }
        }
        if refill {
            self.refill_listeners();
        }
    }

    /// Removes closed sockets whose owner is gone.
    fn reap_closed(&mut self) {
        let sockets = &mut self.sockets;
        self.closing.retain(|&h| {
            let done = matches!(
                sockets.get::<tcp::Socket>(h).state(),
                tcp::State::Closed | tcp::State::TimeWait
            );
            if done {
                sockets.remove(h);
            }
            !done
        });
    }

    /// Applies DHCP lease changes: addresses, default route, DNS servers.
    fn apply_dhcp_events(&mut self) {
        for (i, event) in std::mem::take(&mut self.net.dhcp_events) {
            self.dhcp_events += 1;
            if let Some(old) = self.conf.get_mut(i).and_then(|c| c.dhcp_addr.take()) {
                self.net.links[i].addrs.retain(|c| *c != old);
                self.net.routes.retain(|r| {
                    !(r.ifindex == Some(i) && r.dst.prefix == 0 && r.dst.addr.is_ipv4())
                });
            }
            if let filo_dhcp::Event::Configured(lease) = event {
                let c = Cidr {
                    addr: IpAddr::V4(lease.addr),
                    prefix: lease.prefix,
                };
                tracing::info!(link = %self.net.links[i].name, "DHCP lease {c}");
                self.net.links[i].addrs.push(c);
                self.net.announce(i, lease.addr);
                if let Some(conf) = self.conf.get_mut(i) {
                    conf.dhcp_addr = Some(c);
                }
                if let Some(r) = lease.router {
                    self.net.routes.push(Route {
                        dst: Cidr {
                            addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                            prefix: 0,
                        },
                        via: Some(IpAddr::V4(r)),
                        ifindex: Some(i),
                    });
                }
                for d in lease.dns {
                    if !self.dns_servers.contains(&IpAddr::V4(d)) {
                        self.dns_servers.push(IpAddr::V4(d));
                    }
                }
            }
            self.sync_addrs();
        }
    }

    /// SLAAC: addresses and default routes from router advertisements.
    fn apply_router_adverts(&mut self) {
        let adverts = std::mem::take(&mut self.net.adverts);
        let mut changed = false;
        for (i, router, ra) in adverts {
            let Some(conf) = self.conf.get_mut(i) else {
                continue;
            };
            if !conf.slaac {
                continue;
            }
            conf.rs_left = 0;
            let mac = self.net.links[i].mac;
            for (prefix, len, valid, _pref) in &ra.prefixes {
                if *valid == 0 {
                    continue;
                }
                let iid = match &conf.fqdn {
                    Some(name) => {
                        let m = mac_from_name(name);
                        let m2 = mac_from_name(&format!("{name}/iid"));
                        [m[0] & 0xfd, m[1], m[2], m[3], m[4], m[5], m2[1], m2[2]]
                    }
                    None => wire::eui64(&mac),
                };
                let mut o = prefix.octets();
                o[8..16].copy_from_slice(&iid);
                let c = Cidr {
                    addr: IpAddr::V6(Ipv6Addr::from(o)),
                    prefix: *len,
                };
                let l = &mut self.net.links[i];
                if !l.addrs.contains(&c) {
                    tracing::info!(link = %l.name, "SLAAC address {c}");
                    l.addrs.push(c);
                    changed = true;
                }
            }
            if ra.router_lifetime > 0 {
                let r = Route {
                    dst: Cidr {
                        addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                        prefix: 0,
                    },
                    via: Some(router),
                    ifindex: Some(i),
                };
                if !self.net.routes.contains(&r) {
                    self.net.routes.push(r);
                }
            }
        }
        if changed {
            self.sync_addrs();
        }
    }

    /// Router solicitations while SLAAC waits for its first advert.
    fn solicit_routers(&mut self, now: Instant) {
        for i in 0..self.conf.len() {
            let c = &mut self.conf[i];
            if c.slaac && c.rs_left > 0 && now >= c.rs_at {
                c.rs_left -= 1;
                c.rs_at = now + Duration::from_secs(2);
                self.net.router_solicit(i);
            }
        }
    }

    /// One turn: smoltcp in and out, then filo's timers and the bookkeeping that follows.
    pub fn process(&mut self, now: Instant) {
        for _ in 0..64 {
            let mut dev = Dev {
                net: &mut self.net,
                now,
            };
            self.iface.poll(now, &mut dev, &mut self.sockets);
            self.net.on_timer(now);
            self.after_poll(now);
            if self.net.rx.is_empty() {
                break;
            }
        }
        self.transmit();
    }

    /// Sends what the layer queued on the links' plugs.
    pub fn transmit(&mut self) {
        crate::driver::transmit(&mut self.net, &mut self.ports, &mut self.txq);
    }

    /// Runs a turn on the calling thread (a socket write or read that changed what smoltcp
    /// has to send) so the data leaves without waking the driver; returns whether the driver
    /// still needs a kick (an earlier deadline than it knows, or output it must wait to send).
    pub fn process_inline(&mut self) -> bool {
        let now = Instant::now();
        self.process(now);
        let backlog = self.ports.iter().any(|p| !p.backlog.is_empty());
        let d = self.next_deadline(now);
        backlog
            || match (d, self.scheduled) {
                (Some(d), Some(s)) => d < s,
                (Some(_), None) => true,
                (None, _) => false,
            }
    }

    pub fn next_deadline(&mut self, now: Instant) -> Option<Instant> {
        let mut d = self.iface.poll_at(now, &self.sockets);
        let mut take = |t: Option<Instant>| {
            if let Some(t) = t {
                d = Some(d.map_or(t, |x| x.min(t)));
            }
        };
        take(self.net.poll_at());
        for c in &self.conf {
            if c.slaac && c.rs_left > 0 {
                take(Some(c.rs_at));
            }
        }
        if !self.net.rx.is_empty() {
            take(Some(now));
        }
        d
    }
}

/// A user-space IP stack. Cheap to clone: clones share the stack. Sockets keep it alive.
#[derive(Clone)]
pub struct Stack {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("name", &self.shared.name)
            .finish()
    }
}

enum LinkSpec {
    Vnl(String),
    Plug(Plug),
    Unplugged,
}

/// Builds a [`Stack`]: name, interfaces (each a VNL or a plug with a configuration string),
/// driver and buffer sizes.
pub struct StackBuilder {
    name: Option<String>,
    /// Each interface with its configuration, parsed when given (an error is reported by
    /// [`StackBuilder::build`]).
    links: Vec<(LinkSpec, Result<IfaceConfig, ConfigError>)>,
    driver: Option<Driver>,
    tcp_buffer: usize,
    reconnect: Option<filo_vnl::reconnect::Policy>,
    on_link_gone: Option<LinkGoneHook>,
    forwarding: bool,
    rp_filter: bool,
    hooks: Vec<BuilderHook>,
    servers: Vec<BuilderServer>,
}

/// A hook as the builder was given it: made once the links are known.
enum BuilderHook {
    Hook(Vec<HookPoint>, Box<dyn Hook>),
    Filter(String),
    Masquerade(usize),
    Snat(usize, IpAddr),
    PortForward(usize, String),
    Nptv6(usize, String),
}

/// A server as the builder was given it: started once the links are there.
enum BuilderServer {
    Dhcp(usize, DhcpServer),
    Adverts(usize, RouterAdverts),
    Dhcpv6(usize, Dhcpv6Server),
}

impl std::fmt::Debug for StackBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackBuilder")
            .field("name", &self.name)
            .finish()
    }
}

impl StackBuilder {
    /// The stack's name: used in logs and to derive stable MAC addresses.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// An interface over `vnl` (any filo VNL) configured by `conf` (iothconf terms).
    pub fn interface(mut self, vnl: impl Into<String>, conf: impl Into<String>) -> Self {
        let conf = IfaceConfig::parse(&conf.into());
        self.links.push((LinkSpec::Vnl(vnl.into()), conf));
        self
    }

    /// An interface over an already open plug (an in-process cable, a hosted switch, …).
    pub fn interface_plug(mut self, plug: Plug, conf: impl Into<String>) -> Self {
        let conf = IfaceConfig::parse(&conf.into());
        self.links.push((LinkSpec::Plug(plug), conf));
        self
    }

    /// [`StackBuilder::interface_plug`] with a configuration already parsed (or built).
    pub fn interface_plug_config(mut self, plug: Plug, conf: IfaceConfig) -> Self {
        self.links.push((LinkSpec::Plug(plug), Ok(conf)));
        self
    }

    /// An interface with no plug: frames it sends are kept (for tests of the frame path).
    pub fn interface_unplugged(mut self, conf: impl Into<String>) -> Self {
        let conf = IfaceConfig::parse(&conf.into());
        self.links.push((LinkSpec::Unplugged, conf));
        self
    }

    /// The driver thread to run on (default: the process-wide one).
    pub fn driver(mut self, driver: &Driver) -> Self {
        self.driver = Some(driver.clone());
        self
    }

    /// How a link whose switch goes away (a `vde://` switch restarting on the same path) is
    /// reconnected: the default [`filo_vnl::reconnect::Policy`] unless told otherwise; None
    /// leaves it down. The link keeps its MAC and addresses; TCP connections carry on once
    /// it is back. Each loss and return is logged at warn level.
    pub fn reconnect(mut self, policy: Option<filo_vnl::reconnect::Policy>) -> Self {
        self.reconnect = policy;
        self
    }

    /// Calls `hook` (on the driver thread) with the link's name and the reason when a link is
    /// gone for good: its plug cannot be reconnected, reconnection is off, or it gave up. A
    /// command may exit there. The stack may be locked during the call: the hook must not use
    /// it (nor wait for something that does).
    pub fn on_link_gone(mut self, hook: impl Fn(&str, &str) + Send + Sync + 'static) -> Self {
        self.on_link_gone = Some(Box::new(hook));
        self
    }

    /// Forwards IP packets for others between the stack's interfaces, as a router does
    /// (IPv4 and IPv6): longest-prefix routes, hop limit, ICMP time exceeded, unreachable and
    /// "fragmentation needed" / "packet too big"; no redirects. Off by default.
    pub fn forwarding(mut self, on: bool) -> Self {
        self.forwarding = on;
        self
    }

    /// Runs `hook` (filo-router's filter, NAT, or one of the program's own) at `points` of
    /// the stack's packet pipeline, after the hooks given before it.
    pub fn hook(mut self, points: &[HookPoint], hook: Box<dyn Hook>) -> Self {
        self.hooks.push(BuilderHook::Hook(points.to_vec(), hook));
        self
    }

    /// A packet filter on forwarded packets and on those for the stack itself, with `rules`
    /// in `filo router --filter`'s language (one a line, interfaces named `vde0`, `vde1`, …);
    /// changed at run time with [`Stack::hook_command`]`("filter", "add", RULE)`.
    pub fn filter(mut self, rules: impl Into<String>) -> Self {
        self.hooks.push(BuilderHook::Filter(rules.into()));
        self
    }

    /// Reverse-path filtering (RFC 3704 §2.2, the kernel's rp_filter=1): a packet to forward
    /// whose source the routes would not send back out of the interface it came in on (a
    /// spoofed source) is dropped and counted ([`crate::DropReason::ReversePath`]). Off by
    /// default; [`Stack::set_rp_filter`] at run time.
    pub fn rp_filter(mut self, on: bool) -> Self {
        self.rp_filter = on;
        self
    }

    /// Masquerade on interface `index` (filo-router's NAT, as `filo router --masquerade`):
    /// packets forwarded out of it leave from its address there, IPv4 and IPv6 (NAT66, from
    /// its first global IPv6 address, unless [`StackBuilder::nptv6`] translates there), with
    /// connection tracking for TCP, UDP and ICMP echo, and ICMP errors about those
    /// translated both ways. The address is the interface's current one: a static one, or
    /// one DHCP or SLAAC gives it later (the table starts afresh when it changes: the
    /// connections translated to the old address cannot go on).
    /// [`Stack::hook_print`]`("nat")` lists the connections.
    pub fn masquerade(mut self, index: usize) -> Self {
        self.hooks.push(BuilderHook::Masquerade(index));
        self
    }

    /// Source NAT on interface `index` to `addr`, one of its static addresses (`filo router
    /// --snat`): a masquerade that translates to `addr` instead of the interface's first
    /// address of that family. One IPv4 and one IPv6 address per interface.
    pub fn snat(mut self, index: usize, addr: IpAddr) -> Self {
        self.hooks.push(BuilderHook::Snat(index, addr));
        self
    }

    /// A port forward (DNAT) on interface `index`, `PROTO:PORT=ADDR[:PORT]` as `filo router
    /// --forward` takes it (e.g. `tcp:8080=10.1.0.50:80`, `tcp:8080=[fd01::50]:80`): TCP or
    /// UDP arriving for the interface's address at PORT goes to ADDR (replies translated
    /// back); an IPv6 one to the interface's NAT66 address (its first global IPv6 address).
    pub fn port_forward(mut self, index: usize, rule: impl Into<String>) -> Self {
        self.hooks
            .push(BuilderHook::PortForward(index, rule.into()));
        self
    }

    /// NPTv6 (RFC 6296) on interface `index`, `INTERNAL/LEN=EXTERNAL/LEN` as `filo router
    /// --nptv6` takes it (e.g. `fd01::/64=2001:db8:1::/64`): sources in INTERNAL leaving there
    /// get the EXTERNAL prefix, and back; stateless, checksum-neutral.
    pub fn nptv6(mut self, index: usize, prefixes: impl Into<String>) -> Self {
        self.hooks.push(BuilderHook::Nptv6(index, prefixes.into()));
        self
    }

    /// A DHCPv4 server on interface `index` (filo-dhcp's, as `filo router --dhcp-server`),
    /// answering from the interface's first IPv4 address: a range, static leases by MAC,
    /// router, DNS, domain and lease time options, a leases file; e.g.
    /// `.dhcp_server(0, DhcpServer::new(first, last).dns(addr))`. [`Stack::leases`] lists
    /// the leases; [`Stack::add_dhcp_server`] and [`Stack::remove_dhcp_server`] at run time.
    pub fn dhcp_server(mut self, index: usize, server: DhcpServer) -> Self {
        self.servers.push(BuilderServer::Dhcp(index, server));
        self
    }

    /// IPv6 router advertisements on interface `index` (as `filo router --radv`): its
    /// prefixes for SLAAC (or those given), RDNSS, DNSSL, MTU and router lifetime options,
    /// sent every 30 to 90 s and in answer to router solicitations. E.g.
    /// `.router_adverts(0, RouterAdverts::new().rdnss(addr))`.
    pub fn router_adverts(mut self, index: usize, adverts: RouterAdverts) -> Self {
        self.servers.push(BuilderServer::Adverts(index, adverts));
        self
    }

    /// A stateless DHCPv6 server on interface `index` (DNS servers and search list for
    /// INFORMATION-REQUEST); the interface's router advertisements get the O flag.
    pub fn dhcpv6_server(mut self, index: usize, server: Dhcpv6Server) -> Self {
        self.servers.push(BuilderServer::Dhcpv6(index, server));
        self
    }

    /// Receive and send buffer size of each TCP socket (default 128 KiB).
    pub fn tcp_buffer(mut self, bytes: usize) -> Self {
        self.tcp_buffer = bytes.clamp(1024, 1 << 30);
        self
    }

    pub fn build(self) -> Result<Stack, Error> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let (name, mac_key) = match self.name {
            Some(n) => (n.clone(), n),
            None => {
                let n = format!(
                    "stack-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                );
                let key = format!("{n}/{:016x}", random_u64());
                (n, key)
            }
        };
        let mut confs = Vec::new();
        for (i, (_, conf)) in self.links.iter().enumerate() {
            confs.push(crate::config::for_interface(conf.clone()?, i)?);
        }
        let mut inner = Inner::new();
        inner.tcp_buffer = self.tcp_buffer;
        inner.net.forwarding = self.forwarding;
        inner.net.rp_filter = self.rp_filter;
        let (hooks, nats, nptv6) = builder_hooks(self.hooks, &confs)?;
        let now = (Instant::now(), std::time::Instant::now());
        for (points, hook) in hooks {
            inner.net.hooks.add(now, &points, hook);
        }
        // switch:// and hub:// interfaces host a switch from filo-switch.
        filo_switch::register();
        filo_slirp::register();
        filo_ipn::register();
        for (i, ((spec, _), conf)) in self.links.into_iter().zip(confs).enumerate() {
            let plug = match spec {
                LinkSpec::Vnl(v) => {
                    Some(crate::plug_options(&v).open(&v).map_err(|e| Error::Open {
                        vnl: v.clone(),
                        error: Box::new(e),
                    })?)
                }
                LinkSpec::Plug(p) => Some(p),
                LinkSpec::Unplugged => None,
            };
            add_link(&mut inner, &mac_key, i, plug, &conf);
        }
        inner.net.hooks.nptv6_links = nptv6;
        for spec in nats {
            inner.net.hooks.add_nat(now, spec, &inner.net.links);
        }
        // DHCPv6 first: router advertisements carry the O flag when it is there.
        let mut servers = self.servers;
        servers.sort_by_key(|s| !matches!(s, BuilderServer::Dhcpv6(..)));
        for s in servers {
            match s {
                BuilderServer::Dhcp(i, s) => {
                    for e in inner.net.set_dhcp_server(now.0, i, &s)? {
                        tracing::warn!("leases not loaded: {e}");
                    }
                }
                BuilderServer::Adverts(i, a) => inner.net.set_router_adverts(now.0, i, &a)?,
                BuilderServer::Dhcpv6(i, s) => inner.net.set_dhcpv6_server(now.0, i, &s)?,
            }
        }
        let driver = match self.driver {
            Some(d) => d,
            None => Driver::global(),
        };
        let shared = Arc::new(Shared {
            name,
            mac_key,
            inner: Mutex::new(inner),
            cond: Condvar::new(),
            dirty: AtomicBool::new(true),
            slot: AtomicUsize::new(usize::MAX),
            driver: driver.shared.clone(),
            reconnect: self.reconnect,
            on_link_gone: self.on_link_gone,
        });
        driver.shared.register(&shared);
        Ok(Stack { shared })
    }
}

/// The hooks the builder was given, made for interfaces `confs`, in order (filters, NPTv6,
/// the program's own), NAT per interface (added once the links are there: it follows their
/// addresses), and the interfaces with NPTv6.
#[allow(clippy::type_complexity)]
fn builder_hooks(
    given: Vec<BuilderHook>,
    confs: &[IfaceConfig],
) -> Result<
    (
        Vec<(Vec<HookPoint>, Box<dyn Hook>)>,
        Vec<NatSpec>,
        Vec<usize>,
    ),
    Error,
> {
    let names: Vec<String> = (0..confs.len()).map(|i| format!("vde{i}")).collect();
    let bad = |what: &str, e: String| Error::BadValue(format!("{what}: {e}"));
    let check = |what: &str, i: usize| {
        if i < confs.len() {
            Ok(())
        } else {
            Err(bad(
                what,
                format!("no interface {i} (there are {})", confs.len()),
            ))
        }
    };
    let nptv6: Vec<usize> = given
        .iter()
        .filter_map(|h| match h {
            BuilderHook::Nptv6(i, _) => Some(*i),
            _ => None,
        })
        .collect();
    let mut hooks = Vec::new();
    let mut nats: Vec<NatSpec> = Vec::new();
    let mut specs: Vec<(usize, NatOption)> = Vec::new();
    for h in given {
        match h {
            BuilderHook::Hook(points, hook) => hooks.push((points, hook)),
            BuilderHook::Filter(rules) => {
                let mut f = filo_router::filter::Filter::new(names.clone());
                f.load(&rules).map_err(|e| bad("filter", e.to_string()))?;
                let points = vec![HookPoint::Forward, HookPoint::Input];
                hooks.push((points, Box::new(f) as Box<dyn Hook>));
            }
            BuilderHook::Masquerade(i) => {
                check("masquerade", i)?;
                specs.push((i, NatOption::Masquerade));
            }
            BuilderHook::Snat(i, addr) => {
                check(&format!("snat {addr}"), i)?;
                let statics: Vec<IpAddr> = confs[i].addrs.iter().map(|c| c.ip).collect();
                specs.push((i, snat_option(i, addr, &statics)?));
            }
            BuilderHook::PortForward(i, rule) => {
                check(&format!("port forward {rule:?}"), i)?;
                specs.push((i, port_forward_option(&rule)?));
            }
            BuilderHook::Nptv6(i, text) => {
                check(&format!("nptv6 {text:?}"), i)?;
                hooks.push(nptv6_hook(i, &text)?);
            }
        }
    }
    for (i, o) in specs {
        let n = match nats.iter().position(|s| s.iface == i) {
            Some(n) => n,
            None => {
                nats.push(NatSpec::new(i, !nptv6.contains(&i)));
                nats.len() - 1
            }
        };
        nats[n]
            .apply(&o)
            .map_err(|e| bad(&format!("interface {i}"), e))?;
    }
    Ok((hooks, nats, nptv6))
}

/// SNAT on interface `i` to `addr`, which must be one of `addrs` (the interface's).
fn snat_option(i: usize, addr: IpAddr, addrs: &[IpAddr]) -> Result<NatOption, Error> {
    if !addrs.contains(&addr) {
        return Err(Error::BadValue(format!(
            "snat {addr}: not a static address of interface {i} (give it as ip={addr}/LEN)"
        )));
    }
    Ok(NatOption::Snat(addr))
}

fn port_forward_option(rule: &str) -> Result<NatOption, Error> {
    filo_router::nat::Forward::parse(rule)
        .map(NatOption::PortForward)
        .map_err(|e| Error::BadValue(format!("port forward {rule:?}: {e}")))
}

/// NPTv6 on interface `i` with `text`'s prefixes, as a hook and its points.
fn nptv6_hook(i: usize, text: &str) -> Result<(Vec<HookPoint>, Box<dyn Hook>), Error> {
    let c = filo_router::nptv6::Config::parse(i, text)
        .map_err(|e| Error::BadValue(format!("nptv6 {text:?}: {e}")))?;
    let points = vec![HookPoint::Prerouting, HookPoint::Postrouting];
    Ok((points, Box::new(filo_router::nptv6::Nptv6::new(c))))
}

/// A random 64-bit value (std's per-process random hash keys, mixed with the clock).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(seed());
    h.finish()
}

/// Adds link `i`; `mac_key` is what its MAC derives from when neither `mac=` nor `fqdn=` is
/// given.
fn add_link(inner: &mut Inner, mac_key: &str, i: usize, plug: Option<Plug>, conf: &IfaceConfig) {
    let mac = conf.mac.unwrap_or_else(|| match &conf.fqdn {
        Some(f) => mac_from_name(f),
        None => mac_from_name(&format!("{mac_key}/{i}")),
    });
    // The plug's MTU (an encapsulation's inner MTU), kept within what a link accepts.
    let plug_mtu = plug
        .as_ref()
        .and_then(Plug::mtu)
        .map(|m| m.clamp(1280, 65000));
    let mut link = Link::new(format!("vde{i}"), mac);
    link.vnet = plug.as_ref().is_some_and(Plug::vnet);
    if conf.dhcp {
        // The stack takes DHCP replies to its MAC before it has the address, so servers may
        // unicast them: with a thousand clients on one switch, broadcast OFFERs and ACKs
        // flooded to every port cost each client a thousand frames.
        link.dhcp = Some(
            filo_dhcp::Client::new(
                mac,
                conf.hostname.clone().or_else(|| conf.fqdn.clone()),
                crate::net::to_dhcp_time(Instant::now()),
                seed() as u32,
            )
            .with_unicast_replies(),
        );
    }
    if let Some(m) = conf.mtu.map(|m| m as usize).or(plug_mtu) {
        link.mtu = m;
    }
    for a in &conf.addrs {
        let c = Cidr {
            addr: a.ip,
            prefix: a.prefix,
        };
        if !link.addrs.contains(&c) {
            link.addrs.push(c);
        }
    }
    inner.net.links.push(link);
    inner.ports.push(Port {
        plug,
        ..Port::default()
    });
    for gw in &conf.gateways {
        let unspec = if gw.is_ipv4() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        };
        let v6_ll = matches!(gw, IpAddr::V6(a) if a.is_unicast_link_local());
        inner.net.routes.push(Route {
            dst: Cidr {
                addr: unspec,
                prefix: 0,
            },
            via: Some(*gw),
            ifindex: if v6_ll { Some(i) } else { None },
        });
    }
    for d in &conf.dns {
        if !inner.dns_servers.contains(d) {
            inner.dns_servers.push(*d);
        }
    }
    inner.conf.push(LinkConf {
        slaac: conf.slaac,
        fqdn: conf.fqdn.clone(),
        dhcp_addr: None,
        rs_left: if conf.slaac { 3 } else { 0 },
        rs_at: Instant::now(),
    });
    inner.links_changed = true;
    inner.sync_addrs();
}

/// A link as [`Stack::links`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: usize,
    pub name: String,
    pub mac: Mac,
    pub mtu: usize,
    pub up: bool,
    pub addrs: Vec<Cidr>,
}

thread_local! {
    static THREAD_DEFAULT: RefCell<Option<Stack>> = const { RefCell::new(None) };
}
static PROCESS_DEFAULT: RwLock<Option<Stack>> = RwLock::new(None);

/// Sets the process's default stack (msocket's idea); `None` clears it.
pub fn set_default(stack: Option<&Stack>) {
    if let Ok(mut d) = PROCESS_DEFAULT.write() {
        *d = stack.cloned();
    }
}

/// Sets this thread's default stack, which wins over the process's; `None` clears it.
pub fn set_thread_default(stack: Option<&Stack>) {
    THREAD_DEFAULT.with(|d| *d.borrow_mut() = stack.cloned());
}

/// The default stack: this thread's, else the process's.
pub fn default_stack() -> Option<Stack> {
    THREAD_DEFAULT
        .with(|d| d.borrow().clone())
        .or_else(|| PROCESS_DEFAULT.read().ok().and_then(|d| d.clone()))
}

impl Stack {
    pub fn builder() -> StackBuilder {
        StackBuilder {
            name: None,
            links: Vec::new(),
            driver: None,
            tcp_buffer: 128 * 1024,
            reconnect: Some(filo_vnl::reconnect::Policy::default()),
            on_link_gone: None,
            forwarding: false,
            rp_filter: false,
            hooks: Vec::new(),
            servers: Vec::new(),
        }
    }

    /// A stack with one interface over `vnl` configured by `conf`.
    pub fn new(vnl: &str, conf: &str) -> Result<Stack, Error> {
        Stack::builder().interface(vnl, conf).build()
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.shared.lock()
    }

    /// Adds an interface at run time; returns its index.
    pub fn add_interface(&self, plug: Plug, conf: &str) -> Result<usize, Error> {
        let mut g = self.lock();
        let i = g.net.links.len();
        let conf = crate::config::parse_for(conf, i)?;
        add_link(&mut g, &self.shared.mac_key, i, Some(plug), &conf);
        drop(g);
        self.shared.kick();
        Ok(i)
    }

    fn with_link<R>(&self, index: usize, f: impl FnOnce(&mut Inner) -> R) -> Result<R, Error> {
        let mut g = self.lock();
        if index >= g.net.links.len() {
            return Err(Error::NoSuchLink(index));
        }
        let r = f(&mut g);
        g.sync_addrs();
        drop(g);
        self.shared.kick();
        Ok(r)
    }

    /// Brings a link up or down.
    pub fn link_set_up(&self, index: usize, up: bool) -> Result<(), Error> {
        self.with_link(index, |g| g.net.links[index].up = up)
    }

    /// Sets a link's IP MTU.
    pub fn link_set_mtu(&self, index: usize, mtu: usize) -> Result<(), Error> {
        if !(1280..=65000).contains(&mtu) {
            return Err(Error::BadValue(format!("MTU {mtu}: expected 1280..=65000")));
        }
        self.with_link(index, |g| g.net.links[index].mtu = mtu)
    }

    /// Sets a link's MAC address.
    pub fn link_set_mac(&self, index: usize, mac: Mac) -> Result<(), Error> {
        if wire::is_multicast_mac(&mac) {
            return Err(Error::BadValue(
                "a multicast MAC cannot be an interface's".into(),
            ));
        }
        self.with_link(index, |g| {
            let l = &mut g.net.links[index];
            let old_ll = Cidr {
                addr: IpAddr::V6(wire::link_local(&l.mac)),
                prefix: 64,
            };
            l.mac = mac;
            for c in l.addrs.iter_mut() {
                if *c == old_ll {
                    c.addr = IpAddr::V6(wire::link_local(&mac));
                }
            }
        })
    }

    /// The links with their addresses.
    pub fn links(&self) -> Vec<LinkInfo> {
        self.lock()
            .net
            .links
            .iter()
            .enumerate()
            .map(|(index, l)| LinkInfo {
                index,
                name: l.name.clone(),
                mac: l.mac,
                mtu: l.mtu,
                up: l.up,
                addrs: l.addrs.clone(),
            })
            .collect()
    }

    /// Adds an address to a link.
    pub fn addr_add(&self, index: usize, cidr: Cidr) -> Result<(), Error> {
        let g = self.lock();
        let total: usize = 1 + g.net.links.iter().map(|l| l.addrs.len()).sum::<usize>();
        if total >= MAX_ADDRS {
            return Err(Error::TooManyAddresses(MAX_ADDRS));
        }
        drop(g);
        self.with_link(index, |g| {
            if !g.net.links[index].addrs.contains(&cidr) {
                g.net.links[index].addrs.push(cidr);
            }
        })
    }

    /// Removes an address from a link.
    pub fn addr_del(&self, index: usize, cidr: Cidr) -> Result<(), Error> {
        self.with_link(index, |g| g.net.links[index].addrs.retain(|c| *c != cidr))
    }

    /// Every address of every link: (link index, address).
    pub fn addrs(&self) -> Vec<(usize, Cidr)> {
        self.links()
            .into_iter()
            .flat_map(|l| l.addrs.into_iter().map(move |a| (l.index, a)))
            .collect()
    }

    /// Adds a route; `via: None` is a route straight out of `ifindex`.
    pub fn route_add(&self, route: Route) -> Result<(), Error> {
        if route.via.is_none() && route.ifindex.is_none() {
            return Err(Error::BadValue(
                "a route needs a gateway or an interface".into(),
            ));
        }
        let mut g = self.lock();
        if route.ifindex.is_some_and(|i| i >= g.net.links.len()) {
            return Err(Error::NoSuchLink(route.ifindex.unwrap_or(0)));
        }
        if !g.net.routes.contains(&route) {
            g.net.routes.push(route);
        }
        Ok(())
    }

    /// Removes a route; false when there was no such route.
    pub fn route_del(&self, route: &Route) -> bool {
        let mut g = self.lock();
        let n = g.net.routes.len();
        g.net.routes.retain(|r| r != route);
        n != g.net.routes.len()
    }

    pub fn routes(&self) -> Vec<Route> {
        self.lock().net.routes.clone()
    }

    /// Where a packet to `dst` would go.
    pub fn route_get(&self, dst: IpAddr) -> Option<NextHop> {
        self.lock().net.route(&unmap(dst))
    }

    /// DNS servers (static and from DHCP).
    pub fn dns_servers(&self) -> Vec<IpAddr> {
        self.lock().dns_servers.clone()
    }

    /// Turns forwarding between the interfaces on or off (see [`StackBuilder::forwarding`]).
    pub fn set_forwarding(&self, on: bool) {
        self.lock().net.forwarding = on;
    }

    /// Turns reverse-path filtering on or off (see [`StackBuilder::rp_filter`]).
    pub fn set_rp_filter(&self, on: bool) {
        self.lock().net.rp_filter = on;
    }

    /// Changes the NAT on interface `index` with `f` (see [`StackBuilder::masquerade`]); a
    /// port forward added or removed, or a masquerade started, keeps the connections
    /// tracked, another change starts the table afresh.
    fn change_nat(
        &self,
        index: usize,
        f: impl FnOnce(&mut NatSpec) -> Result<(), String>,
    ) -> Result<(), Error> {
        let now = (Instant::now(), std::time::Instant::now());
        let mut g = self.lock();
        if index >= g.net.links.len() {
            return Err(Error::NoSuchLink(index));
        }
        let crate::net::Net { hooks, links, .. } = &mut g.net;
        hooks
            .change_nat(now, index, links, f)
            .map_err(Error::BadValue)
    }

    /// Masquerade on interface `index` from now on (see [`StackBuilder::masquerade`]); the
    /// port-forwarded connections the interface's NAT tracks stay.
    pub fn add_masquerade(&self, index: usize) -> Result<(), Error> {
        self.change_nat(index, |s| s.apply(&NatOption::Masquerade))
    }

    /// SNAT on interface `index` to `addr`, one of its addresses (see [`StackBuilder::snat`]).
    pub fn add_snat(&self, index: usize, addr: IpAddr) -> Result<(), Error> {
        let addrs: Vec<IpAddr> = self
            .addrs()
            .into_iter()
            .filter(|(i, _)| *i == index)
            .map(|(_, c)| c.addr)
            .collect();
        let o = snat_option(index, addr, &addrs)?;
        self.change_nat(index, |s| s.apply(&o))
    }

    /// A port forward on interface `index` (see [`StackBuilder::port_forward`]), added to
    /// the interface's NAT as it runs: the connections it tracks stay. Refused when the
    /// family, protocol and port are forwarded already.
    pub fn add_port_forward(&self, index: usize, rule: &str) -> Result<(), Error> {
        let o = port_forward_option(rule)?;
        self.change_nat(index, |s| s.apply(&o))
    }

    /// NPTv6 on interface `index` (see [`StackBuilder::nptv6`]); a masquerade there stops
    /// translating IPv6 (NAT66).
    pub fn add_nptv6(&self, index: usize, prefixes: &str) -> Result<(), Error> {
        let (points, hook) = nptv6_hook(index, prefixes)?;
        if self.lock().net.hooks.has_nat(index) {
            self.change_nat(index, |s| {
                s.nat66 = false;
                Ok(())
            })?;
        } else if index >= self.lock().net.links.len() {
            return Err(Error::NoSuchLink(index));
        }
        let now = (Instant::now(), std::time::Instant::now());
        let mut g = self.lock();
        g.net.hooks.nptv6_links.push(index);
        g.net.hooks.add(now, &points, hook);
        Ok(())
    }

    /// Stops the masquerade, SNAT and port forwards on interface `index` (NPTv6 stays); the
    /// connections its NAT tracked are forgotten (only port forwards there: theirs).
    pub fn remove_nat(&self, index: usize) -> Result<(), Error> {
        self.change_nat(index, |s| {
            s.masquerade = false;
            s.snat4 = None;
            s.snat6 = None;
            s.forwards.clear();
            Ok(())
        })
    }

    /// Starts (or replaces) the DHCPv4 server on interface `index` (see
    /// [`StackBuilder::dhcp_server`]); returns the lines of its leases file that could not be
    /// loaded.
    pub fn add_dhcp_server(&self, index: usize, server: &DhcpServer) -> Result<Vec<String>, Error> {
        let r = self
            .lock()
            .net
            .set_dhcp_server(Instant::now(), index, server);
        self.shared.kick();
        r
    }

    /// Stops the DHCPv4 server on interface `index` (its leases file is written a last time);
    /// false when there was none.
    pub fn remove_dhcp_server(&self, index: usize) -> bool {
        self.lock().net.remove_dhcp_server(Instant::now(), index)
    }

    /// Starts (or replaces) router advertisements on interface `index` (see
    /// [`StackBuilder::router_adverts`]).
    pub fn add_router_adverts(&self, index: usize, adverts: &RouterAdverts) -> Result<(), Error> {
        let r = self
            .lock()
            .net
            .set_router_adverts(Instant::now(), index, adverts);
        self.shared.kick();
        r
    }

    /// Stops router advertisements on interface `index`, with a last one that tells hosts the
    /// stack is no default router any more; false when there were none.
    pub fn remove_router_adverts(&self, index: usize) -> bool {
        self.lock().net.remove_router_adverts(Instant::now(), index)
    }

    /// Starts (or replaces) the stateless DHCPv6 server on interface `index`.
    pub fn add_dhcpv6_server(&self, index: usize, server: &Dhcpv6Server) -> Result<(), Error> {
        let r = self
            .lock()
            .net
            .set_dhcpv6_server(Instant::now(), index, server);
        self.shared.kick();
        r
    }

    /// Stops the DHCPv6 server on interface `index`; false when there was none.
    pub fn remove_dhcpv6_server(&self, index: usize) -> bool {
        self.lock().net.remove_dhcpv6_server(Instant::now(), index)
    }

    /// The leases of every DHCP server of the stack, each with its interface's index.
    pub fn leases(&self) -> Vec<(usize, filo_dhcp::server::LeaseInfo)> {
        self.lock().net.leases(Instant::now())
    }

    /// What the DHCPv4 server on interface `index` did with the messages it got: answers,
    /// and those it ignored or refused (for another server, a RELEASE of an address the
    /// client does not hold, no address free, malformed); None when it has no server.
    pub fn dhcp_server_stats(&self, index: usize) -> Option<filo_dhcp::server::Stats> {
        self.lock().net.dhcp_server_stats(index)
    }

    /// The leases as the router console's `leases/print` shows them, one a line:
    /// `ADDR MAC dev IFACE HOSTNAME expires_in SECONDS`.
    pub fn lease_print(&self) -> Vec<String> {
        let now = Instant::now();
        let g = self.lock();
        let clock = crate::net::to_dhcp_time(now);
        g.net
            .leases(now)
            .iter()
            .map(|(i, l)| l.line(&g.net.links[*i].name, clock))
            .collect()
    }

    /// Adds a hook at run time (see [`StackBuilder::hook`]).
    pub fn add_hook(&self, points: &[HookPoint], hook: Box<dyn Hook>) {
        let now = (Instant::now(), std::time::Instant::now());
        self.lock().net.hooks.add(now, points, hook);
    }

    /// A command for the first hook called `name` (`filter`: `add RULE`, `del N`; see
    /// filo-router's hooks); None when there is no such hook or command.
    pub fn hook_command(
        &self,
        name: &str,
        cmd: &str,
        args: &str,
    ) -> Option<Result<Vec<String>, String>> {
        self.lock().net.hooks.command(name, cmd, args)
    }

    /// What the hooks called `name` print (a filter's rules with their counters, NAT's
    /// connections); None when there is none.
    pub fn hook_print(&self, name: &str) -> Option<Vec<String>> {
        self.lock().net.hooks.print(name, Instant::now())
    }

    /// Frame counters and drops by reason.
    pub fn counters(&self) -> Counters {
        self.lock().net.counters
    }

    /// Frames sent on an unplugged link (tests of the frame path): they wait in the link's
    /// queue, which holds a few thousand, until taken here.
    pub fn take_captured(&self, index: usize) -> Vec<Vec<u8>> {
        let mut g = self.lock();
        if g.ports.get(index).is_none_or(|p| p.plug.is_some()) {
            return Vec::new();
        }
        let mut out = Vec::new();
        g.net.poll_transmit(index, &mut out);
        g.net.counters.frames_out += out.len() as u64;
        out
    }

    /// Feeds one frame as if link `index` received it, then runs the stack.
    pub fn inject_frame(&self, index: usize, frame: &[u8]) {
        let mut g = self.lock();
        let now = Instant::now();
        g.net.handle_frame(now, index, frame);
        g.process(now);
        drop(g);
        self.shared.cond.notify_all();
        self.shared.kick();
    }

    /// Waits until `cond` holds on the stack state or `timeout` passes.
    pub(crate) fn wait_for<R>(
        &self,
        timeout: Option<std::time::Duration>,
        mut cond: impl FnMut(&mut Inner) -> Option<R>,
    ) -> Option<R> {
        // A timeout past the clock's range waits forever, as None does.
        let deadline = timeout.and_then(|t| std::time::Instant::now().checked_add(t));
        let mut g = self.lock();
        loop {
            if let Some(r) = cond(&mut g) {
                return Some(r);
            }
            let wait = match deadline {
                Some(d) => {
                    let now = std::time::Instant::now();
                    if now >= d {
                        return None;
                    }
                    (d - now).min(std::time::Duration::from_secs(2))
                }
                None => std::time::Duration::from_secs(2),
            };
            g = match self.shared.cond.wait_timeout(g, wait) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// Waits until the stack has an address of the family of `v6`, e.g. after DHCP or SLAAC.
    pub fn wait_for_address(&self, v6_global: bool, timeout: std::time::Duration) -> Option<Cidr> {
        self.wait_for(Some(timeout), |g| {
            g.net
                .links
                .iter()
                .flat_map(|l| l.addrs.iter())
                .copied()
                .find(|c| match c.addr {
                    IpAddr::V4(_) => !v6_global,
                    IpAddr::V6(a) => v6_global && !a.is_unicast_link_local(),
                })
        })
    }

    /// Sends an ICMP/ICMPv6 echo request to `dst` and waits for the reply; returns the round
    /// trip time.
    pub fn ping(
        &self,
        dst: IpAddr,
        seq: u16,
        size: usize,
        timeout: std::time::Duration,
    ) -> io::Result<std::time::Duration> {
        crate::icmp::ping(self, dst, seq, size, timeout)
    }

    /// The number of live sockets (TCP, UDP, ICMP, DHCP, DNS).
    pub fn socket_count(&self) -> usize {
        self.lock().sockets.iter().count()
    }
}

/// `::ffff:a.b.c.d` → `a.b.c.d`; anything else unchanged.
pub fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `a.b.c.d` → `::ffff:a.b.c.d` when `v6` (an IPv6 socket sees IPv4 peers mapped).
pub fn map_if(addr: SocketAddr, v6: bool) -> SocketAddr {
    match (addr, v6) {
        (SocketAddr::V4(a), true) => SocketAddr::new(IpAddr::V6(a.ip().to_ipv6_mapped()), a.port()),
        _ => addr,
    }
}

/// Checks that `dst` has a route and a source address; the error a connect should return.
pub(crate) fn check_route(g: &Inner, dst: &IpAddr) -> io::Result<IpAddr> {
    match g.net.route(dst) {
        None => Err(io::Error::new(
            io::ErrorKind::NetworkUnreachable,
            format!("no route to {dst}"),
        )),
        Some(NextHop::Flood) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{dst} is a multicast or broadcast address"),
        )),
        Some(_) => g.net.source_for(dst).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("no local address to reach {dst}"),
            )
        }),
    }
}
