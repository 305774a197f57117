//! `outbox`: events written in the same transaction as what they report,
//! published to Kafka afterwards by [`crate::market::outbox`], and marked published
//! from their delivery reports. Nothing is lost when the broker is away: a
//! row waits here until it is delivered.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::outbox::{self, dsl as o};
use super::{now, DbConnection, DbError};
use crate::on_backend;

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = outbox)]
pub struct OutboxRow {
    pub id: i64,
    pub topic: String,
    pub key: String,
    pub payload: String,
    pub created_at: NaiveDateTime,
    pub published_at: Option<NaiveDateTime>,
    pub attempts: i32,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = outbox)]
struct NewRow<'a> {
    topic: &'a str,
    key: &'a str,
    payload: &'a str,
    created_at: NaiveDateTime,
}

/// Adds an event to publish (inside the caller's transaction); returns its id.
///
/// Rows are published in id order, so a key's ids must follow the order its
/// writers commit in. PostgreSQL hands out ids at insert, not at commit: a
/// transaction-scoped lock on the key makes its writers take turns (SQLite's
/// writers take turns anyway).
pub fn enqueue(conn: &mut DbConnection, topic: &str, key: &str, payload: &str) -> Result<i64, DbError> {
    if let DbConnection::Postgresql(c) = conn {
        diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind::<diesel::sql_types::Text, _>(key)
            .execute(c)?;
    }
    let row = NewRow { topic, key, payload, created_at: now() };
    Ok(on_backend!(conn, |c| diesel::insert_into(outbox::table).values(&row).returning(o::id).get_result(c))?)
}

/// The oldest `limit` unpublished rows, oldest first.
pub fn unpublished(conn: &mut DbConnection, limit: i64) -> Result<Vec<OutboxRow>, DbError> {
    Ok(on_backend!(conn, |c| o::outbox
        .filter(o::published_at.is_null())
        .order(o::id)
        .limit(limit)
        .select(OutboxRow::as_select())
        .load(c))?)
}

/// Marks the rows published (their delivery reports said so).
pub fn mark_published(conn: &mut DbConnection, ids: &[i64]) -> Result<usize, DbError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let set = (o::published_at.eq(now()), o::attempts.eq(o::attempts + 1), o::last_error.eq(None::<String>));
    Ok(on_backend!(conn, |c| diesel::update(o::outbox.filter(o::id.eq_any(ids))).set(set).execute(c))?)
}

/// Records a failed attempt; the row stays unpublished.
pub fn mark_failed(conn: &mut DbConnection, id: i64, error: &str) -> Result<(), DbError> {
    let set = (o::attempts.eq(o::attempts + 1), o::last_error.eq(Some(error)));
    on_backend!(conn, |c| diesel::update(o::outbox.find(id)).set(set).execute(c))?;
    Ok(())
}

/// The rows, newest first: unpublished only, or all.
pub fn list(conn: &mut DbConnection, all: bool, limit: i64) -> Result<Vec<OutboxRow>, DbError> {
    Ok(on_backend!(conn, |c| {
        let mut q = o::outbox.select(OutboxRow::as_select()).order(o::id.desc()).limit(limit).into_boxed();
        if !all {
            q = q.filter(o::published_at.is_null());
        }
        q.load(c)
    })?)
}

/// How many rows wait to be published.
pub fn pending(conn: &mut DbConnection) -> Result<i64, DbError> {
    Ok(on_backend!(conn, |c| o::outbox.filter(o::published_at.is_null()).count().get_result(c))?)
}

/// Deletes rows published before `before`; returns how many.
pub fn purge_published_before(conn: &mut DbConnection, before: NaiveDateTime) -> Result<usize, DbError> {
    let old = o::outbox.filter(o::published_at.lt(before));
    Ok(on_backend!(conn, |c| diesel::delete(old).execute(c))?)
}
