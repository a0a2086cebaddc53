//! A connected datagram (or seqpacket) socket carrying one frame per message: the data path of
//! `vde://`, `udp://` and `seqpacket://`, with batched `recvmmsg`/`sendmmsg`.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use super::normalize;
use crate::plug::Transport;
use crate::sys;

/// How the transport treats a refused send/receive (ECONNREFUSED).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The peer is gone: report the error (UNIX sockets).
    Fatal,
    /// The network lost the frame (UDP with no listener yet): count it as sent / ignore it.
    Loss,
}

pub struct ConnectedDgram {
    fd: OwnedFd,
    /// Liveness channel (vde's control stream): EOF means the switch is gone.
    ctl: Option<UnixStream>,
    refused: Refused,
    /// Zero-length messages mean end of stream (SOCK_SEQPACKET).
    zero_is_eof: bool,
    /// Frames carry a virtio-net header (negotiated with a filo switch).
    vnet: bool,
    kind: &'static str,
}

impl ConnectedDgram {
    pub fn new(
        fd: OwnedFd,
        ctl: Option<UnixStream>,
        refused: Refused,
        zero_is_eof: bool,
        kind: &'static str,
    ) -> io::Result<Self> {
        sys::set_nonblocking(fd.as_raw_fd())?;
        Ok(ConnectedDgram {
            fd,
            ctl,
            refused,
            zero_is_eof,
            vnet: false,
            kind,
        })
    }

    /// Marks the connection as carrying virtio-net headers.
    pub fn with_vnet(mut self, vnet: bool) -> Self {
        self.vnet = vnet;
        self
    }

    fn check_refused(&self, e: io::Error) -> io::Result<()> {
        if e.raw_os_error() == Some(libc::ECONNREFUSED) && self.refused == Refused::Loss {
            Ok(())
        } else {
            Err(normalize(e))
        }
    }

    fn eof(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{}: peer closed the connection", self.kind),
        )
    }
}

impl Transport for ConnectedDgram {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match sys::recv_dgram(self.fd.as_raw_fd(), buf) {
                Ok(0) if self.zero_is_eof => return Err(self.eof()),
                Ok(n) => return Ok(n),
                Err(e) => self.check_refused(e)?,
            }
        }
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        match sys::send_dgram(self.fd.as_raw_fd(), frame) {
            Ok(_) => Ok(()),
            Err(e) => self.check_refused(e),
        }
    }

    fn recv_batch(&mut self, bufs: &mut [Vec<u8>], lens: &mut [usize]) -> io::Result<usize> {
        loop {
            match sys::recv_many(self.fd.as_raw_fd(), bufs, lens) {
                Ok(n) => {
                    if self.zero_is_eof && lens[..n].contains(&0) {
                        return Err(self.eof());
                    }
                    return Ok(n);
                }
                Err(e) => self.check_refused(e)?,
            }
        }
    }

    fn send_batch(&mut self, frames: &[&[u8]]) -> io::Result<usize> {
        match sys::send_many(self.fd.as_raw_fd(), frames) {
            Ok(n) => Ok(n),
            // The first frame was lost to the network; move past it.
            Err(e) => self.check_refused(e).map(|()| 1),
        }
    }

    fn send_batch_joined(&mut self, msgs: &[[&[u8]; 2]]) -> io::Result<usize> {
        match sys::send_many_gathered(self.fd.as_raw_fd(), msgs) {
            Ok(n) => Ok(n),
            Err(e) => self.check_refused(e).map(|()| 1),
        }
    }

    fn data_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn ctl_fd(&self) -> Option<RawFd> {
        self.ctl.as_ref().map(|s| s.as_raw_fd())
    }

    fn vnet(&self) -> bool {
        self.vnet
    }

    fn kind(&self) -> &'static str {
        self.kind
    }
}
