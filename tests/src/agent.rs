//! Runs the real `podmortem` binary and collects the findings it prints as JSON lines.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::{err, Context, Result};

/// A finding as printed by the agent, and when the test received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The finding's JSON.
    pub finding: Value,
    /// When the line arrived.
    pub at: SystemTime,
}

/// A running agent.
#[derive(Debug)]
pub struct Agent {
    child: Child,
    lines: mpsc::UnboundedReceiver<Received>,
    seen: Vec<Received>,
    stderr: Arc<Mutex<String>>,
}

/// Keeps this much of the agent's standard error, for assertions and failure messages.
const STDERR_KEEP: usize = 256 * 1024;

impl Agent {
    /// The agent binary: `$PODMORTEM_BIN`, else `target/debug/podmortem` of this workspace.
    pub fn binary() -> Result<PathBuf> {
        if let Some(bin) = std::env::var_os("PODMORTEM_BIN") {
            return Ok(PathBuf::from(bin));
        }
        let bin = crate::target_dir().join("debug/podmortem");
        if bin.is_file() {
            Ok(bin)
        } else {
            Err(err(format!(
                "{} is missing: build the agent first (`cargo build -p podmortem`, done by `make test`) or set PODMORTEM_BIN",
                bin.display()
            )))
        }
    }

    /// Starts `podmortem run --output json` against `socket`, with state in `state_dir`, plus
    /// `extra` arguments.
    pub fn start(socket: &Path, state_dir: &Path, extra: &[&str]) -> Result<Agent> {
        Self::start_wrapped(&[], socket, state_dir, extra)
    }

    /// As [`Agent::start`], run through `wrapper` (a command and its arguments that runs the
    /// rest of its command line, such as `setpriv` with fewer capabilities).
    pub fn start_wrapped(wrapper: &[&str], socket: &Path, state_dir: &Path, extra: &[&str]) -> Result<Agent> {
        Self::start_full(wrapper, None, socket, state_dir, extra)
    }

    /// As [`Agent::start`], with exactly the `OTEL_*` environment variables in `env` (those
    /// of the test's own environment are removed), plus any other variable `env` names.
    pub fn start_with_env(
        socket: &Path,
        state_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Agent> {
        Self::start_full(&[], Some(env), socket, state_dir, extra)
    }

    fn start_full(
        wrapper: &[&str],
        env: Option<&[(&str, &str)]>,
        socket: &Path,
        state_dir: &Path,
        extra: &[&str],
    ) -> Result<Agent> {
        let binary = Self::binary()?;
        let mut command = match wrapper {
            [] => Command::new(&binary),
            [program, args @ ..] => {
                let mut c = Command::new(program);
                c.args(args).arg(&binary);
                c
            }
        };
        if let Some(env) = env {
            for (name, _) in std::env::vars_os() {
                if name.to_string_lossy().starts_with("OTEL_") {
                    command.env_remove(&name);
                }
            }
            command.envs(env.iter().copied());
        }
        let mut child = command
            .arg("run")
            .arg("--containerd-address")
            .arg(socket)
            .arg("--state-dir")
            .arg(state_dir)
            .args([
                "--output",
                "json",
                "--node-name",
                "e2e-node",
                "--log-level",
                "podmortem=debug,info",
            ])
            // Tests run agents side by side: each serves /metrics on a port of its own.
            .args(if extra.contains(&"--http-address") {
                &[][..]
            } else {
                &["--http-address", "127.0.0.1:0"][..]
            })
            .args(extra)
            // A test agent never talks to a real cluster, whatever the machine has configured.
            .env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .env("HOME", state_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start podmortem")?;
        let stdout = child.stdout.take().ok_or_else(|| err("no stdout"))?;
        let stderr = child.stderr.take().ok_or_else(|| err("no stderr"))?;
        let (tx, lines) = mpsc::unbounded_channel();
        let log = Arc::new(Mutex::new(String::new()));
        let err_log = Arc::clone(&log);
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let at = SystemTime::now();
                let finding = serde_json::from_str(&line).unwrap_or_else(
                    |e| serde_json::json!({ "unparsable_line": line, "error": e.to_string() }),
                );
                if tx.send(Received { finding, at }).is_err() {
                    return;
                }
            }
        });
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if let Ok(mut log) = err_log.lock() {
                    if log.len() < STDERR_KEEP {
                        log.push_str(&line);
                        log.push('\n');
                    }
                }
            }
        });
        Ok(Agent {
            child,
            lines,
            seen: Vec::new(),
            stderr: log,
        })
    }

    /// What the agent wrote to standard error so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Every finding received so far.
    pub fn seen(&self) -> &[Received] {
        &self.seen
    }

    /// Waits for a finding matching `pred` (among those already received, then new ones).
    pub async fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Received> {
        if let Some(r) = self.seen.iter().find(|r| pred(&r.finding)) {
            return Ok(r.clone());
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(r)) => {
                    self.seen.push(r.clone());
                    if pred(&r.finding) {
                        return Ok(r);
                    }
                }
                Ok(None) => {
                    return Err(err(format!(
                        "podmortem exited before reporting {what}; its stderr:\n{}",
                        self.stderr()
                    )))
                }
                Err(_) => {
                    let seen: Vec<String> = self.seen.iter().map(|r| r.finding.to_string()).collect();
                    return Err(err(format!(
                        "no finding for {what} within {timeout:?}.\nFindings seen:\n{}\nAgent stderr:\n{}",
                        seen.join("\n"),
                        self.stderr()
                    )));
                }
            }
        }
    }

    /// Waits until the agent's standard error contains `needle`.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.stderr().contains(needle) {
            if tokio::time::Instant::now() > deadline {
                return Err(err(format!(
                    "agent never logged {needle:?}; stderr:\n{}",
                    self.stderr()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Where the agent serves /metrics, /healthz and /readyz, once it has said so.
    pub async fn http_address(&self, timeout: Duration) -> Result<std::net::SocketAddr> {
        const LINE: &str = "serving /metrics, /healthz and /readyz";
        self.wait_for_log(LINE, timeout).await?;
        let stderr = self.stderr();
        stderr
            .lines()
            .find(|l| l.contains(LINE))
            .and_then(|l| l.split("address=").nth(1))
            .and_then(|a| a.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| err(format!("no address in the agent's log:\n{stderr}")))
    }

    /// The agent's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Stops the agent with SIGTERM and returns its exit status.
    pub async fn stop(mut self) -> Result<std::process::ExitStatus> {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        }
        match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(status) => status.context("waiting for podmortem"),
            Err(_) => Err(err(format!(
                "podmortem did not stop within 10s of SIGTERM; stderr:\n{}",
                self.stderr()
            ))),
        }
    }
}

/// A string field of a finding, by JSON pointer (empty when absent).
pub fn field<'a>(finding: &'a Value, pointer: &str) -> &'a str {
    finding.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The evidence of a finding from `source`.
pub fn evidence<'a>(finding: &'a Value, source: &str) -> Option<&'a Value> {
    finding
        .get("evidence")?
        .as_array()?
        .iter()
        .find(|e| e.get("source").and_then(Value::as_str) == Some(source))
}

/// A read-only write finding's mount evidence: the one naming the cause.
pub fn mount_evidence(finding: &Value) -> Option<&Value> {
    finding
        .get("evidence")?
        .as_array()?
        .iter()
        .find(|e| e["attributes"]["cause"].is_string())
}

/// Milliseconds from `exited_at` (RFC 3339, from the finding) to when the finding arrived.
pub fn latency_ms(received: &Received) -> Option<f64> {
    let finished = received
        .finding
        .pointer("/last_seen")
        .and_then(Value::as_str)
        .and_then(|s| humantime::parse_rfc3339(s).ok())?;
    received
        .at
        .duration_since(finished)
        .ok()
        .map(|d| d.as_secs_f64() * 1000.0)
}
