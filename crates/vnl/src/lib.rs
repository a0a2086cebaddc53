//! # filo-vnl: plugs for virtual Ethernet cables
//!
//! A *plug* is one end of a virtual cable; a *VNL* (Virtual Network Locator, vdeplug4's
//! syntax) names what it plugs into: `vde:///tmp/sw` (a VDE switch), `ptp:///tmp/link` (a
//! point-to-point cable), `udp://`, `vxvde://` and `vxlan://` (Ethernet over UDP across hosts),
//! `tap://tap0` (a kernel interface), `cmd://ssh host filo plug` (a child process speaking the
//! stream encoding), `seqpacket://FD` and `null://`.
//!
//! Theory of operation: [`vnl`] parses text into a typed [`Vnl`]; [`open`] turns a VNL into a
//! [`Plug`] by building the transport's configuration and connecting it. Every transport
//! implements [`plug::Transport`]: non-blocking send/receive of one frame or a batch, and raw
//! descriptors (data, write, control/liveness) so any event loop — `poll`, mio, tokio
//! ([`tokio_plug`]) — can drive it. Wire formats live in [`wire`] as sans-IO views and codecs;
//! every `unsafe` call lives in a `sys` module ([`sys`], and `tokio_plug`'s own for the
//! registration with tokio), the only modules where the workspace lints allow it.

pub mod cable;
pub mod console;
pub mod iothconf;
pub mod mgmt;
pub mod open;
pub mod pcap;
pub mod plug;
pub mod reconnect;
pub mod sockfile;
#[allow(unsafe_code)]
pub mod sys;
#[cfg(feature = "tokio")]
pub mod tokio_plug;
pub mod transport;
pub mod wire;

pub use open::{open, register_module, OpenOptions};
pub use plug::{Direct, FrameBatch, Plug, PlugStats, Transport, MAX_FRAME, MIN_FRAME};
pub mod vnl;
pub use vnl::{
    default_switch, default_switch_path, module_syntax, parse_octal_mode, ArgStyle, DefaultSwitch,
    InvalidMode, KeyError, ModuleSyntax, Vnl, VnlError, VnlErrorKind, MODULES,
};
