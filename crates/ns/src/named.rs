//! Named stacks: a [`KernelStack`] served on a UNIX SOCK_SEQPACKET socket at a path.
//!
//! Protocol, one request per connection: `S` + domain, type, protocol (native-endian i32s)
//! answers an errno (i32, 0 = success) with the new socket attached (SCM_RIGHTS); `N`
//! answers 0 with the namespace descriptors attached (network, then user when the stack
//! has one). Connecting needs write permission on the socket file, so the file's owner,
//! group and mode are the access control: a client without rights gets EACCES from
//! `connect` itself.
//!
//! [`DEFAULT_ENV`] (`FILO_STACK`) names the default stack of a process tree: [`msocket`]
//! with no path and `filo mstack` without one use it.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::stack::{Cleanup, KernelStack};
use crate::{sys, NetConf, NsError};

/// The environment variable naming the default stack.
pub const DEFAULT_ENV: &str = "FILO_STACK";

fn unix_addr(path: &Path) -> io::Result<socket2::SockAddr> {
    socket2::SockAddr::unix(path)
}

fn seqpacket() -> io::Result<socket2::Socket> {
    socket2::Socket::new(
        socket2::Domain::UNIX,
        socket2::Type::SEQPACKET.cloexec(),
        None,
    )
}

/// A named stack: the stack and its listening socket.
pub struct Server {
    stack: KernelStack,
    listener: socket2::Socket,
    path: PathBuf,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("path", &self.path)
            .field("stack", &self.stack)
            .finish()
    }
}

impl Server {
    /// Binds `path` (with permissions `mode`), then builds the stack. A stale socket left by
    /// a killed daemon is replaced; a live one is an error.
    pub fn new<S: AsRef<str>>(
        path: &Path,
        mode: u32,
        vnls: &[S],
        conf: &NetConf,
    ) -> Result<Server, NsError> {
        let io = |what: &str, e| NsError::io(format!("{}: {what}", path.display()), e);
        if let Ok(m) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt;
            if !m.file_type().is_socket() {
                return Err(NsError::Conf(format!(
                    "{}: exists and is not a socket",
                    path.display()
                )));
            }
            let live = seqpacket()
                .and_then(|s| s.connect(&unix_addr(path)?))
                .is_ok();
            if live {
                return Err(NsError::Conf(format!(
                    "{}: a stack is already served there",
                    path.display()
                )));
            }
            std::fs::remove_file(path).map_err(|e| io("cannot remove the stale socket", e))?;
        }
        let listener = seqpacket().map_err(|e| io("socket", e))?;
        listener
            .bind(&unix_addr(path).map_err(|e| io("bad path", e))?)
            .map_err(|e| io("cannot bind", e))?;
        let remove = |e: NsError| {
            let _ = std::fs::remove_file(path);
            e
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| remove(io("chmod", e)))?;
        listener.listen(64).map_err(|e| remove(io("listen", e)))?;
        let cleanup = Cleanup::of(path.to_path_buf()).map_err(|e| remove(io("stat", e)))?;
        let stack = KernelStack::build(vnls, conf, Some(cleanup)).map_err(remove)?;
        Ok(Server {
            stack,
            listener,
            path: path.to_path_buf(),
        })
    }

    pub fn stack(&self) -> &KernelStack {
        &self.stack
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves requests until `stop` is raised.
    pub fn run(&self, stop: &AtomicBool) -> io::Result<()> {
        let lfd = self.listener.as_raw_fd();
        while !stop.load(Ordering::Relaxed) {
            match sys::poll_read(&[lfd], Some(Duration::from_millis(250))) {
                Ok(r) if r[0] => {}
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let conn = match self.listener.accept() {
                Ok((c, _)) => c,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    continue;
                }
            };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            if let Err(e) = self.answer(conn.as_raw_fd()) {
                tracing::debug!("named stack client: {e}");
            }
        }
        Ok(())
    }

    fn answer(&self, fd: i32) -> io::Result<()> {
        let mut buf = [0u8; 64];
        let (n, _) = sys::recv_with_fds(fd, &mut buf, true)?;
        match (n, buf[0]) {
            (13, b'S') => {
                let int =
                    |i: usize| i32::from_ne_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
                match self.stack.socket(int(1), int(5), int(9)) {
                    Ok(s) => sys::send_with_fds(fd, &0i32.to_ne_bytes(), &[s.as_raw_fd()]),
                    Err(e) => sys::send_with_fds(
                        fd,
                        &e.raw_os_error().unwrap_or(libc::EIO).to_ne_bytes(),
                        &[],
                    ),
                }?;
            }
            (1, b'N') => {
                let mut fds = vec![self.stack.netns().as_raw_fd()];
                fds.extend(self.stack.userns().map(|u| u.as_raw_fd()));
                sys::send_with_fds(fd, &0i32.to_ne_bytes(), &fds)?;
            }
            _ => {
                sys::send_with_fds(fd, &libc::EINVAL.to_ne_bytes(), &[])?;
            }
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The stack path to use: `path`, else `$FILO_STACK`.
pub fn resolve(path: Option<&Path>) -> Option<PathBuf> {
    path.map(Path::to_path_buf).or_else(|| {
        std::env::var_os(DEFAULT_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
}

/// Sends one request to the stack at `path`; returns the answer's errno and descriptors.
fn ask(path: &Path, req: &[u8], cloexec: bool) -> io::Result<Vec<OwnedFd>> {
    let s = seqpacket()?;
    s.connect(&unix_addr(path)?)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    sys::send_with_fds(s.as_raw_fd(), req, &[])?;
    let mut buf = [0u8; 8];
    let (n, fds) = sys::recv_with_fds(s.as_raw_fd(), &mut buf, cloexec)?;
    if n < 4 {
        return Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            format!("{}: the stack daemon closed the connection", path.display()),
        ));
    }
    match i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) {
        0 => Ok(fds),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// `msocket(path, domain, type, protocol)`: a socket created in the named stack at `path`
/// (or `$FILO_STACK` when None; a plain `socket()` when neither is set). Errors are those of
/// socket(2) and connect(2): ENOENT (no such stack), EACCES (no permission),
/// ECONNREFUSED (the daemon is gone).
pub fn msocket(path: Option<&Path>, domain: i32, ty: i32, protocol: i32) -> io::Result<OwnedFd> {
    let Some(path) = resolve(path) else {
        return sys::socket(domain, ty, protocol);
    };
    let mut req = vec![b'S'];
    for v in [domain, ty, protocol] {
        req.extend_from_slice(&v.to_ne_bytes());
    }
    ask(&path, &req, ty & libc::SOCK_CLOEXEC != 0)?
        .pop()
        .ok_or_else(|| io::Error::other("the stack daemon sent no socket"))
}

/// The namespaces of the stack at `path`: (network, user if any).
pub fn namespaces(path: &Path) -> io::Result<(OwnedFd, Option<OwnedFd>)> {
    let mut fds = ask(path, b"N", true)?.into_iter();
    let net = fds
        .next()
        .ok_or_else(|| io::Error::other("the stack daemon sent no namespace"))?;
    Ok((net, fds.next()))
}

/// Moves the calling thread into the stack's network namespace (entering its user namespace
/// first when the stack has one and the caller is not root; that needs a single-threaded
/// process). Sets `FILO_STACK` for children. Used by `filo mstack` before exec.
pub fn enter(path: &Path) -> io::Result<()> {
    let (net, user) = namespaces(path)?;
    if let Some(u) = user {
        if sys::ids().0 != 0 {
            sys::setns(u.as_raw_fd(), libc::CLONE_NEWUSER)?;
        }
    }
    sys::setns(net.as_raw_fd(), libc::CLONE_NEWNET).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot enter the stack's network namespace: {e} (joining a namespace needs \
                 CAP_SYS_ADMIN over it: run as root or as the user who serves the stack; \
                 other users can still get sockets through msocket)"
            ),
        )
    })
}
