//! The check every consumer test makes: the group's committed offsets
//! never pass a record that is not stored (as a row or a dead letter).

use std::collections::{BTreeMap, BTreeSet};

use cronsumer::config::Settings;
use cronsumer::db::Pool;

use super::kafka::committed;
use super::store::stored_sources;

/// Every offset below each committed offset is in `stored`.
pub fn assert_covered(commits: &BTreeMap<i32, i64>, stored: &BTreeSet<(i32, i64)>, topic: &str) {
    for (&p, &c) in commits {
        for o in 0..c.max(0) {
            assert!(
                stored.contains(&(p, o)),
                "committed offset {c} of {topic}/{p} passes offset {o}, which is not stored"
            );
        }
    }
}

/// Asserts that every offset below each committed offset of `topic` is
/// stored (as a row or a dead letter).
pub fn assert_commits_covered(settings: &Settings, pool: &Pool, topic: &str, partitions: i32) {
    let commits = committed(settings, topic, partitions);
    let (rows, dead) = stored_sources(pool, topic);
    assert_covered(&commits, &rows.into_iter().chain(dead).collect(), topic);
}
