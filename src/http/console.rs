//! The web console at `/`: one server-rendered page, no JavaScript and
//! nothing fetched from elsewhere (it works offline), refreshing itself.
//! Consumer, dead letters, notifications, jobs and restarts; the actions'
//! buttons appear once the admin token unlocked the console.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Html;

use super::admin;
use super::html::{esc, read};
use super::status::{Status, RATE_EVERY};
use crate::db::{dead_letters, notifications};

/// Dead letters listed, newest first.
const DEAD_LETTERS_SHOWN: i64 = 100;
const FAILED_NOTIFICATIONS_SHOWN: i64 = 20;
const PREVIEW_CHARS: usize = 120;
const REFRESH_SECONDS: u32 = 10;

#[derive(serde::Deserialize, Default)]
pub struct Filter {
    topic: Option<String>,
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Admin {
    Disabled,
    Locked,
    Unlocked,
}

fn preview(bytes: Option<&[u8]>) -> String {
    let text = String::from_utf8_lossy(bytes.unwrap_or_default());
    let mut p: String = text.chars().take(PREVIEW_CHARS).collect();
    if text.chars().count() > PREVIEW_CHARS {
        p.push('…');
    }
    p
}

fn ago(d: Option<std::time::Duration>) -> String {
    d.map_or("never".into(), |d| format!("{:.1} s ago", d.as_secs_f64()))
}

/// The records/s samples as a small SVG line chart.
fn chart(rates: &[f64]) -> String {
    let (w, h) = (360.0, 60.0);
    if rates.len() < 2 {
        return format!("<p class=muted>records/s: collecting (one sample every {} s)</p>", RATE_EVERY.as_secs());
    }
    let max = rates.iter().cloned().fold(1.0_f64, f64::max);
    let step = w / (rates.len() - 1) as f64;
    let points: Vec<String> = rates
        .iter()
        .enumerate()
        .map(|(i, r)| format!("{:.1},{:.1}", i as f64 * step, h - r / max * (h - 4.0)))
        .collect();
    format!(
        "<figure><svg role=img aria-label=\"records per second\" width={w} height={h} viewBox=\"0 0 {w} {h}\">\
         <polyline fill=none stroke=\"#2563eb\" stroke-width=2 points=\"{}\"/></svg>\
         <figcaption>records/s, last {} min: now {:.0}, peak {:.0}</figcaption></figure>",
        points.join(" "),
        rates.len() as u64 * RATE_EVERY.as_secs() / 60,
        rates.last().copied().unwrap_or_default(),
        max
    )
}

fn consumer_section(out: &mut String, s: &Status) {
    let (c, rates) = (s.consumer(), s.rates());
    out.push_str("<section id=consumer><h2>Consumer</h2>");
    let Some(c) = c else {
        out.push_str("<p>The consumer is off (KAFKA_ENABLED=false).</p></section>");
        return;
    };
    let state = if c.alive { "running" } else { "stopped" };
    let _ = write!(
        out,
        "<p>Thread <b class={state}>{state}</b>; last poll {}; last commit in the database {}, in Kafka {}.</p>",
        ago(c.since_poll),
        ago(c.since_stored),
        ago(c.since_commit)
    );
    match (&c.in_hand, c.retrying_for) {
        (Some(h), for_) => {
            let _ = write!(
                out,
                "<p class=warn>Batch in hand: {} record(s) from {}, retrying for {:.0} s (attempt {}): {}</p>",
                h.records,
                esc(&h.first),
                for_.unwrap_or_default().as_secs_f64(),
                h.attempts,
                esc(&h.reason)
            );
        }
        (None, _) => out.push_str("<p>No batch waiting for a retry.</p>"),
    }
    out.push_str(&chart(&rates));
    let _ = write!(
        out,
        "<table><caption>Assigned partitions: {}</caption><tr><th>Topic<th>Partition<th>Lag</tr>",
        c.assignment.len()
    );
    for tp in &c.assignment {
        let lag = s.lag_of(tp).map_or("…".to_string(), |l| l.to_string());
        let _ = write!(out, "<tr><td>{}<td>{}<td class=num>{lag}</tr>", esc(&tp.topic), tp.partition);
    }
    out.push_str("</table>");
    let _ = write!(out, "<h3 id=restarts>Restarts: {}</h3><ul>", c.restarts);
    for r in &c.recent_restarts {
        let _ = write!(out, "<li>{} — {}: {}</li>", r.at.format("%Y-%m-%d %H:%M:%S UTC"), r.cause, esc(&r.detail));
    }
    out.push_str("</ul></section>");
}

fn button(admin: Admin, action: &str, label: &str) -> String {
    if admin != Admin::Unlocked {
        return String::new();
    }
    format!("<form method=post action=\"{}\"><button>{}</button></form>", esc(action), esc(label))
}

fn unavailable(out: &mut String, error: &str) {
    let _ = write!(out, "<p class=warn>database unavailable: {}</p>", esc(error));
}

fn dead_letters_section(out: &mut String, s: &Status, topic: Option<&str>, admin: Admin) {
    out.push_str("<section id=dead-letters><h2>Dead letters</h2>");
    let _ = write!(
        out,
        "<form method=get action=\"/\"><label>Topic <input name=topic value=\"{}\"></label> <button>Filter</button></form>",
        esc(topic.unwrap_or_default())
    );
    match read(s, |c| dead_letters::previews(c, topic, DEAD_LETTERS_SHOWN)) {
        Err(e) => unavailable(out, &e),
        Ok(rows) if rows.is_empty() => out.push_str("<p>None.</p>"),
        Ok(rows) => {
            out.push_str("<table><tr><th>ID<th>Position<th>Failed at<th>Reason<th>Payload<th></tr>");
            for d in rows {
                let action = match d.replayed_at {
                    Some(t) => format!("replayed {}", t.format("%H:%M:%S")),
                    None => button(admin, &format!("/actions/dead-letters/{}/replay", d.id), "Replay"),
                };
                let _ = write!(
                    out,
                    "<tr><td>{}<td>{}/{}@{}<td>{}<td>{}<td><code>{}</code><td>{action}</tr>",
                    d.id,
                    esc(&d.topic),
                    d.partition,
                    d.offset,
                    d.failed_at.format("%Y-%m-%d %H:%M:%S"),
                    esc(&d.error),
                    esc(&preview(d.payload.as_deref()))
                );
            }
            out.push_str("</table>");
        }
    }
    out.push_str("</section>");
}

fn notifications_section(out: &mut String, s: &Status, admin: Admin) {
    out.push_str("<section id=notifications><h2>Notifications</h2>");
    let counts_and_failed = read(s, |c| {
        let counts = notifications::count_by_status(c)?;
        Ok((counts, notifications::list(c, Some(notifications::FAILED), FAILED_NOTIFICATIONS_SHOWN)?))
    });
    match counts_and_failed {
        Err(e) => unavailable(out, &e),
        Ok((counts, failed)) => {
            out.push_str("<table><tr><th>Status<th>Count</tr>");
            for (status, n) in counts {
                let _ = write!(out, "<tr><td>{}<td class=num>{n}</tr>", esc(&status));
            }
            out.push_str("</table>");
            if !failed.is_empty() {
                out.push_str("<table><caption>Failed</caption><tr><th>ID<th>Event<th>Attempts<th>Last error<th></tr>");
                for n in failed {
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
        }
    }
    out.push_str("</section>");
}

/// A job's last run as shown: this copy's own, else the ledger's (a run
/// before a restart, or by another copy).
struct Shown {
    started: String,
    outcome: String,
    detail: String,
    duration: String,
}

fn last_shown(s: &Status, r: &crate::schedule::JobRunner) -> Option<Shown> {
    if let Some(l) = r.last_run() {
        return Some(Shown {
            started: l.started.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            outcome: l.outcome.to_string(),
            detail: l.detail,
            duration: format!("{} ms", l.duration.as_millis()),
        });
    }
    let run = read(s, |c| crate::db::job_runs::last(c, r.name())).ok()??;
    Some(Shown {
        started: format!("{} UTC", run.started_at.format("%Y-%m-%d %H:%M:%S")),
        duration: run.finished_at.map_or(String::new(), |f| format!("{} ms", (f - run.started_at).num_milliseconds())),
        outcome: run.outcome,
        detail: run.error.or(run.details).unwrap_or_default(),
    })
}

fn jobs_section(out: &mut String, s: &Status, admin: Admin) {
    out.push_str(
        "<section id=jobs><h2>Jobs</h2><table><tr><th>Job<th>Schedule<th>Last run<th>Outcome<th>Duration<th>Next run<th></tr>",
    );
    for r in &s.sources.runners {
        let last = last_shown(s, r);
        let _ = write!(
            out,
            "<tr><td>{}<td><code>{}</code><td>{}<td>{}<td>{}<td>{}<td>{}</tr>",
            esc(r.name()),
            esc(r.schedule().as_str()),
            last.as_ref().map_or("not yet".into(), |l| l.started.clone()),
            last.as_ref().map_or(String::new(), |l| {
                let detail = if l.detail.is_empty() { String::new() } else { format!(": {}", esc(&l.detail)) };
                format!("<span class=\"{0}\">{0}</span>{detail}", esc(&l.outcome))
            }),
            last.as_ref().map_or(String::new(), |l| l.duration.clone()),
            r.next_run().map_or("—".into(), |t| t.format("%H:%M:%S UTC").to_string()),
            button(admin, &format!("/actions/jobs/{}/run", r.name()), "Run now")
        );
    }
    for off in &s.sources.jobs_off {
        let _ = write!(
            out,
            "<tr class=off><td>{}<td><code>{}</code><td colspan=5><span class=muted>off: {}</span></tr>",
            esc(off.name),
            esc(&off.schedule),
            esc(&off.why)
        );
    }
    out.push_str("</table></section>");
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
form{display:inline}figure{margin:.5em 0}figcaption{color:#444}";

/// `GET /`.
pub async fn page(State(status): State<Arc<Status>>, headers: HeaderMap, Query(filter): Query<Filter>) -> Html<String> {
    let admin = match &status.sources.settings.http_admin_token {
        None => Admin::Disabled,
        Some(_) if admin::authorized(&status, &headers).is_ok() => Admin::Unlocked,
        Some(_) => Admin::Locked,
    };
    let topic = filter.topic.filter(|t| !t.trim().is_empty());
    let rendered = tokio::task::spawn_blocking(move || render(&status, topic.as_deref(), admin)).await;
    Html(rendered.unwrap_or_else(|e| format!("<p>console failed: {}</p>", esc(&e.to_string()))))
}

fn render(s: &Status, topic: Option<&str>, admin: Admin) -> String {
    let live = s.liveness();
    let ready = s.readiness();
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
    let health =
        if live.is_empty() { "<b class=ok>healthy</b>".to_string() } else { "<b class=warn>unhealthy</b>".into() };
    let readiness =
        if ready.is_empty() { "<b class=ok>ready</b>".to_string() } else { "<b class=warn>not ready</b>".into() };
    let _ = write!(out, "<p id=health>{health} · {readiness}</p><ul>");
    for p in live.iter().chain(&ready) {
        let _ = write!(out, "<li class=warn>{}</li>", esc(p));
    }
    out.push_str("</ul>");
    out.push_str(admin_bar(admin));
    consumer_section(&mut out, s);
    dead_letters_section(&mut out, s, topic, admin);
    notifications_section(&mut out, s, admin);
    jobs_section(&mut out, s, admin);
    super::predictions::console_section(&mut out, s);
    let refreshes = if admin == Admin::Locked {
        "<a href=\"/\">Refresh</a>".to_string()
    } else {
        format!("Refreshes every {REFRESH_SECONDS} s.")
    };
    let _ = write!(out, "<p class=muted>{refreshes} <a href=\"/metrics\">/metrics</a></p></body></html>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(esc(r#"<script>"a"&'b'</script>"#), "&lt;script&gt;&quot;a&quot;&amp;&#39;b&#39;&lt;/script&gt;");
    }

    #[test]
    fn previews_are_cut() {
        let long = "x".repeat(500);
        assert_eq!(preview(Some(long.as_bytes())).chars().count(), PREVIEW_CHARS + 1);
        assert_eq!(preview(Some(b"{\"a\":1}")), "{\"a\":1}");
        assert_eq!(preview(None), "");
    }

    #[test]
    fn the_chart_scales_to_the_peak() {
        let svg = chart(&[0.0, 50.0, 100.0]);
        assert!(svg.contains("points=\"0.0,60.0 180.0,32.0 360.0,4.0\""), "{svg}");
        assert!(svg.contains("now 100, peak 100"), "{svg}");
        assert!(chart(&[1.0]).contains("collecting"));
    }
}
