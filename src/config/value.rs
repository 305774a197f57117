//! What a setting's text may be: each kind parses the text (the variable,
//! else its default, else empty) into the setting's value, says what it
//! expected when it cannot, and shows a value back for `cronsumer config`,
//! redacting secrets both ways.

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::time::Duration;

use crate::config::cron::Schedule;
use crate::config::redact::{self, REDACTED};

/// One kind of setting value.
pub trait Kind {
    type Value;
    /// Parses trimmed text; `Err` says what was expected.
    fn parse(&self, text: &str) -> Result<Self::Value, String>;
    /// The value as `cronsumer config` prints it.
    fn show(&self, value: &Self::Value) -> String;
    /// A refused text as the error message shows it.
    fn shown(&self, text: &str) -> String {
        text.to_string()
    }
    /// The parts of the value that are secret (scrubbed from every message).
    fn secrets(&self, _value: &Self::Value) -> Vec<String> {
        Vec::new()
    }
}

/// Any text, empty included.
pub struct Text;

impl Kind for Text {
    type Value = String;
    fn parse(&self, text: &str) -> Result<String, String> {
        Ok(text.to_string())
    }
    fn show(&self, v: &String) -> String {
        v.clone()
    }
}

/// Text that must not be empty.
pub struct NonEmpty;

impl Kind for NonEmpty {
    type Value = String;
    fn parse(&self, text: &str) -> Result<String, String> {
        if text.is_empty() {
            return Err("a non-empty value".into());
        }
        Ok(text.to_string())
    }
    fn show(&self, v: &String) -> String {
        v.clone()
    }
}

/// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
pub struct Flag;

impl Kind for Flag {
    type Value = bool;
    fn parse(&self, text: &str) -> Result<bool, String> {
        match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err("true or false".into()),
        }
    }
    fn show(&self, v: &bool) -> String {
        v.to_string()
    }
}

/// A whole number in `min..=max`, as the field's integer type.
pub struct Int<T>(u64, u64, PhantomData<T>);

pub const fn int<T>(min: u64, max: u64) -> Int<T> {
    Int(min, max, PhantomData)
}

impl<T: TryFrom<u64> + ToString> Kind for Int<T> {
    type Value = T;
    fn parse(&self, text: &str) -> Result<T, String> {
        let Int(min, max, _) = *self;
        text.parse::<u64>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .and_then(|n| T::try_from(n).ok())
            .ok_or_else(|| format!("a whole number from {min} to {max}"))
    }
    fn show(&self, v: &T) -> String {
        v.to_string()
    }
}

/// Milliseconds in `min..=max`, as a duration.
pub struct Millis(pub u64, pub u64);

impl Kind for Millis {
    type Value = Duration;
    fn parse(&self, text: &str) -> Result<Duration, String> {
        int::<u64>(self.0, self.1).parse(text).map(Duration::from_millis)
    }
    fn show(&self, v: &Duration) -> String {
        v.as_millis().to_string()
    }
}

/// One of the named values (any case).
pub struct Choice<T: 'static>(pub &'static [(&'static str, T)]);

impl<T: Copy + PartialEq> Kind for Choice<T> {
    type Value = T;
    fn parse(&self, text: &str) -> Result<T, String> {
        match self.0.iter().find(|(name, _)| name.eq_ignore_ascii_case(text)) {
            Some((_, t)) => Ok(*t),
            None => Err(format!("one of {}", self.0.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "))),
        }
    }
    fn show(&self, v: &T) -> String {
        self.0.iter().find(|(_, t)| t == v).map_or_else(String::new, |(n, _)| n.to_string())
    }
}

/// One of the listed names (any case), kept as the list spells it.
pub struct OneOf(pub &'static [&'static str]);

impl Kind for OneOf {
    type Value = String;
    fn parse(&self, text: &str) -> Result<String, String> {
        match self.0.iter().find(|name| name.eq_ignore_ascii_case(text)) {
            Some(name) => Ok(name.to_string()),
            None => Err(format!("one of {}", self.0.join(", "))),
        }
    }
    fn show(&self, v: &String) -> String {
        v.clone()
    }
}

/// Unset (empty), or a value of the inner kind.
pub struct Optional<K>(pub K);

impl<K: Kind> Kind for Optional<K> {
    type Value = Option<K::Value>;
    fn parse(&self, text: &str) -> Result<Self::Value, String> {
        if text.is_empty() {
            return Ok(None);
        }
        self.0.parse(text).map(Some)
    }
    fn show(&self, v: &Self::Value) -> String {
        v.as_ref().map(|v| self.0.show(v)).unwrap_or_default()
    }
    fn shown(&self, text: &str) -> String {
        self.0.shown(text)
    }
    fn secrets(&self, v: &Self::Value) -> Vec<String> {
        v.as_ref().map(|v| self.0.secrets(v)).unwrap_or_default()
    }
}

/// `auto` (the service decides), or a value of the inner kind.
pub struct Auto<K>(pub K);

impl<K: Kind> Kind for Auto<K> {
    type Value = Option<K::Value>;
    fn parse(&self, text: &str) -> Result<Self::Value, String> {
        if text.eq_ignore_ascii_case("auto") {
            return Ok(None);
        }
        self.0.parse(text).map(Some).map_err(|e| format!("auto or {e}"))
    }
    fn show(&self, v: &Self::Value) -> String {
        v.as_ref().map_or_else(|| "auto".to_string(), |v| self.0.show(v))
    }
}

/// A secret of at least this many characters; never shown.
pub struct Secret(pub usize);

impl Kind for Secret {
    type Value = String;
    fn parse(&self, text: &str) -> Result<String, String> {
        if text.chars().count() < self.0 {
            return Err(format!("at least {} characters (or unset)", self.0));
        }
        Ok(text.to_string())
    }
    fn show(&self, _: &String) -> String {
        REDACTED.into()
    }
    fn shown(&self, _: &str) -> String {
        REDACTED.into()
    }
    fn secrets(&self, v: &String) -> Vec<String> {
        vec![v.clone()]
    }
}

/// A cron expression, 6 fields with seconds first.
pub struct Cron;

impl Kind for Cron {
    type Value = Schedule;
    fn parse(&self, text: &str) -> Result<Schedule, String> {
        text.parse().map_err(|e: crate::config::cron::CronError| e.to_string())
    }
    fn show(&self, v: &Schedule) -> String {
        v.to_string()
    }
}

/// `IP:PORT`.
pub struct Addr;

impl Kind for Addr {
    type Value = SocketAddr;
    fn parse(&self, text: &str) -> Result<SocketAddr, String> {
        text.parse().map_err(|_| "HOST:PORT with an IP address, e.g. 127.0.0.1:8080".into())
    }
    fn show(&self, v: &SocketAddr) -> String {
        v.to_string()
    }
}

/// Which database `DATABASE_URL` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> Result<Backend, String> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else if url.starts_with("sqlite:") || !url.contains("://") {
            Ok(Backend::Sqlite)
        } else {
            Err("a file path, sqlite://PATH or postgres://USER@HOST/DB".into())
        }
    }
}

/// A database URL cronsumer has a backend for; its password is never shown.
pub struct DatabaseUrl;

impl Kind for DatabaseUrl {
    type Value = String;
    fn parse(&self, text: &str) -> Result<String, String> {
        NonEmpty.parse(text)?;
        Backend::of_url(text)?;
        Ok(text.to_string())
    }
    fn show(&self, v: &String) -> String {
        redact::url(v)
    }
    fn shown(&self, text: &str) -> String {
        redact::url(text)
    }
}

/// An `http://` or `https://` URL, shown without its secrets (its password
/// and secret-named query values). A secret one (a webhook's, whose path is
/// often its token) shows its origin only and is scrubbed whole from messages.
pub struct HttpUrl {
    pub secret: bool,
}

impl Kind for HttpUrl {
    type Value = String;
    fn parse(&self, text: &str) -> Result<String, String> {
        if !(text.starts_with("http://") || text.starts_with("https://")) {
            return Err("an http:// or https:// URL".into());
        }
        Ok(text.to_string())
    }
    fn show(&self, v: &String) -> String {
        self.shown(v)
    }
    fn shown(&self, text: &str) -> String {
        if self.secret {
            redact::webhook_url(text)
        } else {
            redact::url(text)
        }
    }
    fn secrets(&self, v: &String) -> Vec<String> {
        if self.secret {
            vec![v.clone()]
        } else {
            Vec::new()
        }
    }
}

/// Whole seconds in `min..=max`, as a duration.
pub struct Seconds(pub u64, pub u64);

impl Kind for Seconds {
    type Value = Duration;
    fn parse(&self, text: &str) -> Result<Duration, String> {
        int::<u64>(self.0, self.1).parse(text).map(Duration::from_secs)
    }
    fn show(&self, v: &Duration) -> String {
        v.as_secs().to_string()
    }
}

/// A ticker symbol, upper-cased: 1 to 16 of `A-Z 0-9 . -` (`AAPL`, `BRK.B`).
pub fn symbol(text: &str) -> Result<String, String> {
    let s = text.trim().to_ascii_uppercase();
    let legal = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '-';
    if s.is_empty() || s.len() > 16 || !s.chars().all(legal) {
        return Err(format!("a ticker symbol is 1 to 16 of A-Z 0-9 . - (got {text:?})"));
    }
    Ok(s)
}

/// A comma-separated list of ticker symbols (empty: none), upper-cased.
pub struct Symbols;

impl Kind for Symbols {
    type Value = Vec<String>;
    fn parse(&self, text: &str) -> Result<Vec<String>, String> {
        let mut out: Vec<String> = Vec::new();
        for s in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let symbol = symbol(s).map_err(|e| format!("symbols separated by commas ({e})"))?;
            if !out.contains(&symbol) {
                out.push(symbol);
            }
        }
        Ok(out)
    }
    fn show(&self, v: &Vec<String>) -> String {
        v.join(",")
    }
}

/// A comma-separated list of record field names (empty: none), in order.
pub struct Fields;

impl Kind for Fields {
    type Value = Vec<String>;
    fn parse(&self, text: &str) -> Result<Vec<String>, String> {
        let fields: Vec<String> = text.split(',').map(str::trim).filter(|f| !f.is_empty()).map(String::from).collect();
        let legal = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.';
        match fields.iter().find(|f| f.len() > 64 || !f.chars().all(legal)) {
            Some(bad) => Err(format!("field names separated by commas (1 to 64 of a-z A-Z 0-9 _ - .; got {bad:?})")),
            None => Ok(fields),
        }
    }
    fn show(&self, v: &Vec<String>) -> String {
        v.join(",")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
}

impl OffsetReset {
    pub fn as_str(self) -> &'static str {
        match self {
            OffsetReset::Earliest => "earliest",
            OffsetReset::Latest => "latest",
        }
    }
}

/// How the predictions module talks to its model server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictProtocol {
    Json,
    V2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifierKind {
    Log,
    Webhook,
}
