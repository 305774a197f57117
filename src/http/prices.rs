//! `GET /v1/prices/latest?symbol=AAPL`: the symbol's price event, from a
//! fetch younger than `PRICE_CACHE_SECONDS` (a failed one too) or from a
//! fetch now (stored, its event enqueued for Kafka and the publisher woken),
//! with the symbol's moving average as the price-events module keeps it.
//! 400: a malformed symbol, or one the provider has no quote for; 502: the
//! provider did not answer with a price (the reason says why); 429 with
//! `Retry-After`: [`PROVIDER_CALLS`] other symbols are being fetched; 503:
//! the database is away.
//!
//! Whatever clients do, the consumer keeps its connections: no database
//! connection is held during a provider call, the database work goes
//! through the HTTP endpoint's own small pool, requests for a symbol being
//! fetched wait for that one fetch, and provider calls at once are bounded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{OnceCell, Semaphore};

use super::Status;
use crate::common::locks::lock;
use crate::db::{checkout, price_stats};
use crate::market::{self, Failure, FetchError, Provider};

/// Provider calls under way at once, each for another symbol.
pub const PROVIDER_CALLS: usize = 4;

#[derive(Deserialize)]
pub struct Params {
    symbol: Option<String>,
}

/// An answer, shared by the requests that waited for one fetch.
#[derive(Clone, Debug)]
struct Reply {
    status: StatusCode,
    body: serde_json::Value,
    retry_after: Option<u64>,
}

impl Reply {
    fn error(status: StatusCode, why: impl std::fmt::Display) -> Reply {
        Reply { status, body: json!({"error": why.to_string()}), retry_after: None }
    }

    fn into_response(self) -> Response {
        let mut r = (self.status, [(header::CONTENT_TYPE, "application/json")], self.body.to_string()).into_response();
        if let Some(secs) = self.retry_after {
            r.headers_mut().insert(header::RETRY_AFTER, secs.into());
        }
        r
    }
}

/// The fetches under way, by symbol, and the provider calls' bound.
pub struct Fetches {
    under_way: Mutex<HashMap<String, Arc<OnceCell<Reply>>>>,
    calls: Semaphore,
}

impl Default for Fetches {
    fn default() -> Self {
        Fetches { under_way: Mutex::default(), calls: Semaphore::new(PROVIDER_CALLS) }
    }
}

pub async fn latest(State(status): State<Arc<Status>>, Query(params): Query<Params>) -> Response {
    let Some(text) = params.symbol else {
        return Reply::error(StatusCode::BAD_REQUEST, "give the symbol: /v1/prices/latest?symbol=AAPL").into_response();
    };
    let symbol = match market::symbol(&text) {
        Ok(s) => s,
        Err(e) => return Reply::error(StatusCode::BAD_REQUEST, e).into_response(),
    };
    let fetches = &status.prices;
    let flight = lock(&fetches.under_way).entry(symbol.clone()).or_default().clone();
    let reply = flight
        .get_or_init(|| {
            let (status, symbol) = (status.clone(), symbol.clone());
            // The cache, the provider and the database block: off the async workers.
            async move {
                tokio::task::spawn_blocking(move || answer(&status, &symbol)).await.unwrap_or_else(|e| {
                    Reply::error(StatusCode::INTERNAL_SERVER_ERROR, format!("the request failed: {e}"))
                })
            }
        })
        .await
        .clone();
    // The fetch is over: later requests read the cache (or fetch anew).
    let mut under_way = lock(&fetches.under_way);
    if under_way.get(&symbol).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
        under_way.remove(&symbol);
    }
    reply.into_response()
}

/// The symbol's event from the cache or from the provider now, with its
/// moving average. Connections come from the endpoint's own pool and are
/// held for one statement or transaction at a time.
fn answer(status: &Status, symbol: &str) -> Reply {
    let (settings, pool) = (&status.sources.settings, &status.sources.http_pool);
    let cached = checkout(pool, None).and_then(|mut c| market::cached(settings, &mut c, symbol, settings.price_cache));
    let cached = match cached {
        Ok(c) => c,
        Err(e) => return Reply::error(StatusCode::SERVICE_UNAVAILABLE, e),
    };
    let from_cache = cached.is_some();
    let fetched = match cached {
        Some(c) => c,
        None => {
            let Ok(_call) = status.prices.calls.try_acquire() else {
                let secs = settings.price_provider_timeout.as_secs().max(1);
                let why = format!("{PROVIDER_CALLS} other symbols are being fetched now; ask again in {secs} s");
                return Reply { retry_after: Some(secs), ..Reply::error(StatusCode::TOO_MANY_REQUESTS, why) };
            };
            let fetched = market::fetch(settings, &Provider::new(settings), pool, symbol);
            if fetched.is_ok() {
                status.sources.jobs.wakers.wake(crate::market::outbox::JOB);
            }
            fetched
        }
    };
    let event = match fetched {
        Ok(e) => e,
        Err(FetchError::Provider { kind: Failure::EmptyQuote, message }) => {
            return Reply::error(StatusCode::BAD_REQUEST, message)
        }
        Err(FetchError::Provider { message, .. }) => return Reply::error(StatusCode::BAD_GATEWAY, message),
        Err(e @ FetchError::BadSymbol(_)) => return Reply::error(StatusCode::BAD_REQUEST, e),
        Err(e @ FetchError::Db(_)) => return Reply::error(StatusCode::SERVICE_UNAVAILABLE, e),
    };
    let stats = checkout(pool, None).and_then(|mut c| price_stats::of(&mut c, symbol)).ok().flatten();
    let moving_average = json!({
        "window": settings.price_sma_window,
        "value": stats.as_ref().and_then(|s| s.moving_average),
        "events": stats.as_ref().map_or(0, |s| s.events),
    });
    let mut body = serde_json::to_value(&event).unwrap_or_default();
    body["cached"] = json!(from_cache);
    body["moving_average"] = moving_average;
    Reply { status: StatusCode::OK, body, retry_after: None }
}
