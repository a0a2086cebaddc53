//! MPEG-TS demultiplexing, as AF_IPN had: each frame is one 188-byte transport-stream packet
//! and goes to the members whose tag (`tag=` in the VNL) is its PID, and to members tagged
//! [`ALL_PIDS`]. A packet without the 0x47 sync byte goes nowhere.

use super::{Members, Policy};

/// The tag of a member that takes every PID (the default tag).
pub const ALL_PIDS: u32 = 0;
pub const PACKET_LEN: usize = 188;
const SYNC: u8 = 0x47;

/// The PID of a transport-stream packet, None when it is not one.
pub fn pid(packet: &[u8]) -> Option<u16> {
    match packet {
        [SYNC, b1, b2, ..] if packet.len() == PACKET_LEN => {
            Some((u16::from(b1 & 0x1f) << 8) | u16::from(*b2))
        }
        _ => None,
    }
}

pub struct MpegTs;

impl Policy for MpegTs {
    fn receivers(&mut self, frame: &[u8], _sender: usize, members: &Members) -> u64 {
        let Some(pid) = pid(frame) else {
            return 0;
        };
        let mut mask = 0;
        for (i, &tag) in members.tag.iter().enumerate() {
            if tag == ALL_PIDS || tag == u32::from(pid) {
                mask |= 1 << i;
            }
        }
        mask & members.active
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(pid: u16) -> Vec<u8> {
        let mut p = vec![0u8; PACKET_LEN];
        p[0] = SYNC;
        p[1] = (pid >> 8) as u8 & 0x1f;
        p[2] = pid as u8;
        p
    }

    #[test]
    fn packets_go_to_members_of_their_pid() {
        let mut m = Members {
            active: 0b1111,
            ..Members::default()
        };
        m.tag[0] = 0x100;
        m.tag[1] = 0x100;
        m.tag[2] = 0x101;
        m.tag[3] = ALL_PIDS;
        assert_eq!(MpegTs.receivers(&packet(0x100), 0, &m), 0b1011);
        assert_eq!(MpegTs.receivers(&packet(0x101), 0, &m), 0b1100);
        assert_eq!(MpegTs.receivers(&packet(0x1fff), 0, &m), 0b1000);
        let mut bad = packet(0x100);
        bad[0] = 0;
        assert_eq!(MpegTs.receivers(&bad, 0, &m), 0);
        assert_eq!(MpegTs.receivers(&bad[..100], 0, &m), 0);
    }
}
