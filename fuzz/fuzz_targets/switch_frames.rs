//! Fuzz the switch core with arbitrary frames on arbitrary ports under a VLAN setup: no panic,
//! no egress to the ingress port, and every egress action renders: as the frame itself
//! (`AsIs`), with a tag carrying the VID inserted after the addresses (`InsertTag`), without
//! its tag (`Strip`), or with only the tag's VID changed (`RewriteVid`).
#![no_main]

use std::time::{Duration, Instant};

use filo_switch::wire::vlan::{self, TAG_LEN};
use filo_switch::{Core, CoreConfig, EgressAction};
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
            let rendered = match e.action.render(chunk, &mut scratch) {
                Ok(bytes) => bytes,
                Err(err) => panic!("{:?} to port {} does not render: {err}", e.action, e.port),
            };
            check_rendered(e.action, chunk, rendered);
        }
        core.handle_timeout(now);
        while core.poll_transmit(&mut scratch).is_some() {}
    }
});

/// Whether `out` is what `action` must make of `frame`.
fn check_rendered(action: EgressAction, frame: &[u8], out: &[u8]) {
    // Bytes 12.. of an untagged frame are bytes 16.. of the same frame tagged.
    let (untagged, tagged) = match action {
        EgressAction::AsIs => {
            assert_eq!(out, frame, "AsIs changed the frame");
            return;
        }
        EgressAction::InsertTag(vid) => {
            let tci = vlan::tag_of(out).expect("InsertTag made a tagged frame");
            assert_eq!((tci.pcp(), tci.dei(), tci.vid()), (0, false, vid));
            (frame, out)
        }
        EgressAction::Strip => (out, frame),
        EgressAction::RewriteVid(vid) => {
            let (old, new) = (vlan::tag_of(frame), vlan::tag_of(out));
            let (old, new) = old
                .zip(new)
                .expect("RewriteVid of a tagged frame is tagged");
            assert_eq!(
                new,
                old.with_vid(vid),
                "RewriteVid changed more than the VID"
            );
            assert_eq!((&out[..14], &out[16..]), (&frame[..14], &frame[16..]));
            return;
        }
    };
    assert!(
        vlan::tag_of(tagged).is_some(),
        "{action:?}: no tag where one should be"
    );
    assert_eq!(tagged.len(), untagged.len() + TAG_LEN, "{action:?}: length");
    assert_eq!(tagged[..12], untagged[..12], "{action:?}: addresses");
    assert_eq!(
        tagged[16..],
        untagged[12..],
        "{action:?}: what follows the tag"
    );
}
