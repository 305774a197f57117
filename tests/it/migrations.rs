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
    assert_eq!((applied.len(), embedded), (11, 11), "{applied:?}");
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
/// and the other rows keep their status. (The migrations after it are
/// reverted first, and applied again with it.)
fn rows_left_sending_become_pending(backend: Backend) {
    use diesel::prelude::*;
    use diesel_migrations::{FileBasedMigrations, MigrationHarness};
    let tdb = TestDb::new(backend);
    let (pool, _) = db::connect_and_migrate(&tdb.url, 1).unwrap();
    let dir = format!("migrations/{}", if backend == Backend::Sqlite { "sqlite" } else { "postgres" });
    let revert_last = |conn: &mut db::DbConnection| {
        let older = FileBasedMigrations::from_path(&dir).unwrap();
        match conn {
            db::DbConnection::Sqlite(c) => c.revert_last_migration(older).unwrap().to_string(),
            db::DbConnection::Postgresql(c) => c.revert_last_migration(older).unwrap().to_string(),
        }
    };
    let insert = "INSERT INTO notifications (users, event, message, status, created_at, next_attempt_at) VALUES \
                  ('[1]', 'e', 'being sent', 'sending', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP), \
                  ('[2]', 'e', 'sent', 'sent', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP), \
                  ('[3]', 'e', 'failed', 'failed', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)";
    {
        let mut conn = pool.get().unwrap();
        assert_eq!(revert_last(&mut conn), "20261207000011", "the paused partitions table is the last migration");
        assert_eq!(revert_last(&mut conn), "20261206000010", "the claims without writes come before it");
        match &mut *conn {
            db::DbConnection::Sqlite(c) => diesel::sql_query(insert).execute(c).unwrap(),
            db::DbConnection::Postgresql(c) => diesel::sql_query(insert).execute(c).unwrap(),
        };
    }
    let (pool, applied) = db::connect_and_migrate(&tdb.url, 1).unwrap();
    assert_eq!(applied.len(), 2, "{applied:?}");
    let mut by_status = notifications::count_by_status(&mut pool.get().unwrap()).unwrap();
    by_status.sort();
    let want = [("failed", 1), ("pending", 1), ("sent", 1)].map(|(s, n)| (s.to_string(), n)).to_vec();
    assert_eq!(by_status, want);
}
both_backends!(rows_left_sending_become_pending);

/// The console's dead-letter search: each filter alone and together, text
/// matched literally (no LIKE wildcards) in reasons and in payload bytes,
/// keyset pages, counts, "replay all matching" and the purge of replayed ones.
fn dead_letter_search_filters_and_pages(backend: Backend) {
    use dead_letters::Search;
    let tdb = TestDb::new(backend);
    let mut conn = tdb.pool().get().unwrap();
    let base = chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap();
    let row = |offset: i64, topic: &str, error: &str, payload: Option<&[u8]>| dead_letters::NewDeadLetter {
        topic: topic.into(),
        partition: 0,
        offset,
        key: None,
        payload: payload.map(<[u8]>::to_vec),
        error: error.into(),
        failed_at: base + chrono::Duration::hours(offset),
        fingerprint: offset,
    };
    let long = vec![b'z'; 2_000];
    let rows = [
        row(1, "orders", "invalid json", Some(br#"{"id":1}"#)),
        row(2, "orders", "missing field price", Some(br#"{"id":2,"needle":true}"#)),
        row(3, "prices", "rate 100% over the_limit", Some(b"x")),
        row(4, "prices", "timeout", Some(b"\xff\xfe\0needle\xff")),
        row(5, "trades", "needle in the reason", None),
        row(6, "trades", "Invalid JSON", Some(&long)),
    ];
    assert_eq!(dead_letters::insert_all(&mut conn, &rows).unwrap().inserted.len(), 6);
    let all = dead_letters::list(&mut conn, None, 100).unwrap();
    let id = |offset: i64| all.iter().find(|d| d.offset == offset).unwrap().id;
    let ids = |offsets: &[i64]| -> Vec<i64> { offsets.iter().map(|&o| id(o)).collect() };
    let sorted = |rows: Vec<dead_letters::DeadLetter>| -> Vec<i64> {
        let mut ids: Vec<i64> = rows.into_iter().map(|d| d.id).collect();
        ids.sort_unstable();
        ids
    };
    let claimed = dead_letters::claim_replay(&mut conn, &[id(1)], std::time::Duration::from_secs(60)).unwrap();
    assert_eq!(claimed, ids(&[1]));
    dead_letters::replay_done(&mut conn, &claimed, true).unwrap();

    let mut found = |s: Search| sorted(dead_letters::search(&mut conn, &s, None, 100).unwrap());
    let text = |t: &str| Search { text: Some(t.into()), ..Search::default() };
    let topic = |t: &str| Search { topic: Some(t.into()), ..Search::default() };
    assert_eq!(found(Search::default()), ids(&[1, 2, 3, 4, 5, 6]));
    assert_eq!(found(topic("orders")), ids(&[1, 2]));
    assert_eq!(found(topic(" orders ")), ids(&[1, 2]), "trimmed");
    assert_eq!(found(topic("  ")), ids(&[1, 2, 3, 4, 5, 6]), "blank: no filter");
    assert_eq!(found(text(" ")), ids(&[1, 2, 3, 4, 5, 6]), "blank: no filter");
    // reason only; case-sensitive on both backends (SQLite's LIKE would take row 6 too)
    assert_eq!(found(text("invalid")), ids(&[1]));
    assert_eq!(found(text("missing")), ids(&[2]));
    // payload only, UTF-8 or not
    assert_eq!(found(text(r#""id""#)), ids(&[1, 2]));
    assert_eq!(found(text("needle")), ids(&[2, 4, 5]));
    // LIKE's wildcards are plain characters
    assert_eq!(found(text("%")), ids(&[3]));
    assert_eq!(found(text("_")), ids(&[3]));
    assert_eq!(found(text("0% over")), ids(&[3]));
    let hours = |h| base + chrono::Duration::hours(h);
    assert_eq!(found(Search { since: Some(hours(2)), until: Some(hours(4)), ..Search::default() }), ids(&[2, 3]));
    assert_eq!(found(Search { since: Some(hours(5)), ..Search::default() }), ids(&[5, 6]));
    assert_eq!(found(Search { until: Some(hours(2)), ..Search::default() }), ids(&[1]));
    assert_eq!(found(Search { replayed: Some(true), ..Search::default() }), ids(&[1]));
    assert_eq!(found(Search { replayed: Some(false), ..Search::default() }), ids(&[2, 3, 4, 5, 6]));
    let together = Search { topic: Some("trades".into()), text: Some("needle".into()), ..Search::default() };
    assert_eq!(found(together), ids(&[5]));

    // pages of 2, newest first, disjoint, together everything
    let (mut before, mut seen) = (None, Vec::new());
    loop {
        let page = dead_letters::search(&mut conn, &Search::default(), before, 2).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2 && page.windows(2).all(|w| w[0].id > w[1].id), "{page:?}");
        assert!(page.iter().all(|d| !seen.contains(&d.id)), "pages overlap");
        seen.extend(page.iter().map(|d| d.id));
        before = page.last().map(|d| d.id);
    }
    assert_eq!(seen, ids(&[6, 5, 4, 3, 2, 1]));
    // the listing's payloads are cut
    let page = dead_letters::search(&mut conn, &topic("trades"), None, 1).unwrap();
    assert_eq!((page[0].id, page[0].payload.as_ref().map(Vec::len)), (id(6), Some(1024)));

    assert_eq!(dead_letters::count_matching(&mut conn, &Search::default()).unwrap(), 6);
    assert_eq!(dead_letters::count_matching(&mut conn, &text("needle")).unwrap(), 3);

    // "replay all matching": not replayed yet, oldest first, whole payloads
    let unreplayed = dead_letters::unreplayed_matching(&mut conn, &Search::default(), 10).unwrap();
    assert_eq!(unreplayed.iter().map(|d| d.id).collect::<Vec<_>>(), ids(&[2, 3, 4, 5, 6]));
    assert_eq!(unreplayed[4].payload.as_deref(), Some(&long[..]));
    let first = dead_letters::unreplayed_matching(&mut conn, &Search::default(), 2).unwrap();
    assert_eq!(first.iter().map(|d| d.id).collect::<Vec<_>>(), ids(&[2, 3]));
    let orders = dead_letters::unreplayed_matching(&mut conn, &topic("orders"), 10).unwrap();
    assert_eq!(orders.iter().map(|d| d.id).collect::<Vec<_>>(), ids(&[2]));

    assert_eq!(dead_letters::purge_replayed(&mut conn).unwrap(), 1);
    assert_eq!(dead_letters::purge_replayed(&mut conn).unwrap(), 0);
    assert_eq!(dead_letters::count(&mut conn).unwrap(), 5);
}
both_backends!(dead_letter_search_filters_and_pages);

/// A paused partition is stored once and listed until it is resumed.
fn paused_partitions_round_trip(backend: Backend) {
    use cronsumer::db::paused_partitions;
    let tdb = TestDb::new(backend);
    let mut conn = tdb.pool().get().unwrap();
    assert!(paused_partitions::pause(&mut conn, "prices", 2).unwrap());
    assert!(!paused_partitions::pause(&mut conn, "prices", 2).unwrap(), "paused already");
    assert!(paused_partitions::pause(&mut conn, "orders", 0).unwrap());
    let listed = paused_partitions::list(&mut conn).unwrap();
    let keys: Vec<(&str, i32)> = listed.iter().map(|(t, p, _)| (t.as_str(), *p)).collect();
    assert_eq!(keys, [("orders", 0), ("prices", 2)]);
    assert!(listed.iter().all(|(_, _, at)| (db::now() - *at).num_minutes().abs() < 5), "{listed:?}");
    assert!(paused_partitions::resume(&mut conn, "prices", 2).unwrap());
    assert!(!paused_partitions::resume(&mut conn, "prices", 2).unwrap(), "resumed already");
    assert!(paused_partitions::resume(&mut conn, "orders", 0).unwrap());
    assert!(paused_partitions::list(&mut conn).unwrap().is_empty());
}
both_backends!(paused_partitions_round_trip);

#[test]
fn unreachable_postgres_is_a_clear_error_without_the_password() {
    let err = db::connect_and_migrate("postgres://app:hunter2@127.0.0.1:1/x", 1).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("cannot open database postgres://app:***@127.0.0.1:1/x"), "{text}");
    assert!(!text.contains("hunter2"));
}
