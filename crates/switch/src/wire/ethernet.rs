//! Ethernet II / 802.3 header: destination, source, EtherType (or 802.3 length).

use super::{read_u16, write_u16, WireError};
use std::fmt;
use std::str::FromStr;

/// Length of the Ethernet header (no 802.1Q tag, no FCS).
pub const HEADER_LEN: usize = 14;

mod field {
    use std::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: usize = 12;
}

/// A 48-bit IEEE MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    pub const ZERO: MacAddr = MacAddr([0; 6]);
    /// The 802.1D bridge group address, destination of spanning-tree BPDUs.
    pub const STP_GROUP: MacAddr = MacAddr([0x01, 0x80, 0xc2, 0x00, 0x00, 0x00]);

    /// Copy an address out of the first six bytes of `bytes`.
    ///
    /// # Panics
    /// If `bytes` is shorter than six bytes.
    pub fn from_bytes(bytes: &[u8]) -> MacAddr {
        let mut octets = [0u8; 6];
        octets.copy_from_slice(&bytes[..6]);
        MacAddr(octets)
    }

    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Group (I/G) bit: multicast, including broadcast.
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    pub const fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// The address as the low 48 bits of a u64 (network byte order), for compact keys.
    pub const fn to_u64(&self) -> u64 {
        let o = self.0;
        ((o[0] as u64) << 40)
            | ((o[1] as u64) << 32)
            | ((o[2] as u64) << 24)
            | ((o[3] as u64) << 16)
            | ((o[4] as u64) << 8)
            | (o[5] as u64)
    }

    pub const fn from_u64(value: u64) -> MacAddr {
        MacAddr([
            (value >> 40) as u8,
            (value >> 32) as u8,
            (value >> 24) as u8,
            (value >> 16) as u8,
            (value >> 8) as u8,
            value as u8,
        ])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            o[0], o[1], o[2], o[3], o[4], o[5]
        )
    }
}

/// A MAC address string was not six hex octets separated by `:` or `.`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address (expected six hex octets separated by ':' or '.')")]
pub struct ParseMacError;

impl FromStr for MacAddr {
    type Err = ParseMacError;

    /// Accepts `02:00:00:00:00:aa` and, like vde_switch's `--macaddr`, `02.00.00.00.00.aa`.
    /// One separator style per address; octets may be one or two hex digits.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let separator = if text.contains(':') { ':' } else { '.' };
        let mut octets = [0u8; 6];
        let mut count = 0;
        for part in text.split(separator) {
            if count == 6 || part.is_empty() || part.len() > 2 {
                return Err(ParseMacError);
            }
            octets[count] = u8::from_str_radix(part, 16).map_err(|_| ParseMacError)?;
            count += 1;
        }
        if count != 6 {
            return Err(ParseMacError);
        }
        Ok(MacAddr(octets))
    }
}

/// Well-known EtherType values the switch cares about.
pub struct EtherType;

impl EtherType {
    /// 802.1Q customer VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad service tag; like vde_switch, not recognised (treated as untagged).
    pub const QINQ: u16 = 0x88a8;
    /// IPv4 (DHCP snooping looks at its UDP ports).
    pub const IPV4: u16 = 0x0800;
    /// Values up to this are an 802.3 length, not an EtherType.
    pub const MAX_LENGTH: u16 = 1500;
}

/// A view of an Ethernet frame (header + payload, no FCS).
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wrap without checking; accessors may panic if the buffer is shorter than `HEADER_LEN`.
    pub const fn new_unchecked(buffer: T) -> Frame<T> {
        Frame { buffer }
    }

    /// Wrap, checking the buffer holds a full header.
    pub fn new_checked(buffer: T) -> Result<Frame<T>, WireError> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(WireError::Truncated)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn dst_addr(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[field::DST])
    }

    pub fn src_addr(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[field::SRC])
    }

    /// EtherType, or the 802.3 length when `<= 1500`.
    pub fn ethertype(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ETHERTYPE)
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    pub fn set_dst_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr.0);
    }

    pub fn set_src_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr.0);
    }

    pub fn set_ethertype(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::ETHERTYPE, value);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: [u8; 16] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0xaa, 0x08, 0x06, 0xde,
        0xad,
    ];

    #[test]
    fn deconstruct() {
        let frame = Frame::new_checked(&FRAME[..]).unwrap();
        assert!(frame.dst_addr().is_broadcast());
        assert_eq!(frame.src_addr(), "02:00:00:00:00:aa".parse().unwrap());
        assert_eq!(frame.ethertype(), 0x0806);
        assert_eq!(frame.payload(), &[0xde, 0xad]);
    }

    #[test]
    fn construct() {
        let mut bytes = [0u8; 16];
        let mut frame = Frame::new_unchecked(&mut bytes[..]);
        frame.set_dst_addr(MacAddr::BROADCAST);
        frame.set_src_addr(MacAddr([2, 0, 0, 0, 0, 0xaa]));
        frame.set_ethertype(0x0806);
        frame.payload_mut().copy_from_slice(&[0xde, 0xad]);
        assert_eq!(bytes, FRAME);
    }

    #[test]
    fn too_short_is_rejected() {
        assert_eq!(
            Frame::new_checked(&FRAME[..13]).unwrap_err(),
            WireError::Truncated
        );
    }

    #[test]
    fn mac_display_and_parse() {
        let mac = MacAddr([2, 0, 0, 0, 0, 0xaa]);
        assert_eq!(mac.to_string(), "02:00:00:00:00:aa");
        assert_eq!("02.00.00.00.00.AA".parse::<MacAddr>(), Ok(mac));
        assert_eq!("2:0:0:0:0:aa".parse::<MacAddr>(), Ok(mac));
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:aa:bb",
            "02:00:00:00:00:zz",
            "020:0:0:0:0:1",
            "02:00.00:00:00:aa",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn mac_classes() {
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(MacAddr::STP_GROUP.is_multicast() && !MacAddr::STP_GROUP.is_broadcast());
        assert!(MacAddr([2, 0, 0, 0, 0, 1]).is_unicast());
        let mac = MacAddr([1, 2, 3, 4, 5, 6]);
        assert_eq!(MacAddr::from_u64(mac.to_u64()), mac);
    }
}
