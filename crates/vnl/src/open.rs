//! From VNL text to a connected [`Plug`]: validates each module's options and builds the
//! transport's typed configuration.
//!
//! Modules implemented outside this crate (`switch://` and `hub://`, which start a switch
//! from filo-switch inside the program) are opened through openers registered with
//! [`register_module`]: filo-vnl cannot depend on the crates that implement them. Every filo
//! library that opens VNLs (filo-stack, filo-ns) registers filo-switch's openers before it
//! opens one (`filo_switch::register()`, idempotent), and so does the `filo` command, so
//! `switch://` works wherever a VNL is accepted. A program that calls [`open`] directly calls
//! `filo_switch::register()` once first.

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::RwLock;
use std::time::Duration;

use crate::plug::Plug;
use crate::transport::{
    dgram::{ConnectedDgram, Refused},
    null::Null,
    ptp::Ptp,
    stream::StreamTransport,
    tap::Tap,
    udp::{self, UdpConfig},
    vde::{self, VdeConfig, VdeError},
    vxlan::{Flavor, Vx, VxConfig, VXVDE_GROUP_V4, VXVDE_GROUP_V6},
};
use crate::vnl::{self, DefaultSwitch, Vnl, VnlError};
use crate::wire::vde_request::PortRequest;

/// Why a plug could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Syntax(#[from] VnlError),
    #[error("{vnl}: {reason}")]
    BadOption { vnl: String, reason: String },
    #[error(transparent)]
    Vde(#[from] VdeError),
    /// The io::Error is part of the message, not a `source()`: printed as a chain (`{:#}`)
    /// it would repeat.
    #[error("{vnl}: {err}")]
    Io { vnl: String, err: io::Error },
    #[error("{0}: the VNL names itself through its default-switch files (loop)")]
    Loop(String),
}

/// How to open plugs: the description a switch shows, how long to wait, and overrides for the
/// data socket's group and mode (`filo plug -g/-m`).
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// The first word of the description (vde_plug uses `vdeplug:`).
    pub description: String,
    pub timeout: Duration,
    pub group: Option<String>,
    pub mode: Option<u32>,
    /// Offer virtio-net framing (TCP super-frames): taps open with `IFF_VNET_HDR` and
    /// `vde://` asks the switch (a filo switch agrees). `filo plug` sets it for cables with a
    /// tap; [`crate::cable`] converts when the two sides differ.
    pub vnet: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            description: "filo:".into(),
            timeout: vde::DEFAULT_TIMEOUT,
            group: None,
            mode: None,
            vnet: false,
        }
    }
}

/// Opens a plug for a module implemented outside filo-vnl: gets the options and the whole
/// VNL text.
pub type ModuleOpener = fn(&OpenOptions, &str) -> Result<Plug, OpenError>;

/// Openers registered for modules filo-vnl knows the syntax of but does not implement.
static OPENERS: RwLock<Vec<(&'static str, ModuleOpener)>> = RwLock::new(Vec::new());

/// Registers (or replaces) the opener of `module` for this whole process. Only modules
/// filo-vnl parses but does not implement itself (`switch`, `hub`) are looked up here; the
/// built-in transports cannot be replaced.
pub fn register_module(module: &'static str, opener: ModuleOpener) {
    let mut openers = OPENERS.write().unwrap_or_else(|e| e.into_inner());
    match openers.iter_mut().find(|(m, _)| *m == module) {
        Some(entry) => entry.1 = opener,
        None => openers.push((module, opener)),
    }
}

fn registered(module: &str) -> Option<ModuleOpener> {
    let openers = OPENERS.read().unwrap_or_else(|e| e.into_inner());
    openers.iter().find(|(m, _)| *m == module).map(|&(_, f)| f)
}

/// Opens a plug with default options.
pub fn open(text: &str) -> Result<Plug, OpenError> {
    OpenOptions::default().open(text)
}

fn bad(vnl: &Vnl, reason: impl Into<String>) -> OpenError {
    OpenError::BadOption {
        vnl: vnl.to_string(),
        reason: reason.into(),
    }
}

fn io_err(vnl: &Vnl) -> impl FnOnce(io::Error) -> OpenError + '_ {
    move |err| OpenError::Io {
        vnl: vnl.to_string(),
        err,
    }
}

fn get<T: FromStr>(vnl: &Vnl, key: &str, expected: &str) -> Result<Option<T>, OpenError> {
    match vnl.get(key) {
        None => Ok(None),
        Some(v) => v.parse::<T>().map(Some).map_err(|_| {
            bad(
                vnl,
                format!("{key}={v:?} is not valid: expected {expected}"),
            )
        }),
    }
}

fn mode(vnl: &Vnl, key: &str) -> Result<Option<u32>, OpenError> {
    match vnl.get(key) {
        None => Ok(None),
        Some(v) => match u32::from_str_radix(v, 8) {
            Ok(m) if m <= 0o7777 => Ok(Some(m)),
            _ => Err(bad(
                vnl,
                format!("{key}={v:?} is not valid: expected an octal mode such as 0660"),
            )),
        },
    }
}

/// Parses sizes such as `4M`, `512k`, `1G` (binary multiples).
fn size(vnl: &Vnl, key: &str) -> Result<Option<usize>, OpenError> {
    let Some(v) = vnl.get(key) else {
        return Ok(None);
    };
    let (digits, mult) = match v.chars().last() {
        Some('k' | 'K') => (&v[..v.len() - 1], 1 << 10),
        Some('m' | 'M') => (&v[..v.len() - 1], 1 << 20),
        Some('g' | 'G') => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .map(Some)
        .ok_or_else(|| {
            bad(
                vnl,
                format!("{key}={v:?} is not valid: expected a size such as 4M, 512k or 65536"),
            )
        })
}

impl OpenOptions {
    /// Parses `text` and opens the plug it names.
    pub fn open(&self, text: &str) -> Result<Plug, OpenError> {
        self.open_depth(text, 0)
    }

    fn open_depth(&self, text: &str, depth: u32) -> Result<Plug, OpenError> {
        let vnl = Vnl::parse(text)?;
        let label = if text.is_empty() {
            "(default switch)".to_string()
        } else {
            text.to_string()
        };
        let transport: Box<dyn crate::plug::Transport> = match vnl.module() {
            "vde" => {
                if vnl.address().is_empty() {
                    match vnl::default_switch() {
                        DefaultSwitch::Vnl(next) => {
                            if depth > 4 {
                                return Err(OpenError::Loop(next));
                            }
                            return self.open_depth(&next, depth + 1);
                        }
                        DefaultSwitch::Dir(dir) => {
                            return self.open_vde(&vnl, dir, label, text)
                        }
                    }
                }
                return self.open_vde(&vnl, PathBuf::from(vnl.address()), label, text);
            }
            "ptp" => {
                if vnl.address().is_empty() {
                    return Err(bad(
                        &vnl,
                        "ptp:// needs a socket path, e.g. ptp:///tmp/link",
                    ));
                }
                let mode = self.mode.or(mode(&vnl, "mode")?).unwrap_or(0o700);
                let group = self.group.clone().or(vnl.get("group").map(str::to_string));
                Box::new(
                    Ptp::open(vnl.address().as_ref(), mode, group.as_deref())
                        .map_err(io_err(&vnl))?,
                )
            }
            "udp" => {
                let cfg = UdpConfig::parse(vnl.address()).map_err(io_err(&vnl))?;
                Box::new(udp::open(&cfg).map_err(io_err(&vnl))?)
            }
            "vxvde" | "vxlan" => Box::new(Vx::open(self.vx_config(&vnl)?).map_err(io_err(&vnl))?),
            "tap" => Box::new(
                Tap::open_in(vnl.address(), self.vnet, vnl.get("netns")).map_err(io_err(&vnl))?,
            ),
            "cmd" => Box::new(StreamTransport::command(vnl.address()).map_err(io_err(&vnl))?),
            "stdio" => Box::new(StreamTransport::stdio().map_err(io_err(&vnl))?),
            "null" => Box::new(Null::open().map_err(io_err(&vnl))?),
            "seqpacket" => Box::new(open_seqpacket(&vnl)?),
            other => {
                return match registered(other) {
                    Some(opener) => opener(self, text),
                    None if matches!(other, "switch" | "hub") => Err(bad(
                        &vnl,
                        "switch:// and hub:// are implemented by filo-switch: call filo_switch::register() before opening",
                    )),
                    None => Err(bad(
                        &vnl,
                        format!("the {other}:// module is recognised but not available in filo yet"),
                    )),
                }
            }
        };
        Ok(Plug::from_transport(label, transport))
    }

    /// Opens a `vde://` plug; it can be opened again from `text` (a reconnection).
    fn open_vde(
        &self,
        vnl: &Vnl,
        dir: PathBuf,
        label: String,
        text: &str,
    ) -> Result<Plug, OpenError> {
        let mut cfg = VdeConfig::new(dir);
        cfg.description = vde::describe(&self.description);
        cfg.timeout = self.timeout;
        cfg.vnet = self.vnet;
        if let Some(port) = get::<u32>(vnl, "port", "a port number")? {
            cfg.port = if port == 0 {
                PortRequest::Zero
            } else {
                PortRequest::Port(port)
            };
        }
        cfg.port_group = vnl.get("portgroup").map(str::to_string);
        cfg.group = self.group.clone().or(vnl.get("group").map(str::to_string));
        if let Some(m) = self.mode.or(mode(vnl, "mode")?) {
            cfg.mode = m;
        }
        let dgram: ConnectedDgram = vde::connect(&cfg)?;
        let mut plug = Plug::from_transport(label, Box::new(dgram));
        plug.set_reopener(crate::reconnect::Reopener {
            options: self.clone(),
            vnl: text.to_string(),
        });
        Ok(plug)
    }

    fn vx_config(&self, vnl: &Vnl) -> Result<VxConfig, OpenError> {
        let flavor = if vnl.module() == "vxvde" {
            Flavor::Vxvde
        } else {
            Flavor::Vxlan
        };
        let v6 = vnl.has_flag("v6") && !vnl.has_flag("v4");
        let group: IpAddr = if vnl.address().is_empty() {
            let default = if v6 { VXVDE_GROUP_V6 } else { VXVDE_GROUP_V4 };
            default
                .parse()
                .map_err(|_| bad(vnl, "internal: default group"))?
        } else {
            vnl.address()
                .parse()
                .map_err(|_| bad(vnl, format!("{:?} is not an IP address: expected a multicast group such as 239.0.0.1 or ff05:56de::1", vnl.address())))?
        };
        let mut cfg = VxConfig::new(flavor, group);
        if let Some(p) = get::<u16>(vnl, "port", "a UDP port number (1-65535)")? {
            cfg.port = p;
        }
        if let Some(v) = vnl.get("vni") {
            cfg.vni = match v.parse::<u32>() {
                Ok(n) => n,
                Err(_) => crate::sys::group_id(v).ok_or_else(|| bad(vnl, format!("vni={v:?} is not valid: expected a number (0-16777215) or a group name")))?,
            };
        }
        if let Some(g) = vnl.get("grp") {
            let gid = crate::sys::group_id(g)
                .ok_or_else(|| bad(vnl, format!("grp={g:?} is not a known group")))?;
            cfg.vni = gid & 0x00ff_ffff;
            // vdeplug4: the group id also picks the multicast address (its low 24 bits).
            let b = gid.to_be_bytes();
            cfg.group = match cfg.group {
                IpAddr::V4(a) => {
                    let o = a.octets();
                    IpAddr::V4([o[0], b[1], b[2], b[3]].into())
                }
                IpAddr::V6(a) => {
                    let mut o = a.octets();
                    o[13..16].copy_from_slice(&b[1..4]);
                    IpAddr::V6(o.into())
                }
            };
        }
        if let Some(t) = get::<u32>(vnl, "ttl", "a hop limit (1-255)")? {
            if !(1..=255).contains(&t) {
                return Err(bad(
                    vnl,
                    format!("ttl={t} is out of range: expected 1 to 255"),
                ));
            }
            cfg.ttl = t;
        }
        cfg.ifname = vnl.get("if").map(str::to_string);
        cfg.rcvbuf = size(vnl, "rcvbuf")?;
        cfg.bind = get::<IpAddr>(vnl, "bind", "an IP address")?;
        if let Some(s) = get::<u64>(vnl, "expiretime", "seconds")? {
            cfg.expire = Duration::from_secs(s);
        }
        if let Some(n) = get::<usize>(vnl, "hashsize", "a number of entries")? {
            cfg.table_size = n.max(1);
        }
        Ok(cfg)
    }
}

fn open_seqpacket(vnl: &Vnl) -> Result<ConnectedDgram, OpenError> {
    let fd: i32 = vnl
        .address()
        .parse()
        .ok()
        .filter(|&fd| fd >= 0)
        .ok_or_else(|| {
            bad(
                vnl,
                format!(
                    "{:?} is not a file descriptor number: expected seqpacket://FD",
                    vnl.address()
                ),
            )
        })?;
    let owned = crate::sys::adopt_seqpacket(fd).map_err(|reason| bad(vnl, reason))?;
    ConnectedDgram::new(owned, None, Refused::Fatal, true, "seqpacket").map_err(io_err(vnl))
}
