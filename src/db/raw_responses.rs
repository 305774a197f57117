//! `raw_responses`: every answer (or non-answer) of the market-data
//! provider, as received, with the error when it held no price. A price
//! event names the answer it came from by its id (`raw_response_id`).

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::raw_responses::{self, dsl as r};
use super::{DbConnection, DbError};
use crate::on_backend;

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = raw_responses, treat_none_as_default_value = false)]
pub struct RawResponse {
    /// A UUID (v4), as text.
    pub id: String,
    pub provider: String,
    pub symbol: String,
    /// `None`: no answer came (timeout, connection refused).
    pub http_status: Option<i32>,
    pub body: Option<String>,
    /// `None`: the answer held a price.
    pub error: Option<String>,
    pub fetched_at: NaiveDateTime,
}

pub fn insert(conn: &mut DbConnection, row: &RawResponse) -> Result<(), DbError> {
    on_backend!(conn, |c| diesel::insert_into(raw_responses::table).values(row).execute(c))?;
    Ok(())
}

/// The latest answer for `symbol` (with a price or not), fetched at or after `since`.
pub fn latest(conn: &mut DbConnection, symbol: &str, since: NaiveDateTime) -> Result<Option<RawResponse>, DbError> {
    Ok(on_backend!(conn, |c| r::raw_responses
        .filter(r::symbol.eq(symbol))
        .filter(r::fetched_at.ge(since))
        .order(r::fetched_at.desc())
        .select(RawResponse::as_select())
        .first(c)
        .optional())?)
}

/// The latest answers, newest first (for the CLI and tests).
pub fn recent(conn: &mut DbConnection, limit: i64) -> Result<Vec<RawResponse>, DbError> {
    Ok(on_backend!(conn, |c| r::raw_responses
        .order(r::fetched_at.desc())
        .limit(limit)
        .select(RawResponse::as_select())
        .load(c))?)
}

/// Deletes answers fetched before `before`; returns how many.
pub fn purge_before(conn: &mut DbConnection, before: NaiveDateTime) -> Result<usize, DbError> {
    Ok(on_backend!(conn, |c| diesel::delete(r::raw_responses.filter(r::fetched_at.lt(before))).execute(c))?)
}
