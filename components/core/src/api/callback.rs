//! `PUT/GET/DELETE /api/v1/callback`: where a tenant hears about its operations.

use super::env::Env;
use crate::foundation::error::FieldError;
use crate::foundation::http::{ApiError, ApiResult, Request, json_body, json_response};
use crate::foundation::keys;
use crate::foundation::store::{Store, get_json, set_json};
use crate::foundation::transport::Transport;
use crate::records::notify::{self, Callback, new_secret, secret_key, secret_purpose};
use crate::records::tenant::Tenant;
use crate::seller::port::SellerCalls;
use http::{Method, StatusCode};
use serde_json::{Value, json};

pub async fn handle<S: Store, C: SellerCalls, T: Transport>(
    env: &Env<'_, S, C, T>,
    tenant: &Tenant,
    req: &Request,
) -> ApiResult {
    let key = keys::callback(&tenant.tenant_id);
    match *req.method() {
        Method::PUT => {
            let body = json_body(req)?;
            let mut errors = Vec::new();
            let url = super::sellers::outbound_url_field(
                &body,
                "url",
                env.config.allow_private_networks,
                &mut errors,
            );
            let given = match body.get("secret") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if secret_key(s).is_some() => Some(s.clone()),
                Some(_) => {
                    errors.push(FieldError::new(
                        "secret",
                        "a Standard Webhooks secret: `whsec_` + base64 of 24-64 bytes",
                    ));
                    None
                }
            };
            for k in body.keys() {
                if !["url", "secret"].contains(&k.as_str()) {
                    errors.push(FieldError::new(k.clone(), "unknown field"));
                }
            }
            if !errors.is_empty() {
                return Err(ApiError::invalid("invalid callback", errors));
            }
            let generated = given.is_none();
            let secret = given.unwrap_or_else(|| new_secret(env.entropy));
            let cb = Callback {
                url,
                secret: env.config.sealing.seal(
                    env.entropy,
                    &secret_purpose(&tenant.tenant_id),
                    secret.as_bytes(),
                ),
                enabled: true,
                disabled_reason: None,
            };
            set_json(env.store, &key, &cb).await?;
            let mut v = view(&cb);
            if generated {
                // Shown once, like an API key.
                v["secret"] = json!(secret);
            }
            Ok(json_response(StatusCode::OK, &v))
        }
        Method::GET => {
            let mut cb: Callback = get_json(env.store, &key)
                .await?
                .ok_or_else(|| ApiError::not_found("callback"))?;
            if notify::gone(env.store, &tenant.tenant_id, &cb).await? {
                cb.enabled = false;
                cb.disabled_reason = Some("callback answered 410 Gone".into());
            }
            Ok(json_response(StatusCode::OK, &view(&cb)))
        }
        _ => {
            env.store.delete(&key).await?;
            Ok(http::Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(Vec::new())
                .unwrap_or_default())
        }
    }
}

fn view(cb: &Callback) -> Value {
    json!({
        "url": cb.url,
        "enabled": cb.enabled,
        "disabled_reason": cb.disabled_reason,
        "signature_scheme": "standard-webhooks-v1",
        "retry_schedule_s": notify::RETRY_SCHEDULE.0,
    })
}
