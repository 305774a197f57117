//! One shutdown signal, fanned out: async parts wait on a watch channel, the
//! blocking consumer thread checks a flag on every loop step. One budget
//! (`SHUTDOWN_TIMEOUT_MS`), counted from the signal, covers the whole
//! shutdown: the consumer's drain, revoke and leave, and the running jobs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::common::locks::lock;
use tokio::sync::watch;

#[derive(Clone)]
pub struct Shutdown {
    flag: Arc<AtomicBool>,
    tx: Arc<watch::Sender<bool>>,
    at: Arc<OnceLock<Instant>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            flag: Arc::new(AtomicBool::new(false)),
            tx: Arc::new(watch::channel(false).0),
            at: Arc::new(OnceLock::new()),
        }
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn trigger(&self) {
        self.at.get_or_init(Instant::now);
        self.flag.store(true, Ordering::SeqCst);
        self.tx.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// When everything must be done: `budget` after the signal (or after now,
    /// if it has not come).
    pub fn deadline(&self, budget: Duration) -> Instant {
        *self.at.get().unwrap_or(&Instant::now()) + budget
    }

    /// Resolves once shutdown has been triggered.
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }
}

/// Part of a consumer thread's stop budget kept for the final commit and
/// for leaving the group (at most [`LEAVE_RESERVE`]).
const LEAVE_SHARE: u32 = 4;
pub const LEAVE_RESERVE: Duration = Duration::from_secs(1);

/// A request for the consumer thread to stop, with its deadline. The
/// pipeline stops draining (a stop, or a revoke that is under way) at
/// [`StopRequest::drain_by`], which leaves time to commit and leave the
/// group by [`StopRequest::by`].
#[derive(Default)]
pub struct StopRequest {
    at: Mutex<Option<(Instant, Instant)>>,
}

impl StopRequest {
    fn get(&self) -> std::sync::MutexGuard<'_, Option<(Instant, Instant)>> {
        // One assignment per update: a poisoned lock holds consistent data.
        lock(&self.at)
    }

    /// Asks to stop by `by`; an earlier request's deadline is kept if sooner.
    pub fn request(&self, by: Instant) {
        self.request_at(Instant::now(), by);
    }

    /// [`Self::request`], the time now being `now` (a simulated clock's).
    pub fn request_at(&self, now: Instant, by: Instant) {
        let mut at = self.get();
        let by = at.map_or(by, |(_, old)| old.min(by));
        let reserve = (by.saturating_duration_since(now) / LEAVE_SHARE).min(LEAVE_RESERVE);
        *at = Some((by - reserve, by));
    }

    pub fn is_requested(&self) -> bool {
        self.get().is_some()
    }

    /// When draining must end, if a stop was requested.
    pub fn drain_by(&self) -> Option<Instant> {
        self.get().map(|(drain, _)| drain)
    }

    /// When the thread must be done, if a stop was requested.
    pub fn by(&self) -> Option<Instant> {
        self.get().map(|(_, by)| by)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_keeps_a_reserve_to_leave_and_the_sooner_deadline() {
        let stop = StopRequest::default();
        assert!(!stop.is_requested());
        let now = Instant::now();
        stop.request(now + Duration::from_secs(10));
        let (drain, by) = (stop.drain_by().unwrap(), stop.by().unwrap());
        assert_eq!(by, now + Duration::from_secs(10));
        assert!(by - drain <= LEAVE_RESERVE && by - drain > Duration::from_millis(900), "{:?}", by - drain);
        stop.request(now + Duration::from_secs(60));
        assert_eq!(stop.by().unwrap(), now + Duration::from_secs(10), "a later request does not extend");
        stop.request(now + Duration::from_secs(2));
        let (drain, by) = (stop.drain_by().unwrap(), stop.by().unwrap());
        assert_eq!(by, now + Duration::from_secs(2));
        assert!(by - drain <= Duration::from_millis(500), "a quarter of a short budget: {:?}", by - drain);
    }

    #[test]
    fn the_deadline_counts_from_the_signal() {
        let s = Shutdown::new();
        s.trigger();
        let first = s.deadline(Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(20));
        s.trigger();
        assert_eq!(s.deadline(Duration::from_secs(5)), first);
    }
}
