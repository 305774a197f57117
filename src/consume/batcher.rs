//! The batcher: collects records until a batch holds `CONSUMER_BATCH_SIZE`
//! records or `CONSUMER_BATCH_TIMEOUT_MS` has passed since its first record
//! arrived, whichever comes first. Records beyond a full batch wait in order
//! for the next one (never dropped). Time comes from an injected [`Clock`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub use crate::common::clock::{Clock, SystemClock};
use crate::common::record::Record;

pub struct Batcher<C: Clock = SystemClock> {
    size: usize,
    timeout: Duration,
    clock: C,
    /// Records in arrival order with the time each arrived.
    queue: VecDeque<(Instant, Record)>,
}

impl<C: Clock> Batcher<C> {
    pub fn new(size: usize, timeout: Duration, clock: C) -> Self {
        Batcher { size: size.max(1), timeout, clock, queue: VecDeque::new() }
    }

    pub fn push(&mut self, record: Record) {
        let now = self.clock.now();
        self.queue.push_back((now, record));
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// True when a full batch is waiting or the oldest record has waited the timeout.
    pub fn is_ready(&self) -> bool {
        self.time_left() == Some(Duration::ZERO)
    }

    /// Time until the current batch closes; `None` when nothing is waiting
    /// (an empty batch never closes).
    pub fn time_left(&self) -> Option<Duration> {
        let (opened, _) = self.queue.front()?;
        if self.queue.len() >= self.size {
            return Some(Duration::ZERO);
        }
        Some(self.timeout.saturating_sub(self.clock.now().saturating_duration_since(*opened)))
    }

    /// Takes the next batch (up to `size` records, oldest first), ready or not.
    pub fn take(&mut self) -> Vec<Record> {
        let n = self.queue.len().min(self.size);
        self.queue.drain(..n).map(|(_, r)| r).collect()
    }

    /// Drops the waiting records `revoked` picks (of revoked partitions:
    /// their new owner reads them again from the committed offset).
    pub fn discard(&mut self, mut revoked: impl FnMut(&Record) -> bool) -> usize {
        let before = self.queue.len();
        self.queue.retain(|(_, r)| !revoked(r));
        before - self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A clock the test moves by hand.
    #[derive(Clone)]
    struct FakeClock(Arc<Mutex<Instant>>);
    impl Clock for FakeClock {
        fn now(&self) -> Instant {
            *self.0.lock().unwrap()
        }
        fn sleep(&self, d: Duration) {
            *self.0.lock().unwrap() += d;
        }
    }
    impl FakeClock {
        fn advance(&self, ms: u64) {
            *self.0.lock().unwrap() += Duration::from_millis(ms);
        }
    }

    fn rec(offset: i64) -> Record {
        Record { topic: "t".into(), partition: 0, offset, key: None, payload: None, timestamp: None }
    }

    fn batcher(size: usize, timeout_ms: u64) -> (Batcher<FakeClock>, FakeClock) {
        let clock = FakeClock(Arc::new(Mutex::new(Instant::now())));
        (Batcher::new(size, Duration::from_millis(timeout_ms), clock.clone()), clock)
    }

    #[test]
    fn empty_batch_never_closes() {
        let (b, clock) = batcher(3, 100);
        clock.advance(10_000);
        assert!(!b.is_ready());
        assert_eq!(b.time_left(), None);
    }

    #[test]
    fn closes_when_full() {
        let (mut b, _clock) = batcher(3, 5000);
        b.push(rec(0));
        b.push(rec(1));
        assert!(!b.is_ready());
        b.push(rec(2));
        assert!(b.is_ready());
        assert_eq!(b.take().iter().map(|r| r.offset).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert!(b.is_empty());
    }

    #[test]
    fn closes_on_timeout_counted_from_the_first_record() {
        let (mut b, clock) = batcher(25, 5000);
        b.push(rec(0));
        clock.advance(3000);
        b.push(rec(1));
        assert_eq!(b.time_left(), Some(Duration::from_millis(2000)));
        clock.advance(1999);
        assert!(!b.is_ready());
        clock.advance(1);
        assert!(b.is_ready());
        assert_eq!(b.take().len(), 2);
    }

    #[test]
    fn overflow_is_kept_in_order_for_the_next_batch() {
        let (mut b, clock) = batcher(25, 5000);
        for o in 0..60 {
            b.push(rec(o));
        }
        let first = b.take();
        assert_eq!(first.len(), 25);
        assert_eq!(first[0].offset, 0);
        // the rest is already a full batch: ready without waiting
        assert!(b.is_ready());
        let second = b.take();
        assert_eq!((second[0].offset, second.len()), (25, 25));
        // 10 left: the batch they form opened when they arrived
        assert!(!b.is_ready());
        clock.advance(5000);
        assert!(b.is_ready());
        assert_eq!(b.take().iter().map(|r| r.offset).collect::<Vec<_>>(), (50..60).collect::<Vec<_>>());
    }

    #[test]
    fn discard_drops_only_revoked_partitions() {
        let (mut b, _clock) = batcher(25, 5000);
        for p in 0..4 {
            let mut r = rec(p as i64);
            r.partition = p;
            b.push(r);
        }
        assert_eq!(b.discard(|r| r.partition % 2 == 0), 2);
        assert_eq!(b.take().iter().map(|r| r.partition).collect::<Vec<_>>(), vec![1, 3]);
    }
}
