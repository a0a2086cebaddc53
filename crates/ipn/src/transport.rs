//! The `ipn://` plug: a bus member behind filo-vnl's [`Transport`] interface.
//!
//! Its data descriptor is the member's eventfd, readable after a sender woke it. A receive
//! that finds nothing announces "sleeping" in the member's record before it returns
//! `WouldBlock`; senders write to a member's eventfd only when it announced that, so a busy
//! bus carries frames without any system call. With `busypoll` the plug never sleeps: it
//! reports pending input all the time and its caller spins (lowest latency, one core).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use filo_vnl::plug::{Direct, Transport};

use crate::bus::Bus;
use crate::ring::{Member, Recv};

pub struct IpnTransport {
    // Declared first: the member leaves before the bus (and its server thread) goes.
    member: Member,
    wake: Arc<Vec<OwnedFd>>,
    busy_poll: bool,
    sleeping: bool,
    /// Frames sent in place since receivers were last woken.
    unwoken: u32,
    bus: Bus,
}

impl IpnTransport {
    pub fn new(bus: Bus, member: Member, busy_poll: bool) -> IpnTransport {
        if busy_poll {
            // Busy polling never sleeps: the data descriptor stays readable, so an event loop
            // that polls it keeps calling recv.
            crate::sys::eventfd_signal(bus.wake_fds()[member.index()].as_raw_fd());
        }
        IpnTransport {
            wake: bus.wake_fds(),
            member,
            busy_poll,
            sleeping: true,
            unwoken: 0,
            bus,
        }
    }

    pub fn member(&self) -> &Member {
        &self.member
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }
}

/// How many times an idle receive looks at the ring again before it sleeps.
const SPIN: u32 = 2000;
/// The same on a `vnet` bus. Its members are taps' peers (`filo ns`) and routers moving
/// super-frames that take microseconds each to copy: spinning ten times longer there only
/// took CPU from the processes that produce the frames (perf: 16 % of `filo ns` in this
/// spin at 2000; TCP through `filo router` on two vnet buses 6.3 against 5.0 Gbit/s,
/// medians of 3 interleaved rounds on a loaded machine, with 200).
const VNET_SPIN: u32 = 200;

/// Frames sent in place before their receivers are woken, at most (a cable moves up to 64
/// per turn and ends each run with the tap's `EAGAIN`, which wakes them too).
const WAKE_EVERY: u32 = 16;

fn would_block() -> io::Error {
    io::ErrorKind::WouldBlock.into()
}

impl IpnTransport {
    /// Receives one frame through `attempt` (one look at the ring): spins a little, then
    /// announces sleep when nothing comes (see the module's comment).
    fn recv_frame(&mut self, mut attempt: impl FnMut(&mut Member) -> Recv) -> io::Result<usize> {
        loop {
            match attempt(&mut self.member) {
                Recv::Frame(n) => {
                    if self.sleeping {
                        self.member.awake();
                        self.sleeping = false;
                    }
                    return Ok(n);
                }
                Recv::Pending if self.busy_poll => return Err(would_block()),
                Recv::Pending => {
                    // A sender claimed the next slot and is still writing it. Announce
                    // "sleeping" before giving up (the eventfd may have been drained), then
                    // look once more: a sender publishing after the announcement wakes us.
                    self.member.announce_sleep();
                    self.sleeping = true;
                    if let Recv::Frame(n) = attempt(&mut self.member) {
                        self.member.awake();
                        self.sleeping = false;
                        return Ok(n);
                    }
                    return Err(would_block());
                }
                Recv::Idle if self.busy_poll => return Err(would_block()),
                Recv::Idle => {
                    // Under load the next frame is microseconds away: look a little longer
                    // before paying for a sleep and a wake-up (two system calls and a
                    // scheduling round trip).
                    let spins = if self.bus.params().vnet {
                        VNET_SPIN
                    } else {
                        SPIN
                    };
                    if self.member.spin_for_pending(spins) {
                        continue;
                    }
                    if self.member.prepare_sleep() {
                        self.sleeping = true;
                        return Err(would_block());
                    }
                }
            }
        }
    }

    /// One frame from a tap straight into the ring slot it occupies.
    fn send_from_fd(
        &mut self,
        fd: BorrowedFd<'_>,
        sizes: std::ops::RangeInclusive<usize>,
    ) -> io::Result<Direct> {
        // In place, a slot is claimed before the tap is read; on a lossless bus a claim may
        // wait for the slowest member, which it must not do for a frame that may not exist
        // (the cable would stop serving the other direction meanwhile): there the buffered
        // path, which claims only with a frame in hand.
        if self.bus.params().lossless {
            return Ok(Direct::Unsupported);
        }
        let sent = self
            .member
            .send_in_place(sizes, |region, off, cap| region.read_from_fd(fd, off, cap));
        // Receivers are woken once per run of frames (the tap had nothing more, or an error)
        // and every WAKE_EVERY frames, as send_batch wakes them once per batch.
        self.unwoken += 1;
        if sent.is_err() || self.unwoken >= WAKE_EVERY {
            self.unwoken = 0;
            self.member.flush_wakes();
        }
        Ok(match sent? {
            Some(n) => Direct::Moved(n),
            None => Direct::Refused(0),
        })
    }

    /// One frame from its ring slot straight to a tap. A tap that cannot take it now
    /// (`EAGAIN`) drops it, as a full queue would.
    fn recv_to_fd(
        &mut self,
        fd: BorrowedFd<'_>,
        sizes: std::ops::RangeInclusive<usize>,
    ) -> io::Result<Direct> {
        let mut outcome = Ok(Direct::Dropped);
        let (min, cap) = (*sizes.start(), *sizes.end());
        self.recv_frame(|m| {
            m.recv_with(cap, |region, off, len| {
                // `len` was read once and checked against the slot and `cap` by the ring. The
                // bytes (virtio-net header included) are the kernel's to judge: it copies them
                // once and validates its copy, which a member rewriting the slot meanwhile cannot
                // change (a check here would be of bytes that may change after it). A frame it
                // refuses (EINVAL) is dropped and counted by the plug, the cable goes on.
                outcome = if len < min {
                    Ok(Direct::Refused(len))
                } else {
                    match region.write_to_fd(fd, off, len) {
                        Ok(_) => Ok(Direct::Moved(len)),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Direct::Dropped),
                        Err(e) => Err(e),
                    }
                };
            })
        })?;
        outcome
    }
}

impl Transport for IpnTransport {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv_frame(|m| m.recv(buf))
    }

    fn move_frame_fd(
        &mut self,
        fd: BorrowedFd<'_>,
        send: bool,
        sizes: std::ops::RangeInclusive<usize>,
    ) -> io::Result<Direct> {
        if send {
            self.send_from_fd(fd, sizes)
        } else {
            self.recv_to_fd(fd, sizes)
        }
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        self.member.send_batch(&[frame]).map(|_| ())
    }

    fn send_batch(&mut self, frames: &[&[u8]]) -> io::Result<usize> {
        self.member.send_batch(frames)
    }

    fn data_fd(&self) -> BorrowedFd<'_> {
        self.wake[self.member.index()].as_fd()
    }

    fn has_pending_input(&self) -> bool {
        self.busy_poll || self.member.pending()
    }

    fn vnet(&self) -> bool {
        self.bus.params().vnet
    }

    fn kind(&self) -> &'static str {
        "ipn"
    }
}
