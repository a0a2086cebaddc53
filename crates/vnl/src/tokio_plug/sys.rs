//! The plug's descriptors registered with tokio. Registration is `unsafe` in tokio (the
//! descriptor must outlive it); [`Registered`] keeps the plug and its registrations together,
//! behind private fields, so they can only be dropped in the sound order.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::plug::Plug;

/// A descriptor number registered with tokio; the plug owns the descriptor itself.
pub(super) struct Fd(RawFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// A plug and its registrations. Field order matters: the registrations drop (deregister)
/// before the plug closes its descriptors.
pub(super) struct Registered {
    data: AsyncFd<Fd>,
    /// None when writes are signalled on the data descriptor itself.
    write: Option<AsyncFd<Fd>>,
    plug: Plug,
}

fn register(fd: RawFd, interest: Interest) -> io::Result<AsyncFd<Fd>> {
    // SAFETY: only called by `Registered::new`, which stores the registration beside the plug
    // owning this descriptor; the plug keeps it open for the registration's whole life (fields
    // drop in order: registrations first, and `into_plug` drops them before handing the plug
    // out), and `Fd` always returns the same number.
    unsafe { AsyncFd::register_with_interest(Fd(fd), interest) }
        .map_err(|e| io::Error::other(e.to_string()))
}

impl Registered {
    /// Registers the plug's data and write descriptors with the current tokio runtime.
    pub(super) fn new(plug: Plug) -> io::Result<Registered> {
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
        Ok(Registered { data, write, plug })
    }

    pub(super) fn plug(&self) -> &Plug {
        &self.plug
    }

    // No `&mut Plug` leaves this module: swapping the plug out would close the registered
    // descriptors under tokio.
    pub(super) fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.plug.recv(buf)
    }

    pub(super) fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        self.plug.send(frame)
    }

    pub(super) fn flush(&mut self) -> io::Result<()> {
        self.plug.flush()
    }

    /// Readiness of the data descriptor.
    pub(super) fn data(&self) -> &AsyncFd<Fd> {
        &self.data
    }

    /// Readiness for writing: the write descriptor, or the data descriptor when they are one.
    pub(super) fn write(&self) -> &AsyncFd<Fd> {
        self.write.as_ref().unwrap_or(&self.data)
    }

    /// Deregisters, then hands the plug back.
    pub(super) fn into_plug(self) -> Plug {
        let Registered { data, write, plug } = self;
        drop(write);
        drop(data);
        plug
    }
}
