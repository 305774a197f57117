//! `consumer_offsets`: per consumer group and partition, the next offset to
//! read and the fingerprint of the record before it, written in the same
//! transaction as the handlers' writes. It is the truth on assignment;
//! Kafka's committed offsets follow it for lag tools.
//!
//! [`advance`] is what makes a batch apply once: records below the stored
//! offset were applied already (by a commit whose answer was lost, by a
//! copy that lost the partition without knowing yet), so they are skipped.
//! Writers of one partition serialize on its row, so whoever comes second
//! sees what the first applied.

use crate::common::record::TopicPartition;
use diesel::prelude::*;

use super::schema::consumer_offsets::{self, dsl as co};
use super::{now, DbConnection, DbError};
use crate::events::{Event as _, OffsetReset};
use crate::{on_backend, prepared};

/// A partition's position as the database stored it: the next offset to
/// read, and the id of the topic whose log that offset belongs to (`None`:
/// stored before ids were kept, or while they could not be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub next: i64,
    pub topic_id: Option<String>,
}

/// What the database stored of each of `tps`: the next offset and the id
/// of the topic it belongs to (`None`: it applied nothing of that partition).
pub fn positions(conn: &mut DbConnection, group: &str, tps: &[TopicPartition]) -> Result<Vec<Option<Stored>>, DbError> {
    let rows: Vec<(String, i32, i64, Option<String>)> = on_backend!(conn, |c| co::consumer_offsets
        .filter(co::group_id.eq(group))
        .select((co::topic, co::partition, co::next_offset, co::topic_id))
        .load(c))?;
    Ok(tps
        .iter()
        .map(|tp| {
            let row = rows.iter().find(|(t, p, _, _)| *t == tp.topic && *p == tp.partition);
            row.map(|(_, _, next, topic_id)| Stored { next: *next, topic_id: topic_id.clone() })
        })
        .collect())
}

diesel::define_sql_function! {
    /// The first of its arguments that is not NULL.
    fn coalesce(x: diesel::sql_types::Nullable<diesel::sql_types::Text>, y: diesel::sql_types::Nullable<diesel::sql_types::Text>) -> diesel::sql_types::Nullable<diesel::sql_types::Text>;
}

/// A batch's records of one partition, as [`advance`] needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub first: i64,
    /// One past the last record.
    pub next: i64,
    /// The last record's fingerprint.
    pub last_fingerprint: i64,
}

/// What [`advance`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advance {
    /// The offset moved to the span's end: apply every record.
    Moved,
    /// Records below this offset were applied already: skip them.
    AppliedBelow(i64),
    /// The stored offset is below what this copy stored last: the database
    /// lost committed batches (a crash before their WAL flush). Nothing was
    /// written; the partition must be read again from this offset.
    Lost(i64),
}

/// Moves a partition's offset to the end of `span`, inside the caller's
/// transaction, with the id of the topic it reads (`topic_id`; unknown
/// keeps the stored one). `mine` is the offset this copy stored last (if any).
/// `fingerprint_at` gives the fingerprint of a record of the span by offset:
/// when the stored offset is inside the span and the record before it
/// differs from the one applied there, the log changed under the offset
/// (the topic was recreated), and nothing is skipped.
pub fn advance(
    conn: &mut DbConnection,
    group: &str,
    tp: &TopicPartition,
    span: Span,
    mine: Option<i64>,
    topic_id: Option<&str>,
    fingerprint_at: impl Fn(i64) -> Option<i64>,
) -> Result<Advance, DbError> {
    let row = co::consumer_offsets.find((group, &tp.topic, tp.partition));
    let t = now();
    let set = (
        co::next_offset.eq(span.next),
        co::last_fingerprint.eq(span.last_fingerprint),
        co::updated_at.eq(t),
        co::topic_id.eq(coalesce(topic_id, co::topic_id)),
    );
    // The usual case in one statement: nothing of these records applied,
    // and nothing this copy applied lost.
    let usual = co::next_offset.le(span.first).and(co::next_offset.ge(mine.unwrap_or(i64::MIN)));
    // Kept prepared: it runs for every partition of every batch.
    if on_backend!(conn, |c| prepared!(diesel::update(row.filter(usual)).set(set)).execute(c))? == 1 {
        return Ok(Advance::Moved);
    }
    let stored: Option<(i64, i64)> =
        on_backend!(conn, |c| row.select((co::next_offset, co::last_fingerprint)).first(c).optional())?;
    let Some((stored, fingerprint)) = stored else {
        let values = (
            co::group_id.eq(group),
            co::topic.eq(&tp.topic),
            co::partition.eq(tp.partition),
            co::next_offset.eq(span.next),
            co::last_fingerprint.eq(span.last_fingerprint),
            co::updated_at.eq(t),
            co::topic_id.eq(topic_id),
        );
        on_backend!(conn, |c| diesel::insert_into(consumer_offsets::table).values(values).execute(c))?;
        return Ok(Advance::Moved);
    };
    if mine.is_some_and(|m| stored < m) {
        return Ok(Advance::Lost(stored));
    }
    if fingerprint_at(stored - 1).is_some_and(|f| f != fingerprint) {
        let why = format!("the record at {} is not the one applied there (topic deleted and recreated?)", stored - 1);
        OffsetReset { topic: &tp.topic, partition: tp.partition, from: span.first, why: &why }.emit();
        on_backend!(conn, |c| diesel::update(row).set(set).execute(c))?;
        return Ok(Advance::Moved);
    }
    if stored < span.next {
        on_backend!(conn, |c| diesel::update(row).set(set).execute(c))?;
    }
    Ok(Advance::AppliedBelow(stored))
}

/// Sets a partition's offset back to `to` (its log restarted below the
/// stored offset), inside the caller's transaction.
pub fn rewind(conn: &mut DbConnection, group: &str, tp: &TopicPartition, to: i64) -> Result<(), DbError> {
    let row = co::consumer_offsets.find((group, &tp.topic, tp.partition));
    on_backend!(conn, |c| diesel::update(row).set((co::next_offset.eq(to), co::updated_at.eq(now()))).execute(c))?;
    Ok(())
}

/// The stored next offsets of `group`, by partition.
pub fn list(conn: &mut DbConnection, group: &str) -> Result<Vec<(TopicPartition, i64)>, DbError> {
    let rows: Vec<(String, i32, i64)> = on_backend!(conn, |c| co::consumer_offsets
        .filter(co::group_id.eq(group))
        .select((co::topic, co::partition, co::next_offset))
        .order((co::topic, co::partition))
        .load(c))?;
    Ok(rows.into_iter().map(|(t, p, o)| (TopicPartition::new(t, p), o)).collect())
}
