//! The binary's exit codes and messages for configuration problems, the
//! settings files it reads, and secrets kept out of what it prints.

use std::process::Command;

fn cronsumer(env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    crate::support::cli_env(env.iter().copied(), args)
}

#[test]
fn bad_setting_prints_one_line_naming_it_and_exits_2() {
    let (code, _, err) = cronsumer(&[("CONSUMER_BATCH_SIZE", "zero")], &["config"]);
    assert_eq!(code, 2);
    assert_eq!(
        err.trim(),
        r#"error: invalid setting CONSUMER_BATCH_SIZE="zero": expected a whole number from 1 to 100000"#
    );
}

#[test]
fn unreachable_database_exits_2_naming_the_url() {
    let (code, _, err) = cronsumer(&[("DATABASE_URL", "postgres://nobody@127.0.0.1:1/x")], &["migrate"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: cannot open database postgres://nobody@127.0.0.1:1/x"), "{err}");
    assert!(!err.contains("panicked") && !err.contains("backtrace"));
}

#[test]
fn config_prints_effective_settings_with_secrets_redacted() {
    let (code, out, _) = cronsumer(
        &[("KAFKA_SASL_PASSWORD", "hunter2"), ("KAFKA_PROP_SESSION_TIMEOUT_MS", "6000"), ("CONSUMER_BATCH_SIZE", "50")],
        &["config"],
    );
    assert_eq!(code, 0);
    assert!(out.contains("CONSUMER_BATCH_SIZE=50"));
    assert!(out.contains("KAFKA_SASL_PASSWORD=***"));
    assert!(out.contains("KAFKA_PROP_SESSION_TIMEOUT_MS (session.timeout.ms)=6000"));
    assert!(!out.contains("hunter2"));
}

#[test]
fn migrate_creates_a_sqlite_file_and_its_directory() {
    let dir = std::env::temp_dir().join(crate::support::unique("migrate-"));
    let url = dir.join("nested/app.db");
    let (code, out, err) = cronsumer(&[("DATABASE_URL", url.to_str().unwrap())], &["migrate"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("applied"), "{out}");
    assert!(url.exists());
    let (code, out, _) = cronsumer(&[("DATABASE_URL", url.to_str().unwrap())], &["migrate"]);
    assert_eq!(code, 0);
    assert!(out.contains("up to date"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unknown_command_is_a_usage_error() {
    let (code, _, err) = cronsumer(&[], &["frobnicate"]);
    assert_eq!(code, 2);
    assert!(err.contains("unrecognized subcommand"), "{err}");
}

/// `.env.example` as `docker run --env-file` reads it: every non-comment
/// line is one variable, taken literally. The same file as `.env` in the
/// working directory reads the same.
#[test]
fn env_example_works_unchanged_as_an_env_file_and_as_dotenv() {
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example")).unwrap();
    let lines: Vec<&str> =
        example.lines().filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')).collect();
    assert!(lines.contains(&"NOTIFICATIONS_CRON=*/30 * * * * *"), "{lines:?}");
    let run = |env: &[(String, String)], dotenv: Option<&str>| {
        let dir = std::env::temp_dir().join(crate::support::unique("envfile-"));
        std::fs::create_dir_all(&dir).unwrap();
        if let Some(text) = dotenv {
            std::fs::write(dir.join(".env"), text).unwrap();
        }
        let out = Command::new(env!("CARGO_BIN_EXE_cronsumer"))
            .current_dir(&dir)
            .env_clear()
            .envs(env.iter().cloned())
            .arg("config")
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let vars: Vec<(String, String)> =
        lines.iter().map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).unwrap()).collect();
    let (code, as_env_file, err) = run(&vars, None);
    assert_eq!(code, Some(0), "{err}");
    assert!(as_env_file.contains("NOTIFICATIONS_CRON=*/30 * * * * *\n"), "{as_env_file}");
    let (code, as_dotenv, err) = run(&[], Some(&example));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(as_dotenv, as_env_file);
    // A line that is no setting is named by its number, and exits 2.
    let (code, _, err) = run(&[], Some("CONSUMER_BATCH_SIZE=25\nnot a setting\n"));
    assert_eq!(code, Some(2));
    assert!(err.contains(".env") && err.contains("line 2"), "{err}");
}

/// Every form a secret takes stays out of what the commands print,
/// librdkafka's refusal of a value included.
#[test]
fn secrets_are_never_printed() {
    let secrets = [
        ("DATABASE_URL", "postgres://app:pa?ss#word1@127.0.0.1:1/app?sslpassword=hunter2-ssl"),
        ("NOTIFIER", "webhook"),
        ("NOTIFY_WEBHOOK_URL", "https://hooks.example.com/services/T0/B0/hunter2-path?token=hunter2-query"),
        ("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
        ("KAFKA_SASL_MECHANISM", "PLAIN"),
        ("KAFKA_SASL_PASSWORD", "hunter2-sasl"),
        ("KAFKA_PROP_SSL_KEY_PASSWORD", "hunter2-key"),
        ("HTTP_ADMIN_TOKEN", "hunter2-admin-token"),
    ];
    let leaked = |text: &str| ["hunter2", "pa?ss", "word1"].iter().any(|s| text.contains(s));
    let (code, out, err) = cronsumer(&secrets, &["config"]);
    assert_eq!(code, 0, "{err}");
    assert!(!leaked(&out) && !leaked(&err), "{out}{err}");
    assert!(out.contains("postgres://app:***@127.0.0.1:1/app?sslpassword=***"), "{out}");
    assert!(out.contains("NOTIFY_WEBHOOK_URL=https://hooks.example.com/***"), "{out}");
    // The database cannot be reached: its error names the URL, redacted.
    let (code, out, err) = cronsumer(&secrets, &["migrate"]);
    assert_eq!(code, 2);
    assert!(!leaked(&out) && !leaked(&err), "{out}{err}");
    // librdkafka refuses a value and quotes it (here a secret pasted into the wrong setting).
    let mut refused = secrets.to_vec();
    refused.retain(|(k, _)| !k.starts_with("DATABASE"));
    refused.push(("KAFKA_PROP_SOCKET_TIMEOUT_MS", "hunter2-sasl"));
    let (code, out, err) = cronsumer(&refused, &["topics"]);
    assert_ne!(code, 0);
    assert!(!leaked(&out) && !leaked(&err), "{out}{err}");
    assert!(err.contains("socket.timeout.ms") && err.contains("***"), "{err}");
    // A short admin token is refused by name, not shown.
    let (code, _, err) = cronsumer(&[("HTTP_ADMIN_TOKEN", "hunter2")], &["config"]);
    assert_eq!(code, 2);
    assert!(err.contains("HTTP_ADMIN_TOKEN") && !err.contains("hunter2"), "{err}");
}

/// A stop asked for while the service still waits for an unreachable broker
/// at start is a clean stop: exit 0, as a service manager expects.
#[test]
fn sigterm_while_waiting_for_the_broker_at_start_exits_0() {
    let dir = std::env::temp_dir().join(crate::support::unique("start-term-"));
    let env = vec![
        ("DATABASE_URL".to_string(), dir.join("app.db").display().to_string()),
        // Nothing listens on port 1: every attempt fails, for a long while.
        ("KAFKA_BOOTSTRAP_SERVERS".to_string(), "127.0.0.1:1".to_string()),
        ("KAFKA_CONNECT_MAX_RETRIES".to_string(), "100".to_string()),
    ];
    let svc = crate::support::Service::start_in("waiting", &dir, env, &[("SHUTDOWN_TIMEOUT_MS", "5000")]);
    svc.wait_for("a failed broker attempt", std::time::Duration::from_secs(60), || {
        svc.log_text().contains("event=kafka_unreachable")
    });
    assert_eq!(svc.terminate(), Some(0), "exit status of a stop asked for during start:\n{}", svc.log_tail(20));
    let _ = std::fs::remove_dir_all(&dir);
}
