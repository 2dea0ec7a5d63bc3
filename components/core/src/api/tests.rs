use super::*;
use crate::foundation::{seal::SealingKey, store::MemoryStore};
use crate::testing::{FakeSeller, ScriptedTransport};
use crate::{foundation::clock::FixedClock, testing::SeededEntropy};
use futures::executor::block_on;
use serde_json::Value;

const SEAL_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const ADMIN: &str = "admin-secret-key";

struct World {
    store: MemoryStore,
    clock: FixedClock,
    entropy: SeededEntropy,
    config: ApiConfig,
    seller: FakeSeller,
    transport: ScriptedTransport,
    sweep: crate::config::SweepConfig,
    log: crate::testing::Lines,
}

impl World {
    fn new() -> World {
        World {
            store: MemoryStore::new(),
            clock: FixedClock(1_700_000_000_000),
            entropy: SeededEntropy::new(42),
            seller: FakeSeller::default(),
            transport: ScriptedTransport::default(),
            sweep: Default::default(),
            log: Default::default(),
            config: ApiConfig {
                admin_api_key: ADMIN.into(),
                public_base_url: "https://orch.example.com/".into(),
                sweep_token: "sweep-token".into(),
                metrics_token: "metrics-token".into(),
                sealing: SealingKey::from_hex(SEAL_KEY).unwrap(),
                allow_private_networks: false,
            },
        }
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut b = http::Request::builder().method(method).uri(path);
        if let Some(k) = key {
            b = b.header("authorization", format!("Bearer {k}"));
        }
        let body = match body {
            Some(v) => {
                b = b.header("content-type", "application/json");
                v.to_string().into_bytes()
            }
            None => Vec::new(),
        };
        self.raw(b.body(body).unwrap())
    }

    fn raw(&self, req: Request) -> (StatusCode, Value) {
        let resp = self.response(req);
        let status = resp.status();
        let body = if resp.body().is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(resp.body()).unwrap()
        };
        (status, body)
    }

    fn response(&self, req: Request) -> Response {
        let env = Env {
            store: &self.store,
            clock: &self.clock,
            entropy: &self.entropy,
            config: &self.config,
            log: &self.log,
            calls: &self.seller,
            transport: &self.transport,
            sweep: &self.sweep,
        };
        block_on(handle(&env, req))
    }

    fn tenant(&self, name: &str) -> String {
        let (s, b) = self.call(
            "POST",
            "/api/v1/tenants",
            Some(ADMIN),
            Some(json!({"name": name})),
        );
        assert_eq!(s, StatusCode::CREATED, "{b}");
        b["api_key"].as_str().unwrap().to_string()
    }

    fn seller(&self, key: &str, id: &str) {
        let (s, b) = self.call(
            "PUT",
            &format!("/api/v1/sellers/{id}"),
            Some(key),
            Some(json!({"mcp_url": "https://seller.example/mcp", "credentials": "seller-token-123", "webhook_mode": "hmac"})),
        );
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
}

fn create_body(seller: &str) -> Value {
    json!({
        "seller_id": seller,
        "task": "create_media_buy",
        "arguments": {
            "account": {"account_id": "acc_1"},
            "brand": {"domain": "acme.com"},
            "start_time": "asap",
            "end_time": "2026-12-31T23:59:59Z",
            "packages": [{"product_id": "p1", "budget": 1000, "pricing_option_id": "cpm"}],
            "context": {"campaign": "c-42"}
        }
    })
}

#[test]
fn tenants_need_the_admin_key() {
    let w = World::new();
    let (s, b) = w.call(
        "POST",
        "/api/v1/tenants",
        Some("wrong"),
        Some(json!({"name": "x"})),
    );
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let (s, _) = w.call("POST", "/api/v1/tenants", None, Some(json!({"name": "x"})));
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(w.store.keys().is_empty(), "no state change");
    let key = w.tenant("Acme");
    assert!(key.starts_with("adcpo_"));
    // The admin key is not a tenant key.
    let (s, _) = w.call("GET", "/api/v1/operations", Some(ADMIN), None);
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[test]
fn seller_credentials_are_write_only() {
    let w = World::new();
    let key = w.tenant("Acme");
    w.seller(&key, "s1");
    let (s, b) = w.call("GET", "/api/v1/sellers/s1", Some(&key), None);
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["has_credentials"], json!(true));
    assert_eq!(b["breaker"]["consecutive_failures"], json!(0), "{b}");
    assert!(b["breaker"]["state"].is_string(), "{b}");
    assert!(!b.to_string().contains("seller-token-123"));
    for k in w.store.keys() {
        let v = block_on(w.store.get(&k)).unwrap().unwrap();
        assert!(
            !String::from_utf8_lossy(&v).contains("seller-token-123"),
            "plaintext secret at {k}"
        );
    }
    // Updating without credentials keeps them.
    let (s, b) = w.call(
        "PUT",
        "/api/v1/sellers/s1",
        Some(&key),
        Some(json!({"mcp_url": "https://other.example/mcp"})),
    );
    assert_eq!(
        (s, b["has_credentials"].clone()),
        (StatusCode::OK, json!(true))
    );
    let (s, _) = w.call("DELETE", "/api/v1/sellers/s1", Some(&key), None);
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = w.call("GET", "/api/v1/sellers/s1", Some(&key), None);
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
}

#[test]
fn creating_an_operation_stores_it_with_its_own_idempotency_key_and_context() {
    let w = World::new();
    let key = w.tenant("Acme");
    w.seller(&key, "s1");
    let (s, op) = w.call(
        "POST",
        "/api/v1/operations",
        Some(&key),
        Some(create_body("s1")),
    );
    assert_eq!(s, StatusCode::CREATED, "{op}");
    assert_eq!(op["status"], json!("pending_dispatch"));
    assert_eq!(op["webhook_mode"], json!("hmac"));
    let id = op["operation_id"].as_str().unwrap();
    assert_eq!(
        op["arguments"]["context"],
        json!({"campaign": "c-42", "operation_id": id})
    );
    assert!(
        op["arguments"].get("idempotency_key").is_none(),
        "full key never shown"
    );
    assert_eq!(op["idempotency_key_prefix"].as_str().unwrap().len(), 8);
    let (s, got) = w.call("GET", &format!("/api/v1/operations/{id}"), Some(&key), None);
    assert_eq!((s, &got), (StatusCode::OK, &op));
    let (s, ev) = w.call(
        "GET",
        &format!("/api/v1/operations/{id}/events"),
        Some(&key),
        None,
    );
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ev["events"][0]["kind"], json!("created"));
    let (s, list) = w.call(
        "GET",
        "/api/v1/operations?status=pending_dispatch&limit=10",
        Some(&key),
        None,
    );
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["operations"].as_array().unwrap().len(), 1);
}

#[test]
fn another_tenants_operation_answers_like_a_missing_one() {
    let w = World::new();
    let a = w.tenant("A");
    let b = w.tenant("B");
    w.seller(&a, "s1");
    let (_, op) = w.call(
        "POST",
        "/api/v1/operations",
        Some(&a),
        Some(create_body("s1")),
    );
    let id = op["operation_id"].as_str().unwrap();
    let theirs = w.call("GET", &format!("/api/v1/operations/{id}"), Some(&b), None);
    let missing = w.call("GET", "/api/v1/operations/op_doesnotexist", Some(&b), None);
    assert_eq!(theirs, missing);
    assert_eq!(theirs.0, StatusCode::NOT_FOUND);
    let (_, list) = w.call("GET", "/api/v1/operations", Some(&b), None);
    assert_eq!(list["operations"], json!([]));
    // B cannot use A's seller either.
    let (s, e) = w.call(
        "POST",
        "/api/v1/operations",
        Some(&b),
        Some(create_body("s1")),
    );
    assert_eq!(
        (s, e["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("validation_failed"))
    );
}

#[test]
fn the_same_idempotency_key_gives_one_operation_and_a_different_body_conflicts() {
    let w = World::new();
    let key = w.tenant("Acme");
    w.seller(&key, "s1");
    let post = |body: Value| {
        w.raw(
            http::Request::post("/api/v1/operations")
                .header("authorization", format!("Bearer {key}"))
                .header("content-type", "application/json")
                .header("idempotency-key", "buyer-req-1")
                .body(body.to_string().into_bytes())
                .unwrap(),
        )
    };
    let (s1, a) = post(create_body("s1"));
    let (s2, b) = post(create_body("s1"));
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::OK));
    assert_eq!(a["operation_id"], b["operation_id"]);
    let mut other = create_body("s1");
    other["arguments"]["end_time"] = json!("2027-01-01T00:00:00Z");
    let (s3, c) = post(other);
    assert_eq!(
        (s3, c["code"].as_str()),
        (StatusCode::CONFLICT, Some("idempotency_conflict"))
    );
    let (_, list) = w.call("GET", "/api/v1/operations", Some(&key), None);
    assert_eq!(list["operations"].as_array().unwrap().len(), 1);
}

#[test]
fn concurrent_identical_requests_create_one_operation() {
    let w = World::new();
    let key = w.tenant("Acme");
    w.seller(&key, "s1");
    let env = Env {
        store: &w.store,
        clock: &w.clock,
        entropy: &w.entropy,
        config: &w.config,
        log: &crate::foundation::log::NoLog,
        calls: &w.seller,
        transport: &w.transport,
        sweep: &w.sweep,
    };
    let req = || {
        http::Request::post("/api/v1/operations")
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .header("idempotency-key", "buyer-req-2")
            .body(create_body("s1").to_string().into_bytes())
            .unwrap()
    };
    let (a, b) = block_on(async { futures::join!(handle(&env, req()), handle(&env, req())) });
    let mut statuses = [a.status(), b.status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CREATED]);
    let (_, list) = w.call("GET", "/api/v1/operations", Some(&key), None);
    assert_eq!(list["operations"].as_array().unwrap().len(), 1);
}

#[test]
fn bad_input_gets_a_json_error_and_changes_nothing() {
    let w = World::new();
    let key = w.tenant("Acme");
    w.seller(&key, "s1");
    let before = w.store.keys();
    let auth = format!("Bearer {key}");
    let cases: Vec<(Request, StatusCode, &str)> = vec![
        (
            http::Request::post("/api/v1/operations")
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .body(b"{not json".to_vec())
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            http::Request::post("/api/v1/operations")
                .header("authorization", &auth)
                .header("content-type", "text/plain")
                .body(b"{}".to_vec())
                .unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            http::Request::post("/api/v1/operations")
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .body(vec![b' '; MAX_BODY_BYTES + 1])
                .unwrap(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            http::Request::delete("/api/v1/operations")
                .header("authorization", &auth)
                .body(vec![])
                .unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            http::Request::post("/api/v1/operations")
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .body(create_body("nobody").to_string().into_bytes())
                .unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            http::Request::post("/api/v1/operations")
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .body(
                    json!({"seller_id": "s1", "task": "get_signals", "arguments": {}})
                        .to_string()
                        .into_bytes(),
                )
                .unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unsupported_task",
        ),
        (
            http::Request::get("/api/v1/nowhere").body(vec![]).unwrap(),
            StatusCode::NOT_FOUND,
            "no_route",
        ),
    ];
    for (req, status, code) in cases {
        let (s, b) = w.raw(req);
        assert_eq!((s, b["code"].as_str()), (status, Some(code)), "{b}");
        assert!(b["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(w.store.keys(), before);
}

#[test]
fn validation_lists_every_failing_field() {
    let w = World::new();
    let key = w.tenant("Acme");
    w.seller(&key, "s1");
    let (s, b) = w.call(
        "POST",
        "/api/v1/operations",
        Some(&key),
        Some(json!({"seller_id": "s1", "task": "create_media_buy", "arguments": {"account": {}}, "extra": 1})),
    );
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = b["details"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "extra",
            "arguments.account",
            "arguments.brand",
            "arguments.start_time",
            "arguments.end_time",
            "arguments.packages"
        ]
    );
}

#[test]
fn openapi_is_served_and_documents_every_route() {
    let w = World::new();
    let (s, doc) = w.call("GET", "/api/v1/openapi.json", None, None);
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["openapi"], json!("3.1.0"));
    let paths = doc["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/healthz", &["get"][..]),
        ("/readyz", &["get"]),
        ("/api/v1/openapi.json", &["get"]),
        ("/api/v1/tenants", &["post"]),
        ("/api/v1/sellers", &["get"]),
        ("/api/v1/summary", &["get"]),
        ("/api/v1/sellers/{seller_id}", &["put", "get", "delete"]),
        ("/api/v1/operations", &["post", "get"]),
        ("/api/v1/operations/{operation_id}", &["get"]),
        ("/api/v1/operations/{operation_id}/events", &["get"]),
        ("/api/v1/operations/{operation_id}/cancel", &["post"]),
        ("/api/v1/operations/{operation_id}/decision", &["post"]),
        ("/api/v1/sellers/{seller_id}/capabilities", &["post"]),
        ("/internal/sweep", &["post"]),
        ("/api/v1/callback", &["put", "get", "delete"]),
        ("/metrics", &["get"]),
    ] {
        for m in methods {
            assert!(paths[path].get(*m).is_some(), "{m} {path} undocumented");
        }
    }
}

#[test]
fn readiness_reads_the_store_and_reports_the_sweep_age() {
    let w = World::new();
    let (s, body) = w.call("GET", "/readyz", None, None);
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["store"], "ok");
    assert_eq!(
        body["sweep_last_finished_age_s"],
        Value::Null,
        "no sweep yet"
    );
    w.call("POST", "/internal/sweep", Some("sweep-token"), None);
    let (_, body) = w.call("GET", "/readyz", None, None);
    assert_eq!(body["sweep_last_finished_age_s"], 0);
    w.store.fail_nth_call(1);
    let (s, body) = w.call("GET", "/readyz", None, None);
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body,
        json!({"status": "unavailable", "store": "unavailable"})
    );
    // A store a newer release wrote: not ready, and the sweep does not touch it.
    block_on(w.store.set(keys::FORMAT, b"99")).unwrap();
    let (s, body) = w.call("GET", "/readyz", None, None);
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["store"], "newer_format");
    let (s, _) = w.call("POST", "/internal/sweep", Some("sweep-token"), None);
    assert!(s.is_server_error(), "{s}");
}

#[test]
fn sweep_and_metrics_need_their_own_tokens() {
    let w = World::new();
    assert_eq!(
        w.call("POST", "/internal/sweep", Some(ADMIN), None).0,
        StatusCode::UNAUTHORIZED
    );
    let (s, report) = w.call("POST", "/internal/sweep", Some("sweep-token"), None);
    assert_eq!(
        (s, report["trigger"].as_str()),
        (StatusCode::OK, Some("http"))
    );
    assert_eq!(
        w.call("GET", "/metrics", Some("sweep-token"), None).0,
        StatusCode::UNAUTHORIZED
    );
    let env = Env {
        store: &w.store,
        clock: &w.clock,
        entropy: &w.entropy,
        config: &w.config,
        log: &crate::foundation::log::NoLog,
        calls: &w.seller,
        transport: &w.transport,
        sweep: &w.sweep,
    };
    let resp = block_on(handle(
        &env,
        http::Request::get("/metrics")
            .header("authorization", "Bearer metrics-token")
            .body(vec![])
            .unwrap(),
    ));
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        String::from_utf8_lossy(resp.body())
            .contains("adcp_sweep_last_finished_seconds 1700000000")
    );
}

#[test]
fn callback_secret_is_shown_once_and_never_stored_in_clear() {
    let w = World::new();
    let key = w.tenant("Acme");
    let (s, b) = w.call(
        "PUT",
        "/api/v1/callback",
        Some(&key),
        Some(json!({"url": "https://buyer.example/hook"})),
    );
    assert_eq!(s, StatusCode::OK, "{b}");
    let secret = b["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    let (_, got) = w.call("GET", "/api/v1/callback", Some(&key), None);
    assert!(got.get("secret").is_none());
    assert_eq!(got["enabled"], json!(true));
    for k in w.store.keys() {
        let v = block_on(w.store.get(&k)).unwrap().unwrap();
        assert!(!String::from_utf8_lossy(&v).contains(&secret[6..]));
    }
    let (s, e) = w.call(
        "PUT",
        "/api/v1/callback",
        Some(&key),
        Some(json!({"url": "ftp://x", "secret": "nope"})),
    );
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(e["details"]["fields"].as_array().unwrap().len(), 2);
}

#[test]
fn every_task_of_the_table_is_accepted_and_sent_under_its_own_name() {
    use crate::model::task::{TASKS, TaskKind};
    let w = World::new();
    let key = w.tenant("Acme");
    w.seller(&key, "s1");
    let detailed = [
        TaskKind::CreateMediaBuy,
        TaskKind::UpdateMediaBuy,
        TaskKind::SyncCreatives,
    ];
    let (_, doc) = w.call("GET", "/api/v1/openapi.json", None, None);
    let documented = doc.pointer("/components/schemas/OperationInput/properties/task/enum");
    assert_eq!(
        documented,
        Some(&json!(TaskKind::names())),
        "the OpenAPI enum is the table"
    );
    for t in TASKS.iter().filter(|t| !detailed.contains(&t.kind)) {
        let arguments: serde_json::Map<String, Value> = t
            .required
            .iter()
            .map(|f| (f.to_string(), json!({"account_id": "acc_1"})))
            .collect();
        w.seller
            .answer(Ok(json!({"status": "submitted", "task_id": t.name})));
        let body = json!({"seller_id": "s1", "task": t.name, "arguments": arguments});
        let (s, op) = w.call("POST", "/api/v1/operations", Some(&key), Some(body));
        assert_eq!(s, StatusCode::CREATED, "{}: {op}", t.name);
        assert_eq!(op["task"], t.name);
        assert_eq!(w.seller.calls.borrow().last().unwrap().0, t.name);
        if let Some(first) = t.required.first() {
            let mut missing = arguments.clone();
            missing.remove(*first);
            let body = json!({"seller_id": "s1", "task": t.name, "arguments": missing});
            let (s, b) = w.call("POST", "/api/v1/operations", Some(&key), Some(body));
            assert_eq!(
                (s, &b["code"]),
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &json!("validation_failed")
                )
            );
            assert_eq!(
                b["details"]["fields"][0]["field"],
                format!("arguments.{first}")
            );
        }
    }
}

#[test]
fn creation_dispatches_after_storing_and_reports_the_sellers_answer() {
    let w = World::new();
    let key = w.tenant("Acme");
    w.seller(&key, "s1");
    w.seller.answer(Ok(
        json!({"status": "submitted", "task_id": "task_1", "message": "IO signature pending"}),
    ));
    let (s, op) = w.call(
        "POST",
        "/api/v1/operations",
        Some(&key),
        Some(create_body("s1")),
    );
    assert_eq!(s, StatusCode::CREATED, "{op}");
    assert_eq!(op["status"], json!("submitted"));
    assert_eq!(op["task_id"], json!("task_1"));
    let calls = w.seller.calls.borrow();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].0, "create_media_buy");
    let args = &calls[0].1;
    assert_eq!(args["context"]["operation_id"], op["operation_id"]);
    assert_eq!(
        args["push_notification_config"]["url"],
        json!(format!(
            "https://orch.example.com/webhooks/adcp/{}",
            op["operation_id"].as_str().unwrap()
        ))
    );
    assert!(
        args["push_notification_config"]["authentication"]["credentials"]
            .as_str()
            .unwrap()
            .len()
            >= 32
    );
    assert_eq!(
        args["idempotency_key"].as_str().unwrap()[..8],
        *op["idempotency_key_prefix"].as_str().unwrap()
    );
}

#[test]
fn a_store_failure_between_storing_and_calling_leaves_the_operation_waiting() {
    // The seller's breaker unreadable: nothing sent, nothing failed, no store text shown.
    let w = World::new();
    let key = w.tenant("Acme");
    w.seller(&key, "s1");
    w.store.fail_nth_call(11);
    let (s, op) = w.call(
        "POST",
        "/api/v1/operations",
        Some(&key),
        Some(create_body("s1")),
    );
    assert_eq!(
        (s, &op["status"]),
        (StatusCode::CREATED, &json!("pending_dispatch")),
        "{op}"
    );
    assert_eq!(op["error"], Value::Null, "{op}");
    assert!(w.seller.calls.borrow().is_empty());

    let w = World::new();
    let key = w.tenant("Acme");
    w.seller(&key, "s1");
    // Creation reads/writes succeed; the dispatch's first store read (the seller) fails.
    // (tenant auth get x2, seller get, listing position, seq, entry, listing entry, due
    // hint x2)
    w.store.fail_nth_call(10);
    let (s, e) = w.call(
        "POST",
        "/api/v1/operations",
        Some(&key),
        Some(create_body("s1")),
    );
    assert_eq!(
        (s, e["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("store_unavailable")),
        "{e}"
    );
    // The caller gets a fixed message; the store's own text is only in the log.
    assert_eq!(e["message"], "the store is unavailable; retry");
    assert!(!e.to_string().contains("injected"), "{e}");
    let logged = w.log.0.borrow().join("\n");
    assert!(
        logged.contains("api.error") && logged.contains("injected fault"),
        "{logged}"
    );
    assert!(
        w.seller.calls.borrow().is_empty(),
        "the seller was not called"
    );
    let (_, list) = w.call("GET", "/api/v1/operations", Some(&key), None);
    let ops = list["operations"].as_array().unwrap();
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0]["status"], json!("pending_dispatch"));
}

#[test]
fn registration_keeps_capabilities_and_the_webhook_mode_follows_them() {
    let w = World::new();
    let key = w.tenant("acme");
    let (s, b) = w.call(
        "PUT",
        "/api/v1/sellers/signs",
        Some(&key),
        Some(json!({"mcp_url": "https://seller.example/mcp"})),
    );
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["capabilities"]["replay_ttl_seconds"], 86400);
    assert_eq!(b["capabilities"]["webhook_signing"], true);
    assert_eq!(b["capabilities_error"], Value::Null);
    w.seller
        .answer(Ok(json!({"status": "submitted", "task_id": "t1"})));
    let mut body = create_body("signs");
    body["webhook"] = json!(true);
    let (s, op) = w.call("POST", "/api/v1/operations", Some(&key), Some(body));
    assert_eq!(s, StatusCode::CREATED, "{op}");
    assert_eq!(op["webhook_mode"], "rfc9421");

    // A seller that does not sign webhooks gets a per-operation HMAC secret.
    w.seller.capabilities.replace(Some(Ok(json!({
        "adcp": {"major_versions": [3], "idempotency": {"supported": true, "replay_ttl_seconds": 3600}},
        "supported_protocols": ["media_buy"]
    }))));
    w.call(
        "PUT",
        "/api/v1/sellers/legacy",
        Some(&key),
        Some(json!({"mcp_url": "https://legacy.example/mcp"})),
    );
    w.seller
        .answer(Ok(json!({"status": "submitted", "task_id": "t2"})));
    let mut body = create_body("legacy");
    body["webhook"] = json!(true);
    let (_, op) = w.call("POST", "/api/v1/operations", Some(&key), Some(body));
    assert_eq!(op["webhook_mode"], "hmac");
    let sent = &w.seller.calls.borrow()[1].1;
    assert_eq!(
        sent["push_notification_config"]["authentication"]["schemes"],
        json!(["HMAC-SHA256"])
    );
}

#[test]
fn a_seller_without_a_replay_window_is_never_sent_a_mutation() {
    let w = World::new();
    let key = w.tenant("acme");
    w.seller.capabilities.replace(Some(Ok(json!({
        "adcp": {"major_versions": [3], "idempotency": {"supported": false}},
        "supported_protocols": ["media_buy"]
    }))));
    let (s, b) = w.call(
        "PUT",
        "/api/v1/sellers/unsafe",
        Some(&key),
        Some(json!({"mcp_url": "https://unsafe.example/mcp"})),
    );
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["capabilities"]["replay_ttl_seconds"], Value::Null);
    let keys_before = w.store.keys().len();
    let (s, b) = w.call(
        "POST",
        "/api/v1/operations",
        Some(&key),
        Some(create_body("unsafe")),
    );
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::CONFLICT, Some("seller_not_safe_to_mutate")),
        "{b}"
    );
    assert!(w.seller.calls.borrow().is_empty(), "nothing sent");
    assert_eq!(w.store.keys().len(), keys_before, "nothing stored");

    // The seller fixes its declaration; a refresh picks it up and mutations flow.
    w.seller.capabilities.replace(None);
    let (s, b) = w.call(
        "POST",
        "/api/v1/sellers/unsafe/capabilities",
        Some(&key),
        None,
    );
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["capabilities"]["replay_ttl_seconds"], 86400);
    w.seller
        .answer(Ok(json!({"status": "submitted", "task_id": "t1"})));
    let (s, _) = w.call(
        "POST",
        "/api/v1/operations",
        Some(&key),
        Some(create_body("unsafe")),
    );
    assert_eq!(s, StatusCode::CREATED);
}

#[test]
fn an_unreachable_seller_registers_and_its_capabilities_are_fetched_before_the_first_call() {
    let w = World::new();
    let key = w.tenant("acme");
    let down = || {
        Some(Err(crate::seller::port::CallFailure::Transport(
            crate::foundation::transport::TransportError::Connect("refused".into()),
        )))
    };
    w.seller.capabilities.replace(down());
    let (s, b) = w.call(
        "PUT",
        "/api/v1/sellers/later",
        Some(&key),
        Some(json!({"mcp_url": "https://later.example/mcp"})),
    );
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["capabilities"], Value::Null);
    // A fixed category for the tenant: what the network said (which addresses answer, a
    // port-scan oracle) goes to the log only.
    assert_eq!(
        b["capabilities_error"],
        "capabilities unavailable: the seller could not be reached"
    );
    assert!(w.log.0.borrow().join("\n").contains("refused"));
    // Still down at creation: refused with nothing stored, not sent blind.
    let (s, b) = w.call(
        "POST",
        "/api/v1/operations",
        Some(&key),
        Some(create_body("later")),
    );
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::BAD_GATEWAY, Some("seller_unavailable"))
    );
    assert!(!b.to_string().contains("refused"), "{b}");
    assert!(w.seller.calls.borrow().is_empty());
    // Back up: the creation fetches them once, then calls.
    w.seller.capabilities.replace(None);
    let before = w.seller.capability_calls.get();
    w.seller
        .answer(Ok(json!({"status": "submitted", "task_id": "t1"})));
    let (s, _) = w.call(
        "POST",
        "/api/v1/operations",
        Some(&key),
        Some(create_body("later")),
    );
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(w.seller.capability_calls.get(), before + 1);
    let (_, seller) = w.call("GET", "/api/v1/sellers/later", Some(&key), None);
    assert_eq!(seller["capabilities"]["replay_ttl_seconds"], 86400);
}

#[test]
fn basic_auth_scheme_is_registered_and_bad_schemes_are_refused() {
    let w = World::new();
    let key = w.tenant("acme");
    let (s, b) = w.call(
        "PUT",
        "/api/v1/sellers/basic",
        Some(&key),
        Some(json!({"mcp_url": "https://b.example/mcp", "credentials": "user:pw", "auth_scheme": "basic"})),
    );
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["auth_scheme"], "basic");
    let (s, b) = w.call(
        "PUT",
        "/api/v1/sellers/bad",
        Some(&key),
        Some(json!({"mcp_url": "https://b.example/mcp", "auth_scheme": "digest"})),
    );
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
}

fn governed_body(seller: &str) -> Value {
    let mut b = create_body(seller);
    b["governance"] = json!({"agent_id": "gov", "plan_id": "plan_q4"});
    b
}

#[test]
fn governance_approves_denies_or_holds_before_the_seller_is_called() {
    let w = World::new();
    let key = w.tenant("acme");
    w.seller(&key, "s1");
    w.seller(&key, "gov");
    // Approved: the seller call carries the governance context.
    w.seller.answer(Ok(
        json!({"check_id": "c1", "verdict": "approved", "plan_id": "plan_q4",
        "explanation": "ok", "governance_context": "gctx-1"}),
    ));
    w.seller
        .answer(Ok(json!({"status": "submitted", "task_id": "t1"})));
    let (s, op) = w.call(
        "POST",
        "/api/v1/operations",
        Some(&key),
        Some(governed_body("s1")),
    );
    assert_eq!(s, StatusCode::CREATED, "{op}");
    assert_eq!(op["status"], "submitted");
    assert_eq!(op["governance"]["approved"], true);
    {
        let calls = w.seller.calls.borrow();
        assert_eq!(calls[0].0, "check_governance");
        assert_eq!(calls[0].1["plan_id"], "plan_q4");
        assert_eq!(calls[0].1["tool"], "create_media_buy");
        assert_eq!(calls[0].1["phase"], "purchase");
        assert_eq!(calls[0].1["caller"], "https://orch.example.com");
        assert!(calls[0].1["payload"].get("idempotency_key").is_none());
        assert_eq!(calls[1].0, "create_media_buy");
        assert_eq!(calls[1].1["governance_context"], "gctx-1");
    }
    // Denied (3.0 spelling `status`): failed with the verdict, the seller never called.
    w.seller.calls.borrow_mut().clear();
    w.seller.answer(Ok(
        json!({"check_id": "c2", "status": "denied", "plan_id": "plan_q4",
        "explanation": "over budget"}),
    ));
    let mut body = governed_body("s1");
    body["arguments"]["po_number"] = json!("PO-2");
    let (_, op) = w.call("POST", "/api/v1/operations", Some(&key), Some(body));
    assert_eq!(op["status"], "failed", "{op}");
    assert_eq!(op["error"]["code"], "GOVERNANCE_DENIED");
    assert_eq!(op["error"]["message"], "over budget");
    assert_eq!(w.seller.calls.borrow().len(), 1);
    // Conditions: held for a human; approve dispatches, with no second check.
    w.seller.calls.borrow_mut().clear();
    w.seller.answer(Ok(
        json!({"check_id": "c3", "verdict": "conditions", "plan_id": "plan_q4",
        "explanation": "needs sign-off", "conditions": [{"field": "budget", "reason": "cap"}]}),
    ));
    let mut body = governed_body("s1");
    body["arguments"]["po_number"] = json!("PO-3");
    let (_, held) = w.call("POST", "/api/v1/operations", Some(&key), Some(body));
    assert_eq!(held["status"], "awaiting_decision", "{held}");
    assert_eq!(held["governance"]["conditions"][0]["field"], "budget");
    let id = held["operation_id"].as_str().unwrap();
    w.seller
        .answer(Ok(json!({"status": "submitted", "task_id": "t3"})));
    let (s, b) = w.call(
        "POST",
        &format!("/api/v1/operations/{id}/decision"),
        Some(&key),
        Some(json!({"action": "approve"})),
    );
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["operation"]["status"], "submitted");
    let tools: Vec<String> = w
        .seller
        .calls
        .borrow()
        .iter()
        .map(|c| c.0.clone())
        .collect();
    assert_eq!(tools, ["check_governance", "create_media_buy"]);
    // Nothing left to decide.
    let (s, b) = w.call(
        "POST",
        &format!("/api/v1/operations/{id}/decision"),
        Some(&key),
        Some(json!({"action": "approve"})),
    );
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::CONFLICT, Some("no_decision_pending"))
    );
}

#[test]
fn a_held_operation_can_be_rejected_and_is_never_sent() {
    let w = World::new();
    let key = w.tenant("acme");
    w.seller(&key, "s1");
    w.seller(&key, "gov");
    w.seller.answer(Ok(
        json!({"check_id": "c", "verdict": "conditions", "plan_id": "plan_q4",
        "explanation": "needs sign-off"}),
    ));
    let (_, held) = w.call(
        "POST",
        "/api/v1/operations",
        Some(&key),
        Some(governed_body("s1")),
    );
    let id = held["operation_id"].as_str().unwrap();
    let (s, b) = w.call(
        "POST",
        &format!("/api/v1/operations/{id}/decision"),
        Some(&key),
        Some(json!({"action": "reject", "reason": "not this quarter"})),
    );
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["operation"]["status"], "canceled_locally");
    assert_eq!(b["operation"]["cancel"]["reason"], "not this quarter");
    assert_eq!(
        w.seller.calls.borrow().len(),
        1,
        "only the governance check"
    );
    // Bad decisions answer 422 and change nothing.
    let (s, _) = w.call(
        "POST",
        &format!("/api/v1/operations/{id}/decision"),
        Some(&key),
        Some(json!({"action": "maybe"})),
    );
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
}

#[test]
fn canceling_a_completed_buy_cancels_it_at_the_seller_and_an_open_task_locally() {
    let w = World::new();
    let key = w.tenant("acme");
    w.seller(&key, "s1");
    w.seller.answer(Ok(
        json!({"media_buy_id": "mb_1", "status": "active", "packages": []}),
    ));
    let (_, op) = w.call(
        "POST",
        "/api/v1/operations",
        Some(&key),
        Some(create_body("s1")),
    );
    assert_eq!(op["status"], "completed");
    let id = op["operation_id"].as_str().unwrap();
    w.seller
        .answer(Ok(json!({"media_buy_id": "mb_1", "status": "completed"})));
    let (s, b) = w.call(
        "POST",
        &format!("/api/v1/operations/{id}/cancel"),
        Some(&key),
        Some(json!({"reason": "campaign pulled"})),
    );
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let child = &b["cancel_operation"];
    assert_eq!(child["task"], "update_media_buy");
    assert_eq!(child["linked_from"], json!(id));
    assert_eq!(child["status"], "completed");
    assert_eq!(b["operation"]["cancel"]["follow_up"], child["operation_id"]);
    {
        let calls = w.seller.calls.borrow();
        let (tool, args) = calls.last().unwrap();
        assert_eq!(tool, "update_media_buy");
        assert_eq!(args["media_buy_id"], "mb_1");
        assert_eq!(args["canceled"], true);
        assert_eq!(args["cancellation_reason"], "campaign pulled");
        assert_eq!(args["account"], json!({"account_id": "acc_1"}));
        assert_eq!(args["context"]["operation_id"], child["operation_id"]);
        assert!(args["idempotency_key"].as_str().unwrap().len() >= 16);
    }
    // Canceling again starts nothing new.
    let (s, b) = w.call(
        "POST",
        &format!("/api/v1/operations/{id}/cancel"),
        Some(&key),
        None,
    );
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b["cancel_operation"]["operation_id"], child["operation_id"]);
    assert_eq!(
        w.seller
            .calls
            .borrow()
            .iter()
            .filter(|c| c.0 == "update_media_buy")
            .count(),
        1
    );

    // An open task is canceled locally and stays reconcilable.
    w.seller
        .answer(Ok(json!({"status": "submitted", "task_id": "t2"})));
    let mut body = create_body("s1");
    body["arguments"]["po_number"] = json!("PO-2");
    let (_, open) = w.call("POST", "/api/v1/operations", Some(&key), Some(body));
    let id2 = open["operation_id"].as_str().unwrap();
    let (s, b) = w.call(
        "POST",
        &format!("/api/v1/operations/{id2}/cancel"),
        Some(&key),
        None,
    );
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["operation"]["status"], "canceled_locally");
    assert_eq!(b["operation"]["task_id"], "t2");
    // A failed operation cannot be canceled.
    w.seller.answer(Ok(
        json!({"status": "rejected", "errors": [{"code": "POLICY_VIOLATION", "message": "no"}]}),
    ));
    let mut body = create_body("s1");
    body["arguments"]["po_number"] = json!("PO-3");
    let (_, rejected) = w.call("POST", "/api/v1/operations", Some(&key), Some(body));
    let id3 = rejected["operation_id"].as_str().unwrap();
    let (s, b) = w.call(
        "POST",
        &format!("/api/v1/operations/{id3}/cancel"),
        Some(&key),
        None,
    );
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::CONFLICT, Some("not_cancellable"))
    );
}

#[test]
fn deadlines_come_from_the_sweep_config() {
    let mut w = World::new();
    w.sweep
        .deadlines
        .tasks
        .insert("create_media_buy".into(), 3_600_000);
    let key = w.tenant("acme");
    w.seller(&key, "s1");
    w.seller
        .answer(Ok(json!({"status": "submitted", "task_id": "t1"})));
    let (_, op) = w.call(
        "POST",
        "/api/v1/operations",
        Some(&key),
        Some(create_body("s1")),
    );
    let id = op["operation_id"].as_str().unwrap();
    let stored = block_on(crate::records::journal::load(&w.store, &w.clock, id))
        .unwrap()
        .unwrap()
        .operation;
    assert_eq!(stored.deadline_at_ms - stored.created_at_ms, 3_600_000);
}

#[test]
fn input_required_can_be_replanned_into_a_new_linked_operation() {
    let w = World::new();
    let key = w.tenant("acme");
    w.seller(&key, "s1");
    w.seller
        .answer(Ok(json!({"status": "input-required", "task_id": "t1",
        "message": "budget below the floor"})));
    let (_, op) = w.call(
        "POST",
        "/api/v1/operations",
        Some(&key),
        Some(create_body("s1")),
    );
    assert_eq!(op["status"], "input-required", "{op}");
    assert_eq!(op["message"], "budget below the floor");
    let id = op["operation_id"].as_str().unwrap();
    let first_key = w.seller.calls.borrow()[0].1["idempotency_key"].clone();
    w.seller
        .answer(Ok(json!({"status": "submitted", "task_id": "t2"})));
    let amended =
        json!({"packages": [{"product_id": "p1", "budget": 5000, "pricing_option_id": "cpm"}]});
    let (s, b) = w.call(
        "POST",
        &format!("/api/v1/operations/{id}/decision"),
        Some(&key),
        Some(json!({"action": "replan", "arguments": amended})),
    );
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let new = &b["operation"];
    assert_eq!(new["linked_from"], json!(id));
    assert_eq!(new["status"], "submitted");
    assert_eq!(b["replaces"]["status"], "canceled_locally");
    assert_eq!(
        b["replaces"]["cancel"]["superseded_by"],
        new["operation_id"]
    );
    let calls = w.seller.calls.borrow();
    let sent = &calls[1].1;
    assert_eq!(sent["packages"][0]["budget"], 5000);
    assert_eq!(sent["brand"], json!({"domain": "acme.com"}));
    assert_ne!(
        sent["idempotency_key"], first_key,
        "a re-plan is a new request"
    );
    assert_eq!(sent["context"]["operation_id"], new["operation_id"]);
    assert_eq!(sent["context"]["campaign"], "c-42");
    // Announced like the original, with its own registration.
    let (first, again) = (
        &calls[0].1["push_notification_config"],
        &sent["push_notification_config"],
    );
    assert_eq!(again["operation_id"], new["operation_id"]);
    assert!(
        again["url"].as_str().unwrap().ends_with(&format!(
            "/webhooks/adcp/{}",
            new["operation_id"].as_str().unwrap()
        )),
        "{again}"
    );
    assert_ne!(again["token"], first["token"], "a fresh token");
    assert_eq!(new["webhook_mode"], op["webhook_mode"]);
    // Invalid amendments are refused with the failing fields.
    drop(calls);
    let (s, _) = w.call(
        "POST",
        &format!(
            "/api/v1/operations/{}/decision",
            new["operation_id"].as_str().unwrap()
        ),
        Some(&key),
        Some(json!({"action": "replan", "arguments": {"packages": []}})),
    );
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "the new operation is not waiting for input"
    );
}

fn submitted(task_id: &str) -> Result<Value, crate::seller::port::CallFailure> {
    Ok(json!({"status": "submitted", "task_id": task_id}))
}

#[test]
fn sellers_and_summary_need_a_key_and_show_only_the_tenants_own() {
    let w = World::new();
    let (a, b) = (w.tenant("Acme"), w.tenant("Beta"));
    for path in ["/api/v1/sellers", "/api/v1/summary"] {
        for key in [None, Some("adcpo_wrong")] {
            let (s, body) = w.call("GET", path, key, None);
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
            assert_eq!(body["code"], "unauthorized", "{body}");
        }
    }
    w.seller(&a, "ssp");
    w.seller(&a, "gov");
    w.seller(&b, "other");
    // Deleted and registered again: listed once.
    w.call("DELETE", "/api/v1/sellers/gov", Some(&a), None);
    w.seller(&a, "gov");
    w.seller
        .answer(Err(crate::seller::port::CallFailure::Transport(
            crate::foundation::transport::TransportError::Connect("refused".into()),
        )));
    w.call(
        "POST",
        "/api/v1/operations",
        Some(&a),
        Some(create_body("ssp")),
    );

    let (s, list) = w.call("GET", "/api/v1/sellers", Some(&a), None);
    assert_eq!(s, StatusCode::OK, "{list}");
    let ids: Vec<&str> = list["sellers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["seller_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["gov", "ssp"], "newest first, once each, own only");
    let ssp = &list["sellers"][1];
    assert_eq!(ssp["breaker"]["state"], "closed");
    assert_eq!(ssp["breaker"]["consecutive_failures"], 1);
    assert!(ssp.get("credentials").is_none() && ssp["has_credentials"] == true);
    assert!(!list.to_string().contains("seller-token-123"), "{list}");
    assert_eq!(
        ssp["last_success_at_ms"],
        Value::Null,
        "its one call failed"
    );
    assert!(ssp["diagnostics"].is_array(), "{ssp}");
    // A call that succeeds is timestamped.
    w.seller.answer(submitted("t1"));
    w.call(
        "POST",
        "/api/v1/operations",
        Some(&a),
        Some(create_body("gov")),
    );
    let (_, list) = w.call("GET", "/api/v1/sellers", Some(&a), None);
    assert_eq!(list["sellers"][0]["last_success_at_ms"], json!(w.clock.0));
    let (_, list_b) = w.call("GET", "/api/v1/sellers", Some(&b), None);
    assert_eq!(list_b["sellers"].as_array().unwrap().len(), 1);
    assert_eq!(list_b["sellers"][0]["seller_id"], "other");

    // Paging is bounded and refuses what it does not understand.
    let (_, first) = w.call("GET", "/api/v1/sellers?limit=1", Some(&a), None);
    assert_eq!(first["sellers"][0]["seller_id"], "gov");
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = w.call(
        "GET",
        &format!("/api/v1/sellers?limit=1&cursor={cursor}"),
        Some(&a),
        None,
    );
    assert_eq!(second["sellers"][0]["seller_id"], "ssp");
    assert_eq!(second["next_cursor"], Value::Null);
    for bad in ["limit=0", "limit=101", "cursor=x", "sort=name"] {
        let (s, body) = w.call("GET", &format!("/api/v1/sellers?{bad}"), Some(&a), None);
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert_eq!(body["code"], "validation_failed", "{body}");
    }

    // The failed call is in the tenant's summary, not in the other's.
    let (s, sum) = w.call("GET", "/api/v1/summary", Some(&a), None);
    assert_eq!(s, StatusCode::OK, "{sum}");
    assert_eq!(
        sum["seller_errors"],
        json!([{"seller_id": "ssp", "count": 1}])
    );
    let (_, sum_b) = w.call("GET", "/api/v1/summary", Some(&b), None);
    assert_eq!(sum_b["seller_errors"], json!([]));
    assert_eq!(sum_b["operations_by_status"], json!([]));
}

#[test]
fn the_summary_counts_operations_by_status_as_they_change() {
    let w = World::new();
    let key = w.tenant("Acme");
    w.seller(&key, "s1");
    w.seller(&key, "gov");
    w.seller.answer(submitted("t1"));
    w.call(
        "POST",
        "/api/v1/operations",
        Some(&key),
        Some(create_body("s1")),
    );
    w.seller.answer(submitted("t2"));
    let (_, second) = w.call(
        "POST",
        "/api/v1/operations",
        Some(&key),
        Some(create_body("s1")),
    );
    w.seller
        .answer(Ok(json!({"check_id": "c", "verdict": "conditions",
        "plan_id": "plan_q4", "explanation": "needs sign-off"})));
    w.call(
        "POST",
        "/api/v1/operations",
        Some(&key),
        Some(governed_body("s1")),
    );
    let id = second["operation_id"].as_str().unwrap();
    w.call(
        "POST",
        &format!("/api/v1/operations/{id}/cancel"),
        Some(&key),
        None,
    );

    let (_, sum) = w.call("GET", "/api/v1/summary", Some(&key), None);
    assert_eq!(
        sum["operations_by_status"],
        json!([
            {"status": "awaiting_decision", "count": 1, "open": true},
            {"status": "submitted", "count": 1, "open": true},
            {"status": "canceled_locally", "count": 1, "open": false},
        ]),
        "{sum}"
    );
    assert_eq!(sum["open_operations"], 2);
}

#[test]
fn the_operations_listing_filters_pages_newest_first_and_refuses_bad_queries() {
    let w = World::new();
    let key = w.tenant("Acme");
    let other = w.tenant("Beta");
    w.seller(&key, "s1");
    w.seller(&key, "s2");
    let mut ids = Vec::new();
    for (seller, task) in [("s1", "t1"), ("s2", "t2"), ("s1", "t3")] {
        w.seller.answer(submitted(task));
        let (_, op) = w.call(
            "POST",
            "/api/v1/operations",
            Some(&key),
            Some(create_body(seller)),
        );
        ids.push(op["operation_id"].as_str().unwrap().to_string());
    }
    let listed = |q: &str, k: &str| -> (Vec<String>, Value) {
        let (s, b) = w.call("GET", &format!("/api/v1/operations?{q}"), Some(k), None);
        assert_eq!(s, StatusCode::OK, "{q}: {b}");
        let ids = b["operations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["operation_id"].as_str().unwrap().to_string())
            .collect();
        (ids, b["next_cursor"].clone())
    };
    assert_eq!(listed("", &key).0, [ids[2].as_str(), &ids[1], &ids[0]]);
    assert_eq!(listed("seller_id=s1", &key).0, [ids[2].as_str(), &ids[0]]);
    assert_eq!(
        listed("status=submitted&task=create_media_buy", &key)
            .0
            .len(),
        3
    );
    assert!(listed("status=completed", &key).0.is_empty());
    assert!(listed("", &other).0.is_empty(), "another tenant sees none");
    let (page, cursor) = listed("limit=2", &key);
    assert_eq!(page, [ids[2].as_str(), &ids[1]]);
    let (rest, end) = listed(
        &format!("limit=2&cursor={}", cursor.as_str().unwrap()),
        &key,
    );
    assert_eq!((rest, end), (vec![ids[0].clone()], Value::Null));
    for bad in [
        "limit=0",
        "limit=201",
        "status=stuck",
        "cursor=-1",
        "order=asc",
    ] {
        let (s, b) = w.call(
            "GET",
            &format!("/api/v1/operations?{bad}"),
            Some(&key),
            None,
        );
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {b}");
    }
}

#[test]
fn a_decision_records_which_key_made_it_and_never_the_key() {
    let w = World::new();
    let key = w.tenant("acme");
    w.seller(&key, "s1");
    w.seller(&key, "gov");
    w.seller
        .answer(Ok(json!({"check_id": "c", "verdict": "conditions",
        "plan_id": "plan_q4", "explanation": "needs sign-off"})));
    let (_, held) = w.call(
        "POST",
        "/api/v1/operations",
        Some(&key),
        Some(governed_body("s1")),
    );
    let id = held["operation_id"].as_str().unwrap();
    w.seller.answer(submitted("t1"));
    let (s, b) = w.call(
        "POST",
        &format!("/api/v1/operations/{id}/decision"),
        Some(&key),
        Some(json!({"action": "approve"})),
    );
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, events) = w.call(
        "GET",
        &format!("/api/v1/operations/{id}/events"),
        Some(&key),
        None,
    );
    let approved: Vec<&Value> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["change"]["change"] == "approved")
        .collect();
    assert_eq!(approved.len(), 1, "{events}");
    assert_eq!(approved[0]["by"], json!(key[..14].to_string()));
    // The governance hold was the orchestrator's own: nobody is named.
    let hold = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["change"]["change"] == "governance_hold")
        .unwrap();
    assert_eq!(hold["by"], Value::Null);
    assert!(!events.to_string().contains(&key[14..]), "{events}");
}

#[test]
fn local_entries_written_before_deciders_were_recorded_still_load() {
    let old = json!({"seq": 3, "recorded_at_ms": 5, "kind": "local",
        "change": {"change": "approved"}});
    let entry: crate::records::journal::Entry = serde_json::from_value(old).unwrap();
    assert!(matches!(
        entry.kind,
        crate::records::journal::EntryKind::Local { by: None, .. }
    ));
}

#[test]
fn the_console_is_served_with_strict_headers_and_no_inline_script() {
    let w = World::new();
    for (path, kind) in [
        ("/console/", "text/html"),
        ("/console", "text/html"),
        ("/console/console.js", "text/javascript"),
        ("/console/console.css", "text/css"),
    ] {
        let resp = w.response(http::Request::get(path).body(Vec::new()).unwrap());
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let h = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        assert!(h("content-type").starts_with(kind), "{path}");
        let csp = h("content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
        assert_eq!(h("x-content-type-options"), "nosniff");
        assert_eq!(h("cache-control"), "no-store");
    }
    let page = w.response(http::Request::get("/console/").body(Vec::new()).unwrap());
    let html = String::from_utf8(page.into_body()).unwrap();
    assert!(html.contains(r#"<script src="/console/console.js" defer></script>"#));
    assert_eq!(html.matches("<script").count(), 1, "no inline script");
    assert!(!html.contains(" onclick=") && !html.contains(" style="));
    let js = include_str!("console/console.js");
    assert!(!js.contains("innerHTML") && !js.contains("outerHTML") && !js.contains("eval("));
    assert!(!js.contains("localStorage") && !js.contains("document.cookie"));
    let (s, b) = w.call("GET", "/console/secrets.txt", None, None);
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (s, _) = w.call("POST", "/console/", None, None);
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
}

#[test]
fn a_seller_with_operations_that_may_have_live_buys_cannot_be_removed() {
    let w = World::new();
    let key = w.tenant("Acme");
    w.seller(&key, "s1");
    w.seller(&key, "s2");
    w.seller
        .answer(Ok(json!({"status": "submitted", "task_id": "task_1"})));
    let (s, op) = w.call(
        "POST",
        "/api/v1/operations",
        Some(&key),
        Some(create_body("s1")),
    );
    assert_eq!(s, StatusCode::CREATED, "{op}");
    let (s, b) = w.call("DELETE", "/api/v1/sellers/s1", Some(&key), None);
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::CONFLICT, Some("seller_has_open_operations"))
    );
    assert_eq!(b["details"]["open_operations"], 1, "{b}");
    // Still there, untouched; another seller of the tenant is removed as before.
    assert_eq!(
        w.call("GET", "/api/v1/sellers/s1", Some(&key), None).0,
        StatusCode::OK
    );
    let (s, _) = w.call("DELETE", "/api/v1/sellers/s2", Some(&key), None);
    assert_eq!(s, StatusCode::NO_CONTENT);
    // Once the seller settled it, the seller can go.
    let id = op["operation_id"].as_str().unwrap();
    let done = crate::records::journal::EntryKind::Observed {
        observation: Box::new(crate::testing::obs(
            crate::model::status::TaskStatus::Completed,
            Some("task_1"),
        )),
    };
    block_on(crate::testing::record(&w.store, &w.clock, id, done)).unwrap();
    let (s, b) = w.call("DELETE", "/api/v1/sellers/s1", Some(&key), None);
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
}

/// `POST /api/v1/operations` to seller `s1` under `Idempotency-Key: buyer-req-1`.
fn post_buyer_req_1(w: &World, key: &str) -> (StatusCode, Value) {
    w.raw(
        http::Request::post("/api/v1/operations")
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .header("idempotency-key", "buyer-req-1")
            .body(create_body("s1").to_string().into_bytes())
            .unwrap(),
    )
}

/// A buyer's retry with the same `Idempotency-Key` after a store failure anywhere in the
/// first request finds the operation listed and filed, so the sweep dispatches it.
#[test]
fn a_retried_create_finishes_what_a_store_failure_left_of_the_first() {
    let setup = || {
        let w = World::new();
        let key = w.tenant("Acme");
        w.seller(&key, "s1");
        w.store.reset_counts();
        (w, key)
    };
    let post = post_buyer_req_1;
    let calls = {
        let (w, key) = setup();
        w.seller
            .answer(Err(crate::seller::port::CallFailure::Transport(
                crate::foundation::transport::TransportError::Connect("refused".into()),
            )));
        post(&w, &key);
        w.store.total_ops()
    };
    for n in 1..=calls {
        let (w, key) = setup();
        // The seller is unreachable: the operation is left for the sweep either way.
        for _ in 0..2 {
            w.seller
                .answer(Err(crate::seller::port::CallFailure::Transport(
                    crate::foundation::transport::TransportError::Connect("refused".into()),
                )));
        }
        w.store.fail_nth_call(n);
        let (first, _) = post(&w, &key);
        let (s, op) = post(&w, &key);
        assert!(
            s.is_success(),
            "fault at call {n} (first answered {first}): {s} {op}"
        );
        let id = op["operation_id"].as_str().unwrap();
        let (_, list) = w.call("GET", "/api/v1/operations", Some(&key), None);
        assert_eq!(
            list["operations"].as_array().unwrap().len(),
            1,
            "fault at call {n}"
        );
        let filed = block_on(w.store.get(&keys::poll_state(id))).unwrap();
        assert!(
            filed.is_some(),
            "fault at call {n}: never filed for the sweep"
        );
    }
}

/// A first request whose creation seq was allocated and never written (its `increment`'s
/// answer lost, so it could not even seal it): the first retry writes its own creation entry,
/// later ones wait for it to prove the hole permanent without appending more, then get it.
#[test]
fn retries_wait_for_an_unproven_creation_without_appending_to_it() {
    let mut w = World::new();
    let (s, t) = w.call(
        "POST",
        "/api/v1/tenants",
        Some(ADMIN),
        Some(json!({"name": "Acme"})),
    );
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let key = t["api_key"].as_str().unwrap().to_string();
    let tid = t["tenant_id"].as_str().unwrap();
    w.seller(&key, "s1");
    let id = format!(
        "op_{}",
        &crate::foundation::seal::digest_hex(format!("{tid}\nbuyer-req-1").as_bytes())[..32]
    );
    block_on(w.store.increment(&keys::operation_seq(&id), 1)).unwrap();
    let post = |w: &World| post_buyer_req_1(w, &key);
    let head = |w: &World| {
        crate::foundation::store::decode_counter(
            "seq",
            &block_on(w.store.get(&keys::operation_seq(&id)))
                .unwrap()
                .unwrap(),
        )
        .unwrap()
    };
    let (s, b) = post(&w);
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("in_progress"))
    );
    assert_eq!(head(&w), 2, "the first retry appends its creation entry");
    for _ in 0..5 {
        let (s, b) = post(&w);
        assert_eq!(b["code"].as_str(), Some("in_progress"), "{s} {b}");
    }
    assert_eq!(head(&w), 2, "later retries append nothing");
    w.clock = FixedClock(w.clock.0 + crate::records::journal::HOLE_AGE_MS);
    w.seller
        .answer(Err(crate::seller::port::CallFailure::Transport(
            crate::foundation::transport::TransportError::Connect("refused".into()),
        )));
    let (s, op) = post(&w);
    assert_eq!(s, StatusCode::OK, "{op}");
    assert_eq!(op["operation_id"].as_str(), Some(id.as_str()));
    assert!(
        block_on(w.store.get(&keys::poll_state(&id)))
            .unwrap()
            .is_some(),
        "filed for the sweep"
    );
}

mod capability_subscription;
mod peers;
