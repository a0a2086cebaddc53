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

/// The transfer pattern at stream offset `off` (a multiple of 8): each 8-byte word is
/// splitmix64 of its index, so every byte depends on its offset and a hole, a zero-filled
/// piece or a misplaced one of any length changes the CRC.
pub fn pattern(off: u64, buf: &mut [u8]) {
    for (word, chunk) in (off / 8..).zip(buf.chunks_mut(8)) {
        let mut z = word.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
    }
}

/// Writes `bytes` bytes of a pattern that changes with the offset. The caller shuts down the
/// write half (and, for a filo stream, may [`crate::TcpStream::drain`]).
pub fn send(mut w: impl Write, bytes: u64) -> io::Result<Transfer> {
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    let mut sent = 0u64;
    let t0 = Instant::now();
    while sent < bytes {
        let n = ((bytes - sent) as usize).min(CHUNK);
        pattern(sent, &mut buf[..n]);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn crc(b: &[u8]) -> u32 {
        crc32fast::hash(b)
    }

    #[test]
    fn every_byte_depends_on_its_offset() {
        let mut a = vec![0u8; 64 * 1024];
        pattern(0, &mut a);
        // No zero-filled 8-byte hole, anywhere, keeps the CRC.
        let whole = crc(&a);
        for at in [0usize, 8, 1000, 4096, 65528] {
            let mut b = a.clone();
            b[at..at + 8].fill(0);
            assert_ne!(crc(&b), whole, "a zeroed word at {at}");
            let mut c = a.clone();
            c[at] ^= 1;
            assert_ne!(crc(&c), whole, "a flipped bit at {at}");
        }
        // A piece in the wrong place: the same bytes at another offset differ.
        let mut later = vec![0u8; 64];
        pattern(8, &mut later);
        assert_ne!(&later[..56], &a[..56]);
        assert_eq!(&later[..56], &a[8..64]);
        // Chunked generation equals one pass.
        let mut parts = vec![0u8; 64 * 1024];
        let (x, y) = parts.split_at_mut(CHUNK.min(32 * 1024));
        pattern(0, x);
        pattern(x.len() as u64, y);
        assert_eq!(parts, a);
    }

    #[test]
    fn send_and_receive_agree() {
        let mut wire = Vec::new();
        let t = send(&mut wire, 3 * CHUNK as u64 + 13).unwrap();
        let r = receive(&wire[..]).unwrap();
        assert_eq!((t.bytes, t.crc32), (r.bytes, r.crc32));
        wire[CHUNK + 100] = 0;
        assert_ne!(receive(&wire[..]).unwrap().crc32, t.crc32);
    }
}
