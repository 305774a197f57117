//! `notifications`: rows stored by the notifications consumer and delivered
//! by the `send_notifications` job (pending → sending → sent | failed).

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::notifications::{self, dsl as n};
use super::sources::{self, SourceKey, Stored};
use super::stamp::Stamp;
use super::{now, DbConnection, DbError};
use crate::common::record::Source;
use crate::{on_backend, prepared, write_tx};

pub const PENDING: &str = "pending";
pub const SENDING: &str = "sending";
pub const SENT: &str = "sent";
pub const FAILED: &str = "failed";

#[derive(Debug, Clone, PartialEq, Queryable, QueryableByName, Selectable, serde::Serialize)]
#[diesel(table_name = notifications)]
pub struct Notification {
    pub id: i64,
    pub source_topic: Option<String>,
    pub source_partition: Option<i32>,
    pub source_offset: Option<i64>,
    pub users: String,
    pub event: String,
    pub message: String,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    #[diesel(deserialize_as = Stamp)]
    pub created_at: NaiveDateTime,
    #[diesel(deserialize_as = Stamp)]
    pub next_attempt_at: NaiveDateTime,
    pub claimed_until: Option<NaiveDateTime>,
    pub claimed_by: Option<String>,
    pub sent_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = notifications, treat_none_as_default_value = false)]
pub struct NewNotification {
    pub source_topic: Option<String>,
    pub source_partition: Option<i32>,
    pub source_offset: Option<i64>,
    pub users: String,
    pub event: String,
    pub message: String,
    pub status: String,
    pub attempts: i32,
    /// [`Stamp`]s: a batch binds two per row.
    pub created_at: Stamp,
    pub next_attempt_at: Stamp,
    pub source_fingerprint: Option<i64>,
}

impl NewNotification {
    /// A notification to send, from the record at `source` (None: written by
    /// a job or an operator).
    pub fn pending(source: Option<Source<'_>>, users: String, event: String, message: String) -> Self {
        Self::pending_at(now(), source, users, event, message)
    }

    /// [`Self::pending`], stored at `t`: a batch's rows share one time.
    pub fn pending_at(
        t: NaiveDateTime,
        source: Option<Source<'_>>,
        users: String,
        event: String,
        message: String,
    ) -> Self {
        NewNotification {
            source_topic: source.map(|s| s.topic.to_string()),
            source_partition: source.map(|s| s.partition),
            source_offset: source.map(|s| s.offset),
            source_fingerprint: source.map(|s| s.fingerprint),
            users,
            event,
            message,
            status: PENDING.into(),
            attempts: 0,
            created_at: Stamp(t),
            next_attempt_at: Stamp(t),
        }
    }
}

/// `status = '…'` as a literal: a planner matches a partial index's
/// predicate (`notifications_pending`, `notifications_sending`) only against
/// literals; SQLite prepares a statement again once a parameter is bound.
fn status_is(status: &'static str) -> diesel::expression::SqlLiteral<diesel::sql_types::Bool> {
    diesel::dsl::sql(&format!("status = '{status}'"))
}

/// Rows per INSERT statement, well under both backends' bind-parameter limits.
const INSERT_CHUNK: usize = 500;

/// Inserts all rows in one transaction. A row whose Kafka source is already
/// stored is skipped; [`Stored::reused`] names those stored from a different
/// record.
pub fn insert_all(conn: &mut DbConnection, rows: &[NewNotification]) -> Result<Stored, DbError> {
    let mut out = Stored::default();
    if rows.is_empty() {
        return Ok(out);
    }
    write_tx!(conn, |c| {
        for (k, chunk) in rows.chunks(INSERT_CHUNK).enumerate() {
            // Rows without a source never conflict.
            let keys: Vec<SourceKey<'_>> = chunk
                .iter()
                .map(|r| {
                    let topic = r.source_topic.as_deref().unwrap_or_default();
                    (topic, r.source_partition.unwrap_or(-1), r.source_offset.unwrap_or(-1), r.source_fingerprint)
                })
                .collect();
            let returned = c.insert_chunk(chunk)?;
            let positions: Vec<Position> = chunk.iter().map(|r| (r.source_partition, r.source_offset)).collect();
            out.inserted.extend(sources::returned(&positions, &returned).into_iter().map(|i| k * INSERT_CHUNK + i));
            if returned.len() < chunk.len() {
                let (topics, lo, hi) = sources::span(&keys);
                type Nullable = (Option<String>, Option<i32>, Option<i64>, Option<i64>);
                let stored: Vec<Nullable> = n::notifications
                    .filter(n::source_topic.eq_any(topics))
                    .filter(n::source_offset.between(lo, hi))
                    .select((n::source_topic, n::source_partition, n::source_offset, n::source_fingerprint))
                    .load(c)?;
                let stored: Vec<_> = stored.into_iter().filter_map(|(t, p, o, f)| Some((t?, p?, o?, f))).collect();
                out.reused.extend(sources::reused(&keys, &stored).into_iter().map(|i| k * INSERT_CHUNK + i));
            }
        }
        Ok::<_, diesel::result::Error>(())
    })?;
    Ok(out)
}

/// A stored row's source partition and offset, as an INSERT returns them.
type Position = (Option<i32>, Option<i64>);

/// Inserts rows, skipping those whose source is stored; returns the
/// positions of the rows inserted.
trait InsertChunk {
    fn insert_chunk(&mut self, rows: &[NewNotification]) -> QueryResult<Vec<Position>>;
}

macro_rules! insert_returning {
    ($c:expr, $rows:expr) => {
        diesel::insert_into(notifications::table)
            .values($rows)
            .on_conflict_do_nothing()
            .returning((n::source_partition, n::source_offset))
            .get_results::<Position>($c)
    };
}

/// Rows per INSERT that SQLite keeps prepared: diesel caches a multi-row
/// INSERT only for a fixed row count (an array) and parses any other anew,
/// which was a tenth of the consumer thread's time. 25 is the default batch.
const SQLITE_ROWS: usize = 25;

impl InsertChunk for diesel::SqliteConnection {
    fn insert_chunk(&mut self, rows: &[NewNotification]) -> QueryResult<Vec<Position>> {
        let mut returned = Vec::with_capacity(rows.len());
        let mut fixed = rows.chunks_exact(SQLITE_ROWS);
        for part in &mut fixed {
            let part: &[NewNotification; SQLITE_ROWS] = part.try_into().expect("chunks_exact gives full chunks");
            returned.extend(insert_returning!(self, part)?);
        }
        if !fixed.remainder().is_empty() {
            returned.extend(insert_returning!(self, fixed.remainder())?);
        }
        Ok(returned)
    }
}

/// One statement per chunk: a round trip costs PostgreSQL more than a parse.
impl InsertChunk for diesel::PgConnection {
    fn insert_chunk(&mut self, rows: &[NewNotification]) -> QueryResult<Vec<Position>> {
        insert_returning!(self, rows)
    }
}

/// Marks `sent` the rows in `sent` (delivered; only the claim's holder may
/// say so), then claims up to `limit` due rows for `holder` for `claim_for`
/// (by the database's clock), in one transaction: a sender commits once per
/// chunk, not once to mark and once to claim. Due rows are pending rows
/// whose `next_attempt_at` has come, oldest due first. (Rows whose claim
/// expired are first put back by [`requeue_expired`].) The filter and order
/// follow the partial index of pending rows, so a claim costs the same
/// however many sent rows the table holds. PostgreSQL skips rows another copy holds.
pub fn mark_sent_and_claim_due(
    conn: &mut DbConnection,
    sent: &[i64],
    holder: &str,
    limit: i64,
    claim_for: std::time::Duration,
) -> Result<Vec<Notification>, DbError> {
    let t = super::clock(conn)?;
    let mut rows = super::transaction(conn, false, |c| {
        mark_sent(c, sent, holder)?;
        claim(c, t, holder, limit, claim_for)
    })?;
    rows.sort_by_key(|r| (r.next_attempt_at, r.id));
    Ok(rows)
}

/// The claim of [`mark_sent_and_claim_due`], inside its transaction.
fn claim(
    conn: &mut DbConnection,
    t: NaiveDateTime,
    holder: &str,
    limit: i64,
    claim_for: std::time::Duration,
) -> Result<Vec<Notification>, DbError> {
    use diesel::sql_types::{BigInt, Text, Timestamp};
    let claimed_until = super::after(t, claim_for);
    // One statement selects and claims: no id list to build, bind and parse
    // per chunk. The statuses are literals: a planner matches a partial
    // index's predicate only against literals. PostgreSQL skips rows another
    // copy is claiming.
    let sql = |p: [&str; 4], lock: &str| {
        format!(
            "UPDATE notifications SET status = '{SENDING}', claimed_until = {}, claimed_by = {} WHERE id IN \
             (SELECT id FROM notifications WHERE status = '{PENDING}' AND next_attempt_at <= {} \
             ORDER BY next_attempt_at LIMIT {}{lock}) RETURNING *",
            p[0], p[1], p[2], p[3]
        )
    };
    macro_rules! claim {
        ($sql:expr) => {
            diesel::sql_query($sql)
                .bind::<Timestamp, _>(claimed_until)
                .bind::<Text, _>(holder)
                .bind::<Timestamp, _>(t)
                .bind::<BigInt, _>(limit)
        };
    }
    // Kept prepared: the text is the same for every chunk.
    Ok(match conn {
        DbConnection::Postgresql(c) => {
            prepared!(claim!(sql(["$1", "$2", "$3", "$4"], " FOR UPDATE SKIP LOCKED"))).get_results(c)?
        }
        DbConnection::Sqlite(c) => prepared!(claim!(sql(["?"; 4], ""))).get_results(c)?,
    })
}

/// Extends the claims of `ids` that `holder` holds by `claim_for` from now
/// (by the database's clock); returns how many. Only those: rows an earlier
/// run of the holder left claimed (it failed) expire and go back.
pub fn renew_claims(
    conn: &mut DbConnection,
    ids: &[i64],
    holder: &str,
    claim_for: std::time::Duration,
) -> Result<usize, DbError> {
    let until = super::after(super::clock(conn)?, claim_for);
    let target = n::notifications.filter(n::id.eq_any(ids)).filter(n::claimed_by.eq(holder)).filter(status_is(SENDING));
    Ok(on_backend!(conn, |c| diesel::update(target).set(n::claimed_until.eq(Some(until))).execute(c))?)
}

/// Delivered, for many rows at once: only the claim's holder may say so.
pub fn mark_sent_many(conn: &mut DbConnection, ids: &[i64], holder: &str) -> Result<usize, DbError> {
    if ids.is_empty() {
        return Ok(0);
    }
    super::transaction(conn, false, |c| mark_sent(c, ids, holder))
}

/// The statement of [`mark_sent_many`], in the caller's transaction.
fn mark_sent(conn: &mut DbConnection, ids: &[i64], holder: &str) -> Result<usize, DbError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let t = now();
    let target = n::notifications.filter(n::id.eq_any(ids)).filter(n::claimed_by.eq(holder)).filter(status_is(SENDING));
    Ok(on_backend!(conn, |c| diesel::update(target)
        .set((
            n::status.eq(SENT),
            n::sent_at.eq(Some(t)),
            n::attempts.eq(n::attempts + 1),
            n::claimed_until.eq(None::<NaiveDateTime>),
            n::last_error.eq(None::<String>),
        ))
        .execute(c))?)
}

/// Gives claimed rows back, not attempted (their attempts unspent), due at `due`.
pub fn release(conn: &mut DbConnection, ids: &[i64], holder: &str, due: NaiveDateTime) -> Result<usize, DbError> {
    let target = n::notifications.filter(n::id.eq_any(ids)).filter(n::claimed_by.eq(holder)).filter(status_is(SENDING));
    Ok(on_backend!(conn, |c| diesel::update(target)
        .set((
            n::status.eq(PENDING),
            n::next_attempt_at.eq(due),
            n::claimed_until.eq(None::<NaiveDateTime>),
            n::claimed_by.eq(None::<String>),
        ))
        .execute(c))?)
}

/// Not delivered: back to `pending` for `retry_at`, or `failed` when `retry_at` is `None`.
pub fn mark_attempt_failed(
    conn: &mut DbConnection,
    id: i64,
    holder: &str,
    error: &str,
    retry_at: Option<NaiveDateTime>,
) -> Result<bool, DbError> {
    let target = n::notifications.filter(n::id.eq(id)).filter(n::claimed_by.eq(holder)).filter(status_is(SENDING));
    let status = if retry_at.is_some() { PENDING } else { FAILED };
    let next = retry_at.unwrap_or_else(now);
    let changed = on_backend!(conn, |c| diesel::update(target)
        .set((
            n::status.eq(status),
            n::attempts.eq(n::attempts + 1),
            n::last_error.eq(Some(error)),
            n::next_attempt_at.eq(next),
            n::claimed_until.eq(None::<NaiveDateTime>),
        ))
        .execute(c))?;
    Ok(changed == 1)
}

/// Puts rows whose claim expired back to `pending`; returns how many.
pub fn requeue_expired(conn: &mut DbConnection) -> Result<usize, DbError> {
    let t = super::clock(conn)?;
    let target = n::notifications.filter(status_is(SENDING)).filter(n::claimed_until.lt(t));
    Ok(on_backend!(conn, |c| diesel::update(target)
        .set((n::status.eq(PENDING), n::claimed_until.eq(None::<NaiveDateTime>), n::claimed_by.eq(None::<String>)))
        .execute(c))?)
}

/// Sets a row back to `pending`, due now (operator retry): a `failed`,
/// `sent` or `pending` one, or with `only_failed` a `failed` one; never one
/// being sent (it would be delivered twice at once). Returns false when no
/// such row.
pub fn retry_now(conn: &mut DbConnection, id: i64, only_failed: bool) -> Result<bool, DbError> {
    let t = now();
    let statuses: &[&str] = if only_failed { &[FAILED] } else { &[PENDING, SENT, FAILED] };
    let changed = on_backend!(conn, |c| diesel::update(
        n::notifications.filter(n::id.eq(id)).filter(n::status.eq_any(statuses))
    )
    .set((
        n::status.eq(PENDING),
        n::next_attempt_at.eq(t),
        n::claimed_until.eq(None::<NaiveDateTime>),
        n::claimed_by.eq(None::<String>),
    ))
    .execute(c))?;
    Ok(changed == 1)
}

/// Deletes `sent` rows sent before `before`.
pub fn purge_sent_before(conn: &mut DbConnection, before: NaiveDateTime) -> Result<usize, DbError> {
    let target = n::notifications.filter(n::status.eq(SENT)).filter(n::sent_at.lt(before));
    Ok(on_backend!(conn, |c| diesel::delete(target).execute(c))?)
}

pub fn list(conn: &mut DbConnection, status: Option<&str>, limit: i64) -> Result<Vec<Notification>, DbError> {
    Ok(on_backend!(conn, |c| {
        let mut q = n::notifications.select(Notification::as_select()).order(n::id.desc()).limit(limit).into_boxed();
        if let Some(s) = status {
            q = q.filter(n::status.eq(s.to_string()));
        }
        q.load(c)
    })?)
}

/// Rows per status.
pub fn count_by_status(conn: &mut DbConnection) -> Result<Vec<(String, i64)>, DbError> {
    use diesel::dsl::count_star;
    Ok(on_backend!(conn, |c| n::notifications
        .group_by(n::status)
        .select((n::status, count_star()))
        .order(n::status)
        .load::<(String, i64)>(c))?)
}

/// The status of row `id`, if there is one.
pub fn status_of(conn: &mut DbConnection, id: i64) -> Result<Option<String>, DbError> {
    Ok(on_backend!(conn, |c| n::notifications.find(id).select(n::status).first(c).optional())?)
}

pub fn count(conn: &mut DbConnection) -> Result<i64, DbError> {
    Ok(on_backend!(conn, |c| n::notifications.count().get_result(c))?)
}
