//! A cable: two plugs joined so every frame received on one is sent on the other, with
//! back-pressure (a side that cannot take more stops reading from the other) and batching.
//! This is `filo plug VNL1 VNL2` as a library function.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::plug::{FrameBatch, Plug};
use crate::reconnect::{self, Policy, ReconnectError};

use crate::sys::{self, PollEntry};

/// Why a cable stopped.
#[derive(Debug)]
pub enum CableEnd {
    /// The side with this index (0 or 1) went away: EOF, hang-up or a closed switch.
    Hangup { side: usize, reason: String },
    /// The stop flag was raised (a signal).
    Stopped,
    /// A side failed in a way that is not a plain hang-up.
    Failed { side: usize, error: io::Error },
    /// The side with this index went away and did not come back in time
    /// ([`run_reconnecting`]).
    GaveUp { side: usize, reason: String },
}

impl std::fmt::Display for CableEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CableEnd::Hangup { reason, .. } | CableEnd::GaveUp { reason, .. } => {
                write!(f, "{reason}")
            }
            CableEnd::Stopped => write!(f, "stopped by signal"),
            CableEnd::Failed { error, .. } => write!(f, "{error}"),
        }
    }
}

/// How frames change on their way from one side to the other.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Conversion {
    None,
    /// virtio-net side to a plain side: finish super-frames (segments, checksums).
    Finish,
    /// plain side to a virtio-net side: prepend an empty header.
    AddHeader,
}

/// Frames received from one side and not yet accepted by the other.
struct Direction {
    batch: FrameBatch,
    conversion: Conversion,
    /// Converted frames (when `conversion` is not None), reused between batches.
    converted: Vec<Vec<u8>>,
    converted_len: usize,
    scratch: Vec<u8>,
    next: usize,
    /// Whether frames go straight between a tap and the other plug's memory.
    direct: DirectMode,
}

impl Direction {
    fn new(src: &Plug, dst: &Plug) -> Direction {
        let conversion = match (src.vnet(), dst.vnet()) {
            (true, false) => Conversion::Finish,
            (false, true) => Conversion::AddHeader,
            _ => Conversion::None,
        };
        let size = if src.vnet() {
            crate::plug::VNET_FRAME_BUF
        } else {
            crate::plug::FRAME_BUF
        };
        Direction {
            batch: FrameBatch::with_frame_size(64, size),
            conversion,
            converted: Vec::new(),
            converted_len: 0,
            scratch: Vec::new(),
            next: 0,
            direct: if conversion == Conversion::None {
                DirectMode::Untried
            } else {
                DirectMode::No
            },
        }
    }

    fn len(&self) -> usize {
        match self.conversion {
            Conversion::None => self.batch.len(),
            _ => self.converted_len,
        }
    }

    fn frame(&self, i: usize) -> &[u8] {
        match self.conversion {
            Conversion::None => self.batch.frame(i),
            _ => &self.converted[i],
        }
    }

    fn pending(&self) -> bool {
        self.next < self.len()
    }

    /// Converts the frames just received into `converted`.
    fn convert(&mut self) {
        use crate::wire::vnet;
        self.converted_len = 0;
        let Direction {
            batch,
            conversion,
            converted,
            converted_len,
            scratch,
            ..
        } = self;
        let mut push = |bytes: &[&[u8]]| {
            if *converted_len == converted.len() {
                converted.push(Vec::new());
            }
            let slot = &mut converted[*converted_len];
            slot.clear();
            for b in bytes {
                slot.extend_from_slice(b);
            }
            *converted_len += 1;
        };
        for f in batch.frames() {
            match conversion {
                Conversion::None => {}
                Conversion::AddHeader => push(&[&[0u8; vnet::HEADER_LEN], f]),
                Conversion::Finish => {
                    let Ok(hdr) = vnet::Header::parse(f) else {
                        continue;
                    };
                    let frame = &f[vnet::HEADER_LEN..];
                    if let Err(e) = vnet::finish(&hdr, frame, scratch, |seg| push(&[seg])) {
                        tracing::debug!("super-frame dropped: {e}");
                    }
                }
            }
        }
    }
}

/// Whether a direction moves frames without a buffer ([`Plug::move_direct`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum DirectMode {
    Untried,
    No,
    /// The destination reads the source's tap into its own memory.
    IntoDst,
    /// The source writes the destination's tap from its own memory.
    FromSrc,
}

/// Which side a direct move failed on.
enum Fault {
    Src(io::Error),
    Dst(io::Error),
}

/// Moves up to 64 frames from `src` to `dst` without a buffer in between, when one is a tap
/// and the other can read or write it directly (`ipn://`). Ok(true) when this direction is
/// done for this turn; Ok(false) when direct moves are not possible (then never tried again).
fn move_direct(dir: &mut Direction, src: &mut Plug, dst: &mut Plug) -> Result<bool, Fault> {
    use crate::plug::Direct;
    for _ in 0..64 {
        let moved = match dir.direct {
            DirectMode::No => return Ok(false),
            DirectMode::Untried | DirectMode::IntoDst => match dst.move_direct(src, true) {
                Err((true, e)) => Err(Fault::Src(e)),
                Err((false, e)) => Err(Fault::Dst(e)),
                Ok(Direct::Unsupported) if dir.direct == DirectMode::Untried => {
                    match src.move_direct(dst, false) {
                        Err((true, e)) => Err(Fault::Dst(e)),
                        Err((false, e)) => Err(Fault::Src(e)),
                        Ok(d) => {
                            dir.direct = if d == Direct::Unsupported {
                                DirectMode::No
                            } else {
                                DirectMode::FromSrc
                            };
                            Ok(d)
                        }
                    }
                }
                Ok(d) => {
                    if d != Direct::Unsupported {
                        dir.direct = DirectMode::IntoDst;
                    }
                    Ok(d)
                }
            },
            DirectMode::FromSrc => match src.move_direct(dst, false) {
                Err((true, e)) => Err(Fault::Dst(e)),
                Err((false, e)) => Err(Fault::Src(e)),
                Ok(d) => Ok(d),
            },
        };
        match moved {
            Ok(Direct::Unsupported) => {
                dir.direct = DirectMode::No;
                return Ok(false);
            }
            Ok(_) => {}
            Err(Fault::Src(e) | Fault::Dst(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                return Ok(true)
            }
            Err(f) => return Err(f),
        }
    }
    Ok(true)
}

fn is_hangup(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::NotConnected
    )
}

fn end(side: usize, plug: &Plug, error: io::Error) -> CableEnd {
    if is_hangup(&error) {
        let text = error.to_string();
        let reason = if text.contains(plug.name()) {
            text
        } else {
            format!("{}: {text}", plug.name())
        };
        CableEnd::Hangup { side, reason }
    } else {
        CableEnd::Failed { side, error }
    }
}

/// Moves pending frames of `dir` into `dst`. Returns Ok(true) when all were taken.
fn drain(dir: &mut Direction, dst: &mut Plug) -> io::Result<bool> {
    if dst.has_pending_output() {
        match dst.flush() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            other => other?,
        }
    }
    while dir.pending() {
        let mut frames: [&[u8]; crate::sys::BATCH_MAX] = [&[]; crate::sys::BATCH_MAX];
        let n = (dir.len() - dir.next).min(crate::sys::BATCH_MAX);
        for (i, slot) in frames.iter_mut().take(n).enumerate() {
            *slot = dir.frame(dir.next + i);
        }
        match dst.send_batch(&frames[..n]) {
            Ok(sent) => dir.next += sent,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if crate::plug::refuses_frame(&e) => {
                dst.count_refused();
                dir.next += 1;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(!dst.has_pending_output())
}

/// Runs the cable until a side goes away or `stop` is raised. `stop` is checked whenever a
/// signal interrupts the wait, and at least every `tick`.
pub fn run(plugs: &mut [Plug; 2], stop: &AtomicBool) -> CableEnd {
    let tick = Duration::from_millis(500);
    let mut dirs = [
        Direction::new(&plugs[0], &plugs[1]),
        Direction::new(&plugs[1], &plugs[0]),
    ];
    let mut entries: Vec<PollEntry> = Vec::with_capacity(6);
    loop {
        if stop.load(Ordering::Relaxed) {
            return CableEnd::Stopped;
        }
        entries.clear();
        // Layout: [data0, write0, data1, write1, ctl0?, ctl1?]; direction i reads side i.
        for side in 0..2 {
            let other = 1 - side;
            let p = &plugs[side];
            let blocked_out = dirs[other].pending() || p.has_pending_output();
            entries.push(PollEntry::new(
                p.data_fd_raw(),
                !dirs[side].pending(),
                false,
            ));
            entries.push(PollEntry::new(p.write_fd_raw(), false, blocked_out));
        }
        let mut ctl_sides = [None, None];
        for (side, slot) in ctl_sides.iter_mut().enumerate() {
            if let Some(fd) = plugs[side].ctl_fd_raw() {
                *slot = Some(entries.len());
                entries.push(PollEntry::new(fd, true, false));
            }
        }
        // Frames already inside a plug (the rest of a train) are read without waiting.
        let waiting_inside =
            (0..2).any(|side| !dirs[side].pending() && plugs[side].has_pending_input());
        let timeout = if waiting_inside { Duration::ZERO } else { tick };
        if let Err(e) = sys::poll(&mut entries, Some(timeout)) {
            return CableEnd::Failed { side: 0, error: e };
        }
        for (side, slot) in ctl_sides.iter().enumerate() {
            if let Some(i) = *slot {
                if entries[i].ready.readable || entries[i].ready.hangup {
                    return CableEnd::Hangup {
                        side,
                        reason: format!("{}: the switch closed the connection", plugs[side].name()),
                    };
                }
            }
        }
        for side in 0..2 {
            let other = 1 - side;
            let (src, dst) = if side == 0 {
                let (a, b) = plugs.split_at_mut(1);
                (&mut a[0], &mut b[0])
            } else {
                let (a, b) = plugs.split_at_mut(1);
                (&mut b[0], &mut a[0])
            };
            let dir = &mut dirs[side];
            // Finish what is pending first: order is preserved and nothing is dropped.
            match drain(dir, dst) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => return end(other, dst, e),
            }
            let readable = entries[side * 2].ready.readable || entries[side * 2].ready.hangup;
            // Transports may hold frames without a readable descriptor (decoded from a
            // stream, the rest of a train).
            if !readable && !src.has_pending_input() {
                continue;
            }
            if dir.direct != DirectMode::No {
                match move_direct(dir, src, dst) {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(Fault::Src(e)) => return end(side, src, e),
                    Err(Fault::Dst(e)) => return end(other, dst, e),
                }
            }
            // Bounded work per turn so one busy side cannot starve the other.
            for _ in 0..8 {
                match src.recv_batch(&mut dir.batch) {
                    Ok(_) => {
                        dir.next = 0;
                        if dir.conversion != Conversion::None {
                            dir.convert();
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        dir.next = 0;
                        dir.converted_len = 0;
                        break;
                    }
                    Err(e) => return end(side, src, e),
                }
                match drain(dir, dst) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => return end(other, dst, e),
                }
            }
        }
    }
}

/// Runs the cable like [`run`], and when a side that can be opened again
/// ([`Plug::reopener`]: a `vde://` switch) hangs up, reconnects it as `policy` says and goes
/// on. Frames in flight when the link went are lost; the other side is not read meanwhile.
/// Each loss and each return is logged at warn level.
pub fn run_reconnecting(plugs: &mut [Plug; 2], stop: &AtomicBool, policy: Policy) -> CableEnd {
    loop {
        let (side, reason) = match run(plugs, stop) {
            CableEnd::Hangup { side, reason } if plugs[side].reopener().is_some() => (side, reason),
            other => return other,
        };
        let Some(reopener) = plugs[side].reopener().cloned() else {
            return CableEnd::Hangup { side, reason };
        };
        let name = plugs[side].name().to_string();
        tracing::warn!("link lost ({reason}); reconnecting");
        match reconnect::reconnect(&reopener, policy, stop) {
            Ok(fresh) => {
                plugs[side].replace_with(fresh);
                tracing::warn!("{name}: link back");
            }
            Err(ReconnectError::Stopped) => return CableEnd::Stopped,
            Err(e) => {
                return CableEnd::GaveUp {
                    side,
                    reason: format!("{reason}; {e}"),
                }
            }
        }
    }
}
