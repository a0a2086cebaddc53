//! The router's management console, in VDE's framing ([`filo_vnl::console`]): text in, text
//! out, no I/O. Commands: `help`, `iface/print`, `route/print`, `neigh/print`,
//! `leases/print`, `stat`, `nat/print`, `fwd/print|add|del`, `filter/print|add|insert|del`,
//! `logout`, `shutdown`. `filo console --json SOCK CMD` gives any of them as JSON.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Instant;

use filo_vnl::console::{push_data_block, status_line, END_OF_SESSION};

use crate::core::{DropReason, Router};
use crate::nat::IfaceForward;
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
    /// Frames its plug failed to send (an error other than "try again"), dropped.
    pub tx_error: u64,
    /// By interface: `VNL: why` when it is down.
    pub down: Vec<Option<String>>,
}

pub fn greeting() -> String {
    format!("{BANNER}{PROMPT}")
}

const HELP: [&str; 17] = [
    "help            this list",
    "iface/print     interfaces: name, MAC, MTU, addresses, frames in/out, forwarded",
    "route/print     the routing table, longest prefix first",
    "neigh/print     the neighbour cache (ARP, NDP)",
    "leases/print    DHCP leases of every interface with a server",
    "stat            drop counters by reason; each DHCP server's messages by outcome",
    "nat/print       masquerade, port forwards: connections, states, timeouts, counters",
    "fwd/print       port forwards, IFACE:PROTO:PORT=ADDR:PORT as --forward takes them",
    "fwd/add SPEC    add a port forward, SPEC as --forward: IFACE:PROTO:PORT=ADDR[:PORT]",
    "fwd/del SPEC    remove a port forward (and forget its connections)",
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
            out.push(format!("drop tx_error {}", driver.tx_error));
            // Each DHCP server's messages by outcome (those ignored included).
            for id in 0..router.iface_count() {
                let Some(server) = router.dhcp_server(id) else {
                    continue;
                };
                let name = router.iface_config(id).map_or("?", |c| c.name.as_str());
                let counts: Vec<String> = server
                    .stats()
                    .iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect();
                out.push(format!("dhcp {name} {}", counts.join(" ")));
            }
            for (i, why) in driver.down.iter().enumerate() {
                if let Some(why) = why {
                    let name = router.iface_config(i).map_or("?", |c| c.name.as_str());
                    out.push(format!("down {name} {why}"));
                }
            }
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
    let (word, args) = cmd.split_once(char::is_whitespace).unwrap_or((cmd, ""));
    let (answer, name) = if let Some(sub) = word.strip_prefix("fwd/") {
        (fwd(router, sub, args.trim()), word)
    } else if let Some(sub) = word.strip_prefix("filter/").filter(|s| *s != "print") {
        let answer = router.hook_command("filter", sub, args.trim());
        (answer.map(|r| r.map_err(|e| (22, e))), word)
    } else {
        (lines(router, now, cmd, driver).map(Ok), cmd)
    };
    let mut text = String::new();
    match answer {
        Some(Ok(body)) => {
            push_data_block(&mut text, &body);
            let _ = write!(text, "{}{PROMPT}", status_line(Ok(())));
        }
        Some(Err((code, e))) => {
            let _ = write!(text, "{}{PROMPT}", filo_vnl::console::error_line(code, &e));
        }
        None => {
            let _ = write!(
                text,
                "{}{PROMPT}",
                filo_vnl::console::error_line(38, &format!("{name:?}: unknown command (try help)"))
            );
        }
    }
    (text, Effect::None)
}

/// `fwd/print`, `fwd/add SPEC`, `fwd/del SPEC` (SPEC as `--forward`'s,
/// [`IfaceForward::parse`]) on the NAT hook of SPEC's interface; Err has the VDE error
/// number. None for another `fwd/` command.
fn fwd(router: &mut Router, sub: &str, spec: &str) -> Option<Result<Vec<String>, (i32, String)>> {
    let name = |router: &Router, i: usize| {
        router
            .iface_config(i)
            .map_or_else(|| format!("vde{i}"), |c| c.name.clone())
    };
    if sub == "print" {
        let mut out = Vec::new();
        for lines in router.hook_command_all("nat", "fwd/print", "") {
            for l in lines.unwrap_or_default() {
                if let Some((i, rule)) = l.split_once(' ') {
                    let i = i.parse().unwrap_or(usize::MAX);
                    out.push(format!("{}:{rule}", name(router, i)));
                }
            }
        }
        return Some(Ok(out));
    }
    if sub != "add" && sub != "del" {
        return None;
    }
    let f = match IfaceForward::parse(spec) {
        Ok(f) => f,
        Err(e) => return Some(Err((22, e))),
    };
    let Some(i) = router.iface_by_name(&f.iface) else {
        return Some(Err((
            19,
            format!(
                "{spec}: no interface {:?} (iface/print lists them)",
                f.iface
            ),
        )));
    };
    let args = format!("{i} {}", f.forward);
    Some(
        match router.hook_command("nat", &format!("fwd/{sub}"), &args) {
            Some(r) => r.map_err(|e| (22, format!("{}:{e}", f.iface))),
            None => Err((
                19,
                format!(
                    "{spec}: {} has no NAT (start the router with --masquerade, --snat or --forward on it)",
                    f.iface
                ),
            )),
        },
    )
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
        // Each reason, then total, tx_queue_full, link_down and tx_error (no interface down).
        assert_eq!(reply.lines.len(), drop_names().count() + 4);
        let reply = filo_vnl::console::parse_reply(&execute(&mut r, now, "frobnicate", &d).0);
        assert_eq!(reply.status, 1038);
        assert_eq!(execute(&mut r, now, "shutdown", &d).1, Effect::Shutdown);
    }

    #[test]
    fn port_forwards_are_added_listed_and_removed_with_the_command_line_syntax() {
        let now = Instant::now();
        let mut r = Router::new(now);
        for (name, addr) in [("vde0", "10.1.0.1"), ("vde1", "10.9.0.2")] {
            let mut c = IfaceConfig::new(name, [2, 0, 0, 0, 0, 1]);
            c.addrs = vec![(addr.parse().unwrap(), 24)];
            r.add_iface(c).unwrap();
        }
        let mut c = crate::nat::Config::new(1, "10.9.0.2".parse().unwrap());
        c.masquerade = false;
        r.add_hook(
            &[crate::HookPoint::Prerouting, crate::HookPoint::Postrouting],
            Box::new(crate::nat::Masquerade::new(c)),
        );
        let d = DriverStats::default();
        let mut run = |cmd: &str| filo_vnl::console::parse_reply(&execute(&mut r, now, cmd, &d).0);
        let added = run("fwd/add vde1:tcp:8080=10.1.0.50:80");
        assert_eq!(added.status, 1000, "{added:?}");
        assert_eq!(run("fwd/add vde1:udp:53=10.1.0.50").status, 1000);
        assert_eq!(
            run("fwd/print").lines,
            ["vde1:tcp:8080=10.1.0.50:80", "vde1:udp:53=10.1.0.50:53"]
        );
        for (bad, status, what) in [
            (
                "fwd/add vde1:tcp:8080=10.1.0.51:80",
                1022,
                "forwarded already",
            ),
            ("fwd/add vde1:tcp:80x=10.1.0.50", 1022, "port \"80x\""),
            ("fwd/add vde1:icmp:80=10.1.0.50", 1022, "protocol \"icmp\""),
            (
                "fwd/add vde1",
                1022,
                "expected IFACE:PROTO:PORT=ADDR[:PORT]",
            ),
            (
                "fwd/add vde7:tcp:80=10.1.0.50",
                1019,
                "no interface \"vde7\"",
            ),
            ("fwd/add vde0:tcp:80=10.1.0.50", 1019, "vde0 has no NAT"),
            (
                "fwd/del vde1:tcp:8081=10.1.0.50:80",
                1022,
                "no such forward",
            ),
        ] {
            let reply = run(bad);
            assert_eq!(reply.status, status, "{bad}: {reply:?}");
            assert!(
                reply.error.as_deref().is_some_and(|e| e.contains(what)),
                "{bad}: {reply:?}"
            );
        }
        assert_eq!(run("fwd/del vde1:tcp:8080=10.1.0.50:80").status, 1000);
        assert_eq!(run("fwd/print").lines, ["vde1:udp:53=10.1.0.50:53"]);
        assert_eq!(run("fwd/frob").status, 1038);
        assert!(run("help")
            .lines
            .iter()
            .any(|l| l.starts_with("fwd/add SPEC")));
    }
}
