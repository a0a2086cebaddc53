//! IEEE 802.1D spanning-tree BPDUs: configuration and topology-change notification, carried in
//! 802.3 frames (length field, not EtherType) with LLC header `42 42 03`, addressed to
//! `01:80:c2:00:00:00`. Times travel as big-endian units of 1/256 s.

use super::ethernet::{self, EtherType, MacAddr};
use super::{read_u16, write_u16, WireError};
use std::fmt;
use std::time::Duration;

/// LLC DSAP, SSAP and control (UI) of a BPDU.
pub const LLC: [u8; 3] = [0x42, 0x42, 0x03];
/// Bytes after the Ethernet header in a configuration BPDU (LLC + 35).
pub const CONFIG_LLC_LEN: u16 = 38;
/// Bytes after the Ethernet header in a TCN BPDU (LLC + 4).
pub const TCN_LLC_LEN: u16 = 7;
/// Ethernet's minimum frame length without FCS; BPDUs are padded to it.
pub const FRAME_LEN: usize = 60;

const _: () = assert!(field::CONFIG_END <= FRAME_LEN);
const TYPE_CONFIG: u8 = 0x00;
const TYPE_TCN: u8 = 0x80;
const FLAG_TC: u8 = 0x01;
const FLAG_TC_ACK: u8 = 0x80;

mod field {
    use std::ops::Range;
    pub const LENGTH: usize = 12;
    pub const LLC: Range<usize> = 14..17;
    pub const PROTOCOL: usize = 17;
    pub const VERSION: usize = 19;
    pub const TYPE: usize = 20;
    pub const FLAGS: usize = 21;
    pub const ROOT_ID: Range<usize> = 22..30;
    pub const ROOT_COST: Range<usize> = 30..34;
    pub const BRIDGE_ID: Range<usize> = 34..42;
    pub const PORT_ID: usize = 42;
    pub const MESSAGE_AGE: usize = 44;
    pub const MAX_AGE: usize = 46;
    pub const HELLO: usize = 48;
    pub const FORWARD_DELAY: usize = 50;
    pub const CONFIG_END: usize = 52;
    pub const TCN_END: usize = 21;
}

/// Bridge identifier: priority then MAC; lower is better, which the derived `Ord` gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct BridgeId {
    pub priority: u16,
    pub mac: MacAddr,
}

impl BridgeId {
    pub const fn new(priority: u16, mac: MacAddr) -> BridgeId {
        BridgeId { priority, mac }
    }

    pub fn to_bytes(&self) -> [u8; 8] {
        let mut bytes = [0u8; 8];
        bytes[..2].copy_from_slice(&self.priority.to_be_bytes());
        bytes[2..].copy_from_slice(&self.mac.0);
        bytes
    }

    /// # Panics
    /// If `bytes` is shorter than eight bytes.
    pub fn from_bytes(bytes: &[u8]) -> BridgeId {
        BridgeId {
            priority: read_u16(bytes, 0),
            mac: MacAddr::from_bytes(&bytes[2..]),
        }
    }
}

impl fmt::Display for BridgeId {
    /// `8000.02:00:00:00:00:01`: priority in hex, then the MAC.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}.{}", self.priority, self.mac)
    }
}

/// A view of an Ethernet frame carrying a BPDU.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wrap, checking the 802.3 length, LLC header, protocol id and that the body required
    /// by the BPDU type is present.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check()?;
        Ok(packet)
    }

    fn check(&self) -> Result<(), WireError> {
        let bytes = self.buffer.as_ref();
        if bytes.len() < field::TCN_END {
            return Err(WireError::Truncated);
        }
        let length = self.length();
        if length > EtherType::MAX_LENGTH
            || bytes[field::LLC] != LLC
            || read_u16(bytes, field::PROTOCOL) != 0
        {
            return Err(WireError::Malformed);
        }
        let needed = match self.bpdu_type() {
            TYPE_CONFIG => CONFIG_LLC_LEN,
            TYPE_TCN => TCN_LLC_LEN,
            // RST/MST BPDUs and vde's FSTP variant are not understood.
            _ => return Err(WireError::Malformed),
        };
        if length < needed {
            return Err(WireError::Malformed);
        }
        if bytes.len() < ethernet::HEADER_LEN + usize::from(needed) {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    pub fn src_addr(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[6..])
    }

    /// The 802.3 length field.
    pub fn length(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }

    pub fn bpdu_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    pub fn is_tcn(&self) -> bool {
        self.bpdu_type() == TYPE_TCN
    }

    // The following accessors are valid for configuration BPDUs only.

    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    pub fn root_id(&self) -> BridgeId {
        BridgeId::from_bytes(&self.buffer.as_ref()[field::ROOT_ID])
    }

    pub fn root_path_cost(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::ROOT_COST];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    pub fn bridge_id(&self) -> BridgeId {
        BridgeId::from_bytes(&self.buffer.as_ref()[field::BRIDGE_ID])
    }

    pub fn port_id(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::PORT_ID)
    }

    pub fn message_age(&self) -> Duration {
        time_from_wire(read_u16(self.buffer.as_ref(), field::MESSAGE_AGE))
    }

    pub fn max_age(&self) -> Duration {
        time_from_wire(read_u16(self.buffer.as_ref(), field::MAX_AGE))
    }

    pub fn hello_time(&self) -> Duration {
        time_from_wire(read_u16(self.buffer.as_ref(), field::HELLO))
    }

    pub fn forward_delay(&self) -> Duration {
        time_from_wire(read_u16(self.buffer.as_ref(), field::FORWARD_DELAY))
    }
}

fn time_from_wire(units: u16) -> Duration {
    Duration::from_nanos(u64::from(units) * 1_000_000_000 / 256)
}

fn time_to_wire(time: Duration) -> u16 {
    let units = time.as_nanos() * 256 / 1_000_000_000;
    u16::try_from(units).unwrap_or(u16::MAX)
}

/// The content of a configuration BPDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigBpdu {
    pub topology_change: bool,
    pub topology_change_ack: bool,
    pub root_id: BridgeId,
    pub root_path_cost: u32,
    pub bridge_id: BridgeId,
    pub port_id: u16,
    pub message_age: Duration,
    pub max_age: Duration,
    pub hello_time: Duration,
    pub forward_delay: Duration,
}

/// A parsed BPDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BpduRepr {
    Config(ConfigBpdu),
    TopologyChangeNotification,
}

impl BpduRepr {
    /// Parse a whole Ethernet frame (destination address not checked).
    pub fn parse(frame: &[u8]) -> Result<BpduRepr, WireError> {
        let packet = Packet::new_checked(frame)?;
        if packet.is_tcn() {
            return Ok(BpduRepr::TopologyChangeNotification);
        }
        let flags = packet.flags();
        Ok(BpduRepr::Config(ConfigBpdu {
            topology_change: flags & FLAG_TC != 0,
            topology_change_ack: flags & FLAG_TC_ACK != 0,
            root_id: packet.root_id(),
            root_path_cost: packet.root_path_cost(),
            bridge_id: packet.bridge_id(),
            port_id: packet.port_id(),
            message_age: packet.message_age(),
            max_age: packet.max_age(),
            hello_time: packet.hello_time(),
            forward_delay: packet.forward_delay(),
        }))
    }

    /// Length of the frame `emit` writes (padded to the Ethernet minimum).
    pub const fn buffer_len(&self) -> usize {
        FRAME_LEN
    }

    /// Write the whole Ethernet frame, from `src` to the bridge group address, into `buf`.
    /// Returns the length written.
    pub fn emit(&self, src: MacAddr, buf: &mut [u8]) -> Result<usize, WireError> {
        let out = buf.get_mut(..FRAME_LEN).ok_or(WireError::Truncated)?;
        out.fill(0);
        out[..6].copy_from_slice(&MacAddr::STP_GROUP.0);
        out[6..12].copy_from_slice(&src.0);
        out[field::LLC].copy_from_slice(&LLC);
        // Protocol id and version stay 0 (802.1D).
        match self {
            BpduRepr::TopologyChangeNotification => {
                write_u16(out, field::LENGTH, TCN_LLC_LEN);
                out[field::TYPE] = TYPE_TCN;
            }
            BpduRepr::Config(config) => {
                write_u16(out, field::LENGTH, CONFIG_LLC_LEN);
                out[field::TYPE] = TYPE_CONFIG;
                let mut flags = 0;
                if config.topology_change {
                    flags |= FLAG_TC;
                }
                if config.topology_change_ack {
                    flags |= FLAG_TC_ACK;
                }
                out[field::FLAGS] = flags;
                out[field::ROOT_ID].copy_from_slice(&config.root_id.to_bytes());
                out[field::ROOT_COST].copy_from_slice(&config.root_path_cost.to_be_bytes());
                out[field::BRIDGE_ID].copy_from_slice(&config.bridge_id.to_bytes());
                write_u16(out, field::PORT_ID, config.port_id);
                write_u16(out, field::MESSAGE_AGE, time_to_wire(config.message_age));
                write_u16(out, field::MAX_AGE, time_to_wire(config.max_age));
                write_u16(out, field::HELLO, time_to_wire(config.hello_time));
                write_u16(
                    out,
                    field::FORWARD_DELAY,
                    time_to_wire(config.forward_delay),
                );
            }
        }
        Ok(FRAME_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ConfigBpdu {
        ConfigBpdu {
            topology_change: true,
            topology_change_ack: false,
            root_id: BridgeId::new(0x8000, MacAddr([0, 0xff, 0x31, 0xcd, 0x2b, 0x54])),
            root_path_cost: 19,
            bridge_id: BridgeId::new(0x9000, MacAddr([2, 0, 0, 0, 0, 2])),
            port_id: 0x8001,
            message_age: Duration::from_secs(1),
            max_age: Duration::from_secs(20),
            hello_time: Duration::from_secs(2),
            forward_delay: Duration::from_secs(15),
        }
    }

    #[test]
    fn emit_config_bytes() {
        let mut buf = [0xaau8; 64];
        let len = BpduRepr::Config(sample())
            .emit(MacAddr([2, 0, 0, 0, 0, 2]), &mut buf)
            .unwrap();
        assert_eq!(len, 60);
        let expected: [u8; 52] = [
            0x01, 0x80, 0xc2, 0, 0, 0, 2, 0, 0, 0, 0, 2, 0x00, 0x26, 0x42, 0x42, 0x03, 0, 0, 0,
            0x00, 0x01, 0x80, 0x00, 0x00, 0xff, 0x31, 0xcd, 0x2b, 0x54, 0, 0, 0, 19, 0x90, 0x00, 2,
            0, 0, 0, 0, 2, 0x80, 0x01, 0x01, 0x00, 0x14, 0x00, 0x02, 0x00, 0x0f, 0x00,
        ];
        assert_eq!(&buf[..52], &expected);
        assert!(buf[52..60].iter().all(|&b| b == 0));
    }

    #[test]
    fn config_round_trip() {
        let mut buf = [0u8; 60];
        let repr = BpduRepr::Config(sample());
        repr.emit(MacAddr([2, 0, 0, 0, 0, 2]), &mut buf).unwrap();
        assert_eq!(BpduRepr::parse(&buf), Ok(repr));
        // Unpadded (52-byte) frames parse too.
        assert_eq!(BpduRepr::parse(&buf[..52]), Ok(repr));
        assert_eq!(BpduRepr::parse(&buf[..51]), Err(WireError::Truncated));
    }

    #[test]
    fn tcn_round_trip() {
        let mut buf = [0u8; 60];
        let repr = BpduRepr::TopologyChangeNotification;
        repr.emit(MacAddr([2, 0, 0, 0, 0, 2]), &mut buf).unwrap();
        assert_eq!(&buf[12..21], &[0, 7, 0x42, 0x42, 0x03, 0, 0, 0, 0x80]);
        assert_eq!(BpduRepr::parse(&buf[..21]), Ok(repr));
    }

    #[test]
    fn rejects_other_frames() {
        let mut buf = [0u8; 60];
        BpduRepr::Config(sample())
            .emit(MacAddr::ZERO, &mut buf)
            .unwrap();
        let mut bad_llc = buf;
        bad_llc[14] = 0xaa;
        assert_eq!(BpduRepr::parse(&bad_llc), Err(WireError::Malformed));
        let mut ethertype = buf;
        ethertype[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(BpduRepr::parse(&ethertype), Err(WireError::Malformed));
        let mut rstp = buf;
        rstp[20] = 0x02;
        assert_eq!(BpduRepr::parse(&rstp), Err(WireError::Malformed));
        assert_eq!(BpduRepr::parse(&buf[..20]), Err(WireError::Truncated));
    }

    #[test]
    fn bridge_id_orders_by_priority_then_mac() {
        let low_mac = BridgeId::new(0x8000, MacAddr([0, 0, 0, 0, 0, 1]));
        let high_mac = BridgeId::new(0x8000, MacAddr([0, 0, 0, 0, 0, 2]));
        let low_priority = BridgeId::new(0x1000, MacAddr([0xff; 6]));
        assert!(low_mac < high_mac && low_priority < low_mac);
        assert_eq!(BridgeId::from_bytes(&low_mac.to_bytes()), low_mac);
        assert_eq!(low_mac.to_string(), "8000.00:00:00:00:00:01");
    }
}
