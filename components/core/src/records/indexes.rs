//! The indexes written for operations besides their journal: the tenant's listing (with
//! the created counter) and the seller's task index that reconciliation walks.

use crate::foundation::keys;
use crate::foundation::store::{Store, StoreResult, get_decimal};
use crate::model::operation::Operation;

/// A position in the tenant's listing for an operation about to be created: recorded in the
/// operation ([`Operation::listed_at`]) before its creation entry, so any creator that finishes
/// its filing lists it there, never twice. A creator that dies first leaves an unused
/// position, which listing readers skip.
pub async fn allocate_position(store: &impl Store, tenant: &str) -> StoreResult<u64> {
    Ok(store
        .increment(&keys::tenant_ops_count(tenant), 1)
        .await?
        .max(0) as u64)
}

/// Lists a stored operation for its tenant at its position: re-run after a failure anywhere,
/// it finishes the listing without a second entry. `fresh`: the caller just created it, so
/// the entry cannot exist yet (saves a read). Operations of earlier releases have no
/// position in the record: theirs is under `op:{id}:listed`, allocated here if missing.
/// Returns whether this listed it (its creation is then counted, see [`count_created`]).
pub async fn list(store: &impl Store, op: &Operation, fresh: bool) -> StoreResult<bool> {
    let (n, known) = match op.listed_at {
        Some(n) => (n, !fresh),
        None => {
            let listed = keys::operation_listed(&op.operation_id);
            match get_decimal(store, &listed).await? {
                Some(n) => (n, true),
                None => {
                    let n = allocate_position(store, &op.tenant_id).await?;
                    store.set(&listed, n.to_string().as_bytes()).await?;
                    (n, false)
                }
            }
        }
    };
    let entry = keys::tenant_ops_entry(&op.tenant_id, n);
    // A rerun (a replayed create, say) usually finds the entry written: a read, not a write.
    if known && store.get(&entry).await?.is_some() {
        return Ok(false);
    }
    store.set(&entry, op.operation_id.as_bytes()).await?;
    Ok(true)
}

/// Counts a newly listed operation's creation (global and in the tenant's summary): at most
/// once per operation, by whoever listed it.
pub async fn count_created(store: &impl Store, op: &Operation) -> StoreResult<()> {
    super::metrics::operation_created(store, op.task.name()).await?;
    super::summary::created(store, &op.tenant_id, op.status).await
}

/// The tenant's listing entries that may still name an operation: from retention's low mark
/// (everything below it is removed) to the newest.
pub async fn live_listing(
    store: &impl Store,
    tenant: &str,
) -> StoreResult<std::ops::RangeInclusive<u64>> {
    let newest = store
        .increment(&keys::tenant_ops_count(tenant), 0)
        .await?
        .max(0) as u64;
    let low = get_decimal(store, &keys::purge_cursor(tenant))
        .await?
        .unwrap_or(1);
    Ok(low.max(1)..=newest)
}

/// Records that `op` tracks its seller task. The task's key is written last, so a failure
/// anywhere before it is finished by the next run; the index may then hold the operation
/// twice, which its walkers tolerate (a second look at an open task).
pub async fn track(store: &impl Store, op: &Operation) -> StoreResult<()> {
    let Some(task_id) = &op.task_id else {
        return Ok(());
    };
    let key = keys::task_of(&op.tenant_id, &op.seller_id, task_id);
    if store.get(&key).await?.is_some() {
        return Ok(());
    }
    let n = store
        .increment(&keys::seller_tasks_count(&op.tenant_id, &op.seller_id), 1)
        .await?;
    store
        .set(
            &keys::seller_tasks_entry(&op.tenant_id, &op.seller_id, n.max(0) as u64),
            op.operation_id.as_bytes(),
        )
        .await?;
    store.set(&key, op.operation_id.as_bytes()).await
}
