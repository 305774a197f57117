//! `.env`: `NAME=value` lines, read under the process environment (a
//! variable already set wins). A value is taken as written, spaces and `#`
//! included, as `docker run --env-file` and systemd's `EnvironmentFile` take
//! it, so one file serves all three; one pair of matching quotes around a
//! whole value is removed, so files written for dotenv tools work too.

use std::path::Path;

/// A line that is not `NAME=value`, blank, or a `#` comment, or a file that
/// exists but cannot be read (line 0).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{path} line {line}: {reason}")]
pub struct EnvFileError {
    pub path: String,
    pub line: usize,
    pub reason: String,
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return &v[1..v.len() - 1];
        }
    }
    v
}

/// The `(name, value)` pairs of a file's text, in order.
pub fn parse(path: &str, text: &str) -> Result<Vec<(String, String)>, EnvFileError> {
    let mut pairs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let error = |reason: &str| EnvFileError { path: path.into(), line: i + 1, reason: reason.into() };
        let Some((name, value)) = line.split_once('=') else {
            return Err(error("expected NAME=value"));
        };
        let name = name.trim();
        if !is_name(name) {
            // The line may hold a secret: only the name part is described.
            return Err(error("the name before `=` must be letters, digits and _"));
        }
        pairs.push((name.to_string(), unquote(value.trim()).to_string()));
    }
    Ok(pairs)
}

/// Sets the variables of `path` that the environment does not set already.
/// A missing file is no error.
pub fn load(path: &Path) -> Result<(), EnvFileError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(EnvFileError { path: path.display().to_string(), line: 0, reason: format!("cannot read: {e}") })
        }
    };
    for (name, value) in parse(&path.display().to_string(), &text)? {
        if std::env::var_os(&name).is_none() {
            // Settings are read once at start, before any thread is spawned.
            std::env::set_var(name, value);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_taken_as_written_and_quotes_removed() {
        let text = "# comment\n\nA=1\nCRON=*/30 * * * * *\nQ='*/5 * * * * *'\nD=\"x y\"\nexport E = e \nP=pa#ss word\nEMPTY=\n";
        let got = parse(".env", text).unwrap();
        let want = [
            ("A", "1"),
            ("CRON", "*/30 * * * * *"),
            ("Q", "*/5 * * * * *"),
            ("D", "x y"),
            ("E", "e"),
            ("P", "pa#ss word"),
            ("EMPTY", ""),
        ];
        assert_eq!(got, want.map(|(n, v)| (n.to_string(), v.to_string())));
    }

    #[test]
    fn a_bad_line_is_named_by_number() {
        let e = parse(".env", "A=1\nnot a setting\n").unwrap_err();
        assert_eq!((e.line, e.reason.as_str()), (2, "expected NAME=value"));
        let e = parse(".env", "A=1\n\nBAD NAME=secret\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(!e.to_string().contains("secret"));
    }
}
