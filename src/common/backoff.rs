//! Exponential backoff with a cap, used for broker connection attempts,
//! batch retries during outages, consumer restarts and notification retries.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max, attempt: 0 }
    }

    /// The delay before retry number `attempt` (0-based): initial * 2^attempt, capped.
    pub fn delay_for(initial: Duration, max: Duration, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        initial.checked_mul(factor).unwrap_or(max).min(max)
    }

    /// The next delay; each call doubles it up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let d = Self::delay_for(self.initial, self.max, self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_until_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let got: Vec<u128> = (0..6).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.attempts(), 6);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        assert_eq!(Backoff::delay_for(Duration::from_secs(1), Duration::from_secs(30), 40), Duration::from_secs(30));
        assert_eq!(
            Backoff::delay_for(Duration::from_secs(1), Duration::from_secs(30), u32::MAX),
            Duration::from_secs(30)
        );
    }
}
