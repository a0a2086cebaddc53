//! Names: a DNS resolver (A and AAAA, over smoltcp's DNS socket, using the stack's servers from
//! `dns=` or DHCP) and the `host:port` targets that `tcp_connect` and friends accept.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use smoltcp::socket::dns;
use smoltcp::wire::{DnsQueryType, IpAddress};

use crate::stack::Stack;
use crate::tcp::{TcpListener, TcpStream};
use crate::udp::UdpSocket;

/// How long a name lookup may take.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Something to connect to or bind: a socket address, or `host:port` text.
pub trait ToTarget {
    /// An address, or a host name and port for the resolver.
    fn to_target(&self) -> io::Result<Result<SocketAddr, (String, u16)>>;
}

impl ToTarget for SocketAddr {
    fn to_target(&self) -> io::Result<Result<SocketAddr, (String, u16)>> {
        Ok(Ok(*self))
    }
}

impl ToTarget for (IpAddr, u16) {
    fn to_target(&self) -> io::Result<Result<SocketAddr, (String, u16)>> {
        Ok(Ok(SocketAddr::new(self.0, self.1)))
    }
}

impl ToTarget for (&str, u16) {
    fn to_target(&self) -> io::Result<Result<SocketAddr, (String, u16)>> {
        let host = self.0.trim_start_matches('[').trim_end_matches(']');
        Ok(match host.parse::<IpAddr>() {
            Ok(ip) => Ok(SocketAddr::new(ip, self.1)),
            Err(_) => Err((host.to_string(), self.1)),
        })
    }
}

impl ToTarget for str {
    fn to_target(&self) -> io::Result<Result<SocketAddr, (String, u16)>> {
        if let Ok(a) = self.parse::<SocketAddr>() {
            return Ok(Ok(a));
        }
        let bad = || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{self:?}: expected ADDR:PORT, [V6ADDR]:PORT or HOST:PORT"),
            )
        };
        let (host, port) = self.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() {
            return Err(bad());
        }
        (host, port).to_target()
    }
}

impl ToTarget for &str {
    fn to_target(&self) -> io::Result<Result<SocketAddr, (String, u16)>> {
        (**self).to_target()
    }
}

impl ToTarget for String {
    fn to_target(&self) -> io::Result<Result<SocketAddr, (String, u16)>> {
        self.as_str().to_target()
    }
}

impl Stack {
    /// Resolves `host` to its IPv4 and IPv6 addresses through the stack's DNS servers.
    pub fn resolve(&self, host: &str, timeout: Duration) -> io::Result<Vec<IpAddr>> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        if host.eq_ignore_ascii_case("localhost") {
            return Ok(vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ]);
        }
        let mut g = self.lock();
        let servers: Vec<IpAddress> = g.dns_servers.iter().map(|&a| a.into()).collect();
        if servers.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("cannot resolve {host:?}: the stack has no DNS server (use dns= or dhcp)"),
            ));
        }
        let mut s = dns::Socket::new(&servers, vec![None, None]);
        let inner = &mut *g;
        let mut queries = Vec::new();
        let v4 = inner
            .net
            .links
            .iter()
            .any(|l| l.addrs.iter().any(|c| c.addr.is_ipv4()));
        let v6 = inner.net.links.iter().any(|l| {
            l.addrs
                .iter()
                .any(|c| matches!(c.addr, IpAddr::V6(a) if !a.is_unicast_link_local()))
        });
        for (want, ty) in [(v4, DnsQueryType::A), (v6, DnsQueryType::Aaaa)] {
            if want {
                let q = s
                    .start_query(inner.iface.context(), host, ty)
                    .map_err(|e| {
                        io::Error::new(io::ErrorKind::InvalidInput, format!("{host:?}: {e}"))
                    })?;
                queries.push(q);
            }
        }
        let h = g.sockets.add(s);
        drop(g);
        self.shared.kick();
        let mut results: Vec<Option<Vec<IpAddr>>> = vec![None; queries.len()];
        let done = self.wait_for(Some(timeout), |g| {
            let s = g.sockets.get_mut::<dns::Socket>(h);
            for (q, r) in queries.iter().zip(results.iter_mut()) {
                if r.is_some() {
                    continue;
                }
                match s.get_query_result(*q) {
                    Ok(addrs) => *r = Some(addrs.iter().map(|&a| a.into()).collect()),
                    Err(dns::GetQueryResultError::Failed) => *r = Some(Vec::new()),
                    Err(dns::GetQueryResultError::Pending) => {}
                }
            }
            results.iter().all(Option::is_some).then_some(())
        });
        self.lock().sockets.remove(h);
        let addrs: Vec<IpAddr> = results.into_iter().flatten().flatten().collect();
        if !addrs.is_empty() {
            Ok(addrs)
        } else if done.is_none() {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("resolving {host:?} timed out"),
            ))
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host:?} has no address"),
            ))
        }
    }

    /// The socket addresses a target names (resolving host names).
    pub fn lookup(&self, target: impl ToTarget) -> io::Result<Vec<SocketAddr>> {
        match target.to_target()? {
            Ok(a) => Ok(vec![a]),
            Err((host, port)) => Ok(self
                .resolve(&host, RESOLVE_TIMEOUT)?
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect()),
        }
    }

    /// Connects to `target` (an address or `host:port`), trying each address in turn.
    pub fn tcp_connect(&self, target: impl ToTarget) -> io::Result<TcpStream> {
        self.tcp_connect_timeout(target, None)
    }

    /// [`Stack::tcp_connect`] with a timeout per address.
    pub fn tcp_connect_timeout(
        &self,
        target: impl ToTarget,
        timeout: Option<Duration>,
    ) -> io::Result<TcpStream> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address to connect to");
        for a in self.lookup(target)? {
            match TcpStream::connect_timeout(self, a, timeout) {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Listens for TCP connections on `addr` (e.g. `"0.0.0.0:80"`, `"[::]:80"`).
    pub fn tcp_listen(&self, addr: impl ToTarget) -> io::Result<TcpListener> {
        match addr.to_target()? {
            Ok(a) => TcpListener::bind(self, a),
            Err((h, _)) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("listen on an address, not a name ({h:?})"),
            )),
        }
    }

    /// A UDP socket bound to `addr`.
    pub fn udp_bind(&self, addr: impl ToTarget) -> io::Result<UdpSocket> {
        match addr.to_target()? {
            Ok(a) => UdpSocket::bind(self, a),
            Err((h, _)) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bind to an address, not a name ({h:?})"),
            )),
        }
    }
}
