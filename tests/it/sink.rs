//! A real local HTTP server standing in for a webhook receiver: it answers
//! each POST with the status its plan gives and records every call.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
    /// Headers of every answer, and how long each answer waits.
    answer: Arc<Mutex<(Vec<(String, String)>, Duration)>>,
    /// Requests being answered now, and the most at once.
    in_flight: Arc<(AtomicUsize, AtomicUsize)>,
    stop: Arc<AtomicBool>,
}

impl Sink {
    /// Always answers 200.
    pub fn ok() -> Sink {
        Sink::start(Box::new(|_| 200))
    }

    /// Answers each request on a thread of its own, so that delayed answers overlap.
    pub fn start(plan: Plan) -> Sink {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let url = format!("http://{}/hook", server.server_addr().to_ip().unwrap());
        let hits = Arc::new(Mutex::new(Vec::new()));
        let plan = Arc::new(Mutex::new(plan));
        let answer = Arc::new(Mutex::new((Vec::<(String, String)>::new(), Duration::ZERO)));
        let stop = Arc::new(AtomicBool::new(false));
        let in_flight = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
        let (h, p, a, f, s) = (hits.clone(), plan.clone(), answer.clone(), in_flight.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let Ok(Some(mut req)) = server.recv_timeout(Duration::from_millis(100)) else {
                    continue;
                };
                let (h, p, a, f) = (h.clone(), p.clone(), a.clone(), f.clone());
                std::thread::spawn(move || {
                    let now = f.0.fetch_add(1, Ordering::SeqCst) + 1;
                    f.1.fetch_max(now, Ordering::SeqCst);
                    let key = req
                        .headers()
                        .iter()
                        .find(|h| h.field.equiv("Idempotency-Key"))
                        .map(|h| h.value.to_string())
                        .unwrap_or_default();
                    let mut body = String::new();
                    let _ = std::io::Read::read_to_string(req.as_reader(), &mut body);
                    let (headers, delay) = a.lock().unwrap().clone();
                    std::thread::sleep(delay);
                    let status = (p.lock().unwrap())(&key);
                    h.lock().unwrap().push(Hit {
                        key,
                        status,
                        at: Instant::now(),
                        body: serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
                    });
                    let mut response = tiny_http::Response::from_string("").with_status_code(status);
                    for (k, v) in headers {
                        response.add_header(tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).unwrap());
                    }
                    let _ = req.respond(response);
                    f.0.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Sink { url, hits, plan, answer, in_flight, stop }
    }

    /// The most requests answered at once so far.
    pub fn peak_in_flight(&self) -> usize {
        self.in_flight.1.load(Ordering::SeqCst)
    }

    /// Headers sent with every answer from now on.
    pub fn set_headers(&self, headers: &[(&str, &str)]) {
        self.answer.lock().unwrap().0 = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    }

    /// How long each answer waits from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.answer.lock().unwrap().1 = delay;
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
