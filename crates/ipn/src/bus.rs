//! Finding, creating and serving a bus at a path.
//!
//! The bus is a sealed memfd (header, member records, ring) plus one eventfd per member
//! slot, all created by the first process that opens the path. A later process connects to
//! the UNIX socket at PATH and receives the memfd and every eventfd in one message
//! (SCM_RIGHTS); it then takes a member slot by locking a byte of the memfd (an
//! open-file-description lock, see [`crate::sys::lock_byte`]) — no owner is involved in
//! joining, leaving or dying: the kernel releases a dead member's lock, and any member can
//! tell a dead member from a slow one by testing that lock.
//!
//! **Who serves the socket.** Every process on the bus runs a server thread; the one holding
//! `flock` on `PATH.lock` serves, the others wait for that lock. There is no owner process to
//! start first or to lose: when the serving process exits or is killed, the kernel drops its
//! flock, another member takes over within 100 ms and rebinds PATH, and new members keep
//! joining the same shared memory (a dedicated owner, `filo ipn PATH`, is the same code
//! without a member slot). A newcomer that finds PATH but nobody listening waits for that
//! takeover before it creates a new bus.
//!
//! **Access control** is the socket file's mode and group (`mode=`, `group=`), as with
//! vdeplug4's msocket: connecting needs write permission on PATH.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::layout::{self, MAX_MEMBERS};
use crate::ring::{self, BusParams, Fds, Member};
use crate::sys::{self, Region};

const HELLO: &[u8; 8] = b"filoIPN1";
/// How often a waiting server thread tries to take over, and a serving one looks for dead
/// members.
const TICK: Duration = Duration::from_millis(100);
/// How long a newcomer lets the members of an orphaned bus take over its socket.
const TAKEOVER_GRACE: Duration = Duration::from_millis(600);

/// Why a bus could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum IpnError {
    #[error("{path}: permission denied (the bus's socket file decides who may join)")]
    Permission { path: String },
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path}: {reason}")]
    BadBus { path: String, reason: String },
    #[error("{path}: the bus is full ({MAX_MEMBERS} members)")]
    Full { path: String },
}

/// How to open (or create) a bus.
#[derive(Debug, Clone)]
pub struct BusOptions {
    /// Used only when this process creates the bus.
    pub params: BusParams,
    /// Mode of the socket and lock files when this process creates them.
    pub mode: u32,
    pub group: Option<String>,
    /// Give up joining after this long.
    pub timeout: Duration,
    /// Only join: never create (`filo ipn stat`).
    pub join_only: bool,
}

impl Default for BusOptions {
    fn default() -> Self {
        BusOptions {
            params: BusParams::default(),
            mode: 0o600,
            group: None,
            timeout: Duration::from_secs(5),
            join_only: false,
        }
    }
}

/// What every process on a bus holds.
struct Shared {
    region: Arc<Region>,
    memfd: OwnedFd,
    wake: Arc<Vec<OwnedFd>>,
    params: BusParams,
}

/// A process's handle on a bus: the mapping, the descriptors and the server thread.
pub struct Bus {
    shared: Arc<Shared>,
    path: PathBuf,
    stop: Arc<AtomicBool>,
    server: Option<JoinHandle<()>>,
    created: bool,
}

fn lock_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

impl Bus {
    /// Joins the bus at `path`, creating it when nobody serves it.
    pub fn open(path: &Path, opts: &BusOptions) -> Result<Bus, IpnError> {
        let name = path.display().to_string();
        let io_err = |source: io::Error| IpnError::Io {
            path: name.clone(),
            source,
        };
        let deadline = Instant::now() + opts.timeout;
        let mut refused_since: Option<Instant> = None;
        loop {
            match UnixStream::connect(path) {
                Ok(sock) => {
                    let shared = receive(&sock, opts.timeout).map_err(|e| match e {
                        Received::Io(source) => IpnError::Io {
                            path: name.clone(),
                            source,
                        },
                        Received::Bad(reason) => IpnError::BadBus {
                            path: name.clone(),
                            reason,
                        },
                    })?;
                    return Ok(Bus::start(shared, path, opts, None, false));
                }
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    return Err(IpnError::Permission { path: name })
                }
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        || e.kind() == io::ErrorKind::ConnectionRefused =>
                {
                    if opts.join_only {
                        if e.kind() == io::ErrorKind::NotFound || Instant::now() > deadline {
                            return Err(IpnError::BadBus {
                                path: name,
                                reason: "no bus serves this path".into(),
                            });
                        }
                    } else {
                        if let Some(reason) = not_a_socket(path) {
                            return Err(IpnError::BadBus { path: name, reason });
                        }
                        let refused = e.kind() == io::ErrorKind::ConnectionRefused;
                        let since = *refused_since.get_or_insert_with(Instant::now);
                        if !refused || since.elapsed() > TAKEOVER_GRACE {
                            if let Some(lock) = take_lock(path, opts).map_err(&io_err)? {
                                let shared = create(&opts.params).map_err(&io_err)?;
                                let bus = Bus::start(shared, path, opts, Some(lock), true);
                                return Ok(bus);
                            }
                        }
                    }
                    if Instant::now() > deadline {
                        return Err(io_err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "nobody serves the bus and it could not be created",
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(io_err(e)),
            }
        }
    }

    fn start(
        shared: Shared,
        path: &Path,
        opts: &BusOptions,
        lock: Option<OwnedFd>,
        created: bool,
    ) -> Bus {
        let shared = Arc::new(shared);
        let stop = Arc::new(AtomicBool::new(false));
        let server = Server {
            shared: shared.clone(),
            path: path.to_path_buf(),
            mode: opts.mode,
            group: opts.group.clone(),
            stop: stop.clone(),
        };
        let server = if opts.join_only {
            None
        } else {
            std::thread::Builder::new()
                .name("ipn-server".into())
                .spawn(move || server.run(lock))
                .ok()
        };
        Bus {
            shared,
            path: path.to_path_buf(),
            stop,
            server,
            created,
        }
    }

    /// Whether this process created the bus.
    pub fn created(&self) -> bool {
        self.created
    }

    pub fn params(&self) -> &BusParams {
        &self.shared.params
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The shared region (read-only uses: statistics, tests).
    pub fn region(&self) -> &Arc<Region> {
        &self.shared.region
    }

    /// The bus's memfd (tests map it to play a hostile member).
    pub fn memfd(&self) -> RawFd {
        self.shared.memfd.as_raw_fd()
    }

    /// Takes a free member slot: its eventfd is the member's data descriptor.
    pub fn member(&self, tag: u32) -> Result<(Member, RawFd), IpnError> {
        let name = self.path.display().to_string();
        let lock = sys::reopen(self.shared.memfd.as_fd()).map_err(|source| IpnError::Io {
            path: name.clone(),
            source,
        })?;
        for i in 0..MAX_MEMBERS {
            if matches!(sys::lock_byte(lock.as_fd(), i as u64), Ok(true)) {
                let efd = self.shared.wake[i].as_raw_fd();
                let fds = Fds {
                    lock,
                    wake: self.shared.wake.clone(),
                };
                let member = Member::join(
                    self.shared.region.clone(),
                    self.shared.params,
                    i,
                    tag,
                    Some(fds),
                );
                return Ok((member, efd));
            }
        }
        Err(IpnError::Full { path: name })
    }

    /// Every member's eventfd (member i's data descriptor is entry i).
    pub fn wake_fds(&self) -> Arc<Vec<OwnedFd>> {
        self.shared.wake.clone()
    }

    /// Every member's record.
    pub fn records(&self) -> Vec<ring::MemberRecord> {
        ring::records(&self.shared.region)
    }

    /// Bus-wide counters: evictions and dead members reclaimed.
    pub fn counters(&self) -> (u64, u64) {
        let r = &self.shared.region;
        (
            r.load64(layout::H_EVICTIONS, Ordering::Relaxed),
            r.load64(layout::H_RECLAIMED, Ordering::Relaxed),
        )
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.server.take() {
            let _ = t.join();
        }
    }
}

/// Why PATH cannot be a bus's socket: something other than a socket is there.
fn not_a_socket(path: &Path) -> Option<String> {
    use std::os::unix::fs::FileTypeExt;
    let m = std::fs::symlink_metadata(path).ok()?;
    (!m.file_type().is_socket()).then(|| {
        "the path exists and is not a socket (expected a bus's socket or nothing)".to_string()
    })
}

fn take_lock(path: &Path, opts: &BusOptions) -> io::Result<Option<OwnedFd>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(opts.mode)
        .open(lock_path(path))?;
    let fd = OwnedFd::from(file);
    Ok(sys::try_flock(fd.as_fd())?.then_some(fd))
}

fn create(params: &BusParams) -> io::Result<Shared> {
    let len = params.geometry.region_len();
    let memfd = sys::sealed_memfd("filo-ipn", len)?;
    let region = Region::map(memfd.as_fd(), len)?;
    ring::init(&region, params);
    let wake = (0..MAX_MEMBERS)
        .map(|_| sys::eventfd())
        .collect::<io::Result<Vec<_>>>()?;
    Ok(Shared {
        region: Arc::new(region),
        memfd,
        wake: Arc::new(wake),
        params: *params,
    })
}

enum Received {
    Io(io::Error),
    Bad(String),
}

fn receive(sock: &UnixStream, timeout: Duration) -> Result<Shared, Received> {
    sys::set_recv_timeout(sock.as_fd(), timeout).map_err(Received::Io)?;
    let mut hello = [0u8; 16];
    let (n, mut fds) = sys::recv_fds(sock.as_fd(), &mut hello).map_err(Received::Io)?;
    if n != HELLO.len() || &hello[..n] != HELLO || fds.len() != 1 + MAX_MEMBERS {
        return Err(Received::Bad(format!(
            "not a filo ipn bus (got {n} bytes and {} descriptors)",
            fds.len()
        )));
    }
    let wake = fds.split_off(1);
    let memfd = fds.pop().ok_or(Received::Bad("no memfd".into()))?;
    let (size, sealed) = sys::memfd_size_sealed(memfd.as_fd()).map_err(Received::Io)?;
    if !sealed {
        return Err(Received::Bad(
            "the bus's memory is not sealed against shrinking".into(),
        ));
    }
    let region = Region::map(memfd.as_fd(), size).map_err(Received::Io)?;
    let params = ring::read_params(&region).map_err(Received::Bad)?;
    Ok(Shared {
        region: Arc::new(region),
        memfd,
        wake: Arc::new(wake),
        params,
    })
}

struct Server {
    shared: Arc<Shared>,
    path: PathBuf,
    mode: u32,
    group: Option<String>,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn run(self, mut lock: Option<OwnedFd>) {
        sys::block_all_signals();
        let mut listener: Option<UnixListener> = None;
        let probe = sys::reopen(self.shared.memfd.as_fd()).ok();
        let mut last_scan = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            if lock.is_none() {
                lock = self.try_takeover();
                if lock.is_none() {
                    std::thread::sleep(TICK);
                    continue;
                }
            }
            if listener.is_none() {
                match self.bind() {
                    Ok(l) => listener = Some(l),
                    Err(e) => {
                        tracing::warn!("ipn: cannot serve {}: {e}", self.path.display());
                        std::thread::sleep(TICK);
                        continue;
                    }
                }
            }
            if let Some(l) = &listener {
                if let Ok(Some(conn)) = accept_within(l, TICK) {
                    let mut fds = vec![self.shared.memfd.as_raw_fd()];
                    fds.extend(self.shared.wake.iter().map(|f| f.as_raw_fd()));
                    if let Err(e) = sys::send_fds(conn.as_fd(), HELLO, &fds) {
                        tracing::debug!("ipn: a joining member left early: {e}");
                    }
                }
            }
            if last_scan.elapsed() > TICK {
                last_scan = Instant::now();
                if let Some(p) = &probe {
                    reclaim_dead(&self.shared.region, p);
                }
            }
        }
        // Leaving: when no other member is alive, remove the socket so the next process
        // creates a bus at once; otherwise leave it for a member to take over.
        if listener.is_some() {
            let alive = probe.as_ref().is_some_and(|p| {
                (0..MAX_MEMBERS).any(|i| matches!(sys::byte_locked(p.as_fd(), i as u64), Ok(true)))
            });
            if !alive {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }

    fn try_takeover(&self) -> Option<OwnedFd> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(lock_path(&self.path))
            .ok()?;
        let fd = OwnedFd::from(file);
        match sys::try_flock(fd.as_fd()) {
            Ok(true) => {
                tracing::info!("ipn: this process now serves {}", self.path.display());
                Some(fd)
            }
            _ => None,
        }
    }

    fn bind(&self) -> io::Result<UnixListener> {
        // Only a socket (ours, stale: this process holds the bus's lock) is replaced; a file
        // of another kind at PATH is an error, never deleted.
        use std::os::unix::fs::FileTypeExt;
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.file_type().is_socket() => std::fs::remove_file(&self.path)?,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "the path exists and is not a socket",
                ))
            }
            Err(_) => {}
        }
        let l = UnixListener::bind(&self.path)?;
        sys::chmod(&self.path, self.mode)?;
        if let Some(g) = &self.group {
            let gid = filo_vnl::sys::group_id(g).ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("no group {g:?}"))
            })?;
            filo_vnl::sys::chown_group(&self.path, gid)?;
            let _ = filo_vnl::sys::chown_group(&lock_path(&self.path), gid);
        }
        l.set_nonblocking(true)?;
        Ok(l)
    }
}

fn accept_within(l: &UnixListener, wait: Duration) -> io::Result<Option<UnixStream>> {
    let mut entries = [filo_vnl::sys::PollEntry::new(l.as_raw_fd(), true, false)];
    if filo_vnl::sys::poll(&mut entries, Some(wait))? == 0 {
        return Ok(None);
    }
    match l.accept() {
        Ok((s, _)) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// Frees the records of members whose process is gone (their lock is free).
fn reclaim_dead(region: &Region, probe: &OwnedFd) {
    for i in 0..MAX_MEMBERS {
        let rec = layout::member(i) + layout::M_STATE;
        let state = region.load32(rec, Ordering::Acquire);
        if state == layout::STATE_FREE {
            continue;
        }
        if matches!(sys::byte_locked(probe.as_fd(), i as u64), Ok(false))
            && region.cas32(rec, state, layout::STATE_FREE)
        {
            region.add32(layout::H_EPOCH, 1);
            region.add64(layout::H_RECLAIMED, 1);
            tracing::info!("ipn: member {i} is gone; its slot is free");
        }
    }
}
