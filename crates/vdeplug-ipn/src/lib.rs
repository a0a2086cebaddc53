//! # libvdeplug_ipn.so: `ipn://` for every libvdeplug program
//!
//! vdeplug4's libvdeplug opens `MODULE://ARGS` by loading `libvdeplug_MODULE.so` (from
//! `$VDEPLUGIN_PATH`, or its plugin directory, `/usr/lib/x86_64-linux-gnu/vdeplug/` on Debian)
//! and calling the functions of its exported `vdeplug_ops` structure. This crate builds that
//! plugin, so unmodified programs — `vde_plug`, `vdens`, QEMU's `-nic vde,sock=ipn:///tmp/bus`
//! — join a filo bus and move frames through shared memory with no system call per frame.
//!
//! The C interface (the exported structure and the functions libvdeplug calls) is in [`sys`];
//! this module is the safe part: open a bus member from the VNL text, and the frame calls.
//! The data descriptor is the member's eventfd: readable while frames wait (it is reset only
//! when a receive finds nothing), as libvdeplug clients expect.

#[allow(unsafe_code)]
pub mod sys;

use std::io;
use std::os::fd::AsRawFd;

use filo_vnl::{OpenOptions, Plug};

/// One libvdeplug connection: a bus member.
pub struct Conn {
    plug: Plug,
}

/// Opens `ipn://ARGS` (libvdeplug passes what follows `ipn://`).
pub fn open(args: &str, descr: &str) -> Result<Conn, String> {
    filo_ipn::register();
    let opts = OpenOptions {
        description: descr.to_string(),
        ..OpenOptions::default()
    };
    let text = format!("ipn://{args}");
    let plug = filo_ipn::open_plug(&opts, &text).map_err(|e| e.to_string())?;
    Ok(Conn { plug })
}

impl Conn {
    /// A frame into `buf`; `Ok(None)` when none waits (libvdeplug's "1 byte, drop it").
    pub fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match self.plug.recv(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        self.plug.send(frame)
    }

    pub fn data_fd(&self) -> i32 {
        self.plug.data_fd().as_raw_fd()
    }
}
