//! Network configuration of a namespace: addresses, gateways, DHCP, SLAAC, hostname, DNS.
//! Written as flags (`filo ns --ip …`) or as one string (`ip=10.0.0.5/24,gw=10.0.0.1,dhcp`),
//! in the spirit of libioth's iothconf.

use std::net::IpAddr;
use std::str::FromStr;

use crate::NsError;

/// One address; on the first interface unless `iface` says which (`10.0.0.5/24@vde1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfAddr {
    pub ip: IpAddr,
    pub prefix: u8,
    pub iface: Option<String>,
}

impl FromStr for IfAddr {
    type Err = NsError;
    fn from_str(s: &str) -> Result<IfAddr, NsError> {
        let bad = |why: &str| NsError::Conf(format!("bad address {s:?}: {why}"));
        let (addr, iface) = match s.split_once('@') {
            Some((a, i)) if !i.is_empty() => (a, Some(i.to_string())),
            Some(_) => return Err(bad("empty interface name after '@'")),
            None => (s, None),
        };
        let (ip, prefix) = match addr.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (addr, None),
        };
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| bad("expected an IPv4 or IPv6 address"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| bad(&format!("prefix length must be 0..={max}")))?,
            None if ip.is_ipv4() => 24,
            None => 64,
        };
        Ok(IfAddr { ip, prefix, iface })
    }
}

/// How to configure a namespace's network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetConf {
    pub addrs: Vec<IfAddr>,
    pub gateways: Vec<IpAddr>,
    pub dhcp: bool,
    pub slaac: bool,
    pub hostname: Option<String>,
    pub dns: Vec<IpAddr>,
    pub mtu: Option<u32>,
}

impl NetConf {
    /// Checks values that the kernel would reject later with a less clear message.
    pub fn validate(&self) -> Result<(), NsError> {
        if let Some(h) = &self.hostname {
            if h.is_empty() || h.len() > 64 || h.contains(['\0', '/']) {
                return Err(NsError::Conf(format!(
                    "bad hostname {h:?}: 1 to 64 characters without '/'"
                )));
            }
        }
        if let Some(m) = self.mtu {
            if !(68..=9216).contains(&m) {
                return Err(NsError::Conf(format!("bad MTU {m}: expected 68..=9216")));
            }
        }
        Ok(())
    }
}

impl FromStr for NetConf {
    type Err = NsError;
    /// `ip=ADDR/LEN[@IF]`, `gw=ADDR`, `dns=ADDR`, `hostname=NAME`, `mtu=N`, `dhcp`, `slaac`,
    /// separated by commas; keys may repeat.
    fn from_str(s: &str) -> Result<NetConf, NsError> {
        let mut c = NetConf::default();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (k, v) = item.split_once('=').unwrap_or((item, ""));
            let ip = |v: &str| {
                v.parse::<IpAddr>()
                    .map_err(|_| NsError::Conf(format!("bad address in {item:?}")))
            };
            match k {
                "ip" | "addr" => c.addrs.push(v.parse()?),
                "gw" => c.gateways.push(ip(v)?),
                "dns" => c.dns.push(ip(v)?),
                "hostname" | "fqdn" => c.hostname = Some(v.to_string()),
                "mtu" => {
                    c.mtu = Some(
                        v.parse()
                            .map_err(|_| NsError::Conf(format!("bad MTU in {item:?}")))?,
                    )
                }
                "dhcp" | "dhcp4" => c.dhcp = true,
                "slaac" | "auto6" => c.slaac = true,
                _ => {
                    return Err(NsError::Conf(format!(
                        "unknown configuration item {item:?} (known: ip=, gw=, dns=, hostname=, mtu=, dhcp, slaac)"
                    )))
                }
            }
        }
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_conf_string() {
        let c: NetConf =
            "ip=10.0.0.5/24,gw=10.0.0.1,dns=9.9.9.9,ip=fd00::5@vde1,dhcp,slaac,hostname=h,mtu=1400"
                .parse()
                .unwrap();
        assert_eq!(c.addrs.len(), 2);
        assert_eq!(c.addrs[0].prefix, 24);
        assert_eq!(c.addrs[1].iface.as_deref(), Some("vde1"));
        assert_eq!(c.addrs[1].prefix, 128.min(c.addrs[1].prefix));
        assert!(c.dhcp && c.slaac);
        assert_eq!(c.hostname.as_deref(), Some("h"));
        assert_eq!(c.mtu, Some(1400));
        assert_eq!(c.gateways, vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn rejects_bad_items() {
        for bad in [
            "ip=10.0.0.300/24",
            "ip=10.0.0.1/33",
            "gw=x",
            "foo",
            "mtu=5",
            "ip=1.2.3.4@",
        ] {
            assert!(bad.parse::<NetConf>().is_err(), "{bad} accepted");
        }
        assert_eq!("10.1.2.3".parse::<IfAddr>().unwrap().prefix, 24);
        assert_eq!("fd00::1".parse::<IfAddr>().unwrap().prefix, 64);
    }
}
