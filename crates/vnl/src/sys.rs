//! The only place in `filo-vnl` that calls the C library directly (public so the switch
//! daemon shares the batched I/O): batched datagram I/O,
//! `poll`, tap devices, eventfd and epoll. Every `unsafe` block says why it is sound.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// Puts a descriptor in non-blocking mode.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller owns; F_GETFL/F_SETFL take no pointers.
    unsafe {
        let flags = cvt(libc::fcntl(fd, libc::F_GETFL))?;
        cvt(libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK))?;
    }
    Ok(())
}

/// A descriptor's file status flags (F_GETFL).
pub fn fd_flags(fd: BorrowedFd<'_>) -> io::Result<libc::c_int> {
    // SAFETY: fcntl on a live borrowed descriptor; F_GETFL takes no pointers.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })
}

/// Sets a descriptor's file status flags (F_SETFL), e.g. back to what [`fd_flags`] returned.
pub fn set_fd_flags(fd: BorrowedFd<'_>, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: fcntl on a live borrowed descriptor; F_SETFL takes an int, no pointers.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags) })?;
    Ok(())
}

/// Receives one datagram without blocking. Returns the datagram's full length, which may be
/// larger than `buf` when it was truncated (MSG_TRUNC), so callers can count oversize frames.
pub fn recv_dgram(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is a valid writable region of buf.len() bytes for the duration of the call.
    let n = unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_TRUNC,
        )
    };
    cvt_size(n)
}

/// Sends one datagram without blocking on a connected socket.
pub fn send_dgram(fd: RawFd, frame: &[u8]) -> io::Result<usize> {
    // SAFETY: frame is a valid readable region for the duration of the call.
    let n = unsafe {
        libc::send(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    cvt_size(n)
}

/// Sends one datagram to a UNIX socket path without blocking.
pub fn sendto_unix(fd: RawFd, frame: &[u8], path: &Path) -> io::Result<usize> {
    let (addr, len) = unix_sockaddr(path)?;
    // SAFETY: addr is a fully initialised sockaddr_un of `len` bytes; frame is readable.
    let n = unsafe {
        libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    };
    cvt_size(n)
}

/// Builds a `sockaddr_un` for a path, refusing paths that do not fit in 107 bytes.
pub fn unix_sockaddr(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "socket path {} is {} bytes long; at most {} fit in a UNIX socket address",
                path.display(),
                bytes.len(),
                addr.sun_path.len() - 1
            ),
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

/// Maximum datagrams moved by one `recvmmsg`/`sendmmsg`.
pub const BATCH_MAX: usize = 64;

/// Receives up to `bufs.len()` datagrams with one `recvmmsg`, without blocking. Fills `lens`
/// with each datagram's full length (possibly larger than its buffer: truncated). A batch of
/// one takes a plain `recv`, whose kernel path is shorter (no message headers).
pub fn recv_many(fd: RawFd, bufs: &mut [Vec<u8>], lens: &mut [usize]) -> io::Result<usize> {
    use std::mem::MaybeUninit;
    let count = bufs.len().min(lens.len()).min(BATCH_MAX);
    if count == 0 {
        return Ok(0);
    }
    if count == 1 {
        lens[0] = recv_dgram(fd, &mut bufs[0])?;
        return Ok(1);
    }
    // Only the first `count` entries are initialised and passed to the kernel: zeroing whole
    // arrays per call showed up in profiles when batches are small.
    let mut iovs: [MaybeUninit<libc::iovec>; BATCH_MAX] =
        [const { MaybeUninit::uninit() }; BATCH_MAX];
    let mut msgs: [MaybeUninit<libc::mmsghdr>; BATCH_MAX] =
        [const { MaybeUninit::uninit() }; BATCH_MAX];
    for i in 0..count {
        iovs[i].write(libc::iovec {
            iov_base: bufs[i].as_mut_ptr().cast(),
            iov_len: bufs[i].len(),
        });
        // SAFETY: mmsghdr is plain old data; zero is a valid value.
        let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
        m.msg_hdr.msg_iov = iovs[i].as_mut_ptr();
        m.msg_hdr.msg_iovlen = 1;
        msgs[i].write(m);
    }
    // SAFETY: msgs[..count] are initialised and point at iovecs that point at live, writable
    // buffers; the kernel writes at most iov_len bytes into each. Non-blocking by MSG_DONTWAIT.
    let n = unsafe {
        libc::recvmmsg(
            fd,
            msgs.as_mut_ptr().cast(),
            count as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    let n = cvt(n)? as usize;
    for i in 0..n {
        // SAFETY: entry i < count was initialised above and filled in by the kernel.
        let m = unsafe { msgs[i].assume_init_ref() };
        lens[i] = if m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            bufs[i].len() + 1
        } else {
            m.msg_len as usize
        };
    }
    Ok(n)
}

/// Sends up to `frames.len()` datagrams on a connected socket with one `sendmmsg`, without
/// blocking. Returns how many were sent (at least one, or an error). A single frame takes a
/// plain `send`.
pub fn send_many(fd: RawFd, frames: &[&[u8]]) -> io::Result<usize> {
    if let [frame] = frames {
        return send_dgram(fd, frame).map(|_| 1);
    }
    let mut msgs: [[&[u8]; 1]; BATCH_MAX] = [[&[]]; BATCH_MAX];
    let count = frames.len().min(BATCH_MAX);
    for (m, f) in msgs.iter_mut().zip(frames) {
        *m = [f];
    }
    send_many_gathered(fd, &msgs[..count])
}

/// Like [`send_many`], each datagram gathered from `K` pieces (e.g. a virtio-net header and
/// the frame behind it), so nothing is copied to join them.
pub fn send_many_gathered<const K: usize>(fd: RawFd, msgs: &[[&[u8]; K]]) -> io::Result<usize> {
    use std::mem::MaybeUninit;
    let count = msgs.len().min(BATCH_MAX);
    if count == 0 {
        return Ok(0);
    }
    let mut iovs: [[MaybeUninit<libc::iovec>; K]; BATCH_MAX] =
        [const { [const { MaybeUninit::uninit() }; K] }; BATCH_MAX];
    let mut hdrs: [MaybeUninit<libc::mmsghdr>; BATCH_MAX] =
        [const { MaybeUninit::uninit() }; BATCH_MAX];
    for i in 0..count {
        for (k, piece) in msgs[i].iter().enumerate() {
            iovs[i][k].write(libc::iovec {
                iov_base: piece.as_ptr() as *mut libc::c_void,
                iov_len: piece.len(),
            });
        }
        // SAFETY: mmsghdr is plain old data; zero is a valid value.
        let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
        m.msg_hdr.msg_iov = iovs[i].as_mut_ptr().cast();
        m.msg_hdr.msg_iovlen = K as _;
        hdrs[i].write(m);
    }
    // SAFETY: hdrs[..count] are initialised; each points at K initialised iovecs, which point
    // at live buffers the kernel only reads.
    let n = unsafe {
        libc::sendmmsg(
            fd,
            hdrs.as_mut_ptr().cast(),
            count as libc::c_uint,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    Ok(cvt(n)? as usize)
}

/// Sends one datagram gathered from `pieces` on a connected socket, without blocking.
pub fn send_vectored(fd: RawFd, pieces: &[std::io::IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: msghdr is plain old data; zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is guaranteed ABI-compatible with iovec on Unix; the kernel only reads them.
    msg.msg_iov = pieces.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = pieces.len() as _;
    // SAFETY: msg points at `pieces`, live for the call, each describing a readable buffer.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    cvt_size(n)
}

/// Receives one datagram without blocking, scattered over `pieces` in order. Returns the
/// datagram's full length, larger than the pieces together when it was truncated.
pub fn recv_scattered(fd: RawFd, pieces: &mut [std::io::IoSliceMut<'_>]) -> io::Result<usize> {
    // SAFETY: msghdr is plain old data; zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSliceMut is guaranteed ABI-compatible with iovec on Unix.
    msg.msg_iov = pieces.as_mut_ptr().cast();
    msg.msg_iovlen = pieces.len() as _;
    // SAFETY: msg points at `pieces`, live and exclusively borrowed for the call, each a
    // writable buffer of its length; the kernel writes no more than that.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT | libc::MSG_TRUNC) };
    cvt_size(n)
}

/// Reads without blocking from a stream descriptor (pipe, socket, tty).
pub fn read_nonblocking(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for writes of buf.len() bytes.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    cvt_size(n)
}

/// Writes to a stream descriptor (the descriptor decides whether this blocks).
pub fn write_fd(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for reads of buf.len() bytes.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    cvt_size(n)
}

/// Readiness requested of or reported by [`poll`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    pub readable: bool,
    pub writable: bool,
    /// Hang-up or error: the other side is gone.
    pub hangup: bool,
}

/// One descriptor to wait on.
#[derive(Clone, Copy, Debug)]
pub struct PollEntry {
    pub fd: RawFd,
    pub want_read: bool,
    pub want_write: bool,
    pub ready: Ready,
}

impl PollEntry {
    pub fn new(fd: RawFd, want_read: bool, want_write: bool) -> Self {
        PollEntry {
            fd,
            want_read,
            want_write,
            ready: Ready::default(),
        }
    }
}

/// Waits until one of the entries is ready or the timeout passes (None: forever).
/// Returns the number of ready entries; EINTR counts as zero ready.
pub fn poll(entries: &mut [PollEntry], timeout: Option<Duration>) -> io::Result<usize> {
    let mut fds: Vec<libc::pollfd> = entries
        .iter()
        .map(|e| libc::pollfd {
            fd: e.fd,
            events: (if e.want_read { libc::POLLIN } else { 0 })
                | (if e.want_write { libc::POLLOUT } else { 0 }),
            revents: 0,
        })
        .collect();
    let ms = match timeout {
        None => -1,
        Some(d) => d.as_millis().min(i32::MAX as u128) as libc::c_int,
    };
    // SAFETY: fds is a live array of fds.len() pollfd structures.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if n < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(err);
    }
    for (entry, pfd) in entries.iter_mut().zip(&fds) {
        entry.ready = Ready {
            readable: pfd.revents & libc::POLLIN != 0,
            writable: pfd.revents & libc::POLLOUT != 0,
            hangup: pfd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0,
        };
    }
    Ok(n as usize)
}

/// An eventfd that never fires: the data descriptor of `null://`.
pub fn silent_eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers; the returned descriptor is new and owned by us.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    // SAFETY: fd is a freshly created descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Seconds on CLOCK_MONOTONIC: the same clock in every process of the machine (benchmarks
/// compare first and last frames seen by different processes).
pub fn monotonic_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a live timespec that clock_gettime fills; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// A one-shot monotonic timer as a descriptor: readable once it has expired. Loops that
/// sleep in `epoll_wait` wait on it instead of passing a timeout, which would arm and cancel a
/// kernel timer on every sleep.
pub struct Timer {
    fd: OwnedFd,
}

impl Timer {
    pub fn new() -> io::Result<Timer> {
        // SAFETY: timerfd_create takes no pointers; the descriptor is new and owned by us.
        let fd = cvt(unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_CLOEXEC | libc::TFD_NONBLOCK,
            )
        })?;
        Ok(Timer {
            // SAFETY: fd is a freshly created descriptor nobody else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Expires once after `after` (at least a nanosecond, so zero still fires).
    pub fn arm(&self, after: Duration) -> io::Result<()> {
        let after = after.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs().min(i32::MAX as u64) as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: spec is a valid itimerspec for the call; the old value is not asked for.
        cvt(unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) })
            .map(drop)
    }

    /// Consumes an expiry so the descriptor stops being readable.
    pub fn clear(&self) {
        let mut count = [0u8; 8];
        let _ = read_nonblocking(self.fd.as_raw_fd(), &mut count);
    }
}

impl AsRawFd for Timer {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// An epoll instance watching `fds` for input: a single descriptor that becomes readable when
/// any of them is (used by transports with several sockets, e.g. vxvde).
pub fn epoll_of(fds: &[RawFd]) -> io::Result<OwnedFd> {
    // SAFETY: epoll_create1 takes no pointers; the descriptor is new.
    let ep = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    // SAFETY: ep was just created and is owned only here.
    let ep = unsafe { OwnedFd::from_raw_fd(ep) };
    for &fd in fds {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: fd as u64,
        };
        // SAFETY: ev is a valid epoll_event for the duration of the call.
        cvt(unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) })?;
    }
    Ok(ep)
}

/// Opens (creating if needed) the kernel tap interface `name` in non-blocking mode, without
/// packet information headers, as vde_plug's tap:// does.
pub fn open_tap(name: &str) -> io::Result<OwnedFd> {
    open_tap_with(name, false)
}

/// Like [`open_tap`]; with `vnet`, every frame carries a 12-byte virtio-net header and the
/// kernel may hand over (and accept) TCP super-frames of up to 64 KiB with checksums pending.
/// Runs `f` on a thread of its own that has entered the network namespace at `path`
/// (`setns`), so what `f` creates (a tap interface) is made there; the calling thread's
/// namespace does not change.
pub fn in_netns<T: Send>(path: &Path, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    let ns = std::fs::File::open(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("network namespace {}: {e}", path.display()),
        )
    })?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                // SAFETY: setns takes a descriptor we own (open for the call) and a flag; it
                // changes only this thread's network namespace, and this thread ends with `f`.
                cvt(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) }).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot enter network namespace {}: {e}", path.display()),
                    )
                })?;
                f()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")))
    })
}

pub fn open_tap_with(name: &str, vnet: bool) -> io::Result<OwnedFd> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', ' ', '\0']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "tap interface name {name:?} is invalid: expected 1 to {} characters without '/', spaces or NUL",
                libc::IFNAMSIZ - 1
            ),
        ));
    }
    let dev = CString::new("/dev/net/tun").map_err(io::Error::other)?;
    // SAFETY: dev is a valid NUL-terminated path.
    let fd = cvt(unsafe {
        libc::open(
            dev.as_ptr(),
            libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK,
        )
    })
    .map_err(|e| io::Error::new(e.kind(), format!("cannot open /dev/net/tun: {e}")))?;
    // SAFETY: fd was just opened and is owned only here.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    let vnet_flag = if vnet { libc::IFF_VNET_HDR } else { 0 };
    req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | vnet_flag) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which lives for the call.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) }).map_err(|e| {
        let why = match e.raw_os_error() {
            Some(libc::EPERM | libc::EACCES) => format!(
                "needs CAP_NET_ADMIN, or a tap created with 'ip tuntap add {name} mode tap user <you>'"
            ),
            Some(libc::EINVAL) => format!("{name} exists and is not a tap (a tun device or another kind of interface)"),
            Some(libc::EBUSY) => format!("{name} is in use: another program has it open"),
            _ => return io::Error::new(e.kind(), format!("cannot attach tap interface {name}: {e}")),
        };
        io::Error::new(
            e.kind(),
            format!("cannot attach tap interface {name}: {e} ({why})"),
        )
    })?;
    if vnet {
        let size: libc::c_int = crate::wire::vnet::HEADER_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int, which lives for the call.
        cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETVNETHDRSZ, &size) })?;
        let offload = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;
        // SAFETY: TUNSETOFFLOAD takes the flags by value.
        cvt(unsafe {
            libc::ioctl(
                fd.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                offload as libc::c_ulong,
            )
        })?;
    }
    Ok(fd)
}

/// The two time-sharing scheduling policies a thread may move between without privileges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchedPolicy {
    /// `SCHED_OTHER`: a woken thread may preempt the one running.
    Normal,
    /// `SCHED_BATCH`: the same share of CPU, but a woken thread never preempts.
    Batch,
}

/// The calling thread's scheduling policy; `None` for any other than the two above (a
/// real-time or idle policy someone chose on purpose).
pub fn thread_sched_policy() -> io::Result<Option<SchedPolicy>> {
    // SAFETY: pid 0 names the calling thread; the call takes no pointers.
    let policy = unsafe { libc::sched_getscheduler(0) };
    match policy {
        p if p < 0 => Err(io::Error::last_os_error()),
        libc::SCHED_OTHER => Ok(Some(SchedPolicy::Normal)),
        libc::SCHED_BATCH => Ok(Some(SchedPolicy::Batch)),
        _ => Ok(None),
    }
}

/// Sets the calling thread's scheduling policy (on Linux a policy belongs to a thread, so the
/// rest of the process is untouched).
pub fn set_thread_sched_policy(policy: SchedPolicy) -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    let policy = match policy {
        SchedPolicy::Normal => libc::SCHED_OTHER,
        SchedPolicy::Batch => libc::SCHED_BATCH,
    };
    // SAFETY: `param` is a valid sched_param that outlives the call; pid 0 is this thread.
    if unsafe { libc::sched_setscheduler(0, policy, &param) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The effective user id of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid cannot fail and takes no arguments.
    unsafe { libc::geteuid() }
}

/// The login name of a user id, if the password database knows it.
pub fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: passwd is plain old data; zero is valid.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to a live, properly sized object; getpwuid_r writes only
    // into pwd and buf.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name points into buf and is NUL-terminated by getpwuid_r.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

/// The group id of a group name or number.
pub fn group_id(group: &str) -> Option<u32> {
    if let Ok(gid) = group.parse::<u32>() {
        return Some(gid);
    }
    let name = CString::new(group).ok()?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: plain old data; zero is valid.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer refers to a live object; getgrnam_r writes only into grp and buf.
    let rc = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            &mut grp,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    Some(grp.gr_gid)
}

/// Changes the group of a file (owner unchanged).
pub fn chown_group(path: &Path, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(path, None, Some(gid))
}

/// Sends SIGTERM to a child process.
pub fn terminate(pid: u32) {
    // SAFETY: kill takes no pointers; signalling our own child is harmless if it already exited
    // (it is a zombie until waited, so the pid cannot have been reused).
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
}

/// The index of a network interface by name.
pub fn interface_index(name: &str) -> io::Result<u32> {
    let cname = CString::new(name).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        )
    })?;
    // SAFETY: cname is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if idx == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no network interface named {name:?}"),
        ));
    }
    Ok(idx)
}

/// A connected pair of close-on-exec SOCK_SEQPACKET UNIX sockets (the in-process cable of
/// filo-stack, the namespace helper's channel), non-blocking if asked.
pub fn seqpacket_pair(nonblocking: bool) -> io::Result<(OwnedFd, OwnedFd)> {
    let (a, b) = socket2::Socket::pair(socket2::Domain::UNIX, socket2::Type::SEQPACKET, None)?;
    if nonblocking {
        a.set_nonblocking(true)?;
        b.set_nonblocking(true)?;
    }
    Ok((a.into(), b.into()))
}

/// An integer socket option.
fn getsockopt_int(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value and len are live and sized as getsockopt expects for an int option.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(value)
}

/// The SO_TYPE of a socket descriptor (SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET).
pub fn socket_type(fd: RawFd) -> io::Result<libc::c_int> {
    getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE)
}

/// The path MTU the kernel knows toward a connected IPv4 (or IPv6) socket's peer: the route's
/// or the outgoing interface's MTU (IP_MTU, IPV6_MTU).
pub fn path_mtu(fd: RawFd, v6: bool) -> io::Result<u32> {
    let mtu = if v6 {
        getsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_MTU)?
    } else {
        getsockopt_int(fd, libc::IPPROTO_IP, libc::IP_MTU)?
    };
    Ok(mtu.max(0) as u32)
}

/// Takes ownership of an inherited SOCK_SEQPACKET socket handed over by number
/// (`seqpacket://FD`). Refuses descriptors that are not open or not seqpacket sockets; the
/// caller is the one place that adopts that number, so the plug becomes its only owner.
pub fn adopt_seqpacket(fd: RawFd) -> Result<OwnedFd, String> {
    let ty = socket_type(fd).map_err(|e| format!("descriptor {fd} is not usable: {e}"))?;
    if ty != libc::SOCK_SEQPACKET {
        return Err(format!("descriptor {fd} is not a SOCK_SEQPACKET socket"));
    }
    // SAFETY: the descriptor is open (SO_TYPE answered) and a seqpacket socket; the user
    // handed it to this process's plug by number, which makes the plug its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The uid of the process at the other end of a connected UNIX stream socket (SO_PEERCRED).
pub fn peer_uid(fd: RawFd) -> io::Result<u32> {
    peer_cred(fd).map(|(_, uid)| uid)
}

/// The pid and uid of the process at the other end of a connected UNIX socket, as they were
/// when it connected (SO_PEERCRED).
pub fn peer_cred(fd: RawFd) -> io::Result<(i32, u32)> {
    // SAFETY: ucred is plain old data; zero is valid.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are live and sized as SO_PEERCRED expects.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    })?;
    Ok((cred.pid, cred.uid))
}

/// Writes one datagram-sized buffer to a descriptor (tap) without blocking.
pub fn write_nonblocking(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    write_fd(fd, buf)
}

/// A level-triggered epoll set.
pub struct Epoll {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
}

/// One readiness report from [`Epoll::wait`].
#[derive(Clone, Copy, Debug)]
pub struct EpollEvent {
    pub token: u64,
    pub readable: bool,
    pub writable: bool,
    pub hangup: bool,
}

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointers.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        Ok(Epoll {
            // SAFETY: fd is new and owned only here.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            events: Vec::with_capacity(256),
        })
    }

    fn ctl(
        &self,
        op: libc::c_int,
        fd: RawFd,
        token: u64,
        read: bool,
        write: bool,
    ) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (if read { libc::EPOLLIN as u32 } else { 0 })
                | (if write { libc::EPOLLOUT as u32 } else { 0 })
                | libc::EPOLLRDHUP as u32,
            u64: token,
        };
        // SAFETY: ev lives for the call; epoll_ctl copies it.
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) })?;
        Ok(())
    }

    pub fn add(&self, fd: RawFd, token: u64, read: bool, write: bool) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, read, write)
    }

    pub fn modify(&self, fd: RawFd, token: u64, read: bool, write: bool) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, read, write)
    }

    pub fn delete(&self, fd: RawFd) {
        // SAFETY: a null event pointer is allowed for EPOLL_CTL_DEL.
        unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            );
        }
    }

    /// Waits for events (EINTR returns no events) and appends them to `out`.
    pub fn wait(&mut self, out: &mut Vec<EpollEvent>, timeout: Option<Duration>) -> io::Result<()> {
        out.clear();
        let cap = self.events.capacity();
        let ms = match timeout {
            None => -1,
            Some(d) => d.as_millis().min(i32::MAX as u128) as libc::c_int,
        };
        // SAFETY: the buffer has room for `cap` events; the kernel writes at most that many
        // and we set the length to what it reports.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                self.events.as_mut_ptr(),
                cap as libc::c_int,
                ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        // SAFETY: the kernel initialised the first n entries.
        unsafe { self.events.set_len(n as usize) };
        for ev in &self.events {
            let bits = ev.events;
            out.push(EpollEvent {
                token: ev.u64,
                readable: bits & libc::EPOLLIN as u32 != 0,
                writable: bits & libc::EPOLLOUT as u32 != 0,
                hangup: bits & (libc::EPOLLHUP | libc::EPOLLERR | libc::EPOLLRDHUP) as u32 != 0,
            });
        }
        // SAFETY: epoll_event is plain old data; shrinking the length drops nothing.
        unsafe { self.events.set_len(0) };
        Ok(())
    }
}

/// Changes the owner and/or group of a file.
pub fn chown(path: &Path, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
    std::os::unix::fs::chown(path, uid, gid)
}

/// The uid of a login name, if the password database knows it.
pub fn user_id(name: &str) -> Option<u32> {
    let cname = CString::new(name).ok()?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: passwd is plain old data; zero is valid.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: cname is NUL-terminated; pwd, buf (with its true length) and result are valid
    // for writes during the call; only pw_uid is read, and only when found.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some(pwd.pw_uid)
}

/// The name of a group id, if the group database knows it.
pub fn group_name(gid: u32) -> Option<String> {
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: group is plain old data; zero is valid.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: grp, buf and result are valid for writes during the call; on success gr_name
    // points into buf, which outlives the copy below.
    let rc = unsafe {
        libc::getgrgid_r(
            gid,
            &mut grp,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() || grp.gr_name.is_null() {
        return None;
    }
    // SAFETY: gr_name is a NUL-terminated string inside buf.
    let name = unsafe { std::ffi::CStr::from_ptr(grp.gr_name) };
    Some(name.to_string_lossy().into_owned())
}

/// Sends one message with descriptors attached (SCM_RIGHTS) on a connected UNIX socket,
/// retrying on EINTR; no descriptors means a plain message.
pub fn send_with_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8).max(1)];
    // SAFETY: msghdr is plain old data; zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points at `space` zeroed bytes, enough for one header and the
        // descriptors; the CMSG macros stay inside it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr() as *const u8,
                libc::CMSG_DATA(cmsg),
                fd_bytes,
            );
        }
    }
    loop {
        // SAFETY: msg and everything it points to (iov, data, cbuf) live for the call.
        let r = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Receives one message and up to `max_fds` descriptors attached to it (now owned by the
/// caller; close-on-exec unless `cloexec` is false), retrying on EINTR. Returns 0 bytes at
/// EOF. A message that carried more descriptors than `max_fds` is an error (the kernel
/// closed the ones that did not fit).
pub fn recv_with_fds(
    sock: RawFd,
    buf: &mut [u8],
    max_fds: usize,
    cloexec: bool,
) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let fd_bytes = max_fds.max(1) * std::mem::size_of::<RawFd>();
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    // SAFETY: msghdr is plain old data; zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = space as _;
    let flags = if cloexec { libc::MSG_CMSG_CLOEXEC } else { 0 };
    let n = loop {
        // SAFETY: msg points at buffers (buf, cbuf) that live for the call.
        let r = unsafe { libc::recvmsg(sock, &mut msg, flags) };
        if r >= 0 {
            break r as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control; CMSG_FIRSTHDR/NXTHDR walk it within
    // msg_controllen, and each SCM_RIGHTS payload holds (cmsg_len - CMSG_LEN(0)) / 4
    // descriptors, new ones owned by this process, read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let payload = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let base = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..payload / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(base.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the peer sent more than {max_fds} descriptors in one message"),
        ));
    }
    Ok((n, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn gathered_pieces_arrive_as_one_datagram_each() {
        let (a, b) = UnixDatagram::pair().unwrap();
        let msgs: [[&[u8]; 2]; 2] = [[b"head", b"-one"], [b"", b"two"]];
        assert_eq!(send_many_gathered(a.as_raw_fd(), &msgs).unwrap(), 2);
        let mut buf = [0u8; 16];
        let n = b.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"head-one");
        let n = b.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"two");
        assert_eq!(send_many(a.as_raw_fd(), &[b"plain"]).unwrap(), 1);
        let n = b.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"plain");
        assert_eq!(send_many(a.as_raw_fd(), &[]).unwrap(), 0);
    }
}
