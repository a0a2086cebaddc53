//! Interface configuration strings in iothconf's terms:
//! `eth,ip=10.0.0.1/24,gw=10.0.0.254,dns=10.0.0.254,mac=02:00:00:00:00:01`, `dhcp`, `slaac`,
//! `auto`. Items are comma-separated flags or `key=value` pairs; `ip=`, `gw=` and `dns=` may
//! repeat. A bad item yields a [`ConfigError`] that names it and the accepted form.

use std::net::IpAddr;

use crate::net::Cidr;
use crate::wire::{self, Mac};

/// The accepted items, for error messages and `--help`.
pub const ACCEPTED: &str = "eth, ip=ADDR/LEN, gw=ADDR, dns=ADDR, dhcp (dhcp4, dhcpv4), \
slaac (rd, rd6), auto, auto4, auto6, mac=XX:XX:XX:XX:XX:XX (macaddr=), fqdn=NAME, mtu=N, \
domain=NAME";

/// A configuration item that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad configuration item `{item}`: {reason}; expected {expected}")]
pub struct ConfigError {
    pub item: String,
    pub reason: String,
    pub expected: String,
}

/// What a configuration string asks of one interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IfaceConfig {
    pub addrs: Vec<Cidr>,
    pub gateways: Vec<IpAddr>,
    pub dns: Vec<IpAddr>,
    pub dhcp: bool,
    pub slaac: bool,
    pub mac: Option<Mac>,
    pub fqdn: Option<String>,
    pub mtu: Option<usize>,
    pub domain: Option<String>,
}

fn err(item: &str, reason: impl Into<String>, expected: &str) -> ConfigError {
    ConfigError {
        item: item.to_string(),
        reason: reason.into(),
        expected: expected.to_string(),
    }
}

impl IfaceConfig {
    /// Parses a configuration string; the empty string is a link with no addresses.
    pub fn parse(text: &str) -> Result<IfaceConfig, ConfigError> {
        let mut c = IfaceConfig::default();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (item, None),
            };
            let need = |expected: &str| {
                value
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| err(item, "a value is missing", expected))
            };
            let flag = |expected: &str| match value {
                None => Ok(()),
                Some(_) => Err(err(item, "this item takes no value", expected)),
            };
            match key {
                "eth" => flag("eth")?,
                "ip" => {
                    const E: &str = "ip=ADDR/LEN, e.g. ip=10.0.0.1/24 or ip=fd00::1/64";
                    let v = need(E)?;
                    let (a, p) = v
                        .split_once('/')
                        .ok_or_else(|| err(item, "the prefix length is missing", E))?;
                    let addr: IpAddr = a
                        .parse()
                        .map_err(|_| err(item, format!("{a:?} is not an IP address"), E))?;
                    let prefix: u8 = p
                        .parse()
                        .map_err(|_| err(item, format!("{p:?} is not a prefix length"), E))?;
                    let cidr = Cidr::new(addr, prefix)
                        .ok_or_else(|| err(item, "the prefix length is too long", E))?;
                    if addr.is_unspecified() || addr.is_multicast() {
                        return Err(err(item, "not a unicast address", E));
                    }
                    c.addrs.push(cidr);
                }
                "gw" => {
                    const E: &str = "gw=ADDR, e.g. gw=10.0.0.254 or gw=fd00::fe";
                    let v = need(E)?;
                    c.gateways.push(
                        v.parse()
                            .map_err(|_| err(item, format!("{v:?} is not an IP address"), E))?,
                    );
                }
                "dns" => {
                    const E: &str = "dns=ADDR, e.g. dns=10.0.0.254";
                    let v = need(E)?;
                    c.dns.push(
                        v.parse()
                            .map_err(|_| err(item, format!("{v:?} is not an IP address"), E))?,
                    );
                }
                "dhcp" | "dhcp4" | "dhcpv4" => {
                    flag("dhcp")?;
                    c.dhcp = true;
                }
                "slaac" | "rd" | "rd6" => {
                    flag("slaac")?;
                    c.slaac = true;
                }
                "auto" => {
                    flag("auto")?;
                    c.dhcp = true;
                    c.slaac = true;
                }
                "auto4" | "autov4" => {
                    flag("auto4")?;
                    c.dhcp = true;
                }
                "auto6" | "autov6" => {
                    flag("auto6")?;
                    c.slaac = true;
                }
                "mac" | "macaddr" => {
                    const E: &str = "mac=XX:XX:XX:XX:XX:XX, a unicast MAC address";
                    let v = need(E)?;
                    let mac = wire::parse_mac(v)
                        .ok_or_else(|| err(item, format!("{v:?} is not a MAC address"), E))?;
                    if wire::is_multicast_mac(&mac) {
                        return Err(err(item, "a multicast MAC cannot be an interface's", E));
                    }
                    c.mac = Some(mac);
                }
                "fqdn" => {
                    const E: &str = "fqdn=NAME, e.g. fqdn=node1.example.org";
                    let v = need(E)?;
                    if v.len() > 253 || v.contains(char::is_whitespace) {
                        return Err(err(item, "not a domain name", E));
                    }
                    c.fqdn = Some(v.to_string());
                }
                "domain" => {
                    c.domain = Some(need("domain=NAME")?.to_string());
                }
                "mtu" => {
                    const E: &str = "mtu=N with 1280 <= N <= 65000";
                    let v = need(E)?;
                    let m: usize = v
                        .parse()
                        .map_err(|_| err(item, format!("{v:?} is not a number"), E))?;
                    if !(1280..=65000).contains(&m) {
                        return Err(err(item, "out of range", E));
                    }
                    c.mtu = Some(m);
                }
                "dhcp6" | "dhcpv6" => {
                    return Err(err(
                        item,
                        "DHCPv6 is not supported by filo-stack",
                        "slaac for IPv6 autoconfiguration",
                    ))
                }
                _ => return Err(err(item, "unknown item", ACCEPTED)),
            }
        }
        Ok(c)
    }
}

/// A stable, locally administered unicast MAC derived from a name (FNV-1a 64 of the text).
pub fn mac_from_name(name: &str) -> Mac {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    [(b[0] & 0xfc) | 0x02, b[1], b[2], b[3], b[4], b[5]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_configuration_parses() {
        let c = IfaceConfig::parse(
            "eth,ip=10.0.0.1/24,ip=fd00::1/64,gw=10.0.0.254,dns=10.0.0.254,mac=02:00:00:00:00:01,mtu=9000",
        )
        .unwrap();
        assert_eq!(c.addrs.len(), 2);
        assert_eq!(c.addrs[0].to_string(), "10.0.0.1/24");
        assert_eq!(c.gateways, vec!["10.0.0.254".parse::<IpAddr>().unwrap()]);
        assert_eq!(c.mac, Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(c.mtu, Some(9000));
        assert!(!c.dhcp && !c.slaac);
    }

    #[test]
    fn auto_means_dhcp_and_slaac() {
        let c = IfaceConfig::parse("auto,fqdn=a.example").unwrap();
        assert!(c.dhcp && c.slaac);
        assert_eq!(c.fqdn.as_deref(), Some("a.example"));
        assert_eq!(IfaceConfig::parse("").unwrap(), IfaceConfig::default());
    }

    #[test]
    fn bad_items_are_named_with_the_accepted_form() {
        let e = IfaceConfig::parse("eth,ip=10.0.0.1").unwrap_err();
        assert_eq!(e.item, "ip=10.0.0.1");
        assert!(e.to_string().contains("ip=ADDR/LEN"), "{e}");
        let e = IfaceConfig::parse("ip=10.0.0.1/33").unwrap_err();
        assert!(e.reason.contains("too long"));
        let e = IfaceConfig::parse("mac=01:00:00:00:00:01").unwrap_err();
        assert!(e.reason.contains("multicast"));
        let e = IfaceConfig::parse("gw=router").unwrap_err();
        assert!(e.to_string().contains("gw=ADDR"));
        let e = IfaceConfig::parse("bogus").unwrap_err();
        assert!(e.to_string().contains("unknown item") && e.expected.contains("dhcp"));
        let e = IfaceConfig::parse("dhcp=yes").unwrap_err();
        assert!(e.reason.contains("no value"));
        assert!(IfaceConfig::parse("mtu=100").is_err());
        assert!(IfaceConfig::parse("dhcp6").is_err());
    }

    #[test]
    fn names_give_stable_local_unicast_macs() {
        let a = mac_from_name("stack-a/0");
        assert_eq!(a, mac_from_name("stack-a/0"));
        assert_ne!(a, mac_from_name("stack-b/0"));
        assert_eq!(a[0] & 3, 2, "locally administered, unicast");
    }
}
