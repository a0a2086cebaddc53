//! The router's management console, in VDE's framing ([`filo_vnl::console`]): text in, text
//! out, no I/O. Commands: `help`, `iface/print`, `route/print`, `neigh/print`,
//! `leases/print`, `stat`, `logout`, `shutdown`. `filo console --json SOCK CMD` gives any of
//! them as JSON.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Instant;

use filo_vnl::console::{push_data_block, status_line, END_OF_SESSION};

use crate::core::{DropReason, Router};
use crate::route::Origin;

/// Written on connect, before the first prompt.
pub const BANNER: &str = "\nfilo router\n";
/// Written after every reply.
pub const PROMPT: &str = "\nfilo-router$ ";

/// What the daemon does after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    None,
    Logout,
    Shutdown,
}

/// Counters the daemon keeps beside the core's (frames it could not hand to a plug).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriverStats {
    pub tx_dropped: u64,
    /// Frames for an interface that is down, dropped.
    pub link_down: u64,
    /// `IFACE VNL: why` for each interface that is down.
    pub down: Vec<String>,
}

pub fn greeting() -> String {
    format!("{BANNER}{PROMPT}")
}

const HELP: [&str; 14] = [
    "help            this list",
    "iface/print     interfaces: name, MAC, MTU, addresses, frames in/out, forwarded",
    "route/print     the routing table, longest prefix first",
    "neigh/print     the neighbour cache (ARP, NDP)",
    "leases/print    DHCP leases of every interface with a server",
    "stat            drop counters by reason",
    "nat/print       masquerade, port forwards: connections, states, timeouts, counters",
    "filter/print    filter rules in order, with packet and byte counters",
    "filter/add RULE append a rule (see filo router --help)",
    "filter/insert N RULE  insert a rule at position N (1 is first)",
    "filter/del N    delete rule N",
    "logout          end this session",
    "shutdown        stop the router",
    "",
];

fn mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn lines(router: &Router, now: Instant, cmd: &str, driver: &DriverStats) -> Option<Vec<String>> {
    let mut out = Vec::new();
    match cmd {
        "help" => out.extend(HELP.iter().filter(|l| !l.is_empty()).map(|s| s.to_string())),
        "iface/print" => {
            for id in 0..router.iface_count() {
                let (Some(c), Some(s)) = (router.iface_config(id), router.iface_stats(id)) else {
                    continue;
                };
                let addrs: Vec<String> = c.addrs.iter().map(|(a, l)| format!("{a}/{l}")).collect();
                out.push(format!(
                    "{} mac {} mtu {} addrs {} rx {} tx {} forwarded {} super_rx {} super_tx {}",
                    c.name,
                    mac(&c.mac),
                    c.mtu,
                    if addrs.is_empty() {
                        "-".into()
                    } else {
                        addrs.join(",")
                    },
                    s.rx_frames,
                    s.tx_frames,
                    s.forwarded,
                    s.super_rx,
                    s.super_tx
                ));
            }
        }
        "route/print" => {
            for r in router.routes() {
                let name = router
                    .iface_config(r.iface)
                    .map_or("?", |c| c.name.as_str());
                let mut l = format!("{}", r.prefix);
                if let Some(v) = r.via {
                    let _ = write!(l, " via {v}");
                }
                let _ = write!(
                    l,
                    " dev {name} {}",
                    match r.origin {
                        Origin::Connected => "connected",
                        Origin::Static => "static",
                    }
                );
                out.push(l);
            }
        }
        "neigh/print" => {
            let mut n: Vec<(usize, IpAddr, Option<[u8; 6]>)> = router.neighbours().collect();
            n.sort();
            for (i, a, m) in n {
                let name = router.iface_config(i).map_or("?", |c| c.name.as_str());
                let m = m.map_or("incomplete".to_string(), |m| mac(&m));
                out.push(format!("{a} dev {name} {m}"));
            }
        }
        "leases/print" => {
            let clock = router.server_clock(now);
            for id in 0..router.iface_count() {
                let Some(s) = router.dhcp_server(id) else {
                    continue;
                };
                let name = router.iface_config(id).map_or("?", |c| c.name.as_str());
                out.extend(s.leases(clock).iter().map(|l| l.line(name, clock)));
            }
        }
        "stat" => {
            for (r, n) in router.drops().iter() {
                out.push(format!("drop {} {n}", r.name()));
            }
            out.push(format!("drop total {}", router.drops().total()));
            out.push(format!("drop tx_queue_full {}", driver.tx_dropped));
            out.push(format!("drop link_down {}", driver.link_down));
            out.extend(driver.down.iter().map(|d| format!("down {d}")));
        }
        "filter/print" => out.extend(router.hook_print("filter", now).unwrap_or_default()),
        "nat/print" => match router.hook_print("nat", now) {
            Some(lines) => out.extend(lines),
            None => out.push("no NAT (see --masquerade, --forward)".into()),
        },
        _ => return None,
    }
    Some(out)
}

/// Runs one console line; the text to send back and what to do next.
pub fn execute(
    router: &mut Router,
    now: Instant,
    line: &str,
    driver: &DriverStats,
) -> (String, Effect) {
    let cmd = line.trim();
    if cmd.is_empty() || cmd.starts_with('#') {
        return (PROMPT.to_string(), Effect::None);
    }
    match cmd {
        "logout" => return (END_OF_SESSION.to_string(), Effect::Logout),
        "shutdown" => return (END_OF_SESSION.to_string(), Effect::Shutdown),
        _ => {}
    }
    let mut text = String::new();
    let (word, args) = cmd.split_once(char::is_whitespace).unwrap_or((cmd, ""));
    if let Some(sub) = word.strip_prefix("filter/").filter(|s| *s != "print") {
        match router.hook_command("filter", sub, args.trim()) {
            Some(Ok(body)) => {
                push_data_block(&mut text, &body);
                let _ = write!(text, "{}{PROMPT}", status_line(Ok(())));
            }
            Some(Err(e)) => {
                let _ = write!(text, "{}{PROMPT}", filo_vnl::console::error_line(22, &e));
            }
            None => {
                let _ = write!(
                    text,
                    "{}{PROMPT}",
                    filo_vnl::console::error_line(
                        38,
                        &format!("{word:?}: unknown command (try help)")
                    )
                );
            }
        }
        return (text, Effect::None);
    }
    match lines(router, now, cmd, driver) {
        Some(body) => {
            push_data_block(&mut text, &body);
            let _ = write!(text, "{}{PROMPT}", status_line(Ok(())));
        }
        None => {
            let _ = write!(
                text,
                "{}{PROMPT}",
                filo_vnl::console::error_line(38, &format!("{cmd:?}: unknown command (try help)"))
            );
        }
    }
    (text, Effect::None)
}

/// The names of every drop reason, as `stat` prints them.
pub fn drop_names() -> impl Iterator<Item = &'static str> {
    DropReason::ALL.iter().map(|r| r.name())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::IfaceConfig;

    #[test]
    fn commands_answer_in_vde_framing() {
        let now = Instant::now();
        let mut r = Router::new(now);
        let mut c = IfaceConfig::new("vde0", [2, 0, 0, 0, 0, 1]);
        c.addrs = vec![("10.1.0.1".parse().unwrap(), 24)];
        r.add_iface(c).unwrap();
        let d = DriverStats::default();
        let (t, e) = execute(&mut r, now, "route/print", &d);
        assert_eq!(e, Effect::None);
        let reply = filo_vnl::console::parse_reply(&t);
        assert_eq!(reply.status, 1000);
        assert_eq!(reply.lines, ["10.1.0.0/24 dev vde0 connected"]);
        let reply = filo_vnl::console::parse_reply(&execute(&mut r, now, "stat", &d).0);
        assert!(
            reply.lines.contains(&"drop no_route 0".to_string()),
            "{reply:?}"
        );
        // Every reason, the total, the two driver counters (tx_queue_full, link_down).
        assert_eq!(reply.lines.len(), drop_names().count() + 3);
        let reply = filo_vnl::console::parse_reply(&execute(&mut r, now, "frobnicate", &d).0);
        assert_eq!(reply.status, 1038);
        assert_eq!(execute(&mut r, now, "shutdown", &d).1, Effect::Shutdown);
    }
}
