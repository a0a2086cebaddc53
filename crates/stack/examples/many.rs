//! Many stacks in one process, each with its own IP address on one virtual Ethernet and all
//! served by one driver thread; one more stack pings every one of them.
//!
//! `cargo run --release -p filo-stack --example many -- 1000`          (in-process switch)
//! `cargo run --release -p filo-stack --example many -- 10000 null`    (stacks on null:// plugs)
//!
//! `cargo run --release -p filo-stack --example many -- 10000 switch 200`  (ping 200 of them)
//!
//! Prints the creation time, the resident memory per idle stack, and how many answered ping.

use std::time::{Duration, Instant};

use filo_stack::{Driver, Stack};
use filo_switch::daemon::{Switch, SwitchConfig};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn addr(i: usize) -> String {
    format!("10.{}.{}.{}", 100 + i / 62500, (i / 250) % 250, i % 250 + 1)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let count: usize = std::env::args().nth(1).map_or(Ok(1000), |s| s.parse())?;
    let null = std::env::args().nth(2).as_deref() == Some("null");
    let to_ping: usize = std::env::args().nth(3).map_or(Ok(count), |s| s.parse())?;
    let to_ping = to_ping.min(count);
    filo_stack::raise_fd_limit()?;
    let dir = std::env::temp_dir().join(format!("filo-many-{}", std::process::id()));
    let _switch = if null {
        None
    } else {
        let mut cfg = SwitchConfig::new(&dir);
        cfg.numports = u16::try_from(count + 8).map_err(|_| "at most 65527 stacks on a switch")?;
        Some(Switch::spawn(cfg)?)
    };
    let vnl = if null {
        "null://".to_string()
    } else {
        format!("vde://{}", dir.display())
    };
    let driver = Driver::new()?;
    std::thread::sleep(Duration::from_millis(200));
    let rss0 = rss_kib();
    let t0 = Instant::now();
    let mut stacks = Vec::with_capacity(count);
    for i in 0..count {
        stacks.push(
            Stack::builder()
                .name(format!("node{i}"))
                .interface(&vnl, format!("ip={}/8", addr(i)))
                .driver(&driver)
                .build()
                .map_err(|e| format!("stack {i}: {e}"))?,
        );
    }
    let created = t0.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let rss1 = rss_kib();
    println!(
        "stacks={count} create_seconds={:.3} rss_per_stack_kib={:.1} (rss {} KiB -> {} KiB){}",
        created.as_secs_f64(),
        (rss1.saturating_sub(rss0)) as f64 / count as f64,
        rss0,
        rss1,
        if null {
            " on null:// plugs"
        } else {
            " on an in-process switch"
        }
    );
    if !null {
        let pinger = Stack::builder().interface(&vnl, "ip=10.99.0.1/8").build()?;
        let t0 = Instant::now();
        // Spread the pinged stacks over the whole range.
        let ok = (0..to_ping)
            .map(|k| k * count / to_ping.max(1))
            .filter(|&i| {
                pinger
                    .ping(
                        addr(i).parse().unwrap_or([0, 0, 0, 0].into()),
                        i as u16,
                        32,
                        Duration::from_secs(3),
                    )
                    .is_ok()
            })
            .count();
        println!(
            "answered_ping={ok}/{to_ping} of {count} stacks, seconds={:.3}",
            t0.elapsed().as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
