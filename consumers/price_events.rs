//! Topic `price-events`: stores `{"symbol", "price", "timestamp", "source"}`
//! records in `price_events`, and keeps per-symbol statistics in
//! `price_stats` by increments: the worked example of a handler that needs
//! exactly-once (the batch's offsets commit in the same transaction).
//! `timestamp` is an RFC 3339 string or a number of seconds since the Unix
//! epoch. An optional `raw_response_id` (string or integer: the market-data
//! producer's raw answer) is kept as text and is the event's identity: a
//! record repeating a stored event (re-published by an outbox after a crash)
//! goes to `dead_letters` saying so, and is counted, instead of being stored
//! twice. Other extra fields are
//! allowed and ignored. Each symbol's simple moving average over its last
//! `PRICE_SMA_WINDOW` prices is kept with its statistics.

use chrono::{DateTime, NaiveDateTime};
use serde_json::{Map, Value};

use crate::consume::{payload, Handler, HandlerContext, HandlerError, Record};
use crate::db::price_events::{insert_all, stored_raw_ids, NewPriceEvent};
use crate::db::price_stats::{self, PriceStat};

pub struct PriceEvents;

#[derive(Debug, PartialEq)]
pub struct Parsed {
    pub symbol: String,
    pub price: f64,
    pub timestamp: NaiveDateTime,
    pub source: String,
    pub raw_response_id: Option<String>,
}

pub fn parse(map: &Map<String, Value>) -> Result<Parsed, String> {
    let symbol = payload::string(map, "symbol")?;
    if symbol.len() > 32 {
        return Err(format!("field `symbol` is {} characters, at most 32 allowed", symbol.len()));
    }
    let price = payload::number(map, "price")?;
    if price < 0.0 {
        return Err(format!("field `price` must not be negative, got {price}"));
    }
    let timestamp = match map.get("timestamp") {
        None | Some(Value::Null) => return Err("field `timestamp` is missing".into()),
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.naive_utc())
            .map_err(|e| format!("field `timestamp` is not an RFC 3339 time ({e})"))?,
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|f| f.is_finite())
            .and_then(|secs| DateTime::from_timestamp_millis((secs * 1000.0) as i64))
            .map(|t| t.naive_utc())
            .ok_or_else(|| format!("field `timestamp` is out of range: {n}"))?,
        Some(other) => {
            return Err(format!(
                "field `timestamp` must be an RFC 3339 string or epoch seconds, got {}",
                payload::kind(other)
            ))
        }
    };
    let raw_response_id = match map.get("raw_response_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => return Err("field `raw_response_id` is an empty string".into()),
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        Some(other) => {
            return Err(format!("field `raw_response_id` must be a string or an integer, got {}", payload::kind(other)))
        }
    };
    Ok(Parsed { symbol, price, timestamp, source: payload::string(map, "source")?, raw_response_id })
}

impl Handler for PriceEvents {
    fn topic(&self) -> &'static str {
        crate::market::TOPIC
    }

    fn handle(&self, records: &[Record], ctx: &mut HandlerContext<'_>) -> Result<(), HandlerError> {
        let mut parsed = Vec::with_capacity(records.len());
        for r in records {
            match payload::json_object(r, ctx.max_record_bytes()).and_then(|m| parse(&m)) {
                Ok(p) => parsed.push((r, p)),
                Err(reason) => ctx.reject(r, reason),
            }
        }
        let ids: Vec<&str> = parsed.iter().filter_map(|(_, p)| p.raw_response_id.as_deref()).collect();
        let mut seen = stored_raw_ids(ctx.db(), &ids)?;
        let mut rows = Vec::with_capacity(parsed.len());
        let mut sources = Vec::with_capacity(parsed.len());
        for (r, p) in parsed {
            if let Some(id) = &p.raw_response_id {
                if !seen.insert(id.clone()) {
                    ctx.reject_repeat(r, &format!("raw_response_id {id}"));
                    continue;
                }
            }
            sources.push(r);
            rows.push(NewPriceEvent {
                symbol: p.symbol,
                price: p.price,
                timestamp: p.timestamp,
                source: p.source,
                raw_response_id: p.raw_response_id,
                source_topic: r.topic.clone(),
                source_partition: r.partition,
                source_offset: r.offset,
                source_fingerprint: Some(r.fingerprint()),
            });
        }
        let stored = insert_all(ctx.db(), &rows)?;
        for &i in &stored.reused {
            ctx.reject_reused(sources[i]);
        }
        // Increments over every event of the batch, not only the rows that
        // were new: right only because the batch is applied exactly once.
        let applied = (0..rows.len()).filter(|i| !stored.reused.contains(i));
        let stats = PriceStat::fold(applied.map(|i| (rows[i].symbol.as_str(), rows[i].price)));
        price_stats::add(ctx.db(), &stats)?;
        let window = ctx.settings().price_sma_window;
        for s in &stats {
            price_stats::update_moving_average(ctx.db(), &s.symbol, window)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<Parsed, String> {
        match serde_json::from_str::<Value>(s).unwrap() {
            Value::Object(m) => parse(&m),
            _ => unreachable!("tests pass objects"),
        }
    }

    #[test]
    fn accepts_rfc3339_and_epoch_seconds() {
        let a = parse_str(r#"{"symbol":"ACME","price":12.5,"timestamp":"2026-11-23T10:00:00Z","source":"x"}"#).unwrap();
        let b = parse_str(r#"{"symbol":"ACME","price":12.5,"timestamp":1795428000,"source":"x"}"#).unwrap();
        assert_eq!(a.timestamp, b.timestamp);
        assert_eq!(a.price, 12.5);
    }

    #[test]
    fn raw_response_id_is_kept_as_text_and_extra_fields_are_allowed() {
        let base = r#""symbol":"A","price":1,"timestamp":1,"source":"x""#;
        let id = |extra: &str| parse_str(&format!("{{{base}{extra}}}")).map(|p| p.raw_response_id);
        assert_eq!(id(r#","raw_response_id":"9f1c-uuid","extra":[1]"#), Ok(Some("9f1c-uuid".into())));
        assert_eq!(id(r#","raw_response_id":42"#), Ok(Some("42".into())));
        assert_eq!(id(""), Ok(None));
        assert_eq!(
            id(r#","raw_response_id":1.5"#),
            Err("field `raw_response_id` must be a string or an integer, got number".into())
        );
    }

    #[test]
    fn rejection_reasons() {
        let cases = [
            (r#"{"price":1,"timestamp":1,"source":"x"}"#, "field `symbol` is missing"),
            (r#"{"symbol":"A","price":"1","timestamp":1,"source":"x"}"#, "field `price` must be a number, got string"),
            (r#"{"symbol":"A","price":-1,"timestamp":1,"source":"x"}"#, "field `price` must not be negative, got -1"),
            (r#"{"symbol":"A","price":1,"source":"x"}"#, "field `timestamp` is missing"),
            (
                r#"{"symbol":"A","price":1,"timestamp":true,"source":"x"}"#,
                "field `timestamp` must be an RFC 3339 string or epoch seconds, got boolean",
            ),
            (r#"{"symbol":"A","price":1,"timestamp":1}"#, "field `source` is missing"),
        ];
        for (input, reason) in cases {
            assert_eq!(parse_str(input).unwrap_err(), reason, "input {input}");
        }
        assert!(parse_str(r#"{"symbol":"A","price":1,"timestamp":"yesterday","source":"x"}"#)
            .unwrap_err()
            .starts_with("field `timestamp` is not an RFC 3339 time"));
    }
}
