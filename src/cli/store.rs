//! Commands over the stored rows: `dead-letters`, `notifications`, `jobs`.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::bail;
use serde_json::{json, Value};

use super::output::{bytes, time, Output};
use super::{pool, DeadLettersCommand, JobsCommand, NotificationsCommand, UsageError};
use crate::app;
use crate::common::shutdown::Shutdown;
use crate::config::Settings;
use crate::consume::replay::ReplayError;
use crate::db::{self, dead_letters, notifications, DbError};
use crate::registry::Registry;
use crate::schedule::{Job, JobContext, JobRunner, RunOutcome, Trigger};

/// `YYYY-MM-DD` (midnight UTC) or RFC 3339.
fn parse_date(s: &str) -> Result<chrono::NaiveDateTime, UsageError> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).unwrap_or_default());
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.naive_utc())
        .map_err(|_| UsageError(format!("--before {s:?}: expected YYYY-MM-DD or an RFC 3339 time")))
}

fn dead_letter_row(d: &dead_letters::DeadLetter, with_payload: bool) -> Vec<(&'static str, Value)> {
    let mut f = vec![
        ("id", json!(d.id)),
        ("topic", json!(d.topic)),
        ("partition", json!(d.partition)),
        ("offset", json!(d.offset)),
        ("error", json!(d.error)),
        ("failed_at", time(Some(d.failed_at))),
        ("replayed_at", time(d.replayed_at)),
    ];
    if with_payload {
        f.push(("key", bytes(d.key.as_deref())));
        f.push(("payload", bytes(d.payload.as_deref())));
    }
    f
}

pub fn dead_letters(settings: &Settings, out: &Output, command: DeadLettersCommand) -> anyhow::Result<ExitCode> {
    let pool = pool(settings)?;
    let mut conn = pool.get().map_err(DbError::Pool)?;
    match command {
        DeadLettersCommand::List { topic, limit } => {
            // The listing shows no payload: only their first bytes are read.
            let rows = dead_letters::previews(&mut conn, topic.as_deref(), limit)?;
            let headers = ["ID", "TOPIC", "PARTITION", "OFFSET", "ERROR", "FAILED_AT", "REPLAYED_AT"];
            let rows: Vec<Vec<Value>> =
                rows.iter().map(|d| dead_letter_row(d, false).into_iter().map(|(_, v)| v).collect()).collect();
            out.rows(&headers, &rows);
        }
        DeadLettersCommand::Show { id } => {
            let Some(d) = dead_letters::find(&mut conn, id)? else {
                bail!(UsageError(format!("no dead letter with id {id} (see `cronsumer dead-letters list`)")));
            };
            out.object(&dead_letter_row(&d, true));
        }
        DeadLettersCommand::Replay { id, all, topic } => {
            let targets = if all {
                dead_letters::unreplayed(&mut conn, topic.as_deref())?
            } else {
                let id = id.unwrap_or_default();
                match dead_letters::find(&mut conn, id)? {
                    Some(d) => vec![d],
                    None => {
                        bail!(UsageError(format!("no dead letter with id {id} (see `cronsumer dead-letters list`)")))
                    }
                }
            };
            drop(conn);
            let delivered = match crate::consume::replay::replay(settings, &pool, &targets) {
                Err(ReplayError::Taken) if !all => {
                    bail!(UsageError(format!("dead letter {}: being replayed now, or replayed already", targets[0].id)))
                }
                Err(ReplayError::Taken) => 0,
                result => result?,
            };
            if out.json {
                out.object(&[("replayed", json!(delivered))]);
            } else {
                println!("replayed {delivered} dead letter(s)");
            }
        }
        DeadLettersCommand::Purge { before } => {
            let before = parse_date(&before)?;
            let n = dead_letters::purge_before(&mut conn, before, false)?;
            if out.json {
                out.object(&[("purged", json!(n))]);
            } else {
                println!("purged {n} dead letter(s) that failed before {before}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn notifications(settings: &Settings, out: &Output, command: NotificationsCommand) -> anyhow::Result<ExitCode> {
    let pool = pool(settings)?;
    let mut conn = pool.get().map_err(DbError::Pool)?;
    match command {
        NotificationsCommand::List { status, limit } => {
            if let Some(s) = &status {
                let known = [notifications::PENDING, notifications::SENT, notifications::FAILED];
                if !known.contains(&s.as_str()) {
                    bail!(UsageError(format!("--status {s:?}: expected one of {}", known.join(", "))));
                }
            }
            let rows = notifications::list(&mut conn, status.as_deref(), limit)?;
            let headers =
                ["ID", "STATUS", "ATTEMPTS", "USERS", "EVENT", "MESSAGE", "CREATED_AT", "SENT_AT", "LAST_ERROR"];
            let rows: Vec<Vec<Value>> = rows
                .iter()
                .map(|n| {
                    vec![
                        json!(n.id),
                        json!(n.status),
                        json!(n.attempts),
                        json!(n.users),
                        json!(n.event),
                        json!(n.message),
                        time(Some(n.created_at)),
                        time(n.sent_at),
                        json!(n.last_error),
                    ]
                })
                .collect();
            out.rows(&headers, &rows);
        }
        NotificationsCommand::Retry { id } => {
            match notifications::retry_now(&mut conn, id, false)? {
                notifications::Retried::Done => {}
                // As the console's retry: a row being sent would be delivered twice at once.
                notifications::Retried::BeingSent => bail!(UsageError(format!(
                    "notification {id} is being sent now; retry it once it is sent or failed"
                ))),
                notifications::Retried::Missing => {
                    bail!(UsageError(format!("no notification with id {id} (see `cronsumer notifications list`)")))
                }
            }
            println!("notification {id} is pending again");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the registry's job `name` once, now, as `cronsumer jobs run` does.
pub fn run_job(settings: Settings, pool: db::Pool, registry: &Registry, name: &str) -> anyhow::Result<RunOutcome> {
    let topics = registry.topics(&settings);
    let jobs: Vec<Arc<dyn Job>> = app::jobs(&settings, registry, None);
    let names: Vec<&str> = jobs.iter().map(|j| j.name()).collect();
    let Some(job) = jobs.iter().find(|j| j.name() == name).cloned() else {
        bail!(UsageError(format!("no job named {name:?}; jobs: {}", names.join(", "))));
    };
    if let Some(why) = job.off(&settings) {
        bail!(UsageError(format!("job {name} is off with these settings: {why}")));
    }
    let ctx = Arc::new(JobContext::new(Arc::new(settings), pool, Shutdown::new()).with_topics(topics));
    Ok(JobRunner::new(job, ctx)?.run(Trigger::Manual))
}

pub fn jobs(settings: Settings, registry: &Registry, out: &Output, command: JobsCommand) -> anyhow::Result<ExitCode> {
    let pool = pool(&settings)?;
    match command {
        JobsCommand::List => {
            let mut conn = pool.get().map_err(DbError::Pool)?;
            let mut rows = Vec::new();
            for job in &app::jobs(&settings, registry, None) {
                let cron = job.schedule(&settings).map_err(|e| anyhow::anyhow!("job {}: {e}", job.name()))?;
                let last = db::job_runs::last(&mut conn, job.name())?;
                let off = job.off(&settings);
                let next = if off.is_some() { None } else { cron.next_after(chrono::Utc::now()) };
                rows.push(vec![
                    json!(job.name()),
                    json!(cron.as_str()),
                    time(last.as_ref().map(|r| r.started_at)),
                    last.as_ref().map(|r| json!(r.outcome)).unwrap_or(Value::Null),
                    time(next.map(|t| t.naive_utc())),
                    json!(off.map_or("on".to_string(), |why| format!("off: {why}"))),
                ]);
            }
            out.rows(&["JOB", "SCHEDULE", "LAST_RUN", "OUTCOME", "NEXT_RUN", "STATE"], &rows);
            Ok(ExitCode::SUCCESS)
        }
        JobsCommand::Run { name } => {
            let (code, outcome, detail) = match run_job(settings, pool, registry, &name)? {
                RunOutcome::Ok(report) => (0, "ok", report.details),
                RunOutcome::Failed(e) => (1, "failed", e),
                other => (1, "not run", format!("{other:?}")),
            };
            out.object(&[("job", json!(name)), ("outcome", json!(outcome)), ("details", json!(detail))]);
            Ok(ExitCode::from(code))
        }
    }
}
