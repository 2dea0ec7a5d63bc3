//! A stateful AdCP seller on loopback for tests with many concurrent operations and with
//! crashes: unlike [`crate::fake_seller`], which answers from one scripted queue, it keeps a
//! task per media buy, so each operation's answers depend only on that operation.
//!
//! - `create_media_buy` answers `submitted` with a fresh `task_id`; the same
//!   `idempotency_key` replays the same task, as AdCP's idempotency requires, so the number of
//!   media buys per `context.operation_id` shows whether a resend created a second one.
//! - `get_task_status` answers the task's current status (set by the test), with the
//!   `result` or `error` of a terminal status.
//! - `get_media_buys` lists the completed buys carrying a `context.operation_id`.
//! - A call can be held ([`TaskSeller::hold`]) until the test releases it, so a host can be
//!   killed while the call is in flight.
//! - [`TaskSeller::webhook`] builds the task's HMAC webhook for a status, from the
//!   `push_notification_config` the orchestrator sent.
//! - [`Deviations`] make it one of the imperfect sellers that exist (strict arguments, a
//!   `get_task` poll tool with its own statuses, webhooks without our ids, HMAC over another
//!   serialization, Server-Sent Events answers, `list_tasks` in its own words).

use crate::fake_seller::{DEFAULT_TOOLS, default_capabilities};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use orchestrator_core::auth::hmac_signature;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};

/// One media buy the seller accepted.
#[derive(Debug, Clone)]
pub struct Task {
    pub task_id: String,
    pub operation_id: String,
    /// The arguments of the first `create_media_buy` that created it.
    pub arguments: Value,
    /// The AdCP task status `get_task_status` answers now.
    pub status: String,
}

impl Task {
    /// What `get_task_status` answers (flat MCP shape).
    fn status_payload(&self) -> Value {
        // When the task reached its status: the times the storm's webhooks carry.
        let updated_at = match self.status.as_str() {
            "submitted" => "2026-11-22T10:00:00Z",
            "working" => "2026-11-22T10:00:01Z",
            _ => "2026-11-22T10:00:02Z",
        };
        let mut p = json!({
            "task_id": self.task_id, "task_type": "create_media_buy", "status": self.status,
            "created_at": "2026-11-22T10:00:00Z", "updated_at": updated_at,
        });
        if let Some(r) = result_of(&self.task_id, &self.status) {
            p["result"] = r;
        }
        if let Some(e) = error_of(&self.status) {
            p["error"] = e;
        }
        p
    }
}

/// The result a completed task carries: the media buy.
pub fn result_of(task_id: &str, status: &str) -> Option<Value> {
    (status == "completed").then(
        || json!({"media_buy_id": format!("mb_{task_id}"), "status": "active", "packages": []}),
    )
}

/// The error a failed or rejected task carries.
pub fn error_of(status: &str) -> Option<Value> {
    match status {
        "failed" => {
            Some(json!({"code": "SERVICE_UNAVAILABLE", "message": "inventory system down"}))
        }
        "rejected" => Some(json!({"code": "POLICY_VIOLATION", "message": "brand not allowed"})),
        _ => None,
    }
}

/// Where a held call stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldAt {
    /// Before the seller acts on it: a dropped hold means the seller never saw the request.
    Before,
    /// After the seller acted, before it answers: a dropped hold means the answer was lost.
    After,
}

struct PendingHold {
    tool: String,
    at: HoldAt,
    reached: oneshot::Sender<Value>,
    release: oneshot::Receiver<()>,
}

/// A held call, from the test's side. Dropping it without [`Hold::release`] makes the held
/// request answer HTTP 503 (if anyone still listens).
pub struct Hold {
    reached: oneshot::Receiver<Value>,
    release: oneshot::Sender<()>,
}

impl Hold {
    /// Waits until the held call arrives and returns its arguments.
    pub async fn reached(&mut self) -> Value {
        (&mut self.reached).await.expect("the seller keeps holds")
    }

    /// Lets the held call go on.
    pub fn release(self) {
        let _ = self.release.send(());
    }
}

/// What a seller gets wrong, one switch each (none: a conformant AdCP 3.1 seller). Each was
/// seen in one real seller, an AdCP 3.1.1 sales agent on the Python SDK 6.6.0.
#[derive(Debug, Clone, Copy, Default)]
pub struct Deviations {
    /// Refuses any argument it does not know, AdCP's version fields included, on every tool.
    pub strict_arguments: bool,
    /// Polls by `get_task` (declaring only `task_id`) instead of `get_task_status`, and
    /// answers statuses outside AdCP's enum: `requires_approval` for a submitted task,
    /// `approved` (with the buy) for a completed one.
    pub get_task: bool,
    /// Its webhooks echo `context`, neither `operation_id` nor `token`.
    pub webhook_without_ids: bool,
    /// Signs the legacy HMAC over the compact form of its webhook but sends spaced JSON.
    pub hmac_over_compact: bool,
    /// Answers every JSON-RPC request as a Server-Sent Events stream (Streamable HTTP lets a
    /// server choose), not `application/json`.
    pub sse: bool,
    /// Lists its tasks in `list_tasks`, in its own status words, whatever filter it is sent.
    pub list_tasks: bool,
}

#[derive(Default)]
struct State {
    deviations: Deviations,
    tasks: Vec<Task>,
    by_key: HashMap<String, usize>,
    by_id: HashMap<String, usize>,
    calls: Vec<(String, Value)>,
    holds: Vec<PendingHold>,
    sessions: u64,
}

impl State {
    fn take_hold(&mut self, tool: &str, at: HoldAt) -> Option<PendingHold> {
        let i = self
            .holds
            .iter()
            .position(|h| h.tool == tool && h.at == at)?;
        Some(self.holds.remove(i))
    }
}

/// A running task seller.
#[derive(Clone)]
pub struct TaskSeller {
    pub url: String,
    state: Arc<Mutex<State>>,
    /// Woken on every `tools/call` received.
    arrived: Arc<Notify>,
}

/// A webhook the seller sends for one status of one task. Its bytes are fixed, so a resend
/// is byte-identical (same `idempotency_key`); only the HMAC timestamp is fresh.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// The path of the URL the orchestrator registered (`/webhooks/adcp/{op}`).
    pub path: String,
    pub secret: String,
    pub idempotency_key: String,
    pub body: String,
    /// The bytes the HMAC covers: the body, unless the seller signs another serialization.
    pub signed: String,
}

impl Webhook {
    /// Signs the body now (legacy HMAC) and posts it to `base`.
    pub async fn send(&self, http: &reqwest::Client, base: &str) -> Delivered {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        self.send_at(http, base, now)
            .await
            .expect("the host answers")
    }

    /// Signs the body with HMAC timestamp `unix_s` (a seller whose clock agrees with a host
    /// running ahead of the real time) and posts it; `Err` when no answer came (a host killed
    /// mid-request).
    pub async fn send_at(
        &self,
        http: &reqwest::Client,
        base: &str,
        unix_s: u64,
    ) -> Result<Delivered, reqwest::Error> {
        let ts = unix_s.to_string();
        let sig = hmac_signature::sign(self.secret.as_bytes(), &ts, self.signed.as_bytes());
        let resp = http
            .post(format!("{base}{}", self.path))
            .header("content-type", "application/json")
            .header("x-adcp-timestamp", ts)
            .header("x-adcp-signature", sig)
            .body(self.body.clone())
            .send()
            .await?;
        let status = resp.status().as_u16();
        let retry_after_s = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let text = resp.text().await.unwrap_or_default();
        Ok(Delivered {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
            retry_after_s,
        })
    }
}

/// The orchestrator's answer to a webhook.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub status: u16,
    pub body: Value,
    pub retry_after_s: Option<u64>,
}

impl TaskSeller {
    pub async fn start() -> TaskSeller {
        TaskSeller::start_with(Deviations::default()).await
    }

    /// A seller with the given deviations from the spec.
    pub async fn start_with(deviations: Deviations) -> TaskSeller {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/mcp", listener.local_addr().expect("addr"));
        let state = Arc::new(Mutex::new(State {
            deviations,
            ..State::default()
        }));
        let arrived = Arc::new(Notify::new());
        let (s, a) = (state.clone(), arrived.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (s, a) = (s.clone(), a.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(s.clone(), a.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        TaskSeller {
            url,
            state,
            arrived,
        }
    }

    /// Waits until `tool` was called at least `n` times; panics after `within`.
    pub async fn wait_for_calls(&self, tool: &str, n: usize, within: std::time::Duration) {
        let reached = tokio::time::timeout(within, async {
            loop {
                let notified = self.arrived.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.calls_of(tool).len() >= n {
                    return;
                }
                notified.await;
            }
        })
        .await;
        assert!(
            reached.is_ok(),
            "{tool} not called {n} times within {within:?}"
        );
    }

    /// Takes over a task another seller process accepted (a store fixture's buys), with the
    /// status it has now; its `idempotency_key` replays it as the original did.
    pub fn seed(&self, task: Task) {
        let mut st = self.state.lock().expect("lock");
        let i = st.tasks.len();
        let key = task.arguments["idempotency_key"]
            .as_str()
            .unwrap_or("")
            .to_string();
        st.by_key.insert(key, i);
        st.by_id.insert(task.task_id.clone(), i);
        st.tasks.push(task);
    }

    /// Holds the next `tools/call` of `tool` at `at`.
    pub fn hold(&self, tool: &str, at: HoldAt) -> Hold {
        let (reached_tx, reached_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        self.state.lock().expect("lock").holds.push(PendingHold {
            tool: tool.into(),
            at,
            reached: reached_tx,
            release: release_rx,
        });
        Hold {
            reached: reached_rx,
            release: release_tx,
        }
    }

    /// Every `tools/call` received (held or not): tool name and arguments.
    pub fn calls(&self) -> Vec<(String, Value)> {
        self.state.lock().expect("lock").calls.clone()
    }

    /// The calls of one tool.
    pub fn calls_of(&self, tool: &str) -> Vec<Value> {
        self.calls()
            .into_iter()
            .filter(|(t, _)| t == tool)
            .map(|(_, a)| a)
            .collect()
    }

    /// The media buys created for an operation (by the `context.operation_id` sent).
    pub fn tasks_for(&self, operation_id: &str) -> Vec<Task> {
        self.state
            .lock()
            .expect("lock")
            .tasks
            .iter()
            .filter(|t| t.operation_id == operation_id)
            .cloned()
            .collect()
    }

    pub fn task(&self, task_id: &str) -> Option<Task> {
        let st = self.state.lock().expect("lock");
        st.by_id.get(task_id).map(|i| st.tasks[*i].clone())
    }

    /// Moves a task to `status`: what polls answer from now on.
    pub fn set_status(&self, task_id: &str, status: &str) {
        let mut st = self.state.lock().expect("lock");
        let i = *st.by_id.get(task_id).expect("known task");
        st.tasks[i].status = status.into();
    }

    /// The webhook announcing `status` for a task, timestamped `timestamp` (RFC 3339), sent
    /// to the URL and with the token and HMAC secret of the task's `push_notification_config`.
    pub fn webhook(&self, task_id: &str, status: &str, timestamp: &str) -> Webhook {
        let task = self.task(task_id).expect("known task");
        let pnc = &task.arguments["push_notification_config"];
        let url = pnc["url"].as_str().expect("webhook url");
        let path = url[url.find("/webhooks/").expect("webhook path")..].to_string();
        let idempotency_key = format!("whk_{task_id}_{status}");
        let mut body = json!({
            "idempotency_key": idempotency_key, "operation_id": task.operation_id,
            "task_id": task_id, "task_type": "create_media_buy", "status": status,
            "timestamp": timestamp, "token": pnc["token"],
        });
        if let Some(r) = result_of(task_id, status) {
            body["result"] = r;
        }
        if let Some(e) = error_of(status) {
            body["error"] = e;
        }
        let deviations = self.state.lock().expect("lock").deviations;
        if deviations.webhook_without_ids {
            let map = body.as_object_mut().expect("an object");
            map.remove("operation_id");
            map.remove("token");
            map.insert("context".into(), task.arguments["context"].clone());
        }
        let compact = body.to_string();
        let sent = if deviations.hmac_over_compact {
            let spaced = hmac_signature::spaced(compact.as_bytes()).expect("JSON");
            String::from_utf8(spaced).expect("JSON is UTF-8")
        } else {
            compact.clone()
        };
        Webhook {
            path,
            secret: pnc["authentication"]["credentials"]
                .as_str()
                .expect("HMAC secret")
                .into(),
            idempotency_key,
            body: sent,
            signed: compact,
        }
    }
}

/// What a `get_task` seller answers for a task: its own status words, the buy beside them.
fn get_task_payload(task: &Task) -> Value {
    let said = match task.status.as_str() {
        "submitted" => "requires_approval",
        "completed" => "approved",
        other => other,
    };
    let mut p = json!({"task_id": task.task_id, "status": said});
    if let Some(r) = result_of(&task.task_id, &task.status) {
        p["result"] = r;
    }
    p
}

fn reply(v: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())))
        .expect("response")
}

/// The JSON-RPC answer `v` as one `message` event of a Server-Sent Events stream.
fn sse_reply(v: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Full::new(Bytes::from(format!(
            "event: message\ndata: {v}\n\n"
        ))))
        .expect("response")
}

/// What `list_tasks` shows of a task: its own status word when it polls by `get_task`.
fn listing(task: &Task, own_words: bool) -> Value {
    let mut t = task.status_payload();
    if own_words {
        t["status"] = get_task_payload(task)["status"].clone();
    }
    t.as_object_mut().expect("object").remove("result");
    t
}

fn status_only(code: u16) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .body(Full::new(Bytes::new()))
        .expect("status")
}

/// Waits at a hold, if one is set for this call and point. `false`: the hold was dropped.
async fn wait_at(state: &Mutex<State>, tool: &str, at: HoldAt, args: &Value) -> bool {
    let hold = state.lock().expect("lock").take_hold(tool, at);
    match hold {
        None => true,
        Some(h) => {
            let _ = h.reached.send(args.clone());
            h.release.await.is_ok()
        }
    }
}

fn adcp_error(code: &str, message: &str, recovery: &str) -> Value {
    json!({"adcp_error": {"code": code, "message": message, "recovery": recovery}})
}

/// Acts on one tool call; `Err` is an AdCP error payload.
fn act(st: &mut State, tool: &str, args: &Value) -> Result<Value, Value> {
    let deviations = st.deviations;
    let unknown_argument = || {
        Err(adcp_error(
            "VALIDATION_ERROR",
            "Unexpected keyword argument",
            "correctable",
        ))
    };
    if deviations.strict_arguments
        && (args.get("adcp_version").is_some() || args.get("adcp_major_version").is_some())
    {
        return unknown_argument();
    }
    match tool {
        "get_task" if deviations.get_task => {
            if deviations.strict_arguments && args.as_object().is_some_and(|a| a.len() != 1) {
                return unknown_argument();
            }
            let id = args["task_id"].as_str().unwrap_or("");
            match st.by_id.get(id) {
                Some(i) => Ok(get_task_payload(&st.tasks[*i])),
                None => Err(adcp_error(
                    "REFERENCE_NOT_FOUND",
                    "no such task",
                    "correctable",
                )),
            }
        }
        "get_task_status" if deviations.get_task => Err(adcp_error(
            "UNSUPPORTED_FEATURE",
            "get_task_status is not offered",
            "correctable",
        )),
        "get_adcp_capabilities" => Ok(default_capabilities()),
        "list_tasks" if deviations.list_tasks => {
            let tasks: Vec<Value> = (st.tasks.iter())
                .map(|t| listing(t, deviations.get_task))
                .collect();
            Ok(
                json!({"query_summary": {"total_matching": tasks.len(), "returned": tasks.len()},
                      "tasks": tasks, "pagination": {"has_more": false}}),
            )
        }
        "create_media_buy" => {
            let key = args["idempotency_key"].as_str().unwrap_or("").to_string();
            if key.is_empty() {
                return Err(adcp_error(
                    "INVALID_REQUEST",
                    "idempotency_key is required",
                    "correctable",
                ));
            }
            let i = match st.by_key.get(&key) {
                Some(i) => *i,
                None => {
                    let task_id = format!("task_{:06}", st.tasks.len() + 1);
                    st.tasks.push(Task {
                        task_id: task_id.clone(),
                        operation_id: args["context"]["operation_id"]
                            .as_str()
                            .unwrap_or("")
                            .into(),
                        arguments: args.clone(),
                        status: "submitted".into(),
                    });
                    let i = st.tasks.len() - 1;
                    st.by_key.insert(key, i);
                    st.by_id.insert(task_id, i);
                    i
                }
            };
            let t = &st.tasks[i];
            Ok(json!({"status": "submitted", "task_id": t.task_id, "context": args["context"]}))
        }
        "get_task_status" => {
            let id = args["task_id"].as_str().unwrap_or("");
            match st.by_id.get(id) {
                Some(i) => Ok(st.tasks[*i].status_payload()),
                None => Err(adcp_error(
                    "REFERENCE_NOT_FOUND",
                    "no such task",
                    "correctable",
                )),
            }
        }
        "get_media_buys" => {
            let op = args["context"]["operation_id"].as_str();
            let buys: Vec<Value> = st
                .tasks
                .iter()
                .filter(|t| t.status == "completed" && op.is_none_or(|o| o == t.operation_id))
                .map(|t| {
                    json!({"media_buy_id": format!("mb_{}", t.task_id), "status": "active",
                           "context": {"operation_id": t.operation_id}})
                })
                .collect();
            Ok(json!({ "media_buys": buys }))
        }
        other => Err(adcp_error(
            "UNSUPPORTED_FEATURE",
            &format!("{other} is not scripted"),
            "correctable",
        )),
    }
}

async fn handle(
    state: Arc<Mutex<State>>,
    arrived: Arc<Notify>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let body = req.into_body().collect().await?.to_bytes();
    let msg: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let id = msg.get("id").cloned();
    let sse = state.lock().expect("lock").deviations.sse;
    let reply = |v: Value| if sse { sse_reply(v) } else { reply(v) };
    match msg.get("method").and_then(Value::as_str).unwrap_or("") {
        "initialize" => {
            let session = {
                let mut st = state.lock().expect("lock");
                st.sessions += 1;
                format!("sess-{}", st.sessions)
            };
            let mut r = reply(json!({"jsonrpc": "2.0", "id": id, "result": {
                "protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                "serverInfo": {"name": "task-seller", "version": "1"}}}));
            r.headers_mut()
                .insert("mcp-session-id", session.parse().expect("header value"));
            Ok(r)
        }
        "notifications/initialized" => Ok(status_only(202)),
        "tools/list" => {
            let deviations = state.lock().expect("lock").deviations;
            let get_task = deviations.get_task;
            let listed = deviations.list_tasks.then_some(&"list_tasks");
            let mut tools: Vec<Value> = (DEFAULT_TOOLS.iter().chain(listed))
                .filter(|n| !(get_task && **n == "get_task_status"))
                .map(|n| json!({"name": n, "inputSchema": {"type": "object"}}))
                .collect();
            if get_task {
                tools.push(json!({"name": "get_task", "inputSchema": {"type": "object",
                    "properties": {"task_id": {"type": "string"}}, "required": ["task_id"]}}));
            }
            Ok(reply(
                json!({"jsonrpc": "2.0", "id": id, "result": {"tools": tools}}),
            ))
        }
        "tools/call" => {
            let tool = msg["params"]["name"].as_str().unwrap_or("").to_string();
            let args = msg["params"]["arguments"].clone();
            state
                .lock()
                .expect("lock")
                .calls
                .push((tool.clone(), args.clone()));
            arrived.notify_waiters();
            if !wait_at(&state, &tool, HoldAt::Before, &args).await {
                return Ok(status_only(503));
            }
            let outcome = act(&mut state.lock().expect("lock"), &tool, &args);
            if !wait_at(&state, &tool, HoldAt::After, &args).await {
                return Ok(status_only(503));
            }
            let (is_error, payload) = match outcome {
                Ok(p) => (false, p),
                Err(e) => (true, e),
            };
            Ok(reply(json!({"jsonrpc": "2.0", "id": id, "result": {
                "isError": is_error, "content": [{"type": "text", "text": payload.to_string()}],
                "structuredContent": payload}})))
        }
        _ => Ok(reply(
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "method not found"}}),
        )),
    }
}
