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
