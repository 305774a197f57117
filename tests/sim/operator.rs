//! Scenarios of an operator's pause: a paused partition stops (what is in
//! flight finishes), stays paused across a rebalance to whichever member
//! takes it, and once resumed every record of it is handled once: none
//! skipped, none twice.

use std::time::Duration;

use cronsumer::common::record::TopicPartition;

use crate::db::Nature;
use crate::world::{Config, World};

fn world(members: usize) -> World {
    World::new(Config {
        seed: 23,
        members,
        topics: 1,
        partitions: 2,
        cooperative: false,
        batch_size: 5,
        // Records wait in the batcher a while: a pause finds some there.
        batch_timeout: Duration::from_millis(500),
        lanes: 2,
        min_latency: Duration::from_millis(20),
        max_latency: Duration::from_millis(200),
        pause_floor: 0,
    })
}

fn tp(p: i32) -> TopicPartition {
    TopicPartition::new("topic0", p)
}

fn stored_of(w: &World, p: i32) -> usize {
    w.db.borrow().stored.iter().filter(|(t, _)| *t == tp(p)).count()
}

fn produce(w: &mut World, p: i32, n: usize) {
    for _ in 0..n {
        w.produce(&tp(p), Nature::Ok);
    }
}

/// Steps the members in turn `n` times, checking the invariants after each.
fn steps(w: &mut World, n: usize) {
    for i in 0..n {
        w.step(i % w.members.len());
        w.check().unwrap_or_else(|e| panic!("step {i}: {e}\n{}", w.describe()));
    }
}

/// Whether the member that owns `tp` keeps it paused (none owns it: true).
fn paused_where_owned(w: &World, tp: &TopicPartition) -> bool {
    let c = w.cluster.borrow();
    c.members.iter().filter(|m| m.owned.contains(tp)).all(|m| m.paused.contains(tp))
}

#[test]
fn sim_operator_a_paused_partition_stops_stays_paused_across_a_rebalance_and_loses_nothing() {
    let mut w = world(2);
    produce(&mut w, 0, 23);
    produce(&mut w, 1, 23);
    // Some handled, some waiting in a batcher, some in flight.
    let mut n = 0;
    while stored_of(&w, 0) < 5 && n < 5_000 {
        steps(&mut w, 1);
        n += 1;
    }
    w.operator_toggles(&tp(0));
    steps(&mut w, 10);
    // What was in flight or in hand may finish; nothing more of it.
    let at_pause = stored_of(&w, 0);
    produce(&mut w, 0, 17);
    produce(&mut w, 1, 17);
    steps(&mut w, 400);
    assert!(paused_where_owned(&w, &tp(0)), "partition 0 is fetched while paused\n{}", w.describe());
    assert_eq!(stored_of(&w, 0), at_pause, "records of a paused partition were handled\n{}", w.describe());
    assert_eq!(stored_of(&w, 1), 40, "the other partition went on\n{}", w.describe());
    // A rebalance hands it to whichever member: paused there too.
    w.cluster.borrow_mut().rebalance();
    steps(&mut w, 400);
    assert!(paused_where_owned(&w, &tp(0)), "the pause did not survive the rebalance\n{}", w.describe());
    assert_eq!(stored_of(&w, 0), at_pause, "records of a paused partition were handled after a rebalance");
    assert!(at_pause < 40, "the scenario paused nothing: {at_pause} stored before the pause");
    // Resumed: everything once (settle checks each record stored exactly once).
    w.operator_toggles(&tp(0));
    w.settle(Duration::from_secs(600)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stored_of(&w, 0), 40);
}

#[test]
fn sim_operator_pause_and_resume_in_quick_turns_lose_and_repeat_nothing() {
    let mut w = world(1);
    for round in 0..40 {
        produce(&mut w, 0, 3);
        produce(&mut w, 1, 2);
        if round % 3 != 2 {
            w.operator_toggles(&tp(round % 2));
        }
        steps(&mut w, 7);
    }
    w.settle(Duration::from_secs(600)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((stored_of(&w, 0), stored_of(&w, 1)), (120, 80));
}

/// Paused while its first records wait for their batch, before anything of
/// it was applied: on resume it is read again from the first record polled.
#[test]
fn sim_operator_a_partition_paused_before_anything_of_it_was_applied_loses_nothing() {
    let mut w = world(1);
    // Wait for the assignment, then let records into the batcher (it waits 500 ms).
    steps(&mut w, 200);
    produce(&mut w, 0, 4);
    let mut n = 0;
    while w.members[0].pipeline.as_ref().is_some_and(|p| p.buffered() < 4) && n < 100 {
        steps(&mut w, 1);
        n += 1;
    }
    assert_eq!(stored_of(&w, 0), 0, "applied before the pause: the scenario tests nothing");
    w.operator_toggles(&tp(0));
    steps(&mut w, 50);
    assert_eq!(stored_of(&w, 0), 0, "records of a paused partition were handled");
    w.operator_toggles(&tp(0));
    w.settle(Duration::from_secs(600)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stored_of(&w, 0), 4);
}
