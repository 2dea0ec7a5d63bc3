//! The tenant's summary (`GET /api/v1/summary`): operations by status, webhook refusals by
//! reason, seller errors by seller. Counters are bumped as things happen, beside the global
//! metrics, and read from a fixed set of keys: nothing is scanned.
//!
//! Only `increment` is atomic, so the refusal and error counts are at most once: a writer
//! that crashes between applying a change and counting it leaves them one off. The counts by
//! status are gauges the auditor corrects to the stored operations (`records::gauges`).
//! A status change costs one increment (a counter per from→to pair); reading pays for it,
//! one read per pair that the state machine can take. Operations stored by a release
//! without these counters are left out (`Operation::in_tenant_summary`).

use crate::foundation::keys;
use crate::foundation::store::{Store, StoreResult};
use crate::model::status::OperationStatus;
use crate::records::metrics::Rejection;
use serde::Serialize;

/// One of the tenant's operations was stored in `status` (usually `pending_dispatch`; an
/// operation adopted from a seller's task list starts in the seller's status).
pub async fn created(store: &impl Store, tenant: &str, status: OperationStatus) -> StoreResult<()> {
    store
        .increment(&keys::summary_created(tenant, status.as_str()), 1)
        .await
        .map(drop)
}

/// The writer that applied `from → to` for one of the tenant's operations reports it.
pub async fn status_changed(
    store: &impl Store,
    tenant: &str,
    from: OperationStatus,
    to: OperationStatus,
) -> StoreResult<()> {
    store
        .increment(&keys::summary_moved(tenant, from.as_str(), to.as_str()), 1)
        .await
        .map(drop)
}

/// A webhook for one of the tenant's operations was refused.
pub async fn webhook_rejected(
    store: &impl Store,
    tenant: &str,
    reason: Rejection,
) -> StoreResult<()> {
    store
        .increment(&keys::summary_rejected(tenant, reason.as_str()), 1)
        .await
        .map(drop)
}

/// A call to one of the tenant's sellers failed.
pub async fn seller_error(store: &impl Store, tenant: &str, seller: &str) -> StoreResult<()> {
    store
        .increment(&keys::summary_seller_errors(tenant, seller), 1)
        .await
        .map(drop)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusCount {
    pub status: OperationStatus,
    pub count: i64,
    /// Still waiting for an outcome (not closed).
    pub open: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Operations currently in each status (zeros left out).
    pub operations_by_status: Vec<StatusCount>,
    /// Webhooks refused, by reason (zeros left out). Refusals of unknown operations have no
    /// tenant and are counted in `/metrics` only.
    pub webhook_rejections: Vec<(String, i64)>,
    /// Failed seller calls, by seller (zeros left out).
    pub seller_errors: Vec<(String, i64)>,
}

/// Reads the tenant's counters; `sellers` are the seller ids to report errors for.
pub async fn read(store: &impl Store, tenant: &str, sellers: &[String]) -> StoreResult<Summary> {
    let counts = crate::records::gauges::read_tenant(store, tenant).await?;
    let operations_by_status = counts
        .into_iter()
        .filter(|(_, r)| r.value != 0)
        .map(|(status, r)| StatusCount {
            status,
            count: r.value,
            open: !status.is_closed(),
        })
        .collect();
    let mut webhook_rejections = Vec::new();
    for reason in Rejection::ALL {
        let n = store
            .increment(&keys::summary_rejected(tenant, reason.as_str()), 0)
            .await?;
        if n != 0 {
            webhook_rejections.push((reason.as_str().to_string(), n));
        }
    }
    let mut seller_errors = Vec::new();
    for seller in sellers {
        let n = store
            .increment(&keys::summary_seller_errors(tenant, seller), 0)
            .await?;
        if n != 0 {
            seller_errors.push((seller.clone(), n));
        }
    }
    Ok(Summary {
        operations_by_status,
        webhook_rejections,
        seller_errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::foundation::store::MemoryStore;
    use crate::model::status::TaskStatus;
    use futures::executor::block_on;

    #[test]
    fn counts_follow_status_changes_per_tenant() {
        let s = MemoryStore::new();
        let submitted = OperationStatus::Seller(TaskStatus::Submitted);
        let completed = OperationStatus::Seller(TaskStatus::Completed);
        block_on(async {
            // Three created for t1, one for t2.
            for tenant in ["t1", "t1", "t1", "t2"] {
                created(&s, tenant, OperationStatus::PendingDispatch)
                    .await
                    .unwrap();
            }
            for _ in 0..2 {
                status_changed(&s, "t1", OperationStatus::PendingDispatch, submitted)
                    .await
                    .unwrap();
            }
            status_changed(&s, "t1", submitted, OperationStatus::TimedOut)
                .await
                .unwrap();
            // The seller's outcome replaces our timeout.
            status_changed(&s, "t1", OperationStatus::TimedOut, completed)
                .await
                .unwrap();
            webhook_rejected(&s, "t1", Rejection::Unauthenticated)
                .await
                .unwrap();
            seller_error(&s, "t1", "ssp").await.unwrap();
            let sum = read(&s, "t1", &["ssp".into(), "other".into()])
                .await
                .unwrap();
            let by: Vec<(&str, i64, bool)> = sum
                .operations_by_status
                .iter()
                .map(|c| (c.status.as_str(), c.count, c.open))
                .collect();
            assert_eq!(
                by,
                [
                    ("pending_dispatch", 1, true),
                    ("submitted", 1, true),
                    ("completed", 1, false)
                ]
            );
            assert_eq!(sum.webhook_rejections, [("unauthenticated".into(), 1)]);
            assert_eq!(sum.seller_errors, [("ssp".into(), 1)]);
            let other = read(&s, "t2", &["ssp".into()]).await.unwrap();
            assert_eq!(other.operations_by_status.len(), 1);
            assert_eq!(other.operations_by_status[0].count, 1);
            assert!(other.webhook_rejections.is_empty() && other.seller_errors.is_empty());
        });
    }
}
