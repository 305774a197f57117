//! `job_leases`: one holder per job at a time across every running copy.

use std::time::Duration;

use diesel::prelude::*;

use super::schema::job_leases::{self, dsl as l};
use super::{DbConnection, DbError};
use crate::write_tx;

/// Takes (or renews) the lease on `job` for `holder` for `lease_for` (by the
/// database's clock). Returns false when another holder's lease has not
/// expired yet.
pub fn acquire(conn: &mut DbConnection, job: &str, holder: &str, lease_for: Duration) -> Result<bool, DbError> {
    let t = super::clock(conn)?;
    let until = super::after(t, lease_for);
    Ok(write_tx!(conn, |c| {
        let inserted = diesel::insert_into(job_leases::table)
            .values((l::job.eq(job), l::holder.eq(holder), l::lease_until.eq(until)))
            .on_conflict_do_nothing()
            .execute(c)?;
        if inserted == 1 {
            return Ok(true);
        }
        // Take it over only if it is ours or has expired; the row lock of the
        // UPDATE makes two copies racing here agree on one winner.
        let taken =
            diesel::update(l::job_leases.filter(l::job.eq(job)).filter(l::holder.eq(holder).or(l::lease_until.lt(t))))
                .set((l::holder.eq(holder), l::lease_until.eq(until)))
                .execute(c)?;
        Ok::<_, diesel::result::Error>(taken == 1)
    })?)
}
