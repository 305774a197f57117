//! The command line: `run` (default), `migrate`, `produce`, `topics`,
//! `config`. Each command loads the settings itself so that `--help` works
//! without a valid `.env`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};

use crate::config::{ConfigError, Settings};
use crate::db::DbError;
use crate::kafka::SetupError;
use crate::shutdown::Shutdown;
use crate::{app, db, kafka};

#[derive(Parser, Debug)]
#[command(
    name = "cronsumer",
    version,
    about = "A batch Kafka consumer and an embedded cron scheduler in one service.",
    long_about = "A batch Kafka consumer and an embedded cron scheduler in one service.\n\n\
Settings come from the environment and ./.env (the environment wins); see .env.example.\n\
Without a command, `run` is assumed."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the service: consumer thread, scheduler, HTTP endpoints (default).
    Run,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Produce records to a topic (acks=all, idempotent); exits 1 if any is not delivered.
    Produce {
        /// Topic to produce to (taken literally, no KAFKA_TOPIC_PREFIX).
        topic: String,
        /// Record key.
        #[arg(long)]
        key: Option<String>,
        /// The payload of one record (usually JSON).
        #[arg(conflicts_with = "file")]
        json: Option<String>,
        /// Produce one record per non-empty line of this file (`-` for standard input).
        #[arg(long, short)]
        file: Option<PathBuf>,
    },
    /// List the topics the consumer modules need and check that they exist.
    Topics {
        /// Create the missing topics.
        #[arg(long)]
        create: bool,
        /// Partitions for created topics.
        #[arg(long, default_value_t = kafka::DEFAULT_PARTITIONS)]
        partitions: i32,
    },
    /// Print the effective settings, secrets redacted.
    Config,
    /// Scheduled jobs: list them, or run one now.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// Each job with its schedule, last run, outcome and next run.
    List,
    /// Run one job once, now, with the same overlap guard and ledger as the scheduler.
    Run {
        /// The job's name (see `cronsumer jobs list`).
        name: String,
    },
}

/// A usage problem found after parsing (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// 2 for configuration and usage problems, 1 for the rest.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.is::<ConfigError>() || cause.is::<UsageError>() {
            return 2;
        }
        if let Some(SetupError::MissingTopics(_)) = cause.downcast_ref::<SetupError>() {
            return 2;
        }
        if let Some(DbError::Connect { .. }) = cause.downcast_ref::<DbError>() {
            return 2;
        }
    }
    1
}

/// Panics become one log line; no backtrace is printed to the user.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let msg = crate::router::panic_message(info.payload());
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        log::error!("panic in thread {}{at}: {msg}", thread.name().unwrap_or("unnamed"));
    }));
}

fn init_logging(settings: &Settings) {
    let _ = env_logger::Builder::new().parse_filters(&settings.rust_log).format_target(false).try_init();
}

pub fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    let settings = Settings::load()?;
    init_logging(&settings);
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let shutdown = Shutdown::new();
            app::watch_signals(shutdown.clone()).context("cannot watch for signals")?;
            app::run(settings, shutdown)?;
        }
        Command::Migrate => {
            let (_, applied) = db::connect_and_migrate(&settings.database_url, 1)?;
            if applied.is_empty() {
                println!("database {} is up to date", db::redact_url(&settings.database_url));
            } else {
                for m in applied {
                    println!("applied {m}");
                }
            }
        }
        Command::Produce { topic, key, json, file } => produce(&settings, &topic, key.as_deref(), json, file)?,
        Command::Topics { create, partitions } => return topics(&settings, create, partitions),
        Command::Jobs { command } => return jobs(settings, command),
        Command::Config => {
            for (name, value) in settings.describe() {
                println!("{name}={value}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn produce(
    settings: &Settings,
    topic: &str,
    key: Option<&str>,
    json: Option<String>,
    file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let mut producer = crate::producer::RecordProducer::new(settings)?;
    let key = key.map(str::as_bytes);
    match (json, file) {
        (Some(payload), None) => producer.send(topic, key, payload.as_bytes())?,
        (None, Some(path)) => {
            let (reader, total): (Box<dyn BufRead>, u64) = if path.as_os_str() == "-" {
                (Box::new(BufReader::new(std::io::stdin())), 0)
            } else {
                let f = std::fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
                let total = BufReader::new(&f).lines().count() as u64;
                let f = std::fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
                (Box::new(BufReader::new(f)), total)
            };
            // Drawn only on a terminal (stderr), and only for files worth waiting on.
            let bar = if total >= 1000 { indicatif::ProgressBar::new(total) } else { indicatif::ProgressBar::hidden() };
            for line in reader.lines() {
                let line = line.context("cannot read input")?;
                if line.trim().is_empty() {
                    continue;
                }
                producer.send(topic, key, line.as_bytes())?;
                bar.inc(1);
            }
            bar.finish_and_clear();
        }
        _ => {
            bail!(UsageError("give one payload as an argument, or --file FILE (or --file - for standard input)".into()))
        }
    }
    let delivered = producer.finish(topic)?;
    println!("delivered {delivered} record(s) to {topic}");
    Ok(())
}

fn topics(settings: &Settings, create: bool, partitions: i32) -> anyhow::Result<ExitCode> {
    let admin = kafka::admin_client(settings)?;
    let metadata = kafka::wait_for_broker(settings, &admin, &|| false)?;
    let existing = kafka::existing_topics(&metadata);
    let mut missing = Vec::new();
    println!("{:<40} {:<8} PARTITIONS", "TOPIC", "EXISTS");
    for topic in app::required_topics(settings) {
        match existing.iter().find(|(n, _)| *n == topic) {
            Some((_, p)) => println!("{topic:<40} {:<8} {p}", "yes"),
            None => {
                println!("{topic:<40} {:<8} -", "no");
                missing.push(topic);
            }
        }
    }
    if missing.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    if create {
        kafka::create_topics(settings, &admin, &missing, partitions)?;
        for t in &missing {
            println!("created {t} with {partitions} partition(s)");
        }
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("missing: {} (run `cronsumer topics --create`)", missing.join(", "));
    Ok(ExitCode::from(1))
}

fn jobs(settings: Settings, command: JobsCommand) -> anyhow::Result<ExitCode> {
    let (pool, _) = db::connect_and_migrate(&settings.database_url, 2)?;
    let registry = crate::jobs::registry();
    match command {
        JobsCommand::List => {
            let mut conn = pool.get().map_err(DbError::Pool)?;
            println!("{:<20} {:<16} {:<20} {:<8} NEXT RUN", "JOB", "SCHEDULE", "LAST RUN", "OUTCOME");
            for job in &registry {
                let cron = job.schedule(&settings);
                let last = db::job_runs::last(&mut conn, job.name())?;
                let fmt = |t: chrono::NaiveDateTime| t.format("%Y-%m-%d %H:%M:%S").to_string();
                println!(
                    "{:<20} {:<16} {:<20} {:<8} {}",
                    job.name(),
                    cron,
                    last.as_ref().map(|r| fmt(r.started_at)).unwrap_or_else(|| "never".into()),
                    last.as_ref().map(|r| r.outcome.as_str()).unwrap_or("-"),
                    crate::scheduler::next_run(&cron).map(|t| fmt(t.naive_utc())).unwrap_or_else(|| "-".into()),
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        JobsCommand::Run { name } => {
            let Some(job) = registry.into_iter().find(|j| j.name() == name) else {
                let names: Vec<&str> = crate::jobs::registry().iter().map(|j| j.name()).collect();
                bail!(UsageError(format!("no job named {name:?}; jobs: {}", names.join(", "))));
            };
            let ctx = std::sync::Arc::new(crate::scheduler::JobContext::new(
                std::sync::Arc::new(settings),
                pool,
                None,
                Shutdown::new(),
            ));
            match crate::scheduler::JobRunner::new(job, ctx).run(crate::scheduler::Trigger::Manual) {
                crate::scheduler::RunOutcome::Ok(report) => {
                    println!("{name}: ok {}", report.details);
                    Ok(ExitCode::SUCCESS)
                }
                crate::scheduler::RunOutcome::Failed(e) => {
                    eprintln!("{name}: failed: {e}");
                    Ok(ExitCode::from(1))
                }
                other => {
                    eprintln!("{name}: not run: {other:?}");
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}
