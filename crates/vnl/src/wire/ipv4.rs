//! IPv4 packets as whole buffers: the length check every reader makes first, and
//! fragmentation (RFC 791). Shared by filo's user-space stack and its router.

use super::checksum::{fold, sum16};

/// Checks an IPv4 header; returns the packet length (total length) when it is plausible.
pub fn packet_len(p: &[u8]) -> Option<usize> {
    if p.len() < 20 || p[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(p[0] & 0xf) * 4;
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    if ihl < 20 || total < ihl || total > p.len() {
        return None;
    }
    Some(total)
}

/// Splits the IPv4 packet `p` into fragments whose IP packets are at most `mtu` bytes
/// (RFC 791), calling `emit` with each; false when `p` is not a well-formed IPv4 packet.
/// The sending host fragments its own packets whatever their DF bit says.
pub fn fragment(p: &[u8], mtu: usize, mut emit: impl FnMut(&[u8])) -> bool {
    let Some(len) = packet_len(p) else {
        return false;
    };
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let step = (mtu.saturating_sub(ihl)) & !7;
    if step == 0 || ihl > len {
        return false;
    }
    let flags_off = u16::from_be_bytes([p[6], p[7]]);
    let base = usize::from(flags_off & 0x1fff) * 8;
    let more_after = flags_off & 0x2000 != 0;
    let payload = &p[ihl..len];
    let mut buf = Vec::with_capacity(ihl + step);
    let mut at = 0;
    while at < payload.len() {
        let end = (at + step).min(payload.len());
        let last = end == payload.len();
        buf.clear();
        buf.extend_from_slice(&p[..ihl]);
        buf.extend_from_slice(&payload[at..end]);
        let total = (ihl + end - at) as u16;
        buf[2..4].copy_from_slice(&total.to_be_bytes());
        let mf = if last && !more_after { 0 } else { 0x2000 };
        let field = mf | (((base + at) / 8) as u16 & 0x1fff);
        buf[6..8].copy_from_slice(&field.to_be_bytes());
        buf[10] = 0;
        buf[11] = 0;
        let c = fold(sum16(0, &buf[..ihl]));
        buf[10..12].copy_from_slice(&c.to_be_bytes());
        emit(&buf);
        at = end;
    }
    true
}
