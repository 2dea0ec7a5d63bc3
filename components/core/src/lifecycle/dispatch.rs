//! Sending a stored operation to its seller, and folding in whatever comes back.
//!
//! The operation is already durable (see `api::operations::create`) with its AdCP
//! `idempotency_key`; dispatch rebuilds the exact same tool arguments every time (the
//! secrets of `push_notification_config` are re-inserted from sealed storage), so a resend
//! after a lost answer is byte-identical and the seller's idempotency replays it.

use super::effects;
use super::governance::{self, Verdict};
use crate::foundation::cx::Cx;
use crate::foundation::seal::{SealingKey, digest_hex};
use crate::foundation::store::{Store, StoreResult};
use crate::model::operation::{
    Governance, LocalChange, Observation, Operation, OperationError, Source, WebhookMode,
    WebhookRegistration,
};
use crate::model::payload::observation_from_payload;
use crate::model::status::{OperationStatus, TaskStatus};
use crate::records::capabilities::VersionEnvelope;
use crate::records::journal::{EntryKind, JournalResult, Recorded};
use crate::records::seller::{self, Seller};
use crate::schedule::{backoff::Backoff, lease::Lease};
use crate::seller::port::{CallFailure, Recovery, SellerCalls};
use serde_json::{Map, Value, json};

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
    /// Not sent (the seller's breaker is open, or our lease ran out); nothing was recorded.
    Deferred { until_ms: u64 },
    /// Nothing to do: the operation is no longer waiting for dispatch.
    NotPending,
}

/// The seller no longer knows the request's `idempotency_key` (its replay window closed).
pub const IDEMPOTENCY_EXPIRED: &str = "IDEMPOTENCY_EXPIRED";

/// Attempts before redispatch gives up and reconciliation decides.
pub const MAX_DISPATCH_ATTEMPTS: u32 = 8;

/// The tool arguments as sent: stored arguments plus `push_notification_config` with its
/// sealed token and credentials opened.
pub fn wire_arguments(op: &Operation, sealing: &SealingKey) -> Result<Value, OperationError> {
    let mut args: Map<String, Value> = op.arguments.as_object().cloned().unwrap_or_default();
    if let Some(w) = &op.webhook {
        let unreadable = |_| OperationError {
            code: "SEALED_SECRET_UNREADABLE".into(),
            message: "the webhook secret cannot be opened with the configured encryption_key"
                .into(),
        };
        let token = sealing
            .open_string(
                &WebhookRegistration::token_purpose(&op.operation_id),
                &w.token,
            )
            .map_err(unreadable)?;
        let mut config = json!({ "url": w.url, "operation_id": op.operation_id, "token": token });
        if let Some(secret) = &w.secret {
            let credentials = sealing
                .open_string(
                    &WebhookRegistration::secret_purpose(&op.operation_id),
                    secret,
                )
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

/// Dispatches one operation if it is still waiting for its seller. The caller holds the
/// operation's `lease` (one dispatcher at a time); no call is started once it ran out.
/// `known`: the operation as its creator just stored it (saves loading it).
pub async fn dispatch(
    cx: Cx<'_, impl Store>,
    lease: &Lease,
    sealing: &SealingKey,
    calls: &impl SellerCalls,
    op_id: &str,
    known: Option<Operation>,
) -> JournalResult<Option<Dispatched>> {
    let Cx { store, clock, .. } = cx;
    let op = match known {
        Some(op) => op,
        None => match effects::load_and_adopt(cx, op_id).await? {
            Some(loaded) => loaded.operation,
            None => return Ok(None),
        },
    };
    if op.status != OperationStatus::PendingDispatch {
        return Ok(Some(Dispatched::NotPending));
    }
    if op.dispatch_attempts >= MAX_DISPATCH_ATTEMPTS {
        // Exhausted: only reconciliation may decide now (see `sweep`).
        let error = op.error.clone().unwrap_or(OperationError::new(
            "DISPATCH_EXHAUSTED",
            "dispatch attempts exhausted",
        ));
        return Ok(Some(Dispatched::Failed {
            retry_at_ms: None,
            error,
        }));
    }
    let Some(seller) = seller::get(store, &op.tenant_id, &op.seller_id).await? else {
        return seller_removed(cx, op).await.map(Some);
    };
    // Past our lease, the next holder may already be calling: nothing is sent, nothing lost.
    let expired = || Dispatched::Deferred {
        until_ms: lease.expires_at_ms,
    };
    let op = if let Some(g) = op.governance.clone().filter(|g| !g.approved) {
        if !lease.valid_at(clock.now_ms()) {
            return Ok(Some(expired()));
        }
        match governed(cx, calls, op, &g).await? {
            Ok(op) => op,
            Err(settled) => return Ok(Some(settled)),
        }
    } else {
        op
    };
    let mut args = match wire_arguments(&op, sealing) {
        Ok(a) => a,
        Err(error) => {
            return fail(cx, &op, error, None, None).await.map(Some);
        }
    };
    seller.version_envelope.apply(&mut args);
    // Under one `idempotency_key` the seller must only ever see one request: bytes that
    // differ from what may already have been delivered (the version fields included) are
    // not sent (reconciliation, which looks the buy up, decides).
    let digest = digest_hex(&serde_json::to_vec(&args).unwrap_or_default());
    if op
        .sent_digest
        .as_ref()
        .is_some_and(|sent| *sent != digest && !legacy_digest(sent, &seller, &args))
    {
        let error = OperationError::new(
            "REQUEST_CHANGED",
            "the resend would differ from a request the seller may have received; not sent",
        );
        return fail(cx, &op, error, None, None).await.map(Some);
    }
    let now = clock.now_ms();
    if !lease.valid_at(now) {
        return Ok(Some(expired()));
    }
    match calls.call(&seller, op.task.name(), args).await {
        Ok(payload)
            if payload
                .pointer("/context/operation_id")
                .and_then(Value::as_str)
                .is_some_and(|echo| echo != op.operation_id) =>
        {
            // The seller echoes our context: an answer naming another operation is not
            // ours (a crossed answer in a shared session). Never fold it; resend the same
            // bytes, which the seller's idempotency replays.
            let error = OperationError::new(
                "MISROUTED_ANSWER",
                "the answer echoed another operation's context",
            );
            let retry = retry_at(&op, now, None);
            let sent = Sent {
                digest,
                at_ms: now,
                look_up: false,
            };
            fail(cx, &op, error, retry, Some(sent)).await.map(Some)
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
            answered(cx, op, obs).await.map(Some)
        }
        Err(CallFailure::Deferred { until_ms }) => Ok(Some(Dispatched::Deferred { until_ms })),
        Err(CallFailure::Transport(e)) => {
            let error = OperationError::new("TRANSPORT", e.to_string());
            let retry = retry_at(&op, now, None);
            let sent = e.outcome_unknown().then_some(Sent {
                digest,
                at_ms: now,
                look_up: false,
            });
            fail(cx, &op, error, retry, sent).await.map(Some)
        }
        Err(CallFailure::Seller(se))
            if se.code == IDEMPOTENCY_EXPIRED || (op.outcome_unknown && !se.adcp) =>
        {
            // Not a verdict on a request whose outcome is unknown: a proxy's refusal says
            // nothing of what the seller did, and an expired key only that the seller forgot
            // it. It stays unknown, and the sweep looks it up before anything is resent.
            let error = OperationError::new(se.code.clone(), se.message.clone());
            let retry = retry_at(&op, now, se.retry_after_s);
            let sent = Sent {
                digest,
                at_ms: now,
                look_up: true,
            };
            fail(cx, &op, error, retry, Some(sent)).await.map(Some)
        }
        Err(CallFailure::Seller(se)) if se.recovery == Recovery::Transient => {
            let error = OperationError::new(se.code.clone(), se.message.clone());
            let retry = retry_at(&op, now, se.retry_after_s);
            fail(cx, &op, error, retry, None).await.map(Some)
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
                message: Some(se.message.clone()),
                error: Some(OperationError::new(se.code, se.message)),
                ..Observation::of(Source::Dispatch, TaskStatus::Failed)
            };
            answered(cx, op, obs).await.map(Some)
        }
    }
}

/// Digests recorded before the version fields were part of them covered the arguments
/// alone, while the client added the default envelope: those bytes are the same request.
fn legacy_digest(sent: &str, seller: &Seller, args: &Value) -> bool {
    seller.version_envelope == VersionEnvelope::default()
        && *sent
            == digest_hex(&serde_json::to_vec(&VersionEnvelope::strip(args)).unwrap_or_default())
}

/// Asks governance before the seller hears of `op` and records its verdict: `Ok` with the
/// approved operation to send, or `Err` with where the dispatch stops.
async fn governed(
    cx: Cx<'_, impl Store>,
    calls: &impl SellerCalls,
    op: Operation,
    g: &Governance,
) -> JournalResult<Result<Operation, Dispatched>> {
    let Cx { store, clock, .. } = cx;
    let now = clock.now_ms();
    let change = match governance::check(store, calls, &op, g).await? {
        Verdict::Change(change) => change,
        Verdict::Failed(obs) => return answered(cx, op, *obs).await.map(Err),
        Verdict::Retry {
            error,
            retry_after_s,
        } => {
            let retry = retry_at(&op, now, retry_after_s);
            return fail(cx, &op, error, retry, None).await.map(Err);
        }
        Verdict::Deferred { until_ms } => return Ok(Err(Dispatched::Deferred { until_ms })),
    };
    let approved = matches!(change, LocalChange::GovernanceApproved { .. });
    let recorded = effects::record(
        cx,
        "governance",
        &op.operation_id,
        Some(op.clone()),
        EntryKind::Local { change, by: None },
    )
    .await?
    .recorded;
    // Sent only as the journal has it, settled: the first approval's context, whoever
    // recorded it, so every resend under the one `idempotency_key` has the same bytes.
    match &recorded.operation {
        Some(o)
            if approved
                && recorded.effect.is_some()
                && o.status == OperationStatus::PendingDispatch
                && o.governance.as_ref().is_some_and(|g| g.approved) =>
        {
            Ok(Ok(o.clone()))
        }
        _ => Ok(Err(Dispatched::Answered(Box::new(recorded)))),
    }
}

/// How often an operation whose seller record is gone is looked at again.
pub const SELLER_RECHECK_MS: u64 = 3_600_000;

/// The seller's record is gone (removed while the operation was open, in a store from before
/// removal was refused then). An operation no seller can have accepted fails here, so it
/// closes; one a send may have reached stays open, looked at hourly in case the seller is
/// registered again, since its buy may be live.
async fn seller_removed(cx: Cx<'_, impl Store>, op: Operation) -> JournalResult<Dispatched> {
    if op.outcome_unknown || op.task_id.is_some() {
        return Ok(Dispatched::Deferred {
            until_ms: cx.clock.now_ms() + SELLER_RECHECK_MS,
        });
    }
    let why = "the seller was removed before it accepted the operation";
    let obs = Observation {
        message: Some(why.into()),
        error: Some(OperationError::new("SELLER_REMOVED", why)),
        ..Observation::of(Source::Dispatch, TaskStatus::Failed)
    };
    answered(cx, op, obs).await
}

/// Folds the seller's answer in and runs the effects of the change it made.
async fn answered(
    cx: Cx<'_, impl Store>,
    op: Operation,
    obs: Observation,
) -> JournalResult<Dispatched> {
    let op_id = op.operation_id.clone();
    let kind = EntryKind::Observed {
        observation: Box::new(obs),
    };
    let written = effects::record(cx, "dispatch", &op_id, Some(op), kind).await?;
    Ok(Dispatched::Answered(Box::new(written.recorded)))
}

/// Next redispatch time: [`Backoff::REDISPATCH`] without jitter, never before the seller's
/// `retry_after`; `None` once attempts are exhausted.
fn retry_at(op: &Operation, now: u64, retry_after_s: Option<u32>) -> Option<u64> {
    let attempt = op.dispatch_attempts + 1;
    if attempt >= MAX_DISPATCH_ATTEMPTS {
        return None;
    }
    let backoff = Backoff::REDISPATCH.ceiling_ms(attempt);
    let hint = u64::from(retry_after_s.unwrap_or(0).clamp(0, 3600)) * 1000;
    Some(now + backoff.max(hint))
}

/// An attempt whose request may have reached the seller, unanswered.
struct Sent {
    /// The digest of the bytes sent.
    digest: String,
    at_ms: u64,
    /// Refused by something other than the seller's AdCP answer: look it up first.
    look_up: bool,
}

async fn fail(
    cx: Cx<'_, impl Store>,
    op: &Operation,
    error: OperationError,
    retry_at_ms: Option<u64>,
    // `Some`: the outcome is unknown, and these bytes may have been delivered.
    sent: Option<Sent>,
) -> JournalResult<Dispatched> {
    effects::record(
        cx,
        "dispatch",
        &op.operation_id,
        Some(op.clone()),
        EntryKind::DispatchFailed {
            error: error.clone(),
            retry_at_ms,
            outcome_unknown: sent.is_some(),
            look_up: sent.as_ref().is_some_and(|s| s.look_up),
            sent_at_ms: sent.as_ref().map(|s| s.at_ms),
            sent_digest: sent.map(|s| s.digest),
        },
    )
    .await?;
    Ok(Dispatched::Failed { retry_at_ms, error })
}

/// Flags the registration the call was made with, merged into the record as stored now: a
/// credential rotation or removal during the call stands.
async fn flag_seller(store: &impl Store, seller: &Seller, why: &str) -> StoreResult<()> {
    seller::amend(store, seller, |s| s.attention = Some(why.to_string()))
        .await
        .map(drop)
}

#[cfg(test)]
mod tests;
