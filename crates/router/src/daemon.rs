//! The router daemon: one plug per interface joined through the [`Router`] core, with a
//! management console on a UNIX socket. One `poll` loop: plugs in (batches), core, plugs out;
//! time is read once per turn. A frame for a plug that would block waits in a bounded
//! backlog; beyond it, it is dropped and counted (`stat`: `drop tx_queue_full`).

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use filo_dhcp::server::LeaseFile;
use filo_vnl::mgmt::Conn;
use filo_vnl::sys::{self, PollEntry};
use filo_vnl::{FrameBatch, Plug};

use crate::console::{self, DriverStats, Effect};
use crate::core::Router;

/// Frames waiting per plug that would block, and their bytes at most (super-frames are up to
/// 64 KiB each).
const BACKLOG: usize = 1024;
const BACKLOG_BYTES: usize = 4 << 20;
const BATCH: usize = 64;
/// Super-frames received at once (64 KiB buffers each).
const BIG_BATCH: usize = 16;

/// Why the daemon stopped.
#[derive(Debug)]
pub enum End {
    /// Every plug's other side went away (each interface's reason).
    Hangup(String),
    /// `shutdown` on the console.
    Shutdown,
    /// The stop flag (a signal).
    Stopped,
}

pub struct Daemon {
    router: Router,
    plugs: Vec<Plug>,
    backlog: Vec<VecDeque<Vec<u8>>>,
    backlog_bytes: Vec<usize>,
    mgmt: Option<(UnixListener, PathBuf)>,
    conns: Vec<Conn<()>>,
    batch: FrameBatch,
    /// For plugs with the `+vnet` framing: room for 64 KiB super-frames.
    big_batch: Option<FrameBatch>,
    stats: DriverStats,
    /// Lease files by interface.
    lease_files: Vec<(usize, LeaseFile)>,
    next_lease_save: Instant,
}

/// How often changed leases are written to their files (and once more at exit).
const LEASE_SAVE: Duration = Duration::from_secs(2);

impl Daemon {
    /// `plugs[i]` is interface `i` of `router`.
    pub fn new(
        mut router: Router,
        plugs: Vec<Plug>,
        mgmt: Option<(PathBuf, u32)>,
    ) -> io::Result<Daemon> {
        let mgmt = match mgmt {
            Some((path, mode)) => Some((filo_vnl::mgmt::listen(&path, mode)?, path)),
            None => None,
        };
        for (i, p) in plugs.iter().enumerate() {
            router
                .set_vnet(i, p.vnet())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        }
        let n = plugs.len();
        Ok(Daemon {
            router,
            backlog: plugs.iter().map(|_| VecDeque::new()).collect(),
            backlog_bytes: vec![0; plugs.len()],
            plugs,
            mgmt,
            conns: Vec::new(),
            batch: FrameBatch::new(BATCH),
            big_batch: None,
            stats: DriverStats {
                down: vec![None; n],
                ..DriverStats::default()
            },
            lease_files: Vec::new(),
            next_lease_save: Instant::now(),
        })
    }

    /// Keeps the leases of `iface`'s DHCP server in `path`: loads what is there now (lines that
    /// cannot be loaded are returned as `LINE: why`), then writes changes every
    /// [`LEASE_SAVE`] and at exit ([`LeaseFile`]).
    pub fn keep_leases(&mut self, iface: usize, path: PathBuf) -> io::Result<Vec<String>> {
        let clock = self.router.server_clock(Instant::now());
        let Some(server) = self.router.dhcp_server_mut(iface) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("vde{iface} has no DHCP server"),
            ));
        };
        let (file, errors) = LeaseFile::open(server, path, clock)?;
        self.lease_files.push((iface, file));
        Ok(errors.iter().map(|e| e.to_string()).collect())
    }

    fn save_leases(&mut self, now: Instant) {
        let clock = self.router.server_clock(now);
        for (iface, file) in self.lease_files.iter_mut() {
            let Some(server) = self.router.dhcp_server(*iface) else {
                continue;
            };
            if let Err(e) = file.save(server, clock) {
                tracing::warn!("{}: leases not saved: {e}", file.path().display());
            }
        }
    }

    /// [`Daemon::run`], then the leases written a last time.
    pub fn run_and_save(&mut self, stop: &AtomicBool) -> io::Result<End> {
        let end = self.run(stop);
        self.save_leases(Instant::now());
        end
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Runs until a plug hangs up, `shutdown`, or `stop`.
    pub fn run(&mut self, stop: &AtomicBool) -> io::Result<End> {
        let mut entries: Vec<PollEntry> = Vec::new();
        let n = self.plugs.len();
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(End::Stopped);
            }
            let now = Instant::now();
            self.router.handle_timeout(now);
            self.transmit();
            if !self.lease_files.is_empty() && now >= self.next_lease_save {
                self.save_leases(now);
                self.next_lease_save = now + LEASE_SAVE;
            }
            entries.clear();
            let mut timeout = Duration::from_millis(500);
            if let Some(at) = self.router.poll_at() {
                timeout = timeout.min(at.saturating_duration_since(now));
            }
            for i in 0..n {
                // An interface that is down is left out (poll ignores a negative descriptor).
                if self.is_down(i) {
                    entries.push(PollEntry::new(-1, false, false));
                    entries.push(PollEntry::new(-1, false, false));
                    continue;
                }
                if self.plugs[i].has_pending_input() {
                    timeout = Duration::ZERO;
                }
                entries.push(PollEntry::new(
                    self.plugs[i].data_fd().as_raw_fd(),
                    true,
                    false,
                ));
                let want_write = !self.backlog[i].is_empty() || self.plugs[i].has_pending_output();
                entries.push(PollEntry::new(
                    self.plugs[i].write_fd().as_raw_fd(),
                    false,
                    want_write,
                ));
            }
            let ctl: Vec<(usize, RawFd)> = (0..n)
                .filter(|&i| !self.is_down(i))
                .filter_map(|i| self.plugs[i].ctl_fd().map(|fd| (i, fd.as_raw_fd())))
                .collect();
            for &(_, fd) in &ctl {
                entries.push(PollEntry::new(fd, true, false));
            }
            let mgmt_at = entries.len();
            if let Some((l, _)) = &self.mgmt {
                entries.push(PollEntry::new(l.as_raw_fd(), true, false));
            }
            let conns_at = entries.len();
            for c in &self.conns {
                entries.push(PollEntry::new(c.fd(), true, c.has_output()));
            }
            sys::poll(&mut entries, Some(timeout))?;
            let now = Instant::now();
            for (k, &(i, _)) in ctl.iter().enumerate() {
                let e = entries[2 * n + k].ready;
                if e.readable || e.hangup {
                    self.set_down(i, "the switch closed the connection".into());
                }
            }
            for i in 0..n {
                if self.is_down(i) {
                    continue;
                }
                if entries[2 * i + 1].ready.writable {
                    self.flush_backlog(i);
                }
                let r = entries[2 * i].ready;
                if r.readable || r.hangup || self.plugs[i].has_pending_input() {
                    if let Err(e) = self.read_plug(i, now) {
                        self.set_down(i, e.to_string());
                    }
                }
            }
            if self.stats.down.iter().all(Option::is_some) {
                let why: Vec<&str> = self
                    .stats
                    .down
                    .iter()
                    .flatten()
                    .map(String::as_str)
                    .collect();
                return Ok(End::Hangup(why.join("; ")));
            }
            self.transmit();
            if self.mgmt.is_some() && entries.get(mgmt_at).is_some_and(|e| e.ready.readable) {
                self.accept();
            }
            let ready: Vec<bool> = entries[conns_at..]
                .iter()
                .map(|e| e.ready.readable || e.ready.writable || e.ready.hangup)
                .collect();
            if let Some(end) = self.serve_consoles(&ready, now) {
                return Ok(end);
            }
        }
    }

    fn is_down(&self, i: usize) -> bool {
        self.stats.down.get(i).is_some_and(Option::is_some)
    }

    /// Interface `i` is gone (its switch closed the connection, its tap went away with its
    /// namespace): the router routes on without it; what it has to send there is dropped and
    /// counted (`stat`: `drop link_down`, and a `down` line naming the interface and why).
    fn set_down(&mut self, i: usize, reason: String) {
        if self.is_down(i) {
            return;
        }
        let name = self.router.iface_config(i).map_or("?", |c| c.name.as_str());
        tracing::warn!(
            "{name} ({}) is down: {reason}; routing on without it",
            self.plugs[i].name()
        );
        self.stats.down[i] = Some(format!("{}: {reason}", self.plugs[i].name()));
        self.stats.link_down += self.backlog[i].len() as u64;
        for f in std::mem::take(&mut self.backlog[i]) {
            self.router.recycle(f);
        }
        self.backlog_bytes[i] = 0;
    }

    fn read_plug(&mut self, i: usize, now: Instant) -> io::Result<()> {
        for _ in 0..4 {
            let vnet = self.plugs[i].vnet();
            let batch = if vnet {
                self.big_batch.get_or_insert_with(|| {
                    FrameBatch::with_frame_size(BIG_BATCH, filo_vnl::plug::VNET_FRAME_BUF)
                })
            } else {
                &mut self.batch
            };
            match self.plugs[i].recv_batch(batch) {
                Ok(k) => {
                    for f in batch.frames() {
                        self.router.handle_frame(now, i, f);
                    }
                    if k < if vnet { BIG_BATCH } else { BATCH } {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Everything the core has to send, batched per plug.
    fn transmit(&mut self) {
        let mut per: Vec<Vec<Vec<u8>>> = self.plugs.iter().map(|_| Vec::new()).collect();
        while let Some((i, f)) = self.router.poll_transmit() {
            if let Some(q) = per.get_mut(i) {
                q.push(f);
            }
        }
        for (i, frames) in per.into_iter().enumerate() {
            if frames.is_empty() {
                continue;
            }
            if self.is_down(i) {
                self.stats.link_down += frames.len() as u64;
                for f in frames {
                    self.router.recycle(f);
                }
                continue;
            }
            let mut sent = 0;
            if self.backlog[i].is_empty() {
                let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
                while sent < refs.len() {
                    match self.plugs[i].send_batch(&refs[sent..]) {
                        Ok(k) => sent += k.max(1),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            tracing::warn!("{}: frames not sent: {e}", self.plugs[i].name());
                            self.stats.tx_error += (refs.len() - sent) as u64;
                            sent = refs.len();
                        }
                    }
                }
            }
            let mut frames = frames.into_iter();
            for f in frames.by_ref().take(sent) {
                self.router.recycle(f);
            }
            for f in frames {
                if self.backlog[i].len() >= BACKLOG
                    || self.backlog_bytes[i] + f.len() > BACKLOG_BYTES
                {
                    self.stats.tx_dropped += 1;
                    self.router.recycle(f);
                } else {
                    self.backlog_bytes[i] += f.len();
                    self.backlog[i].push_back(f);
                }
            }
        }
    }

    /// Takes the frame at the front of interface `i`'s backlog (sent or dropped); its buffer
    /// goes back to the router's pool.
    fn pop_backlog(&mut self, i: usize) {
        if let Some(f) = self.backlog[i].pop_front() {
            self.backlog_bytes[i] -= f.len();
            self.router.recycle(f);
        }
    }

    fn flush_backlog(&mut self, i: usize) {
        if self.plugs[i].has_pending_output() {
            if let Err(e) = self.plugs[i].flush() {
                if e.kind() == io::ErrorKind::WouldBlock {
                    return;
                }
            }
        }
        while let Some(f) = self.backlog[i].front() {
            match self.plugs[i].send(f) {
                Ok(()) => {
                    self.pop_backlog(i);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::warn!("{}: frame not sent: {e}", self.plugs[i].name());
                    self.stats.tx_error += 1;
                    self.pop_backlog(i);
                }
            }
        }
    }

    fn accept(&mut self) {
        let Some((l, _)) = &self.mgmt else { return };
        while let Ok((s, _)) = l.accept() {
            if s.set_nonblocking(true).is_err() || self.conns.len() >= 64 {
                continue;
            }
            let mut c = Conn::socket(s);
            c.queue_output(console::greeting().as_bytes());
            self.conns.push(c);
        }
    }

    fn serve_consoles(&mut self, ready: &[bool], now: Instant) -> Option<End> {
        let mut shutdown = false;
        let mut closed = Vec::new();
        for (k, conn) in self.conns.iter_mut().enumerate() {
            if !ready.get(k).copied().unwrap_or(false) {
                continue;
            }
            conn.try_flush();
            let open = conn.fill();
            while let Some(line) = conn.next_line() {
                let (text, effect) = console::execute(&mut self.router, now, &line, &self.stats);
                conn.queue_output(text.as_bytes());
                match effect {
                    Effect::None => {}
                    Effect::Logout => closed.push(k),
                    Effect::Shutdown => shutdown = true,
                }
            }
            if !open || conn.broken {
                closed.push(k);
            }
        }
        filo_vnl::mgmt::close_conns(&mut self.conns, closed);
        shutdown.then_some(End::Shutdown)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some((_, path)) = &self.mgmt {
            let _ = fs::remove_file(path);
        }
    }
}
