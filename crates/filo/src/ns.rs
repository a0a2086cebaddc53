//! `filo ns`: run an unmodified command in its own network namespace on virtual networks.

use std::net::IpAddr;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use filo_ns::{IfAddr, NetConf, NsCommand};

/// Network settings shared by `filo ns` and `filo stack serve`.
#[derive(Args, Debug, Clone, Default)]
pub struct ConfArgs {
    /// An address for the first interface (ADDR/LEN, or ADDR/LEN@vdeN); repeatable.
    #[arg(long = "ip", value_name = "ADDR/LEN")]
    ip: Vec<IfAddr>,
    /// Default gateway; repeatable (one per address family).
    #[arg(long, value_name = "ADDR")]
    gw: Vec<IpAddr>,
    /// Configure the first interface with DHCPv4 (address, router, DNS).
    #[arg(long)]
    dhcp: bool,
    /// Accept IPv6 router advertisements and autoconfigure (the kernel's SLAAC).
    #[arg(long)]
    slaac: bool,
    /// Interface MTU.
    #[arg(long, value_name = "BYTES")]
    mtu: Option<u32>,
    /// Configuration as one string: ip=10.0.0.5/24,gw=10.0.0.1,dns=10.0.0.1,dhcp,slaac,mtu=N.
    #[arg(long, value_name = "CONF")]
    conf: Option<NetConf>,
}

impl ConfArgs {
    pub fn to_conf(&self) -> NetConf {
        let mut c = self.conf.clone().unwrap_or_default();
        c.addrs.extend(self.ip.iter().cloned());
        c.gateways.extend(self.gw.iter().copied());
        c.dhcp |= self.dhcp;
        c.slaac |= self.slaac;
        c.mtu = self.mtu.or(c.mtu);
        c
    }
}

/// Run a command in a new network namespace with one tap per VNL (like vdens).
#[derive(Args, Debug)]
#[command(after_long_help = "\
Each VNL becomes an interface in the namespace: vde0, vde1, ... carried by filo's plugs; lo is
up. As root only network, UTS (and, for --dns/--dhcp, mount) namespaces are created; as an
ordinary user a user namespace too, mapping you to root inside (needs unprivileged user
namespaces and read/write access to /dev/net/tun).

EXAMPLES:
  filo ns vde:///tmp/sw -- bash
  filo ns --ip 10.0.0.5/24 --gw 10.0.0.1 --dns 10.0.0.1 vde:///tmp/sw -- curl http://10.0.0.1/
  filo ns --dhcp vde:///tmp/sw -- ip addr
  filo ns vde:///tmp/a vde:///tmp/b -- ip link      # two interfaces

EXIT STATUS:
  the command's; 128+N when it was killed by signal N; 127 when it does not exist;
  1 when the namespace could not be built (the reason is printed).")]
pub struct NsArgs {
    #[command(flatten)]
    conf: ConfArgs,
    /// Hostname in the namespace's UTS namespace.
    #[arg(long, value_name = "NAME")]
    hostname: Option<String>,
    /// DNS server for a private /etc/resolv.conf; repeatable.
    #[arg(long, value_name = "ADDR")]
    dns: Vec<IpAddr>,
    /// Networks, one interface each; then `--` and the command (default: $SHELL).
    #[arg(value_name = "VNL")]
    vnls: Vec<String>,
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

pub fn run(args: NsArgs) -> Result<ExitCode> {
    let mut conf = args.conf.to_conf();
    conf.hostname = args.hostname.or(conf.hostname);
    conf.dns.extend(args.dns);
    let cmd = NsCommand {
        vnls: args.vnls,
        conf,
        argv: args.command,
    };
    let code = filo_ns::run_command(&cmd)?;
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}
