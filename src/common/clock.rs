//! Time as the consumer pipeline reads it: the system clock in production, a
//! simulated one (that jumps, and sleeps without waiting) in the simulation.

use std::time::{Duration, Instant};

pub trait Clock: Send {
    fn now(&self) -> Instant;
    fn sleep(&self, d: Duration);
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, d: Duration) {
        std::thread::sleep(d)
    }
}
