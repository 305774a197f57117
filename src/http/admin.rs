//! The console's actions: replay a dead letter (or every one a search
//! matches), purge the replayed ones, retry a notification, run a job,
//! pause or resume a partition. They exist only when `HTTP_ADMIN_TOKEN` is set, and each is a POST
//! that carries the token, as `Authorization: Bearer ...` (scripts) or as
//! the cookie the console's unlock form sets. The cookie is `SameSite=Strict`
//! and a request another site started (by `Origin` or `Sec-Fetch-Site`) is
//! refused, so a cross-site form cannot act with it.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;

use super::dead_letter_search::DeadLetterQuery;
use super::html::url_encode;
use super::status::Status;
use crate::consume::replay::ReplayError;
use crate::db::{checkout, dead_letters, notifications, paused_partitions};
use crate::events::{ActionTaken, Event as _};
use crate::schedule::{RunOutcome, Trigger};

pub const COOKIE: &str = "cronsumer_admin";

/// Equal-length byte strings compared without an early exit.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A request another site started: its `Origin` names another host, or the
/// browser says so in `Sec-Fetch-Site`.
fn cross_site(headers: &HeaderMap) -> bool {
    let get = |h: header::HeaderName| headers.get(h).and_then(|v| v.to_str().ok());
    if matches!(get(header::HeaderName::from_static("sec-fetch-site")), Some("cross-site" | "same-site")) {
        return true;
    }
    match (get(header::ORIGIN), get(header::HOST)) {
        (Some("null"), _) => true,
        (Some(origin), Some(host)) => origin.split_once("://").map(|(_, h)| h) != Some(host),
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// Whether the request may act: a token is configured, it was presented,
/// and the request did not come from another site.
pub fn authorized(status: &Status, headers: &HeaderMap) -> Result<(), (StatusCode, &'static str)> {
    let Some(token) = &status.sources.settings.http_admin_token else {
        return Err((StatusCode::FORBIDDEN, "actions are disabled: HTTP_ADMIN_TOKEN is not set\n"));
    };
    if cross_site(headers) {
        return Err((StatusCode::FORBIDDEN, "refused: the request came from another site\n"));
    }
    let bearer =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let presented = bearer.or_else(|| cookie_value(headers, COOKIE));
    match presented {
        Some(p) if constant_time_eq(p.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err((StatusCode::FORBIDDEN, "refused: wrong admin token\n")),
        None => Err((StatusCode::UNAUTHORIZED, "refused: the admin token is required\n")),
    }
}

#[derive(serde::Deserialize)]
pub struct Unlock {
    token: String,
}

/// The unlock form: checks the token and keeps it in a strict cookie.
pub async fn unlock(State(status): State<Arc<Status>>, headers: HeaderMap, Form(form): Form<Unlock>) -> Response {
    let mut with_cookie = headers.clone();
    let value = format!("{COOKIE}={}", form.token);
    match header::HeaderValue::from_str(&value) {
        Ok(v) => {
            with_cookie.insert(header::COOKIE, v);
        }
        Err(_) => return (StatusCode::FORBIDDEN, "refused: wrong admin token\n").into_response(),
    }
    if let Err(refused) = authorized(&status, &with_cookie) {
        ActionTaken { action: "unlock", outcome: "refused", detail: refused.1.trim() }.emit();
        return refused.into_response();
    }
    let cookie = format!("{value}; HttpOnly; SameSite=Strict; Path=/");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

pub async fn lock() -> Response {
    let cookie = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

/// Runs `action` on the blocking pool once the request is authorized;
/// answers 303 back to the console, or the failure.
async fn act<F>(status: Arc<Status>, headers: HeaderMap, what: String, action: F) -> Response
where
    F: FnOnce(&Status) -> Result<String, (StatusCode, String)> + Send + 'static,
{
    if let Err(refused) = authorized(&status, &headers) {
        ActionTaken { action: &what, outcome: "refused", detail: refused.1.trim() }.emit();
        return refused.into_response();
    }
    let s = status.clone();
    match tokio::task::spawn_blocking(move || action(&s)).await {
        Ok(Ok(done)) => {
            ActionTaken { action: &what, outcome: "done", detail: &done }.emit();
            if headers.get(header::AUTHORIZATION).is_some() {
                (StatusCode::OK, format!("{done}\n")).into_response()
            } else {
                // The console says what was done.
                Redirect::to(&format!("/?done={}", url_encode(&done))).into_response()
            }
        }
        Ok(Err((code, e))) => {
            ActionTaken { action: &what, outcome: "failed", detail: &e }.emit();
            (code, format!("{e}\n")).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("action did not finish: {e}\n")).into_response(),
    }
}

fn db_failed(e: impl std::fmt::Display) -> (StatusCode, String) {
    (StatusCode::SERVICE_UNAVAILABLE, format!("database: {e}"))
}

pub async fn replay(State(status): State<Arc<Status>>, headers: HeaderMap, Path(id): Path<i64>) -> Response {
    act(status, headers, format!("replay dead letter {id}"), move |s| {
        let pool = &s.sources.http_pool;
        let found = checkout(pool, None).and_then(|mut c| dead_letters::find(&mut c, id)).map_err(db_failed)?;
        let Some(d) = found else {
            return Err((StatusCode::NOT_FOUND, format!("no dead letter with id {id}")));
        };
        if d.replayed_at.is_some() {
            return Err((StatusCode::CONFLICT, format!("dead letter {id} was replayed already")));
        }
        match crate::consume::replay::replay(&s.sources.settings, pool, &[d]) {
            Ok(_) => Ok(format!("dead letter {id} replayed")),
            Err(e @ ReplayError::Taken) => Err((StatusCode::CONFLICT, format!("dead letter {id}: {e}"))),
            Err(ReplayError::Db(e)) => Err(db_failed(e)),
            Err(e) => Err((StatusCode::BAD_GATEWAY, format!("replay failed: {e}"))),
        }
    })
    .await
}

pub async fn retry(State(status): State<Arc<Status>>, headers: HeaderMap, Path(id): Path<i64>) -> Response {
    act(status, headers, format!("retry notification {id}"), move |s| {
        let mut conn = checkout(&s.sources.http_pool, None).map_err(db_failed)?;
        // Only a failed one: a row being sent would be sent twice.
        match notifications::retry_now(&mut conn, id, true).map_err(db_failed)? {
            notifications::Retried::Done => {}
            notifications::Retried::BeingSent => {
                return Err((StatusCode::CONFLICT, format!("notification {id} is being sent now")));
            }
            notifications::Retried::Missing => {
                return Err((StatusCode::CONFLICT, format!("no failed notification with id {id}")));
            }
        }
        Ok(format!("notification {id} is pending again"))
    })
    .await
}

pub async fn run_job(State(status): State<Arc<Status>>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    act(status, headers, format!("run job {name}"), move |s| {
        let Some(runner) = s.sources.runners.iter().find(|r| r.name() == name) else {
            return Err((StatusCode::NOT_FOUND, format!("no job named {name:?}")));
        };
        match runner.run(Trigger::Manual) {
            RunOutcome::Ok(r) => Ok(format!("job {name} ok: {}", r.details)),
            RunOutcome::Failed(e) => Err((StatusCode::INTERNAL_SERVER_ERROR, format!("job {name} failed: {e}"))),
            RunOutcome::SkippedOverlap => Err((StatusCode::CONFLICT, format!("job {name} is running already"))),
            RunOutcome::SkippedLease => Err((StatusCode::CONFLICT, format!("job {name}: another copy holds it"))),
        }
    })
    .await
}

/// Dead letters one bulk replay produces at most; past it, it says how many
/// still match (another replay takes them).
pub const REPLAY_AT_ONCE: i64 = 1_000;

#[derive(serde::Deserialize)]
pub struct Confirm {
    confirm: Option<String>,
}

/// Replays every dead letter the search matches that was not replayed yet
/// (up to [`REPLAY_AT_ONCE`]); each is claimed first, so none is produced twice.
pub async fn replay_matching(
    State(status): State<Arc<Status>>,
    headers: HeaderMap,
    Query(q): Query<DeadLetterQuery>,
    Form(confirm): Form<Confirm>,
) -> Response {
    if confirm.confirm.as_deref() != Some("yes") {
        return (StatusCode::BAD_REQUEST, "confirm it: send confirm=yes with the search to replay\n").into_response();
    }
    let search = match q.search() {
        Ok(s) => s,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    act(status, headers, "replay matching dead letters".into(), move |s| {
        let pool = &s.sources.http_pool;
        let targets = checkout(pool, None)
            .and_then(|mut c| dead_letters::unreplayed_matching(&mut c, &search, REPLAY_AT_ONCE))
            .map_err(db_failed)?;
        let replayed = match crate::consume::replay::replay(&s.sources.settings, pool, &targets) {
            Ok(n) => n,
            Err(ReplayError::Taken) => 0,
            Err(ReplayError::Db(e)) => return Err(db_failed(e)),
            Err(e) => return Err((StatusCode::BAD_GATEWAY, format!("replay failed: {e}"))),
        };
        let still = checkout(pool, None)
            .and_then(|mut c| dead_letters::count_matching(&mut c, &dead_letters::Search { replayed: Some(false), ..search }))
            .map_err(db_failed)?;
        let skipped = targets.len() as u64 - replayed;
        Ok(format!(
            "replayed {replayed} dead letter(s); {skipped} were being replayed by another request; {still} not replayed still match"
        ))
    })
    .await
}

/// Deletes every dead letter replayed already.
pub async fn purge_replayed(State(status): State<Arc<Status>>, headers: HeaderMap) -> Response {
    act(status, headers, "purge replayed dead letters".into(), move |s| {
        let mut conn = checkout(&s.sources.http_pool, None).map_err(db_failed)?;
        let n = dead_letters::purge_replayed(&mut conn).map_err(db_failed)?;
        Ok(format!("purged {n} replayed dead letter(s)"))
    })
    .await
}

/// Pauses (`pause`) or resumes a partition for every copy, until resumed
/// (kept in `paused_partitions`).
pub async fn pause(
    State(status): State<Arc<Status>>,
    headers: HeaderMap,
    Path((topic, partition, verb)): Path<(String, i32, String)>,
) -> Response {
    let pause = match verb.as_str() {
        "pause" => true,
        "resume" => false,
        _ => return (StatusCode::NOT_FOUND, "not found: pause or resume\n").into_response(),
    };
    act(status, headers, format!("{verb} {topic}/{partition}"), move |s| {
        let mut conn = checkout(&s.sources.http_pool, None).map_err(db_failed)?;
        let changed = if pause {
            paused_partitions::pause(&mut conn, &topic, partition)
        } else {
            paused_partitions::resume(&mut conn, &topic, partition)
        }
        .map_err(db_failed)?;
        // This copy's consumer sees it at its next step, the others within seconds.
        s.sources.operator_pauses.load(&mut conn).map_err(db_failed)?;
        Ok(match (pause, changed) {
            (true, true) => format!("{topic}/{partition} paused"),
            (true, false) => format!("{topic}/{partition} was paused already"),
            (false, true) => format!("{topic}/{partition} resumed"),
            (false, false) => format!("{topic}/{partition} was not paused"),
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!constant_time_eq(b"0123456789abcdef", b"0123456789abcdeg"));
        assert!(!constant_time_eq(b"0123456789abcdef", b"0123456789abcde"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn cross_site_requests_are_recognized() {
        assert!(!cross_site(&headers(&[("host", "127.0.0.1:8080")])));
        assert!(!cross_site(&headers(&[("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080")])));
        assert!(cross_site(&headers(&[("host", "127.0.0.1:8080"), ("origin", "https://evil.example")])));
        assert!(cross_site(&headers(&[("host", "127.0.0.1:8080"), ("origin", "null")])));
        assert!(cross_site(&headers(&[("host", "127.0.0.1:8080"), ("sec-fetch-site", "cross-site")])));
        assert!(!cross_site(&headers(&[("host", "h"), ("sec-fetch-site", "same-origin")])));
    }

    #[test]
    fn cookies_are_read_by_name() {
        let h = headers(&[("cookie", "a=1; cronsumer_admin=tok; b=2")]);
        assert_eq!(cookie_value(&h, COOKIE), Some("tok"));
        assert_eq!(cookie_value(&h, "c"), None);
    }
}
