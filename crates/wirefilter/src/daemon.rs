//! The wirefilter daemon: two plugs joined through the [`Wirefilter`] core, with vde's
//! management console on a UNIX socket. One `poll` loop; time is read once per turn and
//! handed to the core.
//!
//! Frames whose time has come go to the other plug at once; if that plug cannot take them
//! (its peer is slow), they wait in a bounded backlog and the side feeding that direction is
//! not read until it drains (back-pressure, not silent loss). `speed` throttles input the same
//! way: a side is not read before the core says its input is free.

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use filo_vnl::mgmt::Conn;
use filo_vnl::sys::{self, PollEntry};
use filo_vnl::{FrameBatch, Plug};

use crate::console::{self, Effect};
use crate::core::{Side, Wirefilter};

/// Frames waiting for a plug that would block, per direction, before its input stops.
const BACKLOG: usize = 1024;

/// Why the daemon stopped.
#[derive(Debug)]
pub enum End {
    /// A plug's other side went away.
    Hangup(String),
    /// `shutdown` on the console.
    Shutdown,
    /// The stop flag (a signal).
    Stopped,
}

pub struct Daemon {
    wf: Wirefilter,
    plugs: [Plug; 2],
    mgmt: Option<(UnixListener, PathBuf)>,
    /// Console connections; the session says whether the client may use file commands.
    conns: Vec<Conn<bool>>,
    backlog: [VecDeque<Vec<u8>>; 2],
    batch: FrameBatch,
}

fn index(side: Side) -> usize {
    match side {
        Side::Left => 0,
        Side::Right => 1,
    }
}

fn side(index: usize) -> Side {
    if index == 0 {
        Side::Left
    } else {
        Side::Right
    }
}

impl Daemon {
    /// `plugs[0]` is the left side (VNL_A), `plugs[1]` the right one.
    pub fn new(
        wf: Wirefilter,
        plugs: [Plug; 2],
        mgmt: Option<(PathBuf, u32)>,
    ) -> io::Result<Daemon> {
        let mgmt = match mgmt {
            Some((path, mode)) => Some((filo_vnl::mgmt::listen(&path, mode)?, path)),
            None => None,
        };
        Ok(Daemon {
            wf,
            plugs,
            mgmt,
            conns: Vec::new(),
            backlog: [VecDeque::new(), VecDeque::new()],
            batch: FrameBatch::new(64),
        })
    }

    pub fn wirefilter(&self) -> &Wirefilter {
        &self.wf
    }

    pub fn wirefilter_mut(&mut self) -> &mut Wirefilter {
        &mut self.wf
    }

    /// Runs until a plug hangs up, `shutdown`, or `stop`.
    pub fn run(&mut self, stop: &AtomicBool) -> io::Result<End> {
        let mut entries: Vec<PollEntry> = Vec::new();
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(End::Stopped);
            }
            let now = Instant::now();
            self.wf.handle_timeout(now);
            self.deliver(now);
            // What to wait for.
            entries.clear();
            let mut next = self.wf.poll_timeout();
            for i in 0..2 {
                let s = side(i);
                let ready_at = self.wf.input_ready_at(s);
                let room = self.backlog[1 - i].len() < BACKLOG;
                let can_read = room && ready_at <= now;
                if room && ready_at > now {
                    next = Some(next.map_or(ready_at, |n| n.min(ready_at)));
                }
                // Frames already inside the plug (the rest of a train): no waiting.
                if can_read && self.plugs[i].has_pending_input() {
                    next = Some(now);
                }
                entries.push(PollEntry::new(
                    self.plugs[i].data_fd().as_raw_fd(),
                    can_read,
                    false,
                ));
                let want_write = !self.backlog[i].is_empty() || self.plugs[i].has_pending_output();
                entries.push(PollEntry::new(
                    self.plugs[i].write_fd().as_raw_fd(),
                    false,
                    want_write,
                ));
            }
            let ctl: Vec<(usize, RawFd)> = (0..2)
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
            let timeout = next
                .map(|t| t.saturating_duration_since(now))
                .unwrap_or(Duration::from_millis(500))
                .min(Duration::from_millis(500));
            sys::poll(&mut entries, Some(timeout))?;
            let now = Instant::now();
            for (k, &(i, _)) in ctl.iter().enumerate() {
                let e = entries[4 + k].ready;
                if e.readable || e.hangup {
                    return Ok(End::Hangup(format!(
                        "{}: the switch closed the connection",
                        self.plugs[i].name()
                    )));
                }
            }
            for i in 0..2 {
                if entries[2 * i + 1].ready.writable {
                    self.flush_backlog(i)?;
                }
                let r = entries[2 * i].ready;
                if r.readable || r.hangup || self.plugs[i].has_pending_input() {
                    if let Some(end) = self.read_side(i, now)? {
                        return Ok(end);
                    }
                }
            }
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

    /// Sends a frame, or keeps it in order behind frames already waiting for this plug.
    fn send_or_backlog(plug: &mut Plug, backlog: &mut VecDeque<Vec<u8>>, bytes: &[u8]) {
        if backlog.is_empty() {
            match plug.send(bytes) {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    tracing::warn!("{}: frame not sent: {e}", plug.name());
                    return;
                }
            }
        }
        backlog.push_back(bytes.to_vec());
    }

    /// Hands every due frame to its plug (or the backlog when the plug would block).
    fn deliver(&mut self, now: Instant) {
        let Daemon {
            wf, plugs, backlog, ..
        } = self;
        loop {
            let more = wf.poll_transmit(now, |to, bytes| {
                let i = index(to);
                Self::send_or_backlog(&mut plugs[i], &mut backlog[i], bytes);
            });
            if !more {
                break;
            }
        }
    }

    fn flush_backlog(&mut self, i: usize) -> io::Result<()> {
        if self.plugs[i].has_pending_output() {
            match self.plugs[i].flush() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                other => other?,
            }
        }
        while let Some(f) = self.backlog[i].front() {
            match self.plugs[i].send(f) {
                Ok(()) => {
                    self.backlog[i].pop_front();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::warn!("{}: frame not sent: {e}", self.plugs[i].name());
                    self.backlog[i].pop_front();
                }
            }
        }
        Ok(())
    }

    fn read_side(&mut self, i: usize, now: Instant) -> io::Result<Option<End>> {
        for _ in 0..4 {
            if self.wf.input_ready_at(side(i)) > now || self.backlog[1 - i].len() >= BACKLOG {
                return Ok(None);
            }
            match self.plugs[i].recv_batch(&mut self.batch) {
                Ok(n) => {
                    let out = 1 - i;
                    // Frames the core lets through untouched leave together (one sendmmsg).
                    let mut pass: [&[u8]; 64] = [&[]; 64];
                    let mut count = 0;
                    for f in self.batch.frames() {
                        if self.wf.handle_frame_fast(now, side(i), f) {
                            pass[count] = f;
                            count += 1;
                        }
                    }
                    let mut sent = 0;
                    if self.backlog[out].is_empty() {
                        while sent < count {
                            match self.plugs[out].send_batch(&pass[sent..count]) {
                                Ok(k) => sent += k.max(1),
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                                Err(e) => {
                                    tracing::warn!(
                                        "{}: frames not sent: {e}",
                                        self.plugs[out].name()
                                    );
                                    sent = count;
                                }
                            }
                        }
                    }
                    for f in &pass[sent..count] {
                        self.backlog[out].push_back(f.to_vec());
                    }
                    if n < 64 {
                        return Ok(None);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Ok(Some(End::Hangup(format!("{}: {e}", self.plugs[i].name())))),
            }
        }
        Ok(None)
    }

    fn accept(&mut self) {
        let Some((l, _)) = &self.mgmt else { return };
        while let Ok((s, _)) = l.accept() {
            if s.set_nonblocking(true).is_err() || self.conns.len() >= 64 {
                continue;
            }
            // Unknown credentials count as another user's.
            let files =
                filo_vnl::sys::peer_uid(s.as_raw_fd()).is_ok_and(filo_vnl::mgmt::may_use_files);
            let mut c = Conn::socket(s);
            c.session = files;
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
                let reply = console::execute(&mut self.wf, now, &line);
                conn.queue_output(reply.text.as_bytes());
                for effect in reply.effects {
                    match effect {
                        Effect::Logout => closed.push(k),
                        Effect::Shutdown => shutdown = true,
                        Effect::Load(_) if !conn.session => {
                            conn.queue_output(console::files_refused().as_bytes());
                        }
                        Effect::Load(path) => {
                            let result = filo_vnl::mgmt::read_script(&path).and_then(|text| {
                                console::execute_script(&mut self.wf, now, &text)
                                    .map_err(|(_, errno)| errno)
                            });
                            conn.queue_output(console::status(result).as_bytes());
                        }
                    }
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
