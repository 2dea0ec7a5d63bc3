//! Agent-level webhooks at `/webhooks/adcp/agent/{tenant}/{seller}` (AdCP 3.2): the seller's
//! proof-of-control challenge for our `capabilities.changed` subscriber, and the notices.
//! Both must carry the seller's RFC 9421 signature (the challenge is always signed so, and we
//! subscribe without legacy authentication). A notice whose `capabilities_version` is the one
//! we hold changes nothing; another refetches `get_adcp_capabilities` before the 2xx, and when
//! the seller cannot be asked or does not yet publish the notified revision the answer is a
//! 503, so the seller's own retries carry the refresh (nothing is stored to be lost). Replays
//! within a signature's lifetime are harmless: every effect is a refetch.

use super::auth::{cached_signer_keys, verify_with_cached};
use super::env::IntakeEnv;
use super::receive::misshapen;
use super::refusal::Refusal;
use crate::foundation::http::{ApiError, Request, Response, json_response};
use crate::foundation::keys::valid_id;
use crate::foundation::log;
use crate::foundation::store::Store;
use crate::foundation::transport::Transport;
use crate::records::capability_subscription::{ChangeNotice, EVENT, SUBSCRIBER_ID, parse_path};
use crate::records::metrics::Rejection;
use crate::records::seller::{self, Seller};
use crate::seller::capabilities;
use crate::seller::port::SellerCalls;
use http::{StatusCode, header};
use serde_json::{Value, json};

/// How long a refresh may take: the seller waits for our answer.
const REFRESH_MS: u64 = 10_000;
/// When the seller should deliver again after a 503.
const RETRY_AFTER_S: &str = "60";

/// Whether `req` is an agent-level webhook (else it is an operation's).
pub fn is_agent_webhook(req: &Request) -> bool {
    parse_path(req.uri().path()).is_some()
}

pub async fn handle<S: Store, T: Transport, C: SellerCalls>(
    env: &IntakeEnv<'_, S, T>,
    calls: &C,
    req: Request,
) -> Response {
    let (tenant, seller_id) = parse_path(req.uri().path()).unwrap_or_default();
    let (outcome, response) = match receive(env, calls, &req).await {
        Ok((outcome, response)) => (outcome, response),
        Err(refusal) => {
            let code = refusal.error.code;
            let mut response = refusal.error.into_response();
            if let Some(v) = refusal
                .www_authenticate
                .and_then(|v| header::HeaderValue::from_str(&v).ok())
            {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            (code, response)
        }
    };
    log::emit(
        env.log,
        &log::Event {
            ts_ms: env.clock.now_ms(),
            event: "webhook.agent",
            tenant_id: valid_id(tenant).then_some(tenant),
            seller_id: valid_id(seller_id).then_some(seller_id),
            outcome: Some(outcome),
            ..Default::default()
        },
    );
    response
}

async fn receive<S: Store, T: Transport, C: SellerCalls>(
    env: &IntakeEnv<'_, S, T>,
    calls: &C,
    req: &Request,
) -> Result<(&'static str, Response), Refusal> {
    if let Some(refusal) = misshapen(req) {
        return Err(refusal);
    }
    let unknown = || {
        Refusal::new(
            Rejection::UnknownOperation,
            StatusCode::NOT_FOUND,
            "not_found",
            "no capability subscription here",
        )
    };
    let (tenant, seller_id) = parse_path(req.uri().path())
        .filter(|(t, s)| valid_id(t) && valid_id(s))
        .ok_or_else(unknown)?;
    // The signature first when the seller's keys are cached: a forgery costs that one read.
    // Otherwise the registration is read first, so a made-up seller costs no key-fetch claim.
    // Nothing is remembered of these deliveries, so no nonce is ever "seen".
    let never_seen = |_: &str, _: &str| false;
    let keys = cached_signer_keys(env, tenant, seller_id).await?;
    let verified = keys.is_some();
    if verified {
        verify_with_cached(env, req, tenant, seller_id, &never_seen, keys).await?;
    }
    let record = seller::get(env.store, tenant, seller_id)
        .await?
        .filter(|s| s.capability_subscription.is_some())
        .ok_or_else(unknown)?;
    if !verified {
        verify_with_cached(env, req, tenant, seller_id, &never_seen, None).await?;
    }
    let invalid = |message: &str| {
        Refusal::new(
            Rejection::BadRequest,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_payload",
            message,
        )
    };
    let body: Value = serde_json::from_slice(req.body()).map_err(|_| {
        Refusal::new(
            Rejection::BadRequest,
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the body is not JSON",
        )
    })?;
    let text = |k: &str| body.get(k).and_then(Value::as_str);
    if text("subscriber_id") != Some(SUBSCRIBER_ID) {
        return Err(invalid("`subscriber_id` is not ours"));
    }
    if text("type") == Some("webhook.challenge") {
        let challenge = text("challenge")
            .filter(|c| (32..=255).contains(&c.len()))
            .filter(|c| {
                c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
            })
            .ok_or_else(|| invalid("`challenge` must be 32 to 255 of [A-Za-z0-9_.:-]"))?;
        if text("scope") != Some("agent") {
            return Err(invalid("only agent-scoped challenges are expected here"));
        }
        return Ok((
            "challenge_answered",
            json_response(StatusCode::OK, &json!({ "challenge": challenge })),
        ));
    }
    if text("notification_type") != Some(EVENT) {
        return Err(invalid(
            "only `capabilities.changed` notices are expected here",
        ));
    }
    let version = text("capabilities_version")
        .filter(|v| !v.is_empty() && v.len() <= 255)
        .ok_or_else(|| invalid("`capabilities_version` is required"))?;
    let notification_id = text("notification_id")
        .filter(|v| !v.is_empty() && v.len() <= 255)
        .ok_or_else(|| invalid("`notification_id` is required"))?;
    let held = record
        .capabilities
        .as_ref()
        .and_then(|c| c.capabilities_version.as_deref());
    if held == Some(version) {
        return Ok((
            "unchanged",
            json_response(StatusCode::OK, &json!({ "outcome": "unchanged" })),
        ));
    }
    refresh(env, calls, &record, notification_id, version).await
}

/// Refetches the seller's capabilities for a notice of revision `version`.
async fn refresh<S: Store, T: Transport, C: SellerCalls>(
    env: &IntakeEnv<'_, S, T>,
    calls: &C,
    record: &Seller,
    notification_id: &str,
    version: &str,
) -> Result<(&'static str, Response), Refusal> {
    let now = env.clock.now_ms();
    calls.set_deadline(Some(now + REFRESH_MS));
    let fetched = capabilities::fetch(calls, record, now).await;
    calls.set_deadline(None);
    let Ok(discovered) = fetched else {
        return Ok((
            "capabilities_unavailable",
            retry_later("capabilities_unavailable"),
        ));
    };
    let refreshed = discovered.capabilities.capabilities_version.as_deref() == Some(version);
    let notice = ChangeNotice {
        notification_id: notification_id.to_string(),
        capabilities_version: version.to_string(),
        received_at_ms: now,
        refreshed,
    };
    // Onto the record as stored now: a registration replaced meanwhile keeps its own.
    seller::amend(env.store, record, |s| {
        s.capabilities = Some(discovered.capabilities);
        s.version_envelope = discovered.envelope;
        s.updated_at_ms = now;
        if let Some(sub) = &mut s.capability_subscription {
            sub.last_notice = Some(notice);
        }
    })
    .await?;
    if !refreshed {
        // The seller must publish the revision before announcing it: ask again later.
        return Ok((
            "revision_not_published",
            retry_later("revision_not_published"),
        ));
    }
    Ok((
        "refreshed",
        json_response(StatusCode::OK, &json!({ "outcome": "refreshed" })),
    ))
}

fn retry_later(code: &'static str) -> Response {
    let message = match code {
        "revision_not_published" => {
            "get_adcp_capabilities does not show the notified capabilities_version yet"
        }
        _ => "the seller's get_adcp_capabilities could not be fetched",
    };
    let mut response =
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message).into_response();
    response.headers_mut().insert(
        header::RETRY_AFTER,
        header::HeaderValue::from_static(RETRY_AFTER_S),
    );
    response
}
