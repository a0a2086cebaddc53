//! Frames over a byte stream in the VDE stream encoding (2-byte big-endian length + frame):
//! stdin/stdout (`filo plug VNL`, ssh), and `cmd://COMMAND`, which runs a child and talks to
//! its stdin/stdout.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::normalize;
use crate::plug::Transport;
use crate::sys;
use crate::wire::stream::{encode_header, Decoder};

/// Output buffered beyond this makes `send` report `WouldBlock` (back-pressure).
const OUTPUT_HIGH_WATER: usize = 256 * 1024;
const READ_CHUNK: usize = 64 * 1024;

enum Fd {
    Owned(OwnedFd),
    /// stdin/stdout: not closed on drop; flags restored.
    Std {
        fd: Box<dyn AsFd + Send>,
        saved_flags: libc::c_int,
    },
}

impl Fd {
    fn borrow(&self) -> BorrowedFd<'_> {
        match self {
            Fd::Owned(fd) => fd.as_fd(),
            Fd::Std { fd, .. } => fd.as_fd(),
        }
    }

    fn raw(&self) -> RawFd {
        self.borrow().as_raw_fd()
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        if let Fd::Std { fd, saved_flags } = self {
            let _ = sys::set_fd_flags(fd.as_fd(), *saved_flags);
        }
    }
}

pub struct StreamTransport {
    input: Fd,
    output: Fd,
    decoder: Decoder,
    pending: Vec<u8>,
    /// Bytes of `pending` already written.
    written: usize,
    child: Option<Child>,
    label: String,
    kind: &'static str,
}

impl StreamTransport {
    /// Frames on this process's stdin (input) and stdout (output).
    pub fn stdio() -> io::Result<StreamTransport> {
        let mut fds = Vec::new();
        let std: [(Box<dyn AsFd + Send>, &str); 2] = [
            (Box::new(io::stdin()), "input"),
            (Box::new(io::stdout()), "output"),
        ];
        for (fd, name) in std {
            let saved_flags = sys::fd_flags(fd.as_fd())
                .map_err(|e| io::Error::new(e.kind(), format!("standard {name} is not open")))?;
            sys::set_nonblocking(fd.as_fd().as_raw_fd())?;
            fds.push(Fd::Std { fd, saved_flags });
        }
        let output = fds.pop().ok_or_else(|| io::Error::other("stdout"))?;
        let input = fds.pop().ok_or_else(|| io::Error::other("stdin"))?;
        Ok(Self::new(
            input,
            output,
            None,
            "stdin/stdout".into(),
            "stream",
        ))
    }

    /// Frames over a pair of descriptors (a pipe pair, a socket twice, …).
    pub fn from_fds(input: OwnedFd, output: OwnedFd, label: String) -> io::Result<StreamTransport> {
        sys::set_nonblocking(input.as_raw_fd())?;
        sys::set_nonblocking(output.as_raw_fd())?;
        Ok(Self::new(
            Fd::Owned(input),
            Fd::Owned(output),
            None,
            label,
            "stream",
        ))
    }

    /// Runs `command` (split into words like a shell would, without running one) and speaks
    /// the stream encoding on its stdin/stdout.
    pub fn command(command: &str) -> io::Result<StreamTransport> {
        let words =
            split_words(command).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let (program, args) = words.split_first().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "cmd:// needs a command, e.g. cmd://ssh host filo plug vde:///tmp/sw",
            )
        })?;
        Self::spawn(program, args, format!("cmd://{command}"))
    }

    /// Runs `program` with `args` and speaks the stream encoding on its stdin/stdout.
    pub fn spawn(program: &str, args: &[String], label: String) -> io::Result<StreamTransport> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run {program:?}: {e}")))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(io::Error::other("child pipes missing"));
        };
        let input = OwnedFd::from(stdout);
        let output = OwnedFd::from(stdin);
        sys::set_nonblocking(input.as_raw_fd())?;
        sys::set_nonblocking(output.as_raw_fd())?;
        Ok(Self::new(
            Fd::Owned(input),
            Fd::Owned(output),
            Some(child),
            label,
            "cmd",
        ))
    }

    fn new(input: Fd, output: Fd, child: Option<Child>, label: String, kind: &'static str) -> Self {
        StreamTransport {
            input,
            output,
            decoder: Decoder::new(),
            pending: Vec::with_capacity(OUTPUT_HIGH_WATER),
            written: 0,
            child,
            label,
            kind,
        }
    }

    fn write_pending(&mut self) -> io::Result<()> {
        while self.written < self.pending.len() {
            match sys::write_fd(self.output.raw(), &self.pending[self.written..]) {
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        format!("{}: the other side stopped reading", self.label),
                    ))
                }
                Err(e) => return Err(normalize(e)),
            }
        }
        self.pending.clear();
        self.written = 0;
        Ok(())
    }
}

impl Transport for StreamTransport {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => {
                    let n = frame.len().min(buf.len());
                    buf[..n].copy_from_slice(&frame[..n]);
                    return Ok(frame.len());
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: {e}", self.label),
                    ))
                }
            }
            let chunk = self.decoder.read_buffer(READ_CHUNK);
            let got = sys::read_nonblocking(self.input.raw(), chunk);
            self.decoder.commit(READ_CHUNK, *got.as_ref().unwrap_or(&0));
            match got {
                Ok(0) => {
                    return Err(match self.decoder.finish() {
                        Ok(()) => io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("{}: end of stream", self.label),
                        ),
                        Err(e) => io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("{}: {e}", self.label),
                        ),
                    })
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(normalize(e)),
            }
        }
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        if self.pending.len() >= OUTPUT_HIGH_WATER {
            self.write_pending()?;
        }
        let header = encode_header(frame.len())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        self.pending.extend_from_slice(&header);
        self.pending.extend_from_slice(frame);
        match self.write_pending() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            other => other,
        }
    }

    fn data_fd(&self) -> BorrowedFd<'_> {
        self.input.borrow()
    }

    fn write_fd(&self) -> BorrowedFd<'_> {
        self.output.borrow()
    }

    fn has_pending_input(&self) -> bool {
        self.decoder.has_frame()
    }

    fn has_pending_output(&self) -> bool {
        self.written < self.pending.len()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_pending()
    }

    fn close(&mut self) {
        // Best effort: hand over what is buffered before closing.
        let deadline = Instant::now() + Duration::from_millis(500);
        while self.has_pending_output() && Instant::now() < deadline {
            match self.write_pending() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let mut p = [sys::PollEntry::new(self.output.raw(), false, true)];
                    let _ = sys::poll(&mut p, Some(Duration::from_millis(50)));
                }
                _ => break,
            }
        }
        if let Some(mut child) = self.child.take() {
            // Closing its stdin is the polite way to stop it; then SIGTERM, then SIGKILL.
            self.output = Fd::Owned(match sys::silent_eventfd() {
                Ok(fd) => fd,
                Err(_) => return,
            });
            let deadline = Instant::now() + Duration::from_millis(300);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            sys::terminate(child.id());
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn kind(&self) -> &'static str {
        self.kind
    }
}

/// Splits a command line into words: whitespace separates, `'…'` and `"…"` group, `\` escapes.
pub fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                word.push(chars.next().ok_or("trailing backslash")?);
                in_word = true;
            }
            '\'' | '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some('\\') if c == '"' => {
                            word.push(chars.next().ok_or("trailing backslash")?)
                        }
                        Some(other) => word.push(other),
                        None => return Err(format!("unterminated {c} quote")),
                    }
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::split_words;

    #[test]
    fn words_split_like_a_shell() {
        assert_eq!(
            split_words("ssh host  vde_plug").unwrap(),
            ["ssh", "host", "vde_plug"]
        );
        assert_eq!(
            split_words(r#"a 'b c' "d \" e" f\ g ''"#).unwrap(),
            ["a", "b c", "d \" e", "f g", ""]
        );
        assert!(split_words("a 'b").is_err());
        assert!(split_words("a\\").is_err());
        assert!(split_words("   ").unwrap().is_empty());
    }
}
