//! Named stacks: a [`KernelStack`] served on a UNIX SOCK_SEQPACKET socket at a path.
//!
//! Protocol, one request per connection: `S` + domain, type, protocol (native-endian i32s)
//! answers an errno (i32, 0 = success) with the new socket attached (SCM_RIGHTS); `N`
//! answers 0 with the namespace descriptors attached (network, then user when the stack
//! has one). Connecting needs write permission on the socket file, so the file's owner,
//! group and mode are the access control: a client without rights gets EACCES from
//! `connect` itself.
//!
//! The daemon never grants a caller more than the caller could have ([`Caller`], judged by
//! SO_PEERCRED of the request's connection): root, the user serving the stack and
//! processes holding CAP_NET_RAW get any socket; everyone else gets what an unprivileged
//! user may open (TCP, UDP and ping sockets of IPv4 and IPv6) and EPERM for the rest (raw,
//! packet, netlink... sockets made by the daemon would carry its privileges). The
//! namespace descriptors (`N`) go only to root, the serving user and holders of
//! CAP_SYS_ADMIN: joining the namespace needs CAP_SYS_ADMIN over it anyway, and others
//! would only pin it; they get EPERM.
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
    /// The effective uid serving the stack: its own user may have anything.
    owner: u32,
}

const CAP_NET_RAW: u32 = 13;
const CAP_SYS_ADMIN: u32 = 21;

/// Who sent a request, as the kernel recorded it when the client connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub pid: i32,
    pub uid: u32,
}

impl Caller {
    /// Whether the caller is root, the serving user, or holds capability `cap`.
    fn privileged(self, owner: u32, cap: u32) -> bool {
        self.uid == 0 || self.uid == owner || self.has_cap(cap)
    }

    /// Whether the calling process holds capability `cap` in its effective set
    /// (`/proc/PID/status` CapEff). Counted only when the process still belongs to the
    /// connecting uid and is dumpable (`/proc/PID` owned by that uid): a process that
    /// gained capabilities by exec'ing a set-uid or file-capability program after
    /// connecting is not dumpable, so it cannot lend them to the program that connected.
    fn has_cap(self, cap: u32) -> bool {
        use std::os::unix::fs::MetadataExt;
        if self.pid <= 0 {
            return false;
        }
        let dir = PathBuf::from(format!("/proc/{}", self.pid));
        match std::fs::metadata(&dir) {
            Ok(m) if m.uid() == self.uid => {}
            _ => return false,
        }
        let Ok(status) = std::fs::read_to_string(dir.join("status")) else {
            return false;
        };
        cap_eff_has(&status, self.uid, cap)
    }
}

/// Whether a `/proc/PID/status` text shows effective uid `uid` and capability `cap` in CapEff.
fn cap_eff_has(status: &str, uid: u32, cap: u32) -> bool {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    // Uid: real, effective, saved, filesystem.
    let euid = field("Uid:").and_then(|u| u.split_whitespace().nth(1)?.parse::<u32>().ok());
    let caps = field("CapEff:").and_then(|c| u64::from_str_radix(c, 16).ok());
    euid == Some(uid) && caps.is_some_and(|c| c & (1u64 << cap) != 0)
}

/// Whether an unprivileged user may open this socket on its own: TCP and UDP over IPv4 and
/// IPv6, and ping sockets (ICMP / ICMPv6 datagrams). The type may carry SOCK_NONBLOCK and
/// SOCK_CLOEXEC.
pub fn unprivileged_may_open(domain: i32, ty: i32, protocol: i32) -> bool {
    let kind = ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
    let ping = match domain {
        libc::AF_INET => libc::IPPROTO_ICMP,
        libc::AF_INET6 => libc::IPPROTO_ICMPV6,
        _ => return false,
    };
    match kind {
        libc::SOCK_STREAM => matches!(protocol, 0 | libc::IPPROTO_TCP),
        libc::SOCK_DGRAM => protocol == 0 || protocol == libc::IPPROTO_UDP || protocol == ping,
        _ => false,
    }
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
            owner: sys::ids().0,
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
        let (pid, uid) = filo_vnl::sys::peer_cred(fd)?;
        let caller = Caller { pid, uid };
        let mut buf = [0u8; 64];
        let (n, _) = sys::recv_with_fds(fd, &mut buf, true)?;
        let refuse = || sys::send_with_fds(fd, &libc::EPERM.to_ne_bytes(), &[]);
        match (n, buf[0]) {
            (13, b'S') => {
                let int =
                    |i: usize| i32::from_ne_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
                let (domain, ty, protocol) = (int(1), int(5), int(9));
                if !unprivileged_may_open(domain, ty, protocol)
                    && !caller.privileged(self.owner, CAP_NET_RAW)
                {
                    tracing::debug!(
                        "refused socket({domain}, {ty}, {protocol}) to uid {uid} (pid {pid})"
                    );
                    refuse()?;
                    return Ok(());
                }
                match self.stack.socket(domain, ty, protocol) {
                    Ok(s) => sys::send_with_fds(fd, &0i32.to_ne_bytes(), &[s.as_raw_fd()]),
                    Err(e) => sys::send_with_fds(
                        fd,
                        &e.raw_os_error().unwrap_or(libc::EIO).to_ne_bytes(),
                        &[],
                    ),
                }?;
            }
            (1, b'N') if !caller.privileged(self.owner, CAP_SYS_ADMIN) => {
                refuse()?;
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
    let no_entry = |e: io::Error| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot enter the stack's network namespace: {e} (joining a namespace needs \
                 CAP_SYS_ADMIN over it: run as root or as the user who serves the stack; \
                 other users can still get sockets through msocket)"
            ),
        )
    };
    let (net, user) = namespaces(path).map_err(|e| match e.raw_os_error() {
        Some(libc::EPERM) => no_entry(e),
        _ => e,
    })?;
    if let Some(u) = user {
        if sys::ids().0 != 0 {
            sys::setns(u.as_raw_fd(), libc::CLONE_NEWUSER)?;
        }
    }
    sys::setns(net.as_raw_fd(), libc::CLONE_NEWNET).map_err(no_entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unprivileged_users_get_tcp_udp_and_ping_sockets_only() {
        use libc::*;
        let flags = SOCK_NONBLOCK | SOCK_CLOEXEC;
        assert!(unprivileged_may_open(AF_INET, SOCK_STREAM, 0));
        assert!(unprivileged_may_open(
            AF_INET6,
            SOCK_STREAM | flags,
            IPPROTO_TCP
        ));
        assert!(unprivileged_may_open(AF_INET, SOCK_DGRAM, IPPROTO_UDP));
        assert!(unprivileged_may_open(AF_INET, SOCK_DGRAM, IPPROTO_ICMP));
        assert!(unprivileged_may_open(
            AF_INET6,
            SOCK_DGRAM | flags,
            IPPROTO_ICMPV6
        ));
        assert!(!unprivileged_may_open(AF_INET6, SOCK_DGRAM, IPPROTO_ICMP));
        assert!(!unprivileged_may_open(AF_INET, SOCK_RAW, IPPROTO_ICMP));
        assert!(!unprivileged_may_open(AF_INET, SOCK_STREAM, IPPROTO_UDP));
        assert!(!unprivileged_may_open(AF_PACKET, SOCK_RAW, 0x300));
        assert!(!unprivileged_may_open(AF_PACKET, SOCK_DGRAM, 0));
        assert!(!unprivileged_may_open(AF_NETLINK, SOCK_RAW, 0));
        assert!(!unprivileged_may_open(AF_NETLINK, SOCK_DGRAM, 0));
        assert!(!unprivileged_may_open(AF_UNIX, SOCK_STREAM, 0));
    }

    #[test]
    fn capabilities_count_for_the_connecting_uid_only() {
        let status = "Name:\tx\nUid:\t1000\t1000\t1000\t1000\nCapEff:\t0000000000002000\n";
        assert!(cap_eff_has(status, 1000, CAP_NET_RAW));
        assert!(!cap_eff_has(status, 1001, CAP_NET_RAW));
        assert!(!cap_eff_has(status, 1000, CAP_SYS_ADMIN));
        assert!(!cap_eff_has(
            "Uid:\t1000\t1000\t1000\t1000\n",
            1000,
            CAP_NET_RAW
        ));
        // This test process under another uid is nobody's: its capabilities do not count.
        let stranger = Caller {
            pid: std::process::id() as i32,
            uid: sys::ids().0 ^ 1,
        };
        assert!(!stranger.has_cap(CAP_NET_RAW));
        assert!(!stranger.privileged(u32::MAX, CAP_NET_RAW) || stranger.uid == 0);
    }
}
