//! The HTTP server on `HTTP_ADDR`: `/healthz`, `/readyz`, `/metrics`, the
//! web console at `/` and its actions.
//!
//! axum routes; hyper drives each HTTP/1 connection, because it bounds what
//! a client can hold: the request head's size and the time to send it, the
//! body's size, the time a request may take, and the connections open at
//! once (one over the limit is closed at once). It runs on the service's
//! tokio runtime, and no probe waits on the database or the broker: they
//! answer from [`status::Status`], kept current in the background.

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
use tokio::sync::Semaphore;

use crate::metrics;
use crate::shutdown::Shutdown;

mod admin;
pub mod console;
pub mod status;

pub use status::{Sources, Status};

/// Connections open at once; one more is closed at once (and counted).
pub const MAX_CONNECTIONS: usize = 256;
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

fn problems(list: Vec<String>) -> Response {
    let (status, body) = if list.is_empty() {
        (StatusCode::OK, json!({"status": "ok"}))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, json!({"status": "unavailable", "problems": list}))
    };
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn healthz(State(s): State<Arc<Status>>) -> Response {
    problems(s.liveness())
}

async fn readyz(State(s): State<Arc<Status>>) -> Response {
    problems(s.readiness())
}

async fn metrics_text() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics::get().render()).into_response()
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found: try /, /healthz, /readyz or /metrics\n").into_response()
}

async fn time_limit(limit: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "request timed out\n").into_response(),
    }
}

/// Every route, with its limits.
pub fn routes(status: Arc<Status>) -> Router {
    let actions = Router::new()
        .route("/unlock", post(admin::unlock))
        .route("/lock", post(admin::lock))
        .route("/actions/dead-letters/{id}/replay", post(admin::replay))
        .route("/actions/notifications/{id}/retry", post(admin::retry))
        .route("/actions/jobs/{name}/run", post(admin::run_job))
        .layer(middleware::from_fn(|req: Request, next: Next| time_limit(ACTION_TIMEOUT, req, next)));
    let reads = Router::new()
        .route("/", get(console::page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .layer(middleware::from_fn(|req: Request, next: Next| time_limit(REQUEST_TIMEOUT, req, next)));
    reads.merge(actions).fallback(not_found).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)).with_state(status)
}

/// Binds `addr` and serves until shutdown, on the current tokio runtime;
/// returns the bound address (useful with port 0).
pub async fn serve(addr: SocketAddr, router: Router, shutdown: Shutdown) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    let bound = listener.local_addr()?;
    log::info!("http listening on {bound}");
    tokio::spawn(accept(listener, router, shutdown));
    Ok(bound)
}

async fn accept(listener: TcpListener, router: Router, shutdown: Shutdown) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, usually: wait rather than spin.
                    log::warn!("http accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => return,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics::get().http_connections_refused.inc();
            drop(stream);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                log::debug!("http connection ended: {e}");
            }
        });
    }
}
