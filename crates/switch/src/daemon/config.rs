//! Switch options (vde_switch's command line as a struct) and the control directory's setup
//! and cleanup, with vde_switch's permission rules (reference vde.md §1.1).

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use filo_vnl::sys;

use crate::wire::MacAddr;

/// Everything `filo switch` can be told.
#[derive(Clone, Debug)]
pub struct SwitchConfig {
    /// Control directory (`-s`).
    pub dir: PathBuf,
    /// Socket permissions (`-m`).
    pub mode: Option<u32>,
    /// Directory permissions (`--dirmode`).
    pub dirmode: Option<u32>,
    /// Group of the sockets (`-g`).
    pub group: Option<String>,
    pub numports: u16,
    pub hub: bool,
    pub stp: bool,
    pub priority: u16,
    /// Spanning-tree timers advertised when this switch is the root.
    pub stp_timers: crate::stp::StpTimers,
    pub macaddr: MacAddr,
    /// Management socket (`-M`) and its permissions and group.
    pub mgmt: Option<PathBuf>,
    pub mgmt_mode: u32,
    pub mgmt_group: Option<String>,
    /// Startup script (`-f`).
    pub rcfile: Option<PathBuf>,
    /// Tap interfaces to attach (`-t`).
    pub taps: Vec<String>,
    /// Console on stdin/stdout.
    pub stdin_console: bool,
    /// Frames queued per endpoint before drops (or back-pressure).
    pub queue_len: usize,
    pub lossless: bool,
    /// Ports whose traffic is written to pcapng files from the start.
    pub captures: Vec<(u16, PathBuf)>,
    /// Keep polling without sleeping for this long after the last event (0: off).
    pub busy_poll: std::time::Duration,
    /// How long a learned address lives without frames from it (`hash/setexpire`).
    pub mac_expire: std::time::Duration,
    /// DHCP snooping (see `Core::set_dhcp_snooping`).
    pub dhcp_snooping: bool,
    /// The scheduling policy of the switch's thread (`--scheduling`).
    pub scheduling: Scheduling,
}

/// How the switch's thread is scheduled (`--scheduling`).
///
/// A switch that keeps up goes back to sleep after every few frames, and the next datagram
/// wakes it. Under `SCHED_OTHER` the woken switch preempts the client that sent the datagram,
/// on that client's CPU, before the client reaches its own wait: under a flood from a
/// one-datagram-per-frame sender (2 vCPUs, one pair) the sender was preempted ~44,000 times
/// for 300,000 frames and spent as long waiting for a CPU as running. Under `SCHED_BATCH` a
/// woken thread does not preempt (its share of CPU is the same): the sender runs on until it
/// blocks and the switch takes the frames in large batches (~900 sleeps; ~1.4x the frames
/// delivered, ~30 % less switch CPU per frame). Round trips on an idle machine measured the
/// same; with a CPU hog on each CPU they were shorter (p50 ~0.8x, and no multi-millisecond
/// p99), as the client that sent a lone frame is not preempted on its way to waiting for the
/// answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scheduling {
    /// `SCHED_BATCH`, unless the thread was started under another policy than
    /// `SCHED_OTHER` (set from outside with chrt), which is kept.
    #[default]
    Default,
    /// `SCHED_BATCH`: a woken switch does not preempt.
    Batch,
    /// `SCHED_OTHER`: the kernel's default.
    Normal,
}

impl SwitchConfig {
    pub fn new(dir: impl Into<PathBuf>) -> SwitchConfig {
        SwitchConfig {
            dir: dir.into(),
            mode: None,
            dirmode: None,
            group: None,
            numports: 32,
            hub: false,
            stp: false,
            priority: 0x8000,
            stp_timers: crate::stp::StpTimers::default(),
            macaddr: random_mac(),
            mgmt: None,
            mgmt_mode: 0o600,
            mgmt_group: None,
            rcfile: None,
            taps: Vec::new(),
            stdin_console: false,
            queue_len: 256,
            lossless: false,
            captures: Vec::new(),
            busy_poll: std::time::Duration::ZERO,
            mac_expire: crate::core::CoreConfig::default().mac_expire,
            dhcp_snooping: true,
            scheduling: Scheduling::Default,
        }
    }

    /// vde_switch's default directory: /var/run/vde.ctl for root, /tmp/vde.ctl otherwise.
    pub fn default_dir() -> PathBuf {
        if sys::euid() == 0 {
            "/var/run/vde.ctl".into()
        } else {
            "/tmp/vde.ctl".into()
        }
    }

    /// Permissions of the control and data sockets.
    pub fn socket_mode(&self) -> u32 {
        match (self.mode, self.dirmode) {
            (Some(m), _) => m & 0o666,
            (None, Some(d)) => d & 0o666,
            (None, None) => 0o600,
        }
    }

    /// Permissions of the directory. A directory others may write to gets the sticky bit
    /// (unlike vde_switch): without it any of them could rename `ctl` and put their own in
    /// its place for the next plug.
    pub fn dir_mode(&self) -> u32 {
        let d = self.dir_mode_as_given();
        if d & 0o022 != 0 {
            d | 0o1000
        } else {
            d
        }
    }

    fn dir_mode_as_given(&self) -> u32 {
        match (self.dirmode, self.mode) {
            (Some(d), _) => d,
            (None, Some(m)) => {
                // For each of user/group/other: any r/w bit adds x (so the dir is enterable).
                let mut d = 0o2000 | (m & 0o777);
                for shift in [6, 3, 0] {
                    if (m >> shift) & 0o6 != 0 {
                        d |= 1 << shift;
                    }
                }
                d
            }
            (None, None) => 0o2700,
        }
    }
}

fn random_mac() -> MacAddr {
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        ^ ((std::process::id() as u64) << 32);
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed as u8
    };
    // Locally administered, unicast; vde_switch uses 00:ff:xx:xx:xx:xx.
    MacAddr([0x02, 0xf1, next(), next(), next(), next()])
}

/// Why a switch could not start.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    /// `-g`/`--mgmtgroup` names a group that does not exist.
    #[error("group {0:?} does not exist")]
    NoSuchGroup(String),
    /// The control directory's path is taken by something else.
    #[error("{} exists and is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// A live switch answers on this control directory's socket.
    #[error("another switch is already running on {} (its control socket answers)", .0.display())]
    AlreadyRunning(PathBuf),
    /// Something answers on the management socket's path.
    #[error("management socket {} is in use", .0.display())]
    MgmtInUse(PathBuf),
    /// Something that is not a stale socket sits where a socket is to be bound (the message
    /// names the path; nothing was removed).
    #[error("{0}")]
    InTheWay(io::Error),
    /// Every port is taken or not allocatable, so a `-t` tap has none.
    #[error("no free port for tap {0}")]
    NoFreePort(String),
    /// A `--capture` could not start.
    #[error(transparent)]
    Capture(#[from] CaptureError),
}

/// Why capturing a port's traffic (`--capture`, `port/capture`) could not start.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("capture: port {port} does not exist (ports 0 to {})", .numports.saturating_sub(1))]
    NoSuchPort { port: u16, numports: u16 },
    #[error("capture: cannot create {}: {source}", .path.display())]
    Create { path: PathBuf, source: io::Error },
    #[error("capture: {}: {source}", .path.display())]
    Write { path: PathBuf, source: io::Error },
}

impl SwitchError {
    pub(crate) fn io(what: &'static str) -> impl Fn(io::Error) -> SwitchError {
        move |source| SwitchError::Io {
            what: what.to_string(),
            source,
        }
    }
}

fn ioe(what: String) -> impl FnOnce(io::Error) -> SwitchError {
    move |source| SwitchError::Io { what, source }
}

fn group_gid(group: &Option<String>) -> Result<Option<u32>, SwitchError> {
    match group {
        None => Ok(None),
        Some(g) => sys::group_id(g)
            .map(Some)
            .ok_or_else(|| SwitchError::NoSuchGroup(g.clone())),
    }
}

/// True when something answers on the socket at `path`.
/// Removes a stale socket at `path` (see [`filo_vnl::sockfile::make_way`]); a live one is
/// `in_use`, anything else in the way [`SwitchError::InTheWay`].
fn make_way(path: &Path, in_use: SwitchError) -> Result<(), SwitchError> {
    filo_vnl::sockfile::make_way(path, socket2::Type::STREAM).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            in_use
        } else {
            SwitchError::InTheWay(e)
        }
    })
}

/// Whether `name` is one of the switch's own data sockets: `PORT.ID` and its framing
/// suffixes (`003.12`, `003.12.vnet.train`), as [`crate::daemon`] names them.
fn is_data_socket_name(name: &str) -> bool {
    let mut parts = name.split('.');
    let digits =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if !digits(parts.next()) || !digits(parts.next()) {
        return false;
    }
    let rest: Vec<&str> = parts.collect();
    matches!(
        rest.as_slice(),
        [] | ["vnet"] | ["train"] | ["vnet", "train"]
    )
}

/// Removes the data sockets a switch killed on this directory left behind (no switch answers
/// on its `ctl`, so none of them is in use): only sockets named like the switch's own.
/// Found by bench/chaos.sh: every `kill -9` of a switch left one per endpoint, for good.
fn remove_stale_data_sockets(dir: &Path) {
    use std::os::unix::fs::FileTypeExt;
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry.file_name().to_str().is_some_and(is_data_socket_name)
            && entry.file_type().is_ok_and(|t| t.is_socket());
        if stale {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// What [`prepare_ctl_dir`] changed, so that [`cleanup`] (at exit, or after a failed start)
/// undoes just that.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DirChanges {
    /// The switch created the directory: removed on exit when empty.
    created: bool,
    /// The mode an existing directory had before the switch set its own: put back on exit.
    old_mode: Option<u32>,
}

/// Creates the directory and binds `DIR/ctl`, refusing to steal a live switch's socket. On
/// an error nothing is left changed: no `ctl`, the directory removed if created here, its
/// mode restored if not.
pub(crate) fn prepare_ctl_dir(
    cfg: &SwitchConfig,
) -> Result<(UnixListener, DirChanges), SwitchError> {
    let gid = group_gid(&cfg.group)?;
    let mut changes = DirChanges::default();
    let result = bind_ctl(cfg, gid, &mut changes);
    if result.is_err() {
        cleanup(cfg, changes, false);
    }
    result.map(|l| (l, changes))
}

fn bind_ctl(
    cfg: &SwitchConfig,
    gid: Option<u32>,
    changes: &mut DirChanges,
) -> Result<UnixListener, SwitchError> {
    let dir = &cfg.dir;
    match fs::create_dir(dir) {
        Ok(()) => changes.created = true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let meta = fs::metadata(dir).map_err(ioe(format!("cannot stat {}", dir.display())))?;
            if !meta.is_dir() {
                return Err(SwitchError::NotADirectory(dir.clone()));
            }
        }
        Err(e) => {
            return Err(ioe(format!(
                "cannot create the switch directory {}",
                dir.display()
            ))(e))
        }
    }
    let ctl = dir.join("ctl");
    make_way(&ctl, SwitchError::AlreadyRunning(dir.clone()))?;
    remove_stale_data_sockets(dir);
    if let Some(g) = gid {
        sys::chown(dir, None, Some(g)).map_err(ioe(format!("cannot chgrp {}", dir.display())))?;
    }
    if !changes.created {
        let meta = fs::metadata(dir).map_err(ioe(format!("cannot stat {}", dir.display())))?;
        changes.old_mode = Some(meta.permissions().mode() & 0o7777);
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(cfg.dir_mode()))
        .map_err(ioe(format!("cannot chmod {}", dir.display())))?;
    let listener =
        UnixListener::bind(&ctl).map_err(ioe(format!("cannot bind {}", ctl.display())))?;
    let finish = || -> Result<(), SwitchError> {
        listener
            .set_nonblocking(true)
            .map_err(ioe("non-blocking".into()))?;
        if let Some(g) = gid {
            sys::chown(&ctl, None, Some(g))
                .map_err(ioe(format!("cannot chgrp {}", ctl.display())))?;
        }
        fs::set_permissions(&ctl, fs::Permissions::from_mode(cfg.socket_mode()))
            .map_err(ioe(format!("cannot chmod {}", ctl.display())))
    };
    if let Err(e) = finish() {
        let _ = fs::remove_file(&ctl);
        return Err(e);
    }
    Ok(listener)
}

pub(crate) fn bind_mgmt(cfg: &SwitchConfig, path: &Path) -> Result<UnixListener, SwitchError> {
    make_way(path, SwitchError::MgmtInUse(path.to_path_buf()))?;
    let l = UnixListener::bind(path).map_err(ioe(format!(
        "cannot bind management socket {}",
        path.display()
    )))?;
    l.set_nonblocking(true)
        .map_err(ioe("non-blocking".into()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(cfg.mgmt_mode))
        .map_err(ioe(format!("cannot chmod {}", path.display())))?;
    if let Some(g) = group_gid(&cfg.mgmt_group)? {
        sys::chown(path, None, Some(g)).map_err(ioe(format!("cannot chgrp {}", path.display())))?;
    }
    Ok(l)
}

/// Undoes what the switch did: removes ctl (once bound), the management socket when
/// `mgmt_bound`, and the directory if it created it and it is empty, or puts back the mode
/// of a directory it did not create.
pub(crate) fn cleanup(cfg: &SwitchConfig, changes: DirChanges, mgmt_bound: bool) {
    if changes.created || changes.old_mode.is_some() {
        let _ = fs::remove_file(cfg.dir.join("ctl"));
    }
    if let (Some(m), true) = (&cfg.mgmt, mgmt_bound) {
        let _ = fs::remove_file(m);
    }
    if changes.created {
        let _ = fs::remove_dir(&cfg.dir);
    } else if let Some(mode) = changes.old_mode {
        let _ = fs::set_permissions(&cfg.dir, fs::Permissions::from_mode(mode));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_follow_vde_switch() {
        let mut c = SwitchConfig::new("/x");
        assert_eq!((c.socket_mode(), c.dir_mode()), (0o600, 0o2700));
        c.mode = Some(0o666);
        // Writable by others: sticky, so nobody renames ctl from under the switch.
        assert_eq!((c.socket_mode(), c.dir_mode()), (0o666, 0o3777));
        c.mode = Some(0o660);
        assert_eq!(c.dir_mode(), 0o3770);
        c.mode = Some(0o644);
        assert_eq!(c.dir_mode(), 0o2755);
        c.mode = None;
        c.dirmode = Some(0o2750);
        assert_eq!((c.socket_mode(), c.dir_mode()), (0o2750 & 0o666, 0o2750));
        c.dirmode = Some(0o777);
        assert_eq!(c.dir_mode(), 0o1777);
    }

    #[test]
    fn a_restarted_switch_removes_the_stale_data_sockets_of_the_last() {
        let dir = std::env::temp_dir().join(format!("filo-swstale-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).unwrap();
        // What a switch killed with SIGKILL leaves: ctl and one data socket per endpoint.
        let sockets = [
            "ctl",
            "001.7",
            "002.9.vnet.train",
            "003.11.train",
            "004.12.vnet",
        ];
        for name in sockets.iter().chain(["other", "1.x.train"].iter()) {
            drop(std::os::unix::net::UnixDatagram::bind(dir.join(name)).unwrap());
        }
        fs::write(dir.join("005.13"), "not a socket").unwrap();
        let listener = prepare_ctl_dir(&SwitchConfig::new(&dir)).unwrap();
        let mut left: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["005.13", "1.x.train", "ctl", "other"]);
        drop(listener);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn errors_name_what_was_wrong() {
        let dir = std::env::temp_dir().join(format!("filo-swcfg-{}", std::process::id()));
        fs::write(&dir, "").unwrap();
        let e = prepare_ctl_dir(&SwitchConfig::new(&dir))
            .map(|_| ())
            .unwrap_err();
        assert!(
            matches!(&e, SwitchError::NotADirectory(p) if *p == dir),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!("{} exists and is not a directory", dir.display())
        );
        let _ = fs::remove_file(&dir);
        let mut c = SwitchConfig::new(&dir);
        c.group = Some("no-such-group-filo".into());
        let e = prepare_ctl_dir(&c).map(|_| ()).unwrap_err();
        assert!(matches!(&e, SwitchError::NoSuchGroup(g) if g == "no-such-group-filo"));
        assert_eq!(e.to_string(), "group \"no-such-group-filo\" does not exist");
        let e = CaptureError::NoSuchPort {
            port: 40,
            numports: 32,
        };
        assert_eq!(
            e.to_string(),
            "capture: port 40 does not exist (ports 0 to 31)"
        );
    }
}
