//! Migrations create the tables on both backends, and the source columns
//! are unique together (a redelivered record stores nothing new).

use cronsumer::db::{self, dead_letters, notifications, Backend};

use crate::both_backends;
use crate::common::*;

fn migrations_create_tables_and_unique_sources(backend: Backend) {
    let tdb = TestDb::new(backend);
    let (pool, applied) = db::connect_and_migrate(&tdb.url, 2).unwrap();
    let embedded =
        std::fs::read_dir(format!("migrations/{}", if backend == Backend::Sqlite { "sqlite" } else { "postgres" }))
            .unwrap()
            .count();
    assert_eq!((applied.len(), embedded), (3, 3), "{applied:?}");
    // a second run finds nothing to apply
    let (_, again) = db::connect_and_migrate(&tdb.url, 2).unwrap();
    assert!(again.is_empty());
    assert!(db::pending_migrations(&mut pool.get().unwrap()).unwrap().is_empty());

    let mut conn = pool.get().unwrap();
    let row = |o| notifications::NewNotification::pending(Some(("t", 0, o)), "[0]".into(), "e".into(), "m".into());
    assert_eq!(notifications::insert_all(&mut conn, &[row(1), row(2)]).unwrap(), 2);
    assert_eq!(notifications::insert_all(&mut conn, &[row(2), row(3)]).unwrap(), 1);
    // rows not from Kafka (NULL sources) never collide
    let local = notifications::NewNotification::pending(None, "[1]".into(), "e".into(), "m".into());
    assert_eq!(notifications::insert_all(&mut conn, &[local.clone(), local]).unwrap(), 2);
    assert_eq!(notifications::count(&mut conn).unwrap(), 5);

    let dl = dead_letters::NewDeadLetter {
        topic: "t".into(),
        partition: 3,
        offset: 9,
        key: Some(vec![0xff, 0]),
        payload: Some(b"\xfe not utf8".to_vec()),
        error: "bad".into(),
        failed_at: db::now(),
    };
    assert_eq!(dead_letters::insert_all(&mut conn, &[dl.clone(), dl]).unwrap(), 1);
    let stored = &dead_letters::list(&mut conn, Some("t"), 10).unwrap()[0];
    assert_eq!((stored.partition, stored.offset, stored.key.as_deref()), (3, 9, Some(&[0xff, 0][..])));
}
both_backends!(migrations_create_tables_and_unique_sources);

#[test]
fn unreachable_postgres_is_a_clear_error_without_the_password() {
    let err = db::connect_and_migrate("postgres://app:hunter2@127.0.0.1:1/x", 1).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("cannot open database postgres://app:***@127.0.0.1:1/x"), "{text}");
    assert!(!text.contains("hunter2"));
}
