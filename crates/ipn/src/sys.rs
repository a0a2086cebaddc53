//! Every `unsafe` operation of filo-ipn: the shared mapping ([`Region`]), memfd, eventfd,
//! descriptor passing (SCM_RIGHTS), and the locks that tell a live member from a dead one.
//!
//! The shared region is written by other processes, any of which may be hostile or dying, so
//! this module never hands out a Rust reference to plain bytes of it. Callers get values:
//! atomics loaded or stored through properly aligned pointers, and byte copies into or out of
//! private buffers. Every accessor checks its offset against the mapping's length and returns
//! 0 (or does nothing) when it is out of range, so no value read from the region, however
//! wrong, can make an access leave the mapping.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A `MAP_SHARED` mapping of a bus's memfd. The memory stays mapped as long as the value
/// lives; the memfd is sealed against shrinking, so no member can make an access fault.
pub struct Region {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the region is only accessed through atomics and explicit copies (never through
// references to plain data), which is sound from any thread.
unsafe impl Send for Region {}
// SAFETY: as above: every accessor is a single atomic operation or a byte copy.
unsafe impl Sync for Region {}

impl Region {
    /// Maps `len` bytes of `fd` (which must be at least that long).
    pub fn map(fd: BorrowedFd<'_>, len: usize) -> io::Result<Region> {
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "empty bus region",
            ));
        }
        // SAFETY: mmap with a null hint creates a new mapping; it does not touch existing
        // memory. The result is checked against MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Region {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Private anonymous memory with the same interface (unit tests of the ring logic).
    pub fn anonymous(len: usize) -> io::Result<Region> {
        // SAFETY: a new private anonymous mapping; checked against MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len.max(1),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Region {
            ptr: ptr.cast(),
            len: len.max(1),
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A pointer to `size` bytes at `off` aligned to `size`, or None when out of range.
    fn at(&self, off: usize, size: usize) -> Option<*mut u8> {
        let end = off.checked_add(size)?;
        if end > self.len || !off.is_multiple_of(size) {
            return None;
        }
        // SAFETY: off + size <= len, so the result stays inside the mapping.
        Some(unsafe { self.ptr.add(off) })
    }

    fn u32_at(&self, off: usize) -> Option<&AtomicU32> {
        let p = self.at(off, 4)?;
        // SAFETY: p is inside the mapping (which outlives &self) and 4-aligned (the mapping
        // is page-aligned and off % 4 == 0). AtomicU32 has interior mutability, so other
        // processes writing the word concurrently is allowed; only atomic operations follow.
        Some(unsafe { AtomicU32::from_ptr(p.cast()) })
    }

    fn u64_at(&self, off: usize) -> Option<&AtomicU64> {
        let p = self.at(off, 8)?;
        // SAFETY: as u32_at, with 8-byte alignment.
        Some(unsafe { AtomicU64::from_ptr(p.cast()) })
    }

    pub fn load32(&self, off: usize, order: Ordering) -> u32 {
        self.u32_at(off).map_or(0, |a| a.load(order))
    }

    pub fn store32(&self, off: usize, value: u32, order: Ordering) {
        if let Some(a) = self.u32_at(off) {
            a.store(value, order);
        }
    }

    /// Compare-and-swap; false when the word held something else (or `off` is out of range).
    pub fn cas32(&self, off: usize, old: u32, new: u32) -> bool {
        self.u32_at(off).is_some_and(|a| {
            a.compare_exchange(old, new, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        })
    }

    pub fn add32(&self, off: usize, value: u32) {
        if let Some(a) = self.u32_at(off) {
            a.fetch_add(value, Ordering::Relaxed);
        }
    }

    pub fn load64(&self, off: usize, order: Ordering) -> u64 {
        self.u64_at(off).map_or(0, |a| a.load(order))
    }

    pub fn store64(&self, off: usize, value: u64, order: Ordering) {
        if let Some(a) = self.u64_at(off) {
            a.store(value, order);
        }
    }

    /// Compare-and-swap; the value found on failure (`Err(0)` when `off` is out of range).
    pub fn cas64(&self, off: usize, old: u64, new: u64) -> Result<u64, u64> {
        match self.u64_at(off) {
            Some(a) => a.compare_exchange(old, new, Ordering::SeqCst, Ordering::SeqCst),
            None => Err(0),
        }
    }

    /// Adds to a counter other processes only read (statistics).
    pub fn add64(&self, off: usize, value: u64) {
        if let Some(a) = self.u64_at(off) {
            a.store(
                a.load(Ordering::Relaxed).wrapping_add(value),
                Ordering::Relaxed,
            );
        }
    }

    /// Asks the CPU to fetch the cache line at `off` for writing (x86-64 `prefetchw`; a no-op
    /// elsewhere or out of range): a sender touches the slots of a whole batch first, so their
    /// transfers from the readers' caches overlap instead of stalling one slot at a time.
    pub fn prefetch_write(&self, off: usize) {
        #[cfg(target_arch = "x86_64")]
        if let Some(p) = self.at(off, 1) {
            // SAFETY: a prefetch is a hint: it reads and writes nothing and never faults; p is
            // inside the mapping anyway.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_ET0 }>(
                    p.cast_const().cast(),
                )
            };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = off;
    }

    /// Asks the CPU to fetch the cache line at `off` for reading (a no-op elsewhere than
    /// x86-64 or out of range): a reader looks a few slots ahead.
    pub fn prefetch_read(&self, off: usize) {
        #[cfg(target_arch = "x86_64")]
        if let Some(p) = self.at(off, 1) {
            // SAFETY: a prefetch is a hint: it reads and writes nothing and never faults.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    p.cast_const().cast(),
                )
            };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = off;
    }

    /// Copies `dst.len()` bytes at `off` into a private buffer; false (nothing copied) when
    /// the range leaves the mapping. The bytes may be changing while they are copied: callers
    /// validate the copy afterwards (a sequence number read before and after).
    pub fn read(&self, off: usize, dst: &mut [u8]) -> bool {
        let Some(p) = self.at(off, 1) else {
            return false;
        };
        if off.checked_add(dst.len()).is_none_or(|end| end > self.len) {
            return false;
        }
        // SAFETY: [off, off + len) is inside the mapping; dst is a private buffer, which no
        // other process can reach, so the two ranges do not overlap. The source is copied
        // as raw bytes, never referenced.
        unsafe { std::ptr::copy_nonoverlapping(p.cast_const(), dst.as_mut_ptr(), dst.len()) };
        true
    }

    /// Copies `src` into the mapping at `off`; false when the range leaves the mapping.
    pub fn write(&self, off: usize, src: &[u8]) -> bool {
        let Some(p) = self.at(off, 1) else {
            return false;
        };
        if off.checked_add(src.len()).is_none_or(|end| end > self.len) {
            return false;
        }
        // SAFETY: [off, off + len) is inside the mapping; src is private memory, so the ranges
        // do not overlap. No reference to the destination is created.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), p, src.len()) };
        true
    }
    /// `read(2)` from `fd` straight into the mapping at `[off, off + cap)`: one frame from a
    /// tap lands in the ring slot it will occupy, without a private buffer in between. Returns
    /// the byte count `read` reported (a tap reports a frame's whole length even when it was
    /// cut to `cap`: callers refuse counts above `cap`). `InvalidInput` when the range leaves
    /// the mapping.
    pub fn read_from_fd(&self, fd: BorrowedFd<'_>, off: usize, cap: usize) -> io::Result<usize> {
        let p = self.range(off, cap)?;
        // SAFETY: [off, off + cap) is inside the mapping (checked by range), so the kernel
        // writes only there; no Rust reference to the destination exists, and other processes
        // writing the same bytes concurrently can only change what the frame holds.
        let n = unsafe { libc::read(fd.as_raw_fd(), p.cast(), cap) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// `write(2)` of `[off, off + len)` of the mapping to `fd`: a frame goes from its ring
    /// slot to a tap without a private copy. The kernel copies the bytes once; if another
    /// process changes them meanwhile, the frame written is garbage for the tap to judge,
    /// never an access outside the mapping. `InvalidInput` when the range leaves the mapping.
    pub fn write_to_fd(&self, fd: BorrowedFd<'_>, off: usize, len: usize) -> io::Result<usize> {
        let p = self.range(off, len)?;
        // SAFETY: [off, off + len) is inside the mapping (checked by range); the kernel only
        // reads it, and no Rust reference to it is created.
        let n = unsafe { libc::write(fd.as_raw_fd(), p.cast_const().cast(), len) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// A pointer to `[off, off + len)` when that range lies inside the mapping.
    fn range(&self, off: usize, len: usize) -> io::Result<*mut u8> {
        let outside = || io::Error::new(io::ErrorKind::InvalidInput, "range outside the bus");
        if off.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(outside());
        }
        self.at(off, 1).ok_or_else(outside)
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: ptr/len are the mapping created in map/anonymous, unmapped only here.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// A sealed memfd of `len` zero bytes: nobody can shrink or grow it once created, so a
/// mapping of it never faults.
pub fn sealed_memfd(name: &str, len: usize) -> io::Result<OwnedFd> {
    let cname = CString::new(name).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: cname is a valid C string; the returned descriptor is new and ours.
    let fd = cvt(unsafe {
        libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
    })?;
    // SAFETY: fd is freshly created and owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = libc::off_t::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: ftruncate/fcntl on our own descriptor, no pointers.
    unsafe {
        cvt(libc::ftruncate(fd.as_raw_fd(), len))?;
        cvt(libc::fcntl(
            fd.as_raw_fd(),
            libc::F_ADD_SEALS,
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL,
        ))?;
    }
    Ok(fd)
}

/// The size of a memfd received from another process, and whether it is sealed against
/// shrinking (without that seal a member could truncate it and make others fault).
pub fn memfd_size_sealed(fd: BorrowedFd<'_>) -> io::Result<(usize, bool)> {
    // SAFETY: fcntl F_GET_SEALS takes no pointers.
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    // SAFETY: an all-zero stat is a valid value; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is a valid, writable stat buffer.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    let size = usize::try_from(st.st_size).unwrap_or(0);
    Ok((size, seals >= 0 && seals & libc::F_SEAL_SHRINK != 0))
}

/// A non-blocking eventfd.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers; the descriptor is new and ours.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    // SAFETY: fd is freshly created.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds 1 to an eventfd (wakes its reader). Errors are ignored: a full counter already wakes.
pub fn eventfd_signal(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live local u64.
    unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

/// Reads (resets) an eventfd's counter without blocking.
pub fn eventfd_drain(fd: RawFd) {
    let mut value: u64 = 0;
    // SAFETY: reads at most 8 bytes into a live local u64.
    unsafe { libc::read(fd, (&mut value as *mut u64).cast(), 8) };
}

/// A new open file description of the same file as `fd` (through /proc/self/fd): locks
/// taken on it with [`lock_byte`] belong to this description alone.
pub fn reopen(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let path = format!("/proc/self/fd/{}\0", fd.as_raw_fd());
    // SAFETY: path is NUL-terminated; the descriptor returned is new and ours.
    let new = cvt(unsafe { libc::open(path.as_ptr().cast(), libc::O_RDWR | libc::O_CLOEXEC) })?;
    // SAFETY: freshly opened.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

fn ofd_lock(fd: RawFd, byte: u64, cmd: libc::c_int, kind: libc::c_int) -> io::Result<libc::flock> {
    // SAFETY: an all-zero flock is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = libc::off_t::try_from(byte).map_err(|_| io::ErrorKind::InvalidInput)?;
    fl.l_len = 1;
    fl.l_pid = 0;
    // SAFETY: fl is a valid, writable flock for the OFD lock commands.
    cvt(unsafe { libc::fcntl(fd, cmd, &mut fl) })?;
    Ok(fl)
}

/// Takes an exclusive open-file-description lock on one byte without waiting; false when
/// another description holds it. The kernel drops it when the description is closed —
/// in particular when the process dies, however it dies.
pub fn lock_byte(fd: BorrowedFd<'_>, byte: u64) -> io::Result<bool> {
    match ofd_lock(fd.as_raw_fd(), byte, libc::F_OFD_SETLK, libc::F_WRLCK) {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether another open file description holds a lock on `byte`.
pub fn byte_locked(fd: BorrowedFd<'_>, byte: u64) -> io::Result<bool> {
    let fl = ofd_lock(fd.as_raw_fd(), byte, libc::F_OFD_GETLK, libc::F_WRLCK)?;
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

/// `flock(LOCK_EX | LOCK_NB)`: true when taken.
pub fn try_flock(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: flock takes no pointers.
    match cvt(unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Most descriptors one message carries: the memfd and one eventfd per member.
pub const MAX_FDS: usize = 1 + crate::layout::MAX_MEMBERS;

/// Sends `data` with `fds` attached (SCM_RIGHTS) on a connected UNIX socket.
pub fn send_fds(sock: BorrowedFd<'_>, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    filo_vnl::sys::send_with_fds(sock.as_raw_fd(), data, fds).map(drop)
}

/// Receives one message with descriptors; returns the data length and the descriptors (now
/// owned by us). Blocks as the socket does; more than [`MAX_FDS`] descriptors is an error.
pub fn recv_fds(sock: BorrowedFd<'_>, data: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    filo_vnl::sys::recv_with_fds(sock.as_raw_fd(), data, MAX_FDS, true)
}

/// Sets a socket's receive timeout (the join handshake must not hang on a stuck owner).
pub fn set_recv_timeout(sock: BorrowedFd<'_>, timeout: std::time::Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: tv is a live timeval of the size given.
    cvt(unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// This process's id.
pub fn pid() -> u32 {
    std::process::id()
}

/// Changes a path's mode (chmod).
pub fn chmod(path: &Path, mode: u32) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: c is a valid C string.
    cvt(unsafe { libc::chmod(c.as_ptr(), mode as libc::mode_t) })?;
    Ok(())
}

/// Blocks every signal in the calling thread: a helper thread that filo-ipn starts inside a
/// host program (QEMU, vdens, any libvdeplug client) must never be the thread a
/// process-directed signal such as SIGCHLD is delivered to, or the host (which blocks it in
/// its own threads and reads it from a signalfd) would never see it.
pub fn block_all_signals() {
    // SAFETY: an all-zero sigset_t is a valid value for sigfillset to fill.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a valid sigset_t; pthread_sigmask changes this thread's mask only.
    unsafe {
        libc::sigfillset(&mut set);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}
