//! The virtio-net header that rides in front of "super-frames" between filo endpoints and Linux
//! taps opened with `IFF_VNET_HDR`: a TCP segment of up to 64 KiB travels as one frame, with
//! its checksum left for the last hop. [`finish`] turns such a frame into ordinary frames for
//! peers that do not speak it (segmentation and checksums, as a NIC's TSO would).
//!
//! Layout (12 bytes, little-endian, `virtio_net_hdr_v1`):
//! `flags(1) gso_type(1) hdr_len(2) gso_size(2) csum_start(2) csum_offset(2) num_buffers(2)`.

use super::checksum::{fold, sum16};

pub const HEADER_LEN: usize = 12;
/// flags: the checksum from `csum_start` to the end must be computed and stored at
/// `csum_start + csum_offset`.
pub const F_NEEDS_CSUM: u8 = 1;
pub const F_DATA_VALID: u8 = 2;
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_UDP: u8 = 3;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_ECN: u8 = 0x80;
/// The largest super-frame: an IP packet of 64 KiB plus Ethernet and VLAN headers.
pub const MAX_SUPER_FRAME: usize = 65535 + 14 + 4;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

/// Why a super-frame cannot be turned into ordinary frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VnetError {
    #[error("frame shorter than its virtio-net header")]
    Truncated,
    #[error("virtio-net header points outside the frame")]
    BadOffsets,
    #[error("segmentation type {0:#x} is not supported (only TCP over IPv4/IPv6)")]
    Unsupported(u8),
}

impl Header {
    pub fn parse(bytes: &[u8]) -> Result<Header, VnetError> {
        let b = bytes.get(..HEADER_LEN).ok_or(VnetError::Truncated)?;
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Ok(Header {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }

    pub fn emit(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }

    /// True when the frame is already an ordinary frame (nothing left to do).
    pub fn is_plain(&self) -> bool {
        self.gso_type & !GSO_ECN == GSO_NONE && self.flags & F_NEEDS_CSUM == 0
    }

    /// Moves the offsets after a 4-byte VLAN tag was inserted (+4) or removed (-4) in front
    /// of the IP header.
    pub fn shift(&mut self, delta: i32) {
        let move_by = |v: u16| {
            if v == 0 {
                0
            } else {
                (v as i32 + delta).clamp(0, u16::MAX as i32) as u16
            }
        };
        self.hdr_len = move_by(self.hdr_len);
        self.csum_start = move_by(self.csum_start);
    }
}

/// Completes a partial checksum in place: sums from `start` to the end (the field at
/// `start + offset` already holds the pseudo-header sum) and stores the result there.
fn complete_checksum(frame: &mut [u8], start: usize, offset: usize) -> Result<(), VnetError> {
    let at = start + offset;
    if at + 2 > frame.len() || start > frame.len() {
        return Err(VnetError::BadOffsets);
    }
    let c = fold(sum16(0, &frame[start..]));
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Completes a super-frame's checksum in place for a receiver that takes the whole segment
/// as it is (a user-space stack need not segment what it is about to reassemble).
pub fn complete(hdr: &Header, frame: &mut [u8]) -> Result<(), VnetError> {
    if hdr.flags & F_NEEDS_CSUM == 0 {
        return Ok(());
    }
    complete_checksum(frame, hdr.csum_start as usize, hdr.csum_offset as usize)
}

/// The header for an Ethernet `frame` about to be sent: plain, or TCP segmentation with
/// segments of `mss` bytes when the IP packet is larger than `mtu`. The frame's checksums
/// must already be complete.
pub fn header_for(frame: &[u8], mtu: usize) -> Header {
    if frame.len() <= 14 + mtu {
        return Header::default();
    }
    let Ok(l) = layout(frame) else {
        return Header::default();
    };
    let mss = mtu.saturating_sub(l.payload - l.ip).max(1);
    Header {
        flags: 0,
        gso_type: if l.v6 { GSO_TCPV6 } else { GSO_TCPV4 },
        hdr_len: l.payload as u16,
        gso_size: mss.min(u16::MAX as usize) as u16,
        csum_start: 0,
        csum_offset: 0,
    }
}

/// Where the IP and TCP headers of an Ethernet frame are.
struct Layout {
    ip: usize,
    v6: bool,
    tcp: usize,
    payload: usize,
}

fn layout(frame: &[u8]) -> Result<Layout, VnetError> {
    let mut ip = 14;
    let mut ethertype = u16::from_be_bytes([
        *frame.get(12).ok_or(VnetError::BadOffsets)?,
        *frame.get(13).ok_or(VnetError::BadOffsets)?,
    ]);
    if ethertype == 0x8100 {
        ip = 18;
        ethertype = u16::from_be_bytes([
            *frame.get(16).ok_or(VnetError::BadOffsets)?,
            *frame.get(17).ok_or(VnetError::BadOffsets)?,
        ]);
    }
    let (v6, tcp) = match ethertype {
        0x0800 => {
            let ihl = (*frame.get(ip).ok_or(VnetError::BadOffsets)? & 0x0f) as usize * 4;
            if frame.get(ip + 9) != Some(&6) || ihl < 20 {
                return Err(VnetError::Unsupported(0));
            }
            (false, ip + ihl)
        }
        0x86dd => {
            if frame.get(ip + 6) != Some(&6) {
                return Err(VnetError::Unsupported(0));
            }
            (true, ip + 40)
        }
        _ => return Err(VnetError::Unsupported(0)),
    };
    let doff = (*frame.get(tcp + 12).ok_or(VnetError::BadOffsets)? >> 4) as usize * 4;
    let payload = tcp + doff;
    if doff < 20 || payload > frame.len() {
        return Err(VnetError::BadOffsets);
    }
    Ok(Layout {
        ip,
        v6,
        tcp,
        payload,
    })
}

fn tcp_checksum(seg: &mut [u8], l: &Layout) {
    let tcp_len = seg.len() - l.tcp;
    seg[l.tcp + 16] = 0;
    seg[l.tcp + 17] = 0;
    let mut sum = if l.v6 {
        sum16(0, &seg[l.ip + 8..l.ip + 40])
    } else {
        sum16(0, &seg[l.ip + 12..l.ip + 20])
    };
    sum += 6 + tcp_len as u32;
    let c = fold(sum16(sum, &seg[l.tcp..]));
    seg[l.tcp + 16..l.tcp + 18].copy_from_slice(&c.to_be_bytes());
}

/// Turns a super-frame (`hdr` + `frame`) into ordinary frames, calling `emit` for each.
/// `scratch` is reused for the segments (no allocation once it has grown).
pub fn finish(
    hdr: &Header,
    frame: &[u8],
    scratch: &mut Vec<u8>,
    mut emit: impl FnMut(&[u8]),
) -> Result<(), VnetError> {
    let gso = hdr.gso_type & !GSO_ECN;
    if gso == GSO_NONE {
        if hdr.flags & F_NEEDS_CSUM == 0 {
            emit(frame);
            return Ok(());
        }
        scratch.clear();
        scratch.extend_from_slice(frame);
        complete_checksum(scratch, hdr.csum_start as usize, hdr.csum_offset as usize)?;
        emit(scratch);
        return Ok(());
    }
    if gso != GSO_TCPV4 && gso != GSO_TCPV6 {
        return Err(VnetError::Unsupported(hdr.gso_type));
    }
    let l = layout(frame)?;
    let mss = hdr.gso_size as usize;
    if mss == 0 {
        return Err(VnetError::BadOffsets);
    }
    let headers = &frame[..l.payload];
    let payload = &frame[l.payload..];
    let seq0 = u32::from_be_bytes([
        frame[l.tcp + 4],
        frame[l.tcp + 5],
        frame[l.tcp + 6],
        frame[l.tcp + 7],
    ]);
    let flags0 = frame[l.tcp + 13];
    let id0 = u16::from_be_bytes([frame[l.ip + 4], frame[l.ip + 5]]);
    let segments = payload.len().div_ceil(mss).max(1);
    for i in 0..segments {
        let chunk = &payload[(i * mss).min(payload.len())..((i + 1) * mss).min(payload.len())];
        scratch.clear();
        scratch.extend_from_slice(headers);
        scratch.extend_from_slice(chunk);
        let last = i + 1 == segments;
        // TCP: sequence number, and flags that belong to the first or last segment only.
        let seq = seq0.wrapping_add((i * mss) as u32);
        scratch[l.tcp + 4..l.tcp + 8].copy_from_slice(&seq.to_be_bytes());
        let mut flags = flags0;
        if !last {
            flags &= !(0x01 | 0x08); // FIN, PSH
        }
        if i > 0 {
            flags &= !0x80; // CWR
        }
        scratch[l.tcp + 13] = flags;
        if l.v6 {
            let plen = (scratch.len() - l.ip - 40) as u16;
            scratch[l.ip + 4..l.ip + 6].copy_from_slice(&plen.to_be_bytes());
        } else {
            let total = (scratch.len() - l.ip) as u16;
            scratch[l.ip + 2..l.ip + 4].copy_from_slice(&total.to_be_bytes());
            scratch[l.ip + 4..l.ip + 6].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
            scratch[l.ip + 10] = 0;
            scratch[l.ip + 11] = 0;
            let ihl = l.tcp - l.ip;
            let c = fold(sum16(0, &scratch[l.ip..l.ip + ihl]));
            scratch[l.ip + 10..l.ip + 12].copy_from_slice(&c.to_be_bytes());
        }
        tcp_checksum(scratch, &l);
        emit(scratch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4/TCP frame with `payload` bytes and correct checksums.
    fn tcp4(payload: usize, flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20 + payload];
        f[12] = 0x08;
        let ip = 14;
        f[ip] = 0x45;
        let total = (20 + 20 + payload) as u16;
        f[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
        f[ip + 4..ip + 6].copy_from_slice(&100u16.to_be_bytes());
        f[ip + 8] = 64;
        f[ip + 9] = 6;
        f[ip + 12..ip + 16].copy_from_slice(&[10, 0, 0, 1]);
        f[ip + 16..ip + 20].copy_from_slice(&[10, 0, 0, 2]);
        let tcp = 34;
        f[tcp..tcp + 2].copy_from_slice(&1234u16.to_be_bytes());
        f[tcp + 2..tcp + 4].copy_from_slice(&80u16.to_be_bytes());
        f[tcp + 4..tcp + 8].copy_from_slice(&1000u32.to_be_bytes());
        f[tcp + 12] = 5 << 4;
        f[tcp + 13] = flags;
        for (i, b) in f[54..].iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        f
    }

    #[test]
    fn a_large_segment_gets_a_gso_header_that_finish_turns_back_into_the_same_stream() {
        let big = tcp4(4000, 0x18);
        let h = header_for(&big, 1500);
        assert_eq!(h.gso_type, GSO_TCPV4);
        assert_eq!(h.gso_size, 1460);
        assert_eq!(h.hdr_len, 54);
        assert!(header_for(&tcp4(1000, 0x18), 1500).is_plain());
        let mut scratch = Vec::new();
        let mut sizes = Vec::new();
        finish(&h, &big, &mut scratch, |seg| {
            assert!(ip_ok(seg));
            sizes.push(seg.len() - 54);
        })
        .unwrap();
        assert_eq!(sizes, vec![1460, 1460, 1080]);
        let mut f = big.clone();
        complete(&h, &mut f).unwrap();
        assert_eq!(f, big, "nothing to complete without F_NEEDS_CSUM");
    }

    fn ip_ok(f: &[u8]) -> bool {
        fold(sum16(0, &f[14..34])) == 0
    }

    fn tcp_ok(f: &[u8]) -> bool {
        let mut sum = sum16(0, &f[26..34]);
        sum += 6 + (f.len() - 34) as u32;
        fold(sum16(sum, &f[34..])) == 0
    }

    #[test]
    fn header_round_trips() {
        let h = Header {
            flags: 1,
            gso_type: 4,
            hdr_len: 74,
            gso_size: 1448,
            csum_start: 54,
            csum_offset: 16,
        };
        assert_eq!(Header::parse(&h.emit()).unwrap(), h);
        assert!(Header::parse(&[0; 5]).is_err());
        assert!(Header::default().is_plain());
    }

    #[test]
    fn tso_splits_into_mss_segments_with_valid_checksums() {
        let frame = tcp4(4000, 0x18 | 0x01); // PSH|ACK|FIN
        let hdr = Header {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let mut segs = Vec::new();
        finish(&hdr, &frame, &mut Vec::new(), |s| segs.push(s.to_vec())).unwrap();
        assert_eq!(segs.len(), 3);
        let sizes: Vec<usize> = segs.iter().map(|s| s.len() - 54).collect();
        assert_eq!(sizes, [1448, 1448, 1104]);
        let mut payload = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            assert!(ip_ok(s), "IP checksum of segment {i}");
            assert!(tcp_ok(s), "TCP checksum of segment {i}");
            let seq = u32::from_be_bytes([s[38], s[39], s[40], s[41]]);
            assert_eq!(seq, 1000 + (i * 1448) as u32);
            assert_eq!(u16::from_be_bytes([s[18], s[19]]), 100 + i as u16);
            let fin_psh = s[47] & 0x09;
            assert_eq!(fin_psh != 0, i == 2, "FIN/PSH only on the last segment");
            payload.extend_from_slice(&s[54..]);
        }
        assert_eq!(payload, &frame[54..]);
    }

    #[test]
    fn a_partial_checksum_is_completed() {
        let mut frame = tcp4(100, 0x10);
        // Put the pseudo-header sum in the checksum field, as the kernel does.
        let mut sum = sum16(0, &frame[26..34]);
        sum += 6 + 120;
        let partial = !fold(sum);
        frame[50..52].copy_from_slice(&partial.to_be_bytes());
        let hdr = Header {
            flags: F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 16,
            ..Header::default()
        };
        let mut out = Vec::new();
        finish(&hdr, &frame, &mut Vec::new(), |s| out = s.to_vec()).unwrap();
        assert!(tcp_ok(&out));
    }

    #[test]
    fn bad_offsets_are_errors_not_panics() {
        let frame = tcp4(10, 0x10);
        let hdr = Header {
            flags: F_NEEDS_CSUM,
            csum_start: 5000,
            csum_offset: 16,
            ..Header::default()
        };
        assert_eq!(
            finish(&hdr, &frame, &mut Vec::new(), |_| {}),
            Err(VnetError::BadOffsets)
        );
        let hdr = Header {
            gso_type: GSO_UDP,
            gso_size: 100,
            ..Header::default()
        };
        assert!(matches!(
            finish(&hdr, &frame, &mut Vec::new(), |_| {}),
            Err(VnetError::Unsupported(_))
        ));
        let hdr = Header {
            gso_type: GSO_TCPV4,
            gso_size: 100,
            ..Header::default()
        };
        assert!(finish(&hdr, &frame[..40], &mut Vec::new(), |_| {}).is_err());
    }
}
