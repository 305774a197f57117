//! Topic `notifications`: validates each record and stores it as a `pending`
//! notification for the `send_notifications` job, one transaction per batch.
//!
//! Payload: `{"user_id": 42, "event": "order_shipped", "content": "..."}`;
//! `users` (a non-empty array of ids) may stand for `user_id`, and `message`
//! for `content`. An id is a non-negative integer (0 included) or a non-empty
//! string of at most 128 characters ("u-17", a UUID, "0042"), stored as sent:
//! `users` holds the JSON array, strings kept as strings.

use serde_json::{Map, Value};

use crate::consume::{payload, Handler, HandlerContext, HandlerError, Record};
use crate::db::notifications::{insert_all, NewNotification};

pub struct Notifications;

/// A valid notification payload.
#[derive(Debug, PartialEq)]
pub struct Parsed {
    pub users: Vec<Value>,
    pub event: String,
    pub content: String,
}

/// Validates one decoded payload, or says precisely what is wrong with it.
pub fn parse(map: &Map<String, Value>) -> Result<Parsed, String> {
    let users = match (map.get("user_id").filter(|v| !v.is_null()), map.get("users").filter(|v| !v.is_null())) {
        (Some(_), Some(_)) => return Err("fields `user_id` and `users` are both given; send one".into()),
        (Some(id), None) => vec![payload::id(id, "field `user_id`")?],
        (None, Some(Value::Array(items))) if items.is_empty() => return Err("field `users` is an empty array".into()),
        (None, Some(Value::Array(items))) => items
            .iter()
            .enumerate()
            .map(|(i, v)| payload::id(v, &format!("field `users[{i}]`")))
            .collect::<Result<_, _>>()?,
        (None, Some(other)) => return Err(format!("field `users` must be an array, got {}", payload::kind(other))),
        (None, None) => return Err("field `user_id` (or `users`) is missing".into()),
    };
    Ok(Parsed {
        users,
        event: payload::string(map, "event")?,
        content: payload::one_string_of(map, "content", "message")?,
    })
}

impl Handler for Notifications {
    fn topic(&self) -> &'static str {
        "notifications"
    }

    fn handle(&self, records: &[Record], ctx: &mut HandlerContext<'_>) -> Result<(), HandlerError> {
        let mut rows = Vec::with_capacity(records.len());
        let mut sources = Vec::with_capacity(records.len());
        let now = crate::db::now();
        for r in records {
            match payload::json_object(r, ctx.max_record_bytes()).and_then(|m| parse(&m)) {
                Ok(p) => {
                    let users = serde_json::to_string(&p.users).unwrap_or_else(|_| "[]".into());
                    rows.push(NewNotification::pending_at(now, Some(r.source()), users, p.event, p.content));
                    sources.push(r);
                }
                Err(reason) => ctx.reject(r, reason),
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        for i in insert_all(ctx.db(), &rows)?.reused {
            ctx.reject_reused(sources[i]);
        }
        ctx.wake_job(crate::deliver::sender::NAME);
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
    fn accepts_both_spellings_and_user_zero() {
        let p = parse_str(r#"{"user_id": 0, "event": "e", "content": "c"}"#).unwrap();
        assert_eq!(p, Parsed { users: vec![0.into()], event: "e".into(), content: "c".into() });
        let p = parse_str(r#"{"users": [1, 2], "event": "e", "message": "m"}"#).unwrap();
        assert_eq!(p.users, vec![Value::from(1), Value::from(2)]);
        assert_eq!(p.content, "m");
    }

    #[test]
    fn string_ids_are_kept_as_sent_beside_integers() {
        let uuid = "7f1c2a4e-9b0d-4c55-8e21-3f6a9d0b1c2e";
        let p = parse_str(&format!(r#"{{"users": [17, "u-17", "0042", "{uuid}"], "event": "e", "content": "c"}}"#))
            .unwrap();
        assert_eq!(serde_json::to_string(&p.users).unwrap(), format!(r#"[17,"u-17","0042","{uuid}"]"#));
        assert_eq!(
            parse_str(r#"{"user_id": "u-1", "event": "e", "content": "c"}"#).unwrap().users,
            vec![Value::from("u-1")]
        );
    }

    #[test]
    fn each_rejection_reason() {
        let cases = [
            (r#"{"event": "e", "content": "c"}"#, "field `user_id` (or `users`) is missing"),
            (
                r#"{"user_id": 1, "users": [1], "event": "e", "content": "c"}"#,
                "fields `user_id` and `users` are both given; send one",
            ),
            (r#"{"user_id": "", "event": "e", "content": "c"}"#, "field `user_id` is an empty string"),
            (
                r#"{"user_id": -3, "event": "e", "content": "c"}"#,
                "field `user_id` must be a non-negative integer or a non-empty string, got -3",
            ),
            (
                r#"{"user_id": 1.5, "event": "e", "content": "c"}"#,
                "field `user_id` must be a non-negative integer or a non-empty string, got 1.5",
            ),
            (
                r#"{"user_id": true, "event": "e", "content": "c"}"#,
                "field `user_id` must be a non-negative integer or a non-empty string, got boolean",
            ),
            (
                r#"{"users": [1, {"id": 2}], "event": "e", "content": "c"}"#,
                "field `users[1]` must be a non-negative integer or a non-empty string, got object",
            ),
            (
                r#"{"users": [1, null], "event": "e", "content": "c"}"#,
                "field `users[1]` must be a non-negative integer or a non-empty string, got null",
            ),
            (r#"{"users": [], "event": "e", "content": "c"}"#, "field `users` is an empty array"),
            (r#"{"users": 5, "event": "e", "content": "c"}"#, "field `users` must be an array, got number"),
            (r#"{"user_id": 1, "content": "c"}"#, "field `event` is missing"),
            (r#"{"user_id": 1, "event": 7, "content": "c"}"#, "field `event` must be a string, got number"),
            (r#"{"user_id": 1, "event": "e"}"#, "field `content` (or `message`) is missing"),
            (
                r#"{"user_id": 1, "event": "e", "content": "c", "message": "m"}"#,
                "fields `content` and `message` are both given; send one",
            ),
        ];
        for (input, reason) in cases {
            assert_eq!(parse_str(input).unwrap_err(), reason, "input {input}");
        }
    }
}
