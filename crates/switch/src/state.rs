//! What the switch daemon knows besides the forwarding core: ports with their endpoints,
//! access control and counters, and facts about the daemon itself. The console reads and
//! changes this; the daemon's I/O shell keeps it in step with sockets.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use crate::core::{Core, PortId};

/// What kind of endpoint feeds a port (vde shows it as the endpoint's "module").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointKind {
    /// A client of the control socket (vde_plug, QEMU, libvdeplug programs, filo plugs).
    UnixProg,
    /// A kernel tap interface (`-t`).
    Tuntap,
}

impl EndpointKind {
    /// The name vde_switch's `port/print` uses.
    pub fn module_name(self) -> &'static str {
        match self {
            EndpointKind::UnixProg => "unix prog",
            EndpointKind::Tuntap => "tuntap",
        }
    }
}

/// One connected endpoint of a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInfo {
    /// Unique while connected; vde_switch uses the control connection's fd number.
    pub id: u32,
    pub kind: EndpointKind,
    pub description: String,
    /// Owner of the client's data socket (the connecting user), when known.
    pub uid: Option<u32>,
}

/// Per-port traffic counters. `out_*` count frames actually handed to an endpoint (unlike
/// vde_switch, which counts before sending); every frame not delivered is in a drop counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortCounters {
    pub in_frames: u64,
    pub in_bytes: u64,
    pub out_frames: u64,
    pub out_bytes: u64,
    /// Frames received on this port that the core dropped (VLAN, spanning tree, …).
    pub drop_in: u64,
    /// Frames for this port dropped because its queue was full (slow receiver).
    pub drop_out_queue_full: u64,
    /// Frames for this port dropped because the endpoint reported an error.
    pub drop_out_error: u64,
}

/// User or group access control for a port (`port/setuser`, `port/setgroup`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Access {
    /// NONE: no restriction of this kind.
    #[default]
    None,
    /// ANY: explicitly anybody.
    Any,
    Id(u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortEntry {
    pub id: PortId,
    /// May be handed out to clients that ask for "any port".
    pub allocatable: bool,
    pub acl_user: Access,
    pub acl_group: Access,
    pub endpoints: Vec<EndpointInfo>,
    pub counters: PortCounters,
    /// Frames waiting in this port's output queue right now.
    pub queued: usize,
}

impl PortEntry {
    pub fn new(id: PortId) -> PortEntry {
        PortEntry {
            id,
            allocatable: true,
            acl_user: Access::None,
            acl_group: Access::None,
            endpoints: Vec::new(),
            counters: PortCounters::default(),
            queued: 0,
        }
    }

    pub fn is_active(&self) -> bool {
        !self.endpoints.is_empty()
    }

    /// The user of the first endpoint ("Current User" in `port/print`).
    pub fn current_user(&self) -> Option<u32> {
        self.endpoints.iter().find_map(|e| e.uid)
    }
}

/// Facts about the running daemon, shown by `showinfo`, `ds/showinfo` and friends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonInfo {
    pub ctl_dir: PathBuf,
    /// Permissions of control and data sockets.
    pub mode: u32,
    pub mgmt: Option<PathBuf>,
    pub mgmt_mode: u32,
    pub pid: u32,
    pub started: Instant,
    /// Per-port output queue length (frames).
    pub queue_len: usize,
    /// Back-pressure instead of dropping when a queue is full.
    pub lossless: bool,
}

/// Something the console asks the daemon to do beyond changing state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Close one endpoint (`port/epclose`).
    CloseEndpoint { port: PortId, id: u32 },
    /// Close every endpoint of a port (`port/remove`, `port/setnumports` shrinking).
    ClosePort { port: PortId },
    /// End this console session (`logout`).
    Logout,
    /// Stop the switch (`shutdown`).
    Shutdown,
    /// Start or stop capturing a port's traffic to a pcap file.
    Capture { port: PortId, path: Option<PathBuf> },
    /// Read this script and hand it to [`console::loaded`](crate::console::loaded) (`load`).
    Load(PathBuf),
}

/// Everything the console may read or change.
pub struct SwitchState {
    pub core: Core,
    pub ports: BTreeMap<PortId, PortEntry>,
    pub numports: u16,
    pub info: DaemonInfo,
    /// The address-table size shown by `hash/showinfo` and set by `hash/setsize` (a power
    /// of two). The core's table grows as needed; this only keeps vde's console contract.
    pub hash_size: u32,
    /// Clients (control and management connections) refused because the daemon was out of
    /// file descriptors; shown by `showinfo` once there are any.
    pub refused_no_fds: u64,
}

impl SwitchState {
    pub fn new(core: Core, info: DaemonInfo) -> SwitchState {
        let numports = core.config().num_ports;
        SwitchState {
            core,
            ports: BTreeMap::new(),
            numports,
            info,
            hash_size: 128,
            refused_no_fds: 0,
        }
    }

    /// The port structure, created (and added to the core) on demand.
    pub fn port_mut(&mut self, id: PortId) -> Option<&mut PortEntry> {
        if id >= self.numports {
            return None;
        }
        if !self.ports.contains_key(&id) {
            let _ = self.core.add_port(id);
            self.ports.insert(id, PortEntry::new(id));
        }
        self.ports.get_mut(&id)
    }

    /// The first port ≥ 1 that is allocatable and has no endpoint (vde_switch's rule for a
    /// client that asks for no particular port).
    pub fn free_port(&self) -> Option<PortId> {
        (1..self.numports).find(|p| match self.ports.get(p) {
            None => true,
            Some(e) => e.allocatable && !e.is_active(),
        })
    }
}
