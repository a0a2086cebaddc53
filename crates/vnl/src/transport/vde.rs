//! `vde://DIR[PORT]`: a client of the vde_switch v3 control protocol (reference: vde.md §1).
//!
//! Connects a stream socket to `DIR/ctl` (or `DIR/GROUP` for a port group), binds a datagram
//! socket at `DIR/.PID-SEQ`, sends one v3 request, reads the 110-byte reply naming the switch's
//! data socket, connects to it and unlinks its own name. Frames then travel one per datagram;
//! the stream stays open and silent, and its EOF means the switch is gone. Every wait has a
//! timeout, so a switch that accepts but never answers gives an error, not a hang.

use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};

use super::dgram::{ConnectedDgram, Refused};
use crate::sys;
use crate::wire::vde_request::{self, PortRequest};

/// How long to wait for a switch to accept and answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct VdeConfig {
    /// The switch's control directory (or, for old-style switches, the ctl socket itself).
    pub dir: PathBuf,
    pub port: PortRequest,
    /// A named port group: `DIR/GROUP` is tried before `DIR/ctl`.
    pub port_group: Option<String>,
    /// Group owner for the client's data socket.
    pub group: Option<String>,
    /// Permissions of the data socket (default 0700).
    pub mode: u32,
    /// Full description sent to the switch (see [`describe`]).
    pub description: String,
    pub timeout: Duration,
    /// Ask for virtio-net framing (super-frames); only a filo switch agrees, by naming its
    /// data socket `…` + [`VNET_SUFFIX`]. Other switches ignore the request.
    pub vnet: bool,
    /// Ask for frame trains (several frames per datagram, [`crate::wire::train`]); only a filo
    /// switch agrees (data socket name with [`TRAIN_SUFFIX`]). On unless the environment has
    /// `FILO_TRAINS=off`.
    pub trains: bool,
}

/// The description token that asks a filo switch for virtio-net framing.
pub const VNET_TOKEN: &str = "+vnet";
/// The suffix of the switch's data socket name when it agreed.
pub const VNET_SUFFIX: &str = ".vnet";
/// The description token that asks a filo switch for frame trains.
pub const TRAIN_TOKEN: &str = "+train";
/// The data socket name's suffix when the switch agreed to trains (after [`VNET_SUFFIX`]).
pub const TRAIN_SUFFIX: &str = ".train";

/// What a filo switch agreed to, read from its data socket's name: `(vnet, trains)`. Other
/// switches name it `NNN.FD`, which agrees to nothing.
pub fn agreed_framing(switch_path: &Path) -> (bool, bool) {
    let name = switch_path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let (mut vnet, mut trains) = (false, false);
    for extra in name.split('.').skip(2) {
        match extra {
            "vnet" => vnet = true,
            "train" => trains = true,
            _ => return (false, false),
        }
    }
    (vnet, trains)
}

/// The data socket name's suffix that tells a client what the switch agreed to.
pub fn framing_suffix(vnet: bool, trains: bool) -> String {
    let mut s = String::new();
    if vnet {
        s.push_str(VNET_SUFFIX);
    }
    if trains {
        s.push_str(TRAIN_SUFFIX);
    }
    s
}

/// Whether clients ask for trains by default (`FILO_TRAINS=off` turns them off).
fn trains_by_default() -> bool {
    std::env::var("FILO_TRAINS").map_or(true, |v| v != "off" && v != "0")
}

impl VdeConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        VdeConfig {
            dir: dir.into(),
            port: PortRequest::Any,
            port_group: None,
            group: None,
            mode: 0o700,
            description: describe("filo:"),
            timeout: DEFAULT_TIMEOUT,
            vnet: false,
            trains: trains_by_default(),
        }
    }
}

/// The description vdeplug4 sends: `"<descr> user=<login> pid=<pid>"`, plus ` SSH=<ip>` when
/// running under ssh.
pub fn describe(descr: &str) -> String {
    let uid = sys::euid();
    let user = sys::user_name(uid).unwrap_or_else(|| uid.to_string());
    let mut text = format!("{descr} user={user} pid={}", std::process::id());
    if let Some(ssh) = std::env::var("SSH_CLIENT")
        .ok()
        .as_deref()
        .and_then(|s| s.split_whitespace().next())
    {
        text.push_str(" SSH=");
        text.push_str(ssh);
    }
    text
}

/// Why a switch could not be joined.
#[derive(Debug, thiserror::Error)]
pub enum VdeError {
    // The io::Error is part of the message, not a `source()`: printed as a chain it would
    // repeat. The same holds for `Io`.
    #[error("{}: no VDE switch there ({})", dir.display(), no_switch(ctl, err))]
    NoSwitch {
        dir: PathBuf,
        ctl: PathBuf,
        err: io::Error,
    },
    /// The control socket (or a directory on the way) is not ours to connect to.
    #[error("permission denied connecting to {}", ctl.display())]
    Denied { dir: PathBuf, ctl: PathBuf },
    #[error("{}: the switch did not answer within {timeout:?} (is it a VDE switch? is it stuck?)", dir.display())]
    NoAnswer { dir: PathBuf, timeout: Duration },
    #[error("{}: the switch closed the connection without a reply after {got} of 110 bytes ({})", dir.display(), refusal(port))]
    Refused {
        dir: PathBuf,
        got: usize,
        port: String,
    },
    #[error("{}: bad reply from the switch: {reason}", dir.display())]
    BadReply { dir: PathBuf, reason: String },
    #[error("{}: {what}: {err}", dir.display())]
    Io {
        dir: PathBuf,
        what: String,
        err: io::Error,
    },
}

/// The likely reason a switch closed without a reply, for the port asked for.
fn refusal(port: &str) -> String {
    if port == "(any)" {
        "no free port: the switch is full (or out of file descriptors: see its log)".into()
    } else {
        format!(
            "port {port} in use by another user, out of range, or refused (see the switch's log)"
        )
    }
}

/// Why connecting to `ctl` found no switch.
fn no_switch(ctl: &Path, err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::NotFound => format!("{} does not exist", ctl.display()),
        io::ErrorKind::ConnectionRefused => {
            format!(
                "nothing listens on {} (a switch that is gone?)",
                ctl.display()
            )
        }
        _ => format!("cannot connect to {}: {err}", ctl.display()),
    }
}

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// Removes the client's bound socket name when the connection attempt fails midway.
struct UnlinkOnDrop(Option<PathBuf>);

impl Drop for UnlinkOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

fn io_err(cfg: &VdeConfig, what: impl Into<String>) -> impl FnOnce(io::Error) -> VdeError + '_ {
    let what = what.into();
    move |err| VdeError::Io {
        dir: cfg.dir.clone(),
        what,
        err,
    }
}

fn is_socket(path: &Path) -> bool {
    fs::metadata(path)
        .map(|m| m.file_type().is_socket())
        .unwrap_or(false)
}

fn connect_ctl(cfg: &VdeConfig) -> Result<UnixStream, VdeError> {
    let ctl_path = if is_socket(&cfg.dir) {
        cfg.dir.clone()
    } else {
        cfg.dir.join("ctl")
    };
    let mut candidates = Vec::new();
    if let Some(group) = &cfg.port_group {
        candidates.push(cfg.dir.join(group));
    }
    candidates.push(ctl_path.clone());
    let mut last = None;
    for path in candidates {
        let sock = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)
            .map_err(io_err(cfg, "cannot create a socket"))?;
        let addr = SockAddr::unix(&path).map_err(io_err(cfg, "bad control socket path"))?;
        match sock.connect_timeout(&addr, cfg.timeout) {
            Ok(()) => return Ok(UnixStream::from(OwnedFd::from(sock))),
            Err(e)
                if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::WouldBlock =>
            {
                return Err(VdeError::NoAnswer {
                    dir: cfg.dir.clone(),
                    timeout: cfg.timeout,
                })
            }
            Err(e) => last = Some(e),
        }
    }
    let err = last.unwrap_or_else(|| io::Error::other("no candidate"));
    if err.kind() == io::ErrorKind::PermissionDenied {
        return Err(VdeError::Denied {
            dir: cfg.dir.clone(),
            ctl: ctl_path,
        });
    }
    Err(VdeError::NoSwitch {
        dir: cfg.dir.clone(),
        ctl: ctl_path,
        err,
    })
}

fn bind_data_socket(cfg: &VdeConfig) -> Result<(Socket, PathBuf), VdeError> {
    let pid = std::process::id();
    let dirs: Vec<PathBuf> = if cfg.dir.is_dir() {
        vec![
            cfg.dir.clone(),
            "/var/run".into(),
            "/var/tmp".into(),
            "/tmp".into(),
        ]
    } else {
        vec!["/var/run".into(), "/var/tmp".into(), "/tmp".into()]
    };
    let mut last = io::Error::other("no directory to bind in");
    for dir in dirs {
        let inside = dir == cfg.dir;
        for _ in 0..1000 {
            let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed) % 100_000;
            let name = if inside {
                format!(".{pid:05}-{seq:05}")
            } else {
                format!("vde.{pid:05}-{seq:05}")
            };
            let path = dir.join(name);
            let sock = Socket::new(Domain::UNIX, Type::DGRAM.cloexec(), None)
                .map_err(io_err(cfg, "cannot create a socket"))?;
            let addr = match SockAddr::unix(&path) {
                Ok(a) => a,
                Err(e) => {
                    last = e;
                    break;
                }
            };
            match sock.bind(&addr) {
                Ok(()) => return Ok((sock, path)),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                Err(e) => {
                    last = e;
                    break;
                }
            }
        }
    }
    Err(VdeError::Io {
        dir: cfg.dir.clone(),
        what: "cannot bind a data socket".into(),
        err: last,
    })
}

fn apply_permissions(cfg: &VdeConfig, path: &Path, ctl_path: &Path) -> Result<(), VdeError> {
    use std::os::unix::fs::MetadataExt;
    let mut mode = cfg.mode;
    let gid = match &cfg.group {
        Some(g) => Some(sys::group_id(g).ok_or_else(|| VdeError::Io {
            dir: cfg.dir.clone(),
            what: format!("unknown group {g:?}"),
            err: io::Error::from(io::ErrorKind::NotFound),
        })?),
        None => None,
    };
    if let Some(gid) = gid {
        sys::chown_group(path, gid).map_err(io_err(
            cfg,
            format!("cannot give {} to group {gid}", path.display()),
        ))?;
    } else if mode & 0o077 == 0 {
        // A switch run by another user must still reach our socket: share it with the
        // control socket's group, as vdeplug4 does.
        if let Ok(meta) = fs::metadata(ctl_path) {
            let euid = sys::euid();
            if meta.uid() != 0 && meta.uid() != euid {
                mode |= if sys::chown_group(path, meta.gid()).is_ok() {
                    0o070
                } else {
                    0o077
                };
            }
        }
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(io_err(cfg, format!("cannot chmod {}", path.display())))
}

/// The port asked for, as [`VdeError::Refused`] names it.
fn port_text(port: PortRequest) -> String {
    match port {
        PortRequest::Any => "(any)".into(),
        PortRequest::Zero => "0".into(),
        PortRequest::Port(n) => n.to_string(),
    }
}

fn read_reply(
    cfg: &VdeConfig,
    ctl: &mut UnixStream,
) -> Result<[u8; vde_request::REPLY_LEN], VdeError> {
    let mut reply = [0u8; vde_request::REPLY_LEN];
    let mut got = 0;
    let refused = |got| {
        Err(VdeError::Refused {
            dir: cfg.dir.clone(),
            got,
            port: port_text(cfg.port),
        })
    };
    // Capped (at ~31 years) so that a library caller's Duration::MAX cannot overflow the clock.
    let deadline = Instant::now() + cfg.timeout.min(Duration::from_secs(1_000_000_000));
    while got < reply.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(VdeError::NoAnswer {
                dir: cfg.dir.clone(),
                timeout: cfg.timeout,
            });
        }
        ctl.set_read_timeout(Some(left))
            .map_err(io_err(cfg, "cannot set a timeout"))?;
        match ctl.read(&mut reply[got..]) {
            // A switch that refuses closes the connection; unread request bytes make that a
            // reset.
            Ok(0) => refused(got)?,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => refused(got)?,
            Ok(n) => got += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(cfg, "reading the switch's reply")(e)),
        }
    }
    ctl.set_read_timeout(None)
        .map_err(io_err(cfg, "cannot clear the timeout"))?;
    Ok(reply)
}

/// Joins a vde switch.
pub fn connect(cfg: &VdeConfig) -> Result<ConnectedDgram, VdeError> {
    let mut ctl = connect_ctl(cfg)?;
    let ctl_path = if is_socket(&cfg.dir) {
        cfg.dir.clone()
    } else {
        cfg.dir.join("ctl")
    };
    let (data, own_path) = bind_data_socket(cfg)?;
    // Room for a few 64 KiB super-frames in flight; harmless for ordinary frames.
    let _ = data.set_send_buffer_size(1 << 20);
    let _ = data.set_recv_buffer_size(1 << 20);
    let _cleanup = UnlinkOnDrop(Some(own_path.clone()));
    apply_permissions(cfg, &own_path, &ctl_path)?;

    let mut request = [0u8; vde_request::V3_HEADER_LEN + vde_request::MAX_DESCRIPTION];
    let mut description = cfg.description.clone();
    for (wanted, token) in [(cfg.vnet, VNET_TOKEN), (cfg.trains, TRAIN_TOKEN)] {
        if wanted {
            description.push(' ');
            description.push_str(token);
        }
    }
    let len = vde_request::emit_request_v3(cfg.port, &own_path, &description, &mut request)
        .map_err(|e| VdeError::Io {
            dir: cfg.dir.clone(),
            what: e.to_string(),
            err: io::Error::from(io::ErrorKind::InvalidInput),
        })?;
    ctl.set_write_timeout(Some(cfg.timeout))
        .map_err(io_err(cfg, "cannot set a timeout"))?;
    ctl.write_all(&request[..len]).map_err(|e| match e.kind() {
        // Closed before the request was in: refused at once (out of ports or descriptors).
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => VdeError::Refused {
            dir: cfg.dir.clone(),
            got: 0,
            port: port_text(cfg.port),
        },
        _ => io_err(cfg, "sending the request")(e),
    })?;

    let reply = read_reply(cfg, &mut ctl)?;
    let switch_path = vde_request::parse_sockaddr(&reply).map_err(|e| VdeError::BadReply {
        dir: cfg.dir.clone(),
        reason: e.to_string(),
    })?;
    if switch_path.as_os_str().is_empty() {
        return Err(VdeError::BadReply {
            dir: cfg.dir.clone(),
            reason: "empty data socket path".into(),
        });
    }
    let addr =
        SockAddr::unix(&switch_path).map_err(io_err(cfg, "bad data socket path in reply"))?;
    data.connect(&addr).map_err(io_err(
        cfg,
        format!(
            "connecting to the switch's data socket {}",
            switch_path.display()
        ),
    ))?;
    // Not ours in general (owned by the switch): failure is expected and harmless.
    let _ = fs::set_permissions(&switch_path, fs::Permissions::from_mode(cfg.mode));
    ctl.set_nonblocking(true)
        .map_err(io_err(cfg, "cannot make the control socket non-blocking"))?;
    let (vnet, trains) = agreed_framing(&switch_path);
    ConnectedDgram::new(OwnedFd::from(data), Some(ctl), Refused::Fatal, false, "vde")
        .map(|c| {
            c.with_vnet(vnet && cfg.vnet)
                .with_trains(trains && cfg.trains)
        })
        .map_err(io_err(cfg, "data socket"))
    // `_cleanup` unlinks our bound name: the switch is connected to it already.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_socket_name_says_what_the_switch_agreed_to() {
        for (vnet, trains) in [(false, false), (true, false), (false, true), (true, true)] {
            let name = format!("/tmp/sw/003.12{}", framing_suffix(vnet, trains));
            assert_eq!(agreed_framing(Path::new(&name)), (vnet, trains), "{name}");
        }
        // vde_switch's own names, and names with anything unknown, agree to nothing.
        assert_eq!(agreed_framing(Path::new("/tmp/sw/001.6")), (false, false));
        assert_eq!(
            agreed_framing(Path::new("/tmp/sw/001.6.train.zip")),
            (false, false)
        );
        assert_eq!(agreed_framing(Path::new("/")), (false, false));
    }
}
