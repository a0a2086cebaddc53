//! The management console of the wirefilter, sans-IO: a command line in, reply text and
//! [`Effect`]s out. The daemon writes [`greeting`] on connect, hands every line to [`execute`]
//! and writes back [`Reply::text`].
//!
//! Framing (as vde's wirefilter, `reference/vde.md` §4.4, so `unixterm`/`vdeterm` work):
//! * printing commands (`help`, `showinfo`, `showedges`, `showcurrent`) answer
//!   `"0000 DATA END WITH '.'\n"`, body lines, `".\n"` — the header is written even when the
//!   command then fails;
//! * then `"1000 Success\n"` or `"1%03d <strerror>\n"` (`1022 Invalid argument`,
//!   `1038 Function not implemented` for unknown commands);
//! * then the prompt `"\nVDEwf$ "`. Empty lines and `#` comments get only the prompt.
//! * `logout` and `shutdown` answer `"9999 END OF SESSION"` alone (vde's deb build first
//!   prints a stray `1-01 Unknown error -1` on logout; filo does not).
//!
//! Parameter commands (`delay`, `loss`, `lostburst`, `dup`, `bandwidth`/`band`, `speed`,
//! `chanbufsize`/`capacity`, `noise`, `mtu`) take one or more whitespace-separated values in
//! the [`VALUE_FORM`](crate::VALUE_FORM) syntax; all are checked before any is applied, and
//! they take effect at once. Without `[NODE]` they set Markov node 0.
//!
//! `load PATH` is left to the daemon: the reply has an empty text and an [`Effect::Load`]; the
//! daemon reads the file, runs it with [`execute_script`] and writes [`status`] of the result.
//!
//! Differences from vde: numbers are parsed strictly (`1022` rather than `atoi`'s silent 0);
//! `markov-debug` answers `1038` (asynchronous debug lines are not implemented); the Markov
//! model limits of [`crate::markov`] apply.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::core::{Param, Wirefilter};
use crate::markov::MarkovError;
use crate::value::parse_value;
use crate::value::VALUE_FORM;
pub(crate) use filo_vnl::console::sanitize;
use filo_vnl::console::{self as framing, error_line, push_data_block, status_line};

/// Written on connect, before the first prompt.
pub const BANNER: &str = "\nVDE wirefilter V.2.3.2\n(C) R.Davoli 2005,2006 - GPLv2\n";
/// Written after every reply.
pub const PROMPT: &str = "\nVDEwf$ ";
/// Written instead of the prompt when the session ends.
pub const END_OF_SESSION: &str = framing::END_OF_SESSION;

const EPERM: i32 = 1;
const EINVAL: i32 = 22;
const ENOSYS: i32 = 38;

/// What the daemon must do after a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// End this console session.
    Logout,
    /// Stop the wirefilter.
    Shutdown,
    /// Run the script at this path (see [`execute_script`]), then write its [`status`].
    Load(PathBuf),
}

/// The answer to one command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Exactly the bytes to write back.
    pub text: String,
    pub effects: Vec<Effect>,
}

/// What a session sees on connect: the banner and the first prompt.
pub fn greeting() -> String {
    format!("{BANNER}{PROMPT}")
}

/// The answer to `load` from a console client who may not use file commands (neither root
/// nor the wirefilter's user, [`filo_vnl::mgmt::may_use_files`]).
pub fn files_refused() -> String {
    status_of(Err(CmdError {
        errno: EPERM,
        detail: "file commands are for the wirefilter's user".into(),
    }))
}

/// The status line and prompt for a finished command (used by the daemon after `load`).
pub fn status(result: Result<(), i32>) -> String {
    status_of(result.map_err(CmdError::from))
}

fn status_of(result: CmdResult) -> String {
    match result {
        Ok(()) => format!("{}\n{PROMPT}", status_line(Ok(()))),
        Err(e) => format!("{}\n{PROMPT}", error_line(e.errno, &e.detail)),
    }
}

/// Why a command failed: the errno of its status line (`1022` for `EINVAL`, which `vdeterm`
/// and scripts look at) and what was wrong, shown after the `strerror` text:
/// `1022 Invalid argument: delay: "abc" is not [LR|RL]VALUE[+DELTA]…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdError {
    pub errno: i32,
    /// Empty when the errno says it all.
    pub detail: String,
}

impl CmdError {
    fn invalid(detail: impl Into<String>) -> CmdError {
        CmdError {
            errno: EINVAL,
            detail: detail.into(),
        }
    }
}

impl From<i32> for CmdError {
    fn from(errno: i32) -> CmdError {
        CmdError {
            errno,
            detail: String::new(),
        }
    }
}

impl From<MarkovError> for CmdError {
    fn from(e: MarkovError) -> CmdError {
        CmdError::invalid(e.to_string())
    }
}

type CmdResult = Result<(), CmdError>;

enum Outcome {
    Nothing,
    Plain(CmdResult),
    Prints(Vec<String>, CmdResult),
    End(Effect),
    Load(PathBuf),
}

/// `(name, syntax, help)` in `help` order.
const HELP: &[(&str, &str, &str)] = &[
    ("help", "[arg]", "Help (limited to arg when specified)"),
    (
        "showinfo",
        "[n]",
        "show status and parameter values (of Markov node n)",
    ),
    ("load", "path", "load a configuration script"),
    ("delay", "[LR|RL]n[+d][N][[node]]", "set delay ms"),
    ("loss", "[LR|RL]n[+d][N][[node]]", "set loss %"),
    (
        "lostburst",
        "[LR|RL]n[+d][N][[node]]",
        "mean length of lost bursts",
    ),
    ("dup", "[LR|RL]n[+d][N][[node]]", "set dup %"),
    (
        "bandwidth",
        "[LR|RL]n[+d][K|M|G][N][[node]]",
        "set channel bandwidth bytes/sec",
    ),
    (
        "speed",
        "[LR|RL]n[+d][K|M|G][N][[node]]",
        "set interface speed bytes/sec",
    ),
    (
        "noise",
        "[LR|RL]n[+d][K|M|G][N][[node]]",
        "set noise/corrupted bits per MiB",
    ),
    ("mtu", "[LR|RL]n[K|M|G][[node]]", "set channel MTU (bytes)"),
    (
        "chanbufsize",
        "[LR|RL]n[K|M|G][[node]]",
        "set channel buffer size (bytes)",
    ),
    ("fifo", "0/1", "set channel fifoness"),
    ("shutdown", "", "shut the channel down"),
    ("logout", "", "log out from this mgmt session"),
    ("markov-numnodes", "n", "markov mode: set number of states"),
    ("markov-setnode", "n", "markov mode: set current state"),
    ("markov-name", "n,name", "markov mode: set state's name"),
    ("markov-time", "ms", "markov mode: transition period"),
    ("setedge", "n1,n2,w", "markov mode: set edge weight (%)"),
    ("showcurrent", "", "markov mode: show current state"),
    ("showedges", "[n]", "markov mode: show edge weights"),
];

fn param_of(cmd: &str) -> Option<Param> {
    Some(match cmd {
        "delay" => Param::Delay,
        "loss" => Param::Loss,
        "lostburst" => Param::LostBurst,
        "dup" => Param::Dup,
        "bandwidth" | "band" => Param::Bandwidth,
        "speed" => Param::Speed,
        "chanbufsize" | "capacity" => Param::Capacity,
        "noise" => Param::Noise,
        "mtu" => Param::Mtu,
        _ => return None,
    })
}

fn parse_num<T: std::str::FromStr>(s: &str) -> Result<T, CmdError> {
    let s = s.trim();
    let bad = || CmdError::invalid(format!("{s:?} is not a whole number"));
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    s.parse().map_err(|_| bad())
}

fn parse_weight(s: &str) -> Result<f64, CmdError> {
    let s = s.trim();
    let ok = !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && s.bytes().filter(|&b| b == b'.').count() <= 1
        && s != ".";
    let bad = || CmdError::invalid(format!("{s:?} is not a weight in % such as 12.5"));
    if !ok {
        return Err(bad());
    }
    s.parse().map_err(|_| bad())
}

fn optional_node(wf: &Wirefilter, args: &str) -> Result<usize, CmdError> {
    if args.is_empty() {
        Ok(wf.markov().current())
    } else {
        let n = parse_num(args)?;
        if n < wf.markov().num_nodes() {
            Ok(n)
        } else {
            Err(MarkovError::NoSuchNode(n).into())
        }
    }
}

fn set_params(wf: &mut Wirefilter, param: Param, args: &str) -> CmdResult {
    if args.is_empty() {
        return Err(CmdError::invalid(format!(
            "a value is missing: expected {VALUE_FORM}"
        )));
    }
    let mut parsed = Vec::new();
    for word in args.split_whitespace() {
        let (dir, value, node) = parse_value(word).map_err(|e| {
            CmdError::invalid(format!("{word:?} is not {VALUE_FORM} ({})", e.reason))
        })?;
        param
            .check(&value, true)
            .map_err(|e| CmdError::invalid(format!("{word:?}: {e}")))?;
        let node = node.unwrap_or(0);
        if node >= wf.markov().num_nodes() {
            return Err(MarkovError::NoSuchNode(node).into());
        }
        parsed.push((node, dir, value));
    }
    for (node, dir, value) in parsed {
        wf.set_node(node, dir, param, value)?;
    }
    Ok(())
}

fn help_lines(filter: &str) -> Vec<String> {
    let mut lines = vec![
        format!("{:<18} {:<15} {}", "COMMAND", "SYNTAX", "HELP"),
        format!(
            "{:<18} {:<15} {}",
            "------------", "--------------", "------------"
        ),
    ];
    for (name, syntax, help) in HELP {
        if filter.is_empty() || name.starts_with(filter) {
            lines.push(format!("{name:<18} {syntax:<15} {help}"));
        }
    }
    lines
}

fn node_label(wf: &Wirefilter, n: usize) -> String {
    let name = wf.markov().node(n).map(|x| x.name.as_str()).unwrap_or("");
    format!("{n} \"{}\"", sanitize(name))
}

/// Runs one line; a failure's detail starts with the command's name.
fn run(wf: &mut Wirefilter, now: Instant, line: &str) -> Outcome {
    let cmd = line.split_whitespace().next().unwrap_or("");
    let name = |r: CmdResult| {
        r.map_err(|mut e| {
            if !e.detail.is_empty() {
                e.detail = format!("{cmd}: {}", e.detail);
            }
            e
        })
    };
    match dispatch(wf, now, line) {
        Outcome::Plain(r) => Outcome::Plain(name(r)),
        Outcome::Prints(lines, r) => Outcome::Prints(lines, name(r)),
        other => other,
    }
}

fn dispatch(wf: &mut Wirefilter, now: Instant, line: &str) -> Outcome {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Outcome::Nothing;
    }
    let (cmd, args) = match line.find([' ', '\t']) {
        Some(i) => (&line[..i], line[i..].trim()),
        None => (line, ""),
    };
    if let Some(param) = param_of(cmd) {
        return Outcome::Plain(set_params(wf, param, args));
    }
    match cmd {
        "help" => Outcome::Prints(help_lines(args), Ok(())),
        "showinfo" => match optional_node(wf, args) {
            Ok(n) => {
                let text = wf.showinfo_node(n).unwrap_or_default();
                Outcome::Prints(text.lines().map(str::to_string).collect(), Ok(()))
            }
            Err(e) => Outcome::Prints(Vec::new(), Err(e)),
        },
        "fifo" => Outcome::Plain(match args {
            "0" => {
                wf.set_fifo(false);
                Ok(())
            }
            "1" => {
                wf.set_fifo(true);
                Ok(())
            }
            _ => Err(CmdError::invalid(format!("{args:?} is not 0 or 1"))),
        }),
        "markov-numnodes" => {
            Outcome::Plain(parse_num(args).and_then(|n| Ok(wf.markov_mut().set_num_nodes(n)?)))
        }
        "markov-setnode" => {
            Outcome::Plain(parse_num(args).and_then(|n| Ok(wf.markov_mut().set_current(n)?)))
        }
        "markov-name" => Outcome::Plain(match args.split_once(',') {
            Some((n, name)) => {
                parse_num(n).and_then(|n| Ok(wf.markov_mut().set_name(n, name.trim())?))
            }
            None => Err(CmdError::invalid(format!("{args:?} is not N,NAME"))),
        }),
        "markov-time" => Outcome::Plain(
            parse_num::<u64>(args)
                .and_then(|ms| Ok(wf.markov_mut().set_period(Duration::from_millis(ms), now)?)),
        ),
        "setedge" => {
            let parts: Vec<&str> = args.split(',').collect();
            Outcome::Plain(match parts.as_slice() {
                [a, b, w] => (|| {
                    let (a, b, w) = (parse_num(a)?, parse_num(b)?, parse_weight(w)?);
                    Ok(wf.markov_mut().set_edge(a, b, w)?)
                })(),
                _ => Err(CmdError::invalid(format!("{args:?} is not N1,N2,WEIGHT"))),
            })
        }
        "showedges" => match optional_node(wf, args) {
            Ok(from) => {
                let mut lines = Vec::new();
                for to in 0..wf.markov().num_nodes() {
                    let w = wf.markov().edge(from, to).unwrap_or(0.0);
                    if w > 0.0 {
                        lines.push(format!(
                            "Edge {} -> {} weight {}",
                            node_label(wf, from),
                            node_label(wf, to),
                            w
                        ));
                    }
                }
                Outcome::Prints(lines, Ok(()))
            }
            Err(e) => Outcome::Prints(Vec::new(), Err(e)),
        },
        "showcurrent" => {
            let m = wf.markov();
            let line = format!(
                "Current Markov Node {} (0,..,{})",
                node_label(wf, m.current()),
                m.num_nodes() - 1
            );
            Outcome::Prints(vec![line], Ok(()))
        }
        "logout" => Outcome::End(Effect::Logout),
        "shutdown" => Outcome::End(Effect::Shutdown),
        "load" if !args.is_empty() => Outcome::Load(PathBuf::from(args)),
        "load" => Outcome::Plain(Err(CmdError::invalid("the script's path is missing"))),
        _ => Outcome::Plain(Err(ENOSYS.into())),
    }
}

/// Runs one console line at time `now`. Never panics; every change takes effect at once.
pub fn execute(wf: &mut Wirefilter, now: Instant, line: &str) -> Reply {
    let mut text = String::new();
    let mut effects = Vec::new();
    match run(wf, now, line) {
        Outcome::Nothing => text.push_str(PROMPT),
        Outcome::Plain(r) => text.push_str(&status_of(r)),
        Outcome::Prints(lines, r) => {
            push_data_block(&mut text, &lines);
            text.push_str(&status_of(r));
        }
        Outcome::End(effect) => {
            text.push_str(END_OF_SESSION);
            effects.push(effect);
        }
        Outcome::Load(path) => effects.push(Effect::Load(path)),
    }
    Reply { text, effects }
}

/// Runs a configuration script (an rc file or `load`): every line as a console command,
/// stopping at the first failure, which is returned with its 1-based line number and errno.
/// Session commands (`logout`, `shutdown`) and nested `load`s are refused (`EINVAL`).
pub fn execute_script(wf: &mut Wirefilter, now: Instant, script: &str) -> Result<(), (usize, i32)> {
    for (i, line) in script.lines().enumerate() {
        let r = match run(wf, now, line) {
            Outcome::Nothing => Ok(()),
            Outcome::Plain(r) | Outcome::Prints(_, r) => r,
            Outcome::End(_) | Outcome::Load(_) => Err(EINVAL.into()),
        };
        r.map_err(|e| (i + 1, e.errno))?;
    }
    Ok(())
}
