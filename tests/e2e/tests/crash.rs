//! Crash and restart: the host is stopped at chosen points and a new one started on the same
//! SQLite file. The system converges: each operation reaches its right state, each change is
//! applied once, and the seller sees each media buy once.
//!
//! - after the operation is stored and before the seller acted on the call (and after the
//!   seller acted, the answer lost);
//! - after a webhook's journal entry (its de-duplication claim) is appended and before the
//!   record and effects are written;
//! - in the middle of a sweep, a poll in flight.
//!
//! The create crashes also run on three replicas sharing one Redis server: one replica dies
//! mid-call and the other two, each firing cron ticks, finish the work.

use bytes::Bytes;
use e2e::redis_server::RedisServer;
use e2e::task_seller::{HoldAt, TaskSeller};
use e2e::{Api, METRICS_TOKEN, python, start, start_on_redis};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use spin_test_host::kv::Kv;
use spin_test_host::{KvOp, TestHost};
use std::path::Path;
use std::sync::{Arc, Mutex};

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn create_body(webhook: bool) -> Value {
    json!({"seller_id": "ssp", "task": "create_media_buy", "webhook": webhook, "arguments": {
        "account": {"account_id": "acc_1"}, "brand": {"domain": "acme.example"},
        "start_time": "asap", "end_time": "2027-01-31T23:59:59Z",
        "packages": [{"product_id": "p1", "budget": 5000, "pricing_option_id": "cpm"}]}})
}

/// A host on `db` with a tenant whose seller `ssp` is `seller`, asked for HMAC webhooks.
async fn setup(db: &Path, seller: &TaskSeller) -> (TestHost, Api, String) {
    setup_on(start(db, None).await, seller).await
}

/// [`setup`] on a host already started.
async fn setup_on(host: TestHost, seller: &TaskSeller) -> (TestHost, Api, String) {
    let api = Api::new(host.base_url());
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
    (host, api, key)
}

async fn get_op(api: &Api, key: &str, id: &str) -> Value {
    let (s, op) = api
        .call("GET", &format!("/api/v1/operations/{id}"), Some(key), None)
        .await;
    assert_eq!(s, 200, "{op}");
    op
}

async fn events(api: &Api, key: &str, id: &str) -> Vec<Value> {
    let (s, ev) = api
        .call(
            "GET",
            &format!("/api/v1/operations/{id}/events"),
            Some(key),
            None,
        )
        .await;
    assert_eq!(s, 200, "{ev}");
    ev["events"].as_array().unwrap().clone()
}

/// The statuses the operation's history moved to.
fn transitions(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| matches!(e["effect"]["effect"].as_str(), Some("applied" | "overrode")))
        .map(|e| e["effect"]["status"].as_str().unwrap().to_string())
        .collect()
}

/// Kills the host while the seller holds its `create_media_buy` at `at`, restarts it on the
/// same file and lets the sweep redispatch.
/// Where the application runs: one host on the SQLite file (restarted after the crash), or
/// three replicas on one Redis server (one crashes, the other two carry on).
#[derive(Clone, Copy, PartialEq)]
enum Replicas {
    OneOnSqlite,
    ThreeOnRedis,
}

async fn crash_during_create(at: HoldAt, replicas: Replicas) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kv.db");
    let seller = TaskSeller::start().await;
    let redis = (replicas == Replicas::ThreeOnRedis).then(RedisServer::start);
    let (host, api, key) = match &redis {
        None => setup(&db, &seller).await,
        Some(r) => setup_on(start_on_redis(&r.url(), None).await, &seller).await,
    };
    let mut hold = seller.hold("create_media_buy", at);
    let post = api
        .http
        .post(format!("{}/api/v1/operations", host.base_url()))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(create_body(true).to_string())
        .send();
    let post = tokio::spawn(post);
    let args = hold.reached().await;
    let id = args["context"]["operation_id"]
        .as_str()
        .unwrap()
        .to_string();
    host.kill();
    drop(hold);
    assert!(post.await.unwrap().is_err(), "the buyer got no answer");
    let acted = seller.tasks_for(&id).len();
    assert_eq!(acted, usize::from(at == HoldAt::After));

    // After the crash: the same file restarted, or the two replicas that kept running.
    let hosts = match &redis {
        None => vec![start(&db, None).await],
        Some(r) => vec![
            start_on_redis(&r.url(), None).await,
            start_on_redis(&r.url(), None).await,
        ],
    };
    let (host, api) = (&hosts[0], Api::new(hosts[0].base_url()));
    let op = get_op(&api, &key, &id).await;
    assert_eq!(
        op["status"], "pending_dispatch",
        "stored before the call: {op}"
    );
    // The sweep redispatches once the creation's safety net (1 min) is due.
    let t = now_s();
    let mut op = op;
    for i in 0..10 {
        for h in &hosts {
            h.cron_tick(t + 70 + 30 * i).await.unwrap();
        }
        op = get_op(&api, &key, &id).await;
        if op["status"] != "pending_dispatch" {
            break;
        }
    }
    assert_eq!(op["status"], "submitted", "{op}\n{}", host.output());
    let tasks = seller.tasks_for(&id);
    assert_eq!(tasks.len(), 1, "the seller has one media buy");
    assert_eq!(op["task_id"], json!(tasks[0].task_id));
    let creates = seller.calls_of("create_media_buy");
    assert_eq!(creates.len(), 2, "the interrupted call and the redispatch");
    assert_eq!(creates[0], creates[1], "resent with the same key and bytes");

    seller.set_status(&tasks[0].task_id, "completed");
    let w = seller.webhook(&tasks[0].task_id, "completed", "2026-11-22T10:00:02Z");
    let last = hosts.last().unwrap();
    let d = w.send(&api.http, &last.base_url()).await;
    assert_eq!(
        (d.status, d.body["outcome"].as_str()),
        (200, Some("applied"))
    );
    let op = get_op(&api, &key, &id).await;
    assert_eq!(op["status"], "completed");
    assert_eq!(
        op["result"]["media_buy_id"],
        format!("mb_{}", tasks[0].task_id)
    );
    let ev = events(&api, &key, &id).await;
    assert_eq!(transitions(&ev), ["submitted", "completed"], "{ev:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_before_the_seller_acts_on_the_create_leaves_one_media_buy_after_restart() {
    crash_during_create(HoldAt::Before, Replicas::OneOnSqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_after_the_seller_acted_but_before_its_answer_leaves_one_media_buy() {
    crash_during_create(HoldAt::After, Replicas::OneOnSqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_crashing_before_the_seller_acts_leaves_one_media_buy_on_redis() {
    crash_during_create(HoldAt::Before, Replicas::ThreeOnRedis).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_crashing_after_the_seller_acted_leaves_one_media_buy_on_redis() {
    crash_during_create(HoldAt::After, Replicas::ThreeOnRedis).await;
}

/// What [`interrupted_webhook`] leaves behind.
struct Interrupted {
    host: TestHost,
    api: Api,
    key: String,
    id: String,
    answer: e2e::task_seller::Delivered,
    seller: TaskSeller,
}

/// Creates an operation, delivers its `completed` webhook with the write of the record after
/// the journal entry failing, checks that the file is in exactly that state, kills the
/// host, starts another on the file and resends the webhook.
async fn interrupted_webhook(db: &Path, callback: Option<&str>) -> Interrupted {
    let seller = TaskSeller::start().await;
    let (host, api, key) = setup(db, &seller).await;
    if let Some(url) = callback {
        let (s, b) = api
            .call(
                "PUT",
                "/api/v1/callback",
                Some(&key),
                Some(json!({ "url": url })),
            )
            .await;
        assert_eq!(s, 200, "{b}");
    }
    let (s, op) = api
        .call(
            "POST",
            "/api/v1/operations",
            Some(&key),
            Some(create_body(true)),
        )
        .await;
    assert_eq!((s, op["status"].as_str()), (201, Some("submitted")), "{op}");
    let id = op["operation_id"].as_str().unwrap().to_string();
    let task = seller.tasks_for(&id)[0].task_id.clone();
    seller.set_status(&task, "completed");
    let w = seller.webhook(&task, "completed", "2026-11-22T10:00:02Z");

    // Intake reads the record, appends the journal entry (increment, set), then writes the
    // record: the second `set` is the one that fails.
    host.fail_kv_call(2, Some(KvOp::Set));
    let d = w.send(&api.http, &host.base_url()).await;
    assert_eq!(d.status, 503, "{}", d.body);
    let kv = Kv::open(db).unwrap();
    let read = |k: &str| kv.get("default", k).unwrap();
    let seq = i64::from_le_bytes(
        read(&format!("op:{id}:seq"))
            .unwrap()
            .as_slice()
            .try_into()
            .unwrap(),
    );
    let record: Value = serde_json::from_slice(&read(&format!("op:{id}")).unwrap()).unwrap();
    let entry: Value =
        serde_json::from_slice(&read(&format!("op:{id}:ev:{seq:010}")).expect("entry written"))
            .unwrap();
    assert_eq!(
        entry["observation"]["delivery"]["idempotency_key"],
        json!(w.idempotency_key),
        "the delivery's entry is the journal's last"
    );
    assert_eq!(
        record["version"],
        json!(seq - 1),
        "the record does not include it"
    );
    assert_eq!(record["status"], "submitted");
    host.kill();

    let host = start(db, None).await;
    let api = Api::new(host.base_url());
    // The seller retries the delivery it got no 2xx for.
    let answer = w.send(&api.http, &host.base_url()).await;
    Interrupted {
        host,
        api,
        key,
        id,
        answer,
        seller,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_interrupted_after_its_journal_entry_is_applied_once_when_resent() {
    let dir = tempfile::tempdir().unwrap();
    let r = interrupted_webhook(&dir.path().join("kv.db"), None).await;
    assert_eq!(r.answer.status, 200, "{}", r.answer.body);
    assert_eq!(r.answer.body["outcome"], "duplicate");
    let op = get_op(&r.api, &r.key, &r.id).await;
    assert_eq!(op["status"], "completed", "{op}");
    let ev = events(&r.api, &r.key, &r.id).await;
    assert_eq!(transitions(&ev), ["submitted", "completed"], "{ev:?}");
    let webhook_effects: Vec<&str> = ev
        .iter()
        .filter(|e| e["source"] == "webhook")
        .map(|e| e["effect"]["effect"].as_str().unwrap())
        .collect();
    assert_eq!(webhook_effects, ["applied", "repeated_delivery"]);
    assert_eq!(r.seller.tasks_for(&r.id).len(), 1);
    assert_eq!(r.seller.calls_of("create_media_buy").len(), 1);
}

type Received = Arc<Mutex<Vec<Value>>>;

/// The buyer's notification receiver: records every body, answers 204.
async fn receiver() -> (String, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let got: Received = Arc::default();
    let g = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let g = g.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let g = g.clone();
                        async move {
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            g.lock()
                                .unwrap()
                                .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .status(204)
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

/// The change a crashed writer's entry made must still be counted in `/metrics` and
/// announced to the buyer once, like any other change.
#[tokio::test(flavor = "multi_thread")]
async fn a_change_applied_from_an_interrupted_webhook_is_still_counted_and_announced() {
    let dir = tempfile::tempdir().unwrap();
    let (callback, received) = receiver().await;
    let r = interrupted_webhook(&dir.path().join("kv.db"), Some(&callback)).await;
    assert_eq!(r.answer.status, 200, "{}", r.answer.body);
    let op = get_op(&r.api, &r.key, &r.id).await;
    assert_eq!(op["status"], "completed", "{op}");
    // Notifications not delivered at once are retried by the sweep.
    let t = now_s();
    for minutes in [1, 3, 10] {
        r.host.cron_tick(t + minutes * 60).await.unwrap();
    }
    let text = r
        .api
        .http
        .get(format!("{}/metrics", r.host.base_url()))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let m: Value = serde_json::from_str(python(&["parse_metrics.py"], &text).trim()).unwrap();
    let get = |k: &str| m.get(k).and_then(Value::as_f64);
    let announced: Vec<Value> = received
        .lock()
        .unwrap()
        .iter()
        .map(|n| n["status"].clone())
        .collect();
    let counted = (
        get("adcp_operation_transitions_total{status=completed,task=create_media_buy}"),
        get("adcp_operations{status=completed,task=create_media_buy}"),
        get("adcp_operations_open{task=create_media_buy}"),
    );
    assert_eq!(
        (counted, announced),
        (
            (Some(1.0), Some(1.0), Some(0.0)),
            vec![json!("submitted"), json!("completed")]
        ),
        "((transitions into completed, operations completed, open), notifications)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sweep_killed_mid_poll_converges_after_restart_with_each_operation_applied_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kv.db");
    let seller = TaskSeller::start().await;
    let (host, api, key) = setup(&db, &seller).await;
    // Without webhooks: polling alone completes them.
    let finals = ["completed", "failed", "canceled"];
    let mut ops = Vec::new();
    for f in finals {
        let (s, op) = api
            .call(
                "POST",
                "/api/v1/operations",
                Some(&key),
                Some(create_body(false)),
            )
            .await;
        assert_eq!((s, op["status"].as_str()), (201, Some("submitted")), "{op}");
        let id = op["operation_id"].as_str().unwrap().to_string();
        let task = op["task_id"].as_str().unwrap().to_string();
        seller.set_status(&task, f);
        ops.push((id, task, f));
    }
    let polls_of = |task: &str| {
        seller
            .calls_of("get_task_status")
            .iter()
            .filter(|a| a["task_id"] == task)
            .count()
    };

    // A tick polls the first due operation; the seller holds the poll; the host dies.
    let mut hold = seller.hold("get_task_status", HoldAt::Before);
    let host = Arc::new(host);
    let at = now_s() + 60;
    let tick = tokio::spawn({
        let host = host.clone();
        async move { host.cron_tick(at).await }
    });
    let held = hold.reached().await["task_id"]
        .as_str()
        .unwrap()
        .to_string();
    tick.abort();
    assert!(tick.await.unwrap_err().is_cancelled());
    Arc::try_unwrap(host)
        .ok()
        .expect("the tick no longer holds the host")
        .kill();
    drop(hold);
    assert_eq!(seller.calls_of("get_task_status").len(), 1);

    // Restarted at the same moment: the dead tick's sweep lease still holds, so this tick
    // does nothing (the cost of leasing the sweep, not each poll: at most one lease slot).
    let host = start(&db, None).await;
    let api = Api::new(host.base_url());
    host.cron_tick(at).await.unwrap();
    for (id, task, _) in &ops {
        let op = get_op(&api, &key, id).await;
        assert_eq!(
            polls_of(task),
            usize::from(*task == held),
            "only by the dead tick"
        );
        assert_eq!(op["status"], "submitted", "{op}");
    }
    // Once that lease has lapsed, the next tick polls them all (the held one again); later
    // ticks poll nothing more.
    host.cron_tick(at + 120).await.unwrap();
    host.cron_tick(at + 1_200).await.unwrap();
    for (id, task, f) in &ops {
        let op = get_op(&api, &key, id).await;
        assert_eq!(op["status"], *f, "{op}\n{}", host.output());
        assert_eq!(polls_of(task), if *task == held { 2 } else { 1 });
        let ev = events(&api, &key, id).await;
        assert_eq!(transitions(&ev), ["submitted", *f], "{ev:?}");
        assert_eq!(seller.tasks_for(id).len(), 1);
    }
    assert_eq!(seller.calls_of("create_media_buy").len(), ops.len());
}
