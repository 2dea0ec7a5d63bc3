//! The buyer-facing HTTP API (`/api/v1`, `/healthz`), as a function from request to
//! response over the store. The operations component only converts Spin's request type.
//!
//! Every error is JSON `{"code", "message"}` with a stable `code`, and no handler changes
//! state before its input is fully validated.

mod callback;
mod decisions;
mod operations;
mod sellers;
mod tenants;

use crate::clock::{Clock, Entropy};
use crate::dispatch::SellerCalls;
use crate::error::StoreError;
use crate::journal::JournalError;
use crate::seal::{SealingKey, ct_eq};
use crate::store::Store;
use crate::tenant::{self, Tenant};
use crate::transport::Transport;
use http::{Method, StatusCode, header};
use serde_json::{Value, json};

pub type Request = http::Request<Vec<u8>>;
pub type Response = http::Response<Vec<u8>>;

/// The OpenAPI 3.1 description of this API, served at `/api/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Largest request body accepted anywhere in the API.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Configuration from Spin variables.
#[derive(Debug)]
pub struct ApiConfig {
    pub admin_api_key: String,
    /// Origin sellers reach us at, without a trailing slash.
    pub public_base_url: String,
    /// Bearer token for `POST /internal/sweep`.
    pub sweep_token: String,
    /// Bearer token for `GET /metrics`.
    pub metrics_token: String,
    pub sealing: SealingKey,
}

/// What a request handler works with.
pub struct Env<'a, S: Store, C: SellerCalls, T: Transport> {
    pub store: &'a S,
    pub clock: &'a dyn Clock,
    pub entropy: &'a dyn Entropy,
    pub config: &'a ApiConfig,
    pub log: &'a dyn crate::log::Log,
    /// How operations reach their sellers.
    pub calls: &'a C,
    /// Plain outbound HTTP (buyer notifications).
    pub transport: &'a T,
    pub sweep: &'a crate::sweep::SweepConfig,
}

/// An API failure: HTTP status, stable machine code, human message.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<Value>,
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after_secs: None,
        }
    }

    pub fn not_found(what: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn unauthorized() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid `Authorization: Bearer` credentials",
        )
    }

    pub fn bad_json(e: impl std::fmt::Display) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("request body is not valid JSON: {e}"),
        )
    }

    pub fn invalid(message: impl Into<String>, fields: Vec<FieldError>) -> Self {
        let mut e = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            message,
        );
        e.details = Some(
            json!({ "fields": fields.iter().map(|f| json!({"field": f.field, "message": f.message})).collect::<Vec<_>>() }),
        );
        e
    }

    pub fn into_response(self) -> Response {
        let mut body = json!({ "code": self.code, "message": self.message });
        if let Some(d) = self.details {
            body["details"] = d;
        }
        let mut resp = json_response(self.status, &body);
        if let Some(secs) = self.retry_after_secs
            && let Ok(v) = header::HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

/// One failing input field, for 422 answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let mut err = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            e.to_string(),
        );
        err.retry_after_secs = Some(1);
        err
    }
}

impl From<JournalError> for ApiError {
    fn from(e: JournalError) -> Self {
        match e {
            JournalError::Store(e) => e.into(),
            other => {
                let mut err =
                    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", other.to_string());
                err.retry_after_secs = Some(1);
                err
            }
        }
    }
}

pub type ApiResult<T = Response> = Result<T, ApiError>;

pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut resp = http::Response::new(body.to_string().into_bytes());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// Routes one request. Never panics on input; every failure is an [`ApiError`] response.
pub async fn handle<S: Store, C: SellerCalls, T: Transport>(
    env: &Env<'_, S, C, T>,
    req: Request,
) -> Response {
    route(env, req)
        .await
        .unwrap_or_else(ApiError::into_response)
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
                crate::metrics::render(env.store, &env.sweep.breaker, env.clock.now_ms()).await?;
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
            operations::events(env, &tenant, op_id).await
        }
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_route",
            format!("no route for {path}"),
        )),
    }
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

/// The bearer token of a request, if it carries one.
pub fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
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

/// Parses a JSON object body.
pub(super) fn json_body(req: &Request) -> ApiResult<serde_json::Map<String, Value>> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send `Content-Type: application/json`",
        ));
    }
    match serde_json::from_slice::<Value>(req.body()).map_err(ApiError::bad_json)? {
        Value::Object(map) => Ok(map),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "request body must be a JSON object",
        )),
    }
}

#[cfg(test)]
mod tests;
