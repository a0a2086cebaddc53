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
    // Wait for each in turn (a condition variable, no polling that would compete with the
    // driver): the time after the last wait is the time of the last lease.
    let mut addrs = HashSet::new();
    let mut done = 0;
    let mut last = created;
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
    let secs = last.as_secs_f64();
    println!(
        "leases={done}/{count} distinct={} seconds={secs:.3} create_seconds={:.3} rate_per_s={:.0}",
        addrs.len(),
        created.as_secs_f64(),
        done as f64 / secs.max(1e-9)
    );
    if done < count || addrs.len() < count {
        std::process::exit(1);
    }
    Ok(())
}
