//! `udp://[SRC_ADDR:]SRC_PORT->DST_HOST:DST_PORT`: one Ethernet frame per UDP datagram, no
//! header, between two fixed endpoints (vdeplug4's udp plugin). IPv6 addresses go in brackets.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::OwnedFd;

use socket2::{Domain, SockAddr, Socket, Type};

use super::dgram::{ConnectedDgram, Refused};

pub const SYNTAX: &str =
    "udp://[SRC_ADDR:]SRC_PORT->DST_HOST:DST_PORT (IPv6 addresses in brackets)";

/// The two endpoints of a udp:// cable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpConfig {
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

fn bad(why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{why}; expected {SYNTAX}"),
    )
}

fn split_host_port(text: &str) -> io::Result<(Option<&str>, u16)> {
    let (host, port) = match text.rfind(':') {
        Some(i) if !text.starts_with('[') || text[..i].ends_with(']') => {
            (Some(&text[..i]), &text[i + 1..])
        }
        _ => (None, text),
    };
    let port = port
        .parse::<u16>()
        .map_err(|_| bad(&format!("{port:?} is not a port number (0-65535)")))?;
    let host = host.map(|h| h.trim_start_matches('[').trim_end_matches(']'));
    Ok((host, port))
}

impl UdpConfig {
    pub fn parse(text: &str) -> io::Result<UdpConfig> {
        let (src, dst) = text.split_once("->").ok_or_else(|| bad("missing \"->\""))?;
        let (src_host, src_port) = split_host_port(src.trim())?;
        let (dst_host, dst_port) = split_host_port(dst.trim())?;
        let dst_host = dst_host
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("missing destination host"))?;
        let remote = (dst_host, dst_port)
            .to_socket_addrs()
            .map_err(|e| bad(&format!("cannot resolve {dst_host:?}: {e}")))?
            .next()
            .ok_or_else(|| bad(&format!("{dst_host:?} has no address")))?;
        let local_ip = match src_host.filter(|h| !h.is_empty()) {
            Some(h) => h
                .parse::<IpAddr>()
                .map_err(|_| bad(&format!("{h:?} is not an IP address")))?,
            None if remote.is_ipv6() => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        Ok(UdpConfig {
            local: SocketAddr::new(local_ip, src_port),
            remote,
        })
    }
}

pub fn open(cfg: &UdpConfig) -> io::Result<ConnectedDgram> {
    // The caller names the VNL; these say what failed on which address.
    let ctx = |what: String, e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
    let sock = Socket::new(Domain::for_address(cfg.local), Type::DGRAM.cloexec(), None)
        .map_err(|e| ctx("cannot create a UDP socket".into(), e))?;
    // No SO_REUSEADDR: with it a second plug on the same port binds too and one of the two
    // silently receives nothing.
    sock.bind(&SockAddr::from(cfg.local)).map_err(|e| {
        let why = if e.kind() == io::ErrorKind::AddrInUse {
            format!(
                "cannot bind {}: the port is in use (another udp:// plug or program has it)",
                cfg.local
            )
        } else {
            format!("cannot bind {}", cfg.local)
        };
        ctx(why, e)
    })?;
    sock.connect(&SockAddr::from(cfg.remote))
        .map_err(|e| ctx(format!("cannot connect to {}", cfg.remote), e))?;
    let _ = sock.set_recv_buffer_size(1 << 21);
    let _ = sock.set_send_buffer_size(1 << 21);
    ConnectedDgram::new(OwnedFd::from(sock), None, Refused::Loss, false, "udp")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_vdeplug_forms() {
        let c = UdpConfig::parse("2000->127.0.0.1:3000").unwrap();
        assert_eq!(c.local, "0.0.0.0:2000".parse().unwrap());
        assert_eq!(c.remote, "127.0.0.1:3000".parse().unwrap());
        let c = UdpConfig::parse("127.0.0.2:2000->127.0.0.1:3000").unwrap();
        assert_eq!(c.local, "127.0.0.2:2000".parse().unwrap());
        let c = UdpConfig::parse("[::1]:2000->[::1]:3000").unwrap();
        assert_eq!(c.local, "[::1]:2000".parse().unwrap());
        assert_eq!(c.remote, "[::1]:3000".parse().unwrap());
        let c = UdpConfig::parse("2000->[::1]:3000").unwrap();
        assert_eq!(c.local, "[::]:2000".parse().unwrap());
    }

    #[test]
    fn rejects_malformed_forms_with_the_syntax() {
        for bad in [
            "2000",
            "x->127.0.0.1:1",
            "2000->127.0.0.1",
            "2000->:5",
            "2000->127.0.0.1:99999",
            "nope:1->127.0.0.1:2",
        ] {
            let err = UdpConfig::parse(bad).unwrap_err().to_string();
            assert!(err.contains("expected udp://"), "{bad}: {err}");
        }
    }
}
