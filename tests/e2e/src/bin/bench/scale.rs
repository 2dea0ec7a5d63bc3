//! Replicas on one Redis: webhook ingest and sweep throughput with 1, 2 and 3 hosts sharing a
//! real `redis-server`, and the Redis round trips per webhook and per due operation.

use crate::app::create_body;
use crate::stats::{self, Run};
use e2e::fake_seller::{Answer, FakeSeller};
use e2e::redis_server::RedisServer;
use e2e::{Api, now_s, start_on_redis};
use serde_json::json;
use spin_test_host::TestHost;
use std::time::Instant;

/// What one configuration measured.
pub struct ScaleRun {
    pub hosts: usize,
    pub ingest: Run,
    /// Redis round trips (guest key-value calls) per accepted webhook.
    pub kv_per_webhook: f64,
    /// Due operations polled per second by all hosts' concurrent ticks.
    pub polls_per_s: f64,
    pub kv_per_due_op: f64,
}

struct Waiting {
    op: String,
    task_id: String,
    token: String,
    secret: String,
}

/// Creates `n` operations through the first host; the seller accepts each as `submitted`.
async fn create(
    api: &Api,
    key: &str,
    seller: &FakeSeller,
    n: usize,
    webhook: bool,
) -> Vec<Waiting> {
    let first = seller.calls().len();
    for i in 0..n {
        seller.answer(Answer::Payload(
            json!({"status": "submitted", "task_id": format!("task_{webhook}_{i}")}),
        ));
    }
    let mut ops = Vec::new();
    for _ in 0..n {
        let (s, op) = api
            .call(
                "POST",
                "/api/v1/operations",
                Some(key),
                Some(create_body(webhook)),
            )
            .await;
        assert_eq!((s, op["status"].as_str()), (201, Some("submitted")), "{op}");
        ops.push(op);
    }
    let calls = seller.calls();
    ops.iter()
        .zip(
            calls[first..]
                .iter()
                .filter(|(t, _)| t == "create_media_buy"),
        )
        .map(|(op, (_, args))| {
            let pnc = &args["push_notification_config"];
            Waiting {
                op: op["operation_id"].as_str().unwrap().to_string(),
                task_id: op["task_id"].as_str().unwrap().to_string(),
                token: pnc["token"].as_str().unwrap_or_default().to_string(),
                secret: pnc["authentication"]["credentials"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            }
        })
        .collect()
}

fn total_kv(hosts: &[TestHost]) -> u64 {
    hosts.iter().map(|h| h.kv_counts().total()).sum()
}

/// `n` hosts on a fresh Redis, with a tenant and a Bearer-mode seller registered.
async fn replicas(redis: &RedisServer, n: usize) -> (Vec<TestHost>, Api, String, FakeSeller) {
    let mut hosts = Vec::new();
    for _ in 0..n {
        hosts.push(start_on_redis(&redis.url(), None).await);
    }
    let api = Api::new(hosts[0].base_url());
    let seller = FakeSeller::start().await;
    let key = api.tenant("Bench").await;
    api.register_seller(
        &key,
        json!({"mcp_url": seller.url, "webhook_mode": "bearer"}),
    )
    .await;
    (hosts, api, key, seller)
}

/// Ingest and sweep, each on its own fresh Redis so neither sees the other's operations.
pub async fn run(hosts_n: usize, webhooks: usize, due: usize, concurrency: usize) -> ScaleRun {
    let redis = RedisServer::start();
    let (hosts, api, key, seller) = replicas(&redis, hosts_n).await;
    let waiting = create(&api, &key, &seller, webhooks, true).await;

    // Ingest: Bearer webhooks spread round-robin over the hosts.
    let client = reqwest::Client::new();
    let bases: Vec<String> = hosts.iter().map(|h| h.base_url()).collect();
    hosts.iter().for_each(|h| h.reset_kv_counts());
    let items: Vec<(usize, Waiting)> = waiting.into_iter().enumerate().collect();
    let ingest = stats::drive(items, concurrency, |(i, w)| {
        let (client, base) = (client.clone(), bases[i % bases.len()].clone());
        async move {
            let body = json!({"idempotency_key": format!("whk_scale_{}", w.op), "operation_id": w.op,
                "task_id": w.task_id, "task_type": "create_media_buy", "status": "completed",
                "timestamp": "2026-11-22T10:00:00Z", "token": w.token,
                "result": {"media_buy_id": format!("mb_{}", w.op), "packages": []}});
            let resp = client
                .post(format!("{base}/webhooks/adcp/{}", w.op))
                .bearer_auth(&w.secret)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .expect("the host answers");
            assert_eq!(resp.status().as_u16(), 200);
        }
    })
    .await;
    let kv_per_webhook = total_kv(&hosts) as f64 / webhooks as f64;
    drop(hosts);
    drop(redis);

    let redis = RedisServer::start();
    let (hosts, api, key, seller) = replicas(&redis, hosts_n).await;
    let polled = create(&api, &key, &seller, due, false).await;

    // Sweep: every host ticks at once, far enough ahead that every polled operation is due;
    // the seller's answer (`submitted` again) changes nothing.
    for _ in 0..polled.len() * 2 {
        seller.answer(Answer::Payload(json!({"status": "submitted"})));
    }
    hosts.iter().for_each(|h| h.reset_kv_counts());
    let at = now_s() + 3_600;
    let started = Instant::now();
    let ticks: Vec<_> = hosts.iter().map(|h| h.cron_tick(at)).collect();
    for r in futures::future::join_all(ticks).await {
        r.expect("sweep tick");
    }
    let wall = started.elapsed().as_secs_f64();
    let polls = seller
        .calls()
        .iter()
        .filter(|(t, _)| t == "get_task_status")
        .count();
    assert!(polls >= due, "{polls} polls for {due} due operations");
    ScaleRun {
        hosts: hosts_n,
        ingest,
        kv_per_webhook,
        polls_per_s: due as f64 / wall,
        kv_per_due_op: total_kv(&hosts) as f64 / due as f64,
    }
}
