//! The ring every member writes and reads: a multi-producer, multi-reader sequence of slots
//! (the LMAX Disruptor's shape) in the shared region.
//!
//! Senders claim sequence numbers with a compare-and-swap on `head`, write each frame once
//! into slot `seq % nslots` with the mask of its receivers, and publish it by storing `seq`
//! into the slot's sequence word (it holds `seq | WRITING` while the bytes change). Each
//! member reads with a private cursor, copies the frames whose mask has its bit and checks
//! the slot's sequence word again after the copy (a seqlock): a frame overwritten while it
//! was copied is dropped and counted, never delivered torn.
//!
//! Lossless buses gate senders on the slowest member's published cursor (a bounded wait; a
//! member that does not move for the bus's timeout is evicted). Lossy buses let senders
//! overwrite; a reader that was lapped counts the frames it skipped.
//!
//! Everything read from the region is untrusted: `head`, sequence words, lengths, masks,
//! member states and cursors may hold any value a hostile member wrote. A bad value makes
//! this member drop and count, or resynchronise its cursor, never index out of the region
//! (offsets come from the member's private [`Geometry`]) and never wait without a bound.
//!
//! Known limit: on a lossy bus, a sender stalled in the middle of copying a frame for longer
//! than `SLOT_WAIT` (10 ms) while others lap the ring may have its slot taken over; its late
//! bytes can then land in the newer frame after that frame's sender published it, and a reader
//! may receive that frame corrupted (never out of bounds: only bytes inside the slot change).

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::layout::*;
use crate::policy::{Members, Policy, PolicyKind};
use crate::sys::{self, Region};

/// How long a reader waits for a claimed slot whose sender stopped before publishing it
/// (a sender killed in the middle of a write) before skipping it.
const STUCK: Duration = Duration::from_millis(100);
/// How long a sender waits for another sender still writing the same slot one lap earlier.
const SLOT_WAIT: Duration = Duration::from_millis(10);
/// How often a busy sender signals every member regardless of its sleeping flag.
const KICK: Duration = Duration::from_millis(50);

/// Bytes of a frame copied out of its slot for the policy: a virtio-net header and an
/// Ethernet header.
const HEAD_COPY: usize = filo_vnl::wire::vnet::HEADER_LEN + 14;

/// A bus's settings as its creator chose them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusParams {
    pub geometry: Geometry,
    pub policy: PolicyKind,
    pub lossless: bool,
    /// Lossless buses: how long a member may stop reading before it is evicted.
    pub timeout: Duration,
    /// Frames carry a virtio-net header first (`+vnet` framing: TCP super-frames); only
    /// members that speak it may join.
    pub vnet: bool,
}

impl Default for BusParams {
    fn default() -> Self {
        BusParams {
            geometry: Geometry {
                nslots: DEFAULT_SLOTS,
                slot_size: DEFAULT_SLOT_SIZE,
            },
            policy: PolicyKind::Hub,
            lossless: false,
            timeout: Duration::from_secs(2),
            vnet: false,
        }
    }
}

/// Writes a new bus's header into a zeroed region.
pub fn init(region: &Region, params: &BusParams) {
    let g = params.geometry;
    region.store32(H_VERSION, VERSION, Ordering::Relaxed);
    region.store32(H_POLICY, params.policy as u32, Ordering::Relaxed);
    region.store32(
        H_FLAGS,
        if params.lossless { FLAG_LOSSLESS } else { 0 } | if params.vnet { FLAG_VNET } else { 0 },
        Ordering::Relaxed,
    );
    region.store32(H_NSLOTS, g.nslots, Ordering::Relaxed);
    region.store32(H_SLOT_SIZE, g.slot_size, Ordering::Relaxed);
    region.store32(H_MEMBERS, MAX_MEMBERS as u32, Ordering::Relaxed);
    let ms = u32::try_from(params.timeout.as_millis()).unwrap_or(u32::MAX);
    region.store32(H_TIMEOUT_MS, ms, Ordering::Relaxed);
    // Sequence numbers start one lap in; slot i holds i, as if lap 0 had been read.
    for seq in 0..u64::from(g.nslots) {
        region.store64(g.slot(seq) + S_SEQ, seq, Ordering::Relaxed);
    }
    region.store64(H_HEAD, u64::from(g.nslots), Ordering::Relaxed);
    region.store64(H_MAGIC, MAGIC, Ordering::Release);
}

/// Reads a bus's settings when joining; the geometry is checked against the mapping.
pub fn read_params(region: &Region) -> Result<BusParams, String> {
    let geometry = Geometry::from_header(region)?;
    let policy = region.load32(H_POLICY, Ordering::Relaxed);
    let policy = PolicyKind::from_u32(policy).ok_or(format!("unknown bus policy {policy}"))?;
    let flags = region.load32(H_FLAGS, Ordering::Relaxed);
    let lossless = flags & FLAG_LOSSLESS != 0;
    let vnet = flags & FLAG_VNET != 0;
    let ms = region
        .load32(H_TIMEOUT_MS, Ordering::Relaxed)
        .clamp(10, 3_600_000);
    Ok(BusParams {
        geometry,
        policy,
        lossless,
        timeout: Duration::from_millis(ms.into()),
        vnet,
    })
}

/// A member's counters (mirrored into its record in the region for `filo ipn stat`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MemberStats {
    pub frames_in: u64,
    pub frames_out: u64,
    /// Frames this member skipped: lapped on a lossy bus, overwritten while copied, or
    /// abandoned by a sender that died mid-write.
    pub lost: u64,
    /// Times this member was evicted for not reading.
    pub evicted: u64,
    /// Slots with impossible contents (a length beyond the slot), dropped.
    pub bad: u64,
    /// Members this member evicted (lossless) or found dead.
    pub evicted_others: u64,
}

/// What one receive attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recv {
    /// A frame of this length was copied into the buffer.
    Frame(usize),
    /// Nothing published after the cursor: the member may sleep.
    Idle,
    /// A sender claimed the next slot but has not published it yet: try again soon.
    Pending,
}

/// The descriptors a member uses besides the region: its lock description (to test other
/// members' liveness) and every member's eventfd (to wake them). Absent in unit tests.
pub struct Fds {
    pub lock: OwnedFd,
    pub wake: Arc<Vec<OwnedFd>>,
}

/// One member of a bus.
pub struct Member {
    region: Arc<Region>,
    geo: Geometry,
    params: BusParams,
    index: usize,
    generation: u32,
    cursor: u64,
    policy: Box<dyn Policy>,
    members: Members,
    epoch: u32,
    gate: u64,
    stuck: Option<(u64, Instant)>,
    /// Unpublished slots before this sequence number are skipped at once (a stall passed).
    skip_until: u64,
    stats: MemberStats,
    fds: Option<Fds>,
    last_kick: Instant,
    batches: u32,
    /// Wake-ups sent (each one a write to an eventfd).
    pub wakeups: u64,
    /// Receivers of frames sent in place and not woken yet, with the first and the next
    /// sequence number ([`Member::flush_wakes`]).
    unwoken: Option<(u64, u64, u64)>,
}

impl Member {
    /// Joins as member `index` (the caller holds that member's lock).
    pub fn join(
        region: Arc<Region>,
        params: BusParams,
        index: usize,
        tag: u32,
        fds: Option<Fds>,
    ) -> Member {
        let m = member(index);
        let generation = region
            .load32(m + M_GENERATION, Ordering::Relaxed)
            .wrapping_add(1);
        let cursor = clamp_head(&region);
        region.store32(m + M_GENERATION, generation, Ordering::Relaxed);
        region.store32(m + M_PID, sys::pid(), Ordering::Relaxed);
        region.store32(m + M_TAG, tag, Ordering::Relaxed);
        // A new member sleeps until woken: its owner may poll the eventfd before it ever
        // receives.
        region.store32(m + M_SLEEPING, 1, Ordering::Relaxed);
        for off in [M_FRAMES_IN, M_FRAMES_OUT, M_LOST, M_EVICTED, M_BAD] {
            region.store64(m + off, 0, Ordering::Relaxed);
        }
        region.store64(m + M_CURSOR, cursor, Ordering::Release);
        region.store32(m + M_STATE, STATE_ACTIVE, Ordering::SeqCst);
        region.add32(H_EPOCH, 1);
        if let Some(f) = &fds {
            if let Some(efd) = f.wake.get(index) {
                sys::eventfd_drain(efd.as_raw_fd());
            }
        }
        let mut member = Member {
            region,
            geo: params.geometry,
            params,
            index,
            generation,
            cursor,
            policy: params.policy.build(),
            members: Members::default(),
            epoch: 0,
            gate: cursor,
            stuck: None,
            skip_until: 0,
            stats: MemberStats::default(),
            fds,
            last_kick: Instant::now(),
            batches: 0,
            wakeups: 0,
            unwoken: None,
        };
        member.refresh_members();
        member
    }

    pub fn index(&self) -> usize {
        self.index
    }

    pub fn stats(&self) -> MemberStats {
        self.stats
    }

    pub fn params(&self) -> &BusParams {
        &self.params
    }

    fn rec(&self) -> usize {
        member(self.index)
    }

    /// The Ethernet frame in a slot's bytes, after the virtio-net header on a `vnet` bus
    /// (empty when the bytes are shorter than the header: the policy floods it).
    fn ethernet<'a>(&self, bytes: &'a [u8]) -> &'a [u8] {
        let at = if self.params.vnet {
            filo_vnl::wire::vnet::HEADER_LEN
        } else {
            0
        };
        bytes.get(at..).unwrap_or(&[])
    }

    /// Rebuilds the member list from the region (when the epoch moved).
    fn refresh_members(&mut self) {
        let r = &self.region;
        self.epoch = r.load32(H_EPOCH, Ordering::Acquire);
        let mut m = Members::default();
        for i in 0..MAX_MEMBERS {
            let rec = member(i);
            // Free and evicted members receive nothing; any other value (active, or garbage
            // a hostile member wrote) does, so the member sees it and repairs its record.
            let state = r.load32(rec + M_STATE, Ordering::Acquire);
            if state != STATE_FREE && state != STATE_EVICTED {
                m.active |= 1 << i;
            }
            m.generation[i] = r.load32(rec + M_GENERATION, Ordering::Relaxed);
            m.tag[i] = r.load32(rec + M_TAG, Ordering::Relaxed);
        }
        self.members = m;
    }

    fn maybe_refresh(&mut self) {
        if self.region.load32(H_EPOCH, Ordering::Acquire) != self.epoch {
            self.refresh_members();
        }
    }

    /// Sends frames from the front of `frames`; returns how many were taken (frames no
    /// member receives count as sent). `EMSGSIZE` when the first frame exceeds a slot.
    pub fn send_batch(&mut self, frames: &[&[u8]]) -> io::Result<usize> {
        self.maybe_refresh();
        let slot_size = self.geo.slot_size as usize;
        let max = (self.geo.nslots as usize / 2).max(1);
        let mut masks = [0u64; 64];
        let mut n = 0;
        for frame in frames.iter().take(max.min(masks.len())) {
            if frame.len() > slot_size {
                break;
            }
            let mask = self
                .policy
                .receivers(self.ethernet(frame), self.index, &self.members)
                & self.members.active
                & !(1u64 << self.index);
            masks[n] = mask;
            n += 1;
        }
        if n == 0 {
            return match frames.first() {
                Some(_) => Err(io::Error::from_raw_os_error(libc::EMSGSIZE)),
                None => Ok(0),
            };
        }
        let wanted = masks[..n].iter().filter(|m| **m != 0).count() as u64;
        let mut all = 0u64;
        if wanted > 0 {
            let start = self.claim(wanted);
            for seq in start..start + wanted {
                let off = self.geo.slot(seq);
                self.region.prefetch_write(off);
                self.region.prefetch_write(off + SLOT_HEADER);
            }
            let mut seq = start;
            for (frame, &mask) in frames.iter().zip(&masks[..n]) {
                if mask == 0 {
                    continue;
                }
                self.write_slot(seq, frame, mask);
                all |= mask;
                seq += 1;
            }
            fence(Ordering::SeqCst);
            self.wake(all, start, seq);
        }
        self.stats.frames_out = self.stats.frames_out.saturating_add(n as u64);
        self.region.add64(self.rec() + M_FRAMES_OUT, n as u64);
        Ok(n)
    }

    /// Claims `k` consecutive sequence numbers; on a lossless bus waits (bounded) until the
    /// slowest member has read the slots they reuse.
    fn claim(&mut self, k: u64) -> u64 {
        let n = u64::from(self.geo.nslots);
        loop {
            let h = self.region.load64(H_HEAD, Ordering::Acquire);
            if h >= SEQ_LIMIT {
                // Garbage: restart the sequence (readers resynchronise on a head behind them).
                let _ = self.region.cas64(H_HEAD, h, n);
                continue;
            }
            if self.params.lossless && h + k > self.gate + n {
                self.wait_gate(h + k);
            }
            if self.region.cas64(H_HEAD, h, h + k).is_ok() {
                return h;
            }
            std::hint::spin_loop();
        }
    }

    /// The lowest cursor among active members but this one, and the members below `below`.
    fn scan_gate(&mut self, head: u64, below: u64) -> (u64, u64) {
        let mut gate = head;
        let mut laggards = 0u64;
        for i in 0..MAX_MEMBERS {
            if i == self.index || self.members.active & (1 << i) == 0 {
                continue;
            }
            let rec = member(i);
            if self.region.load32(rec + M_STATE, Ordering::Acquire) != STATE_ACTIVE {
                continue;
            }
            // A cursor ahead of head is garbage and gates nothing.
            let c = self
                .region
                .load64(rec + M_CURSOR, Ordering::Acquire)
                .min(head);
            gate = gate.min(c);
            if c < below {
                laggards |= 1 << i;
            }
        }
        (gate, laggards)
    }

    fn wait_gate(&mut self, target: u64) {
        let n = u64::from(self.geo.nslots);
        let started = Instant::now();
        let mut spins = 0u32;
        let mut woke = false;
        let mut last_signal = started;
        loop {
            let head = self.region.load64(H_HEAD, Ordering::Acquire).max(target);
            let below = target.saturating_sub(n);
            let (gate, laggards) = self.scan_gate(head, below);
            self.gate = gate;
            if target <= gate + n || laggards == 0 {
                return;
            }
            if !woke {
                // A sleeping member that none of the recent frames was for has not moved its
                // cursor: wake it to skip them.
                self.wake_sleepers(laggards);
                woke = true;
            }
            if started.elapsed() > self.params.timeout {
                self.evict(laggards);
                self.refresh_members();
                continue;
            }
            // Whatever its sleeping flag says (a wake-up lost to a race or to garbage), a
            // laggard blocked on its eventfd is signalled every millisecond the gate stays
            // shut: a stall costs a millisecond, not the eviction timeout.
            if last_signal.elapsed() > Duration::from_millis(1) {
                self.signal(laggards);
                last_signal = Instant::now();
            }
            spins += 1;
            if spins < 1000 {
                std::hint::spin_loop();
            } else if spins < 20_000 {
                // The laggard is probably draining on another core: stay close.
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }

    /// Evicts members that stopped reading (or frees them if their process is gone).
    fn evict(&mut self, laggards: u64) {
        for i in 0..MAX_MEMBERS {
            if laggards & (1 << i) == 0 {
                continue;
            }
            let rec = member(i);
            let dead = self.member_dead(i);
            let next = if dead { STATE_FREE } else { STATE_EVICTED };
            if self.region.cas32(rec + M_STATE, STATE_ACTIVE, next) {
                self.region.add32(H_EPOCH, 1);
                self.stats.evicted_others = self.stats.evicted_others.saturating_add(1);
                if dead {
                    self.region.add64(H_RECLAIMED, 1);
                    tracing::info!("ipn: member {i} is gone; its slot is free");
                } else {
                    self.region.add64(H_EVICTIONS, 1);
                    tracing::warn!(
                        "ipn: member {i} (pid {}) has not read for {:?}: evicted",
                        self.region.load32(rec + M_PID, Ordering::Relaxed),
                        self.params.timeout
                    );
                }
            }
        }
    }

    /// Whether member `i`'s process is gone (its lock is free). Without descriptors (unit
    /// tests) every member is alive.
    pub fn member_dead(&self, i: usize) -> bool {
        match &self.fds {
            Some(f) => matches!(sys::byte_locked(f.lock.as_fd(), i as u64), Ok(false)),
            None => false,
        }
    }

    fn wake_sleepers(&mut self, mask: u64) {
        for i in 0..MAX_MEMBERS {
            if mask & (1 << i) != 0 {
                self.wake_one(i);
            }
        }
    }

    fn wake_one(&mut self, i: usize) {
        let flag = member(i) + M_SLEEPING;
        // Any non-zero flag counts as sleeping (garbage there must not silence a member).
        let was = self.region.load32(flag, Ordering::SeqCst);
        if was != 0 && self.region.cas32(flag, was, 0) {
            self.wakeups += 1;
            if let Some(efd) = self.fds.as_ref().and_then(|f| f.wake.get(i)) {
                sys::eventfd_signal(efd.as_raw_fd());
            }
        }
    }

    /// Wakes the sleeping receivers of frames `start..end`; every quarter ring also the
    /// sleeping members none of them was for, so their cursors keep up.
    ///
    /// At most every [`KICK`] (checked every 8 batches) it also signals every member
    /// whose record is not free, whatever its sleeping flag says: a member whose flag or
    /// state was overwritten with garbage (or that was evicted) would otherwise never be
    /// woken to repair it, and would stay deaf.
    fn wake(&mut self, receivers: u64, start: u64, end: u64) {
        let quarter = (u64::from(self.geo.nslots) / 4).max(1);
        let mut mask = receivers;
        if start / quarter != end / quarter {
            mask |= self.members.active & !(1 << self.index);
        }
        self.batches = self.batches.wrapping_add(1);
        if self.batches.is_multiple_of(8) && self.last_kick.elapsed() > KICK {
            self.last_kick = Instant::now();
            self.kick_all();
        }
        self.wake_sleepers(mask);
    }

    fn kick_all(&mut self) {
        let mut mask = 0u64;
        for i in 0..MAX_MEMBERS {
            if i != self.index
                && self.region.load32(member(i) + M_STATE, Ordering::Relaxed) != STATE_FREE
            {
                mask |= 1 << i;
            }
        }
        self.signal(mask);
    }

    /// Signals the eventfds of `mask`'s members, whatever their sleeping flags say.
    fn signal(&mut self, mask: u64) {
        let Some(f) = &self.fds else { return };
        for i in 0..MAX_MEMBERS {
            if mask & (1 << i) != 0 {
                if let Some(efd) = f.wake.get(i) {
                    sys::eventfd_signal(efd.as_raw_fd());
                }
            }
        }
    }

    fn write_slot(&mut self, seq: u64, frame: &[u8], mask: u64) {
        let Some(off) = self.own_slot(seq) else {
            return;
        };
        let r = &self.region;
        r.store32(off + S_LEN, frame.len() as u32, Ordering::Relaxed);
        r.store32(off + S_SENDER, self.index as u32, Ordering::Relaxed);
        r.store64(off + S_RECEIVERS, mask, Ordering::Relaxed);
        r.write(off + SLOT_HEADER, frame);
        // Published with a plain store: the slot was ours since the compare-and-swap in
        // own_slot (only a sender that stalled past SLOT_WAIT can lose it, see the module's
        // limit).
        r.store64(off + S_SEQ, seq, Ordering::Release);
    }

    /// Marks the slot of `seq` as being written (`seq | WRITING`) and returns its offset;
    /// None (the frame is dropped and counted) when a later lap already holds it.
    fn own_slot(&mut self, seq: u64) -> Option<usize> {
        let off = self.geo.slot(seq);
        let r = &self.region;
        let mut v = r.load64(off + S_SEQ, Ordering::Acquire);
        let mut since: Option<Instant> = None;
        loop {
            let vs = v & !WRITING;
            if vs > seq && vs < SEQ_LIMIT {
                // A later lap already holds the slot (we were preempted for a whole lap on a
                // lossy bus): this frame is dropped.
                self.stats.lost = self.stats.lost.saturating_add(1);
                return None;
            }
            if v == (seq.wrapping_sub(u64::from(self.geo.nslots)) | WRITING) {
                // The sender of the previous lap is still copying: wait for it a little,
                // then take the slot anyway (it died or stalled). Any other value is
                // garbage and is overwritten at once.
                let t = *since.get_or_insert_with(Instant::now);
                if t.elapsed() < SLOT_WAIT {
                    std::hint::spin_loop();
                    v = r.load64(off + S_SEQ, Ordering::Acquire);
                    continue;
                }
            }
            match r.cas64(off + S_SEQ, v, seq | WRITING) {
                Ok(_) => break,
                Err(found) => v = found,
            }
        }
        fence(Ordering::Release);
        Some(off)
    }

    /// Wakes the sleeping receivers of the frames sent in place since the last call: a run
    /// of [`Member::send_in_place`] (a tap read until it has nothing) costs one wake-up per
    /// receiver, as a batch does. Callers must call it when their run ends.
    pub fn flush_wakes(&mut self) {
        if let Some((mask, start, end)) = self.unwoken.take() {
            fence(Ordering::SeqCst);
            self.wake(mask, start, end);
        }
    }

    /// Sends one frame written in place: claims the next slot, marks it as being written and
    /// lets `fill(region, offset, capacity)` put the frame's bytes straight into it (a tap's
    /// `read` into the ring, see [`Region::read_from_fd`]), then publishes it with the length
    /// `fill` returned. Readers never see the slot before it is published: its sequence word
    /// holds `seq | WRITING` meanwhile, and they wait or skip.
    ///
    /// A claimed slot is always published: when `fill` fails (`WouldBlock`: the tap had
    /// nothing) or returns a length outside `sizes` or beyond the slot, it is published empty,
    /// for nobody. Returns `Ok(Some(len))` for a frame sent, `Ok(None)` for a length refused
    /// (counted as bad), or `fill`'s error. `WouldBlock` too when a later lap took the slot.
    /// Receivers are woken by [`Member::flush_wakes`], not here.
    pub fn send_in_place(
        &mut self,
        sizes: std::ops::RangeInclusive<usize>,
        fill: impl FnOnce(&Region, usize, usize) -> io::Result<usize>,
    ) -> io::Result<Option<usize>> {
        self.maybe_refresh();
        let cap = (self.geo.slot_size as usize).min(sizes.end().saturating_add(1));
        let seq = self.claim(1);
        let Some(off) = self.own_slot(seq) else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        self.region.prefetch_write(off + SLOT_HEADER);
        let filled = fill(&self.region, off + SLOT_HEADER, cap);
        let len = match &filled {
            Ok(n) if *n <= cap && sizes.contains(n) => Some(*n),
            Ok(_) => {
                self.stats.bad = self.stats.bad.saturating_add(1);
                self.region.add64(self.rec() + M_BAD, 1);
                None
            }
            Err(_) => None,
        };
        // The receivers come from a private copy of the frame's first bytes (the slot is ours,
        // but any member can write into the region).
        let mut head = [0u8; HEAD_COPY];
        let mask = match len {
            Some(n) => {
                let h = &mut head[..n.min(HEAD_COPY)];
                self.region.read(off + SLOT_HEADER, h);
                let frame = self.ethernet(h);
                self.policy.receivers(frame, self.index, &self.members)
                    & self.members.active
                    & !(1u64 << self.index)
            }
            None => 0,
        };
        let r = &self.region;
        r.store32(off + S_LEN, len.unwrap_or(0) as u32, Ordering::Relaxed);
        r.store32(off + S_SENDER, self.index as u32, Ordering::Relaxed);
        r.store64(off + S_RECEIVERS, mask, Ordering::Relaxed);
        r.store64(off + S_SEQ, seq, Ordering::Release);
        let w = self.unwoken.get_or_insert((0, seq, seq));
        w.0 |= mask;
        w.2 = seq + 1;
        let n = filled?;
        if len.is_some() {
            self.stats.frames_out = self.stats.frames_out.saturating_add(1);
            self.region.add64(self.rec() + M_FRAMES_OUT, 1);
        }
        Ok(len.map(|_| n))
    }

    /// Receives the next frame for this member into `buf`.
    pub fn recv(&mut self, buf: &mut [u8]) -> Recv {
        let cap = buf.len();
        self.recv_with(cap, |region, off, len| {
            region.read(off, &mut buf[..len]);
        })
    }

    /// Receives the next frame for this member without copying it into a buffer here:
    /// `deliver(region, offset, len)` takes the bytes straight from the slot (a tap's `write`,
    /// see [`Region::write_to_fd`]). The length is read once from the slot and checked against
    /// the slot size and `cap` before `deliver` sees it; a bad one is dropped and counted. The
    /// bytes may change while `deliver` runs (a hostile member, or a lossy lap): the sequence
    /// word is checked afterwards and a frame overwritten meanwhile counts as lost, though
    /// `deliver` already had it (and may be called again for the next frame).
    pub fn recv_with(
        &mut self,
        cap: usize,
        mut deliver: impl FnMut(&Region, usize, usize),
    ) -> Recv {
        let rec = self.rec();
        if self.region.load32(rec + M_STATE, Ordering::Relaxed) != STATE_ACTIVE {
            self.rejoin();
        }
        // The policy learns senders by generation: know the current ones.
        self.maybe_refresh();
        let n = u64::from(self.geo.nslots);
        // Bounded: at most two laps of slots per call.
        for _ in 0..(2 * n + 2) {
            let off = self.geo.slot(self.cursor);
            let v = self.region.load64(off + S_SEQ, Ordering::Acquire);
            if v == self.cursor {
                let receivers = self.region.load64(off + S_RECEIVERS, Ordering::Relaxed);
                if receivers & (1 << self.index) == 0 {
                    self.advance();
                    continue;
                }
                let len = self.region.load32(off + S_LEN, Ordering::Relaxed) as usize;
                let sender = self.region.load32(off + S_SENDER, Ordering::Relaxed) as usize;
                if len > self.geo.slot_size as usize || len > cap {
                    self.stats.bad = self.stats.bad.saturating_add(1);
                    self.region.add64(rec + M_BAD, 1);
                    self.advance();
                    continue;
                }
                // Slots a few ahead are likely next: start their transfers now.
                let ahead = self.geo.slot(self.cursor + 4);
                self.region.prefetch_read(ahead);
                self.region.prefetch_read(ahead + SLOT_HEADER);
                deliver(&self.region, off + SLOT_HEADER, len);
                // The addresses the policy learns from: a private copy, validated with the
                // frame by the sequence check below.
                let mut head = [0u8; HEAD_COPY];
                let head = &mut head[..len.min(HEAD_COPY)];
                self.region.read(off + SLOT_HEADER, head);
                fence(Ordering::Acquire);
                let again = self.region.load64(off + S_SEQ, Ordering::Relaxed);
                let seq = self.cursor;
                self.advance();
                if again != seq {
                    self.lose(1);
                    continue;
                }
                if sender < MAX_MEMBERS {
                    let generation = self.members.generation[sender];
                    let frame = self.ethernet(head);
                    self.policy.observe(frame, sender, generation);
                }
                self.stats.frames_in = self.stats.frames_in.saturating_add(1);
                return Recv::Frame(len);
            }
            let head = self.region.load64(H_HEAD, Ordering::Acquire);
            if head >= SEQ_LIMIT {
                // Garbage; the next sender resets it.
                self.publish_cursor();
                return Recv::Idle;
            }
            if head <= self.cursor {
                if head.saturating_add(n) < self.cursor {
                    // Head moved back (garbage was written to it): follow it.
                    self.set_cursor(head);
                }
                self.publish_cursor();
                return Recv::Idle;
            }
            if head - self.cursor > n {
                // Lapped: everything older than one ring is gone.
                let skip = head - n - self.cursor;
                self.lose(skip);
                self.set_cursor(head - n);
                continue;
            }
            let previous = self.cursor.wrapping_sub(n);
            let claimed = v == (self.cursor | WRITING) || v & !WRITING == previous;
            if !claimed || self.cursor < self.skip_until {
                // The slot holds a later lap's frame (ours was overwritten), garbage, or
                // belongs to a stall already waited for: skip it.
                self.lose(1);
                self.advance();
                continue;
            }
            // The sender of `cursor` claimed it and has not published it yet.
            match self.stuck {
                Some((seq, since)) if seq == self.cursor => {
                    if since.elapsed() > STUCK {
                        // Its sender died (or stalled past reason): skip every slot claimed
                        // by now that is still unpublished, without waiting for each.
                        self.stuck = None;
                        self.skip_until = head;
                        continue;
                    }
                }
                _ => self.stuck = Some((self.cursor, Instant::now())),
            }
            self.publish_cursor();
            return Recv::Pending;
        }
        self.publish_cursor();
        Recv::Pending
    }

    fn lose(&mut self, count: u64) {
        self.stats.lost = self.stats.lost.saturating_add(count);
        self.region.add64(self.rec() + M_LOST, count);
    }

    /// Moves past one slot; the cursor other members see (lossless gating) is published
    /// every 32 slots and whenever a receive returns without a frame.
    fn advance(&mut self) {
        self.cursor = (self.cursor + 1) % SEQ_LIMIT;
        if self.cursor.is_multiple_of(32) {
            self.publish_cursor();
        }
    }

    /// Publishes the cursor and the received-frames counter (the member's own record: its
    /// private values overwrite whatever is there).
    fn publish_cursor(&self) {
        let rec = self.rec();
        self.region
            .store64(rec + M_FRAMES_IN, self.stats.frames_in, Ordering::Relaxed);
        self.region
            .store64(rec + M_CURSOR, self.cursor, Ordering::Release);
    }

    fn set_cursor(&mut self, c: u64) {
        self.cursor = c;
        self.region
            .store64(self.rec() + M_CURSOR, c, Ordering::Release);
    }

    /// This member was evicted (or its record was overwritten): count it, skip to the head
    /// and carry on as a fresh reader.
    fn rejoin(&mut self) {
        let rec = self.rec();
        self.stats.evicted = self.stats.evicted.saturating_add(1);
        self.region.add64(rec + M_EVICTED, 1);
        tracing::warn!("ipn: this member was evicted from the bus; frames were lost");
        let head = clamp_head(&self.region);
        if head > self.cursor {
            self.lose(head - self.cursor);
        }
        self.set_cursor(head);
        self.region
            .store32(rec + M_GENERATION, self.generation, Ordering::Relaxed);
        self.region
            .store32(rec + M_STATE, STATE_ACTIVE, Ordering::SeqCst);
        self.region.add32(H_EPOCH, 1);
    }

    /// True when frames were claimed after this member's cursor (a receive may succeed).
    pub fn pending(&self) -> bool {
        let head = self.region.load64(H_HEAD, Ordering::Acquire);
        head > self.cursor && head < SEQ_LIMIT
    }

    /// Looks at `head` up to `spins` times; true as soon as frames were claimed after this
    /// member's cursor.
    pub fn spin_for_pending(&self, spins: u32) -> bool {
        for _ in 0..spins {
            if self.pending() {
                return true;
            }
            std::hint::spin_loop();
        }
        false
    }

    /// Announces that this member sleeps on its eventfd, then checks once more: returns
    /// false (and stays awake) when frames arrived meanwhile.
    pub fn prepare_sleep(&mut self) -> bool {
        if let Some(efd) = self.fds.as_ref().and_then(|f| f.wake.get(self.index)) {
            sys::eventfd_drain(efd.as_raw_fd());
        }
        let flag = self.rec() + M_SLEEPING;
        self.region.store32(flag, 1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.pending() {
            self.region.store32(flag, 0, Ordering::SeqCst);
            // The eventfd was drained above but frames wait: make it readable again, for
            // callers that poll it before every receive (libvdeplug clients do).
            if let Some(efd) = self.fds.as_ref().and_then(|f| f.wake.get(self.index)) {
                sys::eventfd_signal(efd.as_raw_fd());
            }
            return false;
        }
        true
    }

    /// Announces "sleeping" without the final check ([`Member::prepare_sleep`] does both):
    /// the caller looks at the ring once more itself.
    pub fn announce_sleep(&mut self) {
        self.region
            .store32(self.rec() + M_SLEEPING, 1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// Marks this member awake (a receive found something after sleeping).
    pub fn awake(&mut self) {
        self.region
            .store32(self.rec() + M_SLEEPING, 0, Ordering::Relaxed);
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let rec = self.rec();
        self.region
            .store32(rec + M_STATE, STATE_FREE, Ordering::SeqCst);
        self.region.add32(H_EPOCH, 1);
    }
}

fn clamp_head(region: &Region) -> u64 {
    let h = region.load64(H_HEAD, Ordering::Acquire);
    if h >= SEQ_LIMIT {
        0
    } else {
        h
    }
}

/// One member's record as `filo ipn stat` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    pub index: usize,
    pub state: u32,
    pub pid: u32,
    pub tag: u32,
    pub frames_in: u64,
    pub frames_out: u64,
    pub lost: u64,
    pub evicted: u64,
    pub bad: u64,
    pub cursor: u64,
}

/// Reads every non-free member's record (values as found: for display only).
pub fn records(region: &Region) -> Vec<MemberRecord> {
    (0..MAX_MEMBERS)
        .filter_map(|i| {
            let m = member(i);
            let state = region.load32(m + M_STATE, Ordering::Acquire);
            (state != STATE_FREE).then(|| MemberRecord {
                index: i,
                state,
                pid: region.load32(m + M_PID, Ordering::Relaxed),
                tag: region.load32(m + M_TAG, Ordering::Relaxed),
                frames_in: region.load64(m + M_FRAMES_IN, Ordering::Relaxed),
                frames_out: region.load64(m + M_FRAMES_OUT, Ordering::Relaxed),
                lost: region.load64(m + M_LOST, Ordering::Relaxed),
                evicted: region.load64(m + M_EVICTED, Ordering::Relaxed),
                bad: region.load64(m + M_BAD, Ordering::Relaxed),
                cursor: region.load64(m + M_CURSOR, Ordering::Relaxed),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bus(nslots: u32, policy: PolicyKind, lossless: bool) -> (Arc<Region>, BusParams) {
        let params = BusParams {
            geometry: Geometry::new(nslots, 128).unwrap(),
            policy,
            lossless,
            timeout: Duration::from_millis(50),
            vnet: false,
        };
        let region = Arc::new(Region::anonymous(params.geometry.region_len()).unwrap());
        init(&region, &params);
        assert_eq!(read_params(&region).unwrap(), params);
        (region, params)
    }

    fn join(region: &Arc<Region>, params: BusParams, i: usize) -> Member {
        Member::join(region.clone(), params, i, 0, None)
    }

    fn frame(dst: u8, src: u8, n: u32) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, dst, 2, 0, 0, 0, 0, src, 0x88, 0xb5];
        f.extend_from_slice(&n.to_be_bytes());
        f
    }

    fn drain(m: &mut Member) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            match m.recv(&mut buf) {
                Recv::Frame(n) => out.push(buf[..n].to_vec()),
                Recv::Idle => return out,
                Recv::Pending => panic!("nothing is half-written here"),
            }
        }
    }

    #[test]
    fn hub_delivers_to_every_member_but_the_sender() {
        let (r, p) = bus(16, PolicyKind::Hub, false);
        let (mut a, mut b, mut c) = (join(&r, p, 0), join(&r, p, 1), join(&r, p, 2));
        a.refresh_members();
        assert_eq!(
            a.send_batch(&[&frame(0xb, 0xa, 1), &frame(0xb, 0xa, 2)])
                .unwrap(),
            2
        );
        assert_eq!(drain(&mut b).len(), 2);
        assert_eq!(drain(&mut c).len(), 2);
        assert!(drain(&mut a).is_empty());
        assert_eq!(b.stats().frames_in, 2);
    }

    #[test]
    fn switch_sends_known_unicast_to_one_member() {
        let (r, p) = bus(16, PolicyKind::Switch, false);
        let (mut a, mut b, mut c) = (join(&r, p, 0), join(&r, p, 1), join(&r, p, 2));
        // a (joined first) learns the later members' generations as it receives.
        // a floods to b (unknown); b, having learned a, answers a alone.
        a.send_batch(&[&frame(0xb, 0xa, 1)]).unwrap();
        assert_eq!(drain(&mut b).len(), 1);
        assert_eq!(drain(&mut c).len(), 1);
        b.send_batch(&[&frame(0xa, 0xb, 2)]).unwrap();
        assert_eq!(drain(&mut a).len(), 1);
        assert!(drain(&mut c).is_empty());
        a.send_batch(&[&frame(0xb, 0xa, 3)]).unwrap();
        assert_eq!(drain(&mut b).len(), 1);
        assert!(drain(&mut c).is_empty());
    }

    #[test]
    fn switch_on_a_vnet_bus_reads_the_addresses_after_the_virtio_net_header() {
        let (r, mut p) = bus(16, PolicyKind::Switch, false);
        p.vnet = true;
        init(&r, &p);
        assert!(read_params(&r).unwrap().vnet);
        // The header's first byte is 1 (checksum needed): read as a destination address it
        // would be multicast, and every frame would flood.
        let vframe = |dst, src, n| {
            let mut f = vec![1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            f.extend(frame(dst, src, n));
            f
        };
        let (mut a, mut b, mut c) = (join(&r, p, 0), join(&r, p, 1), join(&r, p, 2));
        a.send_batch(&[&vframe(0xb, 0xa, 1)]).unwrap();
        assert_eq!(drain(&mut b).len(), 1);
        assert_eq!(drain(&mut c).len(), 1);
        b.send_batch(&[&vframe(0xa, 0xb, 2)]).unwrap();
        assert_eq!(drain(&mut a).len(), 1);
        assert!(drain(&mut c).is_empty());
        // Shorter than the header: flooded, learnt from by nobody.
        a.send_batch(&[&[1, 2, 3]]).unwrap();
        assert_eq!(drain(&mut b).len(), 1);
        assert_eq!(drain(&mut c).len(), 1);
    }

    #[test]
    fn lossy_reader_counts_what_it_lost() {
        let (r, p) = bus(16, PolicyKind::Hub, false);
        let (mut a, mut b) = (join(&r, p, 0), join(&r, p, 1));
        a.refresh_members();
        for i in 0..100u32 {
            a.send_batch(&[&frame(0xb, 0xa, i)]).unwrap();
        }
        let got = drain(&mut b);
        assert!(got.len() <= 16 && !got.is_empty());
        assert_eq!(got.len() as u64 + b.stats().lost, 100);
        // What arrived is the newest frames, in order.
        let last: Vec<u32> = got
            .iter()
            .map(|f| u32::from_be_bytes(f[14..18].try_into().unwrap()))
            .collect();
        assert_eq!(*last.last().unwrap(), 99);
        assert!(last.windows(2).all(|w| w[0] + 1 == w[1]));
    }

    #[test]
    fn lossless_delivers_everything_in_order_to_a_slow_reader() {
        let (r, p) = bus(64, PolicyKind::Hub, true);
        let mut a = join(&r, p, 0);
        let mut b = join(&r, p, 1);
        a.refresh_members();
        let total = 20_000u32;
        let reader = std::thread::spawn(move || {
            let mut next = 0u32;
            let mut buf = [0u8; 256];
            while next < total {
                match b.recv(&mut buf) {
                    Recv::Frame(n) => {
                        assert_eq!(n, 18);
                        assert_eq!(u32::from_be_bytes(buf[14..18].try_into().unwrap()), next);
                        next += 1;
                        if next.is_multiple_of(1000) {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                    _ => std::thread::yield_now(),
                }
            }
            b.stats()
        });
        for i in 0..total {
            a.send_batch(&[&frame(0xb, 0xa, i)]).unwrap();
        }
        let stats = reader.join().unwrap();
        assert_eq!(stats.lost, 0);
        assert_eq!(stats.frames_in, u64::from(total));
        assert_eq!(a.stats().evicted_others, 0);
    }

    #[test]
    fn lossless_evicts_a_member_that_stops_reading() {
        let (r, p) = bus(16, PolicyKind::Hub, true);
        let (mut a, mut b, mut c) = (join(&r, p, 0), join(&r, p, 1), join(&r, p, 2));
        a.refresh_members();
        // c reads, b does not: after the timeout b is evicted and a carries on.
        for i in 0..40u32 {
            a.send_batch(&[&frame(0xb, 0xa, i)]).unwrap();
            drain(&mut c);
        }
        assert_eq!(a.stats().evicted_others, 1);
        assert_eq!(r.load64(H_EVICTIONS, Ordering::Relaxed), 1);
        assert_eq!(c.stats().frames_in, 40);
        drain(&mut b);
        assert_eq!(b.stats().evicted, 1);
        a.send_batch(&[&frame(0xb, 0xa, 99)]).unwrap();
        assert_eq!(drain(&mut b).len(), 1);
    }

    fn with_fds(
        region: &Arc<Region>,
        params: BusParams,
        i: usize,
        wake: &Arc<Vec<OwnedFd>>,
    ) -> Member {
        let lock = sys::sealed_memfd("t", 4096).unwrap();
        let fds = Fds {
            lock: sys::reopen(lock.as_fd()).unwrap(),
            wake: wake.clone(),
        };
        Member::join(region.clone(), params, i, 0, Some(fds))
    }

    fn readable(fd: &OwnedFd) -> bool {
        let mut e = [filo_vnl::sys::PollEntry::new(fd.as_raw_fd(), true, false)];
        filo_vnl::sys::poll(&mut e, Some(Duration::ZERO)).unwrap() > 0
    }

    #[test]
    fn the_data_descriptor_stays_readable_while_frames_wait() {
        // libvdeplug clients poll the descriptor before every receive: a member that drained
        // it while going to sleep, then found frames after all, must make it readable again.
        let (r, p) = bus(16, PolicyKind::Hub, false);
        let wake: Arc<Vec<OwnedFd>> =
            Arc::new((0..MAX_MEMBERS).map(|_| sys::eventfd().unwrap()).collect());
        let mut a = with_fds(&r, p, 0, &wake);
        let mut b = with_fds(&r, p, 1, &wake);
        assert!(!readable(&wake[1]));
        a.refresh_members();
        a.send_batch(&[&frame(0xb, 0xa, 1)]).unwrap();
        assert!(
            readable(&wake[1]),
            "a new member is woken by its first frame"
        );
        assert!(!b.prepare_sleep(), "a frame waits");
        assert!(readable(&wake[1]), "readable while the frame waits");
        assert_eq!(drain(&mut b).len(), 1);
        assert!(b.prepare_sleep());
        assert!(!readable(&wake[1]));
        a.send_batch(&[&frame(0xb, 0xa, 2)]).unwrap();
        assert!(readable(&wake[1]), "a sleeping member is woken");
        assert_eq!(a.wakeups, 2);
    }

    #[test]
    fn a_frame_written_in_place_is_never_read_half_written() {
        let (r, p) = bus(16, PolicyKind::Hub, false);
        let (mut a, mut b) = (join(&r, p, 0), join(&r, p, 1));
        a.refresh_members();
        let f = frame(0xb, 0xa, 7);
        let sent = a
            .send_in_place(14..=128, |region, off, cap| {
                assert!(cap >= f.len());
                // Half the frame is in the slot: the reader must wait, not deliver it.
                assert!(region.write(off, &f[..9]));
                let mut buf = [0u8; 256];
                assert_eq!(b.recv(&mut buf), Recv::Pending);
                assert!(region.write(off + 9, &f[9..]));
                Ok(f.len())
            })
            .unwrap();
        assert_eq!(sent, Some(f.len()));
        a.flush_wakes();
        assert_eq!(drain(&mut b), vec![f.clone()]);
        assert_eq!(a.stats().frames_out, 1);
        // A fill that had nothing (a tap's EAGAIN) publishes an empty slot nobody receives.
        let e = a
            .send_in_place(14..=128, |_, _, _| Err(io::ErrorKind::WouldBlock.into()))
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert!(drain(&mut b).is_empty());
        assert_eq!(b.stats().lost, 0);
        // Lengths outside the range asked for, or beyond what fill may write, are refused.
        assert_eq!(a.send_in_place(14..=128, |_, _, _| Ok(5)).unwrap(), None);
        assert_eq!(
            a.send_in_place(14..=64, |_, _, cap| Ok(cap + 1)).unwrap(),
            None
        );
        assert_eq!(a.stats().bad, 2);
        assert!(drain(&mut b).is_empty());
        assert_eq!(a.stats().frames_out, 1);
    }

    #[test]
    fn a_bad_length_in_a_slot_is_refused_before_delivery_and_counted() {
        let (r, p) = bus(16, PolicyKind::Hub, false);
        let (mut a, mut b) = (join(&r, p, 0), join(&r, p, 1));
        a.refresh_members();
        a.send_batch(&[
            &frame(0xb, 0xa, 1),
            &frame(0xb, 0xa, 2),
            &frame(0xb, 0xa, 3),
        ])
        .unwrap();
        // A hostile member rewrites the lengths: beyond the slot, and beyond what the
        // receiver can take.
        let first = p.geometry.slot(16);
        r.store32(first + S_LEN, u32::MAX, Ordering::Relaxed);
        r.store32(p.geometry.slot(17) + S_LEN, 100, Ordering::Relaxed);
        let mut seen = Vec::new();
        let got = b.recv_with(64, |region, off, len| {
            let mut v = vec![0u8; len];
            assert!(region.read(off, &mut v));
            seen.push(v);
        });
        assert_eq!(got, Recv::Frame(18));
        assert_eq!(
            seen,
            vec![frame(0xb, 0xa, 3)],
            "only the good frame is delivered"
        );
        assert_eq!(b.stats().bad, 2);
        assert_eq!(r.load64(member(1) + M_BAD, Ordering::Relaxed), 2);
    }

    #[test]
    fn frames_cross_between_a_descriptor_and_the_ring_without_a_buffer() {
        let (r, p) = bus(16, PolicyKind::Hub, false);
        let (mut a, mut b) = (join(&r, p, 0), join(&r, p, 1));
        a.refresh_members();
        // A datagram socket pair keeps frame boundaries, as a tap does.
        let (x, y) = std::os::unix::net::UnixDatagram::pair().unwrap();
        x.set_nonblocking(true).unwrap();
        y.set_nonblocking(true).unwrap();
        let f = frame(0xb, 0xa, 42);
        x.send(&f).unwrap();
        let got = a.send_in_place(14..=128, |region, off, cap| {
            region.read_from_fd(y.as_fd(), off, cap)
        });
        assert_eq!(got.unwrap(), Some(f.len()));
        let got = a.send_in_place(14..=128, |region, off, cap| {
            region.read_from_fd(y.as_fd(), off, cap)
        });
        assert_eq!(got.unwrap_err().kind(), io::ErrorKind::WouldBlock);
        let mut written = None;
        let got = b.recv_with(128, |region, off, len| {
            written = Some(region.write_to_fd(y.as_fd(), off, len).unwrap());
        });
        assert_eq!(got, Recv::Frame(f.len()));
        assert_eq!(written, Some(f.len()));
        let mut buf = [0u8; 256];
        let n = x.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], &f[..]);
        // A range outside the mapping is an error, not an access.
        assert!(r.write_to_fd(y.as_fd(), r.len() - 4, 8).is_err());
        assert!(r.read_from_fd(y.as_fd(), r.len(), 1).is_err());
    }

    #[test]
    fn frames_sent_in_place_wake_their_receivers_once_per_run() {
        let (r, p) = bus(16, PolicyKind::Hub, false);
        let wake: Arc<Vec<OwnedFd>> =
            Arc::new((0..MAX_MEMBERS).map(|_| sys::eventfd().unwrap()).collect());
        let mut a = with_fds(&r, p, 0, &wake);
        let mut b = with_fds(&r, p, 1, &wake);
        a.refresh_members();
        for i in 0..3 {
            let f = frame(0xb, 0xa, i);
            let sent = a.send_in_place(14..=128, |region, off, _| {
                region.write(off, &f);
                Ok(f.len())
            });
            assert_eq!(sent.unwrap(), Some(18));
        }
        assert!(!readable(&wake[1]), "not woken in the middle of a run");
        a.flush_wakes();
        assert!(readable(&wake[1]), "woken when the run ends");
        assert_eq!(a.wakeups, 1);
        assert_eq!(drain(&mut b).len(), 3);
    }

    #[test]
    fn garbage_in_the_region_never_crashes_or_hangs() {
        let (r, p) = bus(16, PolicyKind::Switch, false);
        let (mut a, mut b) = (join(&r, p, 0), join(&r, p, 1));
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut buf = [0u8; 256];
        for round in 0..3000u32 {
            for _ in 0..64 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let off = (seed as usize % r.len()) & !7;
                if off >= 8 {
                    // Keep the magic (a joiner checks it once; members never re-read it).
                    r.store64(off, seed.rotate_left(round % 64), Ordering::Relaxed);
                }
            }
            let _ = a.send_batch(&[&frame(0xb, 0xa, round)]);
            let f = frame(0xa, 0xb, round);
            let _ = b.send_in_place(14..=256, |region, off, cap| {
                region.write(off, &f[..f.len().min(cap)]);
                Ok(f.len())
            });
            let _ = a.recv_with(64, |region, off, len| {
                assert!(len <= 64);
                region.read(off, &mut buf[..len]);
            });
            let _ = b.recv(&mut buf);
            let _ = a.recv(&mut buf);
        }
    }
}
