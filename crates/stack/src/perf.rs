//! Bulk transfer helpers for tests, benchmarks and `filo stack perf`: send a stream with a
//! known pattern, receive one, and compare CRC-32 checksums of what went in and came out.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use crate::TcpStream;

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

/// Sends `bytes` bytes (a pattern that changes with the offset), then shuts down the write
/// half and waits until the peer acknowledged everything.
pub fn send(c: &TcpStream, bytes: u64) -> io::Result<Transfer> {
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    let mut sent = 0u64;
    let mut w = c;
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
    c.shutdown(std::net::Shutdown::Write)?;
    c.drain(Duration::from_secs(60))?;
    Ok(Transfer {
        bytes: sent,
        elapsed: t0.elapsed(),
        crc32: h.finalize(),
    })
}

/// Receives until the peer closes; returns what arrived and its checksum.
pub fn receive(c: &TcpStream) -> io::Result<Transfer> {
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    let mut r = c;
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
