//! # filo-slirp: a user-mode NAT gateway (`slirp://`)
//!
//! Guests on a virtual Ethernet — a `filo ns` namespace, a filo stack, QEMU or anything on a
//! switch — reach whatever the host can reach, through ordinary sockets of the host process:
//! no capability, no tap, no kernel routing. The guest side sees a router at 10.0.2.2 (and
//! fd00::2) with a DNS forwarder at 10.0.2.3 (fd00::3), as with vdeplug_slirp and QEMU's
//! user networking.
//!
//! ```text
//!   guest frames ──► Core (core.rs): ARP/NDP answers, checks, classification ─┐
//!                     │ TCP                    │ UDP / DNS        │ ICMP echo  │
//!                     ▼                        ▼                  ▼            │
//!   smoltcp Interface (any address)     connected UDP socket   ping socket     │
//!     one socket per guest connection    per flow (idle-timed)  (raw as root)  │
//!                     │ splice                                                 │
//!                     ▼                                                        │
//!   host TCP socket (non-blocking connect; refused → RST, unreachable → ICMP)  │
//!   engine.rs: one epoll over the plug and every host socket ◄─────────────────┘
//! ```
//!
//! The core is sans-IO (frames in, decisions and frames out) and tested without sockets; the
//! engine is the thin I/O shell. Policy: the guest cannot reach the host's loopback
//! (127.0.0.0/8, ::1) — the gateway's address reaches it only with `hostloopback`; flow tables
//! are bounded ([`engine::MAX_TCP`], [`engine::MAX_UDP`], [`engine::MAX_ICMP`]) with idle
//! timeouts, and refusals are counted. Host ports are opened only for the forwards asked for
//! (`tcpfwd=`, `udpfwd=`).
//!
//! [`register`] makes `slirp://` open wherever filo opens a VNL: the gateway then runs on a
//! thread of the process and the plug is one end of a socket pair to it — unless the plug's
//! user hands it the other side of its cable ([`filo_vnl::Plug::serve`], as `filo ns` does
//! with its tap): the gateway then runs on that thread with the tap as its plug, and a frame
//! crosses no socket pair and no second thread.

pub mod config;
pub mod console;
pub mod core;
pub mod daemon;
pub mod dns;
pub mod engine;
mod ping;
#[allow(unsafe_code)]
mod sys;

use std::cell::RefCell;
use std::os::fd::BorrowedFd;
use std::sync::atomic::AtomicBool;

use filo_vnl::open::OpenError;
use filo_vnl::plug::Transport;
use filo_vnl::transport::dgram::{ConnectedDgram, Refused};
use filo_vnl::{OpenOptions, Plug, Vnl};

pub use config::{Config, Forward, Proto};
pub use engine::Engine;

/// Makes `slirp://` open through [`open_plug`] wherever a VNL is opened in this process.
/// Idempotent and cheap.
pub fn register() {
    filo_vnl::register_module("slirp", open_plug);
}

/// The gateway's configuration from a `slirp://` VNL's text.
pub fn config_from_text(text: &str) -> Result<Config, OpenError> {
    let vnl = Vnl::parse(text)?;
    Config::from_vnl(&vnl).map_err(|reason| OpenError::BadOption {
        vnl: text.to_string(),
        reason,
    })
}

/// The plug end of an in-process gateway: a socket pair whose other end the gateway's
/// thread serves. It tells the tap of a `filo ns` the MTU `mtu=` asked for.
///
/// The thread starts when the plug is first used, not when it is opened: a program may fork
/// in between (`filo plug -d` opens its VNLs, then goes to the background), and a thread does
/// not survive a fork. The engine, made at open time, keeps its descriptors across it.
struct SlirpPlug {
    inner: ConnectedDgram,
    mtu: Option<usize>,
    engine: RefCell<Option<Engine>>,
}

impl SlirpPlug {
    fn start(&self) {
        let Some(mut engine) = self.engine.borrow_mut().take() else {
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("filo-slirp".into())
            .spawn(move || {
                let _ = sys::block_all_signals();
                let never = std::sync::atomic::AtomicBool::new(false);
                if let Err(e) = engine.run(&never, |_, _| true) {
                    tracing::warn!("slirp: gateway stopped: {e}");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("slirp: cannot start the gateway's thread: {e}");
        }
    }
}

impl Transport for SlirpPlug {
    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.start();
        self.inner.recv(buf)
    }
    fn send(&mut self, frame: &[u8]) -> std::io::Result<()> {
        self.start();
        self.inner.send(frame)
    }
    fn data_fd(&self) -> BorrowedFd<'_> {
        self.start();
        self.inner.data_fd()
    }
    fn write_fd(&self) -> BorrowedFd<'_> {
        self.start();
        self.inner.write_fd()
    }
    fn recv_batch(&mut self, bufs: &mut [Vec<u8>], lens: &mut [usize]) -> std::io::Result<usize> {
        self.start();
        self.inner.recv_batch(bufs, lens)
    }
    fn send_batch(&mut self, frames: &[&[u8]]) -> std::io::Result<usize> {
        self.start();
        self.inner.send_batch(frames)
    }
    fn send_batch_joined(&mut self, msgs: &[[&[u8]; 2]]) -> std::io::Result<usize> {
        self.start();
        self.inner.send_batch_joined(msgs)
    }
    fn has_pending_input(&self) -> bool {
        self.inner.has_pending_input()
    }
    fn vnet(&self) -> bool {
        self.inner.vnet()
    }
    fn mtu(&self) -> Option<usize> {
        self.mtu
    }
    fn kind(&self) -> &'static str {
        "slirp"
    }
    fn serve(
        &mut self,
        other: Box<Plug>,
        stop: &AtomicBool,
    ) -> Result<std::io::Result<()>, Box<Plug>> {
        // Only a gateway not yet started, on a plug of the same framing, can take `other`.
        let Some(mut engine) = self.engine.borrow_mut().take() else {
            return Err(other);
        };
        match engine.replace_plug(other) {
            Ok(()) => Ok(engine.run(stop, |_, _| true)),
            Err(other) => {
                *self.engine.borrow_mut() = Some(engine);
                Err(other)
            }
        }
    }
}

/// Opens any VNL, handling `slirp://` here and the rest with `opts`.
pub fn open_plug(opts: &OpenOptions, text: &str) -> Result<Plug, OpenError> {
    let vnl = Vnl::parse(text)?;
    if vnl.module() != "slirp" {
        return opts.open(text);
    }
    let cfg = config_from_text(text)?;
    let io = |err: std::io::Error| OpenError::Io {
        vnl: text.to_string(),
        err,
    };
    let (ours, theirs) = filo_vnl::sys::seqpacket_pair(true).map_err(io)?;
    let end = |fd| -> std::io::Result<ConnectedDgram> {
        Ok(ConnectedDgram::new(fd, None, Refused::Fatal, true, "slirp")?.with_vnet(opts.vnet))
    };
    let engine_plug = Plug::from_transport("slirp-gateway", Box::new(end(theirs).map_err(io)?));
    let mtu = (cfg.mtu != 1500).then_some(usize::from(cfg.mtu));
    let engine = Engine::new(cfg, engine_plug).map_err(io)?;
    Ok(Plug::from_transport(
        text,
        Box::new(SlirpPlug {
            inner: end(ours).map_err(io)?,
            mtu,
            engine: RefCell::new(Some(engine)),
        }),
    ))
}
