//! Predictions over HTTP: `GET /v1/predictions/latest?key=BTCUSDT`, the
//! newest prediction stored for the key (`PREDICT_KEY_FIELD` of its record;
//! 400: no key given; 404: none stored for it; 503: the database is away),
//! and the JSON of a prediction the console's section shows.
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
