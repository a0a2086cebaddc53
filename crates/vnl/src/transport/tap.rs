//! `tap://NAME`: a Linux tap interface (IFF_TAP | IFF_NO_PI), one frame per read/write.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::normalize;
use crate::plug::Transport;
use crate::sys;

pub struct Tap {
    fd: OwnedFd,
}

impl Tap {
    pub fn open(name: &str) -> io::Result<Tap> {
        Ok(Tap {
            fd: sys::open_tap(name)?,
        })
    }
}

impl Transport for Tap {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        sys::read_nonblocking(self.fd.as_raw_fd(), buf).map_err(normalize)
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        match sys::write_fd(self.fd.as_raw_fd(), frame) {
            Ok(_) => Ok(()),
            // The interface is down: the kernel would drop the frame anyway.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(()),
            Err(e) => Err(normalize(e)),
        }
    }

    fn data_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn kind(&self) -> &'static str {
        "tap"
    }
}
