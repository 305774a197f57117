//! Waiting for a condition: the one polling loop of the harness.

use std::time::{Duration, Instant};

/// Polls `cond` every `every` until it holds (`true`) or `limit` has
/// passed (`false`). `cond` may fail the test itself (e.g. when a service
/// it waits on exited).
pub fn poll(limit: Duration, every: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// Polls `cond` every 50 ms until it holds; fails the test after `limit`.
pub fn wait_for(what: &str, limit: Duration, cond: impl FnMut() -> bool) {
    assert!(poll(limit, Duration::from_millis(50), cond), "timed out after {limit:?} waiting for {what}");
}
