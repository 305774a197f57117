//! What the console's sections share: escaping for HTML and one read
//! from the HTTP endpoint's own pool.

use super::status::Status;
use crate::db::{DbConnection, DbError};

/// `s` for HTML text and attribute values.
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One read from the database for the page, or why it failed.
pub(super) fn read<T>(s: &Status, f: impl FnOnce(&mut DbConnection) -> Result<T, DbError>) -> Result<T, String> {
    let mut conn = crate::db::checkout(&s.sources.http_pool, None).map_err(|e| e.to_string())?;
    f(&mut conn).map_err(|e| e.to_string())
}
