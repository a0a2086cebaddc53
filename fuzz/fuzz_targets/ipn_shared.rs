//! Fuzz the ipn ring with a hostile member: three members send and receive while the input
//! also writes arbitrary words anywhere in the shared region between operations. Asserts: no
//! panic, every call returns (bounded), a received frame fits its slot, and as long as no
//! garbage was written every frame received is one that was sent, in sending order.
#![no_main]

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use filo_ipn::layout::Geometry;
use filo_ipn::ring::{self, BusParams, Member, Recv};
use filo_ipn::sys::Region;
use filo_ipn::PolicyKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, data)) = data.split_first() else {
        return;
    };
    let params = BusParams {
        geometry: Geometry {
            nslots: 16,
            slot_size: 128,
        },
        policy: match first % 3 {
            0 => PolicyKind::Hub,
            1 => PolicyKind::Switch,
            _ => PolicyKind::MpegTs,
        },
        lossless: first & 0x80 != 0,
        // Zero: a gated sender evicts at once instead of waiting in real time.
        timeout: Duration::ZERO,
        // Frames behind a virtio-net header: the policy reads addresses further in.
        vnet: first & 0x40 != 0,
    };
    let Ok(region) = Region::anonymous(params.geometry.region_len()) else {
        return;
    };
    let region = Arc::new(region);
    ring::init(&region, &params);
    let mut members: Vec<Member> = (0..3)
        .map(|i| Member::join(region.clone(), params, i, 0, None))
        .collect();
    let mut sent: Vec<Vec<u8>> = Vec::new();
    let mut next_expected = [0usize; 3];
    let mut garbage = false;
    let mut buf = [0u8; 256];
    let mut counter = 0u32;
    let mut input = data;
    while let Some((&op, rest)) = input.split_first() {
        input = rest;
        let who = usize::from(op >> 4) % 3;
        match op & 0x7 {
            0 | 1 => {
                let len = 14 + usize::from(input.first().copied().unwrap_or(0)) % 150;
                counter += 1;
                let mut f = vec![0xff; 6];
                f.extend_from_slice(&[2, 0, 0, 0, 0, who as u8, 0x88, 0xb5]);
                f.extend_from_slice(&counter.to_be_bytes());
                f.resize(len.max(18), counter as u8);
                let went = if op & 0x7 == 0 {
                    matches!(members[who].send_batch(&[&f]), Ok(1))
                } else {
                    // Written in place, as a tap's read fills the slot.
                    let sent_len = members[who].send_in_place(14..=256, |region, off, cap| {
                        if f.len() <= cap {
                            region.write(off, &f);
                        }
                        Ok(f.len())
                    });
                    matches!(sent_len, Ok(Some(_)))
                };
                if went && f.len() <= 128 {
                    sent.push(f);
                }
            }
            2 | 3 => match if op & 0x7 == 2 {
                members[who].recv(&mut buf)
            } else {
                // Delivered from the slot, as to a tap.
                let cap = buf.len();
                members[who].recv_with(cap, |region, off, len| {
                    region.read(off, &mut buf[..len]);
                })
            } {
                Recv::Frame(n) => {
                    assert!(n <= 128, "a frame longer than its slot");
                    if !garbage {
                        let got = &buf[..n];
                        let at = sent[next_expected[who]..]
                            .iter()
                            .position(|s| s == got)
                            .expect("a frame nobody sent");
                        next_expected[who] += at + 1;
                    }
                }
                Recv::Idle | Recv::Pending => {}
            },
            4 => {
                let _ = members[who].prepare_sleep();
                members[who].awake();
            }
            _ => {
                let Some((word, rest)) = input.split_first_chunk::<12>() else {
                    break;
                };
                input = rest;
                let off = u32::from_le_bytes([word[0], word[1], word[2], word[3]]) as usize;
                let value = u64::from_le_bytes([
                    word[4], word[5], word[6], word[7], word[8], word[9], word[10], word[11],
                ]);
                region.store64((off % region.len()) & !7, value, Ordering::Relaxed);
                garbage = true;
            }
        }
    }
});
