//! A connected datagram (or seqpacket) socket carrying one frame per message: the data path of
//! `vde://`, `udp://` and `seqpacket://`, with batched `recvmmsg`/`sendmmsg`. With a filo
//! switch that agreed, a message may instead carry a train of frames ([`crate::wire::train`]).

use std::cell::RefCell;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use super::normalize;
use crate::plug::Transport;
use crate::sys;
use crate::wire::train;

/// How the transport treats a refused send/receive (ECONNREFUSED).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The peer is gone: report the error (UNIX sockets).
    Fatal,
    /// The network lost the frame (UDP with no listener yet): count it as sent / ignore it.
    Loss,
}

pub struct ConnectedDgram {
    fd: OwnedFd,
    /// Liveness channel (vde's control stream): EOF means the switch is gone.
    ctl: Option<UnixStream>,
    refused: Refused,
    /// Zero-length messages mean end of stream (SOCK_SEQPACKET).
    zero_is_eof: bool,
    /// Frames carry a virtio-net header (negotiated with a filo switch).
    vnet: bool,
    /// Messages are frame trains (negotiated with a filo switch); `Some` holds the last train
    /// received and how far it has been read.
    trains: Option<Box<TrainIn>>,
    kind: &'static str,
}

thread_local! {
    /// Trains land here first: one buffer per thread, so that a plug keeps no 64 KiB buffer
    /// of its own (a process with thousands of stacks has thousands of plugs).
    static TRAIN_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Leftover space kept between trains; more is given back.
const PENDING_KEEP: usize = 16 * 1024;

/// The receiving side of a connection carrying trains.
#[derive(Default)]
struct TrainIn {
    /// Records (with their headers) of the last train that did not fit in the caller's
    /// buffers; usually empty.
    pending: Vec<u8>,
    /// Offset of the next record in `pending`.
    next: usize,
    /// The last train held a single frame (a stream of super-frames): receive the next one
    /// straight into the caller's buffer.
    last_was_single: bool,
}

impl TrainIn {
    fn has_pending(&self) -> bool {
        self.next < self.pending.len()
    }

    /// Hands out what is pending; forgets it once all is out.
    fn hand_out_pending(&mut self, slots: &mut dyn Slots, n: &mut usize) {
        if self.has_pending() {
            self.next += hand_out(&self.pending[self.next..], slots, n);
        }
        if !self.has_pending() {
            self.pending.clear();
            self.next = 0;
            if self.pending.capacity() > PENDING_KEEP {
                self.pending = Vec::new();
            }
        }
    }

    /// Keeps records that did not fit for the next call.
    fn keep(&mut self, parts: &[&[u8]]) {
        for part in parts {
            self.pending.extend_from_slice(part);
        }
    }
}

/// Where received frames go: the buffers of a batch, or a single buffer.
trait Slots {
    fn count(&self) -> usize;
    fn buf(&mut self, i: usize) -> &mut [u8];
    /// The frame's full length (larger than the buffer when it did not fit; 0 for a malformed
    /// train, which the plug counts as a frame too short).
    fn set_len(&mut self, i: usize, len: usize);
}

struct BatchSlots<'a> {
    bufs: &'a mut [Vec<u8>],
    lens: &'a mut [usize],
}

impl Slots for BatchSlots<'_> {
    fn count(&self) -> usize {
        self.bufs.len().min(self.lens.len())
    }
    fn buf(&mut self, i: usize) -> &mut [u8] {
        &mut self.bufs[i]
    }
    fn set_len(&mut self, i: usize, len: usize) {
        self.lens[i] = len;
    }
}

struct OneSlot<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Slots for OneSlot<'_> {
    fn count(&self) -> usize {
        1
    }
    fn buf(&mut self, _: usize) -> &mut [u8] {
        self.buf
    }
    fn set_len(&mut self, _: usize, len: usize) {
        self.len = len;
    }
}

/// Copies the records of `data` (a train or what is left of one) into the slots from `*n` on,
/// while there are slots. Returns how many bytes of `data` were used up: all of them, or up to
/// the first record that found no slot. A malformed rest of a train uses up everything and
/// takes one slot, with length 0.
fn hand_out(data: &[u8], slots: &mut dyn Slots, n: &mut usize) -> usize {
    let mut records = train::records(data);
    while *n < slots.count() {
        match records.next() {
            None => return data.len(),
            Some(Ok(frame)) => {
                let out = slots.buf(*n);
                let k = frame.len().min(out.len());
                out[..k].copy_from_slice(&frame[..k]);
                slots.set_len(*n, frame.len());
            }
            Some(Err(e)) => {
                tracing::warn!("dropped the rest of a frame train from the switch: {e}");
                slots.set_len(*n, 0);
                *n += 1;
                return data.len();
            }
        }
        *n += 1;
    }
    records.position()
}

/// Receives one train: its frames go to the slots from `*n` on, what does not fit to
/// `rx.pending`. `WouldBlock` when none is waiting.
fn receive_train(
    fd: RawFd,
    rx: &mut TrainIn,
    slots: &mut dyn Slots,
    n: &mut usize,
) -> io::Result<()> {
    TRAIN_SCRATCH.with(|cell| {
        let mut scratch = cell.borrow_mut();
        if scratch.len() < train::MAX_DATAGRAM {
            scratch.resize(train::MAX_DATAGRAM, 0);
        }
        if !rx.last_was_single {
            let total = sys::recv_dgram(fd, &mut scratch).map_err(normalize)?;
            if total > scratch.len() {
                // Larger than any train a filo switch sends: reported as a frame too large
                // for its buffer, so the plug counts it as oversize.
                let out_len = slots.buf(*n).len();
                slots.set_len(*n, total.max(out_len + 1));
                *n += 1;
                return Ok(());
            }
            rx.last_was_single = matches!(
                train::records(&scratch[..total]).next(),
                Some(Ok(f)) if f.len() + train::RECORD_HEADER_LEN == total
            );
            let used = hand_out(&scratch[..total], slots, n);
            rx.keep(&[&scratch[used..total]]);
            return Ok(());
        }
        // After a train of one (a super-frame), the next lands with its first frame straight
        // in the caller's buffer; should it hold more, the rest lands in the scratch buffer.
        let mut header = [0u8; train::RECORD_HEADER_LEN];
        let out_len = slots.buf(*n).len();
        let total = {
            let mut iov = [
                IoSliceMut::new(&mut header),
                IoSliceMut::new(slots.buf(*n)),
                IoSliceMut::new(&mut scratch),
            ];
            sys::recv_scattered(fd, &mut iov).map_err(normalize)?
        };
        if total == 0 {
            return Ok(());
        }
        let slot = *n;
        *n += 1;
        if total > train::MAX_DATAGRAM {
            slots.set_len(slot, total.max(out_len + 1));
            return Ok(());
        }
        let body = total - total.min(train::RECORD_HEADER_LEN);
        let in_out = body.min(out_len);
        let in_scratch = body - in_out;
        // A datagram shorter than a header has no body, so no length can pass.
        let first = match train::record_len(header, 0, body) {
            Ok(len) => len,
            Err(e) => {
                tracing::warn!("dropped a malformed frame train from the switch: {e}");
                slots.set_len(slot, 0);
                return Ok(());
            }
        };
        rx.last_was_single = first == body;
        slots.set_len(slot, first);
        // The rest of the train, if any: behind the first frame in the caller's buffer, then
        // in the scratch buffer (or only there, when the first frame overflowed).
        if first <= out_len {
            let out = slots.buf(slot);
            rx.keep(&[&out[first..in_out], &scratch[..in_scratch]]);
        } else {
            rx.keep(&[&scratch[first - out_len..in_scratch]]);
        }
        Ok(())
    })
}

impl ConnectedDgram {
    pub fn new(
        fd: OwnedFd,
        ctl: Option<UnixStream>,
        refused: Refused,
        zero_is_eof: bool,
        kind: &'static str,
    ) -> io::Result<Self> {
        sys::set_nonblocking(fd.as_raw_fd())?;
        Ok(ConnectedDgram {
            fd,
            ctl,
            refused,
            zero_is_eof,
            vnet: false,
            trains: None,
            kind,
        })
    }

    /// Marks the connection as carrying frame trains.
    pub fn with_trains(mut self, trains: bool) -> Self {
        self.trains = trains.then(Box::default);
        self
    }

    /// Receives frames from trains into `slots`: what is left of the last train first, then
    /// new trains until the slots are full or nothing is waiting.
    fn recv_trains(&mut self, slots: &mut dyn Slots) -> io::Result<usize> {
        let fd = self.fd.as_raw_fd();
        let Some(rx) = self.trains.as_mut() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let mut n = 0;
        loop {
            rx.hand_out_pending(slots, &mut n);
            if n == slots.count() {
                return Ok(n);
            }
            match receive_train(fd, rx, slots, &mut n) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && n > 0 => return Ok(n),
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends messages (each made of one or two pieces) as trains; returns how many went.
    fn send_trains<const K: usize>(&mut self, msgs: &[[&[u8]; K]]) -> io::Result<usize> {
        // Room below is for a record header and two pieces per message.
        const { assert!(K <= 2) };
        let mut sent = 0;
        while sent < msgs.len() {
            let rest = &msgs[sent..];
            let lens = |m: &[&[u8]; K]| m.iter().map(|p| p.len()).sum::<usize>();
            let count = train::fit(rest.iter().map(lens));
            let mut headers = [[0u8; train::RECORD_HEADER_LEN]; train::MAX_RECORDS];
            for (h, m) in headers.iter_mut().zip(&rest[..count]) {
                *h = train::record_header(lens(m));
            }
            let mut iov = [IoSlice::new(&[]); train::MAX_RECORDS * 3];
            let mut k = 0;
            for (h, m) in headers.iter().zip(&rest[..count]) {
                iov[k] = IoSlice::new(h);
                k += 1;
                for piece in m {
                    iov[k] = IoSlice::new(piece);
                    k += 1;
                }
            }
            match sys::send_vectored(self.fd.as_raw_fd(), &iov[..k]) {
                Ok(_) => sent += count,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && sent > 0 => break,
                Err(e) => return Err(normalize(e)),
            }
        }
        Ok(sent)
    }

    /// Marks the connection as carrying virtio-net headers.
    pub fn with_vnet(mut self, vnet: bool) -> Self {
        self.vnet = vnet;
        self
    }

    fn check_refused(&self, e: io::Error) -> io::Result<()> {
        if e.raw_os_error() == Some(libc::ECONNREFUSED) && self.refused == Refused::Loss {
            Ok(())
        } else {
            Err(normalize(e))
        }
    }

    fn eof(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{}: peer closed the connection", self.kind),
        )
    }
}

impl Transport for ConnectedDgram {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.trains.is_some() {
            let mut one = OneSlot { buf, len: 0 };
            self.recv_trains(&mut one)?;
            return Ok(one.len);
        }
        loop {
            match sys::recv_dgram(self.fd.as_raw_fd(), buf) {
                Ok(0) if self.zero_is_eof => return Err(self.eof()),
                Ok(n) => return Ok(n),
                Err(e) => self.check_refused(e)?,
            }
        }
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        if self.trains.is_some() {
            return self.send_trains(&[[frame]]).map(drop);
        }
        match sys::send_dgram(self.fd.as_raw_fd(), frame) {
            Ok(_) => Ok(()),
            Err(e) => self.check_refused(e),
        }
    }

    fn recv_batch(&mut self, bufs: &mut [Vec<u8>], lens: &mut [usize]) -> io::Result<usize> {
        if self.trains.is_some() {
            return self.recv_trains(&mut BatchSlots { bufs, lens });
        }
        loop {
            match sys::recv_many(self.fd.as_raw_fd(), bufs, lens) {
                Ok(n) => {
                    if self.zero_is_eof && lens[..n].contains(&0) {
                        return Err(self.eof());
                    }
                    return Ok(n);
                }
                Err(e) => self.check_refused(e)?,
            }
        }
    }

    fn send_batch(&mut self, frames: &[&[u8]]) -> io::Result<usize> {
        if self.trains.is_some() {
            let mut msgs: [[&[u8]; 1]; train::MAX_RECORDS] = [[&[]]; train::MAX_RECORDS];
            let count = frames.len().min(train::MAX_RECORDS);
            for (m, f) in msgs.iter_mut().zip(frames) {
                *m = [f];
            }
            return self.send_trains(&msgs[..count]);
        }
        match sys::send_many(self.fd.as_raw_fd(), frames) {
            Ok(n) => Ok(n),
            // The first frame was lost to the network; move past it.
            Err(e) => self.check_refused(e).map(|()| 1),
        }
    }

    fn send_batch_joined(&mut self, msgs: &[[&[u8]; 2]]) -> io::Result<usize> {
        if self.trains.is_some() {
            return self.send_trains(msgs);
        }
        match sys::send_many_gathered(self.fd.as_raw_fd(), msgs) {
            Ok(n) => Ok(n),
            Err(e) => self.check_refused(e).map(|()| 1),
        }
    }

    fn data_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn ctl_fd(&self) -> Option<BorrowedFd<'_>> {
        self.ctl.as_ref().map(|s| s.as_fd())
    }

    fn vnet(&self) -> bool {
        self.vnet
    }

    fn has_pending_input(&self) -> bool {
        self.trains.as_ref().is_some_and(|rx| rx.has_pending())
    }

    fn kind(&self) -> &'static str {
        self.kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FrameBatch, Plug};
    use std::os::unix::net::UnixDatagram;

    fn frame(seq: u8, len: usize) -> Vec<u8> {
        let mut f = vec![seq; len];
        f[..12].copy_from_slice(&[2, 0, 0, 0, 0, 0xb, 2, 0, 0, 0, 0, 0xa]);
        f
    }

    fn train_plugs() -> (Plug, Plug) {
        let (a, b) = UnixDatagram::pair().unwrap();
        let wrap = |s: UnixDatagram| {
            let t = ConnectedDgram::new(OwnedFd::from(s), None, Refused::Fatal, false, "test")
                .unwrap()
                .with_trains(true);
            Plug::from_transport("test", Box::new(t))
        };
        (wrap(a), wrap(b))
    }

    #[test]
    fn a_batch_travels_as_one_train_and_comes_out_in_order_through_small_batches() {
        let (mut a, mut b) = train_plugs();
        let frames: Vec<Vec<u8>> = (0..40).map(|i| frame(i, 60 + 37 * i as usize)).collect();
        let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
        assert_eq!(a.send_batch(&refs).unwrap(), 40);
        // One datagram carried them all: after the first frame the rest wait inside the plug.
        let mut got = Vec::new();
        let mut one = vec![0u8; 2000];
        let n = b.recv(&mut one).unwrap();
        got.push(one[..n].to_vec());
        assert!(b.has_pending_input());
        let mut batch = FrameBatch::new(7);
        while got.len() < frames.len() {
            let n = b.recv_batch(&mut batch).unwrap();
            assert!(n > 0);
            got.extend(batch.frames().map(|f| f.to_vec()));
        }
        assert_eq!(got, frames);
        assert!(!b.has_pending_input());
        let err = b.recv(&mut one).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(b.stats().frames_in, 40);
    }

    #[test]
    fn a_malformed_train_is_counted_and_the_frames_before_it_are_kept() {
        let (raw, b) = UnixDatagram::pair().unwrap();
        let t = ConnectedDgram::new(OwnedFd::from(b), None, Refused::Fatal, false, "test")
            .unwrap()
            .with_trains(true);
        let mut b = Plug::from_transport("test", Box::new(t));
        let good = frame(1, 60);
        let mut bad = train::record_header(good.len()).to_vec();
        bad.extend_from_slice(&good);
        bad.extend_from_slice(&train::record_header(500));
        bad.extend_from_slice(&[0u8; 10]);
        raw.send(&bad).unwrap();
        // Then a datagram too large for any train.
        raw.send(&vec![0u8; train::MAX_DATAGRAM + 1]).unwrap();
        let mut next = frame(2, 100);
        let mut train2 = train::record_header(next.len()).to_vec();
        train2.append(&mut next.clone());
        raw.send(&train2).unwrap();
        let mut buf = vec![0u8; 70_000];
        let n = b.recv(&mut buf).unwrap();
        assert!(
            buf[..n] == good[..],
            "the frame before the malformed record"
        );
        let n = b.recv(&mut buf).unwrap();
        next.truncate(100);
        assert!(buf[..n] == next[..], "the next train's frame");
        let s = b.stats();
        assert_eq!(
            (s.frames_in, s.dropped_short, s.dropped_oversize),
            (2, 1, 1)
        );
    }

    #[test]
    fn a_frame_too_large_for_the_buffer_is_counted_and_the_rest_of_its_train_kept() {
        let (mut a, mut b) = train_plugs();
        let frames = [frame(5, 3000), frame(6, 60), frame(7, 1500)];
        let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
        assert_eq!(a.send_batch(&refs).unwrap(), 3);
        let mut buf = vec![0u8; 2000];
        let n = b.recv(&mut buf).unwrap();
        assert!(buf[..n] == frames[1][..]);
        let n = b.recv(&mut buf).unwrap();
        assert!(buf[..n] == frames[2][..]);
        assert_eq!((b.stats().frames_in, b.stats().dropped_oversize), (2, 1));
    }

    #[test]
    fn after_a_train_of_one_the_next_train_lands_in_the_callers_buffer_intact() {
        let (mut a, mut b) = train_plugs();
        let mut buf = vec![0u8; 2000];
        let mut expect = |b: &mut Plug, f: &[u8]| {
            let n = b.recv(&mut buf).unwrap();
            assert!(buf[..n] == f[..], "frame of {} bytes", f.len());
        };
        let single = frame(1, 100);
        let trains = [
            vec![frame(2, 60), frame(3, 3000), frame(4, 100)],
            vec![frame(5, 3000), frame(6, 60), frame(7, 1999)],
        ];
        for t in &trains {
            // A train of one first, so that the next is received scattered.
            a.send(&single).unwrap();
            expect(&mut b, &single);
            let refs: Vec<&[u8]> = t.iter().map(|f| &f[..]).collect();
            assert_eq!(a.send_batch(&refs).unwrap(), 3);
            for f in t.iter().filter(|f| f.len() <= 2000) {
                expect(&mut b, f);
            }
        }
        assert!(!b.has_pending_input());
        assert_eq!((b.stats().frames_in, b.stats().dropped_oversize), (6, 2));
    }

    #[test]
    fn a_plug_keeps_no_train_sized_buffer_once_its_frames_are_out() {
        let (a, b) = UnixDatagram::pair().unwrap();
        let open = |s: UnixDatagram| {
            ConnectedDgram::new(OwnedFd::from(s), None, Refused::Fatal, false, "test")
                .unwrap()
                .with_trains(true)
        };
        let (mut a, mut b) = (open(a), open(b));
        let frames: Vec<Vec<u8>> = (0..60).map(|i| frame(i, 1000)).collect();
        let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
        assert_eq!(a.send_batch(&refs).unwrap(), 60);
        let mut buf = vec![0u8; 2000];
        for f in &frames {
            let n = b.recv(&mut buf).unwrap();
            assert!(buf[..n] == f[..]);
        }
        assert!(!b.has_pending_input());
        let rx = b.trains.as_ref().unwrap();
        assert!(
            rx.pending.capacity() <= PENDING_KEEP,
            "{}",
            rx.pending.capacity()
        );
    }

    #[test]
    fn single_sends_and_super_frames_alone_are_trains_of_one() {
        let (mut a, mut b) = train_plugs();
        let big = frame(3, 9000);
        a.send(&big).unwrap();
        let hdr = [0u8; crate::wire::vnet::HEADER_LEN];
        let small = frame(4, 60);
        assert_eq!(a.send_batch_joined(&[[&hdr, &small]]).unwrap(), 1);
        let mut buf = vec![0u8; 10_000];
        let n = b.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], &big[..]);
        let n = b.recv(&mut buf).unwrap();
        assert_eq!(&buf[..12], &hdr[..]);
        assert_eq!(&buf[12..n], &small[..]);
    }
}
