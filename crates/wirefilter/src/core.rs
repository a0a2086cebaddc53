//! The link-emulation engine: frames and time in, delayed (or dropped, duplicated, corrupted)
//! frames out. See the crate documentation for the pipeline.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::markov::{Markov, MarkovError};
use crate::rng::Rng;
use crate::value::{Direction, Value};

/// Longest wait the engine computes for one frame (serialisation or delay); longer values are
/// clamped so that time arithmetic can never overflow.
pub const MAX_WAIT: Duration = Duration::from_secs(30 * 24 * 3600);
/// Most copies of one frame `dup` produces (vde loops forever at 100 %).
pub const MAX_COPIES: u32 = 64;
/// Buffers kept for reuse after delivery.
const POOL_LIMIT: usize = 1024;
/// Bytes in a MiB, the unit of `noise`.
const MIB: f64 = 1_048_576.0;

/// A side of the emulated cable. Frames from `Left` travel L->R and leave on `Right`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Left,
    Right,
}

impl Side {
    /// The opposite side, where frames from `self` are delivered.
    pub fn other(self) -> Side {
        match self {
            Side::Left => Side::Right,
            Side::Right => Side::Left,
        }
    }

    /// Index of the direction of frames *from* this side: 0 = L->R, 1 = R->L.
    fn dir(self) -> usize {
        match self {
            Side::Left => 0,
            Side::Right => 1,
        }
    }

    fn from_dir(dir: usize) -> Side {
        if dir == 0 {
            Side::Left
        } else {
            Side::Right
        }
    }
}

/// A settable parameter, with its unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Param {
    /// Percent of frames lost.
    Loss,
    /// Mean length (frames) of a loss burst; > 0 turns on the Gilbert model.
    LostBurst,
    /// Milliseconds added to every frame.
    Delay,
    /// Percent: a copy is added while a draw is below it.
    Dup,
    /// Bytes/s of the output line (serialisation delay at the output).
    Bandwidth,
    /// Bytes/s of the input (serialisation delay at the input; see [`Wirefilter::input_ready_at`]).
    Speed,
    /// Bytes a direction may hold; excess frames are dropped (`chanbufsize`).
    Capacity,
    /// Flipped bits per MiB.
    Noise,
    /// Longest frame, bytes; longer frames are dropped.
    Mtu,
}

impl Param {
    /// The range of a value's base when on, and its unit.
    fn range(self) -> (f64, f64, &'static str) {
        match self {
            Param::Loss | Param::Dup => (0.0, 100.0, "percent"),
            Param::LostBurst => (0.0, f64::MAX, "frames"),
            Param::Delay => (0.0, MAX_WAIT.as_millis() as f64, "ms"),
            Param::Bandwidth | Param::Speed => (1.0, f64::MAX, "bytes/s"),
            Param::Capacity => (1.0, f64::MAX, "bytes"),
            Param::Noise => (0.0, f64::MAX, "bits per MiB"),
            Param::Mtu => (1.0, 65536.0, "bytes"),
        }
    }

    /// Whether `v` is a sensible setting: a base in the parameter's range (0, off, too when
    /// `zero_is_off`; the console turns parameters off with it, the command line by leaving
    /// the option out). The error says the range.
    pub fn check(self, v: &Value, zero_is_off: bool) -> Result<(), String> {
        let (low, high, unit) = self.range();
        let ok = v.base.is_finite()
            && v.delta.is_finite()
            && ((v.base >= low && v.base <= high) || (zero_is_off && v.base == 0.0));
        if ok {
            return Ok(());
        }
        let off = if zero_is_off { " (0: off)" } else { "" };
        Err(if high == f64::MAX {
            format!("out of range: expected at least {low} {unit}{off}")
        } else {
            format!("out of range: expected {low} to {high} {unit}{off}")
        })
    }

    pub const ALL: [Param; 9] = [
        Param::Loss,
        Param::LostBurst,
        Param::Delay,
        Param::Dup,
        Param::Bandwidth,
        Param::Speed,
        Param::Capacity,
        Param::Noise,
        Param::Mtu,
    ];
}

/// The parameters of one direction (of one Markov node). Every one is off at zero.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Params {
    pub loss: Value,
    pub lostburst: Value,
    pub delay: Value,
    pub dup: Value,
    pub bandwidth: Value,
    pub speed: Value,
    pub capacity: Value,
    pub noise: Value,
    pub mtu: Value,
}

impl Params {
    pub fn get(&self, p: Param) -> Value {
        match p {
            Param::Loss => self.loss,
            Param::LostBurst => self.lostburst,
            Param::Delay => self.delay,
            Param::Dup => self.dup,
            Param::Bandwidth => self.bandwidth,
            Param::Speed => self.speed,
            Param::Capacity => self.capacity,
            Param::Noise => self.noise,
            Param::Mtu => self.mtu,
        }
    }

    pub fn get_mut(&mut self, p: Param) -> &mut Value {
        match p {
            Param::Loss => &mut self.loss,
            Param::LostBurst => &mut self.lostburst,
            Param::Delay => &mut self.delay,
            Param::Dup => &mut self.dup,
            Param::Bandwidth => &mut self.bandwidth,
            Param::Speed => &mut self.speed,
            Param::Capacity => &mut self.capacity,
            Param::Noise => &mut self.noise,
            Param::Mtu => &mut self.mtu,
        }
    }
}

/// Counters of one direction. Every frame in is eventually delivered, dropped (by reason) or
/// still queued; `duplicated` counts the extra copies made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirStats {
    pub frames_in: u64,
    pub bytes_in: u64,
    pub delivered: u64,
    pub bytes_out: u64,
    pub dropped_loss: u64,
    pub dropped_mtu: u64,
    pub dropped_capacity: u64,
    pub duplicated: u64,
    /// Frames delivered with at least one bit flipped by `noise`.
    pub corrupted: u64,
    /// Bits flipped by `noise`.
    pub bits_flipped: u64,
    /// Frames now waiting in the queue.
    pub queued: u64,
    /// Bytes now waiting in the queue (what `capacity` limits).
    pub queued_bytes: u64,
}

struct Pending {
    at: Instant,
    seq: u64,
    dir: usize,
    buf: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct DirState {
    /// The input is busy reading until then (`speed`).
    speed_busy: Instant,
    /// The output line is busy sending until then (`bandwidth`).
    band_busy: Instant,
    /// Latest delivery time given to a frame (for FIFO order).
    last_delivery: Instant,
    /// Gilbert model: in the bad (losing) state.
    burst_bad: bool,
    stats: DirStats,
}

impl DirState {
    fn new(now: Instant) -> Self {
        DirState {
            speed_busy: now,
            band_busy: now,
            last_delivery: now,
            burst_bad: false,
            stats: DirStats::default(),
        }
    }
}

/// The sans-IO wirefilter: two sides, two directions, one queue.
pub struct Wirefilter {
    rng: Rng,
    markov: Markov,
    fifo: bool,
    queue: BinaryHeap<Reverse<Pending>>,
    seq: u64,
    dirs: [DirState; 2],
    pool: Vec<Vec<u8>>,
}

/// Duration of `ms` milliseconds, rounded to the nanosecond and clamped to [`MAX_WAIT`].
fn millis(ms: f64) -> Duration {
    let ns = (ms * 1e6).round();
    if ns >= MAX_WAIT.as_nanos() as f64 {
        MAX_WAIT
    } else if ns > 0.0 {
        Duration::from_nanos(ns as u64)
    } else {
        Duration::ZERO
    }
}

/// `t + d`, saturating instead of panicking (unreachable with waits clamped to [`MAX_WAIT`]
/// unless a direction is kept busy for billions of years).
fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d).unwrap_or(t)
}

/// Time to move `len` bytes at `rate` bytes/s.
fn serialisation(len: usize, rate: f64) -> Duration {
    millis(len as f64 * 1000.0 / rate)
}

fn dirs_of(dir: Direction) -> &'static [usize] {
    match dir {
        Direction::Both => &[0, 1],
        Direction::LeftToRight => &[0],
        Direction::RightToLeft => &[1],
    }
}

impl Wirefilter {
    /// A filter with every parameter off (a perfect cable), FIFO order on (as vde without
    /// `--nofifo`), one Markov node; all randomness derives from `seed`.
    pub fn new(seed: u64, now: Instant) -> Self {
        Wirefilter {
            rng: Rng::new(seed),
            markov: Markov::new(now),
            fifo: true,
            queue: BinaryHeap::new(),
            seq: 0,
            dirs: [DirState::new(now), DirState::new(now)],
            pool: Vec::new(),
        }
    }

    /// Sets a parameter of Markov node 0 (the only node unless the model is resized).
    pub fn set(&mut self, dir: Direction, param: Param, value: Value) {
        // Node 0 always exists.
        let _ = self.set_node(0, dir, param, value);
    }

    /// Sets a parameter of one Markov node (the `[NODE]` suffix).
    pub fn set_node(
        &mut self,
        node: usize,
        dir: Direction,
        param: Param,
        value: Value,
    ) -> Result<(), MarkovError> {
        let n = self
            .markov
            .node_mut(node)
            .ok_or(MarkovError::NoSuchNode(node))?;
        for &d in dirs_of(dir) {
            *n.params[d].get_mut(param) = value;
        }
        Ok(())
    }

    /// The parameters of `node` for frames from `from`.
    pub fn params(&self, node: usize, from: Side) -> Option<&Params> {
        self.markov.node(node).map(|n| &n.params[from.dir()])
    }

    /// FIFO on: a frame is never delivered before an earlier one of the same direction.
    pub fn set_fifo(&mut self, fifo: bool) {
        self.fifo = fifo;
    }

    pub fn fifo(&self) -> bool {
        self.fifo
    }

    pub fn markov(&self) -> &Markov {
        &self.markov
    }

    pub fn markov_mut(&mut self) -> &mut Markov {
        &mut self.markov
    }

    /// Performs the Markov transitions due at `now` (also done by every other `now` call).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.markov.advance(now, &mut self.rng);
    }

    /// When the input of `from` is free again under `speed`: a daemon that stops reading
    /// that side until then gets back-pressure instead of queueing (vde blocks the input).
    pub fn input_ready_at(&self, from: Side) -> Instant {
        self.dirs[from.dir()].speed_busy
    }

    /// Like [`handle_frame`](Self::handle_frame), but returns true when the frame may go to
    /// the other side right now, unchanged and uncopied: its direction has no impairment that
    /// could delay, drop, duplicate or alter it, and nothing of that direction is queued (so
    /// order is kept). The frame is then counted as delivered. This is the daemon's fast path.
    pub fn handle_frame_fast(&mut self, now: Instant, from: Side, frame: &[u8]) -> bool {
        self.markov.advance(now, &mut self.rng);
        let d = from.dir();
        let p = self.markov.current_params(d);
        let transparent = p.loss.is_off()
            && p.delay.is_off()
            && p.dup.is_off()
            && p.bandwidth.is_off()
            && p.speed.is_off()
            && p.noise.is_off()
            && (p.mtu.base <= 0.0 || frame.len() as f64 <= p.mtu.base)
            && (p.capacity.base <= 0.0 || frame.len() as f64 <= p.capacity.base)
            && self.dirs[d].stats.queued == 0;
        if !transparent {
            self.handle_frame(now, from, frame);
            return false;
        }
        let st = &mut self.dirs[d].stats;
        let len = frame.len() as u64;
        st.frames_in += 1;
        st.bytes_in += len;
        st.delivered += 1;
        st.bytes_out += len;
        true
    }

    /// Takes one frame arriving at `now` on side `from`; it is copied into the queue, or
    /// dropped and counted.
    pub fn handle_frame(&mut self, now: Instant, from: Side, frame: &[u8]) {
        self.markov.advance(now, &mut self.rng);
        let d = from.dir();
        let p = *self.markov.current_params(d);
        let len = frame.len();
        let fifo = self.fifo;
        let rng = &mut self.rng;
        let ds = &mut self.dirs[d];
        ds.stats.frames_in += 1;
        ds.stats.bytes_in += len as u64;

        // 1. MTU (the base value; a random MTU makes no sense).
        if p.mtu.base > 0.0 && len as f64 > p.mtu.base {
            ds.stats.dropped_mtu += 1;
            return;
        }

        // 2. Loss, Gilbert model when lostburst > 0.
        let loss = (p.loss.sample(rng) / 100.0).min(1.0);
        let lost = if p.lostburst.is_off() {
            loss > 0.0 && rng.next_f64() < loss
        } else {
            let burst = p.lostburst.sample(rng).max(1.0);
            if loss >= 1.0 {
                ds.burst_bad = true;
            } else if ds.burst_bad {
                if rng.next_f64() < 1.0 / burst {
                    ds.burst_bad = false;
                }
            } else if loss > 0.0 && rng.next_f64() < loss / (burst * (1.0 - loss)) {
                ds.burst_bad = true;
            }
            ds.burst_bad
        };
        if lost {
            ds.stats.dropped_loss += 1;
            return;
        }

        // 3. Duplication: one more copy while a draw is below dup.
        let mut copies = 1;
        if !p.dup.is_off() {
            let dup = (p.dup.sample(rng) / 100.0).min(1.0);
            while copies < MAX_COPIES && rng.next_f64() < dup {
                copies += 1;
            }
        }

        // 4. Speed: the input reads one frame at a time (once per input frame).
        let mut ready = now;
        let speed = p.speed.sample(rng);
        if speed > 0.0 {
            let start = ready.max(ds.speed_busy);
            ready = later(start, serialisation(len, speed));
            ds.speed_busy = ready;
        }

        for copy in 0..copies {
            if copy > 0 {
                ds.stats.duplicated += 1;
            }
            // 5. Capacity: bytes held by this direction.
            if p.capacity.base > 0.0
                && (ds.stats.queued_bytes + len as u64) as f64 > p.capacity.base
            {
                ds.stats.dropped_capacity += 1;
                continue;
            }
            // 6. Bandwidth: the output line sends one frame at a time.
            let mut at = ready;
            let band = p.bandwidth.sample(rng);
            if band > 0.0 {
                let start = at.max(ds.band_busy);
                at = later(start, serialisation(len, band));
                ds.band_busy = at;
            }
            // 7. Delay (+ jitter).
            at = later(at, millis(p.delay.sample(rng)));
            if fifo {
                at = at.max(ds.last_delivery);
            }
            ds.last_delivery = ds.last_delivery.max(at);

            let mut buf = self.pool.pop().unwrap_or_default();
            buf.clear();
            buf.extend_from_slice(frame);
            ds.stats.queued += 1;
            ds.stats.queued_bytes += len as u64;
            self.seq += 1;
            self.queue.push(Reverse(Pending {
                at,
                seq: self.seq,
                dir: d,
                buf,
            }));
        }
    }

    /// Delivers one frame due at `now`, if any: calls `send(to, bytes)` and returns true.
    /// Noise is applied here, on output. Loop until it returns false. The frame's buffer goes
    /// back to an internal pool, so a steady flow allocates nothing.
    pub fn poll_transmit<F: FnOnce(Side, &[u8])>(&mut self, now: Instant, send: F) -> bool {
        self.markov.advance(now, &mut self.rng);
        match self.queue.peek() {
            Some(Reverse(p)) if p.at <= now => {}
            _ => return false,
        }
        let Some(Reverse(mut p)) = self.queue.pop() else {
            return false;
        };
        let d = p.dir;
        let noise = self.markov.current_params(d).noise;
        let ds = &mut self.dirs[d];
        let len = p.buf.len();
        if !noise.is_off() && len > 0 {
            let per_mib = noise.sample(&mut self.rng);
            let bits = len as u64 * 8;
            let flips = self.rng.poisson(len as f64 * per_mib / MIB).min(bits);
            for _ in 0..flips {
                let bit = self.rng.below(bits);
                p.buf[(bit / 8) as usize] ^= 1 << (bit % 8);
            }
            if flips > 0 {
                ds.stats.corrupted += 1;
                ds.stats.bits_flipped += flips;
            }
        }
        ds.stats.delivered += 1;
        ds.stats.bytes_out += len as u64;
        ds.stats.queued -= 1;
        ds.stats.queued_bytes -= len as u64;
        send(Side::from_dir(d).other(), &p.buf);
        if self.pool.len() < POOL_LIMIT {
            self.pool.push(p.buf);
        }
        true
    }

    /// [`poll_transmit`](Self::poll_transmit) returning an owned copy (convenient in tests).
    pub fn poll_transmit_vec(&mut self, now: Instant) -> Option<(Side, Vec<u8>)> {
        let mut out = None;
        self.poll_transmit(now, |to, bytes| out = Some((to, bytes.to_vec())));
        out
    }

    /// The earliest time something happens: a queued delivery or a Markov transition.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let q = self.queue.peek().map(|Reverse(p)| p.at);
        match (q, self.markov.next_change()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Counters of the direction of frames from `from`.
    pub fn stats(&self, from: Side) -> DirStats {
        self.dirs[from.dir()].stats
    }

    /// Frames waiting in the queue, both directions.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// `showinfo` for the current Markov node.
    pub fn showinfo(&self) -> String {
        self.showinfo_node(self.markov.current())
            .unwrap_or_default()
    }

    /// `showinfo` for Markov node `node`; `None` if there is no such node.
    ///
    /// Format (every line ends with `\n`; both directions are always printed, L->R first):
    /// ```text
    /// WireFilter: bidirectional
    /// Node 0 "name" (0,..,1) Markov-time 100 ms     (only with more than one node)
    /// Loss   L->R 10+0U   R->L 5+2U
    /// LostBurst L->R 0+0U   R->L 0+0U
    /// Delay  L->R 20+5N   R->L 0+0U
    /// Dup    L->R 0+0U   R->L 0+0U
    /// Bandw  L->R 131072+0U   R->L 0+0U
    /// Speed  L->R 0+0U   R->L 0+0U
    /// Cap.   L->R 0   R->L 0
    /// Noise  L->R 0+0U   R->L 0+0U
    /// MTU    L->R 1000   R->L 1000
    /// Current Delay Queue size:   L->R 0   R->L 0
    /// Fifoness TRUE
    /// Waiting packets in delay queues 0
    /// Counters L->R in 10/640 out 9/576 dropped loss 1 mtu 0 capacity 0 dup 0 corrupted 0 bits 0 queued 0
    /// Counters R->L in 0/0 out 0/0 dropped loss 0 mtu 0 capacity 0 dup 0 corrupted 0 bits 0 queued 0
    /// ```
    /// `Cap.` and `MTU` show the base value only (the only part used); queue sizes are bytes;
    /// `in`/`out` are frames/bytes.
    pub fn showinfo_node(&self, node: usize) -> Option<String> {
        let n = self.markov.node(node)?;
        let mut s = String::new();
        let _ = writeln!(s, "WireFilter: bidirectional");
        if self.markov.num_nodes() > 1 {
            let _ = writeln!(
                s,
                "Node {} \"{}\" (0,..,{}) Markov-time {} ms",
                node,
                crate::console::sanitize(&n.name),
                self.markov.num_nodes() - 1,
                self.markov.period().as_secs_f64() * 1000.0
            );
        }
        let [lr, rl] = &n.params;
        for (label, param) in [
            ("Loss", Param::Loss),
            ("LostBurst", Param::LostBurst),
            ("Delay", Param::Delay),
            ("Dup", Param::Dup),
            ("Bandw", Param::Bandwidth),
            ("Speed", Param::Speed),
        ] {
            let _ = writeln!(
                s,
                "{label:<6} L->R {}   R->L {}",
                lr.get(param),
                rl.get(param)
            );
        }
        let _ = writeln!(
            s,
            "Cap.   L->R {}   R->L {}",
            lr.capacity.base, rl.capacity.base
        );
        let _ = writeln!(s, "Noise  L->R {}   R->L {}", lr.noise, rl.noise);
        let _ = writeln!(s, "MTU    L->R {}   R->L {}", lr.mtu.base, rl.mtu.base);
        let _ = writeln!(
            s,
            "Current Delay Queue size:   L->R {}   R->L {}",
            self.dirs[0].stats.queued_bytes, self.dirs[1].stats.queued_bytes
        );
        let _ = writeln!(s, "Fifoness {}", if self.fifo { "TRUE" } else { "FALSE" });
        let _ = writeln!(s, "Waiting packets in delay queues {}", self.queue.len());
        for (name, ds) in [("L->R", &self.dirs[0]), ("R->L", &self.dirs[1])] {
            let c = &ds.stats;
            let _ = writeln!(
                s,
                "Counters {name} in {}/{} out {}/{} dropped loss {} mtu {} capacity {} dup {} corrupted {} bits {} queued {}",
                c.frames_in,
                c.bytes_in,
                c.delivered,
                c.bytes_out,
                c.dropped_loss,
                c.dropped_mtu,
                c.dropped_capacity,
                c.duplicated,
                c.corrupted,
                c.bits_flipped,
                c.queued
            );
        }
        Some(s)
    }
}
