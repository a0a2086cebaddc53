//! What `filo lab status` reads from the consoles: a switch's `port/print` and a wirefilter's
//! `showinfo`, parsed into counters. Pure text in, numbers out.

use serde::{Deserialize, Serialize};

/// One switch port's counters (`port/print`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortCounters {
    pub port: u16,
    pub in_frames: u64,
    pub in_bytes: u64,
    pub out_frames: u64,
    pub out_bytes: u64,
    pub drop_queue: u64,
    pub drop_error: u64,
    /// Who is plugged in (the endpoint's description), if any.
    pub endpoints: Vec<String>,
}

/// One direction of a wirefilter (`showinfo`'s `Counters` line).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkCounters {
    pub in_frames: u64,
    pub in_bytes: u64,
    pub out_frames: u64,
    pub out_bytes: u64,
    pub dropped_loss: u64,
    pub dropped_mtu: u64,
    pub dropped_capacity: u64,
    pub duplicated: u64,
    pub corrupted: u64,
}

/// The numbers after each label on a line: `IN:  pkts 3 bytes 180` → [("pkts",3),("bytes",180)].
fn pairs(line: &str) -> Vec<(&str, u64)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut out = Vec::new();
    for w in words.windows(2) {
        if let Ok(n) = w[1].parse::<u64>() {
            out.push((w[0], n));
        }
    }
    out
}

fn get(p: &[(&str, u64)], key: &str) -> u64 {
    p.iter().find(|(k, _)| *k == key).map_or(0, |(_, n)| *n)
}

/// Parses `port/print` (or `port/allprint`) lines.
pub fn parse_port_print(lines: &[String]) -> Vec<PortCounters> {
    let mut ports: Vec<PortCounters> = Vec::new();
    for line in lines {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("Port ") {
            let num = rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u16>().ok());
            if let Some(port) = num {
                ports.push(PortCounters {
                    port,
                    ..Default::default()
                });
            }
            continue;
        }
        let Some(cur) = ports.last_mut() else {
            continue;
        };
        if let Some(rest) = t.strip_prefix("IN:") {
            let p = pairs(rest);
            cur.in_frames = get(&p, "pkts");
            cur.in_bytes = get(&p, "bytes");
        } else if let Some(rest) = t.strip_prefix("OUT:") {
            let p = pairs(rest);
            cur.out_frames = get(&p, "pkts");
            cur.out_bytes = get(&p, "bytes");
        } else if let Some(rest) = t.strip_prefix("DROP:") {
            let p = pairs(rest);
            cur.drop_queue = get(&p, "queue");
            cur.drop_error = get(&p, "error");
        } else if let Some(rest) = t.strip_prefix("-- endpoint") {
            if let Some((_, desc)) = rest.split_once(": ") {
                cur.endpoints.push(desc.trim().to_string());
            }
        }
    }
    ports
}

/// Parses a wirefilter's `showinfo` into (left-to-right, right-to-left) counters.
pub fn parse_showinfo(lines: &[String]) -> Option<(LinkCounters, LinkCounters)> {
    let mut lr = None;
    let mut rl = None;
    for line in lines {
        let t = line.trim();
        let (slot, rest) = if let Some(r) = t.strip_prefix("Counters L->R") {
            (&mut lr, r)
        } else if let Some(r) = t.strip_prefix("Counters R->L") {
            (&mut rl, r)
        } else {
            continue;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        let mut c = LinkCounters::default();
        let frac = |w: &str| -> (u64, u64) {
            let (a, b) = w.split_once('/').unwrap_or((w, "0"));
            (a.parse().unwrap_or(0), b.parse().unwrap_or(0))
        };
        for (i, w) in words.iter().enumerate() {
            let next = words.get(i + 1).copied().unwrap_or("");
            match *w {
                "in" => (c.in_frames, c.in_bytes) = frac(next),
                "out" => (c.out_frames, c.out_bytes) = frac(next),
                "loss" => c.dropped_loss = next.parse().unwrap_or(0),
                "mtu" => c.dropped_mtu = next.parse().unwrap_or(0),
                "capacity" => c.dropped_capacity = next.parse().unwrap_or(0),
                "dup" => c.duplicated = next.parse().unwrap_or(0),
                "corrupted" => c.corrupted = next.parse().unwrap_or(0),
                _ => {}
            }
        }
        *slot = Some(c);
    }
    Some((lr?, rl?))
}

/// A `KEY=VALUE` of `filo lab set` as wirefilter console commands: `loss=5` → `loss 5`,
/// `delay=50 jitter=10` → `delay 50+10`.
pub fn set_commands(assignments: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut jitter = None;
    let mut delay = None;
    for a in assignments {
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| format!("{a:?}: expected KEY=VALUE, e.g. loss=5 or delay=50"))?;
        let (k, v) = (k.trim(), v.trim());
        match k {
            "jitter" => jitter = Some(v.to_string()),
            "delay" => delay = Some(v.to_string()),
            _ => {
                crate::model::check_impairment(k, v).map_err(|e| format!("{k}: {e}"))?;
                let cmd = if k == "capacity" { "chanbufsize" } else { k };
                out.push(format!("{cmd} {v}"));
            }
        }
    }
    match (delay, jitter) {
        (Some(d), j) => {
            let text = match j {
                Some(j) => format!("{d}+{j}"),
                None => d,
            };
            crate::model::check_impairment("delay", &text).map_err(|e| format!("delay: {e}"))?;
            out.push(format!("delay {text}"));
        }
        (None, Some(_)) => return Err("jitter varies the delay: give delay=MS with it".into()),
        (None, None) => {}
    }
    if out.is_empty() {
        return Err("nothing to set: expected KEY=VALUE pairs, e.g. loss=5 delay=50".into());
    }
    Ok(out)
}

/// A wirefilter's current settings from `showinfo` (`Loss   L->R 5+0U   R->L 5+0U` →
/// `loss` → `L->R 5+0U R->L 5+0U`).
pub fn parse_settings(lines: &[String]) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    for line in lines {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        let key = match first {
            "Loss" => "loss",
            "LostBurst" => "lostburst",
            "Delay" => "delay",
            "Dup" => "dup",
            "Bandw" => "bandwidth",
            "Speed" => "speed",
            "Cap." => "capacity",
            "Noise" => "noise",
            "MTU" => "mtu",
            _ => continue,
        };
        out.insert(key.to_string(), words.collect::<Vec<_>>().join(" "));
    }
    out
}

/// `filo lab status --json`: the whole lab at one moment.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub name: String,
    pub dir: String,
    pub switches: Vec<SwitchReport>,
    pub links: Vec<LinkReport>,
    pub nodes: Vec<NodeReport>,
    pub remotes: Vec<RemoteReport>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buses: Vec<BusReport>,
}

/// An `ipn://` bus: its process and what `filo ipn stat PATH --json` says (members with
/// their frames in, out and lost, evictions).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BusReport {
    pub name: String,
    pub path: String,
    pub policy: String,
    pub lossless: bool,
    pub pid: Option<u32>,
    pub alive: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SwitchReport {
    pub name: String,
    /// A hub the lab made for a node's side of a link.
    pub hidden: bool,
    pub pid: Option<u32>,
    pub alive: bool,
    pub ports: Vec<PortCounters>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LinkReport {
    pub name: String,
    pub a: String,
    pub b: String,
    pub pid: Option<u32>,
    pub alive: bool,
    pub settings: std::collections::BTreeMap<String, String>,
    /// From a to b, and back.
    pub a_to_b: Option<LinkCounters>,
    pub b_to_a: Option<LinkCounters>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeReport {
    pub name: String,
    pub kind: String,
    pub pid: Option<u32>,
    pub alive: bool,
    /// The switches (and ports) it is on.
    pub net: Vec<String>,
    pub ip: Vec<String>,
    /// A slirp or router node's counters (its console's `stat`, see [`parse_slirp_stat`] and
    /// [`parse_router_stat`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counters: Vec<(String, u64)>,
    /// A slirp or router node's DHCP leases (its console's `leases/print`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leases: Vec<String>,
    /// A router node's interfaces (its console's `iface/print`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ifaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A router's counters: its `stat` (`drop no_route 3` → `drop_no_route`) and each
/// interface's frames from `iface/print` (`vde0 mac … rx 5 tx 4 forwarded 2` →
/// `vde0_rx`, `vde0_tx`, `vde0_forwarded`).
pub fn parse_router_stat(stat: &[String], ifaces: &[String]) -> Vec<(String, u64)> {
    let mut out = parse_slirp_stat(stat);
    for line in ifaces {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        for (k, n) in pairs(line) {
            if matches!(k, "rx" | "tx" | "forwarded") {
                out.push((format!("{name}_{k}"), n));
            }
        }
    }
    out
}

/// Parses a slirp gateway's `stat`: each line is a group and its counters
/// (`tcp opened 3 connect_failed 0`), named `tcp_opened`, `tcp_connect_failed`; the `limits`
/// line is configuration, not a counter, and is left out.
pub fn parse_slirp_stat(lines: &[String]) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for line in lines {
        let mut words = line.split_whitespace();
        let Some(group) = words.next() else { continue };
        if group == "limits" {
            continue;
        }
        let rest: Vec<&str> = words.collect();
        for (k, n) in pairs(&rest.join(" ")) {
            out.push((format!("{group}_{k}"), n));
        }
    }
    out
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RemoteReport {
    pub name: String,
    pub switch: String,
    pub vnl: String,
    pub pid: Option<u32>,
    pub alive: bool,
}

/// Whether a `showinfo` setting (`L->R 0+0U R->L 0+0U`) is off in both directions.
pub fn setting_is_off(value: &str) -> bool {
    value
        .split_whitespace()
        .filter(|w| !w.contains("->"))
        .all(|w| {
            w.trim_end_matches(['U', 'N'])
                .split('+')
                .all(|n| n.parse::<f64>().is_ok_and(|x| x == 0.0))
        })
}
