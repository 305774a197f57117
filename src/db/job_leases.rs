//! `job_leases`: one holder per job at a time across every running copy.
//! Each acquisition raises the lease's fencing token; a holder renews its
//! lease while it runs, and writes that must not outlive the lease check
//! [`holds`] in their own transaction.

use std::time::Duration;

use diesel::prelude::*;

use super::schema::job_leases::{self, dsl as l};
use super::{DbConnection, DbError};
use crate::write_tx;

/// A lease held on `job`, with the token of this acquisition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub job: String,
    pub holder: String,
    pub token: i64,
}

/// Takes the lease on `job` for `holder` for `lease_for` (by the database's
/// clock): a new lease, an expired one (its token grows), or the holder's
/// own live one (renewed, same token). `None` when another holder's lease
/// has not expired yet.
pub fn acquire(
    conn: &mut DbConnection,
    job: &str,
    holder: &str,
    lease_for: Duration,
) -> Result<Option<Lease>, DbError> {
    let t = super::clock(conn)?;
    let until = super::after(t, lease_for);
    let token = write_tx!(conn, |c| {
        let inserted = diesel::insert_into(job_leases::table)
            .values((l::job.eq(job), l::holder.eq(holder), l::lease_until.eq(until), l::token.eq(1)))
            .on_conflict_do_nothing()
            .execute(c)?;
        if inserted == 0 {
            // The row lock of each UPDATE makes two copies racing here agree on one winner.
            let renewed = diesel::update(
                l::job_leases.filter(l::job.eq(job)).filter(l::holder.eq(holder)).filter(l::lease_until.ge(t)),
            )
            .set(l::lease_until.eq(until))
            .execute(c)?;
            let taken = if renewed == 1 {
                0
            } else {
                diesel::update(l::job_leases.filter(l::job.eq(job)).filter(l::lease_until.lt(t)))
                    .set((l::holder.eq(holder), l::lease_until.eq(until), l::token.eq(l::token + 1)))
                    .execute(c)?
            };
            if renewed + taken == 0 {
                return Ok(None);
            }
        }
        l::job_leases.filter(l::job.eq(job)).select(l::token).first::<i64>(c).map(Some)
    })?;
    Ok(token.map(|token| Lease { job: job.to_string(), holder: holder.to_string(), token }))
}

/// Extends `lease` by `lease_for`; false when it was lost (it expired, or
/// another acquisition moved its token on).
pub fn renew(conn: &mut DbConnection, lease: &Lease, lease_for: Duration) -> Result<bool, DbError> {
    let t = super::clock(conn)?;
    let until = super::after(t, lease_for);
    let target = l::job_leases
        .filter(l::job.eq(&lease.job))
        .filter(l::holder.eq(&lease.holder))
        .filter(l::token.eq(lease.token))
        .filter(l::lease_until.ge(t));
    Ok(write_tx!(conn, |c| diesel::update(target).set(l::lease_until.eq(until)).execute(c))? == 1)
}

/// Gives `lease` up now, if it is still this holder's: the next acquisition,
/// by any copy, takes it at once (with a higher token).
pub fn release(conn: &mut DbConnection, lease: &Lease) -> Result<(), DbError> {
    let past = super::clock(conn)? - chrono::Duration::seconds(1);
    let target = l::job_leases
        .filter(l::job.eq(&lease.job))
        .filter(l::holder.eq(&lease.holder))
        .filter(l::token.eq(lease.token));
    write_tx!(conn, |c| diesel::update(target).set(l::lease_until.eq(past)).execute(c))?;
    Ok(())
}

/// Whether `lease` is still held. Inside a write transaction (where
/// PostgreSQL locks the row against a takeover until the commit) it fences
/// the transaction's writes.
pub fn holds(conn: &mut DbConnection, lease: &Lease) -> Result<bool, DbError> {
    let t = super::clock(conn)?;
    let held = l::job_leases
        .filter(l::job.eq(&lease.job))
        .filter(l::holder.eq(&lease.holder))
        .filter(l::token.eq(lease.token))
        .filter(l::lease_until.ge(t))
        .select(l::token);
    let found: Option<i64> = match conn {
        DbConnection::Postgresql(c) => held.for_share().first(c).optional()?,
        DbConnection::Sqlite(c) => held.first(c).optional()?,
    };
    Ok(found.is_some())
}
