//! Cron schedules (6 fields, seconds first, UTC), parsed once: a setting or
//! a job's schedule is checked at start, and every later question (the next
//! tick, the period, how late a job is) asks the parsed value.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Why a cron expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a 6-field cron expression with seconds first, e.g. \"*/30 * * * * *\" ({reason})")]
pub struct CronError {
    reason: String,
}

/// A parsed cron expression.
#[derive(Clone)]
pub struct Schedule {
    expr: String,
    cron: croner::Cron,
}

impl FromStr for Schedule {
    type Err = CronError;

    fn from_str(expr: &str) -> Result<Schedule, CronError> {
        let expr = expr.trim();
        let fields = expr.split_whitespace().count();
        if fields != 6 {
            return Err(CronError { reason: format!("it has {fields} fields") });
        }
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(expr)
            .map_err(|e| CronError { reason: e.to_string() })?;
        Ok(Schedule { expr: expr.to_string(), cron })
    }
}

impl Schedule {
    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.expr
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&t, false).ok()
    }

    /// The interval between the next two ticks (a minute if there are none).
    pub fn period(&self) -> Duration {
        let fallback = Duration::from_secs(60);
        let Some(a) = self.next_after(Utc::now()) else { return fallback };
        self.next_after(a).and_then(|b| (b - a).to_std().ok()).unwrap_or(fallback)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expr)
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.expr)
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Schedule) -> bool {
        self.expr == other.expr
    }
}

impl Eq for Schedule {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_fields_seconds_first() {
        let e = "*/5 * * * *".parse::<Schedule>().unwrap_err().to_string();
        assert!(e.contains("it has 5 fields"), "{e}");
        assert!("61 * * * * *".parse::<Schedule>().is_err());
        let s: Schedule = " 0 */2 * * * * ".parse().unwrap();
        assert_eq!(s.as_str(), "0 */2 * * * *");
        assert_eq!(s.period(), Duration::from_secs(120));
        let t = DateTime::parse_from_rfc3339("2026-01-01T00:01:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(s.next_after(t).unwrap().to_rfc3339(), "2026-01-01T00:02:00+00:00");
    }
}
