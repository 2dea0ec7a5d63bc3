//! Webhook bodies: format detection, MCP envelope validation, task data extraction, the
//! canonical payload hash used for de-duplication. Input: the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orchestrator_core::{intake, webhook_payload};

fuzz_target!(|data: &[u8]| {
    let Ok(payload) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let _ = webhook_payload::detect(&payload);
    let _ = webhook_payload::data(&payload);
    if let Ok(e) = webhook_payload::envelope(&payload) {
        let _ = e.is_delivery_report();
    }
    if let Some(ts) = payload.get("timestamp").and_then(|t| t.as_str()) {
        let _ = webhook_payload::rfc3339_ms(ts);
    }
    let _ = intake::canonical_hash(&payload);
});
