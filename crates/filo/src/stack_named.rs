//! `filo stack serve` and `filo stack ip`: named, shareable kernel stacks.
//! (Merged with the user-space stack's `filo stack` subcommands.)

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use filo_ns::named::Server;

use crate::netconf::ConfArgs;
use crate::sys;

#[derive(Subcommand, Debug)]
pub enum NamedStackCommand {
    /// Keep a kernel stack alive and serve it at PATH (for msocket, filo mstack, filo stack ip).
    #[command(after_long_help = "\
PATH becomes a UNIX socket; its owner, group and mode are the access control: a user without
write permission on it gets EACCES from msocket(). The stack has one interface per --vnl
(vde0, vde1, ...) in a private network namespace. SIGINT/SIGTERM stop it and remove PATH; if the
daemon is killed outright, its helper removes PATH and the namespace goes with the last socket.

When the stack serves, a line says so (with its addresses); with --daemon that line is printed
by the waiting foreground process, which exits 0 only once the stack serves (or 1 with the
reason), so `filo stack serve -d ... && chown ...` works.

EXAMPLES:
  filo stack serve /tmp/s1 --vnl vde:///tmp/sw --ip 10.0.0.7/24 --gw 10.0.0.1
  filo stack serve -d /tmp/s1 --vnl vde:///tmp/sw --dhcp --mode 660 --group netusers
  filo stack serve -d --pidfile /tmp/s1.pid /tmp/s1 vde:///tmp/sw --slaac")]
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
    vnl: Vec<String>,
    /// Networks given after PATH without --vnl (the same as --vnl each).
    #[arg(value_name = "VNL")]
    vnls: Vec<String>,
    #[command(flatten)]
    conf: ConfArgs,
    /// Run in the background once the stack serves (the foreground process prints the
    /// readiness line, or the error, and exits 0 or 1).
    #[arg(short = 'd', long)]
    daemon: bool,
    /// Write the daemon's process ID here (removed when it stops).
    #[arg(short = 'p', long, value_name = "FILE")]
    pidfile: Option<PathBuf>,
    /// Octal permissions of PATH.
    #[arg(long, value_name = "MODE", default_value = "600", value_parser = filo_vnl::parse_octal_mode)]
    mode: u32,
    /// Group owning PATH.
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
    /// Stop (status 1) when a switch goes away instead of reconnecting to it. By default a
    /// vde:// switch that restarts on the same path is joined again (waits of 100 ms doubling
    /// to 2 s, for at most 60 s), with a warning when the link is lost and when it is back.
    #[arg(long)]
    no_reconnect: bool,
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
    let vnls = crate::netconf::vnls(&a.vnl, &a.vnls, "filo stack serve PATH")?;
    let conf = a.conf.to_conf();
    if a.no_reconnect {
        filo_ns::stop_when_a_switch_goes();
    }
    let pidfile = a
        .pidfile
        .as_ref()
        .map(|p| std::path::absolute(p).unwrap_or(p.clone()));
    if let Some(p) = pidfile.as_ref().filter(|p| p.exists()) {
        anyhow::bail!("pid file {} already exists", p.display());
    }
    // The daemon forks before anything starts (the stack has threads and a helper process);
    // the foreground process waits for its readiness line or its error.
    let readiness = match a.daemon {
        true => Some(sys::daemonize_until_ready("filo stack serve")?),
        false => None,
    };
    match start(&a, &vnls, &conf, pidfile.as_deref()) {
        Ok((server, line, _pid)) => {
            match readiness {
                Some(r) => r.ready(&line),
                None => eprintln!("{line}"),
            }
            server.run(&sys::STOP)?;
            if filo_ns::a_switch_went_away() {
                anyhow::bail!("stopped: a switch went away and --no-reconnect was given");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => match readiness {
            Some(r) => {
                r.failed(&format!("{e:#}"));
                Ok(ExitCode::FAILURE)
            }
            None => Err(e),
        },
    }
}

/// Binds the stack's socket and builds the stack; returns it with its readiness line.
fn start(
    a: &ServeArgs,
    vnls: &[String],
    conf: &filo_ns::NetConf,
    pidfile: Option<&std::path::Path>,
) -> Result<(Server, String, Option<crate::plug::RemoveOnDrop>)> {
    let server = Server::new(&a.path, a.mode, vnls, conf)?;
    if let Some(g) = &a.group {
        let gid = filo_vnl::sys::group_id(g).with_context(|| format!("no group {g}"))?;
        filo_vnl::sys::chown_group(&a.path, gid)
            .with_context(|| format!("chgrp {g} {}", a.path.display()))?;
    }
    let pid = match pidfile {
        Some(p) => {
            sys::write_pidfile(p)
                .with_context(|| format!("cannot create pid file {}", p.display()))?;
            Some(crate::plug::RemoveOnDrop(p.to_path_buf()))
        }
        None => None,
    };
    let mut addrs: Vec<String> = conf.addrs.iter().map(|a| a.to_string()).collect();
    if let Some(l) = server.stack().lease() {
        addrs.push(format!("{}/{} (DHCP from {})", l.addr, l.prefix, l.server));
    }
    if conf.slaac {
        addrs.push("SLAAC".into());
    }
    let line = format!(
        "filo stack serve: {} serves a stack on {}{}",
        a.path.display(),
        vnls.join(" "),
        match addrs.is_empty() {
            true => String::new(),
            false => format!(" with {}", addrs.join(" ")),
        }
    );
    Ok((server, line, pid))
}
