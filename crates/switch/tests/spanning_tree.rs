//! Spanning tree on a virtual-time network of cores joined by in-memory cables.

use filo_switch::wire::bpdu::{BpduRepr, BridgeId};
use filo_switch::{
    Core, CoreConfig, DropReason, EgressAction, MacAddr, PortId, PortRole, PortState, StpTimers,
    Verdict,
};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

const HOST_PORT: PortId = 0;
const STEP: Duration = Duration::from_millis(100);

struct Cable {
    a: (usize, PortId),
    b: (usize, PortId),
    up: bool,
}

/// Switches, cables, and a clock. Frames sent on a port without a cable reach that port's
/// "host" and are recorded.
struct Net {
    now: Instant,
    switches: Vec<Core>,
    cables: Vec<Cable>,
    in_flight: VecDeque<(usize, PortId, Vec<u8>)>,
    host_rx: Vec<(usize, PortId, Vec<u8>)>,
}

impl Net {
    /// One switch per priority; each has an edge host port 0 and ports 1..=ports.
    fn new(priorities: &[u16], ports: u16, stp: bool) -> Net {
        let now = Instant::now();
        let switches = priorities
            .iter()
            .enumerate()
            .map(|(i, &priority)| {
                let config = CoreConfig {
                    num_ports: 8,
                    stp,
                    bridge_mac: MacAddr([0x02, 0, 0, 0, 0x0b, i as u8 + 1]),
                    bridge_priority: priority,
                    stp_timers: StpTimers {
                        forward_delay: Duration::from_secs(4),
                        ..StpTimers::default()
                    },
                    ..CoreConfig::default()
                };
                let mut core = Core::new(config, now);
                for port in 0..=ports {
                    core.add_port(port).unwrap();
                    core.set_port_active(now, port, true).unwrap();
                }
                core.set_edge(now, HOST_PORT, true).unwrap();
                core
            })
            .collect();
        Net {
            now,
            switches,
            cables: Vec::new(),
            in_flight: VecDeque::new(),
            host_rx: Vec::new(),
        }
    }

    fn cable(&mut self, a: (usize, PortId), b: (usize, PortId)) -> usize {
        self.cables.push(Cable { a, b, up: true });
        self.cables.len() - 1
    }

    fn peer(&self, end: (usize, PortId)) -> Option<Option<(usize, PortId)>> {
        self.cables.iter().find_map(|c| {
            let other = if c.a == end {
                c.b
            } else if c.b == end {
                c.a
            } else {
                return None;
            };
            Some(c.up.then_some(other))
        })
    }

    fn send(&mut self, from: (usize, PortId), bytes: Vec<u8>) {
        match self.peer(from) {
            Some(Some((sw, port))) => self.in_flight.push_back((sw, port, bytes)),
            Some(None) => {} // cut cable: lost
            None => self.host_rx.push((from.0, from.1, bytes)),
        }
    }

    fn drain_bpdus(&mut self, sw: usize) {
        let mut buf = [0u8; 64];
        while let Some((port, len)) = self.switches[sw].poll_transmit(&mut buf) {
            self.send((sw, port), buf[..len].to_vec());
        }
    }

    /// Deliver frames until none is in flight or `budget` deliveries were made.
    fn pump(&mut self, budget: usize) -> usize {
        let mut out = Vec::new();
        let mut scratch = [0u8; 1600];
        let mut deliveries = 0;
        while let Some((sw, port, frame)) = self.in_flight.pop_front() {
            deliveries += 1;
            if deliveries > budget {
                break;
            }
            let now = self.now;
            self.switches[sw].handle_frame(now, port, &frame, &mut out);
            for egress in out.clone() {
                let bytes = egress.action.render(&frame, &mut scratch).unwrap().to_vec();
                self.send((sw, egress.port), bytes);
            }
            self.drain_bpdus(sw);
        }
        deliveries
    }

    fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.now < end {
            self.now += STEP;
            for sw in 0..self.switches.len() {
                if self.switches[sw]
                    .poll_timeout()
                    .is_some_and(|t| t <= self.now)
                {
                    let now = self.now;
                    self.switches[sw].handle_timeout(now);
                }
                self.drain_bpdus(sw);
            }
            self.pump(100_000);
        }
    }

    fn state(&self, sw: usize, port: PortId) -> PortState {
        self.switches[sw].stp_state(port)
    }

    fn blocked(&self) -> Vec<(usize, PortId)> {
        self.cables
            .iter()
            .flat_map(|c| [c.a, c.b])
            .filter(|&(sw, port)| self.state(sw, port) != PortState::Forwarding)
            .collect()
    }

    /// Broadcast from `sw`'s host; returns (deliveries between switches, copies per host).
    fn broadcast_from_host(&mut self, sw: usize) -> (usize, Vec<usize>) {
        self.host_rx.clear();
        let mut frame = Vec::new();
        frame.extend_from_slice(&MacAddr::BROADCAST.0);
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0xaa, sw as u8]);
        frame.extend_from_slice(&[0x08, 0x06]);
        frame.resize(60, 0);
        self.in_flight.push_back((sw, HOST_PORT, frame));
        let deliveries = self.pump(1000);
        let copies = (0..self.switches.len())
            .map(|s| {
                self.host_rx
                    .iter()
                    .filter(|r| r.0 == s && r.1 == HOST_PORT)
                    .count()
            })
            .collect();
        (deliveries, copies)
    }

    fn bridge_id(&self, sw: usize) -> BridgeId {
        self.switches[sw].stp_status().bridge_id
    }
}

#[test]
fn two_cables_between_two_switches_block_one_port_and_heal_after_a_cut() {
    let (a, b) = (0, 1);
    let mut net = Net::new(&[0x1000, 0x8000], 2, true);
    let first = net.cable((a, 1), (b, 1));
    net.cable((a, 2), (b, 2));
    net.run_for(Duration::from_secs(30));

    for sw in [a, b] {
        assert_eq!(net.switches[sw].stp_status().root_id, net.bridge_id(a));
    }
    assert_eq!(net.blocked(), vec![(b, 2)]);
    assert_eq!(net.switches[b].stp_role(1), PortRole::Root);
    assert_eq!(net.switches[b].stp_role(2), PortRole::Alternate);
    assert_eq!(net.switches[a].stp_role(1), PortRole::Designated);

    let (deliveries, copies) = net.broadcast_from_host(a);
    assert!(
        deliveries <= 3,
        "{deliveries} deliveries: the frame circulates"
    );
    assert_eq!(copies, vec![0, 1]);

    // Silently cut the root-port cable: B's alternate port takes over after max age.
    net.cables[first].up = false;
    net.run_for(Duration::from_secs(20 + 2 * 4 + 4));
    assert_eq!(net.state(b, 2), PortState::Forwarding);
    assert_eq!(net.switches[b].stp_status().root_port, Some(2));
    let (_, copies) = net.broadcast_from_host(a);
    assert_eq!(copies, vec![0, 1]);
}

#[test]
fn triangle_elects_lowest_bridge_and_breaks_the_loop() {
    // B has the lowest id here, so the root is not simply the first switch.
    let mut net = Net::new(&[0x8000, 0x4000, 0x8000], 2, true);
    net.cable((0, 1), (1, 1));
    net.cable((1, 2), (2, 1));
    net.cable((2, 2), (0, 2));
    net.run_for(Duration::from_secs(30));

    let root = net.bridge_id(1);
    for sw in 0..3 {
        assert_eq!(net.switches[sw].stp_status().root_id, root);
    }
    assert!(net.switches[1].stp_status().root_port.is_none());
    // A and C tie on cost to B; C (higher MAC) blocks its port toward A.
    assert_eq!(net.blocked(), vec![(2, 2)]);
    for sw in 0..3 {
        let (deliveries, copies) = net.broadcast_from_host(sw);
        assert!(deliveries <= 4, "{deliveries} deliveries from switch {sw}");
        let mut expected = vec![1; 3];
        expected[sw] = 0;
        assert_eq!(copies, expected);
    }
}

#[test]
fn without_spanning_tree_a_loop_storms() {
    // Sanity check of the harness: the same topology without STP circulates forever.
    let mut net = Net::new(&[0x8000, 0x8000], 2, false);
    net.cable((0, 1), (1, 1));
    net.cable((0, 2), (1, 2));
    let (deliveries, _) = net.broadcast_from_host(0);
    assert!(deliveries > 1000);
}

fn stp_core(now: Instant) -> Core {
    let config = CoreConfig {
        num_ports: 4,
        stp: true,
        stp_timers: StpTimers {
            forward_delay: Duration::from_secs(4),
            ..StpTimers::default()
        },
        ..CoreConfig::default()
    };
    let mut core = Core::new(config, now);
    for port in 0..4 {
        core.add_port(port).unwrap();
        core.set_port_active(now, port, true).unwrap();
    }
    core
}

fn broadcast(src_last: u8) -> Vec<u8> {
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, src_last]);
    frame.extend_from_slice(&[0x08, 0x00]);
    frame.resize(60, 0);
    frame
}

#[test]
fn ports_listen_then_learn_then_forward() {
    let t0 = Instant::now();
    let mut core = stp_core(t0);
    let mut out = Vec::new();
    assert_eq!(core.stp_state(1), PortState::Listening);
    let v = core.handle_frame(t0, 1, &broadcast(1), &mut out);
    assert_eq!(v, Verdict::Dropped(DropReason::PortBlocked));
    assert_eq!(core.mac_table(t0).count(), 0, "no learning while listening");

    let t1 = t0 + Duration::from_secs(4);
    core.handle_timeout(t1);
    assert_eq!(core.stp_state(1), PortState::Learning);
    let v = core.handle_frame(t1, 1, &broadcast(1), &mut out);
    assert_eq!(v, Verdict::Dropped(DropReason::PortBlocked));
    assert_eq!(core.lookup(MacAddr([2, 0, 0, 0, 0, 1]), 0), Some(1));

    let t2 = t0 + Duration::from_secs(8);
    core.handle_timeout(t2);
    assert_eq!(core.stp_state(1), PortState::Forwarding);
    assert_eq!(
        core.handle_frame(t2, 1, &broadcast(1), &mut out),
        Verdict::Forwarded
    );
    assert_eq!(out.len(), 3);
}

#[test]
fn edge_port_forwards_at_once_ignores_bpdus_and_gets_none() {
    let t0 = Instant::now();
    let mut core = stp_core(t0);
    core.set_edge(t0, 0, true).unwrap();
    assert_eq!(core.stp_state(0), PortState::Forwarding);
    assert_eq!(core.stp_role(0), PortRole::Edge);

    // A superior BPDU on the edge port changes nothing.
    let better = BpduRepr::Config(filo_switch::wire::bpdu::ConfigBpdu {
        topology_change: false,
        topology_change_ack: false,
        root_id: BridgeId::new(0, MacAddr([2, 0, 0, 0, 0, 0x99])),
        root_path_cost: 0,
        bridge_id: BridgeId::new(0, MacAddr([2, 0, 0, 0, 0, 0x99])),
        port_id: 0x8001,
        message_age: Duration::ZERO,
        max_age: Duration::from_secs(20),
        hello_time: Duration::from_secs(2),
        forward_delay: Duration::from_secs(4),
    });
    let mut frame = [0u8; 60];
    better
        .emit(MacAddr([2, 0, 0, 0, 0, 0x99]), &mut frame)
        .unwrap();
    let mut out = Vec::new();
    assert_eq!(
        core.handle_frame(t0, 0, &frame, &mut out),
        Verdict::Consumed
    );
    assert!(core.stp_status().root_port.is_none());
    // The same BPDU on a normal port makes that port the root port.
    assert_eq!(
        core.handle_frame(t0, 1, &frame, &mut out),
        Verdict::Consumed
    );
    assert_eq!(core.stp_status().root_port, Some(1));

    // Hello BPDUs go to designated non-edge ports only.
    let mut ports = Vec::new();
    let mut buf = [0u8; 64];
    let mut now = t0;
    for _ in 0..30 {
        now += STEP;
        core.handle_timeout(now);
        while let Some((port, len)) = core.poll_transmit(&mut buf) {
            assert_eq!(len, 60);
            ports.push(port);
        }
    }
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports, vec![2, 3]);
}

#[test]
fn bpdus_are_flooded_when_the_tree_is_off_and_malformed_ones_dropped_when_on() {
    let t0 = Instant::now();
    let mut core = stp_core(t0);
    let mut out = Vec::new();
    let mut bpdu = [0u8; 60];
    BpduRepr::TopologyChangeNotification
        .emit(MacAddr([2, 0, 0, 0, 0, 5]), &mut bpdu)
        .unwrap();
    let mut garbage = bpdu;
    garbage[14] = 0;
    assert_eq!(
        core.handle_frame(t0, 1, &garbage, &mut out),
        Verdict::Dropped(DropReason::BadBpdu)
    );
    core.set_stp(t0, false);
    assert_eq!(
        core.handle_frame(t0, 1, &bpdu, &mut out),
        Verdict::Forwarded
    );
    assert_eq!(out.len(), 3);
    assert!(out.iter().all(|e| e.action == EgressAction::AsIs));
    assert_eq!(core.poll_transmit(&mut [0u8; 64]), None);
}

#[test]
fn topology_change_ages_addresses_with_the_forward_delay() {
    let t0 = Instant::now();
    let mut core = stp_core(t0);
    let mut out = Vec::new();
    // Ports reaching Forwarding on a root bridge announce a topology change.
    core.handle_timeout(t0 + Duration::from_secs(4));
    let forwarding = t0 + Duration::from_secs(8);
    core.handle_timeout(forwarding);
    assert!(core.stp_status().topology_change);
    core.handle_frame(forwarding, 1, &broadcast(1), &mut out);
    let learned = MacAddr([2, 0, 0, 0, 0, 1]);
    assert_eq!(core.lookup(learned, 0), Some(1));
    let later = forwarding + Duration::from_secs(4 + 3);
    core.handle_timeout(later);
    assert_eq!(
        core.lookup(learned, 0),
        None,
        "aged with forward delay (4 s)"
    );

    // Once the change is over (max age + forward delay), normal aging resumes.
    let calm = forwarding + Duration::from_secs(25);
    core.handle_timeout(calm);
    assert!(!core.stp_status().topology_change);
    core.handle_frame(calm, 1, &broadcast(1), &mut out);
    core.handle_timeout(calm + Duration::from_secs(10));
    assert_eq!(core.lookup(learned, 0), Some(1));
}
