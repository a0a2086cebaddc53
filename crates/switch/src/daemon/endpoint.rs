//! One endpoint of a port: its data I/O (a connected datagram socket or a tap), its control
//! stream (liveness), and its output queue.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use filo_vnl::sys;
use filo_vnl::transport::tap::Tap;
use filo_vnl::wire::train;
use filo_vnl::Transport;

use super::Queue;
use crate::core::PortId;

pub(crate) enum EndpointIo {
    /// Datagram socket connected to the client: batched I/O.
    Dgram(OwnedFd),
    /// A tap device (`-t`), opened with virtio-net framing: one frame per read/write.
    Tap(Tap),
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
        Ok(EndpointIo::Tap(Tap::open_with(name, true)?))
    }

    pub(crate) fn fd(&self) -> RawFd {
        match self {
            EndpointIo::Dgram(fd) => fd.as_raw_fd(),
            EndpointIo::Tap(tap) => tap.data_fd().as_raw_fd(),
        }
    }

    pub(crate) fn recv_batch(
        &mut self,
        bufs: &mut [Vec<u8>],
        lens: &mut [usize],
    ) -> io::Result<usize> {
        match self {
            EndpointIo::Dgram(fd) => sys::recv_many(fd.as_raw_fd(), bufs, lens),
            EndpointIo::Tap(tap) => tap.recv_batch(bufs, lens),
        }
    }

    pub(crate) fn send_batch(&mut self, frames: &[&[u8]]) -> io::Result<usize> {
        match self {
            EndpointIo::Dgram(fd) => sys::send_many(fd.as_raw_fd(), frames).map_err(would_block),
            EndpointIo::Tap(tap) => tap.send_batch(frames),
        }
    }

    /// Sends queued train records (each already behind its record header) as one train;
    /// returns how many went. Only endpoints that agreed to trains get here.
    pub(crate) fn send_train(&mut self, records: &Queue) -> io::Result<usize> {
        let EndpointIo::Dgram(fd) = self else {
            return Err(io::ErrorKind::Unsupported.into());
        };
        let count = train::fit(
            records
                .iter()
                .map(|r| r.len().saturating_sub(train::RECORD_HEADER_LEN)),
        );
        let mut iov = [IoSlice::new(&[]); train::MAX_RECORDS];
        for (slot, record) in iov.iter_mut().zip(records.iter().take(count)) {
            *slot = IoSlice::new(record);
        }
        sys::send_vectored(fd.as_raw_fd(), &iov[..count])
            .map(|_| count)
            .map_err(would_block)
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
    /// Not read from while `--lossless` back-pressure holds.
    pub(crate) read_paused: bool,
    /// When frames were last read from it (to tell a stream from a lone frame).
    pub(crate) last_read: Option<std::time::Instant>,
    /// Its last read filled a whole batch: more are probably waiting.
    pub(crate) last_read_full: bool,
    /// Frames to and from this endpoint carry a virtio-net header (negotiated).
    pub(crate) vnet: bool,
    /// Datagrams to and from this endpoint are frame trains (negotiated); its queue holds
    /// records, each behind its record header.
    pub(crate) trains: bool,
    /// Bytes read from `ctl` after the request: the rest of a request written in pieces.
    pub(crate) late_bytes: usize,
    /// The client's own data socket when it is a `.PID-…` name in the switch directory, with
    /// its inode: a client killed before it unlinked it leaves it behind, so closing the
    /// endpoint removes it (if it is still that socket).
    pub(crate) client_socket: Option<(PathBuf, u64, u64)>,
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
            read_paused: false,
            last_read: None,
            last_read_full: false,
            vnet: false,
            trains: false,
            late_bytes: 0,
            client_socket: None,
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
        if let Some((p, dev, ino)) = &self.client_socket {
            use std::os::unix::fs::{FileTypeExt, MetadataExt};
            let same = std::fs::symlink_metadata(p)
                .is_ok_and(|m| m.file_type().is_socket() && m.dev() == *dev && m.ino() == *ino);
            if same {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}
