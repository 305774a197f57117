//! The consumer thread's heartbeat: what it last did and when, written by the
//! thread, read by the supervisor and the health endpoint.

use crate::common::locks::lock;
use crate::common::record::TopicPartition;
use std::collections::BTreeMap;
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
    last_error: Mutex<Option<String>>,
    /// Each lane's batch in hand, with since when it has been retrying (a stamp).
    in_hand: Mutex<BTreeMap<usize, (u64, RetryingBatch)>>,
    /// Since when each lane has worked on its batch (a stamp), for the lanes that do.
    busy: Mutex<BTreeMap<usize, u64>>,
    /// The Kafka client's errors: since when, the last one, and when.
    client_errors: Mutex<Option<ClientErrors>>,
    /// Each assigned partition as the pipeline last described it.
    partitions: Mutex<Vec<PartitionView>>,
}

/// An assigned partition as the console shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartitionView {
    pub topic: String,
    pub partition: i32,
    pub lane: usize,
    /// Why its fetching is paused: `operator` (from the console), `retrying`
    /// (a batch of it is in hand), `memory` (its lane holds too much); `None`: fetching.
    pub paused: Option<&'static str>,
    /// Its records in memory: waiting, in hand and in flight.
    pub in_memory: usize,
    /// The Kafka timestamp (ms) of its oldest record in memory: the oldest not handled yet.
    pub oldest_in_memory_ms: Option<i64>,
    /// The next offset after the last handled record, as stored in the
    /// database with the batch (`None`: none handled since it was assigned).
    pub handled: Option<i64>,
    /// The offset Kafka last confirmed committed.
    pub committed: Option<i64>,
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
            last_error: Mutex::new(None),
            in_hand: Mutex::default(),
            busy: Mutex::default(),
            client_errors: Mutex::new(None),
            partitions: Mutex::default(),
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

    /// Lane `lane`'s batch in hand and why it waits (`None`: none waits).
    pub fn set_retrying(&self, lane: usize, in_hand: Option<RetryingBatch>) {
        let mut held = lock(&self.in_hand);
        let Some(mut h) = in_hand else {
            held.remove(&lane);
            return;
        };
        // Database messages may span lines: /healthz shows one.
        h.reason = crate::db::one_line(&h.reason);
        *lock(&self.last_error) = Some(h.reason.clone());
        // The first failure starts the clock; later attempts keep it.
        let since = held.get(&lane).map_or_else(|| self.stamp(), |(since, _)| *since);
        held.insert(lane, (since, h));
    }

    /// The batch in hand that has waited longest, while one waits for a retry.
    pub fn in_hand(&self) -> Option<RetryingBatch> {
        lock(&self.in_hand).values().min_by_key(|(since, _)| *since).map(|(_, h)| h.clone())
    }

    /// Each lane's batch in hand, with how long it has been retrying.
    pub fn in_hand_by_lane(&self) -> Vec<(usize, Duration, RetryingBatch)> {
        let now = self.stamp();
        let held = lock(&self.in_hand);
        held.iter().map(|(l, (since, h))| (*l, Duration::from_millis(now.saturating_sub(*since)), h.clone())).collect()
    }

    /// How long the batch in hand that has waited longest has been retrying.
    pub fn retrying_for(&self) -> Option<Duration> {
        let since = lock(&self.in_hand).values().map(|(since, _)| *since).min()?;
        Some(Duration::from_millis(self.stamp().saturating_sub(since)))
    }

    /// Lane `lane` took a batch, or is done with it.
    pub fn lane_busy(&self, lane: usize, busy: bool) {
        let mut lanes = lock(&self.busy);
        if busy {
            lanes.insert(lane, self.stamp());
        } else {
            lanes.remove(&lane);
        }
    }

    /// The lane that has worked on one batch longest, and how long, when
    /// that is at least `limit`: it is stuck (polling goes on meanwhile).
    pub fn stuck_lane(&self, limit: Duration) -> Option<(usize, Duration)> {
        let now = self.stamp();
        let lanes = lock(&self.busy);
        let (lane, since) = lanes.iter().min_by_key(|(_, since)| **since)?;
        let busy = Duration::from_millis(now.saturating_sub(*since));
        (busy >= limit).then_some((*lane, busy))
    }

    /// What is wrong with the consumer thread, one line each, for
    /// `/healthz`: `stall` is the stall timeout.
    pub fn problems(&self, stall: Duration) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(age) = self.since_poll().filter(|age| *age > stall) {
            problems.push(format!("consumer thread has not polled for {} ms", age.as_millis()));
        }
        if let Some((lane, busy)) = self.stuck_lane(stall) {
            problems.push(format!("lane {lane} has worked on one batch for {} ms", busy.as_millis()));
        }
        problems.extend(self.client_problem(stall));
        if let Some(h) = self.in_hand() {
            problems.push(format!("consumer is retrying a batch: {}", h.reason));
        }
        if let Some(age) = self.uncommitted_for().filter(|age| *age > stall) {
            problems.push(format!("handled records have waited {} s for a commit", age.as_secs()));
        }
        problems
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

    /// The client's failure as `/healthz` names it, when it has lasted `limit`.
    pub fn client_problem(&self, limit: Duration) -> Option<String> {
        let (lasting, error) = self.client_failing_for(limit)?;
        Some(format!("kafka client failing for {} s: {error}", lasting.as_secs()))
    }

    /// The assigned partitions as the pipeline sees them now.
    pub fn set_partitions(&self, views: Vec<PartitionView>) {
        *lock(&self.partitions) = views;
    }

    pub fn partitions(&self) -> Vec<PartitionView> {
        lock(&self.partitions).clone()
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

    #[test]
    fn the_lane_busy_longest_is_stuck_once_past_the_limit() {
        let hb = Heartbeat::default();
        let limit = Duration::from_millis(30);
        assert_eq!(hb.stuck_lane(Duration::ZERO), None, "no lane works");
        hb.lane_busy(2, true);
        std::thread::sleep(Duration::from_millis(40));
        hb.lane_busy(0, true);
        let (lane, busy) = hb.stuck_lane(limit).expect("lane 2 is past the limit");
        assert_eq!(lane, 2, "the one busy longest");
        assert!(busy >= Duration::from_millis(40), "{busy:?}");
        assert_eq!(hb.stuck_lane(Duration::from_secs(5)), None, "under the limit");
        hb.lane_busy(2, false);
        assert_eq!(hb.stuck_lane(limit), None, "lane 0 took its batch just now");
        hb.lane_busy(0, true);
        assert_eq!(hb.stuck_lane(Duration::ZERO).map(|(l, _)| l), Some(0), "a new batch restarts its clock");
        hb.polled();
        assert_eq!(hb.problems(Duration::from_secs(5)), Vec::<String>::new());
        let problems = hb.problems(Duration::ZERO);
        assert!(problems.iter().any(|p| p.starts_with("lane 0 has worked on one batch for")), "{problems:?}");
    }

    #[test]
    fn the_batch_in_hand_longest_is_shown_and_timed() {
        let hb = Heartbeat::default();
        let batch =
            |first: &str| RetryingBatch { first: first.into(), records: 5, attempts: 1, reason: "down\nhere".into() };
        hb.set_retrying(1, Some(batch("t/1@4")));
        std::thread::sleep(Duration::from_millis(20));
        hb.set_retrying(0, Some(batch("t/0@7")));
        hb.set_retrying(1, Some(batch("t/1@4")));
        assert_eq!(hb.in_hand().map(|h| (h.first, h.reason)), Some(("t/1@4".into(), "down here".into())));
        assert!(hb.retrying_for().unwrap() >= Duration::from_millis(20), "a later attempt keeps the first's clock");
        hb.set_retrying(1, None);
        assert_eq!(hb.in_hand().map(|h| h.first), Some("t/0@7".into()));
        hb.set_retrying(0, None);
        assert!(hb.in_hand().is_none() && hb.retrying_for().is_none());
    }

    #[test]
    fn a_client_failure_is_named_once_it_lasted_the_limit() {
        let hb = Heartbeat::default();
        assert_eq!(hb.client_problem(Duration::ZERO), None, "no error yet");
        hb.client_error("all brokers down");
        assert_eq!(hb.client_problem(Duration::from_secs(60)), None, "not for long enough");
        assert_eq!(
            hb.client_problem(Duration::ZERO).as_deref(),
            Some("kafka client failing for 0 s: all brokers down")
        );
        assert!(hb.problems(Duration::ZERO).iter().any(|p| p.starts_with("kafka client failing for")));
    }
}
