//! Reconnecting to a switch that restarts on the same path.
//!
//! [`Backoff`] is the schedule, sans-IO: the caller says how long the link has been gone and
//! gets the wait before its next attempt, or `None` when it is time to give up. [`Reopener`]
//! opens a plug's VNL again with the options it was first opened with (a `vde://` plug re-does
//! the switch's handshake with the same port request). [`reconnect`] puts the two together for
//! threads that may block; [`crate::cable::run_reconnecting`] and filo-stack's driver use it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::open::{OpenError, OpenOptions};
use crate::plug::Plug;

/// How to retry: the first wait, doubled after each failed attempt up to `max`, and how long
/// to keep trying (`None`: forever).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub first: Duration,
    pub max: Duration,
    pub give_up_after: Option<Duration>,
}

impl Default for Policy {
    /// 100 ms doubling to 2 s, for at most 60 s.
    fn default() -> Self {
        Policy {
            first: Duration::from_millis(100),
            max: Duration::from_secs(2),
            give_up_after: Some(Duration::from_secs(60)),
        }
    }
}

/// The back-off schedule of one outage.
#[derive(Clone, Debug)]
pub struct Backoff {
    policy: Policy,
    delay: Duration,
}

impl Backoff {
    pub fn new(policy: Policy) -> Backoff {
        Backoff {
            delay: policy.first.min(policy.max),
            policy,
        }
    }

    /// The wait before the next attempt, given how long the link has been gone; `None` once
    /// the policy's limit is reached. A wait never goes past the limit, so the last attempt
    /// is made at it.
    pub fn next(&mut self, since_loss: Duration) -> Option<Duration> {
        let left = match self.policy.give_up_after {
            Some(limit) if since_loss >= limit => return None,
            Some(limit) => limit - since_loss,
            None => Duration::MAX,
        };
        let wait = self.delay.min(left);
        self.delay = self.delay.saturating_mul(2).min(self.policy.max);
        Some(wait)
    }
}

/// Opens a plug's VNL again, with the options of its first opening. Plugs opened from a
/// `vde://` VNL carry one ([`Plug::reopener`]); transports where reconnecting makes no sense
/// (streams, commands, taps, in-process switches) do not.
#[derive(Clone, Debug)]
pub struct Reopener {
    pub(crate) options: OpenOptions,
    pub(crate) vnl: String,
}

impl Reopener {
    pub fn open(&self) -> Result<Plug, OpenError> {
        self.options.open(&self.vnl)
    }
}

/// Why [`reconnect`] returned without a plug.
#[derive(Debug)]
pub enum ReconnectError {
    /// The policy's limit passed; the last attempt's error.
    GaveUp { after: Duration, last: String },
    /// The stop flag was raised.
    Stopped,
}

impl std::fmt::Display for ReconnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReconnectError::GaveUp { after, last } => {
                write!(f, "gave up reconnecting after {after:.0?}: {last}")
            }
            ReconnectError::Stopped => write!(f, "stopped while reconnecting"),
        }
    }
}

/// Opens `reopener`'s VNL again, waiting between attempts as `policy` says; blocks. It stops
/// when `stop` is raised (looked at every 100 ms).
pub fn reconnect(
    reopener: &Reopener,
    policy: Policy,
    stop: &AtomicBool,
) -> Result<Plug, ReconnectError> {
    reconnect_while(reopener, policy, || !stop.load(Ordering::Relaxed))
}

/// Like [`reconnect`], going on while `keep_going` says so (a stack that still exists).
pub fn reconnect_while(
    reopener: &Reopener,
    policy: Policy,
    keep_going: impl Fn() -> bool,
) -> Result<Plug, ReconnectError> {
    let lost = Instant::now();
    let mut backoff = Backoff::new(policy);
    let mut last = String::from("no attempt made");
    while let Some(wait) = backoff.next(lost.elapsed()) {
        let until = Instant::now() + wait;
        loop {
            if !keep_going() {
                return Err(ReconnectError::Stopped);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
        match reopener.open() {
            Ok(plug) => return Ok(plug),
            Err(e) => {
                tracing::debug!("{}: reconnect attempt failed: {e}", reopener.vnl);
                last = e.to_string();
            }
        }
    }
    Err(ReconnectError::GaveUp {
        after: lost.elapsed(),
        last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Runs the schedule in virtual time, each attempt failing at once: the waits.
    fn schedule(policy: Policy) -> Vec<Duration> {
        let mut b = Backoff::new(policy);
        let mut now = Duration::ZERO;
        let mut waits = Vec::new();
        while let Some(w) = b.next(now) {
            waits.push(w);
            now += w;
            assert!(waits.len() < 10_000, "the schedule ends");
        }
        waits
    }

    #[test]
    fn waits_double_from_100ms_to_2s_and_stop_at_60s() {
        let waits = schedule(Policy::default());
        assert_eq!(
            &waits[..6],
            &[100 * MS, 200 * MS, 400 * MS, 800 * MS, 1600 * MS, 2000 * MS]
        );
        assert!(waits[5..].iter().all(|&w| w <= 2000 * MS));
        let total: Duration = waits.iter().sum();
        assert_eq!(
            total,
            Duration::from_secs(60),
            "the last attempt is at the limit"
        );
        // 3.1 s of doubling, then 2 s steps: 29 more attempts, the last one shortened.
        assert_eq!(waits.len(), 5 + 29);
        assert_eq!(*waits.last().unwrap(), 900 * MS);
    }

    #[test]
    fn time_spent_in_attempts_counts_against_the_limit() {
        let mut b = Backoff::new(Policy::default());
        assert_eq!(b.next(Duration::ZERO), Some(100 * MS));
        // An attempt that hung for 59.9 s (a switch that never answered) leaves 100 ms.
        assert_eq!(b.next(Duration::from_millis(59_900)), Some(100 * MS));
        assert_eq!(b.next(Duration::from_secs(60)), None);
    }

    #[test]
    fn without_a_limit_the_schedule_goes_on_at_the_maximum() {
        let mut b = Backoff::new(Policy {
            first: Duration::from_secs(5),
            max: Duration::from_secs(1),
            give_up_after: None,
        });
        for hour in 0..1000u64 {
            assert_eq!(
                b.next(Duration::from_secs(hour * 3600)),
                Some(Duration::from_secs(1))
            );
        }
    }

    #[test]
    fn a_zero_limit_gives_up_at_once() {
        let waits = schedule(Policy {
            give_up_after: Some(Duration::ZERO),
            ..Policy::default()
        });
        assert!(waits.is_empty());
    }

    #[test]
    fn reconnect_gives_up_with_the_last_error_and_honours_stop() {
        let reopener = Reopener {
            options: OpenOptions::default(),
            vnl: "vde:///nonexistent/filo-reconnect-test".into(),
        };
        let policy = Policy {
            first: 10 * MS,
            max: 20 * MS,
            give_up_after: Some(100 * MS),
        };
        let stop = AtomicBool::new(false);
        match reconnect(&reopener, policy, &stop) {
            Err(ReconnectError::GaveUp { last, .. }) => {
                assert!(last.contains("filo-reconnect-test"), "{last}")
            }
            other => panic!("expected GaveUp, got {other:?}"),
        }
        stop.store(true, Ordering::Relaxed);
        assert!(matches!(
            reconnect(&reopener, Policy::default(), &stop),
            Err(ReconnectError::Stopped)
        ));
    }
}
