//! A market-data provider over real HTTP on loopback, answering each
//! `GET /query?function=GLOBAL_QUOTE&symbol=S` as its script says, and
//! remembering the symbols it was asked for.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One answer: status, body, and how long to wait before sending it.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    pub fn json(status: u16, body: &str) -> Reply {
        Reply { status, body: body.to_string(), delay: Duration::ZERO }
    }

    /// Alpha Vantage's `GLOBAL_QUOTE` answer for `symbol` at `price`.
    pub fn quote(symbol: &str, price: f64) -> Reply {
        Reply::json(
            200,
            &format!(
                r#"{{"Global Quote": {{"01. symbol": "{symbol}", "02. open": "1.0000", "05. price": "{price:.4}", "07. latest trading day": "2026-11-27"}}}}"#
            ),
        )
    }
}

type Script = dyn Fn(&str, usize) -> Reply + Send + Sync;

/// The provider; stops when dropped.
pub struct FakeProvider {
    pub url: String,
    calls: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl FakeProvider {
    /// Answers each call with `script(symbol, n)`, `n` counting that symbol's calls from 1.
    pub fn start(script: impl Fn(&str, usize) -> Reply + Send + Sync + 'static) -> FakeProvider {
        let (listener, addr) = super::local_listener();
        let url = format!("http://{addr}");
        let calls: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let script: Arc<Script> = Arc::new(script);
        let c = calls.clone();
        super::serve_until(listener, stop.clone(), move |stream| answer(stream, &c, &*script));
        FakeProvider { url, calls, stop }
    }

    /// The symbols asked for, in order.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn answer(stream: TcpStream, calls: &Mutex<Vec<String>>, script: &Script) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    // The head ends at an empty line.
    let mut header = String::new();
    while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
        header.clear();
    }
    let target = line.split_whitespace().nth(1).unwrap_or_default();
    let symbol = target
        .split_once('?')
        .map(|(_, q)| q)
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("symbol="))
        .unwrap_or_default()
        .to_string();
    let n = {
        let mut c = calls.lock().unwrap();
        c.push(symbol.clone());
        c.iter().filter(|s| **s == symbol).count()
    };
    let reply = script(&symbol, n);
    std::thread::sleep(reply.delay);
    let mut stream = stream;
    let kind = if reply.body.trim_start().starts_with('<') { "text/html" } else { "application/json" };
    let _ = write!(
        stream,
        "HTTP/1.1 {} X\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        reply.status,
        reply.body.len(),
        reply.body
    );
}
