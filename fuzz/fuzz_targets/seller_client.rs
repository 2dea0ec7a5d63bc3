//! A seller's MCP answers: success extraction (`structuredContent`, `content[].text`),
//! JSON-RPC and AdCP errors, SSE bodies, `Retry-After`, session renewal after a 404, and
//! the `get_adcp_capabilities` document.
//!
//! Input: a response in the seed text format whose first line is the HTTP status (`200`),
//! then headers (e.g. `Content-Type: text/event-stream`), an empty line and the body. The
//! client meets it as the answer to `tools/call` after a clean handshake.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orchestrator_core::foundation::clock::FixedClock;
use orchestrator_core::foundation::seal::SealingKey;
use orchestrator_core::foundation::store::MemoryStore;
use orchestrator_core::records::capabilities::Capabilities;
use orchestrator_core::records::seller::Seller;
use orchestrator_core::seller::mcp::{McpSellerCalls, extract_success};
use orchestrator_core::seller::port::CallFailure;
use orchestrator_core::seller::port::SellerCalls;
use orchestrator_fuzz::{NOW_MS, Raw, ScriptedTransport, block_on};
use serde_json::{Value, json};

const SEAL_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fuzz_target!(|data: &[u8]| {
    let raw = Raw::parse(data);
    if let Ok(v) = serde_json::from_slice::<Value>(&raw.body) {
        for result in [Some(&v), v.get("result")].into_iter().flatten() {
            if let Some(p) = extract_success(result) {
                assert!(p.is_object(), "{p}");
                let _ = Capabilities::parse(&p, NOW_MS);
            }
        }
    }

    let status = raw.method.parse::<u16>().unwrap_or(200);
    let transport = ScriptedTransport::default();
    let session = [("mcp-session-id".to_string(), "sess-1".to_string())];
    for _ in 0..2 {
        transport.push(200, &session, br#"{"jsonrpc":"2.0","id":0,"result":{}}"#);
        transport.push(202, &[], b"");
        transport.push(status, &raw.headers, &raw.body);
    }
    let store = MemoryStore::new();
    let sealing = SealingKey::from_hex(SEAL_KEY).expect("a valid key");
    let seller: Seller = serde_json::from_value(json!({
        "tenant_id": "t1", "seller_id": "s1", "mcp_url": "https://seller.example/mcp",
        "created_at_ms": 0, "updated_at_ms": 0}))
    .expect("a valid seller record");
    let calls = McpSellerCalls {
        store: &store,
        transport: &transport,
        sealing: &sealing,
        clock: &FixedClock(NOW_MS),
        entropy: &ZeroEntropy,
        sessions: Default::default(),
        deadline: Default::default(),
    };
    match block_on(calls.call(&seller, "create_media_buy", json!({"account": {}}))) {
        Ok(payload) => assert!(payload.is_object(), "{payload}"),
        Err(CallFailure::Seller(e)) => {
            assert!(
                e.retry_after_s.is_none_or(|s| (1..=3600).contains(&s)),
                "{e:?}"
            )
        }
        Err(_) => {}
    }
});

/// Request ids from zero bytes (id 0): inputs can then answer "our" request or another.
struct ZeroEntropy;
impl orchestrator_core::foundation::clock::Entropy for ZeroEntropy {
    fn fill(&self, buf: &mut [u8]) {
        buf.fill(0);
    }
}
