//! The market-data commands: `prices fetch` and `outbox list|retry`.

use std::process::ExitCode;

use serde_json::{json, Value};

use super::output::{time, Output};
use super::store::run_job;
use super::{pool, OutboxCommand, PricesCommand};
use crate::config::Settings;
use crate::db::{outbox, DbError};
use crate::market::{self, Provider};
use crate::registry::Registry;
use crate::schedule::RunOutcome;

/// Runs the outbox publisher once, now; prints what it did.
fn publish(settings: &Settings, registry: &Registry, out: &Output) -> anyhow::Result<bool> {
    let (ok, outcome, detail) = match run_job(settings.clone(), pool(settings)?, registry, crate::market::outbox::JOB)?
    {
        RunOutcome::Ok(r) => (true, "ok", r.details),
        RunOutcome::Failed(e) => (false, "failed", e),
        // A running service publishes right now; the rows are its to send.
        RunOutcome::SkippedLease => (true, "another copy publishes", String::new()),
        RunOutcome::SkippedOverlap => (true, "already publishing", String::new()),
    };
    out.object(&[("publish", json!(outcome)), ("details", json!(detail))]);
    Ok(ok)
}

pub fn prices(
    settings: &Settings,
    registry: &Registry,
    out: &Output,
    command: PricesCommand,
) -> anyhow::Result<ExitCode> {
    let PricesCommand::Fetch { symbols } = command;
    let pool = pool(settings)?;
    let provider = Provider::new(settings);
    let mut failed = 0;
    for symbol in &symbols {
        match market::fetch(settings, &provider, &pool, symbol) {
            Ok(e) => out.object(&[
                ("symbol", json!(e.symbol)),
                ("price", json!(e.price)),
                ("timestamp", json!(e.timestamp)),
                ("source", json!(e.source)),
                ("raw_response_id", json!(e.raw_response_id)),
            ]),
            Err(e) => {
                failed += 1;
                eprintln!("error: {symbol}: {e}");
            }
        }
    }
    // With KAFKA_ENABLED=false nothing was enqueued: there is nothing to publish.
    let published = failed < symbols.len() && (!settings.kafka_enabled || publish(settings, registry, out)?);
    Ok(if failed == 0 && published { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub fn outbox(
    settings: &Settings,
    registry: &Registry,
    out: &Output,
    command: OutboxCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        OutboxCommand::List { all, limit } => {
            let pool = pool(settings)?;
            let mut conn = pool.get().map_err(DbError::Pool)?;
            let rows = outbox::list(&mut conn, all, limit)?;
            let rows: Vec<Vec<Value>> = rows
                .iter()
                .map(|r| {
                    vec![
                        json!(r.id),
                        json!(r.topic),
                        json!(r.key),
                        time(Some(r.created_at)),
                        time(r.published_at),
                        json!(r.attempts),
                        json!(r.last_error),
                    ]
                })
                .collect();
            out.rows(&["ID", "TOPIC", "KEY", "CREATED_AT", "PUBLISHED_AT", "ATTEMPTS", "LAST_ERROR"], &rows);
            Ok(ExitCode::SUCCESS)
        }
        OutboxCommand::Retry => {
            Ok(if publish(settings, registry, out)? { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
    }
}
