//! filo's router: a sans-IO core that forwards IPv4 and IPv6 between Ethernet interfaces
//! ([`core::Router`]: frames and time in, frames per interface out, as the switch core), its
//! management console ([`console`]) and the daemon that runs it on plugs ([`daemon`]).
//!
//! The core answers ARP and NDP for its own addresses and resolves next hops with a bounded
//! neighbour cache ([`neigh`]); routes are longest-prefix ([`route`]); it decrements TTL and
//! hop limit and answers with ICMP errors ([`icmp`]): time exceeded, destination unreachable
//! (no route, no neighbour), fragmentation needed / packet too big (path-MTU discovery);
//! it sends no redirects. It answers ping to its own addresses, serves DHCPv4
//! (`filo_dhcp::server`) and router advertisements (`filo_dhcp::ra`) on chosen interfaces,
//! and runs every IP packet through a hook pipeline (prerouting, input, forward, output,
//! postrouting, [`core::Hook`]) where a filter and NAT plug in. Every dropped packet is
//! counted by reason ([`core::DropReason`]).

pub mod console;
pub mod core;
pub mod daemon;
pub mod ext6;
pub mod filter;
pub mod icmp;
pub mod nat;
pub mod neigh;
pub mod nptv6;
mod offload;
pub mod route;

pub use crate::core::{
    DropReason, Hook, HookChain, HookOutput, HookPoint, HookVerdict, IfId, IfaceConfig, PacketMeta,
    Router,
};
pub use crate::route::{Prefix, Route};

/// An Ethernet address.
pub type Mac = [u8; 6];
