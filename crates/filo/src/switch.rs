//! `filo switch`: vde_switch's command line on filo's switch.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use filo_switch::daemon::{Scheduling, Switch, SwitchConfig};
use filo_switch::MacAddr;

use crate::{sandbox, sys};

/// A virtual Ethernet switch that VDE clients (vde_plug, QEMU, libvdeplug programs) and filo
/// plugs connect to.
#[derive(Args, Debug)]
#[command(after_long_help = "\
The switch listens on DIR/ctl with vde_switch's protocol, so anything that speaks VDE can join:
  qemu-system-x86_64 ... -nic vde,sock=/tmp/sw
  vde_plug vde:///tmp/sw          filo plug tap://tap0 /tmp/sw
Without --daemon, and when standard input is a terminal, the console runs on stdin/stdout
(Ctrl-D stops the switch). With -M, `filo console SOCK`, vdeterm and unixterm reach it.

Unlike vde_switch, frames for a receiver that cannot keep up wait in a bounded queue per
port (--queue) and only then are dropped, counted in port/print; --lossless makes the switch
stop reading instead (no loss, but a stuck receiver slows everyone).

filo's own clients (filo plug, filo-stack, filo wirefilter) ask the switch for frame trains
(many frames per datagram) and, for taps and stacks, TCP super-frames; it agrees, and every
other client gets plain frames. FILO_TRAINS=off in a client's environment turns trains off.

EXAMPLES:
  filo switch /tmp/sw -M /tmp/sw.mgmt --daemon
  filo switch -s /tmp/sw -m 666 -t tap0 --nostdin
  filo console /tmp/sw.mgmt port/print")]
pub struct SwitchArgs {
    /// Control directory (same as -s).
    #[arg(value_name = "DIR", conflicts_with = "sock")]
    dir: Option<PathBuf>,
    /// Control directory [default: /tmp/vde.ctl, or /var/run/vde.ctl as root].
    #[arg(short = 's', long = "sock", visible_aliases = ["vdesock", "unix"], value_name = "DIR")]
    sock: Option<PathBuf>,
    /// Octal permissions of the control and data sockets [default: 0600].
    #[arg(short = 'm', long, value_name = "MODE", value_parser = filo_vnl::parse_octal_mode)]
    mode: Option<u32>,
    /// Octal permissions of the control directory [default: derived from --mode, else 02700].
    #[arg(long, value_name = "MODE", value_parser = filo_vnl::parse_octal_mode)]
    dirmode: Option<u32>,
    /// Group owning the directory and sockets.
    #[arg(short = 'g', long, value_name = "GROUP")]
    group: Option<String>,
    /// Number of ports (0 to N-1).
    #[arg(short = 'n', long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=4096))]
    numports: u16,
    /// Hub mode: every frame goes to every other port.
    #[arg(short = 'x', long)]
    hub: bool,
    /// Run the (IEEE 802.1D) spanning tree, so redundant cables do not loop.
    #[arg(short = 'F', long = "fstp", visible_alias = "stp")]
    stp: bool,
    /// Spanning-tree hello time, max age and forward delay in seconds (802.1D: 2:20:15).
    #[arg(long, value_name = "HELLO:MAXAGE:DELAY", default_value = "2:20:15", value_parser = parse_timers)]
    stp_timers: filo_switch::StpTimers,
    /// Spanning-tree bridge priority.
    #[arg(long, value_name = "N", default_value_t = 0x8000)]
    priority: u16,
    /// The switch's MAC address (xx:xx:xx:xx:xx:xx) [default: random].
    #[arg(long, value_name = "MAC")]
    macaddr: Option<String>,
    /// Management socket for the console (vdeterm, unixterm, filo console).
    #[arg(short = 'M', long, value_name = "SOCK")]
    mgmt: Option<PathBuf>,
    /// Octal permissions of the management socket.
    #[arg(long, value_name = "MODE", default_value = "600", value_parser = filo_vnl::parse_octal_mode)]
    mgmtmode: u32,
    /// Group owning the management socket.
    #[arg(long, value_name = "GROUP")]
    mgmtgroup: Option<String>,
    /// Run in the background.
    #[arg(short = 'd', long)]
    daemon: bool,
    /// Write the process id to FILE.
    #[arg(short = 'p', long, value_name = "FILE")]
    pidfile: Option<PathBuf>,
    /// Console commands to run at start [default: ~/.vde2/vde_switch.rc, /etc/vde2/vde_switch.rc].
    #[arg(short = 'f', long, value_name = "FILE")]
    rcfile: Option<PathBuf>,
    /// Attach a kernel tap interface (repeatable; needs CAP_NET_ADMIN).
    #[arg(short = 't', long = "tap", value_name = "TAP")]
    taps: Vec<String>,
    /// Do not use standard input as a console.
    #[arg(long)]
    nostdin: bool,
    /// Frames queued per endpoint before frames for it are dropped.
    #[arg(long = "queue", value_name = "FRAMES", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65536))]
    queue: u32,
    /// Never drop for a full queue: stop reading until receivers catch up.
    #[arg(long)]
    lossless: bool,
    /// Flood every DHCP client broadcast to every port, as vde_switch does. By default a
    /// burst of them (beyond 32 at once and 32 a second per VLAN) goes only to the ports
    /// DHCP servers answered from (console: dhcp/snooping, port/dhcpserver, dhcp/print).
    #[arg(long)]
    no_dhcp_snooping: bool,
    /// Busy-poll for MICROS microseconds after each event instead of sleeping: lower latency
    /// for a whole core of CPU while traffic flows.
    #[arg(long, value_name = "MICROS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    busy_poll: u64,
    /// Scheduling policy of the switch's thread. batch (SCHED_BATCH, no privileges needed): a
    /// switch woken by a frame does not preempt the client that sent it, so floods are taken
    /// in large batches and round trips stay short on busy CPUs. normal: the kernel's default,
    /// SCHED_OTHER.
    /// [default: batch, unless a policy was set from outside (chrt), which is kept]
    #[arg(long, value_name = "POLICY", value_enum)]
    scheduling: Option<SchedulingArg>,
    /// Write a port's traffic (both directions) to a pcapng file (repeatable).
    #[arg(long = "capture", value_name = "PORT=FILE", value_parser = parse_capture)]
    captures: Vec<(u16, PathBuf)>,
    /// Run without the sandbox the switch enters once set up (seccomp allowlist, Landlock
    /// to its directory and the management socket's, no_new_privs); needed for `load` and
    /// `port/capture` of files elsewhere.
    #[arg(long)]
    no_sandbox: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum SchedulingArg {
    Batch,
    Normal,
}

fn parse_capture(text: &str) -> Result<(u16, PathBuf), String> {
    let (port, file) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected PORT=FILE, e.g. 3=port3.pcapng"))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("{port:?} is not a port number"))?;
    if file.is_empty() {
        return Err(format!("{text:?}: the file name is missing"));
    }
    Ok((port, PathBuf::from(file)))
}

fn parse_timers(text: &str) -> Result<filo_switch::StpTimers, String> {
    let parts: Vec<u64> = text
        .split(':')
        .map(|p| p.trim().parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|_| {
            format!("{text:?}: expected HELLO:MAXAGE:DELAY in whole seconds, e.g. 2:20:15")
        })?;
    match parts[..] {
        [hello, max_age, delay] if hello >= 1 && max_age > hello && delay >= 1 && max_age <= 600 && delay <= 600 => Ok(filo_switch::StpTimers {
            hello_time: std::time::Duration::from_secs(hello),
            max_age: std::time::Duration::from_secs(max_age),
            forward_delay: std::time::Duration::from_secs(delay),
        }),
        _ => Err(format!("{text:?}: expected HELLO:MAXAGE:DELAY with HELLO >= 1, MAXAGE > HELLO, DELAY >= 1 (seconds, at most 600)")),
    }
}

/// What the switch keeps once set up: its directory and the management socket's directory
/// (captures and `load` scripts there), the account files port permissions consult, and
/// removing its empty directory at exit.
fn policy(dir: &std::path::Path, mgmt: Option<&std::path::Path>) -> sandbox::Policy {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut read_write = vec![dir.clone()];
    read_write.extend(mgmt.map(sandbox::parent_dir));
    let mut read = sandbox::account_files();
    read.extend(sandbox::harmless_devices());
    sandbox::Policy {
        daemon: "filo switch",
        syscalls: sandbox::switch_calls(),
        remove: Vec::new(),
        tcp: false,
        remove_dir: vec![sandbox::parent_dir(&dir)],
        read_write,
        read,
    }
}

fn default_rcfile() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".vde2/vde_switch.rc"));
    home.into_iter()
        .chain([PathBuf::from("/etc/vde2/vde_switch.rc")])
        .find(|p| p.is_file())
}

pub fn run(args: SwitchArgs) -> Result<ExitCode> {
    let dir = args
        .dir
        .or(args.sock)
        .unwrap_or_else(SwitchConfig::default_dir);
    let mut cfg = SwitchConfig::new(&dir);
    cfg.mode = args.mode;
    cfg.dirmode = args.dirmode;
    cfg.group = args.group;
    cfg.numports = args.numports;
    cfg.hub = args.hub;
    cfg.stp = args.stp;
    cfg.priority = args.priority;
    cfg.stp_timers = args.stp_timers;
    if let Some(mac) = args.macaddr {
        cfg.macaddr = mac.parse::<MacAddr>().map_err(|_| {
            anyhow::anyhow!("--macaddr {mac:?} is not a MAC address: expected xx:xx:xx:xx:xx:xx")
        })?;
        if cfg.macaddr.is_multicast() {
            bail!("--macaddr {mac}: a multicast address (the first byte is odd) cannot be a switch's own; use a unicast one, e.g. 02:00:00:00:00:01");
        }
    }
    cfg.mgmt = args.mgmt.map(|p| std::path::absolute(&p).unwrap_or(p));
    let sandbox = (!args.no_sandbox).then(|| policy(&dir, cfg.mgmt.as_deref()));
    cfg.mgmt_mode = args.mgmtmode;
    cfg.mgmt_group = args.mgmtgroup;
    cfg.rcfile = args.rcfile.or_else(default_rcfile);
    cfg.taps = args.taps;
    cfg.queue_len = args.queue as usize;
    cfg.lossless = args.lossless;
    cfg.dhcp_snooping = !args.no_dhcp_snooping;
    cfg.captures = args.captures;
    cfg.busy_poll = std::time::Duration::from_micros(args.busy_poll);
    cfg.scheduling = match args.scheduling {
        None => Scheduling::Default,
        Some(SchedulingArg::Batch) => Scheduling::Batch,
        Some(SchedulingArg::Normal) => Scheduling::Normal,
    };
    cfg.stdin_console = !args.daemon && !args.nostdin && std::io::stdin().is_terminal();
    if args.daemon {
        crate::plug::RemoveOnDrop::refuse_existing(args.pidfile.as_deref())?;
    }
    let pidfile = args.pidfile.map(|p| std::path::absolute(&p).unwrap_or(p));
    // Every client costs the switch two descriptors (its control connection and data
    // socket): the usual soft limit of 1024 would turn clients away past about 500.
    if let Err(e) = filo_stack::raise_fd_limit() {
        tracing::warn!("cannot raise the open-file limit: {e}");
    }
    let mut switch = Switch::bind(cfg)
        .with_context(|| format!("cannot start the switch on {}", dir.display()))?;
    if args.daemon {
        sys::daemonize().context("cannot run in the background")?;
    }
    let _pid = crate::plug::RemoveOnDrop::pidfile(pidfile.as_deref())?;
    if !args.daemon {
        eprintln!("filo switch: listening on {}", dir.display());
    }
    if let Some(mut policy) = sandbox {
        policy
            .remove
            .extend(pidfile.as_deref().map(sandbox::parent_dir));
        sandbox::enter(&policy)?;
    }
    switch.run(&sys::STOP)?;
    Ok(ExitCode::SUCCESS)
}
