//! Retention: operations closed (a seller outcome, or our `timed_out` / `canceled_locally`) and
//! unchanged for the retention period (default 30 days), when no seller retry, look-up horizon
//! (7 days) or de-duplication window (7 days) can still need them, are removed with everything
//! keyed by them: journal entries, effect claims, poll state, notifications, task index and tenant
//! listing entries. Reconciliation's walk drops their tracked-task entries (a seller without
//! `list_tasks` keeps one small entry per task ever tracked). Runs with reconciliation, once per
//! epoch, walking each tenant's listing from its oldest entry, a bounded number per run.

use crate::foundation::store::{Store, get_decimal, get_json};
use crate::foundation::{cx::Cx, keys, log};
use crate::model::operation::Operation;
use crate::records::{
    journal::{self, JournalResult},
    notify,
};
use crate::schedule::retention::Retention;

/// Listing entries checked per tenant per run.
const CHECKS_PER_RUN: u64 = 500;

/// Removes expired operations of every tenant that ever had a seller (operations need one;
/// a tenant whose sellers were all removed still has its closed operations to purge).
pub async fn run(cx: Cx<'_, impl Store>, retention: &Retention) -> JournalResult<usize> {
    let Cx { store, .. } = cx;
    let mut removed = 0;
    let registry = crate::records::seller::registry(store).await?;
    // Extended, not collected (a sort routine in the `.wasm` fewer).
    let mut tenants = std::collections::BTreeSet::new();
    tenants.extend(registry.into_iter().map(|(t, _)| t));
    for t in tenants {
        removed += purge_tenant(cx, retention, &t).await?;
    }
    Ok(removed)
}

/// Checks a bounded run of the tenant's listing, from where the last run stopped (`next`),
/// wrapping to the oldest entry not yet removed (`low`) at the end: an operation that cannot
/// be purged yet is passed over, never a wall that stops retention for every later one.
pub async fn purge_tenant(
    cx: Cx<'_, impl Store>,
    retention: &Retention,
    tenant: &str,
) -> JournalResult<usize> {
    let Cx { store, clock, log } = cx;
    let live = crate::records::indexes::live_listing(store, tenant).await?;
    let (low, count) = (*live.start(), *live.end());
    let next = get_decimal(store, &keys::purge_next(tenant))
        .await?
        .unwrap_or(low);
    let start = if (low..=count).contains(&next) {
        next
    } else {
        low
    };
    let now = clock.now_ms();
    let mut removed = 0;
    let mut new_low = low;
    let end = count.min(start.saturating_add(CHECKS_PER_RUN - 1));
    for n in start..=end {
        let entry_key = keys::tenant_ops_entry(tenant, n);
        let gone = match store.get(&entry_key).await? {
            None => true,
            Some(id) => {
                let id = String::from_utf8_lossy(&id).into_owned();
                match crate::lifecycle::effects::load_and_adopt(cx, &id).await? {
                    None => {
                        store.delete(&entry_key).await?;
                        true
                    }
                    Some(l) if expired(&l.operation, retention, now) => {
                        remove(store, &l.operation, l.head).await?;
                        store.delete(&entry_key).await?;
                        log::emit(
                            log,
                            &log::Event {
                                ts_ms: now,
                                event: "operation.purged",
                                operation_id: Some(&id),
                                tenant_id: Some(tenant),
                                status: Some(l.operation.status.as_str()),
                                ..Default::default()
                            },
                        );
                        removed += 1;
                        true
                    }
                    Some(_) => false,
                }
            }
        };
        // `low` only passes entries that are gone, so nothing below it is ever skipped.
        if gone && n == new_low {
            new_low = n + 1;
        }
    }
    if new_low != low {
        store
            .set(&keys::purge_cursor(tenant), new_low.to_string().as_bytes())
            .await?;
    }
    let resume = if end >= count { new_low } else { end + 1 };
    if resume != next {
        store
            .set(&keys::purge_next(tenant), resume.to_string().as_bytes())
            .await?;
    }
    Ok(removed)
}

pub fn expired(op: &Operation, retention: &Retention, now_ms: u64) -> bool {
    op.status.is_closed()
        && op
            .updated_at_ms
            .checked_add(retention.terminal_operation_ms)
            .is_some_and(|end| end <= now_ms)
}

/// Deletes every key of the operation; the snapshot last, so a crash midway leaves it
/// findable and the next run finishes the job.
async fn remove(store: &impl Store, op: &Operation, head: u64) -> JournalResult<()> {
    let id = &op.operation_id;
    for seq in 1..=head {
        if op.deliveries.moved_out > 0 {
            // Marks that moved out of the record are named by their delivery's key.
            let entry: Option<journal::Entry> =
                get_json(store, &keys::operation_entry(id, seq)).await?;
            if let Some(journal::EntryKind::Observed { observation }) = entry.map(|e| e.kind)
                && let Some(d) = &observation.delivery
            {
                store
                    .delete(&keys::delivery_mark(id, &d.idempotency_key))
                    .await?;
            }
        }
        store.delete(&keys::operation_entry(id, seq)).await?;
        store.delete(&keys::effects_claim(id, seq)).await?;
        let ntf = notify::notification_id(id, seq);
        store.delete(&keys::notification(&ntf)).await?;
        store.delete(&keys::notification_final(&ntf)).await?;
        store.delete(&keys::poll_state(&ntf)).await?;
    }
    if let Some(task_id) = &op.task_id {
        let key = keys::task_of(&op.tenant_id, &op.seller_id, task_id);
        // Only our own index entry: an adopted duplicate may own the task now.
        if store.get(&key).await?.as_deref() == Some(id.as_bytes()) {
            store.delete(&key).await?;
        }
    }
    store.delete(&keys::poll_state(id)).await?;
    store.delete(&keys::operation_listed(id)).await?;
    store.delete(&keys::operation_seq(id)).await?;
    Ok(store.delete(&keys::operation(id)).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::foundation::clock::FixedClock;
    use crate::foundation::cx::Cx;
    use crate::foundation::log::NoLog;
    use crate::foundation::store::MemoryStore;
    use crate::model::status::TaskStatus;
    use crate::records::journal::{self, EntryKind};
    use crate::testing::{obs, sample};
    use futures::executor::block_on;

    const DAY: u64 = 86_400_000;

    fn listed(store: &MemoryStore, id: &str, clock: &FixedClock) {
        block_on(async {
            journal::create(store, clock, &sample(id)).await.unwrap();
            let n = store
                .increment(&keys::tenant_ops_count("t1"), 1)
                .await
                .unwrap();
            store
                .set(&keys::tenant_ops_entry("t1", n as u64), id.as_bytes())
                .await
                .unwrap();
        });
    }

    #[test]
    fn closed_operations_go_after_the_retention_period_with_all_their_keys() {
        let store = MemoryStore::new();
        let t0 = FixedClock(10 * DAY);
        for id in ["op_old", "op_open", "op_recent"] {
            listed(&store, id, &t0);
        }
        block_on(async {
            for (id, status, at) in [
                ("op_old", TaskStatus::Completed, 10 * DAY),
                ("op_open", TaskStatus::Working, 10 * DAY),
                ("op_recent", TaskStatus::Failed, 35 * DAY),
            ] {
                crate::testing::record(
                    &store,
                    &FixedClock(at),
                    id,
                    EntryKind::Observed {
                        observation: Box::new(obs(status, Some(&format!("task_{id}")))),
                    },
                )
                .await
                .unwrap();
                let op = journal::load(&store, &t0, id)
                    .await
                    .unwrap()
                    .unwrap()
                    .operation;
                crate::records::indexes::track(&store, &op).await.unwrap();
            }
        });
        let retention = Retention::default();
        let now = FixedClock(41 * DAY);
        let removed = block_on(purge_tenant(
            Cx::new(&store, &now, &NoLog),
            &retention,
            "t1",
        ))
        .unwrap();
        assert_eq!(removed, 1);
        let left: Vec<String> = store
            .keys()
            .into_iter()
            .filter(|k| {
                k.contains("op_old") || k.contains(":1") && k.starts_with("tenant:t1:ops:1")
            })
            .collect();
        assert!(left.is_empty(), "{left:?}");
        assert!(
            block_on(journal::load(&store, &now, "op_open"))
                .unwrap()
                .is_some()
        );
        assert!(
            block_on(journal::load(&store, &now, "op_recent"))
                .unwrap()
                .is_some()
        );
        assert!(
            block_on(store.get(&keys::task_of("t1", "s1", "task_op_old")))
                .unwrap()
                .is_none()
        );
        // The cursor passed the removed entry and stops at the open one; running again
        // removes nothing more until the others expire.
        assert_eq!(
            block_on(purge_tenant(
                Cx::new(&store, &now, &NoLog),
                &retention,
                "t1"
            ))
            .unwrap(),
            0
        );
        let later = FixedClock(66 * DAY);
        assert_eq!(
            block_on(purge_tenant(
                Cx::new(&store, &later, &NoLog),
                &retention,
                "t1"
            ))
            .unwrap(),
            1,
            "op_recent, 30 days after it failed; the open one stays"
        );
    }

    #[test]
    fn an_operation_that_cannot_be_purged_yet_does_not_stop_retention_of_later_ones() {
        let store = MemoryStore::new();
        let t0 = FixedClock(10 * DAY);
        let ids: Vec<String> = (0..CHECKS_PER_RUN + 100)
            .map(|i| format!("op{i}"))
            .collect();
        for (i, id) in ids.iter().enumerate() {
            listed(&store, id, &t0);
            // The first never closes (its seller answers `working` forever); the rest failed.
            let status = if i == 0 {
                TaskStatus::Working
            } else {
                TaskStatus::Failed
            };
            let kind = EntryKind::Observed {
                observation: Box::new(obs(status, None)),
            };
            block_on(crate::testing::record(&store, &t0, id, kind)).unwrap();
        }
        // The tenant's seller was removed since: its closed operations are purged anyway.
        block_on(async {
            crate::records::seller::index(&store, "t1", "s1")
                .await
                .unwrap();
            crate::records::seller::delete(&store, "t1", "s1")
                .await
                .unwrap();
        });
        let now = FixedClock(41 * DAY);
        let run = || block_on(run(Cx::new(&store, &now, &NoLog), &Retention::default())).unwrap();
        assert_eq!(
            run(),
            CHECKS_PER_RUN as usize - 1,
            "the first run's share, op0 kept"
        );
        assert_eq!(run(), 100, "the next run goes on past op0");
        assert_eq!(run(), 0);
        let left: Vec<String> = ids
            .iter()
            .filter(|id| block_on(journal::load(&store, &now, id)).unwrap().is_some())
            .cloned()
            .collect();
        assert_eq!(left, ["op0"]);
        // Nothing below the open operation was ever passed over.
        let low: Option<u64> = block_on(get_decimal(&store, &keys::purge_cursor("t1"))).unwrap();
        assert_eq!(low.unwrap_or(1), 1);
    }
}
