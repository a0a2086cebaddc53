//! # filo-stack: user-space IPv4/IPv6 stacks as a library (the Internet of Threads)
//!
//! A [`Stack`] is a complete IP host inside a process: any number of interfaces, each an
//! Ethernet over a filo plug (any VNL: `vde://`, `ptp://`, `vxvde://`, `tap://`, or a plug
//! handed in, such as one end of an in-process cable), with its own MAC and addresses, a
//! routing table, loopback, and TCP, UDP and ICMP sockets. Many stacks can live in one
//! process, even one per thread.
//!
//! ## Theory of operation
//!
//! ```text
//!  TcpStream / UdpSocket / ping / tokio types         (tcp.rs, udp.rs, icmp.rs, tokio.rs)
//!        │ lock the stack, operate on a smoltcp socket, kick the driver, wait on a condvar
//!  smoltcp Interface on Medium::Ip  — TCP, UDP, ICMP, DHCPv4, DNS engines (one per stack)
//!        │ IP packets out (Device TxToken)          ▲ IP packets in (Net::rx queue)
//!  Net (net.rs): routing table (longest prefix), neighbour cache, ARP, IPv6 NDP, loopback,
//!        │ per-reason drop counters                 ▲
//!  links: Ethernet framing over filo_vnl::Plug      │ frames (handle_frame)
//!        ▼                                          │
//!  driver thread (driver.rs): epoll on every stack's plugs + one wake eventfd, timers from
//!  smoltcp's poll_at and Net's retries — sleeps when idle, serves any number of stacks.
//! ```
//!
//! smoltcp binds one interface to one device, so filo keeps smoltcp on `Medium::Ip` and does
//! layer 2 and routing itself: smoltcp is told every destination is reachable (default routes
//! to a dummy gateway), and filo's [`net`] layer picks the outgoing link and next hop, resolves
//! it with ARP or neighbour solicitation (answering both for its own addresses), and frames the
//! packet. Incoming frames are checked (length, EtherType, IP header lengths); NDP messages are
//! consumed by filo, IP packets are trimmed of Ethernet padding and queued for smoltcp.
//! Everything malformed is dropped and counted ([`Counters`]).
//!
//! Sockets are handles into the stack's smoltcp `SocketSet`, protected by one mutex per stack.
//! Blocking calls wait on the stack's condition variable, which the driver signals after each
//! turn; async calls register wakers with smoltcp. A blocking write or read runs a smoltcp
//! turn on the calling thread (the stack mutex makes that safe), so data and window updates
//! leave without waking the driver; other changes (connect, close, async writes) "kick" it
//! (one eventfd write, deduplicated by a dirty flag), as does a write whose turn needs an
//! earlier timer than the driver has scheduled. Outgoing frames of a turn leave in one
//! `sendmmsg` batch; received ones arrive by `recvmmsg`.
//!
//! IPv6 sockets serve IPv4 peers as `::ffff:a.b.c.d`, as LWIPv6's hybrid stack did.
//! Configuration follows iothconf's strings ([`config`]): `eth,ip=10.0.0.1/24,gw=10.0.0.254`,
//! `dhcp`, `slaac`, `auto`, `mac=`, `fqdn=`, `dns=`, `mtu=`.
//!
//! Limits: smoltcp holds at most [`MAX_ADDRS`] addresses per stack; router-advertised prefix
//! lifetimes are not aged out; no DHCPv6; no IP forwarding between interfaces.
//!
//! ```no_run
//! use std::io::{Read, Write};
//! let stack = filo_stack::Stack::new("vde:///tmp/net1", "eth,ip=10.0.0.7/24")?;
//! let listener = stack.tcp_listen("0.0.0.0:80")?;
//! let (mut conn, peer) = listener.accept()?;
//! conn.write_all(b"hello\n")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod config;
/// The DHCPv4 client stacks run (the `filo-dhcp` crate).
pub use filo_dhcp as dhcp;
mod dns;
mod driver;
pub mod forward;
mod icmp;
pub mod net;
pub mod perf;
mod stack;
#[allow(unsafe_code)]
mod sys;
pub use sys::raise_fd_limit;
mod raw;
pub mod recovery;
pub mod serve;
mod tcp;
#[cfg(feature = "tokio")]
pub mod tokio;
mod udp;
pub mod wire;

pub use config::{ConfigError, IfaceConfig};
pub use dns::{ToTarget, RESOLVE_TIMEOUT};
pub use driver::Driver;
pub use net::{Cidr, Counters, DropReason, NextHop, Route};
pub use raw::RawSocket;
pub use serve::{DhcpServer, Dhcpv6Server, RouterAdverts};
pub use stack::{
    default_stack, map_if, set_default, set_thread_default, unmap, LinkGoneHook, LinkInfo, Stack,
    StackBuilder, MAX_ADDRS,
};
pub use tcp::{TcpListener, TcpStream, CONNECT_TIMEOUT};
pub use udp::UdpSocket;

/// An in-process cable: two plugs joined back to back (a SOCK_SEQPACKET socketpair), for
/// connecting two stacks in one process without a switch.
pub fn cable() -> std::io::Result<(filo_vnl::Plug, filo_vnl::Plug)> {
    use std::os::fd::IntoRawFd;
    let (a, b) = filo_vnl::sys::seqpacket_pair(true)?;
    let open = |fd: std::os::fd::OwnedFd| {
        let n = fd.into_raw_fd();
        filo_vnl::open(&format!("seqpacket://{n}")).map_err(std::io::Error::other)
    };
    Ok((open(a)?, open(b)?))
}

/// Errors building or configuring a stack.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The open error names the VNL (or the switch's directory) itself.
    #[error("{error}")]
    Open {
        vnl: String,
        error: Box<filo_vnl::open::OpenError>,
    },
    #[error("no interface with index {0}")]
    NoSuchLink(usize),
    #[error("a stack holds at most {0} addresses")]
    TooManyAddresses(usize),
    #[error("{0}")]
    BadValue(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> std::io::Error {
        match e {
            Error::Io(e) => e,
            other => std::io::Error::new(std::io::ErrorKind::InvalidInput, other.to_string()),
        }
    }
}

/// How filo stacks open a VNL: `vde://` links offer super-frames (a filo switch agrees and
/// TCP segments of up to 64 KiB then travel whole; any other switch ignores the offer).
pub fn plug_options(vnl: &str) -> filo_vnl::OpenOptions {
    filo_vnl::OpenOptions {
        vnet: filo_vnl::Vnl::parse(vnl).is_ok_and(|v| v.module() == "vde"),
        ..filo_vnl::OpenOptions::default()
    }
}
