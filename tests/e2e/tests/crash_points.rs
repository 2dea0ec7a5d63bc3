//! Crash points on the real `.wasm`: every key-value call of every multi-write step is, in
//! turn, where the process dies (the test host's crash points: the instance traps before the
//! call is applied, or after, the write landed), the host is killed and a new one started on
//! the same SQLite file, and the system is driven the way its peers would drive it: the buyer
//! retries its create with the same `Idempotency-Key`, the seller resends a webhook it got no
//! 2xx for, cron ticks keep sweeping. Then:
//!
//! - every operation reaches the seller's final status, and the seller saw one media buy;
//! - every status change reached the buyer (each `webhook-id` at least once); an id arrives
//!   twice only when the dead host had already sent it (killed between the callback's answer
//!   and its record), and only that one;
//! - after one more settling tick, the auditor's next full pass repairs nothing
//!   (`adcp_audit_repairs_total` unchanged), a clean run repairs nothing at all, and no
//!   operation lease counter is left in the store.
//!
//! The steps, each first run clean to count its calls (so `N` is discovered, not written
//! down): creating an operation (the operations component: its records, listing, task index,
//! due filing, then the immediate dispatch and what it records); a seller webhook (the webhook
//! component: journal entry, effects, snapshot, then the first attempt of the notification it
//! queued); a sweep tick (the cron component: a due redispatch, a due poll, buyer notification
//! deliveries, the epoch's retention pass and reconciliation, the auditor).
//!
//! A crash after a read is applied leaves the store as a crash before the next call does, so
//! "after" points are run at writes only; and a crash before a call that follows a read with
//! nothing in between (no outbound request, no other component's call) leaves it as a crash
//! before that read, so those "before" points are not run twice. Hosts run on a virtual clock ([`HostOptions`]'s
//! offset) aligned on the 15-minute reconciliation epoch and the 60 s lease slots, so each run
//! makes the same calls; a restarted host's clock runs a minute later (the time a restart
//! takes, and what proves a dead writer's journal hole permanent).

use e2e::task_seller::TaskSeller;
use e2e::{Api, METRICS_TOKEN, repo_root, variables};
use futures::StreamExt;
use serde_json::{Value, json};
use spin_test_host::{CrashPoint, CrashWhen, HostOptions, KvCall, TestHost};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECOND_MS: u64 = 1_000;
const EPOCH_MS: u64 = 15 * 60 * SECOND_MS;
/// How long a restart takes on the virtual clock.
const RESTART_MS: u64 = 61 * SECOND_MS;
/// Virtual time per convergence round (a tick each).
const ROUND_MS: u64 = 20 * SECOND_MS;
const MAX_ROUNDS: usize = 60;
/// Crash cases run at once (each on its own host and file).
const PARALLEL: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// `POST /api/v1/operations` with its immediate dispatch.
    Create,
    /// The seller's `completed` webhook.
    Webhook,
    /// One sweep tick with a redispatch, a poll and notifications due, first in its epoch.
    Sweep,
}

impl Step {
    fn component(self) -> &'static str {
        match self {
            Step::Create => "operations",
            Step::Webhook => "webhook",
            Step::Sweep => "sweep",
        }
    }
}

/// One operation the case drives.
#[derive(Debug, Clone)]
struct Op {
    idempotency_key: String,
    id: Option<String>,
    /// Completed by the seller's webhook (else by polls).
    webhook: bool,
    /// The seller took our `completed` webhook (answered 200).
    webhook_taken: bool,
}

async fn start_host(db: &Path, clock_offset_ms: u64) -> TestHost {
    TestHost::start(HostOptions {
        manifest: repo_root().join("spin.toml"),
        state_file: db.to_path_buf(),
        variables: variables("http://placeholder.invalid"),
        clock_offset_ms,
        ..HostOptions::default()
    })
    .await
    .expect("test host starts")
}

fn real_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The clock offset that puts "now" `into_epoch_ms` into the next reconciliation epoch.
fn aligned_offset(into_epoch_ms: u64) -> u64 {
    let now = real_now_ms();
    (now / EPOCH_MS + 1) * EPOCH_MS + into_epoch_ms - now
}

/// Moves the host's clock forward to `at_ms` (virtual), if it is not there yet.
fn advance_to(host: &TestHost, at_ms: u64) {
    host.advance_clock(at_ms.saturating_sub(host.now_ms()));
}

fn body(webhook: bool) -> Value {
    json!({"seller_id": "ssp", "task": "create_media_buy", "webhook": webhook, "arguments": {
        "account": {"account_id": "acc_1"}, "brand": {"domain": "acme.example"},
        "start_time": "asap", "end_time": "2027-01-31T23:59:59Z",
        "packages": [{"product_id": "p1", "budget": 5000, "pricing_option_id": "cpm"}]}})
}

/// One create as the buyer sends it: `Err` when no answer came.
async fn post_create(api: &Api, key: &str, op: &Op) -> Result<(u16, Value), String> {
    let resp = api
        .http
        .post(format!("{}/api/v1/operations", api.base))
        .bearer_auth(key)
        .header("idempotency-key", &op.idempotency_key)
        .json(&body(op.webhook))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

/// `adcp_audit_repairs_total` by invariant.
fn repairs(metrics: &str) -> BTreeMap<String, u64> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("adcp_audit_repairs_total{"))
        .filter_map(|l| {
            let (labels, n) = l.split_once("} ")?;
            Some((labels.to_string(), n.trim().parse::<u64>().ok()?))
        })
        .collect()
}

/// What the auditor repaired between two readings, by invariant.
fn repaired(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> Vec<String> {
    after
        .iter()
        .filter_map(|(k, n)| {
            let d = n - before.get(k).copied().unwrap_or(0);
            (d > 0).then(|| format!("{k}: {d}"))
        })
        .collect()
}

/// One run of a step: a fresh file, tenant, seller and buyer receiver.
struct Case {
    _dir: tempfile::TempDir,
    db: PathBuf,
    host: Option<TestHost>,
    api: Api,
    key: String,
    seller: TaskSeller,
    received: Arc<Mutex<Vec<String>>>,
    ops: Vec<Op>,
}

/// What a run found.
#[derive(Debug, Default)]
struct Outcome {
    /// The calls of the step, in crash-point numbering.
    trace: Vec<KvCall>,
    /// For each call: a crash before it leaves the store as a crash before the previous one
    /// does (that was a read, and nothing else, no outbound request nor another
    /// component's call, happened in between), so its "before" point needs no run.
    repeats_before: Vec<bool>,
    /// The crash point fired.
    fired: bool,
    /// Repairs the auditor made on the way to convergence, by invariant.
    repairs: Vec<String>,
    /// Operation lease counters still in the store at the end.
    leases_left: usize,
    /// `webhook-id`s the buyer got twice (sent by the dead host, then again).
    resent: Vec<String>,
    rounds: usize,
}

impl Case {
    fn host(&self) -> &TestHost {
        self.host.as_ref().expect("a running host")
    }

    async fn new() -> Case {
        // In memory where there is a tmpfs: a process kill loses nothing a disk would keep
        // (fsync matters only for power loss), and hundreds of files are made here.
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm).unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        let db = dir.path().join("kv.db");
        let seller = TaskSeller::start().await;
        let (hook, received) = e2e::receiver::start().await;
        // Epoch E+13:50: the Sweep step's tick (E+1, 00:10) is its epoch's first.
        let host = start_host(&db, aligned_offset(13 * 60 * SECOND_MS + 50 * SECOND_MS)).await;
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
        let (s, b) = api
            .call(
                "PUT",
                "/api/v1/callback",
                Some(&key),
                Some(json!({"url": hook})),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        Case {
            _dir: dir,
            db,
            host: Some(host),
            api,
            key,
            seller,
            received,
            ops: Vec::new(),
        }
    }

    fn op(&mut self, key: &str, webhook: bool) -> usize {
        self.ops.push(Op {
            idempotency_key: key.into(),
            id: None,
            webhook,
            webhook_taken: false,
        });
        self.ops.len() - 1
    }

    /// Creates operation `i` on a healthy host; returns its view.
    async fn create_clean(&mut self, i: usize) -> Value {
        let (s, v) = post_create(&self.api, &self.key, &self.ops[i])
            .await
            .expect("answered");
        assert!(s == 201 || s == 200, "{s} {v}");
        self.ops[i].id = Some(v["operation_id"].as_str().unwrap().to_string());
        v
    }

    fn task_of(&self, i: usize) -> Option<String> {
        let id = self.ops[i].id.as_ref()?;
        self.seller.tasks_for(id).first().map(|t| t.task_id.clone())
    }

    /// The seller's `completed` webhook for operation `i`, sent at the host's time: `None` when
    /// the host gave no answer.
    async fn send_completed(&mut self, i: usize) -> Option<u16> {
        let task = self.task_of(i)?;
        self.seller.set_status(&task, "completed");
        let w = self
            .seller
            .webhook(&task, "completed", "2026-11-22T10:00:02Z");
        let host = self.host();
        let d = w
            .send_at(&self.api.http, &host.base_url(), host.now_ms() / 1000)
            .await
            .ok()?;
        assert!(
            d.status == 200 || d.status >= 500,
            "webhook refused: {} {}",
            d.status,
            d.body
        );
        if d.status == 200 {
            self.ops[i].webhook_taken = true;
            // The component makes the first attempt of the notification it queued after
            // answering, seconds before the sweep may: let it finish before the virtual clock
            // brings the sweep.
            self.host().wait_idle(Duration::from_secs(5)).await;
        }
        Some(d.status)
    }

    /// The state before the step, made on a healthy host.
    async fn prepare(&mut self, step: Step) {
        match step {
            Step::Create => {
                self.op("crash-point-create", true);
            }
            Step::Webhook => {
                let i = self.op("crash-point-webhook", true);
                let v = self.create_clean(i).await;
                assert_eq!(v["status"], "submitted", "{v}");
            }
            Step::Sweep => {
                let host = self.host();
                // The due index's cursor starts here (a first tick reads an hour back).
                host.cron_tick_now().await.unwrap();
                // A: its dispatch fails (seller unreachable): a redispatch is due in 60 s.
                let a = self.op("crash-point-sweep-redispatch", true);
                self.host().fail_outbound_matching(&self.seller.url);
                let v = self.create_clean(a).await;
                self.host().clear_outbound_faults();
                assert_eq!(v["status"], "pending_dispatch", "{v}");
                // B: no webhook, completed at the seller: a poll is due within 5 s.
                let b = self.op("crash-point-sweep-poll", false);
                let v = self.create_clean(b).await;
                assert_eq!(v["status"], "submitted", "{v}");
                let task = self.task_of(b).unwrap();
                self.seller.set_status(&task, "completed");
                // The tick: the first of the next epoch at least 2 minutes on (the
                // redispatch is due by then, wherever in an epoch the test started).
                let due = self.host().now_ms() + 120 * SECOND_MS;
                let at = (due / EPOCH_MS + 1) * EPOCH_MS + 10 * SECOND_MS;
                advance_to(self.host(), at);
            }
        }
    }

    /// The step itself; whatever it answers (nothing, when the host died).
    async fn act(&mut self, step: Step) {
        match step {
            Step::Create => {
                if let Ok((s, v)) = post_create(&self.api, &self.key, &self.ops[0]).await
                    && (s == 200 || s == 201)
                {
                    self.ops[0].id = Some(v["operation_id"].as_str().unwrap().to_string());
                }
            }
            Step::Webhook => {
                // Waits for the component's work after answering (its notification attempt).
                self.send_completed(0).await;
                self.host().wait_idle(Duration::from_secs(5)).await;
            }
            Step::Sweep => {
                let _ = self.host().cron_tick_now().await;
                if !self.host().crashed() {
                    // What the tick is there for: the redispatch and the poll.
                    let (a, b) = (self.ops[0].id.clone(), self.ops[1].id.clone());
                    assert_eq!(self.seller.tasks_for(&a.unwrap()).len(), 1, "redispatched");
                    let task = self.task_of(1).unwrap();
                    let polled = self.seller.calls_of("get_task_status");
                    assert!(polled.iter().any(|c| c["task_id"] == json!(task)), "polled");
                    let v = self
                        .get(&format!("/api/v1/operations/{}", b.unwrap()))
                        .await;
                    assert_eq!(v.unwrap()["status"], "completed");
                    assert!(!self.received.lock().unwrap().is_empty(), "notified");
                }
            }
        }
    }

    async fn get(&self, path: &str) -> Option<Value> {
        let (s, v) = self.api.call("GET", path, Some(&self.key), None).await;
        (s == 200).then_some(v)
    }

    async fn metrics(&self) -> String {
        self.api
            .http
            .get(format!("{}/metrics", self.host().base_url()))
            .bearer_auth(METRICS_TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Drives every operation to `completed` and every change to the buyer. Returns the
    /// rounds it took and the notification ids the changes call for.
    async fn converge(&mut self, what: &str) -> (usize, BTreeSet<String>) {
        let mut expected = BTreeSet::new();
        for round in 0..MAX_ROUNDS {
            // The buyer: a create it got no answer for is sent again, same key.
            for i in 0..self.ops.len() {
                if self.ops[i].id.is_none()
                    && let Ok((s, v)) = post_create(&self.api, &self.key, &self.ops[i]).await
                {
                    match s {
                        200 | 201 => {
                            self.ops[i].id = Some(v["operation_id"].as_str().unwrap().to_string())
                        }
                        500..=599 => {}
                        _ => panic!("{what}: create refused: {s} {v}"),
                    }
                }
            }
            // The seller: works each task it has, resending its webhook until taken.
            for i in 0..self.ops.len() {
                if self.ops[i].webhook && !self.ops[i].webhook_taken {
                    self.send_completed(i).await;
                }
            }
            let mut settled = true;
            expected.clear();
            for op in &self.ops {
                let Some(id) = &op.id else {
                    settled = false;
                    continue;
                };
                let v = self.get(&format!("/api/v1/operations/{id}")).await;
                settled &= v.as_ref().is_some_and(|v| v["status"] == "completed");
                let Some(ev) = self.get(&format!("/api/v1/operations/{id}/events")).await else {
                    settled = false;
                    continue;
                };
                for e in ev["events"].as_array().unwrap() {
                    if matches!(e["effect"]["effect"].as_str(), Some("applied" | "overrode")) {
                        expected.insert(format!("ntf_{id}_{}", e["seq"]));
                    }
                }
            }
            let got: BTreeSet<String> = self.received.lock().unwrap().iter().cloned().collect();
            if settled && expected.is_subset(&got) {
                return (round, expected);
            }
            let host = self.host();
            host.advance_clock(ROUND_MS);
            let _ = host.cron_tick_now().await;
        }
        let statuses = futures::future::join_all(self.ops.iter().map(|o| async {
            match &o.id {
                None => Value::Null,
                Some(id) => self
                    .get(&format!("/api/v1/operations/{id}/events"))
                    .await
                    .unwrap_or(Value::Null),
            }
        }))
        .await;
        panic!(
            "{what}: no convergence in {MAX_ROUNDS} rounds: ops {:?}, events {statuses:?}, \
             received {:?}, expected {expected:?}\n{}",
            self.ops,
            self.received.lock().unwrap(),
            self.host().output()
        );
    }
}

/// Runs `step` once, crashing at `crash` (or clean), and checks convergence.
async fn run(step: Step, crash: Option<(u64, CrashWhen)>) -> Outcome {
    let what = format!("{step:?} crash {crash:?}");
    let mut case = Case::new().await;
    case.prepare(step).await;
    let metrics_before = repairs(&case.metrics().await);
    let host = case.host();
    host.trace_kv_calls(true);
    if let Some((nth, when)) = crash {
        host.crash_at_kv_call(CrashPoint {
            nth,
            component: Some(step.component().into()),
            kind: None,
            when,
        });
    }
    case.act(step).await;
    let host = case.host();
    let (mut trace, mut repeats_before) = (Vec::new(), Vec::new());
    let mut after_a_read = false;
    for call in host.kv_call_trace() {
        if call.outbound_before > 0 || call.component != step.component() {
            after_a_read = false;
        }
        if call.component != step.component() {
            continue;
        }
        repeats_before.push(after_a_read);
        after_a_read = !call.op.writes();
        trace.push(call);
    }
    let mut out = Outcome {
        trace,
        repeats_before,
        fired: host.crashed(),
        ..Default::default()
    };
    host.trace_kv_calls(false);
    let mut sent_by_dead = BTreeSet::new();
    if crash.is_some() {
        // The process died: a new one on the same file, a minute later.
        let host = case.host.take().unwrap();
        let offset = host.clock_offset_ms();
        host.kill();
        tokio::time::sleep(Duration::from_millis(50)).await;
        sent_by_dead = case.received.lock().unwrap().iter().cloned().collect();
        let host = start_host(&case.db, offset + RESTART_MS).await;
        case.api = Api::new(host.base_url());
        case.host = Some(host);
    }
    let (rounds, expected) = case.converge(&what).await;
    out.rounds = rounds;
    for (i, op) in case.ops.iter().enumerate() {
        let id = op.id.as_ref().unwrap();
        let tasks = case.seller.tasks_for(id);
        assert_eq!(tasks.len(), 1, "{what}: op {i}: one media buy");
        let creates: Vec<Value> = case
            .seller
            .calls_of("create_media_buy")
            .into_iter()
            .filter(|a| a["context"]["operation_id"] == json!(id))
            .collect();
        assert!(
            creates.iter().all(|c| *c == creates[0]),
            "{what}: op {i}: resent with the same key and bytes"
        );
        let ev = case
            .get(&format!("/api/v1/operations/{id}/events"))
            .await
            .unwrap();
        let transitions: Vec<&str> = ev["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| matches!(e["effect"]["effect"].as_str(), Some("applied" | "overrode")))
            .map(|e| e["effect"]["status"].as_str().unwrap())
            .collect();
        let distinct: BTreeSet<&str> = transitions.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            transitions.len(),
            "{what}: op {i}: each status applied once: {transitions:?}"
        );
        assert_eq!(transitions.last(), Some(&"completed"), "{what}: op {i}");
    }
    let sent = case.received.lock().unwrap().clone();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for id in &sent {
        *counts.entry(id).or_default() += 1;
    }
    let unexpected: Vec<&&str> = counts
        .keys()
        .filter(|id| !expected.contains(**id))
        .collect();
    assert!(
        unexpected.is_empty(),
        "{what}: notifications of no change: {unexpected:?}"
    );
    out.resent = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id.to_string())
        .collect();
    assert!(
        out.resent.len() <= 1
            && out
                .resent
                .iter()
                .all(|id| counts[id.as_str()] == 2 && sent_by_dead.contains(id)),
        "{what}: sent again only the one the dead host had sent: {counts:?}, dead host sent \
         {sent_by_dead:?}"
    );

    // Leftovers of the crash the auditor may still find once their time has passed (a dead
    // holder's lease in an ended slot): a tick three minutes on; then its next full pass (one
    // tick checks 500 listing entries) must repair nothing.
    let host = case.host();
    host.advance_clock(180 * SECOND_MS);
    host.cron_tick_now().await.unwrap();
    let settled = repairs(&case.metrics().await);
    out.repairs = repaired(&metrics_before, &settled);
    let host = case.host();
    host.advance_clock(30 * SECOND_MS);
    host.cron_tick_now().await.unwrap();
    let after = repairs(&case.metrics().await);
    assert_eq!(
        after,
        settled,
        "{what}: the auditor's next full pass repairs nothing\n{}",
        case.host().output()
    );
    if crash.is_none() {
        assert!(
            out.repairs.is_empty(),
            "{what}: a clean run repairs nothing"
        );
        assert!(out.resent.is_empty(), "{what}: a clean run sends each once");
    }
    if let Some(h) = case.host.take() {
        h.kill();
    }
    out
}

/// The clean run, then every crash point of `step`; fails with every point that did not
/// converge.
async fn every_crash_point(step: Step, check_clean: impl Fn(&Outcome)) {
    let started = std::time::Instant::now();
    let clean = run(step, None).await;
    check_clean(&clean);
    let n = clean.trace.len() as u64;
    let mut points = Vec::new();
    for (i, call) in clean.trace.iter().enumerate() {
        if !clean.repeats_before[i] {
            points.push((i as u64 + 1, CrashWhen::BeforeApplied));
        }
        if call.op.writes() {
            points.push((i as u64 + 1, CrashWhen::AfterApplied));
        }
    }
    let writes = clean.trace.iter().filter(|c| c.op.writes()).count();
    // `CRASH_POINTS=before:3,after:7` runs only those points (to repeat a failure);
    // `CRASH_POINTS=none` only the clean run.
    if let Ok(only) = std::env::var("CRASH_POINTS") {
        let chosen: Vec<(u64, CrashWhen)> = only
            .split(',')
            .filter_map(|p| {
                let (when, n) = p.split_once(':')?;
                let when = match when {
                    "before" => CrashWhen::BeforeApplied,
                    "after" => CrashWhen::AfterApplied,
                    _ => return None,
                };
                Some((n.parse().ok()?, when))
            })
            .collect();
        points.retain(|p| chosen.contains(p));
    }
    let results: Vec<_> = futures::stream::iter(points.clone())
        .map(|p| async move {
            let t = std::time::Instant::now();
            let r = tokio::spawn(run(step, Some(p))).await;
            (p, r, t.elapsed())
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let mut failures = Vec::new();
    let mut not_reached = 0;
    let mut repairs_at = Vec::new();
    let mut resent = 0;
    let (mut rounds, mut busy) = (0, Duration::ZERO);
    let mut leases_left = Vec::new();
    for ((nth, when), r, took) in results {
        busy += took;
        let call = &clean.trace[nth as usize - 1];
        let kind = format!("{:?} {}", call.op, call.key);
        match r {
            Ok(o) => {
                not_reached += usize::from(!o.fired);
                if !o.repairs.is_empty() {
                    repairs_at.push(format!("{when:?} {nth} ({kind}): {}", o.repairs.join(", ")));
                }
                resent += o.resent.len();
                rounds += o.rounds;
                if o.leases_left > 0 {
                    leases_left.push(format!("{when:?} {nth}"));
                }
            }
            Err(e) => {
                let msg = e
                    .try_into_panic()
                    .ok()
                    .and_then(|p| {
                        p.downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    })
                    .unwrap_or_default();
                let short: String = msg.chars().take(3000).collect();
                failures.push(format!("{when:?} at call {nth} ({kind}): {short}"));
            }
        }
    }
    eprintln!(
        "crash points, {step:?}: N = {n} calls ({writes} writes) of `{}`: {} points, {} \
         failed, {not_reached} not reached, {resent} notifications sent twice, auditor \
         repairs at {repairs_at:?}; dead holders' lease counters left at {leases_left:?}; {:.1} rounds and {:.1?} per point; calls {:?}; {:.0?}",
        step.component(),
        points.len(),
        failures.len(),
        rounds as f64 / points.len().max(1) as f64,
        busy / points.len().max(1) as u32,
        clean
            .trace
            .iter()
            .map(|c| format!("{:?} {}", c.op, c.key))
            .collect::<Vec<_>>(),
        started.elapsed(),
    );
    assert!(
        failures.is_empty(),
        "{} of {} crash points of {step:?} did not converge:\n{}",
        failures.len(),
        points.len(),
        failures.join("\n\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_killed_at_any_store_call_converges_after_restart() {
    every_crash_point(Step::Create, |o| {
        assert!(o.trace.len() >= 10, "{:?}", o.trace);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_killed_at_any_store_call_converges_when_resent() {
    every_crash_point(Step::Webhook, |o| {
        assert!(o.trace.len() >= 5, "{:?}", o.trace);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_tick_killed_at_any_store_call_converges_after_restart() {
    every_crash_point(Step::Sweep, |o| {
        assert!(o.trace.len() >= 10, "{:?}", o.trace);
    })
    .await;
}
