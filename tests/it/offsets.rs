//! `consumer_offsets`, the rule that applies each batch once: records below
//! the stored offset are skipped (a commit whose answer was lost, a copy that
//! lost its partition), unless the record before the stored offset is not
//! the one applied there (the topic was recreated).

use cronsumer::common::record::TopicPartition;
use cronsumer::db::consumer_offsets::{advance, positions, rewind, Advance, Span};
use cronsumer::db::Backend;

use crate::support::*;

fn span(first: i64, next: i64) -> Span {
    Span { first, next, last_fingerprint: fingerprint(next - 1) }
}

/// The fingerprint of the record at `offset` in the log the test plays.
fn fingerprint(offset: i64) -> i64 {
    offset * 10
}

/// The stored next offsets of `tps`.
fn nexts(conn: &mut cronsumer::db::DbConnection, group: &str, tps: &[TopicPartition]) -> Vec<Option<i64>> {
    positions(conn, group, tps).unwrap().into_iter().map(|s| s.map(|s| s.next)).collect()
}

fn a_batch_applies_once(backend: Backend) {
    let tdb = TestDb::new(backend);
    let pool = tdb.pool();
    let mut conn = pool.get().unwrap();
    let tp = TopicPartition::new("t", 0);
    let other = TopicPartition::new("t", 1);
    let same_log = |o: i64| Some(fingerprint(o));
    let mut at = |s: Span| advance(&mut conn, "g", &tp, s, None, None, same_log).unwrap();

    assert_eq!(at(span(0, 5)), Advance::Moved, "the first batch");
    assert_eq!(at(span(5, 8)), Advance::Moved, "the next one");
    assert_eq!(at(span(5, 8)), Advance::AppliedBelow(8), "the same batch again");
    assert_eq!(at(span(6, 10)), Advance::AppliedBelow(8), "a batch overlapping what was applied");
    assert_eq!(at(span(12, 14)), Advance::Moved, "a gap (compacted records) is no overlap");
    assert_eq!(nexts(&mut conn, "g", &[tp.clone(), other.clone()]), vec![Some(14), None]);
    assert_eq!(nexts(&mut conn, "another-group", std::slice::from_ref(&tp)), vec![None]);

    // The topic was recreated: offset 13 now holds another record.
    let new_log = |o: i64| Some(fingerprint(o) + 1);
    let recreated = Span { first: 0, next: 20, last_fingerprint: 191 };
    // Moved to the span's end, nothing skipped, and said as such (the sink resets the partition).
    assert_eq!(advance(&mut conn, "g", &tp, recreated, None, None, new_log).unwrap(), Advance::Replaced);
    assert_eq!(nexts(&mut conn, "g", std::slice::from_ref(&tp)), vec![Some(20)]);
    // A batch that does not reach the stored offset cannot tell: it is taken as applied.
    assert_eq!(
        advance(&mut conn, "g", &tp, Span { first: 2, next: 4, last_fingerprint: 31 }, None, None, new_log).unwrap(),
        Advance::AppliedBelow(20)
    );

    // The broker reset the partition below the stored offset.
    rewind(&mut conn, "g", &tp, 3).unwrap();
    assert_eq!(advance(&mut conn, "g", &tp, span(3, 6), None, None, same_log).unwrap(), Advance::Moved);
    assert_eq!(nexts(&mut conn, "g", std::slice::from_ref(&tp)), vec![Some(6)]);

    // The database lost commits: its offset (6) is below what this copy stored (9).
    assert_eq!(advance(&mut conn, "g", &tp, span(9, 12), Some(9), None, same_log).unwrap(), Advance::Lost(6));
    assert_eq!(nexts(&mut conn, "g", std::slice::from_ref(&tp)), vec![Some(6)], "nothing written");
    assert_eq!(advance(&mut conn, "g", &tp, span(6, 9), Some(6), None, same_log).unwrap(), Advance::Moved);
}
both_backends!(a_batch_applies_once);

/// The offset is stored with the id of the topic it belongs to; a batch
/// whose topic id is unknown keeps the one stored.
fn the_topic_id_is_stored_with_the_offset(backend: Backend) {
    let tdb = TestDb::new(backend);
    let pool = tdb.pool();
    let mut conn = pool.get().unwrap();
    let tp = TopicPartition::new("t", 0);
    let log = |o: i64| Some(fingerprint(o));
    let id = |conn: &mut cronsumer::db::DbConnection| {
        positions(conn, "g", std::slice::from_ref(&tp)).unwrap()[0].clone().and_then(|s| s.topic_id)
    };
    advance(&mut conn, "g", &tp, span(0, 5), None, Some("id-1"), log).unwrap();
    assert_eq!(id(&mut conn).as_deref(), Some("id-1"), "the first batch stores it");
    advance(&mut conn, "g", &tp, span(5, 8), None, None, log).unwrap();
    assert_eq!(id(&mut conn).as_deref(), Some("id-1"), "an unknown id keeps the stored one");
    rewind(&mut conn, "g", &tp, 0).unwrap();
    advance(&mut conn, "g", &tp, span(0, 2), None, Some("id-2"), log).unwrap();
    assert_eq!(id(&mut conn).as_deref(), Some("id-2"), "the new log's");
}
both_backends!(the_topic_id_is_stored_with_the_offset);
