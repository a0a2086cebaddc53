//! Fuzz the wire formats a peer controls: the vde_switch control request, the stream
//! encoding, the VXLAN header and the virtio-net header with super-frame segmentation. None
//! may panic; the stream decoder must return exactly the records it was fed.
#![no_main]

use filo_vnl::wire::{stream, vde_request, vnet, vxlan};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vde_request::Request::parse(data);
    let _ = vxlan::Packet::new_checked(data).map(|p| (p.vni(), p.payload().len()));
    if let Ok(hdr) = vnet::Header::parse(data) {
        let mut scratch = Vec::new();
        let mut total = 0usize;
        let _ = vnet::finish(&hdr, &data[vnet::HEADER_LEN..], &mut scratch, |seg| total += seg.len());
    }
    let mut dec = stream::Decoder::new();
    for chunk in data.chunks(7) {
        dec.feed(chunk);
        loop {
            match dec.next_frame() {
                Ok(Some(frame)) => assert!(!frame.is_empty() && frame.len() <= stream::MAX_RECORD),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = dec.finish();
});
