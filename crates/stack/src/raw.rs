//! Raw IP sockets: whole IPv4 or IPv6 packets of one protocol, in and out (ping tools,
//! routing daemons, experiments with unknown protocols). Packets sent are complete IP packets
//! whose header the caller writes; smoltcp fills the IPv4 header checksum.

use std::io;
use std::time::Duration;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::raw;
use smoltcp::storage::PacketMetadata;
use smoltcp::wire::{IpProtocol, IpVersion};

use crate::stack::Stack;

/// A raw socket for one IP version and protocol number.
pub struct RawSocket {
    stack: Stack,
    handle: SocketHandle,
}

impl std::fmt::Debug for RawSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawSocket")
    }
}

impl RawSocket {
    /// Opens a raw socket for IPv6 (`v6`) or IPv4 packets carrying `protocol`.
    pub fn bind(stack: &Stack, v6: bool, protocol: u8) -> io::Result<RawSocket> {
        let rx = raw::PacketBuffer::new(vec![PacketMetadata::EMPTY; 32], vec![0u8; 64 * 1024]);
        let tx = raw::PacketBuffer::new(vec![PacketMetadata::EMPTY; 32], vec![0u8; 64 * 1024]);
        let version = if v6 { IpVersion::Ipv6 } else { IpVersion::Ipv4 };
        let s = raw::Socket::new(Some(version), Some(IpProtocol::from(protocol)), rx, tx);
        let handle = stack.lock().sockets.add(s);
        Ok(RawSocket {
            stack: stack.clone(),
            handle,
        })
    }

    /// Sends one complete IP packet.
    pub fn send(&self, packet: &[u8]) -> io::Result<()> {
        let h = self.handle;
        let r = self.stack.wait_for(Some(Duration::from_secs(5)), |g| {
            let s = g.sockets.get_mut::<raw::Socket>(h);
            s.can_send().then(|| {
                s.send_slice(packet)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{e}")))
            })
        });
        self.stack.shared.kick();
        r.unwrap_or_else(|| Err(io::Error::new(io::ErrorKind::WouldBlock, "send timed out")))
    }

    /// Receives one complete IP packet into `buf`; waits up to `timeout` (None: forever).
    pub fn recv(&self, buf: &mut [u8], timeout: Option<Duration>) -> io::Result<usize> {
        let h = self.handle;
        let r = self.stack.wait_for(timeout, |g| {
            let s = g.sockets.get_mut::<raw::Socket>(h);
            s.can_recv().then(|| {
                s.recv_slice(buf)
                    .map_err(|e| io::Error::other(format!("{e}")))
            })
        });
        r.unwrap_or_else(|| {
            Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "receive timed out",
            ))
        })
    }
}

impl Drop for RawSocket {
    fn drop(&mut self) {
        self.stack.lock().sockets.remove(self.handle);
    }
}
