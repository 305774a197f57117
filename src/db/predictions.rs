//! `predictions`: one row per record of the predictions module's topic, its
//! model's answer beside its input, written in the batch's transaction.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::predictions::{self, dsl as p};
use super::sources::{self, SourceKey, Stored};
use super::{DbConnection, DbError};
use crate::{on_backend, write_tx};

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = predictions, treat_none_as_default_value = false)]
pub struct NewPrediction {
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub source_fingerprint: Option<i64>,
    pub key: Option<String>,
    pub model: String,
    pub model_version: Option<String>,
    /// The record's JSON, as the model got it.
    pub input: String,
    /// The model's answer for it, as JSON.
    pub prediction: String,
    pub latency_ms: i64,
    pub created_at: NaiveDateTime,
}

impl NewPrediction {
    fn source(&self) -> SourceKey<'_> {
        (&self.source_topic, self.source_partition, self.source_offset, self.source_fingerprint)
    }
}

/// A stored prediction.
#[derive(Debug, Clone, PartialEq, Queryable)]
pub struct Prediction {
    pub id: i64,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub source_fingerprint: Option<i64>,
    pub key: Option<String>,
    pub model: String,
    pub model_version: Option<String>,
    pub input: String,
    pub prediction: String,
    pub latency_ms: i64,
    pub created_at: NaiveDateTime,
}

/// Inserts all rows (in the caller's transaction). A row whose source is
/// already stored is skipped; [`Stored::reused`] names those stored from a
/// different record.
pub fn insert_all(conn: &mut DbConnection, rows: &[NewPrediction]) -> Result<Stored, DbError> {
    let mut out = Stored::default();
    if rows.is_empty() {
        return Ok(out);
    }
    write_tx!(conn, |c| {
        for (n, chunk) in rows.chunks(500).enumerate() {
            let keys: Vec<SourceKey<'_>> = chunk.iter().map(NewPrediction::source).collect();
            let returned: Vec<(String, i32, i64)> = diesel::insert_into(predictions::table)
                .values(chunk)
                .on_conflict_do_nothing()
                .returning((p::source_topic, p::source_partition, p::source_offset))
                .get_results(c)?;
            let positions: Vec<(String, i32, i64)> = keys.iter().map(|k| (k.0.to_string(), k.1, k.2)).collect();
            out.inserted.extend(sources::returned(&positions, &returned).into_iter().map(|i| n * 500 + i));
            if returned.len() < chunk.len() {
                let (topics, lo, hi) = sources::span(&keys);
                let stored = p::predictions
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

/// The newest prediction of `key`.
pub fn latest(conn: &mut DbConnection, key: &str) -> Result<Option<Prediction>, DbError> {
    Ok(on_backend!(conn, |c| p::predictions.filter(p::key.eq(key)).order(p::id.desc()).first(c).optional())?)
}

/// The newest `limit` predictions (of `key`, when given), newest first.
pub fn recent(conn: &mut DbConnection, key: Option<&str>, limit: i64) -> Result<Vec<Prediction>, DbError> {
    Ok(on_backend!(conn, |c| {
        let mut q = p::predictions.order(p::id.desc()).limit(limit).into_boxed();
        if let Some(k) = key {
            q = q.filter(p::key.eq(k));
        }
        q.load(c)
    })?)
}

/// Up to `limit` predictions after `after_id` (of `key`, when given), oldest
/// first: an export reads the table page by page, whatever its size.
pub fn page(conn: &mut DbConnection, key: Option<&str>, after_id: i64, limit: i64) -> Result<Vec<Prediction>, DbError> {
    Ok(on_backend!(conn, |c| {
        let mut q = p::predictions.filter(p::id.gt(after_id)).order(p::id.asc()).limit(limit).into_boxed();
        if let Some(k) = key {
            q = q.filter(p::key.eq(k));
        }
        q.load(c)
    })?)
}

/// How many predictions are stored.
pub fn count(conn: &mut DbConnection) -> Result<i64, DbError> {
    Ok(on_backend!(conn, |c| p::predictions.count().get_result(c))?)
}

/// The source positions stored (topic, partition, offset), for tests and checks.
pub fn positions(conn: &mut DbConnection) -> Result<Vec<(String, i32, i64)>, DbError> {
    Ok(on_backend!(conn, |c| p::predictions
        .select((p::source_topic, p::source_partition, p::source_offset))
        .order((p::source_topic, p::source_partition, p::source_offset))
        .load(c))?)
}
