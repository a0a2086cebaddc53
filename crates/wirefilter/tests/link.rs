//! Link emulation statistics over generated traffic, in virtual time (no sleeping).
//! Run with `--nocapture` to see the measured values next to the settings.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use filo_wirefilter::{Direction, Param, Side, Value, Wirefilter};

const N: u32 = 100_000;
const MS: Duration = Duration::from_millis(1);

struct Delivery {
    at: Instant,
    to: Side,
    bytes: Vec<u8>,
}

/// A frame of `len` bytes (at least 4) carrying `seq` in its first four bytes.
fn frame(seq: u32, len: usize) -> Vec<u8> {
    let mut f = vec![0xa5; len.max(4)];
    f[..4].copy_from_slice(&seq.to_be_bytes());
    f
}

fn seq_of(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

fn deliver_due(wf: &mut Wirefilter, now: Instant, out: &mut Vec<Delivery>) {
    while wf.poll_transmit(now, |to, bytes| {
        out.push(Delivery {
            at: now,
            to,
            bytes: bytes.to_vec(),
        })
    }) {}
}

/// Feeds `arrivals` (time, side, frame) in order, delivering every frame exactly at its due
/// time (driven by `poll_timeout`), then drains the queue. `on_arrival` sees the filter
/// before each arrival.
fn simulate(
    wf: &mut Wirefilter,
    arrivals: impl IntoIterator<Item = (Instant, Side, Vec<u8>)>,
    mut on_arrival: impl FnMut(&Wirefilter),
) -> Vec<Delivery> {
    let mut out = Vec::new();
    for (at, side, bytes) in arrivals {
        while let Some(t) = wf.poll_timeout() {
            if t > at {
                break;
            }
            deliver_due(wf, t, &mut out);
        }
        on_arrival(wf);
        wf.handle_frame(at, side, &bytes);
    }
    while wf.queued() > 0 {
        let Some(t) = wf.poll_timeout() else { break };
        deliver_due(wf, t, &mut out);
    }
    out
}

/// `n` frames of `len` bytes from the left, one every `gap`, starting at `t0`.
fn traffic(t0: Instant, n: u32, gap: Duration, len: usize) -> Vec<(Instant, Side, Vec<u8>)> {
    (0..n)
        .map(|i| (t0 + gap * i, Side::Left, frame(i, len)))
        .collect()
}

fn filter(seed: u64, t0: Instant, settings: &[(Param, Value)]) -> Wirefilter {
    let mut wf = Wirefilter::new(seed, t0);
    for &(p, v) in settings {
        wf.set(Direction::Both, p, v);
    }
    wf
}

/// Delivery delays (ms) keyed by sequence number, for frames sent `gap` apart from `t0`.
fn delays_ms(t0: Instant, gap: Duration, out: &[Delivery]) -> Vec<f64> {
    out.iter()
        .map(|d| {
            let sent = t0 + gap * seq_of(&d.bytes);
            (d.at - sent).as_secs_f64() * 1000.0
        })
        .collect()
}

fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

#[test]
fn perfect_cable_delivers_everything_at_once_to_the_other_side() {
    let t0 = Instant::now();
    let mut wf = Wirefilter::new(1, t0);
    wf.handle_frame(t0, Side::Left, b"hello");
    wf.handle_frame(t0, Side::Right, b"world");
    assert_eq!(wf.poll_timeout(), Some(t0));
    assert_eq!(
        wf.poll_transmit_vec(t0),
        Some((Side::Right, b"hello".to_vec()))
    );
    assert_eq!(
        wf.poll_transmit_vec(t0),
        Some((Side::Left, b"world".to_vec()))
    );
    assert_eq!(wf.poll_transmit_vec(t0), None);
    assert_eq!(wf.poll_timeout(), None);
    let s = wf.stats(Side::Left);
    assert_eq!(
        (s.frames_in, s.delivered, s.bytes_out, s.queued),
        (1, 1, 5, 0)
    );
}

#[test]
fn loss_5_percent() {
    let t0 = Instant::now();
    let mut wf = filter(11, t0, &[(Param::Loss, Value::fixed(5.0))]);
    let out = simulate(&mut wf, traffic(t0, N, MS, 64), |_| {});
    let s = wf.stats(Side::Left);
    let loss = 100.0 * s.dropped_loss as f64 / f64::from(N);
    eprintln!("loss 5 %: measured {loss:.3} %");
    assert!((loss - 5.0).abs() <= 0.5, "{loss}");
    assert_eq!(out.len() as u64, s.delivered);
    assert_eq!(s.delivered + s.dropped_loss, u64::from(N));
    assert!(out.iter().all(|d| d.to == Side::Right));
    // The other direction is untouched.
    assert_eq!(wf.stats(Side::Right).frames_in, 0);
}

#[test]
fn gilbert_burst_loss() {
    let t0 = Instant::now();
    let mut wf = filter(
        12,
        t0,
        &[
            (Param::Loss, Value::fixed(10.0)),
            (Param::LostBurst, Value::fixed(5.0)),
        ],
    );
    let out = simulate(&mut wf, traffic(t0, N, MS, 64), |_| {});
    let mut got = vec![false; N as usize];
    for d in &out {
        got[seq_of(&d.bytes) as usize] = true;
    }
    let mut runs = Vec::new();
    let mut run = 0u32;
    for &g in &got {
        if g {
            if run > 0 {
                runs.push(run);
            }
            run = 0;
        } else {
            run += 1;
        }
    }
    if run > 0 {
        runs.push(run);
    }
    let lost = got.iter().filter(|g| !**g).count();
    let loss = 100.0 * lost as f64 / f64::from(N);
    let mean_run = f64::from(runs.iter().sum::<u32>()) / runs.len() as f64;
    eprintln!("loss 10 % lostburst 5: measured loss {loss:.3} %, mean burst {mean_run:.3} frames over {} bursts", runs.len());
    assert!((mean_run - 5.0).abs() <= 0.75, "{mean_run}");
    assert!((loss - 10.0).abs() <= 1.0, "{loss}");
    assert_eq!(lost as u64, wf.stats(Side::Left).dropped_loss);
}

#[test]
fn fixed_delay_is_exact() {
    let t0 = Instant::now();
    let mut wf = filter(13, t0, &[(Param::Delay, Value::fixed(20.0))]);
    let out = simulate(&mut wf, traffic(t0, N, MS, 64), |_| {});
    assert_eq!(out.len(), N as usize);
    for d in &out {
        let sent = t0 + MS * seq_of(&d.bytes);
        assert_eq!(d.at - sent, Duration::from_millis(20));
    }
    // In order.
    assert!(out
        .windows(2)
        .all(|w| seq_of(&w[0].bytes) < seq_of(&w[1].bytes)));
}

#[test]
fn uniform_jitter() {
    let t0 = Instant::now();
    let mut wf = filter(14, t0, &[(Param::Delay, Value::uniform(20.0, 5.0))]);
    wf.set_fifo(false);
    let out = simulate(&mut wf, traffic(t0, N, MS, 64), |_| {});
    let d = delays_ms(t0, MS, &out);
    let (mean, _) = mean_std(&d);
    let min = d.iter().cloned().fold(f64::MAX, f64::min);
    let max = d.iter().cloned().fold(f64::MIN, f64::max);
    eprintln!("delay 20+5U: mean {mean:.4} ms, min {min:.4}, max {max:.4}");
    assert!((mean - 20.0).abs() <= 0.2, "{mean}");
    assert!(min >= 15.0 && max <= 25.0, "{min} {max}");
}

#[test]
fn normal_jitter() {
    let t0 = Instant::now();
    let mut wf = filter(15, t0, &[(Param::Delay, Value::normal(20.0, 6.0))]);
    wf.set_fifo(false);
    let out = simulate(&mut wf, traffic(t0, N, MS, 64), |_| {});
    let (mean, std) = mean_std(&delays_ms(t0, MS, &out));
    eprintln!("delay 20+6N: mean {mean:.4} ms, std {std:.4} ms");
    assert!((mean - 20.0).abs() <= 0.1, "{mean}");
    assert!((std - 2.0).abs() <= 0.2, "{std}");
}

#[test]
fn dup_10_percent() {
    let t0 = Instant::now();
    let mut wf = filter(16, t0, &[(Param::Dup, Value::fixed(10.0))]);
    let out = simulate(&mut wf, traffic(t0, N, MS, 64), |_| {});
    let extra = 100.0 * (out.len() as f64 - f64::from(N)) / f64::from(N);
    // "repeat while rand < dup": mean extra copies d/(1-d) = 11.11 %.
    eprintln!("dup 10 %: measured {extra:.3} % extra frames (expected 11.11)");
    assert!((extra - 100.0 / 9.0).abs() <= 0.5, "{extra}");
    assert_eq!(
        wf.stats(Side::Left).duplicated,
        out.len() as u64 - u64::from(N)
    );
    // Every original arrives at least once.
    let mut seen = vec![0u32; N as usize];
    for d in &out {
        seen[seq_of(&d.bytes) as usize] += 1;
    }
    assert!(seen.iter().all(|&c| c >= 1));
}

#[test]
fn bandwidth_spaces_back_to_back_frames() {
    let t0 = Instant::now();
    let mut wf = filter(17, t0, &[(Param::Bandwidth, Value::fixed(125_000.0))]);
    let n = 1000;
    let out = simulate(&mut wf, traffic(t0, n, Duration::ZERO, 1250), |_| {});
    assert_eq!(out.len(), n as usize);
    assert_eq!(out[0].at - t0, Duration::from_millis(10));
    assert!(out
        .windows(2)
        .all(|w| w[1].at - w[0].at == Duration::from_millis(10)));
    let span = (out[out.len() - 1].at - t0).as_secs_f64();
    let throughput = 1250.0 * f64::from(n) / span;
    eprintln!("bandwidth 125000 B/s: measured {throughput:.1} B/s");
    assert!((throughput - 125_000.0).abs() <= 1250.0);
}

#[test]
fn bandwidth_plus_delay() {
    let t0 = Instant::now();
    let mut wf = filter(
        18,
        t0,
        &[
            (Param::Bandwidth, Value::fixed(125_000.0)),
            (Param::Delay, Value::fixed(5.0)),
        ],
    );
    let out = simulate(&mut wf, traffic(t0, 3, Duration::ZERO, 1250), |_| {});
    let at: Vec<_> = out.iter().map(|d| d.at - t0).collect();
    assert_eq!(at, [15, 25, 35].map(Duration::from_millis).to_vec());
}

#[test]
fn speed_throttles_input() {
    let t0 = Instant::now();
    let mut wf = filter(19, t0, &[(Param::Speed, Value::fixed(125_000.0))]);
    for i in 0..3 {
        wf.handle_frame(t0, Side::Left, &frame(i, 1250));
    }
    assert_eq!(
        wf.input_ready_at(Side::Left),
        t0 + Duration::from_millis(30)
    );
    assert_eq!(wf.input_ready_at(Side::Right), t0);
    let out = simulate(&mut wf, Vec::new(), |_| {});
    let at: Vec<_> = out.iter().map(|d| d.at - t0).collect();
    assert_eq!(at, [10, 20, 30].map(Duration::from_millis).to_vec());
}

#[test]
fn capacity_drops_excess_and_counts_it() {
    let t0 = Instant::now();
    let mut wf = filter(
        20,
        t0,
        &[
            (Param::Bandwidth, Value::fixed(125_000.0)),
            (Param::Capacity, Value::fixed(12_500.0)),
        ],
    );
    for i in 0..100 {
        wf.handle_frame(t0, Side::Left, &frame(i, 1250));
    }
    let s = wf.stats(Side::Left);
    assert_eq!(
        (s.queued, s.queued_bytes, s.dropped_capacity),
        (10, 12_500, 90)
    );
    assert!(wf
        .showinfo()
        .contains("Current Delay Queue size:   L->R 12500   R->L 0"));
    // One frame leaves after 10 ms: room for exactly one more.
    let t1 = t0 + Duration::from_millis(10);
    assert!(wf.poll_transmit(t1, |_, _| {}));
    wf.handle_frame(t1, Side::Left, &frame(100, 1250));
    wf.handle_frame(t1, Side::Left, &frame(101, 1250));
    let s = wf.stats(Side::Left);
    assert_eq!((s.queued, s.dropped_capacity), (10, 91));
    let out = simulate(&mut wf, Vec::new(), |_| {});
    assert_eq!(out.len(), 10);
    assert_eq!(wf.stats(Side::Left).delivered, 11);
}

#[test]
fn mtu_drops_longer_frames_only() {
    let t0 = Instant::now();
    let mut wf = filter(21, t0, &[(Param::Mtu, Value::fixed(1000.0))]);
    let arrivals = vec![
        (t0, Side::Left, frame(0, 999)),
        (t0, Side::Left, frame(1, 1000)),
        (t0, Side::Left, frame(2, 1001)),
        (t0, Side::Right, frame(3, 1500)),
    ];
    let out = simulate(&mut wf, arrivals, |_| {});
    let seqs: Vec<_> = out.iter().map(|d| seq_of(&d.bytes)).collect();
    assert_eq!(seqs, [0, 1]);
    assert_eq!(wf.stats(Side::Left).dropped_mtu, 1);
    assert_eq!(wf.stats(Side::Right).dropped_mtu, 1);
}

#[test]
fn noise_flips_the_expected_number_of_bits() {
    let t0 = Instant::now();
    // 8192 bits per MiB on 1024-byte frames: 8 flipped bits per frame on average.
    let mut wf = filter(22, t0, &[(Param::Noise, Value::fixed(8192.0))]);
    let n = 10_000;
    let out = simulate(&mut wf, traffic(t0, n, MS, 1024), |_| {});
    let mut differing_bits = 0u64;
    let mut differing_frames = 0u64;
    for d in &out {
        let orig = frame(0, 1024);
        // The sequence field may be corrupted too: compare the payload after it only.
        let diff: u32 = d.bytes[4..]
            .iter()
            .zip(&orig[4..])
            .map(|(a, b)| (a ^ b).count_ones())
            .sum();
        differing_bits += u64::from(diff);
        if diff > 0 {
            differing_frames += 1;
        }
    }
    let s = wf.stats(Side::Left);
    let expected = 8.0 * f64::from(n);
    let payload_expected = expected * 1020.0 / 1024.0;
    eprintln!(
        "noise 8192 bits/MiB, 1024-byte frames: {} bits flipped (expected {expected}), {} payload bits differ (expected ≈{payload_expected:.0}), {} frames corrupted",
        s.bits_flipped, differing_bits, s.corrupted
    );
    assert!((s.bits_flipped as f64 - expected).abs() <= 0.02 * expected);
    assert!((differing_bits as f64 - payload_expected).abs() <= 0.03 * payload_expected);
    // P(no flip) = e^-8: almost every frame differs.
    assert!(differing_frames as f64 >= 0.99 * f64::from(n));
    assert!(s.corrupted >= differing_frames);
}

fn inversions(out: &[Delivery]) -> usize {
    out.windows(2)
        .filter(|w| seq_of(&w[0].bytes) > seq_of(&w[1].bytes))
        .count()
}

#[test]
fn fifo_on_never_reorders() {
    let t0 = Instant::now();
    let mut wf = filter(23, t0, &[(Param::Delay, Value::uniform(20.0, 10.0))]);
    assert!(wf.fifo());
    let out = simulate(&mut wf, traffic(t0, 10_000, MS, 64), |_| {});
    assert_eq!(out.len(), 10_000);
    assert_eq!(inversions(&out), 0);
}

#[test]
fn fifo_off_reorders_with_large_jitter() {
    let t0 = Instant::now();
    let mut wf = filter(23, t0, &[(Param::Delay, Value::uniform(20.0, 10.0))]);
    wf.set_fifo(false);
    let out = simulate(&mut wf, traffic(t0, 10_000, MS, 64), |_| {});
    let inv = inversions(&out);
    eprintln!("delay 20+10U, 1 ms apart, nofifo: {inv} adjacent inversions in 10000 frames");
    assert!(inv > 1000, "{inv}");
}

fn mixed_run(seed: u64) -> Vec<(Duration, Side, Vec<u8>)> {
    let t0 = Instant::now();
    let mut wf = filter(
        seed,
        t0,
        &[
            (Param::Loss, Value::uniform(5.0, 2.0)),
            (Param::Delay, Value::normal(10.0, 9.0)),
            (Param::Dup, Value::fixed(5.0)),
            (Param::Noise, Value::fixed(100_000.0)),
            (Param::Bandwidth, Value::fixed(1_000_000.0)),
        ],
    );
    wf.set_fifo(false);
    let arrivals = (0..20_000u32).map(|i| {
        let side = if i % 3 == 0 { Side::Right } else { Side::Left };
        (
            t0 + Duration::from_micros(u64::from(i) * 300),
            side,
            frame(i, 64 + (i as usize % 1400)),
        )
    });
    simulate(&mut wf, arrivals, |_| {})
        .into_iter()
        .map(|d| (d.at - t0, d.to, d.bytes))
        .collect()
}

#[test]
fn same_seed_same_run() {
    let a = mixed_run(99);
    assert_eq!(a, mixed_run(99));
    assert_ne!(a, mixed_run(100));
}

#[test]
fn directions_are_independent() {
    let t0 = Instant::now();
    let mut wf = Wirefilter::new(24, t0);
    wf.set(Direction::LeftToRight, Param::Delay, Value::fixed(20.0));
    wf.set(Direction::RightToLeft, Param::Delay, Value::fixed(5.0));
    let out = simulate(
        &mut wf,
        vec![
            (t0, Side::Left, frame(0, 64)),
            (t0, Side::Right, frame(1, 64)),
        ],
        |_| {},
    );
    let got: HashMap<u32, (Duration, Side)> = out
        .iter()
        .map(|d| (seq_of(&d.bytes), (d.at - t0, d.to)))
        .collect();
    assert_eq!(got[&0], (Duration::from_millis(20), Side::Right));
    assert_eq!(got[&1], (Duration::from_millis(5), Side::Left));
}

#[test]
fn changes_take_effect_at_once_and_queue_is_counted() {
    let t0 = Instant::now();
    let mut wf = filter(25, t0, &[(Param::Delay, Value::fixed(100.0))]);
    wf.handle_frame(t0, Side::Left, &frame(0, 64));
    wf.set(Direction::Both, Param::Delay, Value::fixed(0.0));
    wf.set_fifo(false);
    wf.handle_frame(t0, Side::Left, &frame(1, 64));
    assert_eq!(wf.queued(), 2);
    let first = wf.poll_transmit_vec(t0).map(|(_, b)| seq_of(&b));
    assert_eq!(first, Some(1));
    assert_eq!(wf.poll_timeout(), Some(t0 + Duration::from_millis(100)));
}

mod robustness {
    use super::*;
    use proptest::prelude::*;

    fn any_value() -> impl Strategy<Value = Value> {
        (
            prop_oneof![Just(0.0), 0.0..200.0f64, 0.0..1e12f64, Just(1e300)],
            prop_oneof![Just(0.0), 0.0..100.0f64, Just(1e300)],
            any::<bool>(),
        )
            .prop_map(|(b, d, n)| {
                if n {
                    Value::normal(b, d)
                } else {
                    Value::uniform(b, d)
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_settings_and_frames_never_panic(
            settings in proptest::collection::vec((0usize..9, any_value()), 0..12),
            fifo in any::<bool>(),
            frames in proptest::collection::vec((0u64..5_000, any::<bool>(), 0usize..3000), 0..200),
        ) {
            let t0 = Instant::now();
            let mut wf = Wirefilter::new(5, t0);
            for (p, v) in settings {
                wf.set(Direction::Both, Param::ALL[p], v);
            }
            wf.set_fifo(fifo);
            let mut frames = frames;
            frames.sort_by_key(|f| f.0);
            let mut n_in = 0u64;
            for (us, left, len) in frames {
                let now = t0 + Duration::from_micros(us);
                let side = if left { Side::Left } else { Side::Right };
                wf.handle_frame(now, side, &vec![0x55; len]);
                n_in += 1;
                while wf.poll_transmit(now, |_, b| assert!(b.len() < 3000)) {}
            }
            let count = |s: filo_wirefilter::DirStats| {
                s.delivered + s.dropped_loss + s.dropped_mtu + s.dropped_capacity + s.queued
                    - s.duplicated
            };
            prop_assert_eq!(count(wf.stats(Side::Left)) + count(wf.stats(Side::Right)), n_in);
            let _ = wf.showinfo();
        }
    }
}

#[test]
fn the_fast_path_passes_only_when_nothing_could_change_the_frame() {
    use filo_wirefilter::{Direction, Param, Side, Value, Wirefilter};
    let t0 = std::time::Instant::now();
    let mut wf = Wirefilter::new(1, t0);
    assert!(wf.handle_frame_fast(t0, Side::Left, &[0u8; 100]));
    assert_eq!(wf.stats(Side::Left).delivered, 1);
    // A delay on L->R only: L->R frames queue, R->L still pass.
    wf.set(Direction::LeftToRight, Param::Delay, Value::fixed(10.0));
    assert!(!wf.handle_frame_fast(t0, Side::Left, &[1u8; 100]));
    assert!(wf.handle_frame_fast(t0, Side::Right, &[2u8; 100]));
    // With the delay removed, a queued frame keeps later ones queued too (order is kept).
    wf.set(Direction::LeftToRight, Param::Delay, Value::default());
    assert!(!wf.handle_frame_fast(t0, Side::Left, &[3u8; 100]));
    // An MTU drops through the slow path and counts.
    wf.set(Direction::RightToLeft, Param::Mtu, Value::fixed(50.0));
    assert!(!wf.handle_frame_fast(t0, Side::Right, &[4u8; 100]));
    assert_eq!(wf.stats(Side::Right).dropped_mtu, 1);
}
