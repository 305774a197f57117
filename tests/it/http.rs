//! The HTTP server from outside, over real sockets: every route, the web
//! console's content and actions (refused without the token, from another
//! site, or with a wrong one), hostile clients (an endless header, more
//! idle connections than the limit, an oversized body) and `cronsumer
//! healthcheck`. The console in a real browser: [`crate::console`].

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use cronsumer::db::{self, Backend};

use crate::support::*;

fn fail_notification(pool: &cronsumer::db::Pool, id: i64) {
    use diesel::prelude::*;
    let mut conn = pool.get().unwrap();
    let done = match &mut *conn {
        db::DbConnection::Sqlite(c) => {
            diesel::sql_query(format!("UPDATE notifications SET status = 'failed' WHERE id = {id}")).execute(c)
        }
        db::DbConnection::Postgresql(c) => {
            diesel::sql_query(format!("UPDATE notifications SET status = 'failed' WHERE id = {id}")).execute(c)
        }
    };
    assert_eq!(done.unwrap(), 1);
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A running service with one stored notification and one dead letter.
fn service_with_data(extra_env: &[(&str, &str)]) -> (TestDb, cronsumer::config::Settings, TestTopics, Service) {
    let tdb = TestDb::new(Backend::Sqlite);
    let pool = tdb.pool();
    // The sender runs when the consumer wakes it; its own tick is a year away.
    let s = settings(&tdb.url, &unique("http"), &[("NOTIFICATIONS_CRON", "0 0 0 1 1 *")]);
    let (topics, topic) = registry_topics(&s, 1);
    let svc = Service::start(&s, &tdb.url, extra_env);
    produce(&s, &topic, &[notification(1), b"<not json: dead letter me>".to_vec()]);
    svc.wait_for("one row and one dead letter", Duration::from_secs(60), || {
        count_notifications(&pool) == 1 && count_dead_letters(&pool) == 1
    });
    svc.wait_for("healthy", Duration::from_secs(30), || svc.healthz().is_some_and(|(c, _)| c == 200));
    (tdb, s, topics, svc)
}

#[test]
fn every_route_answers_and_the_console_is_read_only_without_a_token() {
    let (_tdb, s, _topics, svc) = service_with_data(&[]);
    let http = svc.http.clone();
    svc.wait_for("ready", Duration::from_secs(30), || http_get(&http, "/readyz").is_some_and(|(c, _)| c == 200));
    // The assigned partition's lag, read in the background, reaches 0 once the commit is in.
    let topic = s.topic("notifications");
    let caught_up = |page: &str| {
        let row = page.split(&format!("<tr data-partition=\"{topic}/0\">")).nth(1).unwrap_or_default();
        // Partition, lane, state, in memory, then the lag.
        row.split("<td").nth(5).is_some_and(|lag| lag.starts_with(" class=num>0"))
    };
    svc.wait_for("the partition's lag on the console", Duration::from_secs(60), || {
        http_get(&http, "/").is_some_and(|(_, page)| caught_up(&page))
    });
    let (code, body) = http_get(&svc.http, "/healthz").unwrap();
    assert_eq!((code, body.as_str()), (200, r#"{"status":"ok"}"#));
    let (code, metrics) = http_get(&svc.http, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(metrics.contains("cronsumer_consumer_up{group="), "{metrics}");
    assert!(metrics.contains("cronsumer_job_overdue_seconds{job_name=\"send_notifications\"}"), "{metrics}");
    let (code, body) = http_get(&svc.http, "/no-such-page").unwrap();
    assert_eq!(code, 404, "{body}");

    let (code, page) = http_get(&svc.http, "/").unwrap();
    assert_eq!(code, 200);
    for want in ["<h2>Consumer</h2>", "<h2>Dead letters</h2>", "<h2>Notifications</h2>", "<h2>Jobs</h2>", "Restarts: 0"]
    {
        assert!(page.contains(want), "{want} missing from the console:\n{page}");
    }
    assert!(page.contains("&lt;not json: dead letter me&gt;"), "the dead letter's payload, escaped:\n{page}");
    // The consumer woke the sender, which sent the notification through the log notifier.
    assert!(page.contains("send_notifications") && page.contains("<tr><td>sent<td class=num>1</tr>"), "{page}");
    assert!(page.contains("Read-only") && !page.contains("<button>Replay"), "{page}");
    let (code, filtered) = http_get(&svc.http, "/?topic=no-such-topic").unwrap();
    assert_eq!(code, 200);
    assert!(filtered.contains(">0 match.</p>") && !filtered.contains("dead letter me"), "{filtered}");
    // A hostile filter is shown, escaped, never as markup.
    let (code, hostile) = http_get(&svc.http, "/?topic=%22%3E%3Cscript%3Ealert(1)%3C/script%3E").unwrap();
    assert_eq!(code, 200);
    assert!(!hostile.contains("<script>") && hostile.contains("&quot;&gt;&lt;script&gt;"), "{hostile}");

    // Without HTTP_ADMIN_TOKEN no action exists, whatever is presented.
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    for path in
        ["/actions/dead-letters/1/replay", "/actions/notifications/1/retry", "/actions/jobs/send_notifications/run"]
    {
        let (code, _, body) = post_form(&svc.http, path, &[("Authorization", &bearer)], "");
        assert_eq!(code, 403, "{path}: {body}");
        assert!(body.contains("HTTP_ADMIN_TOKEN is not set"), "{body}");
    }
    // Probes and pages are GETs only.
    let (code, _, _) = post_form(&svc.http, "/healthz", &[], "");
    assert_eq!(code, 405);
}

/// The console says what is true: when the database and Kafka last
/// committed (Kafka's answers to commits reach the consumer, so a quiet
/// stream after a commit stays healthy), and every job, those a setting
/// turns off with the reason.
#[test]
fn the_console_shows_the_last_commits_and_the_jobs_that_are_off() {
    let (_tdb, _s, _topics, svc) = service_with_data(&[("CONSUMER_STALL_TIMEOUT_MS", "2000")]);
    let shows_commits = |page: &str| {
        let line = page.split("last commit in the database ").nth(1).unwrap_or_default();
        let line = line.split("</p>").next().unwrap_or_default();
        let (db, kafka) = line.split_once(", in Kafka ").unwrap_or_default();
        db.ends_with(" s ago") && kafka.ends_with(" s ago.")
    };
    svc.wait_for("both commits on the console", Duration::from_secs(30), || {
        http_get(&svc.http, "/").is_some_and(|(_, page)| shows_commits(&page))
    });
    // Longer than the stall timeout, with nothing to read: handled records wait for no commit.
    std::thread::sleep(Duration::from_secs(4));
    let (code, body) = svc.healthz().unwrap();
    assert_eq!((code, body.as_str()), (200, r#"{"status":"ok"}"#));
    let (_, page) = http_get(&svc.http, "/").unwrap();
    assert!(!page.contains("never"), "{page}");
    assert!(page.contains("<td>fetch_prices<td>") && page.contains("off: PRICE_SYMBOLS is empty"), "{page}");
}

#[test]
fn actions_need_the_token_and_refuse_other_sites() {
    let (tdb, _s, _topics, svc) = service_with_data(&[("HTTP_ADMIN_TOKEN", ADMIN_TOKEN)]);
    let pool = tdb.pool();
    let mut conn = pool.get().unwrap();
    let note = db::notifications::list(&mut conn, None, 1).unwrap().remove(0);
    let dead = db::dead_letters::list(&mut conn, None, 1).unwrap().remove(0);
    let retry = format!("/actions/notifications/{}/retry", note.id);
    let replay = format!("/actions/dead-letters/{}/replay", dead.id);
    let bearer = format!("Bearer {ADMIN_TOKEN}");

    let (code, _, _) = post_form(&svc.http, &retry, &[], "");
    assert_eq!(code, 401, "no token");
    let (code, _, _) = post_form(&svc.http, &retry, &[("Authorization", "Bearer wrong-token-wrong-token-00")], "");
    assert_eq!(code, 403, "wrong token");
    let (code, _, _) = post_form(&svc.http, &retry, &[("Cookie", "cronsumer_admin=wrong-token-wrong-token-00")], "");
    assert_eq!(code, 403, "wrong cookie");
    // A cross-site form carries the browser's cookie only without SameSite=Strict,
    // and its Origin gives it away.
    let cookie = format!("cronsumer_admin={ADMIN_TOKEN}");
    let (code, _, body) = post_form(&svc.http, &retry, &[("Cookie", &cookie), ("Origin", "https://evil.example")], "");
    assert_eq!(code, 403, "{body}");
    let (code, _, _) = post_form(&svc.http, &retry, &[("Cookie", &cookie), ("Sec-Fetch-Site", "cross-site")], "");
    assert_eq!(code, 403);
    // GET does not act.
    let (code, _) = http_get(&svc.http, &retry).unwrap();
    assert_eq!(code, 405);

    // Only a failed notification is retried: a sent one (or one being sent) would go out twice.
    let (code, _, body) = post_form(&svc.http, &retry, &[("Authorization", &bearer)], "");
    assert_eq!(code, 409, "{body}");
    fail_notification(&pool, note.id);
    let (code, _, body) = post_form(&svc.http, &retry, &[("Authorization", &bearer)], "");
    assert_eq!(code, 200, "{body}");
    let (code, _, body) =
        post_form(&svc.http, "/actions/notifications/999999/retry", &[("Authorization", &bearer)], "");
    assert_eq!(code, 409, "{body}");
    let (code, _, body) =
        post_form(&svc.http, "/actions/jobs/send_notifications/run", &[("Authorization", &bearer)], "");
    assert_eq!(code, 200, "{body}");
    let sent = db::notifications::list(&mut conn, Some(db::notifications::SENT), 10).unwrap();
    assert_eq!(sent.len(), 1, "the job run from the console sent the retried notification");
    let (code, _, body) = post_form(&svc.http, "/actions/jobs/no_such_job/run", &[("Authorization", &bearer)], "");
    assert_eq!(code, 404, "{body}");

    let (code, _, body) = post_form(&svc.http, &replay, &[("Authorization", &bearer)], "");
    assert_eq!(code, 200, "{body}");
    assert!(db::dead_letters::find(&mut conn, dead.id).unwrap().unwrap().replayed_at.is_some());
    let (code, _, body) = post_form(&svc.http, &replay, &[("Authorization", &bearer)], "");
    assert_eq!(code, 409, "a second replay would produce the record twice: {body}");

    // The console's unlock form sets a strict, script-proof cookie, then shows the buttons.
    let form = ("Content-Type", "application/x-www-form-urlencoded");
    let (code, head, _) =
        request(&svc.http, "POST", "/unlock", &[form], &format!("token={ADMIN_TOKEN}")).expect("unlock answers");
    assert_eq!(code, 303, "{head}");
    let set_cookie = head.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie:")).expect("a cookie");
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    let (code, _, _) = request(&svc.http, "POST", "/unlock", &[form], "token=wrong-token-wrong-token-00").unwrap();
    assert_eq!(code, 403);
    let (code, _, page) = request(&svc.http, "GET", "/", &[("Cookie", &cookie)], "").unwrap();
    assert_eq!(code, 200);
    assert!(page.contains("<button>Run now</button>") && page.contains("Lock actions"), "{page}");
    let (_, _, locked) = request(&svc.http, "GET", "/", &[], "").unwrap();
    assert!(locked.contains("Unlock actions") && !locked.contains("<button>Run now</button>"), "{locked}");
    assert!(!locked.contains("http-equiv=refresh"), "the page would wipe the token being typed");
    // The console's own buttons: the cookie acts, and the browser goes back to the console.
    let (code, head, _) = post_form(&svc.http, "/actions/jobs/maintenance_5m/run", &[("Cookie", &cookie)], "");
    assert_eq!(code, 303, "{head}");
    let (code, head, _) = request(&svc.http, "POST", "/lock", &[form], "").unwrap();
    assert_eq!(code, 303);
    assert!(head.contains("Max-Age=0"), "{head}");
    assert!(!svc.log_text().contains(ADMIN_TOKEN), "the token was logged");
}

#[test]
fn hostile_clients_cannot_exhaust_the_server() {
    let (_tdb, _s, _topics, svc) = service_with_data(&[]);
    let pid = svc.pid();
    let addr: std::net::SocketAddr = svc.http.parse().unwrap();
    let rss_before = rss_kib(pid);

    // An endless header line: refused once the head passes its limit, memory bounded.
    let mut endless = TcpStream::connect(addr).unwrap();
    endless.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: ").unwrap();
    let chunk = vec![b'a'; 64 * 1024];
    let mut sent = 0usize;
    while sent < 64 * 1024 * 1024 {
        if endless.write_all(&chunk).is_err() {
            break;
        }
        sent += chunk.len();
    }
    // What the sockets buffer before the refusal reaches the client is a few MiB at most.
    assert!(sent < 32 * 1024 * 1024, "the server kept reading an endless header ({sent} bytes)");
    let grown = rss_kib(pid).saturating_sub(rss_before);
    assert!(grown < 16 * 1024, "RSS grew by {grown} KiB for one endless header");

    // An oversized body is refused.
    let big = "x".repeat(64 * 1024);
    let (code, _, _) =
        request(&svc.http, "POST", "/unlock", &[("Content-Type", "application/x-www-form-urlencoded")], &big).unwrap();
    assert_eq!(code, 413);

    // Idle connections beyond the limit: each newcomer takes the place of the
    // oldest that sent no request, so a probe still gets through...
    let mut idle: Vec<TcpStream> = (0..400).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(svc.healthz().map(|(c, _)| c), Some(200), "a probe beside 400 idle connections");
    let dropped = metric_sum(&svc.metrics(), "cronsumer_http_connections_dropped_total");
    assert!(dropped >= 400.0 - 256.0, "the oldest idle connections were not closed: {dropped}");
    // ...and every idle one is closed after the header timeout.
    let started = Instant::now();
    for s in &mut idle {
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut b = [0u8; 1];
        assert!(matches!(s.read(&mut b), Ok(0) | Err(_)), "an idle connection got an answer");
    }
    assert!(started.elapsed() < Duration::from_secs(12), "idle connections held {:?}", started.elapsed());
    let http = svc.http.clone();
    svc.wait_for("healthy after the attack", Duration::from_secs(10), || {
        http_get(&http, "/healthz").is_some_and(|(c, _)| c == 200)
    });
}

#[test]
fn healthcheck_exits_0_when_healthy_and_1_otherwise() {
    let (tdb, s, _topics, svc) = service_with_data(&[]);
    let run = |addr: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cronsumer"))
            .arg("healthcheck")
            .current_dir(std::env::temp_dir())
            .envs(env_of(&s, &tdb.url))
            .env("HTTP_ADDR", addr)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, out) = run(&svc.http);
    assert_eq!(code, Some(0), "{out}");
    let port = svc.http.rsplit(':').next().unwrap();
    assert_eq!(run(&format!("0.0.0.0:{port}")).0, Some(0), "0.0.0.0 is asked on loopback");
    let (code, out) = run(&free_addr());
    assert_eq!(code, Some(1), "{out}");
    assert!(out.starts_with("unhealthy"), "{out}");
    assert_eq!(run("not-an-address").0, Some(1));
}
