//! The sandbox `filo switch`, `filo wirefilter` and `filo slirp` enter once they are set up (sockets bound,
//! plugs connected, rc file run), just before their event loop: `no_new_privs`, Landlock on
//! the file system where the kernel has it, and a seccomp allowlist of the system calls the
//! loop makes. `--no-sandbox` skips it. The library types (`Switch`, `Daemon`) are never
//! sandboxed by themselves: they also run inside tests, plugs and stacks (`switch://`).
//!
//! * **seccomp**: every system call not on the daemon's list fails with `EPERM` rather than
//!   killing the process: a call the list missed shows up as an "Operation not permitted"
//!   error naming what failed (in the daemon's log, or its exit message if the loop cannot
//!   go on), not as a silent crash. A compromised daemon gains nothing from the errno: it still
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

/// `name` (its number `nr`), with any arguments.
const fn any(name: &'static str, nr: libc::c_long) -> Syscall {
    Syscall {
        name,
        nr,
        only: Only::Any,
    }
}

/// `name` (its number `nr`) with the arguments `only` allows.
const fn with(name: &'static str, nr: libc::c_long, only: Only) -> Syscall {
    Syscall { name, nr, only }
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
const COMMON: &[Syscall] = &[
    any("read", libc::SYS_read),
    any("write", libc::SYS_write),
    any("readv", libc::SYS_readv),
    any("writev", libc::SYS_writev),
    any("close", libc::SYS_close),
    any("lseek", libc::SYS_lseek),
    any("openat", libc::SYS_openat),
    any("statx", libc::SYS_statx),
    any("newfstatat", libc::SYS_newfstatat),
    any("fstat", libc::SYS_fstat),
    any("fcntl", libc::SYS_fcntl),
    with("ioctl", libc::SYS_ioctl, IOCTLS),
    any("accept4", libc::SYS_accept4),
    any("recvfrom", libc::SYS_recvfrom),
    any("recvmsg", libc::SYS_recvmsg),
    any("recvmmsg", libc::SYS_recvmmsg),
    any("sendto", libc::SYS_sendto),
    any("sendmsg", libc::SYS_sendmsg),
    any("sendmmsg", libc::SYS_sendmmsg),
    any("getsockopt", libc::SYS_getsockopt),
    any("setsockopt", libc::SYS_setsockopt),
    any("getsockname", libc::SYS_getsockname),
    any("getpeername", libc::SYS_getpeername),
    any("shutdown", libc::SYS_shutdown),
    any("unlinkat", libc::SYS_unlinkat),
    any("ppoll", libc::SYS_ppoll),
    any("brk", libc::SYS_brk),
    with("mmap", libc::SYS_mmap, NO_EXEC),
    any("munmap", libc::SYS_munmap),
    any("mremap", libc::SYS_mremap),
    with("mprotect", libc::SYS_mprotect, NO_EXEC),
    any("madvise", libc::SYS_madvise),
    any("futex", libc::SYS_futex),
    any("sched_yield", libc::SYS_sched_yield),
    any("clock_gettime", libc::SYS_clock_gettime),
    any("clock_nanosleep", libc::SYS_clock_nanosleep),
    any("nanosleep", libc::SYS_nanosleep),
    any("gettimeofday", libc::SYS_gettimeofday),
    any("getpid", libc::SYS_getpid),
    any("gettid", libc::SYS_gettid),
    any("getuid", libc::SYS_getuid),
    any("geteuid", libc::SYS_geteuid),
    any("getgid", libc::SYS_getgid),
    any("getegid", libc::SYS_getegid),
    any("rt_sigreturn", libc::SYS_rt_sigreturn),
    any("rt_sigprocmask", libc::SYS_rt_sigprocmask),
    any("sigaltstack", libc::SYS_sigaltstack),
    with("tgkill", libc::SYS_tgkill, Only::OwnPid),
    any("getrandom", libc::SYS_getrandom),
    any("exit", libc::SYS_exit),
    any("exit_group", libc::SYS_exit_group),
];
#[cfg(target_arch = "x86_64")]
const COMMON_X86_64: &[Syscall] = &[
    any("unlink", libc::SYS_unlink),
    any("stat", libc::SYS_stat),
    any("lstat", libc::SYS_lstat),
    any("poll", libc::SYS_poll),
];
#[cfg(not(target_arch = "x86_64"))]
const COMMON_X86_64: &[Syscall] = &[];

/// The switch also answers control requests (a data socket per client: socket, connect,
/// bind, chmod, chown), writes captures, waits in epoll with a timerfd, keeps a spare
/// descriptor (an eventfd) to refuse clients with when it has no other, sets its scheduling
/// policy, and at exit removes its sockets and its directory.
const SWITCH: &[Syscall] = &[
    with("socket", libc::SYS_socket, UNIX_ONLY),
    any("connect", libc::SYS_connect),
    any("bind", libc::SYS_bind),
    // An existing capture of ours is emptied before it is written again.
    any("ftruncate", libc::SYS_ftruncate),
    any("fchmod", libc::SYS_fchmod),
    any("fchmodat", libc::SYS_fchmodat),
    any("fchown", libc::SYS_fchown),
    any("fchownat", libc::SYS_fchownat),
    any("epoll_pwait", libc::SYS_epoll_pwait),
    any("epoll_pwait2", libc::SYS_epoll_pwait2),
    any("epoll_ctl", libc::SYS_epoll_ctl),
    // The spare descriptor taken back after a client was refused for lack of descriptors.
    any("eventfd2", libc::SYS_eventfd2),
    any("timerfd_settime", libc::SYS_timerfd_settime),
    any("timerfd_gettime", libc::SYS_timerfd_gettime),
    any("sched_getscheduler", libc::SYS_sched_getscheduler),
    any("sched_setscheduler", libc::SYS_sched_setscheduler),
    any("sched_getparam", libc::SYS_sched_getparam),
];
#[cfg(target_arch = "x86_64")]
const SWITCH_X86_64: &[Syscall] = &[
    any("rmdir", libc::SYS_rmdir),
    any("chmod", libc::SYS_chmod),
    any("chown", libc::SYS_chown),
    any("lchown", libc::SYS_lchown),
    any("epoll_wait", libc::SYS_epoll_wait),
];
#[cfg(not(target_arch = "x86_64"))]
const SWITCH_X86_64: &[Syscall] = &[];

/// The switch's allowlist.
pub fn switch_calls() -> Vec<Syscall> {
    [COMMON, COMMON_X86_64, SWITCH, SWITCH_X86_64].concat()
}

/// The wirefilter's allowlist: its loop only moves frames between plugs it already holds.
pub fn wirefilter_calls() -> Vec<Syscall> {
    [COMMON, COMMON_X86_64].concat()
}

const INET: Only = Only::OneOf {
    index: 0,
    values: &[
        libc::AF_UNIX as u64,
        libc::AF_INET as u64,
        libc::AF_INET6 as u64,
    ],
};

/// `filo slirp` opens host sockets for its guests' flows (TCP, UDP, ICMP echo), connects
/// them anywhere, binds and listens for port forwards added from the console, and waits in
/// epoll.
const SLIRP: &[Syscall] = &[
    with("socket", libc::SYS_socket, INET),
    any("connect", libc::SYS_connect),
    any("bind", libc::SYS_bind),
    any("listen", libc::SYS_listen),
    any("epoll_pwait", libc::SYS_epoll_pwait),
    any("epoll_pwait2", libc::SYS_epoll_pwait2),
    any("epoll_ctl", libc::SYS_epoll_ctl),
];
#[cfg(target_arch = "x86_64")]
const SLIRP_X86_64: &[Syscall] = &[any("epoll_wait", libc::SYS_epoll_wait)];
#[cfg(not(target_arch = "x86_64"))]
const SLIRP_X86_64: &[Syscall] = &[];

/// The NAT gateway's allowlist.
pub fn slirp_calls() -> Vec<Syscall> {
    [COMMON, COMMON_X86_64, SLIRP, SLIRP_X86_64].concat()
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
    /// TCP bind and connect allowed anywhere (`filo slirp`); refused by Landlock otherwise.
    pub tcp: bool,
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
    let mut ruleset = Ruleset::default().handle_access(handled)?;
    if !policy.tcp {
        ruleset = ruleset.handle_access(AccessNet::from_all(ABI::V4))?;
    }
    let status = ruleset
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

/// The directory where a vde:// or ptp:// plug removes its own socket at exit (None for
/// other modules, and for vde:// with no default switch directory).
pub fn plug_socket_dir(vnl: &filo_vnl::Vnl) -> Option<PathBuf> {
    match vnl.module() {
        "vde" if vnl.address().is_empty() => match filo_vnl::default_switch() {
            filo_vnl::DefaultSwitch::Dir(d) => Some(d),
            _ => None,
        },
        "vde" => Some(PathBuf::from(vnl.address())),
        "ptp" => Some(parent_dir(std::path::Path::new(vnl.address()))),
        _ => None,
    }
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
            ("wirefilter", wirefilter_calls()),
            ("slirp", slirp_calls()),
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
                tcp: false,
            };
            assert!(seccomp_program(&policy).is_ok(), "{name}");
        }
    }

    /// Run in a child test process (this test binary again): under the switch's filter, a
    /// call off the list fails with EPERM, a clear error, and the process goes on.
    #[test]
    fn calls_off_the_list_fail_with_eperm() {
        const CHILD: &str = "FILO_SANDBOX_TEST_CHILD";
        if std::env::var_os(CHILD).is_some() {
            let policy = Policy {
                daemon: "test",
                syscalls: switch_calls(),
                read_write: Vec::new(),
                read: Vec::new(),
                remove: Vec::new(),
                remove_dir: Vec::new(),
                tcp: false,
            };
            let program = seccomp_program(&policy).expect("filter");
            seccompiler::apply_filter_all_threads(&program).expect("seccomp");
            // An IP socket (socket(AF_INET) is off the list), a new process (clone, execve).
            let udp = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.raw_os_error());
            let spawn = std::process::Command::new("/bin/true")
                .status()
                .map_err(|e| e.raw_os_error());
            // Still alive: UNIX sockets are allowed.
            let unix = std::os::unix::net::UnixDatagram::unbound().is_ok();
            let ok = udp.err() == Some(Some(libc::EPERM))
                && spawn.err() == Some(Some(libc::EPERM))
                && unix;
            std::process::exit(if ok { 0 } else { 3 });
        }
        let me = std::env::current_exe().expect("test binary");
        let status = std::process::Command::new(me)
            .args([
                "--exact",
                "sandbox::tests::calls_off_the_list_fail_with_eperm",
            ])
            .env(CHILD, "1")
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run the child");
        assert_eq!(status.code(), Some(0), "{status}");
    }
}
