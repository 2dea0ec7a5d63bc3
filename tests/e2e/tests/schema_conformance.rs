//! AdCP schema conformance through the real components: every tool call the orchestrator
//! makes (the capabilities call at registration, `create_media_buy` answered synchronously
//! and by a submitted task then polled, `update_media_buy` completed by webhook,
//! `sync_creatives`, `get_task_status` polls, and the `get_media_buys` look-up the sweep makes
//! before failing a redispatch past its attempts), in each webhook mode, checked against the
//! spec's JSON Schemas of the release negotiated with the seller: once with sellers declaring
//! 3.1 (schemas 3.1.19 beside the repository), once with sellers declaring 3.2 (schemas 3.2.4
//! from the installed `adcp` package). Every seller answer and webhook these tests make the
//! orchestrator parse is checked against that release too, so the fixtures are spec-valid.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use e2e::fake_seller::{Answer, FakeSeller};
use e2e::schema::{Direction, RELEASES, Schemas};
use e2e::{Api, variables};
use ed25519_dalek::Signer;
use orchestrator_core::lifecycle::dispatch::MAX_DISPATCH_ATTEMPTS;
use orchestrator_core::{auth::hmac_signature, auth::rfc9421};
use serde_json::{Value, json};
use spin_test_host::{HostOptions, TestHost};
use std::collections::BTreeSet;
use std::sync::OnceLock;

const WEBHOOK_SCHEMA: &str = "core/mcp-webhook-payload.json";

/// The schemas of `release` (`3.1` or `3.2`), opened once.
fn schemas(release: &str) -> &'static Schemas {
    static S: [OnceLock<Schemas>; RELEASES.len()] = [const { OnceLock::new() }; RELEASES.len()];
    let i = RELEASES
        .iter()
        .position(|r| *r == release)
        .unwrap_or_else(|| panic!("no schemas for {release}"));
    S[i].get_or_init(|| Schemas::open(release))
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A create request as the buyer sends it through our API.
fn create_arguments() -> Value {
    json!({
        "account": {"account_id": "acc_1"},
        "brand": {"domain": "acme.example"},
        "start_time": "asap",
        "end_time": "2027-01-31T23:59:59Z",
        "po_number": "PO-42",
        "packages": [{"product_id": "p1", "budget": 5000, "pricing_option_id": "cpm", "pacing": "even"}]
    })
}

/// The spec's own `sync_creatives` example creative.
fn creative() -> Value {
    json!({"creative_id": "hero_video_30s", "name": "Brand Hero Video 30s",
        "format_id": {"agent_url": "https://creative.adcontextprotocol.org", "id": "video_standard_30s"},
        "assets": {"video": {"asset_type": "video", "url": "https://cdn.example.com/hero-video.mp4",
                             "width": 1920, "height": 1080, "duration_ms": 30000}}})
}

fn created_buy(media_buy_id: &str) -> Value {
    json!({"status": "completed", "media_buy_id": media_buy_id, "media_buy_status": "pending_creatives",
        "confirmed_at": "2026-11-22T10:00:00Z", "revision": 1, "currency": "USD", "total_budget": 5000,
        "packages": [{"package_id": "pkg_1", "product_id": "p1", "budget": 5000, "pricing_option_id": "cpm"}]})
}

/// The releases a seller of `release` declares: 3.0 and 3.1 for a 3.1 seller, 3.0 to 3.2 for
/// a 3.2 one (we prefer 3.2, so its calls are pinned to it).
fn declared(release: &str) -> Value {
    match release {
        "3.1" => json!(["3.0", "3.1"]),
        _ => json!(["3.0", "3.1", "3.2"]),
    }
}

/// A conformant AdCP seller's capabilities: its releases, replay window, RFC 9421 signing
/// with the legacy HMAC fallback.
fn capabilities(release: &str) -> Value {
    json!({"status": "completed",
        "adcp": {"major_versions": [3], "supported_versions": declared(release),
                 "idempotency": {"supported": true, "replay_ttl_seconds": 86400}},
        "supported_protocols": ["media_buy"],
        "webhook_signing": {"supported": true, "profile": "adcp/webhook-signing/v1",
                            "algorithms": ["ed25519"], "legacy_hmac_fallback": true}})
}

fn signing_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[7u8; 32])
}

/// Checks a seller answer or webhook `result` against `release`. A completed task's result is
/// also held to its task's own response schema: the generic `async-response-data` it is
/// typed with accepts any object.
fn assert_answer(release: &str, what: &str, tool: &str, payload: &Value) {
    let schemas = schemas(release);
    schemas.assert_tool(what, tool, Direction::Response, payload);
    if let (Some("completed"), Some(task), Some(result)) = (
        payload["status"].as_str(),
        payload["task_type"].as_str(),
        payload.get("result"),
    ) {
        schemas.assert_tool(what, task, Direction::Response, result);
    }
}

/// Queues the seller's next answer to `tool`, after checking it is a valid response in the
/// seller's release.
fn answer(s: &Sellers, seller: &FakeSeller, tool: &str, payload: Value) {
    assert_answer(s.release, "scripted seller answer", tool, &payload);
    seller.answer(Answer::Payload(payload));
}

/// The application on the test host, with one tenant.
struct App {
    host: TestHost,
    api: Api,
    key: String,
    /// The public origin the host listens on (RFC 9421 signatures cover it).
    public: String,
    _dir: tempfile::TempDir,
}

/// The two sellers registered for one webhook mode, both declaring one release. Each has its
/// own answer queue, so the operations of one never take the answers scripted for another.
struct Sellers {
    /// The release the sellers serve (`3.1`, `3.2`): what their traffic is checked against.
    release: &'static str,
    mode: &'static str,
    /// `ssp_{mode}`: answers every call.
    up: FakeSeller,
    /// `down_{mode}`: fails every create.
    down: FakeSeller,
}

impl Sellers {
    fn up_id(&self) -> String {
        format!("ssp_{}", self.mode)
    }

    fn down_id(&self) -> String {
        format!("down_{}", self.mode)
    }

    /// Every call both sellers received.
    fn calls(&self) -> Vec<(String, Value)> {
        let mut calls = self.up.calls();
        calls.extend(self.down.calls());
        calls
    }

    /// The `push_notification_config` the orchestrator sent with the operation `id`.
    fn registration(&self, id: &str) -> Value {
        self.calls()
            .into_iter()
            .find(|(_, a)| a["context"]["operation_id"] == id)
            .map(|(_, a)| a["push_notification_config"].clone())
            .expect("the operation was sent")
    }
}

impl App {
    async fn start() -> App {
        let dir = tempfile::tempdir().unwrap();
        let listen = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap();
        let public = format!("http://{listen}");
        let host = TestHost::start(HostOptions {
            manifest: e2e::repo_root().join("spin.toml"),
            state_file: dir.path().join("kv.db"),
            variables: variables(&public),
            listen: Some(listen),
            ..HostOptions::default()
        })
        .await
        .expect("test host starts");
        let api = Api::new(host.base_url());
        let key = api.tenant("Acme").await;
        App {
            host,
            api,
            key,
            public,
            _dir: dir,
        }
    }

    /// Registers a pair of sellers of `release` whose webhooks use `mode`; each answers
    /// `get_adcp_capabilities` with a checked fixture and publishes the webhook signing key.
    async fn sellers(&self, release: &'static str, mode: &'static str) -> Sellers {
        schemas(release).assert_tool(
            "capabilities fixture",
            "get_adcp_capabilities",
            Direction::Response,
            &capabilities(release),
        );
        let x = URL_SAFE_NO_PAD.encode(signing_key().verifying_key().as_bytes());
        let mut pair = Vec::new();
        for id in [format!("ssp_{mode}"), format!("down_{mode}")] {
            let seller = FakeSeller::start().await;
            seller.set_capabilities(capabilities(release));
            seller.publish_key(json!({"kid": "conformance-key", "kty": "OKP", "crv": "Ed25519",
                "alg": "EdDSA", "use": "sig", "key_ops": ["verify"], "adcp_use": "webhook-signing", "x": x}));
            let body = json!({"mcp_url": seller.url, "credentials": "seller-token-1", "webhook_mode": mode});
            let path = format!("/api/v1/sellers/{id}");
            let (s, b) = self
                .api
                .call("PUT", &path, Some(&self.key), Some(body))
                .await;
            assert_eq!(s, 201, "{b}");
            pair.push(seller);
        }
        let down = pair.pop().unwrap();
        let up = pair.pop().unwrap();
        Sellers {
            release,
            mode,
            up,
            down,
        }
    }

    async fn operation(&self, seller_id: &str, task: &str, arguments: Value) -> Value {
        let body =
            json!({"seller_id": seller_id, "task": task, "webhook": true, "arguments": arguments});
        let (s, op) = self
            .api
            .call("POST", "/api/v1/operations", Some(&self.key), Some(body))
            .await;
        assert_eq!(s, 201, "{op}\n{}", self.host.output());
        op
    }

    async fn get(&self, id: &str) -> Value {
        let path = format!("/api/v1/operations/{id}");
        let (s, op) = self.api.call("GET", &path, Some(&self.key), None).await;
        assert_eq!(s, 200, "{op}");
        op
    }

    /// Fires cron ticks half an hour apart (the sweep's clock follows them; redispatch
    /// backoff is capped at 30 min) until every operation in `ids` has an outcome; returns
    /// them in order.
    async fn tick_until_settled(&self, ids: &[String]) -> Vec<Value> {
        let open = ["pending_dispatch", "submitted", "working"];
        let mut at = now_s();
        let mut ops = Vec::new();
        for _ in 0..40 {
            at += 1800;
            self.host.cron_tick(at).await.unwrap();
            ops.clear();
            for id in ids {
                ops.push(self.get(id).await);
            }
            if ops
                .iter()
                .all(|op| !open.contains(&op["status"].as_str().unwrap_or("")))
            {
                return ops;
            }
        }
        panic!(
            "still open after 20 h of ticks: {ops:#?}\n{}",
            self.host.output()
        );
    }

    /// Delivers `payload` to the operation's webhook URL, authenticated as the sellers'
    /// webhook mode requires, after checking it against their release's webhook schema.
    async fn webhook(&self, sellers: &Sellers, id: &str, payload: &Value) -> (u16, Value) {
        let release = sellers.release;
        schemas(release).assert_valid("webhook payload", WEBHOOK_SCHEMA, payload);
        if let Some(result) = payload.get("result") {
            let task = payload["task_type"].as_str().unwrap_or_default();
            assert_answer(release, "webhook result", task, result);
        }
        let pnc = sellers.registration(id);
        let body = payload.to_string();
        // Our public URL for the operation; an RFC 9421 one also names its signer (tenant
        // and seller).
        let url = pnc["url"].as_str().expect("webhook url");
        let path = url.strip_prefix(&self.public).expect("our public origin");
        let rest = path
            .strip_prefix(&format!("/webhooks/adcp/{id}"))
            .expect("its path");
        match sellers.mode {
            "rfc9421" => assert!(rest.ends_with(&format!("/{}", sellers.up_id())), "{url}"),
            _ => assert_eq!(rest, "", "{url}"),
        }
        let path = path.to_string();
        let req = self
            .api
            .http
            .post(format!("{}{path}", self.host.base_url()))
            .header("content-type", "application/json");
        let secret = pnc["authentication"]["credentials"]
            .as_str()
            .unwrap_or_default();
        let req = match sellers.mode {
            "bearer" => req.bearer_auth(secret),
            "hmac" => {
                let ts = now_s().to_string();
                let sig = hmac_signature::sign(secret.as_bytes(), &ts, body.as_bytes());
                req.header("x-adcp-timestamp", ts)
                    .header("x-adcp-signature", sig)
            }
            _ => {
                let digest = rfc9421::content_digest(body.as_bytes());
                let created = now_s();
                let params = format!(
                    "(\"@method\" \"@target-uri\" \"@authority\" \"content-type\" \"content-digest\");created={created};expires={};nonce=\"n-{id}\";keyid=\"conformance-key\";alg=\"ed25519\";tag=\"adcp/webhook-signing/v1\"",
                    created + 300
                );
                let authority = self.public.trim_start_matches("http://");
                let base = format!(
                    "\"@method\": POST\n\"@target-uri\": {}{path}\n\"@authority\": {authority}\n\"content-type\": application/json\n\"content-digest\": {digest}\n\"@signature-params\": {params}",
                    self.public
                );
                let sig = URL_SAFE_NO_PAD.encode(signing_key().sign(base.as_bytes()).to_bytes());
                req.header("content-digest", digest)
                    .header("signature-input", format!("sig1={params}"))
                    .header("signature", format!("sig1=:{sig}:"))
            }
        };
        let r = req
            .body(body)
            .send()
            .await
            .expect("webhook reaches the host");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or_default())
    }
}

/// Operations left for the sweep: one polled to completion, one whose dispatch fails until
/// a look-up finds it.
struct Pending {
    polled: String,
    lost: String,
}

/// Everything that completes without the sweep (a sync create, an update completed by
/// webhook, a sync_creatives), then the two operations the sweep must settle.
async fn drive(app: &App, s: &Sellers) -> Pending {
    let mode = s.mode;
    let up = s.up_id();

    // create_media_buy answered synchronously.
    answer(s, &s.up, "create_media_buy", created_buy("mb_sync"));
    let op = app
        .operation(&up, "create_media_buy", create_arguments())
        .await;
    assert_eq!(op["status"], "completed", "{mode}: {op}");
    assert_eq!(op["result"]["media_buy_id"], "mb_sync");

    // update_media_buy submitted, then completed by the seller's webhook.
    answer(
        s,
        &s.up,
        "update_media_buy",
        json!({"status": "submitted", "task_id": "task_update", "message": "queued for trafficking"}),
    );
    let args =
        json!({"account": {"account_id": "acc_1"}, "media_buy_id": "mb_sync", "paused": true});
    let op = app.operation(&up, "update_media_buy", args).await;
    assert_eq!(op["status"], "submitted", "{mode}: {op}");
    let updated = op["operation_id"].as_str().unwrap().to_string();
    let token = s.registration(&updated)["token"].clone();
    let payload = json!({"idempotency_key": format!("whk_{mode}_update_0001"), "operation_id": updated,
        "task_id": "task_update", "task_type": "update_media_buy", "protocol": "media-buy",
        "status": "completed", "timestamp": "2026-11-22T10:10:00Z", "token": token,
        "result": {"status": "completed", "media_buy_id": "mb_sync", "media_buy_status": "paused",
                   "revision": 2, "affected_packages": [{"package_id": "pkg_1", "paused": true}]}});
    let (status, b) = app.webhook(s, &updated, &payload).await;
    assert_eq!(
        (status, &b["outcome"]),
        (200, &json!("applied")),
        "{mode}: {b}"
    );
    let op = app.get(&updated).await;
    assert_eq!(op["status"], "completed", "{mode}: {op}");
    assert_eq!(op["result"]["revision"], 2, "{mode}: {op}");

    // sync_creatives answered synchronously.
    answer(
        s,
        &s.up,
        "sync_creatives",
        json!({"status": "completed", "creatives": [{"creative_id": "hero_video_30s", "action": "created"}]}),
    );
    let args = json!({"account": {"account_id": "acc_1"}, "creatives": [creative()],
        "assignments": [{"creative_id": "hero_video_30s", "package_id": "pkg_1"}]});
    let op = app.operation(&up, "sync_creatives", args).await;
    assert_eq!(op["status"], "completed", "{mode}: {op}");

    // create_media_buy submitted, to be completed through get_task_status polls.
    answer(
        s,
        &s.up,
        "create_media_buy",
        json!({"status": "submitted", "task_id": "task_poll", "message": "awaiting IO signature"}),
    );
    let op = app
        .operation(&up, "create_media_buy", create_arguments())
        .await;
    assert_eq!(op["status"], "submitted", "{mode}: {op}");
    let polled = op["operation_id"].as_str().unwrap().to_string();
    let task = json!({"task_id": "task_poll", "task_type": "create_media_buy", "protocol": "media-buy",
        "created_at": "2026-11-22T10:00:00Z"});
    let mut working = task.clone();
    working["status"] = json!("working");
    working["updated_at"] = json!("2026-11-22T10:01:00Z");
    answer(s, &s.up, "get_task_status", working);
    let mut done = task;
    done["status"] = json!("completed");
    done["updated_at"] = json!("2026-11-22T10:05:00Z");
    done["completed_at"] = json!("2026-11-22T10:05:00Z");
    done["result"] = created_buy("mb_polled");
    answer(s, &s.up, "get_task_status", done);

    // A create the other seller never answers: redispatched until its attempts are spent,
    // then looked up with get_media_buys, which finds it by the context we sent.
    for _ in 0..MAX_DISPATCH_ATTEMPTS {
        s.down.answer(Answer::Http(503));
    }
    let op = app
        .operation(&s.down_id(), "create_media_buy", create_arguments())
        .await;
    assert_eq!(op["status"], "pending_dispatch", "{mode}: {op}");
    let lost = op["operation_id"].as_str().unwrap().to_string();
    answer(
        s,
        &s.down,
        "get_media_buys",
        json!({"status": "completed", "media_buys": [{"media_buy_id": "mb_found", "status": "pending_creatives",
            "currency": "USD", "total_budget": 5000, "confirmed_at": "2026-11-22T10:00:00Z", "revision": 1,
            "packages": [{"package_id": "pkg_1", "product_id": "p1", "budget": 5000}],
            "context": {"operation_id": lost}}]}),
    );
    Pending { polled, lost }
}

/// The release a request is served in: the one it pins, else the seller's default (its
/// highest declared release).
fn negotiated(s: &Sellers, args: &Value) -> String {
    match args.get("adcp_version") {
        Some(pin) => pin.as_str().expect("a release string").to_string(),
        None => declared(s.release)
            .as_array()
            .and_then(|d| d.last())
            .and_then(Value::as_str)
            .expect("a declared release")
            .to_string(),
    }
}

/// Checks what the sweep did for `s`, and every request its sellers received, against the
/// release negotiated for it.
fn check(s: &Sellers, polled: &Value, lost: &Value) -> Vec<String> {
    let mode = format!("{} {}", s.release, s.mode);
    assert_eq!(polled["status"], "completed", "{mode}: {polled}");
    assert_eq!(
        polled["result"]["media_buy_id"], "mb_polled",
        "{mode}: {polled}"
    );
    assert_eq!(lost["status"], "completed", "{mode}: {lost}");
    assert_eq!(lost["result"]["media_buy_id"], "mb_found", "{mode}: {lost}");
    let polls =
        s.up.calls()
            .iter()
            .filter(|(t, _)| t == "get_task_status")
            .count();
    assert_eq!(polls, 2, "{mode}: working, then completed");
    // Reconciliation lists the seller's tasks once per epoch; that is not part of this story.
    let down: Vec<String> = s
        .down
        .calls()
        .into_iter()
        .map(|(t, _)| t)
        .filter(|t| t != "list_tasks")
        .collect();
    let mut expected = vec!["get_adcp_capabilities".to_string()];
    expected.extend((0..MAX_DISPATCH_ATTEMPTS).map(|_| "create_media_buy".to_string()));
    expected.push("get_media_buys".into());
    assert_eq!(down, expected, "{mode}");

    let calls = s.calls();
    let tools: BTreeSet<&str> = calls.iter().map(|(t, _)| t.as_str()).collect();
    let exercised = BTreeSet::from([
        "create_media_buy",
        "get_adcp_capabilities",
        "get_media_buys",
        "get_task_status",
        "sync_creatives",
        "update_media_buy",
    ]);
    assert!(
        exercised.is_subset(&tools),
        "{mode}: tools called: {tools:?}"
    );
    // Discovery itself goes out before anything is negotiated, with our default pin; every
    // later call carries what the seller's declaration allows, so it is served in its release.
    for (tool, args) in calls.iter().filter(|(t, _)| t != "get_adcp_capabilities") {
        assert_eq!(negotiated(s, args), s.release, "{mode} {tool}: {args}");
        assert_eq!(args["adcp_major_version"], 3, "{mode} {tool}: {args}");
    }
    calls
        .iter()
        .enumerate()
        .filter_map(|(i, (tool, args))| {
            let reports = schemas(s.release).check_tool(tool, Direction::Request, args);
            (!reports.is_empty()).then(|| {
                format!(
                    "{mode} call #{i} {tool}:\n{args:#}\n{}",
                    reports.iter().map(|r| r.to_string()).collect::<String>()
                )
            })
        })
        .collect()
}

/// Every tool call the orchestrator makes, with sellers of `release` in each webhook mode
/// (which changes `push_notification_config`), on one host: every request is valid against
/// its tool's request schema in that release.
async fn every_request_conforms_in_each_webhook_mode(release: &'static str) {
    let app = App::start().await;
    let mut all = Vec::new();
    for mode in ["rfc9421", "hmac", "bearer"] {
        let sellers = app.sellers(release, mode).await;
        let pending = drive(&app, &sellers).await;
        all.push((sellers, pending));
    }
    // All operations exist before the first tick: the sweep's clock runs ahead of the
    // API's, and an operation filed behind the sweep's cursor would wait for real time.
    let ids: Vec<String> = all
        .iter()
        .flat_map(|(_, p)| [p.polled.clone(), p.lost.clone()])
        .collect();
    let ops = app.tick_until_settled(&ids).await;
    let mut failures = Vec::new();
    let mut requests = 0;
    for (i, (sellers, _)) in all.iter().enumerate() {
        failures.extend(check(sellers, &ops[2 * i], &ops[2 * i + 1]));
        requests += sellers.calls().len();
    }
    assert!(
        failures.is_empty(),
        "{} of {requests} requests are not valid AdCP {}:\n{}",
        failures.len(),
        schemas(release).version(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_conforms_to_3_1_in_each_webhook_mode() {
    every_request_conforms_in_each_webhook_mode("3.1").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_conforms_to_3_2_in_each_webhook_mode() {
    every_request_conforms_in_each_webhook_mode("3.2").await;
}

/// A valid create request, as the orchestrator sends one.
fn valid_create() -> Value {
    let mut args = create_arguments();
    args["idempotency_key"] = json!("5a1c0f3e-2b7d-4c1e-9f0a-3d2e1c0b9a87");
    args["context"] = json!({"operation_id": "op_0123"});
    args["push_notification_config"] = json!({"url": "https://orchestrator.example/webhooks/adcp/op_0123",
        "operation_id": "op_0123", "token": "0123456789abcdef0123",
        "authentication": {"schemes": ["HMAC-SHA256"], "credentials": "0123456789abcdef0123456789abcdef"}});
    args
}

/// The validator is strict where the 3.1 schemas are closed, and reports where.
#[test]
fn the_validator_rejects_what_the_schemas_close() {
    let s = schemas("3.1");
    let check = |doc: &Value| s.check_tool("create_media_buy", Direction::Request, doc);
    assert!(
        check(&valid_create()).is_empty(),
        "{:?}",
        check(&valid_create())
    );

    // `account-ref` is closed: each of its branches has additionalProperties false.
    let mut doc = valid_create();
    doc["account"]["region"] = json!("eu");
    let reports = check(&doc);
    assert_eq!(reports.len(), 1);
    let at: Vec<&str> = reports[0]
        .errors
        .iter()
        .map(|e| e.instance_path.as_str())
        .collect();
    assert_eq!(at, ["/account"], "{}", reports[0]);
    assert!(
        reports[0].detail.iter().any(
            |e| e.message.contains("region") && e.schema_path.ends_with("additionalProperties")
        ),
        "{}",
        reports[0]
    );

    // The webhook authentication block is closed too.
    let mut doc = valid_create();
    doc["push_notification_config"]["authentication"]["algorithm"] = json!("sha256");
    let reports = check(&doc);
    assert_eq!(
        reports[0].errors[0].instance_path,
        "/push_notification_config/authentication"
    );

    // `package-request` is open in 3.1.19 (additionalProperties true) but forbids
    // `capability_ids` and an `asap` start; its required fields and types hold.
    let mut doc = valid_create();
    doc["packages"][0]["buyer_note"] = json!("free text is allowed");
    assert!(check(&doc).is_empty());
    for (field, value) in [
        ("capability_ids", json!(["cap_1"])),
        ("start_time", json!("asap")),
        ("budget", json!("5000")),
    ] {
        let mut doc = valid_create();
        doc["packages"][0][field] = value;
        let reports = check(&doc);
        assert_eq!(reports.len(), 1, "{field}");
        assert!(
            reports[0]
                .errors
                .iter()
                .all(|e| e.instance_path.starts_with("/packages/0")),
            "{field}: {}",
            reports[0]
        );
    }
    let mut doc = valid_create();
    doc["packages"][0]
        .as_object_mut()
        .unwrap()
        .remove("pricing_option_id");
    assert_eq!(check(&doc)[0].errors[0].instance_path, "/packages/0");

    // Formats are asserted, and orchestrator-added fields are held to their patterns.
    let mut doc = valid_create();
    doc["end_time"] = json!("next tuesday");
    assert_eq!(check(&doc)[0].errors[0].instance_path, "/end_time");
    let mut doc = valid_create();
    doc["idempotency_key"] = json!("short");
    assert_eq!(check(&doc)[0].errors[0].instance_path, "/idempotency_key");
    let mut doc = valid_create();
    doc["push_notification_config"]["authentication"]["credentials"] = json!("too-short");
    assert_eq!(
        check(&doc)[0].errors[0].instance_path,
        "/push_notification_config/authentication/credentials"
    );

    // A response must match one of the tool's shapes: a sync success without its required
    // fields is neither a success nor a submitted task.
    let mut answer = created_buy("mb_1");
    answer.as_object_mut().unwrap().remove("revision");
    let reports = s.check_tool("create_media_buy", Direction::Response, &answer);
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].errors[0].schema_path, "/oneOf", "{}", reports[0]);
    // An interim answer is the envelope plus the tool's async shape, whose fields are typed.
    let working = json!({"status": "working", "task_id": "t1", "percentage": 150});
    let reports = s.check_tool("create_media_buy", Direction::Response, &working);
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].errors[0].instance_path, "/percentage");
    // Webhook payloads: required envelope fields and the task-status enum hold.
    let hook = json!({"idempotency_key": "whk_0123456789abcdef", "operation_id": "op_1", "task_id": "t1",
        "task_type": "create_media_buy", "status": "completed", "timestamp": "2026-11-22T10:00:00Z"});
    s.assert_valid("webhook", WEBHOOK_SCHEMA, &hook);
    let mut bad = hook.clone();
    bad["status"] = json!("done");
    bad.as_object_mut().unwrap().remove("timestamp");
    let r = s.check(WEBHOOK_SCHEMA, &bad);
    let mut at: Vec<&str> = r.errors.iter().map(|e| e.instance_path.as_str()).collect();
    at.sort();
    assert_eq!(at, ["", "/status"], "{r}");
    // The envelope's `status` is a task status, not a media-buy status.
    let mut legacy = created_buy("mb_1");
    legacy["status"] = json!("active");
    assert!(
        !s.check_tool("create_media_buy", Direction::Response, &legacy)
            .is_empty()
    );
}

/// The 3.2 schemas, which name each other by absolute `https://` references, are resolved
/// locally and hold as strictly: closed objects reached through references, the version
/// envelope's release-precision pattern, the tool's response shapes.
#[test]
fn the_3_2_schemas_resolve_and_stay_strict() {
    let s = schemas("3.2");
    assert!(s.version().starts_with("3.2."), "{}", s.version());
    let check = |doc: &Value| s.check_tool("create_media_buy", Direction::Request, doc);
    let mut doc = valid_create();
    doc["adcp_version"] = json!("3.2");
    doc["adcp_major_version"] = json!(3);
    assert!(check(&doc).is_empty(), "{:?}", check(&doc));

    let mut bad = doc.clone();
    bad["account"]["region"] = json!("eu");
    let reports = check(&bad);
    assert_eq!(reports.len(), 1);
    assert_eq!(
        reports[0].errors[0].instance_path, "/account",
        "{}",
        reports[0]
    );
    let mut bad = doc.clone();
    bad["push_notification_config"]["authentication"]["algorithm"] = json!("sha256");
    assert_eq!(
        check(&bad)[0].errors[0].instance_path,
        "/push_notification_config/authentication"
    );
    // A patch release is bundle metadata, not a wire value.
    let mut bad = doc;
    bad["adcp_version"] = json!("3.2.4");
    assert_eq!(check(&bad)[0].errors[0].instance_path, "/adcp_version");

    let mut answer = created_buy("mb_1");
    answer.as_object_mut().unwrap().remove("revision");
    let reports = s.check_tool("create_media_buy", Direction::Response, &answer);
    assert_eq!(reports[0].errors[0].schema_path, "/oneOf", "{}", reports[0]);
}
