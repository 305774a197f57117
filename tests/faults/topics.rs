//! A topic deleted and recreated, while the service runs and while it is
//! stopped. The consumer notices the topic's new id (while running: within
//! 5 s; while stopped: at assignment, against the id stored with the
//! offsets) and reads the new log from its beginning; the new records reuse
//! positions (partition, offset) that old rows are stored under, and none
//! of them may be skipped as a redelivery.

use std::time::Duration;

use cronsumer::db::{Backend, Pool};
use diesel::prelude::*;

use crate::fixture::*;
use crate::support::*;

const OLD: usize = 60;
const NEW: usize = 90;
/// Records produced once the recreation was caught up.
const MORE: usize = 40;

/// Each notification's number (`Your order N has shipped`) as stored: in
/// rows, and in dead letters with their reasons.
fn stored_numbers(pool: &Pool) -> (Vec<usize>, Vec<(usize, String)>) {
    use cronsumer::db::schema::{dead_letters::dsl as d, notifications::dsl as n};
    let number = |text: &str| -> usize {
        let rest = text.split("Your order ").nth(1).expect("a test notification");
        rest.split(' ').next().unwrap().parse().unwrap()
    };
    let mut conn = pool.get().unwrap();
    let messages: Vec<String> = cronsumer::on_backend!(conn, |c| n::notifications.select(n::message).load(c)).unwrap();
    let dead: Vec<(Option<Vec<u8>>, String)> =
        cronsumer::on_backend!(conn, |c| d::dead_letters.select((d::payload, d::error)).load(c)).unwrap();
    let rows = messages.iter().map(|m| number(m)).collect();
    let dead = dead.into_iter().map(|(p, e)| (number(&String::from_utf8_lossy(&p.unwrap_or_default())), e)).collect();
    (rows, dead)
}

fn topic_deleted_and_recreated(backend: Backend) {
    let _serial = serial();
    let fx = Fixture::new("topic_deleted_and_recreated", backend, &[]);
    let service = fx.start("service", &[]);
    fx.produce_notifications(OLD);
    fx.wait_all(&[&service], OLD, Duration::from_secs(120));

    // Commits of a recreated topic start again from 0, and its old rows
    // cover every reused position: the commit monitor can tell nothing
    // there, so it pauses from the deletion until the new log is consumed.
    // What counts is checked below by content: every record, old and new.
    recreate_with(&fx, 1000..1000 + NEW);
    let resets = format!("cronsumer_offset_resets_total{{topic=\"{}\"}}", fx.topic);
    wait_running(&[&service], "the recreation noticed", Duration::from_secs(60), || {
        metric(&service.metrics(), &resets).is_some_and(|n| n > 0.0)
    });
    new_log_caught_up(&fx, &service, OLD + NEW, NEW);
    // The partitions go on as before once the new log is caught up.
    let more: Vec<Vec<u8>> = (2000..2000 + MORE).map(notification).collect();
    produce(&fx.s, &fx.topic, &more);
    let want = (OLD + NEW + MORE) as i64;
    wait_running(&[&service], "the last records stored", Duration::from_secs(60), || fx.rows() + fx.dead() >= want);
    wait_running(&[&service], "commits covering them", Duration::from_secs(60), || {
        fx.commits(&fx.topic) == Some((NEW + MORE) as i64)
    });
    service.assert_running("at the end");

    let expected: Vec<usize> = (0..OLD).chain(1000..1000 + NEW).chain(2000..2000 + MORE).collect();
    let dead = assert_each_once(&fx, &service, &expected, 1000..1000 + NEW);
    // Keys k0..k59 land on the partitions they did before, so most of the
    // first 60 new records meet a stored position.
    assert!(dead >= OLD / 2, "only {dead} new records met a reused position");
    let logged = service.log_text().matches("already holds a different record").count();
    assert!(logged >= dead, "each reused position logged ({logged} lines for {dead})");
}
both_backends!(topic_deleted_and_recreated);

/// Deletes and recreates the notifications topic, and produces the
/// notifications `numbers` to it. (The commit monitor pauses until the new
/// log is caught up: see [`topic_deleted_and_recreated`].)
fn recreate_with(fx: &Fixture, numbers: std::ops::Range<usize>) {
    fx.stop_watching();
    delete_topic(&fx.s, &fx.topic);
    create_topic(&fx.s, &fx.topic, PARTITIONS);
    produce(&fx.s, &fx.topic, &numbers.map(notification).collect::<Vec<_>>());
}

/// Waits until `stored` records are stored or dead-lettered and the new
/// log's `new` records committed, then watches the commits again.
fn new_log_caught_up(fx: &Fixture, service: &Service, stored: usize, new: usize) {
    wait_running(&[service], "every new record stored or dead-lettered", Duration::from_secs(120), || {
        fx.rows() + fx.dead() >= stored as i64
    });
    wait_running(&[service], "commits covering the new log", Duration::from_secs(60), || {
        fx.commits(&fx.topic) == Some(new as i64)
    });
    fx.watch_again();
}

/// Each record of `expected`, old and new, stored once as a row or a dead
/// letter (only records of `new` at a reused position, saying so), counted
/// in `/metrics` and reported; returns how many were dead-lettered.
fn assert_each_once(fx: &Fixture, service: &Service, expected: &[usize], new: std::ops::Range<usize>) -> usize {
    let (rows, dead) = stored_numbers(&fx.pool);
    let mut seen: Vec<usize> = rows.iter().copied().chain(dead.iter().map(|(n, _)| *n)).collect();
    seen.sort_unstable();
    let duplicates = seen.len() - {
        let mut d = seen.clone();
        d.dedup();
        d.len()
    };
    fx.report(expected.len(), rows.len(), dead.len(), duplicates);
    assert_eq!(seen, expected, "each record, old and new, stored once as a row or a dead letter");
    for (n, reason) in &dead {
        assert!(new.contains(n), "record {n} dead-lettered: {reason}");
        assert!(reason.contains("already holds a different record"), "record {n}: {reason}");
    }
    let counted = metric(&service.metrics(), &format!("cronsumer_reused_positions_total{{topic=\"{}\"}}", fx.topic));
    assert_eq!(counted.unwrap_or(0.0), dead.len() as f64, "reused positions counted in /metrics");
    dead.len()
}

const BEFORE_STOP: usize = 100;
const AFTER_STOP: usize = 150;

/// The topic deleted and recreated while no copy runs: the stored offsets
/// belong to the old log, and the new one holds more records than they
/// reach. Seeking to them would skip what lies below (100 of 150 records
/// never read, before topic ids were stored); the restarted service reads
/// the new log from its beginning.
fn topic_recreated_while_stopped(backend: Backend) {
    let _serial = serial();
    let fx = Fixture::new("topic_recreated_while_stopped", backend, &[]);
    let first = fx.start("first", &[]);
    fx.produce_notifications(BEFORE_STOP);
    fx.wait_all(&[&first], BEFORE_STOP, Duration::from_secs(120));
    assert_eq!(first.terminate(), Some(0), "a clean stop");

    recreate_with(&fx, 1000..1000 + AFTER_STOP);
    let second = fx.start("second", &[]);
    new_log_caught_up(&fx, &second, BEFORE_STOP + AFTER_STOP, AFTER_STOP);
    let resets = metric(&second.metrics(), &format!("cronsumer_offset_resets_total{{topic=\"{}\"}}", fx.topic));
    assert!(resets.is_some_and(|n| n >= 1.0), "the new log's partitions counted as reset: {resets:?}");
    assert!(second.log_text().contains("recreated while this group was away"), "the reset is logged with why");
    second.assert_running("at the end");
    let expected: Vec<usize> = (0..BEFORE_STOP).chain(1000..1000 + AFTER_STOP).collect();
    assert_each_once(&fx, &second, &expected, 1000..1000 + AFTER_STOP);
}
both_backends!(topic_recreated_while_stopped);
