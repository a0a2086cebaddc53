//! The sans-IO forwarding engine: frames and time in, egress decisions out.

use crate::stp::{PortRole, PortState, SpanningTree, StpStatus, StpTimers};
use crate::wire::bpdu::{BpduRepr, BridgeId};
use crate::wire::dhcp;
use crate::wire::ethernet::{self, EtherType, MacAddr};
use crate::wire::vlan::{self, TaggedFrame, Tci};
use crate::wire::WireError;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Port number, `0..num_ports`.
pub type PortId = u16;

/// The default untagged VLAN of every port.
pub const DEFAULT_VLAN: u16 = 0;
/// Untagged VLAN value meaning "this port accepts no untagged frames" (vde's NOVLAN).
pub const NO_VLAN: u16 = 4095;
/// Highest VLAN `vlan_create` accepts (4094 and 4095 are reserved, as in vde_switch).
pub const MAX_VLAN: u16 = 4093;
const VLAN_SLOTS: usize = 4096;
/// DHCP snooping: client broadcasts flooded per VLAN at once before the rest go to the DHCP
/// server ports only...
pub const DHCP_FLOOD_BURST: u32 = 32;
/// ...and per second after that, so a server that has not answered yet still hears clients.
pub const DHCP_FLOOD_PER_SEC: u32 = 32;

/// Switch configuration; `Default` gives vde_switch's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreConfig {
    pub num_ports: u16,
    pub hub: bool,
    pub mac_expire: Duration,
    pub gc_interval: Duration,
    pub min_persistence: Duration,
    pub stp: bool,
    pub bridge_mac: MacAddr,
    pub bridge_priority: u16,
    /// Spanning-tree timers this bridge advertises when it is root.
    pub stp_timers: StpTimers,
    /// DHCP snooping (see [`Core::set_dhcp_snooping`]).
    pub dhcp_snooping: bool,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            num_ports: 32,
            hub: false,
            mac_expire: Duration::from_secs(100),
            gc_interval: Duration::from_secs(2),
            min_persistence: Duration::from_secs(3),
            stp: false,
            bridge_mac: MacAddr([0x02, 0, 0, 0, 0, 0x01]),
            bridge_priority: 0x8000,
            stp_timers: StpTimers::default(),
            dhcp_snooping: true,
        }
    }
}

/// How the frame must be rewritten for one egress port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EgressAction {
    /// Send the bytes unchanged.
    AsIs,
    /// Insert an 802.1Q tag with this VID and PCP 0.
    InsertTag(u16),
    /// Remove the 802.1Q tag.
    Strip,
    /// Keep the tag but set its VID (PCP/DEI kept): a priority-tagged (VID 0) frame
    /// classified to the port's untagged VLAN leaving on a tagged member of that VLAN.
    RewriteVid(u16),
}

impl EgressAction {
    /// The bytes to send: `frame` itself for `AsIs`, otherwise a rewritten copy in `scratch`
    /// (which needs `frame.len() + 4` bytes).
    pub fn render<'a>(
        &self,
        frame: &'a [u8],
        scratch: &'a mut [u8],
    ) -> Result<&'a [u8], WireError> {
        match *self {
            EgressAction::AsIs => Ok(frame),
            EgressAction::InsertTag(vid) => {
                let len = vlan::insert_tag(frame, Tci::new(0, false, vid), scratch)?;
                Ok(&scratch[..len])
            }
            EgressAction::Strip => {
                let len = vlan::strip_tag(frame, scratch)?;
                Ok(&scratch[..len])
            }
            EgressAction::RewriteVid(vid) => {
                let copy = scratch.get_mut(..frame.len()).ok_or(WireError::Truncated)?;
                copy.copy_from_slice(frame);
                vlan::rewrite_vid(copy, vid)?;
                Ok(copy)
            }
        }
    }
}

/// One output of a forwarding decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Egress {
    pub port: PortId,
    pub action: EgressAction,
}

/// Why a frame went nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than an Ethernet header (or a tagged one, when tagged).
    TooShort,
    /// The ingress port does not exist or has no endpoint.
    UnknownPort,
    /// Tagged with a VLAN the ingress port is not a member of.
    NotMember,
    /// Untagged, but the ingress port accepts no untagged frames (untagged VLAN 4095).
    NoUntaggedVlan,
    /// Spanning tree: the ingress port is not forwarding.
    PortBlocked,
    /// Destination learned on the ingress port: the frame is already on its segment.
    SameSegment,
    /// Destination learned on a port that is not forwarding (spanning tree).
    DestinationBlocked,
    /// No other port to deliver to.
    NoDestination,
    /// Addressed to the bridge group address but not a BPDU we understand.
    BadBpdu,
}

impl DropReason {
    pub const ALL: [DropReason; 9] = [
        DropReason::TooShort,
        DropReason::UnknownPort,
        DropReason::NotMember,
        DropReason::NoUntaggedVlan,
        DropReason::PortBlocked,
        DropReason::SameSegment,
        DropReason::DestinationBlocked,
        DropReason::NoDestination,
        DropReason::BadBpdu,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::TooShort => "too_short",
            DropReason::UnknownPort => "unknown_port",
            DropReason::NotMember => "not_member",
            DropReason::NoUntaggedVlan => "no_untagged_vlan",
            DropReason::PortBlocked => "port_blocked",
            DropReason::SameSegment => "same_segment",
            DropReason::DestinationBlocked => "destination_blocked",
            DropReason::NoDestination => "no_destination",
            DropReason::BadBpdu => "bad_bpdu",
        }
    }
}

/// The outcome of [`Core::handle_frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Forwarded,
    Dropped(DropReason),
    /// A BPDU, processed by the spanning tree.
    Consumed,
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
}

/// A configuration request the core refused; `errno` gives vde_switch's console code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid argument")]
    Invalid,
    #[error("no such port")]
    NoSuchPort,
    #[error("no such VLAN")]
    NoSuchVlan,
    #[error("already exists")]
    Exists,
    #[error("the port's untagged VLAN cannot be removed as a tagged membership")]
    UntaggedVlan,
    #[error("VLAN still has member ports")]
    Busy,
    #[error("not a member")]
    NotMember,
}

impl ConfigError {
    /// errno value vde_switch's console reports for the same condition.
    pub fn errno(self) -> i32 {
        match self {
            ConfigError::Invalid => 22,      // EINVAL
            ConfigError::NoSuchPort => 6,    // ENXIO
            ConfigError::NoSuchVlan => 6,    // ENXIO
            ConfigError::Exists => 17,       // EEXIST
            ConfigError::UntaggedVlan => 98, // EADDRINUSE
            ConfigError::Busy => 16,         // EBUSY
            ConfigError::NotMember => 2,     // ENOENT
        }
    }
}

/// A learned address, for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacEntry {
    pub mac: MacAddr,
    pub vlan: u16,
    pub port: PortId,
    pub age: Duration,
}

/// A VLAN member port, for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanMember {
    pub port: PortId,
    pub tagged: bool,
    pub active: bool,
    pub stp_state: PortState,
}

/// A port, for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortInfo {
    pub port: PortId,
    pub active: bool,
    pub untagged_vlan: u16,
    pub edge: bool,
    pub stp_role: PortRole,
    pub stp_state: PortState,
}

/// One bit per VID.
#[derive(Debug, Clone, PartialEq, Eq)]
struct VidSet([u64; VLAN_SLOTS / 64]);

impl VidSet {
    const EMPTY: VidSet = VidSet([0; VLAN_SLOTS / 64]);

    fn contains(&self, vid: u16) -> bool {
        let vid = usize::from(vid & vlan::VID_MASK);
        self.0[vid / 64] & (1 << (vid % 64)) != 0
    }

    fn set(&mut self, vid: u16, on: bool) {
        let vid = usize::from(vid & vlan::VID_MASK);
        if on {
            self.0[vid / 64] |= 1 << (vid % 64);
        } else {
            self.0[vid / 64] &= !(1 << (vid % 64));
        }
    }
}

#[derive(Debug, Clone)]
struct Port {
    active: bool,
    untagged_vlan: u16,
    tagged: VidSet,
    /// Set by hand: a DHCP server is on this port, in every VLAN it is a member of.
    dhcp_server: bool,
}

/// A port a DHCP server (or relay agent) answered from, in one VLAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DhcpServerPort {
    pub port: PortId,
    pub vlan: u16,
    /// When it last answered; `None` for a port set by hand (`port/dhcpserver`).
    pub last_seen: Option<Instant>,
}

/// The DHCP client broadcasts a VLAN may still flood now (a token bucket).
#[derive(Debug, Clone, Copy)]
struct FloodBudget {
    tokens: u32,
    refilled: Instant,
}

#[derive(Debug, Clone)]
struct MacRecord {
    port: PortId,
    last_seen: Instant,
}

/// Key of the address table: MAC in the low 48 bits, VID above.
fn mac_key(mac: MacAddr, vid: u16) -> u64 {
    mac.to_u64() | (u64::from(vid) << 48)
}

/// The forwarding engine of one switch.
#[derive(Debug)]
pub struct Core {
    config: CoreConfig,
    /// Indexed by port id; `None` = port not created.
    ports: Vec<Option<Port>>,
    /// Indexed by VID; `Some(members)` = VLAN exists. Members are kept sorted.
    vlans: Vec<Option<Vec<PortId>>>,
    macs: HashMap<u64, MacRecord>,
    next_gc: Instant,
    mirror: Option<PortId>,
    stp: SpanningTree,
    drops: DropCounters,
    /// Learned DHCP server ports (those set by hand are in `Port::dhcp_server`).
    dhcp_servers: Vec<DhcpServerPort>,
    dhcp_budget: HashMap<u16, FloodBudget>,
    /// DHCP client broadcasts sent to the server ports only instead of flooded.
    dhcp_snooped: u64,
}

impl Core {
    pub fn new(config: CoreConfig, now: Instant) -> Core {
        let mut vlans = vec![None; VLAN_SLOTS];
        vlans[usize::from(DEFAULT_VLAN)] = Some(Vec::new());
        let stp = SpanningTree::new(
            BridgeId::new(config.bridge_priority, config.bridge_mac),
            config.stp_timers,
            config.num_ports,
            now,
        );
        Core {
            ports: vec![None; usize::from(config.num_ports)],
            vlans,
            macs: HashMap::new(),
            next_gc: now + config.gc_interval,
            mirror: None,
            stp,
            drops: DropCounters::default(),
            dhcp_servers: Vec::new(),
            dhcp_budget: HashMap::new(),
            dhcp_snooped: 0,
            config,
        }
    }

    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    // ---- ports -------------------------------------------------------------------------

    /// Create port `port` (inactive, untagged member of VLAN 0).
    pub fn add_port(&mut self, port: PortId) -> Result<(), ConfigError> {
        let slot = self
            .ports
            .get_mut(usize::from(port))
            .ok_or(ConfigError::NoSuchPort)?;
        if slot.is_some() {
            return Err(ConfigError::Exists);
        }
        *slot = Some(Port {
            active: false,
            untagged_vlan: DEFAULT_VLAN,
            tagged: VidSet::EMPTY,
            dhcp_server: false,
        });
        self.join_vlan(DEFAULT_VLAN, port);
        Ok(())
    }

    /// Remove port `port` and everything tied to it.
    pub fn remove_port(&mut self, now: Instant, port: PortId) -> Result<(), ConfigError> {
        self.port(port)?;
        self.set_port_active(now, port, false)?;
        for members in self.vlans.iter_mut().flatten() {
            members.retain(|&p| p != port);
        }
        self.ports[usize::from(port)] = None;
        if self.mirror == Some(port) {
            self.mirror = None;
        }
        self.stp.set_edge(now, port, false);
        Ok(())
    }

    /// A port is active while it has at least one endpoint; only active ports send or
    /// receive. Deactivation flushes the port's learned addresses.
    pub fn set_port_active(
        &mut self,
        now: Instant,
        port: PortId,
        active: bool,
    ) -> Result<(), ConfigError> {
        let p = self.port_mut(port)?;
        if p.active == active {
            return Ok(());
        }
        p.active = active;
        if active {
            self.stp.enable_port(now, port);
        } else {
            self.flush_port(port);
            self.stp.disable_port(now, port);
        }
        self.apply_stp_events();
        Ok(())
    }

    pub fn ports(&self) -> impl Iterator<Item = PortInfo> + '_ {
        self.ports.iter().enumerate().filter_map(|(index, p)| {
            let p = p.as_ref()?;
            let port = index as PortId;
            Some(PortInfo {
                port,
                active: p.active,
                untagged_vlan: p.untagged_vlan,
                edge: self.stp.is_edge(port),
                stp_role: self.stp.port_role(port),
                stp_state: self.stp_state(port),
            })
        })
    }

    fn port(&self, port: PortId) -> Result<&Port, ConfigError> {
        self.ports
            .get(usize::from(port))
            .and_then(Option::as_ref)
            .ok_or(ConfigError::NoSuchPort)
    }

    fn port_mut(&mut self, port: PortId) -> Result<&mut Port, ConfigError> {
        self.ports
            .get_mut(usize::from(port))
            .and_then(Option::as_mut)
            .ok_or(ConfigError::NoSuchPort)
    }

    // ---- configuration -----------------------------------------------------------------

    /// Hub mode: flood every frame to every other active port, unchanged; no learning,
    /// no VLANs, no spanning tree.
    pub fn set_hub(&mut self, hub: bool) {
        self.config.hub = hub;
    }

    pub fn set_mac_expire(&mut self, expire: Duration) {
        self.config.mac_expire = expire;
    }

    pub fn set_gc_interval(&mut self, now: Instant, interval: Duration) {
        self.config.gc_interval = interval;
        self.next_gc = now + interval;
    }

    pub fn set_min_persistence(&mut self, min_persistence: Duration) {
        self.config.min_persistence = min_persistence;
    }

    /// Copy every forwarded frame, unchanged, to `mirror` too (except frames from it).
    pub fn set_mirror(&mut self, mirror: Option<PortId>) -> Result<(), ConfigError> {
        if let Some(port) = mirror {
            self.port(port)?;
        }
        self.mirror = mirror;
        Ok(())
    }

    pub fn mirror(&self) -> Option<PortId> {
        self.mirror
    }

    /// DHCP snooping, on by default. A frame from UDP port 67 to 68 (a DHCP server's or
    /// relay agent's answer) marks its port as a DHCP server port in its VLAN, until the
    /// port goes down or has not answered for the address lifetime (`hash/setexpire`).
    /// Client broadcasts (UDP 68 to 67, to ff:ff:ff:ff:ff:ff) are flooded as usual up to
    /// [`DHCP_FLOOD_BURST`] at once and [`DHCP_FLOOD_PER_SEC`] per second in each VLAN —
    /// so a lone client, or a server that has not answered yet, sees what it always did —
    /// and beyond that go only to the VLAN's DHCP server ports (learned, or set with
    /// [`Core::set_dhcp_server_port`]), or are flooded if it has none. A thousand clients
    /// asking at once then cost the switch a thousand copies, not a million.
    pub fn set_dhcp_snooping(&mut self, on: bool) {
        self.config.dhcp_snooping = on;
        if !on {
            self.dhcp_servers.clear();
            self.dhcp_budget.clear();
        }
    }

    /// Marks `port` by hand as one with a DHCP server (in every VLAN it is a member of),
    /// before any server answered from it: clients' broadcasts beyond the flood budget go
    /// there from the first.
    pub fn set_dhcp_server_port(&mut self, port: PortId, on: bool) -> Result<(), ConfigError> {
        self.port_mut(port)?.dhcp_server = on;
        Ok(())
    }

    /// DHCP server ports: those set by hand (in their untagged VLAN) and the learned ones.
    pub fn dhcp_server_ports(&self) -> Vec<DhcpServerPort> {
        let mut all: Vec<DhcpServerPort> = self
            .ports
            .iter()
            .enumerate()
            .filter_map(|(index, p)| {
                let p = p.as_ref().filter(|p| p.dhcp_server)?;
                Some(DhcpServerPort {
                    port: index as PortId,
                    vlan: p.untagged_vlan,
                    last_seen: None,
                })
            })
            .collect();
        all.extend(self.dhcp_servers.iter().copied());
        all
    }

    /// DHCP client broadcasts sent to the DHCP server ports only, instead of flooded.
    pub fn dhcp_snooped(&self) -> u64 {
        self.dhcp_snooped
    }

    /// Turn the spanning tree on (restarting it: every port goes through Listening and
    /// Learning) or off (every port forwards).
    pub fn set_stp(&mut self, now: Instant, on: bool) {
        if on == self.config.stp {
            return;
        }
        self.config.stp = on;
        let edges: Vec<PortId> = (0..self.config.num_ports)
            .filter(|&p| self.stp.is_edge(p))
            .collect();
        self.stp = SpanningTree::new(
            BridgeId::new(self.config.bridge_priority, self.config.bridge_mac),
            self.config.stp_timers,
            self.config.num_ports,
            now,
        );
        for port in edges {
            self.stp.set_edge(now, port, true);
        }
        for index in 0..self.ports.len() {
            if self.ports[index].as_ref().is_some_and(|p| p.active) {
                self.stp.enable_port(now, index as PortId);
            }
        }
        // Addresses learned over paths the tree may now cut are no longer trustworthy.
        self.macs.clear();
        while self.stp.pop_left_forwarding().is_some() {}
    }

    /// Mark `port` as an edge (host) port for the spanning tree.
    pub fn set_edge(&mut self, now: Instant, port: PortId, edge: bool) -> Result<(), ConfigError> {
        self.port(port)?;
        self.stp.set_edge(now, port, edge);
        self.apply_stp_events();
        Ok(())
    }

    /// Set the untagged VLAN of `port` (`NO_VLAN` = accept no untagged frames).
    /// The port's learned addresses are flushed.
    pub fn set_untagged_vlan(&mut self, port: PortId, vid: u16) -> Result<(), ConfigError> {
        if vid != NO_VLAN && self.vlan_members(vid).is_none() {
            return Err(ConfigError::NoSuchVlan);
        }
        let p = self.port_mut(port)?;
        let old = p.untagged_vlan;
        if old == vid {
            return Ok(());
        }
        p.untagged_vlan = vid;
        let was_tagged = vid != NO_VLAN && p.tagged.contains(vid);
        p.tagged.set(vid, false);
        if old != NO_VLAN {
            self.leave_vlan(old, port);
        }
        if vid != NO_VLAN && !was_tagged {
            self.join_vlan(vid, port);
        }
        self.flush_port(port);
        Ok(())
    }

    pub fn vlan_create(&mut self, vid: u16) -> Result<(), ConfigError> {
        if !(1..=MAX_VLAN).contains(&vid) {
            return Err(ConfigError::Invalid);
        }
        let slot = &mut self.vlans[usize::from(vid)];
        if slot.is_some() {
            return Err(ConfigError::Exists);
        }
        *slot = Some(Vec::new());
        Ok(())
    }

    /// Remove an empty VLAN (VLAN 0 cannot be removed).
    pub fn vlan_remove(&mut self, vid: u16) -> Result<(), ConfigError> {
        if vid == DEFAULT_VLAN || vid > MAX_VLAN {
            return Err(ConfigError::Invalid);
        }
        match &self.vlans[usize::from(vid)] {
            None => Err(ConfigError::NoSuchVlan),
            Some(members) if !members.is_empty() => Err(ConfigError::Busy),
            Some(_) => {
                self.vlans[usize::from(vid)] = None;
                Ok(())
            }
        }
    }

    /// Make `port` a tagged member of `vid`.
    pub fn vlan_add_port(&mut self, vid: u16, port: PortId) -> Result<(), ConfigError> {
        if vid == DEFAULT_VLAN || vid > MAX_VLAN {
            // VID 0 on the wire is a priority tag, so VLAN 0 has no tagged members.
            return Err(ConfigError::Invalid);
        }
        if self.vlan_members(vid).is_none() {
            return Err(ConfigError::NoSuchVlan);
        }
        let p = self.port_mut(port)?;
        if p.untagged_vlan == vid || p.tagged.contains(vid) {
            return Err(ConfigError::Exists);
        }
        p.tagged.set(vid, true);
        self.join_vlan(vid, port);
        Ok(())
    }

    /// Remove the tagged membership of `port` in `vid`; refuses the untagged VLAN.
    pub fn vlan_del_port(&mut self, vid: u16, port: PortId) -> Result<(), ConfigError> {
        if self.vlan_members(vid).is_none() {
            return Err(ConfigError::NoSuchVlan);
        }
        let p = self.port_mut(port)?;
        if p.untagged_vlan == vid {
            return Err(ConfigError::UntaggedVlan);
        }
        if !p.tagged.contains(vid) {
            return Err(ConfigError::NotMember);
        }
        p.tagged.set(vid, false);
        self.leave_vlan(vid, port);
        self.macs
            .retain(|&key, record| !(record.port == port && (key >> 48) as u16 == vid));
        Ok(())
    }

    fn join_vlan(&mut self, vid: u16, port: PortId) {
        if let Some(members) = &mut self.vlans[usize::from(vid)] {
            if let Err(at) = members.binary_search(&port) {
                members.insert(at, port);
            }
        }
    }

    fn leave_vlan(&mut self, vid: u16, port: PortId) {
        if let Some(members) = &mut self.vlans[usize::from(vid)] {
            members.retain(|&p| p != port);
        }
    }

    // ---- inspection --------------------------------------------------------------------

    pub fn mac_table(&self, now: Instant) -> impl Iterator<Item = MacEntry> + '_ {
        self.macs.iter().map(move |(&key, record)| MacEntry {
            mac: MacAddr::from_u64(key & 0xffff_ffff_ffff),
            vlan: (key >> 48) as u16,
            port: record.port,
            age: now.saturating_duration_since(record.last_seen),
        })
    }

    /// Port `mac` was learned on in `vid`.
    pub fn lookup(&self, mac: MacAddr, vid: u16) -> Option<PortId> {
        self.macs.get(&mac_key(mac, vid)).map(|r| r.port)
    }

    /// Existing VLAN ids, ascending.
    pub fn vlan_ids(&self) -> impl Iterator<Item = u16> + '_ {
        self.vlans
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_some())
            .map(|(vid, _)| vid as u16)
    }

    /// Members of `vid`, or `None` if the VLAN does not exist.
    pub fn vlan_members(&self, vid: u16) -> Option<impl Iterator<Item = VlanMember> + '_> {
        let members = self.vlans.get(usize::from(vid))?.as_ref()?;
        Some(members.iter().filter_map(move |&port| {
            let p = self.ports[usize::from(port)].as_ref()?;
            Some(VlanMember {
                port,
                tagged: p.untagged_vlan != vid,
                active: p.active,
                stp_state: self.stp_state(port),
            })
        }))
    }

    /// Spanning-tree state of `port` as the forwarding path sees it (Forwarding when the
    /// tree is off).
    pub fn stp_state(&self, port: PortId) -> PortState {
        if !self.config.stp {
            return match self.ports.get(usize::from(port)).and_then(Option::as_ref) {
                Some(p) if p.active => PortState::Forwarding,
                _ => PortState::Disabled,
            };
        }
        self.stp.port_state(port)
    }

    pub fn stp_role(&self, port: PortId) -> PortRole {
        self.stp.port_role(port)
    }

    pub fn stp_status(&self) -> StpStatus {
        self.stp.status()
    }

    pub fn drop_counters(&self) -> &DropCounters {
        &self.drops
    }

    // ---- time --------------------------------------------------------------------------

    /// Age out addresses and run spanning-tree timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.config.stp {
            self.stp.handle_timeout(now);
            self.apply_stp_events();
        }
        if now >= self.next_gc {
            self.collect_garbage(now);
            self.next_gc = now + self.config.gc_interval;
        }
    }

    /// When `handle_timeout` next has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let gc = (!self.macs.is_empty() || !self.dhcp_servers.is_empty()).then_some(self.next_gc);
        let stp = if self.config.stp {
            self.stp.poll_timeout()
        } else {
            None
        };
        gc.into_iter().chain(stp).min()
    }

    /// Write the next BPDU to send into `buf` (at least 60 bytes) and return its port and
    /// length. BPDUs are always untagged: the single tree spans all VLANs.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<(PortId, usize)> {
        loop {
            if !self.config.stp || self.config.hub {
                return None;
            }
            let (port, bpdu) = self.stp.peek_transmit()?;
            let active = self
                .ports
                .get(usize::from(port))
                .and_then(Option::as_ref)
                .is_some_and(|p| p.active);
            if !active {
                self.stp.pop_transmit();
                continue;
            }
            let len = bpdu.emit(self.config.bridge_mac, buf).ok()?;
            self.stp.pop_transmit();
            return Some((port, len));
        }
    }

    fn collect_garbage(&mut self, now: Instant) {
        // During a topology change, 802.1D ages addresses with the forward delay.
        let expire = if self.config.stp && self.stp.topology_change() {
            self.config.mac_expire.min(self.stp.forward_delay())
        } else {
            self.config.mac_expire
        };
        self.macs
            .retain(|_, record| now.saturating_duration_since(record.last_seen) <= expire);
        let server_expire = self.config.mac_expire;
        self.dhcp_servers.retain(|s| {
            s.last_seen
                .is_some_and(|t| now.saturating_duration_since(t) <= server_expire)
        });
    }

    fn flush_port(&mut self, port: PortId) {
        self.macs.retain(|_, record| record.port != port);
        self.dhcp_servers.retain(|s| s.port != port);
    }

    fn apply_stp_events(&mut self) {
        while let Some(port) = self.stp.pop_left_forwarding() {
            self.flush_port(port);
        }
    }

    // ---- forwarding --------------------------------------------------------------------

    /// Decide where `frame`, received on `ingress`, goes. `out` is cleared and filled with
    /// one entry per egress port.
    pub fn handle_frame(
        &mut self,
        now: Instant,
        ingress: PortId,
        frame: &[u8],
        out: &mut Vec<Egress>,
    ) -> Verdict {
        out.clear();
        let verdict = self.decide(now, ingress, frame, out);
        if let Verdict::Dropped(reason) = verdict {
            out.clear();
            self.drops.counts[reason as usize] += 1;
        }
        verdict
    }

    fn decide(
        &mut self,
        now: Instant,
        ingress: PortId,
        frame: &[u8],
        out: &mut Vec<Egress>,
    ) -> Verdict {
        let Ok(eth) = ethernet::Frame::new_checked(frame) else {
            return Verdict::Dropped(DropReason::TooShort);
        };
        let Some(in_port) = self
            .ports
            .get(usize::from(ingress))
            .and_then(Option::as_ref)
            .filter(|p| p.active)
        else {
            return Verdict::Dropped(DropReason::UnknownPort);
        };

        if self.config.hub {
            self.hub_flood(ingress, out);
            return finish(out);
        }

        let dst = eth.dst_addr();
        if dst == MacAddr::STP_GROUP && self.config.stp {
            // 802.1D: bridges never relay the group address; BPDUs feed the local tree.
            // With the tree off, such frames are flooded so stacked switches are transparent.
            return match BpduRepr::parse(frame) {
                Ok(bpdu) => {
                    self.stp.receive(now, ingress, &bpdu);
                    self.apply_stp_events();
                    Verdict::Consumed
                }
                Err(_) => Verdict::Dropped(DropReason::BadBpdu),
            };
        }

        let (vid, arrived_tag) = match classify_vlan(in_port, eth.ethertype(), frame) {
            Ok(classified) => classified,
            Err(reason) => return Verdict::Dropped(reason),
        };

        let in_state = self.stp_state(ingress);
        let src = eth.src_addr();
        if in_state.learns() && src.is_unicast() {
            self.learn(now, src, vid, ingress);
        }
        if !in_state.forwards() {
            return Verdict::Dropped(DropReason::PortBlocked);
        }

        if self.config.dhcp_snooping && self.snoop_dhcp(now, ingress, &eth, vid, arrived_tag, out) {
            self.add_mirror(ingress, out);
            return finish(out);
        }
        if let Err(reason) = self.forward(ingress, dst, vid, arrived_tag, out) {
            return Verdict::Dropped(reason);
        }
        self.add_mirror(ingress, out);
        finish(out)
    }

    /// DHCP snooping (see [`Core::set_dhcp_snooping`]): learns server ports from servers'
    /// answers; fills `out` and returns true for a client broadcast sent to the server ports
    /// only.
    fn snoop_dhcp(
        &mut self,
        now: Instant,
        ingress: PortId,
        eth: &ethernet::Frame<&[u8]>,
        vid: u16,
        arrived_tag: Option<u16>,
        out: &mut Vec<Egress>,
    ) -> bool {
        let direction = match arrived_tag {
            None => dhcp::classify(eth.ethertype(), eth.payload()),
            Some(_) => TaggedFrame::new_checked(eth.as_bytes())
                .ok()
                .and_then(|t| dhcp::classify(t.inner_ethertype(), t.payload())),
        };
        match direction {
            Some(dhcp::Direction::ToClient) => {
                match self
                    .dhcp_servers
                    .iter_mut()
                    .find(|s| s.port == ingress && s.vlan == vid)
                {
                    Some(s) => s.last_seen = Some(now),
                    None => {
                        tracing::debug!(port = ingress, vid, "DHCP server port learned");
                        self.dhcp_servers.push(DhcpServerPort {
                            port: ingress,
                            vlan: vid,
                            last_seen: Some(now),
                        });
                    }
                }
                false
            }
            Some(dhcp::Direction::ToServer) if eth.dst_addr().is_broadcast() => {
                if self.take_flood_token(now, vid) {
                    return false;
                }
                // The flood's receivers, but only the server ports among them.
                self.flood(ingress, vid, arrived_tag, out);
                let (ports, servers) = (&self.ports, &self.dhcp_servers);
                out.retain(|e| {
                    ports[usize::from(e.port)]
                        .as_ref()
                        .is_some_and(|p| p.dhcp_server)
                        || servers.iter().any(|s| s.port == e.port && s.vlan == vid)
                });
                // No server known in this VLAN: flooded as before.
                if out.is_empty() {
                    return false;
                }
                self.dhcp_snooped += 1;
                true
            }
            _ => false,
        }
    }

    /// True while `vid` may still flood DHCP client broadcasts (one taken).
    fn take_flood_token(&mut self, now: Instant, vid: u16) -> bool {
        let budget = self.dhcp_budget.entry(vid).or_insert(FloodBudget {
            tokens: DHCP_FLOOD_BURST,
            refilled: now,
        });
        let earned = now.saturating_duration_since(budget.refilled).as_millis()
            * u128::from(DHCP_FLOOD_PER_SEC)
            / 1000;
        if earned > 0 {
            budget.tokens = DHCP_FLOOD_BURST.min(budget.tokens.saturating_add(earned as u32));
            budget.refilled = now;
        }
        if budget.tokens == 0 {
            return false;
        }
        budget.tokens -= 1;
        true
    }

    /// Hub mode: every other active port gets the frame as it is.
    fn hub_flood(&self, ingress: PortId, out: &mut Vec<Egress>) {
        for (index, p) in self.ports.iter().enumerate() {
            if index != usize::from(ingress) && p.as_ref().is_some_and(|p| p.active) {
                out.push(Egress {
                    port: index as PortId,
                    action: EgressAction::AsIs,
                });
            }
        }
    }

    /// Sends a frame of `vid` to the port that learned `dst`, or floods it in `vid` when the
    /// address is unknown (or not unicast).
    fn forward(
        &self,
        ingress: PortId,
        dst: MacAddr,
        vid: u16,
        arrived_tag: Option<u16>,
        out: &mut Vec<Egress>,
    ) -> Result<(), DropReason> {
        let known = if dst.is_unicast() {
            self.macs.get(&mac_key(dst, vid)).map(|r| r.port)
        } else {
            None
        };
        match known {
            Some(port) if port == ingress => return Err(DropReason::SameSegment),
            Some(port) => {
                if !self.stp_state(port).forwards() {
                    return Err(DropReason::DestinationBlocked);
                }
                if let Some(p) = self.ports[usize::from(port)].as_ref() {
                    out.push(Egress {
                        port,
                        action: egress_action(p, vid, arrived_tag),
                    });
                }
            }
            None => self.flood(ingress, vid, arrived_tag, out),
        }
        Ok(())
    }

    /// Adds the mirror port (`port/setmirror`), if active and not the ingress: exactly one
    /// copy, unchanged, even if the mirror is also a normal member.
    fn add_mirror(&self, ingress: PortId, out: &mut Vec<Egress>) {
        let Some(mirror) = self.mirror.filter(|&m| m != ingress) else {
            return;
        };
        let mirror_active = self.ports[usize::from(mirror)]
            .as_ref()
            .is_some_and(|p| p.active);
        if mirror_active {
            match out.iter_mut().find(|e| e.port == mirror) {
                Some(existing) => existing.action = EgressAction::AsIs,
                None => out.push(Egress {
                    port: mirror,
                    action: EgressAction::AsIs,
                }),
            }
        }
    }

    fn flood(&self, ingress: PortId, vid: u16, arrived_tag: Option<u16>, out: &mut Vec<Egress>) {
        let Some(members) = self.vlans[usize::from(vid)].as_ref() else {
            return;
        };
        for &port in members {
            if port == ingress || !self.stp_state(port).forwards() {
                continue;
            }
            if let Some(p) = self.ports[usize::from(port)].as_ref().filter(|p| p.active) {
                out.push(Egress {
                    port,
                    action: egress_action(p, vid, arrived_tag),
                });
            }
        }
    }

    /// Learn `src` on `port`, with vde's anti-flapping rule: an address moves to another
    /// port only if it has not been seen on its current port for more than
    /// `min_persistence`; frames from elsewhere do not refresh it.
    fn learn(&mut self, now: Instant, src: MacAddr, vid: u16, port: PortId) {
        match self.macs.entry(mac_key(src, vid)) {
            Entry::Occupied(mut entry) => {
                let record = entry.get_mut();
                if record.port == port {
                    record.last_seen = now;
                } else if now.saturating_duration_since(record.last_seen)
                    > self.config.min_persistence
                {
                    tracing::debug!(mac = %src, vid, from = record.port, to = port, "MAC moved");
                    record.port = port;
                    record.last_seen = now;
                }
            }
            Entry::Vacant(entry) => {
                entry.insert(MacRecord {
                    port,
                    last_seen: now,
                });
            }
        }
    }
}

fn finish(out: &[Egress]) -> Verdict {
    if out.is_empty() {
        Verdict::Dropped(DropReason::NoDestination)
    } else {
        Verdict::Forwarded
    }
}

/// The VLAN a frame arriving on `port` belongs to, and the VID of its 802.1Q tag if it came
/// tagged: a tagged frame is in its tag's VLAN (a priority tag, VID 0, means the port's
/// untagged VLAN), which the port must be a member of; an untagged frame is in the port's
/// untagged VLAN, which it must have.
fn classify_vlan(
    port: &Port,
    ethertype: u16,
    frame: &[u8],
) -> Result<(u16, Option<u16>), DropReason> {
    if ethertype != EtherType::VLAN {
        if port.untagged_vlan == NO_VLAN {
            return Err(DropReason::NoUntaggedVlan);
        }
        return Ok((port.untagged_vlan, None));
    }
    let tagged = TaggedFrame::new_checked(frame).map_err(|_| DropReason::TooShort)?;
    let tag_vid = tagged.tci().vid();
    let vid = if tag_vid == 0 {
        port.untagged_vlan
    } else {
        tag_vid
    };
    let member = vid != NO_VLAN && (port.untagged_vlan == vid || port.tagged.contains(vid));
    if !member {
        return Err(DropReason::NotMember);
    }
    Ok((vid, Some(tag_vid)))
}

/// Tag handling toward member `port` of `vid`; `arrived_tag` is the VID of the ingress tag.
fn egress_action(port: &Port, vid: u16, arrived_tag: Option<u16>) -> EgressAction {
    let untagged_member = port.untagged_vlan == vid;
    match (untagged_member, arrived_tag) {
        (true, None) => EgressAction::AsIs,
        (true, Some(_)) => EgressAction::Strip,
        (false, None) => EgressAction::InsertTag(vid),
        // A priority tag (VID 0) carries the classified VLAN only implicitly.
        (false, Some(0)) => EgressAction::RewriteVid(vid),
        (false, Some(_)) => EgressAction::AsIs,
    }
}
