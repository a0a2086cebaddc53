//! `filo console`: a client for the management socket of filo's switch or Debian's
//! vde_switch/wirefilter (the same framing). One-shot commands for scripts, `--json` for
//! machine-readable replies, or an interactive session.

use std::io::{self, BufRead, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use filo_vnl::console::{parse_reply, Reply, END_OF_SESSION};

/// The longest reply read from the socket (a `hash/print` of a full table is far less).
const MAX_REPLY: usize = 16 << 20;
/// The longest command line read from stdin.
const MAX_LINE: u64 = 64 << 10;

/// Talk to a switch's management console (-M socket).
#[derive(Args, Debug)]
#[command(after_long_help = "\
With COMMANDs, each runs in turn and its output is printed (without the protocol framing);
the exit status is 1 if any command failed. Without COMMANDs, an interactive session reads
commands from stdin. `help` lists the switch's commands.

EXAMPLES:
  filo console /tmp/sw.mgmt port/print
  filo console /tmp/sw.mgmt 'vlan/create 10' 'port/setvlan 3 10' vlan/print
  filo console --json /tmp/sw.mgmt hash/print | jq .")]
pub struct ConsoleArgs {
    /// Management socket.
    #[arg(value_name = "SOCK")]
    sock: PathBuf,
    /// Commands to run (one argument each); none for an interactive session.
    #[arg(value_name = "COMMAND")]
    commands: Vec<String>,
    /// Print each reply as a JSON object: command, status, error, lines, events.
    #[arg(long)]
    json: bool,
    /// Seconds to wait for a reply.
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = crate::duration::seconds)]
    timeout: Duration,
}

/// A session with a management console (a switch's, a wirefilter's): also what `filo lab`
/// talks to them through.
pub(crate) struct Session {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl Session {
    fn connect(args: &ConsoleArgs) -> Result<Session> {
        Session::open(&args.sock, args.timeout)
    }

    /// Connects to `sock` and reads the banner; each reply must come within `timeout`.
    pub(crate) fn open(sock: &std::path::Path, timeout: Duration) -> Result<Session> {
        let stream = UnixStream::connect(sock)
            .with_context(|| format!("cannot connect to management socket {}", sock.display()))?;
        stream.set_read_timeout(Some(timeout))?;
        let mut s = Session {
            stream,
            buf: Vec::new(),
        };
        s.read_until_prompt().with_context(|| {
            format!(
                "{}: no console prompt (is it a VDE management socket?)",
                sock.display()
            )
        })?;
        s.buf.clear();
        Ok(s)
    }

    /// Reads until the buffer ends with a prompt ("$ ") or the session ends.
    fn read_until_prompt(&mut self) -> Result<()> {
        let mut chunk = [0u8; 8192];
        let end = END_OF_SESSION.as_bytes();
        let mut searched: usize = 0;
        loop {
            // Only the bytes not searched yet (and an overlap): long replies stay linear.
            let from = searched.saturating_sub(end.len());
            if self.buf.ends_with(b"$ ") || self.buf[from..].windows(end.len()).any(|w| w == end) {
                return Ok(());
            }
            searched = self.buf.len();
            let n = match self.stream.read(&mut chunk) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    bail!("no reply within the timeout")
                }
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                return Ok(());
            }
            if self.buf.len() + n > MAX_REPLY {
                bail!(
                    "the reply is longer than {} MiB: not a console?",
                    MAX_REPLY >> 20
                );
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Runs one command and parses its reply.
    pub(crate) fn run(&mut self, command: &str) -> Result<Reply> {
        self.stream.write_all(format!("{command}\n").as_bytes())?;
        self.buf.clear();
        self.read_until_prompt()?;
        let text = String::from_utf8_lossy(&self.buf).into_owned();
        Ok(parse_reply(&text))
    }
}

fn json_reply(command: &str, r: &Reply) -> String {
    r.to_json(Some(command), true)
}

pub fn run(args: ConsoleArgs) -> Result<ExitCode> {
    let mut session = Session::connect(&args)?;
    if args.commands.is_empty() {
        return interactive(&mut session, args.json);
    }
    let mut failed = false;
    for command in &args.commands {
        let reply = session
            .run(command)
            .with_context(|| format!("command {command:?}"))?;
        if args.json {
            println!("{}", json_reply(command, &reply));
        } else {
            for line in reply.lines.iter().chain(&reply.events) {
                println!("{line}");
            }
            if let Some(err) = &reply.error {
                eprintln!("filo console: {command}: {err} ({})", reply.status);
            }
        }
        failed |= reply.status != 1000 && reply.status != 9999;
        if reply.status == 9999 {
            break;
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn interactive(session: &mut Session, json: bool) -> Result<ExitCode> {
    let stdin = io::stdin();
    let prompt = || {
        eprint!("filo$ ");
        let _ = io::stderr().flush();
    };
    prompt();
    let mut input = stdin.lock();
    let mut line = String::new();
    loop {
        line.clear();
        // Bounded: a line without end (`< /dev/zero`) is an error, not a heap filling up.
        let n = (&mut input).take(MAX_LINE + 1).read_line(&mut line)?;
        if n == 0 {
            break;
        }
        if n as u64 > MAX_LINE {
            bail!("a command line longer than {} KiB on stdin", MAX_LINE >> 10);
        }
        let command = line.trim();
        if command.is_empty() {
            prompt();
            continue;
        }
        let reply = session.run(command)?;
        if json {
            println!("{}", json_reply(command, &reply));
        } else {
            for l in reply.lines.iter().chain(&reply.events) {
                println!("{l}");
            }
            match (&reply.error, reply.status) {
                (_, 9999) => return Ok(ExitCode::SUCCESS),
                (Some(e), code) => println!("{code} {e}"),
                (None, _) => {}
            }
        }
        prompt();
    }
    Ok(ExitCode::SUCCESS)
}
