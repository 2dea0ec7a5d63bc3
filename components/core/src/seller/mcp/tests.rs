use super::*;
use crate::testing::{ScriptedTransport, SeededEntropy};

#[test]
fn mcp_response_extraction_vectors() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/adcp/test-vectors/mcp-response-extraction.json"
    );
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(path).expect("spec vectors beside the project"),
    )
    .unwrap();
    let vectors = v["vectors"].as_array().unwrap();
    assert!(vectors.len() >= 15);
    for case in vectors {
        let got = extract_success(&case["response"]).unwrap_or(Value::Null);
        assert_eq!(got, case["expected_data"], "{}", case["id"]);
    }
}
use crate::foundation::store::MemoryStore;
use futures::executor::block_on;

const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// Entropy that makes every request id 1, as the scripted answers say.
struct IdOne;
impl Entropy for IdOne {
    fn fill(&self, buf: &mut [u8]) {
        buf.fill(0);
        buf[1] = 0x08;
    }
}

fn seller(sealing: &SealingKey) -> Seller {
    Seller {
        tenant_id: "t1".into(),
        seller_id: "s1".into(),
        mcp_url: "https://seller.example/mcp".into(),
        credentials: Some(sealing.seal(
            &SeededEntropy::new(1),
            &credentials_purpose("t1", "s1"),
            b"seller-token",
        )),
        webhook_mode: None,
        auth_scheme: Default::default(),
        capabilities: None,
        version_envelope: Default::default(),
        capability_subscription: None,
        attention: None,
        created_at_ms: 0,
        updated_at_ms: 0,
    }
}

fn resp(status: u16, headers: &[(&str, &str)], body: &str) -> InboundResponse {
    let mut b = http::Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(body.as_bytes().to_vec()).unwrap()
}

fn init_ok(t: &ScriptedTransport, session: &str) {
    t.reply_with(resp(
        200,
        &[
            ("mcp-session-id", session),
            ("content-type", "application/json"),
        ],
        r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{}}}"#,
    ));
    t.reply_with(resp(202, &[], ""));
}

#[test]
fn handshake_then_call_with_session_auth_and_version_envelope() {
    let store = MemoryStore::new();
    let sealing = SealingKey::from_hex(KEY).unwrap();
    let t = ScriptedTransport::default();
    init_ok(&t, "sess-1");
    t.reply_with(resp(200, &[("content-type", "text/event-stream")],
        "event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\r\n\r\nevent: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"content\":[],\"structuredContent\":{\"status\":\"submitted\",\"task_id\":\"task_1\"}}}\r\n\r\n"));
    let calls = McpSellerCalls {
        store: &store,
        transport: &t,
        sealing: &sealing,
        clock: &crate::foundation::clock::FixedClock(0),
        entropy: &IdOne,
        sessions: Default::default(),
        deadline: Default::default(),
    };
    let out = block_on(calls.call(
        &seller(&sealing),
        "create_media_buy",
        json!({"idempotency_key": "k"}),
    ))
    .unwrap();
    assert_eq!(out, json!({"status": "submitted", "task_id": "task_1"}));
    let reqs = t.requests.borrow();
    let methods: Vec<String> = reqs
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(r.body()).unwrap()["method"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        methods,
        ["initialize", "notifications/initialized", "tools/call"]
    );
    assert!(reqs[0].headers().get("mcp-session-id").is_none());
    for r in &reqs[1..] {
        assert_eq!(r.headers()["mcp-session-id"], "sess-1");
    }
    for r in reqs.iter() {
        assert_eq!(r.headers()["authorization"], "Bearer seller-token");
        assert_eq!(r.headers()["accept"], "application/json, text/event-stream");
    }
    let call: Value = serde_json::from_slice(reqs[2].body()).unwrap();
    assert_eq!(call["params"]["arguments"]["adcp_version"], "3.1");
    assert_eq!(call["params"]["arguments"]["adcp_major_version"], 3);
    assert_eq!(call["params"]["arguments"]["idempotency_key"], "k");
}

#[test]
fn the_protocol_version_negotiated_at_initialize_is_sent_and_kept_with_the_session() {
    let store = MemoryStore::new();
    let sealing = SealingKey::from_hex(KEY).unwrap();
    let t = ScriptedTransport::default();
    t.reply_with(resp(
        200,
        &[
            ("mcp-session-id", "sess-2"),
            ("content-type", "application/json"),
        ],
        r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-03-26","capabilities":{}}}"#,
    ));
    t.reply_with(resp(202, &[], ""));
    let ok = r#"{"jsonrpc":"2.0","id":1,"result":{"structuredContent":{"status":"working"}}}"#;
    t.reply_with(resp(200, &[("content-type", "application/json")], ok));
    t.reply_with(resp(200, &[("content-type", "application/json")], ok));
    let calls = |memo| McpSellerCalls {
        store: &store,
        transport: &t,
        sealing: &sealing,
        clock: &crate::foundation::clock::FixedClock(0),
        entropy: &IdOne,
        sessions: memo,
        deadline: Default::default(),
    };
    block_on(calls(Default::default()).call(&seller(&sealing), "get_task_status", json!({})))
        .unwrap();
    // Another instance finds the session and its version in the store.
    block_on(calls(Default::default()).call(&seller(&sealing), "get_task_status", json!({})))
        .unwrap();
    let reqs = t.requests.borrow();
    assert_eq!(reqs.len(), 4);
    assert_eq!(
        reqs[0].headers()["mcp-protocol-version"],
        "2025-06-18",
        "asked"
    );
    for r in &reqs[1..] {
        assert_eq!(r.headers()["mcp-protocol-version"], "2025-03-26");
    }
    assert_eq!(
        block_on(store.get(&keys::mcp_session("t1", "s1")))
            .unwrap()
            .unwrap(),
        b"sess-2\n2025-03-26"
    );
}

#[test]
fn a_cached_session_is_reused_and_renewed_after_a_404() {
    let store = MemoryStore::new();
    let sealing = SealingKey::from_hex(KEY).unwrap();
    block_on(store.set(&keys::mcp_session("t1", "s1"), b"old")).unwrap();
    let t = ScriptedTransport::default();
    t.reply_with(resp(404, &[], ""));
    init_ok(&t, "new");
    t.reply_with(resp(200, &[("content-type", "application/json")],
        r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"{\"status\":\"completed\",\"media_buy_id\":\"mb\"}"}]}}"#));
    let calls = McpSellerCalls {
        store: &store,
        transport: &t,
        sealing: &sealing,
        clock: &crate::foundation::clock::FixedClock(0),
        entropy: &IdOne,
        sessions: Default::default(),
        deadline: Default::default(),
    };
    let out = block_on(calls.call(&seller(&sealing), "create_media_buy", json!({}))).unwrap();
    assert_eq!(
        out["media_buy_id"], "mb",
        "text content is parsed when structuredContent is absent"
    );
    assert_eq!(t.requests.borrow()[0].headers()["mcp-session-id"], "old");
    assert_eq!(t.requests.borrow()[3].headers()["mcp-session-id"], "new");
    assert_eq!(
        block_on(store.get(&keys::mcp_session("t1", "s1")))
            .unwrap()
            .unwrap(),
        b"new\n2025-06-18"
    );
    // The instance remembers the session: the next call reads nothing from the store.
    t.reply_with(resp(200, &[("content-type", "application/json")],
        r#"{"jsonrpc":"2.0","id":1,"result":{"structuredContent":{"status":"completed","media_buy_id":"mb2"}}}"#));
    store.reset_counts();
    let out = block_on(calls.call(&seller(&sealing), "create_media_buy", json!({}))).unwrap();
    assert_eq!(out["media_buy_id"], "mb2");
    assert_eq!(t.requests.borrow()[4].headers()["mcp-session-id"], "new");
    assert_eq!(store.total_ops(), 0);
}

#[test]
fn errors_are_classified_by_recovery() {
    let store = MemoryStore::new();
    let sealing = SealingKey::from_hex(KEY).unwrap();
    let cases = [
        (
            resp(
                200,
                &[("content-type", "application/json")],
                r#"{"jsonrpc":"2.0","id":1,"result":{"isError":true,"content":[],"structuredContent":{"adcp_error":{"code":"RATE_LIMITED","message":"slow down","recovery":"transient","retry_after":2.5}}}}"#,
            ),
            ("RATE_LIMITED", Recovery::Transient, Some(3)),
        ),
        (
            resp(
                200,
                &[("content-type", "application/json")],
                r#"{"jsonrpc":"2.0","id":1,"result":{"isError":true,"content":[],"structuredContent":{"errors":[{"code":"BUDGET_TOO_LOW","message":"m","recovery":"correctable"}]}}}"#,
            ),
            ("BUDGET_TOO_LOW", Recovery::Correctable, None),
        ),
        (
            resp(
                200,
                &[("content-type", "application/json")],
                r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32029,"message":"rate"}}"#,
            ),
            ("RATE_LIMITED", Recovery::Transient, None),
        ),
        (
            resp(503, &[("retry-after", "7")], ""),
            ("SERVICE_UNAVAILABLE", Recovery::Transient, Some(7)),
        ),
        (
            resp(403, &[], ""),
            ("AUTH_INVALID", Recovery::Terminal, None),
        ),
    ];
    for (r, (code, recovery, retry)) in cases {
        let t = ScriptedTransport::default();
        init_ok(&t, "s");
        t.reply_with(r);
        let calls = McpSellerCalls {
            store: &store,
            transport: &t,
            sealing: &sealing,
            clock: &crate::foundation::clock::FixedClock(0),
            entropy: &IdOne,
            sessions: Default::default(),
            deadline: Default::default(),
        };
        let err =
            block_on(calls.call(&seller(&sealing), "create_media_buy", json!({}))).unwrap_err();
        let CallFailure::Seller(e) = err else {
            panic!("{err:?}")
        };
        assert_eq!(
            (e.code.as_str(), e.recovery, e.retry_after_s),
            (code, recovery, retry)
        );
        block_on(store.delete(&keys::mcp_session("t1", "s1"))).unwrap();
    }
}

#[test]
fn error_branches_unknown_recoveries_and_http_dates_are_classified() {
    let store = MemoryStore::new();
    let sealing = SealingKey::from_hex(KEY).unwrap();
    let json_ct = [("content-type", "application/json")];
    let cases = [
        // CreateMediaBuyError: `errors[]` and no success field, without isError.
        (
            resp(
                200,
                &json_ct,
                r#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"structuredContent":{"errors":[{"code":"IDEMPOTENCY_CONFLICT","message":"m"}]}}}"#,
            ),
            ("IDEMPOTENCY_CONFLICT", Recovery::Correctable, None),
        ),
        // No `recovery`, an unknown code: a human decides, it is not retried blindly.
        (
            resp(
                200,
                &json_ct,
                r#"{"jsonrpc":"2.0","id":1,"result":{"isError":true,"content":[{"type":"text","text":"{\"adcp_error\":{\"code\":\"SOMETHING_NEW\",\"message\":\"m\"}}"}]}}"#,
            ),
            ("SOMETHING_NEW", Recovery::Terminal, None),
        ),
        // JSON-RPC error carrying an AdCP error in `data`.
        (
            resp(
                200,
                &json_ct,
                r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"x","data":{"adcp_error":{"code":"RATE_LIMITED","retry_after":9}}}}"#,
            ),
            ("RATE_LIMITED", Recovery::Transient, Some(9)),
        ),
        // Retry-After as an HTTP date, 120 s after the clock (0).
        (
            resp(503, &[("retry-after", "Thu, 01 Jan 1970 00:02:00 GMT")], ""),
            ("SERVICE_UNAVAILABLE", Recovery::Transient, Some(120)),
        ),
    ];
    for (r, (code, recovery, retry)) in cases {
        let t = ScriptedTransport::default();
        init_ok(&t, "s");
        t.reply_with(r);
        let calls = McpSellerCalls {
            store: &store,
            transport: &t,
            sealing: &sealing,
            clock: &crate::foundation::clock::FixedClock(0),
            entropy: &IdOne,
            sessions: Default::default(),
            deadline: Default::default(),
        };
        let err =
            block_on(calls.call(&seller(&sealing), "create_media_buy", json!({}))).unwrap_err();
        let CallFailure::Seller(e) = err else {
            panic!("{err:?}")
        };
        assert_eq!(
            (e.code.as_str(), e.recovery, e.retry_after_s),
            (code, recovery, retry)
        );
        block_on(store.delete(&keys::mcp_session("t1", "s1"))).unwrap();
    }
}

#[test]
fn sse_answers_are_matched_by_request_id_and_basic_auth_is_encoded() {
    let store = MemoryStore::new();
    let sealing = SealingKey::from_hex(KEY).unwrap();
    let mut s = seller(&sealing);
    s.auth_scheme = AuthScheme::Basic;
    s.credentials = Some(sealing.seal(
        &SeededEntropy::new(2),
        &credentials_purpose("t1", "s1"),
        b"buyer:pa ss",
    ));
    let t = ScriptedTransport::default();
    init_ok(&t, "s");
    // A server-to-client request with another id comes first, then our answer, then an
    // unrelated message: only the answer to id 1 counts.
    t.reply_with(resp(200, &[("content-type", "text/event-stream")],
        "data: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"structuredContent\":{\"status\":\"failed\"}}}\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"structuredContent\":{\"status\":\"working\",\"task_id\":\"t\"}}}\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":8,\"result\":{}}\n\n"));
    let calls = McpSellerCalls {
        store: &store,
        transport: &t,
        sealing: &sealing,
        clock: &crate::foundation::clock::FixedClock(0),
        entropy: &IdOne,
        sessions: Default::default(),
        deadline: Default::default(),
    };
    let out = block_on(calls.call(&s, "create_media_buy", json!({}))).unwrap();
    assert_eq!(out["status"], "working");
    // base64("buyer:pa ss")
    assert_eq!(
        t.requests.borrow()[2].headers()["authorization"],
        "Basic YnV5ZXI6cGEgc3M="
    );
}
