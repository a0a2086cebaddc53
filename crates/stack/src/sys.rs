//! The crate's only `unsafe`: a socketpair for in-process cables.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// A connected pair of non-blocking SOCK_SEQPACKET sockets.
pub(crate) fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds points to two writable c_ints, as socketpair requires.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair succeeded, so both descriptors are new and owned only by us.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Raises this process's open-file limit to its hard limit (thousands of stacks need
/// thousands of plug descriptors); returns the new soft limit.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: r is a valid rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // Privileged processes may also raise the hard limit (up to fs.nr_open).
    let want = libc::rlimit {
        rlim_cur: r.rlim_max.max(1 << 20),
        rlim_max: r.rlim_max.max(1 << 20),
    };
    // SAFETY: want is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
        return Ok(want.rlim_cur);
    }
    r.rlim_cur = r.rlim_max;
    // SAFETY: r is a valid rlimit read above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r.rlim_cur)
}
