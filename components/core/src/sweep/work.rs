//! The one thing a due operation needs now, chosen by [`next::step`]: a cancel follow-up, a
//! deadline, a (re)dispatch, or a poll whose answer is folded in through the state machine.

use super::env::SweepEnv;
use super::lookup::{Lookup, give_up_dispatch, lookup_by_context};
use super::memo::SellerMemo;
use super::resend::Resend;
use crate::foundation::keys;
use crate::foundation::store::Store;
use crate::foundation::transport::Transport;
use crate::lifecycle::next::{self, Step};
use crate::lifecycle::{dispatch, effects, linked};
use crate::model::operation::{Observation, Operation};
use crate::model::payload::observation_from_task_status;
use crate::model::state_machine::Outcome;
use crate::model::status::{OperationStatus, TaskStatus};
use crate::model::task::OutcomeLookup;
use crate::records::journal::EntryKind;
use crate::records::journal::JournalResult;
use crate::records::seller;
use crate::schedule::{
    lease::{self, Claim, Lease},
    poll::{PollState, schedule_at},
};
use crate::seller::port::{CallFailure, SellerCalls};
use serde_json::json;

/// What came of a due operation's work.
pub enum Done {
    /// Whether it acted.
    Acted(bool),
    /// Its work needs the operation's lease, which someone else holds.
    Busy { retry_at_ms: u64 },
}

/// Which steps take the operation's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leasing {
    /// The tick holds the sweep lease: only a dispatch or a cancel follow-up (the API's
    /// immediate dispatch takes the same lease).
    UnderSweep,
    /// The tick works without it (its holder died): every step, as concurrent ticks must.
    EachStep,
}

/// Does the one thing the operation needs now, starting from `snapshot` (the record as the
/// tick read it, `None` if unread). Under the sweep lease a poll, a deadline or a wait take
/// no lease of their own; a dispatch or a cancel follow-up takes the operation's lease and
/// re-reads it.
pub async fn work_on<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    memo: &SellerMemo,
    op_id: &str,
    snapshot: Option<Operation>,
    state: PollState,
    leasing: Leasing,
    now: u64,
) -> JournalResult<Done> {
    if leasing == Leasing::EachStep {
        return leased(env, memo, op_id, state, now).await;
    }
    let op = match snapshot {
        // A webhook's change whose effects its component did not get to run (or did, and
        // left the list for the next writer): settled from the record as it now stands.
        Some(op) if op.unsettled.is_empty() => op,
        _ => match effects::load_and_adopt(env.cx(), op_id).await? {
            Some(loaded) => loaded.operation,
            None => return Ok(Done::Acted(false)),
        },
    };
    match next::step(&op, now) {
        Step::FollowUp | Step::Dispatch => leased(env, memo, op_id, state, now).await,
        Step::Rest => Ok(Done::Acted(false)),
        Step::AwaitDecision | Step::Expire => {
            expire_due(env, op, state, now).await.map(Done::Acted)
        }
        Step::Poll => poll_due(env, memo, op, state, now).await.map(Done::Acted),
    }
}

/// The operation's step under its lease, decided on the operation read under it (a snapshot
/// from before could predate another holder's change).
async fn leased<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    memo: &SellerMemo,
    op_id: &str,
    state: PollState,
    now: u64,
) -> JournalResult<Done> {
    let lease = match lease::claim_operation(env.store, &env.config.lease, op_id, now).await? {
        Claim::Held(l) => l,
        Claim::Busy { retry_at_ms } => return Ok(Done::Busy { retry_at_ms }),
    };
    let worked = step_under(env, memo, &lease, op_id, state, now).await;
    // A release that fails leaves a counter its slot's end makes harmless (and the auditor
    // removes): not worth failing the work that was done.
    let _ = lease.release(env.store).await;
    worked.map(Done::Acted)
}

/// [`leased`]'s work, on the operation as it stands now (another holder may have moved it
/// on meanwhile).
async fn step_under<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    memo: &SellerMemo,
    lease: &Lease,
    op_id: &str,
    state: PollState,
    now: u64,
) -> JournalResult<bool> {
    let Some(loaded) = effects::load_and_adopt(env.cx(), op_id).await? else {
        return Ok(false);
    };
    let op = loaded.operation;
    match next::step(&op, now) {
        Step::FollowUp => {
            // A canceled create whose buy came into being anyway: cancel it at the seller.
            let fresh = op.cancel.as_ref().is_some_and(|c| c.follow_up.is_none());
            let started = linked::cancel_follow_up(env.cx(), env.entropy, env.config, &op).await?;
            Ok(fresh && started.is_some())
        }
        Step::Dispatch => dispatch_due(env, memo, lease, op, state, now).await,
        // Someone else moved it on and filed what comes next.
        Step::Rest => Ok(false),
        Step::AwaitDecision | Step::Expire => expire_due(env, op, state, now).await,
        Step::Poll => poll_due(env, memo, op, state, now).await,
    }
}

/// A deadline, or a wait for the buyer's decision (expired at its deadline).
async fn expire_due<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    op: Operation,
    state: PollState,
    now: u64,
) -> JournalResult<bool> {
    let op = expire_if_due(env, op, now).await?;
    next::reschedule(env.store, env.clock, env.entropy, env.config, &op, state).await?;
    Ok(true)
}

async fn dispatch_due<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    memo: &SellerMemo,
    lease: &Lease,
    op: Operation,
    state: PollState,
    now: u64,
) -> JournalResult<bool> {
    let op_id = op.operation_id.as_str();
    match super::resend::before_resend(env, memo, &op, now).await? {
        Resend::Send => {}
        Resend::Filed => return Ok(true),
        Resend::Decided => {
            next::reschedule_after_change(env.cx(), env.entropy, env.config, op_id, state).await?;
            return Ok(true);
        }
    }
    let result = dispatch::dispatch(env.cx(), lease, env.sealing, env.calls, op_id, None).await?;
    match result {
        Some(dispatch::Dispatched::Deferred { until_ms }) => {
            // Nothing was sent (breaker open, or the lease ran out): come back later.
            let next = PollState {
                next_at_ms: until_ms,
                ..state
            };
            schedule_at(env.store, env.clock, &env.config.due, op_id, next).await?;
            return Ok(false);
        }
        Some(dispatch::Dispatched::Failed {
            retry_at_ms: None,
            error,
        }) => {
            // Attempts exhausted: the seller may still have the task. Look it up by the
            // context we sent before declaring a failure.
            give_up_dispatch(env, memo, &op, error).await?;
        }
        _ => {}
    }
    next::reschedule_after_change(env.cx(), env.entropy, env.config, op_id, state).await?;
    Ok(true)
}

/// A poll, under the sweep lease alone.
async fn poll_due<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    memo: &SellerMemo,
    op: Operation,
    state: PollState,
    now: u64,
) -> JournalResult<bool> {
    let polled = poll(env, memo, &op).await?;
    let op_now = polled.operation;
    if op_now.status.is_authoritative_terminal() {
        linked::cancel_follow_up(env.cx(), env.entropy, env.config, &op_now).await?;
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
    next::reschedule(env.store, env.clock, env.entropy, env.config, &op_now, next).await?;
    Ok(true)
}

/// Records our deadline's expiry if it has passed; returns the operation as it then stands.
async fn expire_if_due<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    op: Operation,
    now: u64,
) -> JournalResult<Operation> {
    if now < op.deadline_at_ms {
        return Ok(op);
    }
    let op_id = op.operation_id.clone();
    let written = effects::record(
        env.cx(),
        "deadline",
        &op_id,
        Some(op),
        EntryKind::DeadlineExpired,
    )
    .await?;
    Ok(written.recorded.operation.ok_or_else(|| vanished(&op_id))?)
}

struct Polled {
    status: Option<OperationStatus>,
    retry_after_s: Option<u64>,
    /// After the poll: with the answer recorded, or re-read if changed while the seller was asked.
    operation: Operation,
}

/// Asks the seller where the task stands and folds the answer in; the same or an older status is
/// not journaled: polls are not history, and a quiet task must cost few store calls per poll.
async fn poll<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    memo: &SellerMemo,
    op: &Operation,
) -> JournalResult<Polled> {
    let Some(seller) = memo.seller(env.store, &op.tenant_id, &op.seller_id).await? else {
        return Ok(Polled {
            status: None,
            retry_after_s: None,
            operation: op.clone(),
        });
    };
    let tools = match &op.task_id {
        Some(_) => Some(memo.tools(env.store, env.clock, env.calls, &seller).await?),
        None => None,
    };
    let tool = tools.as_ref().and_then(|t| t.poll.clone());
    let mut retry_after_s = None;
    let obs = match (&op.task_id, tool) {
        (Some(task_id), Some(tool)) => {
            let mut args = json!({ "task_id": task_id, "include_result": true });
            if let Some(account) = op.arguments.get("account") {
                // A seller answers REFERENCE_NOT_FOUND for a task under another account.
                args["account"] = account.clone();
            }
            let args = match &tools {
                Some(t) => t.poll_arguments(args),
                None => args,
            };
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
            Lookup::Absent | Lookup::TooMany | Lookup::Unknown | Lookup::Impossible => None,
        },
    };
    let Some(obs) = obs else {
        return Ok(Polled {
            status: None,
            retry_after_s,
            operation: op.clone(),
        });
    };
    let status = Some(OperationStatus::Seller(obs.status));
    // Nothing new against the snapshot is nothing new: no read of the journal's head. Else
    // the snapshot may trail the journal (a webhook during the seller call, a writer since
    // the tick read it): the answer is checked against the head before it is recorded.
    let known = |op: &Operation| {
        let mut probe = op.clone();
        let outcome = probe.observe(&obs, env.clock.now_ms());
        matches!(outcome, Outcome::Duplicate | Outcome::Stale) && probe == *op
    };
    if known(op) {
        return Ok(Polled {
            status,
            retry_after_s: None,
            operation: op.clone(),
        });
    }
    let current = current(env, op).await?;
    if known(&current) {
        return Ok(Polled {
            status,
            retry_after_s: None,
            operation: current,
        });
    }
    let id = current.operation_id.clone();
    let written = effects::record(
        env.cx(),
        "poll",
        &id,
        Some(current),
        EntryKind::Observed {
            observation: Box::new(obs),
        },
    )
    .await?;
    Ok(Polled {
        status,
        retry_after_s: None,
        operation: written.recorded.operation.ok_or_else(|| vanished(&id))?,
    })
}

/// The operation now: `op` unless the journal has moved past it (one read of its head), else
/// re-read.
async fn current<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    op: &Operation,
) -> JournalResult<Operation> {
    let head =
        crate::foundation::store::get_counter(env.store, &keys::operation_seq(&op.operation_id))
            .await?;
    if u64::try_from(head).unwrap_or(0) <= op.version {
        return Ok(op.clone());
    }
    Ok(effects::load_and_adopt(env.cx(), &op.operation_id)
        .await?
        .map_or_else(|| op.clone(), |l| l.operation))
}

fn vanished(op_id: &str) -> crate::foundation::error::StoreError {
    crate::foundation::error::StoreError::Corrupt(format!("operation {op_id} vanished"))
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
    if obs.status != TaskStatus::Completed
        || obs.result.is_some()
        || op.task.spec().lookup != OutcomeLookup::MediaBuyByContext
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
            // Completed, listing too long to search: record it without its buy rather than never.
            obs.message = Some(
                "the seller reports the task completed; its buy was not found in the pages of get_media_buys read".into(),
            );
            Some(obs)
        }
        Lookup::Unknown => None,
        // Only creates reach here.
        Lookup::Impossible => Some(obs),
    }
}
