//! `notifications`: rows stored by the notifications consumer and delivered
//! by the `send_notifications` job (pending → sent | failed, each row
//! written once after its insert: claims cost no write).

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::notifications::{self, dsl as n};
use super::sources::{self, SourceKey, Stored};
use super::stamp::Stamp;
use super::{now, DbConnection, DbError};
use crate::common::record::Source;
use crate::{on_backend, prepared, write_tx};

pub const PENDING: &str = "pending";
pub const SENT: &str = "sent";
pub const FAILED: &str = "failed";
/// Every status a row can have.
pub const STATUSES: [&str; 3] = [PENDING, SENT, FAILED];

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
/// predicate (`notifications_pending`) only against
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

/// The advisory-lock key space of the sender's claims on PostgreSQL: row
/// `id` is claimed by `pg_try_advisory_lock(CLAIM_SPACE, id % (2^31 - 1))`, held
/// on the claiming run's session while it delivers the row and gone when
/// that session ends (a copy that dies frees its rows at once). Rows whose
/// ids differ by a multiple of 2^31 - 1 share a key: one waits for the other.
pub const CLAIM_SPACE: i32 = 0x6e6f_7469; // "noti"

/// The key of row `id` in [`CLAIM_SPACE`], as SQL over a `bigint` `id`.
const CLAIM_KEY: &str = "(id % 2147483647)::int4";

/// Claims up to `limit` due rows (pending, their `next_attempt_at` come by
/// the database's clock), oldest due first, without writing them.
/// PostgreSQL: each is locked on `conn`'s session ([`CLAIM_SPACE`]); rows
/// another copy holds are skipped, and a row another copy finished after it
/// was read (its lock let go since) is let go again. SQLite: as they are,
/// the job's lease making one sender per database. The filter and order
/// follow the partial index of pending rows.
pub fn claim_due(conn: &mut DbConnection, limit: i64) -> Result<Vec<Notification>, DbError> {
    use diesel::sql_types::{BigInt, Timestamp};
    let t = super::clock(conn)?;
    macro_rules! due {
        () => {
            n::notifications
                .select(Notification::as_select())
                .filter(status_is(PENDING))
                .filter(n::next_attempt_at.le(t))
                .order((n::next_attempt_at, n::id))
        };
    }
    let mut rows = match conn {
        DbConnection::Sqlite(c) => due!().limit(limit).load(c)?,
        DbConnection::Postgresql(c) => {
            #[derive(QueryableByName)]
            struct Id {
                #[diesel(sql_type = BigInt)]
                id: i64,
            }
            // A window past the limit, so that rows other copies hold do not
            // hide the due rows behind them; the filter locks lazily, stopping at the limit.
            let sql = format!(
                "SELECT id FROM (SELECT id FROM notifications WHERE status = '{PENDING}' AND next_attempt_at <= $1 \
                 ORDER BY next_attempt_at, id LIMIT $2 * 4) AS due WHERE pg_try_advisory_lock({CLAIM_SPACE}, {CLAIM_KEY}) LIMIT $2"
            );
            let locked: Vec<Id> =
                prepared!(diesel::sql_query(sql).bind::<Timestamp, _>(t).bind::<BigInt, _>(limit)).load(c)?;
            let ids: Vec<i64> = locked.into_iter().map(|r| r.id).collect();
            // Read again, in a statement that sees what other copies committed before they let go.
            let rows: Vec<Notification> = due!().filter(n::id.eq_any(&ids)).load(c)?;
            let gone: Vec<i64> = ids.iter().copied().filter(|id| !rows.iter().any(|r| r.id == *id)).collect();
            unclaim_pg(c, &gone)?;
            rows
        }
    };
    rows.sort_by_key(|r| (r.next_attempt_at, r.id));
    Ok(rows)
}

fn unclaim_pg(c: &mut diesel::PgConnection, ids: &[i64]) -> QueryResult<()> {
    use diesel::sql_types::{Array, BigInt};
    if ids.is_empty() {
        return Ok(());
    }
    let sql = format!("SELECT pg_advisory_unlock({CLAIM_SPACE}, {CLAIM_KEY}) FROM unnest($1) AS id");
    diesel::sql_query(sql).bind::<Array<BigInt>, _>(ids).execute(c).map(|_| ())
}

/// Lets claimed rows go (their outcome is written, or they were not
/// attempted): another copy may claim them when they are due.
pub fn unclaim(conn: &mut DbConnection, ids: &[i64]) -> Result<(), DbError> {
    if let DbConnection::Postgresql(c) = conn {
        unclaim_pg(c, ids)?;
    }
    Ok(())
}

/// Lets every claim of `conn`'s session go: at the end of a run, before its
/// connection goes back to the pool, whatever happened.
pub fn unclaim_all(conn: &mut DbConnection) -> Result<(), DbError> {
    if let DbConnection::Postgresql(c) = conn {
        diesel::sql_query("SELECT pg_advisory_unlock_all()").execute(c)?;
    }
    Ok(())
}

/// How a delivery ended, written once per row.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Sent,
    /// Not delivered: `pending` again, due at the time given.
    Retry {
        error: String,
        at: NaiveDateTime,
    },
    /// Not delivered, for good.
    Failed {
        error: String,
    },
}

/// Writes the outcomes of claimed rows, in the caller's transaction: the
/// one write of each row after its insert. The `sent` ones in one
/// statement. Only pending rows change. Returns how many did.
pub fn record(conn: &mut DbConnection, outcomes: &[(i64, Outcome)]) -> Result<usize, DbError> {
    let sent: Vec<i64> = outcomes.iter().filter(|(_, o)| *o == Outcome::Sent).map(|(id, _)| *id).collect();
    let t = now();
    let mut changed = 0;
    if !sent.is_empty() {
        let target = n::notifications.filter(n::id.eq_any(&sent)).filter(status_is(PENDING));
        changed += on_backend!(conn, |c| diesel::update(target)
            .set((
                n::status.eq(SENT),
                n::sent_at.eq(Some(t)),
                n::attempts.eq(n::attempts + 1),
                n::last_error.eq(None::<String>),
            ))
            .execute(c))?;
    }
    for (id, outcome) in outcomes {
        let (status, error, next) = match outcome {
            Outcome::Sent => continue,
            Outcome::Retry { error, at } => (PENDING, error, *at),
            Outcome::Failed { error } => (FAILED, error, t),
        };
        let target = n::notifications.filter(n::id.eq(*id)).filter(status_is(PENDING));
        changed += on_backend!(conn, |c| diesel::update(target)
            .set((
                n::status.eq(status),
                n::attempts.eq(n::attempts + 1),
                n::last_error.eq(Some(error)),
                n::next_attempt_at.eq(next),
            ))
            .execute(c))?;
    }
    Ok(changed)
}

/// What an operator's retry did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retried {
    /// Pending, due now.
    Done,
    /// No such row (or, with `only_failed`, not a failed one).
    Missing,
    /// A sender holds it: it is being delivered now (PostgreSQL).
    BeingSent,
}

/// Sets a row back to `pending`, due now (operator retry): a `failed`,
/// `sent` or `pending` one, or with `only_failed` a `failed` one; never one
/// a sender holds (it would be delivered twice at once). On SQLite a row
/// being sent is pending, and its outcome is still written once.
pub fn retry_now(conn: &mut DbConnection, id: i64, only_failed: bool) -> Result<Retried, DbError> {
    let t = now();
    let statuses: &[&str] = if only_failed { &[FAILED] } else { &[PENDING, SENT, FAILED] };
    let target = || n::notifications.filter(n::id.eq(id)).filter(n::status.eq_any(statuses));
    let changes = (n::status.eq(PENDING), n::next_attempt_at.eq(t));
    let changed = match conn {
        DbConnection::Postgresql(c) => c.transaction(|c| {
            // Free now, and kept until this transaction ends: no sender claims it meanwhile.
            let held = format!("NOT pg_try_advisory_xact_lock({CLAIM_SPACE}, {CLAIM_KEY})");
            let held = target().select(diesel::dsl::sql::<diesel::sql_types::Bool>(&held)).first(c).optional()?;
            if held == Some(true) {
                return Ok::<_, diesel::result::Error>(None);
            }
            diesel::update(target()).set(changes).execute(c).map(Some)
        })?,
        DbConnection::Sqlite(c) => Some(diesel::update(target()).set(changes).execute(c)?),
    };
    Ok(match changed {
        None => Retried::BeingSent,
        Some(1) => Retried::Done,
        Some(_) => Retried::Missing,
    })
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
