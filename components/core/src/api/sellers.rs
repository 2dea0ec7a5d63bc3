//! `PUT/GET/DELETE /api/v1/sellers/{seller_id}`.

use super::capability_subscription;
use super::env::Env;
use crate::foundation::error::FieldError;
use crate::foundation::http::{ApiError, ApiResult, Request, json_body, json_response};
use crate::foundation::keys::{self, valid_id};
use crate::foundation::log;
use crate::foundation::outbound_url;
use crate::foundation::store::{Store, get_json};
use crate::foundation::transport::Transport;
use crate::lifecycle::next::{Step, step};
use crate::model::operation::{Operation, WebhookMode};
use crate::records::seller::{self, AuthScheme, Seller, credentials_purpose};
use crate::records::tenant::Tenant;
use crate::schedule::breaker::Breaker;
use crate::seller::capabilities::{self, Discovered, FetchError};
use crate::seller::port::SellerCalls;
use http::{Method, StatusCode};
use serde_json::{Value, json};

pub async fn handle<S: Store, C: SellerCalls, T: Transport>(
    env: &Env<'_, S, C, T>,
    tenant: &Tenant,
    seller_id: &str,
    req: &Request,
) -> ApiResult {
    if !valid_id(seller_id) {
        return Err(ApiError::not_found("seller"));
    }
    let tid = &tenant.tenant_id;
    match *req.method() {
        Method::PUT => {
            let body = json_body(req)?;
            let input = parse(&body, env.config.allow_private_networks)?;
            let now = env.clock.now_ms();
            let before = seller::get(env.store, tid, seller_id).await?;
            let sealed = input.credentials.as_ref().map(|c| {
                env.config.sealing.seal(
                    env.entropy,
                    &credentials_purpose(tid, seller_id),
                    c.as_bytes(),
                )
            });
            // Omitted credentials keep the stored ones: secrets are write-only.
            let registration = |existing: Option<&Seller>| Seller {
                tenant_id: tid.clone(),
                seller_id: seller_id.to_string(),
                mcp_url: input.mcp_url.clone(),
                credentials: sealed
                    .clone()
                    .or_else(|| existing.and_then(|s| s.credentials.clone())),
                auth_scheme: input.auth_scheme,
                webhook_mode: input.webhook_mode,
                attention: None,
                capabilities: None,
                version_envelope: Default::default(),
                // The seller keeps our subscriber for the same agent and credentials.
                capability_subscription: existing
                    .filter(|s| s.mcp_url == input.mcp_url && sealed.is_none())
                    .and_then(|s| s.capability_subscription.clone()),
                created_at_ms: existing.map_or(now, |s| s.created_at_ms),
                updated_at_ms: now,
            };
            // Capabilities decide whether we may mutate at this seller at all. A seller that
            // cannot be reached now is still registered; operations fetch them before the
            // first mutating call and are refused until they are known.
            let fetched = capabilities::fetch(env.calls, &registration(before.as_ref()), now).await;
            // Built on the record as stored after the call: a rotation meanwhile stands.
            let existing = seller::get(env.store, tid, seller_id).await?;
            let mut record = registration(existing.as_ref());
            let capabilities_error = match fetched {
                Ok(d) => {
                    record.capabilities = Some(d.capabilities);
                    record.version_envelope = d.envelope;
                    None
                }
                Err(e) => {
                    if let FetchError::Unavailable {
                        detail: Some(d), ..
                    } = &e
                    {
                        log::emit(
                            env.log,
                            &log::Event {
                                ts_ms: now,
                                event: "seller.capabilities_unavailable",
                                tenant_id: Some(tid),
                                seller_id: Some(seller_id),
                                detail: Some(log::capped(d)),
                                ..Default::default()
                            },
                        );
                    }
                    Some(e.to_string())
                }
            };
            seller::put(env.store, &record).await?;
            forget_learned(env.store, tid, seller_id).await?;
            if existing.is_none() {
                seller::index(env.store, tid, seller_id).await?;
            }
            capability_subscription::ensure(env, &mut record).await?;
            let status = if existing.is_some() {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            let mut v = view(&record);
            v["capabilities_error"] = json!(capabilities_error);
            Ok(json_response(status, &v))
        }
        Method::GET => {
            let record = seller::get(env.store, tid, seller_id)
                .await?
                .ok_or_else(|| ApiError::not_found("seller"))?;
            let mut v = view(&record);
            let breaker = Breaker::new(&env.sweep.breaker, tid, seller_id)
                .state(env.store, env.clock.now_ms())
                .await?;
            v["breaker"] = serde_json::to_value(breaker).unwrap_or_default();
            // Its authenticated deliveries refused for a spec violation: what, how often, when.
            let interop = crate::records::interop::read(env.store, tid, seller_id).await?;
            v["interop"] = serde_json::to_value(interop).unwrap_or_default();
            Ok(json_response(StatusCode::OK, &v))
        }
        _ => {
            if seller::get(env.store, tid, seller_id).await?.is_none() {
                return Err(ApiError::not_found("seller"));
            }
            refuse_while_unsettled(env, tid, seller_id).await?;
            seller::delete(env.store, tid, seller_id).await?;
            forget_learned(env.store, tid, seller_id).await?;
            Ok(http::Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(Vec::new())
                .unwrap_or_default())
        }
    }
}

/// What we learned of the agent a registration pointed at (its poll tool, MCP session and
/// webhook-signing keys): a re-registration may point at another agent, and a removed
/// seller's keys must not authenticate anything.
async fn forget_learned(store: &impl Store, tenant: &str, seller_id: &str) -> ApiResult<()> {
    for key in [
        keys::poll_tool(tenant, seller_id),
        keys::mcp_session(tenant, seller_id),
    ] {
        store.delete(&key).await?;
    }
    crate::auth::jwks::forget(store, tenant, seller_id).await?;
    crate::records::interop::forget(store, tenant, seller_id).await?;
    Ok(())
}

/// Listing entries a seller's removal reads at most to find its unsettled operations.
const REMOVAL_SCAN_LIMIT: u64 = 20_000;

/// A seller is not removed while any of its operations may still have a live buy (open,
/// timed out or canceled locally and still reconciled): the sweep could no longer reach it.
/// Reads the tenant's listing from retention's low mark (everything below is gone), one
/// snapshot per entry; a listing longer than [`REMOVAL_SCAN_LIMIT`] is refused unread.
async fn refuse_while_unsettled<S: Store, C: SellerCalls, T: Transport>(
    env: &Env<'_, S, C, T>,
    tenant: &str,
    seller_id: &str,
) -> ApiResult<()> {
    let store = env.store;
    let live = crate::records::indexes::live_listing(store, tenant).await?;
    let (low, count) = (*live.start(), *live.end());
    let conflict = |message: String, details: Value| {
        let mut e = ApiError::new(StatusCode::CONFLICT, "seller_has_open_operations", message);
        e.details = Some(details);
        e
    };
    if count >= low && count - low + 1 > REMOVAL_SCAN_LIMIT {
        return Err(conflict(
            format!(
                "more than {REMOVAL_SCAN_LIMIT} operations are kept for this tenant; the seller's cannot all be checked"
            ),
            json!({ "open_operations": null }),
        ));
    }
    let now = env.clock.now_ms();
    let mut open = 0u64;
    for n in low..=count {
        let Some(id) = store.get(&keys::tenant_ops_entry(tenant, n)).await? else {
            continue;
        };
        let id = String::from_utf8_lossy(&id).into_owned();
        let Some(op) = get_json::<Operation>(store, &keys::operation(&id)).await? else {
            continue;
        };
        let settled = op.status.is_authoritative_terminal() || step(&op, now) == Step::Rest;
        open += u64::from(op.seller_id == seller_id && !settled);
    }
    if open > 0 {
        return Err(conflict(
            format!(
                "{open} operations with this seller may still have live buys; wait for them to end or cancel them"
            ),
            json!({ "open_operations": open }),
        ));
    }
    Ok(())
}

/// `POST /api/v1/sellers/{id}/capabilities`: fetches the seller's capabilities again.
pub async fn refresh_capabilities<S: Store, C: SellerCalls, T: Transport>(
    env: &Env<'_, S, C, T>,
    tenant: &Tenant,
    seller_id: &str,
) -> ApiResult {
    if !valid_id(seller_id) {
        return Err(ApiError::not_found("seller"));
    }
    let mut record = seller::get(env.store, &tenant.tenant_id, seller_id)
        .await?
        .ok_or_else(|| ApiError::not_found("seller"))?;
    ensure_capabilities(env, &mut record, true).await?;
    capability_subscription::ensure(env, &mut record).await?;
    Ok(json_response(StatusCode::OK, &view(&record)))
}

/// The seller's capabilities, fetched (and stored) when not yet known or when `refresh`.
/// Errors are API errors: 502 when the seller cannot be asked or answers nonsense.
pub async fn ensure_capabilities<S: Store, C: SellerCalls, T: Transport>(
    env: &Env<'_, S, C, T>,
    record: &mut Seller,
    refresh: bool,
) -> ApiResult<crate::records::capabilities::Capabilities> {
    if let (Some(c), false) = (&record.capabilities, refresh) {
        return Ok(c.clone());
    }
    let now = env.clock.now_ms();
    match capabilities::fetch(env.calls, record, now).await {
        Ok(Discovered {
            capabilities: c,
            envelope,
        }) => {
            // Merged into the record as stored now: a rotation or removal during the call
            // stands, and capabilities of a replaced registration are not kept.
            let amended = seller::amend(env.store, record, |s| {
                s.capabilities = Some(c.clone());
                s.version_envelope = envelope;
                s.updated_at_ms = now;
            })
            .await?;
            *record = amended.ok_or_else(|| {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "seller_changed",
                    "the seller was registered again or removed during the call; retry",
                )
            })?;
            Ok(c)
        }
        Err(FetchError::Unavailable { message, detail }) => {
            let mut e = ApiError::new(
                StatusCode::BAD_GATEWAY,
                "seller_unavailable",
                format!("the seller's get_adcp_capabilities could not be called: {message}"),
            );
            e.internal = detail;
            Err(e)
        }
        Err(FetchError::Invalid(m)) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "seller_capabilities_invalid",
            format!("the seller's get_adcp_capabilities answer is unusable: {m}"),
        )),
    }
}

struct SellerInput {
    mcp_url: String,
    credentials: Option<String>,
    auth_scheme: AuthScheme,
    webhook_mode: Option<WebhookMode>,
}

fn parse(body: &serde_json::Map<String, Value>, allow_private: bool) -> ApiResult<SellerInput> {
    let mut errors = Vec::new();
    let mcp_url = outbound_url_field(body, "mcp_url", allow_private, &mut errors);
    let credentials = match body.get("credentials") {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) if !c.is_empty() && c.len() <= 4096 => Some(c.clone()),
        Some(_) => {
            errors.push(FieldError::new(
                "credentials",
                "a non-empty string of at most 4096 characters",
            ));
            None
        }
    };
    let auth_scheme = match body.get("auth_scheme") {
        None | Some(Value::Null) => AuthScheme::Bearer,
        Some(v) => serde_json::from_value::<AuthScheme>(v.clone()).unwrap_or_else(|_| {
            errors.push(FieldError::new("auth_scheme", "one of `bearer`, `basic`"));
            AuthScheme::Bearer
        }),
    };
    let webhook_mode = match body.get("webhook_mode") {
        None | Some(Value::Null) => None,
        Some(v) => match serde_json::from_value::<WebhookMode>(v.clone()) {
            Ok(m) => Some(m),
            Err(_) => {
                errors.push(FieldError::new(
                    "webhook_mode",
                    "one of `rfc9421`, `hmac`, `bearer`",
                ));
                None
            }
        },
    };
    for key in body.keys() {
        if !["mcp_url", "credentials", "auth_scheme", "webhook_mode"].contains(&key.as_str()) {
            errors.push(FieldError::new(key.clone(), "unknown field"));
        }
    }
    if errors.is_empty() {
        Ok(SellerInput {
            mcp_url,
            credentials,
            auth_scheme,
            webhook_mode,
        })
    } else {
        Err(ApiError::invalid("invalid seller registration", errors))
    }
}

/// A required URL field we will call, checked against [`outbound_url::check`]; an empty
/// string (with the field's error pushed) when it fails.
pub(super) fn outbound_url_field(
    body: &serde_json::Map<String, Value>,
    field: &str,
    allow_private: bool,
    errors: &mut Vec<FieldError>,
) -> String {
    let refusal = match body.get(field).and_then(Value::as_str) {
        Some(u) => match outbound_url::check(u, allow_private) {
            Ok(()) => return u.to_string(),
            Err(r) => r.message(),
        },
        None => "required: an https URL",
    };
    errors.push(FieldError::new(field, refusal));
    String::new()
}

/// The public view: never the credentials themselves.
fn view(s: &Seller) -> Value {
    json!({
        "seller_id": s.seller_id,
        "mcp_url": s.mcp_url,
        "has_credentials": s.credentials.is_some(),
        "auth_scheme": s.auth_scheme,
        "capabilities": s.capabilities,
        "version_envelope": s.version_envelope,
        "capability_subscription": s.capability_subscription,
        "webhook_mode": s.webhook_mode,
        "attention": s.attention,
        "created_at_ms": s.created_at_ms,
        "updated_at_ms": s.updated_at_ms,
    })
}

/// Most sellers one page of `GET /api/v1/sellers` shows.
pub const MAX_SELLERS_PAGE: usize = 100;

/// `GET /api/v1/sellers`: the tenant's sellers, newest registration first, each with its
/// breaker, the time of its last successful call and what needs attention.
pub async fn list<S: Store, C: SellerCalls, T: Transport>(
    env: &Env<'_, S, C, T>,
    tenant: &Tenant,
    req: &Request,
) -> ApiResult {
    let (limit, cursor) = page_query(req.uri().query().unwrap_or(""), MAX_SELLERS_PAGE)?;
    let tid = &tenant.tenant_id;
    let now = env.clock.now_ms();
    let (ids, next) = seller::listed_ids(env.store, tid, cursor, limit).await?;
    let mut out = Vec::new();
    for id in ids {
        // Deleted sellers keep their listing entry.
        let Some(record) = seller::get(env.store, tid, &id).await? else {
            continue;
        };
        let mut v = view(&record);
        let breaker = Breaker::new(&env.sweep.breaker, tid, &id)
            .state(env.store, now)
            .await?;
        v["breaker"] = serde_json::to_value(breaker).unwrap_or_default();
        v["last_success_at_ms"] = json!(seller::last_ok(env.store, tid, &id).await?);
        v["diagnostics"] = json!(diagnostics(&record));
        out.push(v);
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({ "sellers": out, "next_cursor": next.map(|c| c.to_string()) }),
    ))
}

/// What an operator should know about a seller's interoperability, in words.
fn diagnostics(s: &Seller) -> Vec<String> {
    let mut out: Vec<String> = s.attention.iter().cloned().collect();
    match &s.capabilities {
        None => out.push(
            "capabilities not fetched yet: operations are refused until they are".to_string(),
        ),
        Some(c) => {
            if let Some(why) = c.refuses_mutations() {
                out.push(why.to_string());
            }
            if !c.webhook_signing {
                out.push(format!(
                    "the seller does not sign webhooks (RFC 9421); they use {}",
                    serde_json::to_value(s.webhook_mode.unwrap_or_else(|| c.webhook_mode()))
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                ));
            }
        }
    }
    out
}

/// `limit` (1 to `max`, default 50 or `max` if lower) and `cursor` of a listing query;
/// anything else is refused.
pub(super) fn page_query(q: &str, max: usize) -> ApiResult<(usize, Option<u64>)> {
    let (mut limit, mut cursor) = (max.min(50), None);
    let mut errors = Vec::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "limit" => match v.parse::<usize>() {
                Ok(l) if (1..=max).contains(&l) => limit = l,
                _ => errors.push(FieldError::new(
                    "limit",
                    format!("an integer from 1 to {max}"),
                )),
            },
            "cursor" => match v.parse::<u64>() {
                Ok(c) => cursor = Some(c),
                Err(_) => errors.push(FieldError::new("cursor", "a cursor from a previous page")),
            },
            other => errors.push(FieldError::new(other, "unknown query parameter")),
        }
    }
    if errors.is_empty() {
        Ok((limit, cursor))
    } else {
        Err(ApiError::invalid("invalid query", errors))
    }
}
