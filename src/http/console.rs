//! The web console at `/`: one server-rendered page, no JavaScript and
//! nothing fetched from elsewhere (it works offline), refreshing itself.
//! Each section renders its view ([`super::views`], also served as JSON
//! under `/api/`); `/console/{section}` shows one alone. The actions'
//! buttons appear once the admin token unlocked the console.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};

use super::admin;
use super::charts::{self, Series};
use super::dead_letter_search::{self, DeadLetterQuery};
use super::html::{button, esc, unavailable, url_encode, Admin};
use super::status::Status;
use super::views;

const REFRESH_SECONDS: u32 = 10;
const SECTIONS: [&str; 5] = ["consumer", "dead-letters", "notifications", "jobs", "predictions"];

#[derive(serde::Deserialize, Default)]
pub struct PageQuery {
    #[serde(flatten)]
    dead_letters: DeadLetterQuery,
    /// What the last action did (the console's own redirect says).
    done: Option<String>,
}

fn ago(s: Option<f64>) -> String {
    s.map_or("never".into(), |s| format!("{s:.1} s ago"))
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("—".into(), |v| v.to_string())
}

/// The history's values of `f` as one series.
fn series(h: &views::History, name: &str, f: impl Fn(&super::history::Sample) -> Option<f64>) -> Series {
    Series { name: name.to_string(), points: h.samples.iter().map(f).collect() }
}

/// One series per partition seen in the history, of `f` of its samples.
fn per_partition(h: &views::History, f: impl Fn(&super::history::PartitionSample) -> Option<f64>) -> Vec<Series> {
    let mut names: Vec<(String, i32)> =
        h.samples.iter().flat_map(|s| s.partitions.iter().map(|p| (p.topic.clone(), p.partition))).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|(topic, partition)| Series {
            name: format!("{topic}/{partition}"),
            points: h
                .samples
                .iter()
                .map(|s| s.partitions.iter().find(|p| p.topic == topic && p.partition == partition).and_then(&f))
                .collect(),
        })
        .collect()
}

fn span(h: &views::History) -> u64 {
    h.samples.len() as u64 * h.every_s
}

fn consumer_section(out: &mut String, s: &Status, h: &views::History, admin: Admin) {
    let c = views::consumer(s);
    out.push_str("<section id=consumer><h2>Consumer</h2>");
    if !c.on {
        out.push_str("<p>The consumer is off (KAFKA_ENABLED=false).</p></section>");
        return;
    }
    let state = if c.running { "running" } else { "stopped" };
    let _ = write!(
        out,
        "<p>Thread <b class={state}>{state}</b> with {} lane(s); last poll {}; last commit in the database {}, in Kafka {}.</p>",
        c.lanes,
        ago(c.last_poll_s_ago),
        ago(c.last_commit_database_s_ago),
        ago(c.last_commit_kafka_s_ago)
    );
    for b in &c.in_hand {
        let _ = write!(
            out,
            "<p class=warn>Lane {} holds a batch: {} record(s) from {}, retrying for {:.0} s (attempt {}): {}</p>",
            b.lane,
            b.records,
            esc(&b.first),
            b.retrying_for_s,
            b.attempt,
            esc(&b.why)
        );
    }
    let span = span(h);
    out.push_str("<div class=charts>");
    out.push_str(&charts::line("Records", "per second", span, &[series(h, "handled", |s| Some(s.records_per_s))]));
    out.push_str(&charts::line("Lag", "records", span, &per_partition(h, |p| Some(p.lag as f64))));
    out.push_str(&charts::line("Behind", "seconds", span, &per_partition(h, |p| p.seconds_behind)));
    let lanes: Vec<Series> =
        (0..c.lanes).map(|l| series(h, &format!("lane {l}"), |s| s.lanes_busy.get(l).map(|b| b * 100.0))).collect();
    out.push_str(&charts::line("Lanes busy", "% of the time", span, &lanes));
    out.push_str("</div>");
    let _ = write!(
        out,
        "<table id=partitions><caption>Partitions: {}</caption><tr><th>Partition<th>Lane<th>State<th>In memory\
         <th>Lag<th>Behind<th>Handled (database)<th>Committed (Kafka)<th>Batch in hand<th></tr>",
        c.partitions.len()
    );
    for p in &c.partitions {
        let name = format!("{}/{}", p.topic, p.partition);
        let state = match (p.paused, &p.paused_by_operator_since) {
            (_, Some(since)) => format!("<b class=warn>paused by operator</b> since {}", esc(since)),
            (Some(why), None) => format!("paused ({why})"),
            (None, None) => "<span class=ok>fetching</span>".into(),
        };
        let in_hand = p.in_hand.as_ref().map_or(String::new(), |b| {
            format!("{} record(s), attempt {}, for {:.0} s: {}", b.records, b.attempt, b.retrying_for_s, esc(&b.why))
        });
        let path = format!("/actions/partitions/{}/{}", url_encode(&p.topic), p.partition);
        let action = if p.paused_by_operator_since.is_some() {
            button(admin, &format!("{path}/resume"), "Resume")
        } else {
            button(admin, &format!("{path}/pause"), "Pause")
        };
        let _ = write!(
            out,
            "<tr data-partition=\"{}\"><td>{}<td>{}<td>{state}<td class=num>{}<td class=num>{}<td class=num>{}<td class=num>{}<td class=num>{}<td>{in_hand}<td>{action}</tr>",
            esc(&name),
            esc(&name),
            opt(p.lane),
            p.in_memory,
            opt(p.lag),
            p.seconds_behind.map_or("—".into(), |s| format!("{s:.1} s")),
            opt(p.handled),
            opt(p.committed),
        );
    }
    out.push_str("</table>");
    let _ = write!(out, "<h3 id=restarts>Restarts: {}</h3><ul>", c.restarts);
    for r in &c.recent_restarts {
        let _ = write!(out, "<li>{} — {}: {}</li>", esc(&r.at), r.cause, esc(&r.detail));
    }
    out.push_str("</ul></section>");
}

fn notifications_section(out: &mut String, s: &Status, h: &views::History, admin: Admin) {
    let v = views::notifications(s);
    out.push_str("<section id=notifications><h2>Notifications</h2>");
    unavailable(out, &v.error);
    let span = span(h);
    out.push_str("<div class=charts>");
    let rates = [
        series(h, "sent", |s| Some(s.notifications_sent_per_min)),
        series(h, "failed", |s| Some(s.notifications_failed_per_min)),
    ];
    out.push_str(&charts::line("Deliveries", "per minute", span, &rates));
    let counts: Vec<Series> = crate::db::notifications::STATUSES
        .iter()
        .map(|st| series(h, st, |s| Some(s.notifications_by_status.get(*st).copied().unwrap_or(0) as f64)))
        .collect();
    out.push_str(&charts::line("Rows by status", "rows", span, &counts));
    out.push_str("</div><table id=notification-counts><tr><th>Status<th>Count</tr>");
    for (status, n) in &v.by_status {
        let _ = write!(out, "<tr><td>{}<td class=num>{n}</tr>", esc(status));
    }
    out.push_str("</table>");
    if !v.failed.is_empty() {
        out.push_str("<table><caption>Failed</caption><tr><th>ID<th>Event<th>Attempts<th>Last error<th></tr>");
        for n in &v.failed {
            let _ = write!(
                out,
                "<tr><td>{}<td>{}<td>{}<td>{}<td>{}</tr>",
                n.id,
                esc(&n.event),
                n.attempts,
                esc(n.last_error.as_deref().unwrap_or_default()),
                button(admin, &format!("/actions/notifications/{}/retry", n.id), "Retry")
            );
        }
        out.push_str("</table>");
    }
    out.push_str(
        "<table id=latest-deliveries><caption>Latest deliveries</caption><tr><th>ID<th>Event<th>Users<th>Sent at</tr>",
    );
    for n in &v.latest_sent {
        let sent = n.sent_at.as_deref().unwrap_or_default();
        let _ = write!(out, "<tr><td>{}<td>{}<td>{}<td>{}</tr>", n.id, esc(&n.event), esc(&n.users), esc(sent));
    }
    out.push_str("</table></section>");
}

fn jobs_section(out: &mut String, s: &Status, admin: Admin) {
    let v = views::jobs(s);
    out.push_str("<section id=jobs><h2>Jobs</h2>");
    unavailable(out, &v.error);
    out.push_str("<table><tr><th>Job<th>Schedule<th>Last runs<th>Last<th>Next run<th></tr>");
    for j in &v.jobs {
        if let Some(why) = &j.off {
            let _ = write!(
                out,
                "<tr class=off data-job=\"{0}\"><td>{0}<td><code>{1}</code><td colspan=4><span class=muted>off: {2}</span></tr>",
                esc(&j.name),
                esc(&j.schedule),
                esc(why)
            );
            continue;
        }
        let last = j.runs.last().map_or("not yet".into(), |r| {
            let detail = r.detail.as_deref().map_or(String::new(), |d| format!(": {}", esc(d)));
            let took = r.duration_ms.map_or(String::new(), |d| format!(" in {d} ms"));
            format!("<span class=\"{0}\">{0}</span>{took} at {1}{detail}", esc(&r.outcome), esc(&r.started_at))
        });
        let _ = write!(
            out,
            "<tr data-job=\"{0}\"><td>{0}<td><code>{1}</code><td>{2}<td>{last}<td>{3}<td>{4}</tr>",
            esc(&j.name),
            esc(&j.schedule),
            charts::runs(&j.runs),
            esc(&opt(j.next_run.as_deref())),
            button(admin, &format!("/actions/jobs/{}/run", url_encode(&j.name)), "Run now")
        );
    }
    out.push_str("</table></section>");
}

fn predictions_section(out: &mut String, s: &Status, h: &views::History) {
    let v = views::predictions(s);
    out.push_str("<section id=predictions><h2>Predictions</h2>");
    if !v.on {
        out.push_str("<p class=muted>Off: PREDICT_URL is not set.</p></section>");
        return;
    }
    unavailable(out, &v.error);
    let calls: Vec<String> = v.calls.iter().map(|(status, n)| format!("{status}: {n}")).collect();
    let _ = write!(
        out,
        "<p>Model <b>{}</b> at <code>{}</code> ({}) · calls {} · mean latency {} · refused records {} · breaker {} · {} predictions stored</p>",
        esc(&v.model),
        esc(v.url.as_deref().unwrap_or_default()),
        esc(&v.protocol),
        if calls.is_empty() { "none yet".to_string() } else { esc(&calls.join(", ")) },
        v.mean_latency_ms.map_or("—".into(), |l| format!("{l:.0} ms")),
        v.refused_records,
        if v.breaker_open { "<b class=warn>open</b>" } else { "closed" },
        v.stored,
    );
    let span = span(h);
    out.push_str("<div class=charts>");
    out.push_str(&charts::line("Model calls", "per minute", span, &[series(h, "calls", |s| s.model_calls_per_min)]));
    out.push_str(&charts::line("Model latency", "ms", span, &[series(h, "mean", |s| s.model_latency_ms)]));
    out.push_str("</div>");
    if !v.latest.is_empty() {
        out.push_str("<table><tr><th>Key<th>Prediction<th>At<th>Latency<th>Position</tr>");
        for p in &v.latest {
            let text = |k: &str| p[k].as_str().map(str::to_string).unwrap_or_else(|| p[k].to_string());
            let src = &p["source"];
            let _ = write!(
                out,
                "<tr><td>{}<td><code>{}</code><td>{}<td class=num>{} ms<td>{}/{}@{}</tr>",
                esc(p["key"].as_str().unwrap_or("-")),
                esc(&p["prediction"].to_string()),
                esc(&text("created_at")),
                p["latency_ms"],
                esc(src["topic"].as_str().unwrap_or_default()),
                src["partition"],
                src["offset"]
            );
        }
        out.push_str("</table>");
    }
    out.push_str("</section>");
}

fn admin_bar(admin: Admin) -> &'static str {
    match admin {
        Admin::Disabled => "<p class=muted>Read-only: set HTTP_ADMIN_TOKEN to enable actions.</p>",
        Admin::Locked => {
            "<form method=post action=\"/unlock\" class=unlock><label>Admin token \
             <input type=password name=token autocomplete=current-password></label> <button>Unlock actions</button></form>"
        }
        Admin::Unlocked => "<form method=post action=\"/lock\"><button>Lock actions</button></form>",
    }
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:1.5em;color:#111}h1{font-size:1.4em}\
h2{font-size:1.15em;border-bottom:1px solid #ddd;margin-top:1.5em}table{border-collapse:collapse;margin:.5em 0}\
td,th{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}.num{text-align:right}\
code{font-size:12px}.warn,.failed,.stopped{color:#b91c1c}.ok,.running{color:#15803d}.muted{color:#666}\
form{display:inline}.charts{display:flex;flex-wrap:wrap;gap:1em}figure{margin:.5em 0}\
figcaption{color:#444;font-size:12px;max-width:480px}nav a{margin-right:1em}.done{background:#ecfdf5;padding:4px}";

fn admin_of(status: &Status, headers: &HeaderMap) -> Admin {
    match &status.sources.settings.http_admin_token {
        None => Admin::Disabled,
        Some(_) if admin::authorized(status, headers).is_ok() => Admin::Unlocked,
        Some(_) => Admin::Locked,
    }
}

/// `GET /`: every section.
pub async fn page(State(status): State<Arc<Status>>, headers: HeaderMap, Query(q): Query<PageQuery>) -> Response {
    let admin = admin_of(&status, &headers);
    render_blocking(move || render(&status, None, &q, admin)).await
}

/// `GET /console/{section}`: one section alone.
pub async fn section(
    State(status): State<Arc<Status>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    let Some(section) = SECTIONS.iter().find(|s| **s == name) else {
        let known = SECTIONS.join(", ");
        return (StatusCode::NOT_FOUND, format!("no section {name:?}: try {known}\n")).into_response();
    };
    let admin = admin_of(&status, &headers);
    render_blocking(move || render(&status, Some(section), &q, admin)).await
}

async fn render_blocking(f: impl FnOnce() -> String + Send + 'static) -> Response {
    let rendered = tokio::task::spawn_blocking(f).await;
    Html(rendered.unwrap_or_else(|e| format!("<p>console failed: {}</p>", esc(&e.to_string())))).into_response()
}

fn render(s: &Status, only: Option<&str>, q: &PageQuery, admin: Admin) -> String {
    // No refresh while the unlock form waits for the token (it would wipe it).
    let refresh = if admin == Admin::Locked {
        String::new()
    } else {
        format!("<meta http-equiv=refresh content={REFRESH_SECONDS}>")
    };
    let mut out = format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8>{refresh}\
         <title>cronsumer</title><style>{STYLE}</style></head><body><h1>cronsumer</h1>"
    );
    let o = views::overview(s);
    let health = if o.healthy { "<b class=ok>healthy</b>" } else { "<b class=warn>unhealthy</b>" };
    let readiness = if o.ready { "<b class=ok>ready</b>" } else { "<b class=warn>not ready</b>" };
    let _ = write!(out, "<p id=health>{health} · {readiness}</p><ul>");
    for p in o.problems.iter().chain(&o.not_ready) {
        let _ = write!(out, "<li class=warn>{}</li>", esc(p));
    }
    for p in &o.paused_by_operator {
        let _ = write!(
            out,
            "<li class=warn>{}/{} paused by an operator since {}</li>",
            esc(&p.topic),
            p.partition,
            esc(&p.since)
        );
    }
    out.push_str("</ul>");
    if let Some(done) = &q.done {
        let _ = write!(out, "<p class=done id=done>{}</p>", esc(done));
    }
    out.push_str(admin_bar(admin));
    out.push_str("<nav>");
    for name in SECTIONS {
        let _ = write!(out, "<a href=\"/console/{name}\">{name}</a>");
    }
    out.push_str("<a href=\"/metrics\">/metrics</a></nav>");
    let h = views::history(s);
    let shows = |name: &str| only.is_none_or(|o| o == name);
    if shows("consumer") {
        consumer_section(&mut out, s, &h, admin);
    }
    if shows("dead-letters") {
        dead_letter_search::section(&mut out, s, &q.dead_letters, admin);
    }
    if shows("notifications") {
        notifications_section(&mut out, s, &h, admin);
    }
    if shows("jobs") {
        jobs_section(&mut out, s, admin);
    }
    if shows("predictions") {
        predictions_section(&mut out, s, &h);
    }
    let refreshes = if admin == Admin::Locked {
        "<a href=\"/\">Refresh</a>".to_string()
    } else {
        format!("Refreshes every {REFRESH_SECONDS} s.")
    };
    let _ = write!(out, "<p class=muted>{refreshes} JSON: <a href=\"/api/consumer\">/api/</a></p></body></html>");
    out
}
