//! `filo ns`: run an unmodified command in its own network namespace on virtual networks.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use filo_ns::NsCommand;

use crate::netconf::ConfArgs;

/// Run a command in a new network namespace with one tap per VNL (like vdens).
#[derive(Args, Debug)]
#[command(after_long_help = "\
Each VNL becomes an interface in the namespace: vde0, vde1, ... carried by filo's plugs; lo is
up. As root only network, UTS (and, for --dns/--dhcp, mount) namespaces are created; as an
ordinary user a user namespace too, mapping you to root inside (needs unprivileged user
namespaces and read/write access to /dev/net/tun).

Networks are given as --vnl VNL (as every filo command takes them) or positionally before
`--` (as vdens takes them). --dhcp waits for a lease and --slaac for a global IPv6 address
before the command starts.

EXAMPLES:
  filo ns vde:///tmp/sw -- bash
  filo ns --ip 10.0.0.5/24 --gw 10.0.0.1 --dns 10.0.0.1 --vnl vde:///tmp/sw -- curl http://10.0.0.1/
  filo ns --dhcp vde:///tmp/sw -- ip addr
  filo ns --slaac vde:///tmp/sw -- ip -6 addr
  filo ns vde:///tmp/a vde:///tmp/b -- ip link      # two interfaces

EXIT STATUS:
  the command's; 128+N when it was killed by signal N; 127 when it does not exist;
  1 when the namespace could not be built (the reason is printed). With --no-reconnect a
  switch that goes away stops the command with SIGTERM (143 unless it handles it).")]
pub struct NsArgs {
    #[command(flatten)]
    conf: ConfArgs,
    /// A network, one interface each (vde0, vde1, ...); repeatable.
    #[arg(long = "vnl", value_name = "VNL")]
    vnl: Vec<String>,
    /// Networks given positionally (as vdens takes them); then `--` and the command
    /// (default: $SHELL).
    #[arg(value_name = "VNL")]
    vnls: Vec<String>,
    /// How long to wait for DHCP or SLAAC to give an address, in seconds.
    #[arg(long, default_value = "15", value_name = "SECONDS", value_parser = crate::duration::seconds)]
    conf_timeout: std::time::Duration,
    /// When a switch goes away, stop the command (SIGTERM) instead of reconnecting to it. By
    /// default a vde:// switch that restarts on the same path is joined again (waits of 100 ms
    /// doubling to 2 s, for at most 60 s), with a warning when the link is lost and when it
    /// is back.
    #[arg(long)]
    no_reconnect: bool,
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

pub fn run(args: NsArgs) -> Result<ExitCode> {
    let cmd = NsCommand {
        vnls: crate::netconf::vnls(&args.vnl, &args.vnls, "filo ns")?,
        conf: args.conf.to_conf(),
        autoconf_timeout: Some(args.conf_timeout),
        argv: args.command,
    };
    if args.no_reconnect {
        filo_ns::stop_when_a_switch_goes();
    }
    let code = filo_ns::run_command(&cmd)?;
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}
