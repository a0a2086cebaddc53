//! `filo capture`: record what a plug receives to pcap/pcapng, for Wireshark and tshark.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use filo_vnl::pcap::{Format, Writer};
use filo_vnl::OpenOptions;

use crate::sys;

/// Capture the frames a plug receives into a pcap or pcapng file (or a pipe).
#[derive(Args, Debug)]
#[command(after_long_help = "\
The plug joins the network like any node, so on a switch it sees broadcasts, multicasts,
unknown unicast and frames sent to it. To see everything on a filo switch, make a port the
mirror port (`port/setmirror N`) and capture on it, or capture a switch port directly with
`filo switch --capture PORT=FILE` / the console command `port/capture PORT FILE`.

Timestamps have nanosecond resolution. With `-w -` the capture streams to stdout, flushed per
frame, so Wireshark can follow it live.

EXAMPLES:
  filo capture vde:///tmp/sw -w lan.pcapng -c 100
  filo capture 'vde:///tmp/sw[9]' -w - | tshark -r - -Y icmp
  filo capture vxvde:// -w - --pcap | wireshark -k -i -")]
pub struct CaptureArgs {
    /// The network to listen on.
    #[arg(value_name = "VNL")]
    vnl: String,
    /// Output file, or - for stdout.
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    write: PathBuf,
    /// Stop after COUNT frames (at least 1; without -c, no limit).
    #[arg(short = 'c', long, value_name = "COUNT", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Write classic pcap (nanosecond) instead of pcapng.
    #[arg(long)]
    pcap: bool,
    /// Stop after SECONDS (at most 1000000).
    #[arg(long, value_name = "SECONDS", value_parser = crate::duration::seconds)]
    duration: Option<Duration>,
}

pub fn run(args: CaptureArgs) -> Result<ExitCode> {
    let format = if args.pcap {
        Format::Pcap
    } else {
        Format::PcapNg
    };
    let options = OpenOptions {
        description: "filo-capture:".into(),
        ..Default::default()
    };
    let mut plug = options.open(&args.vnl)?;
    let out: Box<dyn Write> = if args.write.as_os_str() == "-" {
        Box::new(io::stdout().lock())
    } else {
        Box::new(
            std::fs::File::create(&args.write)
                .with_context(|| format!("cannot create {}", args.write.display()))?,
        )
    };
    let mut writer =
        Writer::new(out, format, &args.vnl).context("cannot write the capture header")?;
    let deadline = args.duration.map(|d| std::time::Instant::now() + d);
    let mut buf = vec![0u8; filo_vnl::plug::FRAME_BUF];
    let mut reason = "stopped by signal".to_string();
    while !sys::STOP.load(Ordering::Relaxed) {
        if args.count.is_some_and(|c| writer.frames() >= c) {
            reason = "frame count reached".into();
            break;
        }
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            reason = "duration reached".into();
            break;
        }
        match plug.recv_timeout(&mut buf, Some(Duration::from_millis(200))) {
            Ok(n) => {
                if let Err(e) = writer.write_frame(&buf[..n]) {
                    if e.kind() == io::ErrorKind::BrokenPipe {
                        reason = "the reader closed the pipe".into();
                        break;
                    }
                    return Err(e).context("writing the capture");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
            Err(e) => {
                reason = e.to_string();
                break;
            }
        }
    }
    eprintln!(
        "filo capture: {} frames captured ({reason})",
        writer.frames()
    );
    Ok(ExitCode::SUCCESS)
}
