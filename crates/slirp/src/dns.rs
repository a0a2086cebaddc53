//! The host's resolvers, to which the DNS forwarder relays: the `nameserver` lines of
//! `/etc/resolv.conf` (or of the file `FILO_SLIRP_RESOLV_CONF` names, for tests).

use std::net::IpAddr;

/// Environment variable naming another resolv.conf.
pub const RESOLV_CONF_ENV: &str = "FILO_SLIRP_RESOLV_CONF";

/// The nameservers of a resolv.conf text, in order.
pub fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver"))
                .then(|| w.next())
                .flatten()
                .and_then(|a| a.split('%').next())
                .and_then(|a| a.parse().ok())
        })
        .collect()
}

/// The host's resolvers now (none when the file is missing: DNS queries then go unanswered).
pub fn host_resolvers() -> Vec<IpAddr> {
    let path = std::env::var_os(RESOLV_CONF_ENV)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/etc/resolv.conf".into());
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_resolv_conf(&text),
        Err(e) => {
            tracing::warn!(
                "slirp: no DNS forwarding: cannot read {}: {e}",
                path.display()
            );
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_in_order() {
        let t = "# x\nsearch a.b\nnameserver 10.1.1.1\nnameserver fe80::1%eth0\nnameserver bad\noptions ndots:1\n";
        assert_eq!(
            parse_resolv_conf(t),
            vec![
                "10.1.1.1".parse::<IpAddr>().unwrap(),
                "fe80::1".parse().unwrap()
            ]
        );
    }
}
