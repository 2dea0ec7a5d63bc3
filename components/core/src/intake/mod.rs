//! Webhook intake: `POST /webhooks/adcp/{operation_id}` from sellers.
//!
//! Order of work, cheapest and safest first: method, content type and size (before any
//! verification), then the operation, then authentication in the mode the operation
//! registered (a delivery in another mode is refused: the mode is a switch, never a
//! fallback), then the payload, then de-duplication and the state machine through the
//! journal. Nothing is written before authentication passes, and a refused delivery only
//! bumps a counter and writes a log line, so forged traffic cannot evict real history.
//!
//! De-duplication lives in the operation record itself ([`crate::model::operation::DeliveryLedger`]):
//! a repeat of an applied delivery answers 2xx, the same key with another payload 409, and a
//! delivery whose fold waits on an entry still in flight 503 with `Retry-After`.

use crate::auth::hmac_signature::{self, HmacError};
use crate::auth::{jwks, rfc9421};
use crate::foundation::clock::Clock;
use crate::foundation::http::{ApiError, Request, Response, json_response};
use crate::foundation::keys::{self, valid_id};
use crate::foundation::log::{self, Log};
use crate::foundation::seal::{SealingKey, ct_eq, digest_hex};
use crate::foundation::store::{Store, get_json};
use crate::foundation::transport::Transport;
use crate::lifecycle::effects;
use crate::model::operation::{Delivery, DeliveryCheck, Operation, WebhookMode};
use crate::model::payload::observation_from_webhook;
use crate::records::journal::{self, Effect, EntryKind};
use crate::records::metrics::{self, Rejection};
use crate::records::seller;
use crate::schedule::due::DueConfig;
use http::{Method, StatusCode, header};
use serde_json::{Value, json};

/// Largest webhook body accepted (AdCP receiver contract: 413 above 1 MB).
pub const MAX_WEBHOOK_BYTES: usize = 1024 * 1024;

pub struct IntakeConfig {
    /// Origin the seller was given; `@target-uri` is rebuilt from it, not from whatever
    /// address the request reached us on (proxies, Spin's listener).
    pub public_base_url: String,
    pub sealing: SealingKey,
    pub due: DueConfig,
}

pub struct IntakeEnv<'a, S: Store, T: Transport> {
    pub store: &'a S,
    pub clock: &'a dyn Clock,
    pub log: &'a dyn Log,
    pub config: &'a IntakeConfig,
    /// For key discovery (brand.json, JWKS) when the cache cannot answer.
    pub transport: &'a T,
}

/// The answer, plus a buyer notification the component may attempt after responding.
pub struct Answer {
    pub response: Response,
    pub notification: Option<String>,
}

/// A refused delivery: the HTTP answer and the counted reason.
struct Refusal {
    error: ApiError,
    reason: Rejection,
    www_authenticate: Option<String>,
}

impl Refusal {
    fn new(
        reason: Rejection,
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Refusal {
            error: ApiError::new(status, code, message),
            reason,
            www_authenticate: None,
        }
    }

    fn unauthenticated(code: &'static str, message: impl Into<String>) -> Self {
        Refusal::new(
            Rejection::Unauthenticated,
            StatusCode::UNAUTHORIZED,
            code,
            message,
        )
    }
}

impl From<crate::foundation::error::StoreError> for Refusal {
    fn from(e: crate::foundation::error::StoreError) -> Self {
        // Not the sender's fault: a 503 it will retry. Counted as a bad request would be
        // wrong; the reason here only labels the log line.
        Refusal {
            error: e.into(),
            reason: Rejection::BadRequest,
            www_authenticate: None,
        }
    }
}

impl From<journal::JournalError> for Refusal {
    fn from(e: journal::JournalError) -> Self {
        Refusal {
            error: e.into(),
            reason: Rejection::BadRequest,
            www_authenticate: None,
        }
    }
}

pub async fn handle<S: Store, T: Transport>(env: &IntakeEnv<'_, S, T>, req: Request) -> Answer {
    let op_hint = req
        .uri()
        .path()
        .strip_prefix("/webhooks/adcp/")
        .unwrap_or("")
        .to_string();
    match receive(env, &req).await {
        Ok(answer) => answer,
        Err(refusal) => {
            let status = refusal.error.status;
            // Store failures are ours, not the sender's: not counted as rejections.
            if status != StatusCode::SERVICE_UNAVAILABLE {
                let _ = metrics::webhook_rejected(env.store, refusal.reason).await;
            }
            log::emit(
                env.log,
                &log::Event {
                    ts_ms: env.clock.now_ms(),
                    event: "webhook.refused",
                    operation_id: valid_id(&op_hint).then_some(op_hint.as_str()),
                    outcome: Some(refusal.error.code),
                    detail: Some(refusal.reason.as_str().to_string()),
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
                notification: None,
            }
        }
    }
}

async fn receive<S: Store, T: Transport>(
    env: &IntakeEnv<'_, S, T>,
    req: &Request,
) -> Result<Answer, Refusal> {
    let bad =
        |status, code, message: &str| Refusal::new(Rejection::BadRequest, status, code, message);
    if req.method() != Method::POST {
        return Err(bad(
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
        return Err(bad(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "webhooks must be `Content-Type: application/json`",
        ));
    }
    if req.body().len() > MAX_WEBHOOK_BYTES {
        return Err(bad(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "webhook body exceeds 1 MB",
        ));
    }
    let unknown = || {
        Refusal::new(
            Rejection::UnknownOperation,
            StatusCode::NOT_FOUND,
            "not_found",
            "operation not found",
        )
    };
    let op_id = req
        .uri()
        .path()
        .strip_prefix("/webhooks/adcp/")
        .filter(|id| valid_id(id))
        .ok_or_else(unknown)?
        .to_string();
    let op = load(env, &op_id).await?.ok_or_else(unknown)?;
    let registration = op.webhook.as_ref().ok_or_else(|| {
        Refusal::unauthenticated(
            "webhook_not_registered",
            "no webhook was registered for this operation",
        )
    })?;

    let nonce = authenticate(env, req, &op, registration.mode).await?;

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
        .open(&format!("webhook:{op_id}:token"), &registration.token)
        .map_err(|_| {
            Refusal::unauthenticated("sealed_secret_unreadable", "cannot verify this webhook")
        })?;
    let echoed = payload.get("token").and_then(Value::as_str).unwrap_or("");
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
    match op.deliveries.check(&parsed.idempotency_key, &payload_hash) {
        DeliveryCheck::Repeat => {
            metrics::webhook_duplicate(env.store).await?;
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
    let effects::Written {
        recorded,
        notification,
    } = effects::record(
        env.store,
        env.clock,
        env.log,
        "webhook",
        &op_id,
        Some(op),
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
        });
    };
    match effect {
        Effect::DeliveryConflict => return Err(key_conflict()),
        Effect::RepeatedDelivery => metrics::webhook_duplicate(env.store).await?,
        _ => {}
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
    Ok(accepted(effect_name(effect), Some(effect), notification))
}

fn accepted(outcome: &str, effect: Option<Effect>, notification: Option<String>) -> Answer {
    Answer {
        response: json_response(
            StatusCode::OK,
            &json!({ "received": true, "outcome": outcome, "effect": effect }),
        ),
        notification,
    }
}

fn key_conflict() -> Refusal {
    Refusal::new(
        Rejection::Conflict,
        StatusCode::CONFLICT,
        "idempotency_conflict",
        "this idempotency_key was already delivered with a different payload",
    )
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

/// The operation as of its snapshot (one read); the full journal check only when the
/// snapshot is missing (a creation interrupted between its two writes).
async fn load<S: Store, T: Transport>(
    env: &IntakeEnv<'_, S, T>,
    op_id: &str,
) -> Result<Option<Operation>, Refusal> {
    if let Some(op) = get_json::<Operation>(env.store, &keys::operation(op_id)).await? {
        return Ok(Some(op));
    }
    Ok(
        crate::lifecycle::effects::load(env.store, env.clock, env.log, op_id)
            .await?
            .map(|l| l.operation),
    )
}

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

/// Checks the delivery in the registered mode. Returns the RFC 9421 nonce to remember.
async fn authenticate<S: Store, T: Transport>(
    env: &IntakeEnv<'_, S, T>,
    req: &Request,
    op: &Operation,
    mode: WebhookMode,
) -> Result<Option<crate::model::operation::NonceMark>, Refusal> {
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
        let sealed = op.webhook.as_ref().and_then(|w| w.secret.as_ref())?;
        env.config
            .sealing
            .open(&format!("webhook:{}:secret", op.operation_id), sealed)
            .ok()
    };
    match mode {
        WebhookMode::Bearer => {
            let presented = crate::foundation::http::bearer(req).unwrap_or("");
            let secret = secret().ok_or_else(|| {
                Refusal::unauthenticated(
                    "webhook_secret_unavailable",
                    "no usable secret is registered for this operation",
                )
            })?;
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
            let secret = secret().ok_or_else(|| {
                Refusal::unauthenticated(
                    "webhook_secret_unavailable",
                    "no usable secret is registered for this operation",
                )
            })?;
            let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
            let now_s = (env.clock.now_ms() / 1000) as i64;
            match hmac_signature::verify(
                &[&secret],
                header("x-adcp-signature"),
                header("x-adcp-timestamp"),
                req.body(),
                now_s,
            ) {
                Ok(()) => Ok(None),
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
        WebhookMode::Rfc9421 => verify_signature(env, req, op).await.map(Some),
    }
}

/// RFC 9421 in AdCP's webhook profile, with the seller's published keys.
async fn verify_signature<S: Store, T: Transport>(
    env: &IntakeEnv<'_, S, T>,
    req: &Request,
    op: &Operation,
) -> Result<crate::model::operation::NonceMark, Refusal> {
    let refuse = |e: rfc9421::SignatureError| {
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
    };
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
    let mut keys = jwks::cached(env.store, &op.tenant_id, &op.seller_id).await?;
    loop {
        let trust = LedgerTrust {
            keys: keys.as_ref(),
            op,
            now_ms: now,
        };
        let result = rfc9421::verify(&signed, &trust);
        let unknown = result == Err(rfc9421::SignatureError::KeyUnknown);
        if (unknown || keys.is_none()) && jwks::should_fetch(keys.as_ref(), unknown, now) {
            let Some(s) = seller::get(env.store, &op.tenant_id, &op.seller_id).await? else {
                return Err(refuse(rfc9421::SignatureError::KeyUnknown));
            };
            match jwks::refresh(
                env.store,
                env.transport,
                &op.tenant_id,
                &op.seller_id,
                &s.mcp_url,
                now,
            )
            .await?
            {
                Some(fresh) => {
                    keys = Some(fresh);
                    continue;
                }
                None => return Err(refuse(rfc9421::SignatureError::KeyUnknown)),
            }
        }
        return result
            .map(|v| crate::model::operation::NonceMark {
                keyid: v.keyid,
                nonce: v.nonce,
                expires_at_ms: (v.expires_s.max(0) as u64) * 1000 + rfc9421::SKEW_S as u64 * 1000,
            })
            .map_err(refuse);
    }
}

/// Keys from the cache; nonces from the operation's delivery ledger (the signature covers the
/// target URI, so a nonce can only be replayed against this operation).
struct LedgerTrust<'a> {
    keys: Option<&'a jwks::CachedKeys>,
    op: &'a Operation,
    now_ms: u64,
}

impl rfc9421::Trust for LedgerTrust<'_> {
    fn key(&self, keyid: &str) -> Option<rfc9421::Jwk> {
        self.keys.and_then(|k| k.key(keyid))
    }

    fn nonce_seen(&self, keyid: &str, nonce: &str) -> bool {
        self.op.deliveries.nonce_seen(keyid, nonce, self.now_ms)
    }
}

/// Digest of the payload in a canonical form (sorted keys, compact), so a retry whose
/// bytes differ only in whitespace or key order is the same delivery.
pub fn canonical_hash(payload: &Value) -> String {
    // serde_json's map is ordered by key (no `preserve_order` feature), so this is canonical.
    digest_hex(&serde_json::to_vec(payload).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::foundation::clock::FixedClock;
    use crate::foundation::log::NoLog;
    use crate::foundation::store::MemoryStore;
    use crate::model::operation::WebhookRegistration;
    use crate::model::status::OperationStatus;
    use crate::model::status::TaskStatus;
    use crate::testing::SeededEntropy;
    use futures::executor::block_on;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const TOKEN: &str = "tok-0123456789abcdef";
    const SECRET: &str = "bearer-secret-0123456789abcdef-0123456789";

    struct World {
        store: MemoryStore,
        config: IntakeConfig,
    }

    impl World {
        fn new(mode: WebhookMode) -> World {
            let sealing = SealingKey::from_hex(KEY).unwrap();
            let e = SeededEntropy::new(2);
            let mut op = crate::testing::sample("op1");
            op.webhook = Some(WebhookRegistration {
                url: "https://orch.example/webhooks/adcp/op1".into(),
                mode,
                token: sealing.seal(&e, "webhook:op1:token", TOKEN.as_bytes()),
                secret: Some(sealing.seal(&e, "webhook:op1:secret", SECRET.as_bytes())),
            });
            let store = MemoryStore::new();
            block_on(journal::create(&store, &FixedClock(1_000), &op)).unwrap();
            World {
                store,
                config: IntakeConfig {
                    public_base_url: "https://orch.example".into(),
                    sealing,
                    due: DueConfig::default(),
                },
            }
        }

        fn send(&self, req: Request) -> (StatusCode, Value) {
            let env = IntakeEnv {
                store: &self.store,
                clock: &FixedClock(2_000),
                log: &NoLog,
                config: &self.config,
                transport: &crate::testing::ScriptedTransport::default(),
            };
            let a = block_on(handle(&env, req));
            let status = a.response.status();
            (
                status,
                serde_json::from_slice(a.response.body()).unwrap_or(Value::Null),
            )
        }

        fn status(&self) -> OperationStatus {
            block_on(journal::load(&self.store, &FixedClock(3_000), "op1"))
                .unwrap()
                .unwrap()
                .operation
                .status
        }
    }

    fn payload(status: &str, key: &str) -> Value {
        json!({"idempotency_key": key, "operation_id": "op1", "task_id": "task_1", "task_type": "create_media_buy",
               "status": status, "timestamp": "2026-11-22T10:00:00Z", "token": TOKEN,
               "result": {"media_buy_id": "mb_1"}})
    }

    fn bearer(body: &Value) -> Request {
        http::Request::post("/webhooks/adcp/op1")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {SECRET}"))
            .body(body.to_string().into_bytes())
            .unwrap()
    }

    #[test]
    fn a_genuine_delivery_is_applied_once_and_repeats_change_nothing() {
        let w = World::new(WebhookMode::Bearer);
        let body = payload("completed", "whk_aaaaaaaaaaaaaaaa");
        let (s, b) = w.send(bearer(&body));
        assert_eq!(
            (s, b["outcome"].as_str()),
            (StatusCode::OK, Some("applied")),
            "{b}"
        );
        assert_eq!(w.status(), OperationStatus::Seller(TaskStatus::Completed));
        let entries = block_on(journal::history(&w.store, &FixedClock(3_000), "op1"))
            .unwrap()
            .len();
        let (s, b) = w.send(bearer(&body));
        assert_eq!(
            (s, b["outcome"].as_str()),
            (StatusCode::OK, Some("duplicate"))
        );
        assert_eq!(
            block_on(journal::history(&w.store, &FixedClock(3_000), "op1"))
                .unwrap()
                .len(),
            entries
        );
        // Same key, different payload: the sender must stop.
        let (s, b) = w.send(bearer(&payload("failed", "whk_aaaaaaaaaaaaaaaa")));
        assert_eq!(
            (s, b["code"].as_str()),
            (StatusCode::CONFLICT, Some("idempotency_conflict"))
        );
        // A new stale delivery is acknowledged without change.
        let (s, b) = w.send(bearer(&payload("working", "whk_bbbbbbbbbbbbbbbb")));
        assert_eq!((s, b["outcome"].as_str()), (StatusCode::OK, Some("stale")));
        assert_eq!(w.status(), OperationStatus::Seller(TaskStatus::Completed));
    }

    #[test]
    fn twenty_concurrent_copies_change_the_state_once() {
        let w = World::new(WebhookMode::Bearer);
        let body = payload("completed", "whk_cccccccccccccccc");
        let env = IntakeEnv {
            store: &w.store,
            clock: &FixedClock(2_000),
            log: &NoLog,
            config: &w.config,
            transport: &crate::testing::ScriptedTransport::default(),
        };
        let answers = block_on(futures::future::join_all(
            (0..20).map(|_| handle(&env, bearer(&body))),
        ));
        let mut applied = 0;
        for a in &answers {
            let s = a.response.status();
            assert!(
                s == StatusCode::OK || s == StatusCode::SERVICE_UNAVAILABLE,
                "{s}"
            );
            if s == StatusCode::SERVICE_UNAVAILABLE {
                assert!(a.response.headers().contains_key(header::RETRY_AFTER));
            }
            let v: Value = serde_json::from_slice(a.response.body()).unwrap();
            applied += usize::from(v["outcome"] == "applied");
        }
        assert_eq!(applied, 1);
        let history = block_on(journal::history(&w.store, &FixedClock(3_000), "op1")).unwrap();
        let changes = history
            .iter()
            .filter(|(_, e)| matches!(e, Effect::Applied(_)))
            .count();
        assert_eq!(changes, 1);
        // Retries of the 503s now answer 2xx.
        let (s, _) = w.send(bearer(&body));
        assert_eq!(s, StatusCode::OK);
    }

    #[test]
    fn refusals_change_nothing_and_are_counted() {
        let w = World::new(WebhookMode::Bearer);
        let body = payload("completed", "whk_dddddddddddddddd");
        let before = w.store.keys();
        let post = |path: &str, ctype: &str, auth: Option<String>, body: Vec<u8>| {
            let mut b = http::Request::post(path).header("content-type", ctype);
            if let Some(a) = auth {
                b = b.header("authorization", a);
            }
            b.body(body).unwrap()
        };
        let ok_auth = || Some(format!("Bearer {SECRET}"));
        let bytes = body.to_string().into_bytes();
        let mut tampered = body.clone();
        tampered["token"] = json!("tok-forged-forged-forged");
        let cases = vec![
            (
                http::Request::get("/webhooks/adcp/op1")
                    .body(vec![])
                    .unwrap(),
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
            ),
            (
                post("/webhooks/adcp/op1", "text/plain", ok_auth(), bytes.clone()),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            ),
            (
                post(
                    "/webhooks/adcp/op1",
                    "application/json",
                    ok_auth(),
                    vec![b' '; MAX_WEBHOOK_BYTES + 1],
                ),
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
            ),
            (
                post(
                    "/webhooks/adcp/op_nope",
                    "application/json",
                    ok_auth(),
                    bytes.clone(),
                ),
                StatusCode::NOT_FOUND,
                "not_found",
            ),
            (
                post(
                    "/webhooks/adcp/op1",
                    "application/json",
                    None,
                    bytes.clone(),
                ),
                StatusCode::UNAUTHORIZED,
                "webhook_unauthenticated",
            ),
            (
                post(
                    "/webhooks/adcp/op1",
                    "application/json",
                    Some("Bearer wrong".into()),
                    bytes.clone(),
                ),
                StatusCode::UNAUTHORIZED,
                "webhook_bearer_invalid",
            ),
            (
                http::Request::post("/webhooks/adcp/op1")
                    .header("content-type", "application/json")
                    .header("x-adcp-signature", "sha256=00")
                    .header("x-adcp-timestamp", "1")
                    .body(bytes.clone())
                    .unwrap(),
                StatusCode::UNAUTHORIZED,
                "webhook_mode_mismatch",
            ),
            (
                post(
                    "/webhooks/adcp/op1",
                    "application/json",
                    ok_auth(),
                    tampered.to_string().into_bytes(),
                ),
                StatusCode::UNAUTHORIZED,
                "webhook_token_mismatch",
            ),
            (
                post(
                    "/webhooks/adcp/op1",
                    "application/json",
                    ok_auth(),
                    b"[1,2]".to_vec(),
                ),
                StatusCode::UNAUTHORIZED,
                "webhook_token_mismatch",
            ),
        ];
        for (req, status, code) in cases {
            let (s, b) = w.send(req);
            assert_eq!((s, b["code"].as_str()), (status, Some(code)), "{b}");
        }
        let mut after = w.store.keys();
        after.retain(|k| !k.starts_with("m:"));
        assert_eq!(after, before, "refusals write nothing but counters");
        let text = block_on(metrics::render(&w.store, &Default::default(), 0)).unwrap();
        assert!(
            text.contains("adcp_webhook_rejections_total{reason=\"unauthenticated\"} 4"),
            "{text}"
        );
        assert!(text.contains("adcp_webhook_rejections_total{reason=\"mode_mismatch\"} 1"));
        assert!(text.contains("adcp_webhook_rejections_total{reason=\"unknown_operation\"} 1"));
    }

    #[test]
    /// With the callback's notification and the per-change effects claim (which lets a
    /// crashed writer's change still be counted and announced): 13, whatever the number of
    /// operations.
    fn an_accepted_webhook_costs_at_most_thirteen_store_calls() {
        let w = World::new(WebhookMode::Bearer);
        // A tenant callback is registered, so the notification path is included.
        let e = SeededEntropy::new(4);
        let cb = crate::records::notify::Callback {
            url: "https://buyer.example/hook".into(),
            secret: w.config.sealing.seal(
                &e,
                &crate::records::notify::secret_purpose("t1"),
                b"whsec_x",
            ),
            enabled: true,
            disabled_reason: None,
        };
        block_on(crate::foundation::store::set_json(
            &w.store,
            &keys::callback("t1"),
            &cb,
        ))
        .unwrap();
        // The usual case: the seller already answered `submitted` (the first status with a
        // task id also indexes the task for reconciliation; that is not the webhook's cost).
        let submitted = crate::testing::obs(TaskStatus::Submitted, Some("task_1"));
        block_on(journal::record(
            &w.store,
            &FixedClock(1_500),
            "op1",
            journal::EntryKind::Observed {
                observation: Box::new(submitted),
            },
        ))
        .unwrap();
        w.store.reset_counts();
        let (s, _) = w.send(bearer(&payload("completed", "whk_eeeeeeeeeeeeeeee")));
        assert_eq!(s, StatusCode::OK);
        assert!(
            w.store.total_ops() <= 13,
            "{} store calls",
            w.store.total_ops()
        );
    }
}

#[cfg(test)]
mod hmac_tests {
    use super::*;
    use crate::foundation::clock::FixedClock;
    use crate::foundation::log::NoLog;
    use crate::foundation::store::MemoryStore;
    use crate::model::operation::WebhookRegistration;
    use crate::testing::SeededEntropy;
    use futures::executor::block_on;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const SECRET: &str = "hmac-secret-0123456789abcdef-0123456789";

    fn world() -> (MemoryStore, IntakeConfig) {
        let sealing = SealingKey::from_hex(KEY).unwrap();
        let e = SeededEntropy::new(2);
        let mut op = crate::testing::sample("op1");
        op.webhook = Some(WebhookRegistration {
            url: "https://orch.example/webhooks/adcp/op1".into(),
            mode: WebhookMode::Hmac,
            token: sealing.seal(&e, "webhook:op1:token", b"tok-0123456789abcdef"),
            secret: Some(sealing.seal(&e, "webhook:op1:secret", SECRET.as_bytes())),
        });
        let store = MemoryStore::new();
        block_on(journal::create(&store, &FixedClock(1_000), &op)).unwrap();
        (
            store,
            IntakeConfig {
                public_base_url: "https://orch.example".into(),
                sealing,
                due: DueConfig::default(),
            },
        )
    }

    fn send(
        store: &MemoryStore,
        config: &IntakeConfig,
        body: &str,
        ts: &str,
        sig: &str,
    ) -> (StatusCode, Value) {
        let req = http::Request::post("/webhooks/adcp/op1")
            .header("content-type", "application/json")
            .header("X-AdCP-Timestamp", ts)
            .header("X-AdCP-Signature", sig)
            .body(body.as_bytes().to_vec())
            .unwrap();
        let env = IntakeEnv {
            store,
            clock: &FixedClock(1_700_000_000_000),
            log: &NoLog,
            config,
            transport: &crate::testing::ScriptedTransport::default(),
        };
        let a = block_on(handle(&env, req));
        (
            a.response.status(),
            serde_json::from_slice(a.response.body()).unwrap_or(Value::Null),
        )
    }

    #[test]
    fn legacy_hmac_deliveries_are_verified_over_the_raw_bytes() {
        let (store, config) = world();
        // Spaced JSON, as the Python SDK sends it: verified as received, never re-serialised.
        let body = r#"{"idempotency_key": "whk_0123456789abcdef", "operation_id": "op1", "task_id": "t1", "task_type": "create_media_buy", "status": "working", "timestamp": "2026-11-22T10:00:00Z", "token": "tok-0123456789abcdef"}"#;
        let ts = "1700000000";
        let good = hmac_signature::sign(SECRET.as_bytes(), ts, body.as_bytes());
        let tampered = body.replace("working", "completed");
        assert_eq!(
            send(&store, &config, &tampered, ts, &good).1["code"],
            "webhook_signature_invalid"
        );
        let stale = hmac_signature::sign(SECRET.as_bytes(), "1699999000", body.as_bytes());
        assert_eq!(
            send(&store, &config, body, "1699999000", &stale).1["code"],
            "webhook_timestamp_out_of_window"
        );
        let dup = r#"{"status":"working","status":"completed"}"#;
        let dup_sig = hmac_signature::sign(SECRET.as_bytes(), ts, dup.as_bytes());
        assert_eq!(
            send(&store, &config, dup, ts, &dup_sig),
            (
                StatusCode::BAD_REQUEST,
                send(&store, &config, dup, ts, &dup_sig).1
            )
        );
        assert_eq!(
            send(&store, &config, dup, ts, &dup_sig).1["code"],
            "webhook_body_malformed"
        );
        let (s, b) = send(&store, &config, body, ts, &good);
        assert_eq!(
            (s, b["outcome"].as_str()),
            (StatusCode::OK, Some("applied")),
            "{b}"
        );
    }
}

#[cfg(test)]
mod rfc9421_tests {
    use super::*;
    use crate::foundation::clock::FixedClock;
    use crate::foundation::log::NoLog;
    use crate::foundation::store::MemoryStore;
    use crate::model::operation::WebhookRegistration;
    use crate::testing::ScriptedTransport;
    use crate::testing::SeededEntropy;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ed25519_dalek::Signer;
    use futures::executor::block_on;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const NOW_S: u64 = 1_776_520_800;

    fn signing_key() -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&[7u8; 32])
    }

    fn jwk() -> Value {
        let x = URL_SAFE_NO_PAD.encode(signing_key().verifying_key().as_bytes());
        json!({"kid": "seller-key-1", "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
               "key_ops": ["verify"], "adcp_use": "request-signing", "x": x})
    }

    fn world() -> (MemoryStore, IntakeConfig) {
        let sealing = SealingKey::from_hex(KEY).unwrap();
        let e = SeededEntropy::new(2);
        let mut op = crate::testing::sample("op1");
        op.webhook = Some(WebhookRegistration {
            url: "https://orch.example/webhooks/adcp/op1".into(),
            mode: WebhookMode::Rfc9421,
            token: sealing.seal(&e, "webhook:op1:token", b"tok-0123456789abcdef"),
            secret: None,
        });
        let store = MemoryStore::new();
        block_on(async {
            journal::create(&store, &FixedClock(1_000), &op)
                .await
                .unwrap();
            crate::records::seller::put(
                &store,
                &crate::records::seller::Seller {
                    tenant_id: "t1".into(),
                    seller_id: "s1".into(),
                    mcp_url: "https://seller.example/mcp".into(),
                    credentials: None,
                    webhook_mode: None,
                    auth_scheme: Default::default(),
                    capabilities: None,
                    attention: None,
                    created_at_ms: 0,
                    updated_at_ms: 0,
                },
            )
            .await
            .unwrap();
        });
        (
            store,
            IntakeConfig {
                public_base_url: "https://orch.example".into(),
                sealing,
                due: DueConfig::default(),
            },
        )
    }

    /// Signs like a seller that addressed `https://orch.example/webhooks/adcp/op1`.
    fn signed(body: &str, nonce: &str) -> Request {
        let digest = rfc9421::content_digest(body.as_bytes());
        let params = format!(
            "(\"@method\" \"@target-uri\" \"@authority\" \"content-type\" \"content-digest\");created={NOW_S};expires={};nonce=\"{nonce}\";keyid=\"seller-key-1\";alg=\"ed25519\";tag=\"adcp/webhook-signing/v1\"",
            NOW_S + 300
        );
        let base = format!(
            "\"@method\": POST\n\"@target-uri\": https://orch.example/webhooks/adcp/op1\n\"@authority\": orch.example\n\"content-type\": application/json\n\"content-digest\": {digest}\n\"@signature-params\": {params}"
        );
        let sig = URL_SAFE_NO_PAD.encode(signing_key().sign(base.as_bytes()).to_bytes());
        // Reached through a proxy: the listener's own address is not what was signed.
        http::Request::post("http://10.0.0.7:3000/webhooks/adcp/op1")
            .header("content-type", "application/json")
            .header("content-digest", digest)
            .header("signature-input", format!("sig1={params}"))
            .header("signature", format!("sig1=:{sig}:"))
            .body(body.as_bytes().to_vec())
            .unwrap()
    }

    fn seller_keys(t: &ScriptedTransport) {
        t.reply(200, &json!({"agents": [{"url": "https://seller.example/mcp", "jwks_uri": "https://seller.example/jwks.json"}]}).to_string());
        t.reply(200, &json!({"keys": [jwk()]}).to_string());
    }

    fn send(
        store: &MemoryStore,
        config: &IntakeConfig,
        t: &ScriptedTransport,
        req: Request,
    ) -> (StatusCode, Value, Option<String>) {
        let env = IntakeEnv {
            store,
            clock: &FixedClock(NOW_S * 1000),
            log: &NoLog,
            config,
            transport: t,
        };
        let a = block_on(handle(&env, req));
        let www = a
            .response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_string());
        (
            a.response.status(),
            serde_json::from_slice(a.response.body()).unwrap_or(Value::Null),
            www,
        )
    }

    fn body(key: &str, status: &str) -> String {
        json!({"idempotency_key": key, "operation_id": "op1", "task_id": "t1", "task_type": "create_media_buy",
               "status": status, "timestamp": "2026-04-18T14:00:00Z", "token": "tok-0123456789abcdef"}).to_string()
    }

    #[test]
    fn signed_deliveries_verify_against_discovered_keys_and_replays_are_refused() {
        let (store, config) = world();
        let t = ScriptedTransport::default();
        seller_keys(&t);
        let b = body("whk_aaaaaaaaaaaaaaaa", "working");
        let (s, v, _) = send(&store, &config, &t, signed(&b, "nonce-0000000001"));
        assert_eq!(
            (s, v["outcome"].as_str()),
            (StatusCode::OK, Some("applied")),
            "{v}"
        );
        assert_eq!(t.requests.borrow().len(), 2, "brand.json then JWKS");
        // Keys are cached: the next delivery fetches nothing.
        let b2 = body("whk_bbbbbbbbbbbbbbbb", "completed");
        let (s, _, _) = send(&store, &config, &t, signed(&b2, "nonce-0000000002"));
        assert_eq!(s, StatusCode::OK);
        assert_eq!(t.requests.borrow().len(), 2);
        // The same signed request again: the nonce is known.
        let (s, v, www) = send(&store, &config, &t, signed(&b2, "nonce-0000000002"));
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("webhook_signature_replayed"))
        );
        assert_eq!(
            www.as_deref(),
            Some("Signature error=\"webhook_signature_replayed\"")
        );
        // A genuine re-delivery with a fresh signature is a duplicate: 2xx, no change.
        let (s, v, _) = send(&store, &config, &t, signed(&b2, "nonce-0000000003"));
        assert_eq!(
            (s, v["outcome"].as_str()),
            (StatusCode::OK, Some("duplicate"))
        );
    }

    #[test]
    fn tampered_and_wrong_mode_deliveries_are_refused_without_change() {
        let (store, config) = world();
        let t = ScriptedTransport::default();
        seller_keys(&t);
        let mut req = signed(
            &body("whk_cccccccccccccccc", "completed"),
            "nonce-0000000004",
        );
        *req.body_mut() = body("whk_cccccccccccccccc", "failed").into_bytes();
        let (s, v, www) = send(&store, &config, &t, req);
        assert_eq!(
            (s, v["code"].as_str()),
            (
                StatusCode::UNAUTHORIZED,
                Some("webhook_signature_digest_mismatch")
            ),
            "{v}"
        );
        assert!(www.unwrap().contains("webhook_signature_digest_mismatch"));
        let hmac = http::Request::post("/webhooks/adcp/op1")
            .header("content-type", "application/json")
            .header("x-adcp-signature", "sha256=00")
            .header("x-adcp-timestamp", NOW_S.to_string())
            .body(body("whk_dddddddddddddddd", "completed").into_bytes())
            .unwrap();
        let (s, v, _) = send(&store, &config, &t, hmac);
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("webhook_mode_mismatch"))
        );
        let op = block_on(journal::load(&store, &FixedClock(NOW_S * 1000), "op1"))
            .unwrap()
            .unwrap()
            .operation;
        assert_eq!(
            op.status,
            crate::model::status::OperationStatus::PendingDispatch
        );
    }
}
