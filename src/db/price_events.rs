//! `price_events`: rows stored by the `price-events` example consumer.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::price_events::{self, dsl as p};
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
}

/// Inserts all rows in one transaction, skipping sources already stored.
pub fn insert_all(conn: &mut DbConnection, rows: &[NewPriceEvent]) -> Result<usize, DbError> {
    if rows.is_empty() {
        return Ok(0);
    }
    Ok(write_tx!(conn, |c| {
        let mut inserted = 0;
        for chunk in rows.chunks(500) {
            inserted += diesel::insert_into(price_events::table).values(chunk).on_conflict_do_nothing().execute(c)?;
        }
        Ok::<_, diesel::result::Error>(inserted)
    })?)
}

pub fn count(conn: &mut DbConnection) -> Result<i64, DbError> {
    Ok(on_backend!(conn, |c| p::price_events.count().get_result(c))?)
}
