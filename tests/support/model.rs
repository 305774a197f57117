//! A local model server for the predictions module's tests, speaking
//! `json` (`POST /predict`) or `v2` (`POST /v2/models/{m}/infer`): it
//! predicts `{"p": x * 2}` from each instance's `x` (the first input column
//! for `v2`), refuses (422, or 400 for `v2`) a batch holding an instance
//! whose `x` is negative, and can be told to answer otherwise: a status for
//! every call, batches too large above a size, one prediction short, a
//! token it wants, a delay, or to drop every connection (away). It records
//! every call. (HTTP/1.1 over std's TCP, as the webhook sink.)

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How the stub answers from now on (see the module doc).
#[derive(Clone, Default, Debug)]
pub struct Behaviour {
    /// Every call gets this status (and the body `{"error": ...}`).
    pub status: Option<u16>,
    /// Headers of every answer (e.g. `Retry-After`).
    pub headers: Vec<(String, String)>,
    /// Batches above this many instances get 413.
    pub max_batch: Option<usize>,
    /// Answers one prediction short for batches of more than one.
    pub short: bool,
    /// Wants `Authorization: Bearer <token>`, else 401.
    pub token: Option<String>,
    pub delay: Duration,
    /// Drops every connection without an answer.
    pub away: bool,
}

/// One call as the stub saw it.
#[derive(Debug, Clone)]
pub struct ModelCall {
    pub status: u16,
    /// The instances' `x`, in order.
    pub xs: Vec<f64>,
    pub at: Instant,
}

#[derive(Clone)]
struct State {
    v2: bool,
    behaviour: Arc<Mutex<Behaviour>>,
    calls: Arc<Mutex<Vec<ModelCall>>>,
    in_flight: Arc<(AtomicUsize, AtomicUsize)>,
    stop: Arc<AtomicBool>,
}

pub struct ModelStub {
    /// What `PREDICT_URL` is set to.
    pub url: String,
    state: State,
}

impl ModelStub {
    /// `v2`: speaks the Open Inference Protocol (model `m`), else `json`.
    pub fn start(v2: bool) -> ModelStub {
        let (listener, addr) = super::local_listener();
        let url = if v2 { format!("http://{addr}") } else { format!("http://{addr}/predict") };
        let state = State {
            v2,
            behaviour: Arc::default(),
            calls: Arc::default(),
            in_flight: Arc::new((AtomicUsize::new(0), AtomicUsize::new(0))),
            stop: Arc::default(),
        };
        let shared = state.clone();
        super::serve_until(listener, state.stop.clone(), move |stream| shared.serve(stream));
        ModelStub { url, state }
    }

    /// Changes how it answers from now on.
    pub fn behave(&self, change: impl FnOnce(&mut Behaviour)) {
        change(&mut self.state.behaviour.lock().unwrap());
    }

    pub fn calls(&self) -> Vec<ModelCall> {
        self.state.calls.lock().unwrap().clone()
    }

    /// How often each `x` got a prediction (a 2xx answer).
    pub fn predicted(&self) -> BTreeMap<i64, usize> {
        let mut m = BTreeMap::new();
        for c in self.calls().iter().filter(|c| c.status == 200) {
            for x in &c.xs {
                *m.entry(*x as i64).or_default() += 1;
            }
        }
        m
    }

    /// The most calls answered at once so far.
    pub fn peak_in_flight(&self) -> usize {
        self.state.in_flight.1.load(Ordering::SeqCst)
    }
}

impl Drop for ModelStub {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
    }
}

/// The instances' `x` of a request body, or why the body is wrong.
fn xs_of(v2: bool, body: &Value) -> Result<Vec<f64>, String> {
    if v2 {
        let input = &body["inputs"][0];
        let shape: Vec<u64> = input["shape"].as_array().ok_or("no shape")?.iter().filter_map(Value::as_u64).collect();
        let data: Vec<f64> = input["data"].as_array().ok_or("no data")?.iter().filter_map(Value::as_f64).collect();
        let (n, k) = (shape.first().copied().unwrap_or(0) as usize, shape.get(1).copied().unwrap_or(1) as usize);
        if input["datatype"] != "FP64" || data.len() != n * k || k == 0 {
            return Err(format!("bad tensor: shape {shape:?}, {} values", data.len()));
        }
        Ok((0..n).map(|i| data[i * k]).collect())
    } else {
        let instances = body["instances"].as_array().ok_or("no instances")?;
        instances.iter().enumerate().map(|(i, v)| v["x"].as_f64().ok_or(format!("instance {i}: no x"))).collect()
    }
}

impl State {
    /// The status and body for one request.
    fn answer(&self, b: &Behaviour, auth: Option<&str>, body: &Value) -> (u16, Value, Vec<f64>) {
        if let Some(token) = &b.token {
            if auth != Some(&format!("Bearer {token}")) {
                return (401, json!({"error": "unauthorized"}), vec![]);
            }
        }
        if let Some(status) = b.status {
            return (status, json!({"error": format!("told to answer {status}")}), vec![]);
        }
        let refused = if self.v2 { 400 } else { 422 };
        let xs = match xs_of(self.v2, body) {
            Ok(xs) => xs,
            Err(why) => return (refused, json!({"error": why}), vec![]),
        };
        if b.max_batch.is_some_and(|max| xs.len() > max) {
            return (413, json!({"error": "batch too large"}), xs);
        }
        if let Some(i) = xs.iter().position(|x| *x < 0.0) {
            return (refused, json!({"detail": format!("instance {i}: x is negative")}), xs);
        }
        let mut ps: Vec<f64> = xs.iter().map(|x| x * 2.0).collect();
        if b.short && ps.len() > 1 {
            ps.pop();
        }
        let answer = if self.v2 {
            json!({"model_name": "m", "outputs": [{"name": "p", "shape": [ps.len()], "datatype": "FP64", "data": ps}]})
        } else {
            json!({"predictions": ps.iter().map(|p| json!({"p": p})).collect::<Vec<_>>()})
        };
        (200, answer, xs)
    }

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
            let (mut auth, mut length) = (None, 0usize);
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
                        "authorization" => auth = Some(value.trim().to_string()),
                        "content-length" => length = value.trim().parse().unwrap_or(0),
                        _ => {}
                    }
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            let b = self.behaviour.lock().unwrap().clone();
            if b.away {
                return;
            }
            let now = self.in_flight.0.fetch_add(1, Ordering::SeqCst) + 1;
            self.in_flight.1.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(b.delay);
            let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let (status, answer, xs) = self.answer(&b, auth.as_deref(), &request);
            self.calls.lock().unwrap().push(ModelCall { status, xs, at: Instant::now() });
            let text = answer.to_string();
            let mut response = format!(
                "HTTP/1.1 {status} Model\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
                text.len()
            );
            for (k, v) in &b.headers {
                response.push_str(&format!("{k}: {v}\r\n"));
            }
            response.push_str("\r\n");
            response.push_str(&text);
            let written = writer.write_all(response.as_bytes()).and_then(|_| writer.flush());
            self.in_flight.0.fetch_sub(1, Ordering::SeqCst);
            if written.is_err() {
                return;
            }
        }
    }
}
