//! A gateway's configuration, from a `slirp://` VNL (vdeplug_slirp's options and defaults).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use filo_vnl::Vnl;

/// TCP or UDP, for port forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// A host → guest port forward: `[HOSTIP:]HOSTPORT:GUESTIP:GUESTPORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Forward {
    pub proto: Proto,
    pub host: SocketAddr,
    pub guest: SocketAddr,
}

impl Forward {
    /// Parses `[HOSTIP:]HOSTPORT:GUESTIP:GUESTPORT` (IPv6 addresses in brackets); the host
    /// address defaults to 0.0.0.0 (or `::` for an IPv6 guest).
    pub fn parse(proto: Proto, text: &str) -> Result<Forward, String> {
        let expected = || {
            format!(
                "{}fwd {text:?}: expected [HOSTIP:]HOSTPORT:GUESTIP:GUESTPORT, e.g. 8080:10.0.2.15:80",
                proto.name()
            )
        };
        let parts = split_colons(text);
        let (host_ip, rest) = match parts.len() {
            3 => (None, &parts[..]),
            4 => (Some(parts[0].as_str()), &parts[1..]),
            _ => return Err(expected()),
        };
        let port = |s: &str| s.parse::<u16>().ok().filter(|&p| p != 0);
        let ip = |s: &str| s.trim_matches(['[', ']']).parse::<IpAddr>().ok();
        let (Some(hport), Some(gip), Some(gport)) = (port(&rest[0]), ip(&rest[1]), port(&rest[2]))
        else {
            return Err(expected());
        };
        let hip = match host_ip {
            Some(s) => ip(s).ok_or_else(expected)?,
            None if gip.is_ipv6() => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        Ok(Forward {
            proto,
            host: SocketAddr::new(hip, hport),
            guest: SocketAddr::new(gip, gport),
        })
    }
}

impl std::fmt::Display for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} -> {}", self.proto.name(), self.host, self.guest)
    }
}

/// Splits at colons outside brackets.
fn split_colons(text: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut depth = 0;
    for c in text.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ':' if depth == 0 => {
                parts.push(String::new());
                continue;
            }
            _ => {}
        }
        if let Some(last) = parts.last_mut() {
            last.push(c);
        }
    }
    parts
}

/// Everything a gateway needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub v4: bool,
    pub v6: bool,
    /// The gateway's own IPv4 address and the network's prefix length.
    pub gateway: Ipv4Addr,
    pub prefix: u8,
    /// The DNS forwarder's address.
    pub dns: Ipv4Addr,
    /// The first address DHCP hands out.
    pub dhcp_start: Ipv4Addr,
    pub gateway6: Ipv6Addr,
    pub prefix6: u8,
    pub dns6: Ipv6Addr,
    pub dns_search: Vec<String>,
    /// The guest link's MTU (told by DHCP); frames up to 65535 bytes are accepted anyway.
    pub mtu: u16,
    /// The guest reaches nothing outside (only port forwards carry traffic).
    pub restricted: bool,
    /// The gateway's address reaches the host's loopback.
    pub hostloopback: bool,
    pub forwards: Vec<Forward>,
    pub verbose: bool,
    /// The host name DHCP gives the guests (option 12; libslirp's vhostname).
    pub hostname: Option<String>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            v4: true,
            v6: true,
            gateway: Ipv4Addr::new(10, 0, 2, 2),
            prefix: 24,
            dns: Ipv4Addr::new(10, 0, 2, 3),
            dhcp_start: Ipv4Addr::new(10, 0, 2, 15),
            gateway6: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2),
            prefix6: 64,
            dns6: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3),
            dns_search: Vec::new(),
            mtu: 1500,
            restricted: false,
            hostloopback: false,
            forwards: Vec::new(),
            verbose: false,
            hostname: None,
        }
    }
}

/// A name DHCP can give: dot-separated labels of letters, digits and inner hyphens, at most
/// 63 characters in all.
fn is_host_name(name: &str) -> bool {
    name.len() <= 63
        && name.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn host_part_v4(addr: Ipv4Addr, prefix: u8, host: u32) -> Ipv4Addr {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    Ipv4Addr::from((u32::from(addr) & mask) | (host & !mask))
}

fn host_part_v6(addr: Ipv6Addr, prefix: u8, host: u128) -> Ipv6Addr {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    };
    Ipv6Addr::from((u128::from(addr) & mask) | (host & !mask))
}

fn parse_cidr<T: std::str::FromStr>(value: &str, max: u8, default: u8) -> Option<(T, u8)> {
    let (a, p) = match value.split_once('/') {
        Some((a, p)) => (a, p.parse::<u8>().ok().filter(|&p| p <= max)?),
        None => (value, default),
    };
    Some((a.parse().ok()?, p))
}

impl Config {
    /// The configuration a `slirp://` VNL describes. Every option either takes effect or is
    /// refused with an error naming it.
    pub fn from_vnl(vnl: &Vnl) -> Result<Config, String> {
        let mut c = Config::default();
        if !vnl.address().is_empty() {
            return Err(format!(
                "slirp:// takes no address, only options (got {:?}); e.g. slirp:///hostloopback",
                vnl.address()
            ));
        }
        let (v4, v6) = (vnl.has_flag("v4"), vnl.has_flag("v6"));
        if v4 || v6 {
            c.v4 = v4;
            c.v6 = v6;
        }
        c.restricted = vnl.has_flag("restricted");
        c.hostloopback = vnl.has_flag("hostloopback");
        c.verbose = vnl.has_flag("verbose");
        let bad = |key: &str, value: &str, expected: &str| {
            format!("option {key}: expected {expected}, got {value:?}")
        };
        for key in ["addr", "host"] {
            if let Some(v) = vnl.get(key) {
                let (a, p): (Ipv4Addr, u8) = parse_cidr(v, 30, 24)
                    .ok_or_else(|| bad(key, v, "an IPv4 address/prefix, e.g. 10.0.2.2/24"))?;
                c.gateway = a;
                c.prefix = p;
                c.dns = host_part_v4(a, p, 3);
                c.dhcp_start = host_part_v4(a, p, 15);
            }
        }
        for key in ["addr6", "host6"] {
            if let Some(v) = vnl.get(key) {
                let (a, p): (Ipv6Addr, u8) = parse_cidr(v, 64, 64)
                    .ok_or_else(|| bad(key, v, "an IPv6 address/prefix, e.g. fd00::2/64"))?;
                c.gateway6 = a;
                c.prefix6 = p;
                c.dns6 = host_part_v6(a, p, 3);
            }
        }
        let in_net = |a: Ipv4Addr, c: &Config| {
            host_part_v4(a, c.prefix, 0) == host_part_v4(c.gateway, c.prefix, 0)
        };
        if let Some(v) = vnl.get("dhcp") {
            c.dhcp_start = v
                .parse()
                .ok()
                .filter(|a| in_net(*a, &c))
                .ok_or_else(|| bad("dhcp", v, "an IPv4 address in the gateway's network"))?;
        }
        if let Some(v) = vnl.get("vnameserver") {
            c.dns = v
                .parse()
                .ok()
                .filter(|a| in_net(*a, &c) && *a != c.gateway)
                .ok_or_else(|| {
                    bad(
                        "vnameserver",
                        v,
                        "an IPv4 address in the gateway's network other than the gateway's",
                    )
                })?;
        }
        if let Some(v) = vnl.get("vnameserver6") {
            c.dns6 = v
                .parse()
                .ok()
                .filter(|a| *a != c.gateway6)
                .ok_or_else(|| bad("vnameserver6", v, "an IPv6 address"))?;
        }
        if let Some(v) = vnl.get("vdnssearch") {
            c.dns_search = v
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
        }
        if let Some(v) = vnl.get("hostname") {
            if !is_host_name(v) {
                return Err(bad(
                    "hostname",
                    v,
                    "a host name (letters, digits, '-' and '.', at most 63 characters)",
                ));
            }
            c.hostname = Some(v.to_string());
        }
        if let Some(v) = vnl.get("mtu") {
            c.mtu = v
                .parse::<u16>()
                .ok()
                .filter(|&m| (576..=65521).contains(&m))
                .ok_or_else(|| bad("mtu", v, "a number from 576 to 65521"))?;
        }
        for (key, value) in vnl.options() {
            let proto = match key.as_str() {
                "tcpfwd" => Proto::Tcp,
                "udpfwd" => Proto::Udp,
                _ => continue,
            };
            let Some(value) = value else { continue };
            for item in value.split(',').filter(|s| !s.is_empty()) {
                c.forwards.push(Forward::parse(proto, item)?);
            }
        }
        Ok(c)
    }

    /// The lines `verbose` logs and `fwd/print` shows.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.v4 {
            out.push(format!(
                "ipv4 gateway {}/{} dns {} dhcp from {}",
                self.gateway, self.prefix, self.dns, self.dhcp_start
            ));
        }
        if self.v6 {
            out.push(format!(
                "ipv6 gateway {}/{} dns {}",
                self.gateway6, self.prefix6, self.dns6
            ));
        }
        out.push(format!(
            "mtu {} hostloopback {} restricted {}",
            self.mtu, self.hostloopback, self.restricted
        ));
        out.extend(self.forwards.iter().map(|f| f.to_string()));
        out
    }

    /// Whether `addr` is one of the gateway's own addresses (gateway or DNS, v4 or v6).
    pub fn is_own(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => self.v4 && (a == self.gateway || a == self.dns),
            IpAddr::V6(a) => self.v6 && (a == self.gateway6 || a == self.dns6),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Result<Config, String> {
        Config::from_vnl(&Vnl::parse(text).map_err(|e| e.to_string())?)
    }

    #[test]
    fn defaults_are_vdeplug_slirps() {
        let c = cfg("slirp://").unwrap();
        assert_eq!(c.gateway, Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(c.dns, Ipv4Addr::new(10, 0, 2, 3));
        assert_eq!(c.dhcp_start, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(c.gateway6, "fd00::2".parse::<Ipv6Addr>().unwrap());
        assert!(c.v4 && c.v6 && !c.hostloopback);
    }

    #[test]
    fn addr_moves_the_network() {
        let c = cfg("slirp:///addr='192.168.7.1/24'/v4").unwrap();
        assert_eq!(c.dns, Ipv4Addr::new(192, 168, 7, 3));
        assert_eq!(c.dhcp_start, Ipv4Addr::new(192, 168, 7, 15));
        assert!(c.v4 && !c.v6);
    }

    #[test]
    fn forwards_repeat_and_list() {
        let c = cfg("slirp:///tcpfwd=8080:10.0.2.15:80,127.0.0.1:2222:10.0.2.15:22/udpfwd=5353:10.0.2.15:53/tcpfwd='[::1]:8443:[fd00::15]:443'")
            .unwrap();
        let f: Vec<String> = c.forwards.iter().map(|f| f.to_string()).collect();
        assert_eq!(
            f,
            [
                "tcp 0.0.0.0:8080 -> 10.0.2.15:80",
                "tcp 127.0.0.1:2222 -> 10.0.2.15:22",
                "udp 0.0.0.0:5353 -> 10.0.2.15:53",
                "tcp [::1]:8443 -> [fd00::15]:443"
            ]
        );
    }

    #[test]
    fn hostname_names_the_guests() {
        assert_eq!(cfg("slirp://").unwrap().hostname, None);
        let c = cfg("slirp:///hostname=box.lan").unwrap();
        assert_eq!(c.hostname.as_deref(), Some("box.lan"));
    }

    #[test]
    fn bad_values_name_the_option() {
        for (text, word) in [
            ("slirp:///tcpfwd=80", "tcpfwd"),
            ("slirp:///tcpfwd=0:10.0.2.15:80", "tcpfwd"),
            ("slirp:///addr=10.0.2.300", "addr"),
            ("slirp:///dhcp=10.9.9.9", "dhcp"),
            ("slirp:///mtu=70000", "mtu"),
            ("slirp://somewhere", "no address"),
            ("slirp:///frobnicate=1", "frobnicate"),
            ("slirp:///hostname=-box", "hostname"),
            ("slirp:///hostname=a..b", "hostname"),
            ("slirp:///hostname=b_x", "hostname"),
        ] {
            let e = cfg(text).unwrap_err();
            assert!(e.contains(word), "{text}: {e}");
        }
    }
}
