//! Webhook ingest benchmark on the test host with the real components.
//!
//! `cargo run --release -p e2e --bin bench_webhooks [-- N]` prints, per authentication mode,
//! requests per second and p50/p99 latency at concurrency 1 and 32 (each delivery completes
//! a different operation), and the key-value calls one accepted webhook costs, counted on the
//! real `.wasm` by the test host.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use e2e::Api;
use e2e::fake_seller::{Answer, FakeSeller};
use ed25519_dalek::Signer;
use orchestrator_core::{hmac_signature, rfc9421};
use serde_json::{Value, json};
use spin_test_host::{HostOptions, TestHost};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Bearer,
    Hmac,
    Rfc9421,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Bearer => "bearer",
            Mode::Hmac => "hmac",
            Mode::Rfc9421 => "rfc9421",
        }
    }
}

struct Target {
    op: String,
    token: String,
    secret: Option<String>,
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn signing_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[42u8; 32])
}

fn request(
    client: &reqwest::Client,
    public: &str,
    base: &str,
    mode: Mode,
    t: &Target,
    n: usize,
) -> reqwest::RequestBuilder {
    let body = json!({"idempotency_key": format!("whk_bench_{:012}_{}", n, t.op), "operation_id": t.op, "task_id": format!("task_{}", t.op),
        "task_type": "create_media_buy", "status": "completed", "timestamp": "2026-11-22T10:00:00Z", "token": t.token,
        "result": {"media_buy_id": format!("mb_{n}"), "packages": []}})
    .to_string();
    let path = format!("/webhooks/adcp/{}", t.op);
    let req = client
        .post(format!("{base}{path}"))
        .header("content-type", "application/json");
    match mode {
        Mode::Bearer => req
            .bearer_auth(t.secret.as_deref().unwrap_or(""))
            .body(body),
        Mode::Hmac => {
            let ts = now_s().to_string();
            let sig = hmac_signature::sign(
                t.secret.as_deref().unwrap_or("").as_bytes(),
                &ts,
                body.as_bytes(),
            );
            req.header("x-adcp-timestamp", ts)
                .header("x-adcp-signature", sig)
                .body(body)
        }
        Mode::Rfc9421 => {
            let digest = rfc9421::content_digest(body.as_bytes());
            let created = now_s();
            let params = format!(
                "(\"@method\" \"@target-uri\" \"@authority\" \"content-type\" \"content-digest\");created={created};expires={};nonce=\"bench-{n}-{}\";keyid=\"bench-key\";alg=\"ed25519\";tag=\"adcp/webhook-signing/v1\"",
                created + 300,
                t.op
            );
            let target = format!("{public}{path}");
            let authority = target
                .split("://")
                .nth(1)
                .and_then(|r| r.split('/').next())
                .unwrap_or("")
                .to_string();
            let base = format!(
                "\"@method\": POST\n\"@target-uri\": {target}\n\"@authority\": {authority}\n\"content-type\": application/json\n\"content-digest\": {digest}\n\"@signature-params\": {params}"
            );
            let sig = URL_SAFE_NO_PAD.encode(signing_key().sign(base.as_bytes()).to_bytes());
            req.header("content-digest", digest)
                .header("signature-input", format!("sig1={params}"))
                .header("signature", format!("sig1=:{sig}:"))
                .body(body)
        }
    }
}

async fn prepare(api: &Api, seller: &FakeSeller, key: &str, count: usize) -> Vec<Target> {
    let mut out = Vec::new();
    for _ in 0..count {
        seller.answer(Answer::Payload(json!({"status": "submitted"})));
        let (s, op) = api
            .call("POST", "/api/v1/operations", Some(key), Some(json!({"seller_id": "ssp", "task": "create_media_buy", "arguments": {
                "account": {"account_id": "a"}, "brand": {"domain": "acme.example"}, "start_time": "asap",
                "end_time": "2027-01-31T23:59:59Z", "packages": [{"product_id": "p", "budget": 1, "pricing_option_id": "x"}]}})))
            .await;
        assert_eq!(s, 201, "{op}");
        let id = op["operation_id"].as_str().unwrap().to_string();
        let pnc = seller.calls().last().unwrap().1["push_notification_config"].clone();
        out.push(Target {
            token: pnc["token"].as_str().unwrap().to_string(),
            secret: pnc["authentication"]["credentials"]
                .as_str()
                .map(str::to_string),
            op: id,
        });
    }
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    println!(
        "| mode | concurrency | webhooks | req/s | p50 ms | p99 ms | KV calls per accepted webhook |"
    );
    println!("|---|---|---|---|---|---|---|");
    for mode in [Mode::Bearer, Mode::Hmac, Mode::Rfc9421] {
        let dir = tempfile::tempdir().unwrap();
        let seller = FakeSeller::start().await;
        let listen = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let public = format!("http://{listen}");
        let host = TestHost::start(HostOptions {
            manifest: e2e::repo_root().join("spin.toml"),
            state_file: dir.path().join("kv.db"),
            variables: e2e::variables(&public),
            listen: Some(listen),
            ..HostOptions::default()
        })
        .await
        .unwrap();
        let api = Api::new(host.base_url());
        let key = api.tenant("Bench").await;
        api.call(
            "PUT",
            "/api/v1/sellers/ssp",
            Some(&key),
            Some(json!({"mcp_url": seller.url, "webhook_mode": mode.name()})),
        )
        .await;
        if mode == Mode::Rfc9421 {
            let x = URL_SAFE_NO_PAD.encode(signing_key().verifying_key().as_bytes());
            seller.publish_key(json!({"kid": "bench-key", "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
                "key_ops": ["verify"], "adcp_use": "request-signing", "x": x}));
        }
        let targets = prepare(&api, &seller, &key, 2 * n + 2).await;
        let client = reqwest::Client::new();
        // Warm-up (and, for RFC 9421, key discovery), then one accepted webhook counted alone.
        let warm = request(&client, &public, &host.base_url(), mode, &targets[0], 0)
            .send()
            .await
            .unwrap();
        assert_eq!(
            warm.status(),
            200,
            "{}",
            warm.text().await.unwrap_or_default()
        );
        host.reset_kv_counts();
        let r = request(&client, &public, &host.base_url(), mode, &targets[1], 1)
            .send()
            .await
            .unwrap();
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["outcome"], "applied", "{body}");
        let kv = host.kv_counts().total();
        for (concurrency, slice) in [(1usize, &targets[2..n + 2]), (32, &targets[n + 2..])] {
            let started = Instant::now();
            let mut latencies = Vec::new();
            for chunk in slice.chunks(concurrency) {
                let sends = chunk.iter().enumerate().map(|(i, t)| {
                    let req = request(&client, &public, &host.base_url(), mode, t, 10 + i);
                    async move {
                        let t0 = Instant::now();
                        let r = req.send().await.unwrap();
                        assert_eq!(r.status(), 200);
                        t0.elapsed()
                    }
                });
                latencies.extend(futures::future::join_all(sends).await);
            }
            let elapsed = started.elapsed();
            latencies.sort();
            println!(
                "| {} | {concurrency} | {} | {:.0} | {:.1} | {:.1} | {kv} |",
                mode.name(),
                slice.len(),
                slice.len() as f64 / elapsed.as_secs_f64(),
                percentile(&latencies, 0.5).as_secs_f64() * 1e3,
                percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            );
        }
        host.kill();
    }
}
