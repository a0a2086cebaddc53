//! `filo demo`: a virtual network that needs nothing set up, to see filo work.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use filo_vnl::Plug;

/// Show nodes talking on a virtual cable: each sends frames, the other answers.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Frames each node sends.
    #[arg(short = 'n', long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    frames: u32,
}

/// A broadcast Ethernet frame from `src` with a text payload (EtherType 0x88b5: local experimental).
fn frame(src: [u8; 6], dst: [u8; 6], text: &str) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + text.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend_from_slice(text.as_bytes());
    f
}

fn mac(m: &[u8]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn run(args: DemoArgs) -> Result<ExitCode> {
    let dir = std::env::temp_dir().join(format!("filo-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let result = talk(&dir, args.frames);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn talk(dir: &std::path::Path, frames: u32) -> Result<ExitCode> {
    let vnl = format!("ptp://{}", dir.join("cable").display());
    println!("A virtual cable {vnl} with a node at each end.");
    let mut a: Plug = filo_vnl::open(&vnl)?;
    let mut b: Plug = filo_vnl::open(&vnl)?;
    let (mac_a, mac_b) = ([0x02, 0, 0, 0, 0, 0x0a], [0x02, 0, 0, 0, 0, 0x0b]);
    let mut buf = vec![0u8; filo_vnl::plug::FRAME_BUF];
    let start = Instant::now();
    for i in 1..=frames {
        let hello = frame(mac_a, [0xff; 6], &format!("hello #{i} from A"));
        b.send_timeout(&frame(mac_b, mac_a, "ready"), Some(Duration::from_secs(1)))?;
        a.recv_timeout(&mut buf, Some(Duration::from_secs(2)))
            .context("node A heard nothing")?;
        a.send_timeout(&hello, Some(Duration::from_secs(1)))?;
        let n = b
            .recv_timeout(&mut buf, Some(Duration::from_secs(2)))
            .context("node B heard nothing")?;
        let got = &buf[..n];
        if got != hello.as_slice() {
            bail!("node B received a different frame than node A sent");
        }
        if i <= 5 {
            println!(
                "  B <- {} : {:?} ({} bytes)",
                mac(&got[6..12]),
                String::from_utf8_lossy(&got[14..]),
                n
            );
        }
    }
    let elapsed = start.elapsed();
    let (sa, sb) = (a.stats(), b.stats());
    println!(
        "{} frames each way in {:.1} ms; A sent {} received {}, B sent {} received {}.",
        frames,
        elapsed.as_secs_f64() * 1e3,
        sa.frames_out,
        sa.frames_in,
        sb.frames_out,
        sb.frames_in
    );
    Ok(ExitCode::SUCCESS)
}
