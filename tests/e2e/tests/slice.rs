//! The first end-to-end slice through the real `.wasm` files: an operation is created
//! through the API, stored before the seller is called, dispatched to a seller on loopback,
//! completed by a seller webhook through the intake component, and seen by a cron sweep.

use e2e::fake_seller::{Answer, FakeSeller};
use e2e::{Api, METRICS_TOKEN, start};
use serde_json::{Value, json};

fn create_body(seller: &str) -> Value {
    json!({
        "seller_id": seller,
        "task": "create_media_buy",
        "arguments": {
            "account": {"account_id": "acc_1"},
            "brand": {"domain": "acme.example"},
            "start_time": "asap",
            "end_time": "2027-01-31T23:59:59Z",
            "packages": [{"product_id": "p1", "budget": 5000, "pricing_option_id": "cpm"}]
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn create_dispatch_webhook_and_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(
        &dir.path().join("kv.db"),
        Some("https://orchestrator.example"),
    )
    .await;
    let api = Api::new(host.base_url());
    let seller = FakeSeller::start().await;
    let key = api.tenant("Acme").await;

    let (s, b) = api
        .call("PUT", "/api/v1/sellers/ssp", Some(&key), Some(json!({"mcp_url": seller.url, "credentials": "seller-token-1", "webhook_mode": "bearer"})))
        .await;
    assert_eq!(s, 201, "{b}");

    seller.answer(Answer::Payload(
        json!({"status": "submitted", "task_id": "task_77", "message": "awaiting IO"}),
    ));
    let (s, op) = api
        .call(
            "POST",
            "/api/v1/operations",
            Some(&key),
            Some(create_body("ssp")),
        )
        .await;
    assert_eq!(s, 201, "{op}\n{}", host.output());
    assert_eq!(op["status"], "submitted", "{op}");
    assert_eq!(op["task_id"], "task_77");
    let id = op["operation_id"].as_str().unwrap().to_string();

    // Stored: readable, with its history.
    let (s, got) = api
        .call("GET", &format!("/api/v1/operations/{id}"), Some(&key), None)
        .await;
    assert_eq!((s, &got["status"]), (200, &json!("submitted")));
    let (_, events) = api
        .call(
            "GET",
            &format!("/api/v1/operations/{id}/events"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(events["events"].as_array().unwrap().len(), 2, "{events}");

    // What the seller received: our key, our context, the webhook registration.
    let calls = seller.calls();
    let (tool, args) = calls.iter().find(|(t, _)| t == "create_media_buy").unwrap();
    assert_eq!(tool, "create_media_buy");
    assert_eq!(args["context"]["operation_id"], json!(id));
    let pnc = &args["push_notification_config"];
    assert_eq!(
        pnc["url"],
        json!(format!("https://orchestrator.example/webhooks/adcp/{id}"))
    );
    let token = pnc["token"].as_str().unwrap().to_string();
    let credentials = pnc["authentication"]["credentials"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(pnc["authentication"]["schemes"], json!(["Bearer"]));

    // The seller completes the task by webhook, sent to where this host really listens.
    let http = reqwest::Client::new();
    let payload = json!({
        "idempotency_key": "whk_0123456789abcdef0123", "operation_id": id, "task_id": "task_77",
        "task_type": "create_media_buy", "status": "completed", "timestamp": "2026-11-22T10:00:00Z",
        "token": token, "result": {"media_buy_id": "mb_1", "packages": []}
    });
    let post = || {
        http.post(format!("{}/webhooks/adcp/{id}", host.base_url()))
            .bearer_auth(&credentials)
            .header("content-type", "application/json")
            .body(payload.to_string())
            .send()
    };
    let r = post().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let (_, got) = api
        .call("GET", &format!("/api/v1/operations/{id}"), Some(&key), None)
        .await;
    assert_eq!(got["status"], "completed", "{got}");
    assert_eq!(got["result"]["media_buy_id"], "mb_1");
    // A re-delivery changes nothing.
    let r = post().await.unwrap();
    assert_eq!(r.status(), 200);
    let (_, events) = api
        .call(
            "GET",
            &format!("/api/v1/operations/{id}/events"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(events["events"].as_array().unwrap().len(), 3, "{events}");

    // A cron tick runs the sweep component against the same store.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    host.cron_tick(now + 30).await.unwrap();
    let metrics = http
        .get(format!("{}/metrics", host.base_url()))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let finished: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("adcp_sweep_last_finished_seconds "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(finished >= now, "{metrics}");
    assert!(
        metrics.contains(
            "adcp_operation_transitions_total{task=\"create_media_buy\",status=\"completed\"} 1"
        ),
        "{metrics}"
    );
}
