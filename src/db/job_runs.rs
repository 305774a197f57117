//! `job_runs`: the ledger of every scheduled job run (start, end, outcome).

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::job_runs::{self, dsl as j};
use super::{now, DbConnection, DbError};
use crate::on_backend;

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, serde::Serialize)]
#[diesel(table_name = job_runs)]
pub struct JobRun {
    pub id: i64,
    pub job: String,
    pub holder: String,
    pub started_at: NaiveDateTime,
    pub finished_at: Option<NaiveDateTime>,
    pub outcome: String,
    pub error: Option<String>,
    pub details: Option<String>,
}

/// Records a run as started; returns its id.
pub fn start(conn: &mut DbConnection, job: &str, holder: &str) -> Result<i64, DbError> {
    let t = now();
    Ok(on_backend!(conn, |c| diesel::insert_into(job_runs::table)
        .values((j::job.eq(job), j::holder.eq(holder), j::started_at.eq(t), j::outcome.eq("running")))
        .returning(j::id)
        .get_result::<i64>(c))?)
}

/// Records a run that did not start (skipped: overlap, or another copy holds the lease).
pub fn skipped(conn: &mut DbConnection, job: &str, holder: &str, why: &str) -> Result<(), DbError> {
    let t = now();
    on_backend!(conn, |c| diesel::insert_into(job_runs::table)
        .values((
            j::job.eq(job),
            j::holder.eq(holder),
            j::started_at.eq(t),
            j::finished_at.eq(Some(t)),
            j::outcome.eq("skipped"),
            j::details.eq(Some(why)),
        ))
        .execute(c))?;
    Ok(())
}

pub fn finish(
    conn: &mut DbConnection,
    id: i64,
    outcome: &str,
    error: Option<&str>,
    details: Option<&str>,
) -> Result<(), DbError> {
    let t = now();
    on_backend!(conn, |c| diesel::update(j::job_runs.find(id))
        .set((j::finished_at.eq(Some(t)), j::outcome.eq(outcome), j::error.eq(error), j::details.eq(details)))
        .execute(c))?;
    Ok(())
}

/// The newest run of `job` that was not skipped.
pub fn last(conn: &mut DbConnection, job: &str) -> Result<Option<JobRun>, DbError> {
    Ok(on_backend!(conn, |c| j::job_runs
        .filter(j::job.eq(job))
        .filter(j::outcome.ne("skipped"))
        .order(j::id.desc())
        .select(JobRun::as_select())
        .first(c)
        .optional())?)
}

pub fn list(conn: &mut DbConnection, job: Option<&str>, limit: i64) -> Result<Vec<JobRun>, DbError> {
    Ok(on_backend!(conn, |c| {
        let mut q = j::job_runs.select(JobRun::as_select()).order(j::id.desc()).limit(limit).into_boxed();
        if let Some(name) = job {
            q = q.filter(j::job.eq(name.to_string()));
        }
        q.load(c)
    })?)
}

/// Deletes runs that started before `before`.
pub fn prune_before(conn: &mut DbConnection, before: NaiveDateTime) -> Result<usize, DbError> {
    Ok(on_backend!(conn, |c| diesel::delete(j::job_runs.filter(j::started_at.lt(before))).execute(c))?)
}
