//! The HTTP endpoint on `HTTP_ADDR`: `/healthz` (consumer thread alive and
//! polling, scheduler ticking), `/readyz` (broker and database answer,
//! partitions assigned) and `/metrics` (Prometheus text). A small blocking
//! server on a thread of its own, so it answers even when the async runtime
//! is busy.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::config::Settings;
use crate::db::Pool;
use crate::metrics;
use crate::scheduler::JobContext;
use crate::shutdown::Shutdown;
use crate::supervisor::Supervisor;

/// The scheduler counts as stopped when no tick started for this long
/// (the supervision job ticks every 5 s).
const SCHEDULER_SILENCE: Duration = Duration::from_secs(20);

pub struct Health {
    pub settings: Arc<Settings>,
    pub pool: Pool,
    pub supervisor: Option<Arc<Mutex<Supervisor>>>,
    pub jobs: Arc<JobContext>,
    admin: Option<rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext>>,
}

impl Health {
    pub fn new(
        settings: Arc<Settings>,
        pool: Pool,
        supervisor: Option<Arc<Mutex<Supervisor>>>,
        jobs: Arc<JobContext>,
    ) -> Self {
        let admin = if settings.kafka.enabled { crate::kafka::admin_client(&settings).ok() } else { None };
        Health { settings, pool, supervisor, jobs, admin }
    }

    /// Problems that make the service unhealthy (empty: healthy).
    pub fn liveness(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(s) = &self.supervisor {
            let s = s.lock().unwrap_or_else(|p| p.into_inner());
            if !s.is_alive() {
                problems.push("consumer thread is not running".to_string());
            } else if let Some(hb) = s.heartbeat() {
                let stall = self.settings.consumer.stall_timeout;
                match hb.since_poll() {
                    Some(age) if age > stall => {
                        problems.push(format!("consumer thread has not polled for {} ms", age.as_millis()))
                    }
                    _ => {}
                }
                if let Some((lasting, error)) = hb.client_failing_for(stall) {
                    problems.push(format!("kafka client failing for {} s: {error}", lasting.as_secs()));
                }
                if hb.retrying() {
                    problems.push(format!(
                        "consumer is retrying a batch: {}",
                        hb.last_error().unwrap_or_else(|| "unknown error".into())
                    ));
                }
            }
        }
        match self.jobs.since_tick() {
            Some(age) if age > SCHEDULER_SILENCE => {
                problems.push(format!("scheduler has not ticked for {} s", age.as_secs()))
            }
            _ => {}
        }
        problems
    }

    /// Problems that make the service not ready (empty: ready).
    pub fn readiness(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match self.pool.get() {
            Ok(mut c) => {
                if let Err(e) = crate::db::ping(&mut c) {
                    problems.push(format!("database does not answer: {e}"));
                }
            }
            Err(e) => problems.push(format!("database unreachable: {e}")),
        }
        if let Some(admin) = &self.admin {
            if let Err(e) = admin.inner().fetch_metadata(None, Duration::from_secs(2)) {
                problems.push(format!("broker unreachable: {e}"));
            }
            let assigned = self
                .supervisor
                .as_ref()
                .and_then(|s| s.lock().ok().and_then(|s| s.heartbeat()))
                .map(|hb| hb.assigned())
                .unwrap_or(0);
            if assigned == 0 {
                problems.push("no partitions assigned".to_string());
            }
        }
        problems
    }
}

fn respond(req: tiny_http::Request, status: u16, content_type: &str, body: String) {
    let header = tiny_http::Header::from_bytes("Content-Type", content_type).expect("static header is valid");
    let _ = req.respond(tiny_http::Response::from_string(body).with_status_code(status).with_header(header));
}

fn report(req: tiny_http::Request, problems: Vec<String>) {
    let (status, body) = if problems.is_empty() {
        (200, json!({"status": "ok"}))
    } else {
        (503, json!({"status": "unavailable", "problems": problems}))
    };
    respond(req, status, "application/json", body.to_string());
}

/// Binds `HTTP_ADDR` and serves until shutdown; returns the bound address
/// (useful with port 0).
pub fn serve(addr: SocketAddr, health: Arc<Health>, shutdown: Shutdown) -> std::io::Result<SocketAddr> {
    let server =
        tiny_http::Server::http(addr).map_err(|e| std::io::Error::other(format!("cannot listen on {addr}: {e}")))?;
    let bound = server.server_addr().to_ip().unwrap_or(addr);
    log::info!("http listening on {bound}");
    std::thread::Builder::new().name("http".into()).spawn(move || {
        while !shutdown.is_triggered() {
            let req = match server.recv_timeout(Duration::from_millis(200)) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    log::warn!("http accept failed: {e}");
                    continue;
                }
            };
            match req.url() {
                "/healthz" => report(req, health.liveness()),
                "/readyz" => report(req, health.readiness()),
                "/metrics" => {
                    let state = health.pool.state();
                    let m = metrics::get();
                    m.db_pool_connections.with_label_values(&["idle"]).set(state.idle_connections as i64);
                    m.db_pool_connections
                        .with_label_values(&["active"])
                        .set((state.connections - state.idle_connections) as i64);
                    respond(req, 200, "text/plain; version=0.0.4", m.render())
                }
                _ => respond(req, 404, "text/plain", "not found: try /healthz, /readyz or /metrics\n".into()),
            }
        }
    })?;
    Ok(bound)
}
