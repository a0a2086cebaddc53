//! [`KernelStack`]: a private network namespace as a library (libioth's vdestack). A forked
//! helper lives in the namespace and creates sockets there on request; they come back over
//! SCM_RIGHTS and stay bound to that namespace wherever they are used.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::conf::NetConf;
use crate::dhcp::Lease;
use crate::setup::{self, Spaces};
use crate::{open_vnls, plug_mtus, start_cables, sys, NsError};

const OK: u8 = b'K';
const FAIL: u8 = b'E';

/// A kernel network stack in a private namespace, carried to VNLs by taps.
pub struct KernelStack {
    ctl: Mutex<OwnedFd>,
    pid: libc::pid_t,
    netns: OwnedFd,
    userns: Option<OwnedFd>,
    ifaces: Vec<String>,
    lease: Option<Lease>,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for KernelStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelStack")
            .field("helper", &self.pid)
            .field("interfaces", &self.ifaces)
            .finish()
    }
}

/// A file the helper removes when its owner dies (a named stack's socket), if it is still
/// the same file.
#[derive(Debug, Clone)]
pub(crate) struct Cleanup {
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
}

impl Cleanup {
    pub(crate) fn of(path: PathBuf) -> io::Result<Cleanup> {
        let m = std::fs::symlink_metadata(&path)?;
        Ok(Cleanup {
            path,
            dev: m.dev(),
            ino: m.ino(),
        })
    }

    fn remove(&self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if m.dev() == self.dev && m.ino() == self.ino {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

fn helper(
    ctl: OwnedFd,
    ifaces: &[String],
    plug_mtus: &[Option<u32>],
    conf: &NetConf,
    cleanup: Option<Cleanup>,
) -> ! {
    sys::close_other_fds(ctl.as_raw_fd());
    let fd = ctl.as_raw_fd();
    let fail = |msg: String| -> ! {
        let mut m = vec![FAIL];
        m.extend_from_slice(msg.as_bytes());
        let _ = sys::send_with_fds(fd, &m, &[]);
        sys::exit_now(1)
    };
    // Decided before unsharing: inside its user namespace the helper is root.
    let unprivileged = sys::ids().0 != 0;
    let spaces = Spaces {
        uts: conf.hostname.is_some() || conf.fqdn.is_some(),
        mount: false,
    };
    let taps = match setup::enter_namespaces(spaces)
        .and_then(|()| setup::configure(ifaces, plug_mtus, conf, false))
    {
        Ok(t) => t,
        Err(e) => fail(e),
    };
    let netns = match sys::open_read("/proc/self/ns/net") {
        Ok(f) => f,
        Err(e) => fail(format!("cannot open /proc/self/ns/net: {e}")),
    };
    let userns = if unprivileged {
        match sys::open_read("/proc/self/ns/user") {
            Ok(f) => Some(f),
            Err(e) => fail(format!("cannot open /proc/self/ns/user: {e}")),
        }
    } else {
        None
    };
    let mut raw: Vec<_> = taps.iter().map(|t| t.as_raw_fd()).collect();
    raw.push(netns.as_raw_fd());
    raw.extend(userns.as_ref().map(|u| u.as_raw_fd()));
    if sys::send_with_fds(fd, &[OK], &raw).is_err() {
        sys::exit_now(1);
    }
    drop((taps, netns, userns));
    let mut buf = [0u8; 64];
    match sys::recv_with_fds(fd, &mut buf, true) {
        Ok((1, _)) => {}
        _ => sys::exit_now(1),
    }
    let mut reply = vec![OK];
    if conf.dhcp {
        match setup::run_dhcp(ifaces, conf, false, setup::AUTOCONF_TIMEOUT) {
            Ok(l) => reply.extend_from_slice(
                format!(
                    "{} {} {} {}",
                    l.addr,
                    l.prefix,
                    l.router.map_or("-".into(), |r| r.to_string()),
                    l.server
                )
                .as_bytes(),
            ),
            Err(e) => fail(e),
        }
    }
    if conf.slaac {
        if let Some(first) = ifaces.first() {
            if let Err(e) = setup::wait_for_slaac(first, setup::AUTOCONF_TIMEOUT) {
                fail(e)
            }
        }
    }
    if sys::send_with_fds(fd, &reply, &[]).is_err() {
        sys::exit_now(1);
    }
    // The socket factory: [domain, type, protocol] in, [errno] (+ the socket) out.
    loop {
        match sys::recv_with_fds(fd, &mut buf, true) {
            Ok((12, _)) => {
                let int =
                    |i: usize| i32::from_ne_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
                let r = sys::socket(int(0), int(4), int(8));
                let _ = match &r {
                    Ok(s) => sys::send_with_fds(fd, &0i32.to_ne_bytes(), &[s.as_raw_fd()]),
                    Err(e) => sys::send_with_fds(
                        fd,
                        &e.raw_os_error().unwrap_or(libc::EIO).to_ne_bytes(),
                        &[],
                    ),
                };
            }
            Ok((0, _)) | Err(_) => break,
            Ok(_) => {
                let _ = sys::send_with_fds(fd, &libc::EINVAL.to_ne_bytes(), &[]);
            }
        }
    }
    if let Some(c) = cleanup {
        c.remove();
    }
    sys::exit_now(0)
}

fn parse_lease(text: &str) -> Option<Lease> {
    let mut it = text.split(' ');
    let addr = it.next()?.parse().ok()?;
    let prefix = it.next()?.parse().ok()?;
    let router = it.next()?.parse().ok();
    let server = it.next()?.parse().ok()?;
    Some(Lease {
        addr,
        prefix,
        router,
        dns: Vec::new(),
        server,
        lease_secs: 0,
    })
}

impl KernelStack {
    /// A new stack with one interface per VNL (`vde0`, `vde1`, …), configured by `conf`
    /// (addresses, gateways, DHCP, hostname; DNS is not applied: a stack has no files).
    pub fn new<S: AsRef<str>>(vnls: &[S], conf: &NetConf) -> Result<KernelStack, NsError> {
        Self::build(vnls, conf, None)
    }

    pub(crate) fn build<S: AsRef<str>>(
        vnls: &[S],
        conf: &NetConf,
        cleanup: Option<Cleanup>,
    ) -> Result<KernelStack, NsError> {
        conf.validate()?;
        let vnls: Vec<String> = vnls.iter().map(|v| v.as_ref().to_string()).collect();
        let plugs = open_vnls(&vnls)?;
        let mtus = plug_mtus(&plugs);
        let ifaces = setup::iface_names(vnls.len());
        let (mine, theirs) =
            filo_vnl::sys::seqpacket_pair(false).map_err(|e| NsError::io("socketpair", e))?;
        let pid = match sys::fork().map_err(|e| NsError::io("fork", e))? {
            sys::Forked::Child => {
                drop(mine);
                helper(theirs, &ifaces, &mtus, conf, cleanup)
            }
            sys::Forked::Parent(pid) => pid,
        };
        drop(theirs);
        let reap = |e: NsError| {
            sys::kill(pid, libc::SIGKILL);
            let _ = sys::waitpid(pid, false);
            e
        };
        let mut buf = vec![0u8; 4096];
        let (n, mut fds) = sys::recv_with_fds(mine.as_raw_fd(), &mut buf, true)
            .map_err(|e| reap(NsError::io("stack set-up", e)))?;
        let failed = |n: usize, buf: &[u8]| {
            NsError::Namespace(if n > 1 {
                String::from_utf8_lossy(&buf[1..n]).into_owned()
            } else {
                "the stack helper died during set-up".into()
            })
        };
        if n == 0 || buf[0] != OK {
            return Err(reap(failed(n, &buf)));
        }
        let want = ifaces.len() + 1 + usize::from(sys::ids().0 != 0);
        if fds.len() != want {
            return Err(reap(NsError::Namespace(format!(
                "expected {want} descriptors from the stack helper, got {}",
                fds.len()
            ))));
        }
        let userns = (sys::ids().0 != 0).then(|| fds.remove(fds.len() - 1));
        let netns = fds.remove(fds.len() - 1);
        let stop = Arc::new(AtomicBool::new(false));
        start_cables(&ifaces, fds, plugs, stop.clone()).map_err(reap)?;
        sys::send_with_fds(mine.as_raw_fd(), &[OK], &[])
            .map_err(|e| reap(NsError::io("stack helper", e)))?;
        let (n, _) = sys::recv_with_fds(mine.as_raw_fd(), &mut buf, true)
            .map_err(|e| reap(NsError::io("stack helper", e)))?;
        if n == 0 || buf[0] != OK {
            stop.store(true, Ordering::Relaxed);
            return Err(reap(failed(n, &buf)));
        }
        let lease = parse_lease(&String::from_utf8_lossy(&buf[1..n]));
        Ok(KernelStack {
            ctl: Mutex::new(mine),
            pid,
            netns,
            userns,
            ifaces,
            lease,
            stop,
        })
    }

    /// A socket created in the stack's namespace: socket(2) there.
    pub fn socket(&self, domain: i32, ty: i32, protocol: i32) -> io::Result<OwnedFd> {
        let ctl = self
            .ctl
            .lock()
            .map_err(|_| io::Error::other("stack lock poisoned"))?;
        let mut req = [0u8; 12];
        req[0..4].copy_from_slice(&domain.to_ne_bytes());
        req[4..8].copy_from_slice(&ty.to_ne_bytes());
        req[8..12].copy_from_slice(&protocol.to_ne_bytes());
        sys::send_with_fds(ctl.as_raw_fd(), &req, &[])?;
        let mut buf = [0u8; 8];
        let cloexec = ty & libc::SOCK_CLOEXEC != 0;
        let (n, mut fds) = sys::recv_with_fds(ctl.as_raw_fd(), &mut buf, cloexec)?;
        if n < 4 {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the stack helper is gone",
            ));
        }
        let errno = i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
        match (errno, fds.pop()) {
            (0, Some(fd)) => Ok(fd),
            (0, None) => Err(io::Error::other("the stack helper sent no socket")),
            (e, _) => Err(io::Error::from_raw_os_error(e)),
        }
    }

    fn socket_for(&self, addr: &SocketAddr, ty: i32) -> io::Result<socket2::Socket> {
        let domain = if addr.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        Ok(socket2::Socket::from(self.socket(
            domain,
            ty | libc::SOCK_CLOEXEC,
            0,
        )?))
    }

    fn first_addr(addr: impl ToSocketAddrs) -> io::Result<SocketAddr> {
        addr.to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))
    }

    /// A listening TCP socket in the stack (SO_REUSEADDR, backlog 128).
    pub fn tcp_listen(&self, addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
        let addr = Self::first_addr(addr)?;
        let s = self.socket_for(&addr, libc::SOCK_STREAM)?;
        s.set_reuse_address(true)?;
        s.bind(&addr.into())?;
        s.listen(128)?;
        Ok(s.into())
    }

    /// A TCP connection from the stack.
    pub fn tcp_connect(&self, addr: impl ToSocketAddrs) -> io::Result<TcpStream> {
        let addr = Self::first_addr(addr)?;
        let s = self.socket_for(&addr, libc::SOCK_STREAM)?;
        s.connect(&addr.into())?;
        Ok(s.into())
    }

    /// A UDP socket in the stack, bound to `addr`.
    pub fn udp_bind(&self, addr: impl ToSocketAddrs) -> io::Result<UdpSocket> {
        let addr = Self::first_addr(addr)?;
        let s = self.socket_for(&addr, libc::SOCK_DGRAM)?;
        s.bind(&addr.into())?;
        Ok(s.into())
    }

    /// The namespace (`/proc/PID/ns/net` of the helper), for setns(2).
    pub fn netns(&self) -> BorrowedFd<'_> {
        self.netns.as_fd()
    }

    /// The user namespace owning the network namespace, when the stack was made by a
    /// non-root user.
    pub fn userns(&self) -> Option<BorrowedFd<'_>> {
        self.userns.as_ref().map(|u| u.as_fd())
    }

    /// Interface names, one per VNL.
    pub fn interfaces(&self) -> &[String] {
        &self.ifaces
    }

    /// The DHCP lease, when configured by DHCP.
    pub fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }

    /// The helper process's pid.
    pub fn helper_pid(&self) -> u32 {
        self.pid as u32
    }
}

impl Drop for KernelStack {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Shutting the control socket down ends the helper (it sees EOF).
        if let Ok(ctl) = self.ctl.get_mut() {
            sys::shutdown(ctl.as_raw_fd());
        }
        let _ = sys::waitpid(self.pid, false);
    }
}
