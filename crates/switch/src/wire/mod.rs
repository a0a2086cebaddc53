//! Typed, zero-copy views over the byte formats the switch reads and writes.
//!
//! Each format follows the same pattern: a view `Frame<T: AsRef<[u8]>>` (or `Packet<T>`) built
//! with `new_checked` (length validated once, so accessors never panic) or `new_unchecked` (when
//! the caller has just sized the buffer for emitting), getters named after the field, and
//! `set_*` setters when `T: AsMut<[u8]>`. Higher-level representations (`BpduRepr`) `parse`
//! from a view and `emit` into a caller buffer.

pub mod bpdu;
pub mod dhcp;
pub mod ethernet;
pub mod vlan;

pub use ethernet::{EtherType, Frame as EthernetFrame, MacAddr, ParseMacError};
pub use vlan::{TaggedFrame, Tci};

/// Why a byte slice could not be viewed as, or written as, a given format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The buffer is shorter than the format requires.
    #[error("buffer too short")]
    Truncated,
    /// The bytes are not a well-formed instance of the format.
    #[error("malformed or unsupported")]
    Malformed,
}

/// Read a big-endian u16 at `at`; callers have validated the length.
#[inline]
pub(crate) fn read_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

#[inline]
pub(crate) fn write_u16(bytes: &mut [u8], at: usize, value: u16) {
    bytes[at..at + 2].copy_from_slice(&value.to_be_bytes());
}
