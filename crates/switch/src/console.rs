//! The management console of the switch, sans-IO: text in, text and [`Effect`]s out.
//!
//! The daemon writes [`greeting`] when a console connects (mgmt socket or stdin), then hands
//! every command it reads to [`execute`] and writes back [`Reply::text`]. The framing follows
//! vde_switch (`reference/vde.md` §2.2) so `unixterm`, `vdeterm` and `unixcmd` keep working:
//!
//! * commands that print answer `"0000 DATA END WITH '.'\n"`, body lines, `".\n"` — the data
//!   header is written even when the command then fails, as vde_switch does;
//! * then the status line, `"1000 Success\n"` or `"1%03d %s\n"` (errno and its `strerror`);
//! * then the prompt `"\nvde$ "`; `logout` and `shutdown` answer `"9999 END OF SESSION"` alone.
//!
//! The framing itself lives in [`filo_vnl::console`]. The console reads no files: `load PATH`
//! answers [`Effect::Load`]; the daemon reads the script and hands it to [`loaded`]
//! (`daemon::carry_out_loads` does both).
//!
//! Differences from vde_switch, on purpose:
//! * dispatch needs the command path to be followed by the end of the input or a space/tab
//!   (`port/printXYZ` is unknown, vde would run `port/print` with argument `XYZ`);
//! * numbers are parsed strictly (decimal, no trailing garbage, no extra arguments) and give
//!   `1022 Invalid argument` where vde's `atoi` would silently read 0;
//! * `hash/find` prints the port the address was learned on (vde prints port + 1);
//! * endpoint descriptions are printed with control characters replaced by `?`, so a client
//!   cannot break the framing (a description `"\n."` would end vde's data block);
//! * the spanning tree is one IEEE 802.1D tree for all VLANs: `fstp/setedge` ignores the VLAN
//!   (it must exist), `fstp/bonus` answers `1095 Operation not supported`, `fstp/print` shows
//!   the single tree once per VLAN;
//! * the core's port table is sized at start (`-n`): `port/setnumports` only shrinks, or grows
//!   back up to that size (`1028 No space left on device` beyond it);
//! * `port/remove` of a port with endpoints closes them ([`Effect::ClosePort`]) and removes it
//!   (vde refuses);
//! * `load` frames its echo (`vde[PATH]: <line>` and each answer) as a data block; vde_switch
//!   writes the same lines without the `0000 DATA`/`.` around them;
//! * filo additions: `port/setmirror`, `port/drops`, `port/capture`, a ` DROP:` line in
//!   `port/print`, extra lines in `showinfo`, `port/showinfo` and `fstp/showinfo`.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use filo_vnl::console::{self as framing, parse_reply, sanitize, status_line, DATA_HEADER};

use crate::core::{ConfigError, PortId, MAX_VLAN, NO_VLAN};
use crate::state::{Access, Effect, PortCounters, PortEntry, SwitchState};
use crate::stp::{PortRole, PortState, DEFAULT_PATH_COST};
use crate::wire::bpdu::BridgeId;
use crate::wire::MacAddr;

/// Written on connect, before the first prompt; `vdeterm` derives its prompt from it.
pub const BANNER: &str =
    "VDE switch V.2.3.2\n(C) Virtual Square Team (coord. R. Davoli) 2005,2006,2007 - GPLv2\n";
/// Written after every reply.
pub const PROMPT: &str = "\nvde$ ";
/// Written instead of the prompt when the session ends (no newline, as vde_switch).
pub const END_OF_SESSION: &str = framing::END_OF_SESSION;

/// Nesting limit of `load` (a script that loads itself).
const MAX_LOAD_DEPTH: u8 = 8;
/// How many scripts one console command (or rc file) may run through `load`s in all: without
/// it a script that loads itself N times runs N^MAX_LOAD_DEPTH scripts and stalls the switch.
pub const MAX_LOADS: u32 = 64;
/// Largest accepted `hash/setsize`.
const MAX_HASH_SIZE: u32 = 1 << 20;

const EPERM: i32 = 1;
const EINVAL: i32 = 22;
const ENXIO: i32 = 6;
const ENOENT: i32 = 2;
const EEXIST: i32 = 17;
const ENODEV: i32 = 19;
const ENOSPC: i32 = 28;
const ENOSYS: i32 = 38;
const ELOOP: i32 = 40;
const EOPNOTSUPP: i32 = 95;

// ---- debug categories ----------------------------------------------------------------------

/// vde_switch's debug categories: path, octal tag, help; in `debug/list` order.
const DEBUG_CATEGORIES: [(&str, u16, &str); 11] = [
    ("hash/+", 0o11, "hash: new element"),
    ("hash/-", 0o12, "hash: discarded element"),
    ("fstp/status", 0o44, "fstp: status change"),
    ("fstp/root", 0o45, "fstp: rootswitch/port change"),
    ("fstp/+", 0o41, "fstp: new port/vlan"),
    ("fstp/-", 0o42, "fstp: removed port/vlan"),
    ("port/+", 0o21, "new port"),
    ("port/-", 0o22, "closed port"),
    ("port/descr", 0o23, "set port description"),
    ("port/ep/+", 0o31, "new endpoint"),
    ("port/ep/-", 0o32, "closed endpoint"),
];

fn category_index(category: &str) -> Option<usize> {
    DEBUG_CATEGORIES.iter().position(|(p, _, _)| *p == category)
}

/// An asynchronous event a console may subscribe to with `debug/add`. The daemon builds
/// these (the console itself reports port creation and removal in [`Reply::events`]),
/// renders them with [`format_event`] and writes the line to every session that
/// [`Session::wants`] its category.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DebugEvent {
    /// `hash/+`: an address was learned.
    HashAdded {
        mac: MacAddr,
        vlan: u16,
        port: PortId,
    },
    /// `hash/-`: an address was forgotten.
    HashRemoved {
        mac: MacAddr,
        vlan: u16,
        port: PortId,
    },
    /// `fstp/status`: a port changed spanning-tree state.
    StpStatus {
        port: PortId,
        vlan: u16,
        state: PortState,
    },
    /// `fstp/root`: the root port or root bridge changed.
    StpRoot {
        port: PortId,
        vlan: u16,
        root: BridgeId,
    },
    /// `fstp/+`: a port joined the tree.
    StpPortAdded { port: PortId, vlan: u16 },
    /// `fstp/-`: a port left the tree.
    StpPortRemoved { port: PortId, vlan: u16 },
    /// `port/+`
    PortAdded(PortId),
    /// `port/-`
    PortRemoved(PortId),
    /// `port/descr`: an endpoint set its description.
    Description {
        port: PortId,
        id: u32,
        descr: String,
    },
    /// `port/ep/+`
    EndpointAdded { port: PortId, id: u32 },
    /// `port/ep/-`
    EndpointRemoved { port: PortId, id: u32 },
}

fn vlan_hex(vlan: u16) -> String {
    format!("{:02x}:{:02x}", vlan >> 8, vlan & 0xff)
}

fn bridge_hex(id: &BridgeId) -> String {
    id.to_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn state_name(state: PortState) -> &'static str {
    match state {
        PortState::Forwarding => "Forwarding",
        PortState::Learning => "Learning",
        _ => "Discarding",
    }
}

/// The category and the complete line (`"3%03o %s %s\n"`) of a debug event, e.g.
/// `("port/ep/+", "3031 port/ep/+ Port 01 FD  6\n")`.
pub fn format_event(ev: &DebugEvent) -> (&'static str, String) {
    let (category, message) = match ev {
        DebugEvent::HashAdded { mac, vlan, port } => (
            "hash/+",
            format!("{mac} VLAN {} Port {port}", vlan_hex(*vlan)),
        ),
        DebugEvent::HashRemoved { mac, vlan, port } => (
            "hash/-",
            format!("{mac} VLAN {} Port {port}", vlan_hex(*vlan)),
        ),
        DebugEvent::StpStatus { port, vlan, state } => (
            "fstp/status",
            format!(
                "Port {port:04} VLAN {} {}",
                vlan_hex(*vlan),
                state_name(*state)
            ),
        ),
        DebugEvent::StpRoot { port, vlan, root } => (
            "fstp/root",
            format!(
                "Port {port:04} VLAN {} -> {}",
                vlan_hex(*vlan),
                bridge_hex(root)
            ),
        ),
        DebugEvent::StpPortAdded { port, vlan } => {
            ("fstp/+", format!("Port {port:04} VLAN {}", vlan_hex(*vlan)))
        }
        DebugEvent::StpPortRemoved { port, vlan } => {
            ("fstp/-", format!("Port {port:04} VLAN {}", vlan_hex(*vlan)))
        }
        DebugEvent::PortAdded(port) => ("port/+", format!("{port:02}")),
        DebugEvent::PortRemoved(port) => ("port/-", format!("{port:02}")),
        DebugEvent::Description { port, id, descr } => (
            "port/descr",
            format!("Port {port:02} FD {id:2} -> \"{}\"", sanitize(descr)),
        ),
        DebugEvent::EndpointAdded { port, id } => {
            ("port/ep/+", format!("Port {port:02} FD {id:2}"))
        }
        DebugEvent::EndpointRemoved { port, id } => {
            ("port/ep/-", format!("Port {port:02} FD {id:2}"))
        }
    };
    let tag = category_index(category).map_or(0, |i| DEBUG_CATEGORIES[i].1);
    (category, format!("3{tag:03o} {category} {message}\n"))
}

// ---- session and reply ---------------------------------------------------------------------

/// Per-connection console state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Session {
    /// Bit i set = subscribed to `DEBUG_CATEGORIES[i]`.
    debug: u32,
    /// Scripts being run (`load`s, an rc file), innermost last.
    scripts: Vec<Script>,
    /// A `load` whose file the daemon is reading ([`Effect::Load`], answered by [`loaded`]).
    awaiting: Option<Awaited>,
    /// File commands (`load`, `port/capture PATH`) are refused: the client is neither root
    /// nor the switch's user ([`Session::for_peer`]).
    files_refused: bool,
    /// `load`s run since the command or rc file started ([`MAX_LOADS`]).
    loads: u32,
}

/// The detail of the refusal of a file command to another user's console.
pub const FILES_REFUSED: &str = "file commands are for the switch's user";

/// A script being run: what is left of it and how its answer is framed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Script {
    /// How its lines are echoed: `vde[LABEL]: line`.
    label: String,
    lines: VecDeque<String>,
    /// Echo every line and its framed answer (a `load`; not an rc file, nor anything an rc
    /// file loads).
    echo: bool,
    /// A `load` (closed by `"."` and its status line) rather than an rc file.
    is_load: bool,
    /// The `load` a console command started: the prompt follows its status line.
    prompt: bool,
}

/// A `load` waiting for its file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Awaited {
    label: String,
    echo: bool,
    prompt: bool,
}

impl Session {
    /// A session of the switch's own user (stdin, rc files): every command is allowed.
    pub fn new() -> Session {
        Session::default()
    }

    /// A session of a console client, who may use file commands (`load`, `port/capture
    /// PATH`) or not: they read and write files as the switch's user, so they are only for
    /// that user and root ([`filo_vnl::mgmt::may_use_files`]); others get EPERM
    /// ([`FILES_REFUSED`]).
    pub fn for_peer(files_allowed: bool) -> Session {
        Session {
            files_refused: !files_allowed,
            ..Session::default()
        }
    }

    /// Whether this session subscribed to debug `category` (e.g. `"port/ep/+"`).
    pub fn wants(&self, category: &str) -> bool {
        category_index(category).is_some_and(|i| self.debug & (1 << i) != 0)
    }
}

/// The console's answer to one command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    /// Exactly the bytes to write back (framing, status line and prompt, or
    /// `"9999 END OF SESSION"` after `logout`/`shutdown`).
    pub text: String,
    pub effects: Vec<Effect>,
    /// Debug events the command caused (ports created or removed), for the daemon to
    /// broadcast to subscribed sessions.
    pub events: Vec<DebugEvent>,
}

/// What a session sees on connect: the banner and the first prompt.
pub fn greeting() -> String {
    format!("{BANNER}{PROMPT}")
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Empty line or comment: nothing but the prompt.
    Nothing,
    Done(Result<(), i32>),
    EndSession,
    /// `load`: waiting for the daemon to read the script.
    Loading,
}

/// The result of one command before rendering.
struct Outcome {
    /// The command prints (data block framing).
    prints: bool,
    lines: Vec<String>,
    status: Status,
    /// Said after the `strerror` text of a failure.
    detail: &'static str,
}

impl Outcome {
    /// The framed lines, without the prompt.
    fn framed(&self) -> Vec<String> {
        let mut out = Vec::new();
        let result = match self.status {
            Status::Nothing | Status::EndSession | Status::Loading => return out,
            Status::Done(result) => result,
        };
        if self.prints {
            out.push(DATA_HEADER.to_string());
            out.extend(self.lines.iter().cloned());
            out.push(".".to_string());
        }
        out.push(match result {
            Err(e) if !self.detail.is_empty() => framing::error_line(e, self.detail),
            _ => status_line(result),
        });
        out
    }
}

/// Everything a command handler may touch.
struct Ctx<'a> {
    state: &'a mut SwitchState,
    session: &'a mut Session,
    now: Instant,
    out: Vec<String>,
    effects: Vec<Effect>,
    events: Vec<DebugEvent>,
    end_session: bool,
    /// Set by `load`: the path of the script to run.
    load: Option<String>,
    /// Said after the `strerror` text of a failure.
    detail: &'static str,
}

impl Ctx<'_> {
    fn line(&mut self, line: String) {
        self.out.push(line);
    }
}

type CmdResult = Result<(), i32>;
type Handler = fn(&mut Ctx<'_>, &str) -> CmdResult;

#[derive(Clone, Copy)]
enum Kind {
    /// A menu title in `help`; not a command.
    Menu,
    /// Prints a data block.
    Prints(Handler),
    /// Status line only.
    Plain(Handler),
}

struct Command {
    path: &'static str,
    syntax: &'static str,
    help: &'static str,
    kind: Kind,
}

const fn menu(path: &'static str, help: &'static str) -> Command {
    Command {
        path,
        syntax: "============",
        help,
        kind: Kind::Menu,
    }
}

const fn prints(
    path: &'static str,
    syntax: &'static str,
    help: &'static str,
    f: Handler,
) -> Command {
    Command {
        path,
        syntax,
        help,
        kind: Kind::Prints(f),
    }
}

const fn plain(
    path: &'static str,
    syntax: &'static str,
    help: &'static str,
    f: Handler,
) -> Command {
    Command {
        path,
        syntax,
        help,
        kind: Kind::Plain(f),
    }
}

/// vde_switch's command table in its `help` order (without the plugin menu), then filo's.
const COMMANDS: &[Command] = &[
    menu("ds", "DATA SOCKET MENU"),
    prints("ds/showinfo", "", "show ds info", cmd_ds_showinfo),
    prints(
        "help",
        "[arg]",
        "Help (limited to arg when specified)",
        cmd_help,
    ),
    plain("logout", "", "logout from this mgmt terminal", cmd_logout),
    plain("shutdown", "", "shutdown of the switch", cmd_shutdown),
    prints("showinfo", "", "show switch version and info", cmd_showinfo),
    prints("load", "path", "load a configuration script", cmd_load),
    menu("debug", "DEBUG MENU"),
    prints("debug/list", "", "list debug categories", cmd_debug_list),
    plain(
        "debug/add",
        "dbgpath",
        "enable debug info for a given category",
        cmd_debug_add,
    ),
    plain(
        "debug/del",
        "dbgpath",
        "disable debug info for a given category",
        cmd_debug_del,
    ),
    menu("hash", "HASH TABLE MENU"),
    prints("hash/showinfo", "", "show hash info", cmd_hash_showinfo),
    plain("hash/setsize", "N", "change hash size", cmd_hash_setsize),
    plain(
        "hash/setgcint",
        "N",
        "change garbage collector interval",
        cmd_hash_setgcint,
    ),
    plain(
        "hash/setexpire",
        "N",
        "change hash entries expire time",
        cmd_hash_setexpire,
    ),
    plain(
        "hash/setminper",
        "N",
        "minimum persistence time",
        cmd_hash_setminper,
    ),
    prints("hash/print", "", "print the hash table", cmd_hash_print),
    prints("hash/find", "MAC [VLAN]", "MAC lookup", cmd_hash_find),
    menu("fstp", "FAST SPANNING TREE MENU"),
    prints("fstp/showinfo", "", "show fstp info", cmd_fstp_showinfo),
    plain(
        "fstp/setfstp",
        "0/1",
        "Fast spanning tree protocol 1=ON 0=OFF",
        cmd_fstp_setfstp,
    ),
    plain(
        "fstp/setedge",
        "VLAN PORT 1/0",
        "Define an edge port for a vlan 1=Y 0=N",
        cmd_fstp_setedge,
    ),
    plain(
        "fstp/bonus",
        "VLAN PORT COST",
        "set the port bonus for a vlan",
        cmd_fstp_bonus,
    ),
    prints(
        "fstp/print",
        "[N]",
        "print fst data for the defined vlan",
        cmd_fstp_print,
    ),
    menu("port", "PORT STATUS MENU"),
    prints("port/showinfo", "", "show port info", cmd_port_showinfo),
    plain(
        "port/setnumports",
        "N",
        "set the number of ports",
        cmd_port_setnumports,
    ),
    plain("port/sethub", "0/1", "1=HUB 0=switch", cmd_port_sethub),
    plain(
        "port/setvlan",
        "N VLAN",
        "set port VLAN (untagged)",
        cmd_port_setvlan,
    ),
    prints(
        "port/createauto",
        "",
        "create a port with an automatically allocated id (inactive|notallocatable)",
        cmd_port_createauto,
    ),
    plain(
        "port/create",
        "N",
        "create the port N (inactive|notallocatable)",
        cmd_port_create,
    ),
    plain("port/remove", "N", "remove the port N", cmd_port_remove),
    plain(
        "port/allocatable",
        "N 0/1",
        "Is the port allocatable as unnamed? 1=Y 0=N",
        cmd_port_allocatable,
    ),
    plain(
        "port/setuser",
        "N user",
        "access control: set user",
        cmd_port_setuser,
    ),
    plain(
        "port/setgroup",
        "N user",
        "access control: set group",
        cmd_port_setgroup,
    ),
    plain(
        "port/epclose",
        "N ID",
        "remove the endpoint port N/id ID",
        cmd_port_epclose,
    ),
    plain(
        "port/resetcounter",
        "[N]",
        "reset the port (N) counters",
        cmd_port_resetcounter,
    ),
    prints(
        "port/print",
        "[N]",
        "print the port/endpoint table",
        cmd_port_print,
    ),
    prints(
        "port/allprint",
        "[N]",
        "print the port/endpoint table (including inactive port)",
        cmd_port_allprint,
    ),
    menu("vlan", "VLAN MANAGEMENT MENU"),
    plain(
        "vlan/create",
        "N",
        "create the VLAN with tag N",
        cmd_vlan_create,
    ),
    plain(
        "vlan/remove",
        "N",
        "remove the VLAN with tag N",
        cmd_vlan_remove,
    ),
    plain(
        "vlan/addport",
        "N PORT",
        "add port to the vlan N (tagged)",
        cmd_vlan_addport,
    ),
    plain(
        "vlan/delport",
        "N PORT",
        "remove port from the vlan N (tagged)",
        cmd_vlan_delport,
    ),
    prints(
        "vlan/print",
        "[N]",
        "print the list of defined vlan",
        cmd_vlan_print,
    ),
    prints(
        "vlan/allprint",
        "[N]",
        "print the list of defined vlan (including inactive port)",
        cmd_vlan_allprint,
    ),
    plain(
        "port/setmirror",
        "N|NONE",
        "copy all forwarded traffic to port N (filo)",
        cmd_port_setmirror,
    ),
    prints(
        "port/drops",
        "",
        "dropped frames by reason and port (filo)",
        cmd_port_drops,
    ),
    plain(
        "port/capture",
        "N PATH|off",
        "capture port N to a pcap file (filo)",
        cmd_port_capture,
    ),
    plain(
        "port/dhcpserver",
        "N 0/1",
        "a DHCP server is on port N: DHCP client broadcast bursts go there (filo)",
        cmd_port_dhcpserver,
    ),
    menu("dhcp", "DHCP SNOOPING MENU (filo)"),
    plain(
        "dhcp/snooping",
        "0/1",
        "DHCP client broadcast bursts go to DHCP server ports only (filo)",
        cmd_dhcp_snooping,
    ),
    prints(
        "dhcp/print",
        "",
        "DHCP server ports and client broadcasts not flooded (filo)",
        cmd_dhcp_print,
    ),
];

// ---- entry points --------------------------------------------------------------------------

/// Strip the line end, skip leading blanks, find the command and run it.
fn run(ctx: &mut Ctx<'_>, input: &str) -> Outcome {
    let input = input.strip_suffix('\n').unwrap_or(input);
    let input = input.strip_suffix('\r').unwrap_or(input);
    let input = input.trim_start_matches([' ', '\t']);
    if input.is_empty() || input.starts_with('#') || input.starts_with('\n') {
        return Outcome {
            prints: false,
            lines: Vec::new(),
            status: Status::Nothing,
            detail: "",
        };
    }
    let found = COMMANDS.iter().find_map(|c| {
        let rest = input.strip_prefix(c.path)?;
        match (c.kind, rest.chars().next()) {
            (Kind::Menu, _) => None,
            (_, None | Some(' ' | '\t')) => Some((c, rest.trim_start_matches([' ', '\t']))),
            _ => None,
        }
    });
    let (prints, result) = match found {
        None => (false, Err(ENOSYS)),
        Some((c, arg)) => match c.kind {
            Kind::Prints(f) => (true, f(ctx, arg)),
            Kind::Plain(f) => (false, f(ctx, arg)),
            Kind::Menu => (false, Err(ENOSYS)),
        },
    };
    let status = if ctx.end_session {
        Status::EndSession
    } else if result.is_ok() && ctx.load.is_some() {
        Status::Loading
    } else {
        Status::Done(result)
    };
    Outcome {
        prints,
        lines: std::mem::take(&mut ctx.out),
        status,
        detail: std::mem::take(&mut ctx.detail),
    }
}

fn with_ctx<R>(
    state: &mut SwitchState,
    session: &mut Session,
    now: Instant,
    f: impl FnOnce(&mut Ctx<'_>) -> R,
) -> (R, Vec<Effect>, Vec<DebugEvent>) {
    let mut ctx = Ctx {
        state,
        session,
        now,
        out: Vec::new(),
        effects: Vec::new(),
        events: Vec::new(),
        end_session: false,
        load: None,
        detail: "",
    };
    let r = f(&mut ctx);
    (r, ctx.effects, ctx.events)
}

/// Asks the daemon for the script of the `load` just run ([`Effect::Load`]).
fn await_load(ctx: &mut Ctx<'_>, echo: bool, prompt: bool) {
    if let Some(label) = ctx.load.take() {
        ctx.effects.push(Effect::Load(PathBuf::from(&label)));
        ctx.session.awaiting = Some(Awaited {
            label,
            echo,
            prompt,
        });
    }
}

/// Run one command (one read from the console) and return what to write back.
///
/// `load PATH` answers an empty text and [`Effect::Load`]: the daemon reads the file and
/// hands it to [`loaded`], whose reply carries the framed answer (and perhaps the next
/// `Effect::Load`, for a script that loads another).
pub fn execute(state: &mut SwitchState, session: &mut Session, now: Instant, input: &str) -> Reply {
    // A `load` the daemon never answered is forgotten.
    session.scripts.clear();
    session.awaiting = None;
    session.loads = 0;
    let (text, effects, events) = with_ctx(state, session, now, |ctx| {
        let outcome = run(ctx, input);
        let mut text = String::new();
        match outcome.status {
            Status::EndSession => text.push_str(END_OF_SESSION),
            Status::Loading => await_load(ctx, true, true),
            _ => {
                for line in outcome.framed() {
                    text.push_str(&line);
                    text.push('\n');
                }
                text.push_str(PROMPT);
            }
        }
        text
    });
    Reply {
        text,
        effects,
        events,
    }
}

/// Continues after [`Effect::Load`] with the script's text, or the errno reading it failed
/// with: runs the script (echoing each line and its answer as `vde[PATH]: <line>`, as
/// vde_switch does) and then whatever script was running the `load`. The reply may end in
/// another `Effect::Load` (a script that loads another); without a pending `load` it is empty.
pub fn loaded(
    state: &mut SwitchState,
    session: &mut Session,
    now: Instant,
    script: Result<&str, i32>,
) -> Reply {
    let Some(awaited) = session.awaiting.take() else {
        return Reply::default();
    };
    let (text, effects, events) = with_ctx(state, session, now, |ctx| {
        let mut text = String::new();
        match script {
            Ok(script) => {
                if awaited.echo {
                    text.push_str(DATA_HEADER);
                    text.push('\n');
                }
                ctx.session.scripts.push(Script {
                    label: awaited.label,
                    lines: script.lines().map(str::to_string).collect(),
                    echo: awaited.echo,
                    is_load: true,
                    prompt: awaited.prompt,
                });
            }
            Err(errno) => {
                let outcome = Outcome {
                    prints: true,
                    lines: Vec::new(),
                    status: Status::Done(Err(errno)),
                    detail: "",
                };
                if awaited.echo {
                    for line in outcome.framed() {
                        text.push_str(&line);
                        text.push('\n');
                    }
                }
                if awaited.prompt {
                    text.push_str(PROMPT);
                }
            }
        }
        resume(ctx, &mut text);
        text
    });
    Reply {
        text,
        effects,
        events,
    }
}

/// Run a script: an rc file (`-f`, `echo == false`: no output, only effects and events) or
/// a script shown like the file of `load` (`echo == true`: every non-blank line is echoed as
/// `vde[PATH]: <line>` followed by that command's complete framed answer). `logout` in a
/// script is ignored (as in vde); `shutdown` stops the script and yields
/// [`Effect::Shutdown`]. A `load` in the script yields [`Effect::Load`], answered with
/// [`loaded`].
pub fn run_script(
    state: &mut SwitchState,
    session: &mut Session,
    now: Instant,
    path_label: &str,
    text: &str,
    echo: bool,
) -> Reply {
    session.scripts.clear();
    session.awaiting = None;
    session.loads = 0;
    session.scripts.push(Script {
        label: path_label.to_string(),
        lines: text.lines().map(str::to_string).collect(),
        echo,
        is_load: false,
        prompt: false,
    });
    let (out, effects, events) = with_ctx(state, session, now, |ctx| {
        let mut out = String::new();
        resume(ctx, &mut out);
        out
    });
    Reply {
        text: out,
        effects,
        events,
    }
}

/// Runs the innermost script's lines until every script is done, a `load` must wait for its
/// file, or `shutdown` ends them all.
fn resume(ctx: &mut Ctx<'_>, text: &mut String) {
    let push = |text: &mut String, line: &str| {
        text.push_str(line);
        text.push('\n');
    };
    while let Some(script) = ctx.session.scripts.last_mut() {
        let Some(raw) = script.lines.pop_front() else {
            if let Some(done) = ctx.session.scripts.pop() {
                if done.is_load && done.echo {
                    push(text, framing::DATA_END);
                    push(text, &status_line(Ok(())));
                }
                if done.prompt {
                    text.push_str(PROMPT);
                }
            }
            continue;
        };
        let (echo, label) = (script.echo, script.label.clone());
        let line = raw.strip_suffix('\r').unwrap_or(&raw);
        if line.trim().is_empty() {
            continue;
        }
        if echo {
            push(text, &format!("vde[{label}]: {line}"));
        }
        let outcome = run(ctx, line);
        match outcome.status {
            Status::EndSession if ctx.effects.contains(&Effect::Shutdown) => {
                // Started from a console command: that session ends.
                if ctx.session.scripts.first().is_some_and(|s| s.prompt) {
                    text.push_str(END_OF_SESSION);
                }
                ctx.session.scripts.clear();
                return;
            }
            Status::EndSession => {
                // logout: nothing to end inside a script.
                ctx.effects.retain(|e| *e != Effect::Logout);
                ctx.end_session = false;
            }
            Status::Loading => {
                await_load(ctx, echo, false);
                return;
            }
            _ if echo => {
                for line in outcome.framed() {
                    push(text, &line);
                }
            }
            _ => {}
        }
    }
}

/// The JSON form of one command's complete reply text (see [`execute_json`]).
pub fn reply_json(text: &str) -> String {
    parse_reply(text).to_json(None, false)
}

/// Run one command and answer in JSON: `{"status":1000,"error":null,"lines":[...]}` where
/// `status` is the vde status code (1000 + errno, 9999 after `logout`/`shutdown`), `error`
/// the `strerror` text or `null`, and `lines` the body lines of the data block. For `load`,
/// render the text completed by [`loaded`] with [`reply_json`] instead.
pub fn execute_json(
    state: &mut SwitchState,
    session: &mut Session,
    now: Instant,
    input: &str,
) -> (String, Vec<Effect>) {
    let reply = execute(state, session, now, input);
    (reply_json(&reply.text), reply.effects)
}

// ---- argument parsing ----------------------------------------------------------------------

/// Exactly `n` whitespace-separated arguments.
fn args_n(arg: &str, n: usize) -> Result<Vec<&str>, i32> {
    let v: Vec<&str> = arg.split_ascii_whitespace().collect();
    if v.len() == n {
        Ok(v)
    } else {
        Err(EINVAL)
    }
}

/// None for no argument, else exactly one.
fn opt_arg(arg: &str) -> Result<Option<&str>, i32> {
    let v: Vec<&str> = arg.split_ascii_whitespace().collect();
    match v.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        _ => Err(EINVAL),
    }
}

/// A decimal number (digits only).
fn num<T: std::str::FromStr>(text: &str) -> Result<T, i32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EINVAL);
    }
    text.parse().map_err(|_| EINVAL)
}

fn flag(text: &str) -> Result<bool, i32> {
    num::<u32>(text).map(|v| v != 0)
}

fn one_num<T: std::str::FromStr>(arg: &str) -> Result<T, i32> {
    num(args_n(arg, 1)?[0])
}

/// A port number below `numports`.
fn port_num(state: &SwitchState, text: &str) -> Result<PortId, i32> {
    let port: PortId = num(text)?;
    if port >= state.numports {
        return Err(EINVAL);
    }
    Ok(port)
}

/// A port number whose port exists.
fn existing_port<'a>(state: &'a mut SwitchState, text: &str) -> Result<&'a mut PortEntry, i32> {
    let port = port_num(state, text)?;
    state.ports.get_mut(&port).ok_or(ENXIO)
}

/// A VLAN number 0..=4095.
fn vlan_num(text: &str) -> Result<u16, i32> {
    let vlan: u16 = num(text)?;
    if vlan > NO_VLAN {
        return Err(EINVAL);
    }
    Ok(vlan)
}

fn errno(e: ConfigError) -> i32 {
    e.errno()
}

/// The longest time a console command takes (1,000,000 s, as the command line): more would
/// overflow the clock when added to it.
const MAX_SECS: u64 = 1_000_000;

fn secs(text: &str) -> Result<Duration, i32> {
    match one_num::<u64>(text)? {
        s if s <= MAX_SECS => Ok(Duration::from_secs(s)),
        _ => Err(EINVAL),
    }
}

// ---- users and groups ----------------------------------------------------------------------

/// Size of the scratch buffer for the reentrant passwd/group lookups.
use filo_vnl::sys::{group_id, group_name, user_id, user_name};

fn show_access(access: Access, name: fn(u32) -> Option<String>) -> String {
    match access {
        Access::None => "NONE".to_string(),
        Access::Any => "ANY".to_string(),
        Access::Id(id) => name(id).unwrap_or_else(|| id.to_string()),
    }
}

fn parse_access(text: &str, lookup: fn(&str) -> Option<u32>) -> Result<Access, i32> {
    match text {
        "NONE" => Ok(Access::None),
        "ANY" => Ok(Access::Any),
        _ if text.bytes().all(|b| b.is_ascii_digit()) => num(text).map(Access::Id),
        _ => lookup(text).map(Access::Id).ok_or(EINVAL),
    }
}

// ---- general commands ----------------------------------------------------------------------

fn cmd_help(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    let filter = arg.trim_end();
    ctx.line(format!(
        "{:<18} {:<15} {}",
        "COMMAND PATH", "SYNTAX", "HELP"
    ));
    ctx.line(format!(
        "{:<18} {:<15} {}",
        "------------", "--------------", "------------"
    ));
    for c in COMMANDS.iter().filter(|c| c.path.starts_with(filter)) {
        ctx.line(format!("{:<18} {:<15} {}", c.path, c.syntax, c.help));
    }
    Ok(())
}

fn cmd_logout(ctx: &mut Ctx<'_>, _arg: &str) -> CmdResult {
    ctx.effects.push(Effect::Logout);
    ctx.end_session = true;
    Ok(())
}

fn cmd_shutdown(ctx: &mut Ctx<'_>, _arg: &str) -> CmdResult {
    ctx.effects.push(Effect::Shutdown);
    ctx.end_session = true;
    Ok(())
}

fn cmd_showinfo(ctx: &mut Ctx<'_>, _arg: &str) -> CmdResult {
    for line in BANNER.split('\n') {
        ctx.line(line.to_string());
    }
    let info = &ctx.state.info;
    let uptime = ctx.now.saturating_duration_since(info.started).as_secs();
    let mac = ctx.state.core.config().bridge_mac;
    let mut lines = vec![format!("pid {} MAC {mac} uptime {uptime}", info.pid)];
    if let Some(mgmt) = &info.mgmt {
        lines.push(format!(
            "mgmt {} perm 0{:03o}",
            mgmt.display(),
            info.mgmt_mode
        ));
    }
    if ctx.state.refused_no_fds > 0 {
        lines.push(format!(
            "{} clients refused: out of file descriptors",
            ctx.state.refused_no_fds
        ));
    }
    lines.push(format!("filo {}", env!("CARGO_PKG_VERSION")));
    ctx.out.extend(lines);
    Ok(())
}

/// Refuses file commands to a console of another user ([`Session::for_peer`]).
fn files_allowed(ctx: &mut Ctx<'_>) -> CmdResult {
    if ctx.session.files_refused {
        ctx.detail = FILES_REFUSED;
        return Err(EPERM);
    }
    Ok(())
}

fn cmd_load(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    let path = arg.trim_end();
    if path.is_empty() {
        return Err(EINVAL);
    }
    files_allowed(ctx)?;
    if ctx.session.scripts.len() >= usize::from(MAX_LOAD_DEPTH) || ctx.session.loads >= MAX_LOADS {
        return Err(ELOOP);
    }
    ctx.session.loads += 1;
    ctx.load = Some(path.to_string());
    Ok(())
}

fn cmd_ds_showinfo(ctx: &mut Ctx<'_>, _arg: &str) -> CmdResult {
    let info = &ctx.state.info;
    let lines = [
        format!("ctl dir {}", info.ctl_dir.display()),
        format!("std mode 0{:03o}", info.mode),
    ];
    ctx.out.extend(lines);
    Ok(())
}

// ---- debug ---------------------------------------------------------------------------------

fn cmd_debug_list(ctx: &mut Ctx<'_>, _arg: &str) -> CmdResult {
    ctx.line(format!(
        "{:<22} {:<3} {:<6} {}",
        "CATEGORY", "TAG", "STATUS", "HELP"
    ));
    ctx.line(format!(
        "{:<22} {:<3} {:<6} {}",
        "------------", "---", "------", "----"
    ));
    for (i, (path, tag, help)) in DEBUG_CATEGORIES.iter().enumerate() {
        let on = if ctx.session.debug & (1 << i) != 0 {
            "ON"
        } else {
            "OFF"
        };
        ctx.line(format!("{path:<22} {tag:03o} {on:<6} {help}"));
    }
    Ok(())
}

/// Categories selected by `path`: itself, or all below it (`port` → `port/+`, `port/ep/+`…).
fn debug_mask(arg: &str) -> Result<u32, i32> {
    let path = args_n(arg, 1)?[0];
    let mask = DEBUG_CATEGORIES
        .iter()
        .enumerate()
        .filter(|(_, (p, _, _))| {
            *p == path
                || p.strip_prefix(path)
                    .is_some_and(|rest| rest.starts_with('/') || path.ends_with('/'))
        })
        .fold(0u32, |m, (i, _)| m | (1 << i));
    if mask == 0 {
        Err(ENOENT)
    } else {
        Ok(mask)
    }
}

fn cmd_debug_add(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    ctx.session.debug |= debug_mask(arg)?;
    Ok(())
}

fn cmd_debug_del(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    ctx.session.debug &= !debug_mask(arg)?;
    Ok(())
}

// ---- hash ----------------------------------------------------------------------------------

fn cmd_hash_showinfo(ctx: &mut Ctx<'_>, _arg: &str) -> CmdResult {
    let config = ctx.state.core.config();
    let lines = [
        format!("Hash size {}", ctx.state.hash_size),
        format!("GC interval {} secs", config.gc_interval.as_secs()),
        format!("GC expire {} secs", config.mac_expire.as_secs()),
        format!("Min persistence {} secs", config.min_persistence.as_secs()),
    ];
    ctx.out.extend(lines);
    Ok(())
}

fn cmd_hash_setsize(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    let size: u32 = one_num(arg)?;
    if size == 0 || size > MAX_HASH_SIZE {
        return Err(EINVAL);
    }
    ctx.state.hash_size = size.next_power_of_two();
    Ok(())
}

fn cmd_hash_setgcint(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    let interval = secs(arg)?;
    if interval.is_zero() {
        return Err(EINVAL);
    }
    ctx.state.core.set_gc_interval(ctx.now, interval);
    Ok(())
}

fn cmd_hash_setexpire(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    let expire = secs(arg)?;
    ctx.state.core.set_mac_expire(expire);
    Ok(())
}

fn cmd_hash_setminper(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    let min = secs(arg)?;
    ctx.state.core.set_min_persistence(min);
    Ok(())
}

/// The bucket vde_switch would use: a 64-bit finaliser over MAC (little-endian) | VLAN << 48.
fn hash_bucket(mac: MacAddr, vlan: u16, size: u32) -> u64 {
    let mut key = u64::from(vlan) << 48;
    for (i, b) in mac.0.iter().enumerate() {
        key |= u64::from(*b) << (8 * i);
    }
    key ^= key >> 33;
    key = key.wrapping_mul(0xff51_afd7_ed55_8ccd);
    key ^= key >> 33;
    key = key.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    key ^= key >> 33;
    key & u64::from(size.max(1).next_power_of_two() - 1)
}

fn cmd_hash_print(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    opt_arg(arg)?.map_or(Ok(()), |_| Err(EINVAL))?;
    let size = ctx.state.hash_size;
    let mut entries: Vec<_> = ctx
        .state
        .core
        .mac_table(ctx.now)
        .map(|e| (hash_bucket(e.mac, e.vlan, size), e))
        .collect();
    entries.sort_by_key(|(bucket, e)| (*bucket, e.mac, e.vlan));
    for (bucket, e) in entries {
        ctx.out.push(format!(
            "Hash: {bucket:04} Addr: {} VLAN {:04} to port: {:03}  age {} secs",
            e.mac,
            e.vlan,
            e.port,
            e.age.as_secs()
        ));
    }
    Ok(())
}

fn cmd_hash_find(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    let v: Vec<&str> = arg.split_ascii_whitespace().collect();
    let (mac, vlan) = match v.as_slice() {
        [mac] => (*mac, 0),
        [mac, vlan] => (*mac, vlan_num(vlan)?),
        _ => return Err(EINVAL),
    };
    let mac: MacAddr = mac.parse().map_err(|_| EINVAL)?;
    let entry = ctx
        .state
        .core
        .mac_table(ctx.now)
        .find(|e| e.mac == mac && e.vlan == vlan)
        .ok_or(ENODEV)?;
    ctx.line(format!(
        "Port {:04} age {} secs",
        entry.port,
        entry.age.as_secs()
    ));
    Ok(())
}

// ---- spanning tree -------------------------------------------------------------------------

fn cmd_fstp_showinfo(ctx: &mut Ctx<'_>, _arg: &str) -> CmdResult {
    let config = ctx.state.core.config();
    let status = ctx.state.core.stp_status();
    let t = status.timers;
    let lines = [
        format!(
            "MAC {} Priority {} (0x{:x})",
            config.bridge_mac, config.bridge_priority, config.bridge_priority
        ),
        format!("FSTP={}", config.stp),
        "Protocol=802.1D (one tree for all VLANs)".to_string(),
        format!(
            "Root {} cost {} hello {} max_age {} forward_delay {}",
            bridge_hex(&status.root_id),
            status.root_path_cost,
            t.hello_time.as_secs(),
            t.max_age.as_secs(),
            t.forward_delay.as_secs()
        ),
    ];
    ctx.out.extend(lines);
    Ok(())
}

fn cmd_fstp_setfstp(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    let on = flag(args_n(arg, 1)?[0])?;
    ctx.state.core.set_stp(ctx.now, on);
    Ok(())
}

/// A VLAN argument that must name an existing VLAN.
fn existing_vlan(ctx: &Ctx<'_>, text: &str) -> Result<u16, i32> {
    let vlan = vlan_num(text)?;
    if vlan > MAX_VLAN {
        return Err(EINVAL);
    }
    if ctx.state.core.vlan_members(vlan).is_none() {
        return Err(ENXIO);
    }
    Ok(vlan)
}

fn cmd_fstp_setedge(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    let v = args_n(arg, 3)?;
    existing_vlan(ctx, v[0])?;
    let port = port_num(ctx.state, v[1])?;
    let edge = flag(v[2])?;
    ctx.state.core.set_edge(ctx.now, port, edge).map_err(errno)
}

fn cmd_fstp_bonus(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    let v = args_n(arg, 3)?;
    existing_vlan(ctx, v[0])?;
    port_num(ctx.state, v[1])?;
    num::<u32>(v[2])?;
    // 802.1D path costs are not adjustable through the core.
    Err(EOPNOTSUPP)
}

fn role_name(role: PortRole) -> &'static str {
    match role {
        PortRole::Root => "Root",
        PortRole::Designated => "Designated",
        PortRole::Alternate => "Alternate",
        PortRole::Backup => "Backup",
        PortRole::Edge => "Edge",
        PortRole::Disabled => "Unknown",
    }
}

fn cmd_fstp_print(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    let vlans: Vec<u16> = match opt_arg(arg)? {
        Some(n) => vec![existing_vlan(ctx, n)?],
        None => ctx.state.core.vlan_ids().collect(),
    };
    let core = &ctx.state.core;
    let status = core.stp_status();
    let root_switch = status.root_id == status.bridge_id;
    let mut lines = Vec::new();
    for vlan in vlans {
        lines.push(format!(
            "FST DATA VLAN {vlan:04} {} {}",
            if root_switch { "ROOTSWITCH" } else { "" },
            if core.config().stp {
                ""
            } else {
                "FSTP IS DISABLED"
            }
        ));
        lines.push(format!(" ++ root {}", bridge_hex(&status.root_id)));
        lines.push(format!(" ++ designated {}", bridge_hex(&status.bridge_id)));
        lines.push(format!(
            " ++ rootport {:04} cost {} age 0 bonusport 0000 bonuscost 0",
            status.root_port.unwrap_or(0),
            status.root_path_cost
        ));
        if let Some(members) = core.vlan_members(vlan) {
            for m in members.filter(|m| m.active) {
                lines.push(format!(
                    " -- Port {:04} tagged={} portcost={} role={}",
                    m.port,
                    u8::from(m.tagged),
                    DEFAULT_PATH_COST,
                    role_name(core.stp_role(m.port))
                ));
            }
        }
    }
    ctx.out.extend(lines);
    Ok(())
}

// ---- ports ---------------------------------------------------------------------------------

fn cmd_port_showinfo(ctx: &mut Ctx<'_>, _arg: &str) -> CmdResult {
    let core = &ctx.state.core;
    let lines = [
        format!("Numports={}", ctx.state.numports),
        format!("HUB={}", core.config().hub),
        "counters=true".to_string(),
        format!(
            "mirror={}",
            core.mirror().map_or("NONE".to_string(), |p| p.to_string())
        ),
        format!("queue={}", ctx.state.info.queue_len),
        format!("lossless={}", ctx.state.info.lossless),
    ];
    ctx.out.extend(lines);
    Ok(())
}

/// Remove a port from state and core, closing its endpoints first.
fn remove_port(ctx: &mut Ctx<'_>, port: PortId) {
    if let Some(entry) = ctx.state.ports.remove(&port) {
        if entry.is_active() {
            ctx.effects.push(Effect::ClosePort { port });
        }
        let _ = ctx.state.core.remove_port(ctx.now, port);
        ctx.events.push(DebugEvent::PortRemoved(port));
    }
}

fn cmd_port_setnumports(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    let n: u16 = one_num(arg)?;
    if n == 0 {
        return Err(EINVAL);
    }
    if n > ctx.state.core.config().num_ports {
        return Err(ENOSPC);
    }
    let doomed: Vec<PortId> = ctx.state.ports.range(n..).map(|(&p, _)| p).collect();
    for port in doomed {
        remove_port(ctx, port);
    }
    ctx.state.numports = n;
    Ok(())
}

fn cmd_port_sethub(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    let hub = flag(args_n(arg, 1)?[0])?;
    ctx.state.core.set_hub(hub);
    Ok(())
}

fn cmd_port_setvlan(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    let v = args_n(arg, 2)?;
    let port = port_num(ctx.state, v[0])?;
    let vlan = vlan_num(v[1])?;
    if !ctx.state.ports.contains_key(&port) {
        return Err(ENXIO);
    }
    ctx.state.core.set_untagged_vlan(port, vlan).map_err(errno)
}

/// Create port `port` (inactive, not allocatable).
fn create_port(ctx: &mut Ctx<'_>, port: PortId) -> CmdResult {
    if ctx.state.ports.contains_key(&port) {
        return Err(EEXIST);
    }
    let entry = ctx.state.port_mut(port).ok_or(EINVAL)?;
    entry.allocatable = false;
    ctx.events.push(DebugEvent::PortAdded(port));
    Ok(())
}

fn cmd_port_createauto(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    opt_arg(arg)?.map_or(Ok(()), |_| Err(EINVAL))?;
    let port = (1..ctx.state.numports)
        .find(|p| !ctx.state.ports.contains_key(p))
        .ok_or(ENOSPC)?;
    create_port(ctx, port)?;
    ctx.line(format!("Port {port:04}"));
    Ok(())
}

fn cmd_port_create(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    let port = port_num(ctx.state, args_n(arg, 1)?[0])?;
    create_port(ctx, port)
}

fn cmd_port_remove(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    let port = port_num(ctx.state, args_n(arg, 1)?[0])?;
    if !ctx.state.ports.contains_key(&port) {
        return Err(ENXIO);
    }
    remove_port(ctx, port);
    Ok(())
}

fn cmd_port_allocatable(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    let v = args_n(arg, 2)?;
    let value = flag(v[1])?;
    existing_port(ctx.state, v[0])?.allocatable = value;
    Ok(())
}

fn cmd_port_setuser(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    let v = args_n(arg, 2)?;
    existing_port(ctx.state, v[0])?;
    let access = parse_access(v[1], user_id)?;
    existing_port(ctx.state, v[0])?.acl_user = access;
    Ok(())
}

fn cmd_port_setgroup(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    let v = args_n(arg, 2)?;
    existing_port(ctx.state, v[0])?;
    let access = parse_access(v[1], group_id)?;
    existing_port(ctx.state, v[0])?.acl_group = access;
    Ok(())
}

fn cmd_port_epclose(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    let v = args_n(arg, 2)?;
    let id: u32 = num(v[1])?;
    let entry = existing_port(ctx.state, v[0])?;
    if !entry.endpoints.iter().any(|e| e.id == id) {
        return Err(ENXIO);
    }
    let port = entry.id;
    ctx.effects.push(Effect::CloseEndpoint { port, id });
    Ok(())
}

fn cmd_port_resetcounter(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    match opt_arg(arg)? {
        Some(n) => existing_port(ctx.state, n)?.counters = PortCounters::default(),
        None => {
            for entry in ctx.state.ports.values_mut() {
                entry.counters = PortCounters::default();
            }
        }
    }
    Ok(())
}

fn print_port(state: &SwitchState, entry: &PortEntry, out: &mut Vec<String>) {
    let untagged = state
        .core
        .ports()
        .find(|p| p.port == entry.id)
        .map_or(0, |p| p.untagged_vlan);
    out.push(format!(
        "Port {:04} untagged_vlan={:04} {}ACTIVE - {}Unnamed Allocatable",
        entry.id,
        untagged,
        if entry.is_active() { "" } else { "IN" },
        if entry.allocatable { "" } else { "NOT " }
    ));
    let current = entry.current_user().map_or(Access::None, Access::Id);
    out.push(format!(
        " Current User: {} Access Control: (User: {} - Group: {})",
        show_access(current, user_name),
        show_access(entry.acl_user, user_name),
        show_access(entry.acl_group, group_name)
    ));
    let c = &entry.counters;
    out.push(format!(
        " IN:  pkts {:10}          bytes {:20}",
        c.in_frames, c.in_bytes
    ));
    out.push(format!(
        " OUT: pkts {:10}          bytes {:20}",
        c.out_frames, c.out_bytes
    ));
    out.push(format!(
        " DROP: queue {:10}          error {:20}",
        c.drop_out_queue_full, c.drop_out_error
    ));
    for ep in &entry.endpoints {
        let descr = if ep.description.is_empty() {
            "no endpoint description".to_string()
        } else {
            sanitize(&ep.description)
        };
        out.push(format!(
            "  -- endpoint ID {:04} module {:<12}: {}",
            ep.id,
            ep.kind.module_name(),
            descr
        ));
    }
}

fn port_print(ctx: &mut Ctx<'_>, arg: &str, all: bool) -> CmdResult {
    let mut lines = Vec::new();
    match opt_arg(arg)? {
        Some(n) => {
            let port = port_num(ctx.state, n)?;
            let entry = ctx.state.ports.get(&port).ok_or(ENXIO)?;
            if !all && !entry.is_active() {
                return Err(ENXIO);
            }
            print_port(ctx.state, entry, &mut lines);
        }
        None => {
            for entry in ctx.state.ports.values() {
                if all || entry.is_active() {
                    print_port(ctx.state, entry, &mut lines);
                }
            }
        }
    }
    ctx.out.extend(lines);
    Ok(())
}

fn cmd_port_print(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    port_print(ctx, arg, false)
}

fn cmd_port_allprint(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    port_print(ctx, arg, true)
}

fn cmd_port_setmirror(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    let target = args_n(arg, 1)?[0];
    let mirror = if target == "NONE" {
        None
    } else {
        Some(port_num(ctx.state, target)?)
    };
    ctx.state.core.set_mirror(mirror).map_err(errno)
}

fn cmd_port_dhcpserver(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    let v = args_n(arg, 2)?;
    let port = port_num(ctx.state, v[0])?;
    let on = flag(v[1])?;
    ctx.state.core.set_dhcp_server_port(port, on).map_err(errno)
}

fn cmd_dhcp_snooping(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    let on = flag(args_n(arg, 1)?[0])?;
    ctx.state.core.set_dhcp_snooping(on);
    Ok(())
}

fn cmd_dhcp_print(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    opt_arg(arg)?.map_or(Ok(()), |_| Err(EINVAL))?;
    let core = &ctx.state.core;
    ctx.out.push(format!(
        "DHCP snooping {} snooped {}",
        if core.config().dhcp_snooping {
            "on"
        } else {
            "off"
        },
        core.dhcp_snooped()
    ));
    for s in core.dhcp_server_ports() {
        ctx.out.push(match s.last_seen {
            None => format!("Port {:04} VLAN {:04} set by hand", s.port, s.vlan),
            Some(t) => format!(
                "Port {:04} VLAN {:04} answered {} secs ago",
                s.port,
                s.vlan,
                ctx.now.saturating_duration_since(t).as_secs()
            ),
        });
    }
    Ok(())
}

fn cmd_port_drops(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    opt_arg(arg)?.map_or(Ok(()), |_| Err(EINVAL))?;
    let drops = ctx.state.core.drop_counters();
    let mut lines = vec![format!("{:<20} {:>20}", "REASON", "FRAMES")];
    for (reason, count) in drops.iter() {
        lines.push(format!("{:<20} {:>20}", reason.name(), count));
    }
    lines.push(format!("{:<20} {:>20}", "total", drops.total()));
    for entry in ctx.state.ports.values() {
        let c = &entry.counters;
        lines.push(format!(
            "Port {:04} in {:10} queue_full {:10} error {:10} queued {}",
            entry.id, c.drop_in, c.drop_out_queue_full, c.drop_out_error, entry.queued
        ));
    }
    ctx.out.extend(lines);
    Ok(())
}

fn cmd_port_capture(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    let mut parts = arg.splitn(2, [' ', '\t']);
    let port_text = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("").trim();
    if path.is_empty() {
        return Err(EINVAL);
    }
    let port = existing_port(ctx.state, port_text)?.id;
    let path = (path != "off").then(|| PathBuf::from(path));
    if path.is_some() {
        files_allowed(ctx)?;
    }
    ctx.effects.push(Effect::Capture { port, path });
    Ok(())
}

// ---- VLANs ---------------------------------------------------------------------------------

fn cmd_vlan_create(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    let vlan = vlan_num(args_n(arg, 1)?[0])?;
    ctx.state.core.vlan_create(vlan).map_err(errno)
}

fn cmd_vlan_remove(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    let vlan = vlan_num(args_n(arg, 1)?[0])?;
    ctx.state.core.vlan_remove(vlan).map_err(errno)
}

fn vlan_port_args(ctx: &Ctx<'_>, arg: &str) -> Result<(u16, PortId), i32> {
    let v = args_n(arg, 2)?;
    let vlan = vlan_num(v[0])?;
    let port = port_num(ctx.state, v[1])?;
    if !ctx.state.ports.contains_key(&port) {
        return Err(ENXIO);
    }
    Ok((vlan, port))
}

fn cmd_vlan_addport(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    let (vlan, port) = vlan_port_args(ctx, arg)?;
    ctx.state.core.vlan_add_port(vlan, port).map_err(errno)
}

fn cmd_vlan_delport(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    let (vlan, port) = vlan_port_args(ctx, arg)?;
    ctx.state.core.vlan_del_port(vlan, port).map_err(errno)
}

fn vlan_print(ctx: &mut Ctx<'_>, arg: &str, all: bool) -> CmdResult {
    let vlans: Vec<u16> = match opt_arg(arg)? {
        Some(n) => vec![existing_vlan(ctx, n)?],
        None => ctx.state.core.vlan_ids().collect(),
    };
    let core = &ctx.state.core;
    let mut lines = Vec::new();
    for vlan in vlans {
        lines.push(format!("VLAN {vlan:04}"));
        if let Some(members) = core.vlan_members(vlan) {
            for m in members.filter(|m| all || m.active) {
                lines.push(format!(
                    " -- Port {:04} tagged={} active={} status={}",
                    m.port,
                    u8::from(m.tagged),
                    u8::from(m.active),
                    state_name(m.stp_state)
                ));
            }
        }
    }
    ctx.out.extend(lines);
    Ok(())
}

fn cmd_vlan_print(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    vlan_print(ctx, arg, false)
}

fn cmd_vlan_allprint(ctx: &mut Ctx<'_>, arg: &str) -> CmdResult {
    vlan_print(ctx, arg, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strerror_covers_every_errno_the_core_reports() {
        use crate::core::ConfigError::*;
        for e in [
            Invalid,
            NoSuchPort,
            NoSuchVlan,
            Exists,
            UntaggedVlan,
            Busy,
            NotMember,
        ] {
            assert!(
                !framing::strerror(e.errno()).starts_with("Unknown"),
                "{e:?}"
            );
        }
    }

    #[test]
    fn hash_buckets_stay_in_range() {
        for size in [1, 2, 128, 1000] {
            let b = hash_bucket(MacAddr([2, 0, 0, 0, 0, 0xaa]), 4095, size);
            assert!(b < u64::from(size.next_power_of_two()));
        }
    }
}
