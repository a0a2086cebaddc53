//! # filo-switch: the forwarding core of a VDE-compatible Ethernet switch
//!
//! ## Theory of operation
//!
//! [`Core`] is a sans-IO switch: it never touches a socket or a clock. The daemon feeds it
//! frames with [`Core::handle_frame`]`(now, ingress_port, bytes, &mut out)` and gets back a
//! [`Verdict`] plus a list of [`Egress`] decisions — a port and an [`EgressAction`] (send as
//! is, insert an 802.1Q tag, strip it, or rewrite a priority tag's VID). The daemon renders
//! each action with [`EgressAction::render`] into a scratch buffer it owns; the core itself
//! copies no frame bytes and, once `out` has capacity, allocates nothing per frame (the only
//! exception is the address table growing when it learns a new address).
//!
//! Forwarding follows vde_switch (see `reference/vde.md` §2.4–2.5):
//! * **Learning** is keyed on (source MAC, VLAN); group-bit sources are never learned. An
//!   address moves to another port only when it has not been seen on its current port for more
//!   than `min_persistence` (anti-flapping). A garbage collector, run from
//!   [`Core::handle_timeout`] every `gc_interval`, removes entries older than `mac_expire`.
//! * **Known unicast** goes to its learned port only (never back to the ingress port);
//!   **unknown unicast, broadcast and multicast** flood to every active, forwarding member of
//!   the frame's VLAN except the ingress port.
//! * **VLANs**: every port has one untagged VLAN (0 by default; 4095 = accept no untagged
//!   frames) and any number of tagged VLANs. Tagged frames are classified by VID (VID 0, a
//!   priority tag, means the port's untagged VLAN) and dropped unless the port is a member.
//! * **Hub mode** floods everything, unchanged, to every other active port (port 0 included),
//!   bypassing VLANs, learning and the spanning tree.
//! * **Mirroring** sends one unchanged copy of every forwarded frame to the mirror port.
//! * Every drop is counted by [`DropReason`].
//!
//! The spanning tree ([`stp`]) is classic IEEE 802.1D, one tree for the whole switch (not
//! vde's per-VLAN FSTP, which is not interoperable anyway). BPDUs are sent and accepted
//! **untagged** on every port, whatever its VLAN configuration: they are link-local and
//! processed before VLAN classification. With the tree on, frames to `01:80:c2:00:00:00` are
//! consumed (never relayed); with it off they are flooded like any multicast, so a chain of
//! tree-less switches stays transparent to bridges that run one. Ports not in Forwarding
//! neither send nor receive data (Learning ports learn but do not forward); a port leaving
//! Forwarding has its addresses flushed, and while the root signals a topology change
//! addresses age out after the forward delay instead of `mac_expire`.
//!
//! Time is always an argument: [`Core::poll_timeout`] says when [`Core::handle_timeout`]
//! next has work; [`Core::poll_transmit`] hands out the BPDUs the tree wants sent.
//!
//! Wire formats live in [`wire`] as typed views over byte slices (smoltcp style).

pub mod console;
pub mod core;
pub mod daemon;
pub mod hosted;
pub mod state;
pub mod stp;
pub mod wire;

pub use crate::core::{
    ConfigError, Core, CoreConfig, DhcpServerPort, DropCounters, DropReason, Egress, EgressAction,
    MacEntry, PortId, PortInfo, Verdict, VlanMember, DEFAULT_VLAN, DHCP_FLOOD_BURST,
    DHCP_FLOOD_PER_SEC, MAX_VLAN, NO_VLAN,
};
pub use crate::stp::{PortRole, PortState, StpStatus, StpTimers};
pub use crate::wire::MacAddr;
pub use hosted::register;
