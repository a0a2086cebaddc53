//! Capture files that Wireshark and tshark read: classic pcap with nanosecond timestamps
//! (magic `a1b23c4d`) or pcapng (section header, one Ethernet interface, enhanced packet
//! blocks). Written incrementally and flushed per packet, so a pipe (`-w -`) is live.

use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

const LINKTYPE_ETHERNET: u16 = 1;
const SNAPLEN: u32 = 65535;

/// Which file format to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Pcap,
    PcapNg,
}

/// Writes captured frames to `W`.
pub struct Writer<W: Write> {
    out: W,
    format: Format,
    frames: u64,
}

fn pad4(len: usize) -> usize {
    (4 - len % 4) % 4
}

impl<W: Write> Writer<W> {
    /// Writes the file header; `interface` names the capture point in pcapng.
    pub fn new(mut out: W, format: Format, interface: &str) -> io::Result<Writer<W>> {
        match format {
            Format::Pcap => {
                let mut h = Vec::with_capacity(24);
                h.extend_from_slice(&0xa1b2_3c4du32.to_le_bytes()); // nanosecond resolution
                h.extend_from_slice(&2u16.to_le_bytes());
                h.extend_from_slice(&4u16.to_le_bytes());
                h.extend_from_slice(&0i32.to_le_bytes());
                h.extend_from_slice(&0u32.to_le_bytes());
                h.extend_from_slice(&SNAPLEN.to_le_bytes());
                h.extend_from_slice(&(LINKTYPE_ETHERNET as u32).to_le_bytes());
                out.write_all(&h)?;
            }
            Format::PcapNg => {
                // Section header block.
                let mut shb = Vec::with_capacity(28);
                shb.extend_from_slice(&0x0a0d_0d0au32.to_le_bytes());
                shb.extend_from_slice(&28u32.to_le_bytes());
                shb.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
                shb.extend_from_slice(&1u16.to_le_bytes());
                shb.extend_from_slice(&0u16.to_le_bytes());
                shb.extend_from_slice(&(-1i64).to_le_bytes());
                shb.extend_from_slice(&28u32.to_le_bytes());
                out.write_all(&shb)?;
                // Interface description block: Ethernet, if_name, if_tsresol = 9 (ns).
                let name = interface.as_bytes();
                let mut opts = Vec::new();
                opts.extend_from_slice(&2u16.to_le_bytes());
                opts.extend_from_slice(&(name.len() as u16).to_le_bytes());
                opts.extend_from_slice(name);
                opts.extend(std::iter::repeat_n(0u8, pad4(name.len())));
                opts.extend_from_slice(&9u16.to_le_bytes());
                opts.extend_from_slice(&1u16.to_le_bytes());
                opts.extend_from_slice(&[9, 0, 0, 0]);
                opts.extend_from_slice(&[0, 0, 0, 0]); // opt_endofopt
                let len = (20 + opts.len()) as u32;
                let mut idb = Vec::with_capacity(len as usize);
                idb.extend_from_slice(&1u32.to_le_bytes());
                idb.extend_from_slice(&len.to_le_bytes());
                idb.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
                idb.extend_from_slice(&0u16.to_le_bytes());
                idb.extend_from_slice(&SNAPLEN.to_le_bytes());
                idb.extend_from_slice(&opts);
                idb.extend_from_slice(&len.to_le_bytes());
                out.write_all(&idb)?;
            }
        }
        out.flush()?;
        Ok(Writer {
            out,
            format,
            frames: 0,
        })
    }

    /// Appends one frame stamped with the current wall-clock time.
    pub fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        let ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        self.write_frame_at(ns, frame)
    }

    /// Appends one frame with a timestamp in nanoseconds since the epoch.
    pub fn write_frame_at(&mut self, ns: u64, frame: &[u8]) -> io::Result<()> {
        let caplen = frame.len().min(SNAPLEN as usize);
        match self.format {
            Format::Pcap => {
                let mut h = [0u8; 16];
                h[0..4].copy_from_slice(&((ns / 1_000_000_000) as u32).to_le_bytes());
                h[4..8].copy_from_slice(&((ns % 1_000_000_000) as u32).to_le_bytes());
                h[8..12].copy_from_slice(&(caplen as u32).to_le_bytes());
                h[12..16].copy_from_slice(&(frame.len() as u32).to_le_bytes());
                self.out.write_all(&h)?;
                self.out.write_all(&frame[..caplen])?;
            }
            Format::PcapNg => {
                let pad = pad4(caplen);
                let len = (32 + caplen + pad) as u32;
                let mut h = [0u8; 28];
                h[0..4].copy_from_slice(&6u32.to_le_bytes());
                h[4..8].copy_from_slice(&len.to_le_bytes());
                h[8..12].copy_from_slice(&0u32.to_le_bytes()); // interface 0
                h[12..16].copy_from_slice(&((ns >> 32) as u32).to_le_bytes());
                h[16..20].copy_from_slice(&(ns as u32).to_le_bytes());
                h[20..24].copy_from_slice(&(caplen as u32).to_le_bytes());
                h[24..28].copy_from_slice(&(frame.len() as u32).to_le_bytes());
                self.out.write_all(&h)?;
                self.out.write_all(&frame[..caplen])?;
                self.out.write_all(&[0u8; 3][..pad])?;
                self.out.write_all(&len.to_le_bytes())?;
            }
        }
        self.out.flush()?;
        self.frames += 1;
        Ok(())
    }

    /// Frames written so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcap_header_and_record_layout() {
        let mut w = Writer::new(Vec::new(), Format::Pcap, "x").unwrap();
        w.write_frame_at(1_500_000_000_123_456_789, &[0xaa; 60])
            .unwrap();
        let b = w.out;
        assert_eq!(&b[..4], &[0x4d, 0x3c, 0xb2, 0xa1]);
        assert_eq!(b.len(), 24 + 16 + 60);
        assert_eq!(
            u32::from_le_bytes(b[24..28].try_into().unwrap()),
            1_500_000_000
        );
        assert_eq!(
            u32::from_le_bytes(b[28..32].try_into().unwrap()),
            123_456_789
        );
        assert_eq!(w.frames, 1);
    }

    #[test]
    fn pcapng_blocks_are_padded_and_length_framed() {
        let mut w = Writer::new(Vec::new(), Format::PcapNg, "port3").unwrap();
        w.write_frame_at(42, &[1; 61]).unwrap();
        let b = &w.out;
        let shb_len = u32::from_le_bytes(b[4..8].try_into().unwrap()) as usize;
        let idb_len = u32::from_le_bytes(b[shb_len + 4..shb_len + 8].try_into().unwrap()) as usize;
        let epb = &b[shb_len + idb_len..];
        let epb_len = u32::from_le_bytes(epb[4..8].try_into().unwrap()) as usize;
        assert_eq!(epb_len, 32 + 64);
        assert_eq!(epb.len(), epb_len);
        assert_eq!(&epb[epb_len - 4..], &(epb_len as u32).to_le_bytes());
        assert_eq!(idb_len % 4, 0);
    }
}
