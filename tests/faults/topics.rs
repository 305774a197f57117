//! A topic deleted and recreated while the service runs. The
//! consumer notices the topic's new id and reads the new log from its
//! beginning; the new records reuse positions (partition, offset) that old
//! rows are stored under, and none of them may be skipped as a redelivery.

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
    fx.stop_watching();
    delete_topic(&fx.s, &fx.topic);
    create_topic(&fx.s, &fx.topic, PARTITIONS);
    let fresh: Vec<Vec<u8>> = (1000..1000 + NEW).map(notification).collect();
    produce(&fx.s, &fx.topic, &fresh);
    let resets = format!("cronsumer_offset_resets_total{{topic=\"{}\"}}", fx.topic);
    wait_running(&[&service], "the recreation noticed", Duration::from_secs(60), || {
        metric(&service.metrics(), &resets).is_some_and(|n| n > 0.0)
    });
    let want = (OLD + NEW) as i64;
    wait_running(&[&service], "every new record stored or dead-lettered", Duration::from_secs(120), || {
        fx.rows() + fx.dead() >= want
    });
    wait_running(&[&service], "commits covering the new topic", Duration::from_secs(60), || {
        fx.commits(&fx.topic) == Some(NEW as i64)
    });
    fx.watch_again();
    // The partitions go on as before once the new log is caught up.
    let more: Vec<Vec<u8>> = (2000..2000 + MORE).map(notification).collect();
    produce(&fx.s, &fx.topic, &more);
    let want = (OLD + NEW + MORE) as i64;
    wait_running(&[&service], "the last records stored", Duration::from_secs(60), || fx.rows() + fx.dead() >= want);
    wait_running(&[&service], "commits covering them", Duration::from_secs(60), || {
        fx.commits(&fx.topic) == Some((NEW + MORE) as i64)
    });
    service.assert_running("at the end");

    let (rows, dead) = stored_numbers(&fx.pool);
    let mut seen: Vec<usize> = rows.iter().copied().chain(dead.iter().map(|(n, _)| *n)).collect();
    seen.sort_unstable();
    let expected: Vec<usize> = (0..OLD).chain(1000..1000 + NEW).chain(2000..2000 + MORE).collect();
    let duplicates = seen.len() - {
        let mut d = seen.clone();
        d.dedup();
        d.len()
    };
    fx.report(OLD + NEW + MORE, rows.len(), dead.len(), duplicates);
    assert_eq!(seen, expected, "each record, old and new, stored once as a row or a dead letter");
    for (n, reason) in &dead {
        assert!((1000..1000 + NEW).contains(n), "record {n} dead-lettered: {reason}");
        assert!(reason.contains("already holds a different record"), "record {n}: {reason}");
    }
    // Keys k0..k59 land on the partitions they did before, so most of the
    // first 60 new records meet a stored position.
    assert!(dead.len() >= OLD / 2, "only {} new records met a reused position", dead.len());
    let counted = metric(&service.metrics(), &format!("cronsumer_reused_positions_total{{topic=\"{}\"}}", fx.topic));
    assert_eq!(counted, Some(dead.len() as f64), "reused positions counted in /metrics");
    let logged = service.log_text().matches("already holds a different record").count();
    assert!(logged >= dead.len(), "each reused position logged ({logged} lines for {})", dead.len());
}
both_backends!(topic_deleted_and_recreated);
