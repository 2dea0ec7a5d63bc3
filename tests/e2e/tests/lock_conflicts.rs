//! The default store under load, run the way `spin up` runs it: the HTTP trigger and the
//! cron trigger on two separate connections to one SQLite file. A deferred transaction that
//! must upgrade its read lock while the other connection writes gets `database is locked` at
//! once (rusqlite's busy timeout does not apply to that case), so on Spin 4.0.2 concurrent
//! buyers and a sweeping cron saw `503 store_unavailable`. Every request and every tick must
//! now succeed.

use e2e::task_seller::TaskSeller;
use e2e::{Api, create_body, now_s, start};
use futures::StreamExt;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const BUYERS: usize = 8;
const OPS: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn buyers_webhooks_and_a_sweeping_cron_on_two_connections_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let host = Arc::new(start(&dir.path().join("kv.db"), None).await);
    let base = host.base_url();
    let api = Api::new(base.clone());
    let seller = TaskSeller::start().await;
    let key = api.tenant("Acme").await;
    api.register_seller(&key, json!({"mcp_url": seller.url, "webhook_mode": "hmac"}))
        .await;

    // A cron loop sweeps the whole time, on its own connection: every tick polls the
    // operations created so far (each is due for a backup poll two minutes on) and writes.
    let done = Arc::new(AtomicBool::new(false));
    let t0 = now_s();
    let sweeper = {
        let (host, done) = (host.clone(), done.clone());
        tokio::spawn(async move {
            let (mut ticks, mut failed) = (0, Vec::new());
            let mut at = t0 + 130;
            while !done.load(Ordering::SeqCst) {
                if let Err(e) = host.cron_tick(at).await {
                    failed.push(e.to_string());
                }
                ticks += 1;
                at += 30;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (ticks, failed)
        })
    };

    let created: Vec<(u16, Value)> = futures::stream::iter(0..OPS)
        .map(|_| {
            api.call(
                "POST",
                "/api/v1/operations",
                Some(&key),
                Some(create_body()),
            )
        })
        .buffer_unordered(BUYERS)
        .collect()
        .await;
    // Stored and sent: each create answers 201 with the seller's `submitted`.
    let refused: Vec<&(u16, Value)> = created
        .iter()
        .filter(|(s, op)| *s != 201 || op["status"] != "submitted")
        .collect();

    // Then every operation's outcome arrives as a webhook, 16 at a time, still sweeping.
    let mut webhooks = Vec::new();
    for (_, op) in created.iter().filter(|(_, op)| op["status"] == "submitted") {
        let op_id = op["operation_id"].as_str().unwrap();
        let task = &seller.tasks_for(op_id)[0];
        seller.set_status(&task.task_id, "completed");
        webhooks.push(seller.webhook(&task.task_id, "completed", "2026-11-22T10:00:02Z"));
    }
    let delivered: Vec<u16> = futures::stream::iter(webhooks)
        .map(|w| {
            let (http, base) = (api.http.clone(), base.clone());
            async move { w.send(&http, &base).await.status }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    done.store(true, Ordering::SeqCst);
    let (ticks, failed_ticks) = sweeper.await.unwrap();

    let not_ok: Vec<&u16> = delivered.iter().filter(|s| **s != 200).collect();
    assert!(
        refused.is_empty() && not_ok.is_empty() && failed_ticks.is_empty(),
        "creates refused: {} of {OPS} (first: {:?}); webhooks not 200: {} of {}; \
         cron ticks failed: {} of {ticks} (first: {:?})",
        refused.len(),
        refused.first(),
        not_ok.len(),
        delivered.len(),
        failed_ticks.len(),
        failed_ticks.first(),
    );
    assert!(
        ticks >= 1,
        "the cron swept while the load ran ({ticks} ticks)"
    );
}
