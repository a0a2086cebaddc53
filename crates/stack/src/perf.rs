//! Bulk transfer and round-trip helpers for tests, benchmarks and `filo stack perf`: send a
//! stream with a known pattern, receive one, compare CRC-32 checksums of what went in and came
//! out; time one-byte request/response exchanges. Generic over `Read`/`Write`, so the same code
//! measures filo stacks and the kernel's TCP.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

/// What one side of a transfer saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transfer {
    pub bytes: u64,
    pub elapsed: Duration,
    pub crc32: u32,
}

impl Transfer {
    pub fn gbit_per_s(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64().max(1e-9) / 1e9
    }
}

impl std::fmt::Display for Transfer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "bytes={} seconds={:.3} gbit_per_s={:.3} crc32={:08x}",
            self.bytes,
            self.elapsed.as_secs_f64(),
            self.gbit_per_s(),
            self.crc32
        )
    }
}

const CHUNK: usize = 256 * 1024;

/// Writes `bytes` bytes of a pattern that changes with the offset. The caller shuts down the
/// write half (and, for a filo stream, may [`crate::TcpStream::drain`]).
pub fn send(mut w: impl Write, bytes: u64) -> io::Result<Transfer> {
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    let mut sent = 0u64;
    let t0 = Instant::now();
    while sent < bytes {
        let n = ((bytes - sent) as usize).min(CHUNK);
        let round = sent / CHUNK as u64;
        for (k, b) in buf[..n].iter_mut().enumerate().step_by(1024) {
            *b = (round as usize).wrapping_mul(31).wrapping_add(k >> 10) as u8;
        }
        h.update(&buf[..n]);
        w.write_all(&buf[..n])?;
        sent += n as u64;
    }
    Ok(Transfer {
        bytes: sent,
        elapsed: t0.elapsed(),
        crc32: h.finalize(),
    })
}

/// Reads until end of stream; returns what arrived (timed from the first byte) and its CRC.
pub fn receive(mut r: impl Read) -> io::Result<Transfer> {
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    let mut t0 = None;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        t0.get_or_insert_with(Instant::now);
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok(Transfer {
        bytes: total,
        elapsed: t0.map_or(Duration::ZERO, |t| t.elapsed()),
        crc32: h.finalize(),
    })
}

/// Echoes every byte back until end of stream (the far side of [`round_trips`]).
pub fn echo<S: Read + Write>(mut s: S) -> io::Result<u64> {
    let mut buf = [0u8; 4096];
    let mut n = 0u64;
    loop {
        let k = s.read(&mut buf)?;
        if k == 0 {
            return Ok(n);
        }
        s.write_all(&buf[..k])?;
        n += k as u64;
    }
}

/// `count` one-byte request/response exchanges; returns the sorted round-trip times.
pub fn round_trips<S: Read + Write>(mut s: S, count: usize) -> io::Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(count);
    let mut b = [0u8; 1];
    for i in 0..count {
        let t0 = Instant::now();
        s.write_all(&[i as u8])?;
        s.read_exact(&mut b)?;
        out.push(t0.elapsed());
    }
    out.sort();
    Ok(out)
}

/// The `p`-th percentile (0..=100) of sorted durations.
pub fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() - 1) * p.min(100) / 100]
}
