//! Every transport a VNL can name. Each module turns its typed configuration into a
//! [`crate::plug::Transport`]; [`crate::open`] maps VNL text to those configurations.

pub mod dgram;
pub mod null;
pub mod ptp;
pub mod stream;
pub mod tap;
pub mod udp;
pub mod vde;
pub mod vxlan;

fn would_block(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ENOBUFS)
}

/// Maps "no room right now" errors (EAGAIN, ENOBUFS) to `WouldBlock`.
fn normalize(e: std::io::Error) -> std::io::Error {
    if would_block(&e) {
        std::io::Error::from(std::io::ErrorKind::WouldBlock)
    } else {
        e
    }
}
