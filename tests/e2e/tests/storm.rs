//! Storm: 200 operations against a stateful seller that completes them with HMAC webhooks,
//! 30 % of deliveries duplicated (same bytes, same `idempotency_key`) and 20 % of
//! operations announcing their outcome before their progress, while cron sweeps poll the
//! same operations concurrently. Every operation must end in the seller's final state with
//! exactly one terminal transition, every delivery must be applied once, and `/metrics`
//! must equal the ground truth and the journals. Run on one host with the default SQLite
//! store, and on three hosts sharing one real Redis server.

use e2e::redis_server::RedisServer;
use e2e::task_seller::{TaskSeller, Webhook};
use e2e::{Api, METRICS_TOKEN, python, start, start_on_redis};
use futures::StreamExt;
use serde_json::{Value, json};
use spin_test_host::TestHost;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const OPS: usize = 200;
const DUPLICATE_RATE: f64 = 0.3;
const OUT_OF_ORDER_RATE: f64 = 0.2;
const FINALS: [&str; 4] = ["completed", "failed", "rejected", "canceled"];

/// SplitMix64: a reproducible plan from a seed (`STORM_SEED` overrides it).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// What the seller will do with one operation, decided up front.
#[derive(Debug, Clone)]
struct Plan {
    op_id: String,
    task_id: String,
    final_status: &'static str,
    out_of_order: bool,
    /// Per delivery (progress, outcome): sent twice, and whether both copies race.
    duplicate: [Option<bool>; 2],
}

/// One answer the seller got: the delivery's key and the outcome (`in_flight` for a 503).
type Answers = Vec<(String, String)>;

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn create_body() -> Value {
    json!({"seller_id": "ssp", "task": "create_media_buy", "arguments": {
        "account": {"account_id": "acc_1"}, "brand": {"domain": "acme.example"},
        "start_time": "asap", "end_time": "2027-01-31T23:59:59Z",
        "packages": [{"product_id": "p1", "budget": 5000, "pricing_option_id": "cpm"}]}})
}

/// Sends a webhook until the orchestrator takes it, honouring `Retry-After` on 503 like a
/// seller retrying the same delivery.
async fn deliver(w: &Webhook, http: &reqwest::Client, base: &str, answers: &mut Answers) {
    for _ in 0..20 {
        let d = w.send(http, base).await;
        match d.status {
            200 => {
                let outcome = d.body["outcome"].as_str().unwrap_or("?").to_string();
                answers.push((w.idempotency_key.clone(), outcome));
                return;
            }
            503 => {
                assert_eq!(d.body["code"], "in_flight", "{}", d.body);
                answers.push((w.idempotency_key.clone(), "in_flight".into()));
                let wait = d.retry_after_s.expect("503 carries Retry-After");
                tokio::time::sleep(Duration::from_secs(wait)).await;
            }
            s => panic!("delivery {} refused: {s} {}", w.idempotency_key, d.body),
        }
    }
    panic!("delivery {} never accepted", w.idempotency_key);
}

/// Sends one delivery, and a copy of it when planned (at the same time, or after it).
async fn deliver_maybe_twice(
    w: &Webhook,
    dup: Option<bool>,
    http: &reqwest::Client,
    base: &str,
) -> Answers {
    let mut answers = Vec::new();
    match dup {
        None => deliver(w, http, base, &mut answers).await,
        Some(false) => {
            deliver(w, http, base, &mut answers).await;
            deliver(w, http, base, &mut answers).await;
        }
        Some(true) => {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            tokio::join!(
                deliver(w, http, base, &mut a),
                deliver(w, http, base, &mut b)
            );
            answers.extend(a);
            answers.extend(b);
        }
    }
    answers
}

/// The seller's side of one operation: its task moves, and it announces each move.
async fn drive(plan: Plan, seller: TaskSeller, http: reqwest::Client, base: String) -> Answers {
    let working = seller.webhook(&plan.task_id, "working", "2026-11-22T10:00:01Z");
    let outcome = seller.webhook(&plan.task_id, plan.final_status, "2026-11-22T10:00:02Z");
    let mut answers = Vec::new();
    if plan.out_of_order {
        seller.set_status(&plan.task_id, plan.final_status);
        answers.extend(deliver_maybe_twice(&outcome, plan.duplicate[1], &http, &base).await);
        answers.extend(deliver_maybe_twice(&working, plan.duplicate[0], &http, &base).await);
    } else {
        seller.set_status(&plan.task_id, "working");
        answers.extend(deliver_maybe_twice(&working, plan.duplicate[0], &http, &base).await);
        seller.set_status(&plan.task_id, plan.final_status);
        answers.extend(deliver_maybe_twice(&outcome, plan.duplicate[1], &http, &base).await);
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_operations_converge_under_duplicate_reordered_webhooks_and_sweeps() {
    let dir = tempfile::tempdir().unwrap();
    let host = Arc::new(start(&dir.path().join("kv.db"), None).await);
    storm(vec![host]).await;
}

/// The same storm against three replicas on one Redis server: creates and webhooks are
/// spread over the three, and each fires its own cron ticks.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_storm_converges_on_three_hosts_sharing_redis() {
    let redis = RedisServer::start();
    let mut hosts = Vec::new();
    for _ in 0..3 {
        hosts.push(Arc::new(start_on_redis(&redis.url(), None).await));
    }
    storm(hosts).await;
}

async fn storm(hosts: Vec<Arc<TestHost>>) {
    let seed = std::env::var("STORM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_2026);
    eprintln!("storm seed {seed} on {} host(s)", hosts.len());
    let mut rng = Rng(seed);
    let started = Instant::now();
    let bases: Vec<String> = hosts.iter().map(|h| h.base_url()).collect();
    let base = bases[0].clone();
    let api = Api::new(base.clone());
    let apis: Vec<Api> = bases.iter().map(|b| Api::new(b.clone())).collect();
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

    // 200 operations, 16 requests at a time (spread over the hosts); each is stored, sent
    // and `submitted`.
    let created: Vec<Value> = futures::stream::iter(0..OPS)
        .map(|i| {
            apis[i % apis.len()].call(
                "POST",
                "/api/v1/operations",
                Some(&key),
                Some(create_body()),
            )
        })
        .buffer_unordered(16)
        .map(|(s, op)| {
            assert_eq!(s, 201, "{op}");
            assert_eq!(op["status"], "submitted", "{op}");
            op
        })
        .collect()
        .await;
    let created_in = started.elapsed();
    let mut plans = Vec::new();
    for op in &created {
        let op_id = op["operation_id"].as_str().unwrap().to_string();
        let tasks = seller.tasks_for(&op_id);
        assert_eq!(tasks.len(), 1, "one media buy for {op_id}");
        assert_eq!(op["task_id"], json!(tasks[0].task_id));
        let dup = |rng: &mut Rng| rng.chance(DUPLICATE_RATE).then(|| rng.chance(0.5));
        plans.push(Plan {
            op_id,
            task_id: tasks[0].task_id.clone(),
            final_status: FINALS[(rng.next() % FINALS.len() as u64) as usize],
            out_of_order: rng.chance(OUT_OF_ORDER_RATE),
            duplicate: [dup(&mut rng), dup(&mut rng)],
        });
    }

    // The storm: the seller's webhooks, 8 operations at a time, while two cron loops (two
    // replicas' triggers, overlapping) sweep. Ticks start once every operation is due for
    // its first backup poll (2 min after dispatch) and move 30 s each, staying far below the
    // 24 h deadline; the webhooks start with the first poll.
    let t1 = now_s();
    let done = Arc::new(AtomicBool::new(false));
    let offsets: Vec<(usize, u64)> = if hosts.len() == 1 {
        vec![(0, 140), (0, 155)]
    } else {
        (0..hosts.len()).map(|i| (i, 140 + 10 * i as u64)).collect()
    };
    let sweepers: Vec<_> = offsets
        .into_iter()
        .map(|(i, offset)| {
            let (host, done) = (hosts[i].clone(), done.clone());
            tokio::spawn(async move {
                let mut at = t1 + offset;
                let mut ticks = 0;
                while !done.load(Ordering::SeqCst) && at < t1 + 3_600 {
                    host.cron_tick(at).await.expect("sweep tick");
                    at += 30;
                    ticks += 1;
                }
                ticks
            })
        })
        .collect();
    seller
        .wait_for_calls("get_task_status", 1, Duration::from_secs(180))
        .await;
    let first_poll_in = started.elapsed() - created_in;
    let answers: Vec<(String, String)> =
        futures::stream::iter(plans.clone().into_iter().enumerate())
            .map(|(i, p)| {
                drive(
                    p,
                    seller.clone(),
                    api.http.clone(),
                    bases[i % bases.len()].clone(),
                )
            })
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .flatten()
            .collect();
    done.store(true, Ordering::SeqCst);
    let mut ticks = 0;
    for s in sweepers {
        ticks += s.await.unwrap();
    }
    let storm_in = started.elapsed() - created_in;

    // Every operation ends in the seller's final state, through exactly one terminal
    // transition; the metrics below are checked against these journals.
    let mut applied: BTreeMap<String, u64> = BTreeMap::new();
    let mut truth: BTreeMap<&str, u64> = BTreeMap::new();
    let mut polls_recorded = 0;
    for p in &plans {
        *truth.entry(p.final_status).or_default() += 1;
        let (_, op) = api
            .call(
                "GET",
                &format!("/api/v1/operations/{}", p.op_id),
                Some(&key),
                None,
            )
            .await;
        let seller_final = seller.task(&p.task_id).unwrap().status;
        assert_eq!(seller_final, p.final_status);
        assert_eq!(op["status"], json!(seller_final), "{op}\n{p:?}");
        match p.final_status {
            "completed" => {
                assert_eq!(op["result"]["media_buy_id"], format!("mb_{}", p.task_id))
            }
            "failed" | "rejected" => assert!(op["error"]["code"].is_string(), "{op}"),
            _ => {}
        }
        let (_, ev) = api
            .call(
                "GET",
                &format!("/api/v1/operations/{}/events", p.op_id),
                Some(&key),
                None,
            )
            .await;
        let events = ev["events"].as_array().unwrap();
        for status in ["working", p.final_status] {
            let taking_effect = events
                .iter()
                .filter(|e| e["source"] == "webhook" && e["status"] == status)
                .filter(|e| e["effect"]["effect"] != "repeated_delivery")
                .count();
            assert_eq!(taking_effect, 1, "{status} delivery folded once: {ev}");
        }
        let mut terminal = 0;
        for e in events {
            let effect = e["effect"]["effect"].as_str().unwrap_or("");
            if effect == "applied" || effect == "overrode" {
                let to = e["effect"]["status"].as_str().unwrap().to_string();
                terminal += usize::from(FINALS.contains(&to.as_str()));
                *applied.entry(to).or_default() += 1;
            }
            assert_ne!(effect, "conflict", "{ev}");
            polls_recorded += usize::from(e["source"] == "poll");
        }
        assert_eq!(terminal, 1, "one terminal transition: {ev}\n{p:?}");
    }

    // No operation is lost: the tenant's listing holds exactly the 200.
    let mut listed = BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/operations?limit=200&cursor={c}"),
            None => "/api/v1/operations?limit=200".into(),
        };
        let (s, page) = api.call("GET", &path, Some(&key), None).await;
        assert_eq!(s, 200, "{page}");
        for op in page["operations"].as_array().unwrap() {
            listed.insert(op["operation_id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let ids: BTreeSet<String> = plans.iter().map(|p| p.op_id.clone()).collect();
    assert_eq!(listed, ids);
    // The seller saw each media buy once.
    assert_eq!(seller.calls_of("create_media_buy").len(), OPS);

    // Each delivery was applied once. A copy answered `in_flight` left a durable entry
    // whose effect nobody knew yet; so per delivery at most one copy is answered with its
    // effect, and when none is, a copy was answered `in_flight`. The journals (above)
    // show that exactly one entry per delivery took effect.
    let mut by_key: HashMap<&str, Vec<&str>> = HashMap::new();
    for (k, o) in &answers {
        by_key.entry(k).or_default().push(o);
    }
    let mut unannounced = 0;
    for (k, outcomes) in &by_key {
        let effects = outcomes
            .iter()
            .filter(|o| !matches!(**o, "duplicate" | "in_flight"))
            .count();
        assert!(effects <= 1, "delivery {k} applied once: {outcomes:?}");
        if effects == 0 {
            assert!(outcomes.contains(&"in_flight"), "{k}: {outcomes:?}");
            unannounced += 1;
        }
    }
    assert_eq!(by_key.len(), 2 * OPS);
    let duplicates = answers.iter().filter(|(_, o)| o == "duplicate").count();
    let in_flight = answers.iter().filter(|(_, o)| o == "in_flight").count();
    let sent_twice: usize = plans
        .iter()
        .map(|p| p.duplicate.iter().filter(|d| d.is_some()).count())
        .sum();
    assert_eq!(
        duplicates,
        sent_twice + unannounced,
        "every copy beyond the one that took effect is answered as a duplicate"
    );

    // The sweeps polled during the storm; a poll is journaled only when it changed
    // something (most are beaten by the webhooks), so `polls_recorded` may be 0.
    let polls = seller.calls_of("get_task_status").len();
    assert!(polls > 0, "the sweeps polled during the storm");

    // /metrics, read with prometheus_client's parser, equals the ground truth.
    let text = api
        .http
        .get(format!("{base}/metrics"))
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
            .unwrap_or_else(|| panic!("no {k} in {m}")) as u64
    };
    let task = "task=create_media_buy";
    assert_eq!(
        get(&format!("adcp_operations_created_total{{{task}}}")),
        200
    );
    let prefix = "adcp_operation_transitions_total{status=";
    let mut counted = BTreeMap::new();
    for (k, v) in m.as_object().unwrap() {
        if let Some(rest) = k.strip_prefix(prefix)
            && let Some(status) = rest.strip_suffix(&format!(",{task}}}"))
            && v.as_f64() != Some(0.0)
        {
            counted.insert(status.to_string(), v.as_f64().unwrap() as u64);
        }
    }
    assert_eq!(
        counted, applied,
        "transitions counted = transitions in the journals"
    );
    for s in FINALS {
        let want = truth.get(s).copied().unwrap_or(0);
        assert_eq!(applied.get(s).copied().unwrap_or(0), want, "{s}");
        assert_eq!(
            get(&format!("adcp_operations{{status={s},{task}}}")),
            want,
            "{s}"
        );
    }
    assert_eq!(counted.get("submitted"), Some(&(OPS as u64)));
    assert_eq!(get(&format!("adcp_operations_open{{{task}}}")), 0);
    assert_eq!(
        get(&format!("adcp_operation_outcome_seconds_count{{{task}}}")),
        OPS as u64
    );
    let logged: usize = hosts
        .iter()
        .map(|h| e2e::duplicates_logged(&h.output()))
        .sum();
    assert_eq!(
        logged, duplicates,
        "every duplicate answered as one is logged once"
    );
    for (k, v) in m.as_object().unwrap() {
        if k.starts_with("adcp_webhook_rejections_total") {
            assert_eq!(v.as_f64(), Some(0.0), "{k}");
        }
    }
    eprintln!(
        "storm: {OPS} operations created in {created_in:.1?}; {} deliveries ({duplicates} duplicates, \
         {in_flight} in flight, {unannounced} applied unannounced) and {ticks} sweep ticks ({polls} polls, {polls_recorded} changing something) in {storm_in:.1?} (first poll after {first_poll_in:.1?}); \
         finals {truth:?}; total {:.1?}",
        answers.len(),
        started.elapsed()
    );
}
