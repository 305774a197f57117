//! Predictions over HTTP: `GET /v1/predictions/latest?key=BTCUSDT`, the
//! newest prediction stored for the key (`PREDICT_KEY_FIELD` of its record;
//! 400: no key given; 404: none stored for it; 503: the database is away),
//! and the console's section (the model, its calls, the latest per key).
//! Read through the HTTP endpoint's own pool, as every route.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use super::Status;
use crate::db::checkout;
use crate::db::predictions::{self, Prediction};

#[derive(Deserialize)]
pub struct Params {
    key: Option<String>,
}

fn reply(status: StatusCode, body: Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// A prediction as the API shows it: its input and answer as JSON.
pub fn shown(p: &Prediction) -> Value {
    let parsed = |text: &str| serde_json::from_str(text).unwrap_or_else(|_| json!(text));
    json!({
        "key": p.key,
        "model": p.model,
        "model_version": p.model_version,
        "prediction": parsed(&p.prediction),
        "input": parsed(&p.input),
        "latency_ms": p.latency_ms,
        "created_at": p.created_at.and_utc().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "source": {"topic": p.source_topic, "partition": p.source_partition, "offset": p.source_offset},
    })
}

pub async fn latest(State(status): State<Arc<Status>>, Query(params): Query<Params>) -> Response {
    let Some(key) = params.key.filter(|k| !k.is_empty()) else {
        return reply(StatusCode::BAD_REQUEST, json!({"error": "give the key: /v1/predictions/latest?key=BTCUSDT"}));
    };
    let found = tokio::task::spawn_blocking(move || {
        let mut conn = checkout(&status.sources.http_pool, None)?;
        predictions::latest(&mut conn, &key).map(|p| (key, p))
    })
    .await;
    match found {
        Ok(Ok((_, Some(p)))) => reply(StatusCode::OK, shown(&p)),
        Ok(Ok((key, None))) => {
            reply(StatusCode::NOT_FOUND, json!({"error": format!("no prediction stored for key {key:?}")}))
        }
        Ok(Err(e)) => reply(StatusCode::SERVICE_UNAVAILABLE, json!({"error": format!("the database is away: {e}")})),
        Err(_) => reply(StatusCode::INTERNAL_SERVER_ERROR, json!({"error": "the lookup failed"})),
    }
}

/// Keys shown in the console's section.
const KEYS_SHOWN: usize = 20;

/// The console's section: whether the module is on, the model and its
/// calls, and the newest prediction of each key.
pub fn console_section(out: &mut String, s: &Status) {
    use super::html::esc;
    use std::fmt::Write as _;
    out.push_str("<section id=predictions><h2>Predictions</h2>");
    let settings = &s.sources.settings;
    let Some(url) = &settings.predict_url else {
        out.push_str("<p class=muted>Off: PREDICT_URL is not set.</p></section>");
        return;
    };
    let m = crate::common::metrics::get();
    let calls: Vec<String> = ["200", "422", "400", "413", "401", "503", "timeout", "connection"]
        .iter()
        .map(|status| (status, m.model_calls.with_label_values(&[status]).get()))
        .filter(|(_, n)| *n > 0)
        .map(|(status, n)| format!("{status}: {n}"))
        .collect();
    let latency = m.model_latency.get_sample_sum() / (m.model_latency.get_sample_count().max(1) as f64);
    let _ = write!(
        out,
        "<p>Model <b>{}</b> at <code>{}</code> ({:?}) · calls {} · mean latency {:.0} ms · refused records {} · breaker {}</p>",
        esc(&settings.predict_model),
        esc(&crate::config::redact::url(url)),
        settings.predict_protocol,
        if calls.is_empty() { "none yet".to_string() } else { esc(&calls.join(", ")) },
        latency * 1000.0,
        m.model_refused_records.get(),
        if m.model_breaker_open.get() == 1 { "<b class=warn>open</b>" } else { "closed" },
    );
    let recent = super::html::read(s, |c| Ok((predictions::count(c)?, predictions::recent(c, None, 500)?)));
    match recent {
        Err(e) => {
            let _ = write!(out, "<p class=warn>database unavailable: {}</p>", esc(&e));
        }
        Ok((total, rows)) => {
            let _ = write!(out, "<p>{total} predictions stored.</p>");
            let mut seen = std::collections::BTreeSet::new();
            let latest: Vec<&Prediction> =
                rows.iter().filter(|p| seen.insert(p.key.clone())).take(KEYS_SHOWN).collect();
            if !latest.is_empty() {
                out.push_str("<table><tr><th>Key<th>Prediction<th>At<th>Latency<th>Position</tr>");
                for p in latest {
                    let _ = write!(
                        out,
                        "<tr><td>{}<td><code>{}</code><td>{}<td class=num>{} ms<td>{}/{}@{}</tr>",
                        esc(p.key.as_deref().unwrap_or("-")),
                        esc(&p.prediction),
                        p.created_at.format("%Y-%m-%d %H:%M:%S"),
                        p.latency_ms,
                        esc(&p.source_topic),
                        p.source_partition,
                        p.source_offset
                    );
                }
                out.push_str("</table>");
            }
        }
    }
    out.push_str("</section>");
}
