//! Forwarding rules of the core, one test per rule, on virtual time and no sockets.

use filo_switch::wire::vlan::{self, Tci};
use filo_switch::{
    ConfigError, Core, CoreConfig, DropReason, Egress, EgressAction, MacAddr, PortId, Verdict,
    DHCP_FLOOD_BURST, NO_VLAN,
};
use proptest::prelude::*;
use std::time::{Duration, Instant};

fn mac(last: u8) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, 0, last])
}

fn untagged(dst: MacAddr, src: MacAddr) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x08, 0x00]);
    f.resize(60, 0xab);
    f
}

fn tagged(dst: MacAddr, src: MacAddr, pcp: u8, vid: u16) -> Vec<u8> {
    let plain = untagged(dst, src);
    let mut buf = vec![0; plain.len() + 4];
    let len = vlan::insert_tag(&plain, Tci::new(pcp, false, vid), &mut buf).unwrap();
    buf.truncate(len);
    buf
}

/// A switch with ports 0..n created and active, STP off.
fn switch(n: u16, now: Instant) -> Core {
    let mut core = Core::new(CoreConfig::default(), now);
    for p in 0..n {
        core.add_port(p).unwrap();
        core.set_port_active(now, p, true).unwrap();
    }
    core
}

fn ports(out: &[Egress]) -> Vec<PortId> {
    let mut ports: Vec<PortId> = out.iter().map(|e| e.port).collect();
    ports.sort_unstable();
    ports
}

#[test]
fn unknown_unicast_and_broadcast_flood_except_ingress() {
    let t0 = Instant::now();
    let mut core = switch(4, t0);
    let mut out = Vec::new();
    let v = core.handle_frame(t0, 1, &untagged(mac(9), mac(1)), &mut out);
    assert_eq!(v, Verdict::Forwarded);
    assert_eq!(ports(&out), vec![0, 2, 3]);
    assert!(out.iter().all(|e| e.action == EgressAction::AsIs));
    core.handle_frame(t0, 2, &untagged(MacAddr::BROADCAST, mac(2)), &mut out);
    assert_eq!(ports(&out), vec![0, 1, 3]);
    let multicast = MacAddr([0x01, 0, 0x5e, 0, 0, 1]);
    core.handle_frame(t0, 3, &untagged(multicast, mac(3)), &mut out);
    assert_eq!(ports(&out), vec![0, 1, 2]);
}

#[test]
fn learning_keyed_on_mac_and_vlan_and_known_unicast_goes_to_one_port() {
    let t0 = Instant::now();
    let mut core = switch(4, t0);
    core.vlan_create(10).unwrap();
    core.vlan_add_port(10, 3).unwrap();
    let mut out = Vec::new();
    core.handle_frame(t0, 1, &untagged(MacAddr::BROADCAST, mac(1)), &mut out);
    assert_eq!(core.lookup(mac(1), 0), Some(1));
    assert_eq!(core.lookup(mac(1), 10), None);
    let v = core.handle_frame(t0, 2, &untagged(mac(1), mac(2)), &mut out);
    assert_eq!(v, Verdict::Forwarded);
    assert_eq!(ports(&out), vec![1]);
    // Same MAC in VLAN 10 is unknown there: flooded within VLAN 10 only (no members but 3).
    let v = core.handle_frame(t0, 3, &tagged(mac(1), mac(3), 0, 10), &mut out);
    assert_eq!(v, Verdict::Dropped(DropReason::NoDestination));
    assert_eq!(core.lookup(mac(3), 10), Some(3));
    assert_eq!(core.mac_table(t0).count(), 3);
}

#[test]
fn group_source_never_learned() {
    let t0 = Instant::now();
    let mut core = switch(3, t0);
    let mut out = Vec::new();
    let group_src = MacAddr([0x03, 0, 0, 0, 0, 1]);
    core.handle_frame(t0, 1, &untagged(MacAddr::BROADCAST, group_src), &mut out);
    assert_eq!(core.mac_table(t0).count(), 0);
}

#[test]
fn never_back_to_ingress() {
    let t0 = Instant::now();
    let mut core = switch(3, t0);
    let mut out = Vec::new();
    core.handle_frame(t0, 1, &untagged(MacAddr::BROADCAST, mac(1)), &mut out);
    let v = core.handle_frame(t0, 1, &untagged(mac(1), mac(5)), &mut out);
    assert_eq!(v, Verdict::Dropped(DropReason::SameSegment));
    assert!(out.is_empty());
    assert_eq!(core.drop_counters().get(DropReason::SameSegment), 1);
}

#[test]
fn aging_removes_old_entries_on_gc() {
    let t0 = Instant::now();
    let mut core = switch(3, t0);
    let mut out = Vec::new();
    core.handle_frame(t0, 1, &untagged(MacAddr::BROADCAST, mac(1)), &mut out);
    core.handle_frame(
        t0 + Duration::from_secs(50),
        2,
        &untagged(MacAddr::BROADCAST, mac(2)),
        &mut out,
    );
    let mut now = t0;
    while now < t0 + Duration::from_secs(104) {
        let next = core
            .poll_timeout()
            .expect("GC pending while table non-empty");
        assert!(next >= now);
        now = next.max(now + Duration::from_millis(1));
        core.handle_timeout(now);
    }
    assert_eq!(core.lookup(mac(1), 0), None, "older than 100 s");
    assert_eq!(core.lookup(mac(2), 0), Some(2), "54 s old");
    // GC runs every gc_interval, so an entry lives at most expire + gc_interval.
    core.handle_timeout(t0 + Duration::from_secs(153));
    assert_eq!(core.lookup(mac(2), 0), None);
    assert_eq!(core.poll_timeout(), None, "nothing to age");
}

#[test]
fn min_persistence_blocks_flapping_moves() {
    let t0 = Instant::now();
    let mut core = switch(3, t0);
    let mut out = Vec::new();
    let from = |port, at: Duration, core: &mut Core, out: &mut Vec<Egress>| {
        core.handle_frame(t0 + at, port, &untagged(MacAddr::BROADCAST, mac(1)), out)
    };
    from(1, Duration::ZERO, &mut core, &mut out);
    // Seen on port 2 within 3 s: still forwarded, entry stays on port 1.
    let v = from(2, Duration::from_secs(2), &mut core, &mut out);
    assert_eq!(v, Verdict::Forwarded);
    assert_eq!(core.lookup(mac(1), 0), Some(1));
    // Frames from port 2 do not refresh the entry, so 3 s after the last port-1 frame it moves.
    from(2, Duration::from_secs(3), &mut core, &mut out);
    assert_eq!(
        core.lookup(mac(1), 0),
        Some(1),
        "exactly 3 s is not more than 3 s"
    );
    from(2, Duration::from_millis(3001), &mut core, &mut out);
    assert_eq!(core.lookup(mac(1), 0), Some(2));
}

#[test]
fn flooding_stays_within_vlan() {
    let t0 = Instant::now();
    let mut core = switch(6, t0);
    core.vlan_create(10).unwrap();
    core.vlan_create(20).unwrap();
    core.set_untagged_vlan(1, 10).unwrap();
    core.set_untagged_vlan(2, 10).unwrap();
    core.set_untagged_vlan(3, 20).unwrap();
    core.vlan_add_port(10, 4).unwrap();
    core.vlan_add_port(20, 5).unwrap();
    let mut out = Vec::new();
    core.handle_frame(t0, 1, &untagged(MacAddr::BROADCAST, mac(1)), &mut out);
    assert_eq!(
        out.iter().map(|e| (e.port, e.action)).collect::<Vec<_>>(),
        vec![(2, EgressAction::AsIs), (4, EgressAction::InsertTag(10))]
    );
    // Ports 4 and 5 are still untagged members of VLAN 0.
    core.handle_frame(t0, 0, &untagged(MacAddr::BROADCAST, mac(7)), &mut out);
    assert_eq!(ports(&out), vec![4, 5]);
}

#[test]
fn tag_actions_as_is_insert_strip_and_pcp_kept() {
    let t0 = Instant::now();
    let mut core = switch(4, t0);
    core.vlan_create(10).unwrap();
    core.set_untagged_vlan(1, 10).unwrap();
    core.vlan_add_port(10, 2).unwrap();
    core.vlan_add_port(10, 3).unwrap();
    let mut out = Vec::new();
    // Arrived tagged (PCP 7) on trunk 2: AsIs to trunk 3, Strip to access port 1.
    let frame = tagged(MacAddr::BROADCAST, mac(2), 7, 10);
    core.handle_frame(t0, 2, &frame, &mut out);
    let mut actions: Vec<_> = out.iter().map(|e| (e.port, e.action)).collect();
    actions.sort_by_key(|a| a.0);
    assert_eq!(
        actions,
        vec![(1, EgressAction::Strip), (3, EgressAction::AsIs)]
    );
    let mut scratch = [0u8; 1600];
    let stripped = EgressAction::Strip.render(&frame, &mut scratch).unwrap();
    assert_eq!(stripped, &untagged(MacAddr::BROADCAST, mac(2))[..]);
    let as_is = EgressAction::AsIs.render(&frame, &mut scratch).unwrap();
    assert_eq!(vlan::tag_of(as_is).unwrap().pcp(), 7);
    // Arrived untagged on access port 1: InsertTag(10) with PCP 0 toward trunks.
    core.handle_frame(t0, 1, &untagged(MacAddr::BROADCAST, mac(1)), &mut out);
    assert!(out.iter().all(|e| e.action == EgressAction::InsertTag(10)));
    let plain = untagged(MacAddr::BROADCAST, mac(1));
    let rendered = EgressAction::InsertTag(10)
        .render(&plain, &mut scratch)
        .unwrap();
    assert_eq!(rendered, &tagged(MacAddr::BROADCAST, mac(1), 0, 10)[..]);
}

#[test]
fn priority_tag_uses_untagged_vlan() {
    let t0 = Instant::now();
    let mut core = switch(3, t0);
    core.vlan_create(10).unwrap();
    core.set_untagged_vlan(0, 10).unwrap();
    core.set_untagged_vlan(1, 10).unwrap();
    core.vlan_add_port(10, 2).unwrap();
    let mut out = Vec::new();
    let frame = tagged(MacAddr::BROADCAST, mac(1), 5, 0);
    assert_eq!(
        core.handle_frame(t0, 0, &frame, &mut out),
        Verdict::Forwarded
    );
    let mut actions: Vec<_> = out.iter().map(|e| (e.port, e.action)).collect();
    actions.sort_by_key(|a| a.0);
    assert_eq!(
        actions,
        vec![(1, EgressAction::Strip), (2, EgressAction::RewriteVid(10))]
    );
    let mut scratch = [0u8; 1600];
    let out_frame = EgressAction::RewriteVid(10)
        .render(&frame, &mut scratch)
        .unwrap();
    let tci = vlan::tag_of(out_frame).unwrap();
    assert_eq!((tci.pcp(), tci.vid()), (5, 10));
}

#[test]
fn not_member_and_no_untagged_vlan_drops() {
    let t0 = Instant::now();
    let mut core = switch(3, t0);
    core.vlan_create(10).unwrap();
    let mut out = Vec::new();
    let v = core.handle_frame(t0, 1, &tagged(MacAddr::BROADCAST, mac(1), 0, 10), &mut out);
    assert_eq!(v, Verdict::Dropped(DropReason::NotMember));
    core.set_untagged_vlan(1, NO_VLAN).unwrap();
    let v = core.handle_frame(t0, 1, &untagged(MacAddr::BROADCAST, mac(1)), &mut out);
    assert_eq!(v, Verdict::Dropped(DropReason::NoUntaggedVlan));
    let v = core.handle_frame(t0, 1, &tagged(MacAddr::BROADCAST, mac(1), 0, 0), &mut out);
    assert_eq!(v, Verdict::Dropped(DropReason::NotMember));
    assert_eq!(core.drop_counters().get(DropReason::NotMember), 2);
    assert_eq!(core.drop_counters().total(), 3);
}

#[test]
fn too_short_frames_dropped() {
    let t0 = Instant::now();
    let mut core = switch(2, t0);
    let mut out = Vec::new();
    for len in 0..14 {
        let v = core.handle_frame(t0, 0, &vec![0xff; len], &mut out);
        assert_eq!(v, Verdict::Dropped(DropReason::TooShort));
    }
    // A 0x8100 frame too short to hold its tag.
    let mut short_tagged = untagged(MacAddr::BROADCAST, mac(1));
    short_tagged.truncate(16);
    short_tagged[12..14].copy_from_slice(&[0x81, 0x00]);
    let v = core.handle_frame(t0, 0, &short_tagged, &mut out);
    assert_eq!(v, Verdict::Dropped(DropReason::TooShort));
}

#[test]
fn hub_floods_everything_including_port_zero() {
    let t0 = Instant::now();
    let mut core = switch(4, t0);
    core.set_hub(true);
    core.vlan_create(10).unwrap();
    core.set_untagged_vlan(3, 10).unwrap();
    let mut out = Vec::new();
    core.handle_frame(t0, 2, &untagged(mac(1), mac(2)), &mut out);
    assert_eq!(ports(&out), vec![0, 1, 3]);
    assert!(out.iter().all(|e| e.action == EgressAction::AsIs));
    assert_eq!(core.mac_table(t0).count(), 0);
}

#[test]
fn mirror_gets_one_unchanged_copy() {
    let t0 = Instant::now();
    let mut core = switch(4, t0);
    core.vlan_create(10).unwrap();
    core.set_untagged_vlan(3, 10).unwrap();
    core.set_mirror(Some(3)).unwrap();
    let mut out = Vec::new();
    core.handle_frame(t0, 0, &untagged(MacAddr::BROADCAST, mac(1)), &mut out);
    core.handle_frame(t0, 1, &untagged(mac(1), mac(2)), &mut out);
    assert_eq!(
        out,
        vec![
            Egress {
                port: 0,
                action: EgressAction::AsIs
            },
            Egress {
                port: 3,
                action: EgressAction::AsIs
            }
        ]
    );
    // From the mirror port itself: no copy back.
    core.vlan_add_port(10, 2).unwrap();
    core.handle_frame(t0, 3, &untagged(MacAddr::BROADCAST, mac(3)), &mut out);
    assert_eq!(
        out,
        vec![Egress {
            port: 2,
            action: EgressAction::InsertTag(10)
        }]
    );
}

#[test]
fn inactive_ports_get_nothing_and_are_flushed() {
    let t0 = Instant::now();
    let mut core = switch(3, t0);
    let mut out = Vec::new();
    core.handle_frame(t0, 2, &untagged(MacAddr::BROADCAST, mac(2)), &mut out);
    assert_eq!(core.lookup(mac(2), 0), Some(2));
    core.set_port_active(t0, 2, false).unwrap();
    assert_eq!(core.lookup(mac(2), 0), None);
    core.handle_frame(t0, 0, &untagged(MacAddr::BROADCAST, mac(1)), &mut out);
    assert_eq!(ports(&out), vec![1]);
    let v = core.handle_frame(t0, 2, &untagged(MacAddr::BROADCAST, mac(2)), &mut out);
    assert_eq!(v, Verdict::Dropped(DropReason::UnknownPort));
    // A port never created.
    core.add_port(7).unwrap();
    core.handle_frame(t0, 0, &untagged(MacAddr::BROADCAST, mac(1)), &mut out);
    assert_eq!(ports(&out), vec![1]);
}

#[test]
fn changing_untagged_vlan_flushes_port() {
    let t0 = Instant::now();
    let mut core = switch(3, t0);
    core.vlan_create(10).unwrap();
    let mut out = Vec::new();
    core.handle_frame(t0, 1, &untagged(MacAddr::BROADCAST, mac(1)), &mut out);
    core.set_untagged_vlan(1, 10).unwrap();
    assert_eq!(core.mac_table(t0).count(), 0);
}

#[test]
fn vlan_configuration_rules() {
    let t0 = Instant::now();
    let mut core = switch(3, t0);
    assert_eq!(core.vlan_create(0), Err(ConfigError::Invalid));
    assert_eq!(core.vlan_create(4094), Err(ConfigError::Invalid));
    assert_eq!(core.vlan_create(4095), Err(ConfigError::Invalid));
    core.vlan_create(1).unwrap();
    core.vlan_create(4093).unwrap();
    assert_eq!(core.vlan_create(1), Err(ConfigError::Exists));
    assert_eq!(core.vlan_add_port(7, 1), Err(ConfigError::NoSuchVlan));
    assert_eq!(core.set_untagged_vlan(1, 7), Err(ConfigError::NoSuchVlan));
    core.vlan_add_port(1, 1).unwrap();
    assert_eq!(core.vlan_remove(1), Err(ConfigError::Busy));
    assert_eq!(core.vlan_del_port(0, 1), Err(ConfigError::UntaggedVlan));
    assert_eq!(ConfigError::UntaggedVlan.errno(), 98);
    core.vlan_del_port(1, 1).unwrap();
    core.vlan_remove(1).unwrap();
    assert_eq!(core.vlan_ids().collect::<Vec<_>>(), vec![0, 4093]);
    let members: Vec<_> = core.vlan_members(0).unwrap().map(|m| m.port).collect();
    assert_eq!(members, vec![0, 1, 2]);
    assert_eq!(core.add_port(32), Err(ConfigError::NoSuchPort));
    assert_eq!(core.add_port(1), Err(ConfigError::Exists));
}

#[test]
fn no_allocation_once_out_has_capacity() {
    let t0 = Instant::now();
    let mut core = switch(8, t0);
    let mut out = Vec::with_capacity(8);
    let ptr = out.as_ptr();
    for i in 0..100u8 {
        core.handle_frame(
            t0,
            u16::from(i % 8),
            &untagged(MacAddr::BROADCAST, mac(i % 8)),
            &mut out,
        );
    }
    assert_eq!(out.as_ptr(), ptr);
}

const PORTS: u16 = 6;

/// Ports 0..6: 0,1 untagged VLAN 0; 2 untagged 10; 3 untagged 20 and tagged 10;
/// 4 NO_VLAN, tagged 10 and 20; 5 untagged 0, tagged 20.
fn vlan_switch(t0: Instant, mirror: Option<PortId>) -> Core {
    let mut core = switch(PORTS, t0);
    core.vlan_create(10).unwrap();
    core.vlan_create(20).unwrap();
    core.set_untagged_vlan(2, 10).unwrap();
    core.set_untagged_vlan(3, 20).unwrap();
    core.vlan_add_port(10, 3).unwrap();
    core.set_untagged_vlan(4, NO_VLAN).unwrap();
    core.vlan_add_port(10, 4).unwrap();
    core.vlan_add_port(20, 4).unwrap();
    core.vlan_add_port(20, 5).unwrap();
    core.set_mirror(mirror).unwrap();
    core
}

fn arbitrary_frame() -> impl Strategy<Value = Vec<u8>> {
    let mac = prop_oneof![
        Just(MacAddr::BROADCAST),
        (0u8..6).prop_map(mac),
        any::<[u8; 6]>().prop_map(MacAddr),
    ];
    let header = (
        mac.clone(),
        mac,
        prop_oneof![
            Just(None),
            (
                0u8..8,
                prop_oneof![Just(0u16), Just(10), Just(20), Just(30), any::<u16>()]
            )
                .prop_map(Some)
        ],
    );
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..80),
        (header, 0usize..40).prop_map(|((dst, src, tag), extra)| {
            let mut f = untagged(dst, src);
            f.truncate(14 + extra);
            match tag {
                Some((pcp, vid)) => {
                    let mut buf = vec![0; f.len() + 4];
                    let len = vlan::insert_tag(&f, Tci::new(pcp, false, vid), &mut buf).unwrap();
                    buf.truncate(len);
                    buf
                }
                None => f,
            }
        }),
    ]
}

proptest! {
    #[test]
    fn forwarding_invariants(
        frames in proptest::collection::vec((0..PORTS + 1, arbitrary_frame(), 0u64..5000), 1..60),
        mirror in proptest::option::of(0..PORTS),
    ) {
        let t0 = Instant::now();
        let mut core = vlan_switch(t0, mirror);
        let membership = |port: PortId, vid: u16| -> bool {
            let untagged = [0, 0, 10, 20, NO_VLAN, 0][usize::from(port)];
            let tagged: &[u16] = [&[][..], &[], &[], &[10], &[10, 20], &[20]][usize::from(port)];
            vid != NO_VLAN && (untagged == vid || tagged.contains(&vid))
        };
        let untagged_of = |port: PortId| [0, 0, 10, 20, NO_VLAN, 0][usize::from(port)];
        let mut out = Vec::new();
        let mut scratch = [0u8; 256];
        let mut now = t0;
        for (ingress, frame, step_ms) in frames {
            now += Duration::from_millis(step_ms);
            core.handle_timeout(now);
            let verdict = core.handle_frame(now, ingress, &frame, &mut out);
            prop_assert_eq!(verdict == Verdict::Forwarded, !out.is_empty());
            if verdict != Verdict::Forwarded {
                continue;
            }
            let vid = match vlan::tag_of(&frame) {
                Some(tci) if tci.vid() == 0 => untagged_of(ingress),
                Some(tci) => tci.vid(),
                None => untagged_of(ingress),
            };
            for egress in &out {
                prop_assert_ne!(egress.port, ingress);
                prop_assert!(egress.port < PORTS);
                if Some(egress.port) != mirror {
                    prop_assert!(membership(egress.port, vid), "port {} vid {}", egress.port, vid);
                }
                prop_assert!(egress.action.render(&frame, &mut scratch).is_ok());
            }
        }
    }
}

// ---- DHCP snooping: client broadcasts beyond the flood budget go to the ports DHCP servers
// answered from (or were set by hand), per VLAN; everything else is forwarded as before.

/// An untagged IPv4/UDP frame from `sport` to `dport`.
fn udp(dst: MacAddr, src: MacAddr, sport: u16, dport: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(300);
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[8] = 64;
    ip[9] = 17;
    f.extend_from_slice(&ip);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.resize(300, 0);
    f
}

/// A client's DHCP broadcast (DISCOVER, REQUEST).
fn discover(src: MacAddr) -> Vec<u8> {
    udp(MacAddr::BROADCAST, src, 68, 67)
}

/// A server's answer (OFFER, ACK), unicast to the client.
fn offer(server: MacAddr, client: MacAddr) -> Vec<u8> {
    udp(client, server, 67, 68)
}

fn tag_frame(frame: &[u8], vid: u16) -> Vec<u8> {
    let mut buf = vec![0; frame.len() + 4];
    let len = vlan::insert_tag(frame, Tci::new(0, false, vid), &mut buf).unwrap();
    buf.truncate(len);
    buf
}

/// Sends the flood budget's worth of client broadcasts from `port`, each flooded.
fn spend_budget(core: &mut Core, now: Instant, port: PortId, src: MacAddr, everyone: &[PortId]) {
    let mut out = Vec::new();
    for _ in 0..DHCP_FLOOD_BURST {
        core.handle_frame(now, port, &discover(src), &mut out);
        assert_eq!(
            ports(&out),
            everyone,
            "within the budget a broadcast floods"
        );
    }
}

#[test]
fn a_burst_of_client_broadcasts_goes_to_the_server_port_only() {
    let t0 = Instant::now();
    let mut core = switch(6, t0);
    let mut out = Vec::new();
    // Before any server answered, every client broadcast floods, budget or not.
    for i in 0..DHCP_FLOOD_BURST + 5 {
        core.handle_frame(t0, 2, &discover(mac(2)), &mut out);
        assert_eq!(ports(&out), vec![0, 1, 3, 4, 5], "broadcast {i}");
    }
    // The server on port 1 answers: from now on the burst goes to port 1 alone.
    core.handle_frame(t0, 1, &offer(mac(1), mac(2)), &mut out);
    assert_eq!(ports(&out), vec![2]);
    for client in [2, 3, 4] {
        let v = core.handle_frame(t0, client, &discover(mac(client as u8)), &mut out);
        assert_eq!(v, Verdict::Forwarded);
        assert_eq!(ports(&out), vec![1]);
    }
    assert_eq!(core.dhcp_snooped(), 3);
    // The server's own port asking (a relay, a second client there) still reaches others.
    core.handle_frame(t0, 1, &discover(mac(11)), &mut out);
    assert_eq!(ports(&out), vec![0, 2, 3, 4, 5]);
}

#[test]
fn other_traffic_is_forwarded_as_before() {
    let t0 = Instant::now();
    let mut snooping = switch(4, t0);
    let mut plain = switch(4, t0);
    plain.set_dhcp_snooping(false);
    let frames = [
        offer(mac(1), mac(2)),
        // Past the budget, but not DHCP: ARP, DNS, a unicast DHCP request, a relay's message.
        udp(MacAddr::BROADCAST, mac(3), 5353, 53),
        udp(mac(1), mac(2), 68, 67),
        udp(MacAddr::BROADCAST, mac(3), 67, 67),
        {
            let mut arp = discover(mac(2));
            arp[12..14].copy_from_slice(&[0x08, 0x06]);
            arp
        },
    ];
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..DHCP_FLOOD_BURST + 1 {
        snooping.handle_frame(t0, 2, &discover(mac(2)), &mut a);
        plain.handle_frame(t0, 2, &discover(mac(2)), &mut b);
    }
    for _ in 0..3 {
        for (i, f) in frames.iter().enumerate() {
            let ingress = [1, 3, 2, 3, 2][i];
            let va = snooping.handle_frame(t0, ingress, f, &mut a);
            let vb = plain.handle_frame(t0, ingress, f, &mut b);
            assert_eq!((va, ports(&a)), (vb, ports(&b)), "frame {i}");
        }
    }
    // With snooping off, a burst floods whatever servers answered.
    for _ in 0..DHCP_FLOOD_BURST + 3 {
        plain.handle_frame(t0, 2, &discover(mac(2)), &mut b);
        assert_eq!(ports(&b), vec![0, 1, 3]);
    }
    assert_eq!(plain.dhcp_snooped(), 0);
}

#[test]
fn a_second_server_hears_the_budgeted_floods_and_is_learned() {
    let t0 = Instant::now();
    let mut core = switch(6, t0);
    let mut out = Vec::new();
    core.handle_frame(t0, 1, &offer(mac(1), mac(3)), &mut out);
    spend_budget(&mut core, t0, 3, mac(3), &[0, 1, 2, 4, 5]);
    core.handle_frame(t0, 3, &discover(mac(3)), &mut out);
    assert_eq!(ports(&out), vec![1]);
    // The budget refills: a second later, broadcasts flood again, and so the server on
    // port 5, which never answered, hears them and answers.
    let t1 = t0 + Duration::from_secs(1);
    spend_budget(&mut core, t1, 3, mac(3), &[0, 1, 2, 4, 5]);
    core.handle_frame(t1, 5, &offer(mac(5), mac(3)), &mut out);
    core.handle_frame(t1, 3, &discover(mac(3)), &mut out);
    assert_eq!(ports(&out), vec![1, 5]);
    let servers: Vec<PortId> = core.dhcp_server_ports().iter().map(|s| s.port).collect();
    assert_eq!(servers, vec![1, 5]);
}

#[test]
fn a_server_port_going_down_or_silent_is_forgotten() {
    let t0 = Instant::now();
    let mut core = switch(5, t0);
    let mut out = Vec::new();
    core.handle_frame(t0, 1, &offer(mac(1), mac(3)), &mut out);
    core.handle_frame(t0, 4, &offer(mac(4), mac(3)), &mut out);
    spend_budget(&mut core, t0, 3, mac(3), &[0, 1, 2, 4]);
    core.handle_frame(t0, 3, &discover(mac(3)), &mut out);
    assert_eq!(ports(&out), vec![1, 4]);
    // Port 1's endpoint leaves: its server is forgotten (and it gets nothing while down).
    core.set_port_active(t0, 1, false).unwrap();
    core.handle_frame(t0, 3, &discover(mac(3)), &mut out);
    assert_eq!(ports(&out), vec![4]);
    core.set_port_active(t0, 1, true).unwrap();
    core.handle_frame(t0, 3, &discover(mac(3)), &mut out);
    assert_eq!(
        ports(&out),
        vec![4],
        "a port back up is no server until one answers"
    );
    // Port 4's server falls silent: after the address lifetime it is forgotten, and with
    // no server known a burst floods again (the server that moved hears it wherever it is).
    let later = t0 + core.config().mac_expire + Duration::from_secs(5);
    core.handle_timeout(later);
    assert!(core.dhcp_server_ports().is_empty());
    for _ in 0..DHCP_FLOOD_BURST + 3 {
        core.handle_frame(later, 3, &discover(mac(3)), &mut out);
        assert_eq!(ports(&out), vec![0, 1, 2, 4]);
    }
    // Removed ports are forgotten too.
    core.handle_frame(later, 2, &offer(mac(2), mac(3)), &mut out);
    core.remove_port(later, 2).unwrap();
    assert!(core.dhcp_server_ports().is_empty());
}

#[test]
fn server_ports_are_per_vlan() {
    let t0 = Instant::now();
    let mut core = switch(6, t0);
    core.vlan_create(10).unwrap();
    // Ports 0-2 in VLAN 0; 3, 4 untagged in 10; 5 a tagged member of 10 (and untagged in 0).
    core.set_untagged_vlan(3, 10).unwrap();
    core.set_untagged_vlan(4, 10).unwrap();
    core.vlan_add_port(10, 5).unwrap();
    let mut out = Vec::new();
    // A server in VLAN 0 on port 1 answers; VLAN 10 knows no server yet.
    core.handle_frame(t0, 1, &offer(mac(1), mac(2)), &mut out);
    spend_budget(&mut core, t0, 2, mac(2), &[0, 1, 5]);
    core.handle_frame(t0, 2, &discover(mac(2)), &mut out);
    assert_eq!(ports(&out), vec![1]);
    spend_budget(&mut core, t0, 3, mac(3), &[4, 5]);
    core.handle_frame(t0, 3, &discover(mac(3)), &mut out);
    assert_eq!(
        ports(&out),
        vec![4, 5],
        "VLAN 10 has its own budget and no server"
    );
    // A server behind the trunk port 5 answers in VLAN 10 (tagged): VLAN 10's bursts go
    // there, tagged; VLAN 0's still go to port 1 only.
    core.handle_frame(t0, 5, &tag_frame(&offer(mac(5), mac(3)), 10), &mut out);
    assert_eq!(ports(&out), vec![3]);
    core.handle_frame(t0, 3, &discover(mac(3)), &mut out);
    assert_eq!(ports(&out), vec![5]);
    assert_eq!(
        out[0].action,
        filo_switch::EgressAction::InsertTag(10),
        "tagged toward the trunk"
    );
    core.handle_frame(t0, 2, &discover(mac(2)), &mut out);
    assert_eq!(ports(&out), vec![1]);
    // Port 5 leaving VLAN 10 takes the server out of it.
    core.vlan_del_port(10, 5).unwrap();
    core.handle_frame(t0, 3, &discover(mac(3)), &mut out);
    assert_eq!(
        ports(&out),
        vec![4],
        "no server in VLAN 10 any more: flooded"
    );
}

#[test]
fn a_server_port_set_by_hand_gets_the_burst_before_it_answered() {
    let t0 = Instant::now();
    let mut core = switch(5, t0);
    let mut out = Vec::new();
    core.set_dhcp_server_port(1, true).unwrap();
    assert!(core.set_dhcp_server_port(9, true).is_err());
    spend_budget(&mut core, t0, 3, mac(3), &[0, 1, 2, 4]);
    core.handle_frame(t0, 3, &discover(mac(3)), &mut out);
    assert_eq!(ports(&out), vec![1]);
    core.set_dhcp_server_port(1, false).unwrap();
    core.handle_frame(t0, 3, &discover(mac(3)), &mut out);
    assert_eq!(ports(&out), vec![0, 1, 2, 4]);
    // Snooping off: floods, whatever is set.
    core.set_dhcp_server_port(1, true).unwrap();
    core.set_dhcp_snooping(false);
    core.handle_frame(t0, 3, &discover(mac(3)), &mut out);
    assert_eq!(ports(&out), vec![0, 1, 2, 4]);
}

#[test]
fn the_mirror_still_gets_a_copy_of_a_snooped_broadcast() {
    let t0 = Instant::now();
    let mut core = switch(5, t0);
    core.set_mirror(Some(4)).unwrap();
    let mut out = Vec::new();
    core.handle_frame(t0, 1, &offer(mac(1), mac(3)), &mut out);
    spend_budget(&mut core, t0, 3, mac(3), &[0, 1, 2, 4]);
    core.handle_frame(t0, 3, &discover(mac(3)), &mut out);
    assert_eq!(ports(&out), vec![1, 4]);
}
