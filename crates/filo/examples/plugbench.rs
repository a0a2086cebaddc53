//! Benchmark helper with filo's batched plugs (recvmmsg/sendmmsg).
//!   plugbench VNL send COUNT SIZE DST SRC   send COUNT frames 02:..:SRC -> 02:..:DST (hex);
//!                                           print "CPU_SECONDS" used
//!   plugbench VNL recv IDLE_MS SRC [any]    announce 02:..:SRC, count frames (to SRC, or
//!                                           with `any` every test frame):
//!                                           "FRAMES SECONDS CPU_SECONDS FIRST LAST"
use std::time::{Duration, Instant};

use filo_vnl::{FrameBatch, Plug};

fn hex(s: Option<&String>) -> u8 {
    s.and_then(|v| u8::from_str_radix(v, 16).ok())
        .unwrap_or(0xff)
}

fn frame(size: usize, dst: u8, src: u8, ethertype: u8) -> Vec<u8> {
    let mut f = vec![0u8; size.clamp(14, 9234)];
    f[..6].copy_from_slice(&[2, 0, 0, 0, 0, dst]);
    if dst == 0xff {
        f[..6].fill(0xff);
    }
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, src]);
    f[12] = 0x88;
    f[13] = ethertype;
    f
}

/// CPU time this (single-threaded) process has used, from /proc/self/schedstat; 0 if unknown.
fn cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |ns| ns / 1e9)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: plugbench VNL send COUNT SIZE DST SRC | plugbench VNL recv IDLE_MS SRC");
        std::process::exit(2);
    }
    filo_switch::register();
    filo_ipn::register();
    let mut plug: Plug = match filo_vnl::open(&args[1]) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("plugbench: {e}");
            std::process::exit(1);
        }
    };
    match args[2].as_str() {
        "send" => {
            let count: u64 = args[3].parse().unwrap_or(0);
            let size: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(64);
            let f = frame(size, hex(args.get(5)), hex(args.get(6)), 0xb5);
            let frames: Vec<&[u8]> = vec![&f[..]; 64];
            let mut sent = 0u64;
            while sent < count {
                let want = (count - sent).min(64) as usize;
                match plug.send_batch(&frames[..want]) {
                    Ok(n) => sent += n as u64,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        let _ = plug
                            .send_timeout(&f, Some(Duration::from_secs(5)))
                            .map(|_| sent += 1);
                    }
                    Err(e) => {
                        eprintln!("plugbench: {e}");
                        break;
                    }
                }
            }
            println!("{:.6}", cpu_secs());
            std::thread::sleep(Duration::from_secs(1));
        }
        "recv" => {
            let idle = Duration::from_millis(args[3].parse().unwrap_or(1000));
            let me = hex(args.get(4));
            let _ = plug.send(&frame(60, 0xff, me, 0xb6));
            // Count test frames addressed to us (flooded copies for others do not count).
            let any = args.get(5).is_some_and(|a| a == "any");
            let mine =
                |f: &[u8]| f.len() >= 14 && f[13] == 0xb5 && (any || f[..6] == [2, 0, 0, 0, 0, me]);
            println!("ready");
            let mut batch = FrameBatch::new(64);
            let (mut frames, mut first, mut last) = (0u64, None, Instant::now());
            let mut buf = vec![0u8; 9236];
            loop {
                let wait = if first.is_some() {
                    idle
                } else {
                    Duration::from_secs(30)
                };
                match plug.recv_timeout(&mut buf, Some(wait)) {
                    Ok(n) if mine(&buf[..n]) => {
                        frames += 1;
                        last = Instant::now();
                        first.get_or_insert(last);
                    }
                    Ok(_) => continue,
                    Err(_) => break,
                }
                while let Ok(n) = plug.recv_batch(&mut batch) {
                    if n == 0 {
                        break;
                    }
                    frames += batch.frames().filter(|f| mine(f)).count() as u64;
                    last = Instant::now();
                }
            }
            let secs = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
            // First and last frame on CLOCK_MONOTONIC, so a script can take the span over
            // several receivers.
            let now = filo_vnl::sys::monotonic_secs();
            let ago = |t: Instant| now - t.elapsed().as_secs_f64();
            let (t_first, t_last) = (first.map_or(0.0, ago), first.map_or(0.0, |_| ago(last)));
            println!(
                "{frames} {secs:.6} {:.6} {t_first:.6} {t_last:.6}",
                cpu_secs()
            );
        }
        _ => {
            eprintln!("plugbench: unknown mode {}", args[2]);
            std::process::exit(2);
        }
    }
}
