//! Many user-space stacks in one process ask a DHCP server for leases at once: the clients
//! of `bench/router.sh`'s lease row (filo router and dnsmasq on the same switch).
//!
//! `cargo run --release -p filo-stack --example leases -- vde:///tmp/sw 1000 [TIMEOUT_S]`
//!
//! Opens COUNT plugs on VNL first (untimed: connecting to a switch is not the server's work),
//! then creates COUNT stacks with `dhcp` on them, all served by one driver thread, and prints
//! how many had an IPv4 address after how long (from the first stack's creation until the
//! last lease), and the rate. Exits 1 if not every stack got a distinct address within
//! TIMEOUT_S (default 30).

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use filo_stack::{Driver, Stack};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: leases VNL COUNT [TIMEOUT_S]";
    let vnl = args.next().ok_or(usage)?;
    let count: usize = args.next().ok_or(usage)?.parse()?;
    let timeout = Duration::from_secs(args.next().map_or(Ok(30), |s| s.parse())?);
    filo_stack::raise_fd_limit()?;
    let driver = Driver::new()?;
    let mut plugs = Vec::with_capacity(count);
    for i in 0..count {
        plugs.push(filo_vnl::open(&vnl).map_err(|e| format!("plug {i}: {e}"))?);
    }
    let t0 = Instant::now();
    let mut stacks = Vec::with_capacity(count);
    for (i, plug) in plugs.into_iter().enumerate() {
        stacks.push(
            Stack::builder()
                .name(format!("client{i}"))
                .interface_plug(plug, "dhcp")
                .driver(&driver)
                .build()
                .map_err(|e| format!("stack {i}: {e}"))?,
        );
    }
    let created = t0.elapsed();
    let detail = std::env::var_os("LEASES_DETAIL").is_some();
    let cpu0 = cpu_seconds();
    let mut addrs = HashSet::new();
    let mut done = 0;
    let mut last = created;
    // When each stack was first seen with its address (LEASES_DETAIL: every 20 ms, each
    // stack looked at without waiting), for the spread of the lease times.
    let mut at = Vec::new();
    if detail {
        let mut seen = vec![false; count];
        while done < count && t0.elapsed() < timeout {
            for (i, s) in stacks.iter().enumerate() {
                if seen[i] {
                    continue;
                }
                if let Some(c) = s.wait_for_address(false, Duration::ZERO) {
                    seen[i] = true;
                    done += 1;
                    let t = t0.elapsed();
                    last = last.max(t);
                    at.push(t.as_secs_f64());
                    if let IpAddr::V4(a) = c.addr {
                        addrs.insert(a);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    } else {
        // Wait for each in turn (a condition variable, no polling that would compete with
        // the driver): the time after the last wait is the time of the last lease.
        for s in &stacks {
            let left = timeout.saturating_sub(t0.elapsed());
            if let Some(c) = s.wait_for_address(false, left) {
                done += 1;
                last = last.max(t0.elapsed());
                if let IpAddr::V4(a) = c.addr {
                    addrs.insert(a);
                }
            }
        }
    }
    let secs = last.as_secs_f64();
    println!(
        "leases={done}/{count} distinct={} seconds={secs:.3} create_seconds={:.3} rate_per_s={:.0}",
        addrs.len(),
        created.as_secs_f64(),
        done as f64 / secs.max(1e-9)
    );
    if detail {
        at.sort_by(f64::total_cmp);
        let pct = |p: usize| at.get((at.len() * p / 100).min(at.len().saturating_sub(1)));
        let (mut fin, mut fout, mut dropped) = (0, 0, 0);
        for s in &stacks {
            let c = s.counters();
            fin += c.frames_in;
            fout += c.frames_out;
            dropped += c.dropped();
        }
        println!(
            "detail: lease_s p10={:.3} p50={:.3} p90={:.3} frames_in={fin} frames_out={fout} \
             dropped={dropped} cpu_s_after_create={:.2}",
            pct(10).unwrap_or(&f64::NAN),
            pct(50).unwrap_or(&f64::NAN),
            pct(90).unwrap_or(&f64::NAN),
            cpu_seconds() - cpu0,
        );
        let mut per = std::collections::BTreeMap::new();
        for t in &at {
            *per.entry((t * 4.0) as u64).or_insert(0) += 1;
        }
        let hist: Vec<String> = per
            .iter()
            .map(|(q, n)| format!("{:.2}s:{n}", *q as f64 / 4.0))
            .collect();
        println!("detail: leases per quarter second from {}", hist.join(" "));
    }
    if done < count || addrs.len() < count {
        std::process::exit(1);
    }
    Ok(())
}

/// CPU time (user + system) of this process so far, from /proc/self/stat; 0 if unreadable.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at state, field 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}
