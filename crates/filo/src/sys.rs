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
    detach()
}

/// The daemon's side of [`daemonize_until_ready`]: report readiness (a line the waiting
/// parent prints) or a failure (printed, and the parent exits 1).
pub struct Readiness(Option<std::fs::File>);

impl Readiness {
    /// Start-up worked: the parent prints `line` and exits 0.
    pub fn ready(mut self, line: &str) {
        use std::io::Write;
        if let Some(mut f) = self.0.take() {
            let _ = f.write_all(format!("K{line}").as_bytes());
        }
    }

    /// Start-up failed: the parent prints `msg` and exits 1.
    pub fn failed(mut self, msg: &str) {
        use std::io::Write;
        if let Some(mut f) = self.0.take() {
            let _ = f.write_all(format!("E{msg}").as_bytes());
        }
    }
}

/// Forks into the background and keeps the foreground process waiting until the daemon says
/// it is ready (or failed, or died), so `filo … -d && next-step` only goes on once the
/// daemon serves, and start-up errors still reach the terminal. Call before any thread is
/// started. Returns in the daemon only.
pub fn daemonize_until_ready(what: &str) -> io::Result<Readiness> {
    use std::io::Read;
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two new descriptors into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    let (r, w) = unsafe {
        use std::os::fd::FromRawFd;
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    // SAFETY: the process is single-threaded here (documented precondition), so fork is safe.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid > 0 {
        drop(w);
        let mut msg = Vec::new();
        let _ = (&r).take(64 * 1024).read_to_end(&mut msg);
        let text = String::from_utf8_lossy(msg.get(1..).unwrap_or_default()).into_owned();
        let code = match msg.first() {
            Some(b'K') => {
                eprintln!("{text}");
                0
            }
            Some(_) => {
                eprintln!("filo: {text}");
                1
            }
            None => {
                eprintln!("filo: {what} died while starting");
                1
            }
        };
        // SAFETY: _exit ends the waiting parent without running destructors of state the
        // daemon now owns.
        unsafe { libc::_exit(code) };
    }
    drop(r);
    // Detached at once, before anything (the stack's helper process) can inherit the caller's
    // stdio and keep a pipe such as `$(filo ... -d)` open: what we have to say goes via `w`.
    detach()?;
    Ok(Readiness(Some(w)))
}

/// Descriptors above stderr that were open when filo started: inherited from the caller.
static INHERITED: std::sync::OnceLock<Vec<libc::c_int>> = std::sync::OnceLock::new();

/// Notes the descriptors filo inherited (call first thing in `main`, before anything is
/// opened), so a daemon can close them: a pipe a caller left open (a CI runner's, `$(...)`
/// in a script) would otherwise stay open as long as the daemon lives.
pub fn note_inherited_fds() {
    let mut fds: Vec<libc::c_int> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .filter(|&fd| fd > 2)
                .collect()
        })
        .unwrap_or_default();
    // The listing's own directory descriptor is closed by now.
    // SAFETY: F_GETFD only reads the descriptor's flags; a closed one fails with EBADF.
    fds.retain(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0);
    let _ = INHERITED.set(fds);
}

/// Descriptor numbers the command line names (`seqpacket://FD`, nested ones too): a daemon
/// keeps those.
fn named_fds(args: impl Iterator<Item = String>) -> Vec<libc::c_int> {
    let mut fds = Vec::new();
    for arg in args {
        for (at, _) in arg.match_indices("seqpacket://") {
            let digits: String = arg[at + "seqpacket://".len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(fd) = digits.parse() {
                fds.push(fd);
            }
        }
    }
    fds
}

/// Closes the inherited descriptors a daemon has no use for.
fn close_inherited() {
    // args_os: an argument that is not UTF-8 (a path) must not panic the daemon here.
    let keep = named_fds(std::env::args_os().map(|a| a.to_string_lossy().into_owned()));
    for &fd in INHERITED.get().map(Vec::as_slice).unwrap_or_default() {
        if !keep.contains(&fd) {
            // SAFETY: `fd` was open when filo started and is not one filo uses: nothing in
            // this process owns it.
            unsafe {
                libc::close(fd);
            }
        }
    }
}

/// The daemon's side of a fork: a session of its own, stdio on /dev/null, inherited
/// descriptors closed (but those the command line names).
fn detach() -> io::Result<()> {
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
    close_inherited();
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

/// Sends `sig` to process `pid` (a negative pid: to a process group).
pub fn kill(pid: i32, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill takes no pointers.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The effective user id.
pub fn euid() -> u32 {
    // SAFETY: geteuid takes no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_daemon_keeps_the_descriptors_its_command_line_names() {
        let args = [
            "filo",
            "plug",
            "-d",
            "seqpacket://5",
            "vlan://3{seqpacket://12}",
            "vde:///tmp/seqpacket://7x",
            "seqpacket://",
        ];
        assert_eq!(
            super::named_fds(args.iter().map(|s| s.to_string())),
            [5, 12, 7]
        );
    }
}
