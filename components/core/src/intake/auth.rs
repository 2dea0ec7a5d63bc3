//! Authenticating a delivery in the mode its operation registered: RFC 9421 signatures,
//! legacy HMAC, or Bearer, with the per-operation token echo.

use super::{env::IntakeEnv, refusal::Refusal};
use crate::auth::hmac_signature::{self, HmacError};
use crate::auth::{jwks, rfc9421};
use crate::foundation::{http::Request, seal::ct_eq, store::Store, transport::Transport};
use crate::model::operation::{NonceMark, Operation, WebhookMode, WebhookRegistration};
use crate::records::{interop::Defect, metrics::Rejection, seller};
use http::{StatusCode, header};

/// The authentication schemes a request presents.
fn presented_mode(req: &Request) -> Option<WebhookMode> {
    let h = req.headers();
    if h.contains_key("signature-input") || h.contains_key("signature") {
        Some(WebhookMode::Rfc9421)
    } else if h.contains_key("x-adcp-signature") {
        Some(WebhookMode::Hmac)
    } else if h.contains_key(header::AUTHORIZATION) {
        Some(WebhookMode::Bearer)
    } else {
        None
    }
}

/// Whether the request carries an RFC 9421 signature.
pub fn presents_signature(req: &Request) -> bool {
    presented_mode(req) == Some(WebhookMode::Rfc9421)
}

/// Checks the delivery in the registered mode (an RFC 9421 signature already `presigned`
/// against the seller's keys only has its nonce checked). Returns the RFC 9421 nonce to
/// remember.
pub async fn authenticate<S: Store, T: Transport>(
    env: &IntakeEnv<'_, S, T>,
    req: &Request,
    op: &Operation,
    mode: WebhookMode,
    presigned: Option<rfc9421::Verified>,
) -> Result<Option<NonceMark>, Refusal> {
    match presented_mode(req) {
        None => {
            return Err(Refusal::unauthenticated(
                "webhook_unauthenticated",
                "no webhook credentials presented",
            ));
        }
        Some(p) if p != mode => {
            let mut r = Refusal::new(
                Rejection::ModeMismatch,
                StatusCode::UNAUTHORIZED,
                "webhook_mode_mismatch",
                "the delivery's authentication differs from the registered mode",
            );
            if mode == WebhookMode::Rfc9421 {
                r.www_authenticate = Some("Signature error=\"webhook_mode_mismatch\"".into());
            }
            return Err(r);
        }
        Some(_) => {}
    }
    // The per-operation secret, opened only when the mode needs it.
    let secret = || {
        let purpose = WebhookRegistration::secret_purpose(&op.operation_id);
        (op.webhook.as_ref().and_then(|w| w.secret.as_ref()))
            .and_then(|sealed| env.config.sealing.open(&purpose, sealed).ok())
    };
    let no_secret = || {
        Refusal::unauthenticated(
            "webhook_secret_unavailable",
            "no usable secret is registered for this operation",
        )
    };
    match mode {
        WebhookMode::Bearer => {
            let presented = crate::foundation::http::bearer(req).unwrap_or("");
            let secret = secret().ok_or_else(no_secret)?;
            if ct_eq(presented.as_bytes(), &secret) {
                Ok(None)
            } else {
                Err(Refusal::unauthenticated(
                    "webhook_bearer_invalid",
                    "bearer credentials do not match",
                ))
            }
        }
        WebhookMode::Hmac => {
            let secret = secret().ok_or_else(no_secret)?;
            let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
            let now_s = (env.clock.now_ms() / 1000) as i64;
            let (signature, timestamp) = (header("x-adcp-signature"), header("x-adcp-timestamp"));
            match hmac_signature::verify(&[&secret], signature, timestamp, req.body(), now_s) {
                Ok(()) => Ok(None),
                Err(HmacError::BadSignature)
                    if hmac_signature::signed_another_serialization(
                        &[&secret],
                        signature,
                        timestamp,
                        req.body(),
                    ) =>
                {
                    // The sender holds the secret: telling it why costs a forger nothing.
                    Err(Refusal::unauthenticated(
                        HmacError::BadSignature.code(),
                        "the legacy HMAC signature is over another serialization of the body \
                         than the bytes sent; sign the exact bytes you send",
                    )
                    .violation(Defect::HmacOverReserializedBody))
                }
                Err(HmacError::MalformedBody) => Err(Refusal::new(
                    Rejection::BadRequest,
                    StatusCode::BAD_REQUEST,
                    HmacError::MalformedBody.code(),
                    "the body repeats an object key",
                )),
                Err(e) => Err(Refusal::unauthenticated(
                    e.code(),
                    "the legacy HMAC signature does not verify",
                )),
            }
        }
        WebhookMode::Rfc9421 => {
            let now = env.clock.now_ms();
            match presigned {
                Some(v) if op.deliveries.nonce_seen(&v.keyid, &v.nonce, now) => {
                    Err(refusal(rfc9421::SignatureError::Replayed))
                }
                Some(v) => Ok(Some(nonce_mark(v))),
                None => verify_signature(env, req, op).await.map(Some),
            }
        }
    }
}

/// RFC 9421 in AdCP's webhook profile, with the seller's published keys; nonces from the
/// operation's delivery ledger (the signature covers the target URI, so a nonce can only be
/// replayed against this operation).
async fn verify_signature<S: Store, T: Transport>(
    env: &IntakeEnv<'_, S, T>,
    req: &Request,
    op: &Operation,
) -> Result<NonceMark, Refusal> {
    let now = env.clock.now_ms();
    let seen = |keyid: &str, nonce: &str| op.deliveries.nonce_seen(keyid, nonce, now);
    let v = verify_seller_signature(env, req, &op.tenant_id, &op.seller_id, &seen).await?;
    Ok(nonce_mark(v))
}

/// What the operation's ledger keeps of a verified signature, until it could be replayed no
/// more.
fn nonce_mark(v: rfc9421::Verified) -> NonceMark {
    NonceMark {
        keyid: v.keyid,
        nonce: v.nonce,
        expires_at_ms: (v.expires_s.max(0) as u64) * 1000 + rfc9421::SKEW_S as u64 * 1000,
    }
}

/// The refusal of a signature that does not verify, telling the sender why (RFC 9421's
/// `WWW-Authenticate: Signature error=…`).
fn refusal(e: rfc9421::SignatureError) -> Refusal {
    let reason = if e == rfc9421::SignatureError::Replayed {
        Rejection::Replayed
    } else {
        Rejection::Unauthenticated
    };
    let mut r = Refusal::new(
        reason,
        StatusCode::UNAUTHORIZED,
        e.code(),
        "the webhook signature does not verify",
    );
    r.www_authenticate = Some(e.www_authenticate());
    r
}

/// RFC 9421 in AdCP's webhook profile, signed by the seller `seller_id` registered by
/// `tenant`, with its published keys (cached; fetched when unknown or stale).
pub async fn verify_seller_signature<S: Store, T: Transport>(
    env: &IntakeEnv<'_, S, T>,
    req: &Request,
    tenant: &str,
    seller_id: &str,
    nonce_seen: &dyn Fn(&str, &str) -> bool,
) -> Result<rfc9421::Verified, Refusal> {
    let keys = jwks::cached(env.store, tenant, seller_id).await?;
    verify_with_cached(env, req, tenant, seller_id, nonce_seen, keys).await
}

/// The signer's cached keys, read before its operation or record: `None` when none are
/// cached. Only a signer with keys cached is checked first; for any other the registration is
/// read first, so a forger naming made-up sellers cannot make us claim key fetches for them
/// (a write each).
pub async fn cached_signer_keys<S: Store, T: Transport>(
    env: &IntakeEnv<'_, S, T>,
    tenant: &str,
    seller_id: &str,
) -> Result<Option<jwks::CachedKeys>, Refusal> {
    Ok(jwks::cached(env.store, tenant, seller_id).await?)
}

/// [`verify_seller_signature`] with the cached keys already read (`keys`).
pub async fn verify_with_cached<S: Store, T: Transport>(
    env: &IntakeEnv<'_, S, T>,
    req: &Request,
    tenant: &str,
    seller_id: &str,
    nonce_seen: &dyn Fn(&str, &str) -> bool,
    keys: Option<jwks::CachedKeys>,
) -> Result<rfc9421::Verified, Refusal> {
    // The URI the seller signed: our public URL, whatever address the request came in on.
    let path_query = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let target_uri = format!(
        "{}{}",
        env.config.public_base_url.trim_end_matches('/'),
        path_query
    );
    let now = env.clock.now_ms();
    let signed = rfc9421::Request {
        method: req.method().as_str(),
        target_uri: &target_uri,
        headers: req.headers(),
        body: req.body(),
        now_s: (now / 1000) as i64,
    };
    let verify = |keys: Option<&jwks::CachedKeys>| {
        rfc9421::verify(
            &signed,
            &SellerTrust {
                keys,
                nonce_seen,
                now_ms: now,
            },
        )
    };
    let mut keys = keys;
    let mut result = verify(keys.as_ref());
    let unknown = result == Err(rfc9421::SignatureError::KeyUnknown);
    // Past the TTL even a known key is checked against the seller's current set (it may
    // have been revoked); the claim keeps it to one fetch per cooldown whatever arrives.
    if jwks::should_fetch(keys.as_ref(), unknown, now)
        && jwks::claim_fetch(env.store, tenant, seller_id, now).await?
    {
        let Some(s) = seller::get(env.store, tenant, seller_id).await? else {
            return Err(refusal(rfc9421::SignatureError::KeyUnknown));
        };
        let found =
            jwks::discover(env.transport, &s.mcp_url, env.config.allow_private_networks).await;
        // Re-registered during the fetch: the old agent's keys must not be kept.
        let current = seller::get(env.store, tenant, seller_id).await?;
        if current.is_none_or(|c| c.mcp_url != s.mcp_url) {
            return Err(refusal(rfc9421::SignatureError::KeyUnknown));
        }
        keys = Some(jwks::record_attempt(env.store, tenant, seller_id, keys, found, now).await?);
        result = verify(keys.as_ref());
    }
    result.map_err(refusal)
}

/// Keys from the cache; nonces from the caller's replay ledger.
struct SellerTrust<'a> {
    keys: Option<&'a jwks::CachedKeys>,
    nonce_seen: &'a dyn Fn(&str, &str) -> bool,
    now_ms: u64,
}

impl rfc9421::Trust for SellerTrust<'_> {
    fn key(&self, keyid: &str) -> Option<rfc9421::Jwk> {
        self.keys.and_then(|k| k.key(keyid, self.now_ms))
    }

    fn nonce_seen(&self, keyid: &str, nonce: &str) -> bool {
        (self.nonce_seen)(keyid, nonce)
    }
}
