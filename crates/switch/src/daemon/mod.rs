//! The switch daemon: the I/O shell around [`Core`](crate::core::Core).
//!
//! One level-triggered epoll loop serves everything: the control socket (`DIR/ctl`, vde_switch
//! protocol v3/v1), one datagram socket per endpoint, tap devices, the management socket and
//! the stdin console. Frames are read in batches with `recvmmsg`; every frame to deliver is
//! copied into a buffer the destination endpoints' bounded queues share (one per rendering and
//! framing, so a flood to a thousand ports is one copy, not a thousand; buffers come from a
//! pool, so nothing is allocated per frame once warm), and each queue is flushed with `sendmmsg` (or as one
//! frame train) at the end of the loop turn, or as soon as it holds a train's worth. A receiver that cannot keep up fills only its own queue: further frames for it are
//! dropped and counted (`port/print`, `port/drops`), and nobody else waits — unless
//! `--lossless`, where the switch stops reading while any queue lacks room for a batch
//! (back-pressure: no loss, but one stuck receiver slows everyone).
//!
//! Control connections are untrusted: a request must arrive within a deadline and fit in 256
//! bytes, and anything malformed or refused closes that connection with a log line. Accepts
//! are bounded per loop turn, so a client hammering the control socket cannot starve
//! forwarding.

mod config;
mod control;
mod endpoint;
mod mgmt;

pub use config::{CaptureError, Scheduling, SwitchConfig, SwitchError};
pub use mgmt::carry_out_loads;

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use filo_vnl::sys::{self, Epoll, EpollEvent};
use filo_vnl::wire::{train, vnet};

use crate::console::{self, DebugEvent};
use crate::core::{Core, CoreConfig, Egress, EgressAction, PortId, Verdict};
use crate::state::{DaemonInfo, Effect, EndpointInfo, EndpointKind, SwitchState};

use endpoint::{Endpoint, EndpointIo};

/// Frames read from one endpoint per batch.
const BATCH: usize = sys::BATCH_MAX;
/// Batches read from one endpoint per loop turn (fairness between ports).
const BATCHES_PER_TURN: usize = 4;
/// Frames queued for one receiver that are sent at once rather than at the end of the turn:
/// a full train (or batch).
const FLUSH_AT: usize = train::MAX_RECORDS;
/// Largest datagram: a frame train (endpoints that agreed to trains), which is also room for
/// a virtio-net header and a super-frame with an 802.1Q tag.
const FRAME_BUF: usize = train::MAX_DATAGRAM;

// Token layout: kind in the top byte, slot index below.
const T_CTL: u64 = 1 << 56;
const T_MGMT_LISTEN: u64 = 2 << 56;
const T_STDIN: u64 = 3 << 56;
const T_PENDING: u64 = 4 << 56;
const T_EP_DATA: u64 = 5 << 56;
const T_EP_CTL: u64 = 6 << 56;
const T_MGMT: u64 = 7 << 56;
const T_WAKE: u64 = 8 << 56;
const T_TIMER: u64 = 9 << 56;
/// The loop looks at its timers at least this often (also bounds how long a stop request
/// raced by a signal can go unseen).
const TICK: Duration = Duration::from_millis(500);
/// An endpoint read again within this time, or whose last read filled a batch, is streaming:
/// read it in batches. Otherwise a lone frame is expected (a ping-pong) and read alone, which
/// spares the kernel a second, empty look at the socket and keeps latency down.
const STREAMING: Duration = Duration::from_micros(20);
const KIND_MASK: u64 = 0xff << 56;

/// Tells epoll what the endpoint in `slot` waits for: frames, unless `--lossless` paused its
/// reading, and room to write while its queue holds frames.
fn watch_endpoint(epoll: &Epoll, slot: usize, ep: &Endpoint) {
    let _ = epoll.modify(
        ep.io.fd(),
        T_EP_DATA | slot as u64,
        !ep.read_paused,
        ep.want_write,
    );
}

/// The index of the first empty slot of `slots`, added at the end if there is none.
fn free_slot<T>(slots: &mut Vec<Option<T>>) -> usize {
    match slots.iter().position(|s| s.is_none()) {
        Some(i) => i,
        None => {
            slots.push(None);
            slots.len() - 1
        }
    }
}

/// Connections accepted per loop turn and listener: a flood of connects cannot starve
/// forwarding.
const ACCEPTS_PER_TURN: usize = 16;

/// Where [`accept_into`] gets a descriptor when the process has none left, and counts the
/// clients it refused for lack of one.
struct FdReserve<'a> {
    spare: &'a mut Option<std::os::fd::OwnedFd>,
    refused: &'a mut u64,
}

impl FdReserve<'_> {
    /// Out of descriptors, a connection would wait in the backlog until its client gives up
    /// (and the listener, readable all along, would keep the loop spinning): the spare
    /// descriptor is closed to take the connection and close it at once, so the client learns
    /// now, then taken back. Returns whether a connection was refused.
    fn refuse_one(&mut self, what: &str, listener: &UnixListener, e: &io::Error) -> bool {
        drop(self.spare.take());
        let refused = listener.accept().is_ok();
        *self.spare = sys::silent_eventfd().ok();
        if refused {
            *self.refused += 1;
            tracing::warn!(
                "{what} connection refused: out of file descriptors ({e}); {} refused so far \
                 (raise the limit with ulimit -n, or connect fewer clients)",
                self.refused
            );
        }
        refused
    }
}

/// Whether an accept or socket call failed for lack of file descriptors.
fn out_of_fds(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// Accepts waiting connections on `listener` (at most [`ACCEPTS_PER_TURN`]) into free slots of
/// `slots`, each non-blocking and watched for input under token `kind | slot`; `make` builds
/// what the slot holds. While `max_live` slots are taken, further connections are closed; so
/// are connections that come when the process is out of descriptors (`reserve`).
#[allow(clippy::too_many_arguments)]
fn accept_into<T>(
    what: &str,
    listener: &UnixListener,
    epoll: &Epoll,
    slots: &mut Vec<Option<T>>,
    kind: u64,
    max_live: usize,
    mut reserve: FdReserve<'_>,
    mut make: impl FnMut(UnixStream) -> T,
) {
    for _ in 0..ACCEPTS_PER_TURN {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if out_of_fds(&e) => {
                if reserve.refuse_one(what, listener, &e) {
                    continue;
                }
                return;
            }
            Err(e) => {
                tracing::warn!("accept on {what} socket: {e}");
                return;
            }
        };
        if slots.iter().filter(|s| s.is_some()).count() >= max_live {
            tracing::warn!("{what} connection refused: {max_live} already open");
            continue;
        }
        if stream.set_nonblocking(true).is_err() {
            continue;
        }
        let slot = free_slot(slots);
        if epoll
            .add(stream.as_raw_fd(), kind | slot as u64, true, false)
            .is_err()
        {
            continue;
        }
        slots[slot] = Some(make(stream));
    }
}

/// A running switch's handle for another thread: stop it and wait.
pub struct SwitchHandle {
    stop: Arc<AtomicBool>,
    wake: Arc<std::os::fd::OwnedFd>,
    thread: Option<std::thread::JoinHandle<Result<(), SwitchError>>>,
    pub dir: PathBuf,
}

impl SwitchHandle {
    pub fn stop(mut self) -> Result<(), SwitchError> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<(), SwitchError> {
        self.stop.store(true, Ordering::SeqCst);
        let _ = sys::write_fd(self.wake.as_raw_fd(), &1u64.to_ne_bytes());
        match self.thread.take() {
            Some(t) => t.join().unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}

impl Drop for SwitchHandle {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

/// A VDE-compatible switch bound to its control directory.
pub struct Switch {
    state: SwitchState,
    cfg: SwitchConfig,
    epoll: Epoll,
    ctl: UnixListener,
    /// What starting changed in the control directory, undone on exit.
    dir: config::DirChanges,
    mgmt_listener: Option<UnixListener>,
    pending: Vec<Option<control::Pending>>,
    endpoints: Vec<Option<Endpoint>>,
    /// Endpoint slots per port.
    port_eps: Vec<Vec<usize>>,
    mgmt: Vec<Option<mgmt::Conn>>,
    stdin: Option<mgmt::Conn>,
    wake: Arc<std::os::fd::OwnedFd>,
    /// Endpoints not read from while `--lossless` back-pressure holds.
    read_paused: Vec<usize>,
    /// Wakes `epoll_wait` for the next timer, so that sleeping arms no kernel timer.
    timer: sys::Timer,
    timer_at: Option<Instant>,
    next_tick: Instant,
    // Hot-loop buffers, reused.
    bufs: Vec<Vec<u8>>,
    lens: Vec<usize>,
    egress: Vec<Egress>,
    scratch: Vec<u8>,
    /// Spent frame buffers, unshared (a count of one), ready to be written again.
    pool: Vec<Arc<Vec<u8>>>,
    /// The buffers built for the frame being delivered, by rendering, framing and virtio-net
    /// header: a flood queues one buffer shared by its receivers, not a copy for each.
    shared: Vec<(ShareKey, Arc<Vec<u8>>)>,
    dirty: Vec<usize>,
    events: Vec<EpollEvent>,
    shutting_down: bool,
    /// Per-port capture files (`port/capture`, `--capture`); `capturing` says if any is open.
    captures: Vec<Option<filo_vnl::pcap::Writer<std::fs::File>>>,
    capturing: bool,
    next_pending_sweep: Instant,
    /// Reused when super-frames are segmented for endpoints without virtio-net framing.
    segment_scratch: Vec<u8>,
    /// A descriptor kept in reserve, closed to refuse a client when none is left.
    spare_fd: Option<std::os::fd::OwnedFd>,
}

/// The descriptors the loop waits on, each registered with epoll.
struct Fds {
    epoll: Epoll,
    ctl: UnixListener,
    dir: config::DirChanges,
    mgmt_listener: Option<UnixListener>,
    wake: Arc<std::os::fd::OwnedFd>,
    timer: sys::Timer,
}

impl Fds {
    /// Binds the control socket (creating the directory) and the management socket, and
    /// makes the wake-up eventfd and the timer.
    fn open(cfg: &SwitchConfig) -> Result<Fds, SwitchError> {
        let (ctl, dir) = config::prepare_ctl_dir(cfg)?;
        let mut mgmt_bound = false;
        let fds = Fds::open_rest(cfg, ctl, dir, &mut mgmt_bound);
        if fds.is_err() {
            config::cleanup(cfg, dir, mgmt_bound);
        }
        fds
    }

    fn open_rest(
        cfg: &SwitchConfig,
        ctl: UnixListener,
        dir: config::DirChanges,
        mgmt_bound: &mut bool,
    ) -> Result<Fds, SwitchError> {
        let epoll = Epoll::new().map_err(SwitchError::io("epoll"))?;
        let watch = |fd, token| {
            epoll
                .add(fd, token, true, false)
                .map_err(SwitchError::io("epoll"))
        };
        watch(ctl.as_raw_fd(), T_CTL)?;
        let mgmt_listener = match &cfg.mgmt {
            Some(path) => {
                let l = config::bind_mgmt(cfg, path)?;
                *mgmt_bound = true;
                watch(l.as_raw_fd(), T_MGMT_LISTEN)?;
                Some(l)
            }
            None => None,
        };
        let wake = Arc::new(sys::silent_eventfd().map_err(SwitchError::io("eventfd"))?);
        watch(wake.as_raw_fd(), T_WAKE)?;
        let timer = sys::Timer::new().map_err(SwitchError::io("timerfd"))?;
        watch(timer.as_raw_fd(), T_TIMER)?;
        Ok(Fds {
            epoll,
            ctl,
            dir,
            mgmt_listener,
            wake,
            timer,
        })
    }
}

/// The forwarding core as the options configure it.
fn core_of(cfg: &SwitchConfig, now: Instant) -> Core {
    Core::new(
        CoreConfig {
            num_ports: cfg.numports,
            hub: cfg.hub,
            stp: cfg.stp,
            bridge_mac: cfg.macaddr,
            bridge_priority: cfg.priority,
            stp_timers: cfg.stp_timers,
            mac_expire: cfg.mac_expire,
            dhcp_snooping: cfg.dhcp_snooping,
            ..CoreConfig::default()
        },
        now,
    )
}

/// What the console shows about this daemon.
fn daemon_info(cfg: &SwitchConfig, now: Instant) -> DaemonInfo {
    DaemonInfo {
        ctl_dir: cfg.dir.clone(),
        mode: cfg.socket_mode(),
        mgmt: cfg.mgmt.clone(),
        mgmt_mode: cfg.mgmt_mode,
        pid: std::process::id(),
        started: now,
        queue_len: cfg.queue_len,
        lossless: cfg.lossless,
    }
}

fn log_drop_reason(v: Verdict) -> Option<crate::core::DropReason> {
    match v {
        Verdict::Dropped(r) => Some(r),
        _ => None,
    }
}

impl Switch {
    /// Creates the control directory and sockets; nothing runs until [`Switch::run`].
    pub fn bind(cfg: SwitchConfig) -> Result<Switch, SwitchError> {
        let now = Instant::now();
        let fds = Fds::open(&cfg)?;
        let state = SwitchState::new(core_of(&cfg, now), daemon_info(&cfg, now));
        let mut sw = Switch::new(cfg, fds, state, now);
        sw.start(now)?;
        Ok(sw)
    }

    /// The switch around its descriptors and state, with empty tables and warm buffers.
    fn new(cfg: SwitchConfig, fds: Fds, state: SwitchState, now: Instant) -> Switch {
        let Fds {
            epoll,
            ctl,
            dir,
            mgmt_listener,
            wake,
            timer,
        } = fds;
        Switch {
            state,
            epoll,
            ctl,
            dir,
            mgmt_listener,
            pending: Vec::new(),
            endpoints: Vec::new(),
            port_eps: vec![Vec::new(); cfg.numports as usize],
            mgmt: Vec::new(),
            stdin: None,
            wake,
            timer,
            timer_at: None,
            next_tick: now,
            read_paused: Vec::new(),
            bufs: (0..BATCH).map(|_| vec![0u8; FRAME_BUF]).collect(),
            lens: vec![0; BATCH],
            egress: Vec::with_capacity(64),
            scratch: vec![0u8; FRAME_BUF + 4],
            pool: Vec::new(),
            shared: Vec::new(),
            dirty: Vec::new(),
            events: Vec::with_capacity(256),
            shutting_down: false,
            captures: Vec::new(),
            capturing: false,
            next_pending_sweep: now,
            segment_scratch: Vec::new(),
            spare_fd: sys::silent_eventfd().ok(),
            cfg,
        }
    }

    /// What the options ask for at start: the stdin console, captures, taps, the rc file.
    fn start(&mut self, now: Instant) -> Result<(), SwitchError> {
        if self.cfg.stdin_console {
            let conn = mgmt::Conn::stdin();
            self.epoll
                .add(0, T_STDIN, true, false)
                .map_err(SwitchError::io("epoll on stdin"))?;
            self.stdin = Some(conn);
        }
        for (port, path) in self.cfg.captures.clone() {
            self.start_capture(port, Some(path))?;
        }
        for tap in self.cfg.taps.clone() {
            self.attach_tap(&tap)?;
        }
        if let Some(rc) = self.cfg.rcfile.clone() {
            self.run_rc_file(&rc, now)?;
        }
        Ok(())
    }

    /// Runs the startup script (`-f`) without output, as vde_switch does.
    fn run_rc_file(&mut self, rc: &Path, now: Instant) -> Result<(), SwitchError> {
        // A regular file of bounded size: `-f /dev/zero` or a FIFO is an error, not a hang.
        let text = filo_vnl::mgmt::read_script(rc).map_err(|errno| SwitchError::Io {
            what: format!(
                "cannot read rc file {} (expected a regular file of at most {} bytes)",
                rc.display(),
                filo_vnl::mgmt::MAX_SCRIPT
            ),
            source: std::io::Error::from_raw_os_error(errno),
        })?;
        let mut session = console::Session::new();
        let reply = console::run_script(
            &mut self.state,
            &mut session,
            now,
            &rc.display().to_string(),
            &text,
            false,
        );
        let reply = mgmt::carry_out_loads(&mut self.state, &mut session, now, reply);
        self.apply_effects(reply.effects, None);
        Ok(())
    }

    /// Runs the switch on a new thread; the handle stops it.
    pub fn spawn(cfg: SwitchConfig) -> Result<SwitchHandle, SwitchError> {
        let dir = cfg.dir.clone();
        let mut sw = Switch::bind(cfg)?;
        let stop = Arc::new(AtomicBool::new(false));
        let wake = sw.wake.clone();
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("filo-switch".into())
            .spawn(move || sw.run(&stop2))
            .map_err(SwitchError::io("spawn"))?;
        Ok(SwitchHandle {
            stop,
            wake,
            thread: Some(thread),
            dir,
        })
    }

    pub fn state(&self) -> &SwitchState {
        &self.state
    }

    /// Runs until `stop` is raised (a signal handler or another thread), `shutdown` on the
    /// console, or EOF on the stdin console.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), SwitchError> {
        let mut events = std::mem::take(&mut self.events);
        let mut last_activity = Instant::now();
        self.start_scheduling();
        while !stop.load(Ordering::Relaxed) && !self.shutting_down {
            let now = Instant::now();
            // Busy polling: for a while after the last frame, look again without sleeping,
            // trading CPU for latency (no wake-up on the next frame).
            let spinning = !self.cfg.busy_poll.is_zero()
                && now.duration_since(last_activity) < self.cfg.busy_poll;
            let timeout = if spinning {
                Some(Duration::ZERO)
            } else {
                self.arm_timer(now);
                None
            };
            self.epoll
                .wait(&mut events, timeout)
                .map_err(SwitchError::io("epoll_wait"))?;
            let now = Instant::now();
            if !events.is_empty() {
                last_activity = now;
            }
            for ev in &events {
                self.dispatch(*ev, now);
            }
            self.flush_dirty();
            self.on_timers(now);
        }
        self.events = events;
        Ok(())
    }

    /// Applies `--scheduling` to this thread (the one that runs the loop).
    fn start_scheduling(&self) {
        let policy = match self.cfg.scheduling {
            Scheduling::Batch => sys::SchedPolicy::Batch,
            Scheduling::Normal => sys::SchedPolicy::Normal,
            // Batch, unless someone chose another policy for us (chrt): theirs stands.
            Scheduling::Default => match sys::thread_sched_policy() {
                Ok(Some(sys::SchedPolicy::Normal)) => sys::SchedPolicy::Batch,
                _ => return,
            },
        };
        if let Err(e) = sys::set_thread_sched_policy(policy) {
            tracing::warn!("cannot set the scheduling policy to {policy:?}: {e}");
        }
    }

    /// Arms the timer for the next deadline, unless it is armed for it already.
    fn arm_timer(&mut self, now: Instant) {
        if now >= self.next_tick {
            self.next_tick = now + TICK;
        }
        let mut at = self.next_tick;
        if let Some(core_at) = self.state.core.poll_timeout() {
            at = at.min(core_at);
        }
        if self.timer_at != Some(at) {
            match self.timer.arm(at.saturating_duration_since(now)) {
                Ok(()) => self.timer_at = Some(at),
                Err(e) => tracing::warn!("cannot arm the timer: {e}"),
            }
        }
    }

    fn on_timers(&mut self, now: Instant) {
        if self.state.core.poll_timeout().is_some_and(|at| at <= now) {
            self.state.core.handle_timeout(now);
        }
        let mut buf = std::mem::take(&mut self.scratch);
        while let Some((port, len)) = self.state.core.poll_transmit(&mut buf) {
            self.deliver_to_port(port, usize::MAX, &buf[..len], None, None);
        }
        self.scratch = buf;
        self.flush_dirty();
        // Expire control connections that never sent a request (at most a few times a second:
        // this runs every loop turn, on the hot path).
        if now < self.next_pending_sweep {
            return;
        }
        self.next_pending_sweep = now + Duration::from_millis(250);
        for slot in 0..self.pending.len() {
            if self.pending[slot]
                .as_ref()
                .is_some_and(|p| p.deadline <= now)
            {
                if let Some(p) = self.pending[slot].take() {
                    tracing::warn!(
                        "control connection closed: no complete request within {:?}",
                        control::REQUEST_TIMEOUT
                    );
                    self.epoll.delete(p.stream.as_raw_fd());
                }
            }
        }
    }

    fn dispatch(&mut self, ev: EpollEvent, now: Instant) {
        let slot = (ev.token & !KIND_MASK) as usize;
        match ev.token & KIND_MASK {
            T_CTL => self.accept_control(now),
            T_MGMT_LISTEN => self.accept_mgmt(),
            T_STDIN => self.on_stdin(now),
            T_PENDING => self.on_pending(slot, now),
            T_EP_DATA => {
                if ev.writable {
                    self.on_writable(slot);
                }
                if ev.readable || ev.hangup {
                    self.on_data(slot, now);
                }
            }
            T_EP_CTL => self.on_endpoint_ctl(slot),
            T_MGMT => self.on_mgmt(slot, ev, now),
            T_WAKE => {}
            T_TIMER => {
                self.timer.clear();
                self.timer_at = None;
            }
            _ => {}
        }
    }

    // ---- data path -------------------------------------------------------------------------

    fn lossless_blocked(&self) -> bool {
        self.cfg.lossless
            && self
                .endpoints
                .iter()
                .flatten()
                .any(|e| e.queue.len() + BATCH > self.cfg.queue_len.max(2 * BATCH))
    }

    fn on_data(&mut self, slot: usize, now: Instant) {
        for _ in 0..BATCHES_PER_TURN {
            if self.lossless_blocked() {
                self.pause_reading(slot);
                return;
            }
            let Some(ep) = self.endpoints.get_mut(slot).and_then(|e| e.as_mut()) else {
                return;
            };
            let port = ep.port;
            let ep_vnet = ep.vnet;
            let ep_trains = ep.trains;
            let streaming = ep.last_read_full
                || ep
                    .last_read
                    .is_some_and(|t| now.saturating_duration_since(t) < STREAMING);
            ep.last_read = Some(now);
            // A train carries up to a batch of frames: with back-pressure, read one at a time
            // so that the check above holds for every train.
            let want = if (ep_trains && self.cfg.lossless) || !streaming {
                1
            } else {
                BATCH
            };
            let n = match ep
                .io
                .recv_batch(&mut self.bufs[..want], &mut self.lens[..want])
            {
                Ok(n) => {
                    ep.last_read_full = n == want && want > 1;
                    n
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ep.last_read_full = false;
                    return;
                }
                Err(e) => {
                    let why = format!("receive error: {e}");
                    self.close_endpoint(slot, &why);
                    return;
                }
            };
            for i in 0..n {
                let len = self.lens[i];
                if len > FRAME_BUF {
                    if let Some(p) = self.state.ports.get_mut(&port) {
                        p.counters.drop_in += 1;
                    }
                    continue;
                }
                let datagram = std::mem::take(&mut self.bufs[i]);
                if ep_trains {
                    for record in train::records(&datagram[..len]) {
                        match record {
                            Ok(frame) => self.ingress(now, port, slot, ep_vnet, frame),
                            Err(e) => {
                                tracing::debug!("port {port}: rest of a frame train dropped: {e}");
                                if let Some(p) = self.state.ports.get_mut(&port) {
                                    p.counters.drop_in += 1;
                                }
                            }
                        }
                    }
                    // With back-pressure, a train is a batch of its own: hand it on before
                    // the next (otherwise its frames wait for the end of the turn).
                    self.flush_batch();
                } else {
                    self.ingress(now, port, slot, ep_vnet, &datagram[..len]);
                }
                self.bufs[i] = datagram;
            }
            self.flush_batch();
            // After a lone frame, back to waiting: should more be there, epoll says so at once
            // and they are read as a stream.
            if n < want || want == 1 {
                return;
            }
        }
    }

    /// Switches one frame that arrived on `port` from the endpoint in `slot` (`bytes` behind a
    /// virtio-net header when the endpoint speaks it).
    fn ingress(
        &mut self,
        now: Instant,
        port: PortId,
        slot: usize,
        vnet_framed: bool,
        bytes: &[u8],
    ) {
        let Some(p) = self.state.ports.get_mut(&port) else {
            return;
        };
        let counters = &mut p.counters;
        let (hdr, start) = if vnet_framed {
            match vnet::Header::parse(bytes) {
                Ok(h) if bytes.len() >= vnet::HEADER_LEN + 14 => (Some(h), vnet::HEADER_LEN),
                _ => {
                    counters.drop_in += 1;
                    return;
                }
            }
        } else {
            (None, 0)
        };
        counters.in_frames += 1;
        counters.in_bytes += (bytes.len() - start) as u64;
        let view = &bytes[start..];
        if self.capturing {
            self.capture(port, view);
        }
        let verdict = self
            .state
            .core
            .handle_frame(now, port, view, &mut self.egress);
        if log_drop_reason(verdict).is_some() {
            if let Some(p) = self.state.ports.get_mut(&port) {
                p.counters.drop_in += 1;
            }
            return;
        }
        let egress = std::mem::take(&mut self.egress);
        for e in &egress {
            let mut scratch = std::mem::take(&mut self.scratch);
            if let Ok(out) = e.action.render(view, &mut scratch) {
                // A tag inserted or removed moves the offsets in the header.
                let hdr = hdr.map(|mut h| {
                    h.shift(out.len() as i32 - view.len() as i32);
                    h
                });
                self.deliver_to_port(e.port, slot, out, hdr, Some(e.action));
            }
            self.scratch = scratch;
        }
        // The queues hold what they need; a buffer goes back to the pool with its last send.
        self.shared.clear();
        self.egress = egress;
    }

    /// `--lossless`: stops waiting for `slot`'s frames while a queue is too full to take more
    /// (level-triggered epoll would otherwise report it readable again at once, and the loop
    /// would spin); [`Switch::resume_reading`] undoes it when the queues have room.
    fn pause_reading(&mut self, slot: usize) {
        let Some(ep) = self.endpoints.get_mut(slot).and_then(|e| e.as_mut()) else {
            return;
        };
        if !ep.read_paused {
            ep.read_paused = true;
            watch_endpoint(&self.epoll, slot, ep);
            self.read_paused.push(slot);
        }
    }

    fn resume_reading(&mut self) {
        if self.read_paused.is_empty() || self.lossless_blocked() {
            return;
        }
        for slot in std::mem::take(&mut self.read_paused) {
            if let Some(ep) = self.endpoints.get_mut(slot).and_then(|e| e.as_mut()) {
                if ep.read_paused {
                    ep.read_paused = false;
                    watch_endpoint(&self.epoll, slot, ep);
                }
            }
        }
    }

    /// Writes a frame seen on `port` to that port's capture file, if any.
    fn capture(&mut self, port: PortId, frame: &[u8]) {
        let failed = match self
            .captures
            .get_mut(port as usize)
            .and_then(|c| c.as_mut())
        {
            Some(w) => w.write_frame(frame).err(),
            None => return,
        };
        if let Some(e) = failed {
            tracing::warn!("port {port}: capture stopped: {e}");
            self.captures[port as usize] = None;
            self.capturing = self.captures.iter().any(|c| c.is_some());
        }
    }

    /// Starts (path) or stops (None) capturing a port's traffic, both directions, to pcapng.
    fn start_capture(&mut self, port: PortId, path: Option<PathBuf>) -> Result<(), CaptureError> {
        if port >= self.state.numports {
            return Err(CaptureError::NoSuchPort {
                port,
                numports: self.state.numports,
            });
        }
        if self.captures.len() <= port as usize {
            self.captures.resize_with(port as usize + 1, || None);
        }
        self.captures[port as usize] = match path {
            None => None,
            Some(p) => {
                let file =
                    filo_vnl::pcap::create_file(&p).map_err(|source| CaptureError::Create {
                        path: p.clone(),
                        source,
                    })?;
                let w = filo_vnl::pcap::Writer::new(
                    file,
                    filo_vnl::pcap::Format::PcapNg,
                    &format!("port{port}"),
                )
                .map_err(|source| CaptureError::Write {
                    path: p.clone(),
                    source,
                })?;
                tracing::info!("port {port}: capturing to {}", p.display());
                Some(w)
            }
        };
        self.capturing = self.captures.iter().any(|c| c.is_some());
        Ok(())
    }

    /// Queues `frame` on every endpoint of `port` except `ingress_slot`. `hdr` is the
    /// virtio-net header the frame came with: endpoints that speak it get it in front of the
    /// frame; the others get ordinary frames (super-frames segmented, checksums completed).
    /// `action` is how `frame` was rendered from the frame that came in: endpoints of other
    /// ports that get it rendered the same way, in the same framing, share its buffer.
    fn deliver_to_port(
        &mut self,
        port: PortId,
        ingress_slot: usize,
        frame: &[u8],
        hdr: Option<vnet::Header>,
        action: Option<EgressAction>,
    ) {
        if self.capturing {
            self.capture(port, frame);
        }
        let Some(slots) = self.port_eps.get(port as usize) else {
            return;
        };
        let cap = self
            .cfg
            .queue_len
            .max(if self.cfg.lossless { 2 * BATCH } else { 1 });
        let Switch {
            endpoints,
            pool,
            shared,
            dirty,
            state,
            segment_scratch,
            ..
        } = self;
        for &slot in slots {
            if slot == ingress_slot {
                continue;
            }
            let Some(ep) = endpoints.get_mut(slot).and_then(|e| e.as_mut()) else {
                continue;
            };
            let was_empty = ep.queue.is_empty();
            let mut dropped = 0u64;
            let trains = ep.trains;
            let key = action.map(|action| ShareKey {
                action,
                trains,
                vnet: ep.vnet,
            });
            let mut queue = |parts: &[&[u8]], key: Option<ShareKey>| {
                if ep.queue.len() >= cap {
                    dropped += 1;
                    return;
                }
                if let Some((_, buf)) = key.and_then(|k| shared.iter().find(|(s, _)| *s == k)) {
                    ep.queue.push_back(Arc::clone(buf));
                    return;
                }
                let mut buf = pool
                    .pop()
                    .unwrap_or_else(|| Arc::new(Vec::with_capacity(2048)));
                // A pooled buffer is unshared: make_mut writes it in place, copying nothing.
                let b = Arc::make_mut(&mut buf);
                b.clear();
                if trains {
                    let len = parts.iter().map(|p| p.len()).sum();
                    b.extend_from_slice(&train::record_header(len));
                }
                for p in parts {
                    b.extend_from_slice(p);
                }
                if let Some(k) = key {
                    shared.push((k, Arc::clone(&buf)));
                }
                ep.queue.push_back(buf);
            };
            match (ep.vnet, hdr) {
                (true, h) => queue(&[&h.unwrap_or_default().emit(), frame], key),
                (false, Some(h)) if !h.is_plain() => {
                    if vnet::finish(&h, frame, segment_scratch, |seg| queue(&[seg], None)).is_err()
                    {
                        dropped += 1;
                    }
                }
                (false, _) => queue(&[frame], key),
            }
            if was_empty && !ep.queue.is_empty() {
                dirty.push(slot);
            }
            if dropped > 0 {
                if let Some(p) = state.ports.get_mut(&port) {
                    p.counters.drop_out_queue_full += dropped;
                }
            }
        }
    }

    /// After a batch read from one endpoint: with `--lossless`, hands the batch to the
    /// receivers before reading more, so queues only hold what the receivers' sockets could
    /// not take (the back-pressure check counts on it). Otherwise only queues holding a train's
    /// worth of frames are sent now; the rest wait for the end of the loop turn, so that the
    /// frames of every endpoint read in one turn reach each receiver together (one train, one
    /// `sendmmsg`) instead of one send per frame and receiver: flooding N ports with frames
    /// from N endpoints costs N sends per turn, not N per frame.
    fn flush_batch(&mut self) {
        if self.cfg.lossless {
            return self.flush_dirty();
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.retain(|&slot| {
            let full = self
                .endpoints
                .get(slot)
                .and_then(|e| e.as_ref())
                .is_some_and(|e| e.queue.len() >= FLUSH_AT);
            if full {
                self.flush_endpoint(slot);
            }
            !full
        });
        // Flushing may have closed endpoints and marked none dirty; keep what waits.
        dirty.append(&mut self.dirty);
        self.dirty = dirty;
    }

    fn flush_dirty(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for &slot in &dirty {
            self.flush_endpoint(slot);
        }
        let mut dirty = dirty;
        dirty.clear();
        self.dirty = dirty;
    }

    /// Sends queued frames; arms EPOLLOUT when the endpoint cannot take them all.
    fn flush_endpoint(&mut self, slot: usize) {
        let Some(ep) = self.endpoints.get_mut(slot).and_then(|e| e.as_mut()) else {
            return;
        };
        let port = ep.port;
        let mut sent_frames = 0u64;
        let mut sent_bytes = 0u64;
        let mut failed = None;
        // Queued train records carry their record header, which is not frame bytes.
        let overhead = if ep.trains {
            train::RECORD_HEADER_LEN
        } else {
            0
        };
        while !ep.queue.is_empty() {
            let result = if ep.trains {
                ep.io.send_train(&ep.queue)
            } else {
                let n = ep.queue.len().min(BATCH);
                let mut frames: [&[u8]; BATCH] = [&[]; BATCH];
                for (i, f) in ep.queue.iter().take(n).enumerate() {
                    frames[i] = f;
                }
                ep.io.send_batch(&frames[..n])
            };
            match result {
                Ok(k) => {
                    for _ in 0..k {
                        if let Some(buf) = ep.queue.pop_front() {
                            sent_frames += 1;
                            sent_bytes += (buf.len() - overhead) as u64;
                            recycle(&mut self.pool, buf);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let want_write = !ep.queue.is_empty();
        if want_write != ep.want_write {
            ep.want_write = want_write;
            watch_endpoint(&self.epoll, slot, ep);
        }
        let made_room = sent_frames > 0;
        if let Some(p) = self.state.ports.get_mut(&port) {
            p.counters.out_frames += sent_frames;
            p.counters.out_bytes += sent_bytes;
            p.queued = self.port_eps.get(port as usize).map_or(0, |slots| {
                slots
                    .iter()
                    .filter_map(|&s| self.endpoints.get(s).and_then(|e| e.as_ref()))
                    .map(|e| e.queue.len())
                    .sum()
            });
        }
        if made_room {
            self.resume_reading();
        }
        if let Some(e) = failed {
            if let Some(p) = self.state.ports.get_mut(&port) {
                p.counters.drop_out_error += 1;
            }
            if matches!(
                e.raw_os_error(),
                Some(libc::ECONNREFUSED) | Some(libc::ENOTCONN) | Some(libc::EPIPE)
            ) {
                self.close_endpoint(slot, &format!("send failed: {e}"));
            } else if let Some(ep) = self.endpoints.get_mut(slot).and_then(|e| e.as_mut()) {
                // Unexpected error for this one frame: drop it and go on.
                if let Some(buf) = ep.queue.pop_front() {
                    recycle(&mut self.pool, buf);
                }
                tracing::warn!("port {port}: send error: {e}");
            }
        }
    }

    fn on_writable(&mut self, slot: usize) {
        self.flush_endpoint(slot);
    }

    // ---- endpoints ---------------------------------------------------------------------------

    fn add_endpoint(&mut self, ep: Endpoint, info: EndpointInfo) -> usize {
        let slot = free_slot(&mut self.endpoints);
        let port = ep.port;
        let _ = self
            .epoll
            .add(ep.io.fd(), T_EP_DATA | slot as u64, true, false);
        if let Some(ctl) = &ep.ctl {
            let _ = self
                .epoll
                .add(ctl.as_raw_fd(), T_EP_CTL | slot as u64, true, false);
        }
        self.endpoints[slot] = Some(ep);
        self.port_eps[port as usize].push(slot);
        let was_active = self.state.ports.get(&port).is_some_and(|p| p.is_active());
        let id = info.id;
        if let Some(p) = self.state.port_mut(port) {
            p.endpoints.push(info.clone());
        }
        if !was_active {
            let _ = self.state.core.set_port_active(Instant::now(), port, true);
        }
        self.debug(DebugEvent::EndpointAdded { port, id });
        self.debug(DebugEvent::Description {
            port,
            id,
            descr: info.description,
        });
        slot
    }

    fn close_endpoint(&mut self, slot: usize, why: &str) {
        let Some(mut ep) = self.endpoints.get_mut(slot).and_then(|e| e.take()) else {
            return;
        };
        self.epoll.delete(ep.io.fd());
        if let Some(ctl) = &ep.ctl {
            self.epoll.delete(ctl.as_raw_fd());
        }
        for buf in ep.queue.drain(..) {
            recycle(&mut self.pool, buf);
        }
        let port = ep.port;
        tracing::info!("port {port}: endpoint {} closed: {why}", ep.id);
        if let Some(slots) = self.port_eps.get_mut(port as usize) {
            slots.retain(|&s| s != slot);
        }
        if let Some(p) = self.state.ports.get_mut(&port) {
            p.endpoints.retain(|e| e.id != ep.id);
            p.queued = 0;
            if p.endpoints.is_empty() {
                let _ = self.state.core.set_port_active(Instant::now(), port, false);
            }
        }
        self.debug(DebugEvent::EndpointRemoved { port, id: ep.id });
        // Its queue no longer holds anyone back.
        self.resume_reading();
        // Dropping `ep` closes its sockets and unlinks its data socket file.
    }

    fn attach_tap(&mut self, name: &str) -> Result<(), SwitchError> {
        let io = EndpointIo::tap(name).map_err(|e| SwitchError::Io {
            what: format!("cannot attach tap {name}"),
            source: e,
        })?;
        let port = self
            .state
            .free_port()
            .ok_or_else(|| SwitchError::NoFreePort(name.to_string()))?;
        let id = io.fd() as u32;
        let mut ep = Endpoint::new(port, id, io, None, None);
        ep.vnet = true;
        let info = EndpointInfo {
            id,
            kind: EndpointKind::Tuntap,
            description: name.to_string(),
            uid: None,
        };
        self.add_endpoint(ep, info);
        Ok(())
    }

    // ---- console -----------------------------------------------------------------------------

    fn debug(&mut self, ev: DebugEvent) {
        let (category, line) = console::format_event(&ev);
        for conn in self.mgmt.iter_mut().flatten().chain(self.stdin.as_mut()) {
            if conn.session.wants(category) {
                conn.queue_output(line.as_bytes());
            }
        }
    }

    fn apply_effects(&mut self, effects: Vec<Effect>, conn: Option<usize>) {
        for effect in effects {
            match effect {
                Effect::CloseEndpoint { port, id } => {
                    let slot = self.port_eps.get(port as usize).and_then(|slots| {
                        slots
                            .iter()
                            .copied()
                            .find(|&s| self.endpoints[s].as_ref().is_some_and(|e| e.id == id))
                    });
                    if let Some(slot) = slot {
                        self.close_endpoint(slot, "closed from the console");
                    }
                }
                Effect::ClosePort { port } => {
                    let slots = self
                        .port_eps
                        .get(port as usize)
                        .cloned()
                        .unwrap_or_default();
                    for slot in slots {
                        self.close_endpoint(slot, "port removed from the console");
                    }
                }
                Effect::Logout => {
                    if let Some(c) = conn {
                        self.close_mgmt(c);
                    }
                }
                Effect::Shutdown => self.shutting_down = true,
                Effect::Capture { port, path } => {
                    if let Err(e) = self.start_capture(port, path) {
                        tracing::warn!("{e}");
                    }
                }
                // Carried out before the effects are applied (carry_out_loads).
                Effect::Load(path) => {
                    tracing::warn!("load {}: not carried out", path.display());
                }
            }
        }
    }

    fn close_mgmt(&mut self, slot: usize) {
        if let Some(mut c) = self.mgmt.get_mut(slot).and_then(|c| c.take()) {
            c.flush_blocking_briefly();
            self.epoll.delete(c.fd());
        }
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        for slot in 0..self.endpoints.len() {
            self.close_endpoint(slot, "switch shutting down");
        }
        config::cleanup(&self.cfg, self.dir, self.mgmt_listener.is_some());
    }
}

/// Frames waiting for one endpoint (a flood's receivers share one buffer).
type Queue = VecDeque<Arc<Vec<u8>>>;

/// What makes two receivers' buffers for one frame the same bytes: how the frame was
/// rendered for their port, and their endpoints' framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ShareKey {
    action: EgressAction,
    trains: bool,
    vnet: bool,
}

/// Returns a sent or dropped frame's buffer to the pool once no other queue holds it.
fn recycle(pool: &mut Vec<Arc<Vec<u8>>>, buf: Arc<Vec<u8>>) {
    if Arc::strong_count(&buf) == 1 {
        pool.push(buf);
    }
}
