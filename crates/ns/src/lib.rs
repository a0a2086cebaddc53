//! # filo-ns: views of the network for unmodified programs, built on kernel namespaces
//!
//! Theory of operation. Everything here is a Linux network namespace whose interfaces are
//! taps, and whose taps are carried to virtual networks by filo's plugs:
//!
//! 1. The VNLs are opened first, in the caller's namespace (a `vxvde://` or `udp://` plug
//!    keeps using the host's network, as in vdens).
//! 2. A child is forked. It `unshare`s a network namespace (plus a user namespace when not
//!    root, mapping root inside to the caller; UTS and mount namespaces when asked), creates
//!    one tap per VNL (`vde0`, `vde1`, …), brings `lo` and the taps up and adds addresses and
//!    routes through rtnetlink ([`netlink`]), and sends the tap descriptors back to the parent
//!    over a SOCK_SEQPACKET socketpair with SCM_RIGHTS ([`setup`]).
//! 3. The parent joins each tap to its VNL with [`filo_vnl::cable::run_reconnecting`] (a switch
//!    that restarts is joined again) on one thread per
//!    tap. Nothing needs removing afterwards: the taps are not persistent and the namespace
//!    disappears with its last process or descriptor.
//!
//! On that mechanism:
//! * [`run_command`] (`filo ns`) lets the child finish DHCP ([`dhcp`]) and exec a command,
//!   forwards SIGINT/SIGTERM/SIGHUP to it and returns its exit status.
//! * [`KernelStack`] (libioth's "vdestack") keeps the child alive as a *socket factory*: it
//!   calls `socket()` inside the namespace and passes the descriptor back, so callers get
//!   ordinary `std::net` sockets bound to that namespace for their whole life.
//! * [`named`] serves a [`KernelStack`] on a UNIX socket (`filo stack serve PATH`): clients
//!   get sockets ([`named::msocket`]) or the namespace itself ([`named::enter`], for
//!   `filo mstack`); the file permissions of PATH are the access control.

pub mod conf;
pub mod dhcp;
pub mod named;
pub mod netlink;
mod run;
pub mod setup;
mod stack;
#[allow(unsafe_code)]
pub mod sys;

use std::io;
use std::os::fd::OwnedFd;

pub use conf::{IfAddr, NetConf};
pub use run::{run_command, NsCommand};
pub use stack::KernelStack;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum NsError {
    /// A VNL could not be opened (a missing switch, a bad locator).
    #[error("{0}")]
    Vnl(String),
    /// Building the namespace failed; the text says why (and how to fix permissions).
    #[error("{0}")]
    Namespace(String),
    /// Bad configuration.
    #[error("{0}")]
    Conf(String),
    /// A system call failed.
    #[error("{what}: {err}")]
    Io { what: String, err: io::Error },
}

impl NsError {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> NsError {
        NsError::Io {
            what: what.into(),
            err: source,
        }
    }
}

/// A tap descriptor received from the namespace, as a plug transport.
/// Opens every VNL, in order, in the caller's namespace.
pub(crate) fn open_vnls(vnls: &[String]) -> Result<Vec<filo_vnl::Plug>, NsError> {
    // switch:// and hub:// host a switch from filo-switch.
    filo_switch::register();
    filo_slirp::register();
    // ipn:// joins a shared-memory bus from filo-ipn.
    filo_ipn::register();
    vnls.iter()
        .map(|v| {
            // Taps are opened with virtio-net framing, so TCP crosses as super-frames wherever
            // the other end (a filo switch) agrees.
            let options = filo_vnl::OpenOptions {
                description: "filo-ns:".into(),
                vnet: true,
                ..Default::default()
            };
            options.open(v).map_err(|e| {
                let text = e.to_string();
                NsError::Vnl(if text.contains(v.as_str()) {
                    text
                } else {
                    format!("{v}: {text}")
                })
            })
        })
        .collect()
}

/// The MTU each plug asks of its tap ([`filo_vnl::Plug::mtu`]: the inner MTU of `vxvde://` and
/// `vxlan://`); `mtu=` overrides it.
pub(crate) fn plug_mtus(plugs: &[filo_vnl::Plug]) -> Vec<Option<u32>> {
    plugs
        .iter()
        .map(|p| p.mtu().and_then(|m| u32::try_from(m).ok()))
        .collect()
}

/// Set by [`stop_when_a_switch_goes`].
static NO_RECONNECT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// For the rest of the process, cables started from now on do not reconnect to a `vde://`
/// switch that goes away: they end, say so, and ask the process to stop with SIGTERM to itself
/// (`filo ns --no-reconnect`: its command gets the SIGTERM and `filo ns` exits with its
/// status, 143 for a command it kills). By default a switch that restarts on the same path is
/// joined again ([`filo_vnl::cable::run_reconnecting`]).
pub fn stop_when_a_switch_goes() {
    NO_RECONNECT.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Set when a cable stopped the process as [`stop_when_a_switch_goes`] asked.
static SWITCH_WENT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// True once a switch went away and, as [`stop_when_a_switch_goes`] asked, the process was
/// told to stop: a daemon exits non-zero then.
pub fn a_switch_went_away() -> bool {
    SWITCH_WENT.load(std::sync::atomic::Ordering::Relaxed)
}

/// Starts one cable thread per (tap, plug) pair; returns the stop flag they watch.
pub(crate) fn start_cables(
    ifaces: &[String],
    taps: Vec<OwnedFd>,
    plugs: Vec<filo_vnl::Plug>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<(), NsError> {
    for ((name, tap), plug) in ifaces.iter().zip(taps).zip(plugs) {
        let tap = filo_vnl::transport::tap::Tap::from_fd(tap, true)
            .map_err(|e| NsError::io(format!("tap {name}"), e))?;
        let tap = filo_vnl::Plug::from_transport(format!("tap:{name}"), Box::new(tap));
        let stop = stop.clone();
        let label = format!("{name}<->{}", plug.name());
        let no_reconnect = NO_RECONNECT.load(std::sync::atomic::Ordering::Relaxed);
        std::thread::Builder::new()
            .name(format!("filo-ns {name}"))
            .spawn(move || {
                let mut plug = plug;
                // An in-process gateway (slirp://) takes the tap itself: one thread per frame.
                let tap = match plug.serve(Box::new(tap), &stop) {
                    Ok(Ok(())) => return,
                    Ok(Err(e)) => {
                        tracing::warn!("{label}: gateway stopped: {e}");
                        return;
                    }
                    Err(tap) => *tap,
                };
                let mut pair = [tap, plug];
                let end = if no_reconnect {
                    filo_vnl::cable::run(&mut pair, &stop)
                } else {
                    // A switch that restarts is joined again (loss and return logged).
                    filo_vnl::cable::run_reconnecting(
                        &mut pair,
                        &stop,
                        filo_vnl::reconnect::Policy::default(),
                    )
                };
                let switch_gone = matches!(&end, filo_vnl::cable::CableEnd::Hangup { side, .. }
                    if pair[*side].reopener().is_some());
                if no_reconnect && switch_gone {
                    tracing::error!("{label}: {end} (--no-reconnect): stopping");
                    SWITCH_WENT.store(true, std::sync::atomic::Ordering::Relaxed);
                    sys::kill(std::process::id() as libc::pid_t, libc::SIGTERM);
                } else if !matches!(end, filo_vnl::cable::CableEnd::Stopped) {
                    tracing::warn!("{label}: cable ended: {end}");
                }
            })
            .map_err(|e| NsError::io("cannot start a cable thread", e))?;
    }
    Ok(())
}
