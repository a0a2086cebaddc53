//! The driver: one thread that serves any number of stacks. It waits (epoll, level-triggered)
//! on every stack's plug descriptors and on one wake eventfd, and sleeps until the earliest
//! deadline a stack asked for (smoltcp's `poll_at`, neighbour retries, DHCP). Nothing spins:
//! an idle process with a thousand stacks sleeps until a frame or a timer arrives.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use filo_vnl::sys::{Epoll, EpollEvent};
use filo_vnl::wire::vnet;
use filo_vnl::{FrameBatch, Plug};
use smoltcp::time::Instant;

use crate::net::{DropReason, Net};
use crate::stack::{Inner, Shared};

const WAKE: u64 = u64::MAX;
/// Set in the token of a plug's control descriptor: readable means its switch went away.
const CTL: u64 = 1 << 62;
/// Frames received from one link per service before others get a turn.
const RX_BUDGET: usize = 256;
/// Frames sent per system call.
const SEND_BATCH: usize = 64;
/// Frames a plug refused for now, kept until it is writable again.
const BACKLOG: usize = 1024;

/// The I/O half of a link: its plug (none for an unplugged link, or while it is being
/// reconnected) and the frames the plug refused for now. [`Net`] knows nothing of it.
#[derive(Default)]
pub(crate) struct Port {
    pub plug: Option<Plug>,
    /// Frames the plug refused with WouldBlock, sent when it becomes writable.
    pub backlog: VecDeque<Vec<u8>>,
}

/// Sends frames from the front of `frames` with one system call; returns how many went out.
/// On a super-frame link each goes behind its virtio-net header, gathered by the kernel
/// rather than copied here.
fn send_frames(plug: &mut Plug, mtu: usize, frames: &[Vec<u8>]) -> io::Result<usize> {
    let n = frames.len().min(SEND_BATCH);
    if plug.vnet() {
        let mut hdrs = [[0u8; vnet::HEADER_LEN]; SEND_BATCH];
        for (h, f) in hdrs.iter_mut().zip(&frames[..n]) {
            *h = vnet::header_for(f, mtu).emit();
        }
        let mut msgs: [[&[u8]; 2]; SEND_BATCH] = [[&[], &[]]; SEND_BATCH];
        for ((m, h), f) in msgs.iter_mut().zip(&hdrs).zip(&frames[..n]) {
            *m = [h, f];
        }
        plug.send_batch_joined(&msgs[..n])
    } else {
        let mut refs: [&[u8]; SEND_BATCH] = [&[]; SEND_BATCH];
        for (r, f) in refs.iter_mut().zip(&frames[..n]) {
            *r = f;
        }
        plug.send_batch(&refs[..n])
    }
}

/// Sends the frames `net` queued on plugged links, in batches (sendmmsg); what a plug refuses
/// for now waits in its port's backlog. `q` is a scratch vector, left empty. Frames of an
/// unplugged link stay in `net` (see `Stack::take_captured`).
pub(crate) fn transmit(net: &mut Net, ports: &mut [Port], q: &mut Vec<Vec<u8>>) {
    for (i, port) in ports.iter_mut().enumerate() {
        let Some(plug) = port.plug.as_mut() else {
            continue;
        };
        net.poll_transmit(i, q);
        if q.is_empty() {
            continue;
        }
        let mtu = net.links[i].mtu;
        let mut done = 0;
        // Behind a backlog, frames wait their turn.
        while port.backlog.is_empty() && done < q.len() {
            match send_frames(plug, mtu, &q[done..]) {
                Ok(n) => {
                    net.counters.frames_out += n as u64;
                    done += n.max(1);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!(link = %net.links[i].name, "send failed: {e}");
                    net.counters.drop(DropReason::SendError, 1);
                    done += 1;
                }
            }
        }
        for f in q.drain(done..) {
            if port.backlog.len() >= BACKLOG {
                net.counters.drop(DropReason::TxFull, 1);
            } else {
                port.backlog.push_back(f);
            }
        }
        for f in q.drain(..) {
            net.recycle(f);
        }
    }
}

/// Sends what port `i`'s backlog holds; true when it is empty afterwards.
fn flush_backlog(net: &mut Net, port: &mut Port, i: usize) -> bool {
    let Some(plug) = port.plug.as_mut() else {
        return true;
    };
    let mtu = net.links[i].mtu;
    while let Some(f) = port.backlog.front() {
        match send_frames(plug, mtu, std::slice::from_ref(f)) {
            Ok(_) => {
                net.counters.frames_out += 1;
                port.backlog.pop_front();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(_) => {
                net.counters.drop(DropReason::SendError, 1);
                port.backlog.pop_front();
            }
        }
    }
    true
}

pub(crate) struct DriverShared {
    wake: OwnedFd,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    new: Vec<Weak<Shared>>,
    dirty: Vec<usize>,
}

impl DriverShared {
    fn wake(&self) {
        let _ = filo_vnl::sys::write_fd(self.wake.as_raw_fd(), &1u64.to_ne_bytes());
    }

    pub(crate) fn register(&self, stack: &Arc<Shared>) {
        if let Ok(mut q) = self.queue.lock() {
            q.new.push(Arc::downgrade(stack));
        }
        self.wake();
    }

    /// Asks the driver to service the stack in `slot` soon.
    pub(crate) fn kick(&self, slot: usize) {
        if let Ok(mut q) = self.queue.lock() {
            q.dirty.push(slot);
        }
        self.wake();
    }
}

/// A driver thread; stacks built with [`crate::StackBuilder::driver`] share it. Cloning shares
/// the same thread. The thread ends when every handle and every stack on it is gone.
#[derive(Clone)]
pub struct Driver {
    pub(crate) shared: Arc<DriverShared>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Driver")
    }
}

impl Driver {
    /// Starts a new driver thread.
    pub fn new() -> std::io::Result<Driver> {
        let wake = filo_vnl::sys::silent_eventfd()?;
        let shared = Arc::new(DriverShared {
            wake,
            queue: Mutex::new(Queue::default()),
        });
        let mut epoll = Epoll::new()?;
        epoll.add(shared.wake.as_raw_fd(), WAKE, true, false)?;
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("filo-stack".into())
            .spawn(move || {
                let mut run = Run {
                    slots: Vec::new(),
                    free: Vec::new(),
                    timers: BinaryHeap::new(),
                    batch: FrameBatch::new(64),
                    big_batch: None,
                    events: Vec::new(),
                    todo: Vec::new(),
                    again: Vec::new(),
                };
                run.run(&weak, &mut epoll);
            })?;
        Ok(Driver { shared })
    }

    /// The process-wide driver that stacks use unless told otherwise.
    pub fn global() -> Driver {
        static GLOBAL: OnceLock<Driver> = OnceLock::new();
        GLOBAL
            .get_or_init(|| Driver::new().expect("cannot start the filo-stack driver thread"))
            .clone()
    }
}

struct Slot {
    stack: Weak<Shared>,
    /// Registered descriptors: (fd, token, write interest).
    fds: Vec<(RawFd, u64, bool)>,
    timer_at: Option<Instant>,
    queued: bool,
    /// Serviced for a kick, a timer or registration (not only for input).
    force: bool,
    /// A control descriptor became readable: a link's switch is gone.
    ctl_hit: bool,
}

struct Run {
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    batch: FrameBatch,
    big_batch: Option<FrameBatch>,
    events: Vec<EpollEvent>,
    todo: Vec<usize>,
    /// Stacks whose plugs still hold received frames (the rest of a train) after their
    /// receive budget: serviced again on the next turn without waiting.
    again: Vec<usize>,
}

fn token(slot: usize, link: usize, write: bool) -> u64 {
    ((slot as u64) << 17) | ((link as u64) << 1) | u64::from(write)
}

impl Run {
    fn run(&mut self, weak: &Weak<DriverShared>, epoll: &mut Epoll) {
        loop {
            let now = Instant::now();
            let timeout = self.timers.peek().map(|Reverse((t, _))| {
                let d = if *t > now {
                    *t - now
                } else {
                    smoltcp::time::Duration::ZERO
                };
                // Round up to whole milliseconds so a sub-millisecond timer does not spin.
                std::time::Duration::from_millis(
                    d.total_millis() + u64::from(d.micros() % 1000 != 0),
                )
            });
            let timeout = match timeout {
                _ if !self.again.is_empty() => Some(std::time::Duration::ZERO),
                Some(t) => Some(t),
                None if self.slots.iter().all(Option::is_none) => {
                    Some(std::time::Duration::from_secs(1))
                }
                None => None,
            };
            if epoll.wait(&mut self.events, timeout).is_err() {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            let Some(shared) = weak.upgrade() else {
                return;
            };
            self.todo.clear();
            let events = std::mem::take(&mut self.events);
            for ev in &events {
                if ev.token == WAKE {
                    let mut b = [0u8; 8];
                    let _ = filo_vnl::sys::read_nonblocking(shared.wake.as_raw_fd(), &mut b);
                } else {
                    let slot = ((ev.token & !CTL) >> 17) as usize;
                    if ev.token & CTL != 0 {
                        if let Some(Some(s)) = self.slots.get_mut(slot) {
                            s.ctl_hit = true;
                        }
                    }
                    self.queue(slot, ev.token & CTL != 0);
                }
            }
            self.events = events;
            while let Some(slot) = self.again.pop() {
                self.queue(slot, false);
            }
            let (new, dirty) = match shared.queue.lock() {
                Ok(mut q) => (std::mem::take(&mut q.new), std::mem::take(&mut q.dirty)),
                Err(_) => return,
            };
            for stack in new {
                let slot = match self.free.pop() {
                    Some(s) => s,
                    None => {
                        self.slots.push(None);
                        self.slots.len() - 1
                    }
                };
                if let Some(sh) = stack.upgrade() {
                    sh.slot.store(slot, Ordering::Release);
                }
                self.slots[slot] = Some(Slot {
                    stack,
                    fds: Vec::new(),
                    timer_at: None,
                    queued: false,
                    force: true,
                    ctl_hit: false,
                });
                self.queue(slot, true);
            }
            for slot in dirty {
                self.queue(slot, true);
            }
            let now = Instant::now();
            while let Some(Reverse((t, slot))) = self.timers.peek().copied() {
                if t > now {
                    break;
                }
                self.timers.pop();
                if let Some(Some(s)) = self.slots.get_mut(slot) {
                    if s.timer_at == Some(t) {
                        s.timer_at = None;
                        self.queue(slot, true);
                    }
                }
            }
            let todo = std::mem::take(&mut self.todo);
            for &slot in &todo {
                self.service(slot, epoll);
            }
            self.todo = todo;
            // The driver ends when no handle and no stack refers to it any more.
            if Arc::strong_count(&shared) == 1 && self.slots.iter().all(Option::is_none) {
                return;
            }
        }
    }

    fn queue(&mut self, slot: usize, force: bool) {
        if let Some(Some(s)) = self.slots.get_mut(slot) {
            s.force |= force;
            if !s.queued {
                s.queued = true;
                self.todo.push(slot);
            }
        }
    }

    fn service(&mut self, slot: usize, epoll: &Epoll) {
        let Some(Some(entry)) = self.slots.get_mut(slot) else {
            return;
        };
        entry.queued = false;
        let force = std::mem::take(&mut entry.force);
        let Some(sh) = entry.stack.upgrade() else {
            // The stack's plugs are closed, which removed them from the epoll set. Deleting
            // by number here could remove a descriptor a newer stack got with the same number.
            self.slots[slot] = None;
            self.free.push(slot);
            return;
        };
        sh.dirty.store(false, Ordering::Release);
        let Ok(mut g) = sh.inner.lock() else {
            return;
        };
        let now = Instant::now();
        let inner = &mut *g;
        if std::mem::take(&mut entry.ctl_hit) {
            for i in 0..inner.ports.len() {
                if inner.ports[i].plug.as_ref().is_some_and(|p| p.peer_gone()) {
                    lose_link(
                        &sh,
                        entry,
                        epoll,
                        inner,
                        i,
                        "the switch closed the connection",
                    );
                }
            }
        }
        // Receive.
        for i in 0..inner.ports.len() {
            let mut got = 0;
            while got < RX_BUDGET {
                let Some(plug) = inner.ports[i].plug.as_mut() else {
                    break;
                };
                // Super-frame links need room for 64 KiB frames; that batch is made on first use.
                let batch = if plug.vnet() {
                    self.big_batch.get_or_insert_with(|| {
                        FrameBatch::with_frame_size(16, filo_vnl::plug::VNET_FRAME_BUF)
                    })
                } else {
                    &mut self.batch
                };
                match plug.recv_batch(batch) {
                    Ok(0) => break,
                    Ok(n) => {
                        got += n;
                        for f in batch.frames_mut() {
                            inner.net.handle_link_frame(now, i, f);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        lose_link(&sh, entry, epoll, inner, i, &e.to_string());
                        break;
                    }
                }
            }
            if inner.ports[i]
                .plug
                .as_ref()
                .is_some_and(|p| p.has_pending_input())
            {
                self.again.push(slot);
            }
            if !inner.ports[i].backlog.is_empty() {
                flush_backlog(&mut inner.net, &mut inner.ports[i], i);
            }
        }
        // Input that produced nothing for smoltcp (a broadcast for someone else, an ARP
        // answered in place) needs no smoltcp turn: a thousand stacks hearing one broadcast
        // cost a thousand receives, not a thousand polls.
        inner.transmit();
        // A DHCP ACK or a router advertisement is consumed below smoltcp but still needs the
        // stack's turn (to apply the lease or the SLAAC address) now, not at the next timer.
        let idle = !force && !inner.net.has_work() && !inner.links_changed;
        if idle {
            let backlog = inner.ports.iter().any(|p| !p.backlog.is_empty());
            if !backlog {
                return;
            }
        }
        inner.process(now);
        // (Re)register descriptors of new links.
        if inner.links_changed {
            inner.links_changed = false;
            for (i, port) in inner.ports.iter().enumerate() {
                let Some(p) = port.plug.as_ref() else {
                    continue;
                };
                let rfd = p.data_fd().as_raw_fd();
                let tok = token(slot, i, false);
                if !entry.fds.iter().any(|(_, t, _)| *t == tok)
                    && epoll.add(rfd, tok, true, false).is_ok()
                {
                    entry.fds.push((rfd, tok, false));
                }
                let wfd = p.write_fd().as_raw_fd();
                let wtok = token(slot, i, true);
                if wfd != rfd
                    && !entry.fds.iter().any(|(_, t, _)| *t == wtok)
                    && epoll.add(wfd, wtok, false, false).is_ok()
                {
                    entry.fds.push((wfd, wtok, false));
                }
                if let Some(cfd) = p.ctl_fd().map(|fd| fd.as_raw_fd()) {
                    let ctok = tok | CTL;
                    if !entry.fds.iter().any(|(_, t, _)| *t == ctok)
                        && epoll.add(cfd, ctok, true, false).is_ok()
                    {
                        entry.fds.push((cfd, ctok, false));
                    }
                }
            }
        }
        // Write interest only while a backlog waits.
        for (fd, tok, armed) in entry.fds.iter_mut().filter(|(_, t, _)| t & CTL == 0) {
            let link = ((*tok >> 1) & 0xffff) as usize;
            let want = inner.ports.get(link).is_some_and(|p| !p.backlog.is_empty());
            if want != *armed {
                let is_write_tok = *tok & 1 == 1;
                let read = !is_write_tok;
                if epoll.modify(*fd, *tok, read, want).is_ok() {
                    *armed = want;
                }
            }
        }
        let deadline = inner.next_deadline(now);
        inner.scheduled = deadline;
        drop(g);
        sh.cond.notify_all();
        if deadline != entry.timer_at {
            entry.timer_at = deadline;
            if let Some(d) = deadline {
                self.timers.push(Reverse((d, slot)));
            }
        }
    }
}

/// Takes link `i`'s plug out of service after its switch went away (`why`): its descriptors
/// leave the epoll set and the link goes down. A plug that can be opened again is reconnected
/// by a thread of its own as the stack's policy says; otherwise the stack's hook is told.
fn lose_link(
    sh: &Arc<Shared>,
    entry: &mut Slot,
    epoll: &Epoll,
    inner: &mut Inner,
    i: usize,
    why: &str,
) {
    let Some(plug) = inner.ports.get_mut(i).and_then(|p| p.plug.take()) else {
        return;
    };
    inner.ports[i].backlog.clear();
    let l = &mut inner.net.links[i];
    let on_link = |t: &u64| (*t >> 1) & 0xffff == i as u64;
    for (fd, _, _) in entry.fds.iter().filter(|(_, t, _)| on_link(t)) {
        epoll.delete(*fd);
    }
    entry.fds.retain(|(_, t, _)| !on_link(t));
    l.up = false;
    inner.links_changed = true;
    let vnl = plug.name().to_string();
    let reopener = plug.reopener().cloned();
    drop(plug);
    match (reopener, sh.reconnect) {
        (Some(reopener), Some(policy)) => {
            tracing::warn!(stack = %sh.name, link = %l.name, "link lost ({vnl}: {why}); reconnecting");
            l.reconnecting = true;
            let weak = Arc::downgrade(sh);
            let spawned = std::thread::Builder::new()
                .name("filo-stack reconnect".into())
                .spawn(move || reconnect_link(weak, i, reopener, policy));
            if let Err(e) = spawned {
                l.reconnecting = false;
                gone(
                    sh,
                    &l.name,
                    &format!("{vnl}: {why}; cannot start a thread to reconnect: {e}"),
                );
            }
        }
        _ => {
            tracing::warn!(stack = %sh.name, link = %l.name, "link lost ({vnl}: {why})");
            gone(sh, &l.name, &format!("{vnl}: {why}"));
        }
    }
}

fn gone(sh: &Shared, link: &str, why: &str) {
    if let Some(hook) = &sh.on_link_gone {
        hook(link, why);
    }
}

/// A reconnecting thread: opens the VNL again until it works, the policy gives up or the stack
/// is gone, then puts the new plug in the link and wakes the driver.
fn reconnect_link(
    weak: Weak<Shared>,
    i: usize,
    reopener: filo_vnl::reconnect::Reopener,
    policy: filo_vnl::reconnect::Policy,
) {
    let result =
        filo_vnl::reconnect::reconnect_while(&reopener, policy, || weak.strong_count() > 0);
    let Some(sh) = weak.upgrade() else {
        return;
    };
    let mut guard = sh.lock();
    let g = &mut *guard;
    let Some(l) = g.net.links.get_mut(i) else {
        return;
    };
    if !l.reconnecting {
        return;
    }
    l.reconnecting = false;
    match result {
        Ok(plug) => {
            tracing::warn!(stack = %sh.name, link = %l.name, "link back ({})", plug.name());
            l.vnet = plug.vnet();
            l.up = true;
            g.ports[i].plug = Some(plug);
            g.links_changed = true;
            drop(guard);
            sh.kick();
        }
        Err(e) => {
            let name = l.name.clone();
            drop(guard);
            tracing::warn!(stack = %sh.name, link = %name, "link gone: {e}");
            gone(&sh, &name, &e.to_string());
        }
    }
}
