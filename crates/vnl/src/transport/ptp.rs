//! `ptp://PATH`: a point-to-point cable between two processes with no switch, in vdeplug4
//! 4.0.1's datagram scheme (what Debian ships). The first peer binds `PATH` and sends to
//! `PATH+`; the second finds `PATH` alive, binds `PATH+` and connects to `PATH`. A stale
//! socket left by a dead peer is unlinked and reused.

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};

use super::normalize;
use crate::plug::Transport;
use crate::sys;

pub struct Ptp {
    fd: OwnedFd,
    own_path: PathBuf,
    /// Where the first peer sends (`PATH+`); None once connected (second peer).
    send_to: Option<PathBuf>,
}

fn plus(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push("+");
    PathBuf::from(s)
}

/// What failed, for the caller to put after the VNL.
fn context(what: &str) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn bind(path: &Path, mode: u32, group: Option<&str>) -> io::Result<Socket> {
    let sock = Socket::new(Domain::UNIX, Type::DGRAM.cloexec(), None)?;
    let addr = SockAddr::unix(path)?;
    match sock.bind(&addr) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            // Only a stale socket is removed; a file in the way is an error naming it.
            crate::sockfile::make_way(path, Type::DGRAM)?;
            sock.bind(&addr)?;
        }
        other => other?,
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    if let Some(g) = group {
        let gid = sys::group_id(g).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("unknown group {g:?}"))
        })?;
        sys::chown_group(path, gid)?;
    }
    Ok(sock)
}

impl Ptp {
    pub fn open(path: &Path, mode: u32, group: Option<&str>) -> io::Result<Ptp> {
        let probe = Socket::new(Domain::UNIX, Type::DGRAM.cloexec(), None)?;
        let target = SockAddr::unix(path).map_err(context("bad path"))?;
        let ptp = match probe.connect(&target) {
            Ok(()) => {
                // Second peer: PATH is alive.
                let own = plus(path);
                let sock = bind(&own, mode, group).map_err(context(&format!(
                    "cannot bind the second endpoint {}",
                    own.display()
                )))?;
                sock.connect(&target)
                    .map_err(context("cannot connect to the first endpoint"))?;
                Ptp {
                    fd: OwnedFd::from(sock),
                    own_path: own,
                    send_to: None,
                }
            }
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT) | Some(libc::ECONNREFUSED)
                ) =>
            {
                let sock =
                    bind(path, mode, group).map_err(context("cannot bind the first endpoint"))?;
                Ptp {
                    fd: OwnedFd::from(sock),
                    own_path: path.to_path_buf(),
                    send_to: Some(plus(path)),
                }
            }
            Err(e) => return Err(context("cannot use the path")(e)),
        };
        sys::set_nonblocking(ptp.fd.as_raw_fd())?;
        Ok(ptp)
    }
}

impl Transport for Ptp {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        sys::recv_dgram(self.fd.as_raw_fd(), buf).map_err(normalize)
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        let sent = match &self.send_to {
            Some(peer) => sys::sendto_unix(self.fd.as_raw_fd(), frame, peer),
            None => sys::send_dgram(self.fd.as_raw_fd(), frame),
        };
        match sent {
            Ok(_) => Ok(()),
            // No peer (yet, or any more): the cable is unplugged at the other end.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT) | Some(libc::ECONNREFUSED)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(normalize(e)),
        }
    }

    fn recv_batch(&mut self, bufs: &mut [Vec<u8>], lens: &mut [usize]) -> io::Result<usize> {
        sys::recv_many(self.fd.as_raw_fd(), bufs, lens).map_err(normalize)
    }

    fn data_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn close(&mut self) {
        let _ = fs::remove_file(&self.own_path);
    }

    fn kind(&self) -> &'static str {
        "ptp"
    }
}
