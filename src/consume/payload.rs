//! Payload validation shared by the consumer modules: size bound, UTF-8,
//! JSON object, and typed field access. Every failure is a precise reason
//! that ends up in `dead_letters.error`.

use serde_json::{Map, Value};

use crate::common::record::Record;

/// Decodes a record's payload as a JSON object, or says why it cannot.
pub fn json_object(record: &Record, max_bytes: usize) -> Result<Map<String, Value>, String> {
    let bytes = record.payload.as_deref().ok_or("empty payload (tombstone record)")?;
    if bytes.len() > max_bytes {
        return Err(format!("payload is {} bytes, over CONSUMER_MAX_RECORD_BYTES={max_bytes}", bytes.len()));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| format!("payload is not valid UTF-8 (invalid byte at position {})", e.valid_up_to()))?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(format!("payload is a JSON {}, expected an object", kind(&other))),
        Err(e) => Err(format!("payload is not valid JSON: {e}")),
    }
}

/// The JSON type name of a value, for error messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A required, non-empty string field.
pub fn string(map: &Map<String, Value>, field: &str) -> Result<String, String> {
    match map.get(field) {
        None | Some(Value::Null) => Err(format!("field `{field}` is missing")),
        Some(Value::String(s)) if s.trim().is_empty() => Err(format!("field `{field}` is empty")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!("field `{field}` must be a string, got {}", kind(other))),
    }
}

/// Exactly one of two alternative string fields (`content` or `message`).
pub fn one_string_of(map: &Map<String, Value>, a: &str, b: &str) -> Result<String, String> {
    match (map.get(a).filter(|v| !v.is_null()), map.get(b).filter(|v| !v.is_null())) {
        (Some(_), Some(_)) => Err(format!("fields `{a}` and `{b}` are both given; send one")),
        (Some(_), None) => string(map, a),
        (None, Some(_)) => string(map, b),
        (None, None) => Err(format!("field `{a}` (or `{b}`) is missing")),
    }
}

/// An id as sent: a non-negative integer or a non-empty string of at most
/// [`MAX_ID_CHARS`] characters.
pub fn id(v: &Value, what: &str) -> Result<Value, String> {
    match v {
        Value::Number(n) => match n.as_u64() {
            Some(_) => Ok(v.clone()),
            None => Err(format!("{what} must be a non-negative integer or a non-empty string, got {n}")),
        },
        Value::String(s) if s.is_empty() => Err(format!("{what} is an empty string")),
        Value::String(s) if s.chars().count() > MAX_ID_CHARS => {
            Err(format!("{what} is {} characters, at most {MAX_ID_CHARS} allowed", s.chars().count()))
        }
        Value::String(_) => Ok(v.clone()),
        other => Err(format!("{what} must be a non-negative integer or a non-empty string, got {}", kind(other))),
    }
}

/// Longest string id (user ids are often UUIDs: 36).
pub const MAX_ID_CHARS: usize = 128;

/// A finite number.
pub fn number(map: &Map<String, Value>, field: &str) -> Result<f64, String> {
    match map.get(field) {
        None | Some(Value::Null) => Err(format!("field `{field}` is missing")),
        Some(Value::Number(n)) => {
            n.as_f64().filter(|f| f.is_finite()).ok_or(format!("field `{field}` is not a finite number"))
        }
        Some(other) => Err(format!("field `{field}` must be a number, got {}", kind(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(payload: &[u8]) -> Record {
        Record {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            key: None,
            payload: Some(payload.to_vec()),
            timestamp: None,
        }
    }

    #[test]
    fn rejection_reasons() {
        let tomb = Record { payload: None, ..rec(b"") };
        assert_eq!(json_object(&tomb, 100).unwrap_err(), "empty payload (tombstone record)");
        assert_eq!(json_object(&rec(b"{}"), 1).unwrap_err(), "payload is 2 bytes, over CONSUMER_MAX_RECORD_BYTES=1");
        assert_eq!(
            json_object(&rec(b"{\"a\":\"\xff\"}"), 100).unwrap_err(),
            "payload is not valid UTF-8 (invalid byte at position 6)"
        );
        assert!(json_object(&rec(b"{nope"), 100).unwrap_err().starts_with("payload is not valid JSON: "));
        assert_eq!(json_object(&rec(b"[1]"), 100).unwrap_err(), "payload is a JSON array, expected an object");
        let deep = "[".repeat(10_000);
        assert!(json_object(&rec(deep.as_bytes()), 100_000).unwrap_err().contains("recursion limit"));
    }

    #[test]
    fn typed_fields() {
        let m = json_object(&rec(br#"{"s":"x","e":"  ","n":3,"z":0,"neg":-1,"f":1.5}"#), 1000).unwrap();
        assert_eq!(string(&m, "s").unwrap(), "x");
        assert_eq!(string(&m, "missing").unwrap_err(), "field `missing` is missing");
        assert_eq!(string(&m, "e").unwrap_err(), "field `e` is empty");
        assert_eq!(string(&m, "n").unwrap_err(), "field `n` must be a string, got number");
        assert_eq!(id(&m["z"], "user_id").unwrap(), serde_json::json!(0));
        assert_eq!(id(&m["s"], "user_id").unwrap(), serde_json::json!("x"));
        let either = "user_id must be a non-negative integer or a non-empty string, got";
        assert_eq!(id(&m["neg"], "user_id").unwrap_err(), format!("{either} -1"));
        assert_eq!(id(&m["f"], "user_id").unwrap_err(), format!("{either} 1.5"));
        let long = serde_json::Value::String("u".repeat(MAX_ID_CHARS + 1));
        assert_eq!(id(&long, "user_id").unwrap_err(), "user_id is 129 characters, at most 128 allowed");
        assert!(id(&serde_json::Value::String("é".repeat(MAX_ID_CHARS)), "user_id").is_ok());
        assert_eq!(number(&m, "f").unwrap(), 1.5);
        assert_eq!(number(&m, "s").unwrap_err(), "field `s` must be a number, got string");
        assert_eq!(one_string_of(&m, "s", "e").unwrap_err(), "fields `s` and `e` are both given; send one");
        assert_eq!(one_string_of(&m, "s", "x").unwrap(), "x");
        assert_eq!(one_string_of(&m, "x", "y").unwrap_err(), "field `x` (or `y`) is missing");
    }
}
