//! # filo-ipn: `ipn://PATH`, a multicast Ethernet bus in shared memory
//!
//! Virtual Square's IPN (AF_IPN) gave processes a kernel bus named by a path, with policies
//! (hub, VDE switch, MPEG-TS demultiplexing) and lossless or lossy delivery. This crate does
//! the same without the kernel: the bus is a ring in shared memory, and a busy bus moves
//! frames between processes with no system call per frame.
//!
//! Theory of operation:
//! * [`bus`]: finding, creating and serving a bus at PATH (memfd and eventfds handed over a
//!   UNIX socket with SCM_RIGHTS; why every member can serve; liveness by locks).
//! * [`ring`]: the shared ring — claiming, writing once, reading by mask, lossless gating
//!   and eviction, lossy lapping, crash recovery; every value read from the region is
//!   untrusted.
//! * [`policy`]: who receives a frame (`hub`, `switch`, `mpegts`), a trait on private memory.
//! * [`layout`]: where things are in the region; [`sys`]: the only `unsafe` code (the
//!   mapping, accessed through atomics and copies only; descriptors; locks).
//! * [`transport`]: the `ipn://` plug for filo-vnl; [`register`] makes every VNL opener of
//!   this process understand `ipn://`.

pub mod bus;
pub mod layout;
pub mod policy;
pub mod ring;
#[allow(unsafe_code)]
pub mod sys;
pub mod transport;

use std::path::PathBuf;
use std::time::Duration;

use filo_vnl::open::OpenError;
use filo_vnl::{OpenOptions, Plug, Vnl};

pub use bus::{Bus, BusOptions, IpnError};
pub use policy::{Policy, PolicyKind};
pub use ring::{BusParams, Member, MemberStats, Recv};

/// Makes `ipn://` open through [`open_plug`] wherever a VNL is opened in this process.
/// Idempotent.
pub fn register() {
    filo_vnl::register_module("ipn", open_plug);
}

/// A bus's options from an `ipn://` VNL: (bus options, member tag, busy poll).
pub fn options_of(
    vnl: &Vnl,
    opts: &OpenOptions,
) -> Result<(PathBuf, BusOptions, u32, bool), String> {
    let path = vnl.address();
    if path.is_empty() {
        return Err("ipn:// needs a path, e.g. ipn:///tmp/bus".into());
    }
    let mut bus = BusOptions::default();
    if let Some(p) = vnl.get("policy") {
        bus.params.policy = PolicyKind::parse(p)?;
    }
    if vnl.has_flag("lossless") && vnl.has_flag("lossy") {
        return Err("options lossless and lossy exclude each other".into());
    }
    bus.params.lossless = vnl.has_flag("lossless");
    bus.params.vnet = vnl.has_flag("vnet");
    if bus.params.vnet {
        if !opts.vnet {
            return Err(
                "option vnet: this program does not speak the virtio-net framing \
                 (filo ns, filo router and filo plug do)"
                    .into(),
            );
        }
        bus.params.geometry =
            layout::Geometry::new(layout::VNET_DEFAULT_SLOTS, layout::VNET_SLOT_SIZE)?;
    }
    if let Some(size) = vnl.get("size") {
        let n = size
            .parse::<u32>()
            .map_err(|_| format!("option size: expected a number of slots, got {size:?}"))?;
        bus.params.geometry = layout::Geometry::new(n, bus.params.geometry.slot_size)
            .map_err(|e| format!("option size: {e}"))?;
    }
    if let Some(t) = vnl.get("timeout") {
        match t.parse::<f64>() {
            Ok(secs) if (0.01..=3600.0).contains(&secs) => {
                bus.params.timeout = Duration::from_secs_f64(secs)
            }
            _ => {
                return Err(format!(
                    "option timeout: expected seconds from 0.01 to 3600, got {t:?}"
                ))
            }
        }
    }
    let tag = match vnl.get("tag") {
        Some(t) => t
            .parse::<u32>()
            .map_err(|_| format!("option tag: expected a number, got {t:?}"))?,
        None => 0,
    };
    bus.mode = vnl
        .get_mode("mode")
        .map_err(|e| e.to_string())?
        .or(opts.mode)
        .unwrap_or(0o600);
    bus.group = vnl.get("group").map(str::to_string).or(opts.group.clone());
    bus.timeout = opts.timeout.max(Duration::from_secs(1));
    Ok((PathBuf::from(path), bus, tag, vnl.has_flag("busypoll")))
}

/// Opens an `ipn://` VNL (other VNLs go to `opts`).
pub fn open_plug(opts: &OpenOptions, text: &str) -> Result<Plug, OpenError> {
    let vnl = Vnl::parse(text)?;
    if vnl.module() != "ipn" {
        return opts.open(text);
    }
    let bad = |reason: String| OpenError::BadOption {
        vnl: text.to_string(),
        reason,
    };
    let (path, bus_opts, tag, busy) = options_of(&vnl, opts).map_err(bad)?;
    let bus = Bus::open(&path, &bus_opts).map_err(|e| bad(e.to_string()))?;
    let asked = &bus_opts.params;
    let got = *bus.params();
    if got.vnet && !opts.vnet {
        return Err(bad(
            "the bus carries the virtio-net framing (created with vnet) and this program \
             does not speak it"
                .into(),
        ));
    }
    if asked.vnet && !got.vnet {
        return Err(bad(
            "option vnet: the bus exists without the virtio-net framing".into(),
        ));
    }
    if !bus.created() && (vnl.get("policy").is_some() && asked.policy != got.policy) {
        tracing::warn!(
            "{text}: the bus exists with policy {}; policy={} is ignored",
            got.policy.name(),
            asked.policy.name()
        );
    }
    let (member, _) = bus.member(tag).map_err(|e| bad(e.to_string()))?;
    Ok(Plug::from_transport(
        text,
        Box::new(transport::IpnTransport::new(bus, member, busy)),
    ))
}
