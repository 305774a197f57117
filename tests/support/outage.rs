//! Database outages a test injects: PostgreSQL refusing connections or
//! writes, and SQLite's write lock held by someone other than the service.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use super::services::{pg_admin_url, TestDb, OBSERVER};

impl TestDb {
    /// PostgreSQL only: refuse new connections and end the open ones (an
    /// outage of this database), except an observer's (application name
    /// [`OBSERVER`]: the fault suite's commit monitor).
    pub fn pg_block(&self, blocked: bool) {
        let name = self.pg_name.as_ref().expect("pg_block needs PostgreSQL");
        let mut admin = PgConnection::establish(&pg_admin_url()).unwrap();
        diesel::sql_query(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS {}", !blocked)).execute(&mut admin).unwrap();
        if blocked {
            diesel::sql_query(format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid() \
                 AND application_name <> '{OBSERVER}'"
            ))
            .execute(&mut admin)
            .unwrap();
        }
    }

    /// PostgreSQL only: inserts into the consumer's tables fail as on a
    /// read-only standby (SQLSTATE 25006) while connections and reads work:
    /// an outage of the consumer's writes that a starting copy gets through.
    pub fn pg_refuse_writes(&self, refused: bool) {
        let mut conn = PgConnection::establish(&self.url).unwrap();
        let sql = if refused {
            "CREATE OR REPLACE FUNCTION refuse_writes() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
               RAISE EXCEPTION 'cannot execute INSERT in a read-only transaction (outage drill)' \
               USING ERRCODE = 'read_only_sql_transaction'; END $$; \
             CREATE TRIGGER refuse_writes BEFORE INSERT ON notifications \
               FOR EACH STATEMENT EXECUTE FUNCTION refuse_writes(); \
             CREATE TRIGGER refuse_writes BEFORE INSERT ON dead_letters \
               FOR EACH STATEMENT EXECUTE FUNCTION refuse_writes();"
        } else {
            "DROP TRIGGER refuse_writes ON notifications; DROP TRIGGER refuse_writes ON dead_letters;"
        };
        conn.batch_execute(sql).unwrap();
    }
}

const PY_HOLD_LOCK: &str = "\
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)
c.execute('BEGIN EXCLUSIVE')
print('locked', flush=True)
time.sleep(float(sys.argv[2]))
c.execute('COMMIT')
print('released', flush=True)
";

/// A child process killed when dropped.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// SQLite's write lock on a database file, held by someone else than the service.
pub enum WriteLock {
    /// A python3 process holding `BEGIN EXCLUSIVE` for the agreed time.
    Process(KillOnDrop, BufReader<ChildStdout>),
    /// A connection of the test process.
    InProcess(diesel::sqlite::SqliteConnection),
    Released,
}

impl WriteLock {
    /// Takes the lock on `path` for `hold` in another process (python3
    /// releases it by itself after `hold`); without python3, in this one.
    pub fn take(path: &str, hold: Duration) -> WriteLock {
        let spawned = Command::new("python3")
            .arg("-c")
            .arg(PY_HOLD_LOCK)
            .arg(path)
            .arg(hold.as_secs_f64().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn();
        match spawned {
            Ok(mut child) => {
                let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
                let child = KillOnDrop(child);
                let mut line = String::new();
                let _ = out.read_line(&mut line);
                assert_eq!(line.trim(), "locked", "python3 did not take the SQLite lock on {path}");
                WriteLock::Process(child, out)
            }
            Err(e) => {
                println!("python3 unavailable ({e}): the lock is held by a connection of the test process");
                WriteLock::in_process(path, Duration::from_secs(60))
            }
        }
    }

    /// Takes the lock on `path` over a connection of the test process,
    /// waiting up to `busy` for a writer that holds it now.
    pub fn in_process(path: &str, busy: Duration) -> WriteLock {
        let mut c = diesel::sqlite::SqliteConnection::establish(path).unwrap();
        c.batch_execute(&format!("PRAGMA busy_timeout = {}; BEGIN EXCLUSIVE;", busy.as_millis())).unwrap();
        WriteLock::InProcess(c)
    }

    pub fn describe(&self) -> &'static str {
        match self {
            WriteLock::Process(..) => "a python3 process",
            WriteLock::InProcess(_) => "a connection of the test process",
            WriteLock::Released => "nobody",
        }
    }

    /// Ends the lock: waits for python3 to commit and exit, or commits here.
    pub fn release(&mut self) {
        match std::mem::replace(self, WriteLock::Released) {
            WriteLock::Process(mut child, mut out) => {
                let status = child.0.wait().expect("wait for python3");
                let mut rest = String::new();
                let _ = out.read_to_string(&mut rest);
                assert!(status.success() && rest.contains("released"), "python3 lock holder ended with {status}");
            }
            WriteLock::InProcess(mut c) => c.batch_execute("COMMIT;").unwrap(),
            WriteLock::Released => {}
        }
    }
}
