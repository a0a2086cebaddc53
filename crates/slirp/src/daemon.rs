//! A gateway with a management socket: the engine's loop also serves console clients.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use filo_vnl::mgmt::Conn;

use crate::console::{self, Caller, Effect};
use crate::engine::Engine;

const LISTENER: u64 = 1 << 62;
const MAX_CONSOLES: usize = 64;

/// The management socket and its clients.
pub struct Mgmt {
    listener: UnixListener,
    path: PathBuf,
    conns: Vec<(u64, Conn<Caller>)>,
    next: u64,
    unprivileged_port_start: u16,
}

/// The first port an unprivileged process may bind (1024 if the kernel does not say).
fn unprivileged_port_start() -> u16 {
    fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(1024)
}

impl Mgmt {
    /// Binds the management socket at `path` with permissions `mode`.
    pub fn bind(path: PathBuf, mode: u32) -> io::Result<Mgmt> {
        let listener = filo_vnl::mgmt::listen(&path, mode)?;
        Ok(Mgmt {
            listener,
            path,
            conns: Vec::new(),
            next: LISTENER + 1,
            // Read now: the sandbox entered later may not allow it.
            unprivileged_port_start: unprivileged_port_start(),
        })
    }

    /// Runs the engine and the console until `stop`, `shutdown` or the plug's end.
    pub fn run(mut self, engine: &mut Engine, stop: &AtomicBool) -> io::Result<()> {
        engine.watch(self.listener.as_raw_fd(), LISTENER)?;
        engine.run(stop, |engine, token| self.ready(engine, token))
    }

    fn ready(&mut self, engine: &mut Engine, token: u64) -> bool {
        if token == LISTENER {
            while let Ok((s, _)) = self.listener.accept() {
                if s.set_nonblocking(true).is_err() || self.conns.len() >= MAX_CONSOLES {
                    continue;
                }
                let t = self.next;
                self.next += 1;
                if engine.watch(s.as_raw_fd(), t).is_err() {
                    continue;
                }
                // Unknown credentials count as an unprivileged stranger's.
                let uid = filo_vnl::sys::peer_uid(s.as_raw_fd()).unwrap_or(u32::MAX);
                let mut c: Conn<Caller> = Conn::socket(s);
                c.session = Caller {
                    uid: Some(uid),
                    unprivileged_port_start: self.unprivileged_port_start,
                };
                c.queue_output(console::greeting().as_bytes());
                self.conns.push((t, c));
            }
            return true;
        }
        let Some(k) = self.conns.iter().position(|(t, _)| *t == token) else {
            return true;
        };
        let mut shutdown = false;
        let mut close = false;
        {
            let conn = &mut self.conns[k].1;
            conn.try_flush();
            let open = conn.fill();
            while let Some(line) = conn.next_line() {
                let (reply, effect) = console::execute(engine, &line, conn.session);
                conn.queue_output(reply.as_bytes());
                match effect {
                    Effect::None => {}
                    Effect::Logout => close = true,
                    Effect::Shutdown => shutdown = true,
                }
            }
            close |= !open || conn.broken;
        }
        if close || shutdown {
            let (_, mut c) = self.conns.remove(k);
            engine.unwatch(c.fd());
            c.flush_blocking_briefly();
        }
        !shutdown
    }
}

impl Drop for Mgmt {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}
