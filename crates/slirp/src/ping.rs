//! Host sockets for the guests' ICMP echo requests: an unprivileged ping socket
//! (`SOCK_DGRAM`, `IPPROTO_ICMP`) where the `net.ipv4.ping_group_range` sysctl lets the
//! process's group open one, else a raw ICMP socket (root or `CAP_NET_RAW`). A ping socket
//! picks the request's identifier and checks replies itself; on a raw socket, which sees
//! every ICMP message from its remote, the gateway gives each flow an identifier of its own,
//! computes the ICMPv4 checksum (the kernel does ICMPv6's) and picks the replies out.

use std::io;
use std::net::{IpAddr, SocketAddr};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr, Ipv4Packet};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;

/// One flow's host socket, connected to the remote the guest pings.
pub struct EchoSocket {
    pub sock: Socket,
    pub wire: Echo,
}

/// How a flow's messages look on its host socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Echo {
    v4: bool,
    /// The identifier the requests carry on a raw socket (None: a ping socket sets its own).
    raw_ident: Option<u16>,
}

impl EchoSocket {
    /// A non-blocking socket connected to `remote`: a ping socket, else a raw socket whose
    /// requests carry `raw_ident`. The error names both refusals.
    pub fn open(remote: IpAddr, raw_ident: u16) -> io::Result<EchoSocket> {
        let v4 = remote.is_ipv4();
        let (domain, proto) = if v4 {
            (Domain::IPV4, Protocol::ICMPV4)
        } else {
            (Domain::IPV6, Protocol::ICMPV6)
        };
        let connected = |ty: Type| {
            let s = Socket::new(domain, ty, Some(proto))?;
            s.set_nonblocking(true)?;
            s.connect(&SockAddr::from(SocketAddr::new(remote, 0)))?;
            Ok::<_, io::Error>(s)
        };
        match connected(Type::DGRAM) {
            Ok(sock) => Ok(EchoSocket {
                sock,
                wire: Echo {
                    v4,
                    raw_ident: None,
                },
            }),
            Err(ping) => match connected(Type::RAW) {
                Ok(sock) => {
                    tracing::debug!(
                        "slirp: ping socket refused ({ping}); a raw ICMP socket instead"
                    );
                    Ok(EchoSocket {
                        sock,
                        wire: Echo {
                            v4,
                            raw_ident: Some(raw_ident),
                        },
                    })
                }
                Err(raw) => Err(io::Error::new(
                    ping.kind(),
                    format!("ping socket: {ping}; raw ICMP socket: {raw}"),
                )),
            },
        }
    }

    /// Sends an echo request.
    pub fn send(&self, ident: u16, seq: u16, data: &[u8]) -> io::Result<usize> {
        self.sock.send(&self.wire.request(ident, seq, data))
    }
}

impl Echo {
    /// The echo request message (ICMP header and data) for the guest's `ident` and `seq`.
    fn request(&self, ident: u16, seq: u16, data: &[u8]) -> Vec<u8> {
        let ident = self.raw_ident.unwrap_or(ident);
        let mut msg = vec![0; 8 + data.len()];
        if self.v4 {
            let repr = Icmpv4Repr::EchoRequest {
                ident,
                seq_no: seq,
                data,
            };
            let mut p = Icmpv4Packet::new_unchecked(&mut msg[..]);
            repr.emit(&mut p, &ChecksumCapabilities::default());
        } else {
            msg[0] = ECHO_REQUEST_V6;
            msg[4..6].copy_from_slice(&ident.to_be_bytes());
            msg[6..8].copy_from_slice(&seq.to_be_bytes());
            msg[8..].copy_from_slice(data);
        }
        debug_assert_eq!(
            msg[0],
            if self.v4 {
                ECHO_REQUEST_V4
            } else {
                ECHO_REQUEST_V6
            }
        );
        msg
    }

    /// The sequence number and data of an echo reply for this flow in what the socket read
    /// (`buf`), or None for anything else (other messages a raw socket sees, short reads).
    pub fn reply<'a>(&self, buf: &'a [u8]) -> Option<(u16, &'a [u8])> {
        let msg = match self.raw_ident {
            // A raw IPv4 socket reads the IP header too.
            Some(_) if self.v4 => {
                let ip = Ipv4Packet::new_checked(buf).ok()?;
                let start = usize::from(ip.header_len());
                let end = usize::from(ip.total_len()).min(buf.len());
                let msg = buf.get(start..end)?;
                if !Icmpv4Packet::new_checked(msg).ok()?.verify_checksum() {
                    return None;
                }
                msg
            }
            _ => buf,
        };
        if msg.len() < 8 {
            return None;
        }
        let reply = if self.v4 {
            ECHO_REPLY_V4
        } else {
            ECHO_REPLY_V6
        };
        if msg[0] != reply || msg[1] != 0 {
            return None;
        }
        if let Some(ident) = self.raw_ident {
            if u16::from_be_bytes([msg[4], msg[5]]) != ident {
                return None;
            }
        }
        Some((u16::from_be_bytes([msg[6], msg[7]]), &msg[8..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAW4: Echo = Echo {
        v4: true,
        raw_ident: Some(0x4242),
    };

    #[test]
    fn raw_requests_carry_the_flows_ident_and_replies_are_picked_by_it() {
        let req = RAW4.request(7, 3, b"abc");
        assert_eq!(&req[..2], &[ECHO_REQUEST_V4, 0]);
        assert_eq!(&req[4..8], &[0x42, 0x42, 0, 3]);
        assert!(Icmpv4Packet::new_checked(&req[..])
            .unwrap()
            .verify_checksum());
        // The reply as a raw IPv4 socket reads it: an IP header first.
        let mut reply = req.clone();
        reply[0] = ECHO_REPLY_V4;
        Icmpv4Packet::new_unchecked(&mut reply[..]).fill_checksum();
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1,
        ];
        let total = (ip.len() + reply.len()) as u16;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&reply);
        assert_eq!(RAW4.reply(&ip), Some((3, &b"abc"[..])));
        // Another flow's reply, a bad checksum and a short read are not this flow's.
        let mut other = ip.clone();
        other[24] = 0x43;
        assert_eq!(RAW4.reply(&other), None);
        let mut bad = ip.clone();
        bad[30] ^= 1;
        assert_eq!(RAW4.reply(&bad), None);
        assert_eq!(RAW4.reply(&ip[..25]), None);
        // A ping socket's request keeps the guest's identifier (the kernel sets its own).
        let ping = Echo {
            v4: true,
            raw_ident: None,
        };
        assert_eq!(&ping.request(7, 3, b"")[4..6], &[0, 7]);
        assert_eq!(ping.reply(&reply), Some((3, &b"abc"[..])));
    }

    #[test]
    fn raw_icmpv6_replies_have_no_ip_header() {
        let raw6 = Echo {
            v4: false,
            raw_ident: Some(0x4242),
        };
        let req = raw6.request(7, 9, b"x");
        assert_eq!(&req[..8], &[ECHO_REQUEST_V6, 0, 0, 0, 0x42, 0x42, 0, 9]);
        let mut reply = req.clone();
        reply[0] = ECHO_REPLY_V6;
        assert_eq!(raw6.reply(&reply), Some((9, &b"x"[..])));
        reply[5] = 0;
        assert_eq!(raw6.reply(&reply), None);
    }
}
