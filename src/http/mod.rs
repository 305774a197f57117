//! The HTTP server on `HTTP_ADDR`: `/healthz`, `/readyz`, `/metrics`, the
//! web console at `/` (its sections also as JSON under `/api/`) and its
//! actions, the price API (`/v1/prices/latest`) and the predictions API
//! (`/v1/predictions/latest`).
//!
//! axum routes; hyper drives each HTTP/1 connection, because it bounds what
//! a client can hold: the request head's size and the time to send it, the
//! body's size, the time a request may take, and the connections open at
//! once (see [`connections`]). It runs on the service's
//! tokio runtime, and no probe waits on the database or the broker: they
//! answer from [`status::Status`], kept current in the background.
//!
//! Inside: the routes and the server (here), the connection table
//! ([`connections`]), the status ([`status`]) and its [`history`], the
//! console ([`console`]: each section's data [`views`], served as JSON by
//! [`api`], drawn with [`charts`] and the HTML helpers [`html`]; the
//! [`dead_letter_search`]),
//! its actions ([`admin`]), the price API ([`prices`]) and the predictions
//! API ([`predictions`]). It may use every part but `app` and `cli`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tower_service::Service as _;

use crate::common::metrics;
use crate::common::shutdown::Shutdown;
use crate::events::{Event as _, HttpListening};

mod admin;
mod api;
mod charts;
mod connections;
pub mod console;
mod dead_letter_search;
pub mod history;
mod html;
mod predictions;
mod prices;
pub mod status;
mod views;

pub use status::{Sources, Status, HTTP_POOL_SIZE};

/// Time a client has to send a request's head, from the connection's start
/// or the previous answer (slowloris, idle keep-alives).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes a request head may take (hyper's read buffer, which it will not grow past).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Time a request may take, its body included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// An action may produce to the broker (a replay waits for its delivery).
pub const ACTION_TIMEOUT: Duration = Duration::from_secs(65);

/// Requests served at once by each route family that reaches the database
/// or the provider; past it, 503 with `Retry-After`, at once.
const CONSOLE_REQUESTS: usize = 4;
const ACTION_REQUESTS: usize = 2;
const API_REQUESTS: usize = 64;

/// Serves `req` if one of `slots` is free, else answers 503 at once.
async fn bounded(slots: Arc<tokio::sync::Semaphore>, req: Request, next: Next) -> Response {
    match slots.try_acquire_owned() {
        Ok(_slot) => next.run(req).await,
        Err(_) => {
            let mut r = (StatusCode::SERVICE_UNAVAILABLE, "busy: too many requests at once; ask again shortly\n")
                .into_response();
            r.headers_mut().insert(header::RETRY_AFTER, 1.into());
            r
        }
    }
}

/// 200 without problems, else 503 naming them; `paused`: the partitions an
/// operator paused, said but no fault.
fn problems(list: Vec<String>, paused: Vec<String>) -> Response {
    let (status, mut body) = if list.is_empty() {
        (StatusCode::OK, json!({"status": "ok"}))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, json!({"status": "unavailable", "problems": list}))
    };
    if !paused.is_empty() {
        body["paused_by_operator"] = json!(paused);
    }
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn healthz(State(s): State<Arc<Status>>) -> Response {
    let paused = s.sources.operator_pauses.get().into_iter();
    problems(s.liveness(), paused.map(|(tp, since)| format!("{tp} since {since} UTC")).collect())
}

async fn readyz(State(s): State<Arc<Status>>) -> Response {
    problems(s.readiness(), vec![])
}

async fn metrics_text() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics::get().render()).into_response()
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        "not found: try /, /api/consumer, /healthz, /readyz, /metrics or /v1/prices/latest?symbol=\n",
    )
        .into_response()
}

async fn time_limit(limit: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "request timed out\n").into_response(),
    }
}

/// `n` request slots, for [`bounded`].
fn slots(n: usize) -> Arc<tokio::sync::Semaphore> {
    Arc::new(tokio::sync::Semaphore::new(n))
}

/// Every route, with its limits.
pub fn routes(status: Arc<Status>) -> Router {
    let (console, actions, api) = (slots(CONSOLE_REQUESTS), slots(ACTION_REQUESTS), slots(API_REQUESTS));
    let actions = Router::new()
        .route("/actions/dead-letters/{id}/replay", post(admin::replay))
        .route("/actions/notifications/{id}/retry", post(admin::retry))
        .route("/actions/jobs/{name}/run", post(admin::run_job))
        .route("/actions/dead-letters/replay-matching", post(admin::replay_matching))
        .route("/actions/dead-letters/purge-replayed", post(admin::purge_replayed))
        .route("/actions/partitions/{topic}/{partition}/{verb}", post(admin::pause))
        .layer(middleware::from_fn(move |req: Request, next: Next| bounded(actions.clone(), req, next)))
        .layer(middleware::from_fn(|req: Request, next: Next| time_limit(ACTION_TIMEOUT, req, next)));
    let page = Router::new()
        .route("/", get(console::page))
        .route("/console/{section}", get(console::section))
        .route("/api/overview", get(api::overview))
        .route("/api/consumer", get(api::consumer))
        .route("/api/history", get(api::history))
        .route("/api/jobs", get(api::jobs))
        .route("/api/dead-letters", get(api::dead_letters))
        .route("/api/notifications", get(api::notifications))
        .route("/api/predictions", get(api::predictions))
        .layer(middleware::from_fn(move |req: Request, next: Next| bounded(console.clone(), req, next)));
    let quick = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/unlock", post(admin::unlock))
        .route("/lock", post(admin::lock))
        .merge(page)
        .layer(middleware::from_fn(|req: Request, next: Next| time_limit(REQUEST_TIMEOUT, req, next)));
    // A price fetch may wait for the provider's whole timeout.
    let fetch_limit = status.sources.settings.price_provider_timeout + REQUEST_TIMEOUT;
    let api = Router::new()
        .route("/v1/prices/latest", get(prices::latest))
        .route("/v1/predictions/latest", get(predictions::latest))
        .layer(middleware::from_fn(move |req: Request, next: Next| bounded(api.clone(), req, next)))
        .layer(middleware::from_fn(move |req: Request, next: Next| time_limit(fetch_limit, req, next)));
    quick.merge(actions).merge(api).fallback(not_found).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)).with_state(status)
}

/// Binds `addr` and serves until shutdown, on the current tokio runtime;
/// returns the bound address (useful with port 0).
pub async fn serve(addr: SocketAddr, router: Router, shutdown: Shutdown) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    let bound = listener.local_addr()?;
    HttpListening { addr: &bound.to_string(), accept_error: None }.emit();
    tokio::spawn(accept(listener, router, shutdown));
    Ok(bound)
}

async fn accept(listener: TcpListener, router: Router, shutdown: Shutdown) {
    let table = Arc::new(connections::Connections::default());
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, usually: wait rather than spin.
                    HttpListening { addr: "", accept_error: Some(&e.to_string()) }.emit();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => return,
        };
        let Some(slot) = table.admit() else { continue };
        let slot = Arc::new(slot);
        let (router, serving) = (router.clone(), slot.clone());
        let service = hyper::service::service_fn(move |req: axum::http::Request<hyper::body::Incoming>| {
            serving.serving();
            let mut router = router.clone();
            async move { router.call(req.map(axum::body::Body::new)).await }
        });
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                ended = connection => {
                    if let Err(e) = ended {
                        log::debug!("http connection ended: {e}");
                    }
                }
                _ = slot.evicted() => log::debug!("http connection closed for a newcomer (it sent no request)"),
            }
        });
    }
}
