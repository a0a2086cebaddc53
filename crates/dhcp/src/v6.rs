//! A stateless DHCPv6 server (RFC 8415 §6.1, RFC 3736): DNS servers (option 23, RFC 3646)
//! and the domain search list (option 24) for hosts that got their addresses by SLAAC (the RA
//! O flag, [`crate::ra::Config::other`]). Sans-IO: a UDP payload that arrived on port 547 in,
//! the reply out; it keeps no state, so there is no clock either.
//!
//! API (for slirp and routers):
//! - [`Config::new`]`(mac)` then set `dns`, `search`, `refresh`; [`Server::new`]`(config)`
//!   validates it. The server's DUID is a DUID-LL of the MAC ([`Server::duid`]).
//! - [`Server::handle`]`(udp_payload) -> Result<Option<Reply>, Error>`: INFORMATION-REQUEST →
//!   REPLY with the DNS options (and the information refresh time, option 32, if set);
//!   SOLICIT → ADVERTISE with the status NoAddrsAvail (RFC 8415 §18.3.9: no addresses here).
//!   `Ok(None)`: nothing to send (a message for another server; REQUEST, RENEW, REBIND,
//!   CONFIRM, RELEASE, DECLINE and relayed messages, which a stateless server does not
//!   answer). [`Error`]: malformed, or to be discarded per RFC 8415 §16.
//! - The reply goes from port 547 to the client's source address, port 546: [`udp6`] builds
//!   the IPv6/UDP packet (checksummed); [`server_payload`] finds the DHCPv6 message in an
//!   IPv6 packet to port 547.

use std::net::Ipv6Addr;
use std::time::Duration;

use smoltcp::wire::{IpProtocol, Ipv6Packet, Ipv6Repr, UdpPacket};

use crate::names::{self, NameError};
use crate::Mac;

pub const CLIENT_PORT: u16 = 546;
pub const SERVER_PORT: u16 = 547;
/// ff02::1:2, where clients send.
pub const ALL_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);

// Message types (RFC 8415 §7.3).
const SOLICIT: u8 = 1;
const ADVERTISE: u8 = 2;
const REQUEST: u8 = 3;
const CONFIRM: u8 = 4;
const RENEW: u8 = 5;
const REBIND: u8 = 6;
const REPLY: u8 = 7;
const RELEASE: u8 = 8;
const DECLINE: u8 = 9;
const INFORMATION_REQUEST: u8 = 11;
const RELAY_FORW: u8 = 12;

// Options (RFC 8415 §21).
const OPT_CLIENTID: u16 = 1;
const OPT_SERVERID: u16 = 2;
const OPT_IA_NA: u16 = 3;
const OPT_IA_TA: u16 = 4;
const OPT_STATUS_CODE: u16 = 13;
const OPT_DNS_SERVERS: u16 = 23;
const OPT_DOMAIN_LIST: u16 = 24;
const OPT_IA_PD: u16 = 25;
const OPT_INFORMATION_REFRESH_TIME: u16 = 32;
const STATUS_NO_ADDRS_AVAIL: u16 = 2;

/// What the server hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The MAC its DUID is made of.
    pub mac: Mac,
    /// DNS servers (option 23).
    pub dns: Vec<Ipv6Addr>,
    /// Domain search list (option 24).
    pub search: Vec<String>,
    /// How long clients may keep the information (option 32; RFC 8415's default 24 h if
    /// `None`, minimum 600 s).
    pub refresh: Option<Duration>,
}

impl Config {
    pub fn new(mac: Mac) -> Config {
        Config {
            mac,
            dns: Vec::new(),
            search: Vec::new(),
            refresh: None,
        }
    }
}

/// What is wrong with a [`Config`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("DHCPv6 server: {0}")]
    Name(#[from] NameError),
    #[error("DHCPv6 server: information refresh time {0:?}: expected at least 600 s")]
    Refresh(Duration),
    #[error("DHCPv6 server: {0} DNS servers: too many for one message")]
    TooManyDns(usize),
}

/// A message the server does not answer because it is malformed or must be discarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("DHCPv6 message of {0} bytes: shorter than the 4-byte header")]
    Truncated(usize),
    #[error("DHCPv6 message type {0}: not one a client sends")]
    UnexpectedType(u8),
    #[error("DHCPv6 option {0}: longer than the message")]
    Options(u16),
    #[error("DHCPv6 SOLICIT without a client identifier")]
    NoClientId,
    #[error("DHCPv6 {0} with a server identifier")]
    ServerId(&'static str),
    #[error("DHCPv6 INFORMATION-REQUEST with an IA option (RFC 8415 §16.12)")]
    InformWithIa,
}

/// The kind of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Advertise,
    Reply,
}

/// A DHCPv6 message to send from port 547 to the client's address, port 546.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub kind: Kind,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Server {
    config: Config,
    duid: Vec<u8>,
    /// Options 23, 24 encoded once.
    dns_options: Vec<u8>,
}

fn put_option(out: &mut Vec<u8>, code: u16, data: &[u8]) {
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
}

/// The options of a DHCPv6 message body, as (code, data).
fn options(mut b: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), Error>> {
    std::iter::from_fn(move || {
        if b.is_empty() {
            return None;
        }
        if b.len() < 4 {
            b = &[];
            return Some(Err(Error::Options(0)));
        }
        let code = u16::from_be_bytes([b[0], b[1]]);
        let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
        if b.len() < 4 + len {
            b = &[];
            return Some(Err(Error::Options(code)));
        }
        let data = &b[4..4 + len];
        b = &b[4 + len..];
        Some(Ok((code, data)))
    })
}

impl Server {
    pub fn new(config: Config) -> Result<Server, ConfigError> {
        if let Some(r) = config.refresh.filter(|r| r.as_secs() < 600) {
            return Err(ConfigError::Refresh(r));
        }
        if config.dns.len() > 64 {
            return Err(ConfigError::TooManyDns(config.dns.len()));
        }
        let mut dns_options = Vec::new();
        if !config.dns.is_empty() {
            let d: Vec<u8> = config.dns.iter().flat_map(|a| a.octets()).collect();
            put_option(&mut dns_options, OPT_DNS_SERVERS, &d);
        }
        if !config.search.is_empty() {
            put_option(
                &mut dns_options,
                OPT_DOMAIN_LIST,
                &names::encode_list(&config.search)?,
            );
        }
        let mut duid = vec![0, 3, 0, 1];
        duid.extend_from_slice(&config.mac);
        Ok(Server {
            config,
            duid,
            dns_options,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The server's DUID (a DUID-LL: type 3, hardware type 1, the MAC).
    pub fn duid(&self) -> &[u8] {
        &self.duid
    }

    /// Handles a UDP payload that arrived on port 547. See the module header.
    pub fn handle(&self, payload: &[u8]) -> Result<Option<Reply>, Error> {
        if payload.len() < 4 {
            return Err(Error::Truncated(payload.len()));
        }
        let kind = payload[0];
        let mut client_id = None;
        let mut server_id = None;
        let mut ia = false;
        if kind != RELAY_FORW {
            for o in options(&payload[4..]) {
                let (code, data) = o?;
                match code {
                    OPT_CLIENTID => client_id = Some(data),
                    OPT_SERVERID => server_id = Some(data),
                    OPT_IA_NA | OPT_IA_TA | OPT_IA_PD => ia = true,
                    _ => {}
                }
            }
        }
        if server_id.is_some_and(|s| s != self.duid.as_slice()) {
            return Ok(None);
        }
        match kind {
            SOLICIT => {
                let id = client_id.ok_or(Error::NoClientId)?;
                if server_id.is_some() {
                    return Err(Error::ServerId("SOLICIT"));
                }
                let mut status = STATUS_NO_ADDRS_AVAIL.to_be_bytes().to_vec();
                status.extend_from_slice(b"stateless server: no addresses, use SLAAC");
                let mut out = self.header(ADVERTISE, payload, Some(id));
                put_option(&mut out, OPT_STATUS_CODE, &status);
                Ok(Some(Reply {
                    kind: Kind::Advertise,
                    payload: out,
                }))
            }
            INFORMATION_REQUEST => {
                if ia {
                    return Err(Error::InformWithIa);
                }
                let mut out = self.header(REPLY, payload, client_id);
                out.extend_from_slice(&self.dns_options);
                if let Some(r) = self.config.refresh {
                    let secs = r.as_secs().min(u64::from(u32::MAX)) as u32;
                    put_option(&mut out, OPT_INFORMATION_REFRESH_TIME, &secs.to_be_bytes());
                }
                Ok(Some(Reply {
                    kind: Kind::Reply,
                    payload: out,
                }))
            }
            REQUEST | CONFIRM | RENEW | REBIND | RELEASE | DECLINE | RELAY_FORW => Ok(None),
            k => Err(Error::UnexpectedType(k)),
        }
    }

    /// Message type, the request's transaction id, server and client identifiers.
    fn header(&self, kind: u8, request: &[u8], client_id: Option<&[u8]>) -> Vec<u8> {
        let mut out = vec![kind];
        out.extend_from_slice(&request[1..4]);
        put_option(&mut out, OPT_SERVERID, &self.duid);
        if let Some(id) = client_id {
            put_option(&mut out, OPT_CLIENTID, id);
        }
        out
    }
}

/// An IPv6/UDP packet (hop limit 64) with its mandatory UDP checksum.
pub fn udp6(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let repr = Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Udp,
        payload_len: udp_len,
        hop_limit: 64,
    };
    let mut p = vec![0u8; repr.buffer_len() + udp_len];
    repr.emit(&mut Ipv6Packet::new_unchecked(&mut p[..]));
    let mut u = UdpPacket::new_unchecked(&mut p[40..]);
    u.set_src_port(sport);
    u.set_dst_port(dport);
    u.set_len(udp_len as u16);
    u.payload_mut().copy_from_slice(payload);
    u.fill_checksum(&src.into(), &dst.into());
    p
}

/// The source address and UDP payload of an IPv6 packet (without extension headers) to port
/// 547, if that is what `p` is.
pub fn server_payload(p: &[u8]) -> Option<(Ipv6Addr, &[u8])> {
    let ip = Ipv6Packet::new_checked(p).ok()?;
    if ip.next_header() != IpProtocol::Udp {
        return None;
    }
    let src = ip.src_addr();
    let payload = &p[40..40 + usize::from(ip.payload_len())];
    let udp = UdpPacket::new_checked(payload).ok()?;
    if udp.dst_port() != SERVER_PORT {
        return None;
    }
    let len = usize::from(udp.len());
    Some((src, payload.get(8..len)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::IpAddress;

    const MAC: Mac = [2, 0, 0, 0, 0, 1];

    fn server() -> Server {
        let mut c = Config::new(MAC);
        c.dns = vec!["fd00::3".parse().unwrap(), "fd00::4".parse().unwrap()];
        c.search = vec!["lab.example".into()];
        c.refresh = Some(Duration::from_secs(3600));
        Server::new(c).unwrap()
    }

    fn msg(kind: u8, opts: &[(u16, &[u8])]) -> Vec<u8> {
        let mut m = vec![kind, 0xab, 0xcd, 0xef];
        for (c, d) in opts {
            put_option(&mut m, *c, d);
        }
        m
    }

    fn opts(m: &[u8]) -> Vec<(u16, Vec<u8>)> {
        options(&m[4..])
            .map(|o| o.map(|(c, d)| (c, d.to_vec())).unwrap())
            .collect()
    }

    const CLIENT: &[u8] = &[0, 3, 0, 1, 2, 0, 0, 0, 0, 9];

    #[test]
    fn information_requests_get_dns_servers_and_the_search_list() {
        let s = server();
        assert_eq!(s.duid(), &[0, 3, 0, 1, 2, 0, 0, 0, 0, 1]);
        let r = s
            .handle(&msg(
                INFORMATION_REQUEST,
                &[(OPT_CLIENTID, CLIENT), (6, &[0, 23, 0, 24])],
            ))
            .unwrap()
            .unwrap();
        assert_eq!(r.kind, Kind::Reply);
        assert_eq!(&r.payload[..4], &[REPLY, 0xab, 0xcd, 0xef]);
        let o = opts(&r.payload);
        assert_eq!(o[0], (OPT_SERVERID, s.duid().to_vec()));
        assert_eq!(o[1], (OPT_CLIENTID, CLIENT.to_vec()));
        let dns: Vec<u8> = ["fd00::3", "fd00::4"]
            .iter()
            .flat_map(|a| a.parse::<Ipv6Addr>().unwrap().octets())
            .collect();
        assert_eq!(o[2], (OPT_DNS_SERVERS, dns));
        assert_eq!(
            names::decode_list(&o[3].1).unwrap(),
            vec!["lab.example".to_string()]
        );
        assert_eq!(
            o[4],
            (OPT_INFORMATION_REFRESH_TIME, 3600u32.to_be_bytes().to_vec())
        );
        // Without a client identifier (allowed for INFORMATION-REQUEST) and aimed at us.
        let duid = s.duid().to_vec();
        let r = s
            .handle(&msg(INFORMATION_REQUEST, &[(OPT_SERVERID, &duid)]))
            .unwrap()
            .unwrap();
        assert!(opts(&r.payload).iter().all(|(c, _)| *c != OPT_CLIENTID));
    }

    #[test]
    fn solicits_hear_there_are_no_addresses() {
        let s = server();
        let ia = [0u8; 12];
        let r = s
            .handle(&msg(SOLICIT, &[(OPT_CLIENTID, CLIENT), (OPT_IA_NA, &ia)]))
            .unwrap()
            .unwrap();
        assert_eq!(r.kind, Kind::Advertise);
        assert_eq!(r.payload[0], ADVERTISE);
        let o = opts(&r.payload);
        assert_eq!(o.len(), 3);
        assert_eq!(o[1], (OPT_CLIENTID, CLIENT.to_vec()));
        assert_eq!(o[2].0, OPT_STATUS_CODE);
        assert_eq!(&o[2].1[..2], &[0, 2], "NoAddrsAvail");
        assert_eq!(s.handle(&msg(SOLICIT, &[])), Err(Error::NoClientId));
    }

    #[test]
    fn what_is_not_ours_or_malformed_gets_no_reply() {
        let s = server();
        let other = [0u8, 3, 0, 1, 9, 9, 9, 9, 9, 9];
        let m = msg(INFORMATION_REQUEST, &[(OPT_SERVERID, &other)]);
        assert_eq!(s.handle(&m), Ok(None));
        assert_eq!(s.handle(&msg(RENEW, &[(OPT_CLIENTID, CLIENT)])), Ok(None));
        assert_eq!(s.handle(&msg(RELAY_FORW, &[])), Ok(None));
        assert_eq!(s.handle(&[11, 0]), Err(Error::Truncated(2)));
        assert_eq!(
            s.handle(&msg(REPLY, &[])),
            Err(Error::UnexpectedType(REPLY))
        );
        let mut m = msg(INFORMATION_REQUEST, &[(OPT_CLIENTID, CLIENT)]);
        m.truncate(m.len() - 1);
        assert_eq!(s.handle(&m), Err(Error::Options(OPT_CLIENTID)));
        assert_eq!(s.handle(&[11, 0, 0, 0, 0]), Err(Error::Options(0)));
        let m = msg(INFORMATION_REQUEST, &[(OPT_IA_NA, &[0; 12])]);
        assert_eq!(s.handle(&m), Err(Error::InformWithIa));
        let duid = s.duid().to_vec();
        let m = msg(SOLICIT, &[(OPT_CLIENTID, CLIENT), (OPT_SERVERID, &duid)]);
        assert_eq!(s.handle(&m), Err(Error::ServerId("SOLICIT")));
        let mut c = Config::new(MAC);
        c.refresh = Some(Duration::from_secs(60));
        assert!(matches!(Server::new(c), Err(ConfigError::Refresh(_))));
        let mut c = Config::new(MAC);
        c.search = vec!["bad..name".into()];
        assert!(matches!(Server::new(c), Err(ConfigError::Name(_))));
    }

    #[test]
    fn udp6_packets_carry_a_valid_checksum_and_round_trip() {
        let (a, b): (Ipv6Addr, Ipv6Addr) = ("fe80::1".parse().unwrap(), ALL_SERVERS);
        let p = udp6(a, b, CLIENT_PORT, SERVER_PORT, b"hello");
        let ip = Ipv6Packet::new_checked(&p[..]).unwrap();
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(udp.verify_checksum(&IpAddress::from(a), &IpAddress::from(b)));
        assert_eq!(server_payload(&p), Some((a, &b"hello"[..])));
        let back = udp6(b, a, SERVER_PORT, CLIENT_PORT, b"x");
        assert_eq!(server_payload(&back), None, "to port 546");
        assert_eq!(server_payload(&p[..30]), None);
    }
}
