//! Fuzz the frame-to-socket path of filo-stack: the input is a sequence of frames (each
//! preceded by a one-byte length) fed to a stack with an open TCP listener and UDP socket.
//! Nothing may panic, and every frame must be counted.
#![no_main]

use std::sync::OnceLock;

use filo_stack::{Stack, TcpListener, UdpSocket};
use libfuzzer_sys::fuzz_target;

struct Target {
    stack: Stack,
    _l: TcpListener,
    _u: UdpSocket,
}

fn target() -> &'static Target {
    static T: OnceLock<Target> = OnceLock::new();
    T.get_or_init(|| {
        let stack = Stack::builder()
            .interface_unplugged("mac=02:00:00:00:00:0b,ip=10.3.0.2/24,ip=fd03::2/64")
            .build()
            .expect("stack");
        let l = stack.tcp_listen("0.0.0.0:80").expect("listen");
        let u = stack.udp_bind("0.0.0.0:53").expect("bind");
        Target {
            stack,
            _l: l,
            _u: u,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let t = target();
    let before = t.stack.counters().frames_in;
    let mut rest = data;
    let mut n = 0u64;
    while let Some((&len, tail)) = rest.split_first() {
        // Lengths are scaled so that full-size frames are reachable.
        let len = (usize::from(len) * 6).min(tail.len());
        t.stack.inject_frame(0, &tail[..len]);
        n += 1;
        rest = &tail[len..];
    }
    let _ = t.stack.take_captured(0);
    assert_eq!(t.stack.counters().frames_in - before, n);
});
