//! `/api/v1/operations`: durable creation, reads, listing and history.

use super::env::Env;
use crate::foundation::clock::random_hex;
use crate::foundation::error::FieldError;
use crate::foundation::http::{ApiError, ApiResult, Request, json_body, json_response};
use crate::foundation::keys::{self, valid_id};
use crate::foundation::log;
use crate::foundation::seal::digest_hex;
use crate::foundation::store::Store;
use crate::foundation::transport::Transport;
use crate::lifecycle::create::{Filing, Stored, finish_filing, store_new};
use crate::lifecycle::dispatch;
use crate::lifecycle::next::reschedule_after_change;
use crate::model::operation::{
    NewOperation, Operation, WebhookMode, WebhookRegistration, sent_arguments,
};
use crate::model::status::OperationStatus;
use crate::model::task::{self, TaskKind};
use crate::model::webhook_path::{Signer, webhook_path};
use crate::records::journal::Look;
use crate::records::{journal, seller, tenant::Tenant};
use crate::schedule::lease::{self, Claim, Lease};
use crate::schedule::poll::{PollState, schedule_at};
use crate::seller::{guard::Guarded, port::SellerCalls};
use http::StatusCode;
use serde_json::{Map, Value, json};

/// If the creating request dies mid-call, the sweep redispatches after this long.
const REDISPATCH_SAFETY_NET_MS: u64 = 60_000;

/// Header a buyer may send to make `POST /api/v1/operations` idempotent.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

pub async fn create<S: Store, C: SellerCalls, T: Transport>(
    env: &Env<'_, S, C, T>,
    tenant: &Tenant,
    req: &Request,
) -> ApiResult {
    let idem = idempotency_header(req)?;
    let body = json_body(req)?;
    let input = parse_create(&body)?;
    let tid = &tenant.tenant_id;
    let mut seller = seller::get(env.store, tid, &input.seller_id)
        .await?
        .ok_or_else(|| {
            ApiError::invalid(
                "unknown seller",
                vec![FieldError::new(
                    "seller_id",
                    "no seller registered with this id",
                )],
            )
        })?;
    let request_digest =
        digest_hex(&serde_json::to_vec(&Value::Object(body.clone())).unwrap_or_default());
    // With an Idempotency-Key the operation id is derived from it, so concurrent retries all
    // target one journal and only the first creation entry counts.
    let operation_id = match &idem {
        Some(key) => format!(
            "op_{}",
            &digest_hex(format!("{tid}\n{key}").as_bytes())[..32]
        ),
        None => format!("op_{}", random_hex(env.entropy, 16)),
    };
    if idem.is_some() {
        match crate::lifecycle::effects::look_and_adopt(env.cx(), &operation_id).await? {
            Look::Found(existing) => {
                // Its first request may have died after storing it, before listing and
                // filing it: finish that, or nothing would ever dispatch, time out or purge it.
                let safety_net = env.clock.now_ms() + REDISPATCH_SAFETY_NET_MS;
                finish_filing(env.cx(), &env.sweep.due, &existing.operation, safety_net).await?;
                return replayed(existing.operation, tid, &request_digest);
            }
            // An earlier attempt's creation entry waits for the hole before it to be proven
            // permanent: another entry would prove nothing sooner (a retrying buyer once
            // appended one, a write and a fold's read, every half second for a minute).
            Look::Unproven => return Err(in_progress()),
            Look::Absent => {}
        }
    }
    // AdCP clients must fail closed before mutating at a seller that declares no replay
    // window: a resend could then create a second media buy.
    let caps = super::sellers::ensure_capabilities(env, &mut seller, false).await?;
    if let Some(why) = caps.refuses_mutations() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "seller_not_safe_to_mutate",
            why,
        ));
    }
    let governance = match &input.governance {
        None => None,
        Some((agent_id, plan_id)) => {
            if seller::get(env.store, tid, agent_id).await?.is_none() {
                return Err(ApiError::invalid(
                    "unknown governance agent",
                    vec![FieldError::new(
                        "governance.agent_id",
                        "no agent registered with this id",
                    )],
                ));
            }
            Some(crate::model::operation::Governance {
                agent_id: agent_id.clone(),
                plan_id: plan_id.clone(),
                caller: env.config.public_base_url.trim_end_matches('/').to_string(),
                ..Default::default()
            })
        }
    };
    let now = env.clock.now_ms();
    let idempotency_key = crate::foundation::clock::uuid_v4(env.entropy);
    let webhook = input.webhook.then(|| {
        let mode = seller.webhook_mode.unwrap_or_else(|| caps.webhook_mode());
        let signer = Signer {
            tenant: &seller.tenant_id,
            seller: &seller.seller_id,
        };
        webhook_registration(env, signer, &operation_id, mode)
    });
    let new = NewOperation {
        arguments: sent_arguments(input.arguments, &idempotency_key, &operation_id),
        operation_id: operation_id.clone(),
        tenant_id: tid.clone(),
        seller_id: input.seller_id,
        task: input.task,
        idempotency_key,
        status: OperationStatus::PendingDispatch,
        task_id: None,
        message: None,
        deadline_ms: env.sweep.deadlines.for_task_ms(input.task.name()),
        linked_from: None,
    };
    let mut op = Operation::new(new, now);
    op.webhook = webhook;
    op.request_digest = Some(request_digest.clone());
    op.governance = governance;
    // Filed for a redispatch in case this request dies before the seller answers.
    let safety_net = now + REDISPATCH_SAFETY_NET_MS;
    match store_new(
        env.cx(),
        &env.sweep.due,
        &op,
        safety_net,
        Filing::BeforeDispatch,
    )
    .await?
    {
        Stored::Created(op) => {
            log::emit(
                env.log,
                &log::Event {
                    ts_ms: now,
                    event: "operation.created",
                    operation_id: Some(&op.operation_id),
                    tenant_id: Some(tid),
                    seller_id: Some(&op.seller_id),
                    status: Some(op.status.as_str()),
                    idempotency_key_prefix: Some(log::key_prefix(&op.idempotency_key)),
                    ..Default::default()
                },
            );
            // Stored and indexed: now, and only now, the seller hears of it.
            let sent = send_new(env, op.clone(), safety_net).await?;
            // Counted after the call (at most once, like every counter): a failure here must
            // not turn a dispatched operation into an error the buyer would retry.
            let _ = crate::records::indexes::count_created(env.store, &op).await;
            Ok(json_response(
                StatusCode::CREATED,
                &view(&sent.unwrap_or(op)),
            ))
        }
        Stored::Existing(existing) => {
            let Some(existing) = existing else {
                // The first request is still writing its creation entry.
                return Err(in_progress());
            };
            replayed(existing, tid, &request_digest)
        }
    }
}

/// An identical request (same `Idempotency-Key`) is still being stored: retry shortly.
fn in_progress() -> ApiError {
    let mut e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "in_progress",
        "an identical request is being processed; retry",
    );
    e.retry_after_secs = Some(1);
    e
}

/// The answer to a repeated `Idempotency-Key`: the same operation for the same body.
fn replayed(op: Operation, tenant_id: &str, request_digest: &str) -> ApiResult {
    if op.tenant_id != tenant_id || op.request_digest.as_deref() != Some(request_digest) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_conflict",
            "this Idempotency-Key was used with a different request body",
        ));
    }
    Ok(json_response(StatusCode::OK, &view(&op)))
}

pub async fn get<S: Store, C: SellerCalls, T: Transport>(
    env: &Env<'_, S, C, T>,
    tenant: &Tenant,
    op_id: &str,
) -> ApiResult {
    let op = load_owned(env, tenant, op_id).await?;
    Ok(json_response(StatusCode::OK, &view(&op)))
}

/// Most journal entries one page of `GET /operations/{id}/events` covers.
pub const MAX_EVENTS_PAGE: usize = 200;

/// `GET /operations/{id}/events?limit=&cursor=`: the history in journal order, a page at a
/// time; `next_cursor` (the last sequence number covered) while the journal goes on.
pub async fn events<S: Store, C: SellerCalls, T: Transport>(
    env: &Env<'_, S, C, T>,
    tenant: &Tenant,
    op_id: &str,
    req: &Request,
) -> ApiResult {
    let (limit, cursor) =
        super::sellers::page_query(req.uri().query().unwrap_or(""), MAX_EVENTS_PAGE)?;
    load_owned(env, tenant, op_id).await?;
    let after = cursor.unwrap_or(0);
    let (history, more) =
        journal::history_page(env.store, env.clock, op_id, after, limit as u64).await?;
    let next = more.then(|| after + limit as u64);
    let events: Vec<Value> = history
        .iter()
        .map(|(entry, effect)| {
            let mut e = json!({ "seq": entry.seq, "recorded_at_ms": entry.recorded_at_ms, "effect": effect });
            match &entry.kind {
                journal::EntryKind::Created { .. } => e["kind"] = json!("created"),
                journal::EntryKind::Observed { observation } => {
                    e["kind"] = json!("observed");
                    e["source"] = json!(observation.source);
                    e["status"] = json!(observation.status);
                    e["task_id"] = json!(observation.task_id);
                    e["seller_at_ms"] = json!(observation.at_ms);
                    if let Some(said) = &observation.seller_status {
                        // The seller's own word when it is outside AdCP's enum.
                        e["seller_status"] = json!(said);
                    }
                }
                journal::EntryKind::DeadlineExpired => e["kind"] = json!("deadline_expired"),
                journal::EntryKind::Sealed { abandoned } => {
                    e["kind"] = json!("sealed");
                    e["abandoned"] = json!(abandoned);
                }
                journal::EntryKind::Local { change, by } => {
                    e["kind"] = json!("local");
                    e["change"] = json!(change);
                    e["by"] = json!(by);
                }
                journal::EntryKind::DispatchFailed { error, retry_at_ms, outcome_unknown, .. } => {
                    e["kind"] = json!("dispatch_failed");
                    e["error"] = json!(error);
                    e["retry_at_ms"] = json!(retry_at_ms);
                    e["outcome_unknown"] = json!(outcome_unknown);
                }

            }
            e
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "operation_id": op_id, "events": events, "next_cursor": next.map(|c| c.to_string()) }),
    ))
}

pub async fn list<S: Store, C: SellerCalls, T: Transport>(
    env: &Env<'_, S, C, T>,
    tenant: &Tenant,
    req: &Request,
) -> ApiResult {
    let q = Query::parse(req.uri().query().unwrap_or(""))?;
    let tid = &tenant.tenant_id;
    let newest = env
        .store
        .increment(&keys::tenant_ops_count(tid), 0)
        .await?
        .max(0) as u64;
    let mut n = q.cursor.unwrap_or(newest).min(newest);
    let mut out = Vec::new();
    // Bound the work of one page even when filters match little.
    let mut budget = (q.limit * 10).max(100);
    while n > 0 && out.len() < q.limit && budget > 0 {
        budget -= 1;
        if let Some(id) = env.store.get(&keys::tenant_ops_entry(tid, n)).await? {
            let id = String::from_utf8_lossy(&id).into_owned();
            if let Some(loaded) = crate::lifecycle::effects::load_and_adopt(env.cx(), &id).await? {
                let op = loaded.operation;
                if q.matches(&op) {
                    out.push(view(&op));
                }
            }
        }
        n -= 1;
    }
    let next = (n > 0).then_some(n);
    Ok(json_response(
        StatusCode::OK,
        &json!({ "operations": out, "next_cursor": next.map(|c| c.to_string()) }),
    ))
}

pub(super) async fn load_owned<S: Store, C: SellerCalls, T: Transport>(
    env: &Env<'_, S, C, T>,
    tenant: &Tenant,
    op_id: &str,
) -> ApiResult<Operation> {
    if !valid_id(op_id) {
        return Err(ApiError::not_found("operation"));
    }
    match crate::lifecycle::effects::load_and_adopt(env.cx(), op_id).await? {
        // Another tenant's operation answers exactly like a missing one.
        Some(l) if l.operation.tenant_id == tenant.tenant_id => Ok(l.operation),
        _ => Err(ApiError::not_found("operation")),
    }
}

/// A fresh webhook registration for an operation of `signer`'s: its URL, a new token, and for
/// the legacy modes a new secret (sealed; the seller receives them opened in the request).
pub(super) fn webhook_registration<S: Store, C: SellerCalls, T: Transport>(
    env: &Env<'_, S, C, T>,
    signer: Signer<'_>,
    operation_id: &str,
    mode: WebhookMode,
) -> WebhookRegistration {
    // Only RFC 9421 deliveries are checked against the seller's keys before the operation.
    let signer = (mode == WebhookMode::Rfc9421).then_some(signer);
    let token = random_hex(env.entropy, 32);
    let secret = (mode != WebhookMode::Rfc9421).then(|| {
        env.config.sealing.seal(
            env.entropy,
            &WebhookRegistration::secret_purpose(operation_id),
            random_hex(env.entropy, 32).as_bytes(),
        )
    });
    WebhookRegistration {
        url: format!(
            "{}{}",
            env.config.public_base_url.trim_end_matches('/'),
            webhook_path(operation_id, signer)
        ),
        mode,
        token: env.config.sealing.seal(
            env.entropy,
            &WebhookRegistration::token_purpose(operation_id),
            token.as_bytes(),
        ),
        secret,
    }
}

/// Dispatches a stored operation at once (after filing a safety net for the sweep, so a
/// crash during the call still leaves it to be redispatched) and returns it as it then
/// stands. Whatever happens here, the operation is safe; a failed dispatch is retried.
pub(super) async fn dispatch_now<S: Store, C: SellerCalls, T: Transport>(
    env: &Env<'_, S, C, T>,
    op_id: &str,
) -> ApiResult<Option<Operation>> {
    let safety_net = env.clock.now_ms() + REDISPATCH_SAFETY_NET_MS;
    schedule_at(
        env.store,
        env.clock,
        &env.sweep.due,
        op_id,
        PollState {
            next_at_ms: safety_net,
            ..Default::default()
        },
    )
    .await?;
    send_now(env, op_id).await
}

/// Dispatches a stored operation at once (behind the seller's breaker) and files it for
/// what it needs next. Returns the operation as it then stands.
async fn send_now<S: Store, C: SellerCalls, T: Transport>(
    env: &Env<'_, S, C, T>,
    op_id: &str,
) -> ApiResult<Option<Operation>> {
    let guarded = Guarded::new(env.store, env.clock, &env.sweep.breaker, env.calls);
    // The sweep's redispatch takes the same lease: one dispatcher at a time. When it is
    // held, its holder dispatches and the answer shows the operation as stored.
    let now = env.clock.now_ms();
    if let Claim::Held(lease) =
        lease::claim_operation(env.store, &env.sweep.lease, op_id, now).await?
    {
        let dispatched =
            dispatch::dispatch(env.cx(), &lease, &env.config.sealing, &guarded, op_id, None).await;
        lease.release(env.store).await?;
        dispatched?;
    }
    filed_after_dispatch(env, op_id).await
}

/// [`send_now`] for an operation this request just stored (`op`, filed due only at
/// `safety_net_ms`): nobody else dispatches it before the sweep finds it due then (and claims
/// its lease), so until shortly before that this request holds the lease without a counter;
/// past it, nothing is sent and the sweep dispatches. Saves the claim, its release and a
/// load before the seller call.
async fn send_new<S: Store, C: SellerCalls, T: Transport>(
    env: &Env<'_, S, C, T>,
    op: Operation,
    safety_net_ms: u64,
) -> ApiResult<Option<Operation>> {
    let guarded = Guarded::new(env.store, env.clock, &env.sweep.breaker, env.calls);
    let op_id = op.operation_id.clone();
    let lease = Lease::implicit(
        keys::lease_scope_operation(&op_id),
        safety_net_ms,
        env.sweep.lease.margin_ms,
    );
    dispatch::dispatch(
        env.cx(),
        &lease,
        &env.config.sealing,
        &guarded,
        &op_id,
        Some(op),
    )
    .await?;
    filed_after_dispatch(env, &op_id).await
}

/// Files a dispatched operation for what it needs next and returns it as it then stands.
async fn filed_after_dispatch<S: Store, C: SellerCalls, T: Transport>(
    env: &Env<'_, S, C, T>,
    op_id: &str,
) -> ApiResult<Option<Operation>> {
    reschedule_after_change(
        env.cx(),
        env.entropy,
        env.sweep,
        op_id,
        PollState::default(),
    )
    .await?;
    Ok(crate::lifecycle::effects::load_and_adopt(env.cx(), op_id)
        .await?
        .map(|l| l.operation))
}

/// The buyer's view of an operation: no secrets, and only a prefix of the AdCP
/// idempotency key (a secret while its replay window is open).
pub fn view(op: &Operation) -> Value {
    let mut arguments = op.arguments.clone();
    if let Value::Object(map) = &mut arguments {
        map.remove("idempotency_key");
    }
    json!({
        "operation_id": op.operation_id,
        "seller_id": op.seller_id,
        "task": op.task,
        "status": op.status,
        "task_id": op.task_id,
        "context_id": op.context_id,
        "arguments": arguments,
        "result": op.result,
        "error": op.error,
        "message": op.message,
        "idempotency_key_prefix": op.idempotency_key.chars().take(8).collect::<String>(),
        "webhook_mode": op.webhook.as_ref().map(|w| w.mode),
        "created_at_ms": op.created_at_ms,
        "updated_at_ms": op.updated_at_ms,
        "next_poll_at_ms": op.next_poll_at_ms,
        "deadline_at_ms": op.deadline_at_ms,
        "dispatch_attempts": op.dispatch_attempts,
        "governance": op.governance.as_ref().map(|g| json!({
            "agent_id": g.agent_id, "plan_id": g.plan_id, "approved": g.approved,
            "explanation": g.explanation, "conditions": g.conditions,
        })),
        "cancel": op.cancel,
        "linked_from": op.linked_from,
        "version": op.version,
    })
}

struct CreateInput {
    seller_id: String,
    task: TaskKind,
    arguments: Map<String, Value>,
    webhook: bool,
    /// `(agent_id, plan_id)` of the governance plan to check first.
    governance: Option<(String, String)>,
}

/// A task not in the table: named apart from field errors, since no argument can fix it.
fn unsupported_task(task: &str) -> ApiError {
    let mut shown: String = task.chars().take(64).collect();
    if shown.len() < task.len() {
        shown.push('…');
    }
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "unsupported_task",
        format!(
            "`{shown}` is not a task operations run; one of {}",
            TaskKind::names().join(", ")
        ),
    )
}

fn parse_create(body: &Map<String, Value>) -> ApiResult<CreateInput> {
    let mut errors = Vec::new();
    let seller_id = match body.get("seller_id").and_then(Value::as_str) {
        Some(s) if valid_id(s) => s.to_string(),
        _ => {
            errors.push(FieldError::new(
                "seller_id",
                "required: 1-128 characters of [A-Za-z0-9_.-]",
            ));
            String::new()
        }
    };
    let task = match body.get("task").and_then(Value::as_str) {
        Some(t) => match TaskKind::parse(t) {
            Some(k) => Some(k),
            None => return Err(unsupported_task(t)),
        },
        None => {
            errors.push(FieldError::new("task", "required"));
            None
        }
    };
    let arguments = match body.get("arguments") {
        Some(Value::Object(m)) => m.clone(),
        _ => {
            errors.push(FieldError::new(
                "arguments",
                "required: a JSON object of the task's arguments",
            ));
            Map::new()
        }
    };
    let webhook = match body.get("webhook") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            errors.push(FieldError::new("webhook", "must be true or false"));
            true
        }
    };
    let governance = match body.get("governance") {
        None | Some(Value::Null) => None,
        Some(Value::Object(g)) => {
            let agent = g
                .get("agent_id")
                .and_then(Value::as_str)
                .filter(|a| valid_id(a));
            let plan = g
                .get("plan_id")
                .and_then(Value::as_str)
                .filter(|p| !p.is_empty() && p.len() <= 256);
            if agent.is_none() {
                errors.push(FieldError::new(
                    "governance.agent_id",
                    "required: the id of a registered governance agent",
                ));
            }
            if plan.is_none() {
                errors.push(FieldError::new(
                    "governance.plan_id",
                    "required: 1-256 characters",
                ));
            }
            for key in g.keys() {
                if !["agent_id", "plan_id"].contains(&key.as_str()) {
                    errors.push(FieldError::new(
                        format!("governance.{key}"),
                        "unknown field",
                    ));
                }
            }
            agent.zip(plan).map(|(a, p)| (a.to_string(), p.to_string()))
        }
        Some(_) => {
            errors.push(FieldError::new(
                "governance",
                "an object {agent_id, plan_id}",
            ));
            None
        }
    };
    for key in body.keys() {
        if !["seller_id", "task", "arguments", "webhook", "governance"].contains(&key.as_str()) {
            errors.push(FieldError::new(key.clone(), "unknown field"));
        }
    }
    if let Some(task) = task {
        errors.extend(task::validate_arguments(task, &arguments));
    }
    match task {
        Some(task) if errors.is_empty() => Ok(CreateInput {
            seller_id,
            task,
            arguments,
            webhook,
            governance,
        }),
        _ => Err(ApiError::invalid("invalid operation request", errors)),
    }
}

fn idempotency_header(req: &Request) -> ApiResult<Option<String>> {
    match req.headers().get(IDEMPOTENCY_KEY_HEADER) {
        None => Ok(None),
        Some(v) => match v.to_str() {
            Ok(k) if !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()) => {
                Ok(Some(k.to_string()))
            }
            _ => Err(ApiError::invalid(
                "invalid Idempotency-Key",
                vec![FieldError::new(
                    "Idempotency-Key",
                    "1-255 visible ASCII characters",
                )],
            )),
        },
    }
}

struct Query {
    status: Option<OperationStatus>,
    task: Option<String>,
    seller_id: Option<String>,
    limit: usize,
    cursor: Option<u64>,
}

impl Query {
    fn parse(q: &str) -> ApiResult<Query> {
        let mut out = Query {
            status: None,
            task: None,
            seller_id: None,
            limit: 50,
            cursor: None,
        };
        let mut errors = Vec::new();
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "status" => match OperationStatus::parse(v) {
                    Some(s) => out.status = Some(s),
                    None => errors.push(FieldError::new("status", "unknown status")),
                },
                "task" => out.task = Some(v.to_string()),
                "seller_id" => out.seller_id = Some(v.to_string()),
                "limit" => match v.parse::<usize>() {
                    Ok(l) if (1..=200).contains(&l) => out.limit = l,
                    _ => errors.push(FieldError::new("limit", "an integer from 1 to 200")),
                },
                "cursor" => match v.parse::<u64>() {
                    Ok(c) => out.cursor = Some(c),
                    Err(_) => {
                        errors.push(FieldError::new("cursor", "a cursor from a previous page"))
                    }
                },
                other => errors.push(FieldError::new(other, "unknown query parameter")),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(ApiError::invalid("invalid query", errors))
        }
    }

    fn matches(&self, op: &Operation) -> bool {
        self.status.is_none_or(|s| s == op.status)
            && self.task.as_deref().is_none_or(|t| t == op.task.name())
            && self.seller_id.as_deref().is_none_or(|s| s == op.seller_id)
    }
}
