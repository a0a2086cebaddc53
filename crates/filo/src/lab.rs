//! `filo lab`: a whole virtual network from one TOML file. The file, its checks, the plan of
//! processes and the graph are `filo-lab`'s (pure); this module runs the plan (`up`), stops it
//! (`down`), asks the consoles (`status`, `set`) and enters nodes (`exec`).

use std::collections::BTreeMap;
use std::fs;
use std::io::{IsTerminal, Write};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use filo_lab::model::{Lab, NodeKind};
use filo_lab::plan::{self, Layout, Start, Step};
use filo_lab::status::{
    self, BusReport, LinkReport, NodeReport, RemoteReport, Report, SwitchReport,
};
use filo_lab::{Process, State};

use crate::console::Session;
use crate::sys;

/// How long a daemon may take to say it is ready.
const DAEMON_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an `ns` node may take to configure its network (DHCP, SLAAC) and start.
const NODE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a process without a readiness signal (qemu) must keep running to count as up.
const SETTLE: Duration = Duration::from_millis(500);
/// How long a `run` command may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// Processes starting at once (a switch answers a bounded number of new clients per turn,
/// and each waits at most 5 s for its answer).
const MAX_STARTING: usize = 32;
/// How long stopped processes get before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Run a whole virtual network (switches, impaired links, namespaces, stacks, VMs) from one
/// TOML file.
#[derive(Args, Debug)]
#[command(after_long_help = "\
A lab file declares switches, links between them (or to nodes) with wirefilter impairments,
nodes (ns: a namespace running a command; stack: a named stack for mstack; qemu: a VM joined
with -nic vde; tap: a kernel interface, root only; slirp: a filo slirp NAT gateway to the
host's network; router: a filo router between switches, with conf per interface, route,
dhcp_server, radv, masquerade and filter), ipn:// buses ([bus.NAME] policy, lossless;
joined like a switch), remote segments (vxvde://, vxlan://) and commands to run once everything is
up. See the README's `filo lab` section for the format.

A running lab keeps its sockets, pid files and logs in a state directory:
$FILO_LAB_DIR/NAME, else $XDG_RUNTIME_DIR/filo-lab/NAME, else /tmp/filo-lab-UID/NAME.
Commands other than `up` take --name, or the only lab running.

EXAMPLES:
  filo lab up lab.toml
  filo lab status --json
  filo lab exec h1 -- ping -c 3 10.0.0.2
  filo lab set wan loss=5 delay=50
  filo lab graph -o lab.svg
  filo lab web --listen 127.0.0.1:8733      (then open http://127.0.0.1:8733/)
  filo lab down")]
pub struct LabArgs {
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(Subcommand, Debug)]
enum LabCommand {
    /// Start every switch, link and node of FILE, in order and in parallel.
    Up {
        /// The lab file (TOML).
        file: PathBuf,
        /// The lab's name [default: the file's `name`, else its file name].
        #[arg(long, short = 'n')]
        name: Option<String>,
    },
    /// Stop everything a lab started and remove its state directory.
    Down {
        #[arg(long, short = 'n')]
        name: Option<String>,
    },
    /// Nodes, links and per-port counters and drops, from the switches' and links' consoles.
    Status {
        #[arg(long, short = 'n')]
        name: Option<String>,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Run a command in a node's network (ns: its namespace, through nsenter; stack: mstack).
    Exec {
        #[arg(long, short = 'n')]
        name: Option<String>,
        node: String,
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Change a link's impairments while it runs: loss=5 delay=50 jitter=10 bandwidth=1M ...
    Set {
        #[arg(long, short = 'n')]
        name: Option<String>,
        link: String,
        #[arg(required = true, value_name = "KEY=VALUE")]
        values: Vec<String>,
    },
    /// Draw a lab (running, or FILE) as SVG, or as Graphviz DOT when OUT ends in .dot.
    Graph {
        /// A lab file to draw instead of a running lab.
        file: Option<PathBuf>,
        #[arg(long, short = 'n')]
        name: Option<String>,
        /// Where to write it; - for standard output (SVG).
        #[arg(long, short = 'o', value_name = "OUT")]
        output: PathBuf,
    },
    /// Serve the lab in a browser (live counters, links to change, node addresses) and
    /// Prometheus metrics at /metrics.
    Web(crate::lab_web::WebArgs),
}

impl LabArgs {
    /// Whether the command watches [`sys::STOP`] (the others keep the default signal actions).
    pub fn watches_stop(&self) -> bool {
        matches!(self.command, LabCommand::Up { .. } | LabCommand::Web(_))
    }
}

pub fn run(args: LabArgs) -> Result<ExitCode> {
    match args.command {
        LabCommand::Up { file, name } => up(&file, name),
        LabCommand::Down { name } => down(name),
        LabCommand::Status { name, json } => status(name, json),
        LabCommand::Exec {
            name,
            node,
            command,
        } => exec(name, &node, &command),
        LabCommand::Set { name, link, values } => set(name, &link, &values),
        LabCommand::Graph { file, name, output } => graph(file, name, &output),
        LabCommand::Web(args) => crate::lab_web::run(args),
    }
}

pub(crate) fn state_root() -> PathBuf {
    plan::state_root(
        std::env::var("FILO_LAB_DIR").ok().as_deref(),
        std::env::var("XDG_RUNTIME_DIR").ok().as_deref(),
        sys::euid(),
    )
}

/// Reads and checks a lab file; errors start with the file's name.
pub(crate) fn read_lab(file: &Path) -> Result<Lab> {
    let text =
        fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    filo_lab::model::parse(&text, &stem).map_err(|e| anyhow!("{}: {e}", file.display()))
}

/// A running lab: where it is, what it is, what it started.
pub(crate) struct Running {
    pub layout: Layout,
    pub lab: Lab,
    pub state: State,
}

/// Finds the lab `--name` names, or the only one running.
pub(crate) fn open_lab(name: Option<String>) -> Result<Running> {
    let root = state_root();
    let name = match name {
        Some(n) => n,
        None => {
            let mut labs: Vec<String> = fs::read_dir(&root)
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .filter(|e| e.path().join("state.json").exists())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            labs.sort();
            match labs.len() {
                0 => bail!(
                    "no lab is up (in {}): start one with `filo lab up FILE`",
                    root.display()
                ),
                1 => labs.remove(0),
                _ => bail!(
                    "several labs are up ({}): say which with --name",
                    labs.join(", ")
                ),
            }
        }
    };
    filo_lab::model::check_name(&name).map_err(|e| anyhow!("--name: {e}"))?;
    let layout = Layout::new(root.join(&name));
    let state_text = fs::read_to_string(layout.state_file()).map_err(|_| {
        anyhow!(
            "no lab {name:?} is up (no {}): start it with `filo lab up FILE`",
            layout.state_file().display()
        )
    })?;
    let state: State = serde_json::from_str(&state_text)
        .with_context(|| format!("{}: not a lab state file", layout.state_file().display()))?;
    let lab = read_lab(&layout.lab_file())?;
    Ok(Running { layout, lab, state })
}

/// A process's start time (field 22 of /proc/PID/stat), None when it is gone.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the command come state (field 3) ... starttime (field 22).
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

fn alive(p: &Process) -> bool {
    start_time(p.pid) == Some(p.start_time)
}

fn write_state(layout: &Layout, state: &State) -> Result<()> {
    let tmp = layout.dir.join("state.json.tmp");
    fs::write(&tmp, serde_json::to_string_pretty(state)?)?;
    fs::rename(&tmp, layout.state_file())?;
    Ok(())
}

/// The last lines of a log, for an error message.
fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(4)..];
    if tail.is_empty() {
        String::from("(it printed nothing)")
    } else {
        tail.join(" / ")
    }
}

/// Progress on stderr: one line rewritten on a terminal, a line per step otherwise.
struct Progress {
    tty: bool,
    total: usize,
    done: usize,
}

impl Progress {
    fn step(&mut self, what: &str) {
        self.done += 1;
        if self.tty {
            eprint!("\r\x1b[K[{}/{}] {what}", self.done, self.total);
            let _ = std::io::stderr().flush();
        } else {
            eprintln!("filo lab: [{}/{}] {what}", self.done, self.total);
        }
    }
    fn finish(&self) {
        if self.tty {
            eprint!("\r\x1b[K");
        }
    }
}

struct Launched<'a> {
    step: &'a Step,
    child: Child,
    started: Instant,
}

fn spawn(step: &Step, layout: &Layout, base: &Path) -> Result<Child> {
    if let Some((path, contents)) = &step.file {
        fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(layout.log(&step.id))
        .with_context(|| format!("cannot create {}", layout.log(&step.id).display()))?;
    let program = if step.filo {
        std::env::current_exe().context("cannot find the filo binary")?
    } else {
        PathBuf::from(&step.args[0])
    };
    let args = if step.filo {
        &step.args[..]
    } else {
        &step.args[1..]
    };
    let mut cmd = Command::new(&program);
    cmd.args(args)
        .envs(step.env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own group: a Ctrl-C at the terminal reaches `up`, which stops what it started.
        .process_group(0);
    if step.in_file_dir {
        cmd.current_dir(base);
    }
    cmd.spawn()
        .with_context(|| format!("{}: cannot run {}", step.id, program.display()))
}

/// Kills a step that failed or is given up, and the daemon it may have detached already.
fn abandon(l: &mut Launched<'_>) {
    let _ = sys::kill(-(l.child.id() as i32), libc::SIGKILL);
    let _ = l.child.wait();
    if let Start::Daemon { pidfile } = &l.step.start {
        if let Some(pid) = fs::read_to_string(pidfile)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        {
            let _ = sys::kill(pid, libc::SIGTERM);
        }
    }
}

/// Polls one launched step: Ok(Some(pid)) when ready, Ok(None) while starting, Err why not.
fn poll(l: &mut Launched<'_>, layout: &Layout) -> Result<Option<u32>, String> {
    let exited = l.child.try_wait().map_err(|e| e.to_string())?;
    let elapsed = l.started.elapsed();
    match &l.step.start {
        Start::Daemon { pidfile } => match exited {
            None if elapsed > DAEMON_TIMEOUT => {
                Err(format!("not ready within {} s", DAEMON_TIMEOUT.as_secs()))
            }
            None => Ok(None),
            Some(st) if st.success() => {
                // The daemon writes its pid file right after the foreground process exits.
                match fs::read_to_string(pidfile)
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
                {
                    Some(pid) => Ok(Some(pid)),
                    None if elapsed > DAEMON_TIMEOUT => {
                        Err(format!("no pid file {} appeared", pidfile.display()))
                    }
                    None => Ok(None),
                }
            }
            Some(st) => Err(format!("{st}: {}", log_tail(&layout.log(&l.step.id)))),
        },
        Start::Foreground { ready } => match exited {
            Some(st) => Err(format!(
                "exited ({st}) while starting: {}",
                log_tail(&layout.log(&l.step.id))
            )),
            None => {
                let is_ready = match ready {
                    Some(r) => r.exists(),
                    None => elapsed >= SETTLE,
                };
                if is_ready {
                    Ok(Some(l.child.id()))
                } else if elapsed > NODE_TIMEOUT {
                    Err(format!("not up within {} s", NODE_TIMEOUT.as_secs()))
                } else {
                    Ok(None)
                }
            }
        },
    }
}

fn up(file: &Path, name: Option<String>) -> Result<ExitCode> {
    let text =
        fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let source = Source {
        text: &text,
        label: file.display().to_string(),
        stem: file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        dir: Some(
            dir.canonicalize()
                .with_context(|| format!("cannot find {}", dir.display()))?,
        ),
        files: &[],
    };
    bring_up(&source, name)?;
    Ok(ExitCode::SUCCESS)
}

/// A lab's text and where it comes from.
pub(crate) struct Source<'a> {
    pub text: &'a str,
    /// How errors name it (the file's path).
    pub label: String,
    /// The lab's name when the text gives none.
    pub stem: String,
    /// The directory relative paths in `userstack` commands start from; None: `files` under
    /// the state directory.
    pub dir: Option<PathBuf>,
    /// Files to write (path relative to `STATE/files`, contents) before anything starts: the
    /// built-in demo's pages. They go with the lab's state directory.
    pub files: &'a [(&'a str, &'a str)],
}

/// Where [`Source::files`] go in a lab's state directory.
pub(crate) fn files_dir(layout: &Layout) -> PathBuf {
    layout.dir.join("files")
}

/// Brings a lab up (or leaves nothing when it cannot) and returns it running.
pub(crate) fn bring_up(source: &Source<'_>, name: Option<String>) -> Result<Running> {
    let t0 = Instant::now();
    let mut lab = filo_lab::model::parse(source.text, &source.stem)
        .map_err(|e| anyhow!("{}: {e}", source.label))?;
    if let Some(n) = name {
        filo_lab::model::check_name(&n).map_err(|e| anyhow!("--name: {e}"))?;
        lab.name = n;
    }
    if sys::euid() != 0 {
        if let Some(t) = lab.nodes.iter().find(|n| n.kind == NodeKind::Tap) {
            bail!(
                "node {} is a tap node: creating kernel interface {} needs root (CAP_NET_ADMIN); run `filo lab up` as root, or use an ns node",
                t.name,
                t.ifname.as_deref().unwrap_or("")
            );
        }
    }
    for n in lab.nodes.iter().filter(|n| n.kind == NodeKind::Qemu) {
        let argv = n.command.as_ref().map(|c| c.argv()).unwrap_or_default();
        if let Some(p) = argv.first().filter(|p| !p.contains('/')) {
            let found = std::env::var_os("PATH")
                .map(|path| std::env::split_paths(&path).any(|d| d.join(p).is_file()))
                .unwrap_or(false);
            if !found {
                bail!("node {}: {p} is not installed (not found in PATH)", n.name);
            }
        }
    }
    let layout = Layout::new(state_root().join(&lab.name));
    if let Some((path, len)) = plan::longest_socket(&lab, &layout) {
        if len > plan::MAX_SOCKET_PATH {
            bail!(
                "socket {} would be {len} bytes long, over the {} UNIX sockets allow: shorten the lab's or its switches' and links' names, or set FILO_LAB_DIR to a shorter directory",
                path.display(),
                plan::MAX_SOCKET_PATH
            );
        }
    }
    if layout.state_file().exists() {
        let old: State = fs::read_to_string(layout.state_file())
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        if old.processes.iter().any(alive) {
            bail!(
                "lab {} is already up ({}): `filo lab down --name {}` first",
                lab.name,
                layout.dir.display(),
                lab.name
            );
        }
    }
    if layout.dir.exists() {
        fs::remove_dir_all(&layout.dir)
            .with_context(|| format!("cannot remove the stale {}", layout.dir.display()))?;
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&layout.dir)
        .with_context(|| format!("cannot create {}", layout.dir.display()))?;
    for d in layout.subdirs() {
        fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    // The stored copy carries the lab's name (the other commands read it from there).
    fs::write(layout.lab_file(), source.text)?;
    let base = match &source.dir {
        Some(d) => d.clone(),
        None => files_dir(&layout),
    };
    for (path, contents) in source.files {
        let path = files_dir(&layout).join(path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        fs::write(&path, contents).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let mut state = State {
        name: lab.name.clone(),
        processes: Vec::new(),
    };
    write_state(&layout, &state)?;
    match start_all(&lab, &layout, &base, &mut state) {
        Ok(()) => {
            println!(
                "lab {} up: {} switches, {}{} links, {} nodes in {:.2} s (state in {})",
                lab.name,
                lab.switches.iter().filter(|s| !s.hidden).count(),
                match lab.buses.len() {
                    0 => String::new(),
                    n => format!("{n} buses, "),
                },
                lab.links.len(),
                lab.nodes.len(),
                t0.elapsed().as_secs_f64(),
                layout.dir.display()
            );
            Ok(Running { layout, lab, state })
        }
        Err(e) => {
            eprintln!("filo lab: {e}; stopping what was started");
            stop_all(&state);
            let _ = fs::remove_dir_all(&layout.dir);
            Err(anyhow!("lab {} did not come up: {e}", lab.name))
        }
    }
}

/// Starts the plan phase by phase, recording each process as soon as it is up; then the
/// nodes' `run` commands.
fn start_all(lab: &Lab, layout: &Layout, base: &Path, state: &mut State) -> Result<()> {
    let steps = plan::plan(lab, layout);
    let mut progress = Progress {
        tty: std::io::stderr().is_terminal(),
        total: steps.len(),
        done: 0,
    };
    for phase in 0..=2u8 {
        let mut pending = steps.iter().filter(|s| s.phase == phase);
        let mut running: Vec<Launched<'_>> = Vec::new();
        let mut failure: Option<String> = None;
        // Wait for all of the phase, even after a failure, so every one that came up is
        // recorded (and stopped); start no more after one.
        loop {
            while failure.is_none() && running.len() < MAX_STARTING {
                let Some(step) = pending.next() else { break };
                match spawn(step, layout, base) {
                    Ok(child) => running.push(Launched {
                        step,
                        child,
                        started: Instant::now(),
                    }),
                    Err(e) => {
                        failure.get_or_insert(format!("{e:#}"));
                    }
                }
            }
            if running.is_empty() {
                break;
            }
            if sys::STOP.load(Ordering::Relaxed) && failure.is_none() {
                // Nodes stop at once; daemons being started finish starting (a detached one
                // is known only by its pid file), so that everything is recorded and stopped.
                failure = Some("interrupted".into());
                running.retain_mut(|l| match l.step.start {
                    Start::Foreground { .. } => {
                        abandon(l);
                        false
                    }
                    Start::Daemon { .. } => true,
                });
                continue;
            }
            let mut i = 0;
            let mut changed = false;
            while i < running.len() {
                match poll(&mut running[i], layout) {
                    Ok(None) => i += 1,
                    Ok(Some(pid)) => {
                        let l = running.swap_remove(i);
                        let group = matches!(l.step.start, Start::Foreground { .. });
                        state.processes.push(Process {
                            id: l.step.id.clone(),
                            pid,
                            start_time: start_time(pid).unwrap_or(0),
                            group,
                        });
                        changed = true;
                        progress.step(&format!("{} up (pid {pid})", l.step.id));
                    }
                    Err(why) => {
                        let mut l = running.swap_remove(i);
                        abandon(&mut l);
                        failure.get_or_insert(format!("{} failed: {why}", l.step.id));
                    }
                }
            }
            if changed {
                write_state(layout, state)?;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Some(f) = failure {
            progress.finish();
            bail!("{f}");
        }
    }
    progress.finish();
    // A command given as a shell string is checked only by sh, after the node said ready:
    // one that does not exist ends at once.
    std::thread::sleep(SETTLE / 5);
    check_alive(layout, state)?;
    for n in &lab.nodes {
        for c in &n.run {
            let argv = c.argv();
            let env = env_of(lab, n);
            let (filo, full) = exec_command(layout, state, n, &argv)?;
            let log = layout.log(&format!("node {}", n.name));
            let out = fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&log)?;
            let mut cmd = command_for(filo, &full)?;
            cmd.envs(env)
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out);
            let mut child = cmd
                .spawn()
                .with_context(|| format!("node {}: cannot run {:?}", n.name, c.text()))?;
            let t = Instant::now();
            let status = loop {
                if let Some(st) = child.try_wait()? {
                    break st;
                }
                if t.elapsed() > RUN_TIMEOUT || sys::STOP.load(Ordering::Relaxed) {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!(
                        "node {}: run command {:?} did not finish within {} s",
                        n.name,
                        c.text(),
                        RUN_TIMEOUT.as_secs()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            if !status.success() {
                bail!(
                    "node {}: run command {:?} failed ({status}): {}",
                    n.name,
                    c.text(),
                    log_tail(&log)
                );
            }
            eprintln!("filo lab: node {}: ran {:?}", n.name, c.text());
        }
    }
    Ok(())
}

/// Fails naming the first recorded process that is no longer running, with its last output.
fn check_alive(layout: &Layout, state: &State) -> Result<()> {
    if let Some(p) = state.processes.iter().find(|p| !alive(p)) {
        bail!(
            "{} exited right after starting: {}",
            p.id,
            log_tail(&layout.log(&p.id))
        );
    }
    Ok(())
}

fn env_of(lab: &Lab, n: &filo_lab::model::Node) -> BTreeMap<String, String> {
    let mut env = lab.env.clone();
    env.extend(n.env.clone());
    env
}

fn command_for(filo: bool, argv: &[String]) -> Result<Command> {
    let program = if filo {
        std::env::current_exe().context("cannot find the filo binary")?
    } else {
        PathBuf::from(&argv[0])
    };
    let mut cmd = Command::new(program);
    cmd.args(if filo { argv } else { &argv[1..] });
    Ok(cmd)
}

/// Stops every recorded process: SIGTERM (to the group of those started as one), then
/// SIGKILL to what is left after [`STOP_GRACE`].
fn stop_all(state: &State) {
    let targets: Vec<&Process> = state.processes.iter().rev().filter(|p| alive(p)).collect();
    for p in &targets {
        let pid = if p.group {
            -(p.pid as i32)
        } else {
            p.pid as i32
        };
        let _ = sys::kill(pid, libc::SIGTERM);
    }
    let t = Instant::now();
    while targets.iter().any(|p| alive(p)) && t.elapsed() < STOP_GRACE {
        std::thread::sleep(Duration::from_millis(20));
    }
    for p in targets.iter().filter(|p| alive(p)) {
        eprintln!(
            "filo lab: {} (pid {}) did not stop: killing it",
            p.id, p.pid
        );
        if p.group {
            let _ = sys::kill(-(p.pid as i32), libc::SIGKILL);
        }
        let _ = sys::kill(p.pid as i32, libc::SIGKILL);
    }
    let t = Instant::now();
    while targets.iter().any(|p| alive(p)) && t.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(crate) fn down(name: Option<String>) -> Result<ExitCode> {
    let root = state_root();
    // A lab whose file no longer reads is still stopped: only its state is needed.
    let (layout, state) = match open_lab(name.clone()) {
        Ok(r) => (r.layout, r.state),
        Err(e) => {
            let Some(n) = name else { return Err(e) };
            let layout = Layout::new(root.join(&n));
            let state: State = fs::read_to_string(layout.state_file())
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .ok_or(e)?;
            (layout, state)
        }
    };
    stop_all(&state);
    fs::remove_dir_all(&layout.dir)
        .with_context(|| format!("cannot remove {}", layout.dir.display()))?;
    println!(
        "lab {} down: {} processes stopped",
        state.name,
        state.processes.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn find(state: &State, id: &str) -> Option<Process> {
    state.processes.iter().find(|p| p.id == id).cloned()
}

pub(crate) fn console(sock: &Path, commands: &[String]) -> Result<Vec<filo_vnl::console::Reply>> {
    let mut s = Session::open(sock, Duration::from_secs(5))?;
    commands.iter().map(|c| s.run(c)).collect()
}

/// The whole lab's status.
pub(crate) fn report(r: &Running) -> Report {
    let mut rep = Report {
        name: r.lab.name.clone(),
        dir: r.layout.dir.display().to_string(),
        ..Default::default()
    };
    let proc_of = |id: &str| {
        let p = find(&r.state, id);
        let up = p.as_ref().is_some_and(alive);
        (p.map(|p| p.pid), up)
    };
    for sw in &r.lab.switches {
        let (pid, up) = proc_of(&format!("switch {}", sw.name));
        let mut s = SwitchReport {
            name: sw.name.clone(),
            hidden: sw.hidden,
            pid,
            alive: up,
            ..Default::default()
        };
        if up {
            match console(&r.layout.switch_mgmt(&sw.name), &["port/print".into()]) {
                Ok(replies) => s.ports = status::parse_port_print(&replies[0].lines),
                Err(e) => s.error = Some(format!("{e:#}")),
            }
        }
        rep.switches.push(s);
    }
    for l in &r.lab.links {
        let (pid, up) = proc_of(&format!("link {}", l.name));
        let mut s = LinkReport {
            name: l.name.clone(),
            a: l.a_label.clone(),
            b: l.b_label.clone(),
            pid,
            alive: up,
            ..Default::default()
        };
        if up {
            match console(&r.layout.link_mgmt(&l.name), &["showinfo".into()]) {
                Ok(replies) => {
                    s.settings = status::parse_settings(&replies[0].lines);
                    if let Some((ab, ba)) = status::parse_showinfo(&replies[0].lines) {
                        s.a_to_b = Some(ab);
                        s.b_to_a = Some(ba);
                    }
                }
                Err(e) => s.error = Some(format!("{e:#}")),
            }
        }
        rep.links.push(s);
    }
    for n in &r.lab.nodes {
        let (pid, up) = proc_of(&format!("node {}", n.name));
        let mut node = NodeReport {
            name: n.name.clone(),
            kind: n.kind.name().into(),
            pid,
            alive: up,
            net: n
                .net
                .iter()
                .map(|a| match a.port {
                    Some(p) => format!("{}:{p}", a.switch),
                    None => a.switch.clone(),
                })
                .collect(),
            ip: n.ip.clone(),
            ..Default::default()
        };
        if up && n.kind == NodeKind::Slirp {
            let commands = ["stat".to_string(), "leases/print".into()];
            match console(&r.layout.slirp_mgmt(&n.name), &commands) {
                Ok(replies) => {
                    node.counters = status::parse_slirp_stat(&replies[0].lines);
                    node.leases = replies[1].lines.clone();
                }
                Err(e) => node.error = Some(format!("{e:#}")),
            }
        }
        if up && n.kind == NodeKind::Router {
            let commands = [
                "stat".to_string(),
                "iface/print".into(),
                "leases/print".into(),
            ];
            match console(&r.layout.router_mgmt(&n.name), &commands) {
                Ok(replies) => {
                    node.counters = status::parse_router_stat(&replies[0].lines, &replies[1].lines);
                    node.ifaces = replies[1].lines.clone();
                    node.leases = replies[2].lines.clone();
                }
                Err(e) => node.error = Some(format!("{e:#}")),
            }
        }
        rep.nodes.push(node);
    }
    for b in &r.lab.buses {
        let (pid, up) = proc_of(&format!("bus {}", b.name));
        let path = r.layout.bus_path(&b.name);
        let mut bus = BusReport {
            name: b.name.clone(),
            path: path.display().to_string(),
            policy: b.policy.clone(),
            lossless: b.lossless,
            pid,
            alive: up,
            ..Default::default()
        };
        if up {
            match bus_stat(&path) {
                Ok(v) => bus.stat = Some(v),
                Err(e) => bus.error = Some(format!("{e:#}")),
            }
        }
        rep.buses.push(bus);
    }
    for x in &r.lab.remotes {
        let (pid, up) = proc_of(&format!("remote {}", x.name));
        rep.remotes.push(RemoteReport {
            name: x.name.clone(),
            switch: x.switch.clone(),
            vnl: x.vnl.clone(),
            pid,
            alive: up,
        });
    }
    rep
}

/// `filo ipn stat PATH --json`, parsed.
fn bus_stat(path: &Path) -> Result<serde_json::Value> {
    let out = Command::new(std::env::current_exe().context("cannot find the filo binary")?)
        .args(["ipn", "stat"])
        .arg(path)
        .arg("--json")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("cannot run filo ipn stat")?;
    if !out.status.success() {
        bail!(
            "filo ipn stat: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("filo ipn stat --json: not JSON")
}

fn status(name: Option<String>, json: bool) -> Result<ExitCode> {
    let r = open_lab(name)?;
    let rep = report(&r);
    if json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
        return Ok(ExitCode::SUCCESS);
    }
    let state = |up: bool, pid: Option<u32>| match (up, pid) {
        (true, Some(p)) => format!("up (pid {p})"),
        _ => "DOWN".to_string(),
    };
    println!("lab {} ({})", rep.name, rep.dir);
    for s in &rep.switches {
        let what = if s.hidden { "hub" } else { "switch" };
        println!("{what} {}: {}", s.name, state(s.alive, s.pid));
        for p in &s.ports {
            println!(
                "  port {:>3}: in {} frames {} bytes, out {} frames {} bytes, drops queue {} error {}  {}",
                p.port,
                p.in_frames,
                p.in_bytes,
                p.out_frames,
                p.out_bytes,
                p.drop_queue,
                p.drop_error,
                p.endpoints.join("; ")
            );
        }
        if let Some(e) = &s.error {
            println!("  console: {e}");
        }
    }
    for l in &rep.links {
        println!(
            "link {} ({} <-> {}): {}",
            l.name,
            l.a,
            l.b,
            state(l.alive, l.pid)
        );
        for (k, v) in &l.settings {
            if !status::setting_is_off(v) {
                println!("  {k}: {v}");
            }
        }
        for (dir, c) in [("a->b", &l.a_to_b), ("b->a", &l.b_to_a)] {
            if let Some(c) = c {
                println!(
                    "  {dir}: in {} frames, out {} frames, lost {}, mtu drops {}, capacity drops {}",
                    c.in_frames, c.out_frames, c.dropped_loss, c.dropped_mtu, c.dropped_capacity
                );
            }
        }
    }
    for n in &rep.nodes {
        println!(
            "node {} ({}) on {}: {} {}",
            n.name,
            n.kind,
            n.net.join(", "),
            state(n.alive, n.pid),
            n.ip.join(" ")
        );
        if !n.counters.is_empty() {
            let c: Vec<String> = n.counters.iter().map(|(k, v)| format!("{k} {v}")).collect();
            println!("  {}", c.join(", "));
        }
        for l in &n.ifaces {
            println!("  iface {l}");
        }
        for l in &n.leases {
            println!("  lease {l}");
        }
        if let Some(e) = &n.error {
            println!("  console: {e}");
        }
    }
    for b in &rep.buses {
        let members = b
            .stat
            .as_ref()
            .and_then(|s| s["members"].as_array())
            .map(|m| {
                m.iter()
                    .map(|m| {
                        format!(
                            "pid {} in {} out {} lost {}",
                            m["pid"], m["frames_in"], m["frames_out"], m["lost"]
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        println!(
            "bus {} ({}{}): {} {} members",
            b.name,
            b.policy,
            if b.lossless { ", lossless" } else { "" },
            state(b.alive, b.pid),
            members.len()
        );
        for m in &members {
            println!("  member {m}");
        }
        if let Some(e) = &b.error {
            println!("  stat: {e}");
        }
    }
    for x in &rep.remotes {
        println!(
            "remote {} ({} <-> {}): {}",
            x.name,
            x.switch,
            x.vnl,
            state(x.alive, x.pid)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The pid of a process inside the network namespace of an `ns` node (a descendant of its
/// `filo ns` whose network namespace differs).
fn netns_pid(root: u32) -> Option<u32> {
    let ns = |pid: u32, kind: &str| fs::read_link(format!("/proc/{pid}/ns/{kind}")).ok();
    let host = ns(root, "net")?;
    let mut queue = vec![root];
    while let Some(p) = queue.pop() {
        if p != root && ns(p, "net").is_some_and(|n| n != host) {
            return Some(p);
        }
        let tasks = fs::read_dir(format!("/proc/{p}/task")).ok()?;
        for t in tasks.flatten() {
            let children = fs::read_to_string(t.path().join("children")).unwrap_or_default();
            queue.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    None
}

/// The command (`filo …` when the bool is true) that runs `argv` in node `n`.
fn exec_command(
    layout: &Layout,
    state: &State,
    n: &filo_lab::model::Node,
    argv: &[String],
) -> Result<(bool, Vec<String>)> {
    let id = format!("node {}", n.name);
    let (pid, flags) = match n.kind {
        NodeKind::Ns => {
            let p = find(state, &id)
                .filter(alive)
                .ok_or_else(|| anyhow!("node {} is not running", n.name))?;
            let inner = netns_pid(p.pid)
                .ok_or_else(|| anyhow!("node {}: its network namespace is gone", n.name))?;
            let differs = |kind: &str| {
                fs::read_link(format!("/proc/{inner}/ns/{kind}")).ok()
                    != fs::read_link(format!("/proc/self/ns/{kind}")).ok()
            };
            let mut flags = Vec::new();
            for (kind, flag) in [("user", "-U"), ("net", "-n"), ("uts", "-u"), ("mnt", "-m")] {
                if differs(kind) {
                    flags.push(flag);
                }
            }
            (Some(inner), flags)
        }
        _ => (None, Vec::new()),
    };
    plan::exec_argv(n, layout, pid, &flags, argv).map_err(|e| anyhow!(e))
}

/// Runs `argv` in node `n` and returns what it printed (for the web view), within 10 s.
pub(crate) fn node_output(r: &Running, n: &filo_lab::model::Node, argv: &[&str]) -> Result<String> {
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    let (filo, full) = exec_command(&r.layout, &r.state, n, &argv)?;
    let mut child = command_for(filo, &full)?
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot run {}", full[0]))?;
    let t = Instant::now();
    while child.try_wait()?.is_none() {
        if t.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{:?} did not finish within 10 s", argv.join(" "));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut out = String::new();
    if let Some(mut s) = child.stdout.take() {
        std::io::Read::read_to_string(&mut s, &mut out)?;
    }
    Ok(out)
}

fn exec(name: Option<String>, node: &str, argv: &[String]) -> Result<ExitCode> {
    let r = open_lab(name)?;
    let n = r.lab.find_node(node).map_err(|e| anyhow!(e))?;
    let (filo, full) = exec_command(&r.layout, &r.state, n, argv)?;
    let mut cmd = command_for(filo, &full)?;
    cmd.envs(env_of(&r.lab, n));
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {}", full[0]))?;
    Ok(ExitCode::from(match status.code() {
        Some(c) => c.clamp(0, 255) as u8,
        None => 128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0) as u8,
    }))
}

/// Sends `filo lab set` values to a link's wirefilter; returns its settings afterwards.
pub(crate) fn set_link(
    r: &Running,
    link: &str,
    values: &[String],
) -> Result<BTreeMap<String, String>> {
    let l = r.lab.find_link(link).map_err(|e| anyhow!(e))?;
    let mut commands = status::set_commands(values).map_err(|e| anyhow!(e))?;
    commands.push("showinfo".into());
    let replies = console(&r.layout.link_mgmt(&l.name), &commands)
        .with_context(|| format!("link {}", l.name))?;
    for (c, reply) in commands.iter().zip(&replies) {
        if reply.status != 1000 {
            bail!(
                "link {}: {c:?}: {}",
                l.name,
                reply
                    .error
                    .clone()
                    .unwrap_or_else(|| reply.status.to_string())
            );
        }
    }
    Ok(replies
        .last()
        .map(|r| status::parse_settings(&r.lines))
        .unwrap_or_default())
}

fn set(name: Option<String>, link: &str, values: &[String]) -> Result<ExitCode> {
    let r = open_lab(name)?;
    let settings = set_link(&r, link, values)?;
    for v in values {
        let key = v.split('=').next().unwrap_or("");
        let key = if key == "jitter" { "delay" } else { key };
        if let Some(now) = settings.get(key) {
            println!("link {link}: {key} {now}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn graph(file: Option<PathBuf>, name: Option<String>, output: &Path) -> Result<ExitCode> {
    let lab = match file {
        Some(f) => read_lab(&f)?,
        None => open_lab(name)?.lab,
    };
    let dot = output.extension().is_some_and(|e| e == "dot");
    let text = if dot {
        filo_lab::graph::dot(&lab)
    } else {
        filo_lab::graph::svg(&lab)
    };
    if output == Path::new("-") {
        print!("{text}");
    } else {
        fs::write(output, text).with_context(|| format!("cannot write {}", output.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
