//! A scripted AdCP seller speaking MCP (JSON-RPC over HTTP) on loopback, for tests that need
//! to control exactly what the seller answers (faults, lost responses). Interop with the
//! official SDK is tested separately against `tests/peers/seller.py`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

/// What the seller answers to the next `tools/call`.
#[derive(Debug, Clone)]
pub enum Answer {
    /// `structuredContent` of a successful call.
    Payload(Value),
    /// An HTTP status with no JSON-RPC body.
    Http(u16),
}

#[derive(Default)]
struct State {
    answers: VecDeque<Answer>,
    calls: Vec<(String, Value)>,
    /// The JWKS published for RFC 9421 webhook signatures.
    jwks: Option<Value>,
    /// What `get_adcp_capabilities` answers (not taken from the scripted queue).
    capabilities: Option<Value>,
    /// Tool names `tools/list` announces.
    tools: Option<Vec<String>>,
    /// Refuses AdCP's version fields as unknown arguments, as an AdCP 3.1.1 seller on the
    /// Python SDK 6.6.0 does on every tool (`VALIDATION_ERROR: Unexpected keyword argument`).
    strict_arguments: bool,
    /// Where `sync_agent_notification_configs` subscribed our `capabilities.changed`
    /// subscriber, once its challenge was echoed.
    subscriber_url: Option<String>,
    /// Each proof-of-control challenge sent: the receiver's status and body.
    challenges: Vec<(u16, Value)>,
    /// Every agent-level webhook sent (challenges and notices), as sent.
    agent_webhooks: Vec<Value>,
}

/// What a conformant AdCP 3.1 seller declares: major version 3, a 24 h replay window,
/// RFC 9421 webhook signing with the legacy HMAC fallback.
pub fn default_capabilities() -> Value {
    json!({
        "adcp": {"major_versions": [3], "supported_versions": ["3.0", "3.1"],
                 "idempotency": {"supported": true, "replay_ttl_seconds": 86400}},
        "supported_protocols": ["media_buy"],
        "webhook_signing": {"supported": true, "profile": "adcp/webhook-signing/v1",
                            "algorithms": ["ed25519"], "legacy_hmac_fallback": true}
    })
}

/// The tools a media-buy seller announces in `tools/list`. Not `list_tasks`: this fake
/// keeps no task list (its `list_tasks` answers an empty page), so reconciliation must not
/// take it at its word.
pub const DEFAULT_TOOLS: &[&str] = &[
    "get_adcp_capabilities",
    "create_media_buy",
    "update_media_buy",
    "sync_creatives",
    "get_media_buys",
    "get_task_status",
];

/// A running fake seller. Dropping it stops nothing; the runtime ends with the test.
#[derive(Clone)]
pub struct FakeSeller {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl FakeSeller {
    pub async fn start() -> FakeSeller {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/mcp", listener.local_addr().expect("addr"));
        let state = Arc::new(Mutex::new(State::default()));
        let s = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(s.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FakeSeller { url, state }
    }

    pub fn answer(&self, a: Answer) {
        self.state.lock().expect("lock").answers.push_back(a);
    }

    /// Publishes `jwk` the way a seller does: `/.well-known/brand.json` names this agent's
    /// URL and a `jwks_uri` on the same origin.
    pub fn publish_key(&self, jwk: Value) {
        self.state.lock().expect("lock").jwks = Some(json!({ "keys": [jwk] }));
    }

    /// Replaces what `get_adcp_capabilities` answers.
    pub fn set_capabilities(&self, caps: Value) {
        self.state.lock().expect("lock").capabilities = Some(caps);
    }

    /// What `get_adcp_capabilities` answers now.
    pub fn capabilities(&self) -> Value {
        let st = self.state.lock().expect("lock");
        st.capabilities.clone().unwrap_or_else(default_capabilities)
    }

    /// Replaces the tool names `tools/list` announces.
    pub fn set_tools(&self, tools: &[&str]) {
        self.state.lock().expect("lock").tools =
            Some(tools.iter().map(|t| t.to_string()).collect());
    }

    /// Refuses the version fields from now on, like a seller that validates arguments strictly.
    pub fn refuse_version_fields(&self) {
        self.state.lock().expect("lock").strict_arguments = true;
    }

    /// Signs with RFC 9421 and fires `capabilities.changed` at revision `rev` (AdCP 3.2): its
    /// key is published, `get_adcp_capabilities` offers `sync_agent_notification_configs`,
    /// and a subscription is activated only after the seller's signed challenge is echoed.
    pub fn announce_changes(&self, rev: &str) {
        self.publish_key(crate::seller_signer::jwk());
        let mut caps = default_capabilities();
        caps["adcp"]["supported_versions"] = json!(["3.0", "3.1", "3.2"]);
        caps["adcp"]["capability_changes"] = json!({"capabilities_version": rev, "cache_ttl_seconds": 3600,
            "notifications": {"supported": true, "registration_task": "sync_agent_notification_configs",
                              "event_types": ["capabilities.changed"]}});
        self.set_capabilities(caps);
    }

    /// Publishes revision `rev` of the capabilities, then announces it to the subscriber with a
    /// signed `capabilities.changed`; the receiver's status and body.
    pub async fn change_capabilities(&self, rev: &str, notification_id: &str) -> (u16, Value) {
        self.announce_changes(rev);
        let url = self
            .state
            .lock()
            .expect("lock")
            .subscriber_url
            .clone()
            .expect("a subscriber");
        let notice = json!({"idempotency_key": format!("whk_{notification_id}_0123456789"),
            "notification_id": notification_id, "notification_type": "capabilities.changed",
            "fired_at": "2026-12-03T10:00:00Z", "subscriber_id": "adcp-orchestrator",
            "agent_url": self.url, "changed_at": "2026-12-03T09:59:00Z",
            "reason": "capability_enabled", "capabilities_version": rev});
        post(&self.state, &url, &notice).await
    }

    /// Every agent-level webhook sent so far (challenges and notices).
    pub fn agent_webhooks(&self) -> Vec<Value> {
        self.state.lock().expect("lock").agent_webhooks.clone()
    }

    /// The challenges sent so far, with what the receiver answered.
    pub fn challenges(&self) -> Vec<(u16, Value)> {
        self.state.lock().expect("lock").challenges.clone()
    }

    /// Every `tools/call` received: tool name and arguments.
    pub fn calls(&self) -> Vec<(String, Value)> {
        self.state.lock().expect("lock").calls.clone()
    }
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let host = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let json_reply = |v: Value| {
        Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(v.to_string())))
            .expect("response")
    };
    match req.uri().path() {
        "/.well-known/brand.json" => {
            let origin = format!("http://{host}");
            return Ok(json_reply(
                json!({"agents": [{"url": format!("{origin}/mcp"), "jwks_uri": format!("{origin}/jwks.json")}]}),
            ));
        }
        "/jwks.json" => {
            let jwks = state
                .lock()
                .expect("lock")
                .jwks
                .clone()
                .unwrap_or(json!({"keys": []}));
            return Ok(json_reply(jwks));
        }
        _ => {}
    }
    let body = req.into_body().collect().await?.to_bytes();
    let msg: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let id = msg.get("id").cloned();
    let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
    let reply = |v: Value| {
        Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(v.to_string())))
            .expect("response")
    };
    match method {
        "initialize" => Ok(reply(json!({"jsonrpc": "2.0", "id": id, "result": {
            "protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
            "serverInfo": {"name": "fake-seller", "version": "1"}}}))),
        "notifications/initialized" => Ok(Response::builder()
            .status(202)
            .body(Full::new(Bytes::new()))
            .expect("202")),
        "tools/list" => {
            let names = state
                .lock()
                .expect("lock")
                .tools
                .clone()
                .unwrap_or_else(|| DEFAULT_TOOLS.iter().map(|t| t.to_string()).collect());
            let tools: Vec<Value> = names
                .iter()
                .map(|n| json!({"name": n, "inputSchema": {"type": "object"}}))
                .collect();
            Ok(reply(
                json!({"jsonrpc": "2.0", "id": id, "result": {"tools": tools}}),
            ))
        }
        "tools/call" => {
            let name = msg["params"]["name"].as_str().unwrap_or("").to_string();
            let args = msg["params"]["arguments"].clone();
            if name == "sync_agent_notification_configs" {
                state.lock().expect("lock").calls.push((name, args.clone()));
                let answer = subscribe(&state, &args, &format!("http://{host}/mcp")).await;
                return Ok(reply(json!({"jsonrpc": "2.0", "id": id, "result": {
                    "isError": false, "content": [{"type": "text", "text": answer.to_string()}],
                    "structuredContent": answer}})));
            }
            let answer = {
                let mut st = state.lock().expect("lock");
                let unknown = st.strict_arguments
                    && ["adcp_version", "adcp_major_version"]
                        .iter()
                        .any(|k| args.get(k).is_some());
                st.calls.push((name.clone(), args));
                if unknown {
                    return Ok(reply(json!({"jsonrpc": "2.0", "id": id, "result": {
                        "isError": true,
                        "content": [{"type": "text", "text": "VALIDATION_ERROR: Unexpected keyword argument"}],
                        "structuredContent": {"adcp_error": {"code": "VALIDATION_ERROR",
                            "message": "Unexpected keyword argument", "recovery": "correctable"}}}})));
                }
                if name == "get_adcp_capabilities" {
                    Some(Answer::Payload(
                        st.capabilities.clone().unwrap_or_else(default_capabilities),
                    ))
                } else if name == "list_tasks" {
                    // Reconciliation's periodic listing: nothing outstanding, never scripted.
                    Some(Answer::Payload(json!({
                        "query_summary": {"total_matching": 0, "returned": 0},
                        "tasks": [], "pagination": {"has_more": false}
                    })))
                } else {
                    st.answers.pop_front()
                }
            };
            match answer {
                Some(Answer::Http(code)) => Ok(Response::builder()
                    .status(code)
                    .body(Full::new(Bytes::new()))
                    .expect("status")),
                Some(Answer::Payload(p)) => {
                    Ok(reply(json!({"jsonrpc": "2.0", "id": id, "result": {
                    "isError": false, "content": [{"type": "text", "text": p.to_string()}], "structuredContent": p}})))
                }
                None => Ok(reply(json!({"jsonrpc": "2.0", "id": id, "result": {
                    "isError": true, "content": [{"type": "text", "text": "no answer scripted"}],
                    "structuredContent": {"adcp_error": {"code": "SERVICE_UNAVAILABLE", "message": "no answer scripted", "recovery": "transient"}}}}))),
            }
        }
        _ => Ok(reply(
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "method not found"}}),
        )),
    }
}

/// `sync_agent_notification_configs`: challenges the one subscriber's URL with a signed
/// `webhook.challenge` and activates it only when the challenge is echoed.
async fn subscribe(state: &Arc<Mutex<State>>, args: &Value, agent_url: &str) -> Value {
    let config = &args["notification_configs"][0];
    let url = config["url"].as_str().unwrap_or_default().to_string();
    let challenge = format!("ch_{:032x}", rand_u128());
    let (status, body) = post(
        state,
        &url,
        &json!({"type": "webhook.challenge", "scope": "agent", "challenge": challenge,
                "subscriber_id": config["subscriber_id"], "seller_agent_url": agent_url,
                "event_types": config["event_types"],
                "delivery_auth": {"mode": "rfc9421"}}),
    )
    .await;
    let echoed = status == 200 && body["challenge"] == challenge.as_str();
    let mut st = state.lock().expect("lock");
    st.challenges.push((status, body));
    if !echoed {
        return json!({"status": "completed", "action": "failed",
            "errors": [{"code": "CHALLENGE_FAILED", "message": "the challenge was not echoed"}]});
    }
    st.subscriber_url = Some(url);
    json!({"status": "completed", "action": "updated",
           "notification_configs": [{"subscriber_id": config["subscriber_id"], "url": config["url"],
                                     "event_types": config["event_types"], "active": true}]})
}

/// A signed agent-level webhook; the receiver's status and JSON body (status 0: unreachable).
async fn post(state: &Arc<Mutex<State>>, url: &str, body: &Value) -> (u16, Value) {
    state
        .lock()
        .expect("lock")
        .agent_webhooks
        .push(body.clone());
    let client = reqwest::Client::new();
    let Ok(r) = crate::seller_signer::signed_post(&client, url, body)
        .send()
        .await
    else {
        return (0, Value::Null);
    };
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A challenge value unique to the process (not secret: the test seller's).
fn rand_u128() -> u128 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    nanos ^ u128::from(N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) << 64
}
