//! Webhook intake: `POST /webhooks/adcp/{operation_id}` from sellers.
//!
//! Order of work, cheapest and safest first: method, content type and size (before any
//! verification), then the operation, then authentication in the mode the operation
//! registered, then the state machine. Nothing is written before authentication passes.

use crate::api::{ApiError, ApiResult, Request, Response, json_response};
use crate::clock::Clock;
use crate::journal::{self, EntryKind};
use crate::keys::valid_id;
use crate::operation::{Observation, OperationError, Source};
use crate::seal::{SealingKey, ct_eq};
use crate::status::TaskStatus;
use crate::store::Store;
use http::{Method, StatusCode, header};
use serde_json::{Value, json};

/// Largest webhook body accepted (AdCP receiver contract: 413 above 1 MB).
pub const MAX_WEBHOOK_BYTES: usize = 1024 * 1024;

pub struct IntakeConfig {
    pub public_base_url: String,
    pub sealing: SealingKey,
}

pub struct IntakeEnv<'a, S: Store> {
    pub store: &'a S,
    pub clock: &'a dyn Clock,
    pub config: &'a IntakeConfig,
}

pub async fn handle<S: Store>(env: &IntakeEnv<'_, S>, req: Request) -> Response {
    receive(env, req)
        .await
        .unwrap_or_else(ApiError::into_response)
}

async fn receive<S: Store>(env: &IntakeEnv<'_, S>, req: Request) -> ApiResult {
    if req.method() != Method::POST {
        return Err(ApiError::new(
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
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "webhooks must be `Content-Type: application/json`",
        ));
    }
    if req.body().len() > MAX_WEBHOOK_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "webhook body exceeds 1 MB",
        ));
    }
    let op_id = req
        .uri()
        .path()
        .strip_prefix("/webhooks/adcp/")
        .filter(|id| valid_id(id))
        .ok_or_else(|| ApiError::not_found("operation"))?
        .to_string();
    let loaded = journal::load(env.store, env.clock, &op_id)
        .await?
        .ok_or_else(|| ApiError::not_found("operation"))?;
    let op = loaded.operation;
    let payload: Value = serde_json::from_slice(req.body()).map_err(ApiError::bad_json)?;
    let registration = op.webhook.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "webhook_not_registered",
            "no webhook was registered for this operation",
        )
    })?;
    let token = env
        .config
        .sealing
        .open(&format!("webhook:{op_id}:token"), &registration.token)
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "sealed_secret_unreadable",
                "cannot verify this webhook",
            )
        })?;
    let echoed = payload.get("token").and_then(Value::as_str).unwrap_or("");
    if !ct_eq(echoed.as_bytes(), &token) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "webhook_token_mismatch",
            "payload token does not match the registration",
        ));
    }
    if payload
        .get("operation_id")
        .and_then(Value::as_str)
        .is_some_and(|p| p != op_id)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "operation_id_mismatch",
            "payload operation_id does not match the URL",
        ));
    }
    let status = payload
        .get("status")
        .and_then(Value::as_str)
        .and_then(TaskStatus::parse)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_payload",
                "`status` must be an AdCP task status",
            )
        })?;
    let task_id = payload
        .get("task_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    if let (Some(bound), Some(seen)) = (&op.task_id, &task_id)
        && bound != seen
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "task_id_mismatch",
            "payload task_id differs from the operation's task",
        ));
    }
    let observation = Observation {
        delivery: None,
        source: Source::Webhook,
        status,
        at_ms: None,
        task_id,
        context_id: payload
            .get("context_id")
            .and_then(Value::as_str)
            .map(str::to_string),
        message: payload
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string),
        result: payload.get("result").cloned(),
        error: payload.get("error").and_then(|e| {
            Some(OperationError {
                code: e.get("code")?.as_str()?.to_string(),
                message: e
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            })
        }),
    };
    let recorded = journal::record(
        env.store,
        env.clock,
        &op_id,
        EntryKind::Observed {
            observation: Box::new(observation),
        },
    )
    .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "received": true, "effect": recorded.effect }),
    ))
}
