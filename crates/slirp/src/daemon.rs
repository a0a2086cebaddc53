//! A gateway with a management socket: the engine's loop also serves console clients.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use filo_vnl::mgmt::Conn;

use crate::console::{self, Effect};
use crate::engine::Engine;

const LISTENER: u64 = 1 << 62;
const MAX_CONSOLES: usize = 64;

/// The management socket and its clients.
pub struct Mgmt {
    listener: UnixListener,
    path: PathBuf,
    conns: Vec<(u64, Conn<()>)>,
    next: u64,
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
                let mut c = Conn::socket(s);
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
                let (reply, effect) = console::execute(engine, &line);
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
