//! The governance check before a seller hears of an operation (`check_governance`), and the
//! reading of its verdict. Recording what it decided is dispatch's job.

use crate::foundation::store::{Store, StoreResult};
use crate::model::operation::{
    Governance, LocalChange, Observation, Operation, OperationError, Source,
};
use crate::model::status::TaskStatus;
use crate::model::task::TaskKind;
use crate::records::seller;
use crate::seller::port::{CallFailure, Recovery, SellerCalls};
use serde_json::{Value, json};

/// What the governance agent decided, as dispatch must act on it.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// `approved` (with its `governance_context`) or `conditions` (a hold for a human):
    /// recorded as this local change.
    Change(LocalChange),
    /// `denied`, an unregistered agent, or a refusal that will not change: the operation
    /// fails with this observation and the seller never hears of it.
    Failed(Box<Observation>),
    /// No usable verdict now: ask again later.
    Retry {
        error: OperationError,
        retry_after_s: Option<u32>,
    },
    /// Not asked: the agent's circuit breaker is open.
    Deferred { until_ms: u64 },
}

/// Asks the operation's governance agent (`check_governance`, phase `purchase` for a create,
/// `modification` otherwise) before the seller hears of it.
pub async fn check(
    store: &impl Store,
    calls: &impl SellerCalls,
    op: &Operation,
    g: &Governance,
) -> StoreResult<Verdict> {
    let Some(agent) = seller::get(store, &op.tenant_id, &g.agent_id).await? else {
        let error = OperationError::new(
            "GOVERNANCE_AGENT_NOT_REGISTERED",
            format!("no agent registered as `{}`", g.agent_id),
        );
        return Ok(failed(error, None));
    };
    let mut payload = op.arguments.clone();
    if let Value::Object(m) = &mut payload {
        m.remove("idempotency_key");
    }
    let phase = if op.task == TaskKind::CreateMediaBuy {
        "purchase"
    } else {
        "modification"
    };
    let args = json!({
        "plan_id": g.plan_id, "caller": g.caller, "tool": op.task,
        "payload": payload, "phase": phase,
    });
    let answer = match calls.call(&agent, "check_governance", args).await {
        Ok(a) => a,
        Err(CallFailure::Deferred { until_ms }) => return Ok(Verdict::Deferred { until_ms }),
        Err(CallFailure::Seller(se)) if se.recovery != Recovery::Transient => {
            let error = OperationError::new(se.code, se.message);
            return Ok(failed(error, None));
        }
        Err(CallFailure::Seller(se)) => {
            return Ok(Verdict::Retry {
                error: OperationError::new(se.code, se.message),
                retry_after_s: se.retry_after_s,
            });
        }
        Err(other) => {
            return Ok(Verdict::Retry {
                error: OperationError::new("GOVERNANCE_UNAVAILABLE", format!("{other:?}")),
                retry_after_s: None,
            });
        }
    };
    Ok(read_verdict(answer))
}

/// A `check_governance` answer. 3.1 names the decision `verdict`; 3.0 called it `status`.
fn read_verdict(answer: Value) -> Verdict {
    let verdict = answer
        .get("verdict")
        .or_else(|| answer.get("status"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let text = |k: &str| answer.get(k).and_then(Value::as_str).map(str::to_string);
    match verdict {
        "approved" => Verdict::Change(LocalChange::GovernanceApproved {
            governance_context: text("governance_context"),
        }),
        "conditions" => Verdict::Change(LocalChange::GovernanceHold {
            explanation: text("explanation"),
            conditions: answer.get("conditions").cloned(),
        }),
        "denied" => {
            let error = OperationError::new(
                "GOVERNANCE_DENIED",
                text("explanation").unwrap_or_else(|| "denied by governance".into()),
            );
            failed(error, Some(answer))
        }
        other => Verdict::Retry {
            error: OperationError::new(
                "GOVERNANCE_INVALID_RESPONSE",
                format!("check_governance answered verdict `{other}`"),
            ),
            retry_after_s: None,
        },
    }
}

fn failed(error: OperationError, verdict: Option<Value>) -> Verdict {
    Verdict::Failed(Box::new(Observation {
        message: Some(error.message.clone()),
        result: verdict,
        error: Some(error),
        ..Observation::of(Source::Governance, TaskStatus::Failed)
    }))
}
