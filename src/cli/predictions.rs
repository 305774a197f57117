//! `cronsumer predictions`: the stored predictions, listed or exported as CSV.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use serde_json::{json, Value};

use super::output::{time, Output};
use super::pool;
use crate::config::Settings;
use crate::db::predictions::{self, Prediction};
use crate::db::DbError;

#[derive(Subcommand, Debug)]
pub enum PredictionsCommand {
    /// Newest first.
    List {
        /// Only this key's (`PREDICT_KEY_FIELD`, e.g. a symbol).
        #[arg(long)]
        key: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Every prediction as CSV, oldest first: a header, then one line each,
    /// read page by page (any size).
    Export {
        /// The format (the one there is).
        #[arg(long, required = true)]
        csv: bool,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Only this key's.
        #[arg(long)]
        key: Option<String>,
    },
}

/// The CSV columns, in order.
const COLUMNS: [&str; 11] = [
    "id",
    "created_at",
    "key",
    "model",
    "model_version",
    "source_topic",
    "source_partition",
    "source_offset",
    "latency_ms",
    "input",
    "prediction",
];
/// Rows read per query of an export.
const PAGE: i64 = 1_000;

fn fields(p: &Prediction) -> [Value; 11] {
    let parsed = |text: &str| serde_json::from_str(text).unwrap_or_else(|_| json!(text));
    [
        json!(p.id),
        time(Some(p.created_at)),
        json!(p.key),
        json!(p.model),
        json!(p.model_version),
        json!(p.source_topic),
        json!(p.source_partition),
        json!(p.source_offset),
        json!(p.latency_ms),
        parsed(&p.input),
        parsed(&p.prediction),
    ]
}

/// One CSV field (RFC 4180): quoted when it holds a comma, a quote or a line break.
pub fn csv_field(v: &Value) -> String {
    let text = match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

fn csv_line(values: &[Value]) -> String {
    values.iter().map(csv_field).collect::<Vec<_>>().join(",") + "\n"
}

pub fn run(settings: &Settings, out: &Output, command: PredictionsCommand) -> anyhow::Result<ExitCode> {
    let pool = pool(settings)?;
    let mut conn = pool.get().map_err(DbError::Pool)?;
    match command {
        PredictionsCommand::List { key, limit } => {
            let rows = predictions::recent(&mut conn, key.as_deref(), limit)?;
            let headers = COLUMNS.map(str::to_ascii_uppercase);
            let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
            let rows: Vec<Vec<Value>> = rows.iter().map(|p| fields(p).to_vec()).collect();
            out.rows(&headers, &rows);
        }
        PredictionsCommand::Export { csv: _, output, key } => {
            let mut sink: Box<dyn Write> = match &output {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let (mut after, mut lines) = (0, 0u64);
            let mut write = |text: &str| sink.write_all(text.as_bytes());
            let written = (|| -> std::io::Result<()> {
                write(&(COLUMNS.join(",") + "\n"))?;
                loop {
                    let page =
                        predictions::page(&mut conn, key.as_deref(), after, PAGE).map_err(std::io::Error::other)?;
                    for p in &page {
                        write(&csv_line(&fields(p)))?;
                    }
                    lines += page.len() as u64;
                    match page.last() {
                        Some(last) if page.len() as i64 == PAGE => after = last.id,
                        _ => return Ok(()),
                    }
                }
            })();
            match written.and_then(|()| sink.flush()) {
                // A reader that stopped early (`| head`) is no failure.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                other => other.context("writing the export")?,
            }
            if let Some(path) = output {
                eprintln!("exported {lines} predictions to {}", path.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_they_must_be() {
        assert_eq!(csv_field(&json!("BTCUSDT")), "BTCUSDT");
        assert_eq!(csv_field(&json!(null)), "");
        assert_eq!(csv_field(&json!(12.5)), "12.5");
        assert_eq!(csv_field(&json!({"p_up": 0.6, "d": "up"})), r#""{""d"":""up"",""p_up"":0.6}""#);
        assert_eq!(csv_field(&json!("a\nb")), "\"a\nb\"");
        assert_eq!(csv_line(&[json!(1), json!("x,y")]), "1,\"x,y\"\n");
    }
}
