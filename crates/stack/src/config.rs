//! Interface configuration strings in iothconf's terms:
//! `eth,ip=10.0.0.1/24,gw=10.0.0.254,dns=10.0.0.254,mac=02:00:00:00:00:01`, `dhcp`, `slaac`,
//! `auto`. The parser is filo's one dialect in [`filo_vnl::iothconf`]; this module adds what
//! is the stack's own: per-interface checks and names turned into MAC addresses.

use crate::wire::Mac;

pub use filo_vnl::iothconf::{ConfError as ConfigError, IfAddr, ACCEPTED, HELP};

/// What a configuration string asks of one interface: filo's one iothconf dialect
/// ([`filo_vnl::iothconf`]), shared with `filo ns` and named stacks.
pub type IfaceConfig = filo_vnl::iothconf::IothConf;

/// Parses the configuration of interface `index` (`vde{index}`): an address may name that
/// interface (`ip=10.0.0.1/24@vde0`) but no other.
pub fn parse_for(text: &str, index: usize) -> Result<IfaceConfig, ConfigError> {
    for_interface(IfaceConfig::parse(text)?, index)
}

/// Checks that configuration `c` names no interface but `vde{index}`.
pub fn for_interface(c: IfaceConfig, index: usize) -> Result<IfaceConfig, ConfigError> {
    if let Some(a) = c
        .addrs
        .iter()
        .find(|a| a.iface.is_some_and(|i| usize::from(i) != index))
    {
        return Err(ConfigError {
            item: format!("ip={a}"),
            reason: format!("this configuration is for interface vde{index}"),
            expected: format!("ip=ADDR/LEN or ip=ADDR/LEN@vde{index}"),
        });
    }
    Ok(c)
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
    fn names_give_stable_local_unicast_macs() {
        let a = mac_from_name("stack-a/0");
        assert_eq!(a, mac_from_name("stack-a/0"));
        assert_ne!(a, mac_from_name("stack-b/0"));
        assert_eq!(a[0] & 3, 2, "locally administered, unicast");
    }

    #[test]
    fn an_interface_configuration_names_only_its_interface() {
        assert!(parse_for("ip=10.0.0.1/24@vde1", 1).is_ok());
        let e = parse_for("ip=10.0.0.1/24@vde1", 0).unwrap_err();
        assert!(e.reason.contains("vde0"), "{e}");
        assert!(parse_for("ip=10.0.0.1/24", 3).is_ok());
    }
}
