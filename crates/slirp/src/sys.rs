//! The system calls filo-slirp needs beyond std and socket2.

use std::io;

/// Blocks every signal in the calling thread: the gateway's thread never takes a signal meant
/// for the process (`filo ns` waits for SIGCHLD on a signalfd, which only works while no
/// thread leaves it unblocked).
pub fn block_all_signals() -> io::Result<()> {
    // SAFETY: `set` is initialised by sigfillset before pthread_sigmask reads it; the old mask
    // pointer may be null.
    let r = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut())
    };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// Asks the kernel to report every ICMP error about a UDP socket's datagrams
/// (`IP_RECVERR`, or `IPV6_RECVERR` for an IPv6 socket), not only the hard ones: a router's
/// host or network unreachable and time exceeded then fail the next receive too.
pub fn set_recv_err(fd: std::os::fd::BorrowedFd<'_>, ipv6: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (level, name) = if ipv6 {
        (libc::IPPROTO_IPV6, libc::IPV6_RECVERR)
    } else {
        (libc::IPPROTO_IP, libc::IP_RECVERR)
    };
    let on: libc::c_int = 1;
    // SAFETY: `fd` is a live descriptor borrowed for the call; the option value points to a
    // c_int that outlives the call, and its size is passed with it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
