//! [`Idle`]: an I/O that gives up when it stops making progress.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Wraps an I/O object so that a read or write that waits longer than `timeout` since the
/// last progress (in either direction) fails with [`io::ErrorKind::TimedOut`]. hyper then
/// ends the connection: a peer that goes silent, or stops reading, holds it no longer than
/// that. It must be polled from one task (hyper's connection task), whose waker the timer
/// keeps.
#[derive(Debug)]
pub struct Idle<T> {
    io: T,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<T> Idle<T> {
    pub fn new(io: T, timeout: Duration) -> Idle<T> {
        Idle {
            io,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.io
    }

    pub fn into_inner(self) -> T {
        self.io
    }

    fn progress(&mut self) {
        let at = Instant::now() + self.timeout;
        self.deadline.as_mut().reset(at);
    }

    /// The answer for an operation of the inner I/O: progress resets the clock; while it
    /// is not ready the clock runs, and once it has run out the operation fails.
    fn step<R>(
        &mut self,
        cx: &mut Context<'_>,
        what: &str,
        r: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if r.is_ready() {
            self.progress();
            return r;
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no {what} progress for {:?}", self.timeout),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Idle<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.io).poll_read(cx, buf);
        me.step(cx, "read", r)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Idle<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.io).poll_write(cx, buf);
        me.step(cx, "write", r)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.io).poll_flush(cx);
        me.step(cx, "write", r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.io).poll_shutdown(cx);
        me.step(cx, "write", r)
    }
}

#[cfg(test)]
mod tests {
    use super::Idle;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_times_out_and_progress_resets_the_clock() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut idle = Idle::new(a, Duration::from_secs(5));
        let mut buf = [0u8; 8];
        b.write_all(b"hi").await.unwrap();
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(idle.read(&mut buf).await.unwrap(), 2);
        tokio::time::sleep(Duration::from_secs(4)).await;
        // 8 s since creation but 4 s since the last read: still waiting, then timing out.
        let e = idle.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
    }
}
