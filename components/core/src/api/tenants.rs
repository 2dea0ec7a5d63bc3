//! `POST /api/v1/tenants` (admin only).

use super::env::Env;
use crate::foundation::error::FieldError;
use crate::foundation::http::{ApiError, ApiResult, Request, json_body, json_response};
use crate::foundation::store::Store;
use crate::foundation::transport::Transport;
use crate::records::tenant;
use crate::seller::port::SellerCalls;
use http::StatusCode;
use serde_json::json;

pub async fn create<S: Store, C: SellerCalls, T: Transport>(
    env: &Env<'_, S, C, T>,
    req: &Request,
) -> ApiResult {
    let body = json_body(req)?;
    let name = match body.get("name") {
        Some(serde_json::Value::String(n)) if !n.trim().is_empty() && n.len() <= 200 => {
            n.trim().to_string()
        }
        _ => {
            return Err(ApiError::invalid(
                "invalid tenant",
                vec![FieldError::new(
                    "name",
                    "required: a non-empty string of at most 200 characters",
                )],
            ));
        }
    };
    let (tenant, api_key) = tenant::create(env.store, env.clock, env.entropy, &name).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({
            "tenant_id": tenant.tenant_id,
            "name": tenant.name,
            "created_at_ms": tenant.created_at_ms,
            "api_key": api_key,
        }),
    ))
}
