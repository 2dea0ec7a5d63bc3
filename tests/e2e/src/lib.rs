//! Shared helpers for the end-to-end tests: starting the application on the test host with
//! the project's `spin.toml`, a scripted MCP seller on loopback for fault injection, a
//! headless browser for the console, and small HTTP conveniences.

pub mod browser;
pub mod fake_seller;
pub mod proxy;
pub mod python_seller;
pub mod receiver;
pub mod redis_server;
pub mod schema;
pub mod seller_signer;
pub mod task_seller;
pub mod trickle;

use serde_json::{Value, json};
use spin_test_host::{HostOptions, TestHost};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const ADMIN_KEY: &str = "e2e-admin-key";
pub const SWEEP_TOKEN: &str = "e2e-sweep-token";
pub const METRICS_TOKEN: &str = "e2e-metrics-token";
pub const ENCRYPTION_KEY: &str = "4f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// The repository root (where `spin.toml` is).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// The application variables a test run needs; `public_base_url` is filled in by [`start`].
pub fn variables(public_base_url: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("admin_api_key".into(), ADMIN_KEY.into()),
        ("public_base_url".into(), public_base_url.into()),
        ("sweep_token".into(), SWEEP_TOKEN.into()),
        ("metrics_token".into(), METRICS_TOKEN.into()),
        ("encryption_key".into(), ENCRYPTION_KEY.into()),
        // Plain-HTTP loopback sellers and callbacks are allowed only through this variable.
        ("extra_outbound_host".into(), "http://127.0.0.1:*".into()),
        // ... and registered at all only with the URL rules relaxed.
        ("allow_private_networks".into(), "true".into()),
    ])
}

/// Starts one host of the application with its `default` store on a Redis server, as a
/// replica does in production; several may share the server.
pub async fn start_on_redis(redis_url: &str, public_base_url: Option<&str>) -> TestHost {
    let opts = HostOptions {
        manifest: repo_root().join("spin.toml"),
        redis_url: Some(redis_url.to_string()),
        variables: variables(public_base_url.unwrap_or("http://placeholder.invalid")),
        ..HostOptions::default()
    };
    TestHost::start(opts).await.expect("test host starts")
}

/// Starts the application on a state file. `public_base_url` defaults to the host's own URL.
pub async fn start(state_file: &Path, public_base_url: Option<&str>) -> TestHost {
    let opts = HostOptions {
        manifest: repo_root().join("spin.toml"),
        state_file: state_file.to_path_buf(),
        variables: variables(public_base_url.unwrap_or("http://placeholder.invalid")),
        ..HostOptions::default()
    };
    TestHost::start(opts).await.expect("test host starts")
}

/// Runs `tests/peers/<script>` with the project's Python (the venv the test command
/// installs, or `ADCP_PYTHON`), feeding `stdin`, and returns its stdout.
pub fn python(args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    let python = std::env::var("ADCP_PYTHON").unwrap_or_else(|_| {
        repo_root()
            .join(".venv/bin/python")
            .to_string_lossy()
            .into_owned()
    });
    let mut child = std::process::Command::new(python)
        .args(args)
        .current_dir(repo_root().join("tests/peers"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python peer starts (run scripts/test.sh once to create .venv)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("python peer runs");
    assert!(
        out.status.success(),
        "python peer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Webhook deliveries answered as repeats of an applied one, by the intake's log lines (a
/// repeat costs no write, so it is not a store counter).
pub fn duplicates_logged(output: &str) -> usize {
    output
        .lines()
        .filter(|l| {
            l.contains("\"event\":\"webhook.duplicate\"")
                || (l.contains("\"event\":\"webhook.accepted\"")
                    && l.contains("\"outcome\":\"duplicate\""))
        })
        .count()
}

/// Unix seconds now (cron ticks take the fire time in seconds).
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A valid `create_media_buy` request to seller `ssp`.
pub fn create_body() -> Value {
    json!({"seller_id": "ssp", "task": "create_media_buy", "arguments": {
        "account": {"account_id": "acc_1"}, "brand": {"domain": "acme.example"},
        "start_time": "asap", "end_time": "2027-01-31T23:59:59Z",
        "packages": [{"product_id": "p1", "budget": 5000, "pricing_option_id": "cpm"}]}})
}

/// A JSON client bound to one host.
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(base: impl Into<String>) -> Api {
        Api {
            base: base.into(),
            http: reqwest::Client::new(),
        }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(
            method.parse().expect("method"),
            format!("{}{}", self.base, path),
        );
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.expect("request reaches the host");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Registers (or re-registers) seller `ssp` for the tenant; panics unless it is accepted.
    pub async fn register_seller(&self, key: &str, registration: Value) {
        let (s, b) = self
            .call("PUT", "/api/v1/sellers/ssp", Some(key), Some(registration))
            .await;
        assert!(s == 200 || s == 201, "{s} {b}");
    }

    /// Registers the tenant's buyer callback at `url`; panics unless it is accepted.
    pub async fn register_callback(&self, key: &str, url: &str) {
        let (s, b) = self
            .call(
                "PUT",
                "/api/v1/callback",
                Some(key),
                Some(json!({ "url": url })),
            )
            .await;
        assert_eq!(s, 200, "{b}");
    }

    /// Creates a tenant and returns its API key.
    pub async fn tenant(&self, name: &str) -> String {
        let (s, b) = self
            .call(
                "POST",
                "/api/v1/tenants",
                Some(ADMIN_KEY),
                Some(json!({"name": name})),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        b["api_key"].as_str().expect("api key").to_string()
    }
}
