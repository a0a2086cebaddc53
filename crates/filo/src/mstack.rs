//! `filo mstack`: run an unmodified command in a named stack (View-OS's mstack).

use std::ffi::CString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use filo_ns::named;

/// Run a command in the network of a named stack (`filo stack serve PATH`).
#[derive(Args, Debug)]
#[command(after_long_help = "\
PATH may be omitted when FILO_STACK names the stack; the command inherits FILO_STACK=PATH, so
msocket() calls with no path in it and its children use the same stack.

Joining a stack's namespace needs root, or being the user who serves the stack. Other users
with permission on PATH get sockets through msocket() (libfilo) instead.

EXAMPLES:
  filo mstack /tmp/s1 -- curl http://10.0.0.7/
  FILO_STACK=/tmp/s1 filo mstack -- ip addr

EXIT STATUS:
  the command's (it replaces filo); 127 when it does not exist; 1 when the stack is not usable.")]
pub struct MstackArgs {
    /// The stack's socket (default: $FILO_STACK).
    #[arg(value_name = "PATH")]
    path: Option<PathBuf>,
    /// The command and its arguments.
    #[arg(last = true, value_name = "COMMAND", required = true)]
    command: Vec<String>,
}

/// Enters the stack at `path` (or $FILO_STACK) and execs `argv`. Returns only on failure.
pub fn exec_in(path: Option<PathBuf>, argv: &[String]) -> Result<ExitCode> {
    let Some(path) = named::resolve(path.as_deref()) else {
        bail!("no stack: give PATH or set {}", named::DEFAULT_ENV);
    };
    named::enter(&path).map_err(|e| stack_error(&path, e))?;
    std::env::set_var(named::DEFAULT_ENV, &path);
    let args: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<_, _>>()
        .context("an argument contains a NUL byte")?;
    let e = filo_ns::sys::execvp(&args);
    eprintln!("filo: cannot run {}: {e}", argv[0]);
    Ok(ExitCode::from(if e.raw_os_error() == Some(libc::ENOENT) {
        127
    } else {
        126
    }))
}

/// Says what is wrong with the named stack at `path`, and what to do about it.
fn stack_error(path: &std::path::Path, e: std::io::Error) -> anyhow::Error {
    let p = path.display();
    match e.kind() {
        std::io::ErrorKind::NotFound => anyhow::anyhow!(
            "{p}: no named stack there ({e}); start one with `filo stack serve -d {p} --vnl VNL \
             --ip ADDR/LEN` (or --dhcp)"
        ),
        std::io::ErrorKind::ConnectionRefused => anyhow::anyhow!(
            "{p}: no stack daemon answers there ({e}): not a stack, or its daemon is gone; \
             start one with `filo stack serve -d {p} --vnl VNL ...`"
        ),
        std::io::ErrorKind::PermissionDenied if !e.to_string().contains("namespace") => {
            anyhow::anyhow!(
                "{p}: permission denied: the path's owner, group and mode decide who may use the \
                 stack"
            )
        }
        _ => anyhow::anyhow!("{p}: {e}"),
    }
}

pub fn run(args: MstackArgs) -> Result<ExitCode> {
    exec_in(args.path, &args.command)
}
