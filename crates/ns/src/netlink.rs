//! A small rtnetlink client: sans-IO message builders ([`link_up`], [`add_addr`],
//! [`add_route`]) and ack parsing ([`parse_ack`]), plus [`Netlink`], a NETLINK_ROUTE socket
//! that sends one request and waits for its acknowledgement. The socket talks to the network
//! namespace of the thread that created it.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::sys;

const NLMSG_ERROR: u16 = 2;
const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_REPLACE: u16 = 0x100;
const IFF_UP: u32 = 1;
const IFLA_MTU: u16 = 4;
const IFLA_ADDRESS: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_STATIC: u8 = 4;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;
const HDR: usize = 16;

fn family(ip: &IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Builds one netlink message: header, fixed family header, then attributes.
struct Msg {
    buf: Vec<u8>,
}

impl Msg {
    fn new(ty: u16, flags: u16, seq: u32) -> Msg {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched in finish
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
        Msg { buf }
    }

    fn bytes(&mut self, b: &[u8]) -> &mut Msg {
        self.buf.extend_from_slice(b);
        self
    }

    fn attr(&mut self, ty: u16, payload: &[u8]) -> &mut Msg {
        let len = 4 + payload.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        while self.buf.len() & 3 != 0 {
            self.buf.push(0);
        }
        self
    }

    fn finish(&mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        std::mem::take(&mut self.buf)
    }
}

/// RTM_NEWLINK: set interface `index` up, optionally with an MTU and a MAC address.
pub fn link_up(seq: u32, index: u32, mtu: Option<u32>, mac: Option<[u8; 6]>) -> Vec<u8> {
    let mut m = Msg::new(RTM_NEWLINK, 0, seq);
    m.bytes(&[libc::AF_UNSPEC as u8, 0])
        .bytes(&0u16.to_ne_bytes())
        .bytes(&(index as i32).to_ne_bytes())
        .bytes(&IFF_UP.to_ne_bytes())
        .bytes(&IFF_UP.to_ne_bytes());
    if let Some(mtu) = mtu {
        m.attr(IFLA_MTU, &mtu.to_ne_bytes());
    }
    if let Some(mac) = mac {
        m.attr(IFLA_ADDRESS, &mac);
    }
    m.finish()
}

/// RTM_NEWADDR: add `ip/prefix` to interface `index` (replacing an equal one).
pub fn add_addr(seq: u32, index: u32, ip: IpAddr, prefix: u8) -> Vec<u8> {
    let mut m = Msg::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, seq);
    m.bytes(&[family(&ip), prefix, 0, RT_SCOPE_UNIVERSE])
        .bytes(&index.to_ne_bytes());
    let b = ip_bytes(&ip);
    m.attr(IFA_LOCAL, &b).attr(IFA_ADDRESS, &b);
    if let IpAddr::V4(a) = ip {
        if prefix < 31 {
            let host_mask = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
            let bcast = u32::from(a) | host_mask;
            m.attr(IFA_BROADCAST, &bcast.to_be_bytes());
        }
    }
    m.finish()
}

/// RTM_NEWROUTE: `dst/prefix` (a default route when `dst` is None) via `gateway` and/or out
/// of interface `oif`.
pub fn add_route(
    seq: u32,
    dst: Option<(IpAddr, u8)>,
    gateway: Option<IpAddr>,
    oif: Option<u32>,
) -> Vec<u8> {
    let fam = dst
        .map(|(d, _)| family(&d))
        .or(gateway.as_ref().map(family))
        .unwrap_or(libc::AF_INET as u8);
    let dst_len = dst.map_or(0, |(_, p)| p);
    let mut m = Msg::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, seq);
    m.bytes(&[
        fam,
        dst_len,
        0,
        0,
        RT_TABLE_MAIN,
        RTPROT_STATIC,
        RT_SCOPE_UNIVERSE,
        RTN_UNICAST,
    ])
    .bytes(&0u32.to_ne_bytes());
    if let Some((d, _)) = dst {
        m.attr(RTA_DST, &ip_bytes(&d));
    }
    if let Some(g) = gateway {
        m.attr(RTA_GATEWAY, &ip_bytes(&g));
    }
    if let Some(o) = oif {
        m.attr(RTA_OIF, &o.to_ne_bytes());
    }
    m.finish()
}

/// What the kernel answered to request `seq`.
#[derive(Debug, PartialEq, Eq)]
pub enum Ack {
    /// Success.
    Ok,
    /// The request failed with this errno.
    Err(i32),
    /// Not an answer to this request (another sequence number or message type).
    Other,
}

/// Parses the first message of a reply datagram. Err on malformed input.
pub fn parse_ack(buf: &[u8], seq: u32) -> Result<Ack, &'static str> {
    if buf.len() < HDR {
        return Err("netlink reply shorter than a header");
    }
    let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let ty = u16::from_ne_bytes([buf[4], buf[5]]);
    let rseq = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
    if len < HDR || len > buf.len() {
        return Err("netlink reply with a bad length");
    }
    if ty != NLMSG_ERROR || rseq != seq {
        return Ok(Ack::Other);
    }
    if len < HDR + 4 {
        return Err("netlink error message too short");
    }
    let code = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
    Ok(if code == 0 { Ack::Ok } else { Ack::Err(-code) })
}

/// A NETLINK_ROUTE socket in the creating thread's network namespace.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    pub fn open() -> io::Result<Netlink> {
        let fd = sys::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )?;
        Ok(Netlink { fd, seq: 1 })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends a request built with sequence number `seq` and waits for its ack.
    fn request(&mut self, seq: u32, msg: &[u8], what: &str) -> io::Result<()> {
        sys::send_with_fds(self.fd.as_raw_fd(), msg, &[])?;
        let mut buf = vec![0u8; 8192];
        loop {
            let (n, _) = sys::recv_with_fds(self.fd.as_raw_fd(), &mut buf, true)?;
            match parse_ack(&buf[..n], seq).map_err(io::Error::other)? {
                Ack::Ok => return Ok(()),
                Ack::Err(errno) => {
                    let e = io::Error::from_raw_os_error(errno);
                    return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
                }
                Ack::Other => continue,
            }
        }
    }

    /// Brings interface `name` up (with an MTU and a MAC if given).
    pub fn link_up(
        &mut self,
        name: &str,
        mtu: Option<u32>,
        mac: Option<[u8; 6]>,
    ) -> io::Result<()> {
        let index = filo_vnl::sys::interface_index(name)?;
        let seq = self.next_seq();
        self.request(
            seq,
            &link_up(seq, index, mtu, mac),
            &format!("set {name} up"),
        )
    }

    /// Adds an address to interface `name`.
    pub fn add_addr(&mut self, name: &str, ip: IpAddr, prefix: u8) -> io::Result<()> {
        let index = filo_vnl::sys::interface_index(name)?;
        let seq = self.next_seq();
        self.request(
            seq,
            &add_addr(seq, index, ip, prefix),
            &format!("add address {ip}/{prefix} to {name}"),
        )
    }

    /// Adds a route; a default route when `dst` is None.
    pub fn add_route(
        &mut self,
        dst: Option<(IpAddr, u8)>,
        gateway: Option<IpAddr>,
        oif: Option<&str>,
    ) -> io::Result<()> {
        let oif = oif.map(filo_vnl::sys::interface_index).transpose()?;
        let seq = self.next_seq();
        let what = match (dst, gateway) {
            (Some((d, p)), Some(g)) => format!("add route {d}/{p} via {g}"),
            (Some((d, p)), None) => format!("add route {d}/{p}"),
            (None, Some(g)) => format!("add default route via {g}"),
            (None, None) => "add default route".to_string(),
        };
        self.request(seq, &add_route(seq, dst, gateway, oif), &what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], i: usize) -> u16 {
        u16::from_ne_bytes([b[i], b[i + 1]])
    }
    fn u32_at(b: &[u8], i: usize) -> u32 {
        u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
    }

    #[test]
    fn link_up_message_layout() {
        let m = link_up(7, 3, Some(1400), None);
        assert_eq!(u32_at(&m, 0) as usize, m.len());
        assert_eq!(u16_at(&m, 4), RTM_NEWLINK);
        assert_eq!(u16_at(&m, 6), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(u32_at(&m, 8), 7);
        assert_eq!(u32_at(&m, 20), 3); // ifi_index
        assert_eq!(u32_at(&m, 24), IFF_UP); // flags
        assert_eq!(u32_at(&m, 28), IFF_UP); // change
        assert_eq!(u16_at(&m, 32), 8); // attr len
        assert_eq!(u16_at(&m, 34), IFLA_MTU);
        assert_eq!(u32_at(&m, 36), 1400);
        assert_eq!(m.len(), 40);
        assert_eq!(link_up(1, 3, None, None).len(), 32);
        // A MAC: a 10-byte attribute padded to 12.
        let m = link_up(1, 3, None, Some([2, 0, 0, 0, 0, 9]));
        assert_eq!(u16_at(&m, 32), 10);
        assert_eq!(u16_at(&m, 34), IFLA_ADDRESS);
        assert_eq!(&m[36..42], &[2, 0, 0, 0, 0, 9]);
        assert_eq!(m.len(), 44);
    }

    #[test]
    fn add_addr_v4_has_local_address_and_broadcast() {
        let m = add_addr(2, 5, "10.0.0.5".parse().unwrap(), 24);
        assert_eq!(u16_at(&m, 4), RTM_NEWADDR);
        assert_eq!(m[16], libc::AF_INET as u8);
        assert_eq!(m[17], 24);
        assert_eq!(u32_at(&m, 20), 5);
        // IFA_LOCAL, IFA_ADDRESS, IFA_BROADCAST, 8 bytes each.
        assert_eq!((u16_at(&m, 24), u16_at(&m, 26)), (8, IFA_LOCAL));
        assert_eq!(&m[28..32], &[10, 0, 0, 5]);
        assert_eq!(u16_at(&m, 34), IFA_ADDRESS);
        assert_eq!(u16_at(&m, 42), IFA_BROADCAST);
        assert_eq!(&m[44..48], &[10, 0, 0, 255]);
        assert_eq!(m.len(), 48);
        assert_eq!(u32_at(&m, 0) as usize, m.len());
    }

    #[test]
    fn add_addr_v6_has_no_broadcast() {
        let m = add_addr(2, 5, "fd00::5".parse().unwrap(), 64);
        assert_eq!(m[16], libc::AF_INET6 as u8);
        assert_eq!(m.len(), 24 + 20 + 20);
    }

    #[test]
    fn default_route_has_gateway_only() {
        let m = add_route(3, None, Some("10.0.0.1".parse().unwrap()), None);
        assert_eq!(u16_at(&m, 4), RTM_NEWROUTE);
        assert_eq!(m[16], libc::AF_INET as u8);
        assert_eq!(m[17], 0); // dst_len
        assert_eq!(m[20], RT_TABLE_MAIN);
        assert_eq!(m[23], RTN_UNICAST);
        assert_eq!((u16_at(&m, 28), u16_at(&m, 30)), (8, RTA_GATEWAY));
        assert_eq!(&m[32..36], &[10, 0, 0, 1]);
        assert_eq!(m.len(), 36);
    }

    #[test]
    fn route_with_destination_and_oif() {
        let m = add_route(3, Some(("fd01::".parse().unwrap(), 64)), None, Some(9));
        assert_eq!(m[16], libc::AF_INET6 as u8);
        assert_eq!(m[17], 64);
        assert_eq!((u16_at(&m, 28), u16_at(&m, 30)), (20, RTA_DST));
        assert_eq!((u16_at(&m, 48), u16_at(&m, 50)), (8, RTA_OIF));
        assert_eq!(u32_at(&m, 52), 9);
    }

    fn error_reply(seq: u32, code: i32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&36u32.to_ne_bytes());
        b.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        b.extend_from_slice(&0u16.to_ne_bytes());
        b.extend_from_slice(&seq.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&code.to_ne_bytes());
        b.extend_from_slice(&[0u8; 16]);
        b
    }

    #[test]
    fn acks_errors_and_garbage() {
        assert_eq!(parse_ack(&error_reply(4, 0), 4), Ok(Ack::Ok));
        assert_eq!(
            parse_ack(&error_reply(4, -libc::EEXIST), 4),
            Ok(Ack::Err(libc::EEXIST))
        );
        assert_eq!(parse_ack(&error_reply(5, 0), 4), Ok(Ack::Other));
        assert!(parse_ack(&[1, 2, 3], 4).is_err());
        let mut bad = error_reply(4, 0);
        bad[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(parse_ack(&bad, 4).is_err());
    }
}
