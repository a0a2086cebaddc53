//! Every `unsafe` system call of filo-ns, each wrapped in a small safe function.

use std::ffi::{CStr, CString};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Effective uid and gid of the process.
pub fn ids() -> (u32, u32) {
    // SAFETY: geteuid/getegid take no arguments and cannot fail.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: unshare takes only flags.
    cvt(unsafe { libc::unshare(flags) }).map(drop)
}

pub fn setns(fd: RawFd, nstype: libc::c_int) -> io::Result<()> {
    // SAFETY: setns takes a descriptor and a flag; a bad descriptor is an error, not UB.
    cvt(unsafe { libc::setns(fd, nstype) }).map(drop)
}

/// Descriptor passing (SCM_RIGHTS) is shared with the other crates in filo-vnl.
pub use filo_vnl::sys::send_with_fds;

/// Receives one message and the descriptors attached to it (at most 64; close-on-exec unless
/// `cloexec` is false). Returns 0 bytes at EOF.
pub fn recv_with_fds(
    sock: RawFd,
    buf: &mut [u8],
    cloexec: bool,
) -> io::Result<(usize, Vec<OwnedFd>)> {
    filo_vnl::sys::recv_with_fds(sock, buf, 64, cloexec)
}

/// socket(2).
pub fn socket(domain: i32, ty: i32, protocol: i32) -> io::Result<OwnedFd> {
    // SAFETY: socket takes integers only.
    let fd = cvt(unsafe { libc::socket(domain, ty, protocol) })?;
    // SAFETY: fd was just created and is owned only here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens a file read-only, close-on-exec.
pub fn open_read(path: &str) -> io::Result<OwnedFd> {
    let c = CString::new(path).map_err(io::Error::other)?;
    // SAFETY: c is a valid NUL-terminated path.
    let fd = cvt(unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) })?;
    // SAFETY: fd was just opened and is owned only here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// fork(2). In the child, only simple code should run before `exec` or `_exit`.
pub enum Forked {
    Parent(libc::pid_t),
    Child,
}

pub fn fork() -> io::Result<Forked> {
    // SAFETY: the callers' children only make system calls and allocate (glibc's malloc is
    // fork-safe), then exec or _exit; they never take locks another thread may hold.
    let pid = cvt(unsafe { libc::fork() })?;
    Ok(if pid == 0 {
        Forked::Child
    } else {
        Forked::Parent(pid)
    })
}

/// Ends the process without running destructors or atexit handlers (for forked children).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no Rust state.
    unsafe { libc::_exit(code) }
}

/// Writes a message to stderr with one write(2) (safe in a forked child).
pub fn write_stderr(msg: &str) {
    // SAFETY: msg is a valid buffer for its length.
    unsafe {
        libc::write(2, msg.as_ptr() as *const libc::c_void, msg.len());
    }
}

/// Asks for `sig` when the parent (the forking thread) dies.
pub fn die_with_parent(sig: libc::c_int) {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes integers.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0);
    }
}

/// Parent pid.
pub fn getppid() -> libc::pid_t {
    // SAFETY: no arguments.
    unsafe { libc::getppid() }
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    /// The shell's convention: the code, or 128 + the signal.
    pub fn code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

/// waitpid(pid, 0 or WNOHANG). None when `nohang` and the child still runs.
pub fn waitpid(pid: libc::pid_t, nohang: bool) -> io::Result<Option<Exit>> {
    let mut status = 0;
    loop {
        // SAFETY: status is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, if nohang { libc::WNOHANG } else { 0 }) };
        if r == 0 {
            return Ok(None);
        }
        if r > 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(Some(if libc::WIFSIGNALED(status) {
        Exit::Signal(libc::WTERMSIG(status))
    } else {
        Exit::Code(libc::WEXITSTATUS(status))
    }))
}

/// waitpid(-1, WNOHANG): a child that ended, with its pid; None when none has (or there are
/// no children left).
pub fn wait_any() -> io::Result<Option<(libc::pid_t, Exit)>> {
    let mut status = 0;
    loop {
        // SAFETY: status is a valid out-pointer.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if r == 0 {
            return Ok(None);
        }
        if r > 0 {
            let exit = if libc::WIFSIGNALED(status) {
                Exit::Signal(libc::WTERMSIG(status))
            } else {
                Exit::Code(libc::WEXITSTATUS(status))
            };
            return Ok(Some((r, exit)));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::ECHILD) => return Ok(None),
            _ => return Err(e),
        }
    }
}

pub fn kill(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: kill takes integers.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Sets the signal mask of the calling thread: blocks (`block` true) or unblocks `sigs`.
pub fn mask_signals(sigs: &[libc::c_int], block: bool) -> io::Result<()> {
    // SAFETY: set is initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in sigs {
            libc::sigaddset(&mut set, s);
        }
        let how = if block {
            libc::SIG_BLOCK
        } else {
            libc::SIG_UNBLOCK
        };
        let r = libc::pthread_sigmask(how, &set, std::ptr::null_mut());
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
    }
    Ok(())
}

/// Restores the default disposition of `sigs` (for a child about to exec).
pub fn default_signals(sigs: &[libc::c_int]) {
    for &s in sigs {
        // SAFETY: SIG_DFL takes no pointers.
        unsafe {
            libc::signal(s, libc::SIG_DFL);
        }
    }
}

/// A signalfd for `sigs` (which the caller must have blocked).
pub fn signalfd(sigs: &[libc::c_int]) -> io::Result<OwnedFd> {
    // SAFETY: set is initialised by sigemptyset before use; signalfd reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in sigs {
            libc::sigaddset(&mut set, s);
        }
        let fd = cvt(libc::signalfd(-1, &set, libc::SFD_CLOEXEC))?;
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Reads one signal number from a signalfd (blocking).
pub fn read_signal(fd: RawFd) -> io::Result<i32> {
    // SAFETY: signalfd_siginfo is plain old data; read fills at most its size.
    unsafe {
        let mut info: libc::signalfd_siginfo = std::mem::zeroed();
        let n = libc::read(
            fd,
            &mut info as *mut _ as *mut libc::c_void,
            std::mem::size_of::<libc::signalfd_siginfo>(),
        );
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(info.ssi_signo as i32)
    }
}

/// sethostname(2) in the current UTS namespace.
pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: name is a valid buffer for its length.
    cvt(unsafe { libc::sethostname(name.as_ptr() as *const libc::c_char, name.len()) }).map(drop)
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

/// mount(2) with optional source/fstype.
pub fn mount(
    src: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
) -> io::Result<()> {
    let src = src.map(cstr).transpose()?;
    let target = cstr(target)?;
    let fstype = fstype.map(cstr).transpose()?;
    // SAFETY: all pointers are NUL-terminated strings or null, alive for the call.
    cvt(unsafe {
        libc::mount(
            src.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            target.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            std::ptr::null(),
        )
    })
    .map(drop)
}

/// execvp(argv[0], argv). Returns only on failure.
pub fn execvp(argv: &[CString]) -> io::Error {
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: ptrs is a NULL-terminated array of valid C strings that outlive the call.
    unsafe {
        libc::execvp(ptrs[0], ptrs.as_ptr());
    }
    io::Error::last_os_error()
}

/// The MAC address of an interface in the current network namespace.
pub fn hw_addr(name: &str) -> io::Result<[u8; 6]> {
    let s = socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)?;
    // SAFETY: ifreq is plain old data; zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, b) in req
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *d = b as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR reads and writes one ifreq that lives for the call.
    cvt(unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) })?;
    // SAFETY: the kernel filled the hwaddr member of the union.
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (m, b) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *m = *b as u8;
    }
    Ok(mac)
}

/// A UDP socket for a DHCP client: bound to 0.0.0.0:68 on `ifname`, broadcast allowed,
/// with a receive timeout.
pub fn dhcp_socket(ifname: &str, timeout: Duration) -> io::Result<std::net::UdpSocket> {
    let s = socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)?;
    let one: libc::c_int = 1;
    let set = |level, opt, val: *const libc::c_void, len: usize| {
        // SAFETY: val points at `len` readable bytes for the call.
        cvt(unsafe { libc::setsockopt(s.as_raw_fd(), level, opt, val, len as libc::socklen_t) })
    };
    set(
        libc::SOL_SOCKET,
        libc::SO_BROADCAST,
        &one as *const _ as *const libc::c_void,
        4,
    )?;
    set(
        libc::SOL_SOCKET,
        libc::SO_REUSEADDR,
        &one as *const _ as *const libc::c_void,
        4,
    )?;
    set(
        libc::SOL_SOCKET,
        libc::SO_BINDTODEVICE,
        ifname.as_ptr() as *const libc::c_void,
        ifname.len(),
    )?;
    let s = socket2::Socket::from(s);
    s.bind(&std::net::SocketAddr::from((Ipv4Addr::UNSPECIFIED, 68)).into())?;
    let udp = std::net::UdpSocket::from(s);
    udp.set_read_timeout(Some(timeout))?;
    Ok(udp)
}

/// strerror text for an errno value, for messages.
pub fn errno_text(errno: i32) -> String {
    // SAFETY: strerror returns a pointer to a static or thread-local NUL-terminated string.
    unsafe { CStr::from_ptr(libc::strerror(errno)) }
        .to_string_lossy()
        .into_owned()
}

/// poll(2) on descriptors for readability; returns which are readable (or hung up).
pub fn poll_read(fds: &[RawFd], timeout: Option<Duration>) -> io::Result<Vec<bool>> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let t = timeout.map_or(-1, |d| d.as_millis().min(i32::MAX as u128) as i32);
    // SAFETY: p is a valid array of p.len() pollfds.
    let r = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, t) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(p.iter().map(|x| x.revents != 0).collect())
}

/// Closes every descriptor above 2 except `keep` (in a forked child).
pub fn close_other_fds(keep: RawFd) {
    // SAFETY: close_range takes integers; the caller is a forked, single-threaded child that
    // uses no descriptor but `keep`.
    unsafe {
        if keep > 3 {
            libc::syscall(libc::SYS_close_range, 3u32, (keep - 1) as u32, 0u32);
        }
        libc::syscall(libc::SYS_close_range, (keep + 1) as u32, u32::MAX, 0u32);
    }
}

/// shutdown(fd, SHUT_RDWR): the peer sees EOF.
pub fn shutdown(fd: RawFd) {
    // SAFETY: shutdown takes integers.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}
