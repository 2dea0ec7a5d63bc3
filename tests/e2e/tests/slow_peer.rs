//! A slow peer cannot stall the sweep for the others: one seller answers its polls a byte
//! every 2 s (every per-phase timeout passes; only a deadline on the whole call ends it),
//! another is healthy. Each tick gives each seller its share of the budget, so every due
//! operation of the healthy seller is polled, and completed, within two cron ticks.

use e2e::task_seller::TaskSeller;
use e2e::trickle::Trickle;
use e2e::{Api, now_s, start};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn create_body(seller: &str) -> Value {
    json!({"seller_id": seller, "task": "create_media_buy", "webhook": false, "arguments": {
        "account": {"account_id": "acc_1"}, "brand": {"domain": "acme.example"},
        "start_time": "asap", "end_time": "2027-01-31T23:59:59Z",
        "packages": [{"product_id": "p1", "budget": 5000, "pricing_option_id": "cpm"}]}})
}

async fn status(api: &Api, key: &str, id: &str) -> String {
    let (s, op) = api
        .call("GET", &format!("/api/v1/operations/{id}"), Some(key), None)
        .await;
    assert_eq!(s, 200, "{op}");
    op["status"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_seller_trickling_its_answers_does_not_hold_up_a_healthy_sellers_polls() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(&dir.path().join("kv.db"), None).await;
    let api = Api::new(host.base_url());
    let key = api.tenant("Acme").await;
    let (slow, healthy) = (TaskSeller::start().await, TaskSeller::start().await);
    let backend: SocketAddr = slow
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .parse()
        .unwrap();
    let trickle = Trickle::start(backend, Duration::from_secs(2)).await;
    let slow_url = format!("http://{}/mcp", trickle.addr);
    for (id, url) in [("slow", slow_url.as_str()), ("ok", healthy.url.as_str())] {
        let (s, b) = api
            .call(
                "PUT",
                &format!("/api/v1/sellers/{id}"),
                Some(&key),
                Some(json!({"mcp_url": url})),
            )
            .await;
        assert_eq!(s, 201, "{b}");
    }
    let mut ops = Vec::new();
    for seller in ["slow", "slow", "slow", "ok", "ok", "ok"] {
        let (s, op) = api
            .call(
                "POST",
                "/api/v1/operations",
                Some(&key),
                Some(create_body(seller)),
            )
            .await;
        assert!(s == 201 || s == 202, "{s} {op}");
        assert_eq!(op["status"], "submitted", "{op}");
        ops.push((seller, op["operation_id"].as_str().unwrap().to_string()));
    }
    // From now on the slow seller answers a byte every 2 s; the healthy one's tasks are done.
    trickle.start_trickling();
    for (_, id) in ops.iter().filter(|(s, _)| *s == "ok") {
        let task = healthy.tasks_for(id)[0].task_id.clone();
        healthy.set_status(&task, "completed");
    }
    // Ticks an hour ahead: every operation's first poll is due.
    let at = now_s() + 3_600;
    let mut ticks = 0;
    for tick in 0..2 {
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(90), host.cron_tick(at + 60 * tick))
            .await
            .expect("a tick ends within its budget, slow seller or not")
            .unwrap();
        ticks += 1;
        let took = started.elapsed();
        assert!(took < Duration::from_secs(45), "tick took {took:?}");
        let mut done = true;
        for (_, id) in ops.iter().filter(|(s, _)| *s == "ok") {
            done &= status(&api, &key, id).await == "completed";
        }
        if done {
            break;
        }
    }
    for (_, id) in ops.iter().filter(|(s, _)| *s == "ok") {
        assert_eq!(
            status(&api, &key, id).await,
            "completed",
            "{id}: polled within two ticks"
        );
    }
    eprintln!("the healthy seller's operations completed within {ticks} tick(s)");
}
