//! Secrets kept out of what the service prints: URLs with credentials, the
//! webhook URL (whose path or query often is the credential), and messages
//! that echo a secret setting's value (librdkafka's "invalid value" errors).

pub const REDACTED: &str = "***";

/// Setting and property names whose values must never be printed.
pub fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    let contains = ["password", "passwd", "secret", "token", "key", "signature", "credential"];
    (contains.iter().any(|s| n.contains(s)) || n == "sig") && !n.ends_with(".location")
}

/// A URL's parts: everything up to `://`, the userinfo (before the last
/// `@` that comes before the path), the host, the path, the query (after
/// `?`) and the fragment (from `#`). A password holding `?` or `#` still
/// ends at that `@`.
struct Parts<'a> {
    scheme: &'a str,
    userinfo: Option<&'a str>,
    host: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    fragment: &'a str,
}

fn parts(url: &str) -> Option<Parts<'_>> {
    let scheme_end = url.find("://")? + 3;
    let (scheme, after) = url.split_at(scheme_end);
    let path_start = after.find('/').unwrap_or(after.len());
    let (userinfo, host_and_rest) = match after[..path_start].rfind('@') {
        Some(at) => (Some(&after[..at]), &after[at + 1..]),
        None => (None, after),
    };
    let host_end = host_and_rest.find(['/', '?', '#']).unwrap_or(host_and_rest.len());
    let (host, rest) = host_and_rest.split_at(host_end);
    let (rest, fragment) = rest.split_at(rest.find('#').unwrap_or(rest.len()));
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    Some(Parts { scheme, userinfo, host, path, query, fragment })
}

/// A URL with its password and any secret-named query value replaced:
/// `postgres://u:***@h/db?sslpassword=***`.
pub fn url(url: &str) -> String {
    let Some(p) = parts(url) else { return url.to_string() };
    let userinfo = match p.userinfo {
        Some(u) => match u.split_once(':') {
            Some((user, _)) => format!("{user}:{REDACTED}@"),
            None => format!("{u}@"),
        },
        None => String::new(),
    };
    let query = p.query.map_or(String::new(), |q| {
        let pairs: Vec<String> = q
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if is_secret_name(name) => format!("{name}={REDACTED}"),
                _ => pair.to_string(),
            })
            .collect();
        format!("?{}", pairs.join("&"))
    });
    format!("{}{userinfo}{}{}{query}{}", p.scheme, p.host, p.path, p.fragment)
}

/// The secret parts of a URL (password, secret-named query values), to
/// scrub from messages that quote them (libpq's parse errors do).
pub fn url_secrets(url: &str) -> Vec<String> {
    let Some(p) = parts(url) else { return Vec::new() };
    let password = p.userinfo.and_then(|u| u.split_once(':')).map(|(_, pw)| pw);
    let pairs = p.query.into_iter().flat_map(|q| q.split('&')).filter_map(|kv| kv.split_once('='));
    let values = pairs.filter(|(name, _)| is_secret_name(name)).map(|(_, v)| v);
    password.into_iter().chain(values).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// The webhook URL as printed: its origin only. Webhook services put the
/// credential in the path (`/services/T0/B0/XXXX`) or the query.
pub fn webhook_url(webhook: &str) -> String {
    let shown = url(webhook);
    let Some(scheme_end) = shown.find("://").map(|i| i + 3) else { return REDACTED.to_string() };
    let origin_end = shown[scheme_end..].find(['/', '?', '#']).map_or(shown.len(), |i| scheme_end + i);
    if origin_end == shown.len() || &shown[origin_end..] == "/" {
        shown
    } else {
        format!("{}/{REDACTED}", &shown[..origin_end])
    }
}

/// `text` with every secret value replaced.
pub fn scrub(text: &str, secrets: &[String]) -> String {
    secrets.iter().fold(text.to_string(), |t, s| t.replace(s.as_str(), REDACTED))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls() {
        assert_eq!(url("postgres://u:p@h/db"), "postgres://u:***@h/db");
        assert_eq!(url("postgres://u:pa?ss@h/db"), "postgres://u:***@h/db");
        assert_eq!(url("postgres://u:pa#ss@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(url("postgres://u:p@ss@h/db"), "postgres://u:***@h/db");
        assert_eq!(url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(url("postgres://h/db?user=u&password=hunter2"), "postgres://h/db?user=u&password=***");
        assert_eq!(url("postgres://h/db?sslpassword=x#f"), "postgres://h/db?sslpassword=***#f");
        assert_eq!(url("./data/x.db"), "./data/x.db");
        assert_eq!(url("http://h/p?x=a@b"), "http://h/p?x=a@b");
        assert_eq!(url_secrets("postgres://u:pa?ss@h/db?password=x2"), ["pa?ss", "x2"]);
        assert_eq!(url("postgres://db:5432?user=u&password=hunter2"), "postgres://db:5432?user=u&password=***");
        assert_eq!(url_secrets("postgres://db:5432?user=u&password=hunter2"), ["hunter2"]);
        assert_eq!(url("postgres://u:pw@db:5432?sslmode=require"), "postgres://u:***@db:5432?sslmode=require");
    }

    #[test]
    fn webhook_urls_show_their_origin_only() {
        assert_eq!(webhook_url("https://hooks.example.com/services/T0/B0/XXXX"), "https://hooks.example.com/***");
        assert_eq!(webhook_url("https://h.example/hook?token=abc"), "https://h.example/***");
        assert_eq!(webhook_url("https://u:pw@h.example"), "https://u:***@h.example");
        assert_eq!(webhook_url("http://127.0.0.1:9000/"), "http://127.0.0.1:9000/");
    }

    #[test]
    fn secret_names() {
        for n in ["sasl.password", "ssl.key.password", "sasl.oauthbearer.client.secret", "token", "api_key", "sig"] {
            assert!(is_secret_name(n), "{n}");
        }
        for n in ["ssl.key.location", "session.timeout.ms", "user", "signal"] {
            assert!(!is_secret_name(n), "{n}");
        }
    }

    #[test]
    fn scrub_replaces_every_secret() {
        let secrets = vec!["hunter2hunter2".to_string(), "s3cret".to_string()];
        let text = r#"Invalid value "hunter2hunter2" for configuration property "sasl.password"; s3cret"#;
        assert_eq!(scrub(text, &secrets), r#"Invalid value "***" for configuration property "sasl.password"; ***"#);
    }
}
