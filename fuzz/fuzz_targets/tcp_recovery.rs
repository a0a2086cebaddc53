//! Fuzz filo-stack's TCP loss recovery: a sequence of packets (each a one-byte tag for the
//! direction or a timer tick, a one-byte length, then the bytes) goes through `Recovery`.
//! Nothing may panic, and whatever it resends must be a copy it was given, trimmed.
#![no_main]

use filo_stack::recovery::Recovery;
use libfuzzer_sys::fuzz_target;
use smoltcp::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let mut r = Recovery::new();
    let mut now = Instant::from_millis(1);
    let mut out = Vec::new();
    let mut rest = data;
    while let [tag, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (packet, next) = tail.split_at(n);
        match tag % 3 {
            0 => {
                let _ = r.on_output(now, packet, &mut out);
            }
            1 => r.on_input(now, packet, &mut out),
            _ => {
                now += Duration::from_millis(u64::from(*len));
                r.on_timer(now, &mut out);
            }
        }
        for p in out.drain(..) {
            assert!(p.len() <= 65535 + 60);
        }
        rest = next;
    }
});
