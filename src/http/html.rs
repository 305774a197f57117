//! What the console's sections share: escaping for HTML and URLs, the
//! action buttons, and one read from the HTTP endpoint's own pool.

use std::fmt::Write as _;

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

/// `s` for a URL's path segment or query value.
pub(super) fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// One read from the database for the page, or why it failed.
pub(super) fn read<T>(s: &Status, f: impl FnOnce(&mut DbConnection) -> Result<T, DbError>) -> Result<T, String> {
    let mut conn = crate::db::checkout(&s.sources.http_pool, None).map_err(|e| e.to_string())?;
    f(&mut conn).map_err(|e| e.to_string())
}

#[derive(PartialEq, Eq, Clone, Copy)]
/// Whether the console may act: no token set, locked, or unlocked.
pub(super) enum Admin {
    Disabled,
    Locked,
    Unlocked,
}

/// A form that posts to `action`, shown only once the console is unlocked.
pub(super) fn button(admin: Admin, action: &str, label: &str) -> String {
    if admin != Admin::Unlocked {
        return String::new();
    }
    format!("<form method=post action=\"{}\"><button>{}</button></form>", esc(action), esc(label))
}

pub(super) fn unavailable(out: &mut String, error: &Option<String>) {
    if let Some(e) = error {
        let _ = write!(out, "<p class=warn>database unavailable: {}</p>", esc(e));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn html_is_escaped() {
        assert_eq!(
            super::esc(r#"<script>"a"&'b'</script>"#),
            "&lt;script&gt;&quot;a&quot;&amp;&#39;b&#39;&lt;/script&gt;"
        );
    }
}
