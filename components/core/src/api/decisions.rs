//! `POST /api/v1/operations/{id}/cancel` and `POST /api/v1/operations/{id}/decision`: what a
//! buyer (or a human reviewer) decides about an operation.
//!
//! A cancel never leaves a media buy silently live at the seller: a buy that exists is
//! canceled with `update_media_buy` (`canceled: true`) as a linked operation; a task not yet
//! resolved is marked `canceled_locally` and the sweep keeps reconciling it, canceling its
//! buy if the seller completes it anyway.

use super::env::Env;
use super::operations::{dispatch_now, load_owned, view};
use crate::foundation::error::FieldError;
use crate::foundation::http::{ApiError, ApiResult, Request, bearer, json_body, json_response};
use crate::foundation::seal::digest_hex;
use crate::foundation::store::Store;
use crate::foundation::transport::Transport;
use crate::lifecycle::{effects, linked, next::reschedule_after_change};
use crate::model::operation::{LocalChange, Operation};
use crate::model::status::{OperationStatus, TaskStatus};
use crate::model::task::{self};
use crate::records::journal::EntryKind;
use crate::records::tenant::{Tenant, key_label};
use crate::schedule::poll::PollState;
use crate::seller::port::SellerCalls;
use http::StatusCode;
use serde_json::{Map, Value, json};

const MAX_REASON: usize = 500;

pub async fn cancel<S: Store, C: SellerCalls, T: Transport>(
    env: &Env<'_, S, C, T>,
    tenant: &Tenant,
    op_id: &str,
    req: &Request,
) -> ApiResult {
    let body = optional_body(req)?;
    let reason = reason(&body, &["reason"])?;
    let by = acting_key(req);
    let op = load_owned(env, tenant, op_id).await?;
    if op.status.is_authoritative_terminal() {
        if linked::media_buy_id(&op).is_none() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_cancellable",
                format!("the operation already ended: {}", op.status),
            ));
        }
        // The buy exists: cancel it at the seller through a linked operation.
        let op = record(
            env,
            op,
            LocalChange::CancelRequested {
                reason,
                superseded_by: None,
            },
            by,
        )
        .await?;
        let child = linked::cancel_follow_up(env.cx(), env.entropy, env.sweep, &op)
            .await?
            .ok_or_else(|| ApiError::not_found("operation"))?;
        let child = if child.status == OperationStatus::PendingDispatch {
            dispatch_now(env, &child.operation_id)
                .await?
                .unwrap_or(child)
        } else {
            child
        };
        let op = reload(env, op).await?;
        return Ok(json_response(
            StatusCode::ACCEPTED,
            &json!({ "operation": view(&op), "cancel_operation": view(&child) }),
        ));
    }
    let op = record(
        env,
        op,
        LocalChange::CancelRequested {
            reason,
            superseded_by: None,
        },
        by,
    )
    .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "operation": view(&op) }),
    ))
}

pub async fn decision<S: Store, C: SellerCalls, T: Transport>(
    env: &Env<'_, S, C, T>,
    tenant: &Tenant,
    op_id: &str,
    req: &Request,
) -> ApiResult {
    let body = json_body(req)?;
    let reason = reason(&body, &["action", "reason", "arguments"])?;
    let by = acting_key(req);
    let action = body.get("action").and_then(Value::as_str).unwrap_or("");
    let op = load_owned(env, tenant, op_id).await?;
    let held = op.status == OperationStatus::AwaitingDecision;
    let input_required = op.status == OperationStatus::Seller(TaskStatus::InputRequired);
    let pending = |allowed: &str| {
        ApiError::new(
            StatusCode::CONFLICT,
            "no_decision_pending",
            format!(
                "`{action}` needs the operation to be {allowed}; it is {}",
                op.status
            ),
        )
    };
    match action {
        "approve" => {
            if !held {
                return Err(pending("awaiting_decision"));
            }
            let op = record(env, op, LocalChange::Approved, by).await?;
            let op = dispatch_now(env, &op.operation_id).await?.unwrap_or(op);
            Ok(json_response(
                StatusCode::OK,
                &json!({ "operation": view(&op) }),
            ))
        }
        "reject" => {
            if !(held || input_required) {
                return Err(pending("awaiting_decision or input-required"));
            }
            let op = record(
                env,
                op,
                LocalChange::CancelRequested {
                    reason,
                    superseded_by: None,
                },
                by,
            )
            .await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "operation": view(&op) }),
            ))
        }
        "replan" => {
            if !(held || input_required) {
                return Err(pending("awaiting_decision or input-required"));
            }
            replan(env, op, &body, reason, by).await
        }
        _ => Err(ApiError::invalid(
            "invalid decision",
            vec![FieldError::new(
                "action",
                "required: one of `approve`, `reject`, `replan`",
            )],
        )),
    }
}

/// A new operation with the amended arguments and a fresh AdCP key, replacing `op`.
async fn replan<S: Store, C: SellerCalls, T: Transport>(
    env: &Env<'_, S, C, T>,
    op: Operation,
    body: &Map<String, Value>,
    reason: Option<String>,
    by: Option<String>,
) -> ApiResult {
    let Some(Value::Object(amend)) = body.get("arguments") else {
        return Err(ApiError::invalid(
            "invalid decision",
            vec![FieldError::new(
                "arguments",
                "required for `replan`: the arguments to change",
            )],
        ));
    };
    let task = op.task;
    let mut args: Map<String, Value> = op.arguments.as_object().cloned().unwrap_or_default();
    args.remove("idempotency_key");
    if let Some(Value::Object(ctx)) = args.get_mut("context") {
        ctx.remove("operation_id");
    }
    for (k, v) in amend {
        if v.is_null() {
            args.remove(k);
        } else {
            args.insert(k.clone(), v.clone());
        }
    }
    let errors = task::validate_arguments(task, &args);
    if !errors.is_empty() {
        return Err(ApiError::invalid("invalid re-plan arguments", errors));
    }
    // The same re-plan sent twice makes one operation.
    let digest = digest_hex(&serde_json::to_vec(&Value::Object(amend.clone())).unwrap_or_default());
    let id = linked::derived_id(&op.operation_id, &format!("replan:{digest}"));
    let mut child = linked::new_operation(
        &op,
        id,
        task,
        args,
        &env.sweep.deadlines,
        env.entropy,
        env.clock.now_ms(),
    );
    // Announced the way the original was: a re-planned buy is as urgent as the first.
    child.webhook = op.webhook.as_ref().map(|w| {
        let signer = crate::model::webhook_path::Signer {
            tenant: &child.tenant_id,
            seller: &child.seller_id,
        };
        super::operations::webhook_registration(env, signer, &child.operation_id, w.mode)
    });
    child.governance = op
        .governance
        .clone()
        .map(|g| crate::model::operation::Governance {
            approved: false,
            governance_context: None,
            explanation: None,
            conditions: None,
            ..g
        });
    let child = linked::store_derived(env.cx(), &env.sweep.due, &child).await?;
    let child_id = child.operation_id.clone();
    let op = record(
        env,
        op,
        LocalChange::CancelRequested {
            reason: reason.or_else(|| Some("re-planned".into())),
            superseded_by: Some(child_id.clone()),
        },
        by,
    )
    .await?;
    let child = if child.status == OperationStatus::PendingDispatch {
        dispatch_now(env, &child_id).await?.unwrap_or(child)
    } else {
        child
    };
    Ok(json_response(
        StatusCode::CREATED,
        &json!({ "operation": view(&child), "replaces": view(&op) }),
    ))
}

/// Records a local change decided by `by`, runs its effects and files the operation for the
/// sweep.
async fn record<S: Store, C: SellerCalls, T: Transport>(
    env: &Env<'_, S, C, T>,
    op: Operation,
    change: LocalChange,
    by: Option<String>,
) -> ApiResult<Operation> {
    let op_id = op.operation_id.clone();
    effects::record(
        env.cx(),
        "api",
        &op_id,
        Some(op.clone()),
        EntryKind::Local { change, by },
    )
    .await?;
    reschedule_after_change(
        env.cx(),
        env.entropy,
        env.sweep,
        &op_id,
        PollState::default(),
    )
    .await?;
    reload(env, op).await
}

async fn reload<S: Store, C: SellerCalls, T: Transport>(
    env: &Env<'_, S, C, T>,
    op: Operation,
) -> ApiResult<Operation> {
    Ok(effects::load_and_adopt(env.cx(), &op.operation_id)
        .await?
        .map_or(op, |l| l.operation))
}

/// The label of the API key that made the request (already authenticated by the router).
fn acting_key(req: &Request) -> Option<String> {
    bearer(req).map(key_label)
}

/// An empty body is an empty object.
fn optional_body(req: &Request) -> ApiResult<Map<String, Value>> {
    if req.body().is_empty() {
        Ok(Map::new())
    } else {
        json_body(req)
    }
}

/// The optional `reason`; refuses fields other than `allowed`.
fn reason(body: &Map<String, Value>, allowed: &[&str]) -> ApiResult<Option<String>> {
    let mut errors = Vec::new();
    for k in body.keys() {
        if !allowed.contains(&k.as_str()) {
            errors.push(FieldError::new(k.clone(), "unknown field"));
        }
    }
    let reason = match body.get("reason") {
        None | Some(Value::Null) => None,
        Some(Value::String(r)) if !r.is_empty() && r.len() <= MAX_REASON => Some(r.clone()),
        Some(_) => {
            errors.push(FieldError::new(
                "reason",
                format!("a string of 1-{MAX_REASON} characters"),
            ));
            None
        }
    };
    if errors.is_empty() {
        Ok(reason)
    } else {
        Err(ApiError::invalid("invalid request", errors))
    }
}
