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
/// clock runs ten minutes ahead, runs the sender meanwhile. By b's clock
/// a's claims (300 s) have long expired, but claims are compared with
/// PostgreSQL's clock, so b takes none of them: each notification is
/// delivered once.
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

/// SIGKILL while notifications are delivered (4 in flight, each answered
/// after 200 ms): a fresh copy takes over the dead copy's claims once they
/// lapse (30 s unrenewed) and sends the rest. At most the calls in flight
/// and those answered within the last marking interval (250 ms) are sent
/// twice, counted by idempotency key at the webhook.
#[test]
fn kill_9_mid_delivery_resends_at_most_what_was_in_flight() {
    let _serial = serial();
    const N: usize = 300;
    const IN_FLIGHT: usize = 4;
    let sink = Sink::ok();
    sink.set_delay(Duration::from_millis(200));
    let fx = Fixture::with_webhook(
        "kill_9_mid_delivery",
        Backend::Postgres,
        &sink.url,
        &[("NOTIFY_CONCURRENCY", "4"), ("NOTIFICATIONS_CRON", "*/1 * * * * *")],
    );
    fx.produce_notifications(N);
    let first = fx.start("first", &[]);
    wait_running(&[&first], "60 notifications delivered", Duration::from_secs(120), || sink.delivered().len() >= 60);
    first.kill9();
    let at_kill = sink.delivered().len();
    assert!(at_kill < N, "delivery was not interrupted ({at_kill} delivered): the test proves nothing");
    let second = fx.start("second", &[]);
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
        "kill_9_mid_delivery: SIGKILL at {at_kill} delivered; {} delivered in all, {twice} twice (bound {bound})",
        delivered.len()
    );
    assert_eq!(delivered.len(), N, "notifications delivered");
    assert!(twice <= bound, "{twice} notifications delivered twice, more than the {bound} in flight or unmarked");
    fx.assert_exactly_once(N, 0);
}
