//! Blocking TCP shaped like `std::net`: [`TcpListener`] and [`TcpStream`] (Read/Write,
//! timeouts, shutdown, nodelay, local and peer addresses). An IPv6 socket serves IPv4 peers as
//! `::ffff:a.b.c.d` (LWIPv6's hybrid stack).

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;

use crate::stack::{check_route, map_if, unmap, Inner, Stack};

/// Default time a connect may take when no timeout is given.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn to_std(ep: smoltcp::wire::IpEndpoint) -> SocketAddr {
    SocketAddr::new(ep.addr.into(), ep.port)
}

#[derive(Default)]
struct Timeout(AtomicU64);

impl Timeout {
    fn get(&self) -> Option<Duration> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            n => Some(Duration::from_nanos(n)),
        }
    }
    fn set(&self, t: Option<Duration>) -> io::Result<()> {
        if t == Some(Duration::ZERO) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a zero timeout is not allowed",
            ));
        }
        self.0.store(
            t.map_or(0, |d| d.as_nanos().clamp(1, u64::MAX as u128) as u64),
            Ordering::Relaxed,
        );
        Ok(())
    }
}

/// A TCP connection on a filo stack.
pub struct TcpStream {
    stack: Stack,
    handle: SocketHandle,
    v6: bool,
    read_timeout: Timeout,
    write_timeout: Timeout,
    read_shut: AtomicBool,
}

impl std::fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpStream")
            .field("local", &self.local_addr().ok())
            .field("peer", &self.peer_addr().ok())
            .finish()
    }
}

pub(crate) fn sock(g: &mut Inner, h: SocketHandle) -> &mut tcp::Socket<'static> {
    g.sockets.get_mut::<tcp::Socket>(h)
}

/// Starts connecting to `addr`; returns the socket and the (unmapped) destination.
pub(crate) fn start_connect(stack: &Stack, addr: SocketAddr) -> io::Result<(SocketHandle, IpAddr)> {
    let dst = unmap(addr.ip());
    if dst.is_unspecified() || addr.port() == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot connect to {addr}"),
        ));
    }
    let mut g = stack.lock();
    let src = check_route(&g, &dst)?;
    let h = g.new_tcp();
    let port = g.ephemeral_port();
    let inner = &mut *g;
    let r = inner.sockets.get_mut::<tcp::Socket>(h).connect(
        inner.iface.context(),
        SocketAddr::new(dst, addr.port()),
        SocketAddr::new(src, port),
    );
    if let Err(e) = r {
        inner.sockets.remove(h);
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{e}")));
    }
    drop(g);
    stack.shared.kick();
    Ok((h, dst))
}

/// Where a connect stands: None while the handshake runs.
pub(crate) fn connect_state(
    g: &mut Inner,
    h: SocketHandle,
    dst: &IpAddr,
    addr: &SocketAddr,
) -> Option<io::Result<()>> {
    let now = smoltcp::time::Instant::now();
    let unreachable = g.net.unreachable(now, dst);
    match sock(g, h).state() {
        tcp::State::SynSent | tcp::State::SynReceived if unreachable => Some(Err(io::Error::new(
            io::ErrorKind::HostUnreachable,
            format!("{dst} does not answer address resolution"),
        ))),
        tcp::State::SynSent | tcp::State::SynReceived => None,
        tcp::State::Closed => Some(Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("{addr} refused the connection"),
        ))),
        _ => Some(Ok(())),
    }
}

pub(crate) fn abort_connect(stack: &Stack, h: SocketHandle) {
    let mut g = stack.lock();
    sock(&mut g, h).abort();
    g.closing.push(h);
    drop(g);
    stack.shared.kick();
}

impl TcpStream {
    pub(crate) fn from_handle(stack: Stack, handle: SocketHandle, v6: bool) -> TcpStream {
        TcpStream {
            stack,
            handle,
            v6,
            read_timeout: Timeout::default(),
            write_timeout: Timeout::default(),
            read_shut: AtomicBool::new(false),
        }
    }

    /// Connects to `addr`; fails with `NetworkUnreachable` at once when there is no route,
    /// `HostUnreachable` when the neighbour does not answer, `ConnectionRefused` on a reset and
    /// `TimedOut` after `timeout` (default [`CONNECT_TIMEOUT`]).
    pub fn connect_timeout(
        stack: &Stack,
        addr: SocketAddr,
        timeout: Option<Duration>,
    ) -> io::Result<TcpStream> {
        let (h, dst) = start_connect(stack, addr)?;
        let result = stack.wait_for(Some(timeout.unwrap_or(CONNECT_TIMEOUT)), |g| {
            connect_state(g, h, &dst, &addr)
        });
        let err = match result {
            Some(Ok(())) => return Ok(TcpStream::from_handle(stack.clone(), h, addr.is_ipv6())),
            Some(Err(e)) => e,
            None => io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connecting to {addr} timed out"),
            ),
        };
        abort_connect(stack, h);
        Err(err)
    }

    pub fn connect(stack: &Stack, addr: SocketAddr) -> io::Result<TcpStream> {
        TcpStream::connect_timeout(stack, addr, None)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        let mut g = self.stack.lock();
        sock(&mut g, self.handle)
            .local_endpoint()
            .map(|e| map_if(to_std(e), self.v6))
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        let mut g = self.stack.lock();
        sock(&mut g, self.handle)
            .remote_endpoint()
            .map(|e| map_if(to_std(e), self.v6))
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }

    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.read_timeout.set(t)
    }

    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.write_timeout.set(t)
    }

    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.read_timeout.get())
    }

    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.write_timeout.get())
    }

    /// Disables (true) or enables Nagle's algorithm. filo's sockets start with it disabled.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        let mut g = self.stack.lock();
        sock(&mut g, self.handle).set_nagle_enabled(!nodelay);
        Ok(())
    }

    pub fn nodelay(&self) -> io::Result<bool> {
        let mut g = self.stack.lock();
        Ok(!sock(&mut g, self.handle).nagle_enabled())
    }

    /// Shuts down the read half (later reads return 0), the write half (sends FIN), or both.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        if matches!(how, Shutdown::Read | Shutdown::Both) {
            self.read_shut.store(true, Ordering::Relaxed);
        }
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            let mut g = self.stack.lock();
            close_now(sock(&mut g, self.handle));
            drop(g);
            self.stack.shared.kick();
        }
        Ok(())
    }

    /// The stack this connection lives on.
    pub fn stack(&self) -> &Stack {
        &self.stack
    }

    /// The end of a read or write: wake the driver if the inline turn asked for it; no
    /// answer within the timeout is `WouldBlock` (as std's sockets report it).
    fn finish_io(
        &self,
        r: Option<io::Result<(usize, bool)>>,
        timed_out: &str,
    ) -> io::Result<usize> {
        match r {
            Some(Ok((n, kick))) => {
                if kick {
                    self.stack.shared.kick();
                }
                Ok(n)
            }
            Some(Err(e)) => Err(e),
            None => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                timed_out.to_string(),
            )),
        }
    }

    fn read_inner(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.read_shut.load(Ordering::Relaxed) {
            return Ok(0);
        }
        let h = self.handle;
        let r = self.stack.wait_for(self.read_timeout.get(), |g| {
            let s = sock(g, h);
            if s.can_recv() {
                let r = s
                    .recv_slice(buf)
                    .map_err(|e| io::Error::new(io::ErrorKind::ConnectionReset, format!("{e}")));
                // A window update may be due: send it from this thread.
                let kick = r.is_ok() && g.process_inline();
                Some(r.map(|n| (n, kick)))
            } else if !s.may_recv() {
                Some(Ok((0, false)))
            } else {
                None
            }
        });
        self.finish_io(r, "read timed out")
    }

    fn write_inner(&self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let h = self.handle;
        let r = self.stack.wait_for(self.write_timeout.get(), |g| {
            let s = sock(g, h);
            if !s.may_send() {
                Some(Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the connection is closed for sending",
                )))
            } else if s.can_send() {
                let r = s
                    .send_slice(buf)
                    .map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, format!("{e}")));
                // Send from this thread: no driver wakeup on the hot path.
                let kick = r.is_ok() && g.process_inline();
                Some(r.map(|n| (n, kick)))
            } else {
                None
            }
        });
        self.finish_io(r, "write timed out")
    }

    /// Waits until everything written was acknowledged by the peer (or the timeout passes).
    pub fn drain(&self, timeout: Duration) -> io::Result<()> {
        let h = self.handle;
        self.stack
            .wait_for(Some(timeout), |g| {
                let s = sock(g, h);
                // After a shutdown the FIN must be acknowledged too: a process that exits
                // with its FIN lost leaves the peer waiting for the end of the stream.
                let fin_unacked = matches!(
                    s.state(),
                    tcp::State::FinWait1 | tcp::State::Closing | tcp::State::LastAck
                );
                if !s.is_active() && s.send_queue() > 0 {
                    // Reset or timed out with data still unacknowledged.
                    return Some(Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        format!(
                            "the connection closed with {} bytes unacknowledged",
                            s.send_queue()
                        ),
                    )));
                }
                (!s.is_active() || (s.send_queue() == 0 && !fin_unacked)).then_some(Ok(()))
            })
            .unwrap_or_else(|| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "unacknowledged data remains",
                ))
            })
    }

    #[cfg(feature = "tokio")]
    pub(crate) fn handle(&self) -> SocketHandle {
        self.handle
    }
}

impl Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_inner(buf)
    }
}

impl Read for &TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_inner(buf)
    }
}

impl Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_inner(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for &TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_inner(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Sends FIN. Only the closing handshake is left, so it is acknowledged at once: a process
/// that exits right after does not take a delayed ACK of the peer's FIN with it.
fn close_now(s: &mut tcp::Socket<'static>) {
    s.set_ack_delay(None);
    s.close();
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        let mut g = self.stack.lock();
        close_now(sock(&mut g, self.handle));
        g.closing.push(self.handle);
        drop(g);
        self.stack.shared.kick();
    }
}

/// A listening TCP socket on a filo stack.
pub struct TcpListener {
    stack: Stack,
    id: usize,
    local: SocketAddr,
    v6: bool,
}

impl std::fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpListener")
            .field("local", &self.local)
            .finish()
    }
}

impl TcpListener {
    /// Listens on `addr`. `0.0.0.0` and `::` listen on every address, IPv4 and IPv6; an IPv6
    /// listener reports IPv4 peers as `::ffff:a.b.c.d`. Port 0 picks a free port.
    pub fn bind(stack: &Stack, addr: SocketAddr) -> io::Result<TcpListener> {
        let mut g = stack.lock();
        let endpoint = g.listen_endpoint(addr);
        if let Some(ip) = endpoint.addr {
            let ip = IpAddr::from(ip);
            if !g.net.is_own(&ip) {
                return Err(io::Error::new(
                    io::ErrorKind::AddrNotAvailable,
                    format!("{ip} is not an address of this stack"),
                ));
            }
        }
        let port = endpoint.port;
        let id = g.add_listener(endpoint)?;
        drop(g);
        stack.shared.kick();
        Ok(TcpListener {
            stack: stack.clone(),
            id,
            local: SocketAddr::new(addr.ip(), port),
            v6: addr.is_ipv6(),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    /// Waits for a connection.
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        self.accept_timeout(None)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::WouldBlock, "accept timed out"))
    }

    /// Waits up to `timeout` for a connection (None: forever); Ok(None) on timeout.
    pub fn accept_timeout(
        &self,
        timeout: Option<Duration>,
    ) -> io::Result<Option<(TcpStream, SocketAddr)>> {
        let id = self.id;
        let h = self
            .stack
            .wait_for(timeout, |g| g.listeners.get_mut(&id)?.ready.pop_front());
        Ok(h.map(|h| {
            let s = TcpStream::from_handle(self.stack.clone(), h, self.v6);
            let peer = s
                .peer_addr()
                .unwrap_or_else(|_| SocketAddr::new(IpAddr::from([0u8; 4]), 0));
            (s, peer)
        }))
    }

    /// Accepts one connection without waiting.
    #[cfg(feature = "tokio")]
    pub(crate) fn try_accept(&self) -> Option<TcpStream> {
        let id = self.id;
        let h = self
            .stack
            .lock()
            .listeners
            .get_mut(&id)?
            .ready
            .pop_front()?;
        Some(TcpStream::from_handle(self.stack.clone(), h, self.v6))
    }

    /// Registers a waker for when a connection may be ready (tokio support).
    #[cfg(feature = "tokio")]
    pub(crate) fn register_waker(&self, w: &std::task::Waker) {
        let mut g = self.stack.lock();
        let Some(l) = g.listeners.get(&self.id) else {
            return;
        };
        let hs: Vec<SocketHandle> = l.listening.iter().chain(&l.embryonic).copied().collect();
        for h in hs {
            g.sockets.get_mut::<tcp::Socket>(h).register_recv_waker(w);
        }
    }

    /// Iterates over incoming connections.
    pub fn incoming(&self) -> impl Iterator<Item = io::Result<TcpStream>> + '_ {
        std::iter::from_fn(move || Some(self.accept().map(|(s, _)| s)))
    }

    pub fn stack(&self) -> &Stack {
        &self.stack
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        self.stack.lock().remove_listener(self.id);
        self.stack.shared.kick();
    }
}
