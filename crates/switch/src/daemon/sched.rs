//! When the switch's thread should give up wake-up preemption (sans-IO; the daemon applies
//! the policy).
//!
//! Under a flood from a client that sends one datagram per frame, a switch that keeps up goes
//! back to sleep after every few frames, and the sender's next datagram wakes it. The woken
//! switch then preempts the sender on the sender's own CPU: on 2 vCPUs with one sender and one
//! receiver, the sender was preempted ~44,000 times for 300,000 frames and spent as long
//! waiting for a CPU as running. Under `SCHED_BATCH` a woken thread does not preempt, so the
//! sender runs on until it blocks and the switch then takes the frames in large batches
//! (measured: ~900 sleeps instead of ~40,000, ~30 % less switch CPU per frame, ~1.4x the
//! frames delivered).
//!
//! A lone frame (a ping-pong, interactive traffic) is better served by preemption: when every
//! CPU is busy, a `SCHED_BATCH` thread would wait for the scheduler tick. So in the default
//! mode the policy follows the traffic: `SCHED_BATCH` while wake-ups bring several frames each,
//! `SCHED_OTHER` when they bring about one.

use filo_vnl::sys::SchedPolicy;

/// How the switch's thread is scheduled (`--scheduling`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scheduling {
    /// Follow the traffic (see the module documentation).
    #[default]
    Auto,
    /// Always `SCHED_OTHER` (the kernel's default).
    Normal,
    /// Always `SCHED_BATCH`.
    Batch,
}

/// Average frames per wake-up (in sixteenths) at or above which the switch turns to batch
/// scheduling, and below which it turns back.
const ENTER_BATCH: u32 = 4 * 16;
const LEAVE_BATCH: u32 = 2 * 16;
/// Frames counted from one wake-up at most, so that one huge batch cannot hold the average
/// up for long.
const WAKE_CAP: u32 = 256;

/// Tracks frames per wake-up and says when the policy should change.
#[derive(Debug)]
pub struct SchedAdapter {
    /// Exponentially weighted average of frames per wake-up, times 16 (weight 1/8).
    avg16: u32,
    policy: SchedPolicy,
}

impl SchedAdapter {
    pub fn new() -> SchedAdapter {
        SchedAdapter {
            avg16: 16,
            policy: SchedPolicy::Normal,
        }
    }

    /// Feeds the frames one wake-up handled; returns the policy to apply when it changes.
    pub fn on_wake(&mut self, frames: u32) -> Option<SchedPolicy> {
        let frames16 = frames.min(WAKE_CAP) * 16;
        self.avg16 = self.avg16 - self.avg16 / 8 + frames16 / 8;
        let want = match self.policy {
            SchedPolicy::Normal if self.avg16 >= ENTER_BATCH => SchedPolicy::Batch,
            SchedPolicy::Batch if self.avg16 < LEAVE_BATCH => SchedPolicy::Normal,
            current => current,
        };
        if want == self.policy {
            return None;
        }
        self.policy = want;
        Some(want)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ping_pong_stays_normal() {
        let mut a = SchedAdapter::new();
        for _ in 0..10_000 {
            assert_eq!(a.on_wake(1), None);
        }
        // A few frames now and then (two flows crossing) do not tip it either.
        for i in 0..10_000 {
            assert_eq!(a.on_wake(if i % 4 == 0 { 3 } else { 1 }), None);
        }
    }

    #[test]
    fn a_flood_turns_batch_and_its_end_turns_back() {
        let mut a = SchedAdapter::new();
        // The thrashing regime measured: ~7 frames per wake-up.
        let turned = (1..=20).find(|_| a.on_wake(7).is_some());
        assert!(turned.is_some(), "7 frames per wake-up never turned batch");
        assert_eq!(a.policy, SchedPolicy::Batch);
        for _ in 0..1000 {
            assert_eq!(a.on_wake(WAKE_CAP * 4), None);
        }
        // Back to a ping-pong: normal again within a few dozen wake-ups, once.
        let mut changes = Vec::new();
        for i in 0..100 {
            if let Some(p) = a.on_wake(1) {
                changes.push((i, p));
            }
        }
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].1, SchedPolicy::Normal);
        assert!(changes[0].0 < 50, "took {} wake-ups", changes[0].0);
    }

    #[test]
    fn empty_wake_ups_count_as_quiet() {
        let mut a = SchedAdapter::new();
        while a.on_wake(50).is_none() {}
        let back = (0..100).find(|_| a.on_wake(0).is_some());
        assert!(back.is_some());
        assert_eq!(a.policy, SchedPolicy::Normal);
    }
}
