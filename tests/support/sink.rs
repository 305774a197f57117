//! A real local HTTP server standing in for a webhook receiver: it answers
//! each POST with the status its plan gives and records every call. (A few
//! lines of HTTP/1.1 over std's TCP: tiny_http left some of 32 concurrent
//! keep-alive requests unanswered.)

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
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
    state: State,
}

/// What the serving threads share with the test.
#[derive(Clone)]
struct State {
    hits: Arc<Mutex<Vec<Hit>>>,
    plan: Arc<Mutex<Plan>>,
    answer: Arc<Mutex<Answer>>,
    /// Requests being answered now, and the most at once.
    in_flight: Arc<(AtomicUsize, AtomicUsize)>,
    stop: Arc<AtomicBool>,
}

/// Headers of every answer, and how long each answer waits.
#[derive(Clone, Default)]
struct Answer {
    headers: Vec<(String, String)>,
    delay: Duration,
}

impl Sink {
    /// Always answers 200.
    pub fn ok() -> Sink {
        Sink::start(Box::new(|_| 200))
    }

    /// Serves each connection on a thread of its own (HTTP/1.1 keep-alive),
    /// so that delayed answers overlap.
    pub fn start(plan: Plan) -> Sink {
        let (listener, addr) = super::local_listener();
        let url = format!("http://{addr}/hook");
        let state = State {
            hits: Arc::new(Mutex::new(Vec::new())),
            plan: Arc::new(Mutex::new(plan)),
            answer: Arc::new(Mutex::new(Answer::default())),
            in_flight: Arc::new((AtomicUsize::new(0), AtomicUsize::new(0))),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let shared = state.clone();
        super::serve_until(listener, state.stop.clone(), move |stream| shared.serve(stream));
        Sink { url, state }
    }

    /// Headers sent with every answer from now on.
    pub fn set_headers(&self, headers: &[(&str, &str)]) {
        self.state.answer.lock().unwrap().headers =
            headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    }

    /// How long each answer waits from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.state.answer.lock().unwrap().delay = delay;
    }

    pub fn set_plan(&self, plan: Plan) {
        *self.state.plan.lock().unwrap() = plan;
    }

    /// The most requests answered at once so far.
    pub fn peak_in_flight(&self) -> usize {
        self.state.in_flight.1.load(Ordering::SeqCst)
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.state.hits.lock().unwrap().clone()
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
        self.state.stop.store(true, Ordering::SeqCst);
    }
}

impl State {
    /// Answers the requests of one connection until the client closes it.
    fn serve(&self, stream: TcpStream) {
        let _ = stream.set_nonblocking(false);
        let Ok(read_half) = stream.try_clone() else { return };
        let mut reader = BufReader::new(read_half);
        let mut writer = stream;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let (mut key, mut length) = (String::new(), 0usize);
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 {
                    return;
                }
                let header = header.trim_end();
                if header.is_empty() {
                    break;
                }
                if let Some((name, value)) = header.split_once(':') {
                    match name.trim().to_ascii_lowercase().as_str() {
                        "idempotency-key" => key = value.trim().to_string(),
                        "content-length" => length = value.trim().parse().unwrap_or(0),
                        _ => {}
                    }
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            let now = self.in_flight.0.fetch_add(1, Ordering::SeqCst) + 1;
            self.in_flight.1.fetch_max(now, Ordering::SeqCst);
            let Answer { headers, delay } = self.answer.lock().unwrap().clone();
            std::thread::sleep(delay);
            let status = (self.plan.lock().unwrap())(&key);
            self.hits.lock().unwrap().push(Hit {
                key,
                status,
                at: Instant::now(),
                body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
            });
            let mut response = format!("HTTP/1.1 {status} Sink\r\nContent-Length: 0\r\n");
            for (k, v) in headers {
                response.push_str(&format!("{k}: {v}\r\n"));
            }
            response.push_str("\r\n");
            let written = writer.write_all(response.as_bytes()).and_then(|_| writer.flush());
            self.in_flight.0.fetch_sub(1, Ordering::SeqCst);
            if written.is_err() {
                return;
            }
        }
    }
}
