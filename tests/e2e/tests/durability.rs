//! Durable, idempotent operations through the real components: one operation per
//! Idempotency-Key, redispatch after a failed call with the same AdCP key, polling alone
//! completing an operation, and tenant isolation.

use e2e::fake_seller::{Answer, FakeSeller};
use e2e::{Api, start};
use serde_json::{Value, json};

fn create_body(seller: &str, webhook: bool) -> Value {
    json!({
        "seller_id": seller,
        "task": "create_media_buy",
        "webhook": webhook,
        "arguments": {
            "account": {"account_id": "acc_1"},
            "brand": {"domain": "acme.example"},
            "start_time": "asap",
            "end_time": "2027-01-31T23:59:59Z",
            "packages": [{"product_id": "p1", "budget": 5000, "pricing_option_id": "cpm"}]
        }
    })
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn setup(api: &Api, seller: &FakeSeller) -> String {
    let key = api.tenant("Acme").await;
    let (s, b) = api
        .call("PUT", "/api/v1/sellers/ssp", Some(&key), Some(json!({"mcp_url": seller.url, "credentials": "seller-token-1", "webhook_mode": "hmac"})))
        .await;
    assert_eq!(s, 201, "{b}");
    key
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_api_call_twice_gives_one_operation_and_one_seller_call() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(&dir.path().join("kv.db"), None).await;
    let api = Api::new(host.base_url());
    let seller = FakeSeller::start().await;
    let key = setup(&api, &seller).await;
    seller.answer(Answer::Payload(
        json!({"status": "completed", "media_buy_id": "mb_1", "packages": []}),
    ));
    let post = || {
        api.http
            .post(format!("{}/api/v1/operations", host.base_url()))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .header("idempotency-key", "campaign-42-buy")
            .body(create_body("ssp", true).to_string())
            .send()
    };
    let a: Value = post().await.unwrap().json().await.unwrap();
    let b: Value = post().await.unwrap().json().await.unwrap();
    assert_eq!(a["operation_id"], b["operation_id"]);
    assert_eq!(b["status"], "completed", "{b}");
    let creates = seller
        .calls()
        .iter()
        .filter(|(t, _)| t == "create_media_buy")
        .count();
    assert_eq!(creates, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_dispatch_is_redispatched_by_the_sweep_with_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(&dir.path().join("kv.db"), None).await;
    let api = Api::new(host.base_url());
    let seller = FakeSeller::start().await;
    let key = setup(&api, &seller).await;
    // The seller is unreachable for the first call: the operation stays stored and waiting.
    host.fail_outbound_nth(3); // initialize, notifications/initialized, then tools/call
    seller.answer(Answer::Payload(
        json!({"status": "completed", "media_buy_id": "mb_9", "packages": []}),
    ));
    let (s, op) = api
        .call(
            "POST",
            "/api/v1/operations",
            Some(&key),
            Some(create_body("ssp", true)),
        )
        .await;
    assert_eq!(s, 201, "{op}");
    assert_eq!(op["status"], "pending_dispatch", "{op}");
    let id = op["operation_id"].as_str().unwrap().to_string();
    // Cron ticks later on: the sweep redispatches the same bytes.
    for i in 1..=6 {
        host.cron_tick(now_s() + 60 * i).await.unwrap();
    }
    let (_, got) = api
        .call("GET", &format!("/api/v1/operations/{id}"), Some(&key), None)
        .await;
    assert_eq!(got["status"], "completed", "{got}\n{}", host.output());
    let calls: Vec<Value> = seller
        .calls()
        .into_iter()
        .filter(|(t, _)| t == "create_media_buy")
        .map(|(_, a)| a)
        .collect();
    assert_eq!(
        calls.len(),
        1,
        "the failed attempt never reached the seller; the redispatch did once"
    );
    assert_eq!(
        calls[0]["idempotency_key"].as_str().unwrap()[..8],
        *got["idempotency_key_prefix"].as_str().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_submitted_operation_without_webhook_completes_by_polling() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(&dir.path().join("kv.db"), None).await;
    let api = Api::new(host.base_url());
    let seller = FakeSeller::start().await;
    let key = setup(&api, &seller).await;
    seller.answer(Answer::Payload(
        json!({"status": "submitted", "task_id": "task_5"}),
    ));
    let (_, op) = api
        .call(
            "POST",
            "/api/v1/operations",
            Some(&key),
            Some(create_body("ssp", false)),
        )
        .await;
    assert_eq!(op["status"], "submitted", "{op}");
    assert!(op.get("webhook_mode").is_none_or(Value::is_null));
    let id = op["operation_id"].as_str().unwrap().to_string();
    seller.answer(Answer::Payload(
        json!({"task_id": "task_5", "task_type": "create_media_buy", "status": "working",
        "created_at": "2026-11-22T10:00:00Z", "updated_at": "2026-11-22T10:00:05Z"}),
    ));
    seller.answer(Answer::Payload(json!({"task_id": "task_5", "task_type": "create_media_buy", "status": "completed",
        "created_at": "2026-11-22T10:00:00Z", "updated_at": "2026-11-22T10:05:00Z", "result": {"media_buy_id": "mb_5"}})));
    for i in 1..=40 {
        host.cron_tick(now_s() + 30 * i).await.unwrap();
        let (_, got) = api
            .call("GET", &format!("/api/v1/operations/{id}"), Some(&key), None)
            .await;
        if got["status"] == "completed" {
            assert_eq!(got["result"]["media_buy_id"], "mb_5");
            let polls: Vec<Value> = seller
                .calls()
                .into_iter()
                .filter(|(t, _)| t == "get_task_status")
                .map(|(_, a)| a)
                .collect();
            assert_eq!(polls.len(), 2);
            assert_eq!(polls[0]["task_id"], "task_5");
            assert_eq!(polls[0]["include_result"], true);
            return;
        }
    }
    panic!("never completed\n{}", host.output());
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_are_isolated_and_secrets_are_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(&dir.path().join("kv.db"), None).await;
    let api = Api::new(host.base_url());
    let seller = FakeSeller::start().await;
    let a = setup(&api, &seller).await;
    let b = api.tenant("Other").await;
    seller.answer(Answer::Payload(
        json!({"status": "submitted", "task_id": "t"}),
    ));
    let (_, op) = api
        .call(
            "POST",
            "/api/v1/operations",
            Some(&a),
            Some(create_body("ssp", true)),
        )
        .await;
    let id = op["operation_id"].as_str().unwrap();
    let theirs = api
        .call("GET", &format!("/api/v1/operations/{id}"), Some(&b), None)
        .await;
    let missing = api
        .call("GET", "/api/v1/operations/op_missing", Some(&b), None)
        .await;
    assert_eq!(theirs, missing);
    assert_eq!(theirs.0, 404);
    let (_, seller_view) = api.call("GET", "/api/v1/sellers/ssp", Some(&a), None).await;
    let token = seller
        .calls()
        .into_iter()
        .find(|(t, _)| t == "create_media_buy")
        .expect("a create")
        .1["push_notification_config"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    for text in [op.to_string(), seller_view.to_string()] {
        assert!(!text.contains("seller-token-1"), "{text}");
        assert!(!text.contains(&token), "{text}");
    }
    assert!(!host.output().contains("seller-token-1"));
}
