//! `filo ipn`: hold a shared-memory bus open (creating it with chosen settings), or show a
//! bus's members and counters.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use filo_ipn::layout::{Geometry, DEFAULT_SLOT_SIZE, STATE_ACTIVE, STATE_EVICTED};
use filo_ipn::{Bus, BusOptions, PolicyKind};

use crate::sys;

/// A bus in shared memory that `ipn://PATH` plugs join (Inter Process Networking without a
/// kernel module). Any member creates the bus and serves PATH; `filo ipn PATH` creates it
/// with chosen settings and keeps it (and its socket) alive without being a member itself.
#[derive(Args, Debug)]
#[command(after_long_help = "\
Members join with the VNL ipn://PATH (filo plug, filo ns, stacks); the first one creates the bus
unless `filo ipn PATH` did. Who may join is decided by PATH's mode and group, like a file.

`filo ipn stat PATH` lists the members: index, pid, frames in and out, frames lost, times
evicted, and the bus's evictions and reclaimed (dead) members; --json for scripts.

EXAMPLES:
  filo ipn /tmp/bus --policy switch --lossless -d --pidfile /tmp/bus.pid
  filo ns ipn:///tmp/bus --ip 10.0.0.1/24 -- ping 10.0.0.2
  filo plug ipn:///tmp/bus vde:///tmp/sw        (a bus joined to a switch)
  filo ipn stat /tmp/bus --json")]
pub struct IpnArgs {
    /// PATH, or `stat PATH`.
    #[arg(value_name = "[stat] PATH", num_args = 1..=2, required = true)]
    args: Vec<String>,
    /// Who receives a frame: hub (all), switch (learned unicast), mpegts (by PID).
    #[arg(long, default_value = "hub", value_parser = PolicyKind::parse)]
    policy: PolicyKind,
    /// Senders wait for the slowest member (which is evicted after --timeout).
    #[arg(long, conflicts_with = "lossy")]
    lossless: bool,
    /// Late members lose frames, counted (the default).
    #[arg(long)]
    lossy: bool,
    /// Ring slots (a power of two; 4096, or 256 with --vnet).
    #[arg(long)]
    size: Option<u32>,
    /// Frames carry a virtio-net header (TCP super-frames of up to 64 KiB, in 64 KiB slots):
    /// only filo ns, filo router and filo plug join such a bus.
    #[arg(long)]
    vnet: bool,
    /// Lossless: seconds a member may stop reading before it is evicted.
    #[arg(long, default_value_t = 2.0)]
    timeout: f64,
    /// Octal permissions of PATH.
    #[arg(long, default_value = "600", value_parser = filo_vnl::parse_octal_mode)]
    mode: u32,
    /// Group owning PATH.
    #[arg(long)]
    group: Option<String>,
    /// Run in the background.
    #[arg(short, long)]
    daemon: bool,
    /// Write the process id to FILE (which must not exist).
    #[arg(short, long, value_name = "FILE")]
    pidfile: Option<PathBuf>,
    /// stat: print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: IpnArgs) -> Result<ExitCode> {
    match args.args.as_slice() {
        [stat, path] if stat == "stat" => stat_bus(&PathBuf::from(path), args.json),
        [path] => hold(&args, PathBuf::from(path)),
        _ => bail!("expected PATH or `stat PATH`, got {:?}", args.args),
    }
}

fn hold(args: &IpnArgs, path: PathBuf) -> Result<ExitCode> {
    if !(0.01..=3600.0).contains(&args.timeout) {
        bail!(
            "--timeout: expected seconds from 0.01 to 3600, got {}",
            args.timeout
        );
    }
    let mut opts = BusOptions::default();
    opts.params.policy = args.policy;
    opts.params.lossless = args.lossless;
    opts.params.vnet = args.vnet;
    let (slots, slot_size) = if args.vnet {
        (
            filo_ipn::layout::VNET_DEFAULT_SLOTS,
            filo_ipn::layout::VNET_SLOT_SIZE,
        )
    } else {
        (filo_ipn::layout::DEFAULT_SLOTS, DEFAULT_SLOT_SIZE)
    };
    opts.params.geometry = Geometry::new(args.size.unwrap_or(slots), slot_size)
        .map_err(|e| anyhow::anyhow!("--size: {e}"))?;
    opts.params.timeout = Duration::from_secs_f64(args.timeout);
    opts.mode = args.mode;
    opts.group = args.group.clone();
    crate::plug::RemoveOnDrop::refuse_existing(args.pidfile.as_deref())?;
    let pidfile = args
        .pidfile
        .clone()
        .map(|p| std::path::absolute(&p).unwrap_or(p));
    let ready = if args.daemon {
        Some(sys::daemonize_until_ready("filo ipn").context("cannot run in the background")?)
    } else {
        None
    };
    let bus = match Bus::open(&path, &opts) {
        Ok(bus) => bus,
        Err(e) => {
            if let Some(r) = ready {
                r.failed(&format!("filo ipn: {e}"));
            }
            bail!("{e}");
        }
    };
    let _pid = crate::plug::RemoveOnDrop::pidfile(pidfile.as_deref())?;
    let p = bus.params();
    let what = format!(
        "filo ipn: {} bus {} on {} ({} slots{}{})",
        if bus.created() { "created" } else { "joined" },
        p.policy.name(),
        path.display(),
        p.geometry.nslots,
        if p.lossless { ", lossless" } else { ", lossy" },
        if p.vnet { ", vnet" } else { "" }
    );
    match ready {
        Some(r) => r.ready(&what),
        None => eprintln!("{what}"),
    }
    while !sys::STOP.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(ExitCode::SUCCESS)
}

fn stat_bus(path: &std::path::Path, json: bool) -> Result<ExitCode> {
    let opts = BusOptions {
        join_only: true,
        timeout: Duration::from_secs(2),
        ..BusOptions::default()
    };
    let bus = Bus::open(path, &opts)?;
    let p = bus.params();
    let (evictions, reclaimed) = bus.counters();
    let records = bus.records();
    let state = |s: u32| match s {
        STATE_ACTIVE => "active",
        STATE_EVICTED => "evicted",
        _ => "unknown",
    };
    if json {
        let members: Vec<String> = records
            .iter()
            .map(|r| {
                format!(
                    "{{\"index\":{},\"state\":\"{}\",\"pid\":{},\"tag\":{},\"frames_in\":{},\"frames_out\":{},\"lost\":{},\"evicted\":{},\"bad\":{}}}",
                    r.index, state(r.state), r.pid, r.tag, r.frames_in, r.frames_out, r.lost, r.evicted, r.bad
                )
            })
            .collect();
        println!(
            "{{\"path\":{},\"policy\":\"{}\",\"lossless\":{},\"vnet\":{},\"slots\":{},\"evictions\":{},\"reclaimed\":{},\"members\":[{}]}}",
            filo_vnl::console::json_string(&path.display().to_string()),
            p.policy.name(),
            p.lossless,
            p.vnet,
            p.geometry.nslots,
            evictions,
            reclaimed,
            members.join(",")
        );
    } else {
        println!(
            "bus {}: policy {}, {}{}, {} slots; evictions {}, dead members reclaimed {}",
            path.display(),
            p.policy.name(),
            if p.lossless { "lossless" } else { "lossy" },
            if p.vnet { ", vnet" } else { "" },
            p.geometry.nslots,
            evictions,
            reclaimed
        );
        println!(
            "{:>5} {:>8} {:>8} {:>12} {:>12} {:>10} {:>7} {:>5}",
            "index", "state", "pid", "frames_in", "frames_out", "lost", "evicted", "bad"
        );
        for r in &records {
            println!(
                "{:>5} {:>8} {:>8} {:>12} {:>12} {:>10} {:>7} {:>5}",
                r.index,
                state(r.state),
                r.pid,
                r.frames_in,
                r.frames_out,
                r.lost,
                r.evicted,
                r.bad
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
