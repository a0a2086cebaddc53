//! The crate's only `unsafe`: a socketpair for in-process cables.

use std::io;

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
