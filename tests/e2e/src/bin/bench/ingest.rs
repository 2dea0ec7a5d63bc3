//! Webhook ingest per authentication mode, and the platform floor it is compared with.

use crate::app::{self, App, Pending};
use crate::stats::{self, Run};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer;
use orchestrator_core::{auth::hmac_signature, auth::rfc9421};
use serde_json::{Value, json};
use spin_test_host::{HostOptions, KvCounts, TestHost};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Bearer,
    Hmac,
    Rfc9421,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Bearer, Mode::Hmac, Mode::Rfc9421];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Bearer => "bearer",
            Mode::Hmac => "hmac",
            Mode::Rfc9421 => "rfc9421",
        }
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn signing_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[42u8; 32])
}

/// A `completed` webhook for `t`, as a seller in `mode` would send it.
fn webhook_body(t: &Pending) -> String {
    json!({"idempotency_key": format!("whk_bench_{}", t.op), "operation_id": t.op, "task_id": t.task_id,
        "task_type": "create_media_buy", "status": "completed", "timestamp": "2026-11-22T10:00:00Z", "token": t.token,
        "result": {"media_buy_id": format!("mb_{}", t.op), "packages": []}})
    .to_string()
}

fn request(
    client: &reqwest::Client,
    app: &App,
    mode: Mode,
    t: &Pending,
) -> reqwest::RequestBuilder {
    request_as(client, app, mode, t, false)
}

/// [`request`], or (`forged`) one a forger makes: a wrong secret, or a signature by a key
/// the seller never published. Every request gets its own RFC 9421 nonce, as a seller's
/// retry would.
fn request_as(
    client: &reqwest::Client,
    app: &App,
    mode: Mode,
    t: &Pending,
    forged: bool,
) -> reqwest::RequestBuilder {
    let secret = match forged {
        true => "not-the-secret-0123456789abcdef0123456789",
        false => t.secret.as_deref().unwrap_or(""),
    };
    static SENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nth = SENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let body = webhook_body(t);
    let path = &t.path;
    let req = client
        .post(format!("{}{path}", app.host.base_url()))
        .header("content-type", "application/json");
    match mode {
        Mode::Bearer => req.bearer_auth(secret).body(body),
        Mode::Hmac => {
            let ts = now_s().to_string();
            let sig = hmac_signature::sign(secret.as_bytes(), &ts, body.as_bytes());
            req.header("x-adcp-timestamp", ts)
                .header("x-adcp-signature", sig)
                .body(body)
        }
        Mode::Rfc9421 => {
            let digest = rfc9421::content_digest(body.as_bytes());
            let created = now_s();
            let params = format!(
                "(\"@method\" \"@target-uri\" \"@authority\" \"content-type\" \"content-digest\");created={created};expires={};nonce=\"bench-{}-{nth}\";keyid=\"bench-key\";alg=\"ed25519\";tag=\"adcp/webhook-signing/v1\"",
                created + 300,
                t.op
            );
            let target = format!("{}{path}", app.public);
            let authority = app.public.trim_start_matches("http://");
            let base = format!(
                "\"@method\": POST\n\"@target-uri\": {target}\n\"@authority\": {authority}\n\"content-type\": application/json\n\"content-digest\": {digest}\n\"@signature-params\": {params}"
            );
            let key = match forged {
                true => ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]),
                false => signing_key(),
            };
            let sig = URL_SAFE_NO_PAD.encode(key.sign(base.as_bytes()).to_bytes());
            req.header("content-digest", digest)
                .header("signature-input", format!("sig1={params}"))
                .header("signature", format!("sig1=:{sig}:"))
                .body(body)
        }
    }
}

/// One authentication mode: the application with operations waiting for their webhooks.
pub struct Ingest {
    pub mode: Mode,
    app: App,
    pending: Vec<Pending>,
    client: reqwest::Client,
}

/// Key-value calls of single deliveries.
pub struct Costs {
    /// An accepted webhook, until its answer.
    pub before_answer: KvCounts,
    /// The same, including what its component did after answering.
    pub accepted: KvCounts,
    /// A repeat of it.
    pub duplicate: KvCounts,
    /// A forged one (wrong secret or signature).
    pub refused: KvCounts,
}

/// What a run of deliveries measured.
pub struct IngestRun {
    pub run: Run,
    /// Key-value calls during the run per delivery.
    pub kv_per_request: f64,
}

impl Ingest {
    /// Prepares `count` operations (plus one for the warm-up: connection, instance and, for
    /// RFC 9421, key discovery) and delivers the warm-up webhook. The operations are created
    /// natively on tmpfs ([`crate::seed`]); the host then runs from a disk copy.
    pub async fn start(mode: Mode, count: usize) -> Ingest {
        let app = App::start_in(mode.name(), app::scratch()).await;
        if mode == Mode::Rfc9421 {
            let x = URL_SAFE_NO_PAD.encode(signing_key().verifying_key().as_bytes());
            app.seller.publish_key(json!({"kid": "bench-key", "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
                "key_ops": ["verify"], "adcp_use": "request-signing", "x": x}));
        }
        let mut pending = app.submitted(count + 1, mode.name()).await;
        let app = app.move_to(tempfile::tempdir().expect("temp dir")).await;
        let client = reqwest::Client::new();
        let warm = pending.pop().expect("warm-up operation");
        let r = request(&client, &app, mode, &warm)
            .send()
            .await
            .expect("webhook reaches the host");
        let body: Value = r.json().await.unwrap_or_default();
        assert_eq!(body["outcome"], "applied", "{mode:?}: {body}");
        // Its work after the answer must not be counted in the next measurement.
        assert!(app.host.wait_idle(std::time::Duration::from_secs(10)).await);
        Ingest {
            mode,
            app,
            pending,
            client,
        }
    }

    /// The key-value calls of one accepted webhook delivered alone (before its answer, and in
    /// all once its component is idle), of a repeat of it, and of a forged one.
    pub async fn costs(&mut self) -> Costs {
        let t = self.pending.pop().expect("an operation left");
        let host = &self.app.host;
        let send = |forged: bool| {
            let req = request_as(&self.client, &self.app, self.mode, &t, forged);
            async move {
                let r = req.send().await.expect("webhook reaches the host");
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap_or_default();
                assert!(host.wait_idle(std::time::Duration::from_secs(10)).await);
                (status, body)
            }
        };
        host.reset_kv_counts();
        host.trace_kv_calls(true);
        let (_, body) = send(false).await;
        if std::env::var_os("BENCH_TRACE").is_some() {
            for c in host.kv_call_trace() {
                eprintln!("TRACE {} {:?} {}", c.component, c.op, c.key);
            }
        }
        host.trace_kv_calls(false);
        assert_eq!(body["outcome"], "applied", "{body}");
        let before_answer = host.kv_counts_at_last_answer().expect("answered");
        let accepted = host.kv_counts();
        host.reset_kv_counts();
        let (_, body) = send(false).await;
        assert_eq!(body["outcome"], "duplicate", "{body}");
        let duplicate = host.kv_counts();
        host.reset_kv_counts();
        let (status, body) = send(true).await;
        assert_eq!(status, 401, "{body}");
        let refused = host.kv_counts();
        Costs {
            before_answer,
            accepted,
            duplicate,
            refused,
        }
    }

    /// Delivers `count` webhooks, each completing a different operation, `concurrency` at
    /// a time; every one must be applied.
    pub async fn run(&mut self, count: usize, concurrency: usize) -> IngestRun {
        let at = self.pending.len().saturating_sub(count);
        let batch = self.pending.split_off(at);
        self.app.host.reset_kv_counts();
        let (app, client, mode) = (&self.app, &self.client, self.mode);
        let run = stats::drive(batch, concurrency, |t| async move {
            let r = request(client, app, mode, &t)
                .send()
                .await
                .expect("webhook reaches the host");
            let body: Value = r.json().await.unwrap_or_default();
            assert_eq!(body["outcome"], "applied", "{body}");
        })
        .await;
        IngestRun {
            kv_per_request: self.app.host.kv_counts().total() as f64 / run.count as f64,
            run,
        }
    }
}

/// The floor fixture (`tests/spin-test-host/fixtures/floor.toml`) on its own host and state
/// file, fed the same bodies.
pub struct Floor {
    host: TestHost,
    client: reqwest::Client,
    body: String,
    sent: usize,
    _dir: tempfile::TempDir,
}

impl Floor {
    pub async fn start() -> Floor {
        let dir = tempfile::tempdir().expect("temp dir");
        let host = TestHost::start(HostOptions {
            manifest: e2e::repo_root().join("tests/spin-test-host/fixtures/floor.toml"),
            state_file: dir.path().join("kv.db"),
            ..HostOptions::default()
        })
        .await
        .expect("floor host starts");
        let sample = Pending {
            op: "op_0123456789abcdef0123456789abcdef".into(),
            task_id: "task_floor_0".into(),
            token: "0".repeat(64),
            secret: None,
            path: String::new(),
        };
        let mut floor = Floor {
            host,
            client: reqwest::Client::new(),
            body: webhook_body(&sample),
            sent: 0,
            _dir: dir,
        };
        floor.run(1, 1).await;
        floor
    }

    /// `count` requests, each stored under a new key.
    pub async fn run(&mut self, count: usize, concurrency: usize) -> IngestRun {
        self.run_writing(count, concurrency, 1).await
    }

    /// [`Floor::run`] with `writes` key-value writes per request (calibration).
    pub async fn run_writing(
        &mut self,
        count: usize,
        concurrency: usize,
        writes: usize,
    ) -> IngestRun {
        let first = self.sent;
        self.sent += count;
        self.host.reset_kv_counts();
        let (host, client, body) = (&self.host, &self.client, &self.body);
        let run = stats::drive((first..first + count).collect(), concurrency, |n| {
            let req = client
                .post(format!("{}/floor/{n}?writes={writes}", host.base_url()))
                .header("content-type", "application/json")
                .body(body.clone());
            async move {
                let r = req.send().await.expect("request reaches the floor");
                assert_eq!(r.status(), 200);
            }
        })
        .await;
        IngestRun {
            kv_per_request: self.host.kv_counts().total() as f64 / run.count as f64,
            run,
        }
    }
}
