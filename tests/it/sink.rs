//! A real local HTTP server standing in for a webhook receiver: it answers
//! each POST with the status its plan gives and records every call.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub type Plan = Box<dyn FnMut(&str) -> u16 + Send>;

#[derive(Debug, Clone)]
pub struct Hit {
    pub key: String,
    pub status: u16,
    pub at: Instant,
    pub body: serde_json::Value,
}

pub struct Sink {
    pub url: String,
    hits: Arc<Mutex<Vec<Hit>>>,
    plan: Arc<Mutex<Plan>>,
    stop: Arc<AtomicBool>,
}

impl Sink {
    /// Always answers 200.
    pub fn ok() -> Sink {
        Sink::start(Box::new(|_| 200))
    }

    pub fn start(plan: Plan) -> Sink {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", server.server_addr().to_ip().unwrap());
        let hits = Arc::new(Mutex::new(Vec::new()));
        let plan = Arc::new(Mutex::new(plan));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, p, s) = (hits.clone(), plan.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let Ok(Some(mut req)) = server.recv_timeout(Duration::from_millis(100)) else {
                    continue;
                };
                let key = req
                    .headers()
                    .iter()
                    .find(|h| h.field.equiv("Idempotency-Key"))
                    .map(|h| h.value.to_string())
                    .unwrap_or_default();
                let mut body = String::new();
                let _ = std::io::Read::read_to_string(req.as_reader(), &mut body);
                let status = (p.lock().unwrap())(&key);
                h.lock().unwrap().push(Hit {
                    key,
                    status,
                    at: Instant::now(),
                    body: serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
                });
                let _ = req.respond(tiny_http::Response::from_string("").with_status_code(status));
            }
        });
        Sink { url, hits, plan, stop }
    }

    pub fn set_plan(&self, plan: Plan) {
        *self.plan.lock().unwrap() = plan;
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Successful deliveries per idempotency key.
    pub fn delivered(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for h in self.hits().iter().filter(|h| (200..300).contains(&h.status)) {
            *m.entry(h.key.clone()).or_default() += 1;
        }
        m
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
