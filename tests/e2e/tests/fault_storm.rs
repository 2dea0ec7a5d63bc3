//! A storm under store faults: 200 operations while 1 % of the key-value calls of all three
//! components fail, half before they are applied and half after (the answer lost). Buyers
//! retry their creates with the same `Idempotency-Key`, the seller retries its webhooks until
//! one is taken, and cron ticks keep sweeping (a tick that fails is simply the next one's
//! work). Once the faults stop, every operation ends in the seller's final state with one
//! media buy, every status change reaches the buyer once (by its `webhook-id`), the status
//! gauges of `/metrics` and of the tenant's summary equal the operations' statuses, and the
//! auditor's next full pass finds nothing left to repair.

use e2e::task_seller::{TaskSeller, Webhook};
use e2e::{Api, METRICS_TOKEN, create_body, now_s, start};
use futures::StreamExt;
use serde_json::{Value, json};
use spin_test_host::kv::Kv;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const OPS: usize = 200;
const FAULTS_PER_MILLION: u64 = 10_000;
const FINALS: [&str; 3] = ["completed", "failed", "rejected"];

/// Creates operation `i` as a careful buyer does: the same `Idempotency-Key` until answered
/// (an id whose first writer failed answers `in_progress` until the hole is provably
/// permanent, about a minute).
async fn create(api: &Api, key: &str, i: usize) -> Value {
    let mut last = (0, Value::Null);
    for _ in 0..200 {
        let resp = api
            .http
            .post(format!("{}/api/v1/operations", api.base))
            .bearer_auth(key)
            .header("idempotency-key", format!("fault-storm-{i}"))
            .json(&create_body())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        match status {
            200 | 201 => return body,
            500..=599 => tokio::time::sleep(Duration::from_millis(500)).await,
            s => panic!("create {i} refused: {s} {body}"),
        }
        last = (status, body);
    }
    panic!("create {i} never answered: {last:?}");
}

/// Sends a webhook until the orchestrator takes it, as a seller retries a delivery.
async fn deliver(w: &Webhook, http: &reqwest::Client, base: &str) {
    for _ in 0..100 {
        let d = w.send(http, base).await;
        match d.status {
            200 => return,
            500..=599 => {
                let wait = d.retry_after_s.map_or(200, |s| s * 1000);
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            s => panic!("delivery {} refused: {s} {}", w.idempotency_key, d.body),
        }
    }
    panic!("delivery {} never taken", w.idempotency_key);
}

async fn get(api: &Api, key: &str, path: &str) -> Value {
    for _ in 0..20 {
        let (s, v) = api.call("GET", path, Some(key), None).await;
        if s == 200 {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} unreadable");
}

/// Every event of the operation, page by page (a journal a storm made can be long).
async fn all_events(api: &Api, key: &str, op_id: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut path = format!("/api/v1/operations/{op_id}/events?limit=200");
    loop {
        let page = get(api, key, &path).await;
        out.extend(page["events"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/api/v1/operations/{op_id}/events?limit=200&cursor={c}"),
            None => return out,
        }
    }
}

/// `adcp_operations` summed over tasks, by status (zeros left out).
fn gauge_by_status(metrics: &str) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("adcp_operations{"))
    {
        let status = line
            .split("status=\"")
            .nth(1)
            .and_then(|r| r.split('"').next());
        let value = line.rsplit(' ').next().and_then(|v| v.parse::<i64>().ok());
        if let (Some(status), Some(value)) = (status, value) {
            *out.entry(status.to_string()).or_default() += value;
        }
    }
    out.retain(|_, v| *v != 0);
    out
}

fn repairs(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("adcp_audit_repairs_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_operations_converge_while_one_percent_of_store_calls_fail() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kv.db");
    let host = Arc::new(start(&db, None).await);
    let api = Api::new(host.base_url());
    let seller = TaskSeller::start().await;
    let key = api.tenant("Acme").await;
    let (s, b) = api
        .call(
            "PUT",
            "/api/v1/sellers/ssp",
            Some(&key),
            Some(json!({"mcp_url": seller.url, "webhook_mode": "hmac"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (hook, received) = e2e::receiver::start().await;
    api.register_callback(&key, &hook).await;

    host.random_kv_faults(FAULTS_PER_MILLION, 0x5eed);
    let done = Arc::new(AtomicBool::new(false));
    let sweeper = {
        let (host, done) = (host.clone(), done.clone());
        tokio::spawn(async move {
            // On time, a tick a second: operations are filed by the API's clock while the
            // storm goes on, and a sweep running ahead of it would never read those filings.
            while !done.load(Ordering::SeqCst) {
                let _ = host.cron_tick(now_s()).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let created: Vec<Value> = futures::stream::iter(0..OPS)
        .map(|i| {
            let (api, key) = (&api, &key);
            async move { create(api, key, i).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut finals = BTreeMap::new();
    let mut drives = Vec::new();
    for (i, op) in created.iter().enumerate() {
        let op_id = op["operation_id"].as_str().unwrap().to_string();
        finals.insert(op_id.clone(), FINALS[i % FINALS.len()]);
        drives.push(op_id);
    }
    // The seller works each task it accepted (a create that died before the seller heard of
    // it is sent by the sweep's redispatch; its webhooks follow once the seller has it).
    let pending: Vec<String> = futures::stream::iter(drives.clone())
        .map(|op_id| {
            let (seller, http, base) = (seller.clone(), api.http.clone(), host.base_url());
            let last = finals[&op_id];
            async move {
                // Up to 10 minutes: a create whose dispatch failed waits for its safety net
                // (a minute), a redispatch whose lease claim lost its answer for the slot's
                // end (up to a minute more), each store failure in it 30 s: an unlucky
                // operation passes 3 minutes now and then (about one run in ten did).
                for _ in 0..6_000 {
                    if let Some(t) = seller.tasks_for(&op_id).first() {
                        for status in ["working", last] {
                            seller.set_status(&t.task_id, status);
                            let w = seller.webhook(&t.task_id, status, "2026-11-22T10:00:02Z");
                            deliver(&w, &http, &base).await;
                        }
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Some(op_id)
            }
        })
        // Many at a time: an operation whose journal has a hole a lost answer left waits
        // for it to be provably permanent (a minute), and must not hold up the others.
        .buffer_unordered(64)
        .filter_map(|p| async move { p })
        .collect()
        .await;
    if !pending.is_empty() {
        // What the store says of them, for the failure message.
        let kv = Kv::open(&db).unwrap();
        for op_id in &pending {
            let op = get(&api, &key, &format!("/api/v1/operations/{op_id}")).await;
            let ev = get(&api, &key, &format!("/api/v1/operations/{op_id}/events")).await;
            let poll = kv.get("default", &format!("poll:{op_id}")).unwrap();
            eprintln!(
                "{op_id}: {op}\nevents: {ev}\npoll state: {:?}",
                poll.map(|p| String::from_utf8_lossy(&p).into_owned())
            );
        }
        // Where the due index filed them, how far the sweep read, and what it logged.
        let text = |k: &str| {
            kv.get("default", k)
                .unwrap()
                .map(|v| String::from_utf8_lossy(&v).into_owned())
        };
        for k in kv.keys("default").unwrap() {
            let named = text(&k).is_some_and(|v| pending.contains(&v));
            if (k.starts_with("due:") && named) || pending.iter().any(|id| k.contains(id.as_str()))
            {
                let count = k
                    .rsplit_once(':')
                    .filter(|_| k.starts_with("due:"))
                    .and_then(|(b, _)| text(&format!("{b}:n")));
                eprintln!("{k} = {:?} (bucket count {count:?})", text(&k));
            }
        }
        eprintln!("sweep:cursor = {:?}", text("sweep:cursor"));
        eprintln!("sweep:last = {:?}", text("sweep:last"));
        for l in host.output().lines() {
            if pending.iter().any(|id| l.contains(id.as_str())) {
                eprintln!("{l}");
            }
        }
    }
    assert!(pending.is_empty(), "never sent to the seller: {pending:?}");
    let injected = host.kv_faults_injected();
    host.random_kv_faults(0, 0);
    done.store(true, Ordering::SeqCst);
    sweeper.await.unwrap();
    let mut at = now_s();

    // Faults over: the sweep finishes whatever the failures left (notification retries).
    let mut statuses = BTreeMap::new();
    let mut expected: BTreeSet<String> = BTreeSet::new();
    for _ in 0..40 {
        host.cron_tick(at).await.unwrap();
        at += 60;
        statuses.clear();
        expected.clear();
        for op_id in &drives {
            let op = get(&api, &key, &format!("/api/v1/operations/{op_id}")).await;
            statuses.insert(op_id.clone(), op["status"].as_str().unwrap().to_string());
            for e in all_events(&api, &key, op_id).await {
                if matches!(e["effect"]["effect"].as_str(), Some("applied" | "overrode")) {
                    expected.insert(format!("ntf_{op_id}_{}", e["seq"]));
                }
            }
        }
        let got: BTreeSet<String> = received.lock().unwrap().iter().cloned().collect();
        let settled = drives.iter().all(|id| statuses[id] == finals[id]);
        if settled && expected.is_subset(&got) {
            break;
        }
    }
    for op_id in &drives {
        assert_eq!(statuses[op_id], finals[op_id], "{op_id}");
        assert_eq!(seller.tasks_for(op_id).len(), 1, "{op_id}: one media buy");
    }
    let sent = received.lock().unwrap().clone();
    let distinct: BTreeSet<String> = sent.iter().cloned().collect();
    assert_eq!(
        distinct, expected,
        "each change announced, and nothing else"
    );
    let mut seen = BTreeSet::new();
    let twice: Vec<&String> = sent.iter().filter(|id| !seen.insert(*id)).collect();
    let output = host.output();
    let about: Vec<&str> = (output.lines())
        .filter(|l| {
            twice.iter().any(|id| {
                let op = id
                    .trim_start_matches("ntf_")
                    .rsplit_once('_')
                    .map_or("", |p| p.0);
                l.contains(id.as_str()) || l.contains(op)
            })
        })
        .collect();
    assert!(
        twice.is_empty(),
        "each announced once; sent again: {twice:?}\n{}",
        about.join("\n")
    );

    // The auditor's next full pass (200 operations: one tick each) repairs nothing.
    let metrics = || async {
        api.http
            .get(format!("{}/metrics", host.base_url()))
            .bearer_auth(METRICS_TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    // The auditor counts the status gauges on a pass at most every 20 minutes: let one
    // begin after the last change.
    for _ in 0..21 {
        host.cron_tick(at).await.unwrap();
        at += 60;
    }
    let before = repairs(&metrics().await);
    host.cron_tick(at).await.unwrap();
    host.cron_tick(at + 60).await.unwrap();
    let after = repairs(&metrics().await);
    assert_eq!(after, before, "nothing left to repair");

    // The status gauges equal the ground truth (the operations' own statuses), in /metrics
    // and in the tenant's summary, once an auditor pass has run with nothing changing.
    let mut truth: BTreeMap<String, i64> = BTreeMap::new();
    for status in statuses.values() {
        *truth.entry(status.clone()).or_default() += 1;
    }
    assert_eq!(gauge_by_status(&metrics().await), truth, "adcp_operations");
    let summary = get(&api, &key, "/api/v1/summary").await;
    let by_status: BTreeMap<String, i64> = summary["operations_by_status"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["status"].as_str().unwrap().to_string(),
                c["count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(by_status, truth, "the tenant's summary");
    let kv = Kv::open(&db).unwrap();
    let cursor: Value =
        serde_json::from_slice(&kv.get("default", "audit:cursor").unwrap().unwrap()).unwrap();
    assert!(cursor["passes"].as_u64().unwrap() >= 2, "{cursor}");
    eprintln!(
        "fault storm: {OPS} operations, {injected} store faults injected; {} notifications \
         sent for {} changes; {before} audit repairs",
        sent.len(),
        expected.len(),
    );
}
