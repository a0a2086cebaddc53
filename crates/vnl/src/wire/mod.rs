//! Wire formats spoken by the transports, as typed views over byte slices: parse without
//! copying, build into caller buffers, reject malformed input with a typed error.

pub mod checksum;
pub mod ipv4;
pub mod partial;
pub mod stream;
pub mod train;
pub mod vde_request;
pub mod vnet;
pub mod vxlan;
