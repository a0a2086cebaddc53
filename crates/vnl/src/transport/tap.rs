//! `tap://NAME`: a Linux tap interface (IFF_TAP | IFF_NO_PI), one frame per read/write.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use super::normalize;
use crate::plug::Transport;
use crate::sys;

pub struct Tap {
    fd: OwnedFd,
    vnet: bool,
}

impl Tap {
    pub fn open(name: &str) -> io::Result<Tap> {
        Self::open_with(name, false)
    }

    /// Wraps a tap descriptor opened elsewhere (e.g. inside another namespace and passed over
    /// a socket); `vnet` says whether it was opened with `IFF_VNET_HDR`.
    pub fn from_fd(fd: OwnedFd, vnet: bool) -> io::Result<Tap> {
        sys::set_nonblocking(fd.as_raw_fd())?;
        Ok(Tap { fd, vnet })
    }

    /// As [`Tap::open_with`], the interface made in network namespace `netns` (a name from
    /// `ip netns`, i.e. /run/netns/NAME, or a path) when given: the tap's descriptor stays
    /// here, its interface is there (entering a namespace takes CAP_SYS_ADMIN over it).
    pub fn open_in(name: &str, vnet: bool, netns: Option<&str>) -> io::Result<Tap> {
        let Some(ns) = netns else {
            return Self::open_with(name, vnet);
        };
        let path = if ns.contains('/') {
            std::path::PathBuf::from(ns)
        } else {
            std::path::Path::new("/run/netns").join(ns)
        };
        let fd = sys::in_netns(&path, || sys::open_tap_with(name, vnet))?;
        Ok(Tap { fd, vnet })
    }

    /// With `vnet`, frames carry a virtio-net header and may be TCP super-frames.
    pub fn open_with(name: &str, vnet: bool) -> io::Result<Tap> {
        Ok(Tap {
            fd: sys::open_tap_with(name, vnet)?,
            vnet,
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

    fn data_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn vnet(&self) -> bool {
        self.vnet
    }

    fn frame_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.fd.as_fd())
    }

    fn kind(&self) -> &'static str {
        "tap"
    }
}
