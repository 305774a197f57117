//! The `cronsumer` binary from outside: `cronsumer run` as a service (a
//! child process with its own HTTP port and log file), and one-shot
//! commands run to completion.

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use cronsumer::config::Settings;

use super::http::{free_addr, http_get};
use super::lock;
use super::metrics::metric;
use super::services::{env_of, unique};
use super::wait::poll;

/// A `cronsumer run` child process with its own HTTP port and log file;
/// killed (SIGKILL) when dropped, and its log tail printed if the test failed.
pub struct Service {
    pub label: String,
    child: Mutex<Child>,
    pub http: String,
    pub log: PathBuf,
    /// A working directory of its own: removed when dropped, unless the test failed.
    own_dir: Option<PathBuf>,
}

impl Service {
    /// Starts `cronsumer run` with the settings `s` on `db_url` and
    /// `extra_env` on top, in a fresh working directory.
    pub fn start(s: &Settings, db_url: &str, extra_env: &[(&str, &str)]) -> Service {
        Service::start_bin(Path::new(env!("CARGO_BIN_EXE_cronsumer")), s, db_url, extra_env)
    }

    /// [`Service::start`] of another build of the binary (the benchmark's
    /// baseline).
    pub fn start_bin(bin: &Path, s: &Settings, db_url: &str, extra_env: &[(&str, &str)]) -> Service {
        let dir = std::env::temp_dir().join(unique("svc-"));
        let mut svc = Service::spawn(bin, "service", &dir, env_of(s, db_url), extra_env);
        svc.own_dir = Some(dir);
        svc
    }

    /// Starts `cronsumer run` named `label`, working in `dir` (created; the
    /// caller removes it), its output in `<dir>/cronsumer.log`, a free HTTP
    /// port, with `env` and then `extra_env` on top of the test's own
    /// environment (less the fault injection's variable).
    pub fn start_in(label: &str, dir: &Path, env: Vec<(String, String)>, extra_env: &[(&str, &str)]) -> Service {
        Service::spawn(Path::new(env!("CARGO_BIN_EXE_cronsumer")), label, dir, env, extra_env)
    }

    fn spawn(bin: &Path, label: &str, dir: &Path, env: Vec<(String, String)>, extra_env: &[(&str, &str)]) -> Service {
        std::fs::create_dir_all(dir).unwrap();
        let http = free_addr();
        let log = dir.join("cronsumer.log");
        let out = File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("run").current_dir(dir);
        #[cfg(feature = "fault-injection")]
        cmd.env_remove(cronsumer::consume::fault_injection::PANIC_PAYLOAD_ENV);
        cmd.envs(env)
            .env("HTTP_ADDR", &http)
            .envs(extra_env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        Service { label: label.to_string(), child: Mutex::new(child), http, log, own_dir: None }
    }

    pub fn pid(&self) -> u32 {
        lock(&self.child).id()
    }

    /// `None` while it runs; its exit status once it exited.
    pub fn exited(&self) -> Option<ExitStatus> {
        lock(&self.child).try_wait().unwrap_or_else(|e| panic!("cannot check cronsumer {}: {e}", self.label))
    }

    pub fn is_running(&self) -> bool {
        self.exited().is_none()
    }

    pub fn assert_running(&self, when: &str) {
        if let Some(status) = self.exited() {
            panic!("cronsumer {} exited ({status}) {when}", self.label);
        }
    }

    /// Polls `cond` every 50 ms until it holds; fails the test at once if
    /// the service exited, and after `limit`.
    pub fn wait_for(&self, what: &str, limit: Duration, cond: impl FnMut() -> bool) {
        wait_while_running(&[self], what, limit, Duration::from_millis(50), cond);
    }

    /// SIGKILL, and reap it.
    pub fn kill9(&self) {
        self.assert_running("before it was to be killed");
        let mut c = lock(&self.child);
        let _ = c.kill();
        let _ = c.wait();
    }

    /// SIGTERM (returns at once).
    pub fn term(&self) {
        let pid = self.pid();
        let status = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Its exit status once it exited, or `None` when it still runs after `limit`.
    pub fn wait_exit(&self, limit: Duration) -> Option<ExitStatus> {
        let mut status = None;
        poll(limit, Duration::from_millis(50), || {
            status = self.exited();
            status.is_some()
        });
        status
    }

    /// SIGTERM, then the exit code (fails the test after 30 s).
    pub fn terminate(&self) -> Option<i32> {
        self.term();
        let status = self.wait_exit(Duration::from_secs(30));
        status.unwrap_or_else(|| panic!("cronsumer {} did not exit within 30 s of SIGTERM", self.label)).code()
    }

    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(&self.http, path)
    }

    pub fn healthz(&self) -> Option<(u16, String)> {
        self.get("/healthz")
    }

    /// `/metrics`; fails the test unless it answers 200.
    pub fn metrics(&self) -> String {
        match self.get("/metrics") {
            Some((200, body)) => body,
            other => panic!("GET /metrics of cronsumer {} answered {other:?}", self.label),
        }
    }

    /// Partitions this copy holds, from `/metrics` (0 when it does not answer).
    pub fn assigned(&self) -> f64 {
        match self.get("/metrics") {
            Some((200, body)) => metric(&body, "cronsumer_assigned_partitions").unwrap_or(0.0),
            _ => 0.0,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read(&self.log).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- cronsumer {} (log {}), last lines ----\n{}\n----",
                self.label,
                self.log.display(),
                self.log_tail(120)
            );
        } else if let Some(dir) = &self.own_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Polls `cond` every 250 ms until it holds; fails at once if one of
/// `services` exited, and after `limit`.
pub fn wait_running(services: &[&Service], what: &str, limit: Duration, cond: impl FnMut() -> bool) {
    wait_while_running(services, what, limit, Duration::from_millis(250), cond);
}

fn wait_while_running(
    services: &[&Service],
    what: &str,
    limit: Duration,
    every: Duration,
    mut cond: impl FnMut() -> bool,
) {
    let held = poll(limit, every, || {
        cond() || {
            for s in services {
                s.assert_running(&format!("while waiting for {what}"));
            }
            false
        }
    });
    assert!(held, "timed out after {limit:?} waiting for {what}");
}

/// Runs the binary to completion with the settings `s` on `db_url`:
/// (exit code, stdout, stderr).
pub fn cli(s: &Settings, db_url: &str, args: &[&str]) -> (i32, String, String) {
    cli_env(env_of(s, db_url), args)
}

/// Runs the binary to completion in a fresh working directory, with `env`
/// on top of the test's own environment: (exit code, stdout, stderr).
pub fn cli_env<K: AsRef<OsStr>, V: AsRef<OsStr>>(
    env: impl IntoIterator<Item = (K, V)>,
    args: &[&str],
) -> (i32, String, String) {
    let dir = std::env::temp_dir().join(unique("cli-"));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cronsumer")).args(args).current_dir(&dir).envs(env).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}
