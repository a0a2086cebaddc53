//! Network configuration of a namespace: addresses, gateways, DHCP, SLAAC, hostname, DNS,
//! MTU, MAC. Written as flags (`filo ns --ip …`) or as one string
//! (`ip=10.0.0.5/24,gw=10.0.0.1,dhcp`): filo's one iothconf dialect, parsed by
//! [`filo_vnl::iothconf`] for `filo ns`, named stacks and user-space stacks alike.

pub use filo_vnl::iothconf::{ConfError, IfAddr, IothConf as NetConf};

use crate::NsError;

impl From<ConfError> for NsError {
    fn from(e: ConfError) -> NsError {
        NsError::Conf(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_conf_string() {
        let c: NetConf =
            "ip=10.0.0.5/24,gw=10.0.0.1,dns=9.9.9.9,ip=fd00::5/64@vde1,dhcp,slaac,hostname=h,mtu=1400"
                .parse()
                .unwrap();
        assert_eq!(c.addrs.len(), 2);
        assert_eq!(c.addrs[0].prefix, 24);
        assert_eq!(c.addrs[1].iface, Some(1));
        assert_eq!(c.addrs[1].prefix, 64);
        assert!(c.dhcp && c.slaac);
        assert_eq!(c.hostname.as_deref(), Some("h"));
        assert_eq!(c.mtu, Some(1400));
        assert_eq!(
            c.gateways,
            vec!["10.0.0.1".parse::<std::net::IpAddr>().unwrap()]
        );
    }

    #[test]
    fn rejects_bad_items() {
        for bad in [
            "ip=10.0.0.300/24",
            "ip=10.0.0.1/33",
            "gw=x",
            "foo",
            "mtu=5",
            "ip=1.2.3.4/24@",
            // One dialect: a prefix length is required, as in the user-space stacks.
            "ip=10.1.2.3",
        ] {
            assert!(bad.parse::<NetConf>().is_err(), "{bad} accepted");
        }
        let e = NsError::from("ip=10.1.2.3".parse::<NetConf>().unwrap_err());
        assert!(e.to_string().contains("prefix length is missing"), "{e}");
    }
}
