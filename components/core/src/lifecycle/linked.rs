//! Operations the orchestrator derives from another: the `update_media_buy`
//! (`canceled: true`) that cancels a buy a canceled operation left live at the seller, and
//! the re-plan of an operation a seller held in `input-required`. Each is an ordinary
//! operation (stored before sent, tracked, redispatched by the sweep) linked to its parent.

use super::create::{Filing, Stored, store_new};
use crate::foundation::clock::Entropy;
use crate::foundation::clock::uuid_v4;
use crate::foundation::cx::Cx;
use crate::foundation::seal::digest_hex;
use crate::foundation::store::Store;
use crate::lifecycle::effects;
use crate::model::operation::{LocalChange, NewOperation, Operation, sent_arguments};
use crate::model::status::{OperationStatus, TaskStatus};
use crate::model::task::TaskKind;
use crate::records::journal::{EntryKind, JournalError, JournalResult};
use crate::schedule::{backoff::Deadlines, due::DueConfig};
use serde_json::{Map, Value, json};

/// The id of the operation derived from `parent` for `purpose`: deterministic, so racing
/// derivations (two sweeps, an API call and a sweep) create one operation.
pub fn derived_id(parent: &str, purpose: &str) -> String {
    format!(
        "op_{}",
        &digest_hex(format!("{parent}\n{purpose}").as_bytes())[..32]
    )
}

/// Builds a new operation for `task` with `arguments` (our `idempotency_key` and
/// `context.operation_id` added), linked to `parent`, polled rather than webhook-driven.
pub fn new_operation(
    parent: &Operation,
    operation_id: String,
    task: TaskKind,
    arguments: Map<String, Value>,
    deadlines: &Deadlines,
    entropy: &dyn Entropy,
    now: u64,
) -> Operation {
    let idempotency_key = uuid_v4(entropy);
    let new = NewOperation {
        arguments: sent_arguments(arguments, &idempotency_key, &operation_id),
        operation_id,
        tenant_id: parent.tenant_id.clone(),
        seller_id: parent.seller_id.clone(),
        task,
        idempotency_key,
        status: OperationStatus::PendingDispatch,
        task_id: None,
        message: None,
        deadline_ms: deadlines.for_task_ms(task.name()),
        linked_from: Some(parent.operation_id.clone()),
    };
    Operation::new(new, now)
}

/// Stores a derived operation (idempotently) and files it due now for the sweep. Returns
/// the stored operation (the existing one if it was already there).
pub async fn store_derived(
    cx: Cx<'_, impl Store>,
    due: &DueConfig,
    op: &Operation,
) -> JournalResult<Operation> {
    let Cx { clock, .. } = cx;
    match store_new(cx, due, op, clock.now_ms(), Filing::Complete).await? {
        Stored::Created(created) | Stored::Existing(Some(created)) => Ok(created),
        // Never an unstored copy: the caller would report an operation that does not exist.
        Stored::Existing(None) => Err(JournalError::InFlight),
    }
}

/// The media buy a completed `create_media_buy` made, if any.
pub fn media_buy_id(op: &Operation) -> Option<&str> {
    (op.task == TaskKind::CreateMediaBuy
        && op.status == OperationStatus::Seller(TaskStatus::Completed))
    .then(|| op.result.as_ref()?.get("media_buy_id")?.as_str())
    .flatten()
}

/// For a canceled operation whose media buy exists at the seller: starts (once) the
/// `update_media_buy` with `canceled: true` that cancels it. Returns that operation.
pub async fn cancel_follow_up(
    cx: Cx<'_, impl Store>,
    entropy: &dyn Entropy,
    config: &crate::config::SweepConfig,
    op: &Operation,
) -> JournalResult<Option<Operation>> {
    let Cx { clock, .. } = cx;
    let (Some(cancel), Some(buy)) = (&op.cancel, media_buy_id(op)) else {
        return Ok(None);
    };
    let mut args = Map::new();
    if let Some(account) = op.arguments.get("account") {
        args.insert("account".into(), account.clone());
    }
    args.insert("media_buy_id".into(), json!(buy));
    args.insert("canceled".into(), json!(true));
    args.insert(
        "cancellation_reason".into(),
        json!(
            cancel
                .reason
                .clone()
                .unwrap_or_else(|| "canceled by the buyer".into())
        ),
    );
    let id = derived_id(&op.operation_id, "cancel");
    let child = new_operation(
        op,
        id,
        TaskKind::UpdateMediaBuy,
        args,
        &config.deadlines,
        entropy,
        clock.now_ms(),
    );
    let stored = store_derived(cx, &config.due, &child).await?;
    if cancel.follow_up.is_none() {
        effects::record(
            cx,
            "cancel",
            &op.operation_id,
            None,
            EntryKind::Local {
                change: LocalChange::CancelFollowUp {
                    operation_id: stored.operation_id.clone(),
                },
                by: None,
            },
        )
        .await?;
    }
    Ok(Some(stored))
}
