//! Blocking UDP shaped like `std::net::UdpSocket`.

use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::udp;
use smoltcp::storage::PacketMetadata;

use crate::stack::{check_route, map_if, unmap, Stack};
use crate::tcp::to_std;

const PACKETS: usize = 64;
const BYTES: usize = 64 * 1024;

/// A UDP socket on a filo stack.
pub struct UdpSocket {
    stack: Stack,
    handle: SocketHandle,
    v6: bool,
    local: SocketAddr,
    peer: Mutex<Option<SocketAddr>>,
    read_timeout: Mutex<Option<Duration>>,
}

impl std::fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpSocket")
            .field("local", &self.local)
            .finish()
    }
}

impl UdpSocket {
    /// Binds to `addr` (port 0 picks one; `0.0.0.0`/`::` receive on every address).
    pub fn bind(stack: &Stack, addr: SocketAddr) -> io::Result<UdpSocket> {
        let mut g = stack.lock();
        let ep = g.listen_endpoint(addr);
        let port = ep.port;
        let rx = udp::PacketBuffer::new(vec![PacketMetadata::EMPTY; PACKETS], vec![0u8; BYTES]);
        let tx = udp::PacketBuffer::new(vec![PacketMetadata::EMPTY; PACKETS], vec![0u8; BYTES]);
        let mut s = udp::Socket::new(rx, tx);
        s.bind(ep)
            .map_err(|e| io::Error::new(io::ErrorKind::AddrInUse, format!("{e}")))?;
        let handle = g.sockets.add(s);
        drop(g);
        Ok(UdpSocket {
            stack: stack.clone(),
            handle,
            v6: addr.is_ipv6(),
            local: SocketAddr::new(addr.ip(), port),
            peer: Mutex::new(None),
            read_timeout: Mutex::new(None),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        *self.read_timeout.lock().unwrap_or_else(|p| p.into_inner()) = t;
        Ok(())
    }

    /// Sends one datagram to `addr`.
    pub fn send_to(&self, buf: &[u8], addr: SocketAddr) -> io::Result<usize> {
        let dst = unmap(addr.ip());
        let h = self.handle;
        let src = check_route(&self.stack.lock(), &dst).ok();
        let meta = udp::UdpMetadata {
            endpoint: SocketAddr::new(dst, addr.port()).into(),
            local_address: src.map(Into::into),
            meta: Default::default(),
        };
        let r = self.stack.wait_for(Some(Duration::from_secs(5)), |g| {
            let s = g.sockets.get_mut::<udp::Socket>(h);
            if s.can_send() {
                Some(
                    s.send_slice(buf, meta)
                        .map(|()| buf.len())
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{e}"))),
                )
            } else {
                None
            }
        });
        self.stack.shared.kick();
        r.unwrap_or_else(|| Err(io::Error::new(io::ErrorKind::WouldBlock, "send timed out")))
    }

    /// Receives one datagram; returns its length and sender.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let h = self.handle;
        let t = *self.read_timeout.lock().unwrap_or_else(|p| p.into_inner());
        let r = self.stack.wait_for(t, |g| {
            let s = g.sockets.get_mut::<udp::Socket>(h);
            if s.can_recv() {
                Some(
                    s.recv_slice(buf)
                        .map_err(|e| io::Error::other(format!("{e}"))),
                )
            } else {
                None
            }
        });
        match r {
            Some(Ok((n, meta))) => Ok((n, map_if(to_std(meta.endpoint), self.v6))),
            Some(Err(e)) => Err(e),
            None => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "receive timed out",
            )),
        }
    }

    /// Sets the peer for [`UdpSocket::send`] and [`UdpSocket::recv`].
    pub fn connect(&self, addr: SocketAddr) -> io::Result<()> {
        *self.peer.lock().unwrap_or_else(|p| p.into_inner()) = Some(addr);
        Ok(())
    }

    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        let peer = *self.peer.lock().unwrap_or_else(|p| p.into_inner());
        match peer {
            Some(p) => self.send_to(buf, p),
            None => Err(io::Error::from(io::ErrorKind::NotConnected)),
        }
    }

    /// Receives a datagram from the connected peer (others are discarded).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        let peer = *self.peer.lock().unwrap_or_else(|p| p.into_inner());
        let Some(peer) = peer else {
            return Err(io::Error::from(io::ErrorKind::NotConnected));
        };
        loop {
            let (n, from) = self.recv_from(buf)?;
            if unmap(from.ip()) == unmap(peer.ip()) && from.port() == peer.port() {
                return Ok(n);
            }
        }
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        self.stack.lock().sockets.remove(self.handle);
    }
}
