//! `GET /v1/prices/latest?symbol=AAPL`: the symbol's price event, from a
//! fetch younger than `PRICE_CACHE_SECONDS` (a failed one too) or from a
//! fetch now (stored, its event enqueued for Kafka and the publisher woken),
//! with the symbol's moving average as the price-events module keeps it.
//! 400: a malformed symbol, or one the provider has no quote for; 502: the
//! provider did not answer with a price (the reason says why); 503: the
//! database is away.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::Status;
use crate::db::price_stats;
use crate::market::{self, Failure, FetchError, Provider};

#[derive(Deserialize)]
pub struct Params {
    symbol: Option<String>,
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn error(status: StatusCode, why: impl std::fmt::Display) -> Response {
    answer(status, json!({"error": why.to_string()}))
}

pub async fn latest(State(status): State<Arc<Status>>, Query(params): Query<Params>) -> Response {
    let Some(text) = params.symbol else {
        return error(StatusCode::BAD_REQUEST, "give the symbol: /v1/prices/latest?symbol=AAPL");
    };
    let symbol = match market::symbol(&text) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    // The provider call and the database block: off the async workers.
    match tokio::task::spawn_blocking(move || latest_now(&status, &symbol)).await {
        Ok(r) => r,
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("the request failed: {e}")),
    }
}

fn latest_now(status: &Status, symbol: &str) -> Response {
    let settings = &status.sources.settings;
    let mut conn = match status.sources.pool.get() {
        Ok(c) => c,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("database unavailable: {e}")),
    };
    let cached = match market::cached(settings, &mut conn, symbol, settings.price_cache) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e),
    };
    let from_cache = cached.is_some();
    let fetched = cached.unwrap_or_else(|| {
        let fetched = market::fetch(settings, &Provider::new(settings), &mut conn, symbol);
        if fetched.is_ok() {
            status.sources.jobs.wakers.wake(crate::outbox::JOB);
        }
        fetched
    });
    let event = match fetched {
        Ok(e) => e,
        Err(FetchError::Provider { kind: Failure::EmptyQuote, message }) => {
            return error(StatusCode::BAD_REQUEST, message)
        }
        Err(FetchError::Provider { message, .. }) => return error(StatusCode::BAD_GATEWAY, message),
        Err(e @ FetchError::BadSymbol(_)) => return error(StatusCode::BAD_REQUEST, e),
        Err(e @ FetchError::Db(_)) => return error(StatusCode::SERVICE_UNAVAILABLE, e),
    };
    let stats = price_stats::of(&mut conn, symbol).ok().flatten();
    let moving_average = json!({
        "window": settings.price_sma_window,
        "value": stats.as_ref().and_then(|s| s.moving_average),
        "events": stats.as_ref().map_or(0, |s| s.events),
    });
    let mut body = serde_json::to_value(&event).unwrap_or_default();
    body["cached"] = json!(from_cache);
    body["moving_average"] = moving_average;
    answer(StatusCode::OK, body)
}
