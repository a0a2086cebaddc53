//! A DHCP lease is used as soon as its ACK arrives, not at the client's next timer.
//!
//! The test plays the DHCP server on the other end of an in-process cable: it offers at once,
//! ignores the first REQUEST and acknowledges the retransmitted one. After that
//! retransmission the client's own timer is 2 s away, so a stack that applies the lease only
//! when some timer fires (the bug: the ACK is consumed below smoltcp and the driver skipped
//! the stack's turn) shows no address for ~2 s; one that applies it on the ACK has it at once.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use filo_stack::{cable, Stack};

const SERVER_MAC: [u8; 6] = [2, 0, 0, 0, 0xd1, 0x0c];
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 7, 0, 1);
const LEASED: Ipv4Addr = Ipv4Addr::new(10, 7, 0, 50);

/// The DHCP message type of a client's frame and the fields a reply echoes (xid, chaddr).
fn client_message(frame: &[u8]) -> Option<(u8, [u8; 4], [u8; 6])> {
    if frame.len() < 14 + 28 + 240 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0xf) * 4;
    if ip[9] != 17 || ip.len() < ihl + 8 + 240 {
        return None;
    }
    let udp = &ip[ihl..];
    if udp[2..4] != [0, 67] {
        return None;
    }
    let b = &udp[8..];
    let xid = [b[4], b[5], b[6], b[7]];
    let mut chaddr = [0u8; 6];
    chaddr.copy_from_slice(&b[28..34]);
    let mut o = &b[240..];
    while o.len() >= 2 {
        match o[0] {
            0 => o = &o[1..],
            255 => break,
            53 if o[1] == 1 && o.len() >= 3 => return Some((o[2], xid, chaddr)),
            _ => {
                let l = usize::from(o[1]);
                o = o.get(2 + l..)?;
            }
        }
    }
    None
}

/// A server reply (OFFER = 2, ACK = 5) as a broadcast Ethernet frame.
fn reply(kind: u8, xid: [u8; 4], chaddr: [u8; 6]) -> Vec<u8> {
    let mut b = vec![0u8; 240];
    b[0] = 2;
    b[1] = 1;
    b[2] = 6;
    b[4..8].copy_from_slice(&xid);
    b[16..20].copy_from_slice(&LEASED.octets());
    b[20..24].copy_from_slice(&SERVER_IP.octets());
    b[28..34].copy_from_slice(&chaddr);
    b[236..240].copy_from_slice(&[99, 130, 83, 99]);
    b.extend_from_slice(&[53, 1, kind]);
    b.extend_from_slice(&[54, 4]);
    b.extend_from_slice(&SERVER_IP.octets());
    b.extend_from_slice(&[51, 4, 0, 0, 0x0e, 0x10]);
    b.extend_from_slice(&[1, 4, 255, 255, 255, 0]);
    b.push(255);
    let ip = filo_dhcp::udp4(SERVER_IP, Ipv4Addr::BROADCAST, 67, 68, &b);
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&SERVER_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f
}

#[test]
fn a_lease_is_usable_as_soon_as_the_ack_arrives() {
    let (a, mut server) = cable().unwrap();
    let stack = Stack::builder()
        .name("dhcp-lease-timing")
        .interface_plug(a, "dhcp")
        .build()
        .unwrap();
    let mut buf = vec![0u8; 2048];
    let mut requests = 0;
    let give_up = Instant::now() + Duration::from_secs(20);
    let acked_at = loop {
        assert!(
            Instant::now() < give_up,
            "the client never retransmitted its REQUEST"
        );
        let n = match server.recv_timeout(&mut buf, Some(Duration::from_millis(200))) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(e) => panic!("server side of the cable: {e}"),
        };
        let Some((kind, xid, chaddr)) = client_message(&buf[..n]) else {
            continue;
        };
        match kind {
            1 => server.send(&reply(2, xid, chaddr)).unwrap(),
            3 => {
                requests += 1;
                if requests == 2 {
                    server.send(&reply(5, xid, chaddr)).unwrap();
                    break Instant::now();
                }
            }
            _ => {}
        }
    };
    // The client's next timer is 2 s after the retransmitted REQUEST; give the lease well
    // under that to appear.
    let got = stack.wait_for_address(false, Duration::from_millis(1000));
    let after = acked_at.elapsed();
    let got = got.unwrap_or_else(|| {
        panic!("no address {after:?} after the ACK: the lease waited for a timer")
    });
    assert_eq!(got.addr, std::net::IpAddr::V4(LEASED));
    assert_eq!(got.prefix, 24);
}
