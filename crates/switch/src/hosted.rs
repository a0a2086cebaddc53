//! `switch://PATH` and `hub://PATH`: the switch engine inside any program. Opening such a VNL
//! starts a switch on PATH (joinable by any `vde://PATH` client) on a thread of this process
//! and plugs this program into it; dropping the plug stops the switch. [`register`] makes
//! filo-vnl open these modules with [`open_plug`].

use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::time::Duration;

use filo_vnl::open::OpenError;
use filo_vnl::plug::Transport;
use filo_vnl::transport::vde::{self, VdeConfig};
use filo_vnl::{OpenOptions, Plug, Vnl};

use crate::daemon::{Switch, SwitchConfig, SwitchHandle};

/// A plug whose transport owns the switch it is plugged into.
struct Hosted {
    inner: Box<dyn Transport>,
    // Declared after `inner`: the plug disconnects before the switch stops.
    _switch: SwitchHandle,
}

impl Transport for Hosted {
    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.recv(buf)
    }
    fn send(&mut self, frame: &[u8]) -> std::io::Result<()> {
        self.inner.send(frame)
    }
    fn data_fd(&self) -> BorrowedFd<'_> {
        self.inner.data_fd()
    }
    fn write_fd(&self) -> BorrowedFd<'_> {
        self.inner.write_fd()
    }
    fn recv_batch(&mut self, bufs: &mut [Vec<u8>], lens: &mut [usize]) -> std::io::Result<usize> {
        self.inner.recv_batch(bufs, lens)
    }
    fn send_batch(&mut self, frames: &[&[u8]]) -> std::io::Result<usize> {
        self.inner.send_batch(frames)
    }
    fn send_batch_joined(&mut self, msgs: &[[&[u8]; 2]]) -> std::io::Result<usize> {
        self.inner.send_batch_joined(msgs)
    }
    fn ctl_fd(&self) -> Option<BorrowedFd<'_>> {
        self.inner.ctl_fd()
    }
    fn has_pending_input(&self) -> bool {
        self.inner.has_pending_input()
    }
    fn has_pending_output(&self) -> bool {
        self.inner.has_pending_output()
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
    fn vnet(&self) -> bool {
        self.inner.vnet()
    }
    fn kind(&self) -> &'static str {
        "switch"
    }
}

/// How long `switch://` keeps a learned address without `expiretime=`.
const HOSTED_MAC_EXPIRE: Duration = Duration::from_secs(120);

fn default_path() -> PathBuf {
    let uid = filo_vnl::sys::euid();
    let user = filo_vnl::sys::user_name(uid).unwrap_or_else(|| format!("u{uid}"));
    PathBuf::from(format!("/tmp/vdenode_{user}"))
}

/// Makes `switch://` and `hub://` open through [`open_plug`] wherever a VNL is opened
/// ([`filo_vnl::open()`], [`OpenOptions::open`]) in this process. Idempotent and cheap: filo's
/// libraries call it before they open a VNL.
pub fn register() {
    filo_vnl::register_module("switch", open_plug);
    filo_vnl::register_module("hub", open_plug);
}

/// Opens any VNL, handling `switch://` and `hub://` here and the rest with `opts`.
pub fn open_plug(opts: &OpenOptions, text: &str) -> Result<Plug, OpenError> {
    let vnl = Vnl::parse(text)?;
    let hub = match vnl.module() {
        "switch" => false,
        "hub" => true,
        _ => return opts.open(text),
    };
    let bad = |reason: String| OpenError::BadOption {
        vnl: text.to_string(),
        reason,
    };
    let path = if vnl.address().is_empty() {
        default_path()
    } else {
        PathBuf::from(vnl.address())
    };
    let mut cfg = SwitchConfig::new(&path);
    cfg.hub = hub;
    cfg.mode = vnl.get_mode("mode")?;
    cfg.dirmode = vnl.get_mode("dirmode")?;
    cfg.group = vnl.get("grp").map(str::to_string);
    // vdeplug4's hosted switch keeps addresses 120 s by default (vde_switch: 100 s).
    cfg.mac_expire = HOSTED_MAC_EXPIRE;
    if let Some(value) = vnl.get("expiretime") {
        match value.parse::<u32>() {
            Ok(secs) if secs > 0 => cfg.mac_expire = Duration::from_secs(secs.into()),
            _ => {
                return Err(bad(format!(
                    "option expiretime: expected seconds from 1 to 4294967295, got {value:?}"
                )))
            }
        }
    }
    // filo's address table is a growable hash map: there are no buckets to size or seed,
    // and a hub learns nothing.
    let mut ignored = vec!["hashsize", "hashseed"];
    if hub {
        ignored.push("expiretime");
    }
    for key in ignored {
        if vnl.get(key).is_some() {
            tracing::info!("{text}: option {key} is accepted for compatibility and has no effect");
        }
    }
    let handle = Switch::spawn(cfg).map_err(|e| bad(e.to_string()))?;
    let mut vde_cfg = VdeConfig::new(&path);
    vde_cfg.description = vde::describe(&opts.description);
    vde_cfg.timeout = opts.timeout;
    let inner = vde::connect(&vde_cfg)?;
    Ok(Plug::from_transport(
        text,
        Box::new(Hosted {
            inner: Box::new(inner),
            _switch: handle,
        }),
    ))
}
