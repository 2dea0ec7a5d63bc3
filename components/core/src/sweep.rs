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
use crate::dispatch::{self, CallFailure, SellerCalls};
use crate::effects;
use crate::journal::{self, EntryKind};
use crate::keys;
use crate::log::{self, Log};
use crate::notify;
use crate::operation::{Observation, Operation, OperationError, Source};
use crate::schedule::backoff::{Deadlines, PollInput, PollPolicy};
use crate::schedule::due::{self, DueConfig};
use crate::schedule::lease::{self, Claim, LeaseConfig};
use crate::seal::SealingKey;
use crate::seller;
use crate::status::{OperationStatus, TaskStatus};
use crate::store::{Store, StoreResult, get_json, set_json};
use crate::transport::Transport;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// How long after our deadline a `timed_out` operation is still looked up at the seller.
pub const LOOKUP_HORIZON_MS: u64 = 7 * 24 * 3_600_000;
/// Cadence of those late look-ups.
pub const LOOKUP_EVERY_MS: u64 = 3_600_000;

/// Tunables of the sweep, all with production defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SweepConfig {
    pub due: DueConfig,
    pub lease: LeaseConfig,
    pub poll: PollPolicy,
    pub deadlines: Deadlines,
    /// Stop taking new work after this long in one tick (the rest waits for the next).
    pub budget_ms: u64,
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
}

/// Files an operation (or a notification, by its `ntf_` id) as due at `at_ms`, recording the
/// time in its poll state so that earlier hints become stale.
pub async fn schedule_at(
    store: &impl Store,
    clock: &dyn Clock,
    cfg: &DueConfig,
    id: &str,
    state: PollState,
) -> StoreResult<()> {
    set_json(store, &keys::poll_state(id), &state).await?;
    due::schedule(store, cfg, clock, id, state.next_at_ms)
        .await
        .map(drop)
}

/// Runs one tick. `scheduled_at_ms` is the trigger's own time (cron metadata).
pub async fn tick<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    trigger: &str,
    scheduled_at_ms: u64,
) -> StoreResult<TickReport> {
    let started = env.clock.now_ms();
    let mut report = TickReport {
        trigger: trigger.into(),
        scheduled_at_ms,
        started_at_ms: started,
        ..Default::default()
    };
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
            work_on(env, &hint.op_id, state.unwrap_or_default(), now).await
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
    op_id: &str,
    state: PollState,
    now: u64,
) -> StoreResult<bool> {
    let Some(loaded) = journal::load(env.store, env.clock, op_id)
        .await
        .map_err(store_err)?
    else {
        return Ok(false);
    };
    let op = loaded.operation;
    match op.status {
        OperationStatus::Seller(s) if s.is_terminal() => Ok(false),
        OperationStatus::PendingDispatch => {
            let result =
                dispatch::dispatch(env.store, env.clock, env.log, env.sealing, env.calls, op_id)
                    .await?;
            if let Some(dispatch::Dispatched::Failed {
                retry_at_ms: None,
                error,
            }) = result
            {
                // Attempts exhausted: the seller may still have the task. Look it up by the
                // context we sent before declaring a failure.
                give_up_dispatch(env, &op, error).await?;
            }
            reschedule(env, op_id, state, now).await?;
            Ok(true)
        }
        OperationStatus::TimedOut if now > op.deadline_at_ms.saturating_add(LOOKUP_HORIZON_MS) => {
            Ok(false)
        }
        _ => {
            let polled = poll(env, &op).await?;
            let reloaded = journal::load(env.store, env.clock, op_id)
                .await
                .map_err(store_err)?;
            let op_now = reloaded.map_or(op.clone(), |l| l.operation);
            if op_now.status.is_open()
                && op_now.status != OperationStatus::TimedOut
                && now >= op_now.deadline_at_ms
            {
                let recorded = journal::record_from(
                    env.store,
                    env.clock,
                    op_id,
                    Some(op_now),
                    EntryKind::DeadlineExpired,
                )
                .await
                .map_err(store_err)?;
                effects::after_record(env.store, env.clock, env.log, "deadline", &recorded).await?;
            }
            let moved = polled.is_some_and(|s| state.last_status != Some(s));
            let next = PollState {
                attempts_since_change: if moved {
                    0
                } else {
                    state.attempts_since_change + 1
                },
                last_status: polled.or(state.last_status),
                ..state
            };
            reschedule(env, op_id, next, now).await?;
            Ok(true)
        }
    }
}

/// Files the operation again at its next due time, if it still needs looking at.
async fn reschedule<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    op_id: &str,
    mut state: PollState,
    now: u64,
) -> StoreResult<()> {
    let Some(loaded) = journal::load(env.store, env.clock, op_id)
        .await
        .map_err(store_err)?
    else {
        return Ok(());
    };
    let op = loaded.operation;
    let next = match op.status {
        OperationStatus::Seller(s) if s.is_terminal() => return Ok(()),
        OperationStatus::PendingDispatch => match op.next_poll_at_ms {
            Some(t) => t.max(now + 1),
            None => return Ok(()),
        },
        OperationStatus::TimedOut => now + LOOKUP_EVERY_MS,
        _ => {
            let input = PollInput {
                attempts_since_change: state.attempts_since_change,
                webhook_registered: op.webhook.is_some(),
                retry_after_s: None,
            };
            env.config
                .poll
                .next_poll_at_ms(now, input, env.entropy)
                .min(op.deadline_at_ms.max(now + 1))
        }
    };
    state.next_at_ms = next;
    schedule_at(env.store, env.clock, &env.config.due, op_id, state).await
}

/// Asks the seller where the task stands and folds the answer in. Returns the status seen.
async fn poll<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    op: &Operation,
) -> StoreResult<Option<OperationStatus>> {
    let Some(seller) = seller::get(env.store, &op.tenant_id, &op.seller_id).await? else {
        return Ok(None);
    };
    let obs = match &op.task_id {
        Some(task_id) => {
            let args = json!({ "task_id": task_id, "include_result": true });
            match env.calls.call(&seller, "get_task_status", args).await {
                Ok(payload) => observation_from_task_status(&payload),
                Err(CallFailure::Seller(_) | CallFailure::Transport(_)) => None,
            }
        }
        None => find_by_context(env, &seller, op).await,
    };
    let Some(obs) = obs else { return Ok(None) };
    let status = OperationStatus::Seller(obs.status);
    let recorded = journal::record_from(
        env.store,
        env.clock,
        &op.operation_id,
        Some(op.clone()),
        EntryKind::Observed {
            observation: Box::new(obs),
        },
    )
    .await
    .map_err(store_err)?;
    effects::after_record(env.store, env.clock, env.log, "poll", &recorded).await?;
    Ok(Some(status))
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
        at_ms: None,
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

/// Looks a media buy up by the `context.operation_id` the create carried (`get_media_buys`).
async fn find_by_context<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    seller: &seller::Seller,
    op: &Operation,
) -> Option<Observation> {
    if op.task != "create_media_buy" {
        return None;
    }
    let account = op.arguments.get("account").cloned().unwrap_or(Value::Null);
    let args = json!({ "account": account, "context": { "operation_id": op.operation_id } });
    let payload = env.calls.call(seller, "get_media_buys", args).await.ok()?;
    let buy = payload
        .get("media_buys")?
        .as_array()?
        .iter()
        .find(|b| {
            b.pointer("/context/operation_id").and_then(Value::as_str)
                == Some(op.operation_id.as_str())
        })?
        .clone();
    Some(Observation {
        source: Source::Reconcile,
        status: TaskStatus::Completed,
        at_ms: None,
        task_id: None,
        context_id: None,
        message: Some("found through get_media_buys by context.operation_id".into()),
        result: Some(buy),
        error: None,
        delivery: None,
    })
}

async fn give_up_dispatch<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    op: &Operation,
    error: OperationError,
) -> StoreResult<()> {
    let Some(seller) = seller::get(env.store, &op.tenant_id, &op.seller_id).await? else {
        return Ok(());
    };
    let obs = match find_by_context(env, &seller, op).await {
        Some(found) => found,
        None => Observation {
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

fn store_err(e: journal::JournalError) -> crate::error::StoreError {
    match e {
        journal::JournalError::Store(e) => e,
        other => crate::error::StoreError(other.to_string()),
    }
}
