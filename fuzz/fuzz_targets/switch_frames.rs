//! Fuzz the switch core with arbitrary frames on arbitrary ports under a VLAN setup: no panic,
//! no egress to the ingress port, and every egress action renders.
#![no_main]

use std::time::{Duration, Instant};

use filo_switch::{Core, CoreConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut core = Core::new(
        CoreConfig {
            num_ports: 8,
            stp: data.first().is_some_and(|b| b & 1 == 1),
            ..CoreConfig::default()
        },
        t0,
    );
    for p in 0..8 {
        let _ = core.add_port(p);
        let _ = core.set_port_active(t0, p, true);
    }
    let _ = core.vlan_create(10);
    let _ = core.vlan_add_port(10, 3);
    let _ = core.set_untagged_vlan(4, 10);
    let mut out = Vec::new();
    let mut scratch = vec![0u8; 70_000];
    for (i, chunk) in data.chunks(61).enumerate() {
        let port = (chunk.first().copied().unwrap_or(0) % 8) as u16;
        let now = t0 + Duration::from_millis(i as u64 * 37);
        core.handle_frame(now, port, chunk, &mut out);
        for e in &out {
            assert_ne!(e.port, port, "egress to the ingress port");
            let _ = e.action.render(chunk, &mut scratch);
        }
        core.handle_timeout(now);
        while core.poll_transmit(&mut scratch).is_some() {}
    }
});
