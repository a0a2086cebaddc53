//! Management console connections (the `-M` socket and stdin): line in, reply out, with a
//! bounded output buffer so a client that never reads cannot stall the switch.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use filo_vnl::sys;

use super::{Switch, T_MGMT};
use crate::console::{self, Session};

/// A console client whose unread output exceeds this is disconnected.
const MAX_OUTPUT: usize = 1 << 20;
/// Longest command line accepted.
const MAX_LINE: usize = 4096;

pub(crate) struct Conn {
    stream: Option<UnixStream>,
    pub(crate) session: Session,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Set when the client exceeded a limit: close after this turn.
    pub(crate) broken: bool,
}

impl Conn {
    fn socket(stream: UnixStream) -> Conn {
        Conn {
            stream: Some(stream),
            session: Session::new(),
            input: Vec::new(),
            output: Vec::new(),
            broken: false,
        }
    }

    pub(crate) fn stdin() -> Conn {
        let _ = sys::set_nonblocking(0);
        Conn {
            stream: None,
            session: Session::new(),
            input: Vec::new(),
            output: Vec::new(),
            broken: false,
        }
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.stream.as_ref().map_or(0, |s| s.as_raw_fd())
    }

    fn out_fd(&self) -> RawFd {
        self.stream.as_ref().map_or(1, |s| s.as_raw_fd())
    }

    pub(crate) fn queue_output(&mut self, bytes: &[u8]) {
        if self.output.len() + bytes.len() > MAX_OUTPUT {
            self.broken = true;
            return;
        }
        self.output.extend_from_slice(bytes);
        self.try_flush();
    }

    fn try_flush(&mut self) {
        while !self.output.is_empty() {
            match sys::write_fd(self.out_fd(), &self.output) {
                Ok(n) => {
                    self.output.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.broken = true;
                    self.output.clear();
                    return;
                }
            }
        }
    }

    pub(crate) fn flush_blocking_briefly(&mut self) {
        let deadline = Instant::now() + Duration::from_millis(200);
        while !self.output.is_empty() && !self.broken && Instant::now() < deadline {
            self.try_flush();
            if !self.output.is_empty() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// Reads what is available; returns false on EOF or error.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        loop {
            let r = match &mut self.stream {
                Some(s) => s.read(&mut chunk),
                None => sys::read_nonblocking(0, &mut chunk),
            };
            match r {
                Ok(0) => return false,
                Ok(n) => {
                    self.input.extend_from_slice(&chunk[..n]);
                    if self.input.len() > MAX_LINE && !self.input.contains(&b'\n') {
                        self.broken = true;
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }

    /// The next complete line, or else the unterminated rest: like vde_switch, what one
    /// read delivered is a command even without a newline (vdeterm sends none).
    fn next_line(&mut self) -> Option<String> {
        let end = match self.input.iter().position(|&b| b == b'\n') {
            Some(i) => i + 1,
            None if !self.input.is_empty() => self.input.len(),
            None => return None,
        };
        let line: Vec<u8> = self.input.drain(..end).collect();
        Some(String::from_utf8_lossy(&line).into_owned())
    }
}

impl Switch {
    pub(crate) fn accept_mgmt(&mut self) {
        for _ in 0..16 {
            let Some(l) = &self.mgmt_listener else { return };
            let stream = match l.accept() {
                Ok((s, _)) => s,
                Err(_) => return,
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let slot = match self.mgmt.iter().position(|c| c.is_none()) {
                Some(s) => s,
                None => {
                    self.mgmt.push(None);
                    self.mgmt.len() - 1
                }
            };
            if self
                .epoll
                .add(stream.as_raw_fd(), T_MGMT | slot as u64, true, false)
                .is_err()
            {
                continue;
            }
            let mut conn = Conn::socket(stream);
            conn.queue_output(console::greeting().as_bytes());
            self.mgmt[slot] = Some(conn);
        }
    }

    pub(crate) fn on_mgmt(&mut self, slot: usize, ev: sys::EpollEvent, now: Instant) {
        let Some(conn) = self.mgmt.get_mut(slot).and_then(|c| c.as_mut()) else {
            return;
        };
        if ev.writable {
            conn.try_flush();
        }
        let open = conn.fill();
        self.run_lines(Some(slot), now);
        let Some(conn) = self.mgmt.get_mut(slot).and_then(|c| c.as_mut()) else {
            return;
        };
        if !open || conn.broken {
            if conn.broken {
                tracing::warn!(
                    "management connection closed: input line too long or output not read"
                );
            }
            self.close_mgmt(slot);
            return;
        }
        let want_write = !conn.output.is_empty();
        let fd = conn.fd();
        let _ = self
            .epoll
            .modify(fd, T_MGMT | slot as u64, true, want_write);
    }

    pub(crate) fn on_stdin(&mut self, now: Instant) {
        let Some(conn) = self.stdin.as_mut() else {
            return;
        };
        let open = conn.fill();
        self.run_lines(None, now);
        if !open {
            tracing::warn!("EOF on stdin, cleaning up and exiting");
            self.epoll.delete(0);
            self.stdin = None;
            self.shutting_down = true;
        }
    }

    /// Executes every complete line of a console (`slot`, or stdin when None).
    fn run_lines(&mut self, slot: Option<usize>, now: Instant) {
        loop {
            let conn = match slot {
                Some(s) => self.mgmt.get_mut(s).and_then(|c| c.as_mut()),
                None => self.stdin.as_mut(),
            };
            let Some(conn) = conn else { return };
            let Some(line) = conn.next_line() else {
                return;
            };
            let mut session = std::mem::take(&mut conn.session);
            let reply = console::execute(&mut self.state, &mut session, now, &line);
            let conn = match slot {
                Some(s) => self.mgmt.get_mut(s).and_then(|c| c.as_mut()),
                None => self.stdin.as_mut(),
            };
            let Some(conn) = conn else { return };
            conn.session = session;
            conn.queue_output(reply.text.as_bytes());
            for ev in reply.events {
                self.debug(ev);
            }
            self.apply_effects(reply.effects, slot);
        }
    }
}
