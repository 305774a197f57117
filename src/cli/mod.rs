//! The command line: `run` (default), `migrate`, `config`, `produce`, `tail`,
//! `topics`, `diagnose`, `dead-letters`, `notifications`, `jobs`, `prices`, `outbox`,
//! `healthcheck`. Each command
//! loads the settings itself so that `--help` works without a valid `.env`.
//!
//! Inside: the commands and their dispatch (here), and one file per group
//! of commands. It may use every part.

mod diagnose;
mod market;
mod output;
mod predictions;
mod records;
mod store;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use clap::{Parser, Subcommand};

use crate::common::shutdown::Shutdown;
use crate::config::{ConfigError, Settings};
use crate::db::DbError;
use crate::events::{Event as _, Lifecycle};
use crate::kafka::SetupError;
use crate::registry::Registry;
use crate::{app, db, kafka};

pub use output::Output;

#[derive(Parser, Debug)]
#[command(
    name = "cronsumer",
    version,
    about = "A batch Kafka consumer and an embedded cron scheduler in one service.",
    long_about = "A batch Kafka consumer and an embedded cron scheduler in one service.\n\n\
Settings come from the environment and ./.env (the environment wins); see .env.example.\n\
Without a command, `run` is assumed. Exit codes: 0 ok, 1 failure, 2 bad configuration or usage."
)]
pub struct Cli {
    /// Print JSON lines instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the service: consumer thread, scheduler, HTTP endpoints (default).
    Run,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the effective settings, secrets redacted.
    Config {
        /// Print instead every setting with its help and default, as `.env.example` holds them.
        #[arg(long, conflicts_with = "markdown")]
        example: bool,
        /// Print instead the settings table of the README (Markdown).
        #[arg(long)]
        markdown: bool,
    },
    /// Produce records to a topic (acks=all, idempotent); exits 1 if any is not delivered.
    Produce {
        /// Topic to produce to (taken literally, no KAFKA_TOPIC_PREFIX).
        topic: String,
        /// Record key.
        #[arg(long)]
        key: Option<String>,
        /// The payload of one record; `-` reads one record per non-empty line of standard input.
        #[arg(conflicts_with = "file")]
        json_payload: Option<String>,
        /// Produce one record per non-empty line of this file (`-` for standard input).
        #[arg(long, short)]
        file: Option<PathBuf>,
        /// Send payloads as they are; without it each must be JSON.
        #[arg(long)]
        raw: bool,
    },
    /// Print a topic's records as they arrive, without joining the service's group.
    Tail {
        topic: String,
        /// Start at the oldest record instead of new ones.
        #[arg(long)]
        from_beginning: bool,
        /// Stop after this many records.
        #[arg(long)]
        max: Option<u64>,
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
    /// Check broker, topics, consumer group and lag, database and jobs; exit 1 if anything is wrong.
    Diagnose {
        /// Inspect this consumer group instead of KAFKA_GROUP_ID.
        #[arg(long)]
        group_id: Option<String>,
    },
    /// Records the consumer modules rejected.
    #[command(name = "dead-letters")]
    DeadLetters {
        #[command(subcommand)]
        command: DeadLettersCommand,
    },
    /// Stored notifications.
    Notifications {
        #[command(subcommand)]
        command: NotificationsCommand,
    },
    /// Scheduled jobs: list them, or run one now.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Market-data prices.
    Prices {
        #[command(subcommand)]
        command: PricesCommand,
    },
    /// Predictions of the predictions module: list them, or export them as CSV.
    Predictions {
        #[command(subcommand)]
        command: predictions::PredictionsCommand,
    },
    /// Events waiting to be published to Kafka.
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
    },
    /// Ask the running service's /healthz (on HTTP_ADDR): exit 0 when it
    /// answers 200, 1 otherwise. For container and service-manager health checks.
    Healthcheck,
}

#[derive(Subcommand, Debug)]
pub enum DeadLettersCommand {
    /// Newest first.
    List {
        #[arg(long)]
        topic: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// One dead letter with its payload.
    Show { id: i64 },
    /// Produce the original key and payload to its topic again and mark it replayed.
    Replay {
        /// The dead letter to replay.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Replay every dead letter not replayed yet.
        #[arg(long)]
        all: bool,
        /// With --all: only this topic's.
        #[arg(long, requires = "all")]
        topic: Option<String>,
    },
    /// Delete dead letters that failed before DATE (YYYY-MM-DD or RFC 3339, UTC).
    Purge {
        #[arg(long)]
        before: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum NotificationsCommand {
    /// Newest first.
    List {
        /// pending, sent or failed.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Put a notification back to pending, due now.
    Retry { id: i64 },
}

#[derive(Subcommand, Debug)]
pub enum PricesCommand {
    /// Fetch each symbol's price now: store the provider's answer, enqueue the
    /// event, print it, and publish the outbox; exit 1 if any fetch failed.
    Fetch {
        #[arg(required = true)]
        symbols: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum OutboxCommand {
    /// Newest first: rows waiting to be published (all rows with --all).
    List {
        #[arg(long)]
        all: bool,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Publish every waiting row now (what `publish_outbox` does on its own every 5 s).
    Retry,
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
        let msg = crate::common::panic_message(info.payload());
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        log::error!("panic in thread {}{at}: {msg}", thread.name().unwrap_or("unnamed"));
    }));
}

fn init_logging(settings: &Settings) {
    // The HTTP client logs request URLs below info, and the provider's carries its API key.
    let _ = env_logger::Builder::new()
        .parse_filters(&settings.rust_log)
        .filter_module("ureq", log::LevelFilter::Info)
        .filter_module("ureq_proto", log::LevelFilter::Info)
        .format_target(false)
        .try_init();
}

/// Opens the database (applying migrations, so every command sees the tables).
fn pool(settings: &Settings) -> anyhow::Result<db::Pool> {
    Ok(db::connect_and_migrate(&settings.database_url, 2)?.0)
}

/// `cronsumer healthcheck`: needs only HTTP_ADDR, so that a check never
/// fails for another setting (exit 2 is reserved in Docker's health checks).
fn healthcheck() -> ExitCode {
    let _ = crate::config::env_file::load(std::path::Path::new(".env"));
    let addr = std::env::var("HTTP_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let Ok(mut addr) = addr.trim().parse::<std::net::SocketAddr>() else {
        println!("unhealthy: HTTP_ADDR={addr:?} is not host:port");
        return ExitCode::from(1);
    };
    // A service listening on every interface answers on loopback.
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() { Ipv4Addr::LOCALHOST.into() } else { Ipv6Addr::LOCALHOST.into() });
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        // HTTP(S)_PROXY must not catch a loopback probe.
        .proxy(None)
        .timeout_global(Some(std::time::Duration::from_secs(3)))
        .http_status_as_error(false)
        .build()
        .into();
    match agent.get(&format!("http://{addr}/healthz")).call() {
        Ok(mut r) if r.status() == 200 => {
            println!("healthy");
            let _ = r.body_mut().read_to_string();
            ExitCode::SUCCESS
        }
        Ok(mut r) => {
            let body = r.body_mut().with_config().limit(64 * 1024).read_to_string().unwrap_or_default();
            println!("unhealthy: HTTP {} {}", r.status().as_u16(), body.trim());
            ExitCode::from(1)
        }
        Err(e) => {
            println!("unhealthy: http://{addr}/healthz: {e}");
            ExitCode::from(1)
        }
    }
}

/// Runs the command, with the user's consumer modules and jobs.
pub fn execute(cli: Cli, registry: Registry) -> anyhow::Result<ExitCode> {
    match cli.command {
        Some(Command::Healthcheck) => return Ok(healthcheck()),
        Some(Command::Config { example: true, .. }) => {
            print!("{}", crate::config::env_example());
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::Config { markdown: true, .. }) => {
            print!("{}", crate::config::settings_table());
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let settings = Settings::load()?;
    registry.check(&settings)?;
    init_logging(&settings);
    let out = Output { json: cli.json };
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let shutdown = Shutdown::new();
            app::watch_signals(shutdown.clone()).context("cannot watch for signals")?;
            match app::run(settings, shutdown.clone(), registry) {
                // A stop that was asked for is a clean stop, whatever phase the start was in.
                Err(e) if shutdown.is_triggered() => Lifecycle::StoppedDuringStart(&format!("{e:#}")).emit(),
                result => result?,
            }
        }
        Command::Migrate => {
            let (_, applied) = db::connect_and_migrate(&settings.database_url, 1)?;
            if applied.is_empty() {
                println!("database {} is up to date", crate::config::redact::url(&settings.database_url));
            } else {
                for m in applied {
                    println!("applied {m}");
                }
            }
        }
        Command::Config { .. } => {
            let mut rows: Vec<Vec<serde_json::Value>> =
                settings.describe().into_iter().map(|(k, v)| vec![k.into(), v.into()]).collect();
            for m in registry.modules(&settings) {
                let state = m.off.map_or_else(|| format!("on, topic {}", m.topic), |why| format!("off: {why}"));
                rows.push(vec![format!("module {}", m.name).into(), state.into()]);
            }
            if out.json {
                out.rows(&["NAME", "VALUE"], &rows);
            } else {
                for r in rows {
                    println!("{}={}", r[0].as_str().unwrap_or(""), r[1].as_str().unwrap_or(""));
                }
            }
        }
        Command::Produce { topic, key, json_payload, file, raw } => {
            // A positional `-` is standard input, as for most Unix tools.
            let (payload, file) = match json_payload {
                Some(p) if p == "-" => (None, Some(PathBuf::from("-"))),
                p => (p, file),
            };
            records::produce(&settings, &registry, &topic, key.as_deref(), payload, file, raw)?
        }
        Command::Tail { topic, from_beginning, max } => records::tail(&settings, &out, &topic, from_beginning, max)?,
        Command::Topics { create, partitions } => {
            return records::topics(&settings, &registry, &out, create, partitions)
        }
        Command::Diagnose { group_id } => {
            let mut settings = settings;
            if let Some(g) = group_id {
                settings.kafka_group_id = g;
            }
            return diagnose::run(&settings, &registry, &out);
        }
        Command::DeadLetters { command } => return store::dead_letters(&settings, &out, command),
        Command::Notifications { command } => return store::notifications(&settings, &out, command),
        Command::Jobs { command } => return store::jobs(settings, &registry, &out, command),
        Command::Prices { command } => return market::prices(&settings, &registry, &out, command),
        Command::Outbox { command } => return market::outbox(&settings, &registry, &out, command),
        Command::Predictions { command } => return predictions::run(&settings, &out, command),
        Command::Healthcheck => return Ok(healthcheck()),
    }
    Ok(ExitCode::SUCCESS)
}
