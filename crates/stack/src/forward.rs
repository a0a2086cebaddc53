//! Forwarding between a stack's links, and the hook pipeline packets pass through, in the
//! spirit of netfilter's and LWIPv6's: PREROUTING (every IP packet that arrived), INPUT (those
//! for the stack itself), FORWARD (those for others), OUTPUT (the stack's own, its servers'
//! answers included, before routing) and POSTROUTING (every packet about to leave, after
//! routing). filo-router's [`Hook`]s (its packet filter and NAT) plug in as they are, and the
//! ICMP errors sent here are its own.
//!
//! With no hook and forwarding off, a packet goes straight to smoltcp as before: the host's
//! hot path pays one test.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};

use filo_router::icmp::{self, V4Error, V6Error};
use filo_router::nat::{self, Forward, HoldLimits, Masquerade};
pub use filo_router::{Hook, HookChain, HookOutput, HookPoint, HookVerdict, PacketMeta};
use smoltcp::time::Instant;
use smoltcp::wire::{Ipv4Packet, Ipv6Packet};

use filo_vnl::wire::vnet;

use crate::net::{DropReason, Link, Net, NextHop};
use crate::wire::{self, ETH_HDR};

/// The hooks of a stack, each with the points it runs at, in the order they were added.
#[derive(Default)]
pub struct Hooks {
    chain: HookChain,
    /// One moment on smoltcp's clock and on std's (hooks count time on std's); set by the
    /// caller of [`Hooks::add`], so that nothing here reads a clock.
    epoch: Option<(Instant, std::time::Instant)>,
    /// NAT that translates to a link's current addresses (see [`Hooks::readdress`]).
    following: Vec<Following>,
    /// Links where NPTv6 translates IPv6 (a masquerade there does no NAT66).
    pub(crate) nptv6_links: Vec<usize>,
}

/// NAT on one link (filo-router's [`Masquerade`]): masquerade (IPv4, and NAT66 unless the
/// link's IPv6 is NPTv6's), SNAT to chosen addresses, port forwards. Without SNAT it
/// translates to the link's addresses as they are now: a static one, one from DHCP or SLAAC.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatSpec {
    pub iface: usize,
    /// Forwarded packets leaving on the link are translated (else only the port forwards).
    pub masquerade: bool,
    pub snat4: Option<Ipv4Addr>,
    pub snat6: Option<Ipv6Addr>,
    /// IPv6 is translated too (to the link's first global address).
    pub nat66: bool,
    /// Port forwards, IPv4 (to the link's IPv4 address) and IPv6 (to its NAT66 address).
    pub forwards: Vec<Forward>,
    /// Connections tracked at most (None: filo-router's default).
    pub max_conns: Option<usize>,
}

/// One NAT option of a link, as the builder and the run-time calls take them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NatOption {
    Masquerade,
    Snat(IpAddr),
    PortForward(Forward),
}

impl NatSpec {
    /// No translation yet on link `iface`; `nat66` unless NPTv6 translates there.
    pub(crate) fn new(iface: usize, nat66: bool) -> NatSpec {
        NatSpec {
            iface,
            nat66,
            ..NatSpec::default()
        }
    }

    /// Adds option `o`; a port forward whose family, protocol and port one has already is
    /// refused, naming both.
    pub(crate) fn apply(&mut self, o: &NatOption) -> Result<(), String> {
        if let NatOption::PortForward(f) = o {
            if let Some(g) = self
                .forwards
                .iter()
                .find(|g| forward_key(g) == forward_key(f))
            {
                return Err(format!(
                    "port forward {f}: its port is forwarded already ({g})"
                ));
            }
        }
        match o {
            NatOption::Masquerade => self.masquerade = true,
            NatOption::Snat(a) => {
                self.masquerade = true;
                match a {
                    IpAddr::V4(a) => self.snat4 = Some(*a),
                    IpAddr::V6(a) => self.snat6 = Some(*a),
                }
            }
            NatOption::PortForward(f) => self.forwards.push(*f),
        }
        Ok(())
    }

    /// Whether the NAT can become `new` in place, keeping its connections: the port
    /// forwards differ, or a masquerade starts, and nothing else.
    fn changes_in_place(&self, new: &NatSpec) -> bool {
        NatSpec {
            forwards: Vec::new(),
            masquerade: new.masquerade,
            ..self.clone()
        } == NatSpec {
            forwards: Vec::new(),
            ..new.clone()
        } && (new.masquerade || !self.masquerade)
    }

    /// The addresses to translate to on `link`.
    fn addrs(&self, link: &Link) -> (Ipv4Addr, Option<Ipv6Addr>) {
        let v4 = self.snat4.or_else(|| {
            link.addrs.iter().find_map(|c| match c.addr {
                IpAddr::V4(a) => Some(a),
                IpAddr::V6(_) => None,
            })
        });
        let v6 = self.snat6.or_else(|| {
            link.addrs.iter().find_map(|c| match c.addr {
                IpAddr::V6(a) if self.nat66 && !a.is_unicast_link_local() => Some(a),
                _ => None,
            })
        });
        (v4.unwrap_or(Ipv4Addr::UNSPECIFIED), v6)
    }

    fn config(&self, (addr, addr6): (Ipv4Addr, Option<Ipv6Addr>)) -> nat::Config {
        let mut c = nat::Config::new(self.iface, addr);
        c.addr6 = addr6;
        c.masquerade = self.masquerade;
        for f in &self.forwards {
            match *f {
                Forward::V4(f) => c.forwards.push(f),
                Forward::V6(f) => c.forwards6.push(f),
            }
        }
        if let Some(m) = self.max_conns {
            c.max_conns = m;
        }
        // Later fragments that come before their first one wait for it, as in `filo
        // router` (the stack polls them back, see [`Net::hook_outputs`]).
        c.hold = HoldLimits::DEFAULT;
        c
    }
}

/// What two port forwards may not share: the family, the protocol and the public port.
fn forward_key(f: &Forward) -> (bool, u8, u16) {
    match f {
        Forward::V4(f) => (false, f.proto, f.port),
        Forward::V6(f) => (true, f.proto, f.port),
    }
}

struct Following {
    spec: NatSpec,
    addrs: (Ipv4Addr, Option<Ipv6Addr>),
    nat: SharedNat,
}

/// A masquerade the hook chain runs, [`Hooks::change_nat`] edits (or replaces when it
/// translates differently) and [`Hooks::readdress`] replaces when its link's addresses
/// change (the connections through the old address cannot go on anyway).
#[derive(Clone)]
struct SharedNat(Arc<Mutex<Masquerade>>);

impl SharedNat {
    fn get(&self) -> MutexGuard<'_, Masquerade> {
        // Only the stack's lock holder touches it: never contended, never poisoned by a
        // panic elsewhere; a poisoned one is used as it is.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Hook for SharedNat {
    fn hook(
        &mut self,
        now: std::time::Instant,
        point: HookPoint,
        meta: &PacketMeta,
        packet: &mut Vec<u8>,
    ) -> HookVerdict {
        self.get().hook(now, point, meta, packet)
    }

    fn poll_output(&mut self, now: std::time::Instant) -> Option<HookOutput> {
        self.get().poll_output(now)
    }

    fn poll_at(&self) -> Option<std::time::Instant> {
        self.get().poll_at()
    }

    fn name(&self) -> &'static str {
        "nat"
    }

    fn print(&self, now: std::time::Instant) -> Vec<String> {
        self.get().print(now)
    }

    fn command(&mut self, cmd: &str, args: &str) -> Option<Result<Vec<String>, String>> {
        self.get().command(cmd, args)
    }
}

impl Hooks {
    pub fn is_empty(&self) -> bool {
        self.chain.is_empty()
    }

    /// Runs `hook` at each of `points`, after the hooks already there. `now` is the same
    /// moment on both clocks.
    pub fn add(
        &mut self,
        now: (Instant, std::time::Instant),
        points: &[HookPoint],
        hook: Box<dyn Hook>,
    ) {
        self.epoch.get_or_insert(now);
        self.chain.add(points, hook);
    }

    /// NAT on a link per `spec`, translating to the link's addresses as they are in `links`
    /// now and as they will be ([`Hooks::readdress`]).
    pub(crate) fn add_nat(
        &mut self,
        now: (Instant, std::time::Instant),
        spec: NatSpec,
        links: &[Link],
    ) {
        let addrs = links
            .get(spec.iface)
            .map_or((Ipv4Addr::UNSPECIFIED, None), |l| spec.addrs(l));
        let nat = SharedNat(Arc::new(Mutex::new(Masquerade::new(spec.config(addrs)))));
        self.add(
            now,
            &[HookPoint::Prerouting, HookPoint::Postrouting],
            Box::new(nat.clone()),
        );
        self.following.push(Following { spec, addrs, nat });
    }

    /// Whether link `iface` has NAT (a masquerade, SNAT or port forwards, or had).
    pub(crate) fn has_nat(&self, iface: usize) -> bool {
        self.following.iter().any(|x| x.spec.iface == iface)
    }

    /// Changes the NAT on link `iface` with `f` (starting one there if there is none); an
    /// error from `f` leaves it as it was. Port forwards added or removed are edited in
    /// place, and so is a masquerade started: the connections tracked stay (a removed
    /// forward's own are forgotten). Anything else (masquerade off, SNAT, NAT66 off)
    /// translates differently: the table starts afresh.
    pub(crate) fn change_nat(
        &mut self,
        now: (Instant, std::time::Instant),
        iface: usize,
        links: &[Link],
        f: impl FnOnce(&mut NatSpec) -> Result<(), String>,
    ) -> Result<(), String> {
        let Some(x) = self.following.iter_mut().find(|x| x.spec.iface == iface) else {
            let mut spec = NatSpec::new(iface, !self.nptv6_links.contains(&iface));
            f(&mut spec)?;
            self.add_nat(now, spec, links);
            return Ok(());
        };
        let mut spec = x.spec.clone();
        f(&mut spec)?;
        let addrs = links.get(iface).map_or(x.addrs, |l| spec.addrs(l));
        let old = std::mem::replace(&mut x.spec, spec);
        if addrs != x.addrs || !old.changes_in_place(&x.spec) {
            x.addrs = addrs;
            let mut nat = x.nat.get();
            *nat = Masquerade::replacing(x.spec.config(addrs), &mut nat);
            return Ok(());
        }
        let mut nat = x.nat.get();
        if x.spec.masquerade && !old.masquerade {
            nat.start_masquerade();
        }
        for g in old.forwards.iter().filter(|g| !x.spec.forwards.contains(g)) {
            // Absent when its family had no address to forward from when it was added.
            let _ = nat.remove_forward(*g);
        }
        for g in x.spec.forwards.iter().filter(|g| !old.forwards.contains(g)) {
            // Refused only when its family has no address yet: kept in the spec, the NAT
            // gets it with the address ([`Hooks::readdress`]).
            if let Err(e) = nat.add_forward(*g) {
                tracing::debug!("port forward {g} waits for an address: {e}");
            }
        }
        Ok(())
    }

    /// The links' addresses changed (DHCP, SLAAC, a program): NAT that follows them
    /// translates to the new ones.
    pub(crate) fn readdress(&mut self, links: &[Link]) {
        for f in &mut self.following {
            let Some(l) = links.get(f.spec.iface) else {
                continue;
            };
            let addrs = f.spec.addrs(l);
            if addrs != f.addrs {
                tracing::debug!(link = %l.name, "NAT now translates to {addrs:?}");
                f.addrs = addrs;
                let mut nat = f.nat.get();
                *nat = Masquerade::replacing(f.spec.config(addrs), &mut nat);
            }
        }
    }

    /// Runs a command (`add`, `del`, …) on the first hook called `name`; None when there is
    /// no such hook or it has no such command.
    pub fn command(
        &mut self,
        name: &str,
        cmd: &str,
        args: &str,
    ) -> Option<Result<Vec<String>, String>> {
        self.chain.command(name, cmd, args)
    }

    /// What the hooks called `name` print (their tables, their counters).
    pub fn print(&self, name: &str, now: Instant) -> Option<Vec<String>> {
        self.chain.print(name, self.std_time(now))
    }

    fn std_time(&self, now: Instant) -> std::time::Instant {
        let Some((smol, std)) = self.epoch else {
            // No hook yet, so no hook will see this.
            return std::time::Instant::now();
        };
        let d = std::time::Duration::from_micros((now - smol).total_micros());
        if now >= smol {
            std + d
        } else {
            std.checked_sub(d).unwrap_or(std)
        }
    }

    /// `t` on smoltcp's clock.
    fn smol_time(&self, t: std::time::Instant) -> Option<Instant> {
        let (smol, std) = self.epoch?;
        let micros = |d: std::time::Duration| {
            smoltcp::time::Duration::from_micros(d.as_micros().min(u128::from(u64::MAX)) as u64)
        };
        Some(match t.checked_duration_since(std) {
            Some(d) => smol + micros(d),
            None => smol - micros(std - t),
        })
    }

    /// When a hook next gives back something it took without a new packet (NAT's held
    /// fragments time out): [`Net::on_timer`] is due then.
    pub(crate) fn poll_at(&self) -> Option<Instant> {
        self.chain.poll_at().and_then(|t| self.smol_time(t))
    }

    /// Runs the hooks of `point` from the one at index `first` on.
    fn run_from(
        &mut self,
        first: usize,
        now: Instant,
        point: HookPoint,
        meta: &PacketMeta,
        packet: &mut Vec<u8>,
    ) -> HookVerdict {
        let t = self.std_time(now);
        self.chain.run_from(first, t, point, meta, packet)
    }
}

/// ICMP errors sent per second at most (a token bucket, as the router core's and the
/// kernel's icmp_ratelimit), and the burst allowed.
const ICMP_RATE: u64 = 1000;
pub(crate) const ICMP_BURST: u32 = 100;

/// An ICMP error about a packet that could not be forwarded.
#[derive(Debug, Clone, Copy)]
enum Error {
    TimeExceeded,
    Unreachable,
    TooBig(usize),
    Prohibited,
}

impl Net {
    /// An IP packet that arrived on `ifindex` (checked, trimmed): for the stack itself, or
    /// (forwarding on) routed on toward its destination.
    #[inline]
    pub(crate) fn input_ip(&mut self, now: Instant, ifindex: usize, p: &[u8]) {
        if !self.forwarding && self.hooks.is_empty() {
            return self.deliver(now, ifindex, p);
        }
        self.input_routed(now, ifindex, p);
    }

    /// [`Net::input_ip`] for a router or a stack with hooks (kept out of the host's path).
    #[inline(never)]
    fn input_routed(&mut self, now: Instant, ifindex: usize, p: &[u8]) {
        if self.hooks.is_empty() {
            return self.route_in(now, ifindex, p);
        }
        let mut packet = p.to_vec();
        let meta = PacketMeta {
            in_iface: Some(ifindex),
            out_iface: None,
        };
        if self.hooked(now, HookPoint::Prerouting, &meta, &mut packet) {
            self.route_in(now, ifindex, &packet);
        }
        self.hook_outputs(now);
    }

    /// The packets hooks took ([`HookVerdict::Stolen`]: NAT's later fragments held for
    /// their first one) and now give back: each goes on from after its hook, or is counted
    /// as dropped.
    pub(crate) fn hook_outputs(&mut self, now: Instant) {
        if self.hooks.is_empty() {
            return;
        }
        let t = self.hooks.std_time(now);
        while let Some((at, out)) = self.hooks.chain.poll_output(t) {
            let HookOutput::Resume {
                point,
                meta,
                mut packet,
            } = out
            else {
                self.counters.drop(DropReason::Hook, 1);
                continue;
            };
            let v = self.hooks.run_from(at + 1, now, point, &meta, &mut packet);
            if !self.verdict(v, &meta, &packet, now) {
                continue;
            }
            match (point, meta.in_iface) {
                (HookPoint::Prerouting, Some(i)) => self.route_in(now, i, &packet),
                (HookPoint::Postrouting, Some(_)) => {
                    let mut frame = self.take_frame_buf();
                    frame.clear();
                    frame.resize(ETH_HDR, 0);
                    frame.extend_from_slice(&packet);
                    self.counters.forwarded += 1;
                    self.send_ip(now, frame);
                }
                // Nothing takes packets elsewhere.
                _ => self.counters.drop(DropReason::Hook, 1),
            }
        }
    }

    /// True when a packet to `dst` is the stack's to take (its own address, a multicast or
    /// broadcast, a link-local address: never forwarded).
    fn is_local(&self, dst: &IpAddr) -> bool {
        let link_local = match dst {
            IpAddr::V4(a) => a.is_link_local() || a.is_unspecified(),
            IpAddr::V6(a) => a.is_unicast_link_local() || a.is_unspecified(),
        };
        link_local || matches!(self.route(dst), Some(NextHop::Loopback | NextHop::Flood))
    }

    #[inline(never)]
    fn route_in(&mut self, now: Instant, ifindex: usize, p: &[u8]) {
        let local = !self.forwarding || wire::ip_dst(p).is_none_or(|d| self.is_local(&d));
        if !local {
            return self.forward(now, ifindex, p);
        }
        if self.hooks.is_empty() {
            return self.deliver(now, ifindex, p);
        }
        let mut packet = p.to_vec();
        let meta = PacketMeta {
            in_iface: Some(ifindex),
            out_iface: None,
        };
        if self.hooked(now, HookPoint::Input, &meta, &mut packet) {
            self.deliver(now, ifindex, &packet);
        }
    }

    /// Forwards packet `p` that came in on `in_if`: hop limit, route, MTU, the FORWARD and
    /// POSTROUTING hooks, then out (RFC 1812 §5.2, RFC 8200 §3). What cannot go on is answered
    /// with the router's ICMP errors and counted.
    fn forward(&mut self, now: Instant, in_if: usize, p: &[u8]) {
        if self.rp_filter && wire::ip_src(p).is_some_and(|s| !self.routed_back(in_if, &s)) {
            return self.counters.drop(DropReason::ReversePath, 1);
        }
        let v6 = p[0] >> 4 == 6;
        let hop_limit = if v6 { p[7] } else { p[8] };
        if hop_limit <= 1 {
            self.counters.drop(DropReason::TtlExceeded, 1);
            return self.icmp_error(now, in_if, p, Error::TimeExceeded);
        }
        let out = match wire::ip_dst(p).and_then(|d| self.route(&d)) {
            Some(NextHop::Link { ifindex, .. }) => ifindex,
            _ => {
                self.counters.drop(DropReason::NoRoute, 1);
                return self.icmp_error(now, in_if, p, Error::Unreachable);
            }
        };
        let l = &self.links[out];
        // A TCP super-frame toward a super-frame link is segmented by the switch; toward a
        // plain link it is segmented here (it came whole from a super-frame link).
        let segment = p.len() > l.mtu && !l.vnet() && self.links[in_if].vnet() && wire::is_tcp(p);
        if p.len() > l.mtu && !(l.vnet() && wire::is_tcp(p)) && !segment {
            let dont_fragment = v6 || p[6] & 0x40 != 0;
            if dont_fragment {
                let mtu = l.mtu;
                self.counters.drop(DropReason::TooBig, 1);
                return self.icmp_error(now, in_if, p, Error::TooBig(mtu));
            }
        }
        let mut frame = self.take_frame_buf();
        frame.clear();
        frame.resize(ETH_HDR, 0);
        if self.hooks.is_empty() {
            frame.extend_from_slice(p);
            decrement_hop_limit(&mut frame[ETH_HDR..]);
        } else {
            let mut packet = p.to_vec();
            decrement_hop_limit(&mut packet);
            let meta = PacketMeta {
                in_iface: Some(in_if),
                out_iface: Some(out),
            };
            if !self.hooked(now, HookPoint::Forward, &meta, &mut packet)
                || !self.hooked(now, HookPoint::Postrouting, &meta, &mut packet)
            {
                return self.recycle(frame);
            }
            frame.extend_from_slice(&packet);
        }
        self.counters.forwarded += 1;
        if segment {
            return self.send_segmented(now, out, frame);
        }
        self.send_ip(now, frame);
    }

    /// Whether a packet to `src` would leave on link `in_if` (RFC 3704 §2.2's strict
    /// reverse-path check, the kernel's rp_filter=1).
    fn routed_back(&self, in_if: usize, src: &IpAddr) -> bool {
        matches!(self.route(src), Some(NextHop::Link { ifindex, .. }) if ifindex == in_if)
    }

    /// Whether the ICMP error budget allows one more (counted when it does not).
    fn icmp_allowed(&mut self, now: Instant) -> bool {
        let elapsed = (now - self.icmp_refill).total_millis();
        let add = elapsed.saturating_mul(ICMP_RATE) / 1000;
        if add > 0 || self.icmp_refill > now {
            let tokens = u64::from(self.icmp_tokens).saturating_add(add);
            self.icmp_tokens = tokens.min(u64::from(ICMP_BURST)) as u32;
            self.icmp_refill = now;
        }
        if self.icmp_tokens == 0 {
            self.counters.drop(DropReason::IcmpRateLimited, 1);
            return false;
        }
        self.icmp_tokens -= 1;
        true
    }

    /// Sends the TCP super-frame in `frame[14..]` as segments that fit link `out`'s MTU.
    fn send_segmented(&mut self, now: Instant, out: usize, mut frame: Vec<u8>) {
        let ethertype = if frame[ETH_HDR] >> 4 == 6 {
            wire::ETHERTYPE_IPV6
        } else {
            wire::ETHERTYPE_IPV4
        };
        wire::write_eth(&mut frame, [0; 6], [0; 6], ethertype);
        let hdr = vnet::header_for(&frame, self.links[out].mtu);
        let mut scratch = Vec::new();
        let mut segments = Vec::new();
        let done = vnet::finish(&hdr, &frame, &mut scratch, |seg| {
            segments.push(seg.to_vec());
        });
        if done.is_err() {
            self.counters.drop(DropReason::TooBig, 1);
        }
        self.recycle(frame);
        for seg in segments {
            self.send_ip(now, seg);
        }
    }

    /// The stack's own packet in `frame[14..]` through the OUTPUT and POSTROUTING hooks.
    #[inline(never)]
    pub(crate) fn output_hooked(&mut self, now: Instant, mut frame: Vec<u8>) {
        let mut packet = frame[ETH_HDR..].to_vec();
        let mut meta = PacketMeta {
            in_iface: None,
            out_iface: None,
        };
        if !self.hooked(now, HookPoint::Output, &meta, &mut packet) {
            return self.recycle(frame);
        }
        meta.out_iface = match wire::ip_dst(&packet).and_then(|d| self.route(&d)) {
            Some(NextHop::Link { ifindex, .. }) => Some(ifindex),
            _ => None,
        };
        if !self.hooked(now, HookPoint::Postrouting, &meta, &mut packet) {
            return self.recycle(frame);
        }
        frame.truncate(ETH_HDR);
        frame.extend_from_slice(&packet);
        self.send_ip(now, frame);
    }

    /// The packet in `frame[14..]` that the stack wrote to send out of link `i` itself
    /// (a server's answer, a DHCP client's broadcast: past routing) through the OUTPUT and POSTROUTING hooks, both with
    /// `i` as the outgoing link; None when a hook dropped it (counted). The first 14 bytes
    /// are kept as they are.
    pub(crate) fn hooked_on_link(
        &mut self,
        now: Instant,
        i: usize,
        mut frame: Vec<u8>,
    ) -> Option<Vec<u8>> {
        if self.hooks.is_empty() {
            return Some(frame);
        }
        let mut packet = frame[ETH_HDR..].to_vec();
        let meta = PacketMeta {
            in_iface: None,
            out_iface: Some(i),
        };
        if !self.hooked(now, HookPoint::Output, &meta, &mut packet)
            || !self.hooked(now, HookPoint::Postrouting, &meta, &mut packet)
        {
            return None;
        }
        frame.truncate(ETH_HDR);
        frame.extend_from_slice(&packet);
        Some(frame)
    }

    /// Runs the hooks of `point`; false when one took the packet (see [`Net::hook_outputs`]),
    /// dropped or rejected it (counted; a
    /// rejected packet that came in on a link is answered with a TCP reset or an ICMP
    /// "administratively prohibited").
    fn hooked(
        &mut self,
        now: Instant,
        point: HookPoint,
        meta: &PacketMeta,
        packet: &mut Vec<u8>,
    ) -> bool {
        let verdict = self.hooks.run_from(0, now, point, meta, packet);
        self.verdict(verdict, meta, packet, now)
    }

    /// [`Net::hooked`] after the hooks ran: true for a packet they accepted; a stolen one
    /// is theirs ([`Net::hook_outputs`]), others are counted and maybe answered.
    fn verdict(
        &mut self,
        verdict: HookVerdict,
        meta: &PacketMeta,
        packet: &[u8],
        now: Instant,
    ) -> bool {
        match verdict {
            HookVerdict::Accept => return true,
            HookVerdict::Stolen => return false,
            HookVerdict::Drop | HookVerdict::Reject => {}
        }
        self.counters.drop(DropReason::Hook, 1);
        if let (HookVerdict::Reject, Some(in_if)) = (verdict, meta.in_iface) {
            match icmp::tcp_reset(packet) {
                Some((rst, _)) => self.send_packet(now, &rst),
                None => self.icmp_error(now, in_if, packet, Error::Prohibited),
            }
        }
        false
    }

    /// Sends the ICMP error `e` about `p` (which came in on `in_if`) back to its source, from
    /// an address of `in_if` (so that tracepath names the hop), when RFC 1812 / RFC 4443 allow
    /// an error about it.
    fn icmp_error(&mut self, now: Instant, in_if: usize, p: &[u8], e: Error) {
        let reply = if p[0] >> 4 == 6 {
            let ip = Ipv6Packet::new_unchecked(p);
            if !icmp::v6_may_answer(&ip) {
                return;
            }
            let src = match self.source_for(&IpAddr::V6(ip.src_addr())) {
                Some(IpAddr::V6(a)) => a,
                _ => self.links[in_if].link_local(),
            };
            let e = match e {
                Error::TimeExceeded => V6Error::HOP_LIMIT_EXCEEDED,
                Error::Unreachable => V6Error::NO_ROUTE,
                Error::TooBig(mtu) => V6Error::too_big(mtu as u32),
                Error::Prohibited => V6Error::ADMIN_PROHIBITED,
            };
            icmp::v6_error(src, &ip, e)
        } else {
            let ip = Ipv4Packet::new_unchecked(p);
            if !icmp::v4_may_answer(&ip) {
                return;
            }
            let to = IpAddr::V4(ip.src_addr());
            let src = self.links[in_if]
                .first_v4(&to)
                .or_else(|| self.links.iter().find_map(|l| l.first_v4(&to)));
            let Some(src) = src else { return };
            let e = match e {
                Error::TimeExceeded => V4Error::TTL_EXCEEDED,
                Error::Unreachable => V4Error::NET_UNREACHABLE,
                Error::TooBig(mtu) => V4Error::frag_needed(mtu.min(0xffff) as u16),
                Error::Prohibited => V4Error::ADMIN_PROHIBITED,
            };
            icmp::v4_error(src, &ip, e)
        };
        if self.icmp_allowed(now) {
            self.send_packet(now, &reply);
        }
    }

    /// Routes and sends an IP packet the stack wrote itself (an ICMP error, a reset), past
    /// the OUTPUT and POSTROUTING hooks as its other packets (NAT there quotes a translated
    /// packet as the other side sent it).
    fn send_packet(&mut self, now: Instant, packet: &[u8]) {
        let mut frame = self.take_frame_buf();
        frame.clear();
        frame.resize(ETH_HDR, 0);
        frame.extend_from_slice(packet);
        if self.hooks.is_empty() {
            self.send_ip(now, frame);
        } else {
            self.output_hooked(now, frame);
        }
    }
}

/// One hop less, with the IPv4 header checksum made again.
fn decrement_hop_limit(p: &mut [u8]) {
    if p[0] >> 4 == 6 {
        p[7] -= 1;
    } else {
        p[8] -= 1;
        Ipv4Packet::new_unchecked(p).fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Link;
    use crate::wire::{Arp, Mac};

    const A: Mac = [2, 0, 0, 0, 0, 1];
    const B: Mac = [2, 0, 0, 0, 0, 2];
    const PEER: Mac = [2, 0, 0, 0, 0, 9];

    /// A router between 10.1.0.0/24 (link 0) and 10.2.0.0/24 (link 1).
    fn router() -> Net {
        let mut n = Net::new();
        for (name, mac, cidr) in [("vde0", A, "10.1.0.1/24"), ("vde1", B, "10.2.0.1/24")] {
            let mut l = Link::new(name.into(), mac);
            l.addrs.push(cidr.parse().unwrap());
            n.links.push(l);
        }
        n.forwarding = true;
        n
    }

    fn now() -> Instant {
        Instant::from_millis(1000)
    }

    /// An Ethernet frame to `to` carrying an IPv4/UDP packet from `src` to `dst`.
    fn udp(to: Mac, src: [u8; 4], dst: [u8; 4], ttl: u8, len: usize) -> Vec<u8> {
        let mut f = vec![0u8; ETH_HDR + len];
        wire::write_eth(&mut f, to, PEER, wire::ETHERTYPE_IPV4);
        let p = &mut f[ETH_HDR..];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[6] = 0x40; // don't fragment
        p[8] = ttl;
        p[9] = 17;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        Ipv4Packet::new_unchecked(&mut p[..]).fill_checksum();
        f
    }

    /// Writes the UDP header's ports and length into `udp`'s frame (checksum 0: none).
    fn udp_header(f: &mut [u8], sport: u16, dport: u16, len: u16) {
        let u = &mut f[ETH_HDR + 20..];
        u[0..2].copy_from_slice(&sport.to_be_bytes());
        u[2..4].copy_from_slice(&dport.to_be_bytes());
        u[4..6].copy_from_slice(&len.to_be_bytes());
    }

    fn sent(n: &mut Net, link: usize) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        n.poll_transmit(link, &mut v);
        v
    }

    /// Teaches `n` that `ip` is at PEER on `link` (an ARP reply).
    fn arp_reply(n: &mut Net, link: usize, mac: Mac, ip: [u8; 4], me: [u8; 4]) {
        let mut f = vec![0u8; ETH_HDR + wire::ARP_LEN];
        wire::write_eth(&mut f, mac, PEER, wire::ETHERTYPE_ARP);
        Arp {
            op: 2,
            sha: PEER,
            spa: ip.into(),
            tha: mac,
            tpa: me.into(),
        }
        .write(&mut f[ETH_HDR..]);
        n.handle_frame(now(), link, &f);
    }

    #[test]
    fn a_packet_for_the_other_subnet_goes_out_there_one_hop_older() {
        let mut n = router();
        n.handle_frame(now(), 0, &udp(A, [10, 1, 0, 5], [10, 2, 0, 7], 64, 60));
        assert!(n.rx.is_empty(), "not for the stack itself");
        let arp = sent(&mut n, 1);
        assert_eq!(arp.len(), 1, "an ARP request for 10.2.0.7 on link 1");
        arp_reply(&mut n, 1, B, [10, 2, 0, 7], [10, 2, 0, 1]);
        let out = sent(&mut n, 1);
        assert_eq!(out.len(), 1);
        let p = Ipv4Packet::new_checked(&out[0][ETH_HDR..]).unwrap();
        assert_eq!((p.hop_limit(), p.verify_checksum()), (63, true));
        assert_eq!(&out[0][0..6], &PEER);
        assert_eq!(n.counters.forwarded, 1);
        // Off, the same packet is the stack's (smoltcp drops what is not its own).
        n.forwarding = false;
        n.handle_frame(now(), 0, &udp(A, [10, 1, 0, 5], [10, 2, 0, 7], 64, 60));
        assert_eq!(n.rx.len(), 1);
        assert!(sent(&mut n, 1).is_empty());
    }

    #[test]
    fn ttl_one_no_route_and_too_big_are_answered_with_icmp_errors_and_counted() {
        let mut n = router();
        arp_reply(&mut n, 0, A, [10, 1, 0, 5], [10, 1, 0, 1]);
        let _ = sent(&mut n, 0);
        n.links[1].mtu = 1280;
        let cases = [
            (udp(A, [10, 1, 0, 5], [10, 2, 0, 7], 1, 60), 11, 0),
            (udp(A, [10, 1, 0, 5], [192, 0, 2, 1], 64, 60), 3, 0),
            (udp(A, [10, 1, 0, 5], [10, 2, 0, 7], 64, 1400), 3, 4),
        ];
        for (f, ty, code) in cases {
            n.handle_frame(now(), 0, &f);
            let out = sent(&mut n, 0);
            assert_eq!(out.len(), 1, "one ICMP error back on link 0");
            let ip = Ipv4Packet::new_checked(&out[0][ETH_HDR..]).unwrap();
            assert_eq!(ip.src_addr(), std::net::Ipv4Addr::new(10, 1, 0, 1));
            assert_eq!(ip.dst_addr(), std::net::Ipv4Addr::new(10, 1, 0, 5));
            assert_eq!((ip.payload()[0], ip.payload()[1]), (ty, code));
            if code == 4 {
                assert_eq!(&ip.payload()[6..8], &1280u16.to_be_bytes(), "next-hop MTU");
            }
        }
        assert!(sent(&mut n, 1).is_empty(), "nothing went on");
        let c = n.counters;
        assert_eq!(
            (
                c.get(DropReason::TtlExceeded),
                c.get(DropReason::NoRoute),
                c.get(DropReason::TooBig)
            ),
            (1, 1, 1)
        );
        assert_eq!(c.forwarded, 0);
    }

    #[test]
    fn reverse_path_filtering_drops_a_source_that_belongs_elsewhere() {
        let mut n = router();
        // 10.2.0.5 lives on link 1: from link 0 it is spoofed.
        let spoofed = udp(A, [10, 2, 0, 5], [10, 2, 0, 7], 64, 60);
        n.rp_filter = true;
        n.handle_frame(now(), 0, &spoofed);
        assert!(sent(&mut n, 1).is_empty(), "not forwarded");
        assert_eq!(n.counters.get(DropReason::ReversePath), 1);
        assert_eq!(n.counters.forwarded, 0);
        // Off, it goes on (an ARP request for 10.2.0.7 first).
        n.rp_filter = false;
        n.handle_frame(now(), 0, &spoofed);
        assert_eq!(sent(&mut n, 1).len(), 1);
        assert_eq!(n.counters.get(DropReason::ReversePath), 1);
    }

    #[test]
    fn icmp_errors_are_rate_limited_to_a_burst_then_refilled() {
        let mut n = router();
        arp_reply(&mut n, 0, A, [10, 1, 0, 5], [10, 1, 0, 1]);
        let _ = sent(&mut n, 0);
        let expired = udp(A, [10, 1, 0, 5], [10, 2, 0, 7], 1, 60);
        for _ in 0..150 {
            n.handle_frame(now(), 0, &expired);
        }
        assert_eq!(sent(&mut n, 0).len(), ICMP_BURST as usize);
        assert_eq!(n.counters.get(DropReason::IcmpRateLimited), 50);
        // 10 ms later, 10 more tokens.
        let later = now() + smoltcp::time::Duration::from_millis(10);
        for _ in 0..20 {
            n.handle_frame(later, 0, &expired);
        }
        assert_eq!(sent(&mut n, 0).len(), 10);
        assert_eq!(n.counters.get(DropReason::TtlExceeded), 170);
    }

    #[test]
    fn an_icmp_error_about_a_port_forwarded_packet_quotes_it_as_the_outside_sent_it() {
        let mut n = router();
        let spec = NatSpec {
            iface: 1,
            forwards: vec![Forward::parse("udp:5353=10.1.0.50:53").unwrap()],
            ..NatSpec::default()
        };
        let t = (now(), std::time::Instant::now());
        let Net { hooks, links, .. } = &mut n;
        hooks.add_nat(t, spec, links);
        arp_reply(&mut n, 1, B, [10, 2, 0, 7], [10, 2, 0, 1]);
        let _ = sent(&mut n, 1);
        // From outside to the forwarded port, with a TTL that runs out here.
        let mut f = udp(B, [10, 2, 0, 7], [10, 2, 0, 1], 1, 60);
        udp_header(&mut f, 4000, 5353, 40);
        n.handle_frame(now(), 1, &f);
        let out = sent(&mut n, 1);
        assert_eq!(out.len(), 1, "time exceeded, back out of link 1");
        let ip = Ipv4Packet::new_checked(&out[0][ETH_HDR..]).unwrap();
        assert_eq!(ip.payload()[0], 11);
        let quoted = &ip.payload()[8..];
        let q = Ipv4Packet::new_unchecked(quoted);
        assert_eq!(
            (q.dst_addr(), &quoted[22..24]),
            (
                std::net::Ipv4Addr::new(10, 2, 0, 1),
                &5353u16.to_be_bytes()[..]
            ),
            "not the inside server 10.1.0.50:53"
        );
    }

    /// An Ethernet frame to `to` carrying an IPv4 fragment (identification `id`, offset
    /// `offset` bytes, more fragments or not) of a UDP datagram from `src` to `dst`.
    fn fragment(
        to: Mac,
        (src, dst): ([u8; 4], [u8; 4]),
        id: u16,
        offset: usize,
        more: bool,
        data: &[u8],
    ) -> Vec<u8> {
        let mut f = udp(to, src, dst, 64, 20 + data.len());
        let p = &mut f[ETH_HDR..];
        p[4..6].copy_from_slice(&id.to_be_bytes());
        let flags = (offset / 8) as u16 | if more { 0x2000 } else { 0 };
        p[6..8].copy_from_slice(&flags.to_be_bytes());
        p[20..].copy_from_slice(data);
        Ipv4Packet::new_unchecked(&mut p[..]).fill_checksum();
        f
    }

    #[test]
    fn a_replys_later_fragment_that_comes_first_is_held_and_follows_its_first_one() {
        let mut n = router();
        let spec = NatSpec {
            iface: 1,
            masquerade: true,
            ..NatSpec::default()
        };
        let t = (now(), std::time::Instant::now());
        let Net { hooks, links, .. } = &mut n;
        hooks.add_nat(t, spec, links);
        arp_reply(&mut n, 0, A, [10, 1, 0, 5], [10, 1, 0, 1]);
        arp_reply(&mut n, 1, B, [10, 2, 0, 7], [10, 2, 0, 1]);
        let _ = (sent(&mut n, 0), sent(&mut n, 1));
        // 10.1.0.5:4000 asks 10.2.0.7:53 through the masquerade.
        let mut f = udp(A, [10, 1, 0, 5], [10, 2, 0, 7], 64, 28);
        udp_header(&mut f, 4000, 53, 8);
        n.handle_frame(now(), 0, &f);
        let out = sent(&mut n, 1);
        assert_eq!(out.len(), 1);
        let port = u16::from_be_bytes([out[0][ETH_HDR + 20], out[0][ETH_HDR + 21]]);
        // The answer comes in two fragments, the second one first.
        let mut first = vec![0u8; 24];
        first[0..2].copy_from_slice(&53u16.to_be_bytes());
        first[2..4].copy_from_slice(&port.to_be_bytes());
        first[4..6].copy_from_slice(&40u16.to_be_bytes());
        let addrs = ([10, 2, 0, 7], [10, 2, 0, 1]);
        let second = fragment(B, addrs, 77, 24, false, &[0xab; 16]);
        n.handle_frame(now(), 1, &second);
        assert!(sent(&mut n, 0).is_empty(), "held for its first fragment");
        assert_eq!(n.counters.get(DropReason::Hook), 0);
        assert_eq!(
            n.poll_at(),
            Some(now() + smoltcp::time::Duration::from_secs(30))
        );
        n.handle_frame(now(), 1, &fragment(B, addrs, 77, 0, true, &first));
        let out = sent(&mut n, 0);
        assert_eq!(out.len(), 2, "the first fragment, then the one held for it");
        for (f, offset) in out.iter().zip([0u16, 3]) {
            let ip = Ipv4Packet::new_checked(&f[ETH_HDR..]).unwrap();
            assert_eq!(ip.dst_addr(), std::net::Ipv4Addr::new(10, 1, 0, 5));
            assert_eq!((ip.frag_offset() / 8, ip.verify_checksum()), (offset, true));
        }
        assert_eq!(&out[0][ETH_HDR + 22..ETH_HDR + 24], &4000u16.to_be_bytes());
        assert_eq!(&out[1][ETH_HDR + 20..], &[0xab; 16]);
        assert_eq!(n.counters.forwarded, 3);
        // One whose first fragment never comes is dropped when its time is up.
        n.handle_frame(now(), 1, &fragment(B, addrs, 78, 24, false, &[0xcd; 16]));
        let later = now() + smoltcp::time::Duration::from_secs(31);
        n.on_timer(later);
        assert!(sent(&mut n, 0).is_empty());
        assert_eq!(n.counters.get(DropReason::Hook), 1);
        let nat = n.hooks.print("nat", later).unwrap().join("\n");
        assert!(nat.contains("fragment_hold_timeout 1"), "{nat}");
    }

    #[test]
    fn nat_follows_the_links_address_as_dhcp_would_change_it() {
        let mut n = router();
        n.links[1].addrs.retain(|c| c.addr.is_ipv6());
        let spec = NatSpec {
            iface: 1,
            masquerade: true,
            nat66: true,
            ..NatSpec::default()
        };
        let t = (now(), std::time::Instant::now());
        let Net { hooks, links, .. } = &mut n;
        hooks.add_nat(t, spec, links);
        let print = |n: &Net| n.hooks.print("nat", now()).unwrap().join("\n");
        assert!(print(&n).starts_with("masquerade  conns"), "{}", print(&n));
        n.links[1].addrs.push("10.2.0.9/24".parse().unwrap());
        n.links[1].addrs.push("fd02::9/64".parse().unwrap());
        n.hooks.readdress(&n.links);
        assert!(
            print(&n).starts_with("masquerade 10.2.0.9 fd02::9 conns"),
            "{}",
            print(&n)
        );
        // Forwarded out of link 1, a packet leaves from the new address.
        arp_reply(&mut n, 1, B, [10, 2, 0, 7], [10, 2, 0, 9]);
        let _ = sent(&mut n, 1);
        n.handle_frame(now(), 0, &udp(A, [10, 1, 0, 5], [10, 2, 0, 7], 64, 60));
        let out = sent(&mut n, 1);
        assert_eq!(out.len(), 1);
        let ip = Ipv4Packet::new_checked(&out[0][ETH_HDR..]).unwrap();
        assert_eq!(ip.src_addr(), std::net::Ipv4Addr::new(10, 2, 0, 9));
        assert!(print(&n).contains("udp 10.1.0.5:0 -> 10.2.0.7:0 as 10.2.0.9:"));
        // A port forward added keeps it; a new address (a new lease) forgets it: its
        // replies would come to the old one.
        let t = (now(), std::time::Instant::now());
        let Net { hooks, links, .. } = &mut n;
        let fwd = NatOption::PortForward(Forward::parse("udp:53=10.1.0.53").unwrap());
        hooks.change_nat(t, 1, links, |s| s.apply(&fwd)).unwrap();
        assert!(print(&n).contains("udp 10.1.0.5:0 -> 10.2.0.7:0 as 10.2.0.9:"));
        n.links[1].addrs[0] = "10.2.0.10/24".parse().unwrap();
        n.hooks.readdress(&n.links);
        let nat = print(&n);
        assert!(nat.contains("masquerade 10.2.0.10 fd02::9 conns"), "{nat}");
        assert!(!nat.contains("udp 10.1.0.5"), "{nat}");
        assert!(
            nat.contains("forward udp 10.2.0.10:53 to 10.1.0.53:53"),
            "{nat}"
        );
    }
}
