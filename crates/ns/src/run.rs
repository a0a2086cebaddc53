//! `filo ns`: run a command in a new network (and UTS, mount, user) namespace wired to VNLs.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::conf::NetConf;
use crate::setup::{self, Spaces};
use crate::{open_vnls, plug_mtus, start_cables, sys, NsError};

/// What to run, where.
#[derive(Debug, Clone, Default)]
pub struct NsCommand {
    /// One tap per VNL: `vde0`, `vde1`, …
    pub vnls: Vec<String>,
    pub conf: NetConf,
    /// The command and its arguments; empty runs `$SHELL` (or /bin/sh).
    pub argv: Vec<String>,
    /// How long DHCP and SLAAC may take (default [`setup::AUTOCONF_TIMEOUT`]).
    pub autoconf_timeout: Option<std::time::Duration>,
}

const FORWARDED: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];
const OK: u8 = b'K';
const FAIL: u8 = b'E';

/// Child side: build the namespace, hand the taps over, wait for the cables, configure
/// DHCP, exec. Never returns.
fn child(
    ctl: OwnedFd,
    cmd: &NsCommand,
    plug_mtus: &[Option<u32>],
    argv: &[CString],
    spaces: Spaces,
) -> ! {
    let fail = |msg: String| -> ! {
        let mut m = vec![FAIL];
        m.extend_from_slice(msg.as_bytes());
        let _ = sys::send_with_fds(ctl.as_raw_fd(), &m, &[]);
        sys::exit_now(1)
    };
    let ifaces = setup::iface_names(cmd.vnls.len());
    let taps = match setup::enter_namespaces(spaces)
        .and_then(|()| setup::configure(&ifaces, plug_mtus, &cmd.conf, spaces.mount))
    {
        Ok(t) => t,
        Err(e) => fail(e),
    };
    let raw: Vec<_> = taps.iter().map(|t| t.as_raw_fd()).collect();
    if sys::send_with_fds(ctl.as_raw_fd(), &[OK], &raw).is_err() {
        sys::exit_now(1);
    }
    drop(taps);
    // Wait until the parent carries the taps (DHCP needs the cable).
    let mut b = [0u8; 1];
    match sys::recv_with_fds(ctl.as_raw_fd(), &mut b, true) {
        Ok((1, _)) => {}
        _ => sys::exit_now(1),
    }
    let timeout = cmd.autoconf_timeout.unwrap_or(setup::AUTOCONF_TIMEOUT);
    if cmd.conf.dhcp {
        if let Err(e) = setup::run_dhcp(&ifaces, &cmd.conf, spaces.mount, timeout) {
            sys::write_stderr(&format!("filo ns: {e}\n"));
            sys::exit_now(1);
        }
    }
    if cmd.conf.slaac {
        if let Some(first) = ifaces.first() {
            if let Err(e) = setup::wait_for_slaac(first, timeout) {
                sys::write_stderr(&format!("filo ns: {e}\n"));
                sys::exit_now(1);
            }
        }
    }
    drop(ctl);
    sys::exit_now(run_in_pid_namespace(argv))
}

/// Runs the command in a PID namespace of its own whose init (PID 1) is ours: init runs the
/// command as its child, reaps every orphan and, when the command ends, exits with its status,
/// and the kernel then kills whatever the command left in the namespace. Init dies with this
/// process (PR_SET_PDEATHSIG), which dies with `filo ns`, so a `kill -9` of `filo ns` takes the
/// whole namespace with it. Returns the code to exit with (the command's, 128 + N on signal N).
/// /proc stays the host's: `ps` inside shows every process, /proc/self is still right.
fn run_in_pid_namespace(argv: &[CString]) -> i32 {
    let fail = |what: &str, e: std::io::Error| -> i32 {
        sys::write_stderr(&format!("filo ns: {what}: {e}\n"));
        1
    };
    // Unshared last, after DHCP: the first child forked afterwards is the namespace's init.
    if let Err(e) = sys::unshare(libc::CLONE_NEWPID) {
        return fail("cannot create a PID namespace", e);
    }
    let mut watched = FORWARDED.to_vec();
    watched.push(libc::SIGCHLD);
    if let Err(e) = sys::mask_signals(&watched, true) {
        return fail("sigprocmask", e);
    }
    let sigfd = match sys::signalfd(&watched) {
        Ok(fd) => fd,
        Err(e) => return fail("signalfd", e),
    };
    match sys::fork() {
        Ok(sys::Forked::Child) => {
            // Init (PID 1): a SIGKILL when its parent dies, even from outside the namespace.
            sys::die_with_parent(libc::SIGKILL);
            let cmd = match sys::fork() {
                Ok(sys::Forked::Child) => {
                    drop(sigfd);
                    sys::default_signals(&watched);
                    let _ = sys::mask_signals(&watched, false);
                    exec(argv)
                }
                Ok(sys::Forked::Parent(pid)) => pid,
                Err(e) => sys::exit_now(fail("fork", e)),
            };
            sys::exit_now(supervise(&sigfd, cmd))
        }
        Ok(sys::Forked::Parent(init)) => supervise(&sigfd, init),
        Err(e) => fail("fork", e),
    }
}

/// Forwards [`FORWARDED`] signals to `pid` and reaps every child until `pid` ends; returns its
/// exit code.
fn supervise(sigfd: &OwnedFd, pid: libc::pid_t) -> i32 {
    loop {
        match sys::read_signal(sigfd.as_raw_fd()) {
            Ok(libc::SIGCHLD) => loop {
                match sys::wait_any() {
                    Ok(Some((p, exit))) if p == pid => return exit.code(),
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        sys::write_stderr(&format!("filo ns: waitpid: {e}\n"));
                        return 1;
                    }
                }
            },
            Ok(s) => sys::kill(pid, s),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                sys::write_stderr(&format!("filo ns: signalfd: {e}\n"));
                return 1;
            }
        }
    }
}

/// Execs the command; on failure, exits 127 (not found) or 126.
fn exec(argv: &[CString]) -> ! {
    let e = sys::execvp(argv);
    let code = if e.raw_os_error() == Some(libc::ENOENT) {
        127
    } else {
        126
    };
    sys::write_stderr(&format!(
        "filo ns: cannot run {}: {e}\n",
        argv[0].to_string_lossy()
    ));
    sys::exit_now(code)
}

/// Runs `cmd` and returns its exit code (128 + N when killed by signal N). Errors mean the
/// command never started; nothing is left behind either way.
pub fn run_command(cmd: &NsCommand) -> Result<i32, NsError> {
    cmd.conf.validate()?;
    let mut argv = cmd.argv.clone();
    if argv.is_empty() {
        argv.push(std::env::var("SHELL").unwrap_or_else(|_| "/bin/sh".into()));
    }
    let argv: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<_, _>>()
        .map_err(|_| NsError::Conf("a command argument contains a NUL byte".into()))?;
    let plugs = open_vnls(&cmd.vnls)?;
    let mtus = plug_mtus(&plugs);
    let spaces = Spaces {
        uts: true,
        mount: setup::needs_resolv_conf(&cmd.conf),
    };
    let (mine, theirs) =
        filo_vnl::sys::seqpacket_pair(false).map_err(|e| NsError::io("socketpair", e))?;
    // Signals arrive on a signalfd; blocked here before any thread exists, so cable threads
    // inherit the mask and never take them.
    let mut watched = FORWARDED.to_vec();
    watched.push(libc::SIGCHLD);
    sys::mask_signals(&watched, true).map_err(|e| NsError::io("sigprocmask", e))?;
    let sigfd = sys::signalfd(&watched).map_err(|e| NsError::io("signalfd", e))?;
    let pid = match sys::fork().map_err(|e| NsError::io("fork", e))? {
        sys::Forked::Child => {
            drop(mine);
            drop(sigfd);
            sys::die_with_parent(libc::SIGKILL);
            sys::default_signals(&watched);
            let _ = sys::mask_signals(&watched, false);
            child(theirs, cmd, &mtus, &argv, spaces)
        }
        sys::Forked::Parent(pid) => pid,
    };
    drop(theirs);
    let fail = |e: NsError| {
        sys::kill(pid, libc::SIGKILL);
        let _ = sys::waitpid(pid, false);
        e
    };
    let mut buf = vec![0u8; 4096];
    let (n, taps) = sys::recv_with_fds(mine.as_raw_fd(), &mut buf, true)
        .map_err(|e| fail(NsError::io("namespace set-up", e)))?;
    if n == 0 || buf[0] != OK {
        let msg = if n > 1 {
            String::from_utf8_lossy(&buf[1..n]).into_owned()
        } else {
            "the namespace child died during set-up".into()
        };
        return Err(fail(NsError::Namespace(msg)));
    }
    if taps.len() != plugs.len() {
        return Err(fail(NsError::Namespace(format!(
            "expected {} taps from the namespace, got {}",
            plugs.len(),
            taps.len()
        ))));
    }
    let ifaces = setup::iface_names(plugs.len());
    start_cables(&ifaces, taps, plugs, Arc::new(AtomicBool::new(false))).map_err(fail)?;
    let _ = sys::send_with_fds(mine.as_raw_fd(), &[OK], &[]);
    loop {
        let sig = sys::read_signal(sigfd.as_raw_fd());
        match sig {
            Ok(s) if s == libc::SIGCHLD => {
                if let Some(exit) =
                    sys::waitpid(pid, true).map_err(|e| NsError::io("waitpid", e))?
                {
                    return Ok(exit.code());
                }
            }
            Ok(s) => sys::kill(pid, s),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(fail(NsError::io("signalfd", e))),
        }
    }
}
