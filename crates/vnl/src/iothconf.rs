//! Interface configuration strings in libioth's iothconf terms, the one dialect of every filo
//! command that configures a network: `filo ns`, `filo stack serve` (kernel stacks) and the
//! user-space `filo stack` commands, and the libraries behind them.
//!
//! `eth,ip=10.0.0.1/24,gw=10.0.0.254,dns=10.0.0.254,mac=02:00:00:00:00:01`, `dhcp`, `slaac`,
//! `auto`: items are comma-separated flags or `key=value` pairs; `ip=`, `gw=` and `dns=` may
//! repeat. A bad item yields a [`ConfError`] that names it, says what is wrong and gives the
//! accepted form. Parsing checks everything that can be checked without a network; what a
//! particular stack cannot do (a second interface for a one-interface stack) is for its
//! caller to refuse.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// The accepted items, for error messages and `--help`.
pub const ACCEPTED: &str = "eth, ip=ADDR/LEN[@IFACE], gw=ADDR, dns=ADDR, dhcp (dhcp4, dhcpv4), \
slaac (rd, rd6), auto, auto4, auto6, mac=XX:XX:XX:XX:XX:XX (macaddr=), fqdn=NAME, \
hostname=NAME, mtu=N, domain=NAME";

/// The MTU range every filo interface accepts (IPv6 needs 1280; 65000 leaves room for
/// headers in a 64 KiB super-frame).
pub const MTU_RANGE: std::ops::RangeInclusive<u32> = 1280..=65000;

/// Help text listing every item, shared by the commands' `--help`.
pub const HELP: &str = "\
Interface configuration (--conf, iothconf's terms): comma-separated items.
  eth                 bring the link up (implied)
  ip=ADDR/LEN         a static IPv4 or IPv6 address (repeatable; ADDR/LEN@vdeN picks the
                      interface where there are several)
  gw=ADDR             a default route via ADDR (IPv4 or IPv6)
  dns=ADDR            a DNS server (repeatable)
  domain=NAME         the DNS search domain
  dhcp                DHCPv4 (also: dhcp4, dhcpv4)
  slaac               IPv6 addresses from router advertisements (also: rd, rd6)
  auto                dhcp and slaac (auto4: dhcp; auto6: slaac)
  mac=XX:XX:XX:XX:XX:XX   the MAC of the (first) interface
  fqdn=NAME           a name: DHCP host name, and the MAC and SLAAC address derive from it
  hostname=NAME       the host name (DHCP; the namespace's UTS name for filo ns)
  mtu=N               IP MTU, 1280..65000
The flags --ip, --gw, --dns, --hostname, --mtu, --dhcp and --slaac add the same items.
Example: --conf eth,ip=10.0.0.2/24,gw=10.0.0.1,dns=10.0.0.1";

/// A configuration item that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfError {
    /// The item as written.
    pub item: String,
    /// What is wrong with it.
    pub reason: String,
    /// The form it should have.
    pub expected: String,
}

impl fmt::Display for ConfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bad configuration item `{}`: {}; expected {}",
            self.item, self.reason, self.expected
        )
    }
}

impl std::error::Error for ConfError {}

fn err(item: &str, reason: impl Into<String>, expected: &str) -> ConfError {
    ConfError {
        item: item.to_string(),
        reason: reason.into(),
        expected: expected.to_string(),
    }
}

/// One static address; on the first interface unless `iface` names one (`10.0.0.5/24@vde1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IfAddr {
    pub ip: IpAddr,
    pub prefix: u8,
    /// The interface's index in `vdeN` terms, when given.
    pub iface: Option<u16>,
}

impl fmt::Display for IfAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix)?;
        if let Some(i) = self.iface {
            write!(f, "@vde{i}")?;
        }
        Ok(())
    }
}

const IP_FORM: &str = "ip=ADDR/LEN[@vdeN], e.g. ip=10.0.0.1/24 or ip=fd00::1/64";

impl IfAddr {
    fn parse_item(item: &str, v: &str) -> Result<IfAddr, ConfError> {
        let (addr, iface) = match v.split_once('@') {
            Some((a, i)) => {
                let n = i
                    .strip_prefix("vde")
                    .and_then(|n| n.parse::<u16>().ok())
                    .ok_or_else(|| {
                        err(
                            item,
                            format!("{i:?} is not an interface name vdeN"),
                            IP_FORM,
                        )
                    })?;
                (a, Some(n))
            }
            None => (v, None),
        };
        let (a, p) = addr
            .split_once('/')
            .ok_or_else(|| err(item, "the prefix length is missing", IP_FORM))?;
        let ip: IpAddr = a
            .parse()
            .map_err(|_| err(item, format!("{a:?} is not an IP address"), IP_FORM))?;
        let prefix: u8 = p
            .parse()
            .map_err(|_| err(item, format!("{p:?} is not a prefix length"), IP_FORM))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(err(
                item,
                format!("the prefix length is too long (at most {max})"),
                IP_FORM,
            ));
        }
        if ip.is_unspecified() || ip.is_multicast() {
            return Err(err(item, "not a unicast address", IP_FORM));
        }
        Ok(IfAddr { ip, prefix, iface })
    }
}

impl FromStr for IfAddr {
    type Err = ConfError;
    /// `ADDR/LEN[@vdeN]`, as given to `--ip`.
    fn from_str(s: &str) -> Result<IfAddr, ConfError> {
        IfAddr::parse_item(&format!("ip={s}"), s)
    }
}

/// What a configuration string asks of a network (one interface, or the first of several).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IothConf {
    pub addrs: Vec<IfAddr>,
    pub gateways: Vec<IpAddr>,
    pub dns: Vec<IpAddr>,
    pub dhcp: bool,
    pub slaac: bool,
    pub mac: Option<[u8; 6]>,
    pub fqdn: Option<String>,
    pub hostname: Option<String>,
    pub mtu: Option<u32>,
    pub domain: Option<String>,
}

/// Parses `aa:bb:cc:dd:ee:ff` (or with `-`).
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split([':', '-']);
    for b in mac.iter_mut() {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    match parts.next() {
        Some(_) => None,
        None => Some(mac),
    }
}

fn ip_value(item: &str, v: &str, expected: &str) -> Result<IpAddr, ConfError> {
    v.parse()
        .map_err(|_| err(item, format!("{v:?} is not an IP address"), expected))
}

fn check_name(item: &str, v: &str, max: usize, expected: &str) -> Result<String, ConfError> {
    if v.len() > max || v.contains(|c: char| c.is_whitespace() || c == '/' || c == '\0') {
        return Err(err(
            item,
            format!("not a name (at most {max} characters, no spaces or '/')"),
            expected,
        ));
    }
    Ok(v.to_string())
}

impl IothConf {
    /// Parses a configuration string; the empty string configures a link with no addresses.
    pub fn parse(text: &str) -> Result<IothConf, ConfError> {
        let mut c = IothConf::default();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            c.add_item(item)?;
        }
        Ok(c)
    }

    /// Adds one item (`ip=10.0.0.1/24`, `dhcp`, …) to this configuration.
    pub fn add_item(&mut self, item: &str) -> Result<(), ConfError> {
        let c = self;
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
            "ip" | "addr" => c.addrs.push(IfAddr::parse_item(item, need(IP_FORM)?)?),
            "gw" => {
                const E: &str = "gw=ADDR, e.g. gw=10.0.0.254 or gw=fd00::fe";
                c.gateways.push(ip_value(item, need(E)?, E)?);
            }
            "dns" => {
                const E: &str = "dns=ADDR, e.g. dns=10.0.0.254";
                c.dns.push(ip_value(item, need(E)?, E)?);
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
                let mac = parse_mac(v)
                    .ok_or_else(|| err(item, format!("{v:?} is not a MAC address"), E))?;
                if mac[0] & 1 == 1 {
                    return Err(err(item, "a multicast MAC cannot be an interface's", E));
                }
                if mac == [0; 6] {
                    return Err(err(item, "the all-zero MAC cannot be an interface's", E));
                }
                c.mac = Some(mac);
            }
            "fqdn" => {
                const E: &str = "fqdn=NAME, e.g. fqdn=node1.example.org";
                c.fqdn = Some(check_name(item, need(E)?, 253, E)?);
            }
            "hostname" => {
                const E: &str = "hostname=NAME, 1 to 64 characters";
                c.hostname = Some(check_name(item, need(E)?, 64, E)?);
            }
            "domain" => {
                const E: &str = "domain=NAME, e.g. domain=example.org";
                c.domain = Some(check_name(item, need(E)?, 253, E)?);
            }
            "mtu" => {
                const E: &str = "mtu=N with 1280 <= N <= 65000";
                let v = need(E)?;
                let m: u32 = v
                    .parse()
                    .map_err(|_| err(item, format!("{v:?} is not a number"), E))?;
                if !MTU_RANGE.contains(&m) {
                    return Err(err(item, "out of range", E));
                }
                c.mtu = Some(m);
            }
            "dhcp6" | "dhcpv6" => {
                return Err(err(
                    item,
                    "DHCPv6 is not supported yet",
                    "slaac for IPv6 autoconfiguration",
                ))
            }
            _ => return Err(err(item, "unknown item", ACCEPTED)),
        }
        Ok(())
    }

    /// Adds everything `other` configures (flags given beside a `--conf` string).
    pub fn merge(&mut self, other: IothConf) {
        self.addrs.extend(other.addrs);
        self.gateways.extend(other.gateways);
        self.dns.extend(other.dns);
        self.dhcp |= other.dhcp;
        self.slaac |= other.slaac;
        self.mac = other.mac.or(self.mac);
        self.fqdn = other.fqdn.or(self.fqdn.take());
        self.hostname = other.hostname.or(self.hostname.take());
        self.mtu = other.mtu.or(self.mtu);
        self.domain = other.domain.or(self.domain.take());
    }

    /// Checks a configuration built in code (not parsed) as the parser would: names, MTU,
    /// addresses.
    pub fn validate(&self) -> Result<(), ConfError> {
        let mut check = IothConf::default();
        for a in &self.addrs {
            check.add_item(&format!("ip={a}"))?;
        }
        if let Some(h) = &self.hostname {
            check.add_item(&format!("hostname={h}"))?;
        }
        if let Some(f) = &self.fqdn {
            check.add_item(&format!("fqdn={f}"))?;
        }
        if let Some(d) = &self.domain {
            check.add_item(&format!("domain={d}"))?;
        }
        if let Some(m) = self.mtu {
            check.add_item(&format!("mtu={m}"))?;
        }
        Ok(())
    }

    /// True when nothing at all is configured (not even `eth`-only items that change state).
    pub fn is_empty(&self) -> bool {
        *self == IothConf::default()
    }

    /// Checks that every address names an interface among the first `n` (`vde0..vde{n-1}`).
    pub fn check_interfaces(&self, n: usize) -> Result<(), ConfError> {
        for a in &self.addrs {
            match a.iface {
                Some(i) if usize::from(i) >= n => {
                    return Err(err(
                        &format!("ip={a}"),
                        match n {
                            0 => format!("no interface vde{i}: there is none (no VNL)"),
                            1 => format!("no interface vde{i}: there is only one, vde0"),
                            _ => format!("no interface vde{i}: there are vde0..vde{}", n - 1),
                        },
                        IP_FORM,
                    ))
                }
                None if n == 0 => {
                    return Err(err(
                        &format!("ip={a}"),
                        "there is no interface (no VNL)",
                        IP_FORM,
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The same configuration written as one string (`ip=…,gw=…,dhcp`), which parses back
    /// to an equal value.
    pub fn to_conf_string(&self) -> String {
        let mut items: Vec<String> = Vec::new();
        items.extend(self.addrs.iter().map(|a| format!("ip={a}")));
        items.extend(self.gateways.iter().map(|g| format!("gw={g}")));
        items.extend(self.dns.iter().map(|d| format!("dns={d}")));
        if self.dhcp {
            items.push("dhcp".into());
        }
        if self.slaac {
            items.push("slaac".into());
        }
        if let Some(m) = self.mac {
            let hex: Vec<String> = m.iter().map(|b| format!("{b:02x}")).collect();
            items.push(format!("mac={}", hex.join(":")));
        }
        if let Some(f) = &self.fqdn {
            items.push(format!("fqdn={f}"));
        }
        if let Some(h) = &self.hostname {
            items.push(format!("hostname={h}"));
        }
        if let Some(m) = self.mtu {
            items.push(format!("mtu={m}"));
        }
        if let Some(d) = &self.domain {
            items.push(format!("domain={d}"));
        }
        items.join(",")
    }
}

impl FromStr for IothConf {
    type Err = ConfError;
    fn from_str(s: &str) -> Result<IothConf, ConfError> {
        IothConf::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_configuration_parses() {
        let c = IothConf::parse(
            "eth,ip=10.0.0.1/24,ip=fd00::1/64@vde1,gw=10.0.0.254,dns=10.0.0.254,mac=02:00:00:00:00:01,mtu=9000,hostname=h,domain=example.org",
        )
        .unwrap();
        assert_eq!(c.addrs.len(), 2);
        assert_eq!(c.addrs[0].to_string(), "10.0.0.1/24");
        assert_eq!(c.addrs[1].iface, Some(1));
        assert_eq!(c.gateways, vec!["10.0.0.254".parse::<IpAddr>().unwrap()]);
        assert_eq!(c.mac, Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(c.mtu, Some(9000));
        assert_eq!(c.hostname.as_deref(), Some("h"));
        assert_eq!(c.domain.as_deref(), Some("example.org"));
        assert!(!c.dhcp && !c.slaac);
        assert_eq!(IothConf::parse(&c.to_conf_string()).unwrap(), c);
    }

    #[test]
    fn auto_means_dhcp_and_slaac() {
        let c = IothConf::parse("auto,fqdn=a.example").unwrap();
        assert!(c.dhcp && c.slaac);
        assert_eq!(c.fqdn.as_deref(), Some("a.example"));
        assert_eq!(IothConf::parse("").unwrap(), IothConf::default());
        assert!(IothConf::parse("").unwrap().is_empty());
    }

    #[test]
    fn bad_items_are_named_with_the_accepted_form() {
        let e = IothConf::parse("eth,ip=10.0.0.1").unwrap_err();
        assert_eq!(e.item, "ip=10.0.0.1");
        assert!(e.reason.contains("prefix length is missing"), "{e}");
        assert!(e.to_string().contains("ip=ADDR/LEN"), "{e}");
        let e = IothConf::parse("ip=10.0.0.1/33").unwrap_err();
        assert!(e.reason.contains("too long"));
        let e = IothConf::parse("ip=10.0.0.1/24@eth0").unwrap_err();
        assert!(e.reason.contains("vdeN"), "{e}");
        let e = IothConf::parse("mac=01:00:00:00:00:01").unwrap_err();
        assert!(e.reason.contains("multicast"));
        let e = IothConf::parse("gw=router").unwrap_err();
        assert!(e.to_string().contains("gw=ADDR"));
        let e = IothConf::parse("bogus").unwrap_err();
        assert!(e.to_string().contains("unknown item") && e.expected.contains("dhcp"));
        let e = IothConf::parse("dhcp=yes").unwrap_err();
        assert!(e.reason.contains("no value"));
        let e = IothConf::parse("mtu=100").unwrap_err();
        assert!(e.expected.contains("1280 <= N <= 65000"), "{e}");
        assert!(IothConf::parse("mtu=65001").is_err());
        assert!(IothConf::parse("dhcp6").is_err());
        assert!(IothConf::parse("hostname=a/b").is_err());
        assert!(IothConf::parse("ip=0.0.0.0/0").is_err());
        let built = IothConf {
            mtu: Some(5),
            ..IothConf::default()
        };
        assert!(built.validate().unwrap_err().item.contains("mtu=5"));
        let built = IothConf {
            hostname: Some(String::new()),
            ..IothConf::default()
        };
        assert!(built.validate().is_err());
    }

    #[test]
    fn addresses_must_name_existing_interfaces() {
        let c = IothConf::parse("ip=10.0.0.1/24,ip=10.0.1.1/24@vde1").unwrap();
        assert!(c.check_interfaces(2).is_ok());
        let e = c.check_interfaces(1).unwrap_err();
        assert!(
            e.reason.contains("no interface vde1: there is only one"),
            "{e}"
        );
        let e = c.check_interfaces(0).unwrap_err();
        assert!(e.reason.contains("no interface"), "{e}");
    }

    #[test]
    fn merge_adds_flags_to_a_string() {
        let mut c = IothConf::parse("ip=10.0.0.1/24,mtu=1400").unwrap();
        c.merge(IothConf::parse("dhcp,gw=10.0.0.254,mtu=9000").unwrap());
        assert!(c.dhcp);
        assert_eq!(c.mtu, Some(9000));
        assert_eq!(c.addrs.len(), 1);
        assert_eq!(c.gateways.len(), 1);
    }
}
