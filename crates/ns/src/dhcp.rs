//! A minimal DHCPv4 client (RFC 2131): a sans-IO core ([`Client`]) that builds DISCOVER and
//! REQUEST and reads OFFER/ACK/NAK, and [`acquire`], the I/O shell that runs it on a UDP
//! socket bound to one interface. Replies are asked for by broadcast (the BROADCAST flag), so
//! a plain UDP socket receives them before the interface has an address.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use crate::sys;

const MAGIC: [u8; 4] = [99, 130, 83, 99];
const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const REQUEST: u8 = 3;
const ACK: u8 = 5;
const NAK: u8 = 6;
const FIXED: usize = 236;

/// What a server granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub server: Ipv4Addr,
    pub lease_secs: u32,
}

/// A parsed server message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub kind: u8,
    pub xid: u32,
    pub yiaddr: Ipv4Addr,
    pub lease: Lease,
}

/// Malformed DHCP input.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DhcpError {
    #[error("DHCP message too short")]
    Short,
    #[error("not a DHCP reply (bad op, magic cookie or hardware type)")]
    NotDhcp,
    #[error("DHCP option runs past the end of the message")]
    BadOption,
    #[error("DHCP message has no message type")]
    NoType,
}

fn ip4(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

/// Parses a BOOTREPLY.
pub fn parse(msg: &[u8]) -> Result<Reply, DhcpError> {
    if msg.len() < FIXED + 4 {
        return Err(DhcpError::Short);
    }
    if msg[0] != 2 || msg[1] != 1 || msg[FIXED..FIXED + 4] != MAGIC {
        return Err(DhcpError::NotDhcp);
    }
    let xid = u32::from_be_bytes([msg[4], msg[5], msg[6], msg[7]]);
    let yiaddr = ip4(&msg[16..20]);
    let mut kind = None;
    let mut lease = Lease {
        addr: yiaddr,
        prefix: 24,
        router: None,
        dns: Vec::new(),
        server: ip4(&msg[20..24]),
        lease_secs: 0,
    };
    let mut i = FIXED + 4;
    while i < msg.len() {
        let code = msg[i];
        if code == 255 {
            break;
        }
        if code == 0 {
            i += 1;
            continue;
        }
        let len = *msg.get(i + 1).ok_or(DhcpError::BadOption)? as usize;
        let val = msg.get(i + 2..i + 2 + len).ok_or(DhcpError::BadOption)?;
        match (code, len) {
            (53, 1) => kind = Some(val[0]),
            (1, 4) => {
                lease.prefix =
                    u32::from_be_bytes([val[0], val[1], val[2], val[3]]).count_ones() as u8
            }
            (3, l) if l >= 4 => lease.router = Some(ip4(val)),
            (6, l) if l >= 4 => lease.dns = val.chunks_exact(4).map(ip4).collect(),
            (51, 4) => lease.lease_secs = u32::from_be_bytes([val[0], val[1], val[2], val[3]]),
            (54, 4) => lease.server = ip4(val),
            _ => {}
        }
        i += 2 + len;
    }
    Ok(Reply {
        kind: kind.ok_or(DhcpError::NoType)?,
        xid,
        yiaddr,
        lease,
    })
}

/// Where the client is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Selecting,
    Requesting(Lease),
    Bound(Lease),
}

/// What the shell should do after a reply.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Broadcast this message.
    Send(Vec<u8>),
    /// Configure this lease.
    Bound(Lease),
    /// The server refused: start again with [`Client::discover`].
    Restart,
    /// Not for us, or not expected now.
    Ignore,
}

/// The client state machine for one interface.
pub struct Client {
    mac: [u8; 6],
    xid: u32,
    state: State,
}

impl Client {
    pub fn new(mac: [u8; 6], xid: u32) -> Client {
        Client {
            mac,
            xid,
            state: State::Selecting,
        }
    }

    fn message(&self, kind: u8, extra: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut m = vec![0u8; FIXED];
        m[0] = 1; // BOOTREQUEST
        m[1] = 1; // Ethernet
        m[2] = 6;
        m[4..8].copy_from_slice(&self.xid.to_be_bytes());
        m[10] = 0x80; // BROADCAST flag: answer by broadcast, we have no address yet
        m[28..34].copy_from_slice(&self.mac);
        m.extend_from_slice(&MAGIC);
        m.extend_from_slice(&[53, 1, kind]);
        let mut cid = vec![1u8];
        cid.extend_from_slice(&self.mac);
        m.extend_from_slice(&[61, cid.len() as u8]);
        m.extend_from_slice(&cid);
        for (code, val) in extra {
            m.push(*code);
            m.push(val.len() as u8);
            m.extend_from_slice(val);
        }
        m.extend_from_slice(&[55, 4, 1, 3, 6, 51, 255]);
        while m.len() < 300 {
            m.push(0);
        }
        m
    }

    /// Starts (or restarts) negotiation: the DISCOVER to broadcast.
    pub fn discover(&mut self) -> Vec<u8> {
        self.state = State::Selecting;
        self.message(DISCOVER, &[])
    }

    /// The message to send again after a timeout in the current state.
    pub fn retransmit(&mut self) -> Vec<u8> {
        match &self.state {
            State::Requesting(l) => self.request(&l.clone()),
            _ => self.discover(),
        }
    }

    fn request(&self, lease: &Lease) -> Vec<u8> {
        self.message(
            REQUEST,
            &[
                (50, lease.addr.octets().to_vec()),
                (54, lease.server.octets().to_vec()),
            ],
        )
    }

    /// Feeds one received datagram.
    pub fn handle(&mut self, msg: &[u8]) -> Action {
        let Ok(r) = parse(msg) else {
            return Action::Ignore;
        };
        if r.xid != self.xid || msg[28..34] != self.mac {
            return Action::Ignore;
        }
        match (&self.state, r.kind) {
            (State::Selecting, OFFER) => {
                let req = self.request(&r.lease);
                self.state = State::Requesting(r.lease);
                Action::Send(req)
            }
            (State::Requesting(_), ACK) => {
                self.state = State::Bound(r.lease.clone());
                Action::Bound(r.lease)
            }
            (State::Requesting(_), NAK) => Action::Restart,
            _ => Action::Ignore,
        }
    }
}

/// Runs DHCP on `ifname` (in the calling thread's network namespace) until a lease or
/// `timeout`.
pub fn acquire(ifname: &str, timeout: Duration) -> io::Result<Lease> {
    let mac = sys::hw_addr(ifname)?;
    let xid = u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]) ^ std::process::id();
    let mut client = Client::new(mac, xid);
    let sock = sys::dhcp_socket(ifname, Duration::from_millis(700))?;
    let server = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
    let deadline = Instant::now() + timeout;
    let mut out = client.discover();
    let mut buf = vec![0u8; 1500];
    while Instant::now() < deadline {
        sock.send_to(&out, server)?;
        let resend_at = Instant::now() + Duration::from_millis(1500);
        loop {
            match sock.recv_from(&mut buf) {
                Ok((n, _)) => match client.handle(&buf[..n]) {
                    Action::Send(m) => {
                        out = m;
                        break;
                    }
                    Action::Bound(l) => return Ok(l),
                    Action::Restart => {
                        out = client.discover();
                        break;
                    }
                    Action::Ignore => {}
                },
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e),
            }
            if Instant::now() >= resend_at || Instant::now() >= deadline {
                out = client.retransmit();
                break;
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no DHCP lease on {ifname} within {}s", timeout.as_secs()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 9];

    fn reply(kind: u8, xid: u32, mac: [u8; 6]) -> Vec<u8> {
        let mut m = vec![0u8; FIXED];
        m[0] = 2;
        m[1] = 1;
        m[2] = 6;
        m[4..8].copy_from_slice(&xid.to_be_bytes());
        m[16..20].copy_from_slice(&[10, 0, 0, 50]);
        m[28..34].copy_from_slice(&mac);
        m.extend_from_slice(&MAGIC);
        m.extend_from_slice(&[53, 1, kind, 54, 4, 10, 0, 0, 1, 1, 4, 255, 255, 0, 0]);
        m.extend_from_slice(&[3, 4, 10, 0, 0, 1, 6, 8, 9, 9, 9, 9, 1, 1, 1, 1]);
        m.extend_from_slice(&[51, 4, 0, 0, 14, 16, 255]);
        m
    }

    #[test]
    fn discover_is_a_broadcast_bootrequest() {
        let mut c = Client::new(MAC, 0x1234);
        let d = c.discover();
        assert_eq!(d[0], 1);
        assert_eq!(&d[4..8], &0x1234u32.to_be_bytes());
        assert_eq!(d[10], 0x80);
        assert_eq!(&d[28..34], &MAC);
        assert_eq!(&d[FIXED..FIXED + 4], &MAGIC);
        assert_eq!(&d[FIXED + 4..FIXED + 7], &[53, 1, DISCOVER]);
        assert!(d.len() >= 300);
    }

    #[test]
    fn offer_then_ack_binds_the_lease() {
        let mut c = Client::new(MAC, 7);
        c.discover();
        let Action::Send(req) = c.handle(&reply(OFFER, 7, MAC)) else {
            panic!("no request after offer")
        };
        let p = &req[FIXED + 4..];
        assert_eq!(&p[..3], &[53, 1, REQUEST]);
        assert!(req.windows(6).any(|w| w == [50, 4, 10, 0, 0, 50]));
        assert!(req.windows(6).any(|w| w == [54, 4, 10, 0, 0, 1]));
        let Action::Bound(l) = c.handle(&reply(ACK, 7, MAC)) else {
            panic!("not bound")
        };
        assert_eq!(l.addr, Ipv4Addr::new(10, 0, 0, 50));
        assert_eq!(l.prefix, 16);
        assert_eq!(l.router, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(
            l.dns,
            vec![Ipv4Addr::new(9, 9, 9, 9), Ipv4Addr::new(1, 1, 1, 1)]
        );
        assert_eq!(l.lease_secs, 3600);
        assert_eq!(l.server, Ipv4Addr::new(10, 0, 0, 1));
    }

    #[test]
    fn foreign_and_unexpected_replies_are_ignored() {
        let mut c = Client::new(MAC, 7);
        c.discover();
        assert_eq!(c.handle(&reply(OFFER, 8, MAC)), Action::Ignore);
        assert_eq!(
            c.handle(&reply(OFFER, 7, [2, 0, 0, 0, 0, 1])),
            Action::Ignore
        );
        assert_eq!(c.handle(&reply(ACK, 7, MAC)), Action::Ignore);
        assert_eq!(c.handle(&[0u8; 10]), Action::Ignore);
        assert!(matches!(c.handle(&reply(OFFER, 7, MAC)), Action::Send(_)));
        assert_eq!(c.handle(&reply(NAK, 7, MAC)), Action::Restart);
    }

    #[test]
    fn malformed_messages_are_typed_errors() {
        assert_eq!(parse(&[0u8; 20]), Err(DhcpError::Short));
        let mut m = reply(ACK, 1, MAC);
        m[0] = 1;
        assert_eq!(parse(&m), Err(DhcpError::NotDhcp));
        let mut m = reply(ACK, 1, MAC);
        m.truncate(FIXED + 4);
        m.extend_from_slice(&[53, 9, 1]);
        assert_eq!(parse(&m), Err(DhcpError::BadOption));
        let mut m = reply(ACK, 1, MAC);
        m.truncate(FIXED + 4);
        m.push(255);
        assert_eq!(parse(&m), Err(DhcpError::NoType));
    }
}
