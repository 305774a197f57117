//! The database layer: one r2d2 pool of diesel connections to SQLite or
//! PostgreSQL (chosen by `DATABASE_URL`, one binary serves both), the embedded
//! migrations of each backend, and one model file per table.
//!
//! Queries are written once with diesel's DSL and compiled for each backend
//! by [`on_backend!`] / [`write_tx!`]; writes on SQLite run in immediate
//! transactions so concurrent writers wait on `busy_timeout` instead of
//! failing with a lock upgrade error.
//!
//! Inside: the pool, migrations, transactions and clocks (here), the schema
//! ([`schema`]), one file per table, and what their rows share (source
//! positions: [`sources`]; timestamps: [`stamp`]; kept statements:
//! [`prepared`]). It may use `common`, `events` and `config`.

pub mod consumer_offsets;
pub mod dead_letters;
pub mod job_leases;
pub mod job_runs;
pub mod notifications;
pub mod outbox;
pub mod paused_partitions;
pub mod predictions;
pub mod prepared;
pub mod price_events;
pub mod price_stats;
pub mod raw_responses;
pub mod schema;
pub mod sources;
pub mod stamp;

use std::path::Path;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::r2d2::{CustomizeConnection, ManageConnection, PooledConnection, R2D2Connection};
use diesel::sqlite::SqliteConnection;
use diesel::Connection as _;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// How long a SQLite writer waits for another writer's lock before erroring.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 5_000;
/// Longest PostgreSQL statement: a stall ends by itself (as a transient
/// error), well before the default `CONSUMER_STALL_TIMEOUT_MS` (60 s).
const PG_STATEMENT_TIMEOUT_MS: u32 = 30_000;
/// libpq settings that bound every wait on a PostgreSQL connection: connect,
/// a peer that vanished silently (keepalives: 10 + 3 × 5 s), unacknowledged
/// sends (25 s), all within half the default stall timeout. A value the URL
/// gives wins.
const PG_BOUNDS: &[(&str, &str)] = &[
    ("connect_timeout", "5"),
    ("keepalives", "1"),
    ("keepalives_idle", "10"),
    ("keepalives_interval", "5"),
    ("keepalives_count", "3"),
    ("tcp_user_timeout", "25000"),
];

/// `url` with the [`PG_BOUNDS`] it does not set itself.
fn bounded_pg_url(url: &str) -> String {
    let mut out = url.to_string();
    for (key, value) in PG_BOUNDS {
        let query = out.split_once('?').map_or("", |(_, q)| q);
        if !query.split('&').any(|kv| kv.split('=').next() == Some(*key)) {
            out.push(if out.contains('?') { '&' } else { '?' });
            out.push_str(&format!("{key}={value}"));
        }
    }
    out
}

#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Postgresql(PgConnection),
    Sqlite(SqliteConnection),
}

pub type Pool = diesel::r2d2::Pool<Manager>;
pub type Conn = PooledConnection<Manager>;

/// Opens connections of the backend `DATABASE_URL` names. (diesel's generic
/// manager tries every backend in turn and reports only "invalid connection
/// url" when the server is down; this one keeps the backend's own error.)
#[derive(Debug, Clone)]
pub struct Manager {
    url: String,
    backend: Backend,
}

impl ManageConnection for Manager {
    type Connection = DbConnection;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<DbConnection, Self::Error> {
        match self.backend {
            Backend::Postgres => PgConnection::establish(&self.url).map(DbConnection::Postgresql),
            Backend::Sqlite => {
                configure_sqlite();
                SqliteConnection::establish(&self.url).map(DbConnection::Sqlite)
            }
        }
        .map_err(diesel::r2d2::Error::ConnectionError)
    }

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), Self::Error> {
        conn.ping().map_err(diesel::r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        conn.is_broken()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot open database {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("database unavailable: {}", one_line(&.0.to_string()))]
    Pool(#[from] diesel::r2d2::PoolError),
    #[error("database migration failed: {0}")]
    Migration(String),
}

pub use crate::config::Backend;

/// libpq's messages span lines; errors and log lines here are one line each.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A connection error's text without the URL's secrets (libpq quotes the
/// parts of a URL it cannot parse).
fn connect_error(url: &str, reason: impl std::fmt::Display) -> DbError {
    let reason = crate::config::redact::scrub(&one_line(&reason.to_string()), &crate::config::redact::url_secrets(url));
    DbError::Connect { url: crate::config::redact::url(url), reason }
}

/// The file path of a SQLite URL (`sqlite://x.db`, `sqlite:x.db` or `x.db`).
fn sqlite_path(url: &str) -> &str {
    url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url)
}

/// SQLite's library-wide settings, set once before the process opens its
/// first connection. A pool hands each connection to one thread at a time,
/// so SQLite's per-connection mutex (taken on every call, 10% of the
/// consumer thread's time in the profile) and the allocator statistics'
/// mutex only cost. Should a connection have been opened before, SQLite
/// refuses the change and keeps its safe defaults.
fn configure_sqlite() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use libsqlite3_sys::{sqlite3_config, SQLITE_CONFIG_MEMSTATUS, SQLITE_CONFIG_MULTITHREAD, SQLITE_OK};
        // SAFETY: sqlite3_config is called before any connection of this
        // process is opened (or SQLite returns SQLITE_MISUSE and changes nothing),
        // and no connection is ever used by two threads at once.
        let set = unsafe { [sqlite3_config(SQLITE_CONFIG_MULTITHREAD), sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0)] };
        if set.iter().any(|&rc| rc != SQLITE_OK) {
            log::debug!("SQLite was initialised before its configuration: kept its defaults");
        }
    });
}

#[derive(Debug)]
struct SessionSettings;

impl CustomizeConnection<DbConnection, diesel::r2d2::Error> for SessionSettings {
    fn on_acquire(&self, conn: &mut DbConnection) -> Result<(), diesel::r2d2::Error> {
        match conn {
            // busy_timeout first: switching to WAL itself needs the lock. A batch's
            // savepoint journal past 64 KiB would otherwise spill to a temp file
            // opened and deleted per batch (seen in the profile at batch 500).
            DbConnection::Sqlite(c) => c.batch_execute(&format!(
                "PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}; PRAGMA journal_mode = WAL; \
                 PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY; \
                 PRAGMA wal_autocheckpoint = 10000;"
            )),
            DbConnection::Postgresql(c) => {
                c.batch_execute(&format!("SET statement_timeout = {PG_STATEMENT_TIMEOUT_MS}"))
            }
        }
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// Opens a pool on `url` (creating a SQLite file's parent directory) and
/// checks that one connection can be made.
pub fn connect(url: &str, size: u32) -> Result<Pool, DbError> {
    let backend =
        Backend::of_url(url).map_err(|reason| DbError::Connect { url: crate::config::redact::url(url), reason })?;
    let conn_url = match backend {
        Backend::Postgres => bounded_pg_url(url),
        Backend::Sqlite => {
            let path = sqlite_path(url);
            if let Some(parent) = Path::new(path).parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| DbError::Connect {
                    url: crate::config::redact::url(url),
                    reason: format!("cannot create directory {}: {e}", parent.display()),
                })?;
            }
            path.to_string()
        }
    };
    let manager = Manager { url: conn_url, backend };
    diesel::r2d2::Pool::builder()
        .max_size(size)
        .min_idle(Some(0))
        .connection_timeout(Duration::from_secs(5))
        .connection_customizer(Box::new(SessionSettings))
        // r2d2 logs every failed attempt itself; the caller reports the outcome.
        .error_handler(Box::new(diesel::r2d2::NopErrorHandler))
        .build(manager)
        .map_err(|e| connect_error(url, e))
}

/// Connects and applies every pending migration; returns the names applied.
pub fn connect_and_migrate(url: &str, size: u32) -> Result<(Pool, Vec<String>), DbError> {
    let pool = connect(url, size)?;
    let mut conn = pool.get().map_err(|e| connect_error(url, e))?;
    let applied = migrate(&mut conn)?;
    drop(conn);
    Ok((pool, applied))
}

/// Applies the pending migrations of the connection's backend.
pub fn migrate(conn: &mut DbConnection) -> Result<Vec<String>, DbError> {
    let versions = match conn {
        DbConnection::Sqlite(c) => c.run_pending_migrations(SQLITE_MIGRATIONS),
        DbConnection::Postgresql(c) => c.run_pending_migrations(POSTGRES_MIGRATIONS),
    }
    .map_err(|e| DbError::Migration(e.to_string()))?;
    Ok(versions.iter().map(|v| v.to_string()).collect())
}

/// Migrations embedded in this binary that the database has not applied yet.
pub fn pending_migrations(conn: &mut DbConnection) -> Result<Vec<String>, DbError> {
    match conn {
        DbConnection::Sqlite(c) => {
            c.pending_migrations(SQLITE_MIGRATIONS).map(|p| p.iter().map(|m| m.name().to_string()).collect())
        }
        DbConnection::Postgresql(c) => {
            c.pending_migrations(POSTGRES_MIGRATIONS).map(|p| p.iter().map(|m| m.name().to_string()).collect())
        }
    }
    .map_err(|e| DbError::Migration(e.to_string()))
}

/// A pooled connection, waiting no later than `until` (a stop's deadline)
/// nor longer than the pool's own timeout.
pub fn checkout(pool: &Pool, until: Option<std::time::Instant>) -> Result<Conn, DbError> {
    let wait = until.map_or(pool.connection_timeout(), |t| {
        t.saturating_duration_since(std::time::Instant::now()).clamp(MIN_CHECKOUT_WAIT, pool.connection_timeout())
    });
    pool.get_timeout(wait).map_err(DbError::Pool)
}

/// Shortest pool wait, even past a deadline: one try for an idle connection.
const MIN_CHECKOUT_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// A trivial query: does the database answer?
pub fn ping(conn: &mut DbConnection) -> Result<(), DbError> {
    use diesel::RunQueryDsl;
    diesel::sql_query("SELECT 1").execute(conn)?;
    Ok(())
}

/// Now, in the UTC wall-clock form the tables store.
pub fn now() -> chrono::NaiveDateTime {
    chrono::Utc::now().naive_utc()
}

#[derive(diesel::QueryableByName)]
struct DbNow {
    #[diesel(sql_type = diesel::sql_types::Timestamp)]
    t: chrono::NaiveDateTime,
}

/// The database's own time (UTC), which claims and leases are compared
/// with, so that copies whose clocks disagree still agree on who holds what.
/// (A SQLite file lives on one machine: every copy reads the same clock.)
pub fn clock(conn: &mut DbConnection) -> Result<chrono::NaiveDateTime, DbError> {
    match conn {
        DbConnection::Postgresql(c) => {
            let got: DbNow =
                diesel::RunQueryDsl::get_result(diesel::sql_query("SELECT (now() AT TIME ZONE 'UTC') AS t"), c)?;
            Ok(got.t)
        }
        DbConnection::Sqlite(_) => Ok(now()),
    }
}

/// `t` plus `d`, saturating.
pub fn after(t: chrono::NaiveDateTime, d: std::time::Duration) -> chrono::NaiveDateTime {
    t + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Whether a SQLite connection is inside a transaction diesel opened.
pub fn in_transaction(c: &mut SqliteConnection) -> bool {
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    AnsiTransactionManager::transaction_manager_status_mut(c).transaction_depth().is_ok_and(|d| d.is_some())
}

/// Runs `f` in one write transaction (immediate on SQLite), handing it the
/// connection itself, so every write of a consumer's batch (its handlers',
/// its dead letters, its offsets) commits or rolls back together. With
/// `relaxed`, a PostgreSQL commit does not wait for its WAL flush (set in
/// the same round trip as BEGIN).
pub fn transaction<T, E>(
    conn: &mut DbConnection,
    relaxed: bool,
    f: impl FnOnce(&mut DbConnection) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<diesel::result::Error>,
{
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    type Manager = <DbConnection as diesel::Connection>::TransactionManager;
    match conn {
        DbConnection::Sqlite(c) => AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")?,
        DbConnection::Postgresql(c) if relaxed => {
            AnsiTransactionManager::begin_transaction_sql(c, "BEGIN; SET LOCAL synchronous_commit = off")?
        }
        DbConnection::Postgresql(c) => AnsiTransactionManager::begin_transaction(c)?,
    }
    match f(conn) {
        Ok(value) => {
            Manager::commit_transaction(conn)?;
            Ok(value)
        }
        Err(e) => {
            // A failed rollback leaves the connection broken; the pool drops it.
            let _ = Manager::rollback_transaction(conn);
            Err(e)
        }
    }
}

/// Runs `$body` with `$c` bound to the backend's own connection type, so a
/// query written once compiles for both backends.
#[macro_export]
macro_rules! on_backend {
    ($conn:expr, |$c:ident| $body:expr) => {
        match &mut *$conn {
            $crate::db::DbConnection::Sqlite($c) => $body,
            $crate::db::DbConnection::Postgresql($c) => $body,
        }
    };
}

/// Like [`on_backend!`], inside a write transaction (immediate on SQLite).
/// Inside a transaction already (a consumer's batch, see [`transaction`]),
/// it is a savepoint of that one.
#[macro_export]
macro_rules! write_tx {
    ($conn:expr, |$c:ident| $body:expr) => {
        match &mut *$conn {
            $crate::db::DbConnection::Sqlite(c) => {
                if $crate::db::in_transaction(c) {
                    c.transaction(|$c| $body)
                } else {
                    c.immediate_transaction(|$c| $body)
                }
            }
            $crate::db::DbConnection::Postgresql(c) => c.transaction(|$c| $body),
        }
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn postgres_urls_get_the_bounds_they_do_not_set() {
        let url = super::bounded_pg_url("postgres://u@h/db?connect_timeout=9");
        assert!(url.starts_with("postgres://u@h/db?connect_timeout=9&keepalives=1&"), "{url}");
        assert_eq!(url.matches("connect_timeout").count(), 1);
        assert!(url.ends_with("&tcp_user_timeout=25000"), "{url}");
        assert!(super::bounded_pg_url("postgres://h/db").starts_with("postgres://h/db?connect_timeout=5&"));
    }
}
