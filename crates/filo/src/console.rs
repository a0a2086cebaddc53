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

struct Session {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl Session {
    fn connect(args: &ConsoleArgs) -> Result<Session> {
        let stream = UnixStream::connect(&args.sock).with_context(|| {
            format!(
                "cannot connect to management socket {}",
                args.sock.display()
            )
        })?;
        stream.set_read_timeout(Some(args.timeout))?;
        let mut s = Session {
            stream,
            buf: Vec::new(),
        };
        s.read_until_prompt().with_context(|| {
            format!(
                "{}: no console prompt (is it a VDE management socket?)",
                args.sock.display()
            )
        })?;
        s.buf.clear();
        Ok(s)
    }

    /// Reads until the buffer ends with a prompt ("$ ") or the session ends.
    fn read_until_prompt(&mut self) -> Result<()> {
        let mut chunk = [0u8; 8192];
        loop {
            let text = String::from_utf8_lossy(&self.buf);
            if text.ends_with("$ ") || text.contains(END_OF_SESSION) {
                return Ok(());
            }
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
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn run(&mut self, command: &str) -> Result<Reply> {
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
    for line in stdin.lock().lines() {
        let line = line?;
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
