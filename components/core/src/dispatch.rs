//! Sending a stored operation to its seller, and folding in whatever comes back.
//!
//! The operation is already durable (see `api::operations::create`) with its AdCP
//! `idempotency_key`; dispatch rebuilds the exact same tool arguments every time (the
//! secrets of `push_notification_config` are re-inserted from sealed storage), so a resend
//! after a lost answer is byte-identical and the seller's idempotency replays it.

use crate::clock::Clock;
use crate::effects;
use crate::journal::{self, EntryKind, Recorded};
use crate::log::Log;
use crate::operation::{LocalChange, Observation, Operation, OperationError, Source, WebhookMode};
use crate::schedule::breaker::{Breaker, BreakerConfig, Decision, Permit, Snapshot};
use crate::seal::SealingKey;
use crate::seller::{self, Seller};
use crate::status::{OperationStatus, TaskStatus};
use crate::store::{Store, StoreResult};
use crate::transport::TransportError;
use serde_json::{Map, Value, json};
use std::collections::HashMap;

/// How a seller call can fail, split by what the caller must do next.
#[derive(Debug, Clone, PartialEq)]
pub enum CallFailure {
    /// No usable HTTP answer.
    Transport(TransportError),
    /// The seller answered with an AdCP error.
    Seller(SellerError),
    /// Not sent: the seller's circuit breaker is open until then.
    Deferred { until_ms: u64 },
}

/// An AdCP error from the seller, classified by its `recovery`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SellerError {
    pub code: String,
    pub message: String,
    pub recovery: Recovery,
    pub retry_after_s: Option<u32>,
}

/// AdCP's recovery classes (`enums/error-code.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Retry later with the same key and bytes.
    Transient,
    /// The request must change: never resent unchanged.
    Correctable,
    /// Needs a human.
    Terminal,
}

/// Calls a seller's tool and returns the extracted AdCP payload (MCP `structuredContent`
/// or its text equivalent). Implemented over MCP by `seller_client`.
#[allow(async_fn_in_trait)]
pub trait SellerCalls {
    async fn call(
        &self,
        seller: &Seller,
        tool: &str,
        arguments: Value,
    ) -> Result<Value, CallFailure>;

    /// The names of the seller's tools (MCP `tools/list`). Sellers that cannot list are
    /// assumed to offer the 3.1 polling tool.
    async fn list_tools(&self, _seller: &Seller) -> Result<Vec<String>, CallFailure> {
        Ok(vec!["get_task_status".into()])
    }
}

/// Where a dispatch left the operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Dispatched {
    /// The seller answered; the answer was recorded with this effect (if already settled).
    Answered(Box<Recorded>),
    /// No usable answer; a retry is scheduled (or retries are exhausted).
    Failed {
        retry_at_ms: Option<u64>,
        error: OperationError,
    },
    /// Not sent: the seller's breaker is open; nothing was recorded, nothing is lost.
    Deferred { until_ms: u64 },
    /// Nothing to do: the operation is no longer waiting for dispatch.
    NotPending,
}

/// [`SellerCalls`] behind the seller's circuit breaker: an open breaker defers the call
/// without sending it; no answer, or a transient error, counts as a failure.
pub struct Guarded<'a, S: Store, C: SellerCalls> {
    pub store: &'a S,
    pub clock: &'a dyn Clock,
    pub breaker: &'a BreakerConfig,
    pub inner: &'a C,
    /// Breaker readings kept while calls go well (`Default::default()` to start empty).
    pub seen: SeenBreakers,
}

/// The last breaker reading per seller, reused for [`BREAKER_READING_MS`] while it shows no
/// failures: a sweep polling many tasks of one healthy seller reads its breaker every few
/// seconds instead of at every call. A reading with failures counted is never kept (an open
/// or half-open breaker is always decided on the store), and any failure or probe here
/// forgets the kept one. A trip by another replica or an operator is seen within
/// [`BREAKER_READING_MS`], or at this instance's next failure.
#[derive(Debug, Default)]
pub struct SeenBreakers(std::cell::RefCell<HashMap<(String, String), (Snapshot, u64)>>);

/// How long a clean breaker reading is trusted.
pub const BREAKER_READING_MS: u64 = 3_000;

impl<S: Store, C: SellerCalls> SellerCalls for Guarded<'_, S, C> {
    async fn call(
        &self,
        seller: &Seller,
        tool: &str,
        arguments: Value,
    ) -> Result<Value, CallFailure> {
        let breaker = Breaker::new(self.breaker, &seller.tenant_id, &seller.seller_id);
        let permit = self.permit(seller, &breaker).await?;
        let result = self.inner.call(seller, tool, arguments).await;
        self.settle(seller, &breaker, &permit, &result).await;
        result
    }

    async fn list_tools(&self, seller: &Seller) -> Result<Vec<String>, CallFailure> {
        let breaker = Breaker::new(self.breaker, &seller.tenant_id, &seller.seller_id);
        let permit = self.permit(seller, &breaker).await?;
        let result = self.inner.list_tools(seller).await;
        self.settle(seller, &breaker, &permit, &result).await;
        result
    }
}

fn seller_key(seller: &Seller) -> (String, String) {
    (seller.tenant_id.clone(), seller.seller_id.clone())
}

impl<S: Store, C: SellerCalls> Guarded<'_, S, C> {
    /// The breaker's permission for one call, decided on the kept reading if there is one.
    async fn permit(&self, seller: &Seller, breaker: &Breaker<'_>) -> Result<Permit, CallFailure> {
        let store_down = |e: crate::error::StoreError| {
            CallFailure::Transport(TransportError::Connect(e.to_string()))
        };
        let now = self.clock.now_ms();
        let kept = self
            .seen
            .0
            .borrow()
            .get(&seller_key(seller))
            .filter(|(_, at)| now.saturating_sub(*at) < BREAKER_READING_MS)
            .map(|(s, _)| *s);
        let snap = match kept {
            Some(s) => s,
            None => {
                let s = breaker.read(self.store).await.map_err(store_down)?;
                let mut seen = self.seen.0.borrow_mut();
                if s.consecutive() == 0 {
                    seen.insert(seller_key(seller), (s, now));
                } else {
                    seen.remove(&seller_key(seller));
                }
                s
            }
        };
        match breaker
            .allow_on(self.store, &snap, now)
            .await
            .map_err(store_down)?
        {
            Decision::Allow(p) => Ok(p),
            Decision::Deferred { until_ms } => Err(CallFailure::Deferred { until_ms }),
        }
    }

    /// Counts the call's error and feeds the breaker: no answer, or a transient error, is a
    /// failure; anything else shows the seller is up.
    async fn settle<V>(
        &self,
        seller: &Seller,
        breaker: &Breaker<'_>,
        permit: &Permit,
        result: &Result<V, CallFailure>,
    ) {
        let unhealthy = match result {
            Err(CallFailure::Transport(_)) => true,
            Err(CallFailure::Seller(e)) => e.recovery == Recovery::Transient,
            _ => false,
        };
        let now = self.clock.now_ms();
        let code = match result {
            Err(CallFailure::Seller(e)) => Some(e.code.as_str()),
            Err(CallFailure::Transport(_)) => Some("TRANSPORT"),
            _ => None,
        };
        // Bookkeeping (counters, breaker) must not turn a seller's answer into an error.
        if let Some(code) = code {
            let _ = crate::metrics::seller_error(self.store, code).await;
        }
        if unhealthy || !permit.is_clean() || permit.is_probe() {
            // The breaker's state moves (or may have): decide the next call on a new reading.
            self.seen.0.borrow_mut().remove(&seller_key(seller));
        }
        let _ = if unhealthy {
            breaker.record_failure(self.store, permit, now).await
        } else {
            breaker.record_success(self.store, permit, now).await
        };
    }
}

/// Attempts before redispatch gives up and reconciliation decides.
pub const MAX_DISPATCH_ATTEMPTS: u32 = 8;

/// The tool arguments as sent: stored arguments plus `push_notification_config` with its
/// sealed token and credentials opened.
pub fn wire_arguments(op: &Operation, sealing: &SealingKey) -> Result<Value, OperationError> {
    let mut args: Map<String, Value> = op.arguments.as_object().cloned().unwrap_or_default();
    if let Some(w) = &op.webhook {
        let purpose = format!("webhook:{}", op.operation_id);
        let unreadable = |_| OperationError {
            code: "SEALED_SECRET_UNREADABLE".into(),
            message: "the webhook secret cannot be opened with the configured encryption_key"
                .into(),
        };
        let token = sealing
            .open_string(&format!("{purpose}:token"), &w.token)
            .map_err(unreadable)?;
        let mut config = json!({ "url": w.url, "operation_id": op.operation_id, "token": token });
        if let Some(secret) = &w.secret {
            let credentials = sealing
                .open_string(&format!("{purpose}:secret"), secret)
                .map_err(unreadable)?;
            let scheme = match w.mode {
                WebhookMode::Hmac => "HMAC-SHA256",
                _ => "Bearer",
            };
            config["authentication"] = json!({ "schemes": [scheme], "credentials": credentials });
        }
        args.insert("push_notification_config".into(), config);
    }
    if let Some(ctx) = op
        .governance
        .as_ref()
        .and_then(|g| g.governance_context.as_ref())
    {
        args.insert("governance_context".into(), json!(ctx));
    }
    Ok(Value::Object(args))
}

/// Every media-buy lifecycle status (`enums/media-buy-status.json`). AdCP 3.0 put one in
/// `status` of a sync success; `get_media_buys` filters on them.
pub(crate) const MEDIA_BUY_STATUSES: [&str; 7] = [
    "pending_creatives",
    "pending_start",
    "active",
    "paused",
    "completed",
    "rejected",
    "canceled",
];

/// What a tool's answer says about the task (AdCP flat MCP shape).
pub fn observation_from_payload(payload: &Value, source: Source) -> Observation {
    let text = |k: &str| payload.get(k).and_then(Value::as_str).map(str::to_string);
    // No `status` means completed (flat wire rule); a 3.0 media-buy status in `status`
    // (e.g. "active") also means the task completed.
    // A 3.0 success branch (a media buy, no task handle, no errors) whose `status` is the
    // buy's lifecycle status: `canceled` there is a canceled *buy*, a completed task.
    let buy_success = payload.get("media_buy_id").is_some()
        && payload.get("task_id").is_none()
        && payload.get("errors").is_none()
        && payload.get("media_buy_status").is_none();
    let status = match payload.get("status").and_then(Value::as_str) {
        None => TaskStatus::Completed,
        Some(s) if buy_success && MEDIA_BUY_STATUSES.contains(&s) => TaskStatus::Completed,
        Some(s) => TaskStatus::parse(s).unwrap_or(if MEDIA_BUY_STATUSES.contains(&s) {
            TaskStatus::Completed
        } else {
            // Neither a task status nor a 3.0 media-buy status: never guess an outcome.
            TaskStatus::Unknown
        }),
    };
    let error = payload
        .get("errors")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
        .and_then(|e| {
            Some(OperationError {
                code: e.get("code")?.as_str()?.to_string(),
                message: e
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            })
        })
        .filter(|_| status != TaskStatus::Completed);
    Observation {
        source,
        status,
        at_ms: None,
        task_id: text("task_id"),
        context_id: text("context_id"),
        message: text("message"),
        result: (status == TaskStatus::Completed).then(|| payload.clone()),
        error,
        delivery: None,
    }
}

/// Dispatches one operation if it is still waiting for its seller.
pub async fn dispatch(
    store: &impl Store,
    clock: &dyn Clock,
    log: &dyn Log,
    sealing: &SealingKey,
    calls: &impl SellerCalls,
    op_id: &str,
) -> StoreResult<Option<Dispatched>> {
    let Some(loaded) = effects::load(store, clock, log, op_id)
        .await
        .map_err(store_err)?
    else {
        return Ok(None);
    };
    let op = loaded.operation;
    if op.status != OperationStatus::PendingDispatch {
        return Ok(Some(Dispatched::NotPending));
    }
    if op.dispatch_attempts >= MAX_DISPATCH_ATTEMPTS {
        // Exhausted: only reconciliation may decide now (see `sweep`).
        let error = op.error.clone().unwrap_or(OperationError {
            code: "DISPATCH_EXHAUSTED".into(),
            message: "dispatch attempts exhausted".into(),
        });
        return Ok(Some(Dispatched::Failed {
            retry_at_ms: None,
            error,
        }));
    }
    let Some(seller) = seller::get(store, &op.tenant_id, &op.seller_id).await? else {
        let error = OperationError {
            code: "SELLER_NOT_REGISTERED".into(),
            message: "the seller was removed".into(),
        };
        return fail(store, clock, &op, error, None, false).await.map(Some);
    };
    let op = if op.governance.as_ref().is_some_and(|g| !g.approved) {
        match govern(store, clock, log, calls, op).await? {
            Governed::Approved(op) => *op,
            Governed::Settled(d) => return Ok(Some(d)),
        }
    } else {
        op
    };
    let args = match wire_arguments(&op, sealing) {
        Ok(a) => a,
        Err(error) => return fail(store, clock, &op, error, None, false).await.map(Some),
    };
    let now = clock.now_ms();
    match calls.call(&seller, &op.task, args).await {
        Ok(payload)
            if payload
                .pointer("/context/operation_id")
                .and_then(Value::as_str)
                .is_some_and(|echo| echo != op.operation_id) =>
        {
            // The seller echoes our context: an answer naming another operation is not
            // ours (a crossed answer in a shared session). Never fold it; resend the same
            // bytes, which the seller's idempotency replays.
            let error = OperationError {
                code: "MISROUTED_ANSWER".into(),
                message: "the answer echoed another operation's context".into(),
            };
            let retry = retry_at(&op, now, None);
            fail(store, clock, &op, error, retry, true).await.map(Some)
        }
        Ok(payload) => {
            let obs = observation_from_payload(&payload, Source::Dispatch);
            if obs.status == TaskStatus::AuthRequired {
                flag_seller(
                    store,
                    &seller,
                    "the seller answered auth-required: check the credentials",
                )
                .await?;
            }
            answered(store, clock, log, op, obs).await.map(Some)
        }
        Err(CallFailure::Deferred { until_ms }) => Ok(Some(Dispatched::Deferred { until_ms })),
        Err(CallFailure::Transport(e)) => {
            let unknown = e.outcome_unknown();
            let error = OperationError {
                code: "TRANSPORT".into(),
                message: e.to_string(),
            };
            let retry = retry_at(&op, now, None);
            fail(store, clock, &op, error, retry, unknown)
                .await
                .map(Some)
        }
        Err(CallFailure::Seller(se)) if se.recovery == Recovery::Transient => {
            let error = OperationError {
                code: se.code.clone(),
                message: se.message.clone(),
            };
            let retry = retry_at(&op, now, se.retry_after_s);
            fail(store, clock, &op, error, retry, false).await.map(Some)
        }
        Err(CallFailure::Seller(se)) => {
            // The seller refused this request as it is: an authoritative outcome.
            if se.code.starts_with("AUTH_") {
                flag_seller(
                    store,
                    &seller,
                    &format!("seller refused our credentials ({})", se.code),
                )
                .await?;
            }
            let obs = Observation {
                source: Source::Dispatch,
                status: TaskStatus::Failed,
                at_ms: None,
                task_id: None,
                context_id: None,
                message: Some(se.message.clone()),
                result: None,
                error: Some(OperationError {
                    code: se.code,
                    message: se.message,
                }),
                delivery: None,
            };
            answered(store, clock, log, op, obs).await.map(Some)
        }
    }
}

/// Where the governance check left a dispatch.
enum Governed {
    /// Approved: call the seller with this (updated) operation.
    Approved(Box<Operation>),
    /// Denied, held for a human, or no verdict yet: the seller is not called.
    Settled(Dispatched),
}

/// Asks the operation's governance agent (`check_governance`, phase `purchase` for a create,
/// `modification` otherwise) before the seller hears of it. `approved` proceeds with the
/// returned `governance_context`; `denied` fails the operation with the verdict;
/// `conditions` holds it for a human (`awaiting_decision`).
async fn govern(
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
            return fail(store, clock, &op, error, retry, false)
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
            return fail(store, clock, &op, error, retry, false)
                .await
                .map(Governed::Settled);
        }
    };
    let approved = matches!(change, LocalChange::GovernanceApproved { .. });
    let recorded = journal::record_from(
        store,
        clock,
        &op.operation_id,
        Some(op.clone()),
        EntryKind::Local { change },
    )
    .await
    .map_err(store_err)?;
    effects::after_record(store, clock, log, "governance", &recorded).await?;
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

/// Folds the seller's answer in and runs the effects of the change it made.
async fn answered(
    store: &impl Store,
    clock: &dyn Clock,
    log: &dyn Log,
    op: Operation,
    obs: Observation,
) -> StoreResult<Dispatched> {
    let op_id = op.operation_id.clone();
    let kind = EntryKind::Observed {
        observation: Box::new(obs),
    };
    let recorded = journal::record_from(store, clock, &op_id, Some(op), kind)
        .await
        .map_err(store_err)?;
    effects::after_record(store, clock, log, "dispatch", &recorded).await?;
    Ok(Dispatched::Answered(Box::new(recorded)))
}

/// Next redispatch time: exponential from 30 s, capped at 30 min, never before the seller's
/// `retry_after`; `None` once attempts are exhausted.
fn retry_at(op: &Operation, now: u64, retry_after_s: Option<u32>) -> Option<u64> {
    let attempt = op.dispatch_attempts + 1;
    if attempt >= MAX_DISPATCH_ATTEMPTS {
        return None;
    }
    let backoff = (30_000u64 << attempt.min(6)).min(1_800_000);
    let hint = u64::from(retry_after_s.unwrap_or(0).clamp(0, 3600)) * 1000;
    Some(now + backoff.max(hint))
}

async fn fail(
    store: &impl Store,
    clock: &dyn Clock,
    op: &Operation,
    error: OperationError,
    retry_at_ms: Option<u64>,
    outcome_unknown: bool,
) -> StoreResult<Dispatched> {
    journal::record_from(
        store,
        clock,
        &op.operation_id,
        Some(op.clone()),
        EntryKind::DispatchFailed {
            error: error.clone(),
            retry_at_ms,
            outcome_unknown,
        },
    )
    .await
    .map_err(store_err)?;
    Ok(Dispatched::Failed { retry_at_ms, error })
}

async fn flag_seller(store: &impl Store, seller: &Seller, why: &str) -> StoreResult<()> {
    let mut s = seller.clone();
    s.attention = Some(why.to_string());
    seller::put(store, &s).await
}

fn store_err(e: journal::JournalError) -> crate::error::StoreError {
    match e {
        journal::JournalError::Store(e) => e,
        other => crate::error::StoreError(other.to_string()),
    }
}

#[cfg(test)]
pub mod testing {
    use super::*;
    use std::cell::RefCell;
    use std::collections::VecDeque;

    /// Scripted seller answers; records every call's tool and arguments.
    /// `get_adcp_capabilities` is answered from `capabilities` (a conformant declaration
    /// unless replaced) and counted apart, outside the script.
    #[derive(Default)]
    pub struct FakeSeller {
        pub answers: RefCell<VecDeque<Result<Value, CallFailure>>>,
        pub calls: RefCell<Vec<(String, Value)>>,
        pub capabilities: RefCell<Option<Result<Value, CallFailure>>>,
        pub capability_calls: std::cell::Cell<u32>,
    }

    /// What a conformant AdCP 3.1 seller declares.
    pub fn conformant_capabilities() -> Value {
        json!({
            "adcp": {"major_versions": [3],
                     "idempotency": {"supported": true, "replay_ttl_seconds": 86400}},
            "supported_protocols": ["media_buy"],
            "webhook_signing": {"supported": true, "legacy_hmac_fallback": true}
        })
    }

    impl FakeSeller {
        pub fn answer(&self, a: Result<Value, CallFailure>) {
            self.answers.borrow_mut().push_back(a);
        }
    }

    impl SellerCalls for FakeSeller {
        async fn call(
            &self,
            _: &Seller,
            tool: &str,
            arguments: Value,
        ) -> Result<Value, CallFailure> {
            if tool == "get_adcp_capabilities" {
                self.capability_calls.set(self.capability_calls.get() + 1);
                return self
                    .capabilities
                    .borrow()
                    .clone()
                    .unwrap_or_else(|| Ok(conformant_capabilities()));
            }
            self.calls.borrow_mut().push((tool.to_string(), arguments));
            self.answers
                .borrow_mut()
                .pop_front()
                .unwrap_or(Err(CallFailure::Transport(TransportError::Connect(
                    "no answer scripted".into(),
                ))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::FakeSeller;
    use super::*;
    use crate::clock::FixedClock;
    use crate::clock::testing::SeededEntropy;
    use crate::log::NoLog;
    use crate::operation::WebhookRegistration;
    use crate::store::MemoryStore;
    use futures::executor::block_on;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn setup(s: &MemoryStore, mode: WebhookMode) -> SealingKey {
        let sealing = SealingKey::from_hex(KEY).unwrap();
        let e = SeededEntropy::new(5);
        let mut op = crate::operation::tests::sample("op1");
        op.webhook = Some(WebhookRegistration {
            url: "https://orch.example/webhooks/adcp/op1".into(),
            mode,
            token: sealing.seal(&e, "webhook:op1:token", b"tok-0123456789abcdef"),
            secret: (mode != WebhookMode::Rfc9421)
                .then(|| sealing.seal(&e, "webhook:op1:secret", &[b's'; 32])),
        });
        let seller = Seller {
            tenant_id: "t1".into(),
            seller_id: "s1".into(),
            mcp_url: "https://seller.example/mcp".into(),
            credentials: None,
            webhook_mode: Some(mode),
            auth_scheme: Default::default(),
            capabilities: None,
            attention: None,
            created_at_ms: 0,
            updated_at_ms: 0,
        };
        block_on(async {
            seller::put(s, &seller).await.unwrap();
            journal::create(s, &FixedClock(1_000), &op).await.unwrap();
        });
        sealing
    }

    struct StepClock(std::cell::Cell<u64>);
    impl Clock for StepClock {
        fn now_ms(&self) -> u64 {
            self.0.get()
        }
    }

    #[test]
    fn a_kept_breaker_reading_saves_reads_while_calls_go_well_and_a_trip_elsewhere_is_seen() {
        // Seen at this instance's next failure, or once the reading is old, whichever first.
        for by_failure in [true, false] {
            let s = MemoryStore::new();
            setup(&s, WebhookMode::Hmac);
            let seller = block_on(seller::get(&s, "t1", "s1")).unwrap().unwrap();
            let fake = FakeSeller::default();
            let cfg = BreakerConfig::default();
            let clock = StepClock(std::cell::Cell::new(5_000));
            let guarded = Guarded {
                store: &s,
                clock: &clock,
                breaker: &cfg,
                inner: &fake,
                seen: Default::default(),
            };
            block_on(async {
                fake.answer(Ok(json!({})));
                guarded.call(&seller, "t", json!({})).await.unwrap();
                s.reset_counts();
                for _ in 0..3 {
                    fake.answer(Ok(json!({})));
                    guarded.call(&seller, "t", json!({})).await.unwrap();
                }
                assert_eq!(s.total_ops(), 0, "healthy calls decide on the kept reading");
                // Another replica (or an operator) trips the breaker.
                Breaker::new(&cfg, "t1", "s1")
                    .trip(&s, 5_000)
                    .await
                    .unwrap();
                if by_failure {
                    fake.answer(Err(CallFailure::Transport(TransportError::Connect(
                        "refused".into(),
                    ))));
                    assert!(matches!(
                        guarded.call(&seller, "t", json!({})).await,
                        Err(CallFailure::Transport(_))
                    ));
                } else {
                    clock.0.set(5_000 + BREAKER_READING_MS);
                }
                assert!(matches!(
                    guarded.call(&seller, "t", json!({})).await,
                    Err(CallFailure::Deferred { .. })
                ));
            });
            let sent = 4 + usize::from(by_failure);
            assert_eq!(
                fake.calls.borrow().len(),
                sent,
                "nothing sent once the trip is seen"
            );
        }
    }

    fn run(s: &MemoryStore, sealing: &SealingKey, seller: &FakeSeller) -> Dispatched {
        block_on(dispatch(
            s,
            &FixedClock(2_000),
            &NoLog,
            sealing,
            seller,
            "op1",
        ))
        .unwrap()
        .unwrap()
    }

    fn status(s: &MemoryStore) -> OperationStatus {
        block_on(journal::load(s, &FixedClock(3_000), "op1"))
            .unwrap()
            .unwrap()
            .operation
            .status
    }

    #[test]
    fn an_answer_echoing_another_operations_context_is_never_folded() {
        let s = MemoryStore::new();
        let sealing = setup(&s, WebhookMode::Hmac);
        let seller = FakeSeller::default();
        seller.answer(Ok(json!({"media_buy_id": "mb_other", "status": "active",
                                "context": {"operation_id": "op_someone_else"}})));
        let d = run(&s, &sealing, &seller);
        assert!(
            matches!(&d, Dispatched::Failed { error, retry_at_ms: Some(_) } if error.code == "MISROUTED_ANSWER"),
            "{d:?}"
        );
        assert_eq!(status(&s), OperationStatus::PendingDispatch);
        let op = block_on(journal::load(&s, &FixedClock(3_000), "op1"))
            .unwrap()
            .unwrap()
            .operation;
        assert!(op.outcome_unknown, "the seller may have acted on ours");
        assert_eq!(op.result, None);
    }

    #[test]
    fn resends_are_byte_identical_and_carry_the_registration() {
        let s = MemoryStore::new();
        let sealing = setup(&s, WebhookMode::Hmac);
        let seller = FakeSeller::default();
        seller.answer(Err(CallFailure::Transport(TransportError::Timeout(
            "first byte".into(),
        ))));
        assert!(matches!(
            run(&s, &sealing, &seller),
            Dispatched::Failed {
                retry_at_ms: Some(_),
                ..
            }
        ));
        seller.answer(Ok(json!({"status": "submitted", "task_id": "task_9"})));
        assert!(matches!(
            run(&s, &sealing, &seller),
            Dispatched::Answered(_)
        ));
        let calls = seller.calls.borrow();
        assert_eq!(calls.len(), 2);
        assert_eq!(
            serde_json::to_vec(&calls[0].1).unwrap(),
            serde_json::to_vec(&calls[1].1).unwrap()
        );
        let pnc = &calls[0].1["push_notification_config"];
        assert_eq!(pnc["operation_id"], "op1");
        assert_eq!(pnc["token"], "tok-0123456789abcdef");
        assert_eq!(pnc["authentication"]["schemes"], json!(["HMAC-SHA256"]));
        assert_eq!(calls[0].1["idempotency_key"], "k-0123456789abcdef");
        drop(calls);
        let op = block_on(journal::load(&s, &FixedClock(3_000), "op1"))
            .unwrap()
            .unwrap()
            .operation;
        assert_eq!(op.status, OperationStatus::Seller(TaskStatus::Submitted));
        assert_eq!(op.task_id.as_deref(), Some("task_9"));
        assert!(op.outcome_unknown);
        // No longer pending: a late redispatch does nothing.
        assert_eq!(run(&s, &sealing, &seller), Dispatched::NotPending);
        assert_eq!(seller.calls.borrow().len(), 2);
    }

    #[test]
    fn rfc9421_registration_has_no_authentication_block() {
        let s = MemoryStore::new();
        let sealing = setup(&s, WebhookMode::Rfc9421);
        let seller = FakeSeller::default();
        seller.answer(Ok(
            json!({"status": "completed", "media_buy_id": "mb_1", "packages": []}),
        ));
        run(&s, &sealing, &seller);
        let calls = seller.calls.borrow();
        assert!(
            calls[0].1["push_notification_config"]
                .get("authentication")
                .is_none()
        );
        drop(calls);
        let op = block_on(journal::load(&s, &FixedClock(3_000), "op1"))
            .unwrap()
            .unwrap()
            .operation;
        assert_eq!(op.status, OperationStatus::Seller(TaskStatus::Completed));
        assert_eq!(op.result.unwrap()["media_buy_id"], "mb_1");
    }

    #[test]
    fn every_answer_status_routes_through_the_state_machine() {
        for (answer, expect) in [
            (
                json!({"status": "working", "task_id": "t"}),
                OperationStatus::Seller(TaskStatus::Working),
            ),
            (
                json!({"status": "input-required", "message": "approve?"}),
                OperationStatus::Seller(TaskStatus::InputRequired),
            ),
            (
                json!({"status": "failed", "errors": [{"code": "X", "message": "m"}]}),
                OperationStatus::Seller(TaskStatus::Failed),
            ),
            (
                json!({"status": "rejected"}),
                OperationStatus::Seller(TaskStatus::Rejected),
            ),
            (
                json!({"status": "canceled"}),
                OperationStatus::Seller(TaskStatus::Canceled),
            ),
            (
                json!({"status": "auth-required"}),
                OperationStatus::Seller(TaskStatus::AuthRequired),
            ),
            (
                json!({"status": "unknown"}),
                OperationStatus::Seller(TaskStatus::Unknown),
            ),
            (
                json!({"media_buy_id": "mb"}),
                OperationStatus::Seller(TaskStatus::Completed),
            ),
            // AdCP 3.0: a media-buy status in `status` means the task completed.
            (
                json!({"status": "active", "media_buy_id": "mb"}),
                OperationStatus::Seller(TaskStatus::Completed),
            ),
        ] {
            let s = MemoryStore::new();
            let sealing = setup(&s, WebhookMode::Bearer);
            let seller = FakeSeller::default();
            seller.answer(Ok(answer.clone()));
            run(&s, &sealing, &seller);
            assert_eq!(status(&s), expect, "{answer}");
        }
    }

    #[test]
    fn transient_errors_retry_after_the_hint_and_correctable_ones_fail() {
        let s = MemoryStore::new();
        let sealing = setup(&s, WebhookMode::Bearer);
        let seller = FakeSeller::default();
        let err = |code: &str, recovery, retry_after_s| {
            Err(CallFailure::Seller(SellerError {
                code: code.into(),
                message: "m".into(),
                recovery,
                retry_after_s,
            }))
        };
        seller.answer(err("RATE_LIMITED", Recovery::Transient, Some(600)));
        let Dispatched::Failed {
            retry_at_ms: Some(at),
            ..
        } = run(&s, &sealing, &seller)
        else {
            panic!()
        };
        assert_eq!(at, 2_000 + 600_000);
        assert_eq!(status(&s), OperationStatus::PendingDispatch);
        seller.answer(err("AUTH_INVALID", Recovery::Terminal, None));
        run(&s, &sealing, &seller);
        assert_eq!(status(&s), OperationStatus::Seller(TaskStatus::Failed));
        let seller_rec = block_on(seller::get(&s, "t1", "s1")).unwrap().unwrap();
        assert!(seller_rec.attention.unwrap().contains("AUTH_INVALID"));
    }

    #[test]
    fn attempts_are_bounded() {
        let s = MemoryStore::new();
        let sealing = setup(&s, WebhookMode::Bearer);
        let seller = FakeSeller::default();
        let mut last = None;
        for _ in 0..MAX_DISPATCH_ATTEMPTS {
            seller.answer(Err(CallFailure::Transport(TransportError::Connect(
                "down".into(),
            ))));
            last = Some(run(&s, &sealing, &seller));
        }
        assert!(matches!(
            last,
            Some(Dispatched::Failed {
                retry_at_ms: None,
                ..
            })
        ));
        assert_eq!(
            status(&s),
            OperationStatus::PendingDispatch,
            "the sweep reconciles before failing it"
        );
    }
}

#[cfg(test)]
mod status_tests {
    use super::*;

    #[test]
    fn only_task_statuses_and_3_0_media_buy_statuses_are_read_as_outcomes() {
        let read =
            |s: &str| observation_from_payload(&json!({"status": s}), Source::Dispatch).status;
        assert_eq!(read("active"), TaskStatus::Completed);
        assert_eq!(read("pending_creatives"), TaskStatus::Completed);
        assert_eq!(read("working"), TaskStatus::Working);
        assert_eq!(read("finished"), TaskStatus::Unknown);
        assert_eq!(read("input_required"), TaskStatus::Unknown);
    }
}

#[cfg(test)]
mod status_reading {
    use super::*;

    #[test]
    fn a_3_0_buy_status_in_a_success_branch_is_a_completed_task() {
        let read = |v: Value| observation_from_payload(&v, Source::Dispatch).status;
        assert_eq!(
            read(json!({"media_buy_id": "mb", "status": "canceled"})),
            TaskStatus::Completed
        );
        assert_eq!(
            read(json!({"media_buy_id": "mb", "status": "active"})),
            TaskStatus::Completed
        );
        // With a task handle, or without a buy, `canceled` is the task's status.
        assert_eq!(
            read(json!({"media_buy_id": "mb", "task_id": "t", "status": "canceled"})),
            TaskStatus::Canceled
        );
        assert_eq!(read(json!({"status": "canceled"})), TaskStatus::Canceled);
    }
}
