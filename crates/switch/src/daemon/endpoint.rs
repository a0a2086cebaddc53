//! One endpoint of a port: its data I/O (a connected datagram socket or a tap), its control
//! stream (liveness), and its output queue.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use filo_vnl::sys;

use super::Queue;
use crate::core::PortId;

pub(crate) enum EndpointIo {
    /// Datagram socket connected to the client: batched I/O.
    Dgram(OwnedFd),
    /// A tap device: one frame per read/write.
    Tap(OwnedFd),
}

fn would_block(e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::ENOBUFS) {
        io::ErrorKind::WouldBlock.into()
    } else {
        e
    }
}

impl EndpointIo {
    pub(crate) fn tap(name: &str) -> io::Result<EndpointIo> {
        Ok(EndpointIo::Tap(sys::open_tap(name)?))
    }

    pub(crate) fn fd(&self) -> RawFd {
        match self {
            EndpointIo::Dgram(fd) | EndpointIo::Tap(fd) => fd.as_raw_fd(),
        }
    }

    pub(crate) fn recv_batch(
        &mut self,
        bufs: &mut [Vec<u8>],
        lens: &mut [usize],
    ) -> io::Result<usize> {
        match self {
            EndpointIo::Dgram(fd) => sys::recv_many(fd.as_raw_fd(), bufs, lens),
            EndpointIo::Tap(fd) => {
                let mut n = 0;
                while n < bufs.len() {
                    match sys::read_nonblocking(fd.as_raw_fd(), &mut bufs[n]) {
                        Ok(len) => {
                            lens[n] = len;
                            n += 1;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock && n > 0 => break,
                        Err(e) => return Err(e),
                    }
                }
                Ok(n)
            }
        }
    }

    pub(crate) fn send_batch(&mut self, frames: &[&[u8]]) -> io::Result<usize> {
        match self {
            EndpointIo::Dgram(fd) => sys::send_many(fd.as_raw_fd(), frames).map_err(would_block),
            EndpointIo::Tap(fd) => {
                let mut n = 0;
                for f in frames {
                    match sys::write_nonblocking(fd.as_raw_fd(), f) {
                        Ok(_) => n += 1,
                        // Interface down: the kernel drops it; so do we.
                        Err(e) if e.raw_os_error() == Some(libc::EIO) => n += 1,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock && n > 0 => break,
                        Err(e) => return Err(would_block(e)),
                    }
                }
                Ok(n)
            }
        }
    }
}

pub(crate) struct Endpoint {
    pub(crate) port: PortId,
    pub(crate) id: u32,
    pub(crate) io: EndpointIo,
    /// The client's control connection: EOF means it is gone.
    pub(crate) ctl: Option<UnixStream>,
    /// The switch-side data socket file, unlinked on close.
    pub(crate) path: Option<PathBuf>,
    pub(crate) queue: Queue,
    pub(crate) want_write: bool,
    /// Frames to and from this endpoint carry a virtio-net header (negotiated).
    pub(crate) vnet: bool,
}

impl Endpoint {
    pub(crate) fn new(
        port: PortId,
        id: u32,
        io: EndpointIo,
        ctl: Option<UnixStream>,
        path: Option<PathBuf>,
    ) -> Endpoint {
        Endpoint {
            port,
            id,
            io,
            ctl,
            path,
            queue: Queue::new(),
            want_write: false,
            vnet: false,
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}
