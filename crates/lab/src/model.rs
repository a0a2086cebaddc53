//! The topology file: what a user writes (serde types with spans) and its validation into a
//! [`Lab`] whose every reference is resolved. Errors name the file's line, the key and what was
//! expected.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

/// The most switches + links + nodes + remotes a file may declare: each is at least one
/// process, and far more than this machine could run.
pub const MAX_ITEMS: usize = 2000;
/// The most ports a switch may have (filo switch -n).
pub const MAX_PORTS: u16 = 4096;

/// An error in a lab file: where (1-based line, 0 when it is about the whole file), which key,
/// and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabError {
    pub line: usize,
    pub key: String,
    pub message: String,
}

impl fmt::Display for LabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.key.is_empty()) {
            (0, true) => write!(f, "{}", self.message),
            (0, false) => write!(f, "{}: {}", self.key, self.message),
            (l, true) => write!(f, "line {l}: {}", self.message),
            (l, false) => write!(f, "line {l}: {}: {}", self.key, self.message),
        }
    }
}

impl std::error::Error for LabError {}

/// A number or a string in the file (`loss = 5`, `delay = "20+5N"`).
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(untagged)]
pub enum Number {
    Int(i64),
    Float(f64),
    Text(String),
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Number::Int(n) => write!(f, "{n}"),
            Number::Float(n) => write!(f, "{n}"),
            Number::Text(t) => write!(f, "{t}"),
        }
    }
}

/// A command: a string run by `sh -c`, or an argument vector.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(untagged)]
pub enum CommandLine {
    Shell(String),
    Argv(Vec<String>),
}

impl CommandLine {
    /// As the user wrote it, for messages.
    pub fn text(&self) -> String {
        match self {
            CommandLine::Shell(s) => s.clone(),
            CommandLine::Argv(v) => v.join(" "),
        }
    }

    /// The argument vector to execute.
    pub fn argv(&self) -> Vec<String> {
        match self {
            CommandLine::Shell(s) => vec!["sh".into(), "-c".into(), s.clone()],
            CommandLine::Argv(v) => v.clone(),
        }
    }

    /// The words of a command that runs without a shell (a `userstack` node's): a string is
    /// split at whitespace, an array taken as it is.
    pub fn words(&self) -> Vec<String> {
        match self {
            CommandLine::Shell(s) => s.split_whitespace().map(String::from).collect(),
            CommandLine::Argv(v) => v.clone(),
        }
    }
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct FileDef {
    name: Option<Spanned<String>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    switch: BTreeMap<String, Spanned<SwitchDef>>,
    #[serde(default)]
    link: Vec<Spanned<LinkDef>>,
    #[serde(default)]
    node: BTreeMap<String, Spanned<NodeDef>>,
    #[serde(default)]
    remote: BTreeMap<String, Spanned<RemoteDef>>,
    #[serde(default)]
    bus: BTreeMap<String, Spanned<BusDef>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct BusDef {
    policy: Option<Spanned<String>>,
    #[serde(default)]
    lossless: bool,
    #[serde(default)]
    vnet: bool,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct SwitchDef {
    ports: Option<Spanned<u16>>,
    #[serde(default)]
    hub: bool,
    #[serde(default)]
    stp: bool,
    #[serde(default)]
    vlan: Vec<Spanned<VlanDef>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct VlanDef {
    id: Spanned<u16>,
    #[serde(default)]
    untagged: Vec<Spanned<u16>>,
    #[serde(default)]
    tagged: Vec<Spanned<u16>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct LinkDef {
    name: Option<Spanned<String>>,
    a: Spanned<String>,
    b: Spanned<String>,
    loss: Option<Spanned<Number>>,
    lostburst: Option<Spanned<Number>>,
    delay: Option<Spanned<Number>>,
    jitter: Option<Spanned<Number>>,
    dup: Option<Spanned<Number>>,
    bandwidth: Option<Spanned<Number>>,
    speed: Option<Spanned<Number>>,
    capacity: Option<Spanned<Number>>,
    noise: Option<Spanned<Number>>,
    mtu: Option<Spanned<Number>>,
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    Ns,
    Stack,
    Qemu,
    Tap,
    Slirp,
    Router,
    /// A process with its own user-space filo stack (`filo stack COMMAND`): no root, no
    /// /dev/net/tun, no namespace.
    Userstack,
}

/// The `filo stack` commands a `userstack` node may run.
pub const USERSTACK_COMMANDS: [&str; 4] = ["http-serve", "perf", "ping", "fetch"];

impl NodeKind {
    pub fn name(self) -> &'static str {
        match self {
            NodeKind::Ns => "ns",
            NodeKind::Stack => "stack",
            NodeKind::Qemu => "qemu",
            NodeKind::Tap => "tap",
            NodeKind::Slirp => "slirp",
            NodeKind::Router => "router",
            NodeKind::Userstack => "userstack",
        }
    }
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct NodeDef {
    kind: Spanned<NodeKind>,
    #[serde(default)]
    net: Vec<Spanned<String>>,
    #[serde(default)]
    ip: Vec<Spanned<String>>,
    gw: Option<Spanned<String>>,
    #[serde(default)]
    dns: Vec<Spanned<String>>,
    #[serde(default)]
    dhcp: bool,
    #[serde(default)]
    slaac: bool,
    mtu: Option<Spanned<u32>>,
    hostname: Option<String>,
    command: Option<Spanned<CommandLine>>,
    #[serde(default)]
    run: Vec<Spanned<CommandLine>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    ifname: Option<Spanned<String>>,
    dhcp_start: Option<Spanned<String>>,
    #[serde(default)]
    tcpfwd: Vec<Spanned<String>>,
    #[serde(default)]
    udpfwd: Vec<Spanned<String>>,
    #[serde(default)]
    hostloopback: bool,
    #[serde(default)]
    conf: Vec<Spanned<String>>,
    #[serde(default)]
    route: Vec<Spanned<String>>,
    #[serde(default)]
    dhcp_server: Vec<Spanned<String>>,
    #[serde(default)]
    radv: Vec<Spanned<String>>,
    #[serde(default)]
    masquerade: Vec<Spanned<String>>,
    #[serde(default)]
    filter: Vec<Spanned<String>>,
    filter_file: Option<Spanned<String>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RemoteDef {
    switch: Spanned<String>,
    vnl: Spanned<String>,
}

/// A validated lab: every name resolved, every value checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Lab {
    pub name: String,
    pub env: BTreeMap<String, String>,
    pub switches: Vec<Switch>,
    pub links: Vec<Link>,
    pub nodes: Vec<Node>,
    pub remotes: Vec<Remote>,
    /// `ipn://` buses in shared memory, joined like switches.
    pub buses: Vec<Bus>,
}

/// An `ipn://` bus (`filo ipn`): who receives a frame, and whether senders wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bus {
    pub name: String,
    /// `hub`, `switch` or `mpegts`.
    pub policy: String,
    pub lossless: bool,
    /// Frames carry a virtio-net header (TCP super-frames): only `ns` and `router` nodes
    /// join such a bus.
    pub vnet: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Switch {
    pub name: String,
    pub ports: u16,
    pub hub: bool,
    pub stp: bool,
    pub vlans: Vec<Vlan>,
    /// Made by the lab for a link to a node (the node's side of the impaired cable).
    pub hidden: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vlan {
    pub id: u16,
    pub untagged: Vec<u16>,
    pub tagged: Vec<u16>,
}

/// One side of a cable: a switch and maybe a fixed port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attach {
    /// A switch's name, or a bus's when `bus`.
    pub switch: String,
    pub port: Option<u16>,
    /// The name is an `ipn://` bus's: no ports.
    pub bus: bool,
}

/// The impairments of a link, as `filo wirefilter` options (name, value).
pub type Impairments = Vec<(String, String)>;

#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub name: String,
    pub a: Attach,
    pub b: Attach,
    /// What the user wrote for each side (a switch, `switch:port` or a node).
    pub a_label: String,
    pub b_label: String,
    pub impairments: Impairments,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    pub kind: NodeKind,
    /// One interface per entry, in order.
    pub net: Vec<Attach>,
    pub ip: Vec<String>,
    pub gw: Option<String>,
    pub dns: Vec<String>,
    pub dhcp: bool,
    pub slaac: bool,
    pub mtu: Option<u32>,
    pub hostname: Option<String>,
    pub command: Option<CommandLine>,
    pub run: Vec<CommandLine>,
    pub env: BTreeMap<String, String>,
    pub ifname: Option<String>,
    /// A slirp node's gateway: its `filo slirp` options.
    pub slirp: Option<Slirp>,
    /// A router node's `filo router` options.
    pub router: Option<RouterDef>,
}

/// What a router node passes to `filo router` (interfaces are `vde0`, `vde1`, … in `net`
/// order; the lab file may name them by their switch).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouterDef {
    /// One iothconf per interface (`ip=…,gw=…,mtu=…`), in `net` order.
    pub conf: Vec<String>,
    /// Static routes, `PREFIX via ADDR`.
    pub routes: Vec<(String, String)>,
    /// DHCPv4 servers, `vdeN=FIRST-LAST`.
    pub dhcp_server: Vec<String>,
    pub radv: Vec<String>,
    pub masquerade: Vec<String>,
    /// Filter rules given inline (the lab writes them to a file).
    pub filter: Vec<String>,
    /// A filter file of the user's.
    pub filter_file: Option<String>,
}

/// What a slirp node passes to `filo slirp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slirp {
    /// The gateway's options as a slirp:// VNL (addresses, DHCP start, DNS, MTU, hostloopback).
    pub vnl: String,
    /// Host → guest forwards, `[HOSTIP:]HOSTPORT:GUESTIP:GUESTPORT`.
    pub tcpfwd: Vec<String>,
    pub udpfwd: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub name: String,
    pub switch: String,
    /// A fixed port for the segment's cable (`switch = "lan:3"`).
    pub port: Option<u16>,
    pub vnl: String,
}

/// The wirefilter options a link may set, in `filo wirefilter`'s order.
pub const IMPAIRMENTS: [&str; 9] = [
    "loss",
    "lostburst",
    "delay",
    "dup",
    "bandwidth",
    "speed",
    "capacity",
    "noise",
    "mtu",
];

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The key written on a line (`key = ...` or a `[table]` header), for errors toml reports
/// without it.
fn key_on_line(text: &str, line: usize) -> String {
    let l = text
        .lines()
        .nth(line.saturating_sub(1))
        .unwrap_or("")
        .trim();
    if let Some(h) = l.strip_prefix('[') {
        return h.trim_matches(|c| c == '[' || c == ']').trim().to_string();
    }
    match l.split_once('=') {
        Some((k, _)) => k.trim().to_string(),
        None => String::new(),
    }
}

struct Ctx<'a> {
    text: &'a str,
}

impl Ctx<'_> {
    fn err(
        &self,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> LabError {
        LabError {
            line: line_of(self.text, span.start),
            key: key.into(),
            message: message.into(),
        }
    }
}

/// A name the user gives to a switch, node, link or remote: it becomes part of file names.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid name: expected 1 to 32 letters, digits, '-' or '_'"
        ))
    }
}

/// `ADDR/LEN` with LEN in range for the address family.
fn check_cidr(text: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "{text:?}: expected an address with its prefix length, e.g. 10.0.0.1/24 or fd00::1/64"
        )
    };
    let (addr, len) = text.split_once('/').ok_or_else(bad)?;
    let addr: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(bad());
    }
    Ok(())
}

/// Parses a lab file. `file_name` gives the default lab name (its stem).
pub fn parse(text: &str, default_name: &str) -> Result<Lab, LabError> {
    let def: FileDef = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(0, |s| line_of(text, s.start));
        let key = if line > 0 {
            key_on_line(text, line)
        } else {
            String::new()
        };
        LabError {
            line,
            key,
            message: e.message().to_string(),
        }
    })?;
    validate(&Ctx { text }, def, default_name)
}

fn validate(cx: &Ctx<'_>, def: FileDef, default_name: &str) -> Result<Lab, LabError> {
    let name = match &def.name {
        Some(n) => {
            check_name(n.get_ref()).map_err(|m| cx.err(n.span(), "name", m))?;
            n.get_ref().clone()
        }
        None => {
            check_name(default_name).map_err(|m| LabError {
                line: 0,
                key: "name".into(),
                message: format!("no `name` in the file and the file's name is not one: {m}"),
            })?;
            default_name.to_string()
        }
    };
    let count = def.switch.len() + def.link.len() + def.node.len() + def.remote.len();
    if count > MAX_ITEMS {
        return Err(LabError {
            line: 0,
            key: String::new(),
            message: format!(
                "{count} switches, links, nodes and remotes: at most {MAX_ITEMS} are supported"
            ),
        });
    }
    // Every name is unique across switches, nodes and remotes (links name either).
    let mut owners: BTreeMap<String, &'static str> = BTreeMap::new();
    let mut claim = |n: &str, what: &'static str, span: Range<usize>, key: String| {
        check_name(n).map_err(|m| cx.err(span.clone(), key.clone(), m))?;
        if let Some(other) = owners.insert(n.to_string(), what) {
            return Err(cx.err(
                span,
                key,
                format!("the name {n:?} is already used by a {other}: names must be unique"),
            ));
        }
        Ok(())
    };
    for (n, s) in &def.switch {
        claim(n, "switch", s.span(), format!("switch.{n}"))?;
    }
    for (n, s) in &def.node {
        claim(n, "node", s.span(), format!("node.{n}"))?;
    }
    for (n, s) in &def.remote {
        claim(n, "remote", s.span(), format!("remote.{n}"))?;
    }
    for (n, s) in &def.bus {
        claim(n, "bus", s.span(), format!("bus.{n}"))?;
    }
    let mut buses = Vec::new();
    for (n, b) in &def.bus {
        let d = b.get_ref();
        let policy = match &d.policy {
            Some(p) if !matches!(p.get_ref().as_str(), "hub" | "switch" | "mpegts") => {
                return Err(cx.err(
                    p.span(),
                    format!("bus.{n}.policy"),
                    format!("{:?}: expected hub, switch or mpegts", p.get_ref()),
                ))
            }
            Some(p) => p.get_ref().clone(),
            None => "hub".to_string(),
        };
        buses.push(Bus {
            name: n.clone(),
            policy,
            lossless: d.lossless,
            vnet: d.vnet,
        });
    }
    let bus_names: BTreeSet<String> = buses.iter().map(|b| b.name.clone()).collect();
    let vnet_buses: BTreeSet<String> = buses
        .iter()
        .filter(|b| b.vnet)
        .map(|b| b.name.clone())
        .collect();

    let mut switches = Vec::new();
    for (n, s) in &def.switch {
        let s = s.get_ref();
        let ports = match &s.ports {
            Some(p) if *p.get_ref() == 0 || *p.get_ref() > MAX_PORTS => {
                return Err(cx.err(
                    p.span(),
                    format!("switch.{n}.ports"),
                    format!("{}: expected 1 to {MAX_PORTS}", p.get_ref()),
                ))
            }
            Some(p) => *p.get_ref(),
            None => 32,
        };
        let mut vlans = Vec::new();
        let mut ids = BTreeSet::new();
        for v in &s.vlan {
            let key = format!("switch.{n}.vlan");
            let vd = v.get_ref();
            let id = *vd.id.get_ref();
            if !(1..=4094).contains(&id) {
                return Err(cx.err(
                    vd.id.span(),
                    format!("{key}.id"),
                    format!("{id}: expected a VLAN id from 1 to 4094"),
                ));
            }
            if !ids.insert(id) {
                return Err(cx.err(
                    vd.id.span(),
                    format!("{key}.id"),
                    format!("VLAN {id} is declared twice"),
                ));
            }
            for p in vd.untagged.iter().chain(&vd.tagged) {
                if *p.get_ref() >= ports {
                    return Err(cx.err(
                        p.span(),
                        key.clone(),
                        format!(
                            "port {} does not exist: switch {n} has ports 0 to {}",
                            p.get_ref(),
                            ports - 1
                        ),
                    ));
                }
            }
            vlans.push(Vlan {
                id,
                untagged: vd.untagged.iter().map(|p| *p.get_ref()).collect(),
                tagged: vd.tagged.iter().map(|p| *p.get_ref()).collect(),
            });
        }
        switches.push(Switch {
            name: n.clone(),
            ports,
            hub: s.hub,
            stp: s.stp,
            vlans,
            hidden: false,
        });
    }

    let port_count =
        |sw: &str, switches: &[Switch]| switches.iter().find(|s| s.name == sw).map(|s| s.ports);
    // Fixed ports in use: (switch, port) -> who.
    let mut used_ports: BTreeMap<(String, u16), String> = BTreeMap::new();
    let mut attach = |text: &Spanned<String>,
                      key: &str,
                      who: &str,
                      switches: &[Switch]|
     -> Result<Attach, LabError> {
        let t = text.get_ref();
        let (sw, port) = match t.split_once(':') {
            Some((sw, p)) => {
                let port = p.parse::<u16>().map_err(|_| {
                    cx.err(
                        text.span(),
                        key,
                        format!("{t:?}: expected SWITCH or SWITCH:PORT with a port number"),
                    )
                })?;
                (sw, Some(port))
            }
            None => (t.as_str(), None),
        };
        if bus_names.contains(sw) {
            if port.is_some() {
                return Err(cx.err(
                    text.span(),
                    key,
                    format!("{t:?}: {sw} is a bus, which has no ports: expected just {sw:?}"),
                ));
            }
            if vnet_buses.contains(sw) && !who.starts_with("node ") {
                return Err(cx.err(
                    text.span(),
                    key,
                    format!(
                        "bus {sw} carries the virtio-net framing (vnet = true), which the {who} \
                         does not speak: expected a switch or a bus without vnet"
                    ),
                ));
            }
            return Ok(Attach {
                switch: sw.to_string(),
                port: None,
                bus: true,
            });
        }
        let ports = port_count(sw, switches).ok_or_else(|| {
            let known: Vec<&str> = switches
                .iter()
                .filter(|s| !s.hidden)
                .map(|s| s.name.as_str())
                .collect();
            cx.err(
                text.span(),
                key,
                format!(
                    "{sw:?} is not a switch of this lab (switches: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            )
        })?;
        if let Some(p) = port {
            if p >= ports {
                return Err(cx.err(
                    text.span(),
                    key,
                    format!(
                        "port {p} does not exist: switch {sw} has ports 0 to {}",
                        ports - 1
                    ),
                ));
            }
            if let Some(other) = used_ports.insert((sw.to_string(), p), who.to_string()) {
                return Err(cx.err(
                    text.span(),
                    key,
                    format!("port {p} of switch {sw} is already taken by {other}"),
                ));
            }
        }
        Ok(Attach {
            switch: sw.to_string(),
            port,
            bus: false,
        })
    };

    // Links: switch-switch, or switch-node (the node side gets a hidden hub).
    let mut links = Vec::new();
    // Which switches links join (union-find by name), to catch loops without spanning tree.
    let mut joined: BTreeMap<String, String> = BTreeMap::new();
    fn root_of(joined: &mut BTreeMap<String, String>, x: &str) -> String {
        let mut r = x.to_string();
        while let Some(p) = joined.get(&r).filter(|p| **p != r) {
            r = p.clone();
        }
        joined.insert(x.to_string(), r.clone());
        r
    }
    let mut node_links: BTreeMap<String, Vec<Attach>> = BTreeMap::new();
    let mut link_names = BTreeSet::new();
    for (i, l) in def.link.iter().enumerate() {
        let ld = l.get_ref();
        let key = format!("link[{i}]");
        let is_node = |s: &Spanned<String>| def.node.contains_key(s.get_ref().as_str());
        let lname = match &ld.name {
            Some(n) => {
                check_name(n.get_ref()).map_err(|m| cx.err(n.span(), format!("{key}.name"), m))?;
                n.get_ref().clone()
            }
            None => {
                let base = |s: &str| s.split(':').next().unwrap_or(s).to_string();
                format!("{}-{}", base(ld.a.get_ref()), base(ld.b.get_ref()))
            }
        };
        if !link_names.insert(lname.clone()) {
            return Err(cx.err(
                ld.name.as_ref().map_or(l.span(), |n| n.span()),
                format!("{key}.name"),
                format!("a second link named {lname:?}: give each link between the same two ends a `name`"),
            ));
        }
        if owners.contains_key(&lname) {
            return Err(cx.err(
                ld.name.as_ref().map_or(l.span(), |n| n.span()),
                format!("{key}.name"),
                format!("the link name {lname:?} is also a switch, node or remote: names must be unique"),
            ));
        }
        let who = format!("link {lname}");
        let (a, b) = match (is_node(&ld.a), is_node(&ld.b)) {
            (true, true) => {
                return Err(cx.err(
                    ld.b.span(),
                    format!("{key}.b"),
                    "both ends are nodes: expected a switch on at least one side",
                ))
            }
            (false, false) => (
                attach(&ld.a, &format!("{key}.a"), &who, &switches)?,
                attach(&ld.b, &format!("{key}.b"), &who, &switches)?,
            ),
            (a_node, _) => {
                let (sw_side, node_side, sw_key) = if a_node {
                    (&ld.b, &ld.a, "b")
                } else {
                    (&ld.a, &ld.b, "a")
                };
                let sw = attach(sw_side, &format!("{key}.{sw_key}"), &who, &switches)?;
                let hub = format!("{lname}_end");
                if owners.contains_key(&hub) || switches.iter().any(|s| s.name == hub) {
                    return Err(cx.err(
                        ld.name.as_ref().map_or(l.span(), |n| n.span()),
                        format!("{key}.name"),
                        format!("link {lname} to a node needs a switch of its own named {hub:?}, and that name is taken: rename the link"),
                    ));
                }
                switches.push(Switch {
                    name: hub.clone(),
                    ports: 4,
                    hub: true,
                    stp: false,
                    vlans: Vec::new(),
                    hidden: true,
                });
                node_links
                    .entry(node_side.get_ref().clone())
                    .or_default()
                    .push(Attach {
                        switch: hub.clone(),
                        port: None,
                        bus: false,
                    });
                let hub_side = Attach {
                    switch: hub,
                    port: None,
                    bus: false,
                };
                if a_node {
                    (hub_side, sw)
                } else {
                    (sw, hub_side)
                }
            }
        };
        if a.switch == b.switch {
            return Err(cx.err(
                ld.b.span(),
                format!("{key}.b"),
                format!(
                    "both ends are on switch {}: a link joins two different switches",
                    a.switch
                ),
            ));
        }
        let mut impairments = Vec::new();
        let fields = [
            ("loss", &ld.loss),
            ("lostburst", &ld.lostburst),
            ("delay", &ld.delay),
            ("dup", &ld.dup),
            ("bandwidth", &ld.bandwidth),
            ("speed", &ld.speed),
            ("capacity", &ld.capacity),
            ("noise", &ld.noise),
            ("mtu", &ld.mtu),
        ];
        for (k, v) in fields {
            let Some(v) = v else { continue };
            let mut text = v.get_ref().to_string();
            if k == "delay" {
                if let Some(j) = &ld.jitter {
                    text = format!("{text}+{}", j.get_ref());
                }
            }
            check_impairment(k, &text).map_err(|m| cx.err(v.span(), format!("{key}.{k}"), m))?;
            impairments.push((k.to_string(), text));
        }
        if let (Some(j), None) = (&ld.jitter, &ld.delay) {
            return Err(cx.err(
                j.span(),
                format!("{key}.jitter"),
                "jitter varies the delay: expected a `delay` beside it",
            ));
        }
        let (ra, rb) = (
            root_of(&mut joined, &a.switch),
            root_of(&mut joined, &b.switch),
        );
        if ra == rb {
            let component: Vec<&Switch> = switches
                .iter()
                .filter(|s| root_of(&mut joined, &s.name) == ra)
                .collect();
            let without: Vec<&str> = component
                .iter()
                .filter(|s| !s.stp)
                .map(|s| s.name.as_str())
                .collect();
            if !without.is_empty() {
                return Err(cx.err(
                    l.span(),
                    key.clone(),
                    format!(
                        "link {lname} closes a loop of switches without spanning tree ({}): expected stp = true on each switch of the loop, or frames would circle forever",
                        without.join(", ")
                    ),
                ));
            }
        }
        joined.insert(ra, rb);
        links.push(Link {
            name: lname,
            a,
            b,
            a_label: ld.a.get_ref().clone(),
            b_label: ld.b.get_ref().clone(),
            impairments,
        });
    }

    let mut nodes = Vec::new();
    for (n, nd) in &def.node {
        let d = nd.get_ref();
        let key = format!("node.{n}");
        let kind = *d.kind.get_ref();
        let mut net = Vec::new();
        for a in &d.net {
            let at = attach(a, &format!("{key}.net"), &format!("node {n}"), &switches)?;
            if at.bus
                && vnet_buses.contains(&at.switch)
                && !matches!(kind, NodeKind::Ns | NodeKind::Router)
            {
                return Err(cx.err(
                    a.span(),
                    format!("{key}.net"),
                    format!(
                        "bus {} carries the virtio-net framing (vnet = true), which a {} node \
                         does not speak: expected an ns or router node, or a bus without vnet",
                        at.switch,
                        kind.name()
                    ),
                ));
            }
            net.push(at);
        }
        net.extend(node_links.remove(n).unwrap_or_default());
        if net.is_empty() {
            return Err(cx.err(
                nd.span(),
                format!("{key}.net"),
                format!("node {n} is on no network: expected `net = [\"SWITCH\"]` or a link to it"),
            ));
        }
        for ip in &d.ip {
            check_cidr(ip.get_ref()).map_err(|m| cx.err(ip.span(), format!("{key}.ip"), m))?;
        }
        for (field, v) in
            d.gw.iter()
                .map(|g| ("gw", g))
                .chain(d.dns.iter().map(|g| ("dns", g)))
        {
            v.get_ref().parse::<std::net::IpAddr>().map_err(|_| {
                cx.err(
                    v.span(),
                    format!("{key}.{field}"),
                    format!("{:?}: expected an IP address", v.get_ref()),
                )
            })?;
        }
        if let Some(m) = &d.mtu {
            if !(1280..=65000).contains(m.get_ref()) {
                return Err(cx.err(
                    m.span(),
                    format!("{key}.mtu"),
                    format!("{}: expected 1280 to 65000", m.get_ref()),
                ));
            }
        }
        let has_conf = !d.ip.is_empty() || d.gw.is_some() || !d.dns.is_empty() || d.dhcp || d.slaac;
        match kind {
            NodeKind::Ns | NodeKind::Slirp | NodeKind::Router => {}
            NodeKind::Stack => {
                if net.len() != 1 {
                    return Err(cx.err(
                        nd.span(),
                        format!("{key}.net"),
                        "a stack node has exactly one interface",
                    ));
                }
                if let Some(c) = &d.command {
                    return Err(cx.err(c.span(), format!("{key}.command"), "a stack node runs no command of its own: use `run` (each runs in the stack through mstack)"));
                }
            }
            NodeKind::Userstack => {
                if net.len() != 1 {
                    return Err(cx.err(
                        nd.span(),
                        format!("{key}.net"),
                        "a userstack node has exactly one interface",
                    ));
                }
                let first = d.command.as_ref().map(|c| (c.span(), c.get_ref().words()));
                match first {
                    None => return Err(cx.err(nd.span(), format!("{key}.command"), format!("a userstack node needs its `command`: a `filo stack` command, one of {} (e.g. \"http-serve www\")", USERSTACK_COMMANDS.join(", ")))),
                    Some((span, argv)) if !argv.first().is_some_and(|c| USERSTACK_COMMANDS.contains(&c.as_str())) => return Err(cx.err(span, format!("{key}.command"), format!("{:?}: expected a `filo stack` command, one of {}", argv.join(" "), USERSTACK_COMMANDS.join(", ")))),
                    Some(_) => {}
                }
                if let Some(r) = d.run.first() {
                    return Err(cx.err(r.span(), format!("{key}.run"), "a userstack node is one process: it takes no `run` (start another userstack node instead)"));
                }
            }
            NodeKind::Qemu => {
                if d.command.is_none() {
                    return Err(cx.err(nd.span(), format!("{key}.command"), "a qemu node needs its `command` (the VM's command line; the lab adds -nic vde,sock=...)"));
                }
                if has_conf {
                    return Err(cx.err(d.kind.span(), format!("{key}.kind"), "a qemu node configures its addresses inside the VM: ip, gw, dns, dhcp and slaac are for ns and stack nodes"));
                }
            }
            NodeKind::Tap => {
                if net.len() != 1 {
                    return Err(cx.err(
                        nd.span(),
                        format!("{key}.net"),
                        "a tap node has exactly one interface",
                    ));
                }
                match &d.ifname {
                    Some(i)
                        if i.get_ref().is_empty()
                            || i.get_ref().len() > 15
                            || i.get_ref().contains(['/', ' ']) =>
                    {
                        return Err(cx.err(
                            i.span(),
                            format!("{key}.ifname"),
                            format!(
                                "{:?}: expected an interface name of 1 to 15 characters",
                                i.get_ref()
                            ),
                        ))
                    }
                    Some(_) => {}
                    None => return Err(cx.err(
                        nd.span(),
                        format!("{key}.ifname"),
                        "a tap node needs `ifname` (the kernel interface to create, e.g. \"tap0\")",
                    )),
                }
                if d.command.is_some() || !d.run.is_empty() || has_conf {
                    return Err(cx.err(d.kind.span(), format!("{key}.kind"), "a tap node is only a kernel interface: configure it on the host (ip addr add ...)"));
                }
            }
        }
        let slirp = if kind == NodeKind::Slirp {
            Some(slirp_of(cx, &key, nd, &net)?)
        } else {
            let fields = [
                ("dhcp_start", d.dhcp_start.as_ref().map(|s| s.span())),
                ("tcpfwd", d.tcpfwd.first().map(|s| s.span())),
                ("udpfwd", d.udpfwd.first().map(|s| s.span())),
                ("hostloopback", d.hostloopback.then(|| d.kind.span())),
            ];
            if let Some((f, span)) = fields.into_iter().find_map(|(f, s)| s.map(|s| (f, s))) {
                return Err(cx.err(
                    span,
                    format!("{key}.{f}"),
                    format!("only slirp nodes take `{f}`"),
                ));
            }
            None
        };
        let router = if kind == NodeKind::Router {
            Some(router_of(cx, &key, nd, &net)?)
        } else {
            let fields = [
                ("conf", d.conf.first().map(|s| s.span())),
                ("route", d.route.first().map(|s| s.span())),
                ("dhcp_server", d.dhcp_server.first().map(|s| s.span())),
                ("radv", d.radv.first().map(|s| s.span())),
                ("masquerade", d.masquerade.first().map(|s| s.span())),
                ("filter", d.filter.first().map(|s| s.span())),
                ("filter_file", d.filter_file.as_ref().map(|s| s.span())),
            ];
            if let Some((f, span)) = fields.into_iter().find_map(|(f, s)| s.map(|s| (f, s))) {
                return Err(cx.err(
                    span,
                    format!("{key}.{f}"),
                    format!("only router nodes take `{f}`"),
                ));
            }
            None
        };
        if kind != NodeKind::Tap {
            if let Some(i) = &d.ifname {
                return Err(cx.err(
                    i.span(),
                    format!("{key}.ifname"),
                    "only tap nodes take `ifname`",
                ));
            }
        }
        for c in d.command.iter().chain(&d.run) {
            if let CommandLine::Argv(v) = c.get_ref() {
                if v.is_empty() {
                    return Err(cx.err(
                        c.span(),
                        format!("{key}.command"),
                        "an empty command: expected a string or [\"program\", \"arg\", ...]",
                    ));
                }
            }
        }
        nodes.push(Node {
            name: n.clone(),
            kind,
            net,
            ip: d.ip.iter().map(|s| s.get_ref().clone()).collect(),
            gw: d.gw.as_ref().map(|s| s.get_ref().clone()),
            dns: d.dns.iter().map(|s| s.get_ref().clone()).collect(),
            dhcp: d.dhcp,
            slaac: d.slaac,
            mtu: d.mtu.as_ref().map(|m| *m.get_ref()),
            hostname: d.hostname.clone(),
            command: d.command.as_ref().map(|c| c.get_ref().clone()),
            run: d.run.iter().map(|c| c.get_ref().clone()).collect(),
            env: d.env.clone(),
            ifname: d.ifname.as_ref().map(|s| s.get_ref().clone()),
            slirp,
            router,
        });
    }

    let mut remotes = Vec::new();
    for (n, r) in &def.remote {
        let d = r.get_ref();
        let key = format!("remote.{n}");
        let a = attach(
            &d.switch,
            &format!("{key}.switch"),
            &format!("remote {n}"),
            &switches,
        )?;
        let v = d.vnl.get_ref();
        let parsed = filo_vnl::Vnl::parse(v)
            .map_err(|e| cx.err(d.vnl.span(), format!("{key}.vnl"), e.to_string()))?;
        if !matches!(parsed.module(), "vxvde" | "vxlan") {
            return Err(cx.err(
                d.vnl.span(),
                format!("{key}.vnl"),
                format!("{v:?}: expected a vxvde:// or vxlan:// VNL (a segment other hosts join)"),
            ));
        }
        remotes.push(Remote {
            name: n.clone(),
            switch: a.switch,
            port: a.port,
            vnl: v.clone(),
        });
    }

    Ok(Lab {
        name,
        env: def.env,
        switches,
        links,
        nodes,
        remotes,
        buses,
    })
}

/// A slirp node's options, checked as `filo slirp` will read them: `ip` gives the gateway's
/// addresses (one IPv4, one IPv6), `dns` its DNS relay's, `dhcp_start` the first address
/// its DHCP server leases.
fn slirp_of(
    cx: &Ctx<'_>,
    key: &str,
    nd: &Spanned<NodeDef>,
    net: &[Attach],
) -> Result<Slirp, LabError> {
    let d = nd.get_ref();
    if net.len() != 1 {
        return Err(cx.err(
            nd.span(),
            format!("{key}.net"),
            "a slirp node has exactly one interface",
        ));
    }
    if d.command.is_some()
        || !d.run.is_empty()
        || d.gw.is_some()
        || d.dhcp
        || d.slaac
        || d.hostname.is_some()
    {
        return Err(cx.err(d.kind.span(), format!("{key}.kind"), "a slirp node is a NAT gateway, not a host: it takes ip, dns, dhcp_start, mtu, tcpfwd, udpfwd and hostloopback (no command, run, gw, dhcp, slaac or hostname)"));
    }
    let mut opts = Vec::new();
    let (mut v4, mut v6) = (false, false);
    for ip in &d.ip {
        let text = ip.get_ref();
        let six = text.contains(':');
        let seen = if six { &mut v6 } else { &mut v4 };
        if std::mem::replace(seen, true) {
            return Err(cx.err(
                ip.span(),
                format!("{key}.ip"),
                format!("{text:?}: a slirp gateway has one IPv4 and one IPv6 address"),
            ));
        }
        opts.push(format!("{}='{text}'", if six { "addr6" } else { "addr" }));
    }
    if let Some(s) = &d.dhcp_start {
        opts.push(format!("dhcp={}", s.get_ref()));
    }
    for dns in &d.dns {
        let text = dns.get_ref();
        opts.push(format!(
            "{}={text}",
            if text.contains(':') {
                "vnameserver6"
            } else {
                "vnameserver"
            }
        ));
    }
    if let Some(m) = &d.mtu {
        opts.push(format!("mtu={}", m.get_ref()));
    }
    if d.hostloopback {
        opts.push("hostloopback".into());
    }
    let vnl = format!("slirp:///{}", opts.join("/"));
    if let Err(e) = filo_slirp::config_from_text(&vnl) {
        // Name the field the gateway's message is about.
        let text = e.to_string();
        let (field, span) = [
            ("vnameserver", "dns", d.dns.first().map(|s| s.span())),
            (
                "dhcp",
                "dhcp_start",
                d.dhcp_start.as_ref().map(|s| s.span()),
            ),
            ("addr", "ip", d.ip.first().map(|s| s.span())),
            ("mtu", "mtu", d.mtu.as_ref().map(|s| s.span())),
        ]
        .into_iter()
        .find(|(opt, _, span)| span.is_some() && text.contains(&format!("option {opt}")))
        .map_or(("kind", d.kind.span()), |(_, f, s)| {
            (f, s.unwrap_or_else(|| d.kind.span()))
        });
        return Err(cx.err(span, format!("{key}.{field}"), text));
    }
    let fwd = |list: &[Spanned<String>], proto, field: &str| {
        list.iter()
            .map(|f| {
                filo_slirp::Forward::parse(proto, f.get_ref())
                    .map(|_| f.get_ref().clone())
                    .map_err(|m| cx.err(f.span(), format!("{key}.{field}"), m))
            })
            .collect::<Result<Vec<String>, LabError>>()
    };
    Ok(Slirp {
        vnl,
        tcpfwd: fwd(&d.tcpfwd, filo_slirp::Proto::Tcp, "tcpfwd")?,
        udpfwd: fwd(&d.udpfwd, filo_slirp::Proto::Udp, "udpfwd")?,
    })
}

/// A router node's options, checked as `filo router` reads them. `dhcp_server`, `radv` and
/// `masquerade` name an interface as `vdeN` or by the switch it is on.
fn router_of(
    cx: &Ctx<'_>,
    key: &str,
    nd: &Spanned<NodeDef>,
    net: &[Attach],
) -> Result<RouterDef, LabError> {
    let d = nd.get_ref();
    if d.command.is_some()
        || !d.run.is_empty()
        || !d.ip.is_empty()
        || d.gw.is_some()
        || !d.dns.is_empty()
        || d.dhcp
        || d.slaac
        || d.mtu.is_some()
        || d.hostname.is_some()
    {
        return Err(cx.err(d.kind.span(), format!("{key}.kind"), "a router node is configured per interface: it takes conf (one \"ip=…,gw=…,mtu=…\" per net), route, dhcp_server, radv, masquerade, filter and filter_file (no command, run, ip, gw, dns, dhcp, slaac, mtu or hostname)"));
    }
    if d.conf.len() > net.len() {
        return Err(cx.err(
            d.conf[net.len()].span(),
            format!("{key}.conf"),
            format!(
                "{} conf for {} net: expected one conf per interface, in net order",
                d.conf.len(),
                net.len()
            ),
        ));
    }
    let mut confs = Vec::new();
    for c in &d.conf {
        let parsed = filo_vnl::iothconf::IothConf::parse(c.get_ref()).map_err(|e| {
            cx.err(
                c.span(),
                format!("{key}.conf"),
                format!(
                    "{:?}: {e} (expected ip=ADDR/LEN,gw=ADDR,mtu=N)",
                    c.get_ref()
                ),
            )
        })?;
        if parsed.dhcp || parsed.slaac {
            return Err(cx.err(
                c.span(),
                format!("{key}.conf"),
                format!(
                    "{:?}: a router's addresses are static (no dhcp, slaac)",
                    c.get_ref()
                ),
            ));
        }
        confs.push(parsed);
    }
    let ifaces: Vec<String> = (0..net.len()).map(|i| format!("vde{i}")).collect();
    // An interface by its vdeN name or by its switch.
    let iface = |s: &Spanned<String>, field: &str, text: &str| -> Result<usize, LabError> {
        ifaces
            .iter()
            .position(|i| i == text)
            .or_else(|| net.iter().position(|a| a.switch == text))
            .ok_or_else(|| {
                let sws: Vec<&str> = net.iter().map(|a| a.switch.as_str()).collect();
                cx.err(
                    s.span(),
                    format!("{key}.{field}"),
                    format!(
                        "{text:?}: expected one of the router's interfaces, vde0..vde{} or a switch of its net ({})",
                        net.len().saturating_sub(1),
                        sws.join(", ")
                    ),
                )
            })
    };
    let mut routes = Vec::new();
    for r in &d.route {
        let err = |m: String| cx.err(r.span(), format!("{key}.route"), m);
        let words: Vec<&str> = r.get_ref().split_whitespace().collect();
        let [prefix, "via", gw] = words[..] else {
            return Err(err(format!(
                "{:?}: expected \"PREFIX via ADDR\", e.g. \"10.3.0.0/16 via 10.2.0.9\"",
                r.get_ref()
            )));
        };
        let gw_ip: std::net::IpAddr = gw
            .parse()
            .map_err(|_| err(format!("{gw:?}: expected the gateway's IP address")))?;
        if prefix != "default" {
            check_cidr(prefix).map_err(err)?;
            if prefix.contains(':') != gw_ip.is_ipv6() {
                return Err(err(format!(
                    "{prefix} via {gw}: the gateway is of the other address family"
                )));
            }
        }
        routes.push((prefix.to_string(), gw.to_string()));
    }
    let mut dhcp_server = Vec::new();
    for s in &d.dhcp_server {
        let err = || {
            cx.err(
                s.span(),
                format!("{key}.dhcp_server"),
                format!(
                    "{:?}: expected IFACE=FIRST-LAST, e.g. \"lan=10.1.0.100-10.1.0.199\"",
                    s.get_ref()
                ),
            )
        };
        let (name, range) = s.get_ref().split_once('=').ok_or_else(err)?;
        let (a, b) = range.split_once('-').ok_or_else(err)?;
        let (a, b): (std::net::Ipv4Addr, std::net::Ipv4Addr) =
            (a.parse().map_err(|_| err())?, b.parse().map_err(|_| err())?);
        let i = iface(s, "dhcp_server", name)?;
        if !confs
            .get(i)
            .is_some_and(|c| c.addrs.iter().any(|a| a.ip.is_ipv4()))
        {
            return Err(cx.err(
                s.span(),
                format!("{key}.dhcp_server"),
                format!("{name}: the interface has no IPv4 address (give its conf an ip=...)"),
            ));
        }
        dhcp_server.push(format!("vde{i}={a}-{b}"));
    }
    let names = |list: &[Spanned<String>], field: &str| {
        list.iter()
            .map(|s| iface(s, field, s.get_ref()).map(|i| format!("vde{i}")))
            .collect::<Result<Vec<String>, LabError>>()
    };
    for f in &d.filter {
        filo_router::filter::Rule::parse(f.get_ref(), &ifaces).map_err(|e| {
            cx.err(
                f.span(),
                format!("{key}.filter"),
                format!("{:?}: {e}", f.get_ref()),
            )
        })?;
    }
    if let (Some(file), Some(_)) = (&d.filter_file, d.filter.first()) {
        return Err(cx.err(
            file.span(),
            format!("{key}.filter_file"),
            "give the rules either inline (filter) or in a file (filter_file), not both",
        ));
    }
    Ok(RouterDef {
        conf: d.conf.iter().map(|c| c.get_ref().clone()).collect(),
        routes,
        dhcp_server,
        radv: names(&d.radv, "radv")?,
        masquerade: names(&d.masquerade, "masquerade")?,
        filter: d.filter.iter().map(|c| c.get_ref().clone()).collect(),
        filter_file: d.filter_file.as_ref().map(|c| c.get_ref().clone()),
    })
}

/// Checks one impairment as `filo wirefilter` will read it.
pub fn check_impairment(key: &str, value: &str) -> Result<(), String> {
    if !IMPAIRMENTS.contains(&key) {
        return Err(format!(
            "unknown impairment {key:?}: expected one of {}, jitter",
            IMPAIRMENTS.join(", ")
        ));
    }
    filo_wirefilter::parse_value(value)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

impl Lab {
    pub fn switch(&self, name: &str) -> Option<&Switch> {
        self.switches.iter().find(|s| s.name == name)
    }
    pub fn bus(&self, name: &str) -> Option<&Bus> {
        self.buses.iter().find(|b| b.name == name)
    }
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|s| s.name == name)
    }
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|s| s.name == name)
    }
    /// The node, or an error naming the lab's nodes.
    pub fn find_node(&self, name: &str) -> Result<&Node, String> {
        self.node(name).ok_or_else(|| {
            let names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
            format!(
                "lab {} has no node {name:?} (nodes: {})",
                self.name,
                names.join(", ")
            )
        })
    }
    /// The link, or an error naming the lab's links.
    pub fn find_link(&self, name: &str) -> Result<&Link, String> {
        self.link(name).ok_or_else(|| {
            let names: Vec<&str> = self.links.iter().map(|n| n.name.as_str()).collect();
            format!(
                "lab {} has no link {name:?} (links: {})",
                self.name,
                names.join(", ")
            )
        })
    }
}
