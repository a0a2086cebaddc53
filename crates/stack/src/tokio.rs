//! Async sockets for tokio: [`TcpStream`] implements `AsyncRead`/`AsyncWrite`,
//! [`TcpListener::accept`] is a future. They register wakers with smoltcp's sockets, which the
//! driver thread wakes during its turn — no tokio reactor integration is needed, so these work
//! on any runtime flavour (and with futures executors generally).

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use smoltcp::socket::tcp;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::dns::ToTarget;
use crate::stack::Stack;
use crate::tcp::{abort_connect, connect_state, sock, start_connect};

/// The async face of a stack: `stack.tokio().tcp_connect("10.0.0.1:80").await`.
#[derive(Debug, Clone, Copy)]
pub struct AsyncStack<'a>(&'a Stack);

impl Stack {
    pub fn tokio(&self) -> AsyncStack<'_> {
        AsyncStack(self)
    }
}

impl AsyncStack<'_> {
    /// Connects to an address or `host:port` (names are resolved on a blocking thread).
    pub async fn tcp_connect(&self, target: impl ToTarget) -> io::Result<TcpStream> {
        let addrs = match target.to_target()? {
            Ok(a) => vec![a],
            Err((host, port)) => {
                let s = self.0.clone();
                tokio::task::spawn_blocking(move || s.lookup((host.as_str(), port)))
                    .await
                    .map_err(io::Error::other)??
            }
        };
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address to connect to");
        for a in addrs {
            match TcpStream::connect(self.0, a).await {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    pub fn tcp_listen(&self, addr: impl ToTarget) -> io::Result<TcpListener> {
        Ok(TcpListener(self.0.tcp_listen(addr)?))
    }
}

/// An async TCP connection.
#[derive(Debug)]
pub struct TcpStream(crate::TcpStream);

impl TcpStream {
    /// Connects to `addr`; the future resolves when the handshake ends (or fails, with the
    /// same errors as the blocking connect). Drop it to give up.
    pub async fn connect(stack: &Stack, addr: SocketAddr) -> io::Result<TcpStream> {
        let (h, dst) = start_connect(stack, addr)?;
        let guard = AbortOnDrop(Some((stack.clone(), h)));
        let r = poll_fn(|cx| {
            let mut g = stack.lock();
            match connect_state(&mut g, h, &dst, &addr) {
                Some(r) => Poll::Ready(r),
                None => {
                    sock(&mut g, h).register_send_waker(cx.waker());
                    Poll::Pending
                }
            }
        })
        .await;
        let mut guard = guard;
        match r {
            Ok(()) => {
                guard.0 = None;
                Ok(TcpStream(crate::TcpStream::from_handle(
                    stack.clone(),
                    h,
                    addr.is_ipv6(),
                )))
            }
            Err(e) => Err(e),
        }
    }

    /// The blocking stream underneath (addresses, nodelay, timeouts for blocking use).
    pub fn get_ref(&self) -> &crate::TcpStream {
        &self.0
    }

    pub fn into_blocking(self) -> crate::TcpStream {
        self.0
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.peer_addr()
    }

    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.0.set_nodelay(nodelay)
    }
}

struct AbortOnDrop(Option<(Stack, smoltcp::iface::SocketHandle)>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some((s, h)) = self.0.take() {
            abort_connect(&s, h);
        }
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let stack = self.0.stack();
        let mut g = stack.lock();
        let s = sock(&mut g, self.0.handle());
        if s.can_recv() {
            let dst = buf.initialize_unfilled();
            match s.recv_slice(dst) {
                Ok(n) => {
                    buf.advance(n);
                    drop(g);
                    stack.shared.kick();
                    Poll::Ready(Ok(()))
                }
                Err(e) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    format!("{e}"),
                ))),
            }
        } else if !s.may_recv() {
            Poll::Ready(Ok(()))
        } else {
            s.register_recv_waker(cx.waker());
            Poll::Pending
        }
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let stack = self.0.stack();
        let mut g = stack.lock();
        let s = sock(&mut g, self.0.handle());
        if !s.may_send() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the connection is closed for sending",
            )));
        }
        if s.can_send() {
            let r = s
                .send_slice(buf)
                .map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, format!("{e}")));
            drop(g);
            stack.shared.kick();
            return Poll::Ready(r);
        }
        s.register_send_waker(cx.waker());
        Poll::Pending
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.0.shutdown(std::net::Shutdown::Write))
    }
}

/// An async TCP listener.
#[derive(Debug)]
pub struct TcpListener(crate::TcpListener);

impl TcpListener {
    pub fn bind(stack: &Stack, addr: SocketAddr) -> io::Result<TcpListener> {
        Ok(TcpListener(crate::TcpListener::bind(stack, addr)?))
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    /// Waits for a connection.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        poll_fn(|cx| {
            if let Some(s) = self.0.try_accept() {
                let peer = s.peer_addr()?;
                return Poll::Ready(Ok((TcpStream(s), peer)));
            }
            self.0.register_waker(cx.waker());
            // A connection may have become ready between the two looks.
            if let Some(s) = self.0.try_accept() {
                let peer = s.peer_addr()?;
                return Poll::Ready(Ok((TcpStream(s), peer)));
            }
            Poll::Pending
        })
        .await
    }
}

#[allow(dead_code)]
fn _assert_send() {
    fn is_send<T: Send + Sync>() {}
    is_send::<TcpStream>();
    is_send::<TcpListener>();
    let _ = tcp::State::Closed;
}
