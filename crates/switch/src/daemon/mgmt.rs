//! Management console connections (the `-M` socket and stdin): line in, reply out, with a
//! bounded output buffer so a client that never reads cannot stall the switch.

use std::os::fd::AsRawFd;
use std::time::Instant;

use filo_vnl::sys;

use super::{Switch, T_MGMT};
use crate::console::{self, Reply, Session};
use crate::state::{Effect, SwitchState};

pub(crate) type Conn = filo_vnl::mgmt::Conn<Session>;

impl Switch {
    pub(crate) fn accept_mgmt(&mut self) {
        let Some(listener) = &self.mgmt_listener else {
            return;
        };
        super::accept_into(
            "management",
            listener,
            &self.epoll,
            &mut self.mgmt,
            T_MGMT,
            usize::MAX,
            super::FdReserve {
                spare: &mut self.spare_fd,
                refused: &mut self.state.refused_no_fds,
            },
            |stream| {
                // Unknown credentials count as another user's.
                let peer = sys::peer_uid(stream.as_raw_fd()).unwrap_or(u32::MAX);
                let mut conn = Conn::socket(stream);
                conn.session = Session::for_peer(filo_vnl::mgmt::may_use_files(peer));
                conn.queue_output(console::greeting().as_bytes());
                conn
            },
        );
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
        let want_write = conn.has_output();
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
            let reply = carry_out_loads(&mut self.state, &mut session, now, reply);
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

/// Carries out the [`Effect::Load`]s of a console reply: reads each script (a regular file
/// of at most [`filo_vnl::mgmt::MAX_SCRIPT`] bytes) and hands it to [`console::loaded`] until
/// no `load` is pending. Returns the whole answer: every text in order, the other effects and
/// the events.
pub fn carry_out_loads(
    state: &mut SwitchState,
    session: &mut Session,
    now: Instant,
    mut reply: Reply,
) -> Reply {
    while let Some(i) = reply
        .effects
        .iter()
        .position(|e| matches!(e, Effect::Load(_)))
    {
        let Effect::Load(path) = reply.effects.remove(i) else {
            break;
        };
        let script = filo_vnl::mgmt::read_script(&path);
        let next = console::loaded(state, session, now, script.as_deref().map_err(|e| *e));
        reply.text.push_str(&next.text);
        reply.effects.extend(next.effects);
        reply.events.extend(next.events);
    }
    reply
}
