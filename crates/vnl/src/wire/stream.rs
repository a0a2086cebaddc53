//! The VDE stream encoding used over pipes, ssh and `cmd://`: every frame is a 2-byte
//! big-endian length followed by that many bytes. Zero lengths are skipped; records longer
//! than [`MAX_RECORD`] mean the peer does not speak this encoding.
//!
//! [`Decoder`] is sans-IO: feed it whatever a `read()` returned, in pieces of any size, and
//! take complete frames out.

/// The largest record vdeplug4 sends (VDE_ETHBUFSIZE + 2).
pub const MAX_RECORD: usize = 9236;
/// Length of the record header.
pub const HEADER_LEN: usize = 2;

/// A stream that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("stream record of {len} bytes exceeds the maximum of {MAX_RECORD}: the peer is not speaking the VDE stream encoding (2-byte big-endian length, then the frame)")]
    Oversized { len: usize },
    #[error("stream ended in the middle of a record ({have} of {want} bytes received)")]
    Truncated { have: usize, want: usize },
}

/// Writes the record header for a frame of `len` bytes.
pub fn encode_header(len: usize) -> Result<[u8; HEADER_LEN], StreamError> {
    if len > MAX_RECORD {
        return Err(StreamError::Oversized { len });
    }
    Ok((len as u16).to_be_bytes())
}

/// What [`Decoder::peek`] found.
enum Next {
    Incomplete,
    Oversized(usize),
    Frame(usize),
}

/// Reassembles records from arbitrary read chunks.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Bytes of `buf` already handed out as frames.
    start: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Decoder {
            buf: Vec::with_capacity(4 * (MAX_RECORD + HEADER_LEN)),
            start: 0,
        }
    }

    /// Space to read into: call [`Decoder::commit`] with the number of bytes written.
    pub fn read_buffer(&mut self, want: usize) -> &mut [u8] {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > self.buf.capacity() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + want, 0);
        &mut self.buf[old..]
    }

    /// Keeps `written` bytes of the last [`Decoder::read_buffer`] and drops the rest.
    pub fn commit(&mut self, requested: usize, written: usize) {
        let keep = self.buf.len() - requested + written.min(requested);
        self.buf.truncate(keep);
    }

    /// Appends bytes (convenience for tests and callers that already have a slice).
    pub fn feed(&mut self, data: &[u8]) {
        let dst = self.read_buffer(data.len());
        dst.copy_from_slice(data);
    }

    /// The next complete frame, if one is buffered. Zero-length records are skipped.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, StreamError> {
        let (at, next) = self.peek();
        self.start = at;
        match next {
            Next::Incomplete => Ok(None),
            Next::Oversized(len) => Err(StreamError::Oversized { len }),
            Next::Frame(len) => {
                let from = at + HEADER_LEN;
                self.start = from + len;
                Ok(Some(&self.buf[from..from + len]))
            }
        }
    }

    /// Where the next non-empty record starts (zero-length ones are passed over), and what
    /// is there.
    fn peek(&self) -> (usize, Next) {
        let mut at = self.start;
        loop {
            let avail = &self.buf[at..];
            if avail.len() < HEADER_LEN {
                return (at, Next::Incomplete);
            }
            let len = u16::from_be_bytes([avail[0], avail[1]]) as usize;
            if len == 0 {
                at += HEADER_LEN;
            } else if len > MAX_RECORD {
                return (at, Next::Oversized(len));
            } else if avail.len() < HEADER_LEN + len {
                return (at, Next::Incomplete);
            } else {
                return (at, Next::Frame(len));
            }
        }
    }

    /// Checks the state at end of stream: leftover bytes mean a truncated record.
    pub fn finish(&self) -> Result<(), StreamError> {
        let avail = &self.buf[self.start..];
        match avail.len() {
            0 => Ok(()),
            1 => Err(StreamError::Truncated { have: 1, want: 2 }),
            n => Err(StreamError::Truncated {
                have: n - HEADER_LEN,
                want: u16::from_be_bytes([avail[0], avail[1]]) as usize,
            }),
        }
    }

    /// True when [`Decoder::next_frame`] has something to return without more input: a
    /// complete record (or an error to report).
    pub fn has_frame(&self) -> bool {
        !matches!(self.peek().1, Next::Incomplete)
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(frame: &[u8]) -> Vec<u8> {
        let mut v = encode_header(frame.len()).unwrap().to_vec();
        v.extend_from_slice(frame);
        v
    }

    #[test]
    fn frames_split_at_every_byte_reassemble() {
        let frames: Vec<Vec<u8>> = (1..40).map(|n| vec![n as u8; n * 37]).collect();
        let wire: Vec<u8> = frames.iter().flat_map(|f| record(f)).collect();
        let mut dec = Decoder::new();
        let mut got = Vec::new();
        for byte in &wire {
            dec.feed(std::slice::from_ref(byte));
            while let Some(f) = dec.next_frame().unwrap() {
                got.push(f.to_vec());
            }
        }
        assert_eq!(got, frames);
        assert_eq!(dec.finish(), Ok(()));
    }

    #[test]
    fn has_frame_says_whether_a_whole_record_is_buffered() {
        let mut dec = Decoder::new();
        assert!(!dec.has_frame());
        let wire = record(&[7u8; 20]);
        dec.feed(&[0, 0]);
        dec.feed(&wire[..10]);
        assert!(!dec.has_frame(), "half a record after an empty one");
        dec.feed(&wire[10..]);
        assert!(dec.has_frame());
        assert!(dec.next_frame().unwrap().is_some());
        assert!(!dec.has_frame());
        dec.feed(&[0xff, 0xff]);
        assert!(dec.has_frame(), "an oversized length is reported at once");
    }

    #[test]
    fn zero_length_records_are_skipped() {
        let mut dec = Decoder::new();
        dec.feed(&[0, 0, 0, 0]);
        dec.feed(&record(b"hello world, frame"));
        dec.feed(&[0, 0]);
        assert_eq!(dec.next_frame().unwrap(), Some(&b"hello world, frame"[..]));
        assert_eq!(dec.next_frame().unwrap(), None);
        assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn oversized_record_is_an_error() {
        let mut dec = Decoder::new();
        dec.feed(&[0xff, 0xff, 1, 2, 3]);
        assert_eq!(
            dec.next_frame(),
            Err(StreamError::Oversized { len: 0xffff })
        );
        assert!(encode_header(MAX_RECORD + 1).is_err());
        assert!(encode_header(MAX_RECORD).is_ok());
    }

    #[test]
    fn truncated_record_is_reported_at_end() {
        let mut dec = Decoder::new();
        dec.feed(&[0, 10, 1, 2, 3]);
        assert_eq!(dec.next_frame().unwrap(), None);
        assert_eq!(
            dec.finish(),
            Err(StreamError::Truncated { have: 3, want: 10 })
        );
        let mut dec = Decoder::new();
        dec.feed(&[0]);
        assert_eq!(
            dec.finish(),
            Err(StreamError::Truncated { have: 1, want: 2 })
        );
    }

    #[test]
    fn commit_keeps_only_written_bytes() {
        let mut dec = Decoder::new();
        let buf = dec.read_buffer(100);
        buf[..4].copy_from_slice(&[0, 2, 7, 8]);
        dec.commit(100, 4);
        assert_eq!(dec.next_frame().unwrap(), Some(&[7u8, 8][..]));
    }
}
