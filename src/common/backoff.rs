//! Exponential backoff with a cap, used for broker connection attempts,
//! batch retries during outages, consumer restarts and notification retries;
//! and the delay a server asks for (`Retry-After`).

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

/// A `Retry-After` value: seconds, or an HTTP date (time from now).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some((at.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std().unwrap_or_default())
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

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        let soon = (chrono::Utc::now() + chrono::Duration::seconds(90)).format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        let got = parse_retry_after(&soon).unwrap();
        assert!(got > Duration::from_secs(85) && got <= Duration::from_secs(90), "{got:?}");
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO), "a past date");
        assert_eq!(parse_retry_after("soon"), None);
    }
}
