//! What an operation needs next, by its state: one decision ([`step`]) that the sweep acts
//! on and that rescheduling files the operation by ([`due_at_ms`]), so the two can never
//! disagree.

use super::effects;
use crate::config::SweepConfig;
use crate::foundation::clock::{Clock, Entropy};
use crate::foundation::cx::Cx;
use crate::foundation::store::Store;
use crate::model::{operation::Operation, status::OperationStatus};
use crate::records::journal::JournalResult;
use crate::schedule::backoff::PollInput;
use crate::schedule::poll::{PollState, schedule_at};

/// How long after our deadline a `timed_out` operation is still looked up at the seller.
pub const LOOKUP_HORIZON_MS: u64 = 7 * 24 * 3_600_000;
/// Cadence of those late look-ups.
pub const LOOKUP_EVERY_MS: u64 = 3_600_000;

/// What the sweep does with an operation in its current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing, ever again: closed beyond reach, or past every look-up horizon.
    Rest,
    /// The seller settled it: only a cancel follow-up may remain (a canceled create whose
    /// buy came into being anyway).
    FollowUp,
    /// Held for a human: only the deadline moves it.
    AwaitDecision,
    /// Never sent and past its deadline: a late create is not what the buyer asked for, so
    /// it times out (and `timed_out` keeps looking the request up).
    Expire,
    /// Waiting to be (re)sent with the same key and bytes.
    Dispatch,
    /// Held by the seller, or closed locally but possibly alive there: ask the seller.
    Poll,
}

/// The one per-status decision.
pub fn step(op: &Operation, now: u64) -> Step {
    match op.status {
        OperationStatus::Seller(s) if s.is_terminal() => Step::FollowUp,
        OperationStatus::AwaitingDecision => Step::AwaitDecision,
        OperationStatus::CanceledLocally
            if !reconcilable(op)
                || op
                    .cancel
                    .as_ref()
                    .is_some_and(|c| now > c.requested_at_ms.saturating_add(LOOKUP_HORIZON_MS)) =>
        {
            Step::Rest
        }
        OperationStatus::PendingDispatch if now >= op.deadline_at_ms => Step::Expire,
        OperationStatus::PendingDispatch => Step::Dispatch,
        OperationStatus::TimedOut if now > op.deadline_at_ms.saturating_add(LOOKUP_HORIZON_MS) => {
            Step::Rest
        }
        _ => Step::Poll,
    }
}

/// A locally canceled operation may still exist at the seller (it returned a task, or an
/// attempt's answer was lost): it is reconciled until the seller says how it ended.
fn reconcilable(op: &Operation) -> bool {
    op.task_id.is_some() || op.outcome_unknown
}

/// When the operation is next due for the sweep; `None`: never again. Takes the seller's
/// `retry_after` out of `state` once honoured.
pub fn due_at_ms(
    op: &Operation,
    state: &mut PollState,
    config: &SweepConfig,
    entropy: &dyn Entropy,
    now: u64,
) -> Option<u64> {
    match step(op, now) {
        Step::Rest | Step::FollowUp => None,
        Step::Dispatch | Step::Expire => op.next_poll_at_ms.map(|t| t.max(now + 1)),
        Step::AwaitDecision => Some(op.deadline_at_ms.max(now + 1)),
        Step::Poll if op.status == OperationStatus::TimedOut => Some(now + LOOKUP_EVERY_MS),
        Step::Poll if op.status == OperationStatus::CanceledLocally && op.task_id.is_none() => {
            Some(now + LOOKUP_EVERY_MS)
        }
        Step::Poll => {
            let input = PollInput {
                attempts_since_change: state.attempts_since_change,
                webhook_registered: op.webhook.is_some(),
                retry_after_s: state.retry_after_s.take(),
            };
            Some(
                config
                    .poll
                    .next_poll_at_ms(now, input, entropy)
                    .min(op.deadline_at_ms.max(now + 1)),
            )
        }
    }
}

/// Files the operation again at its next due time, if it still needs looking at: after a
/// dispatch, a poll, or any status change.
pub async fn reschedule_after_change(
    cx: Cx<'_, impl Store>,
    entropy: &dyn Entropy,
    config: &SweepConfig,
    op_id: &str,
    state: PollState,
) -> JournalResult<()> {
    let Cx { store, clock, .. } = cx;
    let Some(loaded) = effects::load_and_adopt(cx, op_id).await? else {
        return Ok(());
    };
    reschedule(store, clock, entropy, config, &loaded.operation, state).await
}

/// [`reschedule_after_change`] for a caller that holds the operation as it now stands.
pub async fn reschedule(
    store: &impl Store,
    clock: &dyn Clock,
    entropy: &dyn Entropy,
    config: &SweepConfig,
    op: &Operation,
    mut state: PollState,
) -> JournalResult<()> {
    let Some(next) = due_at_ms(op, &mut state, config, entropy, clock.now_ms()) else {
        return Ok(());
    };
    state.next_at_ms = next;
    Ok(schedule_at(store, clock, &config.due, &op.operation_id, state).await?)
}
