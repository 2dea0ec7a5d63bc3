//! The governance check before a seller hears of an operation (`check_governance`), and the
//! reading of its verdict.

use super::dispatch::{Dispatched, answered, fail, retry_at};
use super::effects;
use crate::foundation::clock::Clock;
use crate::foundation::log::Log;
use crate::foundation::store::{Store, StoreResult};
use crate::model::operation::{LocalChange, Observation, Operation, OperationError, Source};
use crate::model::status::{OperationStatus, TaskStatus};
use crate::records::journal::EntryKind;
use crate::records::seller;
use crate::seller::port::{CallFailure, Recovery, SellerCalls};
use serde_json::{Value, json};

/// Where the governance check left a dispatch.
pub(super) enum Governed {
    /// Approved: call the seller with this (updated) operation.
    Approved(Box<Operation>),
    /// Denied, held for a human, or no verdict yet: the seller is not called.
    Settled(Dispatched),
}

/// Asks the operation's governance agent (`check_governance`, phase `purchase` for a create,
/// `modification` otherwise) before the seller hears of it. `approved` proceeds with the
/// returned `governance_context`; `denied` fails the operation with the verdict;
/// `conditions` holds it for a human (`awaiting_decision`).
pub(super) async fn govern(
    store: &impl Store,
    clock: &dyn Clock,
    log: &dyn Log,
    calls: &impl SellerCalls,
    op: Operation,
) -> StoreResult<Governed> {
    let Some(g) = op.governance.clone() else {
        return Ok(Governed::Approved(Box::new(op)));
    };
    let Some(agent) = seller::get(store, &op.tenant_id, &g.agent_id).await? else {
        let error = OperationError {
            code: "GOVERNANCE_AGENT_NOT_REGISTERED".into(),
            message: format!("no agent registered as `{}`", g.agent_id),
        };
        return settled(store, clock, log, op, governance_failure(error, None)).await;
    };
    let mut payload = op.arguments.clone();
    if let Value::Object(m) = &mut payload {
        m.remove("idempotency_key");
    }
    let phase = if op.task == "create_media_buy" {
        "purchase"
    } else {
        "modification"
    };
    let args = json!({
        "plan_id": g.plan_id, "caller": g.caller, "tool": op.task,
        "payload": payload, "phase": phase,
    });
    let now = clock.now_ms();
    let answer = match calls.call(&agent, "check_governance", args).await {
        Ok(a) => a,
        Err(CallFailure::Deferred { until_ms }) => {
            return Ok(Governed::Settled(Dispatched::Deferred { until_ms }));
        }
        Err(CallFailure::Seller(se)) if se.recovery != Recovery::Transient => {
            let error = OperationError {
                code: se.code,
                message: se.message,
            };
            return settled(store, clock, log, op, governance_failure(error, None)).await;
        }
        Err(failure) => {
            let (error, hint) = match failure {
                CallFailure::Seller(se) => (
                    OperationError {
                        code: se.code,
                        message: se.message,
                    },
                    se.retry_after_s,
                ),
                other => (
                    OperationError {
                        code: "GOVERNANCE_UNAVAILABLE".into(),
                        message: format!("{other:?}"),
                    },
                    None,
                ),
            };
            let retry = retry_at(&op, now, hint);
            return fail(store, clock, log, &op, error, retry, false)
                .await
                .map(Governed::Settled);
        }
    };
    // 3.1 names the decision `verdict`; 3.0 called it `status`.
    let verdict = answer
        .get("verdict")
        .or_else(|| answer.get("status"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let text = |k: &str| answer.get(k).and_then(Value::as_str).map(str::to_string);
    let change = match verdict {
        "approved" => LocalChange::GovernanceApproved {
            governance_context: text("governance_context"),
        },
        "conditions" => LocalChange::GovernanceHold {
            explanation: text("explanation"),
            conditions: answer.get("conditions").cloned(),
        },
        "denied" => {
            let error = OperationError {
                code: "GOVERNANCE_DENIED".into(),
                message: text("explanation").unwrap_or_else(|| "denied by governance".into()),
            };
            return settled(
                store,
                clock,
                log,
                op,
                governance_failure(error, Some(answer)),
            )
            .await;
        }
        other => {
            let error = OperationError {
                code: "GOVERNANCE_INVALID_RESPONSE".into(),
                message: format!("check_governance answered verdict `{other}`"),
            };
            let retry = retry_at(&op, now, None);
            return fail(store, clock, log, &op, error, retry, false)
                .await
                .map(Governed::Settled);
        }
    };
    let approved = matches!(change, LocalChange::GovernanceApproved { .. });
    let recorded = effects::record(
        store,
        clock,
        log,
        "governance",
        &op.operation_id,
        Some(op.clone()),
        EntryKind::Local { change },
    )
    .await?
    .recorded;
    match recorded.operation {
        Some(o) if approved && o.status == OperationStatus::PendingDispatch => {
            Ok(Governed::Approved(Box::new(o)))
        }
        _ => Ok(Governed::Settled(Dispatched::Answered(Box::new(recorded)))),
    }
}

fn governance_failure(error: OperationError, verdict: Option<Value>) -> Observation {
    Observation {
        source: Source::Governance,
        status: TaskStatus::Failed,
        at_ms: None,
        task_id: None,
        context_id: None,
        message: Some(error.message.clone()),
        result: verdict,
        error: Some(error),
        delivery: None,
    }
}

async fn settled(
    store: &impl Store,
    clock: &dyn Clock,
    log: &dyn Log,
    op: Operation,
    obs: Observation,
) -> StoreResult<Governed> {
    answered(store, clock, log, op, obs)
        .await
        .map(Governed::Settled)
}
