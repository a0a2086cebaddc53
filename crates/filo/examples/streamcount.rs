//! Benchmark helper: counts stream-encoded frames on stdin. Prints "FRAMES SECONDS" (time from
//! the first to the last frame) once no frame came for IDLE_MS, or at EOF.
//! Usage: streamcount IDLE_MS
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let idle = Duration::from_millis(
        std::env::args()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(1000),
    );
    let frames = Arc::new(AtomicU64::new(0));
    let counter = frames.clone();
    let start = Instant::now();
    let last_ns = Arc::new(AtomicU64::new(0));
    let first_ns = Arc::new(AtomicU64::new(0));
    let (l, f) = (last_ns.clone(), first_ns.clone());
    std::thread::spawn(move || {
        let mut input = std::io::stdin().lock();
        let mut buf = vec![0u8; 1 << 16];
        let mut pending: usize = 0; // bytes still to skip of the current frame
        let mut header: Vec<u8> = Vec::with_capacity(2);
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut i = 0;
            while i < n {
                if pending > 0 {
                    let take = pending.min(n - i);
                    pending -= take;
                    i += take;
                    if pending == 0 {
                        let now = start.elapsed().as_nanos() as u64;
                        if counter.fetch_add(1, Ordering::Relaxed) == 0 {
                            f.store(now, Ordering::Relaxed);
                        }
                        l.store(now, Ordering::Relaxed);
                    }
                    continue;
                }
                header.push(buf[i]);
                i += 1;
                if header.len() == 2 {
                    pending = u16::from_be_bytes([header[0], header[1]]) as usize;
                    header.clear();
                }
            }
        }
    });
    let mut seen = 0;
    let mut quiet_since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let now = frames.load(Ordering::Relaxed);
        if now != seen {
            seen = now;
            quiet_since = Instant::now();
        } else {
            // Before the first frame, allow a slow start; after it, stop at the first lull.
            let limit = if seen > 0 {
                idle
            } else {
                Duration::from_secs(20)
            };
            if quiet_since.elapsed() >= limit {
                break;
            }
        }
    }
    let secs = (last_ns
        .load(Ordering::Relaxed)
        .saturating_sub(first_ns.load(Ordering::Relaxed))) as f64
        / 1e9;
    println!("{seen} {secs:.6}");
}
