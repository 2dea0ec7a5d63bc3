//! The indexes written for operations besides their journal: the tenant's listing (with
//! the created counter) and the seller's task index that reconciliation walks.

use crate::foundation::keys;
use crate::foundation::store::{Store, StoreResult};
use crate::model::operation::Operation;

/// What every newly stored operation gets, whoever created it: the created counters (global
/// and the tenant's summary) and an entry in its tenant's listing.
pub async fn count_and_list(store: &impl Store, op: &Operation) -> StoreResult<()> {
    super::metrics::operation_created(store, op.task.name()).await?;
    super::summary::created(store, &op.tenant_id, op.status).await?;
    let n = store
        .increment(&keys::tenant_ops_count(&op.tenant_id), 1)
        .await?;
    store
        .set(
            &keys::tenant_ops_entry(&op.tenant_id, n.max(0) as u64),
            op.operation_id.as_bytes(),
        )
        .await
}

/// Records that `op` tracks its seller task (idempotent: the index key is per task).
pub async fn track(store: &impl Store, op: &Operation) -> StoreResult<()> {
    let Some(task_id) = &op.task_id else {
        return Ok(());
    };
    let key = keys::task_of(&op.tenant_id, &op.seller_id, task_id);
    if store.get(&key).await?.is_some() {
        return Ok(());
    }
    store.set(&key, op.operation_id.as_bytes()).await?;
    let n = store
        .increment(&keys::seller_tasks_count(&op.tenant_id, &op.seller_id), 1)
        .await?;
    store
        .set(
            &keys::seller_tasks_entry(&op.tenant_id, &op.seller_id, n.max(0) as u64),
            op.operation_id.as_bytes(),
        )
        .await
}
