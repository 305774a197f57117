//! `cronsumer diagnose`: checks each part the service depends on and prints
//! one line per check; every problem says what to do. Exit 1 when any fails.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::output::{time, Output};
use crate::config::Settings;
use crate::db::{self, DbError};
use crate::kafka;
use crate::registry::Registry;
use crate::schedule::Job;

struct Report {
    checks: Vec<(String, bool, String)>,
}

impl Report {
    fn ok(&mut self, what: &str, detail: String) {
        self.checks.push((what.into(), true, detail));
    }
    fn problem(&mut self, what: &str, detail: String) {
        self.checks.push((what.into(), false, detail));
    }
}

pub fn run(settings: &Settings, registry: &Registry, out: &Output) -> anyhow::Result<ExitCode> {
    let mut r = Report { checks: Vec::new() };
    if settings.kafka_enabled {
        kafka_checks(settings, &registry.topics(settings), &mut r);
    } else {
        r.ok("kafka", "disabled (KAFKA_ENABLED=false)".into());
    }
    database_checks(settings, &crate::app::jobs(settings, registry, None), &mut r);
    let failed = r.checks.iter().filter(|c| !c.1).count();
    let rows: Vec<Vec<Value>> = r
        .checks
        .iter()
        .map(|(what, ok, detail)| vec![json!(what), json!(if *ok { "ok" } else { "PROBLEM" }), json!(detail)])
        .collect();
    out.rows(&["CHECK", "STATUS", "DETAIL"], &rows);
    if !out.json {
        println!("{}", if failed == 0 { "healthy".to_string() } else { format!("{failed} problem(s)") });
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn kafka_checks(settings: &Settings, required: &[String], r: &mut Report) {
    let servers = &settings.kafka_bootstrap_servers;
    let admin = match kafka::admin_client(settings) {
        Ok(a) => a,
        Err(e) => return r.problem("broker", format!("cannot create a Kafka client: {e}; check the KAFKA_* settings")),
    };
    let metadata = match admin.inner().fetch_metadata(None, Duration::from_secs(5)) {
        Ok(m) if !m.brokers().is_empty() => m,
        Ok(_) | Err(_) => {
            return r
                .problem("broker", format!("no broker answers at {servers}; start it or fix KAFKA_BOOTSTRAP_SERVERS"))
        }
    };
    let brokers: Vec<String> =
        metadata.brokers().iter().map(|b| format!("{}@{}:{}", b.id(), b.host(), b.port())).collect();
    let (_, version) = rdkafka::util::get_rdkafka_version();
    r.ok("broker", format!("{} broker(s): {} (librdkafka {version})", brokers.len(), brokers.join(", ")));

    let existing = kafka::existing_topics(&metadata);
    for t in required {
        match existing.iter().find(|(n, _)| n == t) {
            Some((_, p)) => r.ok(&format!("topic {t}"), format!("{p} partition(s)")),
            None => r.problem(&format!("topic {t}"), "missing; run `cronsumer topics --create`".into()),
        }
    }

    let group = &settings.kafka_group_id;
    match admin.inner().fetch_group_list(Some(group), Duration::from_secs(5)) {
        Ok(list) => match list.groups().first() {
            Some(g) => {
                let members: Vec<String> =
                    g.members().iter().map(|m| format!("{}@{}", m.client_id(), m.client_host())).collect();
                r.ok(
                    &format!("group {group}"),
                    format!(
                        "state {}, {} member(s){}",
                        g.state(),
                        members.len(),
                        if members.is_empty() { String::new() } else { format!(": {}", members.join(", ")) }
                    ),
                )
            }
            None => r.ok(&format!("group {group}"), "unknown to the broker yet (no member has joined)".into()),
        },
        Err(e) => r.problem(&format!("group {group}"), format!("cannot describe: {e}")),
    }

    match kafka::lag(settings, required) {
        Ok(parts) => {
            for p in parts {
                r.ok(
                    &format!("lag {}/{}", p.topic, p.partition),
                    format!(
                        "committed {} high {} lag {}",
                        p.committed.map(|c| c.to_string()).unwrap_or_else(|| "none".into()),
                        p.high,
                        p.lag
                    ),
                );
            }
        }
        Err(e) => r.problem("lag", format!("cannot read offsets: {e}")),
    }
}

fn database_checks(settings: &Settings, jobs: &[Arc<dyn Job>], r: &mut Report) {
    let url = crate::config::redact::url(&settings.database_url);
    let pool = match db::connect(&settings.database_url, 1) {
        Ok(p) => p,
        Err(e) => return r.problem("database", format!("{e}; check DATABASE_URL")),
    };
    let mut conn = match pool.get() {
        Ok(c) => c,
        Err(e) => {
            return r.problem("database", format!("{url} does not answer: {e}; check DATABASE_URL and the server"))
        }
    };
    r.ok("database", format!("{url} answers"));
    match db::pending_migrations(&mut conn) {
        Ok(p) if p.is_empty() => r.ok("migrations", "up to date".into()),
        Ok(p) => {
            return r.problem("migrations", format!("{} pending ({}); run `cronsumer migrate`", p.len(), p.join(", ")))
        }
        Err(e) => return r.problem("migrations", format!("{e}")),
    }
    for job in jobs {
        match db::job_runs::last(&mut conn, job.name()) {
            Ok(Some(run)) if run.outcome == "failed" => r.problem(
                &format!("job {}", job.name()),
                format!(
                    "last run {} failed: {}",
                    time(Some(run.started_at)).as_str().unwrap_or("-"),
                    run.error.unwrap_or_default()
                ),
            ),
            Ok(Some(run)) => r.ok(
                &format!("job {}", job.name()),
                format!("last run {} {}", time(Some(run.started_at)).as_str().unwrap_or("-"), run.outcome),
            ),
            Ok(None) => r.ok(&format!("job {}", job.name()), "never run".into()),
            Err(e @ DbError::Query(_)) => r.problem(&format!("job {}", job.name()), format!("{e}")),
            Err(e) => r.problem("database", format!("{e}")),
        }
    }
}
