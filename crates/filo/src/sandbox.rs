//! The sandbox `filo switch` and `filo wirefilter` enter once they are set up (sockets bound,
//! plugs connected, rc file run), just before their event loop: `no_new_privs`, Landlock on
//! the file system where the kernel has it, and a seccomp allowlist of the system calls the
//! loop makes. `--no-sandbox` skips it. The library types (`Switch`, `Daemon`) are never
//! sandboxed by themselves: they also run inside tests, plugs and stacks (`switch://`).
//!
//! * **seccomp**: every system call not on the daemon's list fails with `EPERM` rather than
//!   killing the process: a call the list missed shows up as an "Operation not permitted"
//!   error naming what failed (the daemon logs it, and the stop reason names the daemon),
//!   not as a silent crash. A compromised daemon gains nothing from the errno: it still
//!   cannot make the call. `mmap`/`mprotect` are allowed only without `PROT_EXEC`, `socket`
//!   only for `AF_UNIX`, `ioctl` only for `FIONBIO`/`TCGETS`, `tgkill` only towards this
//!   process. The filter is applied to every thread (TSYNC).
//! * **Landlock** (best effort: fully, partly or not enforced depending on the kernel, and
//!   logged): files may be read and created only beneath the directories the daemon serves
//!   ([`Policy::read_write`]), read in a few system files ([`Policy::read`]), and entries
//!   removed where the daemon cleans up after itself ([`Policy::remove`]). TCP bind and
//!   connect are refused, abstract UNIX sockets and signals are scoped to the sandbox.
//!   Connecting to pathname UNIX sockets is not restricted (a switch connects to its
//!   clients' data sockets wherever they are).

use std::collections::BTreeMap;
use std::path::PathBuf;

use landlock::{
    make_bitflags, path_beneath_rules, Access, AccessFs, AccessNet, BitFlags, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// A system call the loop may make, with an optional restriction on its arguments.
#[derive(Clone, Copy, Debug)]
pub struct Syscall {
    pub name: &'static str,
    nr: libc::c_long,
    only: Only,
}

/// Argument restrictions ([`Syscall::only`]).
#[derive(Clone, Copy, Debug)]
enum Only {
    Any,
    /// Argument `index` has none of the bits in `mask`.
    Without {
        index: u8,
        mask: u64,
    },
    /// Argument `index` is one of these values.
    OneOf {
        index: u8,
        values: &'static [u64],
    },
    /// Argument 0 is this process's id (tgkill).
    OwnPid,
}

macro_rules! calls {
    ($($name:ident $(: $only:expr)?),* $(,)?) => {
        &[$(Syscall {
            name: stringify!($name),
            nr: paste_sys!($name),
            only: calls!(@only $($only)?),
        }),*]
    };
    (@only) => { Only::Any };
    (@only $only:expr) => { $only };
}

macro_rules! paste_sys {
    (read) => {
        libc::SYS_read
    };
    (write) => {
        libc::SYS_write
    };
    (readv) => {
        libc::SYS_readv
    };
    (writev) => {
        libc::SYS_writev
    };
    (close) => {
        libc::SYS_close
    };
    (lseek) => {
        libc::SYS_lseek
    };
    (openat) => {
        libc::SYS_openat
    };
    (statx) => {
        libc::SYS_statx
    };
    (newfstatat) => {
        libc::SYS_newfstatat
    };
    (fstat) => {
        libc::SYS_fstat
    };
    (fcntl) => {
        libc::SYS_fcntl
    };
    (ioctl) => {
        libc::SYS_ioctl
    };
    (accept4) => {
        libc::SYS_accept4
    };
    (socket) => {
        libc::SYS_socket
    };
    (connect) => {
        libc::SYS_connect
    };
    (bind) => {
        libc::SYS_bind
    };
    (recvfrom) => {
        libc::SYS_recvfrom
    };
    (recvmsg) => {
        libc::SYS_recvmsg
    };
    (recvmmsg) => {
        libc::SYS_recvmmsg
    };
    (sendto) => {
        libc::SYS_sendto
    };
    (sendmsg) => {
        libc::SYS_sendmsg
    };
    (sendmmsg) => {
        libc::SYS_sendmmsg
    };
    (getsockopt) => {
        libc::SYS_getsockopt
    };
    (setsockopt) => {
        libc::SYS_setsockopt
    };
    (getsockname) => {
        libc::SYS_getsockname
    };
    (getpeername) => {
        libc::SYS_getpeername
    };
    (shutdown) => {
        libc::SYS_shutdown
    };
    (unlinkat) => {
        libc::SYS_unlinkat
    };
    (fchmod) => {
        libc::SYS_fchmod
    };
    (fchmodat) => {
        libc::SYS_fchmodat
    };
    (fchown) => {
        libc::SYS_fchown
    };
    (fchownat) => {
        libc::SYS_fchownat
    };
    (ppoll) => {
        libc::SYS_ppoll
    };
    (epoll_pwait) => {
        libc::SYS_epoll_pwait
    };
    (epoll_pwait2) => {
        libc::SYS_epoll_pwait2
    };
    (epoll_ctl) => {
        libc::SYS_epoll_ctl
    };
    (timerfd_settime) => {
        libc::SYS_timerfd_settime
    };
    (timerfd_gettime) => {
        libc::SYS_timerfd_gettime
    };
    (brk) => {
        libc::SYS_brk
    };
    (mmap) => {
        libc::SYS_mmap
    };
    (munmap) => {
        libc::SYS_munmap
    };
    (mremap) => {
        libc::SYS_mremap
    };
    (mprotect) => {
        libc::SYS_mprotect
    };
    (madvise) => {
        libc::SYS_madvise
    };
    (futex) => {
        libc::SYS_futex
    };
    (sched_yield) => {
        libc::SYS_sched_yield
    };
    (sched_getscheduler) => {
        libc::SYS_sched_getscheduler
    };
    (sched_setscheduler) => {
        libc::SYS_sched_setscheduler
    };
    (sched_getparam) => {
        libc::SYS_sched_getparam
    };
    (clock_gettime) => {
        libc::SYS_clock_gettime
    };
    (clock_nanosleep) => {
        libc::SYS_clock_nanosleep
    };
    (nanosleep) => {
        libc::SYS_nanosleep
    };
    (gettimeofday) => {
        libc::SYS_gettimeofday
    };
    (getpid) => {
        libc::SYS_getpid
    };
    (gettid) => {
        libc::SYS_gettid
    };
    (getuid) => {
        libc::SYS_getuid
    };
    (geteuid) => {
        libc::SYS_geteuid
    };
    (getgid) => {
        libc::SYS_getgid
    };
    (getegid) => {
        libc::SYS_getegid
    };
    (rt_sigreturn) => {
        libc::SYS_rt_sigreturn
    };
    (rt_sigprocmask) => {
        libc::SYS_rt_sigprocmask
    };
    (sigaltstack) => {
        libc::SYS_sigaltstack
    };
    (tgkill) => {
        libc::SYS_tgkill
    };
    (getrandom) => {
        libc::SYS_getrandom
    };
    (exit) => {
        libc::SYS_exit
    };
    (exit_group) => {
        libc::SYS_exit_group
    };
    (wait4) => {
        libc::SYS_wait4
    };
    (kill) => {
        libc::SYS_kill
    };
    // Older forms glibc still uses on x86_64 (unlink, chmod, poll, epoll_wait...).
    (unlink) => {
        libc::SYS_unlink
    };
    (rmdir) => {
        libc::SYS_rmdir
    };
    (chmod) => {
        libc::SYS_chmod
    };
    (chown) => {
        libc::SYS_chown
    };
    (lchown) => {
        libc::SYS_lchown
    };
    (stat) => {
        libc::SYS_stat
    };
    (lstat) => {
        libc::SYS_lstat
    };
    (poll) => {
        libc::SYS_poll
    };
    (epoll_wait) => {
        libc::SYS_epoll_wait
    };
}

const NO_EXEC: Only = Only::Without {
    index: 2,
    mask: libc::PROT_EXEC as u64,
};
const UNIX_ONLY: Only = Only::OneOf {
    index: 0,
    values: &[libc::AF_UNIX as u64],
};
// The request constants are c_ulong or c_int depending on the C library.
#[allow(clippy::unnecessary_cast)]
const IOCTLS: Only = Only::OneOf {
    index: 1,
    values: &[libc::FIONBIO as u64, libc::TCGETS as u64],
};

/// What both daemons' loops need: I/O on descriptors they hold, console connections,
/// `load` (open, stat, read), memory, time, signals arriving, exiting, cleaning up.
const COMMON: &[Syscall] = calls![
    read, write, readv, writev, close, lseek, openat, statx, newfstatat, fstat, fcntl,
    ioctl: IOCTLS, accept4, recvfrom, recvmsg, recvmmsg, sendto, sendmsg, sendmmsg,
    getsockopt, setsockopt, getsockname, getpeername, shutdown, unlinkat, ppoll,
    brk, mmap: NO_EXEC, munmap, mremap, mprotect: NO_EXEC, madvise, futex, sched_yield,
    clock_gettime, clock_nanosleep, nanosleep, gettimeofday, getpid, gettid, getuid, geteuid,
    getgid, getegid, rt_sigreturn, rt_sigprocmask, sigaltstack, tgkill: Only::OwnPid,
    getrandom, exit, exit_group,
];
#[cfg(target_arch = "x86_64")]
const COMMON_X86_64: &[Syscall] = calls![unlink, stat, lstat, poll];
#[cfg(not(target_arch = "x86_64"))]
const COMMON_X86_64: &[Syscall] = &[];

/// The switch also answers control requests (a data socket per client: socket, connect,
/// bind, chmod, chown), waits in epoll with a timerfd, sets its scheduling policy, and at
/// exit removes its sockets and its directory.
const SWITCH: &[Syscall] = calls![
    socket: UNIX_ONLY, connect, bind, fchmod, fchmodat, fchown, fchownat, epoll_pwait,
    epoll_pwait2, epoll_ctl, timerfd_settime, timerfd_gettime, sched_getscheduler,
    sched_setscheduler, sched_getparam,
];
#[cfg(target_arch = "x86_64")]
const SWITCH_X86_64: &[Syscall] = calls![rmdir, chmod, chown, lchown, epoll_wait];
#[cfg(not(target_arch = "x86_64"))]
const SWITCH_X86_64: &[Syscall] = &[];

/// The wirefilter's loop only moves frames between plugs it already holds; a `cmd://` side
/// is a child it waits for at exit.
const WIREFILTER_CMD: &[Syscall] = calls![wait4, kill];

/// The switch's allowlist.
pub fn switch_calls() -> Vec<Syscall> {
    [COMMON, COMMON_X86_64, SWITCH, SWITCH_X86_64].concat()
}

/// The wirefilter's allowlist; `children` when a side is a `cmd://` child process.
pub fn wirefilter_calls(children: bool) -> Vec<Syscall> {
    let mut calls = [COMMON, COMMON_X86_64].concat();
    if children {
        calls.extend_from_slice(WIREFILTER_CMD);
    }
    calls
}

/// What a daemon keeps once sandboxed.
#[derive(Debug)]
pub struct Policy {
    /// `filo switch`, `filo wirefilter`: named in log lines and errors.
    pub daemon: &'static str,
    pub syscalls: Vec<Syscall>,
    /// Directories beneath which files may be read, created, written and removed and UNIX
    /// sockets made (the switch directory, the management socket's directory).
    pub read_write: Vec<PathBuf>,
    /// Files or directories that may be read (/etc/passwd for port permissions...).
    pub read: Vec<PathBuf>,
    /// Directories in which files may be removed (a pid file's directory, a plug's socket
    /// directory).
    pub remove: Vec<PathBuf>,
    /// Directories in which empty directories may be removed (the switch directory's
    /// parent, at exit).
    pub remove_dir: Vec<PathBuf>,
}

/// Why the sandbox could not be entered.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{daemon}: cannot sandbox: Landlock: {source} (--no-sandbox runs without)")]
    Landlock {
        daemon: &'static str,
        source: landlock::RulesetError,
    },
    #[error("{daemon}: cannot sandbox: seccomp: {source} (--no-sandbox runs without)")]
    Seccomp {
        daemon: &'static str,
        source: seccompiler::Error,
    },
    #[error("{daemon}: cannot sandbox: seccomp filter for {call}: {source}")]
    Filter {
        daemon: &'static str,
        call: &'static str,
        source: seccompiler::BackendError,
    },
    #[error("{daemon}: cannot sandbox: seccomp filters are not built for {arch}; --no-sandbox runs without")]
    Arch {
        daemon: &'static str,
        arch: &'static str,
    },
}

/// How much of the sandbox the kernel enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Landlocked {
    Fully,
    Partly,
    Not,
}

/// Enters the sandbox: Landlock (best effort), then the seccomp allowlist (with
/// `no_new_privs`). Logs one line saying what is enforced. Returns how Landlock went.
pub fn enter(policy: &Policy) -> Result<Landlocked, SandboxError> {
    let daemon = policy.daemon;
    let landlocked =
        landlock(policy).map_err(|source| SandboxError::Landlock { daemon, source })?;
    let program = seccomp_program(policy)?;
    seccompiler::apply_filter_all_threads(&program)
        .map_err(|source| SandboxError::Seccomp { daemon, source })?;
    let dirs: Vec<String> = policy
        .read_write
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let dirs = if dirs.is_empty() {
        "nowhere".to_string()
    } else {
        dirs.join(", ")
    };
    let calls = policy.syscalls.len();
    match landlocked {
        Landlocked::Fully | Landlocked::Partly => {
            tracing::info!(
            "{daemon}: sandboxed: seccomp allows {calls} system calls (others fail with EPERM), \
             no_new_privs, Landlock {} enforced: files created only beneath {dirs}",
            if landlocked == Landlocked::Fully { "fully" } else { "partly" },
        )
        }
        Landlocked::Not => tracing::warn!(
            "{daemon}: sandboxed: seccomp allows {calls} system calls (others fail with EPERM), \
             no_new_privs; Landlock not enforced (this kernel lacks it): file access is not \
             restricted"
        ),
    }
    Ok(landlocked)
}

fn landlock(policy: &Policy) -> Result<Landlocked, landlock::RulesetError> {
    // ABI v5's file rights: v9's ResolveUnix is left out, so that connecting to a client's
    // data socket anywhere keeps working.
    let handled = AccessFs::from_all(ABI::V5);
    let read: BitFlags<AccessFs> = make_bitflags!(AccessFs::{ReadFile | ReadDir});
    let read_write =
        read | make_bitflags!(AccessFs::{WriteFile | Truncate | MakeReg | MakeSock | RemoveFile});
    let remove: BitFlags<AccessFs> = AccessFs::RemoveFile.into();
    let remove_dir: BitFlags<AccessFs> = AccessFs::RemoveDir.into();
    let status = Ruleset::default()
        .handle_access(handled)?
        .handle_access(AccessNet::from_all(ABI::V4))?
        .scope(Scope::from_all(ABI::V6))?
        .create()?
        .add_rules(path_beneath_rules(&policy.read_write, read_write))?
        .add_rules(path_beneath_rules(&policy.read, read))?
        .add_rules(path_beneath_rules(&policy.remove, remove))?
        .add_rules(path_beneath_rules(&policy.remove_dir, remove_dir))?
        .restrict_self()?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => Landlocked::Fully,
        RulesetStatus::PartiallyEnforced => Landlocked::Partly,
        RulesetStatus::NotEnforced => Landlocked::Not,
    })
}

fn seccomp_program(policy: &Policy) -> Result<BpfProgram, SandboxError> {
    let daemon = policy.daemon;
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|_| SandboxError::Arch {
        daemon,
        arch: std::env::consts::ARCH,
    })?;
    let filter_err = |call| {
        move |source| SandboxError::Filter {
            daemon,
            call,
            source,
        }
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for call in &policy.syscalls {
        let cond = |index, op, value| {
            SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value)
                .map_err(filter_err(call.name))
        };
        let chain = match call.only {
            Only::Any => Vec::new(),
            Only::Without { index, mask } => {
                vec![
                    SeccompRule::new(vec![cond(index, SeccompCmpOp::MaskedEq(mask), 0)?])
                        .map_err(filter_err(call.name))?,
                ]
            }
            Only::OneOf { index, values } => values
                .iter()
                .map(|&v| {
                    SeccompRule::new(vec![cond(index, SeccompCmpOp::Eq, v)?])
                        .map_err(filter_err(call.name))
                })
                .collect::<Result<_, _>>()?,
            Only::OwnPid => vec![SeccompRule::new(vec![cond(
                0,
                SeccompCmpOp::Eq,
                u64::from(std::process::id()),
            )?])
            .map_err(filter_err(call.name))?],
        };
        // `c_long` is i64 on every architecture seccompiler supports.
        #[allow(clippy::useless_conversion)]
        rules.insert(i64::from(call.nr), chain);
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch,
    )
    .map_err(filter_err("(all)"))?;
    BpfProgram::try_from(filter).map_err(filter_err("(all)"))
}

/// Files a daemon that checks port permissions or group names reads while it runs.
pub fn account_files() -> Vec<PathBuf> {
    ["/etc/passwd", "/etc/group", "/etc/nsswitch.conf"]
        .into_iter()
        .map(PathBuf::from)
        .collect()
}

/// Devices that give nothing away, which a `load` may name (and is refused as no script).
pub fn harmless_devices() -> Vec<PathBuf> {
    ["/dev/null", "/dev/zero"]
        .into_iter()
        .map(PathBuf::from)
        .collect()
}

/// The directory holding `path` (its parent, or `.` for a bare name), made absolute.
pub fn parent_dir(path: &std::path::Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match abs.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlists_compile_and_have_no_duplicates() {
        for (name, calls) in [
            ("switch", switch_calls()),
            ("wirefilter", wirefilter_calls(true)),
        ] {
            let mut nrs: Vec<_> = calls.iter().map(|c| c.nr).collect();
            nrs.sort_unstable();
            let before = nrs.len();
            nrs.dedup();
            assert_eq!(before, nrs.len(), "{name}: a system call is listed twice");
            let policy = Policy {
                daemon: "test",
                syscalls: calls,
                read_write: Vec::new(),
                read: Vec::new(),
                remove: Vec::new(),
                remove_dir: Vec::new(),
            };
            assert!(seccomp_program(&policy).is_ok(), "{name}");
        }
    }
}
