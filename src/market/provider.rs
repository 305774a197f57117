//! The market-data provider: one `GET {PRICE_PROVIDER_URL}/query?function=GLOBAL_QUOTE`
//! per symbol, read as Alpha Vantage answers it
//! (`{"Global Quote": {"01. symbol": "AAPL", "05. price": "150.2500", ...}}`).
//! Every other answer is a failure of a named kind: rate limited (its
//! `Note` or `Information`), the provider's `Error Message`, not JSON (an
//! HTML page), an empty quote (a symbol it does not know), a bad quote, a
//! non-2xx status, a timeout, no connection.

use serde_json::Value;

use crate::config::Settings;

/// The most of an answer's body that is kept.
pub const BODY_KEPT: usize = 64 * 1024;

/// Why an answer held no price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    RateLimited,
    ProviderError,
    NotJson,
    /// The quote is empty: the provider does not know the symbol.
    EmptyQuote,
    BadQuote,
    HttpStatus,
    Timeout,
    Unreachable,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::RateLimited => "rate_limited",
            Failure::ProviderError => "provider_error",
            Failure::NotJson => "not_json",
            Failure::EmptyQuote => "empty_quote",
            Failure::BadQuote => "bad_quote",
            Failure::HttpStatus => "http_status",
            Failure::Timeout => "timeout",
            Failure::Unreachable => "unreachable",
        }
    }
}

/// A price read from an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Quote {
    pub symbol: String,
    pub price: f64,
}

/// One call's answer, as received.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// `None`: no answer came.
    pub http_status: Option<u16>,
    pub body: Option<String>,
    pub quote: Result<Quote, (Failure, String)>,
}

pub struct Provider {
    agent: ureq::Agent,
    base: String,
    api_key: Option<String>,
}

impl Provider {
    pub fn new(settings: &Settings) -> Provider {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(settings.price_provider_timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Provider {
            agent,
            base: settings.price_provider_url.trim_end_matches('/').to_string(),
            api_key: settings.price_provider_api_key.clone(),
        }
    }

    /// Asks for `symbol`'s quote (a symbol [`super::symbol`] accepted).
    pub fn fetch(&self, symbol: &str) -> Answer {
        let mut req =
            self.agent.get(format!("{}/query", self.base)).query("function", "GLOBAL_QUOTE").query("symbol", symbol);
        if let Some(key) = &self.api_key {
            req = req.query("apikey", key);
        }
        match req.call() {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let bytes = resp.body_mut().with_config().limit(4 * BODY_KEPT as u64).read_to_vec();
                match bytes {
                    Ok(b) => {
                        let body = String::from_utf8_lossy(&b).into_owned();
                        let quote = parse(status, &body, symbol);
                        Answer { http_status: Some(status), body: Some(kept(body)), quote }
                    }
                    Err(e) => Answer {
                        http_status: Some(status),
                        body: None,
                        quote: Err(self.transport_failure(&e, "reading the answer")),
                    },
                }
            }
            Err(e) => Answer { http_status: None, body: None, quote: Err(self.transport_failure(&e, "calling")) },
        }
    }

    /// A transport error, with the API key (which the URL carries) scrubbed.
    fn transport_failure(&self, e: &ureq::Error, doing: &str) -> (Failure, String) {
        let kind = match e {
            ureq::Error::Timeout(_) => Failure::Timeout,
            ureq::Error::BodyExceedsLimit(_) => Failure::BadQuote,
            _ => Failure::Unreachable,
        };
        let text = crate::config::redact::scrub(&e.to_string(), self.api_key.as_slice());
        (kind, format!("{doing} the provider failed: {text}"))
    }
}

/// `body` cut to [`BODY_KEPT`] bytes, on a character boundary.
fn kept(mut body: String) -> String {
    if body.len() > BODY_KEPT {
        let mut end = BODY_KEPT;
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        body.truncate(end);
        body.push_str("\n[cut]");
    }
    body
}

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

/// Reads a price from an answer, or says why there is none.
pub fn parse(status: u16, body: &str, symbol: &str) -> Result<Quote, (Failure, String)> {
    if !(200..300).contains(&status) {
        return Err((Failure::HttpStatus, format!("the provider answered HTTP {status}")));
    }
    let v: Value = serde_json::from_str(body).map_err(|_| {
        let start: String = body.trim_start().chars().take(60).collect();
        let what = if start.starts_with('<') { "HTML" } else { "something other than JSON" };
        (Failure::NotJson, format!("the provider answered {what}: {start:?}"))
    })?;
    if let Some(note) = v.get("Note").or_else(|| v.get("Information")) {
        return Err((Failure::RateLimited, format!("the provider refused (rate limit?): {}", text(note))));
    }
    if let Some(e) = v.get("Error Message") {
        return Err((Failure::ProviderError, format!("the provider reported an error: {}", text(e))));
    }
    let Some(q) = v.get("Global Quote").and_then(Value::as_object) else {
        return Err((Failure::BadQuote, "the answer has no \"Global Quote\" object".into()));
    };
    if q.is_empty() {
        return Err((Failure::EmptyQuote, format!("the provider has no quote for {symbol} (unknown symbol?)")));
    }
    let answered = q.get("01. symbol").and_then(Value::as_str).unwrap_or_default();
    if !answered.eq_ignore_ascii_case(symbol) {
        return Err((Failure::BadQuote, format!("the quote is for {answered:?}, not {symbol}")));
    }
    let raw = q.get("05. price").map(text).unwrap_or_default();
    match raw.trim().parse::<f64>() {
        Ok(price) if price.is_finite() && price >= 0.0 => Ok(Quote { symbol: symbol.to_string(), price }),
        _ => Err((Failure::BadQuote, format!("the quote's \"05. price\" is not a price: {raw:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUOTE: &str = r#"{"Global Quote": {"01. symbol": "AAPL", "02. open": "149.0000",
        "05. price": "150.2500", "07. latest trading day": "2026-11-20"}}"#;

    fn kind(status: u16, body: &str) -> Failure {
        parse(status, body, "AAPL").unwrap_err().0
    }

    #[test]
    fn reads_a_global_quote() {
        assert_eq!(parse(200, QUOTE, "AAPL"), Ok(Quote { symbol: "AAPL".into(), price: 150.25 }));
    }

    #[test]
    fn names_every_non_answer() {
        assert_eq!(
            kind(200, r#"{"Note": "Thank you for using Alpha Vantage! 5 calls per minute"}"#),
            Failure::RateLimited
        );
        assert_eq!(
            kind(200, r#"{"Information": "The **demo** API key is for demo purposes only."}"#),
            Failure::RateLimited
        );
        assert_eq!(kind(200, r#"{"Error Message": "Invalid API call."}"#), Failure::ProviderError);
        assert_eq!(kind(200, "<html><body>Bad gateway</body></html>"), Failure::NotJson);
        assert_eq!(kind(200, r#"{"Global Quote": {}}"#), Failure::EmptyQuote);
        assert_eq!(kind(200, r#"{"Global Quote": {"01. symbol": "AAPL", "05. price": "n/a"}}"#), Failure::BadQuote);
        assert_eq!(kind(200, r#"{"Global Quote": {"01. symbol": "MSFT", "05. price": "1"}}"#), Failure::BadQuote);
        assert_eq!(kind(200, "[]"), Failure::BadQuote);
        assert_eq!(kind(503, QUOTE), Failure::HttpStatus);
        let (_, why) = parse(200, "<html>", "AAPL").unwrap_err();
        assert!(why.contains("HTML"), "{why}");
    }

    #[test]
    fn long_bodies_are_cut_on_a_character_boundary() {
        let body = "é".repeat(BODY_KEPT);
        let cut = kept(body);
        assert!(cut.len() <= BODY_KEPT + 6 && cut.ends_with("[cut]"));
    }
}
