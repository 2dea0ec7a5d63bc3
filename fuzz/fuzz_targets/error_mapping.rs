//! Finding a seller's `adcp_error` in any transport's failure shape, and the action it
//! calls for. Input: a JSON response.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orchestrator_core::seller::error_mapping::{action, code_recovery, find_error};

fuzz_target!(|data: &[u8]| {
    let Ok(response) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let found = find_error(&response);
    if let Some(e) = &found {
        // Only an object with a non-empty string code is an AdCP error.
        let code = e["code"].as_str().expect("a found error has a string code");
        assert!(!code.is_empty());
        let _ = code_recovery(code);
    }
    let _ = action(found.as_ref()).as_str();
    let _ = action(Some(&response));
});
