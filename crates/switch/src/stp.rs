//! Classic IEEE 802.1D (1998) spanning tree, sans-IO.
//!
//! One tree for the whole switch (no per-VLAN trees). The state machine follows the procedures
//! of 802.1D clause 8 — root selection, designated port selection, port state selection, and
//! the hello / message-age / forward-delay / hold / TCN / topology-change timers — with timers
//! kept as deadlines (`Option<Instant>`) so the caller drives time. BPDUs to send are queued and
//! drained with [`SpanningTree::pop_transmit`]; ports that stop forwarding are reported through
//! [`SpanningTree::pop_left_forwarding`] so the owner can flush their learned addresses.
//!
//! Edge ports (`set_edge`) forward at once, ignore received BPDUs and, like vde_switch's FSTP,
//! send none.

use crate::core::PortId;
use crate::wire::bpdu::{BpduRepr, BridgeId, ConfigBpdu};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Minimum spacing of configuration BPDUs on one port.
const HOLD_TIME: Duration = Duration::from_secs(1);
/// Added to the root port's message age when relaying configuration (802.1D's overestimate).
const MESSAGE_AGE_INCREMENT: Duration = Duration::from_secs(1);
/// 802.1D-1998 recommended path cost for a 100 Mb/s link.
pub const DEFAULT_PATH_COST: u32 = 19;

/// Protocol timers, as this bridge would advertise them when root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StpTimers {
    pub hello_time: Duration,
    pub max_age: Duration,
    pub forward_delay: Duration,
}

impl Default for StpTimers {
    fn default() -> Self {
        StpTimers {
            hello_time: Duration::from_secs(2),
            max_age: Duration::from_secs(20),
            forward_delay: Duration::from_secs(15),
        }
    }
}

impl StpTimers {
    /// Clamp times received from the wire so a broken peer cannot make us spin or never age.
    fn sanitized(self) -> StpTimers {
        let clamp = |t: Duration, lo: u64, hi: u64| {
            t.clamp(Duration::from_secs(lo), Duration::from_secs(hi))
        };
        StpTimers {
            hello_time: clamp(self.hello_time, 1, 10),
            max_age: clamp(self.max_age, 2, 60),
            forward_delay: clamp(self.forward_delay, 1, 30),
        }
    }
}

/// 802.1D port states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortState {
    Disabled,
    Blocking,
    Listening,
    Learning,
    Forwarding,
}

impl PortState {
    /// Addresses are learned in Learning and Forwarding.
    pub fn learns(self) -> bool {
        matches!(self, PortState::Learning | PortState::Forwarding)
    }

    pub fn forwards(self) -> bool {
        self == PortState::Forwarding
    }
}

/// A port's role in the tree, for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortRole {
    Root,
    Designated,
    /// Blocked because another bridge offers a better path.
    Alternate,
    /// Blocked because another port of this bridge is designated on the same segment.
    Backup,
    Edge,
    Disabled,
}

/// The priority vector a port holds for its segment: who is designated there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Designated {
    root: BridgeId,
    cost: u32,
    bridge: BridgeId,
    port: u16,
}

#[derive(Debug, Clone)]
struct StpPort {
    enabled: bool,
    edge: bool,
    port_id: u16,
    path_cost: u32,
    state: PortState,
    designated: Designated,
    topology_change_ack: bool,
    config_pending: bool,
    /// Message age of the recorded information when it arrived, and when.
    info_age: Duration,
    info_received: Option<Instant>,
    message_age_expiry: Option<Instant>,
    forward_delay_expiry: Option<Instant>,
    hold_expiry: Option<Instant>,
}

/// A bridge's view of the spanning tree.
#[derive(Debug, Clone)]
pub struct SpanningTree {
    bridge_id: BridgeId,
    own_timers: StpTimers,
    /// Timers in force: learned from the root, or our own when we are root.
    timers: StpTimers,
    root: BridgeId,
    root_cost: u32,
    root_port: Option<PortId>,
    topology_change_detected: bool,
    topology_change: bool,
    hello_expiry: Option<Instant>,
    tcn_expiry: Option<Instant>,
    topology_change_expiry: Option<Instant>,
    ports: Vec<StpPort>,
    transmit_queue: VecDeque<(PortId, BpduRepr)>,
    left_forwarding: Vec<PortId>,
}

/// Snapshot of the bridge-wide tree state, for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StpStatus {
    pub bridge_id: BridgeId,
    pub root_id: BridgeId,
    pub root_path_cost: u32,
    pub root_port: Option<PortId>,
    pub topology_change: bool,
    pub timers: StpTimers,
}

impl SpanningTree {
    /// A bridge that believes itself root, with all `num_ports` ports disabled.
    pub fn new(bridge_id: BridgeId, timers: StpTimers, num_ports: u16, now: Instant) -> Self {
        let timers = timers.sanitized();
        let ports = (0..num_ports)
            .map(|port| StpPort {
                enabled: false,
                edge: false,
                // 4-bit priority (8) and 12-bit port number, as 802.1t lays it out.
                port_id: 0x8000 | (port & 0x0fff),
                path_cost: DEFAULT_PATH_COST,
                state: PortState::Disabled,
                designated: Designated {
                    root: bridge_id,
                    cost: 0,
                    bridge: bridge_id,
                    port: 0x8000 | (port & 0x0fff),
                },
                topology_change_ack: false,
                config_pending: false,
                info_age: Duration::ZERO,
                info_received: None,
                message_age_expiry: None,
                forward_delay_expiry: None,
                hold_expiry: None,
            })
            .collect();
        SpanningTree {
            bridge_id,
            own_timers: timers,
            timers,
            root: bridge_id,
            root_cost: 0,
            root_port: None,
            topology_change_detected: false,
            topology_change: false,
            hello_expiry: Some(now + timers.hello_time),
            tcn_expiry: None,
            topology_change_expiry: None,
            ports,
            transmit_queue: VecDeque::with_capacity(usize::from(num_ports) * 2),
            left_forwarding: Vec::with_capacity(usize::from(num_ports)),
        }
    }

    pub fn status(&self) -> StpStatus {
        StpStatus {
            bridge_id: self.bridge_id,
            root_id: self.root,
            root_path_cost: self.root_cost,
            root_port: self.root_port,
            topology_change: self.topology_change,
            timers: self.timers,
        }
    }

    pub fn is_root_bridge(&self) -> bool {
        self.root == self.bridge_id
    }

    /// True while the root announces a topology change: owners should age addresses fast.
    pub fn topology_change(&self) -> bool {
        self.topology_change
    }

    pub fn forward_delay(&self) -> Duration {
        self.timers.forward_delay
    }

    pub fn port_state(&self, port: PortId) -> PortState {
        self.ports
            .get(usize::from(port))
            .map_or(PortState::Disabled, |p| p.state)
    }

    pub fn port_role(&self, port: PortId) -> PortRole {
        let Some(p) = self.ports.get(usize::from(port)) else {
            return PortRole::Disabled;
        };
        if !p.enabled {
            PortRole::Disabled
        } else if p.edge {
            PortRole::Edge
        } else if self.root_port == Some(port) {
            PortRole::Root
        } else if self.is_designated(port) {
            PortRole::Designated
        } else if p.designated.bridge == self.bridge_id {
            PortRole::Backup
        } else {
            PortRole::Alternate
        }
    }

    pub fn is_edge(&self, port: PortId) -> bool {
        self.ports.get(usize::from(port)).is_some_and(|p| p.edge)
    }

    /// Next BPDU to send, without removing it.
    pub fn peek_transmit(&self) -> Option<(PortId, BpduRepr)> {
        self.transmit_queue.front().copied()
    }

    pub fn pop_transmit(&mut self) -> Option<(PortId, BpduRepr)> {
        self.transmit_queue.pop_front()
    }

    /// A port that left the Forwarding state since the last call.
    pub fn pop_left_forwarding(&mut self) -> Option<PortId> {
        self.left_forwarding.pop()
    }

    /// Earliest timer deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let bridge = [
            self.hello_expiry,
            self.tcn_expiry,
            self.topology_change_expiry,
        ];
        let ports = self
            .ports
            .iter()
            .flat_map(|p| [p.message_age_expiry, p.forward_delay_expiry, p.hold_expiry]);
        bridge.into_iter().chain(ports).flatten().min()
    }

    pub fn set_path_cost(&mut self, now: Instant, port: PortId, cost: u32) {
        if let Some(p) = self.ports.get_mut(usize::from(port)) {
            p.path_cost = cost.max(1);
            self.configuration_update();
            self.port_state_selection(now);
        }
    }

    /// The port got an endpoint (802.1D "enable port").
    pub fn enable_port(&mut self, now: Instant, port: PortId) {
        let Some(index) = self.index(port) else {
            return;
        };
        if self.ports[index].enabled {
            return;
        }
        self.become_designated(port);
        let p = &mut self.ports[index];
        p.enabled = true;
        p.state = if p.edge {
            PortState::Forwarding
        } else {
            PortState::Blocking
        };
        p.topology_change_ack = false;
        p.config_pending = false;
        p.message_age_expiry = None;
        p.forward_delay_expiry = None;
        p.hold_expiry = None;
        self.port_state_selection(now);
    }

    /// The port lost its endpoints or was removed (802.1D "disable port").
    pub fn disable_port(&mut self, now: Instant, port: PortId) {
        let Some(index) = self.index(port) else {
            return;
        };
        if !self.ports[index].enabled {
            return;
        }
        let was_root = self.is_root_bridge();
        self.become_designated(port);
        let p = &mut self.ports[index];
        if p.state == PortState::Forwarding {
            self.left_forwarding.push(port);
        }
        p.enabled = false;
        p.state = PortState::Disabled;
        p.topology_change_ack = false;
        p.config_pending = false;
        p.message_age_expiry = None;
        p.forward_delay_expiry = None;
        p.hold_expiry = None;
        self.configuration_update();
        self.port_state_selection(now);
        if self.is_root_bridge() && !was_root {
            self.become_root(now);
        }
    }

    /// Mark a port as an edge port (a host, not a bridge): it forwards at once and its
    /// received BPDUs are ignored. Clearing the flag restarts the port through Listening.
    pub fn set_edge(&mut self, now: Instant, port: PortId, edge: bool) {
        let Some(index) = self.index(port) else {
            return;
        };
        if self.ports[index].edge == edge {
            return;
        }
        let was_root = self.is_root_bridge();
        self.ports[index].edge = edge;
        self.become_designated(port);
        let p = &mut self.ports[index];
        p.message_age_expiry = None;
        p.forward_delay_expiry = None;
        if p.enabled {
            if edge {
                p.state = PortState::Forwarding;
            } else {
                if p.state == PortState::Forwarding {
                    self.left_forwarding.push(port);
                }
                p.state = PortState::Blocking;
            }
        }
        self.configuration_update();
        self.port_state_selection(now);
        if self.is_root_bridge() && !was_root {
            self.become_root(now);
        }
    }

    /// Process a BPDU received on `port`.
    pub fn receive(&mut self, now: Instant, port: PortId, bpdu: &BpduRepr) {
        let Some(index) = self.index(port) else {
            return;
        };
        let p = &self.ports[index];
        if !p.enabled || p.edge {
            return;
        }
        match bpdu {
            BpduRepr::Config(config) => self.receive_config(now, port, config),
            BpduRepr::TopologyChangeNotification => {
                if self.is_designated(port) {
                    self.topology_change_detection(now);
                    self.ports[index].topology_change_ack = true;
                    self.transmit_config(now, port);
                }
            }
        }
    }

    /// Run every timer that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due = |deadline: Option<Instant>| deadline.is_some_and(|t| t <= now);
        if due(self.hello_expiry) {
            self.config_bpdu_generation(now);
            self.hello_expiry = Some(now + self.own_timers.hello_time);
        }
        if due(self.tcn_expiry) {
            self.transmit_tcn();
            self.tcn_expiry = Some(now + self.timers.hello_time);
        }
        if due(self.topology_change_expiry) {
            self.topology_change_detected = false;
            self.topology_change = false;
            self.topology_change_expiry = None;
        }
        for index in 0..self.ports.len() {
            let port = index as PortId;
            if due(self.ports[index].message_age_expiry) {
                self.ports[index].message_age_expiry = None;
                self.message_age_expired(now, port);
            }
            if due(self.ports[index].forward_delay_expiry) {
                self.forward_delay_expired(now, port);
            }
            if due(self.ports[index].hold_expiry) {
                self.ports[index].hold_expiry = None;
                if self.ports[index].config_pending {
                    self.transmit_config(now, port);
                }
            }
        }
    }

    fn index(&self, port: PortId) -> Option<usize> {
        let index = usize::from(port);
        (index < self.ports.len()).then_some(index)
    }

    fn is_designated(&self, port: PortId) -> bool {
        let p = &self.ports[usize::from(port)];
        p.designated.bridge == self.bridge_id && p.designated.port == p.port_id
    }

    fn become_designated(&mut self, port: PortId) {
        let (root, cost, bridge) = (self.root, self.root_cost, self.bridge_id);
        let p = &mut self.ports[usize::from(port)];
        p.designated = Designated {
            root,
            cost,
            bridge,
            port: p.port_id,
        };
    }

    fn receive_config(&mut self, now: Instant, port: PortId, config: &ConfigBpdu) {
        let was_root = self.is_root_bridge();
        if self.supersedes_port_info(port, config) {
            self.record_config_information(now, port, config);
            self.configuration_update();
            self.port_state_selection(now);
            if !self.is_root_bridge() && was_root {
                self.hello_expiry = None;
                if self.topology_change_detected {
                    self.topology_change_expiry = None;
                    self.transmit_tcn();
                    self.tcn_expiry = Some(now + self.timers.hello_time);
                }
            }
            if self.root_port == Some(port) {
                self.timers = StpTimers {
                    hello_time: config.hello_time,
                    max_age: config.max_age,
                    forward_delay: config.forward_delay,
                }
                .sanitized();
                self.topology_change = config.topology_change;
                self.config_bpdu_generation(now);
                if config.topology_change_ack {
                    self.topology_change_detected = false;
                    self.tcn_expiry = None;
                }
            }
        } else if self.is_designated(port) {
            // A worse bridge on our segment: remind it who is designated.
            self.transmit_config(now, port);
        }
    }

    fn supersedes_port_info(&self, port: PortId, config: &ConfigBpdu) -> bool {
        let d = &self.ports[usize::from(port)].designated;
        if config.root_id != d.root {
            return config.root_id < d.root;
        }
        if config.root_path_cost != d.cost {
            return config.root_path_cost < d.cost;
        }
        if config.bridge_id != d.bridge {
            return config.bridge_id < d.bridge;
        }
        config.bridge_id != self.bridge_id || config.port_id <= d.port
    }

    fn record_config_information(&mut self, now: Instant, port: PortId, config: &ConfigBpdu) {
        let max_age = StpTimers {
            max_age: config.max_age,
            ..self.timers
        }
        .sanitized()
        .max_age;
        let p = &mut self.ports[usize::from(port)];
        p.designated = Designated {
            root: config.root_id,
            cost: config.root_path_cost,
            bridge: config.bridge_id,
            port: config.port_id,
        };
        p.info_age = config.message_age;
        p.info_received = Some(now);
        p.message_age_expiry = Some(now + max_age.saturating_sub(config.message_age));
    }

    fn configuration_update(&mut self) {
        self.root_selection();
        self.designated_port_selection();
    }

    fn root_selection(&mut self) {
        let mut best: Option<(BridgeId, u32, BridgeId, u16, u16, PortId)> = None;
        for (index, p) in self.ports.iter().enumerate() {
            let port = index as PortId;
            if !p.enabled
                || p.edge
                || self.is_designated(port)
                || p.designated.root >= self.bridge_id
            {
                continue;
            }
            let candidate = (
                p.designated.root,
                p.designated.cost.saturating_add(p.path_cost),
                p.designated.bridge,
                p.designated.port,
                p.port_id,
                port,
            );
            if !matches!(best, Some(b) if b <= candidate) {
                best = Some(candidate);
            }
        }
        match best {
            Some((root, cost, _, _, _, port)) => {
                self.root = root;
                self.root_cost = cost;
                self.root_port = Some(port);
            }
            None => {
                self.root = self.bridge_id;
                self.root_cost = 0;
                self.root_port = None;
            }
        }
    }

    fn designated_port_selection(&mut self) {
        for index in 0..self.ports.len() {
            let port = index as PortId;
            let p = &self.ports[index];
            if !p.enabled {
                continue;
            }
            let d = p.designated;
            let ours_better = d.root != self.root
                || self.root_cost < d.cost
                || (self.root_cost == d.cost && self.bridge_id < d.bridge)
                || (self.root_cost == d.cost && self.bridge_id == d.bridge && p.port_id <= d.port);
            if self.is_designated(port) || ours_better {
                self.become_designated(port);
            }
        }
    }

    fn port_state_selection(&mut self, now: Instant) {
        for index in 0..self.ports.len() {
            let port = index as PortId;
            if !self.ports[index].enabled {
                continue;
            }
            if self.root_port == Some(port) {
                let p = &mut self.ports[index];
                p.config_pending = false;
                p.topology_change_ack = false;
                self.make_forwarding(now, port);
            } else if self.is_designated(port) {
                self.ports[index].message_age_expiry = None;
                self.make_forwarding(now, port);
            } else {
                let p = &mut self.ports[index];
                p.config_pending = false;
                p.topology_change_ack = false;
                self.make_blocking(now, port);
            }
        }
    }

    fn make_forwarding(&mut self, now: Instant, port: PortId) {
        let forward_delay = self.timers.forward_delay;
        let p = &mut self.ports[usize::from(port)];
        if p.edge {
            p.state = PortState::Forwarding;
            p.forward_delay_expiry = None;
        } else if p.state == PortState::Blocking {
            p.state = PortState::Listening;
            p.forward_delay_expiry = Some(now + forward_delay);
        }
    }

    fn make_blocking(&mut self, now: Instant, port: PortId) {
        let state = self.ports[usize::from(port)].state;
        if matches!(state, PortState::Disabled | PortState::Blocking) {
            return;
        }
        if state.learns() {
            self.topology_change_detection(now);
        }
        if state == PortState::Forwarding {
            self.left_forwarding.push(port);
        }
        let p = &mut self.ports[usize::from(port)];
        p.state = PortState::Blocking;
        p.forward_delay_expiry = None;
    }

    fn message_age_expired(&mut self, now: Instant, port: PortId) {
        let was_root = self.is_root_bridge();
        self.become_designated(port);
        self.configuration_update();
        self.port_state_selection(now);
        if self.is_root_bridge() && !was_root {
            self.become_root(now);
        }
    }

    /// We just became root after losing the path to the old one.
    fn become_root(&mut self, now: Instant) {
        self.timers = self.own_timers;
        self.topology_change_detection(now);
        self.tcn_expiry = None;
        self.config_bpdu_generation(now);
        self.hello_expiry = Some(now + self.own_timers.hello_time);
    }

    fn forward_delay_expired(&mut self, now: Instant, port: PortId) {
        let forward_delay = self.timers.forward_delay;
        let p = &mut self.ports[usize::from(port)];
        match p.state {
            PortState::Listening => {
                p.state = PortState::Learning;
                p.forward_delay_expiry = Some(now + forward_delay);
            }
            PortState::Learning => {
                p.state = PortState::Forwarding;
                p.forward_delay_expiry = None;
                if self.designated_for_some_port() {
                    self.topology_change_detection(now);
                }
            }
            _ => p.forward_delay_expiry = None,
        }
    }

    fn designated_for_some_port(&self) -> bool {
        self.ports
            .iter()
            .any(|p| p.enabled && p.designated.bridge == self.bridge_id)
    }

    fn topology_change_detection(&mut self, now: Instant) {
        if self.is_root_bridge() {
            self.topology_change = true;
            self.topology_change_expiry =
                Some(now + self.timers.max_age + self.timers.forward_delay);
        } else if !self.topology_change_detected {
            self.transmit_tcn();
            self.tcn_expiry = Some(now + self.timers.hello_time);
        }
        self.topology_change_detected = true;
    }

    fn config_bpdu_generation(&mut self, now: Instant) {
        for index in 0..self.ports.len() {
            let port = index as PortId;
            if self.ports[index].enabled && self.is_designated(port) {
                self.transmit_config(now, port);
            }
        }
    }

    fn transmit_config(&mut self, now: Instant, port: PortId) {
        let index = usize::from(port);
        if self.ports[index].edge {
            return;
        }
        if self.ports[index].hold_expiry.is_some_and(|t| t > now) {
            self.ports[index].config_pending = true;
            return;
        }
        let message_age = match self.root_port {
            None => Duration::ZERO,
            Some(root_port) => {
                let r = &self.ports[usize::from(root_port)];
                let held_for = r
                    .info_received
                    .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
                r.info_age + held_for + MESSAGE_AGE_INCREMENT
            }
        };
        if message_age >= self.timers.max_age {
            // Stale information must not be relayed; the message-age timer will fire.
            return;
        }
        let p = &mut self.ports[index];
        let bpdu = ConfigBpdu {
            topology_change: self.topology_change,
            topology_change_ack: p.topology_change_ack,
            root_id: self.root,
            root_path_cost: self.root_cost,
            bridge_id: self.bridge_id,
            port_id: p.port_id,
            message_age,
            max_age: self.timers.max_age,
            hello_time: self.timers.hello_time,
            forward_delay: self.timers.forward_delay,
        };
        p.topology_change_ack = false;
        p.config_pending = false;
        p.hold_expiry = Some(now + HOLD_TIME);
        self.enqueue(port, BpduRepr::Config(bpdu));
    }

    /// Queue a BPDU, dropping the oldest when the owner has stopped draining the queue:
    /// BPDUs are periodic, so a fresh one supersedes a stale one.
    fn enqueue(&mut self, port: PortId, bpdu: BpduRepr) {
        if self.transmit_queue.len() >= self.ports.len() * 4 + 4 {
            self.transmit_queue.pop_front();
        }
        self.transmit_queue.push_back((port, bpdu));
    }

    fn transmit_tcn(&mut self) {
        if let Some(root_port) = self.root_port {
            self.enqueue(root_port, BpduRepr::TopologyChangeNotification);
        }
    }
}
