//! What follows an applied status change: counters, a log line and the buyer notification.
//!
//! Run only by the writer whose own journal entry the fold applied, so each change is
//! counted and announced once however many copies of the event arrive.

use crate::clock::Clock;
use crate::journal::{Effect, Recorded};
use crate::log::{self, Log};
use crate::metrics;
use crate::notify;
use crate::store::{Store, StoreResult};
use serde_json::json;

/// A queued notification is due for the sweep this long after the change, leaving the
/// component that made the change time to attempt it first.
pub const FIRST_ATTEMPT_GRACE_MS: u64 = 5_000;

/// Applies the side effects of `recorded` if its own entry changed the status. Returns the
/// id of the buyer notification to attempt now, if one was queued.
pub async fn after_record(
    store: &impl Store,
    clock: &dyn Clock,
    log: &dyn Log,
    source: &str,
    recorded: &Recorded,
) -> StoreResult<Option<String>> {
    let (Some(Effect::Applied(to) | Effect::Overrode(to)), Some(op), Some(from)) =
        (recorded.effect, &recorded.operation, recorded.previous)
    else {
        return Ok(None);
    };
    let now = clock.now_ms();
    metrics::transition(store, &op.task, from, to, op.created_at_ms, now).await?;
    log::emit(
        log,
        &log::Event {
            ts_ms: now,
            event: "operation.status_changed",
            operation_id: Some(&op.operation_id),
            tenant_id: Some(&op.tenant_id),
            seller_id: Some(&op.seller_id),
            task_id: op.task_id.as_deref(),
            outcome: Some(source),
            status: Some(to.as_str()),
            detail: Some(format!("from {from}")),
            ..Default::default()
        },
    );
    let body = json!({
        "type": "operation.status_changed",
        "operation_id": op.operation_id,
        "seller_id": op.seller_id,
        "task": op.task,
        "status": to,
        "previous_status": from,
        "task_id": op.task_id,
        "result": op.result,
        "error": op.error,
        "sequence": recorded.seq,
        "changed_at_ms": op.updated_at_ms,
    });
    let Some(queued) = notify::enqueue(
        store,
        clock,
        &op.tenant_id,
        &op.operation_id,
        recorded.seq,
        body,
    )
    .await?
    else {
        return Ok(None);
    };
    // Filed before any attempt, so the sweep delivers it even if no one else tries (a
    // webhook's component makes an immediate attempt; API and sweep changes rely on this).
    let due = crate::schedule::due::DueConfig::default();
    crate::schedule::due::schedule(store, &due, clock, &queued.id, now + FIRST_ATTEMPT_GRACE_MS)
        .await?;
    Ok(Some(queued.id))
}
