//! Receiving one delivery, cheapest and safest checks first, into the journal.

use super::auth::{authenticate, cached_signer_keys, presents_signature, verify_with_cached};
use super::env::{Answer, IntakeEnv, MAX_WEBHOOK_BYTES};
use super::interop;
use super::refusal::{Refusal, key_conflict};
use crate::auth::rfc9421::Verified;
use crate::foundation::http::{ApiError, Request, json_response};
use crate::foundation::keys::{self, valid_id};
use crate::foundation::log::{self};
use crate::foundation::seal::{ct_eq, digest_hex};
use crate::foundation::store::{Store, get_json};
use crate::foundation::transport::Transport;
use crate::lifecycle::effects;
use crate::model::operation::{Delivery, DeliveryCheck, Operation, WebhookRegistration};
use crate::model::payload::observation_from_webhook;
use crate::model::webhook_path::parse_webhook_path;
use crate::records::interop::Defect;
use crate::records::journal::{Effect, EntryKind};
use crate::records::metrics::{self, Rejection};
use crate::records::{deliveries, summary};
use http::{Method, StatusCode, header};
use serde_json::{Value, json};

pub async fn handle<S: Store, T: Transport>(env: &IntakeEnv<'_, S, T>, req: Request) -> Answer {
    let op_hint = parse_webhook_path(req.uri().path())
        .map_or("", |(op, _)| op)
        .to_string();
    match receive(env, &req).await {
        Ok(answer) => answer,
        Err(refusal) => {
            let status = refusal.error.status;
            // Counted only once the sender proved who it is: forged or misdirected traffic
            // costs one read and no write (it is logged). Store failures are ours, not the
            // sender's.
            if refusal.authenticated && status != StatusCode::SERVICE_UNAVAILABLE {
                let _ = metrics::webhook_rejected(env.store, refusal.reason).await;
                if let Some(tenant) = &refusal.tenant_id {
                    let _ = summary::webhook_rejected(env.store, tenant, refusal.reason).await;
                }
            }
            log::emit(
                env.log,
                &log::Event {
                    ts_ms: env.clock.now_ms(),
                    event: "webhook.refused",
                    operation_id: valid_id(&op_hint).then_some(op_hint.as_str()),
                    outcome: Some(refusal.error.code),
                    detail: Some(match &refusal.error.internal {
                        Some(internal) => {
                            log::capped(&format!("{}: {internal}", refusal.reason.as_str()))
                        }
                        None => refusal.reason.as_str().to_string(),
                    }),
                    ..Default::default()
                },
            );
            let mut response = refusal.error.into_response();
            if let Some(v) = refusal
                .www_authenticate
                .and_then(|v| header::HeaderValue::from_str(&v).ok())
            {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            Answer {
                response,
                settle: None,
            }
        }
    }
}

/// Why a webhook is refused before anything is read, if it is: it must be a JSON POST
/// within the size limit.
pub(super) fn misshapen(req: &Request) -> Option<Refusal> {
    let bad =
        |status, code, message: &str| Refusal::new(Rejection::BadRequest, status, code, message);
    if req.method() != Method::POST {
        return Some(bad(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "webhooks are POST only",
        ));
    }
    let json_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !json_type {
        return Some(bad(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "webhooks must be `Content-Type: application/json`",
        ));
    }
    if req.body().len() > MAX_WEBHOOK_BYTES {
        return Some(bad(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "webhook body exceeds 1 MB",
        ));
    }
    None
}

async fn receive<S: Store, T: Transport>(
    env: &IntakeEnv<'_, S, T>,
    req: &Request,
) -> Result<Answer, Refusal> {
    if let Some(refusal) = misshapen(req) {
        return Err(refusal);
    }
    let unknown = || {
        Refusal::new(
            Rejection::UnknownOperation,
            StatusCode::NOT_FOUND,
            "not_found",
            "operation not found",
        )
    };
    let (op_id, signer) = parse_webhook_path(req.uri().path()).ok_or_else(unknown)?;
    // RFC 9421 at a path naming its signer: the signature first, with that seller's cached
    // keys, so a forgery costs that one read and never the operation's (its nonce is checked
    // against the operation's ledger once read). A signer with no keys cached (its first
    // delivery, or a made-up one) is checked after its operation, as any other.
    let presigned = match signer {
        Some(s) if presents_signature(req) => {
            match cached_signer_keys(env, s.tenant, s.seller).await? {
                Some(keys) => Some(
                    verify_with_cached(env, req, s.tenant, s.seller, &|_, _| false, Some(keys))
                        .await?,
                ),
                None => None,
            }
        }
        _ => None,
    };
    let op = load(env, op_id).await?.ok_or_else(unknown)?;
    // A seller's signature vouches only for its own operations.
    if signer.is_some_and(|s| (s.tenant, s.seller) != (&op.tenant_id[..], &op.seller_id[..])) {
        return Err(unknown());
    }
    let tenant_id = op.tenant_id.clone();
    receive_for(env, req, op_id.to_string(), op, presigned)
        .await
        .map_err(|refusal| Refusal {
            tenant_id: Some(tenant_id),
            ..refusal
        })
}

/// The checks and the recording once the delivery's operation is known.
async fn receive_for<S: Store, T: Transport>(
    env: &IntakeEnv<'_, S, T>,
    req: &Request,
    op_id: String,
    op: Operation,
    presigned: Option<Verified>,
) -> Result<Answer, Refusal> {
    let registration = op.webhook.as_ref().ok_or_else(|| {
        Refusal::unauthenticated(
            "webhook_not_registered",
            "no webhook was registered for this operation",
        )
    })?;

    let (tenant, seller, open) = (
        op.tenant_id.clone(),
        op.seller_id.clone(),
        !op.status.is_closed(),
    );
    let at = op_id.clone();
    let checked = match authenticate(env, req, &op, registration.mode, presigned).await {
        Ok(nonce) => {
            let token = registration.token.clone();
            authenticated(env, req, op_id, op, token, nonce)
                .await
                .map_err(|refusal| Refusal {
                    authenticated: true,
                    ..refusal
                })
        }
        Err(refusal) => Err(refusal),
    };
    if let Err(refusal) = &checked
        && let Some(defect) = refusal.violation
    {
        interop::violated(env, &tenant, &seller, &at, open, defect, refusal.error.code).await;
    }
    checked
}

/// The checks and the recording of a delivery whose sender was authenticated.
async fn authenticated<S: Store, T: Transport>(
    env: &IntakeEnv<'_, S, T>,
    req: &Request,
    op_id: String,
    op: Operation,
    token: crate::foundation::seal::Sealed,
    nonce: Option<crate::model::operation::NonceMark>,
) -> Result<Answer, Refusal> {
    let bad =
        |status, code, message: &str| Refusal::new(Rejection::BadRequest, status, code, message);
    let payload: Value = serde_json::from_slice(req.body()).map_err(|e| {
        bad(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            &format!("webhook body is not JSON: {e}"),
        )
    })?;
    let token = env
        .config
        .sealing
        .open(&WebhookRegistration::token_purpose(&op_id), &token)
        .map_err(|_| {
            Refusal::unauthenticated("sealed_secret_unreadable", "cannot verify this webhook")
        })?;
    let Some(echoed) = payload.get("token").and_then(Value::as_str) else {
        return Err(Refusal::unauthenticated(
            "webhook_token_missing",
            "the payload does not echo the registration's token",
        )
        .violation(Defect::WebhookTokenMissing));
    };
    if !ct_eq(echoed.as_bytes(), &token) {
        return Err(Refusal::unauthenticated(
            "webhook_token_mismatch",
            "payload token does not match the registration",
        ));
    }
    let parsed = observation_from_webhook(&payload).map_err(|e| {
        Refusal::new(
            Rejection::BadRequest,
            StatusCode::BAD_REQUEST,
            e.code(),
            "the body is not a valid AdCP MCP webhook envelope",
        )
        .violation(Defect::WebhookEnvelopeInvalid)
    })?;
    if parsed.delivery_report {
        // Delivery reports ride the same envelope but are not task status changes.
        return Ok(accepted("delivery_report_ignored", None, None));
    }
    if parsed.operation_id.as_deref().is_some_and(|p| p != op_id) {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            "operation_id_mismatch",
            "payload operation_id does not match the URL",
        ));
    }
    if let (Some(bound), Some(seen)) = (&op.task_id, &parsed.observation.task_id)
        && bound != seen
    {
        return Err(Refusal::new(
            Rejection::Conflict,
            StatusCode::CONFLICT,
            "task_id_mismatch",
            "payload task_id differs from the operation's task",
        ));
    }
    let payload_hash = canonical_hash(&payload);
    let now = env.clock.now_ms();
    match deliveries::check(env.store, &op, &parsed.idempotency_key, &payload_hash).await? {
        DeliveryCheck::Repeat => {
            // Answered from the reads alone: a seller retrying in a loop costs no write (hosted
            // stores meter writes). Operators count repeats from this log line.
            log::emit(
                env.log,
                &log::Event {
                    ts_ms: now,
                    event: "webhook.duplicate",
                    operation_id: Some(&op_id),
                    tenant_id: Some(&op.tenant_id),
                    seller_id: Some(&op.seller_id),
                    idempotency_key_prefix: Some(log::key_prefix(&parsed.idempotency_key)),
                    ..Default::default()
                },
            );
            return Ok(accepted("duplicate", None, None));
        }
        DeliveryCheck::Conflict => return Err(key_conflict()),
        DeliveryCheck::New => {}
    }
    let mut observation = parsed.observation;
    observation.delivery = Some(Delivery {
        idempotency_key: parsed.idempotency_key.clone(),
        payload_hash,
        nonce,
    });
    let recorded = effects::record_unsettled(
        env.cx(),
        &op_id,
        op,
        EntryKind::Observed {
            observation: Box::new(observation),
        },
    )
    .await?;
    let Some(effect) = recorded.effect else {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "in_flight",
            "an earlier delivery is still being applied; retry",
        );
        e.retry_after_secs = Some(2);
        return Err(Refusal {
            error: e,
            reason: Rejection::BadRequest,
            www_authenticate: None,
            tenant_id: None,
            authenticated: false,
            violation: None,
        });
    };
    if effect == Effect::DeliveryConflict {
        return Err(key_conflict());
    }
    log::emit(
        env.log,
        &log::Event {
            ts_ms: now,
            event: "webhook.accepted",
            operation_id: Some(&op_id),
            tenant_id: recorded.operation.as_ref().map(|o| o.tenant_id.as_str()),
            seller_id: recorded.operation.as_ref().map(|o| o.seller_id.as_str()),
            task_id: recorded
                .operation
                .as_ref()
                .and_then(|o| o.task_id.as_deref()),
            outcome: Some(effect_name(effect)),
            idempotency_key_prefix: Some(log::key_prefix(&parsed.idempotency_key)),
            ..Default::default()
        },
    );
    let settle = recorded.operation.filter(|o| !o.unsettled.is_empty());
    Ok(accepted(effect_name(effect), Some(effect), settle))
}

fn accepted(outcome: &str, effect: Option<Effect>, settle: Option<Operation>) -> Answer {
    Answer {
        response: json_response(
            StatusCode::OK,
            &json!({ "received": true, "outcome": outcome, "effect": effect }),
        ),
        settle,
    }
}

/// After the answer: queues the buyer notifications of the changes the accepted delivery
/// left unsettled in `op` (see [`effects::record_unsettled`]) and returns them to attempt now.
/// The rest of settling (task index, counters) is left to the sweep's next look at the
/// operation, the auditor's walk, or whoever reads or writes it first: in this process it
/// would cost six more writes per change, twice what the delivery itself costs.
pub async fn settle<S: Store, T: Transport>(
    env: &IntakeEnv<'_, S, T>,
    op: &Operation,
) -> Vec<String> {
    match effects::announce_unsettled(env.cx(), op).await {
        Ok(notifications) => notifications,
        Err(e) => {
            log::emit(
                env.log,
                &log::Event {
                    ts_ms: env.clock.now_ms(),
                    event: "webhook.announce_failed",
                    operation_id: Some(&op.operation_id),
                    detail: Some(log::capped(&e.to_string())),
                    ..Default::default()
                },
            );
            Vec::new()
        }
    }
}

fn effect_name(e: Effect) -> &'static str {
    match e {
        Effect::Applied(_) => "applied",
        Effect::Overrode(_) => "overrode",
        Effect::Recorded => "recorded",
        Effect::Duplicate => "duplicate_status",
        Effect::Stale => "stale",
        Effect::Conflict => "conflict",
        Effect::RepeatedDelivery => "duplicate",
        Effect::DeliveryConflict => "idempotency_conflict",
        Effect::Created | Effect::Orphaned => "ignored",
    }
}

/// The operation as of its snapshot (one read). Without one, an id whose journal was never
/// started is unknown (a second read); otherwise the journal is folded: an operation the API
/// is still sending (it stores the first snapshot after the seller's answer), or a creation
/// interrupted.
async fn load<S: Store, T: Transport>(
    env: &IntakeEnv<'_, S, T>,
    op_id: &str,
) -> Result<Option<Operation>, Refusal> {
    if let Some(op) = get_json::<Operation>(env.store, &keys::operation(op_id)).await? {
        return Ok(Some(op));
    }
    if env.store.get(&keys::operation_seq(op_id)).await?.is_none() {
        return Ok(None);
    }
    Ok(crate::lifecycle::effects::load_and_adopt(env.cx(), op_id)
        .await?
        .map(|l| l.operation))
}

/// Digest of the payload compacted with sorted keys (serde_json without `preserve_order`), so a
/// retry whose bytes differ only in whitespace or key order is the same delivery.
pub fn canonical_hash(payload: &Value) -> String {
    digest_hex(&serde_json::to_vec(payload).unwrap_or_default())
}
