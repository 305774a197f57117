//! Scenarios of lanes: batches that take time, so that the pipeline polls,
//! verifies and stops while they are in flight. One per defect the random
//! schedules found in the first pipeline with lanes.

use std::time::Duration;

use cronsumer::common::record::TopicPartition;
use cronsumer::consume::pipeline::{DRAIN_RETRY_MAX, VERIFY_EVERY};

use crate::db::Nature;
use crate::world::{Config, World};

/// One member with `lanes` lanes, batches of 5, each taking `latency`.
fn world(partitions: usize, lanes: usize, latency: Duration) -> World {
    let mut w = World::new(Config {
        seed: 11,
        members: 1,
        topics: 1,
        partitions,
        cooperative: false,
        batch_size: 5,
        batch_timeout: Duration::from_millis(50),
        lanes,
        min_latency: latency,
        max_latency: latency,
        pause_floor: 0,
    });
    until(&mut w, "the assignment", |w| w.cluster.borrow().is_stable());
    w
}

fn tp(p: i32) -> TopicPartition {
    TopicPartition::new("topic0", p)
}

/// Steps the member until `done` holds, checking the invariants.
fn until(w: &mut World, what: &str, mut done: impl FnMut(&World) -> bool) {
    for _ in 0..5_000 {
        if done(w) {
            return;
        }
        w.step(0);
        w.check().unwrap_or_else(|e| panic!("while waiting for {what}: {e}"));
    }
    panic!("{what} did not happen within 5000 steps\n{}", w.describe());
}

fn produce(w: &mut World, tp: &TopicPartition, n: usize) {
    for _ in 0..n {
        w.produce(tp, Nature::Ok);
    }
}

fn stored(w: &World) -> usize {
    w.db.borrow().stored.len()
}

/// A stop hands out every batch its lanes hold: a lane whose batch came
/// back at once was left idle with a full batcher, and the stop slept to
/// its deadline and left the records to the next owner.
#[test]
fn sim_lanes_a_stop_hands_out_every_batch_a_lane_holds() {
    let mut w = world(2, 1, Duration::ZERO);
    w.db.borrow_mut().up = false;
    // Partition 0's batch fails and waits in hand; partition 1's records gather behind it.
    produce(&mut w, &tp(0), 5);
    until(&mut w, "a batch in hand", |w| w.db.borrow().calls.len() == 1);
    produce(&mut w, &tp(1), 12);
    until(&mut w, "12 records behind it", |w| w.members[0].pipeline.as_ref().unwrap().buffered() == 17);
    w.db.borrow_mut().up = true;
    let asked = w.now();
    w.stop(0, Duration::from_secs(60));
    let took = w.now() - asked;
    w.check().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stored(&w), 17, "the stop left records in memory");
    assert!(took <= DRAIN_RETRY_MAX, "the stop took {took:?} for a batch in hand and three in the batcher");
}

/// While stopping, a batch in hand is tried at least every
/// [`DRAIN_RETRY_MAX`], however far its backoff grew: one that failed
/// again during the stop waited to the deadline.
#[test]
fn sim_lanes_a_stop_retries_a_batch_in_hand_every_second() {
    let mut w = world(1, 1, Duration::ZERO);
    w.db.borrow_mut().up = false;
    produce(&mut w, &tp(0), 5);
    // Six failures: the backoff is past 6 s.
    until(&mut w, "six attempts", |w| w.db.borrow().calls.len() == 6);
    w.db.borrow_mut().up = true;
    // Down for the stop's first retry, back for its second.
    w.db.borrow_mut().down_until = Some(w.now() + DRAIN_RETRY_MAX * 3 / 2);
    let asked = w.now();
    w.stop(0, Duration::from_secs(60));
    let took = w.now() - asked;
    w.check().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stored(&w), 5);
    assert!(took < DRAIN_RETRY_MAX * 3, "the stop took {took:?}: its retries waited the batch's backoff");
}

/// A partition read again (the database lost committed batches) drops its
/// batch in flight: it came back failed (the database away a moment), was
/// held and retried from where the database stood, skipping the records
/// the database had lost.
#[test]
fn sim_lanes_a_partition_read_again_drops_its_batch_in_flight() {
    // Batches take longer than the verify interval: the loss is found while one is in flight.
    let mut w = world(1, 1, VERIFY_EVERY + Duration::from_secs(1));
    produce(&mut w, &tp(0), 5);
    until(&mut w, "the first batch stored", |w| stored(w) == 5);
    produce(&mut w, &tp(0), 5);
    until(&mut w, "the second batch stored", |w| stored(w) == 10);
    produce(&mut w, &tp(0), 5);
    let in_flight = |w: &World| w.members[0].pipeline.as_ref().unwrap().buffered() == 5;
    until(&mut w, "the third batch in flight", in_flight);
    let submitted = w.now();
    // The database loses the second batch (a crash before its WAL flush).
    let back = w.db.borrow_mut().crash(1, Duration::ZERO);
    assert_eq!(back, vec![(tp(0), 5)], "the crash undid the second batch");
    w.cluster.borrow_mut().database_went_back(&back);
    until(&mut w, "a verify", |w| w.now() >= submitted + VERIFY_EVERY + Duration::from_millis(100));
    assert_eq!(w.db.borrow().calls.len(), 2, "the third batch is still in flight");
    // It fails: the database is away when it ends.
    w.db.borrow_mut().up = false;
    until(&mut w, "the third batch failed", |w| w.db.borrow().calls.len() == 3);
    w.db.borrow_mut().up = true;
    w.settle(Duration::from_secs(120)).unwrap_or_else(|e| panic!("{e}"));
}
