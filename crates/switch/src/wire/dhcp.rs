//! Just enough of IPv4 and UDP to tell DHCP (BOOTP) messages apart, for the switch's DHCP
//! snooping: a client's message goes from UDP port 68 to 67, a server's (or relay agent's)
//! answer from 67 to 68. Nothing past the UDP ports is read.

use super::read_u16;
use super::EtherType;

/// The UDP port DHCP servers (and relay agents) listen on.
pub const SERVER_PORT: u16 = 67;
/// The UDP port DHCP clients listen on.
pub const CLIENT_PORT: u16 = 68;

const IPV4_MIN_HEADER: usize = 20;
const PROTO_UDP: u8 = 17;
const UDP_HEADER: usize = 8;

/// Which way a DHCP message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From a client (UDP 68 to 67): DISCOVER, REQUEST, DECLINE, RELEASE, INFORM.
    ToServer,
    /// From a server or relay agent (UDP 67 to 68): OFFER, ACK, NAK.
    ToClient,
}

/// The direction of the DHCP message in `l3`, the bytes after an Ethernet header (and its
/// VLAN tag, if any) whose EtherType is `ethertype`; `None` for anything else, including a
/// malformed or truncated header and any IPv4 fragment but the first.
pub fn classify(ethertype: u16, l3: &[u8]) -> Option<Direction> {
    if ethertype != EtherType::IPV4 || l3.len() < IPV4_MIN_HEADER {
        return None;
    }
    let version = l3[0] >> 4;
    let header_len = usize::from(l3[0] & 0x0f) * 4;
    let fragment_offset = read_u16(l3, 6) & 0x1fff;
    if version != 4 || header_len < IPV4_MIN_HEADER || l3[9] != PROTO_UDP || fragment_offset != 0 {
        return None;
    }
    if l3.len() < header_len + UDP_HEADER {
        return None;
    }
    match (read_u16(l3, header_len), read_u16(l3, header_len + 2)) {
        (CLIENT_PORT, SERVER_PORT) => Some(Direction::ToServer),
        (SERVER_PORT, CLIENT_PORT) => Some(Direction::ToClient),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(sport: u16, dport: u16) -> Vec<u8> {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[9] = PROTO_UDP;
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p
    }

    #[test]
    fn client_and_server_messages_are_told_apart() {
        assert_eq!(
            classify(EtherType::IPV4, &udp(68, 67)),
            Some(Direction::ToServer)
        );
        assert_eq!(
            classify(EtherType::IPV4, &udp(67, 68)),
            Some(Direction::ToClient)
        );
        // A relay agent talking to a server, DNS, and another EtherType are not snooped.
        assert_eq!(classify(EtherType::IPV4, &udp(67, 67)), None);
        assert_eq!(classify(EtherType::IPV4, &udp(5353, 53)), None);
        assert_eq!(classify(0x86dd, &udp(68, 67)), None);
    }

    #[test]
    fn malformed_truncated_and_later_fragments_are_not_dhcp() {
        let good = udp(68, 67);
        assert_eq!(classify(EtherType::IPV4, &good[..27]), None);
        assert_eq!(classify(EtherType::IPV4, &good[..10]), None);
        let mut options = good.clone();
        options[0] = 0x46; // a 24-byte header: the ports would be past the end
        assert_eq!(classify(EtherType::IPV4, &options), None);
        let mut short_ihl = good.clone();
        short_ihl[0] = 0x44;
        assert_eq!(classify(EtherType::IPV4, &short_ihl), None);
        let mut v6 = good.clone();
        v6[0] = 0x65;
        assert_eq!(classify(EtherType::IPV4, &v6), None);
        let mut tcp = good.clone();
        tcp[9] = 6;
        assert_eq!(classify(EtherType::IPV4, &tcp), None);
        let mut fragment = good;
        fragment[7] = 1;
        assert_eq!(classify(EtherType::IPV4, &fragment), None);
    }
}
