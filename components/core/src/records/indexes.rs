//! The indexes written for operations besides their journal: the tenant's listing (with
//! the created counter) and the seller's task index that reconciliation walks.

use crate::foundation::keys;
use crate::foundation::store::{Store, StoreResult, get_decimal};
use crate::model::operation::Operation;

/// Lists a stored operation for its tenant, once: re-run after a failure anywhere, it
/// finishes the listing without a second entry. The position is recorded before the entry so
/// a rerun writes the same entry if it is missing; a crash before that leaves an unused position, which
/// listing readers skip. The created counters (global and the tenant's summary) follow the
/// listing: at most once per operation.
/// `fresh`: the caller just created it, so it cannot be listed yet (saves a read).
pub async fn list(store: &impl Store, op: &Operation, fresh: bool) -> StoreResult<()> {
    let listed = keys::operation_listed(&op.operation_id);
    let position = match fresh {
        true => None,
        false => get_decimal(store, &listed).await?,
    };
    let n = match position {
        Some(n) => n,
        None => {
            let n = store
                .increment(&keys::tenant_ops_count(&op.tenant_id), 1)
                .await?
                .max(0) as u64;
            store.set(&listed, n.to_string().as_bytes()).await?;
            n
        }
    };
    let entry = keys::tenant_ops_entry(&op.tenant_id, n);
    // A rerun (a replayed create, say) usually finds the entry written: a read, not a write.
    if position.is_none() || store.get(&entry).await?.is_none() {
        store.set(&entry, op.operation_id.as_bytes()).await?;
    }
    if position.is_none() {
        super::metrics::operation_created(store, op.task.name()).await?;
        super::summary::created(store, &op.tenant_id, op.status).await?;
    }
    Ok(())
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
