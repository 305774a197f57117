//! The consumer thread's heartbeat: what it last did and when, written by the
//! thread, read by the supervisor and the health endpoint.

use crate::common::locks::lock;
use crate::common::record::TopicPartition;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Heartbeat {
    epoch: Instant,
    /// Milliseconds since `epoch` + 1 (0 = never).
    last_poll: AtomicU64,
    /// The last commit Kafka confirmed, and the last batch the database committed.
    last_commit: AtomicU64,
    last_stored: AtomicU64,
    /// Since when handled records have waited for a commit (0 = none wait).
    uncommitted_since: AtomicU64,
    records: AtomicU64,
    assigned: AtomicI64,
    assignment: Mutex<Vec<TopicPartition>>,
    /// Since when the batch in hand has been retrying (0 = it is not).
    retrying_since: AtomicU64,
    last_error: Mutex<Option<String>>,
    in_hand: Mutex<Option<RetryingBatch>>,
    /// The Kafka client's errors: since when, the last one, and when.
    client_errors: Mutex<Option<ClientErrors>>,
}

/// The batch kept uncommitted while a transient failure clears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryingBatch {
    /// Its first record's position (`topic/partition@offset`).
    pub first: String,
    pub records: usize,
    pub attempts: u32,
    pub reason: String,
}

#[derive(Debug, Clone)]
struct ClientErrors {
    since: Instant,
    last_at: Instant,
    last: String,
}

/// Client errors end when none came for this long (librdkafka repeats them
/// while a broker stays unreachable, and says nothing when it is back).
const CLIENT_ERRORS_QUIET: Duration = Duration::from_secs(30);

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            epoch: Instant::now(),
            last_poll: AtomicU64::new(0),
            last_commit: AtomicU64::new(0),
            last_stored: AtomicU64::new(0),
            uncommitted_since: AtomicU64::new(0),
            records: AtomicU64::new(0),
            assigned: AtomicI64::new(0),
            assignment: Mutex::new(Vec::new()),
            retrying_since: AtomicU64::new(0),
            last_error: Mutex::new(None),
            in_hand: Mutex::new(None),
            client_errors: Mutex::new(None),
        }
    }
}

impl Heartbeat {
    fn stamp(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn age(&self, at: &AtomicU64) -> Option<Duration> {
        match at.load(Ordering::Relaxed) {
            0 => None,
            t => Some(Duration::from_millis((self.stamp()).saturating_sub(t))),
        }
    }

    pub fn polled(&self) {
        self.last_poll.store(self.stamp(), Ordering::Relaxed);
    }

    /// A batch of `records` was handled: the database committed it (its
    /// Kafka commit may follow shortly).
    pub fn handled(&self, records: usize) {
        self.last_stored.store(self.stamp(), Ordering::Relaxed);
        self.records.fetch_add(records as u64, Ordering::Relaxed);
        let _ = self.uncommitted_since.compare_exchange(0, self.stamp(), Ordering::Relaxed, Ordering::Relaxed);
    }

    /// A commit went through; `all` when nothing handled waits for one any more.
    pub fn committed(&self, all: bool) {
        self.last_commit.store(self.stamp(), Ordering::Relaxed);
        if all {
            self.uncommitted_since.store(0, Ordering::Relaxed);
        }
    }

    /// How long handled records have waited for a commit (`None`: none wait).
    pub fn uncommitted_for(&self) -> Option<Duration> {
        self.age(&self.uncommitted_since)
    }

    /// The partitions changed: what was handled of the old ones is committed
    /// on revocation or read again by their next owner.
    pub fn set_assignment(&self, partitions: Vec<TopicPartition>) {
        self.uncommitted_since.store(0, Ordering::Relaxed);
        self.assigned.store(partitions.len() as i64, Ordering::Relaxed);
        *lock(&self.assignment) = partitions;
    }

    /// The partitions assigned to the thread.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        lock(&self.assignment).clone()
    }

    /// The batch in hand and why it waits (`None`: no batch waits).
    pub fn set_retrying(&self, in_hand: Option<RetryingBatch>) {
        match &in_hand {
            // The first failure starts the clock; later attempts keep it.
            Some(_) => {
                let _ = self.retrying_since.compare_exchange(0, self.stamp(), Ordering::Relaxed, Ordering::Relaxed);
            }
            None => self.retrying_since.store(0, Ordering::Relaxed),
        }
        let in_hand = in_hand.map(|mut h| {
            // Database messages may span lines: /healthz shows one.
            h.reason = crate::db::one_line(&h.reason);
            h
        });
        if let Some(h) = &in_hand {
            *lock(&self.last_error) = Some(h.reason.clone());
        }
        *lock(&self.in_hand) = in_hand;
    }

    /// The batch in hand, while one waits for a retry.
    pub fn in_hand(&self) -> Option<RetryingBatch> {
        lock(&self.in_hand).clone()
    }

    /// How long the batch in hand has been retrying.
    pub fn retrying_for(&self) -> Option<Duration> {
        self.age(&self.retrying_since)
    }

    /// Time since the last poll; `None` before the first one.
    pub fn since_poll(&self) -> Option<Duration> {
        self.age(&self.last_poll)
    }

    /// Time since Kafka last confirmed a commit.
    pub fn since_commit(&self) -> Option<Duration> {
        self.age(&self.last_commit)
    }

    /// Time since the database last committed a batch.
    pub fn since_stored(&self) -> Option<Duration> {
        self.age(&self.last_stored)
    }

    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    pub fn assigned(&self) -> i64 {
        self.assigned.load(Ordering::Relaxed)
    }

    /// The Kafka client reported an error (broker unreachable, authentication, ...).
    pub fn client_error(&self, error: &str) {
        let now = Instant::now();
        let mut e = lock(&self.client_errors);
        let since = e.as_ref().filter(|c| now - c.last_at < CLIENT_ERRORS_QUIET).map_or(now, |c| c.since);
        *e = Some(ClientErrors { since, last_at: now, last: error.to_string() });
    }

    /// The client works (records arrived, a commit went through).
    pub fn client_ok(&self) {
        *lock(&self.client_errors) = None;
    }

    /// The client's last error, when errors have kept coming for at least `limit`.
    pub fn client_failing_for(&self, limit: Duration) -> Option<(Duration, String)> {
        let e = lock(&self.client_errors).clone()?;
        let now = Instant::now();
        let lasting = now - e.since;
        (lasting >= limit && now - e.last_at < CLIENT_ERRORS_QUIET).then_some((lasting, e.last))
    }

    pub fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handled_records_wait_for_a_commit_until_one_or_a_new_assignment() {
        let hb = Heartbeat::default();
        assert_eq!(hb.uncommitted_for(), None);
        hb.handled(3);
        std::thread::sleep(Duration::from_millis(20));
        hb.handled(2);
        let waited = hb.uncommitted_for().expect("records wait");
        assert!(waited >= Duration::from_millis(20), "the first handled batch starts the clock: {waited:?}");
        hb.committed(false);
        assert!(hb.uncommitted_for().is_some(), "a commit of older offsets leaves later records waiting");
        hb.committed(true);
        assert_eq!(hb.uncommitted_for(), None);
        hb.handled(1);
        assert!(hb.uncommitted_for().is_some());
        hb.set_assignment(vec![TopicPartition::new("t", 0)]);
        assert_eq!(hb.uncommitted_for(), None, "a new assignment starts afresh");
    }
}
