//! One named scenario per defect the first pipeline had, each a fixed
//! schedule through the same simulated world, invariants checked after
//! every step.

use cronsumer::common::record::TopicPartition;
use std::time::Duration;

use cronsumer::common::clock::Clock;

use crate::db::Nature;
use crate::world::{Config, World};

fn world(members: usize, partitions: usize, cooperative: bool, batch_size: usize) -> World {
    World::new(Config {
        seed: 7,
        members,
        topics: 1,
        partitions,
        cooperative,
        batch_size,
        batch_timeout: Duration::from_millis(50),
        lanes: 1,
        min_latency: Duration::ZERO,
        max_latency: Duration::ZERO,
        pause_floor: 0,
    })
}

fn tp(p: i32) -> TopicPartition {
    TopicPartition::new("topic0", p)
}

/// Steps members in turn until `until` holds, checking invariants.
fn run(w: &mut World, what: &str, max_steps: usize, mut until: impl FnMut(&World) -> bool) {
    for i in 0..max_steps {
        if until(w) {
            return;
        }
        let m = i % w.members.len();
        w.step(m);
        w.check().unwrap_or_else(|e| panic!("while waiting for {what}: {e}"));
    }
    panic!("{what} did not happen within {max_steps} steps\n{}", w.describe());
}

fn produce(w: &mut World, tp: &TopicPartition, n: usize) {
    for _ in 0..n {
        w.produce(tp, Nature::Ok);
    }
}

fn in_hand(w: &World, m: usize) -> bool {
    !w.cluster.borrow().members[m].paused.is_empty()
}

/// Defect 1: a value the database refuses stalled every partition for ever.
#[test]
fn sim_regression_a_refused_value_is_dead_lettered_and_the_partition_goes_on() {
    let mut w = world(1, 2, false, 25);
    produce(&mut w, &tp(0), 5);
    w.produce(&tp(0), Nature::Refused);
    produce(&mut w, &tp(0), 20);
    produce(&mut w, &tp(1), 20);
    let took = w.settle(Duration::from_secs(5)).unwrap_or_else(|e| panic!("{e}"));
    let db = w.db.borrow();
    assert_eq!((db.stored.len(), db.dead.len()), (45, 1));
    let reason = &db.dead[&(tp(0), 5)];
    assert!(reason.starts_with("the database refused this record: sim: Refused at topic0/0@5"), "{reason}");
    assert!(took < Duration::from_secs(2), "a refused value held the partition for {took:?}");
    assert_eq!(w.panics, 0, "a refused value ended the consumer thread");
}

/// Defect 2: records fetched in the same poll loop before a revoke that gave
/// up (database down longer than the budget) were handled and committed
/// after the gap the revoke left.
#[test]
fn sim_regression_records_fetched_before_a_revoke_never_commit_past_a_gap() {
    for cooperative in [false, true] {
        let mut w = world(1, 1, cooperative, 5);
        run(&mut w, "the assignment", 400, |w| w.cluster.borrow().is_stable());
        produce(&mut w, &tp(0), 5);
        w.db.borrow_mut().up = false;
        run(&mut w, "a batch in hand", 200, |w| in_hand(w, 0));
        produce(&mut w, &tp(0), 20);
        // The revoke comes inside the third poll of a step: two records are fetched before it.
        w.cluster.borrow_mut().rebalance_after_polls = Some(3);
        run(&mut w, "the revoke", 200, |w| w.cluster.borrow().rebalance_after_polls.is_none());
        run(&mut w, "the reassignment", 200, |w| w.cluster.borrow().is_stable());
        w.db.borrow_mut().up = true;
        w.settle(Duration::from_secs(120)).unwrap_or_else(|e| panic!("cooperative={cooperative}: {e}"));
        assert_eq!(w.db.borrow().stored.len(), 25);
    }
    // The poll that serves the revoke also returns a record fetched before
    // it; with every commit failing, the partition comes back at offset 0
    // and that record must not be handled ahead of the ones before it.
    let mut w = world(1, 1, false, 5);
    w.cluster.borrow_mut().commit_fail = 1.0;
    produce(&mut w, &tp(0), 30);
    run(&mut w, "10 stored", 200, |w| w.db.borrow().stored.len() >= 10);
    w.cluster.borrow_mut().rebalance_after_polls = Some(1);
    run(&mut w, "the revoke", 200, |w| w.cluster.borrow().rebalance_after_polls.is_none());
    run(&mut w, "the reassignment", 200, |w| w.cluster.borrow().is_stable());
    w.cluster.borrow_mut().commit_fail = 0.0;
    w.settle(Duration::from_secs(60)).unwrap_or_else(|e| panic!("record fetched with the revoke: {e}"));
}

/// A revoke finishes the batch in hand while the partitions are still ours,
/// for up to its budget: an outage shorter than that leaves nothing behind
/// for the next owner.
#[test]
fn sim_regression_a_revoke_finishes_the_batch_in_hand_within_its_budget() {
    let mut w = world(1, 1, false, 5);
    run(&mut w, "the assignment", 400, |w| w.cluster.borrow().is_stable());
    produce(&mut w, &tp(0), 5);
    w.db.borrow_mut().down_until = Some(w.now() + Duration::from_secs(3));
    run(&mut w, "a batch in hand", 200, |w| in_hand(w, 0));
    w.cluster.borrow_mut().rebalance();
    // One step serves the revoke: the drain outlasts the outage and commits before letting go.
    w.step(0);
    w.check().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(w.cluster.borrow().committed.get(&tp(0)), Some(&5), "the revoke left its batch behind");
    w.settle(Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
}

/// Defect 3: partitions paused for a retry stayed paused after a revoke
/// that gave up, and partitions assigned during a retry were never paused.
#[test]
fn sim_regression_nothing_stays_paused_and_memory_stays_bounded_through_rebalances() {
    for cooperative in [false, true] {
        let mut w = world(2, 4, cooperative, 5);
        run(&mut w, "the assignment", 400, |w| w.cluster.borrow().is_stable());
        w.db.borrow_mut().up = false;
        for p in 0..4 {
            produce(&mut w, &tp(p), 30);
        }
        run(&mut w, "a batch in hand", 400, |w| in_hand(w, 0) || in_hand(w, 1));
        // One member leaves and comes back while the other retries: its
        // partitions move to the retrying member and back.
        w.stop(1, Duration::from_secs(3));
        run(&mut w, "member 1 back", 2_000, |w| w.is_running(1) && w.cluster.borrow().is_stable());
        for p in 0..4 {
            produce(&mut w, &tp(p), 30);
        }
        steps(&mut w, 300);
        w.db.borrow_mut().up = true;
        w.settle(Duration::from_secs(120)).unwrap_or_else(|e| panic!("cooperative={cooperative}: {e}"));
        let bound = w.members[0].pipeline.as_ref().unwrap().memory_bound();
        assert!(w.max_buffered <= bound, "held {} records, bound {bound}", w.max_buffered);
    }
}

/// Steps members in turn `n` times, checking invariants.
fn steps(w: &mut World, n: usize) {
    for i in 0..n {
        w.step(i % w.members.len());
        w.check().unwrap_or_else(|e| panic!("step {i}: {e}"));
    }
}

/// Defect 4: a failed commit was never retried (offsets were cleared when
/// it was sent), and offsets of partitions revoked after a failed
/// synchronous commit were committed later, under the next generation.
#[test]
fn sim_regression_failed_commits_are_retried_and_never_outlive_the_partition() {
    let mut w = world(1, 2, false, 5);
    w.cluster.borrow_mut().commit_fail = 1.0;
    produce(&mut w, &tp(0), 10);
    produce(&mut w, &tp(1), 10);
    run(&mut w, "all stored", 500, |w| w.db.borrow().stored.len() == 20);
    assert!(w.cluster.borrow().committed.is_empty());
    w.cluster.borrow_mut().commit_fail = 0.0;
    // The partitions go quiet: only a retry of the failed commits can catch up.
    run(&mut w, "the commits caught up", 100, |w| w.cluster.borrow().committed.values().sum::<i64>() == 20);

    // Two members: the revoke's sync commit fails; the partition moves on
    // and its new owner commits further; the old offsets must not follow.
    let mut w = two_members_with_20_records_handled_not_committed();
    w.cluster.borrow_mut().rebalance();
    run(&mut w, "the rebalance", 500, |w| w.cluster.borrow().is_stable());
    w.settle(Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
}

/// Two members, 20 records committed, then 20 more handled while every commit fails.
fn two_members_with_20_records_handled_not_committed() -> World {
    let mut w = world(2, 2, false, 5);
    produce(&mut w, &tp(0), 10);
    produce(&mut w, &tp(1), 10);
    run(&mut w, "all stored", 500, |w| w.db.borrow().stored.len() == 20);
    w.cluster.borrow_mut().commit_fail = 1.0;
    produce(&mut w, &tp(0), 10);
    produce(&mut w, &tp(1), 10);
    run(&mut w, "handled, not committed", 500, |w| w.db.borrow().stored.len() == 40);
    w
}

/// Defect 5: a member that stalls past the poll interval loses its
/// partitions; when it wakes up, what it held is read again by the new
/// owner and nothing it handled late is committed under a stale generation.
#[test]
fn sim_regression_a_stalled_member_commits_nothing_after_losing_its_partitions() {
    let mut w = two_members_with_20_records_handled_not_committed();
    w.cluster.borrow_mut().commit_fail = 0.0;
    // Member 0 stalls (a hung database call): only member 1 runs, for longer than the poll interval.
    for _ in 0..1_000 {
        w.step(1);
        w.check().unwrap_or_else(|e| panic!("while member 0 stalls: {e}"));
    }
    assert!(!w.cluster.borrow().members[0].joined, "member 0 kept its session without polling");
    produce(&mut w, &tp(0), 10);
    produce(&mut w, &tp(1), 10);
    w.settle(Duration::from_secs(120)).unwrap_or_else(|e| panic!("{e}"));
}

/// A record that panics the handler is dead-lettered after its third panic,
/// even when nothing is committed between the restarts and the records
/// before it come again in batches of their own.
#[test]
fn sim_regression_a_panicking_record_is_dead_lettered_across_restarts_without_commits() {
    let mut w = world(1, 1, false, 5);
    w.cluster.borrow_mut().commit_fail = 1.0;
    produce(&mut w, &tp(0), 12);
    w.produce(&tp(0), Nature::Panic);
    produce(&mut w, &tp(0), 12);
    run(&mut w, "the panicking record dead-lettered", 20_000, |w| w.db.borrow().dead.len() == 1);
    w.settle(Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
    let reason = &w.db.borrow().dead[&(tp(0), 12)];
    assert!(reason.starts_with("handler panicked 3 times in a row on this record"), "{reason}");
}

/// While records stream in, commits go out at most every `COMMIT_EVERY`
/// (the first pipeline's Python predecessor committed once per message).
#[test]
fn sim_commits_are_throttled_while_records_stream_in() {
    let mut w = world(1, 1, false, 1);
    run(&mut w, "the assignment", 100, |w| w.cluster.borrow().members[0].owned.contains(&tp(0)));
    let before = w.cluster.borrow().commits;
    let started = w.now();
    for _ in 0..1_000 {
        w.produce(&tp(0), Nature::Ok);
        w.clock.sleep(Duration::from_millis(10));
        w.step(0);
        w.check().unwrap_or_else(|e| panic!("{e}"));
    }
    let commits = w.cluster.borrow().commits - before;
    let most = (w.now() - started).as_millis() / cronsumer::consume::pipeline::COMMIT_EVERY.as_millis() + 2;
    assert!(commits as u128 <= most, "{commits} commits for 1000 records, at most {most} expected");
    assert!(commits >= 10, "only {commits} commits while 1000 records streamed in");
    w.settle(Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
}

/// Backpressure engages at the lane's limit ([`Pipeline::pause_at`]: 4
/// batches, the floor being 0 here), not sooner (while one batch waits
/// in hand, the other partitions keep fetching), and lets go once half of
/// that is through, not sooner and not later.
///
/// [`Pipeline::pause_at`]: cronsumer::consume::pipeline::Pipeline::pause_at
#[test]
fn sim_regression_backpressure_pauses_at_its_limit_and_resumes_at_half() {
    use cronsumer::consume::pipeline::BUFFER_BATCHES;
    const BATCH: usize = 5;
    let mut w = world(1, 4, false, BATCH);
    let limit = w.members[0].pipeline.as_ref().unwrap().pause_at();
    assert_eq!(limit, BUFFER_BATCHES * BATCH);
    run(&mut w, "the assignment", 400, |w| w.cluster.borrow().is_stable());
    let buffered = |w: &World| w.members[0].pipeline.as_ref().unwrap().buffered();
    let paused = |w: &World| w.cluster.borrow().members[0].paused.len();
    w.db.borrow_mut().up = false;
    produce(&mut w, &tp(0), BATCH);
    run(&mut w, "partition 0's batch in hand", 400, |w| in_hand(w, 0));
    // The other partitions fill the batcher behind the batch in hand, a record each per round
    // (after two more), so the limit is passed by at most two when it engages: 7, 10, ...
    produce(&mut w, &tp(1), 2);
    for i in 0.. {
        assert!(i < limit, "backpressure never engaged ({} records in memory)", buffered(&w));
        if paused(&w) == 4 {
            break;
        }
        assert_eq!(paused(&w), 1, "paused more than the batch in hand with {} records in memory", buffered(&w));
        for p in 1..4 {
            produce(&mut w, &tp(p), 1);
        }
        steps(&mut w, 2);
    }
    let at = buffered(&w);
    assert!((limit..limit + 3).contains(&at), "{at} records in memory when everything paused, limit {limit}");
    // The database comes back: everything stays paused until half is through.
    w.db.borrow_mut().up = true;
    for i in 0.. {
        assert!(i < 2_000, "backpressure never let go ({} records in memory)", buffered(&w));
        steps(&mut w, 1);
        if buffered(&w) > limit / 2 {
            assert_eq!(
                paused(&w),
                4,
                "let go with {} records in memory, half the limit is {}",
                buffered(&w),
                limit / 2
            );
        } else {
            assert_eq!(paused(&w), 0, "still paused with {} records in memory", buffered(&w));
            break;
        }
    }
}

/// A lane also pauses at `LANE_BYTES` (8 MiB), however few its records: a
/// batch of five 2 MiB records in hand pauses every partition of the lane
/// with 5 records in memory, a quarter of the record limit; once it is
/// stored, the lane lets go and every record is stored once.
#[test]
fn sim_regression_backpressure_pauses_at_the_byte_limit() {
    use cronsumer::consume::pipeline::LANE_BYTES;
    const BATCH: usize = 5;
    let mut w = world(1, 4, false, BATCH);
    let limit = w.members[0].pipeline.as_ref().unwrap().pause_at();
    run(&mut w, "the assignment", 400, |w| w.cluster.borrow().is_stable());
    let paused = |w: &World| w.cluster.borrow().members[0].paused.len();
    w.db.borrow_mut().up = false;
    for _ in 0..BATCH {
        let offset = w.cluster.borrow().logs[&tp(0)].len() as i64;
        let mut payload = Nature::Ok.payload(w.produced.len() as u64);
        payload.resize(LANE_BYTES / 4, b' ');
        w.cluster.borrow_mut().produce(&tp(0), payload);
        w.produced.insert((tp(0), offset), Nature::Ok);
    }
    run(&mut w, "partition 0's batch in hand", 400, |w| in_hand(w, 0));
    steps(&mut w, 2);
    let buffered = w.members[0].pipeline.as_ref().unwrap().buffered();
    assert!(buffered < limit, "{buffered} records in memory, the record limit is {limit}");
    assert_eq!(paused(&w), 4, "the lane holds {} MiB and did not pause", (BATCH * LANE_BYTES / 4) >> 20);
    w.db.borrow_mut().up = true;
    w.settle(Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(paused(&w), 0, "still paused once the big batch was stored");
    assert_eq!(w.db.borrow().stored.len(), BATCH);
}

/// A batch is handled once it closes, full or timed out, and not before:
/// three records of a batch of five wait for the batch timeout.
#[test]
fn sim_regression_a_batch_is_handled_only_once_it_closes() {
    let mut w = world(1, 1, false, 5);
    run(&mut w, "the assignment", 400, |w| w.cluster.borrow().is_stable());
    produce(&mut w, &tp(0), 3);
    let produced_at = w.now();
    run(&mut w, "the three records stored", 400, |w| w.db.borrow().stored.len() == 3);
    let waited = w.now() - produced_at;
    assert!(waited >= w.config.batch_timeout, "a partial batch was handled after {waited:?}, before its timeout");
    produce(&mut w, &tp(0), 5);
    let produced_at = w.now();
    run(&mut w, "a full batch stored", 400, |w| w.db.borrow().stored.len() == 8);
    let waited = w.now() - produced_at;
    assert!(waited < w.config.batch_timeout, "a full batch waited {waited:?} for the timeout");
    let sizes: Vec<usize> = w.db.borrow().calls.iter().map(|c| c.1).collect();
    assert_eq!(sizes, [3, 5], "each batch handled whole, in one call");
}

/// A batch that failed transiently waits its backoff before the next
/// attempt, and is tried whole again (a passing outage is no reason to go
/// one record at a time).
#[test]
fn sim_regression_a_failed_batch_waits_its_backoff_and_is_retried_whole() {
    use cronsumer::consume::pipeline::RETRY_INITIAL;
    let mut w = world(1, 1, false, 5);
    run(&mut w, "the assignment", 400, |w| w.cluster.borrow().is_stable());
    w.db.borrow_mut().up = false;
    produce(&mut w, &tp(0), 5);
    run(&mut w, "a second attempt", 400, |w| w.db.borrow().calls.len() >= 2);
    let calls = w.db.borrow().calls.clone();
    let gap = calls[1].0 - calls[0].0;
    assert!(gap >= RETRY_INITIAL, "retried after {gap:?}, before the first backoff ({RETRY_INITIAL:?})");
    assert_eq!((calls[0].1, calls[1].1), (5, 5), "the retry went one record at a time");
    w.db.borrow_mut().up = true;
    w.settle(Duration::from_secs(5)).unwrap_or_else(|e| panic!("{e}"));
}

/// An outage whose errors nobody classified (a message the service does not
/// know) must not dead-letter good records: while the database is not
/// healthy, failures do not count towards the poison rule.
#[test]
fn sim_regression_unclassified_errors_during_an_outage_dead_letter_nothing() {
    let mut w = world(1, 2, false, 5);
    run(&mut w, "the assignment", 400, |w| w.cluster.borrow().is_stable());
    w.db.borrow_mut().up = false;
    w.db.borrow_mut().outage_unknown = 1.0;
    produce(&mut w, &tp(0), 10);
    produce(&mut w, &tp(1), 10);
    steps(&mut w, 1500);
    // Each attempt is the batch, then its first record alone: four records' worth
    // of attempts would pass the poison rule's limit if they counted.
    assert!(
        w.db.borrow().calls.len() >= 8,
        "the outage was tried {} times: the test proves nothing",
        w.db.borrow().calls.len()
    );
    w.db.borrow_mut().up = true;
    w.settle(Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
    let db = w.db.borrow();
    assert_eq!((db.stored.len(), db.dead.len()), (20, 0), "dead letters: {:?}", db.dead);
}

/// One partition holding two good records, one of `nature` (at offset 2)
/// and two more good ones, run until everything settled.
fn settled_between_good_records(nature: Nature) -> World {
    let mut w = world(1, 1, false, 5);
    produce(&mut w, &tp(0), 2);
    w.produce(&tp(0), nature);
    produce(&mut w, &tp(0), 2);
    w.settle(Duration::from_secs(30)).unwrap_or_else(|e| panic!("{nature:?}: {e}"));
    w
}

/// A record that fails (or panics) fewer times than the poison rule's limit
/// and then works is stored, not dead-lettered.
#[test]
fn sim_regression_a_record_that_fails_twice_then_works_is_stored() {
    for nature in [Nature::Flaky, Nature::FlakyPanic] {
        let w = settled_between_good_records(nature);
        let db = w.db.borrow();
        assert_eq!((db.stored.len(), db.dead.len()), (5, 0), "{nature:?}: dead letters {:?}", db.dead);
    }
}

/// A record that fails every time (an unclassified error, or a panic) is
/// tried alone exactly [`POISON_AFTER`] times, then dead-lettered.
#[test]
fn sim_regression_a_poison_record_is_tried_alone_exactly_poison_after_times() {
    use cronsumer::consume::poison::POISON_AFTER;
    for nature in [Nature::Poison, Nature::Panic] {
        let w = settled_between_good_records(nature);
        let db = w.db.borrow();
        assert_eq!((db.stored.len(), db.dead.len()), (4, 1), "{nature:?}");
        assert_eq!(db.alone.get(&(tp(0), 2)), Some(&POISON_AFTER), "{nature:?}: tries alone");
    }
}
