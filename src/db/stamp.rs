//! [`Stamp`]: a timestamp column's value, written and read on SQLite
//! without chrono's format strings. diesel formats every `NaiveDateTime`
//! through `format("%F %T%.f")` and parses it back by trying format strings
//! in turn; that was a twentieth of the consumer thread's time and of the
//! sender's. The text is exactly chrono's, because SQLite orders and
//! compares timestamps as text. PostgreSQL keeps diesel's own encoding.

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::Pg;
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types::Timestamp;
use diesel::sqlite::{Sqlite, SqliteValue};

/// A `NaiveDateTime` to bind (`#[diesel(serialize_as = Stamp)]`) or to
/// load (`#[diesel(deserialize_as = Stamp)]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, AsExpression, FromSqlRow)]
#[diesel(sql_type = Timestamp)]
pub struct Stamp(pub NaiveDateTime);

impl From<NaiveDateTime> for Stamp {
    fn from(t: NaiveDateTime) -> Self {
        Stamp(t)
    }
}

impl From<Stamp> for NaiveDateTime {
    fn from(s: Stamp) -> Self {
        s.0
    }
}

/// `t` as chrono's `%F %T%.f` writes it: no fraction when it is zero, else
/// 3, 6 or 9 digits. Years outside 0..=9999 and leap seconds go to chrono.
pub fn format(t: &NaiveDateTime) -> String {
    let (year, nanos) = (t.year(), t.nanosecond());
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return t.format("%F %T%.f").to_string();
    }
    // Digits pushed by hand: `write!` was still half of chrono's cost.
    let mut s = String::with_capacity(29);
    let mut push = |sep: Option<char>, n: u32, width: u32| {
        s.extend(sep);
        s.extend((0..width).rev().map(|k| char::from(b'0' + (n / 10u32.pow(k) % 10) as u8)));
    };
    push(None, year as u32, 4);
    push(Some('-'), t.month(), 2);
    push(Some('-'), t.day(), 2);
    push(Some(' '), t.hour(), 2);
    push(Some(':'), t.minute(), 2);
    push(Some(':'), t.second(), 2);
    match nanos {
        0 => {}
        n if n % 1_000_000 == 0 => push(Some('.'), n / 1_000_000, 3),
        n if n % 1_000 == 0 => push(Some('.'), n / 1_000, 6),
        n => push(Some('.'), n, 9),
    }
    s
}

/// The text [`format`] writes, with 1 to 9 digits of fraction; `None` for
/// anything else (which diesel's parser then reads).
pub fn parse(text: &str) -> Option<NaiveDateTime> {
    let b = text.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[10] != b' ' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u32> {
        b[from..to].iter().try_fold(0u32, |n, c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
    };
    let nanos = match &b[19..] {
        [] => 0,
        [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => {
            num(20, b.len())? * 10u32.pow(9 - digits.len() as u32)
        }
        _ => return None,
    };
    NaiveDate::from_ymd_opt(num(0, 4)? as i32, num(5, 7)?, num(8, 10)?)?.and_hms_nano_opt(
        num(11, 13)?,
        num(14, 16)?,
        num(17, 19)?,
        nanos,
    )
}

impl ToSql<Timestamp, Sqlite> for Stamp {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
        out.set_value(format(&self.0));
        Ok(IsNull::No)
    }
}

impl FromSql<Timestamp, Sqlite> for Stamp {
    fn from_sql(mut value: SqliteValue<'_, '_, '_>) -> deserialize::Result<Self> {
        match parse(value.read_text()) {
            Some(t) => Ok(Stamp(t)),
            None => <NaiveDateTime as FromSql<Timestamp, Sqlite>>::from_sql(value).map(Stamp),
        }
    }
}

impl ToSql<Timestamp, Pg> for Stamp {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        <NaiveDateTime as ToSql<Timestamp, Pg>>::to_sql(&self.0, out)
    }
}

impl FromSql<Timestamp, Pg> for Stamp {
    fn from_sql(value: diesel::pg::PgValue<'_>) -> deserialize::Result<Self> {
        <NaiveDateTime as FromSql<Timestamp, Pg>>::from_sql(value).map(Stamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Times with every fraction width, from a fixed seed.
    fn samples() -> Vec<NaiveDateTime> {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut out = vec![NaiveDate::from_ymd_opt(2026, 11, 30).unwrap().and_hms_opt(0, 0, 0).unwrap()];
        for i in 0..4000 {
            let secs = (next() % 253_402_300_799) as i64; // 1970 to 9999
            let nanos = match i % 4 {
                0 => 0,
                1 => (next() % 1000) as u32 * 1_000_000,
                2 => (next() % 1_000_000) as u32 * 1_000,
                _ => (next() % 1_000_000_000) as u32,
            };
            out.push(chrono::DateTime::from_timestamp(secs, nanos).unwrap().naive_utc());
        }
        out
    }

    #[test]
    fn writes_what_chrono_writes_and_reads_it_back() {
        for t in samples() {
            let text = format(&t);
            assert_eq!(text, t.format("%F %T%.f").to_string());
            assert_eq!(parse(&text), Some(t), "{text}");
        }
    }

    #[test]
    fn leaves_other_texts_to_diesel() {
        for text in ["2026-11-30T10:00:00", "2026-11-30 10:00", "2026-13-01 00:00:00", "2026-11-30 10:00:00.", "x"] {
            assert_eq!(parse(text), None, "{text}");
        }
        assert_eq!(parse("2026-11-30 10:00:00.1234567891"), None, "ten digits");
        let t = parse("2026-11-30 10:00:00.5").unwrap();
        assert_eq!(t.nanosecond(), 500_000_000);
    }
}
