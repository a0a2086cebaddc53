//! The network options every configuring command shares (`filo ns`, `filo stack serve`, the
//! user-space `filo stack` commands): one set of flags and one iothconf dialect
//! ([`filo_vnl::iothconf`]), so the same words mean the same thing everywhere.

use std::net::IpAddr;

use anyhow::{bail, Result};
use clap::Args;
use filo_vnl::iothconf::{IfAddr, IothConf};

/// Parses a value through the configuration item it stands for, so a flag and the same item
/// in `--conf` are checked alike and refused with the same message.
fn via_item(key: &'static str) -> impl Fn(&str) -> Result<String, String> + Clone {
    move |v: &str| {
        IothConf::parse(&format!("{key}={v}"))
            .map(|_| v.to_string())
            .map_err(|e| e.to_string())
    }
}

fn parse_mtu(v: &str) -> Result<u32, String> {
    via_item("mtu")(v)?
        .parse()
        .map_err(|_| format!("{v:?} is not a number"))
}

/// Network configuration flags; each adds the iothconf item of the same name.
#[derive(Args, Debug, Clone, Default)]
pub struct ConfArgs {
    /// A static address, ADDR/LEN (ADDR/LEN@vdeN for another interface); repeatable.
    #[arg(long = "ip", value_name = "ADDR/LEN")]
    ip: Vec<IfAddr>,
    /// A default route via ADDR; repeatable (one per address family).
    #[arg(long, value_name = "ADDR")]
    gw: Vec<IpAddr>,
    /// A DNS server; repeatable.
    #[arg(long, value_name = "ADDR")]
    dns: Vec<IpAddr>,
    /// The host name (DHCP; in `filo ns` also the namespace's UTS name).
    #[arg(long, value_name = "NAME", value_parser = via_item("hostname"))]
    hostname: Option<String>,
    /// The interfaces' MTU, 1280..65000.
    #[arg(long, value_name = "BYTES", value_parser = parse_mtu)]
    mtu: Option<u32>,
    /// DHCPv4 on the first interface (address, router, DNS).
    #[arg(long)]
    dhcp: bool,
    /// IPv6 addresses from router advertisements (SLAAC); waits for one.
    #[arg(long)]
    slaac: bool,
    /// The configuration as one iothconf string: ip=10.0.0.5/24,gw=10.0.0.1,dhcp,... (see
    /// --help for every item).
    #[arg(long, value_name = "CONF", value_parser = IothConf::parse)]
    conf: Option<IothConf>,
}

impl ConfArgs {
    /// The configuration: `--conf` with every flag added.
    pub fn to_conf(&self) -> IothConf {
        let mut c = self.conf.clone().unwrap_or_default();
        c.merge(IothConf {
            addrs: self.ip.clone(),
            gateways: self.gw.clone(),
            dns: self.dns.clone(),
            dhcp: self.dhcp,
            slaac: self.slaac,
            hostname: self.hostname.clone(),
            mtu: self.mtu,
            ..IothConf::default()
        });
        c
    }

    /// The configuration, or `auto` (DHCP and SLAAC) when nothing gives the interface an
    /// address: no `--conf`, `--ip`, `--dhcp` or `--slaac`.
    pub fn to_conf_or_auto(&self) -> IothConf {
        let mut c = self.to_conf();
        if self.conf.is_none() && self.ip.is_empty() && !self.dhcp && !self.slaac {
            c.dhcp = true;
            c.slaac = true;
        }
        c
    }
}

/// Networks given either way: `--vnl VNL` (repeatable, every command) or, where a command
/// has no other positional arguments, positionally as vdens does. A positional word that
/// is no VNL is most likely a command that lost its `--`: say so.
pub fn vnls(flagged: &[String], positional: &[String], command: &str) -> Result<Vec<String>> {
    for v in positional {
        if !v.contains("://") && !v.is_empty() && !std::path::Path::new(v).exists() {
            bail!(
                "{v:?} is not a VNL (such as vde:///tmp/sw) nor an existing switch directory; \
                 if it is the command to run, put `--` before it: {command} VNL... -- {v} ..."
            );
        }
    }
    Ok(flagged.iter().chain(positional).cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_word_that_is_no_vnl_asks_for_the_double_dash() {
        let e = vnls(&[], &["vde:///tmp/sw".into(), "ip".into()], "filo ns").unwrap_err();
        let e = e.to_string();
        assert!(
            e.contains("\"ip\" is not a VNL") && e.contains("-- ip"),
            "{e}"
        );
        let v = vnls(
            &["ptp:///tmp/x".into()],
            &["vde:///tmp/sw".into()],
            "filo ns",
        )
        .unwrap();
        assert_eq!(v, ["ptp:///tmp/x", "vde:///tmp/sw"]);
        assert!(vnls(&[], &["/tmp".into()], "filo ns").is_ok());
    }

    #[test]
    fn flags_and_strings_speak_the_same_items() {
        assert!(parse_mtu("9000").is_ok());
        let e = parse_mtu("100").unwrap_err();
        assert!(e.contains("1280 <= N <= 65000"), "{e}");
        assert!(via_item("hostname")("a b").is_err());
    }
}
