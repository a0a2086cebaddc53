//! `filo slirp`: a user-mode NAT gateway on a network, as a daemon with a console.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use filo_slirp::daemon::Mgmt;
use filo_slirp::{Engine, Forward, Proto};
use filo_vnl::OpenOptions;

use crate::{sandbox, sys};

/// A NAT gateway that gives a network's guests the host's network (like slirpvde).
#[derive(Args, Debug)]
#[command(after_long_help = "\
The gateway joins VNL as 10.0.2.2 (fd00::2) and serves it: DHCP from 10.0.2.15, router
advertisements for fd00::/64, DNS at 10.0.2.3 (fd00::3) relayed to the host's resolvers
(/etc/resolv.conf), and TCP, UDP and ping to whatever the host reaches, through ordinary
sockets of this process (no capability needed). The host's loopback is out of reach unless
--slirp slirp:///hostloopback maps 10.0.2.2 to it. Other addresses and options: --slirp with
a slirp:// VNL (addr=, dhcp=, vnameserver=, vdnssearch=, mtu=, v4, v6, restricted...).

With -M, `filo console SOCK` (or vdeterm) talks to the running gateway: fwd/add, fwd/del,
fwd/print, flows/print, leases/print, stat, showinfo, help, shutdown.

EXAMPLES:
  filo slirp vde:///tmp/sw                        Internet access for a switch's guests
  filo slirp vde:///tmp/sw --tcpfwd 8080:10.0.2.15:80 -M /tmp/slirp.mgmt
  filo console /tmp/slirp.mgmt fwd/add tcp 127.0.0.1:2222:10.0.2.15:22
  filo slirp -d --pidfile /tmp/slirp.pid --slirp slirp:///hostloopback vde:///tmp/sw")]
pub struct SlirpArgs {
    /// The gateway's options as a slirp:// VNL (vdeplug_slirp's syntax).
    #[arg(long, value_name = "SLIRP_VNL", default_value = "slirp://")]
    slirp: String,
    /// A host → guest TCP forward, [HOSTIP:]HOSTPORT:GUESTIP:GUESTPORT; repeatable.
    #[arg(long, value_name = "FWD")]
    tcpfwd: Vec<String>,
    /// A host → guest UDP forward, [HOSTIP:]HOSTPORT:GUESTIP:GUESTPORT; repeatable.
    #[arg(long, value_name = "FWD")]
    udpfwd: Vec<String>,
    /// Management socket for the console.
    #[arg(short = 'M', long, value_name = "SOCK")]
    mgmt: Option<PathBuf>,
    /// Octal permissions of the management socket.
    #[arg(long, value_name = "MODE", default_value = "700", value_parser = filo_vnl::parse_octal_mode)]
    mgmtmode: u32,
    /// Run in the background once the gateway is up.
    #[arg(short = 'd', long)]
    daemon: bool,
    /// Write the process id to FILE (which must not exist).
    #[arg(short = 'p', long, value_name = "FILE")]
    pidfile: Option<PathBuf>,
    /// Run without the sandbox (seccomp allowlist, Landlock, no_new_privs) entered once the
    /// gateway is up.
    #[arg(long)]
    no_sandbox: bool,
    /// The network the gateway joins.
    #[arg(value_name = "VNL")]
    vnl: String,
}

pub fn run(args: SlirpArgs) -> Result<ExitCode> {
    let mut cfg = filo_slirp::config_from_text(&args.slirp)?;
    for (proto, list) in [(Proto::Tcp, &args.tcpfwd), (Proto::Udp, &args.udpfwd)] {
        for text in list {
            cfg.forwards
                .push(Forward::parse(proto, text).map_err(anyhow::Error::msg)?);
        }
    }
    let readiness = if args.daemon {
        Some(sys::daemonize_until_ready("filo slirp").context("cannot run in the background")?)
    } else {
        None
    };
    let started = (|| -> Result<_> {
        let options = OpenOptions {
            description: "filo-slirp:".into(),
            vnet: filo_vnl::Vnl::parse(&args.vnl).is_ok_and(|v| v.module() == "vde"),
            ..Default::default()
        };
        let plug = options.open(&args.vnl)?;
        let engine = Engine::new(cfg, plug)?;
        let mgmt = match &args.mgmt {
            Some(p) => Some(Mgmt::bind(
                std::path::absolute(p).unwrap_or(p.clone()),
                args.mgmtmode,
            )?),
            None => None,
        };
        let pid = crate::plug::RemoveOnDrop::pidfile(args.pidfile.as_deref())?;
        Ok((engine, mgmt, pid))
    })();
    let (mut engine, mgmt, _pid) = match (started, readiness) {
        (Ok(s), Some(r)) => {
            r.ready(&format!("filo slirp: gateway on {}", args.vnl));
            s
        }
        (Ok(s), None) => s,
        (Err(e), Some(r)) => {
            r.failed(&format!("{e:#}"));
            return Ok(ExitCode::FAILURE);
        }
        (Err(e), None) => return Err(e),
    };
    if !args.no_sandbox {
        match policy(&args.vnl, args.mgmt.as_deref(), args.pidfile.as_deref()) {
            Ok(policy) => {
                sandbox::enter(&policy)?;
            }
            Err(why) => tracing::warn!("filo slirp: not sandboxed: {why}"),
        }
    }
    match mgmt {
        Some(m) => m.run(&mut engine, &sys::STOP)?,
        None => engine.run(&sys::STOP, |_, _| true)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// What the gateway keeps once it is up: host sockets of every kind it opens for its guests
/// (TCP bind and connect anywhere), reading the resolvers' file, removing its management
/// socket, pid file and plug socket at exit. Err (no sandbox) for a plug other than vde://
/// or ptp://, which may need more.
fn policy(
    vnl: &str,
    mgmt: Option<&std::path::Path>,
    pidfile: Option<&std::path::Path>,
) -> Result<sandbox::Policy, String> {
    let parsed = filo_vnl::Vnl::parse(vnl).map_err(|e| e.to_string())?;
    let mut remove: Vec<PathBuf> = mgmt.map(sandbox::parent_dir).into_iter().collect();
    remove.extend(pidfile.map(sandbox::parent_dir));
    if !matches!(parsed.module(), "vde" | "ptp") {
        return Err(format!("{}:// plugs are not sandboxed", parsed.module()));
    }
    remove.extend(sandbox::plug_socket_dir(&parsed));
    let remove = remove
        .into_iter()
        .map(|p| std::path::absolute(&p).unwrap_or(p))
        .collect();
    let mut read: Vec<PathBuf> = std::iter::once(PathBuf::from("/etc/resolv.conf"))
        .chain(std::env::var_os(filo_slirp::dns::RESOLV_CONF_ENV).map(PathBuf::from))
        .filter(|p| p.exists())
        .collect();
    read.extend(sandbox::account_files());
    read.extend(sandbox::harmless_devices());
    Ok(sandbox::Policy {
        daemon: "filo slirp",
        syscalls: sandbox::slirp_calls(),
        read_write: Vec::new(),
        read,
        remove,
        remove_dir: Vec::new(),
        tcp: true,
    })
}
