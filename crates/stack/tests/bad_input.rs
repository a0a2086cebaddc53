//! Bad input on the frame-to-socket path: thousands of frames made by mutating and truncating
//! real frames (ARP, ICMP, UDP, TCP, IPv6 NDP and echo) are fed to a stack with open sockets.
//! Nothing panics, every frame is counted, and the stack still works afterwards.

use std::net::IpAddr;
use std::time::Duration;

use filo_stack::{wire, DropReason, Stack};

const B_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

fn arp_reply(to: &Stack, from_ip: [u8; 4], to_ip: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0u8; 14 + wire::ARP_LEN];
    let to_mac = to.links()[0].mac;
    wire::write_eth(&mut f, to_mac, B_MAC, wire::ETHERTYPE_ARP);
    wire::Arp {
        op: 2,
        sha: B_MAC,
        spa: from_ip.into(),
        tha: to_mac,
        tpa: to_ip.into(),
    }
    .write(&mut f[14..]);
    f
}

/// Real frames toward B (10.3.0.2 / fd03::2), produced by stack A on an unplugged link.
fn templates() -> Vec<Vec<u8>> {
    let a = Stack::builder()
        .interface_unplugged("ip=10.3.0.1/24,ip=fd03::1/64")
        .build()
        .unwrap();
    let mut out = a.take_captured(0);
    a.inject_frame(0, &arp_reply(&a, [10, 3, 0, 2], [10, 3, 0, 1]));
    let _ = a.ping(
        "10.3.0.2".parse().unwrap(),
        1,
        40,
        Duration::from_millis(200),
    );
    let _ = a.ping(
        "fd03::2".parse().unwrap(),
        1,
        40,
        Duration::from_millis(200),
    );
    let u = a.udp_bind("0.0.0.0:4000").unwrap();
    let _ = u.send_to(b"datagram", "10.3.0.2:53".parse().unwrap());
    let _ = a.tcp_connect_timeout("10.3.0.2:80", Some(Duration::from_millis(300)));
    std::thread::sleep(Duration::from_millis(100));
    out.extend(a.take_captured(0));
    // Frames from A carry A's MAC as source and B's as destination once resolved.
    out.retain(|f| f.len() >= 14);
    assert!(out.len() >= 5, "too few templates: {}", out.len());
    out
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn mutated_and_truncated_frames_are_dropped_or_handled_never_panic() {
    let templates = templates();
    let b = Stack::builder()
        .interface_unplugged("mac=02:00:00:00:00:0b,ip=10.3.0.2/24,ip=fd03::2/64")
        .build()
        .unwrap();
    let _l = b.tcp_listen("0.0.0.0:80").unwrap();
    let _u = b.udp_bind("0.0.0.0:53").unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let n = 20_000;
    let before = b.counters().frames_in;
    for _ in 0..n {
        let mut f = templates[rng.below(templates.len())].clone();
        match rng.below(4) {
            0 => f.truncate(rng.below(f.len() + 1)),
            1 => {
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(f.len());
                    f[i] = rng.next() as u8;
                }
            }
            2 => {
                // Header fields: lengths, version, protocol, EtherType.
                let i = [12, 13, 14, 16, 17, 23, 18, 19, 20, 54, 55][rng.below(11)];
                if i < f.len() {
                    f[i] = rng.next() as u8;
                }
            }
            _ => f.extend((0..rng.below(64)).map(|_| rng.next() as u8)),
        }
        b.inject_frame(0, &f);
    }
    let c = b.counters();
    assert_eq!(c.frames_in - before, n as u64, "every frame is counted");
    assert!(c.dropped() > 0, "some of the damage was noticed: {c:?}");
    assert!(
        c.get(DropReason::Short) > 0 && c.get(DropReason::UnknownEthertype) > 0,
        "{c:?}"
    );
    // Still alive: an ARP request for B's address gets an answer.
    let _ = b.take_captured(0);
    let mut f = vec![0u8; 14 + wire::ARP_LEN];
    wire::write_eth(
        &mut f,
        wire::BROADCAST,
        [2, 0, 0, 0, 0, 0xa],
        wire::ETHERTYPE_ARP,
    );
    wire::Arp {
        op: 1,
        sha: [2, 0, 0, 0, 0, 0xa],
        spa: [10, 3, 0, 9].into(),
        tha: [0; 6],
        tpa: [10, 3, 0, 2].into(),
    }
    .write(&mut f[14..]);
    b.inject_frame(0, &f);
    let replies = b.take_captured(0);
    assert!(
        replies
            .iter()
            .any(|r| r.len() >= 42 && r[0..6] == [2, 0, 0, 0, 0, 0xa] && r[21] == 2),
        "no ARP reply after the storm"
    );
    let _: IpAddr = "10.3.0.2".parse().unwrap();
}
