//! `dead_letters`: records a handler rejected, with the reason, kept until an
//! operator replays or purges them. One row per record: (topic, partition,
//! offset) and the record's fingerprint, so a redelivery is stored once and a
//! different record at a reused position is stored too.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::dead_letters::{self, dsl as d};
use super::sources::{self, SourceKey, Stored};
use super::{now, DbConnection, DbError};
use crate::{on_backend, write_tx};

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = dead_letters)]
pub struct DeadLetter {
    pub id: i64,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub error: String,
    pub failed_at: NaiveDateTime,
    pub replayed_at: Option<NaiveDateTime>,
    pub fingerprint: i64,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = dead_letters, treat_none_as_default_value = false)]
pub struct NewDeadLetter {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub error: String,
    pub failed_at: NaiveDateTime,
    pub fingerprint: i64,
}

impl NewDeadLetter {
    /// The dead letter of `record`. PostgreSQL text cannot hold NUL, so a
    /// reason that quotes one stores it as U+FFFD.
    pub fn of(record: &crate::common::record::Record, reason: &str) -> Self {
        NewDeadLetter {
            topic: record.topic.clone(),
            partition: record.partition,
            offset: record.offset,
            key: record.key.clone(),
            payload: record.payload.clone(),
            error: reason.replace('\0', "\u{fffd}"),
            failed_at: now(),
            fingerprint: record.fingerprint(),
        }
    }
}

/// Stores the rejected records in one transaction; a record already
/// dead-lettered (redelivery) is skipped. [`Stored::reused`] names the rows
/// stored beside another record's dead letter at the same position.
pub fn insert_all(conn: &mut DbConnection, rows: &[NewDeadLetter]) -> Result<Stored, DbError> {
    let mut out = Stored::default();
    if rows.is_empty() {
        return Ok(out);
    }
    // A fingerprint of 0 is a dead letter stored before fingerprints were kept.
    let known = |f: i64| (f != 0).then_some(f);
    write_tx!(conn, |c| {
        // Small chunks: payloads can be up to CONSUMER_MAX_RECORD_BYTES each.
        for (k, chunk) in rows.chunks(50).enumerate() {
            let keys: Vec<SourceKey<'_>> =
                chunk.iter().map(|r| (r.topic.as_str(), r.partition, r.offset, Some(r.fingerprint))).collect();
            let (topics, lo, hi) = sources::span(&keys);
            let stored: Vec<(String, i32, i64, i64)> = d::dead_letters
                .filter(d::topic.eq_any(topics))
                .filter(d::offset.between(lo, hi))
                .select((d::topic, d::partition, d::offset, d::fingerprint))
                .load(c)?;
            let stored: Vec<_> = stored.into_iter().map(|(t, p, o, f)| (t, p, o, known(f))).collect();
            // Skip what is stored under the same (or an unknown) fingerprint.
            let fresh: Vec<&NewDeadLetter> = chunk
                .iter()
                .filter(|r| {
                    !stored.iter().any(|(t, p, o, f)| {
                        (t.as_str(), *p, *o) == (r.topic.as_str(), r.partition, r.offset)
                            && f.is_none_or(|f| f == r.fingerprint)
                    })
                })
                .collect();
            out.reused.extend(sources::reused(&keys, &stored).into_iter().map(|i| k * 50 + i));
            let fresh: Vec<NewDeadLetter> = fresh.into_iter().cloned().collect();
            if !fresh.is_empty() {
                let returned: Vec<(i32, i64, i64)> = diesel::insert_into(dead_letters::table)
                    .values(&fresh)
                    .on_conflict_do_nothing()
                    .returning((d::partition, d::offset, d::fingerprint))
                    .get_results(c)?;
                let keys: Vec<(i32, i64, i64)> = chunk.iter().map(|r| (r.partition, r.offset, r.fingerprint)).collect();
                out.inserted.extend(sources::returned(&keys, &returned).into_iter().map(|i| k * 50 + i));
            }
        }
        Ok::<_, diesel::result::Error>(())
    })?;
    Ok(out)
}

/// The newest dead letters, optionally of one topic.
pub fn list(conn: &mut DbConnection, topic: Option<&str>, limit: i64) -> Result<Vec<DeadLetter>, DbError> {
    Ok(on_backend!(conn, |c| {
        let mut q = d::dead_letters.select(DeadLetter::as_select()).order(d::id.desc()).limit(limit).into_boxed();
        if let Some(t) = topic {
            q = q.filter(d::topic.eq(t.to_string()));
        }
        q.load(c)
    })?)
}

/// Bytes of each payload [`search`] (and so [`previews`]) returns.
pub const PREVIEW_BYTES: i32 = 1024;

/// What the console's dead-letter search matches (every field optional). A
/// topic or text that is empty once trimmed matches everything.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize, PartialEq)]
pub struct Search {
    /// Exactly this topic (trimmed).
    pub topic: Option<String>,
    /// A substring (trimmed) of the reason or of the payload's bytes, matched
    /// literally (no wildcards) and case-sensitively on both backends.
    pub text: Option<String>,
    /// Failed at or after this time.
    pub since: Option<NaiveDateTime>,
    /// Failed before this time.
    pub until: Option<NaiveDateTime>,
    /// `Some(false)`: not replayed yet; `Some(true)`: replayed only; `None`: both.
    pub replayed: Option<bool>,
}

impl Search {
    fn topic_filter(&self) -> Option<&str> {
        self.topic.as_deref().map(str::trim).filter(|t| !t.is_empty())
    }

    fn text_filter(&self) -> Option<&str> {
        self.text.as_deref().map(str::trim).filter(|t| !t.is_empty())
    }

    fn of_topic(topic: Option<&str>) -> Search {
        Search { topic: topic.map(str::to_string), ..Search::default() }
    }
}

/// The SQL around a text search's two bound values (`head text mid bytes
/// tail`): the text in the reason, or its UTF-8 in the payload's bytes.
/// `instr` and `position` match literally and case-sensitively on both
/// backends, where LIKE would need escaping and ignores ASCII case on SQLite
/// only. A NULL payload matches nothing.
fn text_match(conn: &DbConnection) -> [&'static str; 3] {
    match conn {
        DbConnection::Sqlite(_) => ["(instr(error, ", ") > 0 OR instr(payload, ", ") > 0)"],
        DbConnection::Postgresql(_) => ["(position(", " IN error) > 0 OR position(", " IN payload) > 0)"],
    }
}

/// The dead letters `$search` matches, as a boxed query of the backend its
/// use infers (written once here, expanded in each arm of [`on_backend!`]);
/// `$sql` is the connection's [`text_match`].
macro_rules! matching {
    ($search:expr, $sql:expr) => {{
        use diesel::sql_types::{Binary, Bool, Text};
        let (s, [head, mid, tail]): (&Search, [&str; 3]) = ($search, $sql);
        let mut q = d::dead_letters.into_boxed();
        if let Some(topic) = s.topic_filter() {
            q = q.filter(d::topic.eq(topic.to_string()));
        }
        if let Some(text) = s.text_filter() {
            // Reasons store NUL as U+FFFD (PostgreSQL text cannot hold it); so does their search.
            let in_reason = text.replace('\0', "\u{fffd}");
            q = q.filter(
                diesel::dsl::sql::<Bool>(head)
                    .bind::<Text, _>(in_reason)
                    .sql(mid)
                    .bind::<Binary, _>(text.as_bytes().to_vec())
                    .sql(tail),
            );
        }
        if let Some(t) = s.since {
            q = q.filter(d::failed_at.ge(t));
        }
        if let Some(t) = s.until {
            q = q.filter(d::failed_at.lt(t));
        }
        match s.replayed {
            Some(true) => q = q.filter(d::replayed_at.is_not_null()),
            Some(false) => q = q.filter(d::replayed_at.is_null()),
            None => {}
        }
        q
    }};
}

/// One page of the dead letters `s` matches, newest first: ids below
/// `before` (keyset paging; `None` starts from the newest), at most `limit`,
/// each payload cut to its first [`PREVIEW_BYTES`] so that a page of 1 MiB
/// payloads stays small.
pub fn search(
    conn: &mut DbConnection,
    s: &Search,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<DeadLetter>, DbError> {
    use diesel::sql_types::{Binary, Nullable};
    let sql = text_match(conn);
    let preview = diesel::dsl::sql::<Nullable<Binary>>(&format!("substr(payload, 1, {PREVIEW_BYTES})"));
    let columns = (
        d::id,
        d::topic,
        d::partition,
        d::offset,
        d::key,
        preview,
        d::error,
        d::failed_at,
        d::replayed_at,
        d::fingerprint,
    );
    Ok(on_backend!(conn, |c| {
        let mut q = matching!(s, sql);
        if let Some(b) = before {
            q = q.filter(d::id.lt(b));
        }
        q.select(columns.clone()).order(d::id.desc()).limit(limit).load(c)
    })?)
}

/// How many dead letters `s` matches.
pub fn count_matching(conn: &mut DbConnection, s: &Search) -> Result<i64, DbError> {
    let sql = text_match(conn);
    Ok(on_backend!(conn, |c| matching!(s, sql).count().get_result(c))?)
}

/// The dead letters `s` matches that are not replayed yet, oldest first, at
/// most `limit` ("replay all matching"), whole: they are produced again.
pub fn unreplayed_matching(conn: &mut DbConnection, s: &Search, limit: i64) -> Result<Vec<DeadLetter>, DbError> {
    let sql = text_match(conn);
    Ok(on_backend!(conn, |c| matching!(s, sql)
        .filter(d::replayed_at.is_null())
        .select(DeadLetter::as_select())
        .order(d::id)
        .limit(limit)
        .load(c))?)
}

/// [`search`] of one topic (or all), first page.
pub fn previews(conn: &mut DbConnection, topic: Option<&str>, limit: i64) -> Result<Vec<DeadLetter>, DbError> {
    search(conn, &Search::of_topic(topic), None, limit)
}

/// Dead letters not yet replayed, oldest first, optionally of one topic.
pub fn unreplayed(conn: &mut DbConnection, topic: Option<&str>) -> Result<Vec<DeadLetter>, DbError> {
    unreplayed_matching(conn, &Search::of_topic(topic), i64::MAX)
}

pub fn find(conn: &mut DbConnection, id: i64) -> Result<Option<DeadLetter>, DbError> {
    Ok(on_backend!(conn, |c| d::dead_letters.find(id).select(DeadLetter::as_select()).first(c).optional())?)
}

/// Claims the dead letters of `ids` not replayed yet nor held by another
/// replay, for `hold` (by the database's clock); returns the ids claimed.
/// Two replays of one dead letter at once: one of them claims it.
pub fn claim_replay(conn: &mut DbConnection, ids: &[i64], hold: std::time::Duration) -> Result<Vec<i64>, DbError> {
    let t = super::clock(conn)?;
    let free = d::replaying_until.is_null().or(d::replaying_until.lt(t));
    let target = d::dead_letters.filter(d::id.eq_any(ids)).filter(d::replayed_at.is_null()).filter(free);
    let until = super::after(t, hold);
    let mut claimed: Vec<i64> = on_backend!(conn, |c| diesel::update(target)
        .set(d::replaying_until.eq(Some(until)))
        .returning(d::id)
        .get_results(c))?;
    claimed.sort_unstable();
    Ok(claimed)
}

/// Ends the replay of `ids`: marked replayed when `delivered`, else free
/// to be replayed again.
pub fn replay_done(conn: &mut DbConnection, ids: &[i64], delivered: bool) -> Result<(), DbError> {
    let target = d::dead_letters.filter(d::id.eq_any(ids));
    let replayed = delivered.then(now);
    on_backend!(conn, |c| diesel::update(target)
        .set((d::replayed_at.eq(replayed), d::replaying_until.eq(None::<NaiveDateTime>)))
        .execute(c))?;
    Ok(())
}

/// Deletes dead letters that failed before `before`; with `replayed_only`,
/// only those already replayed (the retention job's rule).
pub fn purge_before(conn: &mut DbConnection, before: NaiveDateTime, replayed_only: bool) -> Result<usize, DbError> {
    Ok(on_backend!(conn, |c| {
        if replayed_only {
            diesel::delete(d::dead_letters.filter(d::replayed_at.lt(before))).execute(c)
        } else {
            diesel::delete(d::dead_letters.filter(d::failed_at.lt(before))).execute(c)
        }
    })?)
}

/// Deletes every dead letter already replayed; returns how many.
pub fn purge_replayed(conn: &mut DbConnection) -> Result<usize, DbError> {
    Ok(write_tx!(conn, |c| diesel::delete(d::dead_letters.filter(d::replayed_at.is_not_null())).execute(c))?)
}

pub fn count(conn: &mut DbConnection) -> Result<i64, DbError> {
    Ok(on_backend!(conn, |c| d::dead_letters.count().get_result(c))?)
}
