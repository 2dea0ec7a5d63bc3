//! Calling a seller's AdCP tools over MCP (JSON-RPC over Streamable HTTP).
//!
//! Session handling: `initialize`, then `notifications/initialized`, then `tools/call`,
//! echoing `Mcp-Session-Id` when the server issued one. The session id is cached per seller
//! in the store; a 404 on a request that carried one means it expired, so the client
//! re-initializes once and retries. Every tool call carries AdCP's version envelope.

use crate::dispatch::{CallFailure, Recovery, SellerCalls, SellerError};
use crate::keys;
use crate::seal::SealingKey;
use crate::seller::{Seller, credentials_purpose};
use crate::store::Store;
use crate::transport::{InboundResponse, Limits, Transport, TransportError};
use serde_json::{Value, json};

/// The MCP protocol revision we speak.
pub const MCP_PROTOCOL_VERSION: &str = "2025-06-18";
/// AdCP version envelope sent on every tool call (a seller built on the official SDK treats
/// a call without it as AdCP 3.0).
pub const ADCP_VERSION: &str = "3.1";
pub const ADCP_MAJOR_VERSION: u64 = 3;

/// [`SellerCalls`] over MCP.
pub struct McpSellerCalls<'a, S: Store, T: Transport> {
    pub store: &'a S,
    pub transport: &'a T,
    pub sealing: &'a SealingKey,
}

impl<S: Store, T: Transport> SellerCalls for McpSellerCalls<'_, S, T> {
    async fn call(
        &self,
        seller: &Seller,
        tool: &str,
        arguments: Value,
    ) -> Result<Value, CallFailure> {
        let mut args = arguments;
        if let Value::Object(map) = &mut args {
            map.entry("adcp_version").or_insert(json!(ADCP_VERSION));
            map.entry("adcp_major_version")
                .or_insert(json!(ADCP_MAJOR_VERSION));
        }
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
        let cached = self
            .store
            .get(&session_key)
            .await
            .ok()
            .flatten()
            .and_then(|v| String::from_utf8(v).ok());
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                          "params": {"name": tool, "arguments": args}});
        let session = match cached {
            Some(s) => Some(s),
            None => {
                self.initialize(seller, auth.as_deref(), &session_key)
                    .await?
            }
        };
        let resp = self
            .post(seller, auth.as_deref(), session.as_deref(), &body)
            .await?;
        let resp = if resp.status() == http::StatusCode::NOT_FOUND && session.is_some() {
            // The server forgot our session: start a new one and retry once.
            let fresh = self
                .initialize(seller, auth.as_deref(), &session_key)
                .await?;
            self.post(seller, auth.as_deref(), fresh.as_deref(), &body)
                .await?
        } else {
            resp
        };
        interpret(&resp)
    }
}

impl<S: Store, T: Transport> McpSellerCalls<'_, S, T> {
    async fn initialize(
        &self,
        seller: &Seller,
        auth: Option<&str>,
        session_key: &str,
    ) -> Result<Option<String>, CallFailure> {
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": MCP_PROTOCOL_VERSION, "capabilities": {},
            "clientInfo": {"name": "adcp-orchestrator", "version": env!("CARGO_PKG_VERSION")}}});
        let resp = self.post(seller, auth, None, &init).await?;
        if !resp.status().is_success() {
            return Err(http_failure(&resp));
        }
        let session = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let ack = self.post(seller, auth, session.as_deref(), &note).await?;
        if !ack.status().is_success() {
            return Err(http_failure(&ack));
        }
        if let Some(s) = &session {
            // A cache: losing this write only costs another handshake.
            let _ = self.store.set(session_key, s.as_bytes()).await;
        }
        Ok(session)
    }

    async fn post(
        &self,
        seller: &Seller,
        auth: Option<&str>,
        session: Option<&str>,
        body: &Value,
    ) -> Result<InboundResponse, CallFailure> {
        let mut b = http::Request::post(&seller.mcp_url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", MCP_PROTOCOL_VERSION);
        if let Some(a) = auth {
            b = b.header("authorization", format!("Bearer {a}"));
        }
        if let Some(s) = session {
            b = b.header("mcp-session-id", s);
        }
        let req = b.body(body.to_string().into_bytes()).map_err(|e| {
            CallFailure::Transport(TransportError::Connect(format!("invalid seller URL: {e}")))
        })?;
        self.transport
            .send(req, Limits::SELLER)
            .await
            .map_err(CallFailure::Transport)
    }
}

fn terminal(code: &str, message: &str) -> CallFailure {
    CallFailure::Seller(SellerError {
        code: code.into(),
        message: message.into(),
        recovery: Recovery::Terminal,
        retry_after_s: None,
    })
}

/// An HTTP-level failure (no JSON-RPC answer), classified.
fn http_failure(resp: &InboundResponse) -> CallFailure {
    let status = resp.status().as_u16();
    let retry_after_s = resp
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok())
        .map(|s| s.clamp(1, 3600));
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
    })
}

/// Turns the seller's HTTP answer into the AdCP payload or a classified failure.
fn interpret(resp: &InboundResponse) -> Result<Value, CallFailure> {
    if !resp.status().is_success() {
        return Err(http_failure(resp));
    }
    let is_sse = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let message = if is_sse {
        last_sse_message(resp.body())
    } else {
        serde_json::from_slice(resp.body()).ok()
    };
    let message =
        message.ok_or_else(|| malformed("the seller's answer is not a JSON-RPC message"))?;
    if let Some(err) = message.get("error") {
        if let Some(adcp) = err.pointer("/data/adcp_error") {
            return Err(seller_error(adcp));
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
        }));
    }
    let result = message
        .get("result")
        .ok_or_else(|| malformed("JSON-RPC answer without result"))?;
    let payload = extract(result);
    let is_error = result
        .get("isError")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    match payload {
        Some(p)
            if p.get("adcp_error").is_some()
                && (is_error || p.as_object().is_some_and(|o| o.len() == 1)) =>
        {
            Err(seller_error(&p["adcp_error"]))
        }
        Some(p) if !is_error => Ok(p),
        Some(p) => Err(match p.pointer("/errors/0") {
            Some(e) => seller_error(e),
            None => malformed("tool error without an AdCP error"),
        }),
        None if is_error => Err(malformed("tool error without an AdCP error")),
        None => Err(malformed("tool result carries no AdCP payload")),
    }
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
        serde_json::from_str::<Value>(text)
            .ok()
            .filter(Value::is_object)
    })
}

/// The last JSON message of a server-sent event stream (the response follows any
/// notifications the server sent first).
fn last_sse_message(body: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(body).ok()?;
    let mut last = None;
    for event in text.replace("\r\n", "\n").split("\n\n") {
        let data: Vec<&str> = event
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        if data.is_empty() {
            continue;
        }
        if let Ok(v) = serde_json::from_str::<Value>(&data.join("\n"))
            && (v.get("result").is_some() || v.get("error").is_some())
        {
            last = Some(v);
        }
    }
    last
}

fn malformed(message: &str) -> CallFailure {
    CallFailure::Seller(SellerError {
        code: "INVALID_RESPONSE".into(),
        message: message.into(),
        recovery: Recovery::Transient,
        retry_after_s: None,
    })
}

/// An AdCP error object, classified by its `recovery` (transient when absent, as the spec's
/// forward-compatible decoding says).
fn seller_error(e: &Value) -> CallFailure {
    let recovery = match e.get("recovery").and_then(Value::as_str) {
        Some("correctable") => Recovery::Correctable,
        Some("terminal") => Recovery::Terminal,
        _ => Recovery::Transient,
    };
    let retry_after_s = e
        .get("retry_after")
        .and_then(Value::as_f64)
        .map(|s| s.ceil().clamp(1.0, 3600.0) as u32);
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
    })
}
