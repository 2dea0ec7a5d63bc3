//! Reconciliation with each seller's `list_tasks`, once per epoch across all replicas (claimed
//! with `increment == 1`). An untracked non-terminal seller task (its create lost with its answer,
//! or made outside this orchestrator with our credentials) is adopted and polled; a tracked open
//! task the seller no longer lists is polled now, not at its backed-off time. Tasks are tracked
//! when an operation first learns its task id ([`crate::records::indexes::track`]).

use crate::config::SweepConfig;
use crate::foundation::clock::Entropy;
use crate::foundation::cx::Cx;
use crate::foundation::keys;
use crate::foundation::log;
use crate::foundation::store::{Store, get_counter, get_decimal, get_json, set_json};
use crate::lifecycle::create::{Filing, Stored, store_new};
use crate::model::operation::{NewOperation, Operation};
use crate::model::payload::rfc3339_ms;
use crate::model::status::{OperationStatus, TaskStatus};
use crate::model::task::TaskKind;
use crate::records::journal::JournalResult;
use crate::records::seller::{self, Seller};
use crate::schedule::due::DueConfig;
use crate::schedule::poll::{PollState, schedule_at};
use crate::seller::{port::SellerCalls, tools::seller_tools};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashSet;

/// How often the seller task lists are reconciled.
pub const EPOCH_MS: u64 = 15 * 60_000;
/// How long after its creation a listed task may still be one of our dispatches in flight
/// (the dispatch's whole call is at most 30 s; its recording follows at once).
const DISPATCH_IN_FLIGHT_MS: u64 = 10 * 60_000;
/// Pages of `list_tasks` read per seller per run (100 tasks each).
const MAX_PAGES: usize = 20;
/// Tracked tasks checked per seller per run; the rest next time (a cursor walks the index).
const CHECKS_PER_RUN: u64 = 500;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    pub listed: usize,
    pub adopted: Vec<String>,
    pub repolled: Vec<String>,
    /// Operations removed by retention in the same run.
    pub purged: usize,
    /// A store failure cost part of the run (a task, a seller, retention).
    pub failed: bool,
}

/// Runs reconciliation if this epoch's run is not claimed yet. A store failure costs only the
/// task or seller it happened in (logged); a run that had one gives its claim back, so a
/// later tick of the same epoch runs again (every step is idempotent), at most
/// [`RUNS_PER_EPOCH`] times.
pub async fn run_if_due(
    cx: Cx<'_, impl Store>,
    entropy: &dyn Entropy,
    config: &SweepConfig,
    calls: &impl SellerCalls,
) -> JournalResult<Option<Reconciled>> {
    let Cx { store, clock, .. } = cx;
    let epoch = clock.now_ms() / EPOCH_MS;
    if store.increment(&keys::reconcile_claim(epoch), 1).await? != 1 {
        return Ok(None);
    }
    let runs = match store.increment(&keys::reconcile_runs(epoch), 1).await {
        Ok(runs) => runs,
        Err(e) => {
            let _ = store.delete(&keys::reconcile_claim(epoch)).await;
            return Err(e.into());
        }
    };
    let mut total = Reconciled::default();
    // Earlier epochs' keys are no longer contended (a replica lagging behind that re-claims
    // one only repeats an idempotent run); two are tried, so one failed delete leaves none.
    let mut failed = false;
    for earlier in [epoch.saturating_sub(1), epoch.saturating_sub(2)] {
        for key in [
            keys::reconcile_claim(earlier),
            keys::reconcile_runs(earlier),
        ] {
            if let Err(e) = store.delete(&key).await {
                failed |= report_failure(cx, "claim", &e.into());
            }
        }
    }
    match super::purge::run(cx, &config.retention).await {
        Ok(n) => total.purged = n,
        Err(e) => failed |= report_failure(cx, "retention", &e),
    }
    let sellers = match seller::all(store).await {
        Ok(sellers) => sellers,
        Err(e) => {
            failed |= report_failure(cx, "sellers", &e.into());
            Vec::new()
        }
    };
    for s in sellers {
        // One slow seller costs this much of a tick, not its every call's own limit.
        calls.set_deadline(Some(clock.now_ms() + SELLER_SHARE_MS));
        let reconciled = reconcile_seller(cx, entropy, config, calls, &s).await;
        calls.set_deadline(None);
        match reconciled {
            Ok(r) => {
                failed |= r.failed;
                total.listed += r.listed;
                total.adopted.extend(r.adopted);
                total.repolled.extend(r.repolled);
            }
            Err(e) => failed |= report_failure(cx, &s.seller_id, &e),
        }
    }
    if failed && runs < RUNS_PER_EPOCH {
        // Best effort: if this fails too, the next epoch runs again.
        let _ = store.delete(&keys::reconcile_claim(epoch)).await;
    }
    total.failed = failed;
    Ok(Some(total))
}

/// The time a run gives each seller's calls (its task listing, and the tool list).
const SELLER_SHARE_MS: u64 = 5_000;

/// Runs of one epoch at most: the first, and reruns after store failures.
const RUNS_PER_EPOCH: i64 = 3;

/// Logs a failure of one part of the run; always `true` (the run had a failure).
fn report_failure(
    cx: Cx<'_, impl Store>,
    part: &str,
    e: &crate::records::journal::JournalError,
) -> bool {
    log::emit(
        cx.log,
        &log::Event {
            ts_ms: cx.clock.now_ms(),
            event: "reconcile.error",
            seller_id: Some(part),
            detail: Some(log::capped(&e.to_string())),
            ..Default::default()
        },
    );
    true
}

/// Reconciles one seller. A seller that cannot list its tasks is left to polling.
pub async fn reconcile_seller(
    cx: Cx<'_, impl Store>,
    entropy: &dyn Entropy,
    config: &SweepConfig,
    calls: &impl SellerCalls,
    seller: &Seller,
) -> JournalResult<Reconciled> {
    let Cx { store, clock, .. } = cx;
    let mut out = Reconciled::default();
    if !seller_tools(store, clock, calls, seller).await?.list_tasks {
        return Ok(out);
    }
    let mut listed: HashSet<String> = HashSet::new();
    let mut cursor: Option<String> = None;
    let mut complete = false;
    for _ in 0..MAX_PAGES {
        let mut pagination = json!({ "max_results": 100 });
        if let Some(c) = &cursor {
            pagination["cursor"] = json!(c);
        }
        let args = json!({
            "filters": { "statuses": ["submitted", "working", "input-required", "auth-required"] },
            "pagination": pagination,
        });
        let Ok(page) = calls.call(seller, "list_tasks", args).await else {
            return Ok(out);
        };
        for t in page
            .get("tasks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(task_id) = t.get("task_id").and_then(Value::as_str) else {
                continue;
            };
            listed.insert(task_id.to_string());
            out.listed += 1;
            match adopt_if_untracked(cx, entropy, config, seller, task_id, t).await {
                Ok(Some(id)) => out.adopted.push(id),
                Ok(None) => {}
                Err(e) => out.failed |= report_failure(cx, &seller.seller_id, &e),
            }
        }
        cursor = page
            .pointer("/pagination/cursor")
            .and_then(Value::as_str)
            .filter(|_| {
                page.pointer("/pagination/has_more")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
            })
            .map(str::to_string);
        if cursor.is_none() {
            complete = true;
            break;
        }
    }
    if complete {
        // Only a complete listing proves a task missing from it.
        let r = repoll_missing(cx, &config.due, seller, &listed).await?;
        out.repolled = r.repolled;
        out.failed |= r.failed;
    }
    Ok(out)
}

async fn adopt_if_untracked(
    cx: Cx<'_, impl Store>,
    entropy: &dyn Entropy,
    config: &SweepConfig,
    seller: &Seller,
    task_id: &str,
    listed: &Value,
) -> JournalResult<Option<String>> {
    let key = keys::task_of(&seller.tenant_id, &seller.seller_id, task_id);
    if cx.store.get(&key).await?.is_some() {
        return Ok(None);
    }
    adopt(cx, entropy, config, seller, task_id, listed).await
}

/// Adopts an untracked seller task as an operation (deterministic id: racing runs adopt
/// it once). Only the task types this orchestrator runs are adopted.
#[allow(clippy::too_many_arguments)]
async fn adopt(
    cx: Cx<'_, impl Store>,
    entropy: &dyn Entropy,
    config: &SweepConfig,
    seller: &Seller,
    task_id: &str,
    listed: &Value,
) -> JournalResult<Option<String>> {
    let Cx { clock, log, .. } = cx;
    let Some(kind) = listed
        .get("task_type")
        .and_then(Value::as_str)
        .and_then(TaskKind::parse)
    else {
        return Ok(None);
    };
    let said = listed.get("status").and_then(Value::as_str);
    // A task the seller reports finished has nothing left to track: adopting it would only
    // open an operation for an outcome nobody asked us about.
    if said
        .and_then(TaskStatus::parse)
        .is_some_and(TaskStatus::is_terminal)
    {
        return Ok(None);
    }
    let now = clock.now_ms();
    // A task this young may be one of our dispatches still waiting for its answer, which
    // tracks it; a later epoch adopts it if nobody did.
    let created = (listed.get("created_at").and_then(Value::as_str)).and_then(rfc3339_ms);
    if created.is_some_and(|c| c.saturating_add(DISPATCH_IN_FLIGHT_MS) > now) {
        return Ok(None);
    }
    // A status outside the enum is adopted as unknown: reconciliation keeps looking.
    let status = said
        .and_then(TaskStatus::parse)
        .unwrap_or(TaskStatus::Unknown);
    let id = crate::lifecycle::linked::derived_id(
        &format!("adopt:{}:{}", seller.tenant_id, seller.seller_id),
        task_id,
    );
    let new = NewOperation {
        operation_id: id.clone(),
        tenant_id: seller.tenant_id.clone(),
        seller_id: seller.seller_id.clone(),
        task: kind,
        arguments: json!({}),
        // Never dispatched: the seller already holds the task.
        idempotency_key: crate::foundation::clock::uuid_v4(entropy),
        status: OperationStatus::Seller(status),
        task_id: Some(task_id.to_string()),
        message: Some("adopted from the seller's list_tasks".into()),
        deadline_ms: config.deadlines.for_task_ms(kind.name()),
        linked_from: None,
    };
    let op = Operation::new(new, now);
    match store_new(cx, &config.due, &op, now, Filing::Complete).await? {
        Stored::Created(_) => {
            log::emit(
                log,
                &log::Event {
                    ts_ms: now,
                    event: "operation.adopted",
                    operation_id: Some(&id),
                    tenant_id: Some(&seller.tenant_id),
                    seller_id: Some(&seller.seller_id),
                    status: Some(status.as_str()),
                    ..Default::default()
                },
            );
            Ok(Some(id))
        }
        Stored::Existing(_) => Ok(None),
    }
}

/// Files for an immediate poll the tracked open tasks the seller no longer lists, walking the
/// tracked-task index from a cursor, a bounded number per run, and pruning it: an entry whose
/// operation is closed (never an open seller task again) or gone is deleted, and the first still
/// present is kept as the low end, so walks skip what retention and outcomes left behind.
async fn repoll_missing(
    cx: Cx<'_, impl Store>,
    due: &DueConfig,
    seller: &Seller,
    listed: &HashSet<String>,
) -> JournalResult<Repolled> {
    let store = cx.store;
    let (t, s) = (&seller.tenant_id, &seller.seller_id);
    let count = get_counter(store, &keys::seller_tasks_count(t, s))
        .await?
        .max(0) as u64;
    if count == 0 {
        return Ok(Repolled::default());
    }
    let low_key = keys::seller_tasks_low(t, s);
    let mark: LowMark = get_json(store, &low_key).await?.unwrap_or_default();
    let low = mark.low.max(1);
    if low > count {
        return Ok(Repolled::default());
    }
    let cursor_key = keys::reconcile_cursor(t, s);
    let start = get_decimal::<u64>(store, &cursor_key)
        .await?
        .filter(|c| (low..=count).contains(c))
        .unwrap_or(low);
    let mut out = Repolled::default();
    let mut new_low = low;
    let mut n = start;
    for _ in 0..CHECKS_PER_RUN.min(count - low + 1) {
        // A failure on one entry keeps it (it is looked at again next run), never the walk.
        let gone = match tracked_entry(cx, due, seller, n, &mark, listed, &mut out.repolled).await {
            Ok(gone) => gone,
            Err(e) => {
                out.failed |= report_failure(cx, s, &e);
                false
            }
        };
        if gone && n == new_low {
            new_low = n + 1;
        }
        if new_low > count {
            break;
        }
        n = if n >= count { new_low } else { n + 1 };
    }
    let next_mark = LowMark {
        low: new_low,
        counted: count,
    };
    if next_mark != mark {
        set_json(store, &low_key, &next_mark).await?;
    }
    store.set(&cursor_key, n.to_string().as_bytes()).await?;
    Ok(out)
}

#[derive(Debug, Default)]
struct Repolled {
    repolled: Vec<String>,
    failed: bool,
}

/// Looks at tracked-task entry `n`: files its operation for a poll now if its open task is no
/// longer listed. Returns whether the entry is gone for good (deleted, or a hole).
async fn tracked_entry(
    cx: Cx<'_, impl Store>,
    due: &DueConfig,
    seller: &Seller,
    n: u64,
    mark: &LowMark,
    listed: &HashSet<String>,
    repolled: &mut Vec<String>,
) -> JournalResult<bool> {
    let Cx { store, clock, .. } = cx;
    let entry_key = keys::seller_tasks_entry(&seller.tenant_id, &seller.seller_id, n);
    let Some(id) = store.get(&entry_key).await? else {
        // An empty slot counted by an earlier walk is a hole for good; a newer one may be a
        // `track` whose entry is still being written.
        return Ok(n <= mark.counted);
    };
    let id = String::from_utf8_lossy(&id).into_owned();
    match crate::lifecycle::effects::load_and_adopt(cx, &id).await? {
        Some(l) if !l.operation.status.is_closed() => {
            let op = l.operation;
            let open = matches!(op.status, OperationStatus::Seller(st) if !st.is_terminal());
            if open && op.task_id.as_ref().is_some_and(|tid| !listed.contains(tid)) {
                let state = PollState {
                    next_at_ms: clock.now_ms(),
                    ..Default::default()
                };
                schedule_at(store, clock, due, &id, state).await?;
                repolled.push(id);
            }
            Ok(false)
        }
        _ => {
            store.delete(&entry_key).await?;
            Ok(true)
        }
    }
}

/// The tracked-task index's low end: entries below `low` are all gone; `counted` is the
/// count the walk that wrote it saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct LowMark {
    low: u64,
    counted: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::foundation::clock::FixedClock;
    use crate::foundation::log::NoLog;
    use crate::foundation::store::MemoryStore;
    use crate::records::indexes::track;
    use crate::records::journal;
    use crate::records::journal::EntryKind;
    use crate::testing::{obs, sample};
    use futures::executor::block_on;

    fn observe(store: &MemoryStore, id: &str, status: TaskStatus) {
        let recorded = block_on(crate::testing::record(
            store,
            &FixedClock(2_000),
            id,
            EntryKind::Observed {
                observation: Box::new(obs(status, Some(&format!("task_{id}")))),
            },
        ))
        .unwrap();
        if let Some(op) = &recorded.operation {
            block_on(track(store, op)).unwrap();
        }
    }

    /// Operations `op1`..`op{n}`, each holding a submitted seller task, tracked in order.
    fn submitted(store: &MemoryStore, n: usize) {
        for i in 1..=n {
            let id = format!("op{i}");
            block_on(journal::create(store, &FixedClock(1_000), &sample(&id))).unwrap();
            observe(store, &id, TaskStatus::Submitted);
        }
    }

    fn walk(store: &MemoryStore, listed: &[&str]) -> Vec<String> {
        let seller: Seller = serde_json::from_value(json!({
            "tenant_id": "t1", "seller_id": "s1", "mcp_url": "https://seller.example/mcp",
            "created_at_ms": 0, "updated_at_ms": 0}))
        .unwrap();
        let listed = listed.iter().map(|s| s.to_string()).collect();
        block_on(repoll_missing(
            Cx::new(store, &FixedClock(3_000), &NoLog),
            &DueConfig::default(),
            &seller,
            &listed,
        ))
        .unwrap()
        .repolled
    }

    fn low(store: &MemoryStore) -> u64 {
        let mark: LowMark = block_on(get_json(store, &keys::seller_tasks_low("t1", "s1")))
            .unwrap()
            .unwrap();
        mark.low
    }

    #[test]
    fn the_tracked_task_walk_repolls_unlisted_open_tasks_and_drops_closed_ones() {
        let store = MemoryStore::new();
        submitted(&store, 5);
        for id in ["op1", "op2", "op4"] {
            observe(&store, id, TaskStatus::Completed);
        }
        assert_eq!(walk(&store, &["task_op3"]), ["op5"]);
        let entries = |store: &MemoryStore| -> Vec<u64> {
            (1..=5)
                .filter(|n| {
                    block_on(store.get(&keys::seller_tasks_entry("t1", "s1", *n)))
                        .unwrap()
                        .is_some()
                })
                .collect()
        };
        assert_eq!(entries(&store), [3, 5], "closed operations leave the index");
        assert_eq!(low(&store), 3);
        observe(&store, "op3", TaskStatus::Completed);
        assert_eq!(walk(&store, &[]), ["op5"]);
        assert_eq!(entries(&store), [5]);
        assert_eq!(low(&store), 5);
        // A walk over an index with nothing open left reads nothing past its low end.
        observe(&store, "op5", TaskStatus::Failed);
        assert!(walk(&store, &[]).is_empty());
        assert_eq!(low(&store), 6);
        store.reset_counts();
        assert!(walk(&store, &[]).is_empty());
        assert_eq!(store.total_ops(), 2, "the count and the low end");
    }

    #[test]
    fn an_entry_still_being_written_is_not_passed_by_the_low_end() {
        let store = MemoryStore::new();
        block_on(journal::create(&store, &FixedClock(1_000), &sample("op1"))).unwrap();
        observe(&store, "op1", TaskStatus::Submitted);
        observe(&store, "op1", TaskStatus::Completed);
        // A `track` has taken slot 2 but not yet written it.
        block_on(store.increment(&keys::seller_tasks_count("t1", "s1"), 1)).unwrap();
        assert!(walk(&store, &[]).is_empty());
        assert_eq!(low(&store), 2, "slot 2 may still be written");
        // Its writer finishes: the next walk sees the task.
        block_on(journal::create(&store, &FixedClock(1_000), &sample("op2"))).unwrap();
        block_on(crate::testing::record(
            &store,
            &FixedClock(2_000),
            "op2",
            EntryKind::Observed {
                observation: Box::new(obs(TaskStatus::Working, Some("task_op2"))),
            },
        ))
        .unwrap();
        block_on(store.set(&keys::seller_tasks_entry("t1", "s1", 2), b"op2")).unwrap();
        assert_eq!(walk(&store, &[]), ["op2"]);
        assert_eq!(low(&store), 2);
    }

    #[test]
    fn a_slot_left_empty_since_an_earlier_walk_is_a_hole_for_good() {
        let store = MemoryStore::new();
        submitted(&store, 2);
        observe(&store, "op1", TaskStatus::Completed);
        // Slot 3 taken by a writer that crashed before writing it.
        block_on(store.increment(&keys::seller_tasks_count("t1", "s1"), 1)).unwrap();
        walk(&store, &["task_op2"]);
        assert_eq!(low(&store), 2);
        observe(&store, "op2", TaskStatus::Completed);
        walk(&store, &[]);
        assert_eq!(low(&store), 4, "slot 3 was empty at the walk before");
    }
}
