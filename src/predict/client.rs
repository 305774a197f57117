//! The model server's client: one POST per batch ([`ModelClient::call`]),
//! no redirect followed (a POST is not replayed elsewhere), behind a circuit
//! breaker that every lane calling the same server shares; each answer
//! classified by the rules of [`Answer`].

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::protocol;
use crate::common::backoff::parse_retry_after;
use crate::common::breaker::Breaker;
use crate::common::locks::lock;
use crate::config::{PredictProtocol, Settings};
use crate::events::{Event as _, ModelBreakerChanged, ModelCalled};

/// Failed calls in a row (the server unavailable) that open the breaker.
pub const BREAKER_FAILURES: u32 = 5;
/// The largest answer read: a batch of 10,000 rich predictions fits.
const MAX_ANSWER_BYTES: u64 = 64 * 1024 * 1024;

/// What a model call came to, for the records it carried.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// 2xx: one prediction per instance, in order.
    Predicted(Vec<Value>),
    /// 400 or 422: the model refused something in the batch (split it to
    /// find what), with the server's words.
    Refused(String),
    /// 413: the batch is too large (split it).
    TooLarge(String),
    /// A 2xx whose predictions do not match the instances, count or shape
    /// (split it, as a refusal).
    Mismatch(String),
    /// Not the records' fault: the batch waits and is tried again, nothing
    /// dead-lettered. `misconfigured`: the service is set up wrong (401,
    /// 403, 404, 405, a redirect), as opposed to away (408, 425, 429, 5xx,
    /// a timeout, a refused or dropped connection, the breaker open).
    Unavailable { reason: String, retry_after: Option<Duration>, misconfigured: bool },
}

/// What an HTTP answer means (`answer` read as JSON, when it is), for `n` instances.
pub fn classify(protocol: PredictProtocol, status: u16, body: &str, retry_after: Option<&str>, n: usize) -> Answer {
    let said = || {
        let text: String = body.chars().take(500).collect();
        format!("the model server answered HTTP {status}: {}", text.split_whitespace().collect::<Vec<_>>().join(" "))
    };
    let unavailable = |misconfigured| Answer::Unavailable {
        reason: said(),
        retry_after: retry_after.and_then(parse_retry_after),
        misconfigured,
    };
    match status {
        200..=299 => {
            let predictions = serde_json::from_str::<Value>(body).map_err(|e| format!("the answer is not JSON: {e}"));
            let predictions = predictions.and_then(|answer| match protocol {
                PredictProtocol::Json => protocol::json_predictions(&answer, n),
                PredictProtocol::V2 => protocol::v2_predictions(&answer, n),
            });
            match predictions {
                Ok(p) => Answer::Predicted(p),
                Err(why) => Answer::Mismatch(format!("the model server answered HTTP {status}, but {why}")),
            }
        }
        400 | 422 => Answer::Refused(said()),
        413 => Answer::TooLarge(said()),
        300..=399 => Answer::Unavailable {
            reason: format!("{}: a POST is not redirected; set PREDICT_URL to the final address", said()),
            retry_after: None,
            misconfigured: true,
        },
        401 | 403 | 404 | 405 => unavailable(true),
        _ => unavailable(false),
    }
}

/// One call: its answer and how long it took.
#[derive(Debug)]
pub struct Call {
    pub answer: Answer,
    pub latency: Duration,
}

pub struct ModelClient {
    agent: ureq::Agent,
    url: String,
    protocol: PredictProtocol,
    model: String,
    version: Option<String>,
    token: Option<String>,
    fields: Vec<String>,
    breaker: Arc<Breaker>,
}

/// The breakers, by server: the lanes' clients of one server share one.
static BREAKERS: LazyLock<Mutex<HashMap<String, Arc<Breaker>>>> = LazyLock::new(Mutex::default);

impl ModelClient {
    /// The client `PREDICT_*` describes; `None` while `PREDICT_URL` is unset.
    pub fn new(s: &Settings) -> Option<ModelClient> {
        let base = s.predict_url.clone()?;
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(s.predict_timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        let version = s.predict_model_version.clone();
        let url = match s.predict_protocol {
            PredictProtocol::Json => base,
            PredictProtocol::V2 => protocol::v2_url(&base, &s.predict_model, version.as_deref()),
        };
        let breaker = lock(&BREAKERS)
            .entry(url.clone())
            .or_insert_with(|| Arc::new(Breaker::new(BREAKER_FAILURES, s.predict_breaker_cool_off)))
            .clone();
        Some(ModelClient {
            agent,
            url,
            protocol: s.predict_protocol,
            model: s.predict_model.clone(),
            version,
            token: s.predict_auth_token.clone(),
            fields: s.predict_input_fields.clone(),
            breaker,
        })
    }

    /// Why `instance` cannot be sent (for `v2`: an input field that is not a
    /// number): its record is dead-lettered before any call.
    pub fn unfit(&self, instance: &Value) -> Option<String> {
        match self.protocol {
            PredictProtocol::Json => None,
            PredictProtocol::V2 => protocol::v2_row(instance, &self.fields).err(),
        }
    }

    /// Calls the model on `instances` (each fit: see [`Self::unfit`]).
    pub fn call(&self, instances: &[&Value]) -> Call {
        let started = Instant::now();
        if let Err(wait) = self.breaker.admit() {
            let reason = format!("the model server failed {BREAKER_FAILURES} calls in a row: no call for a while");
            let answer = Answer::Unavailable { reason, retry_after: Some(wait), misconfigured: false };
            return Call { answer, latency: Duration::ZERO };
        }
        let (answer, status) = self.post(instances);
        let latency = started.elapsed();
        let failed = matches!(answer, Answer::Unavailable { .. });
        if let Some(c) = self.breaker.record(!failed) {
            ModelBreakerChanged { open: c.open, failures_in_a_row: c.failures_in_a_row, cool_off: c.cool_off }.emit();
        }
        ModelCalled { status: &status, records: instances.len(), latency, misconfigured: is_misconfigured(&answer) }
            .emit();
        Call { answer, latency }
    }

    /// The POST and its answer, with the status as the metric labels it.
    fn post(&self, instances: &[&Value]) -> (Answer, String) {
        let body = match self.protocol {
            PredictProtocol::Json => protocol::json_request(&self.model, self.version.as_deref(), instances),
            PredictProtocol::V2 => {
                let rows: Result<Vec<Vec<f64>>, String> =
                    instances.iter().map(|i| protocol::v2_row(i, &self.fields)).collect();
                match rows {
                    Ok(rows) => protocol::v2_request(&rows),
                    // Never sent: the records were checked (`unfit`) first.
                    Err(why) => return (Answer::Refused(why), "unsent".into()),
                }
            }
        };
        let mut request = self.agent.post(&self.url);
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        match request.send_json(body) {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
                let text = resp.body_mut().with_config().limit(MAX_ANSWER_BYTES).read_to_string();
                let answer = match text {
                    Ok(text) => classify(self.protocol, status, &text, retry_after.as_deref(), instances.len()),
                    Err(e) => Answer::Unavailable {
                        reason: format!("reading the model server's answer (HTTP {status}): {e}"),
                        retry_after: None,
                        misconfigured: false,
                    },
                };
                (answer, status.to_string())
            }
            Err(e) => {
                let timeout = matches!(e, ureq::Error::Timeout(_));
                let reason = format!("calling the model server: {}", crate::config::redact::url(&e.to_string()));
                let answer = Answer::Unavailable { reason, retry_after: None, misconfigured: false };
                (answer, if timeout { "timeout" } else { "connection" }.into())
            }
        }
    }
}

fn is_misconfigured(answer: &Answer) -> bool {
    matches!(answer, Answer::Unavailable { misconfigured: true, .. })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const JSON: PredictProtocol = PredictProtocol::Json;

    #[test]
    fn every_answer_has_a_rule() {
        let ok = json!({"predictions": [1, 2]}).to_string();
        assert_eq!(classify(JSON, 200, &ok, None, 2), Answer::Predicted(vec![json!(1), json!(2)]));
        assert!(matches!(classify(JSON, 200, &ok, None, 3), Answer::Mismatch(m) if m.contains("2 predictions for 3")));
        assert!(matches!(classify(JSON, 200, "<html>", None, 1), Answer::Mismatch(m) if m.contains("not JSON")));
        assert!(
            matches!(classify(JSON, 422, "{\"detail\":\"instance 1: bad\"}", None, 2), Answer::Refused(m) if m.contains("instance 1: bad"))
        );
        assert!(matches!(classify(JSON, 400, "", None, 2), Answer::Refused(_)));
        assert!(matches!(classify(JSON, 413, "", None, 2), Answer::TooLarge(_)));
        for status in [408, 425, 429, 500, 502, 503, 504] {
            let a = classify(JSON, status, "", Some("7"), 1);
            let want = Some(Duration::from_secs(7));
            assert!(
                matches!(a, Answer::Unavailable { misconfigured: false, retry_after, .. } if retry_after == want),
                "{status}"
            );
        }
        for status in [401, 403, 404, 405, 301, 307] {
            assert!(
                matches!(classify(JSON, status, "", None, 1), Answer::Unavailable { misconfigured: true, .. }),
                "{status}"
            );
        }
        let long = "x".repeat(10_000);
        let Answer::Refused(m) = classify(JSON, 422, &long, None, 1) else { panic!() };
        assert!(m.len() < 600, "the server's words are cut: {} bytes", m.len());
    }
}
