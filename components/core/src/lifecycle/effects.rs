//! What follows an applied status change: the buyer notification, the cancel follow-up's
//! scheduling, the task index, then counters and a log line.
//!
//! Run for each journal entry that changed the status, by its writer and, if that writer
//! failed or died before finishing them, by whoever comes next. Two ways to leave a trace
//! for that next one:
//! - [`record`] (the API, the sweep) runs the effects, then stores the fold: until then the
//!   snapshot lags behind the entry and every reader folds it again (the change is
//!   "adopted");
//! - [`record_unsettled`] (the webhook intake, which must answer after three writes) stores
//!   the fold at once, listing the change in the record's `unsettled`, and [`settle`] runs
//!   the effects after the answer; every reader and writer that finds the list settles it.
//!
//! The notification, scheduling and indexing are idempotent and come first; the counters and
//! the log line follow a claim per entry (`increment == 1`), so they run at most once (a lost
//! claim answer costs one count).

use crate::foundation::cx::Cx;
use crate::foundation::log;
use crate::foundation::store::{Store, StoreResult};
use crate::model::operation::{Operation, Unsettled};
use crate::model::status::OperationStatus;
use crate::records::journal::{self, Effect, EntryKind, JournalResult, Loaded, Look, Recorded};
use crate::records::metrics;
use crate::records::notify;
use serde_json::json;

/// A queued notification is due for the sweep this long after the change, leaving the
/// component that made the change time to attempt it first.
pub const FIRST_ATTEMPT_GRACE_MS: u64 = 5_000;

/// Reads an operation ([`journal::load`]) and runs the effects of any change it adopted or
/// found unsettled in the record; stores the record if that moved it on.
pub async fn load_and_adopt(cx: Cx<'_, impl Store>, op_id: &str) -> JournalResult<Option<Loaded>> {
    Ok(look_and_adopt(cx, op_id).await?.loaded())
}

/// [`load_and_adopt`] on [`journal::look`]: tells an unwritten id from one whose creation
/// awaits its proof.
pub async fn look_and_adopt(cx: Cx<'_, impl Store>, op_id: &str) -> JournalResult<Look> {
    let Cx { store, clock, .. } = cx;
    let mut loaded = journal::look(store, clock, op_id).await?;
    if let Look::Found(l) = &mut loaded {
        for change in &l.adopted {
            apply(cx, "adopted", change_of(change)).await?;
        }
        let settled = !l.operation.unsettled.is_empty();
        if settled {
            settle(cx, "adopted", &l.operation).await?;
            l.operation.unsettled.clear();
        }
        if l.behind || settled {
            journal::save(store, &l.operation).await?;
        }
    }
    Ok(loaded)
}

/// What one journal write did, with the buyer notification to attempt now, if it queued one.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub recorded: Recorded,
    pub notification: Option<String>,
}

/// The one way every writer but the webhook intake changes an operation: appends `kind` to
/// its journal (folded over `known`, the record as the caller holds it, or the stored one),
/// runs the effects of what that changed (and of changes the record lists as unsettled),
/// then stores the fold. `source` names the writer in logs.
pub async fn record(
    cx: Cx<'_, impl Store>,
    source: &str,
    op_id: &str,
    known: Option<Operation>,
    kind: EntryKind,
) -> JournalResult<Written> {
    let Cx { store, clock, .. } = cx;
    let mut recorded = match known {
        Some(op) => journal::record_from(store, clock, op_id, Some(op), kind).await?,
        None => journal::record(store, clock, op_id, kind).await?,
    };
    let notification = after_record(cx, source, &recorded).await?;
    if let Some(op) = &mut recorded.operation {
        let settled = !op.unsettled.is_empty();
        if settled {
            settle(cx, "adopted", op).await?;
            op.unsettled.clear();
        }
        if recorded.behind || settled {
            journal::save(store, op).await?;
        }
    }
    Ok(Written {
        recorded,
        notification,
    })
}

/// The webhook intake's write, before it answers: appends `kind` over `known` and stores the
/// fold at once, listing its status changes (the entry's own and any it adopted) as
/// unsettled in the record. [`settle`] runs their effects after the answer; until someone
/// has, every reader and writer of the record finds them there. Three writes: the seq, the
/// entry, the record.
pub async fn record_unsettled(
    cx: Cx<'_, impl Store>,
    op_id: &str,
    known: Operation,
    kind: EntryKind,
) -> JournalResult<Recorded> {
    let Cx { store, clock, .. } = cx;
    // The status change before each, for the order of their notifications.
    let mut before = known.status_seq;
    let mut recorded = journal::record_from(store, clock, op_id, Some(known), kind).await?;
    let changes: Vec<Unsettled> = (recorded.adopted.iter())
        .chain(std::iter::once(&recorded))
        .filter_map(|r| {
            let c = change_of(r)?;
            let after = (before != 0).then_some(before);
            before = c.seq;
            Some(Unsettled {
                seq: c.seq,
                from: c.from,
                to: c.to,
                at_ms: c.op.updated_at_ms,
                after,
            })
        })
        .collect();
    if let Some(op) = &mut recorded.operation {
        for change in changes {
            if !op.unsettled.iter().any(|u| u.seq == change.seq) {
                op.unsettled.push(change);
            }
        }
        if recorded.behind {
            journal::save(store, op).await?;
        }
    }
    Ok(recorded)
}

/// Runs the effects still owed for `op`'s unsettled changes. Each runs once whoever settles
/// it (its effects claim); one another settler already claimed is skipped. Returns the buyer
/// notifications to attempt now. The caller clears `op.unsettled` when it next stores it.
pub async fn settle(
    cx: Cx<'_, impl Store>,
    source: &str,
    op: &Operation,
) -> StoreResult<Vec<String>> {
    let mut notifications = Vec::new();
    for u in &op.unsettled {
        // Only whether the claim exists: its value is never read with `get`.
        let claim = crate::foundation::keys::effects_claim(&op.operation_id, u.seq);
        if cx.store.get(&claim).await?.is_some() {
            continue;
        }
        let at = as_of(op, u);
        if let Some(id) = apply(cx, source, Some(change(&at, u))).await? {
            notifications.push(id);
        }
    }
    Ok(notifications)
}

/// The part of [`settle`] that cannot wait for the sweep: the buyer notifications of `op`'s
/// unsettled changes, queued (idempotently) and returned to attempt now, in order. The
/// notification of the change before one, if still pending (a creation's `submitted`, due
/// for the sweep, when the seller's webhook comes first), is returned ahead of it: the
/// buyer hears of the changes in the order they were made. Costs one read when the tenant
/// has no callback. The task index and the counters are left to whoever settles the changes
/// next: a reader or writer of the operation, the sweep's next look at it, or the auditor's
/// walk.
pub async fn announce_unsettled(
    cx: Cx<'_, impl Store>,
    op: &Operation,
) -> StoreResult<Vec<String>> {
    let mut notifications = Vec::new();
    for u in &op.unsettled {
        let at = as_of(op, u);
        let Some(id) = announce(cx.store, cx.clock, &at, u.from, u.to, u.seq).await? else {
            continue;
        };
        if let Some(before) = u.after {
            let earlier = notify::notification_id(&op.operation_id, before);
            if !notifications.contains(&earlier) && notify::pending(cx.store, &earlier).await? {
                notifications.push(earlier);
            }
        }
        notifications.push(id);
    }
    Ok(notifications)
}

/// The operation as of an unsettled change: a notification describes the change, not what
/// came after it.
fn as_of(op: &Operation, u: &Unsettled) -> Operation {
    let mut at = op.clone();
    if u.to != op.status {
        at.result = None;
        at.error = None;
    }
    at.status = u.to;
    at.updated_at_ms = u.at_ms;
    at
}

fn change<'a>(at: &'a Operation, u: &Unsettled) -> Change<'a> {
    Change {
        op: at,
        seq: u.seq,
        from: u.from,
        to: u.to,
    }
}

/// Applies the side effects of the changes `recorded` adopted and of its own entry, if it
/// changed the status. Returns the id of the buyer notification to attempt now, if the own
/// entry queued one.
async fn after_record(
    cx: Cx<'_, impl Store>,
    source: &str,
    recorded: &Recorded,
) -> StoreResult<Option<String>> {
    for change in &recorded.adopted {
        apply(cx, "adopted", change_of(change)).await?;
    }
    apply(cx, source, change_of(recorded)).await
}

/// A status change whose effects are to run, with the operation as of it.
struct Change<'a> {
    op: &'a Operation,
    seq: u64,
    from: OperationStatus,
    to: OperationStatus,
}

fn change_of(recorded: &Recorded) -> Option<Change<'_>> {
    match (recorded.effect, &recorded.operation, recorded.previous) {
        (Some(Effect::Applied(to) | Effect::Overrode(to)), Some(op), Some(from)) => Some(Change {
            op,
            seq: recorded.seq,
            from,
            to,
        }),
        _ => None,
    }
}

async fn apply(
    cx: Cx<'_, impl Store>,
    source: &str,
    change: Option<Change<'_>>,
) -> StoreResult<Option<String>> {
    let Cx { store, clock, log } = cx;
    let Some(Change { op, seq, from, to }) = change else {
        return Ok(None);
    };
    let now = clock.now_ms();
    if from == OperationStatus::CanceledLocally && to.is_authoritative_terminal() {
        // The seller resolved a task the buyer had canceled: the sweep cancels a media buy
        // that came of it (see `linked::cancel_follow_up`).
        let due = crate::schedule::due::DueConfig::default();
        let state = crate::schedule::poll::PollState {
            next_at_ms: now,
            ..Default::default()
        };
        crate::schedule::poll::schedule_at(store, clock, &due, &op.operation_id, state).await?;
    }
    if op.task_id.is_some() && !matches!(from, OperationStatus::Seller(_)) {
        // The first seller status with a task handle: index the task for reconciliation.
        crate::records::indexes::track(store, op).await?;
    }
    let notification = announce(store, clock, op, from, to, seq).await?;
    let claim = crate::foundation::keys::effects_claim(&op.operation_id, seq);
    if store.increment(&claim, 1).await? != 1 {
        return Ok(notification);
    }
    metrics::transition(store, op.task.name(), from, to, op.created_at_ms, now).await?;
    if op.in_tenant_summary {
        crate::records::summary::status_changed(store, &op.tenant_id, from, to).await?;
    }
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
    Ok(notification)
}

/// Queues the buyer notification of the change (once per entry: [`notify::enqueue`] keeps
/// one that exists) and files it due. Returns its id while it is still to be delivered.
async fn announce(
    store: &impl Store,
    clock: &dyn crate::foundation::clock::Clock,
    op: &Operation,
    from: OperationStatus,
    to: OperationStatus,
    seq: u64,
) -> StoreResult<Option<String>> {
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
        "sequence": seq,
        "changed_at_ms": op.updated_at_ms,
    });
    let Some(queued) =
        notify::enqueue(store, clock, &op.tenant_id, &op.operation_id, seq, body).await?
    else {
        return Ok(None);
    };
    if queued.state != notify::DeliveryState::Pending {
        return Ok(None);
    }
    // Filed before any attempt, so the sweep delivers it even if no one else tries (a
    // webhook's component makes an immediate attempt; API and sweep changes rely on this).
    let due = crate::schedule::due::DueConfig::default();
    let first_attempt = clock.now_ms() + FIRST_ATTEMPT_GRACE_MS;
    crate::schedule::due::schedule(store, &due, clock, &queued.id, first_attempt).await?;
    Ok(Some(queued.id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::foundation::clock::FixedClock;
    use crate::foundation::log::NoLog;
    use crate::foundation::store::MemoryStore;
    use crate::model::status::TaskStatus;
    use crate::records::journal::EntryKind;
    use crate::testing::{obs, sample};
    use futures::executor::block_on;

    fn completed_count(store: &MemoryStore) -> usize {
        let text = block_on(metrics::render(store, &Default::default(), 0)).unwrap();
        text.lines()
            .filter(|l| {
                l.starts_with("adcp_operation_transitions_total")
                    && l.contains("status=\"completed\"")
                    && l.ends_with(" 1")
            })
            .count()
    }

    /// A writer that appended its entry and died before the snapshot and the effects: the
    /// next readers adopt the change, and exactly one of them runs its effects.
    #[test]
    fn a_crashed_writers_change_is_adopted_once() {
        let store = MemoryStore::new();
        let clock = FixedClock(10_000);
        block_on(async {
            journal::create(&store, &clock, &sample("op1"))
                .await
                .unwrap();
            let sealing = crate::foundation::seal::SealingKey::from_hex(
                "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            )
            .unwrap();
            let callback = crate::records::notify::Callback {
                url: "https://buyer.example/hook".into(),
                secret: sealing.seal(&crate::testing::SeededEntropy::new(1), "p", b"s"),
                enabled: true,
                disabled_reason: None,
            };
            let tenant = sample("op1").tenant_id;
            crate::foundation::store::set_json(
                &store,
                &crate::foundation::keys::callback(&tenant),
                &callback,
            )
            .await
            .unwrap();
            journal::append(
                &store,
                &clock,
                "op1",
                EntryKind::Observed {
                    observation: Box::new(obs(TaskStatus::Completed, Some("task_1"))),
                },
            )
            .await
            .unwrap();
            // Two readers race over the orphaned entry (neither sees the other's snapshot).
            let (a, b) = futures::join!(
                load_and_adopt(Cx::new(&store, &clock, &NoLog), "op1"),
                load_and_adopt(Cx::new(&store, &clock, &NoLog), "op1")
            );
            assert_eq!(a.unwrap().unwrap().adopted.len(), 1);
            assert_eq!(b.unwrap().unwrap().adopted.len(), 1);
            // The snapshot moved past the entry: later readers adopt nothing.
            let c = load_and_adopt(Cx::new(&store, &clock, &NoLog), "op1")
                .await
                .unwrap()
                .unwrap();
            assert!(c.adopted.is_empty());
        });
        assert_eq!(completed_count(&store), 1);
        let queued = store
            .keys()
            .into_iter()
            .filter(|k| k.starts_with("ntf:"))
            .count();
        assert_eq!(queued, 1, "announced once");
    }

    /// Operations stored before the tenant summary existed never had their creation counted
    /// there; their status changes stay out of it too, so no status count goes negative.
    #[test]
    fn only_operations_counted_at_creation_are_counted_in_the_tenant_summary() {
        let store = MemoryStore::new();
        let clock = FixedClock(10_000);
        let mut old = sample("old");
        old.in_tenant_summary = false;
        let old: Operation = serde_json::from_value(serde_json::to_value(&old).unwrap()).unwrap();
        assert!(
            !old.in_tenant_summary,
            "absent in an earlier release's record"
        );
        block_on(async {
            crate::records::summary::created(&store, "t1", OperationStatus::PendingDispatch)
                .await
                .unwrap();
            for op in [old, sample("new")] {
                journal::create(&store, &clock, &op).await.unwrap();
                record(
                    Cx::new(&store, &clock, &NoLog),
                    "webhook",
                    &op.operation_id,
                    None,
                    EntryKind::Observed {
                        observation: Box::new(obs(TaskStatus::Submitted, Some("task_1"))),
                    },
                )
                .await
                .unwrap();
            }
            let summary = crate::records::summary::read(&store, "t1", &[])
                .await
                .unwrap();
            let counts: Vec<(&str, i64)> = summary
                .operations_by_status
                .iter()
                .map(|c| (c.status.as_str(), c.count))
                .collect();
            assert_eq!(counts, [("submitted", 1)]);
        });
    }
}
