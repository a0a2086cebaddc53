//! The host's resolvers, to which the DNS forwarder relays: the `nameserver` lines of
//! `/etc/resolv.conf` (or of the file `FILO_SLIRP_RESOLV_CONF` names, for tests), and the
//! relay's failover ([`Relay`]): a query a resolver does not answer in time, or answers with
//! SERVFAIL or REFUSED, goes to the next one.

use std::net::{IpAddr, SocketAddr};

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

/// How long a resolver has to answer a query before the relay asks the next one.
pub const RETRY_MS: u64 = 1500;
/// Queries remembered per flow for a resend (the oldest is forgotten).
const MAX_PENDING: usize = 16;
const RCODE_SERVFAIL: u8 = 2;
const RCODE_REFUSED: u8 = 5;

/// The resolvers to try for a query to the forwarder's `v4` or IPv6 address: those of the
/// same family first, in resolv.conf's order, starting from `preferred` (the last one that
/// answered), then the others.
pub fn resolver_order(
    resolvers: &[IpAddr],
    v4: bool,
    preferred: Option<IpAddr>,
) -> Vec<SocketAddr> {
    let mut order: Vec<IpAddr> = resolvers
        .iter()
        .filter(|r| r.is_ipv4() == v4)
        .chain(resolvers.iter().filter(|r| r.is_ipv4() != v4))
        .copied()
        .collect();
    order.dedup();
    if let Some(p) = preferred.and_then(|p| order.iter().position(|r| *r == p)) {
        order[..=p].rotate_right(1);
    }
    order.into_iter().map(|r| SocketAddr::new(r, 53)).collect()
}

/// What to do with a message a resolver sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Give it to the guest.
    Forward,
    /// A failure another resolver may not have: ask the next one ([`Relay::next`]).
    TryNext,
}

/// One guest flow's queries to the DNS forwarder: which resolver they go to and those not
/// answered yet. Sans-IO: the engine sends, receives and asks [`Relay::timed_out`].
#[derive(Debug)]
pub struct Relay {
    order: Vec<SocketAddr>,
    current: usize,
    /// (DNS id, query, sent at) of the queries not answered yet.
    pending: Vec<(u16, Vec<u8>, u64)>,
}

impl Relay {
    /// None when there is no resolver.
    pub fn new(order: Vec<SocketAddr>) -> Option<Relay> {
        (!order.is_empty()).then_some(Relay {
            order,
            current: 0,
            pending: Vec::new(),
        })
    }

    /// The resolver queries go to now.
    pub fn target(&self) -> SocketAddr {
        self.order[self.current]
    }

    /// Notes a query sent at `now` (anything too short to be one is not remembered).
    pub fn sent(&mut self, query: &[u8], now: u64) {
        let Some(id) = message_id(query) else {
            return;
        };
        self.pending.retain(|(i, _, _)| *i != id);
        if self.pending.len() >= MAX_PENDING {
            self.pending.remove(0);
        }
        self.pending.push((id, query.to_vec(), now));
    }

    /// Judges a message from the current resolver: a SERVFAIL or REFUSED answer while
    /// another resolver is left is not forwarded.
    pub fn answer(&mut self, msg: &[u8]) -> Answer {
        let Some(id) = message_id(msg) else {
            return Answer::Forward;
        };
        let rcode = msg[3] & 0x0f;
        if matches!(rcode, RCODE_SERVFAIL | RCODE_REFUSED) && self.has_next() {
            return Answer::TryNext;
        }
        self.pending.retain(|(i, _, _)| *i != id);
        Answer::Forward
    }

    /// Whether a query has waited longer than [`RETRY_MS`] and another resolver is left.
    pub fn timed_out(&self, now: u64) -> bool {
        self.has_next()
            && self
                .pending
                .iter()
                .any(|(_, _, at)| now.saturating_sub(*at) > RETRY_MS)
    }

    fn has_next(&self) -> bool {
        self.current + 1 < self.order.len()
    }

    /// Moves on to the next resolver: its address and the queries to send it again (noted
    /// as sent at `now`), or None when the last one failed too.
    pub fn next(&mut self, now: u64) -> Option<(SocketAddr, Vec<Vec<u8>>)> {
        if !self.has_next() {
            return None;
        }
        self.current += 1;
        let resend = self
            .pending
            .iter_mut()
            .map(|(_, q, at)| {
                *at = now;
                q.clone()
            })
            .collect();
        Some((self.target(), resend))
    }
}

/// A DNS message's id, when it has a whole header.
fn message_id(msg: &[u8]) -> Option<u16> {
    (msg.len() >= 12).then(|| u16::from_be_bytes([msg[0], msg[1]]))
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

    fn addrs(v: &[&str]) -> Vec<IpAddr> {
        v.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn resolvers_of_the_querys_family_come_first_and_the_last_good_one_leads() {
        let r = addrs(&["10.0.0.1", "fd00::1", "10.0.0.2", "10.0.0.3"]);
        let o = |v4, p: Option<&str>| -> Vec<String> {
            resolver_order(&r, v4, p.map(|p| p.parse().unwrap()))
                .iter()
                .map(|a| a.to_string())
                .collect()
        };
        assert_eq!(
            o(true, None),
            ["10.0.0.1:53", "10.0.0.2:53", "10.0.0.3:53", "[fd00::1]:53"]
        );
        assert_eq!(
            o(true, Some("10.0.0.3")),
            ["10.0.0.3:53", "10.0.0.1:53", "10.0.0.2:53", "[fd00::1]:53"]
        );
        assert_eq!(o(false, None)[0], "[fd00::1]:53");
    }

    fn msg(id: u16, rcode: u8) -> Vec<u8> {
        let mut m = vec![0; 12];
        m[..2].copy_from_slice(&id.to_be_bytes());
        m[2] = 0x81;
        m[3] = 0x80 | rcode;
        m
    }

    #[test]
    fn silence_servfail_and_refused_move_on_and_the_last_resolver_is_forwarded() {
        let order = resolver_order(&addrs(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]), true, None);
        let mut r = Relay::new(order).unwrap();
        assert!(Relay::new(Vec::new()).is_none());
        r.sent(&msg(7, 0), 1000);
        r.sent(b"short", 1000);
        assert!(!r.timed_out(1000 + RETRY_MS));
        assert!(r.timed_out(1001 + RETRY_MS));
        let (to, resend) = r.next(3000).unwrap();
        assert_eq!(to.to_string(), "10.0.0.2:53");
        assert_eq!(resend, vec![msg(7, 0)]);
        assert!(!r.timed_out(3000 + RETRY_MS));
        // The second refuses: the third is asked; its SERVFAIL is all there is.
        assert_eq!(r.answer(&msg(7, RCODE_REFUSED)), Answer::TryNext);
        assert_eq!(r.next(3100).unwrap().1.len(), 1);
        assert_eq!(r.answer(&msg(7, RCODE_SERVFAIL)), Answer::Forward);
        assert!(r.next(3200).is_none());
        assert!(!r.timed_out(99_999));
        // A good answer clears the query.
        let mut r = Relay::new(resolver_order(
            &addrs(&["10.0.0.1", "10.0.0.2"]),
            true,
            None,
        ))
        .unwrap();
        r.sent(&msg(9, 0), 0);
        assert_eq!(r.answer(&msg(9, 0)), Answer::Forward);
        assert!(!r.timed_out(10_000));
    }
}
