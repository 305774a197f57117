//! The batcher: collects records until a batch holds `CONSUMER_BATCH_SIZE`
//! records or `CONSUMER_BATCH_TIMEOUT_MS` has passed since its first record
//! arrived, whichever comes first. Records beyond a full batch wait in order
//! for the next one (never dropped). Time comes from an injected [`Clock`].
//! A lane keeps one per module with batches of its own ([`Batchers`]).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

pub use crate::common::clock::{Clock, SystemClock};
use crate::common::record::Record;

pub struct Batcher<C: Clock = SystemClock> {
    size: usize,
    timeout: Duration,
    clock: C,
    /// Records in arrival order with the time each arrived.
    queue: VecDeque<(Instant, Record)>,
    /// Their bytes (keys and payloads).
    bytes: usize,
}

impl<C: Clock> Batcher<C> {
    pub fn new(size: usize, timeout: Duration, clock: C) -> Self {
        Batcher { size: size.max(1), timeout, clock, queue: VecDeque::new(), bytes: 0 }
    }

    pub fn push(&mut self, record: Record) {
        let now = self.clock.now();
        self.bytes += record.bytes();
        self.queue.push_back((now, record));
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// The bytes of the waiting records.
    pub fn bytes(&self) -> usize {
        self.bytes
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
        let batch: Vec<Record> = self.queue.drain(..n).map(|(_, r)| r).collect();
        self.bytes -= batch.iter().map(Record::bytes).sum::<usize>();
        batch
    }

    /// Calls `f` with each waiting record, oldest first.
    pub fn each(&self, mut f: impl FnMut(&Record)) {
        self.queue.iter().for_each(|(_, r)| f(r));
    }

    /// Whether a waiting record is one `pick` picks.
    pub fn holds(&self, mut pick: impl FnMut(&Record) -> bool) -> bool {
        self.queue.iter().any(|(_, r)| pick(r))
    }

    /// Drops the waiting records `revoked` picks (of revoked partitions:
    /// their new owner reads them again from the committed offset).
    pub fn discard(&mut self, mut revoked: impl FnMut(&Record) -> bool) -> usize {
        let before = self.queue.len();
        self.queue.retain(|(_, r)| !revoked(r));
        self.bytes = self.queue.iter().map(|(_, r)| r.bytes()).sum();
        before - self.queue.len()
    }
}

/// A lane's batchers: one per topic whose module has batches of its own
/// (`CONSUMER_BATCH_SIZE_<MODULE>`), and one for the rest, whose batches
/// may hold several topics.
pub struct Batchers<C: Clock = SystemClock> {
    shared: Batcher<C>,
    own: Vec<(String, Batcher<C>)>,
}

impl<C: Clock + Clone> Batchers<C> {
    /// `own`: each such topic's size and timeout.
    pub fn new(size: usize, timeout: Duration, own: &BTreeMap<String, (usize, Duration)>, clock: C) -> Self {
        let own = own.iter().map(|(t, (size, timeout))| (t.clone(), Batcher::new(*size, *timeout, clock.clone())));
        Batchers { shared: Batcher::new(size, timeout, clock.clone()), own: own.collect() }
    }
}

impl<C: Clock> Batchers<C> {
    fn all(&self) -> impl Iterator<Item = &Batcher<C>> {
        std::iter::once(&self.shared).chain(self.own.iter().map(|(_, b)| b))
    }

    pub fn push(&mut self, record: Record) {
        match self.own.iter_mut().find(|(t, _)| *t == record.topic) {
            Some((_, b)) => b.push(record),
            None => self.shared.push(record),
        }
    }

    pub fn len(&self) -> usize {
        self.all().map(Batcher::len).sum()
    }

    pub fn bytes(&self) -> usize {
        self.all().map(Batcher::bytes).sum()
    }

    /// Time until the first of its batches closes; `None` when nothing waits.
    pub fn time_left(&self) -> Option<Duration> {
        self.all().filter_map(Batcher::time_left).min()
    }

    /// The batch that closes first, when it is ready (with `force`, ready or not).
    pub fn take(&mut self, force: bool) -> Option<Vec<Record>> {
        let own = self.own.iter_mut().map(|(_, b)| b);
        let first = std::iter::once(&mut self.shared).chain(own).filter(|b| b.time_left().is_some());
        let next = first.min_by_key(|b| b.time_left())?;
        (force || next.is_ready()).then(|| next.take())
    }

    pub fn holds(&self, mut pick: impl FnMut(&Record) -> bool) -> bool {
        self.all().any(|b| b.holds(&mut pick))
    }

    pub fn each(&self, mut f: impl FnMut(&Record)) {
        self.all().for_each(|b| b.each(&mut f));
    }

    pub fn discard(&mut self, mut revoked: impl FnMut(&Record) -> bool) -> usize {
        let own = self.own.iter_mut().map(|(_, b)| b);
        std::iter::once(&mut self.shared).chain(own).map(|b| b.discard(&mut revoked)).sum()
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
        assert_eq!(b.len(), 0);
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

    #[test]
    fn a_module_with_its_own_batches_gets_its_own_batcher() {
        let clock = FakeClock(Arc::new(Mutex::new(Instant::now())));
        let own = BTreeMap::from([("big".to_string(), (4, Duration::from_millis(1000)))]);
        let mut b = Batchers::new(2, Duration::from_millis(100), &own, clock.clone());
        let of = |topic: &str, offset| Record { topic: topic.into(), ..rec(offset) };
        for o in 0..3 {
            b.push(of("big", o));
        }
        b.push(of("t", 0));
        assert_eq!((b.len(), b.take(false)), (4, None), "neither batch is ready");
        b.push(of("u", 0));
        let shared = b.take(false).expect("the shared batch is full");
        assert_eq!(shared.iter().map(|r| r.topic.as_str()).collect::<Vec<_>>(), ["t", "u"], "topics mixed");
        clock.advance(100);
        assert_eq!(b.time_left(), Some(Duration::from_millis(900)), "the big batch waits its own timeout");
        assert!(b.take(false).is_none());
        assert_eq!(b.take(true).map(|v| v.len()), Some(3), "a drain takes it early");
        b.push(of("big", 3));
        assert!(b.holds(|r| r.topic == "big"));
        assert_eq!(b.discard(|r| r.topic == "big"), 1);
        assert!(b.len() == 0 && b.time_left().is_none(), "empty");
    }
}
