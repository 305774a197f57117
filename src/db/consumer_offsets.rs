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

use std::collections::BTreeMap;

use crate::common::record::{Record, TopicPartition};
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

/// What a batch's span does to a partition's stored offset ([`decide`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advance {
    /// The offset moves to the span's end: apply every record.
    Moved,
    /// The record before the stored offset is not the one applied there:
    /// the log changed under the offset (the topic was recreated). The
    /// offset moves to the span's end, and nothing is skipped.
    Replaced,
    /// Records below this offset were applied already: skip them (the
    /// offset moves to the span's end if it is below).
    AppliedBelow(i64),
    /// The stored offset is below what this copy stored last: the database
    /// lost committed batches (a crash before their WAL flush). Nothing is
    /// written; the partition must be read again from this offset.
    Lost(i64),
}

impl Advance {
    /// Whether the record at `offset` is applied (not applied already).
    pub fn applies(self, offset: i64) -> bool {
        match self {
            Advance::AppliedBelow(stored) => offset >= stored,
            _ => true,
        }
    }

    /// Whether the offset row is written with the span's end.
    pub fn writes(self, span: Span) -> bool {
        match self {
            Advance::Moved | Advance::Replaced => true,
            Advance::AppliedBelow(stored) => stored < span.next,
            Advance::Lost(_) => false,
        }
    }
}

/// A partition's row as [`decide`] reads it: the next offset and the
/// fingerprint of the record before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub next: i64,
    pub fingerprint: i64,
}

/// The usual case: nothing of the span applied yet, and nothing this copy
/// applied lost. ([`advance`] runs it as one filtered UPDATE.)
pub fn usual(stored: i64, span: Span, mine: Option<i64>) -> bool {
    stored <= span.first && stored >= mine.unwrap_or(i64::MIN)
}

/// The rule that applies each batch once, as a pure function: what the
/// span does to the partition's stored `row` (none: it applied nothing
/// yet), given the offset this copy stored last (`mine`) and the span's
/// fingerprints by offset. The database ([`advance`]) and the simulator
/// both decide with it.
pub fn decide(row: Option<Row>, span: Span, mine: Option<i64>, fingerprint_at: impl Fn(i64) -> Option<i64>) -> Advance {
    let Some(row) = row else { return Advance::Moved };
    if usual(row.next, span, mine) {
        Advance::Moved
    } else if mine.is_some_and(|m| row.next < m) {
        Advance::Lost(row.next)
    } else if fingerprint_at(row.next - 1).is_some_and(|f| f != row.fingerprint) {
        Advance::Replaced
    } else {
        Advance::AppliedBelow(row.next)
    }
}

/// The span of each partition's records (offsets in order, as the pipeline
/// hands them).
pub fn spans(records: &[Record]) -> BTreeMap<TopicPartition, Span> {
    // Borrowed keys, and one fingerprint per partition: this runs over every record.
    let mut ends: BTreeMap<(&str, i32), (i64, &Record)> = BTreeMap::new();
    for r in records {
        ends.entry((&r.topic, r.partition))
            .and_modify(|(first, last)| (*first, *last) = ((*first).min(r.offset), r))
            .or_insert((r.offset, r));
    }
    ends.into_iter()
        .map(|((topic, partition), (first, last))| {
            let span = Span { first, next: last.offset + 1, last_fingerprint: last.fingerprint() };
            (TopicPartition::new(topic, partition), span)
        })
        .collect()
}

/// Moves a partition's offset to the end of `span` as [`decide`] says,
/// inside the caller's transaction, with the id of the topic it reads
/// (`topic_id`; unknown keeps the stored one).
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
    // The usual case in one statement: the filter is `usual`'s.
    let usual = co::next_offset.le(span.first).and(co::next_offset.ge(mine.unwrap_or(i64::MIN)));
    // Kept prepared: it runs for every partition of every batch.
    if on_backend!(conn, |c| prepared!(diesel::update(row.filter(usual)).set(set)).execute(c))? == 1 {
        return Ok(Advance::Moved);
    }
    let stored: Option<(i64, i64)> =
        on_backend!(conn, |c| row.select((co::next_offset, co::last_fingerprint)).first(c).optional())?;
    let advance = decide(stored.map(|(next, fingerprint)| Row { next, fingerprint }), span, mine, fingerprint_at);
    if advance == Advance::Replaced {
        let before = stored.map_or(span.first, |(next, _)| next - 1);
        let why = format!("the record at {before} is not the one applied there (topic deleted and recreated?)");
        OffsetReset { topic: &tp.topic, partition: tp.partition, from: span.first, why: &why }.emit();
    }
    match stored {
        None => {
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
        }
        Some(_) if advance.writes(span) => _ = on_backend!(conn, |c| diesel::update(row).set(set).execute(c))?,
        Some(_) => {}
    }
    Ok(advance)
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
