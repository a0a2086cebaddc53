//! The routing table: prefixes with an interface and an optional gateway, looked up by
//! longest prefix. A linear scan: router tables of virtual networks have tens of routes.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::core::IfId;

/// An address prefix, `10.1.0.0/24` or `fd01::/64`; the host bits are cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

impl Prefix {
    /// None when `len` is longer than the address.
    pub fn new(addr: IpAddr, len: u8) -> Option<Prefix> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (len <= max).then(|| Prefix {
            addr: mask(addr, len),
            len,
        })
    }

    /// The default route of `addr`'s family.
    pub fn default_for(addr: IpAddr) -> Prefix {
        Prefix {
            addr: mask(addr, 0),
            len: 0,
        }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn len(&self) -> u8 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn contains(&self, a: IpAddr) -> bool {
        a.is_ipv4() == self.addr.is_ipv4() && mask(a, self.len) == self.addr
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Why a prefix did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a prefix (expected ADDR/LEN, e.g. 10.2.0.0/16 or fd02::/64, or default)")]
pub struct PrefixError(pub String);

impl FromStr for Prefix {
    type Err = PrefixError;
    fn from_str(s: &str) -> Result<Prefix, PrefixError> {
        let err = || PrefixError(s.to_string());
        let (a, l) = s.split_once('/').ok_or_else(err)?;
        let addr: IpAddr = a.parse().map_err(|_| err())?;
        let len: u8 = l.parse().map_err(|_| err())?;
        Prefix::new(addr, len).ok_or_else(err)
    }
}

/// How a route came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The subnet of an interface address.
    Connected,
    /// Configured (`--route`, `gw=`).
    Static,
}

/// One route: packets to `prefix` leave on `iface`, to `via` or (without one) to their
/// destination on the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub prefix: Prefix,
    pub via: Option<IpAddr>,
    pub iface: IfId,
    pub origin: Origin,
}

/// The routes, longest prefix first.
#[derive(Debug, Clone, Default)]
pub struct Table {
    routes: Vec<Route>,
}

impl Table {
    /// Adds `r`, replacing a route to the same prefix.
    pub fn add(&mut self, r: Route) {
        self.routes.retain(|x| x.prefix != r.prefix);
        let at = self
            .routes
            .iter()
            .position(|x| x.prefix.len < r.prefix.len)
            .unwrap_or(self.routes.len());
        self.routes.insert(at, r);
    }

    /// Removes the route to `prefix`; false if there was none.
    pub fn remove(&mut self, prefix: Prefix) -> bool {
        let n = self.routes.len();
        self.routes.retain(|x| x.prefix != prefix);
        n != self.routes.len()
    }

    /// The longest-prefix match for `dst`.
    pub fn lookup(&self, dst: IpAddr) -> Option<&Route> {
        self.routes.iter().find(|r| r.prefix.contains(dst))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins_whatever_the_insertion_order() {
        let mut t = Table::default();
        for (s, i) in [("0.0.0.0/0", 0), ("10.1.2.0/24", 2), ("10.1.0.0/16", 1)] {
            t.add(Route {
                prefix: p(s),
                via: None,
                iface: i,
                origin: Origin::Static,
            });
        }
        let at = |a: &str| t.lookup(a.parse().unwrap()).map(|r| r.iface);
        assert_eq!(at("10.1.2.9"), Some(2));
        assert_eq!(at("10.1.3.9"), Some(1));
        assert_eq!(at("8.8.8.8"), Some(0));
        assert_eq!(at("fd00::1"), None, "no IPv6 route");
        assert!(t.remove(p("10.1.2.0/24")));
        assert_eq!(
            t.lookup("10.1.2.9".parse().unwrap()).map(|r| r.iface),
            Some(1)
        );
    }

    #[test]
    fn prefixes_parse_and_clear_host_bits() {
        assert_eq!(p("10.1.2.3/16").to_string(), "10.1.0.0/16");
        assert_eq!(p("fd01::5/64").to_string(), "fd01::/64");
        assert!("10.0.0.0/33".parse::<Prefix>().is_err());
        assert!("10.0.0.0".parse::<Prefix>().is_err());
        assert!(p("::/0").contains("fd00::1".parse().unwrap()));
        assert!(!p("0.0.0.0/0").contains("fd00::1".parse().unwrap()));
    }
}
