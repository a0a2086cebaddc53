//! ICMP and ICMPv6 echo (`ping`). Echo requests to a stack are answered by smoltcp itself.

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use smoltcp::socket::icmp;
use smoltcp::storage::PacketMetadata;

use crate::stack::{check_route, unmap, Stack};

pub(crate) fn ping(
    stack: &Stack,
    dst: IpAddr,
    seq: u16,
    size: usize,
    timeout: Duration,
) -> io::Result<Duration> {
    let dst = unmap(dst);
    let v6 = dst.is_ipv6();
    let size = size.min(9000);
    let mut g = stack.lock();
    check_route(&g, &dst)?;
    let rx = icmp::PacketBuffer::new(vec![PacketMetadata::EMPTY; 4], vec![0u8; 4 * (size + 64)]);
    let tx = icmp::PacketBuffer::new(vec![PacketMetadata::EMPTY; 1], vec![0u8; size + 64]);
    let mut s = icmp::Socket::new(rx, tx);
    let ident = (g.ephemeral_port() ^ 0x5a5a) | 1;
    s.bind(icmp::Endpoint::Ident(ident))
        .map_err(|e| io::Error::other(format!("{e}")))?;
    let mut msg = vec![0u8; 8 + size];
    msg[0] = if v6 { 128 } else { 8 };
    msg[4..6].copy_from_slice(&ident.to_be_bytes());
    msg[6..8].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in msg[8..].iter_mut().enumerate() {
        *b = i as u8;
    }
    if !v6 {
        let ck = crate::wire::internet_checksum(&msg);
        msg[2..4].copy_from_slice(&ck.to_be_bytes());
    }
    s.send_slice(&msg, dst.into())
        .map_err(|e| io::Error::other(format!("{e}")))?;
    let h = g.sockets.add(s);
    drop(g);
    let start = std::time::Instant::now();
    stack.shared.kick();
    let reply = if v6 { 129 } else { 0 };
    let r = stack.wait_for(Some(timeout), |g| {
        let now = smoltcp::time::Instant::now();
        if g.net.unreachable(now, &dst) {
            return Some(Err(io::Error::new(
                io::ErrorKind::HostUnreachable,
                format!("{dst} does not answer address resolution"),
            )));
        }
        let s = g.sockets.get_mut::<icmp::Socket>(h);
        while s.can_recv() {
            let Ok((p, from)) = s.recv() else { break };
            if IpAddr::from(from) == dst
                && p.len() >= 8
                && p[0] == reply
                && p[4..6] == ident.to_be_bytes()
                && p[6..8] == seq.to_be_bytes()
            {
                return Some(Ok(start.elapsed()));
            }
        }
        None
    });
    stack.lock().sockets.remove(h);
    r.unwrap_or_else(|| {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no echo reply from {dst}"),
        ))
    })
}
