//! `filo wirefilter`: wirefilter's command line on filo's link emulator.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use filo_vnl::OpenOptions;
use filo_wirefilter::daemon::{Daemon, End};
use filo_wirefilter::{parse_value, Param, Wirefilter, VALUE_FORM};

use crate::{sandbox, sys};

/// An impaired cable between two networks: loss, delay, jitter, duplication, bandwidth,
/// queue limits, MTU and bit errors, per direction, changeable live from a console.
#[derive(Args, Debug)]
#[command(after_long_help = "\
VALUES are wirefilter's: [LR|RL]VALUE[+DELTA][K|M|G][U|N][[NODE]]
  LR / RL      one direction only (left-to-right = from VNL_A); none: both
  +DELTA       random variation, U uniform in [V-D, V+D] (default), N normal with sigma D/3
  K, M, G      x1024, x1048576, x1073741824
  [NODE]       a node of the Markov model (see the console's markov-* commands)
Repeat an option for the two directions: --delay LR20 --delay RL50.

Frames are processed in wirefilter's order: MTU, loss (Gilbert model with --lostburst), dup,
speed, capacity, bandwidth, delay, noise. With -M, `filo console SOCK` or vdeterm change any
value while frames flow (`delay 100`, `loss LR5`, `showinfo`).

EXAMPLES:
  filo wirefilter --loss 5 --delay 20 vde:///tmp/sw1 vde:///tmp/sw2
  filo wirefilter -d 100+20N --bandwidth 1M -M /tmp/wf.mgmt vde:///tmp/a vde:///tmp/b
  filo wirefilter -v /tmp/sw1:/tmp/sw2 -l LR10 -l RL0       (the old -v form)")]
pub struct WirefilterArgs {
    /// Loss, percent.
    #[arg(short = 'l', long, value_name = "VALUE")]
    loss: Vec<String>,
    /// Mean length of loss bursts, in frames (Gilbert model).
    #[arg(short = 'L', long, value_name = "VALUE")]
    lostburst: Vec<String>,
    /// Delay, milliseconds.
    #[arg(short = 'd', long, value_name = "VALUE")]
    delay: Vec<String>,
    /// Duplication, percent.
    #[arg(short = 'D', long, value_name = "VALUE")]
    dup: Vec<String>,
    /// Output bandwidth, bytes/s (delays delivery).
    #[arg(short = 'b', long, visible_alias = "band", value_name = "VALUE")]
    bandwidth: Vec<String>,
    /// Input speed, bytes/s (throttles reading).
    #[arg(short = 's', long, value_name = "VALUE")]
    speed: Vec<String>,
    /// Capacity of the delay queue, bytes; excess frames are dropped.
    #[arg(short = 'c', long, visible_alias = "chanbufsize", value_name = "VALUE")]
    capacity: Vec<String>,
    /// Noise: flipped bits per MiB.
    #[arg(short = 'n', long, value_name = "VALUE")]
    noise: Vec<String>,
    /// MTU, bytes: longer frames are dropped.
    #[arg(short = 'm', long, value_name = "VALUE")]
    mtu: Vec<String>,
    /// Allow reordering (jitter may overtake).
    #[arg(short = 'N', long)]
    nofifo: bool,
    /// Management socket for the console.
    #[arg(short = 'M', long, value_name = "SOCK")]
    mgmt: Option<PathBuf>,
    /// Octal permissions of the management socket.
    #[arg(long, value_name = "MODE", default_value = "700", value_parser = filo_vnl::parse_octal_mode)]
    mgmtmode: u32,
    /// Console commands to run at start.
    #[arg(short = 'f', long, value_name = "FILE")]
    rcfile: Option<PathBuf>,
    /// The two sides as one argument, LEFT:RIGHT (wirefilter's -v); - means stdin/stdout.
    #[arg(short = 'v', long = "vde-plug", value_name = "LEFT:RIGHT")]
    vde_plug: Option<String>,
    /// Seed for the random choices (same seed, same run).
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Run in the background.
    #[arg(long)]
    daemon: bool,
    /// Write the process id to FILE.
    #[arg(long, value_name = "FILE")]
    pidfile: Option<PathBuf>,
    /// Run without the sandbox the wirefilter enters once its plugs are connected (seccomp
    /// allowlist, Landlock, no_new_privs); needed for `load` of scripts outside the
    /// management socket's directory.
    #[arg(long)]
    no_sandbox: bool,
    /// VNL_A VNL_B: the two networks (left and right).
    #[arg(value_name = "VNL")]
    vnls: Vec<String>,
}

/// Splits wirefilter's `-v LEFT:RIGHT` at the colon that is not part of a `module://`.
fn split_sides(text: &str) -> Option<(String, String)> {
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b':' && !text[i..].starts_with("://") && i > 0 && i + 1 < text.len() {
            return Some((text[..i].to_string(), text[i + 1..].to_string()));
        }
    }
    None
}

fn side_vnl(text: &str) -> String {
    if text == "-" {
        "stdio://".into()
    } else {
        text.to_string()
    }
}

/// What the wirefilter keeps once its plugs are connected: reading `load` scripts beside its
/// management socket, removing that socket, its plugs' own sockets (in the switch directory
/// for vde://, beside the path for ptp://) and its pid file at exit. Err (no sandbox) when a
/// side hosts a switch in this process (switch://, hub://), which needs far more, or runs a
/// child (cmd://).
fn policy(
    sides: &[&str],
    mgmt_dir: Option<&std::path::Path>,
    pidfile: Option<&std::path::Path>,
) -> Result<sandbox::Policy, String> {
    let mut remove: Vec<PathBuf> = mgmt_dir.map(PathBuf::from).into_iter().collect();
    remove.extend(pidfile.map(sandbox::parent_dir));
    for side in sides {
        let text = side_vnl(side);
        let Ok(vnl) = filo_vnl::Vnl::parse(&text) else {
            continue;
        };
        match vnl.module() {
            "vde" | "ptp" => remove.extend(sandbox::plug_socket_dir(&vnl)),
            "switch" | "hub" => {
                return Err(format!(
                    "{text} runs a switch inside the wirefilter (start it with `filo switch` to have both sandboxed)"
                ))
            }
            "cmd" => {
                return Err(format!(
                    "{text} runs a child process, which the wirefilter signals and waits for at exit"
                ))
            }
            _ => {}
        }
    }
    let remove = remove
        .into_iter()
        .map(|p| std::path::absolute(&p).unwrap_or(p))
        .collect();
    let mut read: Vec<PathBuf> = mgmt_dir.map(PathBuf::from).into_iter().collect();
    read.extend(sandbox::account_files());
    read.extend(sandbox::harmless_devices());
    Ok(sandbox::Policy {
        daemon: "filo wirefilter",
        syscalls: sandbox::wirefilter_calls(),
        read_write: Vec::new(),
        read,
        remove,
        remove_dir: Vec::new(),
        tcp: false,
    })
}

pub fn run(args: WirefilterArgs) -> Result<ExitCode> {
    let (left, right) = match (&args.vde_plug, args.vnls.as_slice()) {
        (Some(v), []) => split_sides(v).ok_or_else(|| {
            anyhow::anyhow!("-v {v:?}: expected LEFT:RIGHT, e.g. -v /tmp/sw1:/tmp/sw2")
        })?,
        (None, [a, b]) => (a.clone(), b.clone()),
        (Some(_), _) => {
            bail!("give the two sides either with -v LEFT:RIGHT or as two VNLs, not both")
        }
        (None, other) => bail!("expected two VNLs (VNL_A VNL_B), got {}", other.len()),
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let now = std::time::Instant::now();
    let mut wf = Wirefilter::new(seed, now);
    wf.set_fifo(!args.nofifo);
    let settings: [(&str, Param, &Vec<String>); 9] = [
        ("--loss", Param::Loss, &args.loss),
        ("--lostburst", Param::LostBurst, &args.lostburst),
        ("--delay", Param::Delay, &args.delay),
        ("--dup", Param::Dup, &args.dup),
        ("--bandwidth", Param::Bandwidth, &args.bandwidth),
        ("--speed", Param::Speed, &args.speed),
        ("--capacity", Param::Capacity, &args.capacity),
        ("--noise", Param::Noise, &args.noise),
        ("--mtu", Param::Mtu, &args.mtu),
    ];
    for (name, param, values) in settings {
        for text in values {
            let (dir, value, node) = parse_value(text)
                .map_err(|e| anyhow::anyhow!("{name} {text:?}: {e} (accepted: {VALUE_FORM})"))?;
            param
                .check(&value, false)
                .map_err(|e| anyhow::anyhow!("{name} {text:?}: {e}"))?;
            if node.unwrap_or(0) != 0 {
                bail!("{name} {text:?}: Markov nodes other than 0 are set from the console or an rc file (markov-numnodes first)");
            }
            wf.set(dir, param, value);
        }
    }
    if let Some(rc) = &args.rcfile {
        let text = filo_vnl::mgmt::read_script(rc)
            .map_err(std::io::Error::from_raw_os_error)
            .with_context(|| {
                format!(
                    "cannot read rc file {} (expected a regular file of at most {} bytes)",
                    rc.display(),
                    filo_vnl::mgmt::MAX_SCRIPT
                )
            })?;
        filo_wirefilter::console::execute_script(&mut wf, now, &text).map_err(
            |(line, errno)| {
                anyhow::anyhow!("{}:{line}: command failed (error {errno})", rc.display())
            },
        )?;
    }
    let options = OpenOptions {
        description: "filo-wirefilter:".into(),
        ..Default::default()
    };
    let plugs = [
        options.open(&side_vnl(&left))?,
        options.open(&side_vnl(&right))?,
    ];
    let mgmt_dir = args.mgmt.as_deref().map(sandbox::parent_dir);
    let mgmt = args
        .mgmt
        .map(|p| (std::path::absolute(&p).unwrap_or(p), args.mgmtmode));
    let mut daemon = Daemon::new(wf, plugs, mgmt)?;
    if args.daemon {
        sys::daemonize().context("cannot run in the background")?;
    }
    let _pid = crate::plug::RemoveOnDrop::pidfile(args.pidfile.as_deref())?;
    if !args.no_sandbox {
        match policy(
            &[&left, &right],
            mgmt_dir.as_deref(),
            args.pidfile.as_deref(),
        ) {
            Ok(policy) => {
                sandbox::enter(&policy)?;
            }
            Err(why) => tracing::warn!("filo wirefilter: not sandboxed: {why}"),
        }
    }
    match daemon.run(&sys::STOP)? {
        End::Hangup(why) => eprintln!("filo wirefilter: {why}"),
        End::Shutdown => eprintln!("filo wirefilter: shut down from the console"),
        End::Stopped => eprintln!("filo wirefilter: stopped by signal"),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::split_sides;

    #[test]
    fn v_form_splits_outside_module_prefixes() {
        assert_eq!(
            split_sides("/tmp/a:/tmp/b"),
            Some(("/tmp/a".into(), "/tmp/b".into()))
        );
        assert_eq!(
            split_sides("vde:///tmp/a:vde:///tmp/b"),
            Some(("vde:///tmp/a".into(), "vde:///tmp/b".into()))
        );
        assert_eq!(split_sides("-:/tmp/b"), Some(("-".into(), "/tmp/b".into())));
        assert_eq!(split_sides("/tmp/a"), None);
    }
}
