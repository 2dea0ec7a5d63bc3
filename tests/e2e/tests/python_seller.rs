//! The real components against a sales agent built on the official Python AdCP SDK
//! (`tests/peers/seller.py`): sync and async media buys, RFC 9421 and HMAC webhooks signed by
//! the seller, idempotent creation, redispatch after failures with the same key, the circuit
//! breaker, overlapping sweeps on one store, a lost response, and concurrent calls sharing
//! one MCP session. Each test fn starts one seller process (its import alone takes ~18 s) and
//! runs its scenarios in sequence, each on its own host and state file (cron ticks move a
//! host's clock forward) and its own seller id.

use e2e::proxy::Proxy;
use e2e::python_seller::PythonSeller;
use e2e::{Api, start};
use serde_json::{Value, json};
use spin_test_host::TestHost;
use std::collections::{BTreeMap, BTreeSet};

/// Starts a host. One at a time: the first start compiles the components (most of a
/// minute in a debug build) and the test fns running beside it then reuse the compilation.
async fn host(state_file: &std::path::Path, public_base_url: Option<&str>) -> TestHost {
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    start(state_file, public_base_url).await
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

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

/// One host on its own state file, reached by sellers through a proxy at `public_base_url`
/// (so RFC 9421 `@target-uri` is the URL the seller signed), with one tenant.
struct World {
    host: TestHost,
    proxy: Proxy,
    api: Api,
    key: String,
    _dir: tempfile::TempDir,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let proxy = Proxy::start().await;
        let host = host(&dir.path().join("kv.db"), Some(&proxy.url())).await;
        proxy.forward_to(host.addr());
        let api = Api::new(host.base_url());
        let key = api.tenant("Acme").await;
        World {
            host,
            proxy,
            api,
            key,
            _dir: dir,
        }
    }

    async fn register(&self, seller_id: &str, seller: &PythonSeller, mode: &str) {
        let (s, b) = self
            .api
            .call(
                "PUT",
                &format!("/api/v1/sellers/{seller_id}"),
                Some(&self.key),
                Some(json!({"mcp_url": seller.mcp_url, "credentials": "buyer-token", "webhook_mode": mode})),
            )
            .await;
        assert_eq!(s, 201, "{b}\n{}", self.host.output());
    }

    async fn create(&self, seller_id: &str, webhook: bool) -> Value {
        let (s, op) = self
            .api
            .call(
                "POST",
                "/api/v1/operations",
                Some(&self.key),
                Some(create_body(seller_id, webhook)),
            )
            .await;
        assert_eq!(s, 201, "{op}\n{}", self.host.output());
        op
    }

    async fn op(&self, id: &str) -> Value {
        let (s, op) = self
            .api
            .call(
                "GET",
                &format!("/api/v1/operations/{id}"),
                Some(&self.key),
                None,
            )
            .await;
        assert_eq!(s, 200, "{op}");
        op
    }

    async fn seller_view(&self, seller_id: &str) -> Value {
        let (s, v) = self
            .api
            .call(
                "GET",
                &format!("/api/v1/sellers/{seller_id}"),
                Some(&self.key),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }

    /// Fires ticks at `start + step * i` (i = 1..=12) until each `(operation, status)` holds;
    /// returns the last tick's timestamp.
    async fn tick_until(&self, want: &[(&str, &str)], start: u64, step: u64) -> u64 {
        for i in 1..=12 {
            let ts = start + step * i;
            self.host.cron_tick(ts).await.unwrap();
            let mut done = true;
            for (id, status) in want {
                done &= self.op(id).await["status"] == *status;
            }
            if done {
                return ts;
            }
        }
        let mut states = Vec::new();
        for (id, _) in want {
            states.push(self.op(id).await);
        }
        panic!(
            "{want:?} not reached after 12 ticks: {states:#?}\n{}",
            self.host.output()
        );
    }
}

fn id(op: &Value) -> String {
    op["operation_id"]
        .as_str()
        .expect("operation_id")
        .to_string()
}

/// The media buys the seller holds for an operation.
async fn buys_for(seller: &PythonSeller, op: &str) -> Vec<Value> {
    seller.media_buys().await["media_buys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["operation_id"] == op)
        .cloned()
        .collect()
}

/// Asserts every `create_media_buy` the seller received for `op` carried the same bytes, an
/// idempotency key beginning with the operation's key prefix, and that exactly one buy exists.
async fn one_buy_with_one_key(seller: &PythonSeller, w: &World, op: &str) -> Value {
    let creates = seller.calls_for("create_media_buy", op).await;
    assert!(!creates.is_empty(), "no create reached the seller for {op}");
    for c in &creates {
        assert_eq!(
            c["arguments"], creates[0]["arguments"],
            "redispatch changed the request"
        );
    }
    let key = creates[0]["arguments"]["idempotency_key"].as_str().unwrap();
    let view = w.op(op).await;
    assert_eq!(
        key[..8],
        *view["idempotency_key_prefix"].as_str().unwrap(),
        "{view}"
    );
    let all = seller.media_buys().await;
    assert_eq!(all["created_per_operation_id"][op], 1, "{all}");
    assert_eq!(all["created_per_idempotency_key"][key], 1, "{all}");
    let buys = buys_for(seller, op).await;
    assert_eq!(buys.len(), 1);
    buys[0].clone()
}

/// Completes the seller's task for `op` with a webhook and checks the orchestrator applied it.
async fn complete_by_webhook(seller: &PythonSeller, w: &World, seller_id: &str, mode: &str) {
    w.register(seller_id, seller, mode).await;
    let op = w.create(seller_id, true).await;
    let op_id = id(&op);
    assert_eq!(op["status"], "submitted", "{op}");
    assert_eq!(op["webhook_mode"], mode, "{op}");
    let task_id = op["task_id"].as_str().expect("task_id").to_string();
    let creates = seller.calls_for("create_media_buy", &op_id).await;
    let pnc = &creates[0]["arguments"]["push_notification_config"];
    // Our public URL; an RFC 9421 one also names its signer (tenant and seller).
    let url = pnc["url"].as_str().expect("webhook url");
    let rest = url
        .strip_prefix(&format!("{}/webhooks/adcp/{op_id}", w.proxy.url()))
        .expect("the operation's webhook URL");
    match mode {
        "rfc9421" => assert!(rest.ends_with(&format!("/{seller_id}")), "{url}"),
        _ => assert_eq!(rest, "", "{url}"),
    }
    match mode {
        "rfc9421" => assert!(pnc.get("authentication").is_none(), "{pnc}"),
        _ => assert_eq!(pnc["authentication"]["schemes"], json!(["HMAC-SHA256"])),
    }
    let done = seller.complete(&task_id, "completed", true).await;
    let deliveries = done["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 1, "{done}");
    let body: Value =
        serde_json::from_str(deliveries[0]["body"].as_str().unwrap()).unwrap_or(Value::Null);
    assert_eq!(
        (
            deliveries[0]["status_code"].as_u64(),
            body["outcome"].as_str()
        ),
        (Some(200), Some("applied")),
        "{done}\n{}",
        w.host.output()
    );
    let got = w.op(&op_id).await;
    let buy = one_buy_with_one_key(seller, w, &op_id).await;
    assert_eq!(got["status"], "completed", "{got}");
    assert_eq!(got["result"]["media_buy_id"], buy["media_buy_id"], "{got}");
    let (_, events) = w
        .api
        .call(
            "GET",
            &format!("/api/v1/operations/{op_id}/events"),
            Some(&w.key),
            None,
        )
        .await;
    let last = events["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (&last["source"], &last["status"]),
        (&json!("webhook"), &json!("completed")),
        "{events}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_async_webhooks_idempotency_lost_response_and_concurrent_creates() {
    let (seller, w) = tokio::join!(PythonSeller::start(&["--create", "sync"]), World::new());

    // 1. A synchronous create: the seller's answer completes the operation at once.
    w.register("py-sync", &seller, "hmac").await;
    let op = w.create("py-sync", false).await;
    let op_id = id(&op);
    assert_eq!(op["status"], "completed", "{op}\n{}", seller.log());
    let buy = one_buy_with_one_key(&seller, &w, &op_id).await;
    assert_eq!(op["result"]["media_buy_id"], buy["media_buy_id"], "{op}");
    assert_eq!(buy["status"], "active");
    let create = &seller.calls_for("create_media_buy", &op_id).await[0];
    assert_eq!(create["headers"]["authorization"], "Bearer buyer-token");
    assert_eq!(create["arguments"]["packages"][0]["product_id"], "p1");

    // 3. The same API call twice with one Idempotency-Key: one operation, one seller call.
    let post = || {
        w.api
            .http
            .post(format!("{}/api/v1/operations", w.host.base_url()))
            .bearer_auth(&w.key)
            .header("content-type", "application/json")
            .header("idempotency-key", "campaign-42-buy")
            .body(create_body("py-sync", false).to_string())
            .send()
    };
    let first = post().await.unwrap();
    let first_status = first.status().as_u16();
    let a: Value = first.json().await.unwrap();
    let second = post().await.unwrap();
    let second_status = second.status().as_u16();
    let b: Value = second.json().await.unwrap();
    assert_eq!((first_status, second_status), (201, 200), "{a}\n{b}");
    assert_eq!(a["operation_id"], b["operation_id"]);
    assert_eq!(b["status"], "completed", "{b}");
    let idem_op = id(&a);
    assert_eq!(
        seller.calls_for("create_media_buy", &idem_op).await.len(),
        1
    );
    let buy = one_buy_with_one_key(&seller, &w, &idem_op).await;
    assert_eq!(b["result"]["media_buy_id"], buy["media_buy_id"]);

    // 2. Submitted now, completed later by the seller's signed webhook, in both modes.
    seller.set_mode(json!({"create": "submitted"})).await;
    complete_by_webhook(&seller, &w, "py-9421", "rfc9421").await;
    complete_by_webhook(&seller, &w, "py-hmac", "hmac").await;

    // 7. The seller creates the buy but the response is lost mid-body; the sweep resends the
    // same bytes, the seller replays its answer, and one buy exists. Once for a sync answer,
    // once for a submitted one whose task then completes by polling. Own host: ticks move
    // its clock forward.
    let w = World::new().await;
    w.register("py-drop", &seller, "hmac").await;
    seller
        .set_mode(json!({"create": "sync", "fail_next": 1, "fail_with": "drop_response"}))
        .await;
    let sync_op = w.create("py-drop", false).await;
    seller
        .set_mode(json!({"create": "submitted", "fail_next": 1, "fail_with": "drop_response"}))
        .await;
    let async_op = w.create("py-drop", false).await;
    let (sync_id, async_id) = (id(&sync_op), id(&async_op));
    for op in [&sync_op, &async_op] {
        assert_eq!(op["status"], "pending_dispatch", "{op}");
    }
    assert_eq!(seller.created_for(&sync_id).await, 1, "the create happened");
    assert_eq!(
        seller.created_for(&async_id).await,
        1,
        "the create happened"
    );
    let ts = w
        .tick_until(
            &[(&sync_id, "completed"), (&async_id, "submitted")],
            now_s(),
            60,
        )
        .await;
    let got = w.op(&sync_id).await;
    let buy = one_buy_with_one_key(&seller, &w, &sync_id).await;
    assert_eq!(got["result"]["media_buy_id"], buy["media_buy_id"], "{got}");
    assert_eq!(
        seller.calls_for("create_media_buy", &sync_id).await.len(),
        2
    );
    let pending = w.op(&async_id).await;
    let buy = one_buy_with_one_key(&seller, &w, &async_id).await;
    assert_eq!(pending["task_id"], buy["task_id"], "{pending}");
    seller
        .complete(buy["task_id"].as_str().unwrap(), "completed", false)
        .await;
    w.tick_until(&[(&async_id, "completed")], ts, 60).await;
    let got = w.op(&async_id).await;
    assert_eq!(got["result"]["media_buy_id"], buy["media_buy_id"], "{got}");
    assert_eq!(seller.created_for(&async_id).await, 1);

    // Concurrent creates to one seller (whose MCP session the orchestrator shares between
    // requests): every operation gets its own answer, promptly.
    let w = World::new().await;
    w.register("py-concurrent", &seller, "hmac").await;
    seller.set_mode(json!({"create": "sync"})).await;
    let first = w.create("py-concurrent", false).await;
    assert_eq!(first["status"], "completed", "{first}");
    let ops = futures::future::join_all((0..6).map(|_| w.create("py-concurrent", false))).await;
    let mut got = Vec::new();
    for op in &ops {
        let buys = buys_for(&seller, &id(op)).await;
        assert_eq!(buys.len(), 1, "{op}");
        got.push((
            id(op),
            op["status"].clone(),
            op["result"]["media_buy_id"].clone(),
            buys[0]["media_buy_id"].clone(),
            op["error"]["message"].clone(),
        ));
    }
    assert!(
        got.iter()
            .all(|(_, s, mine, theirs, _)| s == "completed" && mine == theirs),
        "answers lost or given to another operation \
         (operation, status, result.media_buy_id, the seller's buy for it, error): {got:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redispatch_breaker_and_overlapping_sweeps() {
    let (seller, w) = tokio::join!(PythonSeller::start(&["--create", "sync"]), World::new());

    // 4. The operation is stored, then the call fails before reaching the seller (a host
    // outbound fault); the sweep redispatches, hits a 503 once, then succeeds: every
    // attempt the seller saw carried the same key and bytes, and one buy exists.
    w.register("py-redispatch", &seller, "hmac").await;
    let mcp_authority = seller.mcp_url.trim_start_matches("http://").to_string();
    w.host.fail_outbound_matching(&mcp_authority);
    let op = w.create("py-redispatch", false).await;
    let op_id = id(&op);
    assert_eq!(op["status"], "pending_dispatch", "{op}");
    assert!(
        seller
            .calls_for("create_media_buy", &op_id)
            .await
            .is_empty()
    );
    assert_eq!(seller.created_for(&op_id).await, 0);
    w.host.clear_outbound_faults();
    seller
        .set_mode(json!({"fail_next": 1, "fail_with": "http_503"}))
        .await;
    w.tick_until(&[(&op_id, "completed")], now_s(), 60).await;
    assert_eq!(
        seller.calls_for("create_media_buy", &op_id).await.len(),
        2,
        "the 503 attempt and the successful one"
    );
    let buy = one_buy_with_one_key(&seller, &w, &op_id).await;
    assert_eq!(
        w.op(&op_id).await["result"]["media_buy_id"],
        buy["media_buy_id"]
    );

    // 5. The seller goes down: creates fail until the breaker opens; while it is open a
    // create is not even sent; once the seller is back and the reset timeout has passed,
    // the sweep's probe closes it and every operation completes with one buy.
    let w = World::new().await;
    w.register("py-breaker", &seller, "hmac").await;
    let threshold = w.seller_view("py-breaker").await["breaker"]["failure_threshold"]
        .as_u64()
        .unwrap();
    seller.set_mode(json!({"down": true})).await;
    let mut ids = Vec::new();
    for _ in 0..threshold {
        let op = w.create("py-breaker", false).await;
        assert_eq!(op["status"], "pending_dispatch", "{op}");
        ids.push(id(&op));
    }
    let breaker = w.seller_view("py-breaker").await["breaker"].clone();
    assert_eq!(
        (&breaker["state"], breaker["consecutive_failures"].as_u64()),
        (&json!("open"), Some(threshold)),
        "{breaker}"
    );
    seller.set_mode(json!({"down": false})).await;
    let held = w.create("py-breaker", false).await;
    assert_eq!(held["status"], "pending_dispatch", "{held}");
    ids.push(id(&held));
    let t0 = now_s();
    w.host.cron_tick(t0 + 20).await.unwrap();
    for op in &ids {
        assert!(
            seller.calls_for("create_media_buy", op).await.is_empty(),
            "a create reached the seller while the breaker was open"
        );
    }
    assert_eq!(
        w.seller_view("py-breaker").await["breaker"]["state"],
        "open"
    );
    let want: Vec<(&str, &str)> = ids.iter().map(|i| (i.as_str(), "completed")).collect();
    w.tick_until(&want, t0 + 20, 60).await;
    for op in &ids {
        one_buy_with_one_key(&seller, &w, op).await;
    }
    let breaker = w.seller_view("py-breaker").await["breaker"].clone();
    assert_eq!(
        (&breaker["state"], breaker["consecutive_failures"].as_u64()),
        (&json!("closed"), Some(0)),
        "{breaker}"
    );

    // 6. Two hosts on one state file sweep at the same instant: no task is polled twice in
    // one tick, every answer reaches its operation, and polling alone completes them all.
    seller.set_mode(json!({"create": "submitted"})).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kv.db");
    let (a, b) = (host(&db, None).await, host(&db, None).await);
    let api = Api::new(a.base_url());
    let key = api.tenant("Acme").await;
    let (s, v) = api
        .call(
            "PUT",
            "/api/v1/sellers/py-poll",
            Some(&key),
            Some(json!({"mcp_url": seller.mcp_url, "webhook_mode": "hmac"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let mut tasks = BTreeMap::new();
    for _ in 0..6 {
        let (s, op) = api
            .call(
                "POST",
                "/api/v1/operations",
                Some(&key),
                Some(create_body("py-poll", false)),
            )
            .await;
        assert_eq!((s, &op["status"]), (201, &json!("submitted")), "{op}");
        tasks.insert(op["task_id"].as_str().unwrap().to_string(), id(&op));
    }
    let get = async |op: &str| {
        api.call("GET", &format!("/api/v1/operations/{op}"), Some(&key), None)
            .await
            .1
    };
    // Every operation is due at the first tick: each task is polled exactly once.
    let mut ts = now_s() + 30;
    let polls = concurrent_ticks(&seller, &a, &b, ts).await;
    assert_eq!(
        polls.keys().collect::<Vec<_>>(),
        tasks.keys().collect::<Vec<_>>(),
        "{polls:?}"
    );
    assert!(
        polls.values().all(|t| t.len() == 1),
        "polled twice: {polls:?}"
    );
    for task in tasks.keys() {
        seller.complete(task, "completed", false).await;
    }
    let mut pending: BTreeSet<&String> = tasks.keys().collect();
    for _ in 0..10 {
        if pending.is_empty() {
            break;
        }
        ts += 30;
        let polls = concurrent_ticks(&seller, &a, &b, ts).await;
        assert!(
            polls.values().all(|t| t.len() == 1),
            "polled twice at {ts}: {polls:?}"
        );
        // The seller says completed now, so a task polled in this tick must be completed.
        for task in polls.keys() {
            let got = get(&tasks[task]).await;
            assert_eq!(
                got["status"],
                "completed",
                "{task} was polled after the seller completed it, but the answer did not \
                 reach its operation: {got}\n{}\n{}",
                a.output(),
                b.output()
            );
            pending.remove(task);
        }
    }
    assert!(
        pending.is_empty(),
        "never polled to completion: {pending:?}"
    );
    for (task, op) in &tasks {
        let got = get(op).await;
        let buys = buys_for(&seller, op).await;
        assert_eq!(buys.len(), 1);
        assert_eq!(buys[0]["task_id"], *task);
        assert_eq!(
            got["result"]["media_buy_id"], buys[0]["media_buy_id"],
            "{got}"
        );
    }
}

/// Fires one cron tick on both hosts at once; returns when (seller time, s) each task was
/// polled during it.
async fn concurrent_ticks(
    seller: &PythonSeller,
    a: &TestHost,
    b: &TestHost,
    ts: u64,
) -> BTreeMap<String, Vec<f64>> {
    seller.reset().await;
    let (ra, rb) = tokio::join!(a.cron_tick(ts), b.cron_tick(ts));
    ra.unwrap();
    rb.unwrap();
    let mut polls: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for c in seller.calls().await {
        if c["tool"] == "get_task_status" {
            polls
                .entry(c["arguments"]["task_id"].as_str().unwrap().to_string())
                .or_default()
                .push(c["time"].as_f64().unwrap());
        }
    }
    polls
}
