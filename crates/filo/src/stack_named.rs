//! `filo stack serve` and `filo stack ip`: named, shareable kernel stacks.
//! (Merged with the user-space stack's `filo stack` subcommands.)

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use filo_ns::named::Server;

use crate::ns::ConfArgs;
use crate::sys;

#[derive(Subcommand, Debug)]
pub enum NamedStackCommand {
    /// Keep a kernel stack alive and serve it at PATH (for msocket, filo mstack, filo stack ip).
    #[command(after_long_help = "\
PATH becomes a UNIX socket; its owner, group and mode are the access control: a user without
write permission on it gets EACCES from msocket(). The stack has one interface per --vnl
(vde0, vde1, ...) in a private network namespace. SIGINT/SIGTERM stop it and remove PATH; if the
daemon is killed outright, its helper removes PATH and the namespace goes with the last socket.

EXAMPLES:
  filo stack serve /tmp/s1 --vnl vde:///tmp/sw --ip 10.0.0.7/24 --gw 10.0.0.1
  filo stack serve /tmp/s1 --vnl vde:///tmp/sw --conf dhcp --mode 660 --group netusers")]
    Serve(Box<ServeArgs>),
    /// Show or change a named stack's configuration with ip(8): filo stack ip PATH addr|route|link ...
    Ip(IpArgs),
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Where to serve the stack (a UNIX socket is created there).
    #[arg(value_name = "PATH")]
    path: PathBuf,
    /// A network for the stack; repeatable (vde0, vde1, ...).
    #[arg(long = "vnl", value_name = "VNL")]
    vnls: Vec<String>,
    #[command(flatten)]
    conf: ConfArgs,
    /// Octal permissions of PATH.
    #[arg(long, value_name = "MODE", default_value = "600", value_parser = filo_vnl::parse_octal_mode)]
    mode: u32,
    /// Group owning PATH.
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
}

#[derive(Args, Debug)]
pub struct IpArgs {
    /// The stack's socket.
    #[arg(value_name = "PATH")]
    path: PathBuf,
    /// Arguments for ip(8): addr, route, link, ...
    #[arg(
        value_name = "ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = true
    )]
    args: Vec<String>,
}

pub fn run(cmd: NamedStackCommand) -> Result<ExitCode> {
    match cmd {
        NamedStackCommand::Serve(a) => serve(*a),
        NamedStackCommand::Ip(a) => {
            let mut argv = vec!["ip".to_string()];
            argv.extend(a.args);
            crate::mstack::exec_in(Some(a.path), &argv)
        }
    }
}

fn serve(a: ServeArgs) -> Result<ExitCode> {
    let conf = a.conf.to_conf();
    let server = Server::new(&a.path, a.mode, &a.vnls, &conf)?;
    if let Some(g) = &a.group {
        let gid = filo_vnl::sys::group_id(g).with_context(|| format!("no group {g}"))?;
        filo_vnl::sys::chown_group(&a.path, gid)
            .with_context(|| format!("chgrp {g} {}", a.path.display()))?;
    }
    if let Some(l) = server.stack().lease() {
        eprintln!(
            "filo stack: {} has {}/{} from DHCP server {}",
            a.path.display(),
            l.addr,
            l.prefix,
            l.server
        );
    }
    server.run(&sys::STOP)?;
    Ok(ExitCode::SUCCESS)
}
