//! `price_events`: rows stored by the `price-events` example consumer.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::price_events::{self, dsl as p};
use super::sources::{self, SourceKey, Stored};
use super::{DbConnection, DbError};
use crate::{on_backend, write_tx};

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = price_events, treat_none_as_default_value = false)]
pub struct NewPriceEvent {
    pub symbol: String,
    pub price: f64,
    pub timestamp: NaiveDateTime,
    pub source: String,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub raw_response_id: Option<String>,
    pub source_fingerprint: Option<i64>,
}

impl NewPriceEvent {
    fn source(&self) -> SourceKey<'_> {
        (&self.source_topic, self.source_partition, self.source_offset, self.source_fingerprint)
    }
}

/// Inserts all rows in one transaction. A row whose source is already stored
/// is skipped; [`Stored::reused`] names those stored from a different record.
pub fn insert_all(conn: &mut DbConnection, rows: &[NewPriceEvent]) -> Result<Stored, DbError> {
    let mut out = Stored::default();
    if rows.is_empty() {
        return Ok(out);
    }
    write_tx!(conn, |c| {
        for (n, chunk) in rows.chunks(500).enumerate() {
            let keys: Vec<SourceKey<'_>> = chunk.iter().map(NewPriceEvent::source).collect();
            let returned: Vec<(i32, i64)> = diesel::insert_into(price_events::table)
                .values(chunk)
                .on_conflict_do_nothing()
                .returning((p::source_partition, p::source_offset))
                .get_results(c)?;
            let positions: Vec<(i32, i64)> = keys.iter().map(|k| (k.1, k.2)).collect();
            out.inserted.extend(sources::returned(&positions, &returned).into_iter().map(|i| n * 500 + i));
            if returned.len() < chunk.len() {
                let (topics, lo, hi) = sources::span(&keys);
                let stored = p::price_events
                    .filter(p::source_topic.eq_any(topics))
                    .filter(p::source_offset.between(lo, hi))
                    .select((p::source_topic, p::source_partition, p::source_offset, p::source_fingerprint))
                    .load(c)?;
                out.reused.extend(sources::reused(&keys, &stored).into_iter().map(|i| n * 500 + i));
            }
        }
        Ok::<_, diesel::result::Error>(())
    })?;
    Ok(out)
}

pub fn count(conn: &mut DbConnection) -> Result<i64, DbError> {
    Ok(on_backend!(conn, |c| p::price_events.count().get_result(c))?)
}

/// Which of `ids` (raw_response_id) are stored already.
pub fn stored_raw_ids(conn: &mut DbConnection, ids: &[&str]) -> Result<std::collections::HashSet<String>, DbError> {
    let mut out = std::collections::HashSet::new();
    for chunk in ids.chunks(500) {
        let found: Vec<Option<String>> = on_backend!(conn, |c| p::price_events
            .filter(p::raw_response_id.eq_any(chunk))
            .select(p::raw_response_id)
            .load(c))?;
        out.extend(found.into_iter().flatten());
    }
    Ok(out)
}

/// The events with a `raw_response_id`, in applying order: `(symbol, price, raw_response_id)`.
pub fn with_raw_ids(conn: &mut DbConnection) -> Result<Vec<(String, f64, String)>, DbError> {
    let rows: Vec<(String, f64, Option<String>)> = on_backend!(conn, |c| p::price_events
        .filter(p::raw_response_id.is_not_null())
        .order(p::id)
        .select((p::symbol, p::price, p::raw_response_id))
        .load(c))?;
    Ok(rows.into_iter().map(|(s, price, id)| (s, price, id.unwrap_or_default())).collect())
}
