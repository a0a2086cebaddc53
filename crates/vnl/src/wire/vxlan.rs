//! The 8-byte VXLAN header (RFC 7348) used by both `vxlan://` and `vxvde://`:
//! `flags(0x08) | reserved(3) | VNI (24-bit big-endian) | reserved(1)`, then the Ethernet frame.

pub const HEADER_LEN: usize = 8;
/// The I flag: the VNI field is valid.
pub const FLAG_VNI: u8 = 0x08;
/// Largest VNI (24 bits).
pub const MAX_VNI: u32 = 0x00ff_ffff;

/// A typed view over a VXLAN datagram.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

/// A datagram too short to carry a VXLAN header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("VXLAN datagram of {0} bytes is shorter than the 8-byte header")]
pub struct Truncated(pub usize);

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_checked(buffer: T) -> Result<Self, Truncated> {
        let len = buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Truncated(len));
        }
        Ok(Packet { buffer })
    }

    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    pub fn vni(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([0, b[4], b[5], b[6]])
    }

    /// True when every header byte equals what a sender with this VNI writes (vxvde's check).
    pub fn is_exactly(&self, vni: u32) -> bool {
        self.buffer.as_ref()[..HEADER_LEN] == header(vni)
    }

    /// The encapsulated Ethernet frame (empty for a vxvde goodbye).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

/// The header a sender writes for `vni`.
pub fn header(vni: u32) -> [u8; HEADER_LEN] {
    let v = (vni & MAX_VNI).to_be_bytes();
    [FLAG_VNI, 0, 0, 0, v[1], v[2], v[3], 0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_is_rfc7348() {
        assert_eq!(header(42), [0x08, 0, 0, 0, 0, 0, 42, 0]);
        assert_eq!(header(0x123456), [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
        let dgram = [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0, 0xaa];
        let p = Packet::new_checked(&dgram[..]).unwrap();
        assert_eq!(
            (p.flags(), p.vni(), p.payload()),
            (8, 0x123456, &[0xaa][..])
        );
        assert!(p.is_exactly(0x123456));
        assert!(!p.is_exactly(1));
        assert_eq!(Packet::new_checked(&dgram[..7]).unwrap_err(), Truncated(7));
    }
}
