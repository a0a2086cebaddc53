//! `filo plug`: vde_plug's command line on filo's plugs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use filo_vnl::cable::{self, CableEnd};
use filo_vnl::transport::stream::StreamTransport;
use filo_vnl::{OpenOptions, Plug};

use crate::sys;

/// Join two networks with a virtual cable, or carry one over stdin/stdout or a command.
#[derive(Args, Debug)]
#[command(after_long_help = "\
FORMS:
  filo plug VNL1 VNL2            a cable between two networks
  filo plug [VNL]                frames of VNL on stdin/stdout (stream encoding)
  filo plug [VNL] = CMD [ARG]... frames of VNL through a command's stdin/stdout

A VNL (Virtual Network Locator) names a network: vde:///tmp/sw (a VDE switch; a bare path
means the same), vde:///tmp/sw[3] (port 3), ptp:///tmp/link, udp://2000->10.0.0.2:2000,
vxvde://239.0.0.1/vni=7, vxlan://239.0.0.1/vni=42, tap://tap0, cmd://ssh host filo plug,
seqpacket://FD, null://. An empty VNL means your default switch (~/.vdeplug/default,
~/.vde2/default.switch, then /tmp/vde.ctl, or /var/run/vde.ctl as root).

The stream encoding is vde_plug's: each frame is a 2-byte big-endian length and the frame.

EXAMPLES:
  filo plug vde:///tmp/sw1 vde:///tmp/sw2         join two switches
  filo plug /tmp/sw = ssh host filo plug /tmp/sw  join switches on two hosts
  filo plug tap://tap0 vde:///tmp/sw              put a kernel tap on a switch
  filo plug vde:///tmp/sw vxvde://                extend a switch to every host on the LAN

RECONNECTING:
  When a vde:// switch goes away (a restart, a crash), the plug reconnects to the same path with
  the same port request: after 100 ms, then waits doubling up to 2 s, for --reconnect-timeout
  seconds (60 by default). Each loss and return is logged. --no-reconnect exits instead.

EXIT STATUS:
  0 when a side that cannot reconnect (stdin/stdout, a command, a tap...) hangs up or a signal
  stops the plug; 1 on an error, when a switch went away with --no-reconnect, or when it did
  not come back in time (the reason is printed).")]
pub struct PlugArgs {
    /// Run in the background (detached from the terminal).
    #[arg(short = 'd', long)]
    daemon: bool,
    /// Write the process id to FILE (which must not exist).
    #[arg(short = 'p', long, value_name = "FILE")]
    pidfile: Option<PathBuf>,
    /// Description shown by the switch (`port/print`); user and pid are appended.
    #[arg(
        short = 'D',
        long = "descr",
        value_name = "DESCR",
        default_value = "filo-plug:"
    )]
    descr: String,
    /// Group owning the data socket of the first VNL.
    #[arg(short = 'g', long, value_name = "GROUP")]
    group: Option<String>,
    /// Group owning the data socket of the second VNL.
    #[arg(short = 'G', long, value_name = "GROUP")]
    group2: Option<String>,
    /// Octal permissions of the first VNL's data socket (default 0700).
    #[arg(short = 'm', long = "mode", visible_alias = "mod", value_name = "MODE", value_parser = filo_vnl::parse_octal_mode)]
    mode: Option<u32>,
    /// Octal permissions of the second VNL's data socket.
    #[arg(short = 'M', long = "mode2", visible_alias = "mod2", value_name = "MODE", value_parser = filo_vnl::parse_octal_mode)]
    mode2: Option<u32>,
    /// Seconds to wait for a switch to answer (at most 1000000).
    #[arg(long, value_name = "SECONDS", default_value = "5", value_parser = crate::duration::seconds)]
    timeout: std::time::Duration,
    /// Exit (status 1) when a switch goes away instead of reconnecting to it.
    #[arg(long)]
    no_reconnect: bool,
    /// Seconds to keep trying to reconnect to a switch that went away (then exit with status 1).
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    reconnect_timeout: f64,
    /// VNL1 [VNL2], or [VNL] = COMMAND [ARGS]...
    #[arg(
        value_name = "ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    args: Vec<String>,
}

enum Form {
    Cable(String, String),
    Stdio(String),
    Command(String, Vec<String>),
}

fn form(args: &[String]) -> Result<Form> {
    if let Some(eq) = args.iter().position(|a| a == "=") {
        let vnl = match &args[..eq] {
            [] => String::new(),
            [one] => one.clone(),
            more => bail!(
                "before '=' give at most one VNL, got {}: {}",
                more.len(),
                more.join(" ")
            ),
        };
        let cmd = args[eq + 1..].to_vec();
        if cmd.is_empty() {
            bail!("'=' must be followed by a command, e.g. filo plug /tmp/sw = ssh host filo plug /tmp/sw");
        }
        return Ok(Form::Command(vnl, cmd));
    }
    match args {
        [] => Ok(Form::Stdio(String::new())),
        [one] => Ok(Form::Stdio(one.clone())),
        [a, b] => Ok(Form::Cable(a.clone(), b.clone())),
        more => bail!(
            "too many arguments ({}): expected VNL1 VNL2, [VNL], or [VNL] = COMMAND [ARGS]...",
            more.len()
        ),
    }
}

pub fn run(args: PlugArgs) -> Result<ExitCode> {
    if !(args.reconnect_timeout.is_finite() && (0.0..1e9).contains(&args.reconnect_timeout)) {
        bail!(
            "--reconnect-timeout {} is not valid: expected a number of seconds (0 to 1e9)",
            args.reconnect_timeout
        );
    }
    let form = form(&args.args)?;
    // The virtio-net framing is chosen per end when the cable opens (open_cable).
    let options = |group: &Option<String>, mode: Option<u32>| OpenOptions {
        description: args.descr.clone(),
        timeout: args.timeout,
        group: group.clone(),
        mode,
        vnet: false,
    };
    let first = options(&args.group, args.mode);
    let second = options(&args.group2, args.mode2);
    if args.daemon && !matches!(form, Form::Cable(..)) {
        bail!("--daemon needs the cable form (VNL1 VNL2): the other forms use stdin/stdout or a child");
    }
    let open = |opts: &OpenOptions, vnl: &str| -> Result<Plug> { Ok(opts.open(vnl)?) };
    let cable = |a: &str, b: &str| open_cable(a, b, first.clone(), second.clone());
    // In the background, the fork comes before the plugs open: an `ipn://` bus or a
    // `switch://` switch serves from a thread of this process, which a later fork would lose.
    let plugs: [Plug; 2] = match form {
        Form::Cable(a, b) if args.daemon => {
            RemoveOnDrop::refuse_existing(args.pidfile.as_deref())?;
            let ready =
                sys::daemonize_until_ready("filo plug").context("cannot run in the background")?;
            match cable(&a, &b) {
                Ok(plugs) => {
                    ready.ready(&format!("filo plug: {a} and {b} joined"));
                    plugs
                }
                Err(e) => {
                    ready.failed(&format!("{e:#}"));
                    return Err(e);
                }
            }
        }
        Form::Cable(a, b) => cable(&a, &b)?,
        Form::Stdio(a) => {
            let plug = open(&first, &a)?;
            let stdio = StreamTransport::stdio().context("standard input/output")?;
            [plug, Plug::from_transport("stdin/stdout", Box::new(stdio))]
        }
        Form::Command(a, cmd) => {
            let plug = open(&first, &a)?;
            let label = format!("command {:?}", cmd.join(" "));
            let child = StreamTransport::spawn(&cmd[0], &cmd[1..], label.clone())?;
            [plug, Plug::from_transport(label, Box::new(child))]
        }
    };
    let _pidfile = RemoveOnDrop::pidfile(args.pidfile.as_deref())?;
    let mut plugs = plugs;
    for p in &plugs {
        tracing::info!(
            "{}: {} transport{}",
            p.name(),
            p.kind(),
            if p.vnet() {
                ", virtio-net framing (super-frames)"
            } else {
                ""
            }
        );
    }
    let outcome = if args.no_reconnect {
        cable::run(&mut plugs, &sys::STOP)
    } else {
        let policy = filo_vnl::reconnect::Policy {
            give_up_after: Some(std::time::Duration::from_secs_f64(args.reconnect_timeout)),
            ..Default::default()
        };
        cable::run_reconnecting(&mut plugs, &sys::STOP, policy)
    };
    let switch_gone =
        matches!(&outcome, CableEnd::Hangup { side, .. } if plugs[*side].reopener().is_some());
    drop(plugs);
    match outcome {
        CableEnd::Hangup { .. } if switch_gone => bail!("{outcome} (--no-reconnect)"),
        CableEnd::Hangup { .. } | CableEnd::Stopped => {
            tracing::info!("filo plug: {outcome}");
            eprintln!("filo plug: {outcome}");
            Ok(ExitCode::SUCCESS)
        }
        CableEnd::Failed { .. } | CableEnd::GaveUp { .. } => bail!("{outcome}"),
    }
}

pub(crate) struct RemoveOnDrop(pub(crate) PathBuf);

impl RemoveOnDrop {
    /// An error if the pid file `path` exists already (another daemon may own it).
    pub(crate) fn refuse_existing(path: Option<&std::path::Path>) -> Result<()> {
        match path {
            Some(p) if p.exists() => bail!("pid file {} already exists", p.display()),
            _ => Ok(()),
        }
    }

    /// Writes this process's id to `path` (if given, made absolute), removed again when the
    /// guard drops.
    pub(crate) fn pidfile(path: Option<&std::path::Path>) -> Result<Option<RemoveOnDrop>> {
        let Some(path) = path else { return Ok(None) };
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        sys::write_pidfile(&abs)
            .with_context(|| format!("cannot create pid file {}", abs.display()))?;
        Ok(Some(RemoveOnDrop(abs)))
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Opens a cable's two ends with the virtio-net framing (TCP super-frames) where it pays: a
/// cable with a kernel tap offers it on both ends (the cable converts where one cannot); an
/// `ipn://` end always offers it (a bus created with `vnet` carries only that framing), and the
/// other end then takes it only if the bus turned out to carry it, so a plain bus beside a
/// switch costs no conversion per frame.
fn open_cable(
    a: &str,
    b: &str,
    mut first: OpenOptions,
    mut second: OpenOptions,
) -> Result<[Plug; 2]> {
    let (tap, ipn) = (
        |v: &str| v.starts_with("tap://"),
        |v: &str| v.starts_with("ipn://"),
    );
    let any_tap = tap(a) || tap(b);
    first.vnet = any_tap || ipn(a);
    second.vnet = any_tap || ipn(b);
    if !any_tap && ipn(b) && !ipn(a) {
        let pb = second.open(b)?;
        first.vnet = pb.vnet();
        return Ok([first.open(a)?, pb]);
    }
    let pa = first.open(a)?;
    if !any_tap && ipn(a) && !ipn(b) {
        second.vnet = pa.vnet();
    }
    Ok([pa, second.open(b)?])
}
