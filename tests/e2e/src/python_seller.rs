//! The AdCP sales agent built on the official Python SDK (`tests/peers/seller.py`), run as a
//! child process, with a client for its control API (modes, faults, recorded calls, media
//! buys, task completion with signed webhooks). The process is killed when this is dropped.

use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// `import adcp` alone takes 15–18 s on the build VM; two starting at once share 2 cores.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

pub struct PythonSeller {
    /// The MCP endpoint, exactly as brand.json names it (register this URL).
    pub mcp_url: String,
    pub control_url: String,
    /// The key id the seller signs RFC 9421 webhooks with.
    pub kid: String,
    http: reqwest::Client,
    log: PathBuf,
    _dir: tempfile::TempDir,
    _child: Child,
}

impl PythonSeller {
    /// Starts `seller.py` with `args` (e.g. `["--create", "submitted"]`) and waits for its
    /// ready line.
    pub async fn start(args: &[&str]) -> PythonSeller {
        let python = std::env::var("ADCP_PYTHON").unwrap_or_else(|_| {
            crate::repo_root()
                .join(".venv/bin/python")
                .to_string_lossy()
                .into_owned()
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("seller.log");
        let stderr = std::fs::File::create(&log).expect("log file");
        let mut child = Command::new(python)
            .arg("seller.py")
            .args(["--port", "0", "--control-port", "0"])
            .args(args)
            .current_dir(crate::repo_root().join("tests/peers"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("python seller starts (run scripts/test.sh once to create .venv)");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        let mut reader = BufReader::new(stdout);
        let n = tokio::time::timeout(READY_TIMEOUT, reader.read_line(&mut line)).await;
        let ready: Value = match n {
            Ok(Ok(n)) if n > 0 => serde_json::from_str(line.trim()).unwrap_or_else(|e| {
                panic!("ready line is not JSON ({e}): {line}");
            }),
            other => panic!(
                "python seller not ready ({other:?}):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
        };
        // uvicorn's access log goes to stdout: keep draining it so writes never fail.
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut reader, &mut tokio::io::sink()).await;
        });
        let field = |k: &str| ready[k].as_str().expect("ready line field").to_string();
        PythonSeller {
            mcp_url: field("mcp_url"),
            control_url: field("control_url"),
            kid: field("kid"),
            http: reqwest::Client::new(),
            log,
            _dir: dir,
            _child: child,
        }
    }

    /// The seller's stderr so far (uvicorn and SDK logs), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn control(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(
            method.parse().expect("method"),
            format!("{}{path}", self.control_url),
        );
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.expect("control API answers");
        let status = resp.status();
        let v: Value = resp.json().await.expect("control API answers JSON");
        assert!(status.is_success(), "control {path}: {status} {v}");
        v
    }

    /// Merges `changes` into the mode (`create`, `fail_next`, `fail_with`, `down`).
    pub async fn set_mode(&self, changes: Value) -> Value {
        self.control("POST", "/mode", Some(changes)).await
    }

    /// Every MCP `tools/call` received: `{tool, arguments, time, headers}`.
    pub async fn calls(&self) -> Vec<Value> {
        match self.control("GET", "/calls", None).await {
            Value::Array(a) => a,
            other => panic!("/calls: {other}"),
        }
    }

    /// The `tools/call`s of `tool` whose arguments carry `context.operation_id == op`.
    pub async fn calls_for(&self, tool: &str, op: &str) -> Vec<Value> {
        self.calls()
            .await
            .into_iter()
            .filter(|c| c["tool"] == tool && c["arguments"]["context"]["operation_id"] == op)
            .collect()
    }

    /// Clears the recorded calls.
    pub async fn reset(&self) {
        self.control("POST", "/reset", None).await;
    }

    /// `{media_buys, created_per_idempotency_key, created_per_operation_id}`.
    pub async fn media_buys(&self) -> Value {
        self.control("GET", "/media_buys", None).await
    }

    /// How many media buys the seller created for the operation.
    pub async fn created_for(&self, op: &str) -> u64 {
        self.media_buys().await["created_per_operation_id"][op]
            .as_u64()
            .unwrap_or(0)
    }

    /// Moves a task to `status` and, if it has a push config, sends its signed webhook.
    /// Returns `{task, deliveries: [{op, status_code, body, idempotency_key}]}`.
    pub async fn complete(&self, task_id: &str, status: &str, send_webhook: bool) -> Value {
        self.control(
            "POST",
            "/complete",
            Some(json!({"task_id": task_id, "status": status, "send_webhook": send_webhook})),
        )
        .await
    }
}
