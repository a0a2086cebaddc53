//! The control socket: accepting clients and answering their v3/v1 requests.

use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use filo_vnl::sys;
use filo_vnl::transport::vde;
use filo_vnl::wire::vde_request::{self, PortRequest, Request, RequestError};
use socket2::{Domain, SockAddr, Socket, Type};

use super::endpoint::{Endpoint, EndpointIo};
use super::{Switch, T_PENDING};
use crate::core::PortId;
use crate::state::{Access, EndpointInfo, EndpointKind};

/// A client must send its whole request within this time.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections waiting for their request at once; more are closed at accept.
const MAX_PENDING: usize = 256;

pub(crate) struct Pending {
    pub(crate) stream: UnixStream,
    buf: Vec<u8>,
    pub(crate) deadline: Instant,
}

/// Why a request was refused (logged; the connection is closed).
#[derive(Debug)]
enum Refusal {
    Malformed(RequestError),
    NoSuchPort(u32),
    NoFreePort,
    PortInUse { port: PortId, owner: u32, user: u32 },
    AccessDenied { port: PortId, user: u32 },
    BadClientSocket(String),
    Io(io::Error),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Malformed(e) => write!(f, "malformed request: {e}"),
            Refusal::NoSuchPort(p) => write!(f, "port {p} does not exist"),
            Refusal::NoFreePort => write!(f, "no free port"),
            Refusal::PortInUse { port, owner, user } => {
                write!(
                    f,
                    "port {port} is in use by uid {owner} (request from uid {user})"
                )
            }
            Refusal::AccessDenied { port, user } => write!(f, "uid {user} may not use port {port}"),
            Refusal::BadClientSocket(why) => write!(f, "bad client socket: {why}"),
            Refusal::Io(e) if super::out_of_fds(e) => write!(
                f,
                "{e} (out of file descriptors: raise the limit with ulimit -n, or connect fewer clients)"
            ),
            Refusal::Io(e) => write!(f, "{e}"),
        }
    }
}

impl Switch {
    pub(crate) fn accept_control(&mut self, now: Instant) {
        super::accept_into(
            "control",
            &self.ctl,
            &self.epoll,
            &mut self.pending,
            T_PENDING,
            MAX_PENDING,
            super::FdReserve {
                spare: &mut self.spare_fd,
                refused: &mut self.state.refused_no_fds,
            },
            |stream| Pending {
                stream,
                buf: Vec::with_capacity(vde_request::MAX_REQUEST + 1),
                deadline: now + REQUEST_TIMEOUT,
            },
        );
    }

    fn drop_pending(&mut self, slot: usize) -> Option<Pending> {
        let p = self.pending.get_mut(slot)?.take()?;
        self.epoll.delete(p.stream.as_raw_fd());
        Some(p)
    }

    pub(crate) fn on_pending(&mut self, slot: usize, now: Instant) {
        let Some(p) = self.pending.get_mut(slot).and_then(|p| p.as_mut()) else {
            return;
        };
        let mut chunk = [0u8; vde_request::MAX_REQUEST + 1];
        let room = vde_request::MAX_REQUEST + 1 - p.buf.len();
        match p.stream.read(&mut chunk[..room]) {
            Ok(0) => {
                self.drop_pending(slot);
                return;
            }
            Ok(n) => p.buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(_) => {
                self.drop_pending(slot);
                return;
            }
        }
        match Request::parse(&p.buf) {
            // The header may arrive in pieces: wait for the rest (until the deadline).
            Err(RequestError::TooShort(_)) => {}
            Err(e) => {
                tracing::warn!("control connection closed: {}", Refusal::Malformed(e));
                self.drop_pending(slot);
            }
            Ok(_) => {
                let Some(p) = self.drop_pending(slot) else {
                    return;
                };
                if let Err(why) = self.answer(p, now) {
                    if matches!(&why, Refusal::Io(e) if super::out_of_fds(e)) {
                        self.state.refused_no_fds += 1;
                    }
                    tracing::warn!("control connection closed: {why}");
                }
            }
        }
    }

    fn answer(&mut self, p: Pending, now: Instant) -> Result<(), Refusal> {
        let req = Request::parse(&p.buf).map_err(Refusal::Malformed)?;
        let _ = now;
        // Who is asking: the peer's credentials, and the owner of the socket it names (which
        // must be theirs, so a client cannot make the switch talk to someone else's socket).
        let peer = sys::peer_uid(p.stream.as_raw_fd()).map_err(Refusal::Io)?;
        let user = if req.data_path.as_os_str().is_empty() {
            return Err(Refusal::BadClientSocket("no data socket path".into()));
        } else {
            let meta = fs::symlink_metadata(&req.data_path).map_err(|e| {
                Refusal::BadClientSocket(format!("{}: {e}", req.data_path.display()))
            })?;
            if peer != 0 && meta.uid() != peer {
                return Err(Refusal::BadClientSocket(format!(
                    "{} belongs to uid {}, not to the connecting uid {peer}",
                    req.data_path.display(),
                    meta.uid()
                )));
            }
            meta.uid()
        };
        let port = self.choose_port(req.port, user)?;
        let ctl_fd = p.stream.as_raw_fd();
        // Switch-side data socket, connected to the client's and named like vde_switch's.
        // A filo client may ask for virtio-net framing (TCP super-frames) and frame trains;
        // agreeing is signalled by the data socket's name, which other clients never look at.
        let description = req.description_text();
        let asks = |token| description.split_whitespace().any(|t| t == token);
        let vnet = asks(vde::VNET_TOKEN);
        let trains = asks(vde::TRAIN_TOKEN);
        let suffix = vde::framing_suffix(vnet, trains);
        let path = self
            .state
            .info
            .ctl_dir
            .join(format!("{:03}.{}{suffix}", port, ctl_fd));
        let _ = fs::remove_file(&path);
        let sock = Socket::new(Domain::UNIX, Type::DGRAM.cloexec().nonblocking(), None)
            .map_err(Refusal::Io)?;
        sock.connect(&SockAddr::unix(&req.data_path).map_err(Refusal::Io)?)
            .map_err(|e| {
                Refusal::BadClientSocket(format!(
                    "cannot connect to {}: {e}",
                    req.data_path.display()
                ))
            })?;
        sock.bind(&SockAddr::unix(&path).map_err(Refusal::Io)?)
            .map_err(Refusal::Io)?;
        let _ = sock.set_send_buffer_size(1 << 20);
        let _ = sock.set_recv_buffer_size(1 << 20);
        let mode = self.state.info.mode;
        let file_mode = if sys::euid() == 0 { mode & 0o700 } else { mode };
        let _ = fs::set_permissions(&path, fs::Permissions::from_mode(file_mode));
        let gid = self.cfg.group.as_deref().and_then(sys::group_id);
        let _ = sys::chown(&path, Some(user), gid);
        let mut reply = [0u8; vde_request::REPLY_LEN];
        if vde_request::emit_sockaddr(&path, &mut reply).is_err() {
            let _ = fs::remove_file(&path);
            return Err(Refusal::BadClientSocket(format!(
                "data socket path {} is too long",
                path.display()
            )));
        }
        let mut stream = p.stream;
        if let Err(e) = stream.write_all(&reply) {
            let _ = fs::remove_file(&path);
            return Err(Refusal::Io(e));
        }
        tracing::info!("port {port}: new endpoint {ctl_fd} uid {user}: {description}");
        let mut ep = Endpoint::new(
            port,
            ctl_fd as u32,
            EndpointIo::Dgram(OwnedFd::from(sock)),
            Some(stream),
            Some(path),
        );
        ep.vnet = vnet;
        ep.trains = trains;
        ep.client_socket = self.client_socket_in_dir(&req.data_path);
        let info = EndpointInfo {
            id: ctl_fd as u32,
            kind: EndpointKind::UnixProg,
            description,
            uid: Some(user),
        };
        self.add_endpoint(ep, info);
        Ok(())
    }

    /// The client's data socket, if it is a hidden name (`.PID-SEQ`, as vdeplug and filo bind
    /// them) right in the switch directory: the switch may tidy those up; nothing else.
    fn client_socket_in_dir(
        &self,
        path: &std::path::Path,
    ) -> Option<(std::path::PathBuf, u64, u64)> {
        use std::os::unix::fs::FileTypeExt;
        let name = path.file_name()?.to_str()?;
        let hidden = name.strip_prefix('.')?;
        if path.parent()? != self.state.info.ctl_dir.as_path()
            || !hidden.bytes().all(|b| b.is_ascii_digit() || b == b'-')
        {
            return None;
        }
        let meta = fs::symlink_metadata(path).ok()?;
        meta.file_type()
            .is_socket()
            .then(|| (path.to_path_buf(), meta.dev(), meta.ino()))
    }

    /// Bytes on an endpoint's control connection: the rest of a request written in pieces
    /// (its description came after the header was answered) is read and dropped; EOF, an
    /// error or more than a description's worth of bytes end the endpoint.
    pub(crate) fn on_endpoint_ctl(&mut self, slot: usize) {
        let Some(ep) = self.endpoints.get_mut(slot).and_then(|e| e.as_mut()) else {
            return;
        };
        let Some(ctl) = ep.ctl.as_mut() else {
            return;
        };
        let mut buf = [0u8; vde_request::MAX_DESCRIPTION + 1];
        match ctl.read(&mut buf) {
            Ok(n) if n > 0 && ep.late_bytes + n <= vde_request::MAX_DESCRIPTION => {
                ep.late_bytes += n;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            _ => self.close_endpoint(slot, "control connection closed"),
        }
    }

    fn choose_port(&mut self, request: PortRequest, user: u32) -> Result<PortId, Refusal> {
        let port = match request {
            PortRequest::Zero => 0,
            PortRequest::Port(n) => {
                if n >= self.state.numports as u32 {
                    return Err(Refusal::NoSuchPort(n));
                }
                n as PortId
            }
            PortRequest::Any => self.state.free_port().ok_or(Refusal::NoFreePort)?,
        };
        let entry = self
            .state
            .port_mut(port)
            .ok_or(Refusal::NoSuchPort(port as u32))?;
        // Several endpoints may share a port only if they belong to the same user.
        if let Some(owner) = entry.current_user() {
            if owner != user && user != 0 {
                return Err(Refusal::PortInUse { port, owner, user });
            }
        }
        let allowed_user = match entry.acl_user {
            Access::None | Access::Any => true,
            Access::Id(u) => u == user || user == 0,
        };
        let allowed_group = match entry.acl_group {
            Access::None | Access::Any => true,
            Access::Id(g) => user == 0 || user_in_group(user, g),
        };
        if !(allowed_user && allowed_group) {
            return Err(Refusal::AccessDenied { port, user });
        }
        Ok(port)
    }
}

/// Whether `uid`'s primary group is `gid` (supplementary groups are not consulted).
fn user_in_group(uid: u32, gid: u32) -> bool {
    fs::read_to_string("/etc/passwd").ok().and_then(|text| {
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.get(2)?.parse::<u32>().ok()? == uid)
                .then(|| f.get(3)?.parse::<u32>().ok())
                .flatten()
        })
    }) == Some(gid)
}
