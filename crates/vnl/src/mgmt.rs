//! Management-console plumbing shared by filo's daemons (switch, wirefilter): a line-based
//! client connection on a UNIX socket or stdin with bounded input and output, so a client that
//! sends endless lines or never reads cannot stall the daemon. Like vde's consoles, what one
//! read delivers counts as a command even without a newline (vdeterm sends none).

use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use crate::sys;

/// A daemon's management socket at `path` with permissions `mode`, non-blocking; a stale
/// socket left there is replaced, anything else is an error naming the path.
pub fn listen(path: &std::path::Path, mode: u32) -> io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    crate::sockfile::make_way(path, crate::sockfile::Type::STREAM)?;
    let l = UnixListener::bind(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot bind management socket {}: {e}", path.display()),
        )
    })?;
    l.set_nonblocking(true)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(l)
}

/// A console client whose unread output exceeds this is disconnected.
const MAX_OUTPUT: usize = 1 << 20;
/// Longest command line accepted.
const MAX_LINE: usize = 4096;

pub struct Conn<S> {
    stream: Option<UnixStream>,
    pub session: S,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Set when the client exceeded a limit: close after this turn.
    pub broken: bool,
}

impl<S: Default> Conn<S> {
    pub fn socket(stream: UnixStream) -> Conn<S> {
        Conn {
            stream: Some(stream),
            session: S::default(),
            input: Vec::new(),
            output: Vec::new(),
            broken: false,
        }
    }

    pub fn stdin() -> Conn<S> {
        let _ = sys::set_nonblocking(0);
        Conn {
            stream: None,
            session: S::default(),
            input: Vec::new(),
            output: Vec::new(),
            broken: false,
        }
    }

    pub fn fd(&self) -> RawFd {
        self.stream.as_ref().map_or(0, |s| s.as_raw_fd())
    }

    pub fn out_fd(&self) -> RawFd {
        self.stream.as_ref().map_or(1, |s| s.as_raw_fd())
    }

    /// True when output is waiting for the client to read.
    pub fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    pub fn queue_output(&mut self, bytes: &[u8]) {
        if self.output.len() + bytes.len() > MAX_OUTPUT {
            self.broken = true;
            return;
        }
        self.output.extend_from_slice(bytes);
        self.try_flush();
    }

    pub fn try_flush(&mut self) {
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

    pub fn flush_blocking_briefly(&mut self) {
        let deadline = Instant::now() + Duration::from_millis(200);
        while !self.output.is_empty() && !self.broken && Instant::now() < deadline {
            self.try_flush();
            if !self.output.is_empty() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// Reads what is available; returns false on EOF or error.
    pub fn fill(&mut self) -> bool {
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
    pub fn next_line(&mut self) -> Option<String> {
        let end = match self.input.iter().position(|&b| b == b'\n') {
            Some(i) => i + 1,
            None if !self.input.is_empty() => self.input.len(),
            None => return None,
        };
        let line: Vec<u8> = self.input.drain(..end).collect();
        Some(String::from_utf8_lossy(&line).into_owned())
    }
}

/// Removes the connections at the indices in `closed` (any order, repeats allowed) from
/// `conns`, giving each a moment to send what it still has queued.
pub fn close_conns<S: Default>(conns: &mut Vec<Conn<S>>, mut closed: Vec<usize>) {
    closed.sort_unstable();
    closed.dedup();
    for k in closed.into_iter().rev() {
        if k < conns.len() {
            conns.remove(k).flush_blocking_briefly();
        }
    }
}

/// Largest script a console `load` (or an rc file) may be.
pub const MAX_SCRIPT: u64 = 1 << 20;

/// The text of a console script for `load`: a regular file of at most [`MAX_SCRIPT`] bytes
/// (so neither `load /dev/zero` nor a FIFO without a writer can hang a daemon), invalid
/// UTF-8 replaced. Errors are the errno a console reports: the open's, `EISDIR` for a
/// directory, `EINVAL` for other non-regular files, `EFBIG` beyond the limit.
pub fn read_script(path: &std::path::Path) -> Result<String, i32> {
    use std::os::unix::fs::OpenOptionsExt;
    let os = |e: io::Error| e.raw_os_error().unwrap_or(libc::EIO);
    // Non-blocking, so that opening a FIFO does not wait for a writer.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(os)?;
    let meta = file.metadata().map_err(os)?;
    if meta.is_dir() {
        return Err(libc::EISDIR);
    }
    if !meta.is_file() {
        return Err(libc::EINVAL);
    }
    let mut bytes = Vec::new();
    file.take(MAX_SCRIPT + 1)
        .read_to_end(&mut bytes)
        .map_err(os)?;
    if bytes.len() as u64 > MAX_SCRIPT {
        return Err(libc::EFBIG);
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Whether a console client with uid `peer` may use file commands (`load`, captures): they
/// read and write files as this process's user, so only that user and root may.
pub fn may_use_files(peer: u32) -> bool {
    peer == 0 || peer == crate::sys::euid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_are_regular_files_of_bounded_size() {
        let dir = std::env::temp_dir().join(format!("filo-vnl-script-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = dir.join("ok.rc");
        std::fs::write(&ok, b"vlan/create 3\n\xff\n").unwrap();
        assert_eq!(
            read_script(&ok),
            Ok("vlan/create 3\n\u{fffd}\n".to_string())
        );
        assert_eq!(read_script(&dir.join("missing")), Err(libc::ENOENT));
        assert_eq!(read_script(&dir), Err(libc::EISDIR));
        assert_eq!(
            read_script(std::path::Path::new("/dev/zero")),
            Err(libc::EINVAL)
        );
        let big = dir.join("big.rc");
        std::fs::write(&big, vec![b'#'; MAX_SCRIPT as usize + 1]).unwrap();
        assert_eq!(read_script(&big), Err(libc::EFBIG));
        // A FIFO nobody writes to is refused at once, not waited on.
        let fifo = dir.join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo {}", fifo.display());
        let (tx, rx) = std::sync::mpsc::channel();
        let f = fifo.clone();
        std::thread::spawn(move || tx.send(read_script(&f)));
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)),
            Ok(Err(libc::EINVAL))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
