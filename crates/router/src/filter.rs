//! The packet filter: ordered rules, first match wins, each with packet and byte counters;
//! a [`Hook`] at FORWARD (chain `forward`) and INPUT (chain `input`). What no rule matches is
//! accepted.
//!
//! One rule a line (`#` starts a comment):
//!
//! ```text
//! [forward|input] accept|drop|reject [in IFACE] [out IFACE] [from PREFIX] [to PREFIX]
//!     [proto tcp|udp|icmp|icmpv6|N] [sport N[-M]] [dport N[-M]] [type N]
//!     [state new|established|related[,...]]
//! ```
//!
//! `forward` is the default chain. `reject` answers TCP with a reset and anything else with
//! ICMP "administratively prohibited". `state`: the first packet of a connection (both
//! directions' addresses and ports, or the echo identifier) is `new`, later ones in either
//! direction `established`, ICMP errors quoting a known connection `related`; connections are
//! remembered for [`CONN_TIMEOUT`] after their last packet, [`MAX_CONNS`] at most.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use smoltcp::wire::{Ipv4Packet, Ipv6Packet};

use crate::core::{Hook, HookPoint, HookVerdict, IfId, PacketMeta};
use crate::route::Prefix;

/// Connections the filter remembers at most (for `state`); the oldest are forgotten first.
pub const MAX_CONNS: usize = 16384;
/// How long a connection is remembered after its last packet.
pub const CONN_TIMEOUT: Duration = Duration::from_secs(600);

pub const SYNTAX: &str = "[forward|input] accept|drop|reject [in IFACE] [out IFACE] [from PREFIX] [to PREFIX] [proto tcp|udp|icmp|icmpv6|N] [sport N[-M]] [dport N[-M]] [type N] [state new|established|related[,...]]";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Accept,
    Drop,
    Reject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chain {
    Forward,
    Input,
}

const NEW: u8 = 1;
const ESTABLISHED: u8 = 2;
const RELATED: u8 = 4;

/// One rule, as parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    text: String,
    chain: Chain,
    action: Action,
    in_iface: Option<IfId>,
    out_iface: Option<IfId>,
    from: Option<Prefix>,
    to: Option<Prefix>,
    proto: Option<u8>,
    sport: Option<(u16, u16)>,
    dport: Option<(u16, u16)>,
    icmp_type: Option<u8>,
    states: u8,
    packets: u64,
    bytes: u64,
}

/// A rule that did not parse: the token, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{token:?}: {expected}")]
pub struct RuleError {
    pub token: String,
    pub expected: String,
}

fn err(token: &str, expected: impl Into<String>) -> RuleError {
    RuleError {
        token: token.to_string(),
        expected: expected.into(),
    }
}

fn range(token: &str) -> Result<(u16, u16), RuleError> {
    let bad = || err(token, "a port N or range N-M (0..65535)");
    match token.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
            if a > b {
                return Err(bad());
            }
            Ok((a, b))
        }
        None => {
            let p = token.parse().map_err(|_| bad())?;
            Ok((p, p))
        }
    }
}

impl Rule {
    /// Parses one rule; `ifaces` are the interface names, by number.
    pub fn parse(text: &str, ifaces: &[String]) -> Result<Rule, RuleError> {
        let mut words = text.split_whitespace().peekable();
        let mut chain = Chain::Forward;
        match words.peek() {
            Some(&"forward") => {
                words.next();
            }
            Some(&"input") => {
                chain = Chain::Input;
                words.next();
            }
            _ => {}
        }
        let action = match words.next() {
            Some("accept") => Action::Accept,
            Some("drop") => Action::Drop,
            Some("reject") => Action::Reject,
            Some(w) => return Err(err(w, "accept, drop or reject")),
            None => return Err(err("", "accept, drop or reject")),
        };
        let mut r = Rule {
            text: text.split_whitespace().collect::<Vec<_>>().join(" "),
            chain,
            action,
            in_iface: None,
            out_iface: None,
            from: None,
            to: None,
            proto: None,
            sport: None,
            dport: None,
            icmp_type: None,
            states: 0,
            packets: 0,
            bytes: 0,
        };
        while let Some(key) = words.next() {
            let Some(value) = words.next() else {
                return Err(err(key, "a value after it"));
            };
            let iface = |v: &str| {
                ifaces
                    .iter()
                    .position(|n| n == v)
                    .ok_or_else(|| err(v, format!("an interface ({})", ifaces.join(", "))))
            };
            let prefix = |v: &str| -> Result<Prefix, RuleError> {
                if let Ok(a) = v.parse::<IpAddr>() {
                    let len = if a.is_ipv4() { 32 } else { 128 };
                    return Prefix::new(a, len).ok_or_else(|| err(v, "an address or ADDR/LEN"));
                }
                v.parse().map_err(|_| err(v, "an address or ADDR/LEN"))
            };
            match key {
                "in" => r.in_iface = Some(iface(value)?),
                "out" => r.out_iface = Some(iface(value)?),
                "from" => r.from = Some(prefix(value)?),
                "to" => r.to = Some(prefix(value)?),
                "proto" => {
                    r.proto = Some(match value {
                        "tcp" => 6,
                        "udp" => 17,
                        "icmp" => 1,
                        "icmpv6" => 58,
                        n => n
                            .parse()
                            .map_err(|_| err(n, "tcp, udp, icmp, icmpv6 or a number"))?,
                    })
                }
                "sport" => r.sport = Some(range(value)?),
                "dport" => r.dport = Some(range(value)?),
                "type" => {
                    r.icmp_type = Some(
                        value
                            .parse()
                            .map_err(|_| err(value, "an ICMP type 0..255"))?,
                    )
                }
                "state" => {
                    for s in value.split(',') {
                        r.states |= match s {
                            "new" => NEW,
                            "established" => ESTABLISHED,
                            "related" => RELATED,
                            _ => return Err(err(s, "new, established or related")),
                        };
                    }
                }
                _ => {
                    return Err(err(
                        key,
                        "in, out, from, to, proto, sport, dport, type or state",
                    ))
                }
            }
        }
        if (r.sport.is_some() || r.dport.is_some()) && !matches!(r.proto, Some(6 | 17)) {
            return Err(err("sport/dport", "proto tcp or proto udp before ports"));
        }
        if r.icmp_type.is_some() && !matches!(r.proto, Some(1 | 58)) {
            return Err(err("type", "proto icmp or proto icmpv6 before type"));
        }
        Ok(r)
    }

    fn matches(&self, chain: Chain, meta: &PacketMeta, f: &Fields, state: u8) -> bool {
        self.chain == chain
            && self.in_iface.is_none_or(|i| meta.in_iface == Some(i))
            && self.out_iface.is_none_or(|i| meta.out_iface == Some(i))
            && self.from.is_none_or(|p| p.contains(f.src))
            && self.to.is_none_or(|p| p.contains(f.dst))
            && self.proto.is_none_or(|p| p == f.proto)
            && self
                .sport
                .is_none_or(|(a, b)| f.ports.is_some_and(|(s, _)| (a..=b).contains(&s)))
            && self
                .dport
                .is_none_or(|(a, b)| f.ports.is_some_and(|(_, d)| (a..=b).contains(&d)))
            && self.icmp_type.is_none_or(|t| f.icmp_type == Some(t))
            && (self.states == 0 || self.states & state != 0)
    }
}

/// What the filter looks at in a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fields {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    ports: Option<(u16, u16)>,
    icmp_type: Option<u8>,
    /// The connection an ICMP error quotes.
    quoted: Option<ConnKey>,
}

/// A connection, the same whichever direction a packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ConnKey {
    proto: u8,
    a: (IpAddr, u16),
    b: (IpAddr, u16),
}

impl ConnKey {
    fn new(proto: u8, src: (IpAddr, u16), dst: (IpAddr, u16)) -> ConnKey {
        let (a, b) = if src <= dst { (src, dst) } else { (dst, src) };
        ConnKey { proto, a, b }
    }
}

fn l4_fields(proto: u8, l4: &[u8]) -> (Option<(u16, u16)>, Option<u8>) {
    let get = |at: usize| Some(u16::from_be_bytes([*l4.get(at)?, *l4.get(at + 1)?]));
    match proto {
        6 | 17 => (get(0).zip(get(2)), None),
        1 | 58 => {
            let t = l4.first().copied();
            // Echo request/reply: the identifier stands for both ports.
            let echo = matches!((proto, t), (1, Some(0 | 8)) | (58, Some(128 | 129)));
            (if echo { get(4).map(|i| (i, i)) } else { None }, t)
        }
        _ => (None, None),
    }
}

/// Source, destination, protocol and transport header of an IP packet.
fn ip_parts(packet: &[u8]) -> Option<(IpAddr, IpAddr, u8, &[u8])> {
    match packet.first()? >> 4 {
        4 => {
            let p = Ipv4Packet::new_checked(packet).ok()?;
            let hl = usize::from(p.header_len());
            let l4: &[u8] = if p.frag_offset() == 0 {
                packet.get(hl..)?
            } else {
                &[]
            };
            Some((
                p.src_addr().into(),
                p.dst_addr().into(),
                p.next_header().into(),
                l4,
            ))
        }
        6 => {
            let p = Ipv6Packet::new_checked(packet).ok()?;
            Some((
                p.src_addr().into(),
                p.dst_addr().into(),
                p.next_header().into(),
                packet.get(40..)?,
            ))
        }
        _ => None,
    }
}

/// Like [`ip_parts`] for a quoted packet, whose length fields may exceed what was quoted.
fn quoted_parts(packet: &[u8]) -> Option<ConnKey> {
    let (src, dst, proto, l4) = match packet.first()? >> 4 {
        4 if packet.len() >= 20 => {
            let p = Ipv4Packet::new_unchecked(packet);
            let hl = usize::from(p.header_len());
            (
                IpAddr::from(p.src_addr()),
                IpAddr::from(p.dst_addr()),
                u8::from(p.next_header()),
                packet.get(hl..)?,
            )
        }
        6 if packet.len() >= 40 => {
            let p = Ipv6Packet::new_unchecked(packet);
            (
                IpAddr::from(p.src_addr()),
                IpAddr::from(p.dst_addr()),
                u8::from(p.next_header()),
                packet.get(40..)?,
            )
        }
        _ => return None,
    };
    let (ports, _) = l4_fields(proto, l4);
    let (sp, dp) = ports.unwrap_or((0, 0));
    Some(ConnKey::new(proto, (src, sp), (dst, dp)))
}

fn fields(packet: &[u8]) -> Option<Fields> {
    let (src, dst, proto, l4) = ip_parts(packet)?;
    let (ports, icmp_type) = l4_fields(proto, l4);
    let error = matches!(
        (proto, icmp_type),
        (1, Some(3 | 11 | 12)) | (58, Some(1..=4))
    );
    let quoted = if error {
        l4.get(8..).and_then(quoted_parts)
    } else {
        None
    };
    Some(Fields {
        src,
        dst,
        proto,
        ports,
        icmp_type,
        quoted,
    })
}

/// The filter: its rules and the connections it has seen.
pub struct Filter {
    ifaces: Vec<String>,
    rules: Vec<Rule>,
    conns: HashMap<ConnKey, Instant>,
}

impl Filter {
    /// An empty filter for interfaces named `ifaces` (by number).
    pub fn new(ifaces: Vec<String>) -> Filter {
        Filter {
            ifaces,
            rules: Vec::new(),
            conns: HashMap::new(),
        }
    }

    /// Loads rules, one a line; the error names the line.
    pub fn load(&mut self, text: &str) -> Result<(), String> {
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let rule = Rule::parse(line, &self.ifaces)
                .map_err(|e| format!("line {}: {e} (rules are: {SYNTAX})", n + 1))?;
            self.rules.push(rule);
        }
        Ok(())
    }

    pub fn rules(&self) -> usize {
        self.rules.len()
    }

    /// Adds rule `text` at position `n` (1 is first; one past the last appends), moving
    /// the rules from `n` on down one; the error names the token or the position.
    pub fn insert(&mut self, n: usize, text: &str) -> Result<(), String> {
        if !(1..=self.rules.len() + 1).contains(&n) {
            return Err(format!(
                "position {n}: expected 1..{}",
                self.rules.len() + 1
            ));
        }
        let rule =
            Rule::parse(text, &self.ifaces).map_err(|e| format!("{e} (rules are: {SYNTAX})"))?;
        self.rules.insert(n - 1, rule);
        Ok(())
    }

    fn state(&mut self, now: Instant, f: &Fields) -> u8 {
        if let Some(q) = f.quoted {
            if self.conns.get(&q).is_some_and(|&t| t > now) {
                return RELATED;
            }
        }
        let (sp, dp) = f.ports.unwrap_or((0, 0));
        let key = ConnKey::new(f.proto, (f.src, sp), (f.dst, dp));
        let known = self.conns.get(&key).is_some_and(|&t| t > now);
        if !known && self.conns.len() >= MAX_CONNS {
            self.conns.retain(|_, t| *t > now);
            if self.conns.len() >= MAX_CONNS {
                if let Some(oldest) = self.conns.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k) {
                    self.conns.remove(&oldest);
                }
            }
        }
        self.conns.insert(key, now + CONN_TIMEOUT);
        if known {
            ESTABLISHED
        } else {
            NEW
        }
    }
}

impl Hook for Filter {
    fn hook(
        &mut self,
        now: Instant,
        point: HookPoint,
        meta: &PacketMeta,
        packet: &mut Vec<u8>,
    ) -> HookVerdict {
        let chain = match point {
            HookPoint::Forward => Chain::Forward,
            HookPoint::Input => Chain::Input,
            _ => return HookVerdict::Accept,
        };
        if self.rules.is_empty() {
            return HookVerdict::Accept;
        }
        let Some(f) = fields(packet) else {
            return HookVerdict::Accept;
        };
        let state = self.state(now, &f);
        let len = packet.len() as u64;
        let Some(rule) = self
            .rules
            .iter_mut()
            .find(|r| r.matches(chain, meta, &f, state))
        else {
            return HookVerdict::Accept;
        };
        rule.packets += 1;
        rule.bytes += len;
        match rule.action {
            Action::Accept => HookVerdict::Accept,
            Action::Drop => {
                if state == NEW {
                    // A dropped first packet makes no connection.
                    let (sp, dp) = f.ports.unwrap_or((0, 0));
                    self.conns
                        .remove(&ConnKey::new(f.proto, (f.src, sp), (f.dst, dp)));
                }
                HookVerdict::Drop
            }
            Action::Reject => HookVerdict::Reject,
        }
    }

    fn name(&self) -> &'static str {
        "filter"
    }

    fn print(&self, _now: Instant) -> Vec<String> {
        self.rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut l = format!("{} {}", i + 1, r.text);
                let _ = write!(l, " packets {} bytes {}", r.packets, r.bytes);
                l
            })
            .collect()
    }

    fn command(&mut self, cmd: &str, args: &str) -> Option<Result<Vec<String>, String>> {
        Some(match cmd {
            "add" => Rule::parse(args, &self.ifaces)
                .map(|r| {
                    self.rules.push(r);
                    vec![format!("rule {} added", self.rules.len())]
                })
                .map_err(|e| format!("{e} (rules are: {SYNTAX})")),
            "insert" => {
                let (n, rule) = args.trim().split_once(' ').unwrap_or((args.trim(), ""));
                match n.parse::<usize>() {
                    Ok(n) => self
                        .insert(n, rule.trim())
                        .map(|()| vec![format!("rule {n} inserted")]),
                    Err(_) => Err(format!(
                        "{n:?}: expected a position 1..{} then a rule",
                        self.rules.len() + 1
                    )),
                }
            }
            "del" => match args.trim().parse::<usize>() {
                Ok(n) if (1..=self.rules.len()).contains(&n) => {
                    let r = self.rules.remove(n - 1);
                    Ok(vec![format!("rule {n} deleted: {}", r.text)])
                }
                _ => Err(format!(
                    "{args:?}: expected a rule number 1..{}",
                    self.rules.len()
                )),
            },
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A UDP packet (its checksum not filled: the filter does not look).
    fn udp(src: &str, sp: u16, dst: &str, dp: u16) -> Vec<u8> {
        let (s, d): (std::net::Ipv4Addr, std::net::Ipv4Addr) =
            (src.parse().unwrap(), dst.parse().unwrap());
        let mut p = crate::icmp::v4_echo_reply(s, d, &[0; 8]);
        p[9] = 17;
        p[20..24].copy_from_slice(&[(sp >> 8) as u8, sp as u8, (dp >> 8) as u8, dp as u8]);
        p
    }

    fn names() -> Vec<String> {
        vec!["vde0".into(), "vde1".into()]
    }

    #[test]
    fn rules_parse_and_errors_name_the_token() {
        let r = Rule::parse("reject in vde1 proto tcp dport 20-23 state new", &names()).unwrap();
        assert_eq!(
            (r.action, r.in_iface, r.dport, r.states),
            (Action::Reject, Some(1), Some((20, 23)), NEW)
        );
        let e = Rule::parse("accept in vde7", &names()).unwrap_err();
        assert_eq!(e.token, "vde7");
        let e = Rule::parse("allow", &names()).unwrap_err();
        assert_eq!(e.token, "allow");
        let e = Rule::parse("drop dport 80", &names()).unwrap_err();
        assert!(e.expected.contains("proto tcp"), "{e}");
        let e = Rule::parse("drop proto tcp dport 90-80", &names()).unwrap_err();
        assert_eq!(e.token, "90-80");
        let mut f = Filter::new(names());
        let e = f
            .load("# a comment\naccept state established\n\ndrop frm 10.0.0.0/8\n")
            .unwrap_err();
        assert!(e.starts_with("line 4: \"frm\""), "{e}");
    }

    #[test]
    fn established_replies_pass_new_ones_from_outside_do_not() {
        let now = Instant::now();
        let mut f = Filter::new(names());
        f.load("accept state established,related\ndrop in vde1 state new")
            .unwrap();
        let out = PacketMeta {
            in_iface: Some(0),
            out_iface: Some(1),
        };
        let back = PacketMeta {
            in_iface: Some(1),
            out_iface: Some(0),
        };
        let mut p = udp("10.1.0.10", 5000, "10.9.0.20", 53);
        assert_eq!(
            f.hook(now, HookPoint::Forward, &out, &mut p),
            HookVerdict::Accept
        );
        let mut p = udp("10.9.0.20", 53, "10.1.0.10", 5000);
        assert_eq!(
            f.hook(now, HookPoint::Forward, &back, &mut p),
            HookVerdict::Accept
        );
        let mut p = udp("10.9.0.20", 53, "10.1.0.10", 5001);
        assert_eq!(
            f.hook(now, HookPoint::Forward, &back, &mut p),
            HookVerdict::Drop
        );
        // Again: still new (the dropped packet made no connection).
        let mut p = udp("10.9.0.20", 53, "10.1.0.10", 5001);
        assert_eq!(
            f.hook(now, HookPoint::Forward, &back, &mut p),
            HookVerdict::Drop
        );
        let lines = f.print(now);
        assert_eq!(
            lines[0],
            "1 accept state established,related packets 1 bytes 28"
        );
        assert_eq!(lines[1], "2 drop in vde1 state new packets 2 bytes 56");
        assert!(f.command("del", "3").unwrap().is_err());
        assert!(f.command("del", "2").unwrap().is_ok());
        assert_eq!(f.rules(), 1);
    }

    #[test]
    fn rules_insert_at_a_position_and_decide_first() {
        let now = Instant::now();
        let mut f = Filter::new(names());
        f.load("accept proto udp\n").unwrap();
        let out = PacketMeta {
            in_iface: Some(0),
            out_iface: Some(1),
        };
        let mut p = udp("10.1.0.10", 5000, "10.9.0.20", 53);
        assert_eq!(
            f.hook(now, HookPoint::Forward, &out, &mut p),
            HookVerdict::Accept
        );
        assert_eq!(
            f.command("insert", "1 drop proto udp dport 53"),
            Some(Ok(vec!["rule 1 inserted".to_string()]))
        );
        let mut p = udp("10.1.0.10", 5000, "10.9.0.20", 53);
        assert_eq!(
            f.hook(now, HookPoint::Forward, &out, &mut p),
            HookVerdict::Drop
        );
        // At the end too, and nowhere else.
        assert!(f.command("insert", "3 reject proto tcp").unwrap().is_ok());
        let lines = f.print(now);
        assert!(
            lines[0].starts_with("1 drop proto udp dport 53 packets 1"),
            "{lines:?}"
        );
        assert!(
            lines[1].starts_with("2 accept proto udp packets 1"),
            "{lines:?}"
        );
        assert!(
            lines[2].starts_with("3 reject proto tcp packets 0"),
            "{lines:?}"
        );
        for (bad, what) in [
            ("5 drop", "position 5: expected 1..4"),
            ("0 drop", "position 0"),
            ("x drop", "\"x\": expected a position 1..4"),
            ("1 allow", "\"allow\""),
        ] {
            let e = f.command("insert", bad).unwrap().unwrap_err();
            assert!(e.contains(what), "{bad}: {e}");
        }
        assert_eq!(f.rules(), 3);
    }
}
