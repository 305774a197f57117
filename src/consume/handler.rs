//! The consumer-module contract: a [`Handler`] names its topic and handles a
//! batch of that topic's records through a [`HandlerContext`], which gives it
//! the database and a way to reject single bad records into `dead_letters`.
//!
//! Three outcomes stay distinct: `Ok(())` (done, offsets may be committed),
//! [`HandlerContext::reject`] (that record is dead-lettered, the rest goes on),
//! and `Err(_)`: a transient failure retries the whole batch later; a value
//! the database refuses, or an error that repeats on one record, gets that
//! record dead-lettered (see [`HandlerError::kind`]).

use std::time::Duration;

use crate::common::record::Record;
use crate::config::Settings;
use crate::consume::sink::FailureKind;
use crate::db::dead_letters::NewDeadLetter;
use crate::db::{DbConnection, DbError};

pub trait Handler: Send + Sync {
    /// The topic this module handles, without `KAFKA_TOPIC_PREFIX`.
    fn topic(&self) -> &'static str;

    /// The module's name, as `KAFKA_TOPIC_<NAME>` and `CONSUMER_BATCH_SIZE_<NAME>`
    /// spell it: its topic's, unless it says otherwise.
    fn name(&self) -> &'static str {
        self.topic()
    }

    /// Why the module is off, if it is (a setting it needs is missing): its
    /// topic is then not subscribed.
    fn off(&self, _settings: &Settings) -> Option<String> {
        None
    }

    /// Handles one batch of this topic's records, in offset order per
    /// partition, writing through `ctx.db()`: the batch's transaction, which
    /// also stores its offsets. A batch whose transaction rolled back (a
    /// failure, a crash) is handled again; one that committed never is.
    fn handle(&self, records: &[Record], ctx: &mut HandlerContext<'_>) -> Result<(), HandlerError>;
}

/// The full name of `module`'s topic, or `None` while the module is off.
pub fn topic_of(module: &dyn Handler, settings: &Settings) -> Option<String> {
    module.off(settings).is_none().then(|| settings.module_topic(module.name(), module.topic()))
}

/// A failed batch: nothing of it is committed.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error(transparent)]
    Db(#[from] DbError),
    /// Retried for as long as it lasts (an API that is down, say).
    #[error("{0}")]
    Transient(String),
    /// [`HandlerError::Transient`], retried no sooner than `after` (the
    /// service said when: `Retry-After`).
    #[error("{message}")]
    Later { message: String, after: Duration },
    /// Retried; a record that keeps failing with it is dead-lettered.
    #[error("{0}")]
    Other(String),
}

impl HandlerError {
    /// How long a retry must wait at least.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            HandlerError::Later { after, .. } => Some(*after),
            _ => None,
        }
    }

    pub fn kind(&self) -> FailureKind {
        match self {
            HandlerError::Db(e) => db_failure_kind(e),
            HandlerError::Transient(_) | HandlerError::Later { .. } => FailureKind::Transient,
            HandlerError::Other(_) => FailureKind::Unknown,
        }
    }
}

/// Messages of passing conditions: locks, timeouts, connections, shutdowns.
const TRANSIENT_TEXT: &[&str] = &[
    "database is locked",
    "database is busy",
    "database table is locked",
    "timeout",
    "canceling statement",
    "could not serialize",
    "deadlock",
    "terminating connection",
    "shutting down",
    "starting up",
    "recovery mode",
    "connection",
    "too many clients",
    "could not send",
    "could not receive",
    "no space left",
    "disk i/o error",
];
/// Messages of values the database refuses (PostgreSQL class 22, SQLite
/// mismatch and too big) whatever the moment.
const REFUSED_TEXT: &[&str] = &[
    "invalid byte sequence",
    "out of range",
    "value too long",
    "invalid input",
    "numeric field overflow",
    "datatype mismatch",
    "too big",
    "constraint failed",
    "violates",
    "division by zero",
    "character not in repertoire",
    "untranslatable character",
    "unsupported unicode escape",
];

/// How the pipeline treats a database error.
pub fn db_failure_kind(e: &DbError) -> FailureKind {
    use diesel::result::{DatabaseErrorKind as K, Error as E};
    match e {
        DbError::Pool(_) | DbError::Connect { .. } => FailureKind::Transient,
        DbError::Migration(_) => FailureKind::Unknown,
        DbError::Query(E::DatabaseError(kind, info)) => match kind {
            K::ClosedConnection | K::SerializationFailure | K::ReadOnlyTransaction => FailureKind::Transient,
            K::UniqueViolation
            | K::ForeignKeyViolation
            | K::NotNullViolation
            | K::CheckViolation
            | K::RestrictViolation
            | K::ExclusionViolation => FailureKind::Permanent,
            _ => kind_of_message(info.message()),
        },
        DbError::Query(E::BrokenTransactionManager) => FailureKind::Transient,
        DbError::Query(E::SerializationError(_) | E::QueryBuilderError(_) | E::InvalidCString(_)) => {
            FailureKind::Permanent
        }
        DbError::Query(_) => FailureKind::Unknown,
    }
}

fn kind_of_message(message: &str) -> FailureKind {
    let m = message.to_ascii_lowercase();
    if TRANSIENT_TEXT.iter().any(|t| m.contains(t)) {
        FailureKind::Transient
    } else if REFUSED_TEXT.iter().any(|t| m.contains(t)) {
        FailureKind::Permanent
    } else {
        FailureKind::Unknown
    }
}

impl From<diesel::result::Error> for HandlerError {
    fn from(e: diesel::result::Error) -> Self {
        HandlerError::Db(DbError::Query(e))
    }
}

/// Why a module rejected a record: the events that count it come once its
/// dead letter is stored, with the batch's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The payload is malformed or out of range.
    Invalid,
    /// Its source position already holds a different record.
    ReusedPosition,
    /// It repeats an event stored already (the same identity).
    Repeat,
}

pub struct HandlerContext<'a> {
    conn: &'a mut DbConnection,
    settings: &'a Settings,
    rejected: Vec<(NewDeadLetter, Rejection)>,
    wake: Vec<&'static str>,
}

impl<'a> HandlerContext<'a> {
    pub fn new(conn: &'a mut DbConnection, settings: &'a Settings) -> Self {
        HandlerContext { conn, settings, rejected: Vec::new(), wake: Vec::new() }
    }

    /// The service's settings (a module's own, such as `PRICE_SMA_WINDOW`).
    pub fn settings(&self) -> &Settings {
        self.settings
    }

    /// The batch's database transaction. Everything written through it
    /// commits together with the batch's offsets, so it is applied exactly
    /// once, whatever crashes or rebalances come.
    pub fn db(&mut self) -> &mut DbConnection {
        self.conn
    }

    /// `CONSUMER_MAX_RECORD_BYTES`.
    pub fn max_record_bytes(&self) -> usize {
        self.settings.consumer_max_record_bytes
    }

    /// Rejects one bad record: it goes to `dead_letters` with `reason`, and
    /// the rest of the batch goes on.
    pub fn reject(&mut self, record: &Record, reason: impl Into<String>) {
        self.rejected.push((NewDeadLetter::of(record, &reason.into()), Rejection::Invalid));
    }

    /// Rejects a record found at a source position that already holds a
    /// different record ([`crate::db::sources::Stored::reused`]): it is
    /// dead-lettered, not skipped as a redelivery, and counted.
    pub fn reject_reused(&mut self, record: &Record) {
        let reason = format!(
            "position {} already holds a different record (was the topic deleted and recreated?); \
             replay this dead letter to store it",
            record.position()
        );
        self.rejected.push((NewDeadLetter::of(record, &reason), Rejection::ReusedPosition));
    }

    /// Rejects a record that repeats an event stored already (the same
    /// identity, `id`): it goes to `dead_letters` saying so, and is counted.
    pub fn reject_repeat(&mut self, record: &Record, id: &str) {
        let reason = format!("repeats the event with identity {id}, stored already: not stored again");
        self.rejected.push((NewDeadLetter::of(record, &reason), Rejection::Repeat));
    }

    /// Asks the job `name` to run as soon as this batch is committed.
    pub fn wake_job(&mut self, name: &'static str) {
        if !self.wake.contains(&name) {
            self.wake.push(name);
        }
    }

    pub(crate) fn into_parts(self) -> (Vec<(NewDeadLetter, Rejection)>, Vec<&'static str>) {
        (self.rejected, self.wake)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_told_apart() {
        let cases = [
            ("invalid byte sequence for encoding \"UTF8\": 0x00", FailureKind::Permanent),
            ("timestamp out of range", FailureKind::Permanent),
            ("database is locked", FailureKind::Transient),
            ("canceling statement due to statement timeout", FailureKind::Transient),
            ("terminating connection due to administrator command", FailureKind::Transient),
            ("something new", FailureKind::Unknown),
        ];
        for (m, kind) in cases {
            assert_eq!(kind_of_message(m), kind, "{m}");
        }
    }
}
