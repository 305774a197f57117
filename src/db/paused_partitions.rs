//! `paused_partitions`: partitions an operator paused from the console. They
//! stay paused across rebalances and restarts until resumed.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::paused_partitions::{self, dsl as p};
use super::{now, DbConnection, DbError};
use crate::{on_backend, write_tx};

/// Every paused partition (topic, partition, paused at), by topic and partition.
pub fn list(conn: &mut DbConnection) -> Result<Vec<(String, i32, NaiveDateTime)>, DbError> {
    Ok(on_backend!(conn, |c| p::paused_partitions
        .select((p::topic, p::partition, p::paused_at))
        .order((p::topic, p::partition))
        .load(c))?)
}

/// Pauses `partition` of `topic`; false when it was paused already (its
/// time of pausing is kept).
pub fn pause(conn: &mut DbConnection, topic: &str, partition: i32) -> Result<bool, DbError> {
    let row = (p::topic.eq(topic), p::partition.eq(partition), p::paused_at.eq(now()));
    let inserted = write_tx!(conn, |c| diesel::insert_into(paused_partitions::table)
        .values(row)
        .on_conflict_do_nothing()
        .execute(c))?;
    Ok(inserted == 1)
}

/// Resumes `partition` of `topic`; false when it was not paused.
pub fn resume(conn: &mut DbConnection, topic: &str, partition: i32) -> Result<bool, DbError> {
    let target = p::paused_partitions.filter(p::topic.eq(topic)).filter(p::partition.eq(partition));
    Ok(write_tx!(conn, |c| diesel::delete(target).execute(c))? == 1)
}
