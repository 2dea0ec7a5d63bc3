//! Webhook bodies: format detection, MCP envelope validation, task data extraction, the
//! canonical payload hash used for de-duplication. Input: the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orchestrator_core::{intake, model::payload};

fuzz_target!(|data: &[u8]| {
    let Ok(payload) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let _ = payload::detect(&payload);
    let _ = payload::data(&payload);
    if let Ok(e) = payload::envelope(&payload) {
        let _ = e.is_delivery_report();
    }
    if let Some(ts) = payload.get("timestamp").and_then(|t| t.as_str()) {
        let _ = payload::rfc3339_ms(ts);
    }
    let _ = intake::canonical_hash(&payload);
});
