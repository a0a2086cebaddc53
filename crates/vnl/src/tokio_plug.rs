//! An async face for [`Plug`] on tokio: `recv().await` and `send().await`.
//!
//! Readiness comes from the plug's data and write descriptors through [`AsyncFd`](tokio::io::unix::AsyncFd). A receive
//! is always tried before waiting, because stream transports may hold decoded frames that no
//! descriptor announces.

use std::io;

use crate::plug::Plug;

#[allow(unsafe_code)]
mod sys;

pub struct AsyncPlug {
    inner: sys::Registered,
}

impl AsyncPlug {
    /// Registers the plug with the current tokio runtime.
    pub fn new(plug: Plug) -> io::Result<AsyncPlug> {
        Ok(AsyncPlug {
            inner: sys::Registered::new(plug)?,
        })
    }

    pub fn get_ref(&self) -> &Plug {
        self.inner.plug()
    }

    /// Receives one frame.
    pub async fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.inner.recv(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return other,
            }
            let mut guard = self.inner.data().readable().await?;
            guard.clear_ready();
        }
    }

    /// Sends one frame, waiting while the peer has no room.
    pub async fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        loop {
            match self.inner.send(frame) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return other,
            }
            let mut guard = self.inner.write().writable().await?;
            guard.clear_ready();
        }
    }

    /// Writes any buffered output (stream transports).
    pub async fn flush(&mut self) -> io::Result<()> {
        loop {
            match self.inner.flush() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return other,
            }
            let mut guard = self.inner.write().writable().await?;
            guard.clear_ready();
        }
    }

    pub fn into_inner(self) -> Plug {
        self.inner.into_plug()
    }
}
