//! A circuit breaker for one endpoint: after `threshold` failures in a row
//! it opens for a cool-off, during which no call is made (the sender defers
//! its rows without spending their attempts); then one trial call goes
//! through, and its outcome closes the breaker or opens it again. (The
//! webhook notifier and the model client each keep one.)

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::common::locks::lock;

pub struct Breaker {
    threshold: u32,
    cool_off: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    failures: u32,
    open_until: Option<Instant>,
    /// A trial call after the cool-off is under way.
    trial: bool,
}

impl Breaker {
    pub fn new(threshold: u32, cool_off: Duration) -> Breaker {
        Breaker { threshold: threshold.max(1), cool_off, state: Mutex::default() }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Each update leaves the state whole: a poisoned lock holds consistent data.
        lock(&self.state)
    }

    /// Whether a call may go now; when not, how long to wait.
    pub fn admit(&self) -> Result<(), Duration> {
        let mut s = self.state();
        let now = Instant::now();
        match s.open_until {
            None => Ok(()),
            Some(until) if now < until => Err(until - now),
            // Others wait while the trial call is under way.
            Some(_) if s.trial => Err(self.cool_off),
            Some(_) => {
                s.trial = true;
                Ok(())
            }
        }
    }

    /// The outcome of an admitted call: `false` when the endpoint failed.
    /// Returns the breaker's state when it changed (or failed again while
    /// open), for the caller to report.
    pub fn record(&self, ok: bool) -> Option<Changed> {
        let mut s = self.state();
        let was_open = s.open_until.is_some();
        if ok {
            *s = State::default();
        } else {
            s.failures += 1;
            if s.trial || (s.open_until.is_none() && s.failures >= self.threshold) {
                s.open_until = Some(Instant::now() + self.cool_off);
                s.trial = false;
            }
        }
        let open = s.open_until.is_some();
        (open != was_open || (open && !ok)).then_some(Changed {
            open,
            failures_in_a_row: s.failures,
            cool_off: self.cool_off,
        })
    }
}

/// A breaker opened (or failed its trial), or closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Changed {
    pub open: bool,
    pub failures_in_a_row: u32,
    pub cool_off: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_a_trial_closes_or_reopens_it() {
        let b = Breaker::new(3, Duration::from_millis(50));
        for _ in 0..2 {
            assert_eq!(b.admit(), Ok(()));
            b.record(false);
        }
        assert_eq!(b.admit(), Ok(()), "two failures of three: still closed");
        b.record(true);
        for _ in 0..2 {
            assert_eq!(b.admit(), Ok(()));
            assert_eq!(b.record(false), None, "no change to report");
        }
        let opened = Changed { open: true, failures_in_a_row: 3, cool_off: Duration::from_millis(50) };
        assert_eq!(b.record(false), Some(opened), "the third failure opens it");
        let wait = b.admit().expect_err("open after three failures in a row");
        assert!(wait <= Duration::from_millis(50) && wait > Duration::from_millis(30), "{wait:?}");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.admit(), Ok(()), "one trial after the cool-off");
        assert_eq!(b.admit(), Err(Duration::from_millis(50)), "only one trial at a time");
        b.record(false);
        assert!(b.admit().is_err(), "a failed trial opens it again");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.admit(), Ok(()));
        assert_eq!(b.record(true).map(|c| c.open), Some(false), "a trial that works closes it");
        assert_eq!(b.admit(), Ok(()));
        assert_eq!(b.admit(), Ok(()), "closed: every call goes");
    }
}
