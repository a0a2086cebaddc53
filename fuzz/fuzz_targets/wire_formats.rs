//! Fuzz the wire formats a peer controls: the vde_switch control request, the stream
//! encoding, frame trains, the VXLAN header, the virtio-net header with super-frame
//! segmentation, and completing a VXLAN frame's partial checksum. None may panic; the stream decoder must return exactly the records it was
//! fed, and a train's records must lie within it.
#![no_main]

use filo_vnl::wire::{partial, stream, train, vde_request, vnet, vxlan};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vde_request::Request::parse(data);
    let _ = vxlan::Packet::new_checked(data).map(|p| (p.vni(), p.payload().len()));
    // Completing is done at most once: a completed frame is left as it is.
    let mut frame = data.to_vec();
    if partial::complete(&mut frame) {
        let done = frame.clone();
        assert!(!partial::complete(&mut frame) || frame == done);
    }
    if let Ok(hdr) = vnet::Header::parse(data) {
        let mut scratch = Vec::new();
        let mut total = 0usize;
        let _ = vnet::finish(&hdr, &data[vnet::HEADER_LEN..], &mut scratch, |seg| {
            total += seg.len()
        });
    }
    let mut covered = 0usize;
    for record in train::records(data) {
        match record {
            Ok(frame) => covered += train::RECORD_HEADER_LEN + frame.len(),
            Err(_) => break,
        }
    }
    assert!(covered <= data.len());
    let mut dec = stream::Decoder::new();
    for chunk in data.chunks(7) {
        dec.feed(chunk);
        loop {
            // has_frame() says exactly whether next_frame() has a frame or an error to give.
            let promised = dec.has_frame();
            match dec.next_frame() {
                Ok(Some(frame)) => {
                    assert!(promised);
                    assert!(!frame.is_empty() && frame.len() <= stream::MAX_RECORD);
                }
                Ok(None) => {
                    assert!(!promised);
                    break;
                }
                Err(_) => {
                    assert!(promised);
                    return;
                }
            }
        }
    }
    let _ = dec.finish();
});
