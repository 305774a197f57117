//! The binary's exit codes and messages for configuration problems.

use std::process::Command;

fn cronsumer(env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let dir = std::env::temp_dir().join(crate::common::unique("cli-"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cronsumer"));
    cmd.current_dir(&dir).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
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
    let dir = std::env::temp_dir().join(crate::common::unique("migrate-"));
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
