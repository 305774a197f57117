//! Command output: an aligned table for people, or one JSON object per line
//! with `--json` for scripts.

use std::io::IsTerminal;

use serde_json::Value;

pub struct Output {
    pub json: bool,
}

impl Output {
    /// Prints rows as a table (headers first) or as JSON lines (one object per row).
    pub fn rows(&self, headers: &[&str], rows: &[Vec<Value>]) {
        if self.json {
            for row in rows {
                let obj: serde_json::Map<String, Value> =
                    headers.iter().map(|h| h.to_ascii_lowercase()).zip(row.iter().cloned()).collect();
                println!("{}", Value::Object(obj));
            }
            return;
        }
        let cells: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(cell).collect()).collect();
        let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
        for r in &cells {
            for (i, c) in r.iter().enumerate() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let line = |items: Vec<String>| {
            let padded: Vec<String> =
                items.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
            println!("{}", padded.join("  ").trim_end());
        };
        line(headers.iter().map(|h| h.to_string()).collect());
        for r in cells {
            line(r);
        }
        if rows.is_empty() && std::io::stdout().is_terminal() {
            println!("(none)");
        }
    }

    /// Prints one object: `key: value` lines, or one JSON line.
    pub fn object(&self, fields: &[(&str, Value)]) {
        if self.json {
            let obj: serde_json::Map<String, Value> = fields.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
            println!("{}", Value::Object(obj));
        } else {
            let w = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            for (k, v) in fields {
                println!("{k:<w$}  {}", cell(v));
            }
        }
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.replace('\n', "\\n"),
        other => other.to_string(),
    }
}

/// Bytes as text when they are UTF-8, else as hex (`0x...`).
pub fn bytes(b: Option<&[u8]>) -> Value {
    match b {
        None => Value::Null,
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => Value::String(s.to_string()),
            Err(_) => Value::String(format!("0x{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>())),
        },
    }
}

/// A stored UTC time in RFC 3339.
pub fn time(t: Option<chrono::NaiveDateTime>) -> Value {
    t.map(|t| Value::String(t.and_utc().format("%Y-%m-%dT%H:%M:%SZ").to_string())).unwrap_or(Value::Null)
}
