//! Source positions of stored rows. A record read again (a redelivery) has
//! the fingerprint its row was stored with and is skipped; a different record
//! at a stored position (the topic was deleted and recreated, or its log
//! truncated) is told apart, so it is never skipped silently.

use std::collections::HashMap;

/// What an insert of records' rows did, by index into the rows given.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Stored {
    /// Rows new to the table.
    pub inserted: Vec<usize>,
    /// Rows whose source position holds a different record: not stored.
    pub reused: Vec<usize>,
}

/// Indices of the rows an INSERT's RETURNING gave back: each returned key
/// matches the first row with that key not matched yet.
pub fn returned<K: PartialEq>(keys: &[K], returned: &[K]) -> Vec<usize> {
    let mut taken = vec![false; keys.len()];
    for r in returned {
        if let Some(i) = (0..keys.len()).find(|&i| !taken[i] && keys[i] == *r) {
            taken[i] = true;
        }
    }
    (0..keys.len()).filter(|&i| taken[i]).collect()
}

/// A row's source: topic, partition, offset and the record's fingerprint
/// (None: stored before fingerprints were kept, which matches any).
pub type SourceKey<'a> = (&'a str, i32, i64, Option<i64>);

/// Indices of `rows` whose position `stored` holds only under other
/// fingerprints.
pub fn reused(rows: &[SourceKey<'_>], stored: &[(String, i32, i64, Option<i64>)]) -> Vec<usize> {
    let mut held: HashMap<(&str, i32, i64), Vec<Option<i64>>> = HashMap::new();
    for (t, p, o, f) in stored {
        held.entry((t.as_str(), *p, *o)).or_default().push(*f);
    }
    let differs = |(t, p, o, f): &SourceKey<'_>| match (f, held.get(&(*t, *p, *o))) {
        (Some(_), Some(fps)) => !fps.iter().any(|s| s.is_none() || s == f),
        _ => false,
    };
    rows.iter().enumerate().filter(|(_, k)| differs(k)).map(|(i, _)| i).collect()
}

/// The offset range and topics a chunk of rows spans, to load what is stored there.
pub fn span<'a>(rows: &[SourceKey<'a>]) -> (Vec<&'a str>, i64, i64) {
    let mut topics: Vec<&str> = rows.iter().map(|r| r.0).collect();
    topics.sort_unstable();
    topics.dedup();
    let lo = rows.iter().map(|r| r.2).min().unwrap_or(0);
    let hi = rows.iter().map(|r| r.2).max().unwrap_or(-1);
    (topics, lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_different_fingerprint_at_a_stored_position_is_reused() {
        let stored = vec![
            ("t".to_string(), 0, 1, Some(10)),
            ("t".to_string(), 0, 2, Some(20)),
            ("t".to_string(), 0, 3, None),
            ("u".to_string(), 0, 4, Some(40)),
        ];
        let rows = [
            ("t", 0, 1, Some(10)), // a redelivery
            ("t", 0, 2, Some(21)), // reused
            ("t", 0, 3, Some(30)), // stored before fingerprints: cannot tell
            ("t", 0, 4, Some(40)), // another topic's position
            ("t", 1, 2, Some(99)), // another partition's
            ("u", 0, 4, Some(41)), // reused
        ];
        assert_eq!(reused(&rows, &stored), vec![1, 5]);
        assert_eq!(span(&rows), (vec!["t", "u"], 1, 4));
        assert_eq!(returned(&[1, 2, 2, 3, 2], &[2, 3, 2]), vec![1, 2, 3]);
    }
}
