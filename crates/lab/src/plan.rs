//! The plan: which `filo` processes a lab runs, with which arguments and files, in which
//! phase. Pure: paths are computed under a state directory, nothing is started here.
//!
//! Phases start in order, and the steps of one phase in parallel: switches (and the hubs that
//! hold a node's side of an impaired link) and `ipn://` buses, then the cables (wirefilters, remote segments), slirp gateways and routers,
//! then the nodes. `run` commands follow once every node is up.

use std::path::{Path, PathBuf};

use crate::model::{Attach, CommandLine, Lab, Node, NodeKind};

/// Where a lab keeps its sockets, pid files and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(dir: impl Into<PathBuf>) -> Layout {
        Layout { dir: dir.into() }
    }
    /// The copy of the topology file the other commands read.
    pub fn lab_file(&self) -> PathBuf {
        self.dir.join("lab.toml")
    }
    /// The processes started (JSON, [`crate::state::State`]).
    pub fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    pub fn switch_dir(&self, sw: &str) -> PathBuf {
        self.dir.join("sw").join(sw)
    }
    pub fn switch_mgmt(&self, sw: &str) -> PathBuf {
        self.dir.join("sw").join(format!("{sw}.mgmt"))
    }
    pub fn switch_rc(&self, sw: &str) -> PathBuf {
        self.dir.join("sw").join(format!("{sw}.rc"))
    }
    pub fn link_mgmt(&self, link: &str) -> PathBuf {
        self.dir.join("wf").join(format!("{link}.mgmt"))
    }
    /// A slirp node's console.
    pub fn slirp_mgmt(&self, node: &str) -> PathBuf {
        self.dir.join("sl").join(format!("{node}.mgmt"))
    }
    /// A router node's console.
    pub fn router_mgmt(&self, node: &str) -> PathBuf {
        self.dir.join("rt").join(format!("{node}.mgmt"))
    }
    /// The file a router node's inline filter rules are written to.
    pub fn router_filter(&self, node: &str) -> PathBuf {
        self.dir.join("rt").join(format!("{node}.filter"))
    }
    pub fn stack_path(&self, node: &str) -> PathBuf {
        self.dir.join("st").join(node)
    }
    pub fn pidfile(&self, id: &str) -> PathBuf {
        self.dir
            .join("pid")
            .join(format!("{}.pid", id.replace(' ', "-")))
    }
    pub fn log(&self, id: &str) -> PathBuf {
        self.dir
            .join("log")
            .join(format!("{}.log", id.replace(' ', "-")))
    }
    pub fn ready(&self, node: &str) -> PathBuf {
        self.dir.join("ready").join(node)
    }
    /// Every subdirectory `up` creates.
    pub fn subdirs(&self) -> Vec<PathBuf> {
        ["sw", "bus", "wf", "sl", "rt", "st", "pid", "log", "ready"]
            .iter()
            .map(|d| self.dir.join(d))
            .collect()
    }
    /// An `ipn://` bus's path.
    pub fn bus_path(&self, bus: &str) -> PathBuf {
        self.dir.join("bus").join(bus)
    }
    /// The VNL of a cable end on a lab switch or bus.
    pub fn vnl(&self, a: &Attach) -> String {
        if a.bus {
            return format!("ipn://{}", self.bus_path(&a.switch).display());
        }
        let dir = self.switch_dir(&a.switch);
        match a.port {
            Some(p) => format!("vde://{}[{p}]", dir.display()),
            None => format!("vde://{}", dir.display()),
        }
    }
}

/// How a step's process runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// `filo … -d`: the command returns once the daemon is ready (its exit status says so)
    /// and the daemon writes `pidfile`.
    Daemon { pidfile: PathBuf },
    /// A process the lab keeps as its child: ready when `ready` exists (written by the node's
    /// wrapper once its network is configured) or, without one, when it is still running
    /// after a moment.
    Foreground { ready: Option<PathBuf> },
}

/// One process of the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// "switch sw1", "link wan", "remote r1", "node h1": how progress and errors name it.
    pub id: String,
    pub phase: u8,
    /// Run `filo` (the running binary) with `args`, else `args[0]` itself.
    pub filo: bool,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub start: Start,
    /// A file to write before starting (path, contents): a switch's rc script.
    pub file: Option<(PathBuf, String)>,
    /// Runs in the lab file's directory, so that relative paths in its command are the
    /// file's (a `userstack` node's `http-serve DIR`); others run where `filo lab up` does.
    pub in_file_dir: bool,
}

/// Console commands that set up a switch's VLANs.
pub fn vlan_script(sw: &crate::model::Switch) -> String {
    let mut s = String::new();
    for v in &sw.vlans {
        s.push_str(&format!("vlan/create {}\n", v.id));
        for p in &v.untagged {
            s.push_str(&format!("port/create {p}\nport/setvlan {p} {}\n", v.id));
        }
        for p in &v.tagged {
            s.push_str(&format!("port/create {p}\nvlan/addport {} {p}\n", v.id));
        }
    }
    s
}

/// The network flags of `filo ns` and `filo stack serve` for a node.
pub fn net_flags(n: &Node) -> Vec<String> {
    let mut a = Vec::new();
    for ip in &n.ip {
        a.extend(["--ip".to_string(), ip.clone()]);
    }
    if let Some(gw) = &n.gw {
        a.extend(["--gw".to_string(), gw.clone()]);
    }
    for d in &n.dns {
        a.extend(["--dns".to_string(), d.clone()]);
    }
    if let Some(h) = &n.hostname {
        a.extend(["--hostname".to_string(), h.clone()]);
    }
    if let Some(m) = n.mtu {
        a.extend(["--mtu".to_string(), m.to_string()]);
    }
    if n.dhcp {
        a.push("--dhcp".into());
    }
    if n.slaac {
        a.push("--slaac".into());
    }
    a
}

/// The shell wrapper an `ns` node's command runs in: it fails like a missing command does
/// (127) before saying ready, then marks the node ready and becomes the command.
pub const READY_WRAPPER: &str = "command -v \"$1\" >/dev/null 2>&1 || { echo \"$1: command not found\" >&2; exit 127; }; : > \"$0\"; exec \"$@\"";

fn env_of(lab: &Lab, n: &Node) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = lab.env.clone().into_iter().collect();
    env.extend(n.env.clone());
    env
}

/// A `filo … -d` daemon that writes its pid file at the lab's place for `id`.
fn daemon_step(
    id: String,
    phase: u8,
    layout: &Layout,
    args: Vec<String>,
    env: Vec<(String, String)>,
) -> Step {
    Step {
        start: Start::Daemon {
            pidfile: layout.pidfile(&id),
        },
        id,
        phase,
        filo: true,
        args,
        env,
        file: None,
        in_file_dir: false,
    }
}

/// A node the lab keeps as its child, `filo ARGS`, started with the other nodes.
fn filo_node_step(
    id: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    ready: Option<PathBuf>,
    in_file_dir: bool,
) -> Step {
    Step {
        start: Start::Foreground { ready },
        id,
        phase: 2,
        filo: true,
        args,
        env,
        file: None,
        in_file_dir,
    }
}

/// The environment variable `filo stack`'s servers create a ready file by (as in
/// crates/filo's stack.rs).
pub const READY_FILE_ENV: &str = "FILO_READY_FILE";

/// `filo plug -d` between two VNLs (a remote segment, a tap).
fn plug_step(id: String, phase: u8, layout: &Layout, a: String, b: String) -> Step {
    let pidfile = layout.pidfile(&id).display().to_string();
    let args = vec!["plug".into(), "-d".into(), "-p".into(), pidfile, a, b];
    daemon_step(id, phase, layout, args, Vec::new())
}

/// Every process of the lab, in phase order.
pub fn plan(lab: &Lab, layout: &Layout) -> Vec<Step> {
    let mut steps = Vec::new();
    for sw in &lab.switches {
        let id = format!("switch {}", sw.name);
        let mut args = vec![
            "switch".to_string(),
            layout.switch_dir(&sw.name).display().to_string(),
            "-M".into(),
            layout.switch_mgmt(&sw.name).display().to_string(),
            "-n".into(),
            sw.ports.to_string(),
            "-f".into(),
            layout.switch_rc(&sw.name).display().to_string(),
            "--nostdin".into(),
            "-d".into(),
            "-p".into(),
            layout.pidfile(&id).display().to_string(),
        ];
        if sw.hub {
            args.push("--hub".into());
        }
        if sw.stp {
            args.push("--stp".into());
        }
        steps.push(Step {
            start: Start::Daemon {
                pidfile: layout.pidfile(&id),
            },
            file: Some((layout.switch_rc(&sw.name), vlan_script(sw))),
            id,
            phase: 0,
            filo: true,
            args,
            env: Vec::new(),
            in_file_dir: false,
        });
    }
    for l in &lab.links {
        let id = format!("link {}", l.name);
        let mut args = vec!["wirefilter".to_string()];
        for (k, v) in &l.impairments {
            args.push(format!("--{k}={v}"));
        }
        args.extend([
            "-M".to_string(),
            layout.link_mgmt(&l.name).display().to_string(),
            "--daemon".into(),
            "--pidfile".into(),
            layout.pidfile(&id).display().to_string(),
            layout.vnl(&l.a),
            layout.vnl(&l.b),
        ]);
        steps.push(daemon_step(id, 1, layout, args, Vec::new()));
    }
    for b in &lab.buses {
        let id = format!("bus {}", b.name);
        let mut args = vec![
            "ipn".to_string(),
            layout.bus_path(&b.name).display().to_string(),
            "--policy".into(),
            b.policy.clone(),
        ];
        if b.lossless {
            args.push("--lossless".into());
        }
        if b.vnet {
            args.push("--vnet".into());
        }
        args.extend([
            "-d".to_string(),
            "--pidfile".into(),
            layout.pidfile(&id).display().to_string(),
        ]);
        steps.push(daemon_step(id, 0, layout, args, Vec::new()));
    }
    for r in &lab.remotes {
        let id = format!("remote {}", r.name);
        let sw = Attach {
            switch: r.switch.clone(),
            port: r.port,
            bus: lab.bus(&r.switch).is_some(),
        };
        steps.push(plug_step(id, 1, layout, layout.vnl(&sw), r.vnl.clone()));
    }
    for n in &lab.nodes {
        let id = format!("node {}", n.name);
        let vnls: Vec<String> = n.net.iter().map(|a| layout.vnl(a)).collect();
        let env = env_of(lab, n);
        let step = match n.kind {
            NodeKind::Ns => {
                let mut args = vec!["ns".to_string()];
                for v in &vnls {
                    args.extend(["--vnl".to_string(), v.clone()]);
                }
                args.extend(net_flags(n));
                args.extend([
                    "--".to_string(),
                    "sh".into(),
                    "-c".into(),
                    READY_WRAPPER.into(),
                    layout.ready(&n.name).display().to_string(),
                ]);
                let command = n
                    .command
                    .clone()
                    .unwrap_or(CommandLine::Argv(vec!["sleep".into(), "infinity".into()]));
                args.extend(command.argv());
                filo_node_step(id, args, env, Some(layout.ready(&n.name)), false)
            }
            NodeKind::Userstack => {
                // filo stack SUBCOMMAND --vnl V --name NODE <addresses> ARGS...
                let words = n
                    .command
                    .as_ref()
                    .map(CommandLine::words)
                    .unwrap_or_default();
                let mut args = vec!["stack".to_string()];
                args.extend(words.first().cloned());
                args.extend([
                    "--vnl".to_string(),
                    vnls[0].clone(),
                    "--name".into(),
                    n.name.clone(),
                ]);
                args.extend(net_flags(n));
                args.extend(words.iter().skip(1).cloned());
                // A server says when it listens (it creates the file FILO_READY_FILE names);
                // a client is ready once it still runs after a moment.
                let serves = match words.first().map(String::as_str) {
                    Some("http-serve") => true,
                    Some("perf") => words.iter().any(|w| w == "--server"),
                    _ => false,
                };
                let mut env = env;
                let ready = serves.then(|| layout.ready(&n.name));
                if let Some(r) = &ready {
                    env.push((READY_FILE_ENV.to_string(), r.display().to_string()));
                }
                filo_node_step(id, args, env, ready, true)
            }
            NodeKind::Stack => {
                let mut args = vec![
                    "stack".to_string(),
                    "serve".into(),
                    "-d".into(),
                    "--pidfile".into(),
                    layout.pidfile(&id).display().to_string(),
                    layout.stack_path(&n.name).display().to_string(),
                    "--vnl".into(),
                    vnls[0].clone(),
                ];
                args.extend(net_flags(n));
                daemon_step(id, 2, layout, args, env)
            }
            NodeKind::Qemu => {
                let mut args = n
                    .command
                    .as_ref()
                    .map(CommandLine::argv)
                    .unwrap_or_default();
                for a in &n.net {
                    let mut nic = if a.bus {
                        format!("vde,sock={}", layout.vnl(a))
                    } else {
                        format!("vde,sock={}", layout.switch_dir(&a.switch).display())
                    };
                    if let Some(p) = a.port {
                        nic.push_str(&format!(",port={p}"));
                    }
                    args.extend(["-nic".to_string(), nic]);
                }
                Step {
                    start: Start::Foreground { ready: None },
                    id,
                    phase: 2,
                    filo: false,
                    args,
                    env,
                    file: None,
                    in_file_dir: false,
                }
            }
            NodeKind::Tap => plug_step(
                id,
                2,
                layout,
                format!("tap://{}", n.ifname.clone().unwrap_or_default()),
                vnls[0].clone(),
            ),
            NodeKind::Slirp => {
                let s = n.slirp.clone().unwrap_or(crate::model::Slirp {
                    vnl: "slirp://".into(),
                    tcpfwd: Vec::new(),
                    udpfwd: Vec::new(),
                });
                let mut args = vec!["slirp".to_string(), "--slirp".into(), s.vnl];
                for f in &s.tcpfwd {
                    args.extend(["--tcpfwd".to_string(), f.clone()]);
                }
                for f in &s.udpfwd {
                    args.extend(["--udpfwd".to_string(), f.clone()]);
                }
                args.extend([
                    "-M".to_string(),
                    layout.slirp_mgmt(&n.name).display().to_string(),
                    "-d".into(),
                    "--pidfile".into(),
                    layout.pidfile(&id).display().to_string(),
                    vnls[0].clone(),
                ]);
                // With the cables: up before the nodes that ask it for an address.
                daemon_step(id, 1, layout, args, env)
            }
            NodeKind::Router => {
                let r = n.router.clone().unwrap_or_default();
                let mut args = vec!["router".to_string()];
                for (i, v) in vnls.iter().enumerate() {
                    args.extend(["--vnl".to_string(), v.clone()]);
                    if let Some(c) = r.conf.get(i) {
                        args.extend(["--conf".to_string(), c.clone()]);
                    }
                }
                for (prefix, gw) in &r.routes {
                    args.extend([
                        "--route".to_string(),
                        prefix.clone(),
                        "via".into(),
                        gw.clone(),
                    ]);
                }
                for (flag, list) in [
                    ("--dhcp-server", &r.dhcp_server),
                    ("--radv", &r.radv),
                    ("--masquerade", &r.masquerade),
                ] {
                    for v in list {
                        args.extend([flag.to_string(), v.clone()]);
                    }
                }
                let mut file = None;
                if !r.filter.is_empty() {
                    let path = layout.router_filter(&n.name);
                    args.extend(["--filter".to_string(), path.display().to_string()]);
                    file = Some((path, r.filter.join("\n") + "\n"));
                } else if let Some(f) = &r.filter_file {
                    args.extend(["--filter".to_string(), f.clone()]);
                }
                args.extend([
                    "-M".to_string(),
                    layout.router_mgmt(&n.name).display().to_string(),
                    "-d".into(),
                    "--pidfile".into(),
                    layout.pidfile(&id).display().to_string(),
                ]);
                // With the cables: up before the nodes that ask it for an address.
                Step {
                    file,
                    ..daemon_step(id, 1, layout, args, env)
                }
            }
        };
        steps.push(step);
    }
    steps.sort_by_key(|s| s.phase);
    steps
}

/// The longest UNIX socket path a socket may have (sun_path's 108 bytes, NUL included).
pub const MAX_SOCKET_PATH: usize = 107;

/// The longest socket path the lab will use, and its length: a switch's data sockets (named
/// like `1023.4194304.vnet.train` by the switch), the management sockets and the stacks'.
pub fn longest_socket(lab: &Lab, layout: &Layout) -> Option<(PathBuf, usize)> {
    let mut paths = Vec::new();
    for s in &lab.switches {
        paths.push(layout.switch_dir(&s.name).join("1023.4194304.vnet.train"));
        paths.push(layout.switch_mgmt(&s.name));
    }
    for l in &lab.links {
        paths.push(layout.link_mgmt(&l.name));
    }
    for b in &lab.buses {
        paths.push(layout.bus_path(&b.name));
    }
    for n in &lab.nodes {
        match n.kind {
            NodeKind::Stack => paths.push(layout.stack_path(&n.name)),
            NodeKind::Slirp => paths.push(layout.slirp_mgmt(&n.name)),
            NodeKind::Router => paths.push(layout.router_mgmt(&n.name)),
            _ => {}
        }
    }
    paths
        .into_iter()
        .map(|p| {
            let len = p.as_os_str().len();
            (p, len)
        })
        .max_by_key(|(_, len)| *len)
}

/// The command that runs `argv` in a node's network, given how to enter it: `filo mstack`
/// for a stack, `nsenter` into an `ns` node's namespace (by the pid of a process inside it).
/// `ns_flags` are nsenter's flags for the namespaces that differ from the caller's (`-n`,
/// `-u`, `-m`, `-U`).
pub fn exec_argv(
    node: &Node,
    layout: &Layout,
    ns_pid: Option<u32>,
    ns_flags: &[&str],
    argv: &[String],
) -> Result<(bool, Vec<String>), String> {
    match node.kind {
        NodeKind::Stack => {
            let mut a = vec![
                "mstack".to_string(),
                layout.stack_path(&node.name).display().to_string(),
                "--".into(),
            ];
            a.extend(argv.iter().cloned());
            Ok((true, a))
        }
        NodeKind::Ns => {
            let pid = ns_pid.ok_or_else(|| {
                format!("node {}: its namespace is gone (is the lab up?)", node.name)
            })?;
            let mut a = vec!["nsenter".to_string(), "-t".into(), pid.to_string()];
            a.extend(ns_flags.iter().map(|f| f.to_string()));
            if ns_flags.contains(&"-U") {
                a.push("--preserve-credentials".into());
            }
            a.push("--".into());
            a.extend(argv.iter().cloned());
            Ok((false, a))
        }
        NodeKind::Qemu
        | NodeKind::Tap
        | NodeKind::Slirp
        | NodeKind::Router
        | NodeKind::Userstack => Err(format!(
            "node {} is a {} node: exec runs commands in ns and stack nodes only",
            node.name,
            node.kind.name()
        )),
    }
}

/// The default parent of lab state directories: `$XDG_RUNTIME_DIR/filo-lab`, else
/// `/tmp/filo-lab-UID`; `FILO_LAB_DIR` overrides both.
pub fn state_root(filo_lab_dir: Option<&str>, xdg_runtime_dir: Option<&str>, uid: u32) -> PathBuf {
    match (filo_lab_dir, xdg_runtime_dir) {
        (Some(d), _) if !d.is_empty() => PathBuf::from(d),
        (_, Some(x)) if !x.is_empty() => Path::new(x).join("filo-lab"),
        _ => PathBuf::from(format!("/tmp/filo-lab-{uid}")),
    }
}
