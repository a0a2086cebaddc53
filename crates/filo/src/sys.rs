//! Process-level system calls for the CLI: signal flags and daemonizing.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

/// Raised by SIGINT, SIGTERM and SIGHUP.
pub static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Installs handlers (without SA_RESTART, so blocking waits return EINTR and see STOP) and
/// ignores SIGPIPE so a closed pipe is an error, not a silent death.
pub fn install_signal_handlers() -> io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: sigaction is plain old data; zero is valid. The handler only stores to an
        // atomic, which is async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(sig, &action, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    // SAFETY: setting a signal to SIG_IGN takes no pointers.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    Ok(())
}

/// Restores the default action of SIGINT, SIGTERM and SIGHUP, for commands that do not
/// watch [`STOP`] (otherwise a signal would be swallowed and the command would not end).
pub fn default_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: setting a signal to SIG_DFL takes no pointers.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
}

/// Detaches from the terminal: fork (the parent exits 0), setsid, stdio to /dev/null.
/// Call before any thread is started.
pub fn daemonize() -> io::Result<()> {
    // SAFETY: the process is single-threaded here (documented precondition), so fork is safe;
    // the child continues with the same memory.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid > 0 {
        // SAFETY: _exit ends the parent without running destructors that would close the
        // plugs the child now owns.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: setsid takes no arguments; failure only means we already lead a session.
    unsafe {
        libc::setsid();
    }
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    use std::os::fd::AsRawFd;
    for fd in 0..3 {
        // SAFETY: dup2 onto the standard descriptors, which we own as a process.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Writes our pid to `path`, refusing to overwrite an existing file (as vde_plug does).
pub fn write_pidfile(path: &std::path::Path) -> io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    writeln!(f, "{}", std::process::id())
}
