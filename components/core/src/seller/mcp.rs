//! A seller's AdCP tools over MCP (JSON-RPC over Streamable HTTP): `initialize`,
//! `notifications/initialized`, then `tools/call`, echoing any `Mcp-Session-Id`. The session id
//! is cached per seller in the store; a 404 on a request carrying one means it expired, so the
//! client re-initializes once and retries. Every tool call carries the seller's version envelope
//! (as discovery established it: a seller built on the official SDK takes a call without it as 3.0).

use crate::foundation::clock::{Clock, Entropy};
use crate::foundation::keys;
use crate::foundation::seal::SealingKey;
use crate::foundation::store::Store;
use crate::foundation::transport::{Deadline, InboundResponse, Limits, Transport, TransportError};
use crate::records::seller::{AuthScheme, Seller, credentials_purpose};
use crate::schedule::backoff::parse_retry_after;
use crate::seller::error_mapping::{self, Action};
use crate::seller::port::CallFailure;
use crate::seller::port::ListedTool;
use crate::seller::port::Recovery;
use crate::seller::port::SellerCalls;
use crate::seller::port::SellerError;
use serde_json::{Value, json};

/// The MCP version we ask for at `initialize`; the server's answer names the one the session
/// speaks, sent in `MCP-Protocol-Version` from then on.
pub const MCP_PROTOCOL_VERSION: &str = "2025-06-18";
/// Versions a server may answer that we speak (any other: we keep ours).
const MCP_VERSIONS: [&str; 4] = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

pub struct McpSellerCalls<'a, S: Store, T: Transport> {
    pub store: &'a S,
    pub transport: &'a T,
    pub sealing: &'a SealingKey,
    /// For `Retry-After` dates.
    pub clock: &'a dyn Clock,
    /// For JSON-RPC request ids: the session is shared by every instance and replica, and
    /// a server matches answers to requests by id within a session, so ids must not repeat.
    pub entropy: &'a dyn Entropy,
    /// Sessions this instance already knows, so that a sweep polling many tasks of one
    /// seller reads the shared session once (`Default::default()` to start empty).
    pub sessions: SessionMemo,
    /// When calls must be over, if sooner than their own limits (`Default::default()`: none).
    pub deadline: Deadline,
}

/// Per-instance memo of MCP sessions by store key.
#[derive(Debug, Default)]
pub struct SessionMemo(std::cell::RefCell<std::collections::HashMap<String, Session>>);

/// An initialized MCP session: its id (`None` for a server that issued none: nothing to
/// echo) and the protocol version `initialize` negotiated.
#[derive(Debug, Clone, PartialEq)]
struct Session {
    id: Option<String>,
    protocol: String,
}

impl Session {
    /// Stored as `{id}\n{protocol}`; a record without the version (written before it was
    /// kept) is a session that negotiated the version we always asked for.
    fn parse(stored: &str) -> Session {
        let (id, protocol) = stored
            .split_once('\n')
            .unwrap_or((stored, MCP_PROTOCOL_VERSION));
        Session {
            id: Some(id.to_string()),
            protocol: protocol.to_string(),
        }
    }
}

impl SessionMemo {
    fn get(&self, key: &str) -> Option<Session> {
        self.0.borrow().get(key).cloned()
    }

    fn put(&self, key: &str, session: Session) {
        self.0.borrow_mut().insert(key.to_string(), session);
    }
}

/// A fresh JSON-RPC request id (53 random bits: exact in every JSON number reader).
fn request_id(entropy: &dyn Entropy) -> u64 {
    let mut b = [0u8; 8];
    entropy.fill(&mut b);
    u64::from_le_bytes(b) >> 11
}

impl<S: Store, T: Transport> SellerCalls for McpSellerCalls<'_, S, T> {
    fn set_deadline(&self, until_ms: Option<u64>) {
        self.deadline.set(until_ms);
    }

    async fn call(
        &self,
        seller: &Seller,
        tool: &str,
        arguments: Value,
    ) -> Result<Value, CallFailure> {
        let mut args = arguments;
        seller.version_envelope.apply(&mut args);
        let (resp, id) = self
            .exchange(
                seller,
                "tools/call",
                json!({"name": tool, "arguments": args}),
            )
            .await?;
        interpret(&resp, &id, self.clock.now_ms())
    }

    async fn list_tools(&self, seller: &Seller) -> Result<Vec<ListedTool>, CallFailure> {
        let mut listed = Vec::new();
        let mut cursor: Option<String> = None;
        // A seller's tool list is a handful of pages at most; stop a runaway cursor.
        for _ in 0..MAX_TOOL_PAGES {
            let params = match &cursor {
                Some(c) => json!({ "cursor": c }),
                None => json!({}),
            };
            let (resp, id) = self.exchange(seller, "tools/list", params).await?;
            let message = rpc_message(&resp, &id, self.clock.now_ms())?;
            let result = message
                .get("result")
                .ok_or_else(|| malformed("tools/list answer without result"))?;
            if let Some(tools) = result.get("tools").and_then(Value::as_array) {
                listed.extend(tools.iter().filter_map(ListedTool::from_listing));
            }
            cursor = result
                .get("nextCursor")
                .and_then(Value::as_str)
                .filter(|c| !c.is_empty())
                .map(str::to_string);
            if cursor.is_none() {
                break;
            }
        }
        Ok(listed)
    }
}

const MAX_TOOL_PAGES: usize = 10;

impl<S: Store, T: Transport> McpSellerCalls<'_, S, T> {
    /// One JSON-RPC request in the seller's session: handshake if none is cached, again on 404.
    async fn exchange(
        &self,
        seller: &Seller,
        method: &str,
        params: Value,
    ) -> Result<(InboundResponse, Value), CallFailure> {
        let id = json!(request_id(self.entropy));
        let auth = match &seller.credentials {
            None => None,
            Some(sealed) => Some(
                self.sealing
                    .open_string(
                        &credentials_purpose(&seller.tenant_id, &seller.seller_id),
                        sealed,
                    )
                    .map_err(|_| {
                        terminal(
                            "CREDENTIALS_UNREADABLE",
                            "seller credentials cannot be opened",
                        )
                    })?,
            ),
        };
        let session_key = keys::mcp_session(&seller.tenant_id, &seller.seller_id);
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let session = match self.sessions.get(&session_key) {
            Some(known) => known,
            None => {
                let cached = self
                    .store
                    .get(&session_key)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|v| String::from_utf8(v).ok());
                match cached {
                    Some(s) => {
                        let session = Session::parse(&s);
                        self.sessions.put(&session_key, session.clone());
                        session
                    }
                    None => {
                        self.initialize(seller, auth.as_deref(), &session_key)
                            .await?
                    }
                }
            }
        };
        let resp = self.post(seller, auth.as_deref(), &session, &body).await?;
        if resp.status() == http::StatusCode::NOT_FOUND && session.id.is_some() {
            let fresh = self
                .initialize(seller, auth.as_deref(), &session_key)
                .await?;
            let resp = self.post(seller, auth.as_deref(), &fresh, &body).await?;
            return Ok((resp, id));
        }
        Ok((resp, id))
    }

    async fn initialize(
        &self,
        seller: &Seller,
        auth: Option<&str>,
        session_key: &str,
    ) -> Result<Session, CallFailure> {
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": MCP_PROTOCOL_VERSION, "capabilities": {},
            "clientInfo": {"name": "adcp-orchestrator", "version": env!("CARGO_PKG_VERSION")}}});
        let asking = Session {
            id: None,
            protocol: MCP_PROTOCOL_VERSION.into(),
        };
        let resp = self.post(seller, auth, &asking, &init).await?;
        if !resp.status().is_success() {
            return Err(http_failure(&resp, self.clock.now_ms()));
        }
        let answer = rpc_message(&resp, &json!(0), self.clock.now_ms()).ok();
        let protocol = answer
            .as_ref()
            .and_then(|a| a.pointer("/result/protocolVersion"))
            .and_then(Value::as_str)
            .filter(|v| MCP_VERSIONS.contains(v))
            .unwrap_or(MCP_PROTOCOL_VERSION);
        let session = Session {
            id: resp
                .headers()
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            protocol: protocol.to_string(),
        };
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let ack = self.post(seller, auth, &session, &note).await?;
        if !ack.status().is_success() {
            return Err(http_failure(&ack, self.clock.now_ms()));
        }
        if let Some(id) = &session.id {
            // A cache: losing this write only costs another handshake.
            let stored = format!("{id}\n{}", session.protocol);
            let _ = self.store.set(session_key, stored.as_bytes()).await;
        }
        self.sessions.put(session_key, session.clone());
        Ok(session)
    }

    async fn post(
        &self,
        seller: &Seller,
        auth: Option<&str>,
        session: &Session,
        body: &Value,
    ) -> Result<InboundResponse, CallFailure> {
        let mut b = http::Request::post(&seller.mcp_url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", &session.protocol);
        if let Some(a) = auth {
            b = b.header("authorization", authorization(seller.auth_scheme, a));
        }
        if let Some(s) = &session.id {
            b = b.header("mcp-session-id", s);
        }
        let req = b.body(body.to_string().into_bytes()).map_err(|e| {
            CallFailure::Transport(TransportError::Connect(format!("invalid seller URL: {e}")))
        })?;
        let limits = self
            .deadline
            .limits(Limits::SELLER, self.clock.now_ms())
            .map_err(CallFailure::Transport)?;
        self.transport
            .send(req, limits)
            .await
            .map_err(CallFailure::Transport)
    }
}

/// Basic credentials are stored as `user:password` and encoded here (RFC 7617).
fn authorization(scheme: AuthScheme, credentials: &str) -> String {
    use base64::Engine as _;
    match scheme {
        AuthScheme::Bearer => format!("Bearer {credentials}"),
        AuthScheme::Basic => format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        ),
    }
}

fn terminal(code: &str, message: &str) -> CallFailure {
    CallFailure::Seller(SellerError {
        code: code.into(),
        message: message.into(),
        recovery: Recovery::Terminal,
        retry_after_s: None,
        adcp: false,
    })
}

/// An HTTP-level failure (no JSON-RPC answer), classified.
fn http_failure(resp: &InboundResponse, now_ms: u64) -> CallFailure {
    let status = resp.status().as_u16();
    // Delay-seconds or an HTTP date, clamped to 1..=3600 s.
    let retry_after_s = resp
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, now_ms))
        .map(|s| s as u32);
    let (code, recovery) = match status {
        401 => ("AUTH_MISSING", Recovery::Correctable),
        403 => ("AUTH_INVALID", Recovery::Terminal),
        408 | 425 | 500..=599 => ("SERVICE_UNAVAILABLE", Recovery::Transient),
        429 => ("RATE_LIMITED", Recovery::Transient),
        _ => ("INVALID_REQUEST", Recovery::Correctable),
    };
    CallFailure::Seller(SellerError {
        code: code.into(),
        message: format!("seller answered HTTP {status}"),
        recovery,
        retry_after_s,
        adcp: false,
    })
}

/// The seller's AdCP payload, or its classified failure ([`error_mapping::find_error`]).
fn interpret(resp: &InboundResponse, id: &Value, now_ms: u64) -> Result<Value, CallFailure> {
    let message = rpc_message(resp, id, now_ms)?;
    let result = message
        .get("result")
        .ok_or_else(|| malformed("JSON-RPC answer without result"))?;
    if let Some(payload) = extract_success(result) {
        return match error_branch(&payload) {
            Some(e) => Err(seller_error(e)),
            None => Ok(payload),
        };
    }
    if let Some(adcp) = error_mapping::find_error(result) {
        return Err(seller_error(&adcp));
    }
    // A tool error whose payload carries the task's `errors[]` instead of an `adcp_error`.
    match extract(result)
        .as_ref()
        .and_then(|p| p.pointer("/errors/0"))
    {
        Some(e) => Err(seller_error(e)),
        None => Err(malformed("tool error without an AdCP error")),
    }
}

/// The JSON-RPC answer to our request, or the failure it reports (HTTP, JSON-RPC or AdCP).
fn rpc_message(resp: &InboundResponse, id: &Value, now_ms: u64) -> Result<Value, CallFailure> {
    if !resp.status().is_success() {
        return Err(http_failure(resp, now_ms));
    }
    let is_sse = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let message = if is_sse {
        sse_response(resp.body(), id)
    } else {
        // Only an answer to this request: another id is a concurrent request's in our session.
        serde_json::from_slice::<Value>(resp.body())
            .ok()
            .filter(|m| m.get("id").is_none_or(|i| i.is_null() || i == id))
    };
    let message =
        message.ok_or_else(|| malformed("the seller's answer is not a JSON-RPC message"))?;
    if let Some(err) = message.get("error") {
        if let Some(adcp) = error_mapping::find_error(&message) {
            return Err(seller_error(&adcp));
        }
        let code = err.get("code").and_then(Value::as_i64).unwrap_or(0);
        let text = err
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("JSON-RPC error");
        let (c, r) = match code {
            -32029 => ("RATE_LIMITED", Recovery::Transient),
            -32028 => ("AUTH_MISSING", Recovery::Correctable),
            -32027 => ("SERVICE_UNAVAILABLE", Recovery::Transient),
            _ => ("INVALID_REQUEST", Recovery::Correctable),
        };
        return Err(CallFailure::Seller(SellerError {
            code: c.into(),
            message: text.into(),
            recovery: r,
            retry_after_s: None,
            adcp: false,
        }));
    }
    Ok(message)
}

/// The first error of an error branch: `errors[]` with none of the fields a success or
/// submitted branch requires (`CreateMediaBuyError` forbids `media_buy_id`, `packages` and
/// `status: submitted`). Success payloads reporting partial failures beside data are not errors.
fn error_branch(payload: &Value) -> Option<&Value> {
    const SUCCESS_FIELDS: [&str; 7] = [
        "status",
        "media_buy_id",
        "media_buys",
        "packages",
        "creatives",
        "tasks",
        "verdict",
    ];
    let first = payload.pointer("/errors/0")?;
    let obj = payload.as_object()?;
    (!SUCCESS_FIELDS.iter().any(|f| obj.contains_key(*f))).then_some(first)
}

/// AdCP's success extraction (`mcp-response-extraction`): `extract`, but nothing on `isError`
/// or when what was found holds only an `adcp_error`.
pub fn extract_success(result: &Value) -> Option<Value> {
    if result
        .get("isError")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        return None;
    }
    extract(result).filter(|p| {
        !p.as_object()
            .is_some_and(|o| o.len() == 1 && o.contains_key("adcp_error"))
    })
}

/// AdCP's extraction: `structuredContent` when it is an object, else the first
/// `content[].text` that parses as a JSON object (at most 1 MB of text).
fn extract(result: &Value) -> Option<Value> {
    if let Some(sc) = result.get("structuredContent").filter(|v| v.is_object()) {
        return Some(sc.clone());
    }
    result.get("content")?.as_array()?.iter().find_map(|c| {
        let text = c.get("text")?.as_str()?;
        if text.len() > 1024 * 1024 {
            return None;
        }
        serde_json::from_slice::<Value>(text.as_bytes())
            .ok()
            .filter(Value::is_object)
    })
}

/// The response to `id` in an SSE stream, skipping the server's own notifications and requests.
fn sse_response(body: &[u8], id: &Value) -> Option<Value> {
    let text = std::str::from_utf8(body).ok()?;
    text.replace("\r\n", "\n").split("\n\n").find_map(|event| {
        let data: Vec<&str> = event
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        if data.is_empty() {
            return None;
        }
        serde_json::from_slice::<Value>(data.join("\n").as_bytes())
            .ok()
            .filter(|v| {
                v.get("id") == Some(id) && (v.get("result").is_some() || v.get("error").is_some())
            })
    })
}

fn malformed(message: &str) -> CallFailure {
    CallFailure::Seller(SellerError {
        code: "INVALID_RESPONSE".into(),
        message: message.into(),
        recovery: Recovery::Transient,
        retry_after_s: None,
        adcp: false,
    })
}

/// An AdCP error object, classified by [`error_mapping::action`].
fn seller_error(e: &Value) -> CallFailure {
    let recovery = match error_mapping::action(Some(e)) {
        Action::Retry => Recovery::Transient,
        Action::SurfaceToCaller => Recovery::Correctable,
        Action::EscalateToHuman | Action::GenericError => Recovery::Terminal,
    };
    let retry_after_s = e
        .get("retry_after")
        .and_then(Value::as_f64)
        .map(|s| crate::schedule::backoff::clamp_retry_after_s(s) as u32);
    CallFailure::Seller(SellerError {
        code: e
            .get("code")
            .and_then(Value::as_str)
            .unwrap_or("UNKNOWN")
            .to_string(),
        message: e
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        recovery,
        retry_after_s,
        adcp: true,
    })
}

#[cfg(test)]
mod tests;
