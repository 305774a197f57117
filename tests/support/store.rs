//! What the consumer stored: rows, dead letters, and the source
//! `(partition, offset)` of each.

use cronsumer::db::{self, Pool};
use diesel::prelude::*;

/// Source positions of stored records: (partition, offset) each.
pub type Sources = Vec<(i32, i64)>;

/// Stored (partition, offset) sources of `topic` across notifications and dead_letters.
pub fn stored_sources(pool: &Pool, topic: &str) -> (Sources, Sources) {
    use cronsumer::db::schema::{dead_letters::dsl as d, notifications::dsl as n};
    let mut conn = pool.get().unwrap();
    let rows: Vec<(Option<i32>, Option<i64>)> = cronsumer::on_backend!(conn, |c| n::notifications
        .filter(n::source_topic.eq(topic))
        .select((n::source_partition, n::source_offset))
        .load(c))
    .unwrap();
    let dead: Sources = cronsumer::on_backend!(conn, |c| d::dead_letters
        .filter(d::topic.eq(topic))
        .select((d::partition, d::offset))
        .load(c))
    .unwrap();
    (rows.into_iter().map(|(p, o)| (p.unwrap(), o.unwrap())).collect(), dead)
}

pub fn count_notifications(pool: &Pool) -> i64 {
    db::notifications::count(&mut pool.get().unwrap()).unwrap()
}

pub fn count_dead_letters(pool: &Pool) -> i64 {
    db::dead_letters::count(&mut pool.get().unwrap()).unwrap()
}

pub fn count_prices(pool: &Pool) -> i64 {
    db::price_events::count(&mut pool.get().unwrap()).unwrap()
}

/// Notifications whose delivery status is `status`.
pub fn status_count(pool: &Pool, status: &str) -> i64 {
    db::notifications::count_by_status(&mut pool.get().unwrap())
        .unwrap()
        .into_iter()
        .find(|(s, _)| s == status)
        .map(|(_, n)| n)
        .unwrap_or(0)
}

/// Inserts `n` pending notifications from `topic` (partition 0, offsets
/// `0..n`, users `[i]`, messages `m{i}`), as the consumer would have.
pub fn insert_pending(pool: &Pool, topic: &str, n: usize) {
    let rows: Vec<_> = (0..n)
        .map(|i| {
            db::notifications::NewNotification::pending(
                Some(cronsumer::common::record::Source { topic, partition: 0, offset: i as i64, fingerprint: 0 }),
                format!("[{i}]"),
                "e".into(),
                format!("m{i}"),
            )
        })
        .collect();
    assert_eq!(db::notifications::insert_all(&mut pool.get().unwrap(), &rows).unwrap().inserted.len(), n);
}
