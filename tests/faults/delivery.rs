//! Notification delivery across copies: two copies whose clocks disagree
//! by ten minutes must not both deliver a notification. The second copy runs
//! under libfaketime (Debian's `faketime`), so nothing in the service is
//! built for the test.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use cronsumer::config::Settings;
use cronsumer::db::Backend;

use crate::fixture::*;
use crate::support::*;

/// libfaketime, as Debian's `faketime` package installs it.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// `cronsumer jobs run send_notifications`, started (not waited for).
fn send_once(s: &Settings, db_url: &str, dir: &Path, faked: Option<&str>) -> std::process::Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cronsumer"));
    cmd.args(["jobs", "run", "send_notifications"])
        .current_dir(dir)
        .envs(env_of(s, db_url))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(offset) = faked {
        cmd.env("LD_PRELOAD", LIBFAKETIME).env("FAKETIME", offset).env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    }
    cmd.spawn().expect("start cronsumer jobs run")
}

/// Copy a claims notifications and delivers them slowly; copy b, whose
/// clock runs ten minutes ahead, runs the sender meanwhile. Claims are
/// advisory locks, which no clock can expire, so b takes none of a's rows:
/// each notification is delivered once.
#[test]
fn copies_whose_clocks_disagree_deliver_each_notification_once() {
    let _serial = serial();
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: install Debian's faketime package (.ci/run does)"
    );
    const N: usize = 400;
    let tdb = TestDb::new(Backend::Postgres);
    let pool = tdb.pool();
    let sink = Sink::ok();
    sink.set_delay(Duration::from_millis(50));
    let s = settings(
        &tdb.url,
        &unique("skew"),
        &[("NOTIFIER", "webhook"), ("NOTIFY_WEBHOOK_URL", sink.url.as_str()), ("NOTIFY_CONCURRENCY", "4")],
    );
    insert_pending(&pool, "skew", N);
    let dir = std::env::temp_dir().join(unique("cronsumer-skew-"));
    std::fs::create_dir_all(&dir).unwrap();

    let a = send_once(&s, &tdb.url, &dir, None);
    // a holds its first claim of 200 and delivers 80 a second.
    wait_for("copy a delivering", Duration::from_secs(30), || sink.hits().len() >= 20);
    let b = send_once(&s, &tdb.url, &dir, Some("+10m"));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    for (name, out) in [("a", &a), ("b (clock +10 min)", &b)] {
        assert!(
            out.status.success(),
            "copy {name} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let delivered = sink.delivered();
    let twice: Vec<_> = delivered.iter().filter(|(_, c)| **c > 1).collect();
    println!(
        "copies_whose_clocks_disagree: {} delivered, {} more than once; a: {} b: {}",
        delivered.len(),
        twice.len(),
        String::from_utf8_lossy(&a.stdout).trim(),
        String::from_utf8_lossy(&b.stdout).trim()
    );
    assert!(twice.is_empty(), "{} delivered more than once, e.g. {:?}", twice.len(), &twice[..twice.len().min(5)]);
    assert_eq!(delivered.len(), N, "notifications delivered");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The advisory locks (the sender's claims) the copy whose connections
/// carry `application_name` holds: the rows' ids.
fn claims_of(pool: &cronsumer::db::Pool, application: &str) -> Vec<i64> {
    use diesel::RunQueryDsl as _;
    #[derive(diesel::QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
    }
    let sql = format!(
        "SELECT l.objid::bigint AS id FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.classid = {} AND a.application_name = '{application}'",
        cronsumer::db::notifications::CLAIM_SPACE as u32
    );
    let mut conn = pool.get().unwrap();
    cronsumer::on_backend!(conn, |c| diesel::sql_query(&sql).load::<Id>(c)).unwrap().into_iter().map(|r| r.id).collect()
}

/// SIGKILL while notifications are delivered (4 in flight, each answered
/// after 200 ms) by one copy holding every due row, a second copy running
/// beside it: the dead copy's claims vanish with its connections, so the
/// second copy claims its rows within 5 s (before, they waited 30 s for a
/// claim to lapse) and sends the rest. At most the calls in flight and
/// those answered within the last marking interval (250 ms) are sent
/// twice, counted by idempotency key at the webhook.
#[test]
fn kill_9_mid_delivery_hands_the_rows_over_at_once() {
    let _serial = serial();
    const N: usize = 200;
    const IN_FLIGHT: usize = 4;
    let sink = Sink::ok();
    sink.set_delay(Duration::from_millis(200));
    let fx = Fixture::with_webhook(
        "kill_9_mid_delivery",
        Backend::Postgres,
        &sink.url,
        &[("NOTIFY_CONCURRENCY", "4"), ("NOTIFICATIONS_CRON", "*/1 * * * * *")],
    );
    let named = |name: &str| format!("{}?application_name={name}", fx.tdb.url);
    fx.produce_notifications(N);
    let first = fx.start("first", &[("DATABASE_URL", &named("first"))]);
    wait_running(&[&first], "every notification stored", Duration::from_secs(120), || fx.rows() == N as i64);
    wait_running(&[&first], "first holding every row", Duration::from_secs(60), || {
        claims_of(&fx.pool, "first").len() + sink.delivered().len() >= N
    });
    let second = fx.start("second", &[("DATABASE_URL", &named("second"))]);
    wait_running(&[&first, &second], "60 notifications delivered", Duration::from_secs(120), || {
        sink.delivered().len() >= 60
    });
    assert!(claims_of(&fx.pool, "second").is_empty(), "the second copy claimed a row the first holds");
    let held = claims_of(&fx.pool, "first");
    first.kill9();
    let killed = std::time::Instant::now();
    let at_kill = sink.delivered().len();
    assert!(
        at_kill < N && !held.is_empty(),
        "delivery was not interrupted ({at_kill} delivered): the test proves nothing"
    );
    // Handed over: each row the first held is claimed by the second, or delivered, or sent.
    let sent_ids = || -> std::collections::BTreeSet<i64> {
        let rows = cronsumer::db::notifications::list(&mut fx.pool.get().unwrap(), Some("sent"), 10_000).unwrap();
        rows.into_iter().map(|n| n.id).collect()
    };
    wait_running(&[&second], "the first copy's rows handed over", Duration::from_secs(30), || {
        let (taken, sent) = (claims_of(&fx.pool, "second"), sent_ids());
        held.iter().all(|id| taken.contains(id) || sent.contains(id))
    });
    let handover = killed.elapsed();
    fx.wait_all(&[&second], N, Duration::from_secs(120));
    wait_running(&[&second], "every notification sent", Duration::from_secs(120), || {
        status_count(&fx.pool, "sent") == N as i64
    });
    let delivered = sink.delivered();
    let twice = delivered.values().filter(|c| **c > 1).count();
    // Answers come 4 at a time every 200 ms; the marking interval (250 ms) and the
    // loop's wake-up (50 ms) span two such rounds, a third on a loaded machine.
    let bound = IN_FLIGHT + 3 * IN_FLIGHT;
    println!(
        "kill_9_mid_delivery: SIGKILL at {at_kill} delivered, {} rows held; handed over after {handover:?}; \
         {} delivered in all, {twice} twice (bound {bound})",
        held.len(),
        delivered.len()
    );
    assert!(handover <= Duration::from_secs(5), "the dead copy's rows were handed over after {handover:?}");
    assert_eq!(delivered.len(), N, "notifications delivered");
    assert!(twice <= bound, "{twice} notifications delivered twice, more than the {bound} in flight or unmarked");
    fx.assert_exactly_once(N, 0);
}
