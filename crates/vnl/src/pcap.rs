//! Capture files that Wireshark and tshark read: classic pcap with nanosecond timestamps
//! (magic `a1b23c4d`) or pcapng (section header, one Ethernet interface, enhanced packet
//! blocks). Written incrementally and flushed per packet, so a pipe (`-w -`) is live.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

const LINKTYPE_ETHERNET: u16 = 1;
const SNAPLEN: u32 = 65535;

/// The first four bytes of the pcap (µs and ns, either byte order) and pcapng formats.
const MAGICS: [[u8; 4]; 5] = [
    [0xd4, 0xc3, 0xb2, 0xa1],
    [0xa1, 0xb2, 0xc3, 0xd4],
    [0x4d, 0x3c, 0xb2, 0xa1],
    [0xa1, 0xb2, 0x3c, 0x4d],
    [0x0a, 0x0d, 0x0d, 0x0a],
];

/// Opens `path` for a capture that a less trusted party (a console client) named: never
/// through a symbolic link (O_NOFOLLOW), never blocking (O_NONBLOCK: a FIFO without reader
/// fails at once), only a regular file (anything else is refused before it is opened, and
/// checked again on the open descriptor), and an existing non-empty file is truncated only
/// when it is already a capture (starts with a pcap or pcapng magic), so the switch cannot
/// be made to wipe a file that is not its to wipe. A new file is created with mode 0600.
pub fn create_file(path: &Path) -> io::Result<File> {
    let not_regular = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a regular file", path.display()),
        )
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_file() => return Err(not_regular()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(not_regular());
    }
    if meta.len() > 0 {
        let mut magic = [0u8; 4];
        let is_capture = file.read_exact(&mut magic).is_ok() && MAGICS.contains(&magic);
        if !is_capture {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{}: exists and is not a pcap or pcapng file: not overwritten",
                    path.display()
                ),
            ));
        }
        file.set_len(0)?;
        file.rewind()?;
    }
    Ok(file)
}

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
