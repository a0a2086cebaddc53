//! An async face for [`Plug`] on tokio: `recv().await` and `send().await`.
//!
//! Readiness comes from the plug's data and write descriptors through [`AsyncFd`]. A receive
//! is always tried before waiting, because stream transports may hold decoded frames that no
//! descriptor announces.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::plug::Plug;

/// A descriptor number registered with tokio; the plug owns the descriptor itself.
struct Registered(RawFd);

impl AsRawFd for Registered {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Field order matters: the registrations drop (deregister) before the plug closes its fds.
pub struct AsyncPlug {
    data: AsyncFd<Registered>,
    /// None when writes are signalled on the data descriptor itself.
    write: Option<AsyncFd<Registered>>,
    plug: Plug,
}

fn register(fd: RawFd, interest: Interest) -> io::Result<AsyncFd<Registered>> {
    // SAFETY: the descriptor belongs to the plug stored beside this registration in
    // `AsyncPlug`, which keeps it open for the registration's whole life (fields drop in
    // order: registrations first), and `Registered` always returns the same number.
    unsafe { AsyncFd::register_with_interest(Registered(fd), interest) }
        .map_err(|e| io::Error::other(e.to_string()))
}

impl AsyncPlug {
    /// Registers the plug with the current tokio runtime.
    pub fn new(plug: Plug) -> io::Result<AsyncPlug> {
        let data_fd = plug.data_fd().as_raw_fd();
        let write_fd = plug.write_fd().as_raw_fd();
        let (data, write) = if data_fd == write_fd {
            (
                register(data_fd, Interest::READABLE | Interest::WRITABLE)?,
                None,
            )
        } else {
            (
                register(data_fd, Interest::READABLE)?,
                Some(register(write_fd, Interest::WRITABLE)?),
            )
        };
        Ok(AsyncPlug { data, write, plug })
    }

    pub fn get_ref(&self) -> &Plug {
        &self.plug
    }

    /// Receives one frame.
    pub async fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.plug.recv(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return other,
            }
            let mut guard = self.data.readable().await?;
            guard.clear_ready();
        }
    }

    /// Sends one frame, waiting while the peer has no room.
    pub async fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        loop {
            match self.plug.send(frame) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return other,
            }
            let fd = self.write.as_ref().unwrap_or(&self.data);
            let mut guard = fd.writable().await?;
            guard.clear_ready();
        }
    }

    /// Writes any buffered output (stream transports).
    pub async fn flush(&mut self) -> io::Result<()> {
        loop {
            match self.plug.flush() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return other,
            }
            let fd = self.write.as_ref().unwrap_or(&self.data);
            let mut guard = fd.writable().await?;
            guard.clear_ready();
        }
    }

    pub fn into_inner(self) -> Plug {
        let AsyncPlug { data, write, plug } = self;
        drop(write);
        drop(data);
        plug
    }
}
