//! Who receives a frame: a bus's policy, chosen by its creator and run by each sender.
//!
//! A sender writes a frame once into the ring with a mask of its receivers (one bit per
//! member); only those members copy it out. [`Policy::receivers`] computes the mask;
//! [`Policy::observe`] sees every frame the member receives (the switch learns there). Each
//! member runs its own instance on private memory: nothing a policy keeps is in the shared
//! region, so no other member can corrupt it.
//!
//! A new policy is one file: implement the trait, give it a number in [`PolicyKind`]. See
//! [`mpegts`] for a third one in 60 lines.

use std::collections::HashMap;
use std::time::{Duration, Instant};

pub mod mpegts;

/// The members a sender sees: which are active, their generation (bumped when a slot gets a
/// new member) and their tag (a per-member value a policy may use, e.g. an MPEG-TS PID).
#[derive(Debug, Clone)]
pub struct Members {
    pub active: u64,
    pub generation: [u32; crate::layout::MAX_MEMBERS],
    pub tag: [u32; crate::layout::MAX_MEMBERS],
}

impl Default for Members {
    fn default() -> Self {
        Members {
            active: 0,
            generation: [0; crate::layout::MAX_MEMBERS],
            tag: [0; crate::layout::MAX_MEMBERS],
        }
    }
}

/// A bus policy.
pub trait Policy: Send {
    /// The members (bit i = member i) that receive `frame` sent by member `sender`. The
    /// result is masked with the active members but the sender by the caller.
    fn receivers(&mut self, frame: &[u8], sender: usize, members: &Members) -> u64;
    /// Sees a frame this member received from `sender` (whose generation was `generation`).
    fn observe(&mut self, _frame: &[u8], _sender: usize, _generation: u32) {}
}

/// The policies a bus can have (the number is stored in the shared header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    Hub = 0,
    Switch = 1,
    MpegTs = 2,
}

impl PolicyKind {
    pub fn parse(text: &str) -> Result<PolicyKind, String> {
        match text {
            "hub" => Ok(PolicyKind::Hub),
            "switch" => Ok(PolicyKind::Switch),
            "mpegts" => Ok(PolicyKind::MpegTs),
            other => Err(format!(
                "option policy: expected hub, switch or mpegts, got {other:?}"
            )),
        }
    }

    pub fn from_u32(v: u32) -> Option<PolicyKind> {
        match v {
            0 => Some(PolicyKind::Hub),
            1 => Some(PolicyKind::Switch),
            2 => Some(PolicyKind::MpegTs),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::Hub => "hub",
            PolicyKind::Switch => "switch",
            PolicyKind::MpegTs => "mpegts",
        }
    }

    pub fn build(self) -> Box<dyn Policy> {
        match self {
            PolicyKind::Hub => Box::new(Hub),
            PolicyKind::Switch => Box::new(Switch::default()),
            PolicyKind::MpegTs => Box::new(mpegts::MpegTs),
        }
    }
}

/// Every member but the sender (AF_IPN's IPN_BROADCAST).
pub struct Hub;

impl Policy for Hub {
    fn receivers(&mut self, _frame: &[u8], _sender: usize, members: &Members) -> u64 {
        members.active
    }
}

/// How long a learned address is kept without a frame from it (vdeplug4's hosted switch).
pub const MAC_EXPIRE: Duration = Duration::from_secs(120);
/// Most addresses one member remembers; beyond that it forgets all and floods.
const MAX_MACS: usize = 4096;

/// A learning switch without a shared table: each member learns from the frames it receives
/// which member each source address sits behind, and sends a frame to a known unicast
/// destination only to that member; broadcast, multicast and unknown destinations flood.
/// A learned entry dies with its member (the slot's generation changes) or after
/// [`MAC_EXPIRE`].
#[derive(Default)]
pub struct Switch {
    table: HashMap<[u8; 6], (usize, u32, Instant)>,
}

impl Policy for Switch {
    fn receivers(&mut self, frame: &[u8], _sender: usize, members: &Members) -> u64 {
        let Some(dst) = frame.get(0..6) else {
            return members.active;
        };
        if dst[0] & 1 != 0 {
            return members.active;
        }
        let mut key = [0u8; 6];
        key.copy_from_slice(dst);
        match self.table.get(&key) {
            Some(&(member, generation, seen))
                if members.generation.get(member) == Some(&generation)
                    && seen.elapsed() < MAC_EXPIRE
                    && members.active & (1 << member) != 0 =>
            {
                1 << member
            }
            _ => members.active,
        }
    }

    fn observe(&mut self, frame: &[u8], sender: usize, generation: u32) {
        let Some(src) = frame.get(6..12) else {
            return;
        };
        if src[0] & 1 != 0 || sender >= crate::layout::MAX_MEMBERS {
            return;
        }
        let mut key = [0u8; 6];
        key.copy_from_slice(src);
        if self.table.len() >= MAX_MACS && !self.table.contains_key(&key) {
            self.table.clear();
        }
        self.table.insert(key, (sender, generation, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(active: u64) -> Members {
        Members {
            active,
            ..Members::default()
        }
    }

    fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x00]);
        f.resize(60, 0);
        f
    }

    const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

    #[test]
    fn hub_sends_to_all() {
        assert_eq!(Hub.receivers(&frame(B, A), 0, &members(0b110)), 0b110);
    }

    #[test]
    fn switch_floods_unknown_then_sends_to_learned_member() {
        let mut sw = Switch::default();
        let m = members(0b1110);
        assert_eq!(sw.receivers(&frame(B, A), 0, &m), 0b1110);
        sw.observe(&frame(A, B), 2, 0);
        assert_eq!(sw.receivers(&frame(B, A), 0, &m), 0b100);
        assert_eq!(sw.receivers(&frame([0xff; 6], A), 0, &m), 0b1110);
    }

    #[test]
    fn switch_forgets_a_member_that_left() {
        let mut sw = Switch::default();
        sw.observe(&frame(A, B), 2, 7);
        let mut m = members(0b1110);
        m.generation[2] = 8;
        assert_eq!(sw.receivers(&frame(B, A), 0, &m), 0b1110);
        m.generation[2] = 7;
        m.active = 0b1010;
        assert_eq!(sw.receivers(&frame(B, A), 0, &m), 0b1010);
    }

    #[test]
    fn short_frames_flood_and_teach_nothing() {
        let mut sw = Switch::default();
        sw.observe(&[1, 2, 3], 1, 0);
        assert!(sw.table.is_empty());
        assert_eq!(sw.receivers(&[1, 2], 0, &members(0b10)), 0b10);
    }
}
