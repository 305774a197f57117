//! The dead-letter search: its query (the console's form, `/api/dead-letters`
//! and the bulk replay read the same one), the page of matches it finds,
//! and the console's section that shows them.

use std::fmt::Write as _;

use chrono::NaiveDateTime;
use serde::Serialize;

use super::html::{button, esc, read, unavailable, Admin};
use super::status::Status;
use super::views::time;
use crate::db::dead_letters::{self, Search};

/// Rows of a page.
pub const PAGE: i64 = 50;
const PREVIEW_CHARS: usize = 120;

/// Bytes as text, cut to [`PREVIEW_CHARS`] characters.
pub fn preview(bytes: Option<&[u8]>) -> String {
    let text = String::from_utf8_lossy(bytes.unwrap_or_default());
    let mut p: String = text.chars().take(PREVIEW_CHARS).collect();
    if text.chars().count() > PREVIEW_CHARS {
        p.push('…');
    }
    p
}

/// The dead-letter search as a query string gives it (the console's form,
/// `/api/dead-letters`, the bulk replay): times as `YYYY-MM-DDTHH:MM[:SS]`
/// in UTC, `replayed` as `yes` or `no`, `before` an id (the next page).
#[derive(serde::Deserialize, Default, Clone)]
pub struct DeadLetterQuery {
    pub topic: Option<String>,
    pub text: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub replayed: Option<String>,
    pub before: Option<String>,
}

fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

impl DeadLetterQuery {
    /// The search it asks for, or what is wrong with it.
    pub fn search(&self) -> Result<Search, String> {
        let at = |name: &str, v: &Option<String>| -> Result<Option<NaiveDateTime>, String> {
            let Some(v) = given(v) else { return Ok(None) };
            let parsed = NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S")
                .or_else(|_| NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M"));
            parsed.map(Some).map_err(|_| format!("{name}: {v:?} is not a time like 2026-12-05T09:30 (UTC)"))
        };
        let replayed = match given(&self.replayed) {
            None => None,
            Some("yes") => Some(true),
            Some("no") => Some(false),
            Some(other) => return Err(format!("replayed: {other:?} is neither yes nor no")),
        };
        Ok(Search {
            // Trimmed, and dropped when empty, by the database layer.
            topic: self.topic.clone(),
            text: self.text.clone(),
            since: at("since", &self.since)?,
            until: at("until", &self.until)?,
            replayed,
        })
    }

    /// The page's first id, exclusive (`None`: from the newest).
    pub fn before(&self) -> Option<i64> {
        given(&self.before)?.parse().ok()
    }

    /// As a query string again (for the next page's link and the bulk replay).
    pub fn to_query(&self) -> String {
        let fields = [
            ("topic", &self.topic),
            ("text", &self.text),
            ("since", &self.since),
            ("until", &self.until),
            ("replayed", &self.replayed),
            ("before", &self.before),
        ];
        let given = fields.iter().filter_map(|(k, v)| Some((k, v.as_deref().filter(|v| !v.is_empty())?)));
        given.map(|(k, v)| format!("{k}={}", super::html::url_encode(v))).collect::<Vec<_>>().join("&")
    }
}

#[derive(Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub failed_at: String,
    pub reason: String,
    /// The payload's first characters, as text.
    pub payload: String,
    pub replayed_at: Option<String>,
}

#[derive(Serialize)]
pub struct DeadLetters {
    pub search: Search,
    pub matching: i64,
    pub rows: Vec<DeadLetter>,
    /// The next page: `before=` this id (`None`: this is the last).
    pub next_before: Option<i64>,
    pub error: Option<String>,
}

pub fn view(s: &Status, search: Search, before: Option<i64>) -> DeadLetters {
    let found =
        read(s, |c| Ok((dead_letters::count_matching(c, &search)?, dead_letters::search(c, &search, before, PAGE)?)));
    let (matching, rows, error) = match found {
        Ok((n, rows)) => (n, rows, None),
        Err(e) => (0, vec![], Some(e)),
    };
    let next_before = (rows.len() as i64 == PAGE).then(|| rows.last().map(|d| d.id)).flatten();
    let rows = rows
        .into_iter()
        .map(|d| DeadLetter {
            id: d.id,
            key: d.key.as_deref().map(|k| String::from_utf8_lossy(k).into_owned()),
            payload: preview(d.payload.as_deref()),
            failed_at: time(d.failed_at),
            replayed_at: d.replayed_at.map(time),
            topic: d.topic,
            partition: d.partition,
            offset: d.offset,
            reason: d.error,
        })
        .collect();
    DeadLetters { search, matching, rows, next_before, error }
}

pub(super) fn section(out: &mut String, s: &Status, q: &DeadLetterQuery, admin: Admin) {
    out.push_str("<section id=dead-letters><h2>Dead letters</h2>");
    let search = q.search();
    let selected = |v: &str| if q.replayed.as_deref().unwrap_or_default() == v { " selected" } else { "" };
    let _ = write!(
        out,
        "<form method=get class=search><label>Topic <input name=topic value=\"{}\"></label> \
         <label>Text <input name=text value=\"{}\" placeholder=\"in reason or payload\"></label> \
         <label>From <input type=datetime-local name=since value=\"{}\"></label> \
         <label>To <input type=datetime-local name=until value=\"{}\"></label> \
         <label>Replayed <select name=replayed><option value=\"\">either</option><option value=no{}>not yet</option>\
         <option value=yes{}>replayed</option></select></label> <button>Search</button></form>",
        esc(q.topic.as_deref().unwrap_or_default()),
        esc(q.text.as_deref().unwrap_or_default()),
        esc(q.since.as_deref().unwrap_or_default()),
        esc(q.until.as_deref().unwrap_or_default()),
        selected("no"),
        selected("yes"),
    );
    let search = match search {
        Ok(search) => search,
        Err(e) => {
            let _ = write!(out, "<p class=warn>{}</p></section>", esc(&e));
            return;
        }
    };
    let v = view(s, search, q.before());
    unavailable(out, &v.error);
    let _ = write!(out, "<p id=dead-letters-matching>{} match.</p>", v.matching);
    if admin == Admin::Unlocked {
        // The search's fields go with the replay, so it replays what was shown.
        let _ = write!(
            out,
            "<form method=post action=\"/actions/dead-letters/replay-matching?{}\" class=bulk>\
             <label><input type=checkbox name=confirm value=yes required> replay every match not replayed yet</label> \
             <button>Replay all matching</button></form> \
             <form method=post action=\"/actions/dead-letters/purge-replayed\"><button>Purge the replayed</button></form>",
            esc(&q.to_query())
        );
    }
    if !v.rows.is_empty() {
        out.push_str("<table><tr><th>ID<th>Position<th>Key<th>Failed at<th>Reason<th>Payload<th></tr>");
        for d in &v.rows {
            let action = match &d.replayed_at {
                Some(t) => format!("replayed {}", esc(t)),
                None => button(admin, &format!("/actions/dead-letters/{}/replay", d.id), "Replay"),
            };
            let _ = write!(
                out,
                "<tr data-id={}><td>{}<td>{}/{}@{}<td>{}<td>{}<td>{}<td><code>{}</code><td>{action}</tr>",
                d.id,
                d.id,
                esc(&d.topic),
                d.partition,
                d.offset,
                esc(d.key.as_deref().unwrap_or_default()),
                esc(&d.failed_at),
                esc(&d.reason),
                esc(&d.payload)
            );
        }
        out.push_str("</table>");
    }
    if let Some(before) = v.next_before {
        let next = DeadLetterQuery { before: Some(before.to_string()), ..q.clone() };
        let _ = write!(out, "<p><a id=next-page href=\"?{}#dead-letters\">Older →</a></p>", esc(&next.to_query()));
    }
    out.push_str("</section>");
}

#[cfg(test)]
mod tests {
    use super::preview;

    #[test]
    fn previews_are_cut() {
        let long = "x".repeat(500);
        assert_eq!(preview(Some(long.as_bytes())).chars().count(), 121);
        assert_eq!(preview(Some(b"{\"a\":1}")), "{\"a\":1}");
        assert_eq!(preview(None), "");
    }
}
