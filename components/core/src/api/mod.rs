//! The buyer-facing HTTP API (`/api/v1`, `/healthz`, `/readyz`) and the operations console
//! over it (`/console/`), as a function from request to response over the store. The
//! operations component only converts Spin's request type.
//!
//! Every error is JSON `{"code", "message"}` with a stable `code`, and no handler changes
//! state before its input is fully validated.

mod callback;
mod capability_subscription;
mod console;
mod decisions;
mod env;
mod operations;
mod sellers;
mod summary;
mod tenants;

pub use env::{ApiConfig, Env};

pub use crate::foundation::error::FieldError;
pub use crate::foundation::http::{ApiError, ApiResult, Request, Response, bearer, json_response};
use crate::foundation::keys;
use crate::foundation::log;
use crate::foundation::seal::ct_eq;
use crate::foundation::store::{Store, get_json};
use crate::foundation::transport::Transport;
use crate::records::format;
use crate::records::tenant::{self, Tenant};
use crate::records::tick_report::TickReport;
use crate::seller::port::SellerCalls;
use http::{Method, StatusCode, header};
use serde_json::json;

/// The OpenAPI 3.1 description of this API, served at `/api/v1/openapi.json`.
pub const OPENAPI: &str = include_str!(concat!(env!("OUT_DIR"), "/openapi.min.json"));

/// Largest request body accepted anywhere in the API.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Routes one request. Never panics on input; every failure is an [`ApiError`] response.
pub async fn handle<S: Store, C: SellerCalls, T: Transport>(
    env: &Env<'_, S, C, T>,
    req: Request,
) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    route(env, req).await.unwrap_or_else(|e| {
        if let Some(internal) = &e.internal {
            log::emit(
                env.log,
                &log::Event {
                    ts_ms: env.clock.now_ms(),
                    event: "api.error",
                    outcome: Some(e.code),
                    detail: Some(log::capped(&format!("{method} {path}: {internal}"))),
                    ..Default::default()
                },
            );
        }
        e.into_response()
    })
}

async fn route<S: Store, C: SellerCalls, T: Transport>(
    env: &Env<'_, S, C, T>,
    req: Request,
) -> ApiResult {
    if req.body().len() > MAX_BODY_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body exceeds {MAX_BODY_BYTES} bytes"),
        ));
    }
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let method = req.method().clone();
    match segments.as_slice() {
        ["healthz"] => only(&method, &[Method::GET])
            .map(|_| json_response(StatusCode::OK, &json!({"status": "ok"}))),
        ["readyz"] => {
            only(&method, &[Method::GET])?;
            Ok(readiness(env).await)
        }
        ["internal", "sweep"] => {
            only(&method, &[Method::POST])?;
            require_token(&req, &env.config.sweep_token)?;
            let now = env.clock.now_ms();
            let sweep_env = crate::sweep::SweepEnv {
                store: env.store,
                clock: env.clock,
                entropy: env.entropy,
                log: env.log,
                sealing: &env.config.sealing,
                calls: env.calls,
                transport: env.transport,
                config: env.sweep,
            };
            let report = crate::sweep::tick(&sweep_env, "http", now).await?;
            Ok(json_response(
                StatusCode::OK,
                &serde_json::to_value(report).unwrap_or_default(),
            ))
        }
        ["metrics"] => {
            only(&method, &[Method::GET])?;
            require_token(&req, &env.config.metrics_token)?;
            let text =
                crate::records::metrics::render(env.store, &env.sweep.breaker, env.clock.now_ms())
                    .await?;
            let mut resp = http::Response::new(text.into_bytes());
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            Ok(resp)
        }
        ["api", "v1", "openapi.json"] => {
            only(&method, &[Method::GET])?;
            let mut resp = http::Response::new(OPENAPI.as_bytes().to_vec());
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            Ok(resp)
        }
        ["api", "v1", "tenants"] => {
            only(&method, &[Method::POST])?;
            require_admin(env, &req)?;
            tenants::create(env, &req).await
        }
        ["api", "v1", "callback"] => {
            only(&method, &[Method::PUT, Method::GET, Method::DELETE])?;
            let tenant = require_tenant(env, &req).await?;
            callback::handle(env, &tenant, &req).await
        }
        ["console"] => {
            only(&method, &[Method::GET])?;
            console::asset("")
        }
        ["console", file] => {
            only(&method, &[Method::GET])?;
            console::asset(file)
        }
        ["api", "v1", "sellers"] => {
            only(&method, &[Method::GET])?;
            let tenant = require_tenant(env, &req).await?;
            sellers::list(env, &tenant, &req).await
        }
        ["api", "v1", "summary"] => {
            only(&method, &[Method::GET])?;
            let tenant = require_tenant(env, &req).await?;
            summary::get(env, &tenant).await
        }
        ["api", "v1", "sellers", seller_id] => {
            only(&method, &[Method::PUT, Method::GET, Method::DELETE])?;
            let tenant = require_tenant(env, &req).await?;
            sellers::handle(env, &tenant, seller_id, &req).await
        }
        ["api", "v1", "sellers", seller_id, "capabilities"] => {
            only(&method, &[Method::POST])?;
            let tenant = require_tenant(env, &req).await?;
            sellers::refresh_capabilities(env, &tenant, seller_id).await
        }
        ["api", "v1", "operations"] => {
            only(&method, &[Method::POST, Method::GET])?;
            let tenant = require_tenant(env, &req).await?;
            if method == Method::POST {
                operations::create(env, &tenant, &req).await
            } else {
                operations::list(env, &tenant, &req).await
            }
        }
        ["api", "v1", "operations", op_id] => {
            only(&method, &[Method::GET])?;
            let tenant = require_tenant(env, &req).await?;
            operations::get(env, &tenant, op_id).await
        }
        ["api", "v1", "operations", op_id, "cancel"] => {
            only(&method, &[Method::POST])?;
            let tenant = require_tenant(env, &req).await?;
            decisions::cancel(env, &tenant, op_id, &req).await
        }
        ["api", "v1", "operations", op_id, "decision"] => {
            only(&method, &[Method::POST])?;
            let tenant = require_tenant(env, &req).await?;
            decisions::decision(env, &tenant, op_id, &req).await
        }
        ["api", "v1", "operations", op_id, "events"] => {
            only(&method, &[Method::GET])?;
            let tenant = require_tenant(env, &req).await?;
            operations::events(env, &tenant, op_id, &req).await
        }
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_route",
            format!("no route for {path}"),
        )),
    }
}

/// Readiness: the store answers reads (two calls) in a format this release knows, and how
/// long ago the sweep last finished, so probes and a CronJob can tell a replica that cannot
/// reach its store (or runs behind the store's release) from one whose sweep stopped. Only
/// the store decides the status: a stale sweep does not stop the API.
async fn readiness<S: Store, C: SellerCalls, T: Transport>(env: &Env<'_, S, C, T>) -> Response {
    let last: Result<Option<TickReport>, _> = get_json(env.store, keys::SWEEP_LAST).await;
    let (Ok(last), Ok(stored_format)) = (last, format::read(env.store).await) else {
        let body = json!({"status": "unavailable", "store": "unavailable"});
        return json_response(StatusCode::SERVICE_UNAVAILABLE, &body);
    };
    if stored_format > format::CURRENT {
        let body = json!({"status": "unavailable", "store": "newer_format",
                          "store_format": stored_format, "known_format": format::CURRENT});
        return json_response(StatusCode::SERVICE_UNAVAILABLE, &body);
    }
    let age_s = last
        .filter(|l| l.finished_at_ms > 0)
        .map(|l| env.clock.now_ms().saturating_sub(l.finished_at_ms) / 1000);
    let body = json!({"status": "ready", "store": "ok", "sweep_last_finished_age_s": age_s});
    json_response(StatusCode::OK, &body)
}

fn only(method: &Method, allowed: &[Method]) -> ApiResult<()> {
    if allowed.contains(method) {
        Ok(())
    } else {
        let allowed: Vec<&str> = allowed.iter().map(Method::as_str).collect();
        Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} not allowed here; use {}", allowed.join(", ")),
        ))
    }
}

fn require_admin<S: Store, C: SellerCalls, T: Transport>(
    env: &Env<'_, S, C, T>,
    req: &Request,
) -> ApiResult<()> {
    require_token(req, &env.config.admin_api_key)
}

/// Checks a configured shared token in constant time; an unset token authorizes nobody.
fn require_token(req: &Request, expected: &str) -> ApiResult<()> {
    match bearer(req) {
        Some(t) if !expected.is_empty() && ct_eq(t.as_bytes(), expected.as_bytes()) => Ok(()),
        _ => Err(ApiError::unauthorized()),
    }
}

async fn require_tenant<S: Store, C: SellerCalls, T: Transport>(
    env: &Env<'_, S, C, T>,
    req: &Request,
) -> ApiResult<Tenant> {
    let token = bearer(req).ok_or_else(ApiError::unauthorized)?;
    tenant::authenticate(env.store, token)
        .await?
        .ok_or_else(ApiError::unauthorized)
}

#[cfg(test)]
mod tests;
