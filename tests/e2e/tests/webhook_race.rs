//! The same delivery sent 20 times at once, with a fresh instance per request and across
//! two hosts sharing one state file: exactly one state change; every answer is 2xx, or 503
//! with `Retry-After` whose retry then gets 2xx.

use e2e::fake_seller::{Answer, FakeSeller};
use e2e::{Api, variables};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use spin_test_host::{HostOptions, TestHost};

fn hmac_headers(secret: &str, body: &str) -> (String, String) {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{ts}.{body}").as_bytes());
    let sig: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (ts, format!("sha256={sig}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_concurrent_copies_across_two_hosts_change_the_state_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kv.db");
    let opts = |reuse: bool| HostOptions {
        manifest: e2e::repo_root().join("spin.toml"),
        state_file: db.clone(),
        variables: variables("https://orchestrator.example"),
        instance_reuse: reuse,
        ..HostOptions::default()
    };
    let a = TestHost::start(opts(false)).await.unwrap();
    let b = TestHost::start(opts(false)).await.unwrap();
    let api = Api::new(a.base_url());
    let seller = FakeSeller::start().await;
    let key = api.tenant("Acme").await;
    api.call(
        "PUT",
        "/api/v1/sellers/ssp",
        Some(&key),
        Some(json!({"mcp_url": seller.url, "webhook_mode": "hmac"})),
    )
    .await;
    seller.answer(Answer::Payload(
        json!({"status": "submitted", "task_id": "task_r"}),
    ));
    let (_, op) = api
        .call(
            "POST",
            "/api/v1/operations",
            Some(&key),
            Some(json!({"seller_id": "ssp", "task": "create_media_buy", "arguments": {
                "account": {"account_id": "a"}, "brand": {"domain": "acme.example"}, "start_time": "asap",
                "end_time": "2027-01-31T23:59:59Z", "packages": [{"product_id": "p", "budget": 1, "pricing_option_id": "x"}]}})),
        )
        .await;
    let id = op["operation_id"].as_str().unwrap().to_string();
    let pnc = seller
        .calls()
        .into_iter()
        .find(|(t, _)| t == "create_media_buy")
        .expect("a create")
        .1["push_notification_config"]
        .clone();
    let secret = pnc["authentication"]["credentials"]
        .as_str()
        .unwrap()
        .to_string();
    let body =
        json!({"idempotency_key": "whk_race_0123456789", "operation_id": id, "task_id": "task_r",
        "task_type": "create_media_buy", "status": "completed", "timestamp": "2026-11-22T10:00:00Z",
        "token": pnc["token"], "result": {"media_buy_id": "mb_r"}})
        .to_string();
    let http = reqwest::Client::new();
    let send = |base: String| {
        let (ts, sig) = hmac_headers(&secret, &body);
        http.post(format!("{base}/webhooks/adcp/{id}"))
            .header("content-type", "application/json")
            .header("X-ADCP-Timestamp", ts)
            .header("X-ADCP-Signature", sig)
            .body(body.clone())
            .send()
    };
    let sends = (0..20).map(|i| {
        send(if i % 2 == 0 {
            a.base_url()
        } else {
            b.base_url()
        })
    });
    let answers = futures::future::join_all(sends).await;
    let mut retries = 0;
    for r in answers {
        let r = r.unwrap();
        let status = r.status().as_u16();
        match status {
            200 => {}
            503 => {
                assert!(r.headers().contains_key("retry-after"));
                retries += 1;
            }
            other => panic!("unexpected {other}: {}", r.text().await.unwrap_or_default()),
        }
    }
    for _ in 0..retries {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        assert_eq!(send(a.base_url()).await.unwrap().status().as_u16(), 200);
    }
    let (_, events) = api
        .call(
            "GET",
            &format!("/api/v1/operations/{id}/events"),
            Some(&key),
            None,
        )
        .await;
    let applied_terminal = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["effect"]["effect"] == "applied" && e["status"] == "completed")
        .count();
    assert_eq!(applied_terminal, 1, "{events}");
    let (_, got) = api
        .call("GET", &format!("/api/v1/operations/{id}"), Some(&key), None)
        .await;
    assert_eq!(got["status"], "completed");
}
