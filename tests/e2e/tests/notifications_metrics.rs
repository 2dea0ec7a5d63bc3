//! Buyer notifications end to end (Standard Webhooks signatures, retried by the sweep while
//! the buyer's receiver is down, once per change) and `/metrics` read with the reference
//! Prometheus parser, with exact values for a scripted lifecycle including duplicate and
//! concurrent deliveries.

use bytes::Bytes;
use e2e::fake_seller::{Answer, FakeSeller};
use e2e::{Api, METRICS_TOKEN, python, start};
use http_body_util::{BodyExt, Full};
use orchestrator_core::{auth::hmac_signature, records::notify};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

type Received = Arc<Mutex<Vec<(http::HeaderMap, Bytes)>>>;

/// The buyer's callback receiver: records what it accepts; answers 503 while `down`.
async fn receiver(down: Arc<AtomicBool>) -> (String, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let got: Received = Arc::default();
    let g = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (g, down) = (g.clone(), down.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (g, down) = (g.clone(), down.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let status = if down.load(Ordering::SeqCst) {
                                503
                            } else {
                                g.lock().unwrap().push((parts.headers, body));
                                204
                            };
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::new()))
                                    .unwrap(),
                            )
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (url, got)
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_change_reaches_the_buyer_once_signed_and_metrics_match_the_ground_truth() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(&dir.path().join("kv.db"), None).await;
    let api = Api::new(host.base_url());
    let seller = FakeSeller::start().await;
    let down = Arc::new(AtomicBool::new(true));
    let (callback, received) = receiver(down.clone()).await;
    let key = api.tenant("Acme").await;
    let (s, cb) = api
        .call(
            "PUT",
            "/api/v1/callback",
            Some(&key),
            Some(json!({"url": callback})),
        )
        .await;
    assert_eq!(s, 200, "{cb}");
    let secret = cb["secret"].as_str().unwrap().to_string();
    api.call(
        "PUT",
        "/api/v1/sellers/ssp",
        Some(&key),
        Some(json!({"mcp_url": seller.url, "webhook_mode": "hmac"})),
    )
    .await;

    // Change 1: pending_dispatch -> submitted (by the API's dispatch).
    seller.answer(Answer::Payload(
        json!({"status": "submitted", "task_id": "task_n"}),
    ));
    let (_, op) = api
        .call("POST", "/api/v1/operations", Some(&key), Some(json!({"seller_id": "ssp", "task": "create_media_buy", "arguments": {
            "account": {"account_id": "a"}, "brand": {"domain": "acme.example"}, "start_time": "asap",
            "end_time": "2027-01-31T23:59:59Z", "packages": [{"product_id": "p", "budget": 1, "pricing_option_id": "x"}]}})))
        .await;
    let id = op["operation_id"].as_str().unwrap().to_string();
    let pnc = seller
        .calls()
        .into_iter()
        .find(|(t, _)| t == "create_media_buy")
        .expect("a create")
        .1["push_notification_config"]
        .clone();
    let hmac_secret = pnc["authentication"]["credentials"]
        .as_str()
        .unwrap()
        .to_string();

    // Change 2: submitted -> completed, by a webhook delivered three times, two of them at once.
    let body =
        json!({"idempotency_key": "whk_notify_0123456789", "operation_id": id, "task_id": "task_n",
        "task_type": "create_media_buy", "status": "completed", "timestamp": "2026-11-22T10:00:00Z",
        "token": pnc["token"], "result": {"media_buy_id": "mb_n"}})
        .to_string();
    let deliver = || {
        let ts = now_s().to_string();
        let sig = hmac_signature::sign(hmac_secret.as_bytes(), &ts, body.as_bytes());
        api.http
            .post(format!("{}/webhooks/adcp/{id}", host.base_url()))
            .header("content-type", "application/json")
            .header("x-adcp-timestamp", ts)
            .header("x-adcp-signature", sig)
            .body(body.clone())
            .send()
    };
    assert_eq!(deliver().await.unwrap().status(), 200);
    let (a, b) = tokio::join!(deliver(), deliver());
    assert_eq!(
        (a.unwrap().status(), b.unwrap().status()),
        (reqwest::StatusCode::OK, reqwest::StatusCode::OK)
    );
    // A forged delivery, refused; not counted (a refusal before the sender is authenticated
    // writes nothing: forged traffic cannot load the store; it is in the log).
    let forged = api
        .http
        .post(format!("{}/webhooks/adcp/{id}", host.base_url()))
        .header("content-type", "application/json")
        .header("x-adcp-timestamp", now_s().to_string())
        .header("x-adcp-signature", format!("sha256={}", "0".repeat(64)))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);

    // The receiver is down: the sweep keeps trying on its schedule, nothing is delivered yet.
    let t0 = now_s();
    host.cron_tick(t0 + 60).await.unwrap();
    assert!(received.lock().unwrap().is_empty());
    // It comes back: the next due retries deliver every change.
    down.store(false, Ordering::SeqCst);
    for minutes in [3, 10, 40] {
        host.cron_tick(t0 + minutes * 60).await.unwrap();
    }
    let got = received.lock().unwrap().clone();
    let mut ids: Vec<String> = got
        .iter()
        .map(|(h, _)| h["webhook-id"].to_str().unwrap().to_string())
        .collect();
    ids.sort();
    let mut distinct = ids.clone();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        2,
        "one notification per change: {ids:?}\n{}",
        host.output()
    );
    assert_eq!(ids.len(), 2, "each delivered once: {ids:?}");
    let key = notify::secret_key(&secret).unwrap();
    let mut statuses = Vec::new();
    for (h, b) in &got {
        let (mid, ts) = (
            h["webhook-id"].to_str().unwrap(),
            h["webhook-timestamp"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap(),
        );
        assert_eq!(
            h["webhook-signature"].to_str().unwrap(),
            notify::sign(&key, mid, ts, b),
            "signature verifies"
        );
        let v: Value = serde_json::from_slice(b).unwrap();
        assert_eq!(v["operation_id"], json!(id));
        statuses.push(v["status"].as_str().unwrap().to_string());
    }
    statuses.sort();
    assert_eq!(statuses, ["completed", "submitted"]);

    // Metrics, read with prometheus_client's parser.
    let text = api
        .http
        .get(format!("{}/metrics", host.base_url()))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let m: Value = serde_json::from_str(python(&["parse_metrics.py"], &text).trim()).unwrap();
    let get = |k: &str| {
        m.get(k)
            .and_then(Value::as_f64)
            .unwrap_or_else(|| panic!("no {k} in {m}"))
    };
    assert_eq!(
        get("adcp_operations_created_total{task=create_media_buy}"),
        1.0
    );
    assert_eq!(
        get("adcp_operation_transitions_total{status=submitted,task=create_media_buy}"),
        1.0
    );
    assert_eq!(
        get("adcp_operation_transitions_total{status=completed,task=create_media_buy}"),
        1.0
    );
    assert_eq!(get("adcp_operations_open{task=create_media_buy}"), 0.0);
    assert_eq!(
        get("adcp_operations{status=completed,task=create_media_buy}"),
        1.0
    );
    assert_eq!(
        get("adcp_operations{status=submitted,task=create_media_buy}"),
        0.0
    );
    assert_eq!(
        get("adcp_operations{status=pending_dispatch,task=create_media_buy}"),
        0.0
    );
    assert_eq!(
        get("adcp_operation_outcome_seconds_count{task=create_media_buy}"),
        1.0
    );
    // Repeats cost no write, so they are counted from the log, not /metrics.
    assert_eq!(e2e::duplicates_logged(&host.output()), 2);
    assert!(!text.contains("adcp_webhook_duplicates_total"));
    assert_eq!(
        get("adcp_webhook_rejections_total{reason=unauthenticated}"),
        0.0
    );
    let breaker = m
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.starts_with("adcp_seller_breaker_state{seller=ssp,"));
    assert_eq!(breaker.and_then(|(_, v)| v.as_f64()), Some(0.0), "{m}");
}
