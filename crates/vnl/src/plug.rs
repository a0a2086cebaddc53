//! [`Plug`]: one endpoint of a virtual cable, whatever the transport behind it.
//!
//! A plug is non-blocking. Its [`Plug::data_fd`] becomes readable when [`Plug::recv`] may
//! return a frame; callers drain it until `WouldBlock` (stream transports buffer several
//! frames per read, so "readable once, receive many" is the rule). [`Plug::ctl_fd`], when the
//! transport has one, becomes readable when the other side goes away. Sends that cannot
//! proceed return `WouldBlock`; wait for [`Plug::write_fd`] to become writable and retry, which
//! is how back-pressure crosses a cable instead of silent loss.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::sys;

/// Largest Ethernet frame carried end to end (vdeplug4's VDE_ETHBUFSIZE: 9216 + 14 + 4).
pub const MAX_FRAME: usize = 9234;
/// Buffer size that holds any frame or stream record (stream records may be 2 bytes longer).
pub const FRAME_BUF: usize = crate::wire::stream::MAX_RECORD;
/// Buffer size that holds a virtio-net header and a super-frame.
pub const VNET_FRAME_BUF: usize =
    crate::wire::vnet::HEADER_LEN + crate::wire::vnet::MAX_SUPER_FRAME;
/// Frames shorter than an Ethernet header are dropped and counted.
pub const MIN_FRAME: usize = 14;

/// What one frame moved between a transport and a descriptor without a buffer in between
/// came to ([`Transport::move_frame_fd`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direct {
    /// The transport cannot do it: use `recv` and `send` with a buffer.
    Unsupported,
    /// A frame of this length went across.
    Moved(usize),
    /// A frame of this length was dropped: its size was outside the range asked for.
    Refused(usize),
    /// A frame was dropped, counted as refused: the descriptor could not take it (`EAGAIN`,
    /// or `EIO`: a tap whose interface is down) or refused what it holds (a tap judging its
    /// virtio-net header: `EINVAL`, see [`refuses_frame`]).
    Dropped,
}

/// Whether a send error concerns only the frame sent, not the transport: the kernel refused
/// the frame's contents (a tap judging a virtio-net header answers `EINVAL`). That frame is
/// dropped and counted and the cable goes on, on the buffered path and the direct one alike.
pub(crate) fn refuses_frame(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::InvalidInput
}

/// What a transport does. Implementations are non-blocking.
pub trait Transport: Send {
    /// Receives one frame into `buf`; returns its length, which may exceed `buf.len()` when the
    /// datagram was truncated. `WouldBlock` when nothing is pending.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Sends one frame. `WouldBlock` when the peer cannot take it now.
    fn send(&mut self, frame: &[u8]) -> io::Result<()>;
    /// Readable when `recv` may succeed.
    fn data_fd(&self) -> BorrowedFd<'_>;
    /// Writable when a `send` that returned `WouldBlock` may succeed.
    fn write_fd(&self) -> BorrowedFd<'_> {
        self.data_fd()
    }
    /// Readable (EOF) when the other side is gone; None for connectionless transports.
    fn ctl_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
    /// Receives up to `bufs.len()` frames; lengths go to `lens`. Default: repeated `recv`.
    fn recv_batch(&mut self, bufs: &mut [Vec<u8>], lens: &mut [usize]) -> io::Result<usize> {
        let mut n = 0;
        while n < bufs.len().min(lens.len()) {
            match self.recv(&mut bufs[n]) {
                Ok(len) => {
                    lens[n] = len;
                    n += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && n > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }
    /// Sends frames from the front of `frames`; returns how many were sent (≥ 1) or an error.
    /// An error after some were sent ends the batch there: the frames sent are reported, and
    /// the failing one, at the front of the next call, gets its error then.
    fn send_batch(&mut self, frames: &[&[u8]]) -> io::Result<usize> {
        let mut n = 0;
        for frame in frames {
            match self.send(frame) {
                Ok(()) => n += 1,
                Err(_) if n > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }
    /// Sends frames each made of two pieces sent as one (a virtio-net header and the frame
    /// behind it). Default: joined in a buffer and sent one by one.
    fn send_batch_joined(&mut self, msgs: &[[&[u8]; 2]]) -> io::Result<usize> {
        let mut n = 0;
        let mut joined = Vec::new();
        for [a, b] in msgs {
            joined.clear();
            joined.extend_from_slice(a);
            joined.extend_from_slice(b);
            match self.send(&joined) {
                Ok(()) => n += 1,
                Err(_) if n > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }
    /// True when output is buffered inside the transport (stream transports).
    fn has_pending_output(&self) -> bool {
        false
    }
    /// True when received frames wait inside the transport (the rest of a frame train, frames
    /// decoded from a stream): `recv` succeeds although the descriptor may not be readable.
    fn has_pending_input(&self) -> bool {
        false
    }
    /// Writes buffered output; `WouldBlock` when some remains.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Polite goodbye before the plug is dropped (vxvde tells its peers to forget it).
    fn close(&mut self) {}
    /// True when every frame carries a 12-byte virtio-net header (see [`crate::wire::vnet`]).
    fn vnet(&self) -> bool {
        false
    }
    /// The largest IP packet (Ethernet payload) that crosses without being fragmented
    /// underneath, when the transport knows one below Ethernet's 1500 (an encapsulation);
    /// None otherwise. See [`Plug::mtu`].
    fn mtu(&self) -> Option<usize> {
        None
    }
    /// A descriptor that reads and writes exactly one whole frame per call, framed as this
    /// transport's frames are (a tap): a transport on the other side of a cable may move
    /// frames through it directly ([`Transport::move_frame_fd`]). None by default.
    fn frame_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
    /// Moves one frame between `fd` (a [`Transport::frame_fd`]) and the transport's own
    /// memory without a buffer in between. With `send`, reads a frame from `fd` straight into
    /// the transport and sends it (`ipn://`: `read` into the ring slot; `WouldBlock` when `fd`
    /// had nothing); otherwise receives a frame and writes it to `fd` straight from the
    /// transport (`ipn://`: `write` from the slot; `WouldBlock` when nothing is pending here).
    /// Frames whose length is outside `sizes` are dropped ([`Direct::Refused`]); other errors
    /// are `fd`'s, and a frame `fd` refused (`InvalidInput`) is gone, not kept for another
    /// try. Default: [`Direct::Unsupported`].
    fn move_frame_fd(
        &mut self,
        fd: BorrowedFd<'_>,
        send: bool,
        sizes: std::ops::RangeInclusive<usize>,
    ) -> io::Result<Direct> {
        let _ = (fd, send, sizes);
        Ok(Direct::Unsupported)
    }
    /// A short name for logs: `vde`, `ptp`, …
    fn kind(&self) -> &'static str;
    /// For a transport whose far end is served inside this process (a `slirp://` gateway
    /// behind a socket pair): serves `other` directly instead, on the calling thread, until
    /// `other`'s peer goes away or `stop` is raised. A cable between `other` and this plug
    /// then costs no socket pair and no thread hop per frame. `Err(other)` when it cannot
    /// (the default; or the far end already runs): the caller runs a cable as usual.
    fn serve(&mut self, other: Box<Plug>, stop: &AtomicBool) -> Result<io::Result<()>, Box<Plug>> {
        let _ = stop;
        Err(other)
    }
}

/// Per-plug counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PlugStats {
    pub frames_in: u64,
    pub bytes_in: u64,
    pub frames_out: u64,
    pub bytes_out: u64,
    /// Received frames shorter than 14 bytes.
    pub dropped_short: u64,
    /// Received frames longer than the receive buffer.
    pub dropped_oversize: u64,
    /// Frames refused on send because they were too short or too long, because the
    /// transport refused what they hold (a tap judging a virtio-net header), or, on the
    /// direct ring-to-tap path, because the tap could not take one already taken off the
    /// ring (its interface down, or full).
    pub refused_out: u64,
}

/// One end of a virtual cable.
pub struct Plug {
    transport: Box<dyn Transport>,
    stats: PlugStats,
    name: String,
    reopener: Option<crate::reconnect::Reopener>,
}

impl std::fmt::Debug for Plug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plug")
            .field("name", &self.name)
            .field("kind", &self.transport.kind())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Plug {
    /// Wraps a transport; `name` is the VNL or another label for messages.
    pub fn from_transport(name: impl Into<String>, transport: Box<dyn Transport>) -> Plug {
        Plug {
            transport,
            stats: PlugStats::default(),
            name: name.into(),
            reopener: None,
        }
    }

    /// How to open this plug's VNL again after its switch went away; None for transports
    /// where reconnecting makes no sense (only `vde://` plugs have one).
    pub fn reopener(&self) -> Option<&crate::reconnect::Reopener> {
        self.reopener.as_ref()
    }

    pub(crate) fn set_reopener(&mut self, reopener: crate::reconnect::Reopener) {
        self.reopener = Some(reopener);
    }

    /// Carries on over `fresh`'s connection (a reconnection): the old one is closed, the name
    /// and counters stay.
    pub fn replace_with(&mut self, mut fresh: Plug) {
        std::mem::swap(&mut self.transport, &mut fresh.transport);
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> &'static str {
        self.transport.kind()
    }

    pub fn stats(&self) -> PlugStats {
        self.stats
    }

    /// True when frames on this plug carry a virtio-net header (super-frames possible).
    pub fn vnet(&self) -> bool {
        self.transport.vnet()
    }

    /// The MTU interfaces on this plug should have unless the user set one: a `filo ns` tap
    /// and a filo-stack link take it. None means Ethernet's default (1500). `vxvde://` and
    /// `vxlan://` give the underlay's path MTU less their encapsulation.
    pub fn mtu(&self) -> Option<usize> {
        self.transport.mtu()
    }

    /// Serves `other` directly when the far end of this plug lives in this process, on the
    /// calling thread until `other`'s peer goes or `stop` is raised; `Err(other)` when this
    /// plug cannot (see [`Transport::serve`]): run a [`crate::cable`] then.
    pub fn serve(
        &mut self,
        other: Box<Plug>,
        stop: &AtomicBool,
    ) -> Result<io::Result<()>, Box<Plug>> {
        self.transport.serve(other, stop)
    }

    /// The accepted frame sizes (with the virtio-net header when [`Plug::vnet`]).
    fn size_range(&self) -> std::ops::RangeInclusive<usize> {
        if self.transport.vnet() {
            crate::wire::vnet::HEADER_LEN + MIN_FRAME..=VNET_FRAME_BUF
        } else {
            MIN_FRAME..=MAX_FRAME
        }
    }

    pub fn data_fd(&self) -> BorrowedFd<'_> {
        self.transport.data_fd()
    }

    pub fn write_fd(&self) -> BorrowedFd<'_> {
        self.transport.write_fd()
    }

    pub(crate) fn data_fd_raw(&self) -> RawFd {
        self.transport.data_fd().as_raw_fd()
    }

    pub(crate) fn write_fd_raw(&self) -> RawFd {
        self.transport.write_fd().as_raw_fd()
    }

    pub(crate) fn ctl_fd_raw(&self) -> Option<RawFd> {
        self.transport.ctl_fd().map(|fd| fd.as_raw_fd())
    }

    pub fn ctl_fd(&self) -> Option<BorrowedFd<'_>> {
        self.transport.ctl_fd()
    }

    /// Receives one frame without blocking. Frames under 14 bytes or larger than `buf` are
    /// dropped and counted. `WouldBlock` when none is pending.
    pub fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let len = self.transport.recv(buf)?;
            if self.accept_in(len, buf.len()) {
                return Ok(len);
            }
        }
    }

    fn accept_in(&mut self, len: usize, cap: usize) -> bool {
        if len < *self.size_range().start() {
            self.stats.dropped_short += 1;
            false
        } else if len > cap {
            self.stats.dropped_oversize += 1;
            false
        } else {
            self.stats.frames_in += 1;
            self.stats.bytes_in += len as u64;
            true
        }
    }

    /// Moves one frame from `src`'s [`Transport::frame_fd`] into this plug, or from this plug
    /// into `dst`'s, without a buffer in between, when a transport of the two can
    /// ([`Transport::move_frame_fd`]); both plugs count it.
    /// `Err((true, e))` is an error of `other`'s descriptor, `Err((false, e))` one of this
    /// plug (`WouldBlock`: nothing to move now).
    pub(crate) fn move_direct(
        &mut self,
        other: &mut Plug,
        into_self: bool,
    ) -> Result<Direct, (bool, io::Error)> {
        let (Some(fd), true) = (other.transport.frame_fd(), self.vnet() == other.vnet()) else {
            return Ok(Direct::Unsupported);
        };
        let sizes = self.size_range();
        let moved = if into_self {
            self.transport
                .move_frame_fd(fd, true, sizes)
                .map_err(|e| (true, e))?
        } else {
            match self.transport.move_frame_fd(fd, false, sizes) {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err((false, e)),
                // The interface is down (the kernel would drop the frame anyway, as
                // Tap::send), or one bad frame from the other side (a hostile member's
                // virtio-net header): dropped and counted, as drain does on the buffered path.
                Err(e) if e.raw_os_error() == Some(libc::EIO) || refuses_frame(&e) => {
                    Direct::Dropped
                }
                Err(e) => return Err((true, e)),
            }
        };
        let (from, to) = if into_self {
            (&mut other.stats, &mut self.stats)
        } else {
            (&mut self.stats, &mut other.stats)
        };
        match moved {
            Direct::Moved(len) => {
                from.frames_in += 1;
                from.bytes_in += len as u64;
                to.frames_out += 1;
                to.bytes_out += len as u64;
            }
            Direct::Refused(_) if into_self => to.refused_out += 1,
            Direct::Refused(_) => from.dropped_short += 1,
            Direct::Dropped => to.refused_out += 1,
            Direct::Unsupported => {}
        }
        Ok(moved)
    }

    /// Receives a batch of frames into `batch` (cleared first). Returns the number received;
    /// `WouldBlock` when none is pending.
    pub fn recv_batch(&mut self, batch: &mut FrameBatch) -> io::Result<usize> {
        batch.count = 0;
        loop {
            let n = self
                .transport
                .recv_batch(&mut batch.bufs, &mut batch.lens)?;
            // Compact: keep accepted frames at the front (swap buffers, no copying).
            let mut kept = 0;
            for i in 0..n {
                let cap = batch.bufs[i].len();
                if self.accept_in(batch.lens[i], cap) {
                    batch.bufs.swap(kept, i);
                    batch.lens[kept] = batch.lens[i];
                    kept += 1;
                }
            }
            if kept > 0 || n == 0 {
                batch.count = kept;
                return Ok(kept);
            }
        }
    }

    /// Sends one frame without blocking; `WouldBlock` when the peer cannot take it now.
    /// Frames under 14 or over 9234 bytes are refused with `InvalidInput`.
    pub fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        let range = self.size_range();
        if !range.contains(&frame.len()) {
            self.stats.refused_out += 1;
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "frame of {} bytes not sent on {}: frames must be {} to {} bytes",
                    frame.len(),
                    self.name,
                    range.start(),
                    range.end()
                ),
            ));
        }
        self.transport.send(frame)?;
        self.stats.frames_out += 1;
        self.stats.bytes_out += frame.len() as u64;
        Ok(())
    }

    /// Sends frames from the front of `frames`; returns how many went out. Invalid frames are
    /// skipped and counted (they count as sent so the caller moves on).
    pub fn send_batch(&mut self, frames: &[&[u8]]) -> io::Result<usize> {
        self.send_checked(frames, |f| f.len(), |t, ok| t.send_batch(ok))
    }

    /// Like [`Plug::send_batch`], each frame sent as the two pieces given (on a
    /// [`Plug::vnet`] plug: the virtio-net header, then the frame), without joining them.
    pub fn send_batch_joined(&mut self, msgs: &[[&[u8]; 2]]) -> io::Result<usize> {
        self.send_checked(
            msgs,
            |[a, b]| a.len() + b.len(),
            |t, ok| t.send_batch_joined(ok),
        )
    }

    /// The batch sends' common part: the valid frames at the front of `msgs` go to `send`, a
    /// leading invalid one is refused and counted, and what went out is counted.
    fn send_checked<M>(
        &mut self,
        msgs: &[M],
        len: impl Fn(&M) -> usize,
        send: impl FnOnce(&mut dyn Transport, &[M]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let range = self.size_range();
        let valid = msgs.iter().take_while(|m| range.contains(&len(m))).count();
        if valid == 0 {
            if msgs.is_empty() {
                return Ok(0);
            }
            self.stats.refused_out += 1;
            return Ok(1);
        }
        let n = send(self.transport.as_mut(), &msgs[..valid])?;
        self.stats.frames_out += n as u64;
        self.stats.bytes_out += msgs[..n].iter().map(|m| len(m) as u64).sum::<u64>();
        Ok(n)
    }

    /// Counts a frame the transport refused on send ([`refuses_frame`]), dropped by the caller.
    pub(crate) fn count_refused(&mut self) {
        self.stats.refused_out += 1;
    }

    /// True when frames wait inside the plug: receive them without waiting for readiness.
    pub fn has_pending_input(&self) -> bool {
        self.transport.has_pending_input()
    }

    pub fn has_pending_output(&self) -> bool {
        self.transport.has_pending_output()
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.transport.flush()
    }

    /// True when the other side has gone away (checked without blocking on the ctl fd).
    pub fn peer_gone(&self) -> bool {
        let Some(fd) = self.ctl_fd_raw() else {
            return false;
        };
        let mut entry = [sys::PollEntry::new(fd, true, false)];
        matches!(sys::poll(&mut entry, Some(Duration::ZERO)), Ok(n) if n > 0)
    }

    /// Waits up to `timeout` (None: forever) for a frame. `TimedOut` when none came,
    /// `ConnectionAborted` when the other side went away.
    pub fn recv_timeout(&mut self, buf: &mut [u8], timeout: Option<Duration>) -> io::Result<usize> {
        // A timeout past the clock's range waits forever, as None does.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            match self.recv(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return other,
            }
            let left = match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no frame received in time",
                        ));
                    }
                    Some(d - now)
                }
                None => None,
            };
            self.wait(true, false, left)?;
        }
    }

    /// Sends a frame, waiting up to `timeout` for the peer to make room.
    pub fn send_timeout(&mut self, frame: &[u8], timeout: Option<Duration>) -> io::Result<()> {
        // A timeout past the clock's range waits forever, as None does.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            match self.send(frame) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => {
                    if other.is_ok() {
                        self.flush_timeout(deadline)?;
                    }
                    return other;
                }
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "peer did not accept the frame in time",
                ));
            }
            self.wait(false, true, left)?;
        }
    }

    fn flush_timeout(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        loop {
            match self.flush() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return other,
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "output not flushed in time",
                ));
            }
            self.wait(false, true, left)?;
        }
    }

    /// Waits for readability and/or writability, or for the peer to go away.
    fn wait(&self, read: bool, write: bool, timeout: Option<Duration>) -> io::Result<()> {
        let mut entries = vec![
            sys::PollEntry::new(self.data_fd_raw(), read, false),
            sys::PollEntry::new(self.write_fd_raw(), false, write),
        ];
        if let Some(ctl) = self.ctl_fd_raw() {
            entries.push(sys::PollEntry::new(ctl, true, false));
        }
        sys::poll(&mut entries, timeout)?;
        if entries.len() > 2 && (entries[2].ready.readable || entries[2].ready.hangup) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("{}: the other side closed the connection", self.name),
            ));
        }
        Ok(())
    }
}

impl Drop for Plug {
    fn drop(&mut self) {
        self.transport.close();
    }
}

/// Reusable buffers for batched receive: no allocation per frame.
pub struct FrameBatch {
    bufs: Vec<Vec<u8>>,
    lens: Vec<usize>,
    count: usize,
}

impl FrameBatch {
    /// `capacity` frames of up to [`FRAME_BUF`] bytes each (capped at the syscall batch size).
    pub fn new(capacity: usize) -> FrameBatch {
        Self::with_frame_size(capacity, FRAME_BUF)
    }

    /// `capacity` frames of up to `size` bytes each ([`VNET_FRAME_BUF`] for super-frames).
    pub fn with_frame_size(capacity: usize, size: usize) -> FrameBatch {
        let capacity = capacity.clamp(1, sys::BATCH_MAX);
        FrameBatch {
            bufs: (0..capacity).map(|_| vec![0u8; size]).collect(),
            lens: vec![0; capacity],
            count: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The i-th received frame.
    pub fn frame(&self, i: usize) -> &[u8] {
        &self.bufs[i][..self.lens[i]]
    }

    /// The received frames, in order.
    pub fn frames(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.count).map(|i| self.frame(i))
    }

    /// The received frames, in order, to change in place (e.g. a checksum left open).
    pub fn frames_mut(&mut self) -> impl Iterator<Item = &mut [u8]> {
        self.bufs
            .iter_mut()
            .zip(&self.lens)
            .take(self.count)
            .map(|(b, &n)| &mut b[..n])
    }
}
