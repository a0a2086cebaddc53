//! TCP loss recovery beneath smoltcp.
//!
//! smoltcp's TCP recovers a loss with one fast retransmit per episode and otherwise a
//! retransmission timeout of at least one second that resends everything in flight; it reads
//! no SACK blocks and has no partial-ACK (NewReno) recovery. On a link losing 2 % of frames
//! that turns a transfer into a string of one-second stalls. This layer sits between smoltcp
//! and the wire and does what a modern sender does:
//!
//! - it keeps a copy of every TCP segment with data that a stack sends, until it is acked;
//! - it reads the peer's cumulative ACKs and SACK blocks (RFC 2018); a segment with at least
//!   [`DUP_THRESH`] SACKed segments above it, or the first unacked one after
//!   [`DUP_THRESH`] duplicate ACKs, counts as lost (RFC 6675's rule) and is sent again at
//!   once — again after a smoothed round trip if it is still missing;
//! - when nothing is acked for a few round trips (a lost tail, a lost retransmission), it
//!   resends the first unacked segment (a probe timeout, with exponential back-off) instead
//!   of waiting a second.
//!
//! Copies are resent with the newest ACK number and window this side has sent on the flow
//! (smoltcp ignores segments carrying an older ACK) and a fresh checksum. The peer's stack
//! and smoltcp see nothing but ordinary retransmissions. Sans-IO: packets in, packets out.

use std::collections::{HashMap, VecDeque};

use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{IpAddress, Ipv4Packet, Ipv6Packet, TcpOption, TcpPacket};

/// SACKed segments above a hole (or duplicate ACKs without SACK) that declare it lost.
pub const DUP_THRESH: u32 = 3;
/// At most this many bytes of copies per flow; beyond it segments are not kept (smoltcp's
/// own retransmission still covers them).
const FLOW_LIMIT: usize = 32 << 20;
/// At most this many bytes of copies per stack.
const TOTAL_LIMIT: usize = 128 << 20;
/// The segment size assumed for super-frames when counting SACKed bytes above a hole.
const MAX_SMSS: u32 = 1460;
/// Bounds of the probe timeout.
const PTO_MIN: Duration = Duration::from_millis(10);
const PTO_MAX: Duration = Duration::from_millis(800);
/// Retransmissions sent for one incoming ACK, so one ACK cannot trigger a burst.
const BURST: usize = 32;
/// A flow with nothing in flight is forgotten after this long.
const IDLE_FOR: Duration = Duration::from_secs(60);

/// Whether stacks get loss recovery: yes, unless `FILO_STACK_RECOVERY=off` (for comparisons).
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        !matches!(
            std::env::var("FILO_STACK_RECOVERY").as_deref(),
            Ok("off" | "0" | "no")
        )
    })
}

/// One TCP connection, named from this side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FlowKey {
    local: IpAddress,
    remote: IpAddress,
    local_port: u16,
    remote_port: u16,
}

struct Segment {
    seq: u32,
    /// Sequence space the segment covers (payload, plus one for a FIN).
    len: u32,
    /// The whole IP packet as first sent.
    packet: Vec<u8>,
    sent: Instant,
    resent: Option<Instant>,
}

impl Segment {
    fn end(&self) -> u32 {
        self.seq.wrapping_add(self.len)
    }
}

struct Flow {
    segments: VecDeque<Segment>,
    /// What the peer SACKed above `una`: sorted, disjoint sequence ranges.
    sacked: Vec<(u32, u32)>,
    /// The largest data segment seen, at most [`MAX_SMSS`] (a super-frame reaches the peer
    /// as segments of about that size): SACKed bytes worth [`DUP_THRESH`] of these above a
    /// hole declare it lost.
    smss: u32,
    bytes: usize,
    /// Highest cumulative ACK from the peer.
    una: Option<u32>,
    dup_acks: u32,
    /// Newest ACK number and raw window this side sent on the flow.
    ack: u32,
    window: u16,
    srtt: Option<Duration>,
    /// Last time the peer acked something new (or the first copy was kept).
    progress_at: Instant,
    probe_at: Option<Instant>,
    backoff: u32,
    touched: Instant,
}

impl Flow {
    fn new(now: Instant) -> Flow {
        Flow {
            segments: VecDeque::new(),
            sacked: Vec::new(),
            smss: 0,
            bytes: 0,
            una: None,
            dup_acks: 0,
            ack: 0,
            window: 0,
            srtt: None,
            progress_at: now,
            probe_at: None,
            backoff: 0,
            touched: now,
        }
    }

    /// The probe timeout: a few smoothed round trips, backed off per probe.
    fn pto(&self) -> Duration {
        let base = self.srtt.map_or(Duration::from_millis(200), |s| {
            s * 3 + Duration::from_millis(2)
        });
        let base = base.max(PTO_MIN).min(PTO_MAX);
        (base * (1u32 << self.backoff.min(6))).min(PTO_MAX * 4)
    }

    fn deadline(&self) -> Option<Instant> {
        if self.segments.is_empty() {
            return None;
        }
        Some(
            self.probe_at
                .unwrap_or(self.progress_at)
                .max(self.progress_at)
                + self.pto(),
        )
    }

    /// Records a SACK block (only what lies above `una` counts).
    fn add_sack(&mut self, mut l: u32, r: u32) {
        if let Some(u) = self.una {
            if !before(u, r) {
                return;
            }
            if before(l, u) {
                l = u;
            }
        }
        if !before(l, r) {
            return;
        }
        self.sacked.push((l, r));
        self.sacked.sort_by(|a, b| {
            if a.0 == b.0 {
                std::cmp::Ordering::Equal
            } else if before(a.0, b.0) {
                std::cmp::Ordering::Less
            } else {
                std::cmp::Ordering::Greater
            }
        });
        // Merge overlapping or touching ranges in place.
        self.sacked.dedup_by(|next, kept| {
            if before(kept.1, next.0) {
                return false;
            }
            if before(kept.1, next.1) {
                kept.1 = next.1;
            }
            true
        });
    }

    /// Drops SACK ranges at or below `una`.
    fn prune_sacked(&mut self) {
        let Some(u) = self.una else { return };
        self.sacked.retain(|&(_, r)| before(u, r));
        for range in &mut self.sacked {
            if before(range.0, u) {
                range.0 = u;
            }
        }
    }

    /// The parts of `seg` neither acked nor SACKed, in order.
    fn holes(&self, seg: &Segment) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.holes_in(seg.seq, seg.end())
    }

    /// The parts of the sequence range `start..end` neither acked nor SACKed, in order
    /// (computed as they are asked for: this runs for every segment on every ACK during loss).
    fn holes_in(&self, start: u32, end: u32) -> impl Iterator<Item = (u32, u32)> + '_ {
        let mut from = match self.una {
            Some(u) if before(start, u) => u,
            _ => start,
        };
        let mut ranges = self.sacked.iter();
        let mut done = false;
        std::iter::from_fn(move || {
            while !done {
                match ranges.next() {
                    Some(&(l, r)) if before(l, end) => {
                        if !before(from, r) {
                            continue;
                        }
                        let hole = before(from, l).then_some((from, l));
                        from = r;
                        if hole.is_some() {
                            return hole;
                        }
                    }
                    _ => {
                        done = true;
                        if before(from, end) {
                            return Some((from, end));
                        }
                    }
                }
            }
            None
        })
    }

    /// SACKed bytes at or above `at`.
    fn sacked_above(&self, at: u32) -> u32 {
        self.sacked
            .iter()
            .filter(|&&(_, r)| before(at, r))
            .map(|&(l, r)| {
                let l = if before(l, at) { at } else { l };
                r.wrapping_sub(l)
            })
            .sum()
    }

    /// The highest SACKed sequence number, if any.
    fn highest_sacked(&self) -> Option<u32> {
        self.sacked.last().map(|&(_, r)| r)
    }

    /// Time to wait before resending a segment that was already resent.
    fn resend_gap(&self) -> Duration {
        self.srtt
            .map_or(Duration::from_millis(50), |s| s * 2)
            .max(Duration::from_millis(2))
            .min(Duration::from_millis(200))
    }
}

/// `a < b` in sequence space.
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// The TCP part of an IP packet: (source, destination, offset of the TCP header, end of the
/// packet as its IP header gives it). Bytes behind that end are no part of the segment.
fn tcp_of(packet: &[u8]) -> Option<(IpAddress, IpAddress, usize, usize)> {
    match packet.first()? >> 4 {
        4 => {
            let ip = Ipv4Packet::new_checked(packet).ok()?;
            if ip.next_header() != smoltcp::wire::IpProtocol::Tcp || ip.more_frags() {
                return None;
            }
            if ip.frag_offset() != 0 {
                return None;
            }
            let off = usize::from(ip.header_len());
            let len = usize::from(ip.total_len());
            if len > packet.len() || off > len {
                return None;
            }
            Some((ip.src_addr().into(), ip.dst_addr().into(), off, len))
        }
        6 => {
            let ip = Ipv6Packet::new_checked(packet).ok()?;
            // Extension headers are rare on TCP; such packets are left to smoltcp alone.
            if ip.next_header() != smoltcp::wire::IpProtocol::Tcp {
                return None;
            }
            let len = 40 + usize::from(ip.payload_len());
            Some((ip.src_addr().into(), ip.dst_addr().into(), 40, len))
        }
        _ => None,
    }
}

/// Counters, for tests and `filo stack` diagnostics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryStats {
    /// Segments resent because SACK or duplicate ACKs showed them lost.
    pub fast: u64,
    /// Segments resent because nothing was acked for a probe timeout.
    pub probes: u64,
    /// Segments not kept because a limit was reached.
    pub not_kept: u64,
    /// smoltcp's own resends cut down to what the peer lacks (or dropped: it had it all).
    pub trimmed: u64,
}

/// What to do with a packet the stack sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it as it is.
    Send,
    /// Do not send it; send what [`Recovery::on_output`] put in `out` instead (possibly
    /// nothing: the peer already has every byte).
    Replaced,
}

/// The recovery state of one stack.
pub struct Recovery {
    flows: HashMap<FlowKey, Flow>,
    bytes: usize,
    pool: Vec<Vec<u8>>,
    pub stats: RecoveryStats,
}

impl Default for Recovery {
    fn default() -> Self {
        Recovery::new()
    }
}

impl Recovery {
    pub fn new() -> Recovery {
        Recovery {
            flows: HashMap::new(),
            bytes: 0,
            pool: Vec::new(),
            stats: RecoveryStats::default(),
        }
    }

    /// Bytes of segment copies held.
    pub fn held(&self) -> usize {
        self.bytes
    }

    /// The flow a TCP packet belongs to (seen from this side) and its TCP header; a reset
    /// ends the flow here and yields nothing.
    fn segment<'p>(
        &mut self,
        packet: &'p [u8],
        sent: bool,
    ) -> Option<(FlowKey, TcpPacket<&'p [u8]>)> {
        let (src, dst, off, end) = tcp_of(packet)?;
        let tcp = TcpPacket::new_checked(&packet[off..end]).ok()?;
        let (local, remote) = if sent { (src, dst) } else { (dst, src) };
        let (local_port, remote_port) = if sent {
            (tcp.src_port(), tcp.dst_port())
        } else {
            (tcp.dst_port(), tcp.src_port())
        };
        let key = FlowKey {
            local,
            remote,
            local_port,
            remote_port,
        };
        if tcp.rst() {
            self.forget(&key);
            return None;
        }
        Some((key, tcp))
    }

    /// Notes an IP packet the stack sends and says what to do with it. smoltcp resends
    /// whole segments (a 64 KiB one on its third duplicate ACK, everything from the first
    /// unacked byte on its timeout); what the peer has already SACKed is cut out of those, and
    /// the parts still missing go in `out` instead ([`Verdict::Replaced`]).
    pub fn on_output(&mut self, now: Instant, packet: &[u8], out: &mut Vec<Vec<u8>>) -> Verdict {
        let Some((key, tcp)) = self.segment(packet, true) else {
            return Verdict::Send;
        };
        if tcp.syn() {
            return Verdict::Send;
        }
        let payload = tcp.payload().len();
        let len = payload as u32 + u32::from(tcp.fin());
        if len == 0 && !self.flows.contains_key(&key) {
            return Verdict::Send;
        }
        let flow = self.flows.entry(key).or_insert_with(|| Flow::new(now));
        flow.touched = now;
        if tcp.ack() {
            flow.ack = tcp.ack_number().0 as u32;
            flow.window = tcp.window_len();
        }
        if len == 0 {
            return Verdict::Send;
        }
        let seq = tcp.seq_number().0 as u32;
        if payload > 0 {
            flow.smss = flow.smss.max((payload as u32).min(MAX_SMSS));
        }
        if flow.segments.is_empty() {
            flow.progress_at = now;
        }
        let newest_end = flow.segments.back().map(Segment::end);
        match newest_end {
            Some(end) if before(seq, end) => {
                // smoltcp resending: note it so the copy is not resent right behind it, and
                // send only what the peer lacks.
                let seg_end = seq.wrapping_add(len);
                for s in flow.segments.iter_mut() {
                    if before(s.seq, seg_end) && before(seq, s.end()) {
                        s.resent = Some(now);
                    }
                }
                let mut holes = flow.holes_in(seq, seg_end).peekable();
                // Holes lie inside the range: a first hole that is all of it is the only one.
                if holes.peek() == Some(&(seq, seg_end)) {
                    return Verdict::Send;
                }
                self.stats.trimmed += 1;
                for (h0, h1) in holes {
                    out.push(refresh(
                        packet,
                        h0,
                        h1,
                        flow.ack,
                        flow.window,
                        &mut self.pool,
                    ));
                }
                return Verdict::Replaced;
            }
            _ => {}
        }
        if flow.bytes + packet.len() > FLOW_LIMIT || self.bytes + packet.len() > TOTAL_LIMIT {
            self.stats.not_kept += 1;
            return Verdict::Send;
        }
        let mut copy = self.pool.pop().unwrap_or_default();
        copy.clear();
        copy.extend_from_slice(packet);
        flow.bytes += copy.len();
        self.bytes += copy.len();
        flow.segments.push_back(Segment {
            seq,
            len,
            packet: copy,
            sent: now,
            resent: None,
        });
        Verdict::Send
    }

    /// Reads an IP packet the stack receives; queues in `out` the segments to send again.
    pub fn on_input(&mut self, now: Instant, packet: &[u8], out: &mut Vec<Vec<u8>>) {
        let Some((key, tcp)) = self.segment(packet, false) else {
            return;
        };
        if !tcp.ack() {
            return;
        }
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        flow.touched = now;
        let ack = tcp.ack_number().0 as u32;
        let advanced = flow.una.is_none_or(|u| before(u, ack));
        if advanced {
            flow.una = Some(ack);
            flow.dup_acks = 0;
            flow.progress_at = now;
            flow.probe_at = None;
            flow.backoff = 0;
            let mut sample = None;
            while let Some(s) = flow.segments.front() {
                if before(ack, s.end()) {
                    break;
                }
                if s.resent.is_none() {
                    sample = Some(now - s.sent);
                }
                if let Some(s) = flow.segments.pop_front() {
                    flow.bytes -= s.packet.len();
                    self.bytes -= s.packet.len();
                    give_back(&mut self.pool, s.packet);
                }
            }
            // Behind a hole, a cumulative ACK comes late by the repair time: only ACKs with
            // nothing SACKed outstanding measure the path.
            if let Some(r) = sample.filter(|_| flow.sacked.is_empty()) {
                flow.srtt = Some(match flow.srtt {
                    Some(s) => (s * 7 + r) / 8,
                    None => r,
                });
            }
        } else if flow.una == Some(ack)
            && tcp.payload().is_empty()
            && !tcp.syn()
            && !tcp.fin()
            && !flow.segments.is_empty()
        {
            flow.dup_acks += 1;
        }
        if advanced {
            flow.prune_sacked();
        }
        for opt in TcpOptions(tcp.options()) {
            if let TcpOption::SackRange(ranges) = opt {
                for (l, r) in ranges.iter().flatten() {
                    flow.add_sack(*l, *r);
                }
            }
        }
        if flow.segments.is_empty() {
            return;
        }
        // What is lost: holes with DUP_THRESH segments' worth SACKed above them (RFC 6675),
        // or, without SACK, the first unacked bytes after DUP_THRESH duplicate ACKs.
        let threshold = DUP_THRESH * flow.smss.max(1);
        let mut lost: Vec<(usize, u32, u32)> = Vec::new();
        if let Some(highest) = flow.highest_sacked() {
            for (i, seg) in flow.segments.iter().enumerate() {
                if !before(seg.seq, highest) {
                    break;
                }
                for (h0, h1) in flow.holes(seg) {
                    if flow.sacked_above(h1) >= threshold {
                        lost.push((i, h0, h1));
                    }
                }
            }
        }
        if lost.is_empty() && flow.dup_acks >= DUP_THRESH {
            let first = flow.segments.front().and_then(|s| flow.holes(s).next());
            if let Some((h0, h1)) = first {
                lost.push((0, h0, h1));
            }
        }
        let gap = flow.resend_gap();
        let mut sent = 0;
        let mut last_marked = None;
        for (i, h0, h1) in lost {
            if sent >= BURST {
                break;
            }
            let seg = &mut flow.segments[i];
            if last_marked != Some(i) {
                // All holes of one segment go together, at most once per resend gap.
                if seg.resent.is_some_and(|t| now < t + gap) {
                    continue;
                }
                seg.resent = Some(now);
                last_marked = Some(i);
            }
            out.push(refresh(
                &seg.packet,
                h0,
                h1,
                flow.ack,
                flow.window,
                &mut self.pool,
            ));
            self.stats.fast += 1;
            sent += 1;
        }
    }

    /// Returns a buffer handed out for a resend, to be reused for the next copy.
    pub fn give_back(&mut self, packet: Vec<u8>) {
        give_back(&mut self.pool, packet);
    }

    /// When [`Recovery::on_timer`] next has work.
    pub fn poll_at(&self) -> Option<Instant> {
        self.flows.values().filter_map(Flow::deadline).min()
    }

    /// Probes flows that made no progress for their probe timeout; forgets idle flows.
    pub fn on_timer(&mut self, now: Instant, out: &mut Vec<Vec<u8>>) {
        for flow in self.flows.values_mut() {
            let Some(due) = flow.deadline() else { continue };
            if now < due {
                continue;
            }
            flow.probe_at = Some(now);
            flow.backoff += 1;
            if flow.backoff >= 3 {
                // Still stuck: the peer may have dropped data it SACKed (RFC 2018 allows
                // it). Forget the SACKs so that everything unacked can go again.
                flow.sacked.clear();
            }
            tracing::debug!(
                una = ?flow.una,
                in_flight = flow.segments.len(),
                sacked_ranges = flow.sacked.len(),
                first = flow.segments.front().map(|s| s.seq),
                backoff = flow.backoff,
                "recovery: probe"
            );
            // The first hole: the bytes the peer waits for.
            let first = flow
                .segments
                .iter()
                .enumerate()
                .find_map(|(i, seg)| flow.holes(seg).next().map(|(a, b)| (i, a, b)));
            if let Some((i, h0, h1)) = first {
                let seg = &mut flow.segments[i];
                seg.resent = Some(now);
                out.push(refresh(
                    &seg.packet,
                    h0,
                    h1,
                    flow.ack,
                    flow.window,
                    &mut self.pool,
                ));
                self.stats.probes += 1;
            }
        }
        let before_len = self.flows.len();
        self.flows
            .retain(|_, f| !f.segments.is_empty() || now < f.touched + IDLE_FOR);
        if self.flows.len() != before_len {
            self.bytes = self.flows.values().map(|f| f.bytes).sum();
        }
    }

    fn forget(&mut self, key: &FlowKey) {
        if let Some(f) = self.flows.remove(key) {
            self.bytes -= f.bytes;
        }
    }
}

/// A copy of `packet` to send again, cut down to the sequence range `from..to` (what the
/// peer still lacks: smoltcp drops a segment whose data is all old even when it carries a new
/// FIN, and resending SACKed bytes wastes the link), carrying `ack` and `window` — the newest
/// this side sent — with fresh checksums.
fn refresh(
    packet: &[u8],
    from: u32,
    to: u32,
    ack: u32,
    window: u16,
    pool: &mut Vec<Vec<u8>>,
) -> Vec<u8> {
    let mut p = pool.pop().unwrap_or_default();
    p.clear();
    p.extend_from_slice(packet);
    let Some((src, dst, off, end)) = tcp_of(&p) else {
        return p;
    };
    let v4 = p[0] >> 4 == 4;
    p.truncate(end);
    let Ok(tcp) = TcpPacket::new_checked(&p[off..]) else {
        return p;
    };
    let seq = tcp.seq_number().0 as u32;
    let fin = tcp.fin();
    let data_at = off + usize::from(tcp.header_len());
    let payload = p.len().saturating_sub(data_at);
    let offset_of = |x: u32| {
        if before(x, seq) {
            0
        } else {
            (x.wrapping_sub(seq) as usize).min(payload + usize::from(fin))
        }
    };
    let (head, tail) = (offset_of(from), offset_of(to));
    let keep_fin = fin && tail > payload;
    let (head, tail) = (head.min(payload), tail.min(payload).max(head.min(payload)));
    if head > 0 || tail < payload {
        p.truncate(data_at + tail);
        p.drain(data_at..data_at + head);
        let total = p.len();
        if v4 {
            let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
            ip.set_total_len(total as u16);
            ip.fill_checksum();
        } else {
            let mut ip = Ipv6Packet::new_unchecked(&mut p[..]);
            ip.set_payload_len((total - 40) as u16);
        }
    }
    let mut tcp = TcpPacket::new_unchecked(&mut p[off..]);
    if head > 0 {
        tcp.set_seq_number(smoltcp::wire::TcpSeqNumber(
            seq.wrapping_add(head as u32) as i32
        ));
    }
    if !keep_fin {
        tcp.set_fin(false);
    }
    if tcp.ack() {
        tcp.set_ack_number(smoltcp::wire::TcpSeqNumber(ack as i32));
        tcp.set_window_len(window);
    }
    tcp.fill_checksum(&src, &dst);
    p
}

/// Iterates the TCP options in a header's option bytes.
struct TcpOptions<'a>(&'a [u8]);

impl<'a> Iterator for TcpOptions<'a> {
    type Item = TcpOption<'a>;
    fn next(&mut self) -> Option<TcpOption<'a>> {
        if self.0.is_empty() {
            return None;
        }
        let (rest, opt) = TcpOption::parse(self.0).ok()?;
        if opt == TcpOption::EndOfList {
            return None;
        }
        self.0 = rest;
        Some(opt)
    }
}

/// Keeps a spent buffer for reuse, up to a bound.
fn give_back(pool: &mut Vec<Vec<u8>>, mut packet: Vec<u8>) {
    if pool.len() < 256 {
        packet.clear();
        pool.push(packet);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{IpProtocol, Ipv4Address, Ipv4Repr, TcpControl, TcpRepr, TcpSeqNumber};

    const A: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);
    const B: Ipv4Address = Ipv4Address::new(10, 0, 0, 2);
    const MSS: u32 = 100;

    /// An IPv4 TCP packet from `src` to `dst`.
    fn packet(
        src: Ipv4Address,
        dst: Ipv4Address,
        seq: u32,
        ack: u32,
        payload: &[u8],
        sack: [Option<(u32, u32)>; 3],
    ) -> Vec<u8> {
        let tcp = TcpRepr {
            src_port: if src == A { 1000 } else { 2000 },
            dst_port: if src == A { 2000 } else { 1000 },
            control: TcpControl::None,
            seq_number: TcpSeqNumber(seq as i32),
            ack_number: Some(TcpSeqNumber(ack as i32)),
            window_len: 1000,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: sack,
            timestamp: None,
            payload,
        };
        let ip = Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        };
        let mut buf = vec![0u8; ip.buffer_len() + tcp.buffer_len()];
        let caps = ChecksumCapabilities::default();
        let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
        ip.emit(&mut p, &caps);
        tcp.emit(
            &mut TcpPacket::new_unchecked(&mut buf[20..]),
            &src.into(),
            &dst.into(),
            &caps,
        );
        buf
    }

    fn data(seq: u32) -> Vec<u8> {
        packet(A, B, seq, 1, &[7u8; MSS as usize], [None; 3])
    }

    fn ack(n: u32, sack: [Option<(u32, u32)>; 3]) -> Vec<u8> {
        packet(B, A, 1, n, &[], sack)
    }

    fn seq_of(p: &[u8]) -> u32 {
        TcpPacket::new_checked(&p[20..]).unwrap().seq_number().0 as u32
    }

    fn seqs(out: &[Vec<u8>]) -> Vec<u32> {
        out.iter().map(|p| seq_of(p)).collect()
    }

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms as i64)
    }

    /// Sends ten segments starting at 1000 and returns the recovery state.
    fn ten_in_flight() -> Recovery {
        let mut r = Recovery::new();
        for i in 0..10 {
            r.on_output(t(0), &data(1000 + i * MSS), &mut Vec::new());
        }
        r
    }

    #[test]
    fn acked_segments_are_released() {
        let mut r = ten_in_flight();
        assert_eq!(r.held(), 10 * data(0).len());
        let mut out = Vec::new();
        r.on_input(t(1), &ack(1000 + 4 * MSS, [None; 3]), &mut out);
        assert!(out.is_empty());
        assert_eq!(r.held(), 6 * data(0).len());
        r.on_input(t(2), &ack(2000, [None; 3]), &mut out);
        assert_eq!(r.held(), 0);
        assert!(out.is_empty());
    }

    #[test]
    fn a_hole_with_three_sacked_segments_above_is_resent_at_once() {
        let mut r = ten_in_flight();
        let mut out = Vec::new();
        // Segment 2 (seq 1200) lost; 3.. arrive and are SACKed one by one.
        r.on_input(t(1), &ack(1200, [None; 3]), &mut out);
        r.on_input(t(1), &ack(1200, [Some((1300, 1400)), None, None]), &mut out);
        r.on_input(t(1), &ack(1200, [Some((1300, 1500)), None, None]), &mut out);
        assert!(out.is_empty(), "two SACKed segments are not yet enough");
        r.on_input(t(1), &ack(1200, [Some((1300, 1600)), None, None]), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(seq_of(&out[0]), 1200);
        // More SACKs within a round trip do not resend it again.
        r.on_input(t(1), &ack(1200, [Some((1300, 1700)), None, None]), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(r.stats.fast, 1);
    }

    #[test]
    fn several_holes_are_resent_together_and_a_still_missing_one_again_later() {
        let mut r = ten_in_flight();
        let mut out = Vec::new();
        r.on_input(t(5), &ack(1000, [None; 3]), &mut out);
        // 1000 and 1400 lost; everything else SACKed.
        let sack = [Some((1100, 1400)), Some((1500, 2000)), None];
        r.on_input(t(5), &ack(1000, sack), &mut out);
        assert_eq!(seqs(&out), vec![1000, 1400]);
        out.clear();
        // The resent 1000 arrives; 1400 was lost again. After the resend gap it goes again.
        r.on_input(t(6), &ack(1400, [Some((1500, 2000)), None, None]), &mut out);
        assert!(out.is_empty());
        r.on_input(
            t(200),
            &ack(1400, [Some((1500, 2000)), None, None]),
            &mut out,
        );
        assert_eq!(seqs(&out), vec![1400]);
    }

    #[test]
    fn without_sack_three_duplicate_acks_resend_the_first_unacked_segment() {
        let mut r = ten_in_flight();
        let mut out = Vec::new();
        r.on_input(t(1), &ack(1300, [None; 3]), &mut out);
        for _ in 0..2 {
            r.on_input(t(1), &ack(1300, [None; 3]), &mut out);
        }
        assert!(out.is_empty());
        r.on_input(t(1), &ack(1300, [None; 3]), &mut out);
        assert_eq!(seqs(&out), vec![1300]);
    }

    #[test]
    fn a_lost_tail_is_probed_after_the_timeout_with_backoff() {
        let mut r = ten_in_flight();
        let mut out = Vec::new();
        r.on_input(t(1), &ack(1900, [None; 3]), &mut out);
        let due = r.poll_at().unwrap();
        r.on_timer(due - Duration::from_millis(1), &mut out);
        assert!(out.is_empty(), "nothing before the deadline");
        r.on_timer(due, &mut out);
        assert_eq!(seqs(&out), vec![1900]);
        let next = r.poll_at().unwrap();
        assert!(next - due > due - t(1), "the second probe waits longer");
        r.on_input(next, &ack(2000, [None; 3]), &mut out);
        assert_eq!(r.poll_at(), None, "nothing in flight, no timer");
        assert_eq!(r.stats.probes, 1);
    }

    #[test]
    fn resent_copies_carry_the_newest_ack_and_a_valid_checksum() {
        let mut r = ten_in_flight();
        // This side has since acked up to 77 of the peer's data.
        r.on_output(
            t(1),
            &packet(A, B, 2000, 77, &[], [None; 3]),
            &mut Vec::new(),
        );
        let mut out = Vec::new();
        r.on_input(t(1), &ack(1000, [None; 3]), &mut out);
        let sack = [Some((1100, 1400)), None, None];
        r.on_input(t(1), &ack(1000, sack), &mut out);
        assert_eq!(out.len(), 1);
        let p = Ipv4Packet::new_checked(&out[0][..]).unwrap();
        let tcp = TcpPacket::new_checked(p.payload()).unwrap();
        assert_eq!(tcp.ack_number().0, 77);
        assert!(tcp.verify_checksum(&A.into(), &B.into()));
        assert_eq!(tcp.payload(), &[7u8; MSS as usize][..]);
    }

    #[test]
    fn a_partly_acked_segment_is_resent_without_the_acked_part() {
        let mut r = Recovery::new();
        // 100 bytes of data and the FIN in one segment; the peer acks the data, not the FIN.
        let mut fin = data(1000);
        {
            let mut tcp = TcpPacket::new_unchecked(&mut fin[20..]);
            tcp.set_fin(true);
            tcp.fill_checksum(&A.into(), &B.into());
        }
        r.on_output(t(0), &fin, &mut Vec::new());
        let mut out = Vec::new();
        r.on_input(t(1), &ack(1100, [None; 3]), &mut out);
        assert_eq!(r.held(), fin.len(), "the FIN is not acked yet");
        r.on_timer(r.poll_at().unwrap(), &mut out);
        assert_eq!(out.len(), 1);
        let p = Ipv4Packet::new_checked(&out[0][..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(usize::from(p.total_len()), out[0].len());
        let tcp = TcpPacket::new_checked(p.payload()).unwrap();
        assert!(tcp.fin());
        assert_eq!(tcp.seq_number().0, 1100);
        assert!(tcp.payload().is_empty());
        assert!(tcp.verify_checksum(&A.into(), &B.into()));
    }

    #[test]
    fn only_the_missing_bytes_of_a_super_segment_are_resent() {
        let mut r = Recovery::new();
        r.on_output(
            t(0),
            &packet(A, B, 1000, 1, &[9u8; 9000], [None; 3]),
            &mut Vec::new(),
        );
        let mut out = Vec::new();
        r.on_input(t(1), &ack(1000, [None; 3]), &mut out);
        // The peer got everything but bytes 2460..4000 and the first 1460.
        let sack = [Some((4000, 10000)), Some((2460, 2461)), None];
        r.on_input(t(1), &ack(1000, sack), &mut out);
        let got: Vec<(u32, usize)> = out
            .iter()
            .map(|p| {
                let tcp = TcpPacket::new_checked(&p[20..]).unwrap();
                assert!(tcp.verify_checksum(&A.into(), &B.into()));
                (tcp.seq_number().0 as u32, tcp.payload().len())
            })
            .collect();
        assert_eq!(got, vec![(1000, 1460), (2461, 1539)]);
        // smoltcp resending the whole segment goes out cut down to the same holes.
        let mut cut = Vec::new();
        let whole = packet(A, B, 1000, 1, &[9u8; 9000], [None; 3]);
        assert_eq!(r.on_output(t(2), &whole, &mut cut), Verdict::Replaced);
        assert_eq!(cut.len(), 2);
        assert_eq!(seqs(&cut), vec![1000, 2461]);
        // Once the peer has it all, smoltcp's resend is dropped.
        r.on_input(
            t(3),
            &ack(1000, [Some((1000, 10000)), None, None]),
            &mut out,
        );
        let mut none = Vec::new();
        assert_eq!(r.on_output(t(4), &whole, &mut none), Verdict::Replaced);
        assert!(none.is_empty());
        assert_eq!(r.stats.trimmed, 2);
    }

    #[test]
    fn smoltcp_resending_is_not_kept_twice_and_rst_forgets_the_flow() {
        let mut r = ten_in_flight();
        let held = r.held();
        r.on_output(t(3), &data(1000), &mut Vec::new());
        assert_eq!(r.held(), held);
        let rst = {
            let mut p = ack(1000, [None; 3]);
            let mut tcp = TcpPacket::new_unchecked(&mut p[20..]);
            tcp.set_rst(true);
            p
        };
        r.on_input(t(4), &rst, &mut Vec::new());
        assert_eq!(r.held(), 0);
        assert_eq!(r.poll_at(), None);
    }

    #[test]
    fn garbage_and_non_tcp_packets_are_ignored() {
        let mut r = Recovery::new();
        let mut out = Vec::new();
        for p in [&[][..], &[0x45][..], &[0x60, 0, 0][..], &[0xff; 60][..]] {
            r.on_output(t(0), p, &mut Vec::new());
            r.on_input(t(0), p, &mut out);
        }
        let mut truncated = data(1000);
        truncated.truncate(30);
        r.on_output(t(0), &truncated, &mut Vec::new());
        r.on_input(t(0), &truncated, &mut out);
        assert!(out.is_empty());
        assert_eq!(r.held(), 0);
    }

    /// Found by fuzzing (tcp_recovery): a packet whose IP header ends it before its TCP
    /// header, with TCP bytes trailing, was kept, and probing resent the bare IP header.
    #[test]
    fn tcp_bytes_behind_the_ip_length_are_no_segment() {
        let mut r = Recovery::new();
        let mut short = data(1000);
        let mut ip = Ipv4Packet::new_unchecked(&mut short[..]);
        ip.set_total_len(20);
        ip.fill_checksum();
        assert_eq!(r.on_output(t(0), &short, &mut Vec::new()), Verdict::Send);
        let mut out = Vec::new();
        r.on_timer(t(10_000), &mut out);
        assert_eq!(r.held(), 0);
        assert!(out.is_empty(), "resent {out:02x?}");
    }
}
