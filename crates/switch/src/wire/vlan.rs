//! 802.1Q VLAN tag: the TCI (priority, drop eligibility, VLAN id) and helpers that insert or
//! remove a tag while copying a frame into a caller buffer.

use super::ethernet::{self, EtherType, MacAddr};
use super::{read_u16, write_u16, WireError};

/// Length of the tag (TPID + TCI) inserted after the source address.
pub const TAG_LEN: usize = 4;
/// Ethernet header plus one tag.
pub const TAGGED_HEADER_LEN: usize = ethernet::HEADER_LEN + TAG_LEN;
/// Largest VID value; 4095 is reserved and vde_switch uses it as "no untagged VLAN".
pub const VID_MASK: u16 = 0x0fff;

mod field {
    pub const TPID: usize = 12;
    pub const TCI: usize = 14;
    pub const INNER_ETHERTYPE: usize = 16;
}

/// Tag control information: PCP (3 bits), DEI (1 bit), VID (12 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Tci(pub u16);

impl Tci {
    /// Build a TCI; out-of-range `pcp` and `vid` bits are masked off.
    pub const fn new(pcp: u8, dei: bool, vid: u16) -> Tci {
        Tci((((pcp & 0x7) as u16) << 13) | ((dei as u16) << 12) | (vid & VID_MASK))
    }

    pub const fn pcp(&self) -> u8 {
        (self.0 >> 13) as u8
    }

    pub const fn dei(&self) -> bool {
        self.0 & 0x1000 != 0
    }

    pub const fn vid(&self) -> u16 {
        self.0 & VID_MASK
    }

    /// Same priority and DEI, another VID.
    pub const fn with_vid(&self, vid: u16) -> Tci {
        Tci((self.0 & !VID_MASK) | (vid & VID_MASK))
    }
}

/// A view of an 802.1Q-tagged Ethernet frame.
#[derive(Debug, Clone)]
pub struct TaggedFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TaggedFrame<T> {
    pub const fn new_unchecked(buffer: T) -> TaggedFrame<T> {
        TaggedFrame { buffer }
    }

    /// Wrap, checking the length and that the TPID is 0x8100.
    pub fn new_checked(buffer: T) -> Result<TaggedFrame<T>, WireError> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        if frame.tpid() != EtherType::VLAN {
            return Err(WireError::Malformed);
        }
        Ok(frame)
    }

    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < TAGGED_HEADER_LEN {
            Err(WireError::Truncated)
        } else {
            Ok(())
        }
    }

    pub fn dst_addr(&self) -> MacAddr {
        MacAddr::from_bytes(self.buffer.as_ref())
    }

    pub fn src_addr(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[6..])
    }

    pub fn tpid(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::TPID)
    }

    pub fn tci(&self) -> Tci {
        Tci(read_u16(self.buffer.as_ref(), field::TCI))
    }

    /// EtherType of the encapsulated payload.
    pub fn inner_ethertype(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::INNER_ETHERTYPE)
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[TAGGED_HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TaggedFrame<T> {
    pub fn set_tpid(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::TPID, value);
    }

    pub fn set_tci(&mut self, tci: Tci) {
        write_u16(self.buffer.as_mut(), field::TCI, tci.0);
    }

    pub fn set_inner_ethertype(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::INNER_ETHERTYPE, value);
    }
}

/// The TCI of `frame` if it carries an 802.1Q tag (and is long enough to hold one).
pub fn tag_of(frame: &[u8]) -> Option<Tci> {
    TaggedFrame::new_checked(frame).ok().map(|f| f.tci())
}

/// Copy `frame` into `buf` with a tag `tci` inserted after the source address.
/// Returns the length written (`frame.len() + 4`).
pub fn insert_tag(frame: &[u8], tci: Tci, buf: &mut [u8]) -> Result<usize, WireError> {
    if frame.len() < ethernet::HEADER_LEN {
        return Err(WireError::Truncated);
    }
    let len = frame.len() + TAG_LEN;
    let out = buf.get_mut(..len).ok_or(WireError::Truncated)?;
    out[..12].copy_from_slice(&frame[..12]);
    write_u16(out, field::TPID, EtherType::VLAN);
    write_u16(out, field::TCI, tci.0);
    out[field::INNER_ETHERTYPE..].copy_from_slice(&frame[12..]);
    Ok(len)
}

/// Copy tagged `frame` into `buf` without its outer tag. Returns the length written.
pub fn strip_tag(frame: &[u8], buf: &mut [u8]) -> Result<usize, WireError> {
    TaggedFrame::new_checked(frame)?;
    let len = frame.len() - TAG_LEN;
    let out = buf.get_mut(..len).ok_or(WireError::Truncated)?;
    out[..12].copy_from_slice(&frame[..12]);
    out[12..].copy_from_slice(&frame[field::INNER_ETHERTYPE..]);
    Ok(len)
}

/// Rewrite, in place, the VID of tagged `frame`, keeping PCP and DEI.
pub fn rewrite_vid(frame: &mut [u8], vid: u16) -> Result<(), WireError> {
    let mut tagged = TaggedFrame::new_checked(frame)?;
    let tci = tagged.tci().with_vid(vid);
    tagged.set_tci(tci);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNTAGGED: [u8; 16] = [1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 0x08, 0x00, 0xab, 0xcd];
    const TAGGED: [u8; 20] = [
        1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 0x81, 0x00, 0xe0, 0x0a, 0x08, 0x00, 0xab, 0xcd,
    ];

    #[test]
    fn tci_fields() {
        let tci = Tci(0xe00a);
        assert_eq!((tci.pcp(), tci.dei(), tci.vid()), (7, false, 10));
        assert_eq!(Tci::new(7, false, 10), tci);
        assert_eq!(Tci::new(5, true, 4095).0, 0xbfff);
        assert_eq!(tci.with_vid(20), Tci(0xe014));
    }

    #[test]
    fn deconstruct_tagged() {
        let frame = TaggedFrame::new_checked(&TAGGED[..]).unwrap();
        assert_eq!(frame.tci().vid(), 10);
        assert_eq!(frame.inner_ethertype(), 0x0800);
        assert_eq!(frame.payload(), &[0xab, 0xcd]);
        assert_eq!(tag_of(&UNTAGGED), None);
        assert_eq!(tag_of(&TAGGED[..17]), None);
    }

    #[test]
    fn insert_then_strip_round_trips() {
        let mut buf = [0u8; 64];
        let len = insert_tag(&UNTAGGED, Tci(0xe00a), &mut buf).unwrap();
        assert_eq!(&buf[..len], &TAGGED);
        let mut back = [0u8; 64];
        let len = strip_tag(&TAGGED, &mut back).unwrap();
        assert_eq!(&back[..len], &UNTAGGED);
    }

    #[test]
    fn helpers_reject_bad_input() {
        let mut small = [0u8; 19];
        assert_eq!(
            insert_tag(&UNTAGGED, Tci(1), &mut small),
            Err(WireError::Truncated)
        );
        assert_eq!(
            insert_tag(&UNTAGGED[..13], Tci(1), &mut [0; 64]),
            Err(WireError::Truncated)
        );
        assert_eq!(
            strip_tag(&UNTAGGED, &mut [0; 64]),
            Err(WireError::Truncated)
        );
        assert_eq!(
            strip_tag(&[0u8; 20], &mut [0; 64]),
            Err(WireError::Malformed)
        );
    }

    #[test]
    fn rewrite_keeps_priority() {
        let mut frame = TAGGED;
        rewrite_vid(&mut frame, 300).unwrap();
        let tci = tag_of(&frame).unwrap();
        assert_eq!((tci.pcp(), tci.vid()), (7, 300));
    }
}
