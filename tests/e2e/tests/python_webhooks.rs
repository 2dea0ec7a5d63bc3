//! Webhooks produced by the official Python SDK (`adcp.webhooks.WebhookSender`), in RFC 9421
//! mode with keys discovered from the seller's brand.json and JWKS (nothing injected) and in
//! legacy HMAC mode, delivered through a proxy whose address is the public base URL.

use e2e::fake_seller::{Answer, FakeSeller};
use e2e::proxy::Proxy;
use e2e::{Api, python, variables};
use serde_json::{Value, json};
use spin_test_host::{HostOptions, TestHost};

struct World {
    _host: TestHost,
    proxy: Proxy,
    api: Api,
    seller: FakeSeller,
    key: String,
}

async fn world(mode: &str, dir: &std::path::Path) -> World {
    let proxy = Proxy::start().await;
    let host = TestHost::start(HostOptions {
        manifest: e2e::repo_root().join("spin.toml"),
        state_file: dir.join("kv.db"),
        variables: variables(&proxy.url()),
        ..HostOptions::default()
    })
    .await
    .unwrap();
    proxy.forward_to(host.addr());
    let api = Api::new(host.base_url());
    let seller = FakeSeller::start().await;
    let key = api.tenant("Acme").await;
    let (s, b) = api
        .call(
            "PUT",
            "/api/v1/sellers/ssp",
            Some(&key),
            Some(json!({"mcp_url": seller.url, "webhook_mode": mode})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    World {
        _host: host,
        proxy,
        api,
        seller,
        key,
    }
}

async fn create(w: &World) -> (String, Value) {
    w.seller.answer(Answer::Payload(
        json!({"status": "submitted", "task_id": "task_py"}),
    ));
    let (s, op) = w
        .api
        .call(
            "POST",
            "/api/v1/operations",
            Some(&w.key),
            Some(json!({"seller_id": "ssp", "task": "create_media_buy", "arguments": {
                "account": {"account_id": "a"}, "brand": {"domain": "acme.example"}, "start_time": "asap",
                "end_time": "2027-01-31T23:59:59Z", "packages": [{"product_id": "p", "budget": 1, "pricing_option_id": "x"}]}})),
        )
        .await;
    assert_eq!(s, 201, "{op}");
    let pnc = w.seller.calls().last().unwrap().1["push_notification_config"].clone();
    (op["operation_id"].as_str().unwrap().to_string(), pnc)
}

fn run(scenario: Value) -> Vec<(String, u16, Value)> {
    let out = python(&["webhook_sender.py", "send"], &scenario.to_string());
    let results: Vec<Value> =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    results
        .into_iter()
        .map(|r| {
            let body =
                serde_json::from_str(r["body"].as_str().unwrap_or("")).unwrap_or(Value::Null);
            (
                r["op"].as_str().unwrap().to_string(),
                r["status_code"].as_u64().unwrap() as u16,
                body,
            )
        })
        .collect()
}

async fn status(w: &World, id: &str) -> Value {
    w.api
        .call(
            "GET",
            &format!("/api/v1/operations/{id}"),
            Some(&w.key),
            None,
        )
        .await
        .1
}

#[tokio::test(flavor = "multi_thread")]
async fn rfc9421_webhooks_from_the_python_sdk() {
    let dir = tempfile::tempdir().unwrap();
    let w = world("rfc9421", dir.path()).await;
    let pem = dir.path().join("seller.pem");
    let jwk: Value = serde_json::from_str(
        python(
            &[
                "webhook_sender.py",
                "keygen",
                "seller-py-1",
                pem.to_str().unwrap(),
            ],
            "",
        )
        .trim(),
    )
    .unwrap();
    w.seller.publish_key(jwk);
    let (id, pnc) = create(&w).await;
    assert!(
        pnc.get("authentication").is_none(),
        "RFC 9421 registrations carry no credentials: {pnc}"
    );
    let steps = run(json!({
        "mode": "rfc9421", "pem": pem, "kid": "seller-py-1", "url": format!("{}/webhooks/adcp/{id}", w.proxy.url()),
        "token": pnc["token"], "operation_id": id, "task_id": "task_py",
        "steps": [
            {"op": "send", "status": "working"},
            {"op": "tamper"},
            {"op": "stale"},
            {"op": "replay"},
            {"op": "resend"},
            {"op": "send", "status": "completed", "result": {"media_buy_id": "mb_py", "packages": []}},
        ]
    }));
    let codes: Vec<(&str, u16, &str)> = steps
        .iter()
        .map(|(op, s, b)| {
            (
                op.as_str(),
                *s,
                b["outcome"].as_str().or(b["code"].as_str()).unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        codes,
        [
            ("send", 200, "applied"),
            ("tamper", 401, "webhook_signature_digest_mismatch"),
            ("stale", 401, "webhook_signature_window_invalid"),
            ("replay", 401, "webhook_signature_replayed"),
            ("resend", 200, "duplicate"),
            ("send", 200, "applied"),
        ]
    );
    let got = status(&w, &id).await;
    assert_eq!(
        (
            got["status"].as_str(),
            got["result"]["media_buy_id"].as_str()
        ),
        (Some("completed"), Some("mb_py"))
    );
    // A legacy-HMAC delivery to an RFC 9421 registration is refused: the mode is a switch.
    let wrong = run(json!({
        "mode": "hmac", "secret": "0123456789abcdef0123456789abcdef", "url": format!("{}/webhooks/adcp/{id}", w.proxy.url()),
        "token": pnc["token"], "operation_id": id, "task_id": "task_py",
        "steps": [{"op": "send", "status": "failed"}]
    }));
    assert_eq!(
        (wrong[0].1, wrong[0].2["code"].as_str()),
        (401, Some("webhook_mode_mismatch"))
    );
    assert_eq!(status(&w, &id).await["status"], "completed");
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_hmac_webhooks_from_the_python_sdk() {
    let dir = tempfile::tempdir().unwrap();
    let w = world("hmac", dir.path()).await;
    let (id, pnc) = create(&w).await;
    assert_eq!(pnc["authentication"]["schemes"], json!(["HMAC-SHA256"]));
    let secret = pnc["authentication"]["credentials"].as_str().unwrap();
    let steps = run(json!({
        "mode": "hmac", "secret": secret, "url": format!("{}/webhooks/adcp/{id}", w.proxy.url()),
        "token": pnc["token"], "operation_id": id, "task_id": "task_py",
        "steps": [
            {"op": "send", "status": "completed", "result": {"media_buy_id": "mb_h", "packages": []}},
            {"op": "tamper"},
            {"op": "stale"},
            {"op": "resend"},
        ]
    }));
    let codes: Vec<(&str, u16, &str)> = steps
        .iter()
        .map(|(op, s, b)| {
            (
                op.as_str(),
                *s,
                b["outcome"].as_str().or(b["code"].as_str()).unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        codes,
        [
            ("send", 200, "applied"),
            ("tamper", 401, "webhook_signature_invalid"),
            ("stale", 401, "webhook_timestamp_out_of_window"),
            ("resend", 200, "duplicate"),
        ]
    );
    assert_eq!(status(&w, &id).await["status"], "completed");
}
