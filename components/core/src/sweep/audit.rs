//! The invariant auditor: a bounded walk, resumed every tick from a cursor in the store, over
//! every tenant's listing (from retention's low mark), checking what the rest of the system
//! relies on and repairing what it finds. A pass over 10,000 listed operations takes 20 ticks
//! at [`BUDGET`]; each repair is counted (`adcp_audit_repairs_total{invariant}`) and logged.
//!
//! Invariants, per listed operation:
//! - `due`: one the sweep still has to act on is filed, no later than its next action (its
//!   deadline; an hour for a timed-out one) and not long overdue (a lost hint);
//! - `listed`: its listing position is recorded, so a re-run of its creation lists it once;
//! - `seller_index`: its seller, if still registered, is in the seller registry that
//!   reconciliation and retention walk;
//! - `lease`: no lease counter is left in the ended slots around its due time and around the
//!   time its poll state was last filed (a holder that died, before its successor filed it;
//!   ended slots are never claimed again, so deleting them is safe).

use super::env::SweepEnv;
use crate::foundation::store::{Store, get_json, set_json};
use crate::foundation::{keys, log, transport::Transport};
use crate::lifecycle::linked;
use crate::lifecycle::next::{LOOKUP_EVERY_MS, Step, step};
use crate::model::operation::Operation;
use crate::model::status::OperationStatus;
use crate::records::{gauges, journal::JournalResult, metrics, seller};
use crate::schedule::poll::{PollState, schedule_at};
use crate::seller::port::SellerCalls;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Listing entries checked per tick.
pub const BUDGET: u64 = 500;
/// The gauges are counted on a pass beginning at least this long after the last count began
/// (about 250 reads each end of the pass for one tenant: on a small store a pass is a tick).
pub const COUNT_EVERY_MS: u64 = 20 * 60_000;
/// A due time this far past, while the sweep keeps up with its index, means a lost hint.
const OVERDUE_MS: u64 = 6 * 3_600_000;

/// Where the walk resumes: a tenant and its listing entry; the passes completed; and the
/// count of the pass under way (saved with the position, so a resumed walk counts each
/// operation once).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCursor {
    pub tenant: Option<String>,
    pub next: u64,
    pub passes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tally: Option<Tally>,
    /// When the last count began: one begins at most every [`COUNT_EVERY_MS`].
    #[serde(default)]
    pub counted_at_ms: u64,
}

/// The status gauges' counters when the pass began, and the operations counted in each
/// gauge so far (`records::gauges`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub moves_at_start: BTreeMap<String, i64>,
    pub counted: BTreeMap<String, i64>,
}

/// What one tick's share of the walk did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audited {
    pub checked: usize,
    pub repaired: usize,
    /// The walk finished a pass over every tenant in this tick.
    pub passed: bool,
}

/// Checks the next [`BUDGET`] listing entries. `keeping_up`: the tick worked every due hint,
/// so an overdue operation is a lost hint, not a backlog. A store failure ends this tick's
/// share where it happened (logged); the next tick resumes there.
pub async fn run<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    keeping_up: bool,
) -> Audited {
    let mut out = Audited::default();
    if let Err(e) = walk(env, keeping_up, &mut out).await {
        log::emit(
            env.log,
            &log::Event {
                ts_ms: env.clock.now_ms(),
                event: "audit.error",
                detail: Some(log::capped(&e.to_string())),
                ..Default::default()
            },
        );
    }
    out
}

async fn walk<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    keeping_up: bool,
    out: &mut Audited,
) -> JournalResult<()> {
    let store = env.store;
    let cursor: AuditCursor = get_json(store, keys::AUDIT_CURSOR)
        .await?
        .unwrap_or_default();
    let mut registered = seller::registry(store).await?;
    // Extended, not collected: collecting into a B-tree sorts first, a sort routine in the
    // `.wasm` per element type.
    let mut distinct = BTreeSet::new();
    distinct.extend(registered.iter().map(|(t, _)| t.clone()));
    let tenants: Vec<String> = distinct.into_iter().collect();
    if tenants.is_empty() {
        return Ok(());
    }
    let resumed = (cursor.tenant.as_ref()).and_then(|t| tenants.iter().position(|x| x == t));
    let (mut i, mut next) = resumed.map_or((0, 0), |i| (i, cursor.next));
    let mut passes = cursor.passes;
    // A count is only kept from the start of a pass (none after an upgrade, or while the
    // position moved to a tenant that is gone).
    let mut tally = cursor.tally.filter(|_| resumed.is_some());
    let mut counted_at = cursor.counted_at_ms;
    let mut budget = BUDGET;
    let mut finished = 0;
    while budget > 0 && finished < tenants.len() {
        let now = env.clock.now_ms();
        if i == 0
            && next == 0
            && tally.is_none()
            && now >= counted_at.saturating_add(COUNT_EVERY_MS)
        {
            let start = gauges::read_all(store, &tenants).await?;
            let mut moves_at_start = BTreeMap::new();
            moves_at_start.extend(start.into_iter().map(|(g, r)| (g, r.moves)));
            tally = Some(Tally {
                moves_at_start,
                counted: BTreeMap::new(),
            });
            counted_at = now;
        }
        let t = &tenants[i];
        let live = crate::records::indexes::live_listing(store, t).await?;
        let (low, count) = (*live.start(), *live.end());
        let mut n = next.max(low);
        while n <= count && budget > 0 {
            budget -= 1;
            match check(env, &mut registered, t, n, keeping_up).await {
                Ok(checked) => {
                    out.repaired += checked.repairs;
                    if let Some(tally) = &mut tally {
                        for g in checked.gauges {
                            *tally.counted.entry(g).or_default() += 1;
                        }
                    }
                }
                Err(e) => {
                    let here = AuditCursor {
                        tenant: Some(t.clone()),
                        next: n,
                        passes,
                        tally,
                        counted_at_ms: counted_at,
                    };
                    set_json(store, keys::AUDIT_CURSOR, &here).await?;
                    return Err(e);
                }
            }
            out.checked += 1;
            n += 1;
        }
        if n <= count {
            next = n;
            break;
        }
        finished += 1;
        next = 0;
        i += 1;
        if i == tenants.len() {
            i = 0;
            passes += 1;
            out.passed = true;
            if let Some(done) = tally.take() {
                out.repaired += correct_gauges(env, &tenants, done).await?;
            }
        }
    }
    let cursor = AuditCursor {
        tenant: Some(tenants[i].clone()),
        next,
        passes,
        tally,
        counted_at_ms: counted_at,
    };
    Ok(set_json(store, keys::AUDIT_CURSOR, &cursor).await?)
}

/// At the end of a pass: each status gauge nothing entered or left during it is set to the
/// operations the pass counted in it. Returns how many were corrected.
async fn correct_gauges<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    tenants: &[String],
    tally: Tally,
) -> JournalResult<usize> {
    let end = gauges::read_all(env.store, tenants).await?;
    let corrected = gauges::correct(env.store, &tally.moves_at_start, &end, &tally.counted).await?;
    for gauge in &corrected {
        metrics::audit_repair(env.store, "counters").await?;
        log::emit(
            env.log,
            &log::Event {
                ts_ms: env.clock.now_ms(),
                event: "audit.repaired",
                outcome: Some("counters"),
                detail: Some(gauge.clone()),
                ..Default::default()
            },
        );
    }
    Ok(corrected.len())
}

/// What checking one listing entry found: repairs made, and the status gauges its operation
/// counts in.
#[derive(Default)]
struct Checked {
    repairs: usize,
    gauges: Vec<String>,
}

/// Checks the operation at listing entry `n`.
async fn check<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    registered: &mut BTreeSet<(String, String)>,
    tenant: &str,
    n: u64,
    keeping_up: bool,
) -> JournalResult<Checked> {
    let store = env.store;
    let Some(id) = store.get(&keys::tenant_ops_entry(tenant, n)).await? else {
        return Ok(Checked::default());
    };
    let id = String::from_utf8_lossy(&id).into_owned();
    // No snapshot: a creation still being written, or an operation being purged.
    let Some(op) = get_json::<Operation>(store, &keys::operation(&id)).await? else {
        return Ok(Checked::default());
    };
    let now = env.clock.now_ms();
    if !op.unsettled.is_empty() {
        // A webhook's change no one has settled since (its component only announces it):
        // the walk bounds how long its counters and task index can wait.
        crate::lifecycle::effects::settle(env.cx(), "audit", &op).await?;
        let mut settled = op.clone();
        settled.unsettled.clear();
        crate::records::journal::save(store, &settled).await?;
    }
    let mut repairs: Vec<&str> = Vec::new();

    // Operations of earlier releases keep their listing position under its own key.
    let listed = keys::operation_listed(&id);
    if op.listed_at.is_none() && store.get(&listed).await?.is_none() {
        store.set(&listed, n.to_string().as_bytes()).await?;
        repairs.push("listed");
    }
    let pair = (op.tenant_id.clone(), op.seller_id.clone());
    if !registered.contains(&pair) && seller::get(store, &pair.0, &pair.1).await?.is_some() {
        seller::index(store, &pair.0, &pair.1).await?;
        registered.insert(pair);
        repairs.push("seller_index");
    }
    let state: Option<PollState> = get_json(store, &keys::poll_state(&id)).await?;
    if let Some(bound) = due_bound(&op, now) {
        let lost = match state.as_ref().map(|s| s.next_at_ms) {
            None => true,
            Some(at) => at > bound.max(now) + 1_000 || (keeping_up && at + OVERDUE_MS < now),
        };
        if lost {
            let refiled = PollState {
                next_at_ms: now,
                ..state.clone().unwrap_or_default()
            };
            schedule_at(store, env.clock, &env.config.due, &id, refiled).await?;
            repairs.push("due");
        }
    }
    if let Some(state) = state {
        let lease = &env.config.lease;
        let scope = keys::lease_scope_operation(&id);
        let due = lease.slot_of(state.next_at_ms);
        // States written before `filed_at_ms` existed carry 0: only the due time is known.
        let filed = (state.filed_at_ms > 0).then(|| lease.slot_of(state.filed_at_ms));
        let mut near = BTreeSet::new();
        near.extend(
            [due, due + 1]
                .into_iter()
                .chain(
                    filed
                        .into_iter()
                        .flat_map(|f| [f.saturating_sub(1), f, f + 1]),
                )
                .filter(|s| *s < lease.slot_of(now)),
        );
        for slot in near {
            let key = keys::lease(&scope, slot);
            if store.get(&key).await?.is_some() {
                store.delete(&key).await?;
                repairs.push("lease");
            }
        }
    }
    for invariant in &repairs {
        metrics::audit_repair(store, invariant).await?;
        log::emit(
            env.log,
            &log::Event {
                ts_ms: now,
                event: "audit.repaired",
                operation_id: Some(&id),
                tenant_id: Some(tenant),
                outcome: Some(invariant),
                status: Some(op.status.as_str()),
                ..Default::default()
            },
        );
    }
    Ok(Checked {
        repairs: repairs.len(),
        gauges: gauges::gauges_of(op.task.name(), tenant, op.status, op.in_tenant_summary),
    })
}

/// The latest time the operation may be filed for: `None` when the sweep has nothing to do.
fn due_bound(op: &Operation, now: u64) -> Option<u64> {
    match step(op, now) {
        Step::Rest => None,
        // Only a canceled buy that exists still needs its follow-up started.
        Step::FollowUp => (op.cancel.as_ref().is_some_and(|c| c.follow_up.is_none())
            && linked::media_buy_id(op).is_some())
        .then_some(now),
        Step::AwaitDecision | Step::Expire => Some(op.deadline_at_ms),
        // By its deadline, to expire it (redispatch times are soft: the API files a safety
        // net after its own immediate attempt).
        Step::Dispatch => Some(op.deadline_at_ms),
        Step::Poll
            if op.status == OperationStatus::TimedOut
                || (op.status == OperationStatus::CanceledLocally && op.task_id.is_none()) =>
        {
            Some(now + LOOKUP_EVERY_MS)
        }
        Step::Poll => Some(op.deadline_at_ms),
    }
}

#[cfg(test)]
mod tests;
