//! The sweep: one tick of the orchestrator's background work, run by the cron component or
//! by `POST /internal/sweep`. Ticks are idempotent and may overlap (several replicas,
//! overlapping cron runs): the due index hands out work, an operation lease keeps two
//! sweeps off one operation, and every action goes through the journal.
//!
//! For each due operation the tick does exactly one thing, chosen from its state:
//! - `pending_dispatch`: (re)dispatch with the same key and bytes ([`crate::dispatch`]);
//! - past its deadline: one last look at the seller, then `timed_out`;
//! - held by the seller (`submitted`, `working`, …) or `timed_out` within the look-up horizon:
//!   poll the task status and fold the answer in through the state machine;
//!
//! and files the operation again at its next due time. Buyer notifications awaiting a retry
//! are filed in the same index.

use crate::clock::{Clock, Entropy};
use crate::dispatch::{self, CallFailure, Guarded, SellerCalls};
use crate::effects;
use crate::journal::{self, EntryKind};
use crate::keys;
use crate::linked;
use crate::log::{self, Log};
use crate::notify;
use crate::operation::{Observation, Operation, OperationError, Source};
use crate::schedule::backoff::{Deadlines, PollInput, PollPolicy};
use crate::schedule::due::{self, DueConfig};
use crate::schedule::lease::{self, Claim, LeaseConfig};
use crate::seal::SealingKey;
use crate::seller;
use crate::state_machine::Outcome;
use crate::status::{OperationStatus, TaskStatus};
use crate::store::{Store, StoreResult, get_json, set_json};
use crate::transport::Transport;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::cell::RefCell;
use std::collections::HashMap;

/// How long after our deadline a `timed_out` operation is still looked up at the seller.
pub const LOOKUP_HORIZON_MS: u64 = 7 * 24 * 3_600_000;
/// Cadence of those late look-ups.
pub const LOOKUP_EVERY_MS: u64 = 3_600_000;

/// Tunables of the sweep, all with production defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SweepConfig {
    pub due: DueConfig,
    pub lease: LeaseConfig,
    pub poll: PollPolicy,
    pub deadlines: Deadlines,
    pub breaker: crate::schedule::breaker::BreakerConfig,
    pub retention: crate::schedule::retention::Retention,
    /// Stop taking new work after this long in one tick (the rest waits for the next).
    pub budget_ms: u64,
}

impl SweepConfig {
    /// The configuration in the `sweep_config` Spin variable: JSON overriding any of the
    /// defaults (`{}` keeps them all), e.g.
    /// `{"deadlines": {"tasks": {"create_media_buy": 7200000}}, "breaker": {"failure_threshold": 3}}`.
    /// Unknown fields and values that would stop the sweep from working are refused.
    pub fn parse(json: &str) -> Result<SweepConfig, String> {
        let json = json.trim();
        let c: SweepConfig = if json.is_empty() {
            SweepConfig::default()
        } else {
            serde_json::from_str(json).map_err(|e| format!("sweep_config: {e}"))?
        };
        let mut wrong = Vec::new();
        let mut need = |ok: bool, what: &str| {
            if !ok {
                wrong.push(what.to_string());
            }
        };
        // The index layout is shared by every component (the webhook component and buyer
        // notifications file hints with the defaults): only the per-tick limits may change.
        let limits_only = DueConfig {
            max_buckets: c.due.max_buckets,
            max_entries: c.due.max_entries,
            initial_lookback_ms: c.due.initial_lookback_ms,
            ..Default::default()
        };
        need(
            c.due == limits_only,
            "due: only max_buckets, max_entries and initial_lookback_ms may be set",
        );
        need(c.lease.slot_ms > 0, "lease.slot_ms must be positive");
        need(
            c.lease.margin_ms < c.lease.min_hold_ms && c.lease.min_hold_ms <= c.lease.slot_ms,
            "lease: margin_ms < min_hold_ms <= slot_ms",
        );
        need(
            c.breaker.failure_threshold > 0,
            "breaker.failure_threshold must be positive",
        );
        need(
            c.deadlines.default_ms > 0 && c.deadlines.tasks.values().all(|d| *d > 0),
            "deadlines must be positive",
        );
        need(
            c.retention.terminal_operation_ms >= c.retention.dedup_window_ms(),
            "retention.terminal_operation_ms must cover the webhook de-duplication window",
        );
        // De-duplication and nonce windows are the webhook component's, kept per delivery.
        let kept = crate::schedule::retention::Retention {
            terminal_operation_ms: c.retention.terminal_operation_ms,
            ..Default::default()
        };
        need(
            c.retention == kept,
            "retention: only terminal_operation_ms may be set",
        );
        if wrong.is_empty() {
            Ok(c)
        } else {
            Err(format!("sweep_config: {}", wrong.join("; ")))
        }
    }
}

/// What a tick needs.
pub struct SweepEnv<'a, S: Store, C: SellerCalls, T: Transport> {
    pub store: &'a S,
    pub clock: &'a dyn Clock,
    pub entropy: &'a dyn Entropy,
    pub log: &'a dyn Log,
    pub sealing: &'a SealingKey,
    pub calls: &'a C,
    pub transport: &'a T,
    pub config: &'a SweepConfig,
}

/// Per-operation poll state, kept beside the journal (polls that change nothing are not
/// history).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollState {
    /// When the operation is next due; a hint for an earlier time is stale.
    pub next_at_ms: u64,
    /// Polls since the status last moved.
    pub attempts_since_change: u32,
    /// The status seen at the last poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<OperationStatus>,
    /// The seller's `retry_after` from the last poll, honoured by the next scheduling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
}

/// What one tick did, kept at `sweep:last` and returned to HTTP callers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TickReport {
    pub trigger: String,
    pub scheduled_at_ms: u64,
    pub started_at_ms: u64,
    pub finished_at_ms: u64,
    /// Due hints read from the index.
    pub due: usize,
    /// Operations acted on (dispatched, polled, expired).
    pub touched: usize,
    /// Hints skipped because another sweep held the operation.
    pub busy: usize,
    /// Notification attempts made.
    pub notifications: usize,
    pub backlog: bool,
    /// Seller tasks listed by reconciliation in this tick (0 when it was not this tick's turn).
    #[serde(default)]
    pub reconciled_tasks: usize,
    /// Untracked seller tasks adopted as operations.
    #[serde(default)]
    pub adopted: usize,
    /// Tracked open tasks the sellers no longer list, filed for an immediate poll.
    #[serde(default)]
    pub repolled: usize,
    /// Closed operations removed by retention.
    #[serde(default)]
    pub purged: usize,
}

/// Files an operation (or a notification, by its `ntf_` id) as due at `at_ms`, recording the
/// time in its poll state so that earlier hints become stale.
///
/// The hint is filed before the poll state: a crash between the two leaves the old state,
/// which the new hint (or an older one) still acts on. The other order could leave a state
/// naming a time no hint will ever bring, and an operation nobody looks at again.
pub async fn schedule_at(
    store: &impl Store,
    clock: &dyn Clock,
    cfg: &DueConfig,
    id: &str,
    state: PollState,
) -> StoreResult<()> {
    due::schedule(store, cfg, clock, id, state.next_at_ms).await?;
    set_json(store, &keys::poll_state(id), &state).await
}

/// Runs one tick. `scheduled_at_ms` is the trigger's own time (cron metadata). Every seller
/// call goes through the seller's circuit breaker.
pub async fn tick<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    trigger: &str,
    scheduled_at_ms: u64,
) -> StoreResult<TickReport> {
    let guarded = Guarded {
        store: env.store,
        clock: env.clock,
        breaker: &env.config.breaker,
        inner: env.calls,
        seen: Default::default(),
    };
    let env = &SweepEnv {
        store: env.store,
        clock: env.clock,
        entropy: env.entropy,
        log: env.log,
        sealing: env.sealing,
        calls: &guarded,
        transport: env.transport,
        config: env.config,
    };
    let started = env.clock.now_ms();
    let mut report = TickReport {
        trigger: trigger.into(),
        scheduled_at_ms,
        started_at_ms: started,
        ..Default::default()
    };
    let memo = SellerMemo::default();
    let mut sweep = due::Sweep::begin(env.store, &env.config.due, started).await?;
    let hints = sweep.hints().to_vec();
    report.due = hints.len();
    let budget = if env.config.budget_ms == 0 {
        20_000
    } else {
        env.config.budget_ms
    };
    for hint in &hints {
        let now = env.clock.now_ms();
        if now.saturating_sub(started) > budget {
            report.backlog = true;
            break; // unsettled hints are filed again by the commit
        }
        let lease =
            match lease::claim_operation(env.store, &env.config.lease, &hint.op_id, now).await? {
                Claim::Held(l) => l,
                Claim::Busy { retry_at_ms } => {
                    report.busy += 1;
                    sweep.defer(hint, retry_at_ms);
                    continue;
                }
            };
        let state: Option<PollState> = get_json(env.store, &keys::poll_state(&hint.op_id)).await?;
        if state.as_ref().is_some_and(|s| s.next_at_ms > now) {
            // Rescheduled later: a newer hint exists.
            sweep.settle(hint);
            lease.release(env.store).await?;
            continue;
        }
        let outcome = if hint.op_id.starts_with("ntf_") {
            report.notifications += 1;
            retry_notification(env, &hint.op_id).await
        } else {
            work_on(env, &memo, &hint.op_id, state.unwrap_or_default(), now).await
        };
        match outcome {
            Ok(touched) => {
                report.touched += usize::from(touched);
                sweep.settle(hint);
            }
            Err(e) => {
                log::emit(
                    env.log,
                    &log::Event {
                        ts_ms: env.clock.now_ms(),
                        event: "sweep.error",
                        operation_id: Some(&hint.op_id),
                        detail: Some(log::capped(&e.to_string())),
                        ..Default::default()
                    },
                );
                sweep.defer(hint, now + 30_000);
            }
        }
        lease.release(env.store).await?;
    }
    let index = sweep.commit(env.store, env.clock).await?;
    // Once per epoch, across replicas: compare with the sellers' own task lists.
    if let Some(r) = crate::reconcile::run_if_due(
        env.store,
        env.clock,
        env.entropy,
        env.log,
        env.config,
        env.calls,
    )
    .await?
    {
        report.reconciled_tasks = r.listed;
        report.adopted = r.adopted.len();
        report.repolled = r.repolled.len();
        report.purged = r.purged;
    }
    report.backlog |= index.backlog;
    report.finished_at_ms = env.clock.now_ms();
    set_json(env.store, keys::SWEEP_LAST, &report).await?;
    Ok(report)
}

async fn retry_notification<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    id: &str,
) -> StoreResult<bool> {
    let n = notify::attempt(env.store, env.clock, env.transport, env.sealing, id).await?;
    if let Some(at) = n.and_then(|n| n.next_attempt_at_ms) {
        let state = PollState {
            next_at_ms: at,
            ..Default::default()
        };
        schedule_at(env.store, env.clock, &env.config.due, id, state).await?;
    }
    Ok(true)
}

/// Does the one thing the operation needs now. Returns whether it acted.
async fn work_on<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    memo: &SellerMemo,
    op_id: &str,
    state: PollState,
    now: u64,
) -> StoreResult<bool> {
    // The snapshot alone chooses what to do (one read, no journal head): a poll re-reads
    // the head after its seller call ([`current`]), a dispatch loads the operation itself,
    // and every write catches up with the journal first. A snapshot behind the journal can
    // only cost a poll that finds nothing new.
    let snapshot: Option<Operation> = get_json(env.store, &keys::operation(op_id)).await?;
    let op = match snapshot {
        Some(op) => op,
        None => match effects::load(env.store, env.clock, env.log, op_id)
            .await
            .map_err(store_err)?
        {
            Some(loaded) => loaded.operation,
            None => return Ok(false),
        },
    };
    match op.status {
        OperationStatus::Seller(s) if s.is_terminal() => {
            // A canceled create whose buy came into being anyway: cancel it at the seller.
            let fresh = op.cancel.as_ref().is_some_and(|c| c.follow_up.is_none());
            let started = linked::cancel_follow_up(
                env.store,
                env.clock,
                env.entropy,
                env.log,
                env.config,
                &op,
            )
            .await?;
            Ok(fresh && started.is_some())
        }
        OperationStatus::AwaitingDecision => {
            // Waiting for a human; only the deadline moves it.
            let op = expire_if_due(env, op, now).await?;
            reschedule(env.store, env.clock, env.entropy, env.config, &op, state).await?;
            Ok(true)
        }
        OperationStatus::CanceledLocally
            if !reconcilable(&op)
                || op
                    .cancel
                    .as_ref()
                    .is_some_and(|c| now > c.requested_at_ms.saturating_add(LOOKUP_HORIZON_MS)) =>
        {
            Ok(false)
        }
        OperationStatus::PendingDispatch if now >= op.deadline_at_ms => {
            // Never sent past the deadline: a late create is not what the buyer asked for.
            // `timed_out` keeps looking the request up in case an attempt reached the seller.
            let op = expire_if_due(env, op, now).await?;
            reschedule(env.store, env.clock, env.entropy, env.config, &op, state).await?;
            Ok(true)
        }
        OperationStatus::PendingDispatch => {
            let result =
                dispatch::dispatch(env.store, env.clock, env.log, env.sealing, env.calls, op_id)
                    .await?;
            match result {
                Some(dispatch::Dispatched::Deferred { until_ms }) => {
                    // The breaker is open: nothing was sent; come back when it may close.
                    let next = PollState {
                        next_at_ms: until_ms,
                        ..state
                    };
                    return schedule_at(env.store, env.clock, &env.config.due, op_id, next)
                        .await
                        .map(|_| false);
                }
                Some(dispatch::Dispatched::Failed {
                    retry_at_ms: None,
                    error,
                }) => {
                    // Attempts exhausted: the seller may still have the task. Look it up by
                    // the context we sent before declaring a failure.
                    give_up_dispatch(env, memo, &op, error).await?;
                }
                _ => {}
            }
            reschedule_after_change(
                env.store,
                env.clock,
                env.log,
                env.entropy,
                env.config,
                op_id,
                state,
            )
            .await?;
            Ok(true)
        }
        OperationStatus::TimedOut if now > op.deadline_at_ms.saturating_add(LOOKUP_HORIZON_MS) => {
            Ok(false)
        }
        _ => {
            let polled = poll(env, memo, &op).await?;
            let op_now = polled.operation;
            if op_now.status.is_authoritative_terminal() {
                linked::cancel_follow_up(
                    env.store,
                    env.clock,
                    env.entropy,
                    env.log,
                    env.config,
                    &op_now,
                )
                .await?;
            }
            let op_now = if op_now.status.is_closed() {
                op_now
            } else {
                expire_if_due(env, op_now, now).await?
            };
            let moved = polled.status.is_some_and(|s| state.last_status != Some(s));
            let next = PollState {
                attempts_since_change: if moved {
                    0
                } else {
                    state.attempts_since_change + 1
                },
                last_status: polled.status.or(state.last_status),
                retry_after_s: polled.retry_after_s,
                ..state
            };
            reschedule(env.store, env.clock, env.entropy, env.config, &op_now, next).await?;
            Ok(true)
        }
    }
}

/// Files the operation again at its next due time, if it still needs looking at: after a
/// dispatch, a poll, or any status change.
pub async fn reschedule_after_change(
    store: &impl Store,
    clock: &dyn Clock,
    log: &dyn Log,
    entropy: &dyn Entropy,
    config: &SweepConfig,
    op_id: &str,
    state: PollState,
) -> StoreResult<()> {
    let Some(loaded) = effects::load(store, clock, log, op_id)
        .await
        .map_err(store_err)?
    else {
        return Ok(());
    };
    reschedule(store, clock, entropy, config, &loaded.operation, state).await
}

/// [`reschedule_after_change`] for a caller that holds the operation as it now stands.
async fn reschedule(
    store: &impl Store,
    clock: &dyn Clock,
    entropy: &dyn Entropy,
    config: &SweepConfig,
    op: &Operation,
    mut state: PollState,
) -> StoreResult<()> {
    let now = clock.now_ms();
    let op_id = op.operation_id.as_str();
    let next = match op.status {
        OperationStatus::Seller(s) if s.is_terminal() => return Ok(()),
        OperationStatus::PendingDispatch => match op.next_poll_at_ms {
            Some(t) => t.max(now + 1),
            None => return Ok(()),
        },
        OperationStatus::TimedOut => now + LOOKUP_EVERY_MS,
        OperationStatus::AwaitingDecision => op.deadline_at_ms.max(now + 1),
        OperationStatus::CanceledLocally if !reconcilable(op) => return Ok(()),
        OperationStatus::CanceledLocally if op.task_id.is_none() => now + LOOKUP_EVERY_MS,
        _ => {
            let input = PollInput {
                attempts_since_change: state.attempts_since_change,
                webhook_registered: op.webhook.is_some(),
                retry_after_s: state.retry_after_s.take(),
            };
            config
                .poll
                .next_poll_at_ms(now, input, entropy)
                .min(op.deadline_at_ms.max(now + 1))
        }
    };
    state.next_at_ms = next;
    schedule_at(store, clock, &config.due, op_id, state).await
}

/// Records our deadline's expiry if it has passed; returns the operation as it then stands.
async fn expire_if_due<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    op: Operation,
    now: u64,
) -> StoreResult<Operation> {
    if now < op.deadline_at_ms {
        return Ok(op);
    }
    let op_id = op.operation_id.clone();
    let recorded = journal::record_from(
        env.store,
        env.clock,
        &op_id,
        Some(op),
        EntryKind::DeadlineExpired,
    )
    .await
    .map_err(store_err)?;
    effects::after_record(env.store, env.clock, env.log, "deadline", &recorded).await?;
    recorded.operation.ok_or_else(|| vanished(&op_id))
}

/// Seller records and tool lists, read once per tick: a tick polls many operations of few
/// sellers. A registration changed during the tick is seen by the next one.
#[derive(Default)]
struct SellerMemo {
    sellers: RefCell<HashMap<(String, String), Option<seller::Seller>>>,
    tools: RefCell<HashMap<(String, String), SellerTools>>,
}

impl SellerMemo {
    async fn seller(
        &self,
        store: &impl Store,
        tenant: &str,
        seller_id: &str,
    ) -> StoreResult<Option<seller::Seller>> {
        let key = (tenant.to_string(), seller_id.to_string());
        if let Some(s) = self.sellers.borrow().get(&key) {
            return Ok(s.clone());
        }
        let s = seller::get(store, tenant, seller_id).await?;
        self.sellers.borrow_mut().insert(key, s.clone());
        Ok(s)
    }

    async fn tools(
        &self,
        store: &impl Store,
        clock: &dyn Clock,
        calls: &impl SellerCalls,
        seller: &seller::Seller,
    ) -> StoreResult<SellerTools> {
        let key = (seller.tenant_id.clone(), seller.seller_id.clone());
        if let Some(t) = self.tools.borrow().get(&key) {
            return Ok(t.clone());
        }
        let t = seller_tools(store, clock, calls, seller).await?;
        if !t.assumed {
            // An assumption (no `tools/list` answer) is not kept: the next poll asks again.
            self.tools.borrow_mut().insert(key, t.clone());
        }
        Ok(t)
    }
}

/// What a poll found.
struct Polled {
    /// The status the seller reported, if it answered.
    status: Option<OperationStatus>,
    /// The seller's `retry_after`, if it asked for one.
    retry_after_s: Option<u64>,
    /// The operation as it stands after the poll: with the answer recorded, or re-read if
    /// someone else changed it while the seller was asked.
    operation: Operation,
}

/// A locally canceled operation may still exist at the seller (it returned a task, or an
/// attempt's answer was lost): it is reconciled until the seller says how it ended.
fn reconcilable(op: &Operation) -> bool {
    op.task_id.is_some() || op.outcome_unknown
}

/// Asks the seller where the task stands and folds the answer in. An answer that would
/// change nothing (the same status again, or an older one) is not journaled: polls are not
/// history, and a quiet task must cost few store calls per poll.
async fn poll<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    memo: &SellerMemo,
    op: &Operation,
) -> StoreResult<Polled> {
    let Some(seller) = memo.seller(env.store, &op.tenant_id, &op.seller_id).await? else {
        return Ok(Polled {
            status: None,
            retry_after_s: None,
            operation: op.clone(),
        });
    };
    let tool = match &op.task_id {
        Some(_) => {
            memo.tools(env.store, env.clock, env.calls, &seller)
                .await?
                .poll
        }
        None => None,
    };
    let mut retry_after_s = None;
    let obs = match (&op.task_id, tool) {
        (Some(task_id), Some(tool)) => {
            let mut args = json!({ "task_id": task_id, "include_result": true });
            if let Some(account) = op.arguments.get("account") {
                // A seller answers REFERENCE_NOT_FOUND for a task under another account.
                args["account"] = account.clone();
            }
            match env.calls.call(&seller, &tool, args).await {
                Ok(payload) => match observation_from_task_status(&payload) {
                    Some(obs) => with_result(env, &seller, op, obs).await,
                    None => None,
                },
                Err(CallFailure::Seller(e)) => {
                    retry_after_s = e.retry_after_s.map(u64::from);
                    None
                }
                Err(CallFailure::Transport(_) | CallFailure::Deferred { .. }) => None,
            }
        }
        // No task to poll (or no tool to poll it with): look the buy up by its context.
        _ => match lookup_by_context(env, &seller, op).await {
            Lookup::Found(obs) => Some(*obs),
            Lookup::Absent | Lookup::TooMany | Lookup::Unknown => None,
        },
    };
    // The seller call took time: a webhook may have changed the record meanwhile.
    let current = current(env, op).await?;
    let Some(obs) = obs else {
        return Ok(Polled {
            status: None,
            retry_after_s,
            operation: current,
        });
    };
    let status = Some(OperationStatus::Seller(obs.status));
    let mut probe = current.clone();
    let outcome = probe.observe(&obs, env.clock.now_ms());
    if matches!(outcome, Outcome::Duplicate | Outcome::Stale) && probe == current {
        return Ok(Polled {
            status,
            retry_after_s: None,
            operation: current,
        });
    }
    let id = current.operation_id.clone();
    let recorded = journal::record_from(
        env.store,
        env.clock,
        &id,
        Some(current),
        EntryKind::Observed {
            observation: Box::new(obs),
        },
    )
    .await
    .map_err(store_err)?;
    effects::after_record(env.store, env.clock, env.log, "poll", &recorded).await?;
    Ok(Polled {
        status,
        retry_after_s: None,
        operation: recorded.operation.ok_or_else(|| vanished(&id))?,
    })
}

/// The operation as it stands now: `op` itself unless the journal has moved past it (one
/// counter read), then re-read.
async fn current<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    op: &Operation,
) -> StoreResult<Operation> {
    let head = env
        .store
        .increment(&keys::operation_seq(&op.operation_id), 0)
        .await?;
    if u64::try_from(head).unwrap_or(0) <= op.version {
        return Ok(op.clone());
    }
    Ok(
        effects::load(env.store, env.clock, env.log, &op.operation_id)
            .await
            .map_err(store_err)?
            .map_or_else(|| op.clone(), |l| l.operation),
    )
}

fn vanished(op_id: &str) -> crate::error::StoreError {
    crate::error::StoreError(format!("operation {op_id} vanished"))
}

/// A `completed` create without its result (AdCP 3.0 `tasks/get` carries none) is completed
/// with the media buy found by `context.operation_id`; while that look-up has no answer the
/// poll counts as not answered, so the completion is not recorded without its buy.
async fn with_result<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    seller: &seller::Seller,
    op: &Operation,
    mut obs: Observation,
) -> Option<Observation> {
    if obs.status != TaskStatus::Completed || obs.result.is_some() || op.task != "create_media_buy"
    {
        return Some(obs);
    }
    match lookup_by_context(env, seller, op).await {
        Lookup::Found(found) => {
            obs.result = found.result;
            Some(obs)
        }
        Lookup::Absent => {
            obs.message = Some(
                "the seller reports the task completed but get_media_buys has no buy for it".into(),
            );
            Some(obs)
        }
        Lookup::TooMany => {
            // The seller says completed; its listing is too long to search. Record the
            // outcome without its buy rather than never.
            obs.message = Some(
                "the seller reports the task completed; its buy was not found in the pages of get_media_buys read".into(),
            );
            Some(obs)
        }
        Lookup::Unknown => None,
    }
}

/// Polling tools in order of preference: AdCP 3.1's tool, then the names 3.0 sellers used.
pub const POLL_TOOLS: [&str; 3] = ["get_task_status", "tasks_get", "tasks/get"];
/// How long a discovered polling tool is trusted before `tools/list` is asked again.
pub const POLL_TOOL_TTL_MS: u64 = 24 * 3_600_000;

/// What `tools/list` told us about a seller, cached per seller for [`POLL_TOOL_TTL_MS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SellerTools {
    /// The polling tool; `None`: the seller offers none.
    pub poll: Option<String>,
    /// The seller offers `list_tasks` (reconciliation runs only then).
    #[serde(default)]
    pub list_tasks: bool,
    pub at_ms: u64,
    /// Not discovered: `tools/list` had no answer and the 3.1 defaults were assumed.
    #[serde(skip)]
    pub assumed: bool,
}

/// The seller's tools as discovered from `tools/list`, cached per seller. When the list
/// cannot be had now, the 3.1 polling tool and no `list_tasks` are assumed (not cached).
pub async fn seller_tools(
    store: &impl Store,
    clock: &dyn Clock,
    calls: &impl SellerCalls,
    seller: &seller::Seller,
) -> StoreResult<SellerTools> {
    let key = keys::poll_tool(&seller.tenant_id, &seller.seller_id);
    let now = clock.now_ms();
    let cached: Option<SellerTools> = get_json(store, &key).await?;
    if let Some(c) = cached.filter(|c| now.saturating_sub(c.at_ms) < POLL_TOOL_TTL_MS) {
        return Ok(c);
    }
    let Ok(names) = calls.list_tools(seller).await else {
        return Ok(SellerTools {
            poll: Some(POLL_TOOLS[0].to_string()),
            list_tasks: false,
            at_ms: now,
            assumed: true,
        });
    };
    let tools = SellerTools {
        poll: POLL_TOOLS
            .iter()
            .find(|t| names.iter().any(|n| n == *t))
            .map(|t| t.to_string()),
        list_tasks: names.iter().any(|n| n == "list_tasks"),
        at_ms: now,
        assumed: false,
    };
    set_json(store, &key, &tools).await?;
    Ok(tools)
}

/// The observation in a `get_task_status` answer (flat: `status`, `result`, `error`).
pub fn observation_from_task_status(payload: &Value) -> Option<Observation> {
    let status = TaskStatus::parse(payload.get("status")?.as_str()?)?;
    let error = payload.get("error").and_then(|e| {
        Some(OperationError {
            code: e.get("code")?.as_str()?.to_string(),
            message: e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        })
    });
    Some(Observation {
        source: Source::Poll,
        status,
        // The seller's `updated_at` orders this report against webhooks and other polls: a
        // poll answered before a webhook but read after it must not move the status back.
        at_ms: payload
            .get("updated_at")
            .and_then(Value::as_str)
            .and_then(crate::webhook_payload::rfc3339_ms),
        task_id: payload
            .get("task_id")
            .and_then(Value::as_str)
            .map(str::to_string),
        context_id: None,
        message: payload
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string),
        result: payload
            .get("result")
            .cloned()
            .filter(|_| status == TaskStatus::Completed),
        error,
        delivery: None,
    })
}

/// The answer of a look-up by context.
enum Lookup {
    Found(Box<Observation>),
    /// The seller answered and has no such buy.
    Absent,
    /// The seller lists more buys than one look-up reads, none of them ours so far.
    TooMany,
    /// No usable answer (seller down, breaker open): ask again later.
    Unknown,
}

/// Pages of `get_media_buys` read by one look-up (100 buys each); past them the answer is
/// "too many to tell", never "absent".
const LOOKUP_PAGES: usize = 20;

/// Looks a media buy up by the `context.operation_id` the create carried (`get_media_buys`
/// over the operation's account, every status, page by page). "Absent" only when the
/// seller listed everything and none is ours.
async fn lookup_by_context<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    seller: &seller::Seller,
    op: &Operation,
) -> Lookup {
    if op.task != "create_media_buy" {
        return Lookup::Absent;
    }
    let mut args = json!({
        // Without a filter only `active` buys are listed; one just made is usually
        // `pending_creatives` or `pending_start`.
        "status_filter": dispatch::MEDIA_BUY_STATUSES,
        "pagination": { "max_results": 100 },
        "context": { "operation_id": op.operation_id },
    });
    if let Some(account) = op.arguments.get("account") {
        args["account"] = account.clone();
    }
    for _ in 0..LOOKUP_PAGES {
        let Ok(payload) = env.calls.call(seller, "get_media_buys", args.clone()).await else {
            return Lookup::Unknown;
        };
        let Some(buys) = payload.get("media_buys").and_then(Value::as_array) else {
            return Lookup::Unknown;
        };
        if payload
            .get("errors")
            .and_then(Value::as_array)
            .is_some_and(|e| !e.is_empty())
        {
            // A partial answer (an account it could not read, say) proves no absence.
            return Lookup::Unknown;
        }
        let mine = buys.iter().find(|b| {
            b.pointer("/context/operation_id").and_then(Value::as_str)
                == Some(op.operation_id.as_str())
        });
        if let Some(buy) = mine {
            return Lookup::Found(Box::new(Observation {
                source: Source::Reconcile,
                status: TaskStatus::Completed,
                at_ms: None,
                task_id: None,
                context_id: None,
                message: Some("found through get_media_buys by context.operation_id".into()),
                result: Some(buy.clone()),
                error: None,
                delivery: None,
            }));
        }
        let has_more = payload
            .pointer("/pagination/has_more")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if !has_more {
            return Lookup::Absent;
        }
        // More pages: follow the cursor; without one they cannot be reached.
        let Some(cursor) = payload
            .pointer("/pagination/cursor")
            .and_then(Value::as_str)
        else {
            return Lookup::Unknown;
        };
        args["pagination"]["cursor"] = json!(cursor);
    }
    Lookup::TooMany
}

/// How long to wait before asking again when a look-up got no answer.
const LOOKUP_RETRY_MS: u64 = 300_000;

async fn give_up_dispatch<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    memo: &SellerMemo,
    op: &Operation,
    error: OperationError,
) -> StoreResult<()> {
    let Some(seller) = memo.seller(env.store, &op.tenant_id, &op.seller_id).await? else {
        return Ok(());
    };
    let obs = match lookup_by_context(env, &seller, op).await {
        Lookup::Found(found) => *found,
        Lookup::Absent => Observation {
            source: Source::Reconcile,
            status: TaskStatus::Failed,
            at_ms: None,
            task_id: None,
            context_id: None,
            message: Some(
                "dispatch attempts exhausted and the seller has no record of the request".into(),
            ),
            result: None,
            error: Some(error),
            delivery: None,
        },
        // No answer: ask again soon.
        Lookup::Unknown => return look_again(env, op, LOOKUP_RETRY_MS).await,
        // Too many buys to tell: never declare a failure we cannot prove; look again hourly
        // until the deadline makes it `timed_out`.
        Lookup::TooMany => return look_again(env, op, LOOKUP_EVERY_MS).await,
    };
    let recorded = journal::record(
        env.store,
        env.clock,
        &op.operation_id,
        EntryKind::Observed {
            observation: Box::new(obs),
        },
    )
    .await
    .map_err(store_err)?;
    effects::after_record(env.store, env.clock, env.log, "reconcile", &recorded)
        .await
        .map(drop)
}

/// Files the operation for another look-up in `wait_ms`.
async fn look_again<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    op: &Operation,
    wait_ms: u64,
) -> StoreResult<()> {
    let state = PollState {
        next_at_ms: env.clock.now_ms() + wait_ms,
        ..Default::default()
    };
    schedule_at(
        env.store,
        env.clock,
        &env.config.due,
        &op.operation_id,
        state,
    )
    .await
}

fn store_err(e: journal::JournalError) -> crate::error::StoreError {
    match e {
        journal::JournalError::Store(e) => e,
        other => crate::error::StoreError(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::testing::SeededEntropy;
    use crate::dispatch::SellerError;
    use crate::log::NoLog;
    use crate::operation::tests::sample;
    use crate::seller::Seller;
    use crate::store::MemoryStore;
    use crate::transport::TransportError;
    use crate::transport::testing::ScriptedTransport;
    use futures::executor::block_on;
    use std::cell::{Cell, RefCell};

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    struct Clock2(Cell<u64>);
    impl Clock for Clock2 {
        fn now_ms(&self) -> u64 {
            self.0.get()
        }
    }

    type Script = Box<dyn FnMut(&str, &Value) -> Result<Value, CallFailure>>;

    /// A seller whose answers are computed per call; counts calls per tool.
    struct ScriptSeller {
        script: RefCell<Script>,
        calls: RefCell<Vec<(String, Value)>>,
        /// What `tools/list` answers; `None` means the default (the 3.1 polling tool).
        tools: Option<Vec<String>>,
        lists: Cell<u32>,
    }

    impl ScriptSeller {
        fn new(f: impl FnMut(&str, &Value) -> Result<Value, CallFailure> + 'static) -> Self {
            ScriptSeller {
                script: RefCell::new(Box::new(f)),
                calls: RefCell::default(),
                tools: None,
                lists: Cell::new(0),
            }
        }

        fn with_tools(mut self, tools: &[&str]) -> Self {
            self.tools = Some(tools.iter().map(|t| t.to_string()).collect());
            self
        }
        fn count(&self, tool: &str) -> usize {
            self.calls
                .borrow()
                .iter()
                .filter(|(t, _)| t == tool)
                .count()
        }
    }

    impl SellerCalls for ScriptSeller {
        async fn call(&self, _: &Seller, tool: &str, args: Value) -> Result<Value, CallFailure> {
            self.calls
                .borrow_mut()
                .push((tool.to_string(), args.clone()));
            (self.script.borrow_mut())(tool, &args)
        }

        async fn list_tools(&self, _: &Seller) -> Result<Vec<String>, CallFailure> {
            self.lists.set(self.lists.get() + 1);
            Ok(self
                .tools
                .clone()
                .unwrap_or_else(|| vec!["get_task_status".into()]))
        }
    }

    /// A transient seller error: the dispatch is retried, then given up.
    fn seller_busy() -> Result<Value, CallFailure> {
        Err(CallFailure::Seller(SellerError {
            code: "SERVICE_UNAVAILABLE".into(),
            message: "busy".into(),
            recovery: crate::dispatch::Recovery::Transient,
            retry_after_s: None,
        }))
    }

    struct World {
        store: MemoryStore,
        clock: Clock2,
        entropy: SeededEntropy,
        sealing: SealingKey,
        transport: ScriptedTransport,
        config: SweepConfig,
    }

    impl World {
        fn new() -> World {
            World {
                store: MemoryStore::new(),
                clock: Clock2(Cell::new(1_000_000)),
                entropy: SeededEntropy::new(3),
                sealing: SealingKey::from_hex(KEY).unwrap(),
                transport: ScriptedTransport::default(),
                config: SweepConfig::default(),
            }
        }

        /// Stores an operation in `status` (with a task id when the seller holds it) and files it due now.
        fn op(&self, id: &str, status: OperationStatus) {
            self.op_due_at(id, status, self.clock.now_ms());
        }

        fn op_due_at(&self, id: &str, status: OperationStatus, due_at_ms: u64) {
            let mut op = sample(id);
            op.created_at_ms = self.clock.now_ms();
            op.deadline_at_ms = op.created_at_ms + 86_400_000;
            block_on(async {
                crate::seller::put(
                    &self.store,
                    &Seller {
                        tenant_id: "t1".into(),
                        seller_id: "s1".into(),
                        mcp_url: "https://seller.example/mcp".into(),
                        credentials: None,
                        webhook_mode: None,
                        auth_scheme: Default::default(),
                        capabilities: None,
                        attention: None,
                        created_at_ms: 0,
                        updated_at_ms: 0,
                    },
                )
                .await
                .unwrap();
                journal::create(&self.store, &self.clock, &op)
                    .await
                    .unwrap();
                if let OperationStatus::Seller(s) = status {
                    let obs = Observation {
                        source: Source::Dispatch,
                        status: s,
                        at_ms: None,
                        task_id: Some(format!("task_{id}")),
                        context_id: None,
                        message: None,
                        result: None,
                        error: None,
                        delivery: None,
                    };
                    journal::record(
                        &self.store,
                        &self.clock,
                        id,
                        EntryKind::Observed {
                            observation: Box::new(obs),
                        },
                    )
                    .await
                    .unwrap();
                }
                let state = PollState {
                    next_at_ms: due_at_ms,
                    ..Default::default()
                };
                schedule_at(&self.store, &self.clock, &self.config.due, id, state)
                    .await
                    .unwrap();
            });
        }

        /// The buyer asks to cancel the operation (what `POST .../cancel` records).
        fn request_cancel(&self, id: &str) {
            block_on(journal::record(
                &self.store,
                &self.clock,
                id,
                EntryKind::Local {
                    change: crate::operation::LocalChange::CancelRequested {
                        reason: None,
                        superseded_by: None,
                    },
                },
            ))
            .unwrap();
        }

        fn advance(&self, ms: u64) {
            self.clock.0.set(self.clock.0.get() + ms);
        }

        fn tick(&self, seller: &ScriptSeller) -> TickReport {
            let env = SweepEnv {
                store: &self.store,
                clock: &self.clock,
                entropy: &self.entropy,
                log: &NoLog,
                sealing: &self.sealing,
                calls: seller,
                transport: &self.transport,
                config: &self.config,
            };
            block_on(tick(&env, "test", self.clock.now_ms())).unwrap()
        }

        fn status(&self, id: &str) -> OperationStatus {
            block_on(journal::load(&self.store, &self.clock, id))
                .unwrap()
                .unwrap()
                .operation
                .status
        }

        /// Ticks every 30 s for `ms`.
        fn run_for(&self, ms: u64, seller: &ScriptSeller) {
            let end = self.clock.now_ms() + ms;
            while self.clock.now_ms() < end {
                self.advance(30_000);
                self.tick(seller);
            }
        }
    }

    #[test]
    fn the_sweep_config_variable_overrides_defaults_and_refuses_mistakes() {
        assert_eq!(SweepConfig::parse("").unwrap(), SweepConfig::default());
        assert_eq!(SweepConfig::parse(" {} ").unwrap(), SweepConfig::default());
        let c = SweepConfig::parse(
            r#"{"deadlines": {"tasks": {"create_media_buy": 7200000}},
                "breaker": {"failure_threshold": 3},
                "retention": {"terminal_operation_ms": 864000000}}"#,
        )
        .unwrap();
        assert_eq!(c.deadlines.for_task_ms("create_media_buy"), 7_200_000);
        assert_eq!(c.breaker.failure_threshold, 3);
        assert_eq!(
            c.breaker.reset_timeout_ms, 60_000,
            "the rest keeps its default"
        );
        assert_eq!(c.retention.terminal_operation_ms, 864_000_000);
        for bad in [
            r#"{"breaker": {"failure_treshold": 3}}"#,
            r#"{"deadline": {}}"#,
            r#"{"breaker": {"failure_threshold": 0}}"#,
            r#"{"due": {"bucket_ms": 5000}}"#,
            r#"{"deadlines": {"tasks": {"sync_creatives": 0}}}"#,
            r#"{"retention": {"terminal_operation_ms": 3600000}}"#,
            r#"{"lease": {"min_hold_ms": 120000}}"#,
            r#"{"retention": {"nonce_ms": 1000}}"#,
            "not json",
        ] {
            let e = SweepConfig::parse(bad).unwrap_err();
            assert!(e.starts_with("sweep_config: "), "{bad}: {e}");
        }
    }

    #[test]
    fn operations_made_by_the_sweep_take_their_deadline_from_the_config() {
        let mut w = World::new();
        w.config
            .deadlines
            .tasks
            .insert("update_media_buy".into(), 600_000);
        w.op("op1", OperationStatus::Seller(TaskStatus::Submitted));
        w.request_cancel("op1");
        let seller = ScriptSeller::new(|tool, _| match tool {
            "get_task_status" => Ok(json!({"task_id": "task_op1", "status": "completed",
                                           "result": {"media_buy_id": "mb_1"}})),
            "update_media_buy" => Ok(json!({"status": "submitted", "task_id": "task_cancel"})),
            other => panic!("unexpected {other}"),
        });
        w.run_for(60_000, &seller);
        let op = block_on(journal::load(&w.store, &w.clock, "op1"))
            .unwrap()
            .unwrap()
            .operation;
        let child = op
            .cancel
            .unwrap()
            .follow_up
            .expect("the buy is canceled at the seller");
        let child = block_on(journal::load(&w.store, &w.clock, &child))
            .unwrap()
            .unwrap()
            .operation;
        assert_eq!(child.deadline_at_ms - child.created_at_ms, 600_000);
    }

    /// Store calls of a tick that polls 100 due operations (the seller reports no change),
    /// beyond those of an idle tick, with `pending` operations filed for tomorrow.
    fn store_calls_per_due_poll(pending: usize, late_in_lease_slot: bool) -> f64 {
        let w = World::new();
        let seller = ScriptSeller::new(|_, args| {
            Ok(json!({"task_id": args["task_id"], "status": "submitted"}))
        });
        w.tick(&seller); // places the sweep cursor
        let later = w.clock.now_ms() + 86_400_000;
        for i in 0..pending - 100 {
            w.op_due_at(
                &format!("quiet{i}"),
                OperationStatus::Seller(TaskStatus::Submitted),
                later,
            );
        }
        for i in 0..100 {
            w.op(
                &format!("due{i}"),
                OperationStatus::Seller(TaskStatus::Submitted),
            );
        }
        // The tick 30-90 s later, at 15 s (one lease slot per claim) or 45 s (two) into a
        // lease slot.
        let phase = if late_in_lease_slot { 45_000 } else { 15_000 };
        let slot = w.config.lease.slot_ms;
        let at = (w.clock.now_ms() + 30_000).div_ceil(slot) * slot + phase;
        w.advance(at - w.clock.now_ms());
        w.store.reset_counts();
        let busy = w.tick(&seller);
        let busy_calls = w.store.total_ops();
        assert_eq!((busy.due, busy.touched), (100, 100), "{busy:?}");
        assert_eq!(seller.count("get_task_status"), 100);
        w.advance(1_000);
        w.store.reset_counts();
        let idle = w.tick(&seller);
        assert_eq!(idle.touched, 0, "{idle:?}");
        (busy_calls - w.store.total_ops()) as f64 / 100.0
    }

    #[test]
    fn a_tick_costs_a_dozen_store_calls_per_due_operation_whatever_is_pending() {
        let few = store_calls_per_due_poll(1_000, false);
        let many = store_calls_per_due_poll(10_000, false);
        let late = store_calls_per_due_poll(1_000, true);
        println!(
            "store calls per due poll: {few} (1,000 pending), {many} (10,000 pending), {late} (late in a lease slot)"
        );
        // Due hint, lease claim + release, poll state, operation snapshot, journal head after
        // the seller call, poll state + due hint (2) = 9; the seller record, its tools and
        // its breaker are read once per tick (the breaker at most every few seconds), and an
        // unchanged answer is not journaled. (On the real components the MCP session is also
        // read once per tick; a lease claimed in a slot's last 30 s takes two slots, +2.)
        assert!(few <= 10.0, "{few}");
        assert!(late <= 12.0, "{late}");
        assert!(many <= few * 1.2, "{many} vs {few}");
    }

    #[test]
    fn the_polling_tool_is_discovered_once_and_a_3_0_completion_gets_its_buy_by_context() {
        let w = World::new();
        w.op("op1", OperationStatus::Seller(TaskStatus::Submitted));
        let polls = Cell::new(0);
        // An AdCP 3.0 seller: `tasks/get` only, and its answers carry no result.
        let seller = ScriptSeller::new(move |tool, args| match tool {
            "tasks/get" => {
                assert_eq!(args["task_id"], "task_op1");
                polls.set(polls.get() + 1);
                let status = if polls.get() < 2 {
                    "working"
                } else {
                    "completed"
                };
                Ok(json!({"task_id": "task_op1", "status": status}))
            }
            "get_media_buys" => {
                assert_eq!(args["context"]["operation_id"], "op1");
                Ok(
                    json!({"media_buys": [{"media_buy_id": "mb_9", "status": "active",
                                          "context": {"operation_id": "op1"}}]}),
                )
            }
            other => panic!("unexpected tool {other}"),
        })
        .with_tools(&["create_media_buy", "tasks/get", "get_media_buys"]);
        w.run_for(30 * 60_000, &seller);
        assert_eq!(
            w.status("op1"),
            OperationStatus::Seller(TaskStatus::Completed)
        );
        let op = block_on(journal::load(&w.store, &w.clock, "op1"))
            .unwrap()
            .unwrap()
            .operation;
        assert_eq!(op.result.unwrap()["media_buy_id"], "mb_9");
        assert_eq!(seller.lists.get(), 1, "tools/list asked once, then cached");
        assert_eq!(seller.count("get_task_status"), 0);
    }

    #[test]
    fn tasks_get_is_used_when_get_task_status_is_absent_and_none_falls_back_to_context() {
        let w = World::new();
        w.op("op1", OperationStatus::Seller(TaskStatus::Submitted));
        let seller = ScriptSeller::new(|tool, _| match tool {
            "tasks_get" => Ok(json!({"task_id": "task_op1", "status": "completed",
                                     "result": {"media_buy_id": "mb_1"}})),
            other => panic!("unexpected tool {other}"),
        })
        .with_tools(&["tasks_get", "tasks/get"]);
        w.run_for(5 * 60_000, &seller);
        assert_eq!(
            w.status("op1"),
            OperationStatus::Seller(TaskStatus::Completed)
        );

        let w = World::new();
        w.op("op2", OperationStatus::Seller(TaskStatus::Submitted));
        let seller = ScriptSeller::new(|tool, _| match tool {
            "get_media_buys" => Ok(json!({"media_buys": [{"media_buy_id": "mb_2",
                                          "context": {"operation_id": "op2"}}]})),
            other => panic!("unexpected tool {other}"),
        })
        .with_tools(&["create_media_buy", "get_media_buys"]);
        w.run_for(5 * 60_000, &seller);
        assert_eq!(
            w.status("op2"),
            OperationStatus::Seller(TaskStatus::Completed)
        );
    }

    #[test]
    fn a_polls_retry_after_delays_the_next_poll() {
        let w = World::new();
        w.op("op1", OperationStatus::Seller(TaskStatus::Submitted));
        let seller = ScriptSeller::new(|_, _| {
            Err(CallFailure::Seller(SellerError {
                code: "RATE_LIMITED".into(),
                message: "slow down".into(),
                recovery: crate::dispatch::Recovery::Transient,
                retry_after_s: Some(600),
            }))
        });
        w.advance(30_000);
        w.tick(&seller);
        assert_eq!(seller.count("get_task_status"), 1);
        let state: PollState = block_on(get_json(&w.store, &keys::poll_state("op1")))
            .unwrap()
            .unwrap();
        assert!(state.next_at_ms >= w.clock.now_ms() + 600_000, "{state:?}");
        // Ticks inside the window do not poll.
        w.run_for(9 * 60_000, &seller);
        assert_eq!(seller.count("get_task_status"), 1);
        w.run_for(2 * 60_000, &seller);
        assert_eq!(seller.count("get_task_status"), 2);
    }

    #[test]
    fn a_locally_canceled_task_is_reconciled_and_a_buy_it_produced_is_canceled() {
        let w = World::new();
        w.op("op1", OperationStatus::Seller(TaskStatus::Submitted));
        block_on(journal::record(
            &w.store,
            &w.clock,
            "op1",
            EntryKind::Local {
                change: crate::operation::LocalChange::CancelRequested {
                    reason: Some("pulled".into()),
                    superseded_by: None,
                },
            },
        ))
        .unwrap();
        assert_eq!(w.status("op1"), OperationStatus::CanceledLocally);
        // The seller completes the task anyway; then accepts the cancel of its buy.
        let seller = ScriptSeller::new(|tool, args| match tool {
            "get_task_status" => Ok(json!({"task_id": "task_op1", "status": "completed",
                                           "result": {"media_buy_id": "mb_7"}})),
            "update_media_buy" => {
                assert_eq!(args["media_buy_id"], "mb_7");
                assert_eq!(args["canceled"], true);
                assert_eq!(args["cancellation_reason"], "pulled");
                Ok(json!({"media_buy_id": "mb_7", "status": "canceled"}))
            }
            other => panic!("unexpected tool {other}"),
        });
        w.run_for(10 * 60_000, &seller);
        // The seller's outcome replaced the local cancel, and the buy was canceled once.
        assert_eq!(
            w.status("op1"),
            OperationStatus::Seller(TaskStatus::Completed)
        );
        assert_eq!(seller.count("update_media_buy"), 1);
        let op = block_on(journal::load(&w.store, &w.clock, "op1"))
            .unwrap()
            .unwrap()
            .operation;
        let child = op.cancel.unwrap().follow_up.unwrap();
        assert_eq!(
            w.status(&child),
            OperationStatus::Seller(TaskStatus::Completed)
        );
        w.run_for(10 * 60_000, &seller);
        assert_eq!(seller.count("update_media_buy"), 1);
    }

    #[test]
    fn a_local_cancel_of_a_never_sent_operation_needs_no_reconciling() {
        let w = World::new();
        w.op("op1", OperationStatus::PendingDispatch);
        w.request_cancel("op1");
        let seller = ScriptSeller::new(|tool, _| panic!("nothing may be sent: {tool}"));
        w.run_for(30 * 60_000, &seller);
        assert_eq!(w.status("op1"), OperationStatus::CanceledLocally);
    }

    #[test]
    fn reconciliation_adopts_unknown_seller_tasks_and_repolls_unlisted_ones() {
        let w = World::new();
        w.op("op1", OperationStatus::Seller(TaskStatus::Submitted));
        let op1 = block_on(journal::load(&w.store, &w.clock, "op1"))
            .unwrap()
            .unwrap()
            .operation;
        block_on(crate::reconcile::track(&w.store, &op1)).unwrap();
        block_on(crate::seller::index(&w.store, "t1", "s1")).unwrap();
        let seller = ScriptSeller::new(|tool, args| match tool {
            "list_tasks" => {
                assert_eq!(args["filters"]["statuses"][0], "submitted");
                Ok(
                    json!({"query_summary": {}, "pagination": {"has_more": false},
                    "tasks": [{"task_id": "task_new", "task_type": "create_media_buy",
                               "domain": "media-buy", "status": "working",
                               "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"},
                              {"task_id": "task_sig", "task_type": "activate_signal",
                               "domain": "signals", "status": "working",
                               "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"}]}),
                )
            }
            "get_task_status" => Ok(json!({"task_id": args["task_id"], "status": "completed",
                                           "result": {"media_buy_id": "mb"}})),
            other => panic!("unexpected tool {other}"),
        })
        .with_tools(&["get_task_status", "list_tasks"]);
        let run = || {
            block_on(crate::reconcile::run_if_due(
                &w.store, &w.clock, &w.entropy, &NoLog, &w.config, &seller,
            ))
            .unwrap()
        };
        let r = run().expect("first run of the epoch");
        assert_eq!(r.listed, 2);
        assert_eq!(r.adopted.len(), 1, "only task types we run are adopted");
        assert_eq!(r.repolled, ["op1"], "tracked but no longer listed");
        assert!(
            run().is_none(),
            "one run per epoch, whichever replica claims it"
        );
        let adopted = r.adopted[0].clone();
        assert_eq!(
            w.status(&adopted),
            OperationStatus::Seller(TaskStatus::Working)
        );
        w.run_for(2 * 60_000, &seller);
        assert_eq!(
            w.status(&adopted),
            OperationStatus::Seller(TaskStatus::Completed)
        );
        assert_eq!(
            w.status("op1"),
            OperationStatus::Seller(TaskStatus::Completed)
        );
        // Adopted once: a later epoch sees the task as tracked.
        w.advance(crate::reconcile::EPOCH_MS);
        let r = run().unwrap();
        assert!(r.adopted.is_empty());
    }

    #[test]
    fn a_submitted_operation_without_webhook_completes_by_polling_alone() {
        let w = World::new();
        w.op("op1", OperationStatus::Seller(TaskStatus::Submitted));
        let polls = Cell::new(0);
        let seller = ScriptSeller::new(move |tool, args| {
            assert_eq!(tool, "get_task_status");
            assert_eq!(args["include_result"], json!(true));
            polls.set(polls.get() + 1);
            Ok(if polls.get() < 3 {
                json!({"task_id": "task_op1", "status": "submitted"})
            } else {
                json!({"task_id": "task_op1", "status": "completed", "result": {"media_buy_id": "mb_1"}})
            })
        });
        w.run_for(3_600_000, &seller);
        assert_eq!(
            w.status("op1"),
            OperationStatus::Seller(TaskStatus::Completed)
        );
        assert_eq!(
            seller.count("get_task_status"),
            3,
            "polling stops at the terminal status"
        );
        let op = block_on(journal::load(&w.store, &w.clock, "op1"))
            .unwrap()
            .unwrap()
            .operation;
        assert_eq!(op.result.unwrap()["media_buy_id"], "mb_1");
    }

    #[test]
    fn a_seller_outage_opens_the_breaker_and_the_operation_completes_after_it() {
        let w = World::new();
        for i in 0..3 {
            w.op(
                &format!("op{i}"),
                OperationStatus::Seller(TaskStatus::Submitted),
            );
        }
        let down = std::rc::Rc::new(Cell::new(true));
        let d = down.clone();
        let seller = ScriptSeller::new(move |_, args| {
            if d.get() {
                Err(CallFailure::Transport(TransportError::Connect(
                    "refused".into(),
                )))
            } else {
                Ok(json!({"task_id": args["task_id"], "status": "completed", "result": {}}))
            }
        });
        w.run_for(30 * 60_000, &seller);
        let during = seller.calls.borrow().len();
        let view = block_on(
            crate::schedule::breaker::Breaker::new(&w.config.breaker, "t1", "s1")
                .state(&w.store, w.clock.now_ms()),
        )
        .unwrap();
        assert_ne!(format!("{:?}", view.state), "Closed", "breaker opened");
        // With the breaker open, calls are deferred, not hammered: far fewer than ticks x ops.
        assert!(during < 30, "{during} calls during the outage");
        for i in 0..3 {
            assert_eq!(
                w.status(&format!("op{i}")),
                OperationStatus::Seller(TaskStatus::Submitted)
            );
        }
        down.set(false);
        w.run_for(60 * 60_000, &seller);
        for i in 0..3 {
            assert_eq!(
                w.status(&format!("op{i}")),
                OperationStatus::Seller(TaskStatus::Completed),
                "op{i}"
            );
        }
    }

    #[test]
    fn a_stored_but_undispatched_operation_is_redispatched_with_the_same_key() {
        let w = World::new();
        w.op("op1", OperationStatus::PendingDispatch);
        let seller = ScriptSeller::new(|tool, _| match tool {
            "create_media_buy" => {
                Ok(json!({"status": "completed", "media_buy_id": "mb_1", "packages": []}))
            }
            other => panic!("unexpected {other}"),
        });
        w.run_for(120_000, &seller);
        assert_eq!(
            w.status("op1"),
            OperationStatus::Seller(TaskStatus::Completed)
        );
        let calls = seller.calls.borrow();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].1["idempotency_key"], "k-0123456789abcdef");
    }

    #[test]
    fn exhausted_redispatch_looks_the_buy_up_before_failing() {
        // found: completed with the buy; absent: failed; a partial answer (errors[]) proves
        // nothing: still pending, looked up again later, never failed.
        for case in ["found", "absent", "partial"] {
            let w = World::new();
            w.op("op1", OperationStatus::PendingDispatch);
            let seller = ScriptSeller::new(move |tool, args| match tool {
                "create_media_buy" => seller_busy(),
                "get_media_buys" => Ok(match case {
                    "found" => json!({"media_buys": [{"media_buy_id": "mb_9",
                        "context": {"operation_id": args["context"]["operation_id"]}}]}),
                    "absent" => json!({"media_buys": []}),
                    _ => json!({"media_buys": [], "errors": [{"code": "ACCOUNT_NOT_FOUND",
                        "message": "account unavailable"}]}),
                }),
                other => panic!("unexpected {other}"),
            });
            w.run_for(6 * 3_600_000, &seller);
            let expect = match case {
                "found" => OperationStatus::Seller(TaskStatus::Completed),
                "absent" => OperationStatus::Seller(TaskStatus::Failed),
                _ => OperationStatus::PendingDispatch,
            };
            assert_eq!(w.status("op1"), expect, "{case}");
            if case == "partial" {
                assert!(seller.count("get_media_buys") > 1, "asked again");
            } else {
                assert_eq!(seller.count("get_media_buys"), 1, "{case}");
            }
            assert!(
                seller.count("create_media_buy") as u32 <= crate::dispatch::MAX_DISPATCH_ATTEMPTS
            );
        }
    }

    #[test]
    fn a_rescheduling_cut_short_by_a_failed_write_never_orphans_the_operation() {
        for failing_call in 1..=3 {
            let w = World::new();
            w.op("op1", OperationStatus::Seller(TaskStatus::Submitted));
            let later = PollState {
                next_at_ms: w.clock.now_ms() + 120_000,
                ..Default::default()
            };
            w.store.fail_nth_call(failing_call);
            let filed = block_on(schedule_at(&w.store, &w.clock, &w.config.due, "op1", later));
            assert!(filed.is_err(), "call {failing_call} failed");
            let seller = ScriptSeller::new(|_, _| {
                Ok(json!({"task_id": "task_op1", "status": "completed", "result": {}}))
            });
            w.run_for(10 * 60_000, &seller);
            assert_eq!(
                w.status("op1"),
                OperationStatus::Seller(TaskStatus::Completed),
                "failing call {failing_call}"
            );
        }
    }

    #[test]
    fn the_look_up_by_context_reads_every_status_and_every_page() {
        let w = World::new();
        w.op("op1", OperationStatus::PendingDispatch);
        let seller = ScriptSeller::new(|tool, args| match tool {
            "create_media_buy" => seller_busy(),
            "get_media_buys" => {
                let statuses = args["status_filter"].as_array().unwrap();
                assert!(statuses.contains(&json!("pending_start")), "{args}");
                assert_eq!(statuses.len(), 7);
                Ok(match args["pagination"]["cursor"].as_str() {
                    None => json!({"media_buys": [{"media_buy_id": "mb_other",
                                   "context": {"operation_id": "op_other"}}],
                                   "pagination": {"has_more": true, "cursor": "p2"}}),
                    Some(c) => {
                        assert_eq!(c, "p2");
                        json!({"media_buys": [{"media_buy_id": "mb_7", "status": "pending_start",
                               "context": {"operation_id": "op1"}}],
                               "pagination": {"has_more": false}})
                    }
                })
            }
            other => panic!("unexpected {other}"),
        });
        w.run_for(6 * 3_600_000, &seller);
        assert_eq!(
            w.status("op1"),
            OperationStatus::Seller(TaskStatus::Completed),
            "a pending buy on the second page is found, not reported failed"
        );
        assert_eq!(seller.count("get_media_buys"), 2);
        let op = block_on(journal::load(&w.store, &w.clock, "op1"))
            .unwrap()
            .unwrap()
            .operation;
        assert_eq!(op.result.unwrap()["media_buy_id"], "mb_7");
    }

    #[test]
    fn an_operation_never_sent_by_its_deadline_times_out_unsent_and_is_looked_up() {
        let w = World::new();
        let seller = ScriptSeller::new(|tool, _| match tool {
            "get_media_buys" => Ok(json!({"media_buys": []})),
            other => panic!("nothing is sent past the deadline: {other}"),
        });
        w.tick(&seller); // places the sweep cursor
        // Next due after its 24 h deadline (a redispatch backed off that far, say).
        let late = w.clock.now_ms() + 25 * 3_600_000;
        w.op_due_at("op1", OperationStatus::PendingDispatch, late);
        w.advance(25 * 3_600_000);
        w.run_for(2 * 3_600_000, &seller);
        assert_eq!(w.status("op1"), OperationStatus::TimedOut);
        assert!(
            seller.count("get_media_buys") >= 1,
            "looked up while timed out"
        );
    }

    #[test]
    fn a_deadline_times_out_and_a_later_seller_outcome_replaces_it() {
        let w = World::new();
        w.op("op1", OperationStatus::Seller(TaskStatus::Submitted));
        let done = std::rc::Rc::new(Cell::new(false));
        let d = done.clone();
        let seller = ScriptSeller::new(move |_, _| {
            Ok(if d.get() {
                json!({"task_id": "task_op1", "status": "completed", "result": {"media_buy_id": "mb_late"}})
            } else {
                json!({"task_id": "task_op1", "status": "submitted"})
            })
        });
        w.run_for(25 * 3_600_000, &seller);
        assert_eq!(w.status("op1"), OperationStatus::TimedOut);
        done.set(true);
        w.run_for(2 * 3_600_000, &seller);
        assert_eq!(
            w.status("op1"),
            OperationStatus::Seller(TaskStatus::Completed)
        );
        let history = block_on(journal::history(&w.store, &w.clock, "op1")).unwrap();
        assert!(
            history
                .iter()
                .any(|(_, e)| matches!(e, journal::Effect::Overrode(_)))
        );
    }

    #[test]
    fn two_overlapping_ticks_never_poll_the_same_operation_twice() {
        let w = World::new();
        for i in 0..20 {
            w.op(
                &format!("op{i}"),
                OperationStatus::Seller(TaskStatus::Working),
            );
        }
        w.advance(30_000);
        let seller = ScriptSeller::new(|_, args| {
            Ok(json!({"task_id": args["task_id"], "status": "working"}))
        });
        let env = SweepEnv {
            store: &w.store,
            clock: &w.clock,
            entropy: &w.entropy,
            log: &NoLog,
            sealing: &w.sealing,
            calls: &seller,
            transport: &w.transport,
            config: &w.config,
        };
        let (a, b) = block_on(async { futures::join!(tick(&env, "a", 0), tick(&env, "b", 0)) });
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.touched + b.touched, 20, "{a:?} {b:?}");
        let mut polled: Vec<String> = seller
            .calls
            .borrow()
            .iter()
            .map(|(_, args)| args["task_id"].as_str().unwrap().to_string())
            .collect();
        polled.sort();
        polled.dedup();
        assert_eq!(
            polled.len(),
            seller.calls.borrow().len(),
            "an operation was polled twice"
        );
    }
}

#[cfg(test)]
mod notification_tests {
    use super::*;
    use crate::clock::testing::SeededEntropy;
    use crate::log::NoLog;
    use crate::store::MemoryStore;
    use crate::transport::testing::ScriptedTransport;
    use futures::executor::block_on;
    use std::cell::Cell;

    struct Clock2(Cell<u64>);
    impl Clock for Clock2 {
        fn now_ms(&self) -> u64 {
            self.0.get()
        }
    }

    struct NoSeller;
    impl SellerCalls for NoSeller {
        async fn call(&self, _: &seller::Seller, _: &str, _: Value) -> Result<Value, CallFailure> {
            Err(CallFailure::Transport(
                crate::transport::TransportError::Connect("none".into()),
            ))
        }
    }

    #[test]
    fn queued_notifications_are_delivered_by_the_sweep_after_the_receiver_returns() {
        let store = MemoryStore::new();
        let clock = Clock2(Cell::new(1_000_000_000));
        let sealing = SealingKey::from_hex(
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        )
        .unwrap();
        let e = SeededEntropy::new(1);
        let secret = notify::new_secret(&e);
        let cb = notify::Callback {
            url: "https://buyer.example/hooks".into(),
            secret: sealing.seal(&e, &notify::secret_purpose("t1"), secret.as_bytes()),
            enabled: true,
            disabled_reason: None,
        };
        block_on(set_json(&store, &keys::callback("t1"), &cb)).unwrap();
        let op = crate::operation::tests::sample("op1");
        block_on(journal::create(&store, &clock, &op)).unwrap();
        let obs = crate::operation::tests::obs(TaskStatus::Completed, Some("task_1"));
        let recorded = block_on(journal::record(
            &store,
            &clock,
            "op1",
            EntryKind::Observed {
                observation: Box::new(obs),
            },
        ))
        .unwrap();
        let id = block_on(effects::after_record(
            &store, &clock, &NoLog, "test", &recorded,
        ))
        .unwrap()
        .unwrap();
        let transport = ScriptedTransport::default();
        let config = SweepConfig::default();
        let env = SweepEnv {
            store: &store,
            clock: &clock,
            entropy: &e,
            log: &NoLog,
            sealing: &sealing,
            calls: &NoSeller,
            transport: &transport,
            config: &config,
        };
        transport.reply(503, "");
        clock.0.set(clock.0.get() + 60_000);
        let report = block_on(tick(&env, "t", 0)).unwrap();
        assert_eq!(
            transport.requests.borrow().len(),
            1,
            "first attempt by the sweep: {report:?} {:?}",
            store.keys()
        );
        transport.reply(204, "");
        for _ in 0..5 {
            clock.0.set(clock.0.get() + 60_000);
            block_on(tick(&env, "t", 0)).unwrap();
        }
        assert_eq!(
            transport.requests.borrow().len(),
            2,
            "one retry, then delivered"
        );
        let n: notify::Notification = block_on(get_json(&store, &keys::notification(&id)))
            .unwrap()
            .unwrap();
        assert_eq!(n.state, notify::Delivery::Delivered);
    }
}
