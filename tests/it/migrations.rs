//! Migrations create the tables on both backends, and the source columns
//! are unique together (a redelivered record stores nothing new, a different
//! record at a reused position is named).

use cronsumer::common::record::Source;
use cronsumer::db::{self, dead_letters, notifications, Backend};

use crate::support::*;

fn migrations_create_tables_and_unique_sources(backend: Backend) {
    let tdb = TestDb::new(backend);
    let (pool, applied) = db::connect_and_migrate(&tdb.url, 2).unwrap();
    let embedded =
        std::fs::read_dir(format!("migrations/{}", if backend == Backend::Sqlite { "sqlite" } else { "postgres" }))
            .unwrap()
            .count();
    assert_eq!((applied.len(), embedded), (10, 10), "{applied:?}");
    // a second run finds nothing to apply
    let (_, again) = db::connect_and_migrate(&tdb.url, 2).unwrap();
    assert!(again.is_empty());
    assert!(db::pending_migrations(&mut pool.get().unwrap()).unwrap().is_empty());

    let mut conn = pool.get().unwrap();
    let row = |offset, fingerprint| {
        let source = Source { topic: "t", partition: 0, offset, fingerprint };
        notifications::NewNotification::pending(Some(source), "[0]".into(), "e".into(), "m".into())
    };
    let stored = |rows: &[notifications::NewNotification], conn: &mut db::Conn| {
        let s = notifications::insert_all(conn, rows).unwrap();
        (s.inserted.len(), s.reused)
    };
    assert_eq!(stored(&[row(1, 10), row(2, 20)], &mut conn), (2, vec![]));
    // a redelivery is skipped; a different record at a stored position is named
    assert_eq!(stored(&[row(2, 20), row(3, 30), row(1, 11)], &mut conn), (1, vec![2]));
    // rows not from Kafka (NULL sources) never collide
    let local = notifications::NewNotification::pending(None, "[1]".into(), "e".into(), "m".into());
    assert_eq!(stored(&[local.clone(), local], &mut conn), (2, vec![]));
    assert_eq!(notifications::count(&mut conn).unwrap(), 5);

    let dl = dead_letters::NewDeadLetter {
        topic: "t".into(),
        partition: 3,
        offset: 9,
        key: Some(vec![0xff, 0]),
        payload: Some(b"\xfe not utf8".to_vec()),
        error: "bad".into(),
        failed_at: db::now(),
        fingerprint: 90,
    };
    let once = dead_letters::insert_all(&mut conn, &[dl.clone(), dl.clone()]).unwrap();
    assert_eq!((once.inserted.len(), once.reused), (1, vec![]));
    let stored = &dead_letters::list(&mut conn, Some("t"), 10).unwrap()[0];
    assert_eq!((stored.partition, stored.offset, stored.key.as_deref()), (3, 9, Some(&[0xff, 0][..])));
    // another record at the same position is dead-lettered beside it, and named
    let other = dead_letters::NewDeadLetter { fingerprint: 91, ..dl.clone() };
    let beside = dead_letters::insert_all(&mut conn, &[dl, other.clone(), other]).unwrap();
    assert_eq!((beside.inserted.len(), beside.reused), (1, vec![1, 2]));
    assert_eq!(dead_letters::count(&mut conn).unwrap(), 2);

    // predictions: one per source position, a different record there named
    let prediction = |offset, fingerprint| db::predictions::NewPrediction {
        source_topic: "candles".into(),
        source_partition: 0,
        source_offset: offset,
        source_fingerprint: Some(fingerprint),
        key: Some("BTCUSDT".into()),
        model: "m".into(),
        model_version: None,
        input: "{}".into(),
        prediction: "{\"p\":1}".into(),
        latency_ms: 3,
        created_at: db::now(),
    };
    let s = db::predictions::insert_all(&mut conn, &[prediction(1, 10), prediction(1, 10), prediction(2, 20)]).unwrap();
    assert_eq!((s.inserted, s.reused), (vec![0, 2], vec![]));
    let s = db::predictions::insert_all(&mut conn, &[prediction(2, 21)]).unwrap();
    assert_eq!((s.inserted, s.reused), (vec![], vec![0]));
    let latest = db::predictions::latest(&mut conn, "BTCUSDT").unwrap().unwrap();
    assert_eq!((latest.source_offset, latest.prediction.as_str()), (2, "{\"p\":1}"));
}
both_backends!(migrations_create_tables_and_unique_sources);

/// A row an older version left `sending` (its claim died with that
/// version) is `pending` after the migration to claims without writes,
/// and the other rows keep their status.
fn rows_left_sending_become_pending(backend: Backend) {
    use diesel::prelude::*;
    use diesel_migrations::{FileBasedMigrations, MigrationHarness};
    let tdb = TestDb::new(backend);
    let (pool, _) = db::connect_and_migrate(&tdb.url, 1).unwrap();
    let dir = format!("migrations/{}", if backend == Backend::Sqlite { "sqlite" } else { "postgres" });
    let older = FileBasedMigrations::from_path(&dir).unwrap();
    let insert = "INSERT INTO notifications (users, event, message, status, created_at, next_attempt_at) VALUES \
                  ('[1]', 'e', 'being sent', 'sending', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP), \
                  ('[2]', 'e', 'sent', 'sent', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP), \
                  ('[3]', 'e', 'failed', 'failed', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)";
    {
        let mut conn = pool.get().unwrap();
        let reverted = match &mut *conn {
            db::DbConnection::Sqlite(c) => c.revert_last_migration(older).unwrap().to_string(),
            db::DbConnection::Postgresql(c) => c.revert_last_migration(older).unwrap().to_string(),
        };
        assert_eq!(reverted, "20261206000010", "the migration to claims without writes is the last");
        match &mut *conn {
            db::DbConnection::Sqlite(c) => diesel::sql_query(insert).execute(c).unwrap(),
            db::DbConnection::Postgresql(c) => diesel::sql_query(insert).execute(c).unwrap(),
        };
    }
    let (pool, applied) = db::connect_and_migrate(&tdb.url, 1).unwrap();
    assert_eq!(applied.len(), 1, "{applied:?}");
    let mut by_status = notifications::count_by_status(&mut pool.get().unwrap()).unwrap();
    by_status.sort();
    let want = [("failed", 1), ("pending", 1), ("sent", 1)].map(|(s, n)| (s.to_string(), n)).to_vec();
    assert_eq!(by_status, want);
}
both_backends!(rows_left_sending_become_pending);

#[test]
fn unreachable_postgres_is_a_clear_error_without_the_password() {
    let err = db::connect_and_migrate("postgres://app:hunter2@127.0.0.1:1/x", 1).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("cannot open database postgres://app:***@127.0.0.1:1/x"), "{text}");
    assert!(!text.contains("hunter2"));
}
