//! # filo-wirefilter: link emulation, a sans-IO core compatible with VDE's wirefilter
//!
//! ## Theory of operation
//!
//! [`Wirefilter`] emulates an imperfect cable between two sides, [`Side::Left`] and
//! [`Side::Right`]. It never touches a socket or a clock: the daemon (or a test with virtual
//! time) hands it frames with [`Wirefilter::handle_frame`]`(now, from, bytes)`, asks
//! [`Wirefilter::poll_timeout`] when something is next due, and drains due frames with
//! [`Wirefilter::poll_transmit`]`(now, |to, bytes| ..)`. Frames are copied into buffers taken
//! from an internal pool and returned to it after delivery, so a steady flow allocates nothing.
//! All randomness comes from one seeded xoshiro256** generator ([`Rng`]): the same seed and
//! the same inputs give the same run, bit for bit.
//!
//! Each direction (L->R for frames from the left, R->L from the right) has its own
//! [`Params`] and counters ([`DirStats`]). A frame goes through vde's pipeline
//! (`reference/vde.md` §4.3):
//!
//! 1. **MTU** — longer than the MTU: dropped (`dropped_mtu`).
//! 2. **loss** — dropped with probability loss %. With **lostburst** > 0 a Gilbert model
//!    decides instead: in the good state a frame moves to the bad state with probability
//!    `loss/(burst·(1−loss))`, in the bad state back with probability `1/burst` (one transition
//!    per frame), and frames in the bad state are lost. The stationary loss is `loss` and the
//!    mean burst is `burst` frames.
//! 3. **dup** — one extra copy while a draw is below dup % (so the mean extra copies are
//!    `d/(1−d)`, 11.1 % at 10 %; at most [`MAX_COPIES`] copies).
//! 4. **speed** — the input reads at `speed` bytes/s: a serialisation clock per direction
//!    ("input busy until") delays the frame before the rest. [`Wirefilter::input_ready_at`]
//!    lets a daemon stop reading instead (vde blocks its input).
//! 5. **capacity** (`chanbufsize`) — a copy that would make the bytes held by its direction
//!    exceed capacity is dropped (`dropped_capacity`).
//! 6. **bandwidth** — the output line sends at `bandwidth` bytes/s: a second serialisation
//!    clock ("line busy until"); the frame leaves when its last byte is sent.
//! 7. **delay** — milliseconds added (with jitter if it has a `+DELTA`).
//!    With **FIFO** on (the default, as vde without `--nofifo`) a frame is never delivered
//!    before an earlier frame of its direction: delivery = max(computed, last delivery).
//!    With FIFO off, jitter can reorder.
//! 8. **noise** — on output, `Poisson(len · noise / 1 MiB)` random bits are flipped
//!    (`corrupted`, `bits_flipped`).
//!
//! The queue is one binary heap keyed on (delivery time, arrival sequence), so frames due at
//! the same instant leave in arrival order. Random parameters (`VALUE+DELTA`) are drawn per
//! frame; `mtu` and `capacity` use their base value only. Parameters come from the current
//! node of the [`markov`] model, which moves every `markov-time` along weighted edges; with a
//! single node (the default) it is plain wirefilter.
//!
//! [`daemon`] is the I/O shell: two plugs, a poll loop, the console on a UNIX socket.
//!
//! [`console`] implements vde's management console on top (sans-IO too), and [`value`] the
//! value syntax `[LR|RL]VALUE[+DELTA][K|M|G][U|N][[NODE]]`.

pub mod console;
pub mod core;
pub mod daemon;
pub mod markov;
pub mod rng;
pub mod value;

pub use crate::core::{DirStats, Param, Params, Side, Wirefilter, MAX_COPIES, MAX_WAIT};
pub use crate::markov::{Markov, MarkovError, Node};
pub use crate::rng::Rng;
pub use crate::value::{parse_value, Direction, Distribution, Value, ValueError, VALUE_FORM};
