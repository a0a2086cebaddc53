//! DHCP snooping in the core: client broadcasts beyond the flood budget go to the ports DHCP
//! servers answered from (or were set by hand), per VLAN; everything else is forwarded as
//! before. Virtual time, no sockets.

use filo_switch::wire::vlan::{self, Tci};
use filo_switch::{Core, CoreConfig, Egress, MacAddr, PortId, Verdict, DHCP_FLOOD_BURST};
use std::time::{Duration, Instant};

fn mac(last: u8) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, 0, last])
}

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

fn tag(frame: &[u8], vid: u16) -> Vec<u8> {
    let mut buf = vec![0; frame.len() + 4];
    let len = vlan::insert_tag(frame, Tci::new(0, false, vid), &mut buf).unwrap();
    buf.truncate(len);
    buf
}

fn switch(n: u16, now: Instant, snooping: bool) -> Core {
    let config = CoreConfig {
        dhcp_snooping: snooping,
        ..CoreConfig::default()
    };
    let mut core = Core::new(config, now);
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
    let mut core = switch(6, t0, true);
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
    let mut snooping = switch(4, t0, true);
    let mut plain = switch(4, t0, false);
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
    let mut core = switch(6, t0, true);
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
    let mut core = switch(5, t0, true);
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
    let mut core = switch(6, t0, true);
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
    core.handle_frame(t0, 5, &tag(&offer(mac(5), mac(3)), 10), &mut out);
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
    let mut core = switch(5, t0, true);
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
    let mut core = switch(5, t0, true);
    core.set_mirror(Some(4)).unwrap();
    let mut out = Vec::new();
    core.handle_frame(t0, 1, &offer(mac(1), mac(3)), &mut out);
    spend_budget(&mut core, t0, 3, mac(3), &[0, 1, 2, 4]);
    core.handle_frame(t0, 3, &discover(mac(3)), &mut out);
    assert_eq!(ports(&out), vec![1, 4]);
}
