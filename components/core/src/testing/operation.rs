//! Sample operations, observations and the seller record they belong to; recording an entry
//! to set one up.

use crate::foundation::{clock::Clock, store::Store};
use crate::model::operation::{NewOperation, Observation, Operation, Source};
use crate::model::status::{OperationStatus, TaskStatus};
use crate::model::task::TaskKind;
use crate::records::journal::{self, EntryKind, JournalResult, Recorded};
use crate::records::seller::Seller;
use serde_json::json;

/// A `create_media_buy` waiting for dispatch, created at 1 s with a one-day deadline.
pub fn sample(op: &str) -> Operation {
    let new = NewOperation {
        operation_id: op.into(),
        tenant_id: "t1".into(),
        seller_id: "s1".into(),
        task: TaskKind::CreateMediaBuy,
        arguments: json!({"idempotency_key": "k-0123456789abcdef"}),
        idempotency_key: "k-0123456789abcdef".into(),
        status: OperationStatus::PendingDispatch,
        task_id: None,
        message: None,
        deadline_ms: 86_400_000,
        linked_from: None,
    };
    Operation::new(new, 1_000)
}

pub fn obs(status: TaskStatus, task_id: Option<&str>) -> Observation {
    Observation {
        task_id: task_id.map(str::to_string),
        ..Observation::of(Source::Webhook, status)
    }
}

/// Seller `s1` of tenant `t1`, registered without credentials or capabilities.
pub fn sample_seller() -> Seller {
    Seller {
        tenant_id: "t1".into(),
        seller_id: "s1".into(),
        mcp_url: "https://seller.example/mcp".into(),
        credentials: None,
        webhook_mode: None,
        auth_scheme: Default::default(),
        capabilities: None,
        version_envelope: Default::default(),
        capability_subscription: None,
        attention: None,
        created_at_ms: 0,
        updated_at_ms: 0,
    }
}

/// Appends an entry and saves the fold, as a writer does once its effects ran (without them:
/// for setting up a record in the state a test needs).
pub async fn record(
    store: &impl Store,
    clock: &dyn Clock,
    op_id: &str,
    kind: EntryKind,
) -> JournalResult<Recorded> {
    let recorded = journal::record(store, clock, op_id, kind).await?;
    if let (true, Some(op)) = (recorded.behind, &recorded.operation) {
        journal::save(store, op).await?;
    }
    Ok(recorded)
}
