//! PostgreSQL refuses every connection for 20 s mid-stream.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use cronsumer::db::Backend;
use diesel::prelude::*;

use crate::fixture::*;
use crate::support::*;

/// PostgreSQL refuses connections (and loses the open ones) for 20 s: the
/// batch in hand waits uncommitted, commits do not move, /healthz reports the
/// retry, and the same process finishes the stream afterwards.
#[test]
fn postgres_outage_mid_stream() {
    let _serial = serial();
    let fx = Fixture::new("postgres_outage_mid_stream", Backend::Postgres, &[]);
    fx.produce_notifications(STREAM);
    let svc = fx.start("service", &[]);
    wait_running(&[&svc], "2000 rows", Duration::from_secs(180), || fx.rows() >= 2000);

    fx.tdb.pg_block(true);
    let blocked = Instant::now();
    // Nothing can be stored from here on: rows created later are from after the outage.
    let blocked_at = chrono::Utc::now().naive_utc();
    let mut max_seen: BTreeMap<i32, i64> = BTreeMap::new();
    let mut retrying_seen: Option<String> = None;
    while blocked.elapsed() < Duration::from_secs(20) {
        svc.assert_running("during the PostgreSQL outage");
        if let Some(now) = try_committed(&fx.s, &fx.topic, PARTITIONS) {
            for (p, o) in now {
                let e = max_seen.entry(p).or_insert(o);
                *e = (*e).max(o);
            }
        }
        if retrying_seen.is_none() {
            if let Some((code, body)) = svc.healthz() {
                if code == 503 && body.contains("retrying") {
                    retrying_seen = Some(body);
                }
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    fx.tdb.pg_block(false);
    println!(
        "postgres_outage_mid_stream: highest commits during the outage {max_seen:?}; /healthz said {retrying_seen:?}"
    );
    assert!(retrying_seen.is_some(), "/healthz never reported the batch retrying during the 20 s outage");

    fx.wait_all(&[&svc], STREAM, Duration::from_secs(300));
    // Commits seen during the outage cover only rows stored before it began
    // (a commit of those may still land during the outage; commits are async).
    let before: BTreeSet<(i32, i64)> = {
        use cronsumer::db::schema::notifications::dsl as n;
        let mut conn = fx.pool.get().unwrap();
        let rows: Vec<(Option<i32>, Option<i64>)> = cronsumer::on_backend!(conn, |c| n::notifications
            .filter(n::source_topic.eq(&fx.topic))
            .filter(n::created_at.le(blocked_at))
            .select((n::source_partition, n::source_offset))
            .load(c))
        .unwrap();
        rows.into_iter().map(|(p, o)| (p.unwrap(), o.unwrap())).collect()
    };
    assert_covered(&max_seen, &before, &fx.topic);
    svc.assert_running("at the end");
    fx.assert_exactly_once(STREAM, 0);
}
