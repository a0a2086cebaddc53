//! Fuzz the servers with what clients (or anyone on the link) can send. DHCPv4: messages built
//! around a valid header (op, hardware type, magic cookie) from four MACs (one with a static
//! lease), with fuzzed message type, flags, ciaddr and options, raw payloads, and time
//! passing. DHCPv6 and router solicitations: raw payloads. No panic; every DHCPv4 reply is a
//! BOOTREPLY of 300 to 576 bytes to the request's xid and MAC with a message type and server
//! identifier; leases stay in the subnet, the static one on its address; the lease file loads
//! back into a new server without errors and with the same leases; every DHCPv6 reply is an
//! ADVERTISE or REPLY to the request's transaction whose options all parse.
#![no_main]

use std::net::Ipv4Addr;
use std::time::Duration;

use filo_dhcp::server::{Config, Kind, Server};
use filo_dhcp::{ra, v6, Instant, Mac};
use libfuzzer_sys::fuzz_target;
use smoltcp::wire::{DhcpOpCode, DhcpPacket};

const MACS: [Mac; 4] = [
    [2, 0, 0, 0, 0, 1],
    [2, 0, 0, 0, 0, 2],
    [2, 0, 0, 0, 0, 3],
    [2, 0, 0, 0, 0, 4],
];
const STATIC: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);
const UNIX: u64 = 1_800_000_000;

fn config() -> Config {
    let mut c = Config::new(
        Ipv4Addr::new(10, 0, 2, 2),
        24,
        Ipv4Addr::new(10, 0, 2, 15),
        Ipv4Addr::new(10, 0, 2, 18),
    );
    c.router = Some(Ipv4Addr::new(10, 0, 2, 2));
    c.dns = vec![Ipv4Addr::new(10, 0, 2, 3)];
    c.search = vec!["lab.example".into()];
    c.mtu = Some(1400);
    c.lease_time = Duration::from_secs(120);
    c.max_leases = 3;
    c.static_leases = vec![(MACS[3], STATIC)];
    c
}

fn check_reply(reply: &filo_dhcp::server::Reply, request: &[u8]) {
    let len = reply.payload.len();
    assert!((300..=576).contains(&len), "reply of {len} bytes");
    let p = DhcpPacket::new_checked(&reply.payload[..]).expect("a reply parses");
    assert_eq!(p.opcode(), DhcpOpCode::Reply);
    assert_eq!(p.magic_number(), 0x6382_5363);
    assert_eq!(reply.payload[4..8], request[4..8], "xid");
    assert_eq!(reply.payload[28..34], request[28..34], "chaddr");
    let kinds: Vec<u8> = p
        .options()
        .filter(|o| o.kind == 53)
        .map(|o| o.data[0])
        .collect();
    let expected = match reply.kind {
        Kind::Offer => 2,
        Kind::Ack => 5,
        Kind::Nak => 6,
    };
    assert_eq!(kinds, vec![expected]);
    assert!(p.options().any(|o| o.kind == 54 && o.data == [10, 0, 2, 2]));
    let y = p.your_ip().octets();
    if reply.kind != Kind::Nak && y != [0; 4] {
        assert_eq!(y[..3], [10, 0, 2], "yiaddr in the subnet");
    }
}

fn check_leases(s: &Server, now: Instant) {
    let leases = s.leases(now);
    for l in &leases {
        let o = l.addr.octets();
        assert!(o[..3] == [10, 0, 2] && o[3] != 0 && o[3] != 255 && o[3] != 2);
        if l.mac == MACS[3] {
            assert_eq!(l.addr, STATIC);
        } else {
            assert_ne!(l.addr, STATIC);
        }
    }
    let file = s.save_leases(now, UNIX);
    let mut again = Server::new(config()).expect("config");
    let errors = again.load_leases(&file, now, UNIX);
    assert!(errors.is_empty(), "{errors:?} in\n{file}");
    let key = |l: &filo_dhcp::server::LeaseInfo| (l.addr, l.mac, l.hostname.clone());
    let back: Vec<_> = again.leases(now).iter().map(key).collect();
    let orig: Vec<_> = leases.iter().map(key).collect();
    assert_eq!(back, orig, "{file}");
}

fuzz_target!(|data: &[u8]| {
    let _ = filo_dhcp::names::decode_list(data);
    let _ = filo_dhcp::server::server_payload(data);
    let _ = v6::server_payload(data);
    let mut s = Server::new(config()).expect("config");
    let v6s = v6::Server::new(v6::Config::new(MACS[0])).expect("v6 config");
    let mut now = Instant::from_secs(1);
    let mut adv = ra::Advertiser::new(ra::Config::new(MACS[0]), now).expect("ra config");
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let (body, tail) = rest.split_at(usize::from(op >> 2).min(rest.len()));
        match op & 3 {
            0 => {
                // Time passes: up to ~3 minutes a step, past offers, leases and declines.
                now = Instant::from_millis(now.total_millis() + u64::from(op) * 3001);
                let _ = adv.poll(now, u32::from(op));
                continue;
            }
            1 => {
                rest = tail;
                let b = |i: usize| body.get(i).copied().unwrap_or(0);
                let mut m = vec![0u8; 240];
                m[..3].copy_from_slice(&[1, 1, 6]);
                m[4..8].copy_from_slice(&[b(0), 0, 0, b(1)]);
                m[10] = b(1) & 0x80;
                if b(2) & 1 == 1 {
                    m[12..16].copy_from_slice(&[10, 0, 2, b(3)]);
                }
                m[28..34].copy_from_slice(&MACS[usize::from(b(2) >> 1) % 4]);
                m[236..240].copy_from_slice(&[99, 130, 83, 99]);
                m.extend_from_slice(&[53, 1, b(4) % 10]);
                m.extend_from_slice(body.get(5..).unwrap_or_default());
                if let Ok(Some(r)) = s.handle(now, &m) {
                    check_reply(&r, &m);
                }
            }
            2 => {
                rest = tail;
                if let Ok(Some(r)) = s.handle(now, body) {
                    check_reply(&r, body);
                }
                if let Ok(Some(r)) = v6s.handle(body) {
                    assert!(matches!(r.payload[0], 2 | 7));
                    assert_eq!(r.payload[1..4], body[1..4]);
                    let mut o = &r.payload[4..];
                    while !o.is_empty() {
                        assert!(o.len() >= 4);
                        let len = usize::from(u16::from_be_bytes([o[2], o[3]]));
                        assert!(o.len() >= 4 + len);
                        o = &o[4 + len..];
                    }
                }
                let _ = adv.handle_packet(now, body, u32::from(op));
                let src = std::net::Ipv6Addr::from([
                    0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, op,
                ]);
                let before = adv.poll_at();
                if adv.handle_icmpv6(now, src, ra::ALL_ROUTERS, 255, body, u32::from(op))
                    == Ok(true)
                {
                    assert!(adv.poll_at() <= before);
                }
            }
            _ => check_leases(&s, now),
        }
    }
    check_leases(&s, now);
});
