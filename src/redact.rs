//! Secrets kept out of what the service prints: URLs with credentials, the
//! webhook URL (whose path or query often is the credential), and messages
//! that echo a secret setting's value (librdkafka's "invalid value" errors).

use crate::config::Settings;

pub const REDACTED: &str = "***";

/// Setting and property names whose values must never be printed.
pub fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    let contains = ["password", "passwd", "secret", "token", "key", "signature", "credential"];
    (contains.iter().any(|s| n.contains(s)) || n == "sig") && !n.ends_with(".location")
}

/// A URL with its password and any secret-named query value replaced:
/// `postgres://u:***@h/db?sslpassword=***`. The userinfo ends at the last
/// `@` before the path, so a password holding `?` or `#` is still found.
pub fn url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let path_start = rest.find('/').unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(path_start);
    let authority = match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            match userinfo.find(':') {
                Some(colon) => format!("{}:{REDACTED}{host}", &userinfo[..colon]),
                None => authority.to_string(),
            }
        }
        None => authority.to_string(),
    };
    format!("{}{authority}{}", &url[..scheme_end], query_values(tail))
}

/// The secret parts of a URL (password, secret-named query values), to
/// scrub from messages that quote them (libpq's parse errors do).
pub fn url_secrets(url: &str) -> Vec<String> {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return Vec::new() };
    let rest = &url[scheme_end..];
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut secrets = Vec::new();
    if let Some((userinfo, _)) = authority.rsplit_once('@') {
        if let Some((_, password)) = userinfo.split_once(':') {
            secrets.push(password.to_string());
        }
    }
    if let Some((_, query)) = tail.split_once('?') {
        let query = query.split('#').next().unwrap_or_default();
        secrets.extend(
            query
                .split('&')
                .filter_map(|p| p.split_once('='))
                .filter(|(n, _)| is_secret_name(n))
                .map(|(_, v)| v.to_string()),
        );
    }
    secrets.retain(|s| !s.is_empty());
    secrets
}

/// `?a=1&password=x` → `?a=1&password=***` (the part from `?` on; `#` ends it).
fn query_values(tail: &str) -> String {
    let Some(q) = tail.find('?') else { return tail.to_string() };
    let (path, query) = tail.split_at(q + 1);
    let (query, fragment) = query.split_at(query.find('#').unwrap_or(query.len()));
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret_name(name) => format!("{name}={REDACTED}"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{path}{}{fragment}", pairs.join("&"))
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

/// The secret values among the settings, to scrub from messages.
pub fn secret_values(settings: &Settings) -> Vec<String> {
    let k = &settings.kafka;
    let mut secrets: Vec<String> = k.sasl_password.iter().cloned().collect();
    secrets.extend(k.props.iter().filter(|(name, _)| is_secret_name(name)).map(|(_, v)| v.clone()));
    secrets.extend(settings.http_admin_token.iter().cloned());
    secrets.extend(settings.notify_webhook_url.iter().cloned());
    // Too short a value would blank ordinary words; such a secret is no secret.
    secrets.retain(|s| s.len() >= 4);
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets
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
