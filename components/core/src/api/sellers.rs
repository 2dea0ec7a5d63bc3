//! `PUT/GET/DELETE /api/v1/sellers/{seller_id}`.

use super::{ApiError, ApiResult, Env, FieldError, Request, json_body, json_response};
use crate::dispatch::SellerCalls;
use crate::keys::valid_id;
use crate::operation::WebhookMode;
use crate::schedule::breaker::Breaker;
use crate::seller::{self, Seller, credentials_purpose};
use crate::store::Store;
use crate::tenant::Tenant;
use crate::transport::Transport;
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
            let input = parse(&body)?;
            let now = env.clock.now_ms();
            let existing = seller::get(env.store, tid, seller_id).await?;
            let credentials = match input.credentials {
                Some(c) => Some(env.config.sealing.seal(
                    env.entropy,
                    &credentials_purpose(tid, seller_id),
                    c.as_bytes(),
                )),
                // Omitted credentials keep the stored ones: secrets are write-only.
                None => existing.as_ref().and_then(|s| s.credentials.clone()),
            };
            let record = Seller {
                tenant_id: tid.clone(),
                seller_id: seller_id.to_string(),
                mcp_url: input.mcp_url,
                credentials,
                webhook_mode: input.webhook_mode,
                attention: None,
                created_at_ms: existing.as_ref().map_or(now, |s| s.created_at_ms),
                updated_at_ms: now,
            };
            seller::put(env.store, &record).await?;
            if existing.is_none() {
                seller::index(env.store, tid, seller_id).await?;
            }
            let status = if existing.is_some() {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok(json_response(status, &view(&record)))
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
            Ok(json_response(StatusCode::OK, &v))
        }
        _ => {
            if seller::get(env.store, tid, seller_id).await?.is_none() {
                return Err(ApiError::not_found("seller"));
            }
            seller::delete(env.store, tid, seller_id).await?;
            Ok(http::Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(Vec::new())
                .unwrap_or_default())
        }
    }
}

struct SellerInput {
    mcp_url: String,
    credentials: Option<String>,
    webhook_mode: Option<WebhookMode>,
}

fn parse(body: &serde_json::Map<String, Value>) -> ApiResult<SellerInput> {
    let mut errors = Vec::new();
    let mcp_url = match body.get("mcp_url").and_then(Value::as_str) {
        Some(u) if is_http_url(u) => u.to_string(),
        _ => {
            errors.push(FieldError::new(
                "mcp_url",
                "required: an absolute http(s) URL",
            ));
            String::new()
        }
    };
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
        if !["mcp_url", "credentials", "webhook_mode"].contains(&key.as_str()) {
            errors.push(FieldError::new(key.clone(), "unknown field"));
        }
    }
    if errors.is_empty() {
        Ok(SellerInput {
            mcp_url,
            credentials,
            webhook_mode,
        })
    } else {
        Err(ApiError::invalid("invalid seller registration", errors))
    }
}

pub(super) fn is_http_url(u: &str) -> bool {
    u.parse::<http::Uri>().is_ok_and(|uri| {
        matches!(uri.scheme_str(), Some("http" | "https"))
            && uri.host().is_some_and(|h| !h.is_empty())
    }) && u.len() <= 2048
}

/// The public view: never the credentials themselves.
fn view(s: &Seller) -> Value {
    json!({
        "seller_id": s.seller_id,
        "mcp_url": s.mcp_url,
        "has_credentials": s.credentials.is_some(),
        "webhook_mode": s.webhook_mode,
        "attention": s.attention,
        "created_at_ms": s.created_at_ms,
        "updated_at_ms": s.updated_at_ms,
    })
}
