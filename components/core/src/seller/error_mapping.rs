//! Finding the AdCP error in a failed seller response, whatever the transport put it in
//! (AdCP `transport-errors.mdx`), and what the caller should do about it.

use crate::seller::port::Recovery;
use serde_json::Value;

/// The recovery class of every error code of AdCP 3.1.19 (`enums/error-code.json`
/// `enumMetadata`; a test checks this table against the schema).
pub const CODE_RECOVERY: &[(&str, Recovery)] = &[
    ("INVALID_REQUEST", Recovery::Correctable),
    ("AUTH_REQUIRED", Recovery::Correctable),
    ("AUTH_MISSING", Recovery::Correctable),
    ("AUTH_INVALID", Recovery::Terminal),
    ("AUTHORIZATION_REQUIRED", Recovery::Correctable),
    ("RATE_LIMITED", Recovery::Transient),
    ("SERVICE_UNAVAILABLE", Recovery::Transient),
    ("CONFIGURATION_ERROR", Recovery::Terminal),
    ("POLICY_VIOLATION", Recovery::Correctable),
    ("PRODUCT_NOT_FOUND", Recovery::Correctable),
    ("PRODUCT_UNAVAILABLE", Recovery::Correctable),
    ("PROPOSAL_EXPIRED", Recovery::Correctable),
    ("BUDGET_TOO_LOW", Recovery::Correctable),
    ("CREATIVE_REJECTED", Recovery::Correctable),
    ("CREATIVE_VALUE_NOT_ALLOWED", Recovery::Correctable),
    ("UNSUPPORTED_FEATURE", Recovery::Correctable),
    ("UNPRICEABLE_OUTPUT", Recovery::Correctable),
    ("UNSUPPORTED_GRANULARITY", Recovery::Correctable),
    ("UNSUPPORTED_PROVISIONING", Recovery::Correctable),
    ("AUDIENCE_TOO_SMALL", Recovery::Correctable),
    ("ACCOUNT_NOT_FOUND", Recovery::Terminal),
    ("ACCOUNT_SETUP_REQUIRED", Recovery::Correctable),
    ("ACCOUNT_AMBIGUOUS", Recovery::Correctable),
    ("ACCOUNT_PAYMENT_REQUIRED", Recovery::Terminal),
    ("ACCOUNT_SUSPENDED", Recovery::Terminal),
    ("COMPLIANCE_UNSATISFIED", Recovery::Correctable),
    ("GOVERNANCE_DENIED", Recovery::Correctable),
    ("BUDGET_EXHAUSTED", Recovery::Terminal),
    ("BUDGET_EXCEEDED", Recovery::Correctable),
    ("BUDGET_CAP_REACHED", Recovery::Correctable),
    ("CONFLICT", Recovery::Transient),
    ("IDEMPOTENCY_CONFLICT", Recovery::Correctable),
    ("IDEMPOTENCY_EXPIRED", Recovery::Correctable),
    ("IDEMPOTENCY_IN_FLIGHT", Recovery::Transient),
    ("CREATIVE_DEADLINE_EXCEEDED", Recovery::Correctable),
    ("CREATIVE_INACCESSIBLE", Recovery::Correctable),
    ("INVALID_STATE", Recovery::Correctable),
    ("MEDIA_BUY_NOT_FOUND", Recovery::Correctable),
    ("NOT_CANCELLABLE", Recovery::Correctable),
    ("PACKAGE_NOT_FOUND", Recovery::Correctable),
    ("CREATIVE_NOT_FOUND", Recovery::Correctable),
    ("SIGNAL_NOT_FOUND", Recovery::Correctable),
    ("SIGNAL_TARGETING_INCOMPATIBLE", Recovery::Correctable),
    ("SESSION_NOT_FOUND", Recovery::Correctable),
    ("PLAN_NOT_FOUND", Recovery::Correctable),
    ("REFERENCE_NOT_FOUND", Recovery::Correctable),
    ("SESSION_TERMINATED", Recovery::Correctable),
    ("VALIDATION_ERROR", Recovery::Correctable),
    ("PRODUCT_EXPIRED", Recovery::Correctable),
    ("PROPOSAL_NOT_COMMITTED", Recovery::Correctable),
    ("PROPOSAL_NOT_FOUND", Recovery::Correctable),
    ("MULTI_FINALIZE_UNSUPPORTED", Recovery::Correctable),
    ("IO_REQUIRED", Recovery::Correctable),
    ("TERMS_REJECTED", Recovery::Correctable),
    ("REQUOTE_REQUIRED", Recovery::Correctable),
    ("VERSION_UNSUPPORTED", Recovery::Correctable),
    ("CAMPAIGN_SUSPENDED", Recovery::Transient),
    ("GOVERNANCE_UNAVAILABLE", Recovery::Transient),
    ("PERMISSION_DENIED", Recovery::Correctable),
    ("SCOPE_INSUFFICIENT", Recovery::Correctable),
    ("READ_ONLY_SCOPE", Recovery::Correctable),
    ("FIELD_NOT_PERMITTED", Recovery::Correctable),
    ("PROVENANCE_REQUIRED", Recovery::Correctable),
    (
        "PROVENANCE_DIGITAL_SOURCE_TYPE_MISSING",
        Recovery::Correctable,
    ),
    ("PROVENANCE_DISCLOSURE_MISSING", Recovery::Correctable),
    ("PROVENANCE_EMBEDDED_MISSING", Recovery::Correctable),
    ("PROVENANCE_VERIFIER_NOT_ACCEPTED", Recovery::Correctable),
    ("PROVENANCE_CLAIM_CONTRADICTED", Recovery::Correctable),
    ("EVALUATOR_AGENT_NOT_ACCEPTED", Recovery::Correctable),
    ("BILLING_NOT_SUPPORTED", Recovery::Correctable),
    ("BILLING_NOT_PERMITTED_FOR_AGENT", Recovery::Correctable),
    ("BILLING_OUT_OF_BAND", Recovery::Terminal),
    ("PAYMENT_TERMS_NOT_SUPPORTED", Recovery::Correctable),
    ("BRAND_REQUIRED", Recovery::Correctable),
    ("AGENT_SUSPENDED", Recovery::Terminal),
    ("AGENT_BLOCKED", Recovery::Terminal),
    ("CREDENTIAL_IN_ARGS", Recovery::Terminal),
    ("ACTION_NOT_ALLOWED", Recovery::Correctable),
    ("PRIVATE_FIELD_IN_PUBLIC_PLACEMENT", Recovery::Correctable),
    ("FORMAT_PROJECTION_FAILED", Recovery::Correctable),
    ("FORMAT_DECLARATION_DIVERGENT", Recovery::Correctable),
    ("FORMAT_DECLARATION_V1_AMBIGUOUS", Recovery::Correctable),
    ("FORMAT_OPTION_UNRESOLVED", Recovery::Correctable),
    (
        "FORMAT_DECLARATION_V1_LOSSY_MULTI_SIZE",
        Recovery::Correctable,
    ),
    ("FORMAT_NOT_SUPPORTED", Recovery::Correctable),
    ("PIXEL_TRACKER_LOSSY_DOWNGRADE", Recovery::Correctable),
    ("PIXEL_TRACKER_UPGRADE_INFERRED", Recovery::Correctable),
    ("STALE_RESPONSE", Recovery::Transient),
    ("FEED_FETCH_FAILED", Recovery::Correctable),
    ("INVALID_FEED_FORMAT", Recovery::Correctable),
    ("ITEM_VALIDATION_FAILED", Recovery::Correctable),
    ("CATALOG_LIMIT_EXCEEDED", Recovery::Correctable),
];

/// The recovery class the spec assigns to `code`, if it knows the code.
pub fn code_recovery(code: &str) -> Option<Recovery> {
    CODE_RECOVERY
        .iter()
        .chain(LATER_CODE_RECOVERY)
        .find(|(c, _)| *c == code)
        .map(|(_, r)| *r)
}

/// Codes newer than 3.1.19 that sellers on later 3.x releases send, with the recovery the
/// spec's conformance vectors give them ("the canonical correctable fallback").
pub const LATER_CODE_RECOVERY: &[(&str, Recovery)] = &[
    ("ACCOUNT_MOVED", Recovery::Correctable),
    ("ACCOUNT_IDENTITY_CONFLICT", Recovery::Correctable),
];

/// What a caller does with a failed response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Retry later with the same key (transient).
    Retry,
    /// The request must change: report it (correctable).
    SurfaceToCaller,
    /// Needs a human (terminal, or a class we do not know).
    EscalateToHuman,
    /// No AdCP error could be found: a generic failure.
    GenericError,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Retry => "retry",
            Action::SurfaceToCaller => "surface_to_caller",
            Action::EscalateToHuman => "escalate_to_human",
            Action::GenericError => "generic_error",
        }
    }
}

/// The `adcp_error` of a failed response, in the spec's order: MCP `structuredContent.adcp_error`
/// (with `isError`), A2A artifact then status message data parts, JSON-RPC `error.data.adcp_error`,
/// MCP text content parsed as JSON (with `isError`). It needs a non-empty string `code`.
pub fn find_error(response: &Value) -> Option<Value> {
    let is_error = response
        .get("isError")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let data_parts = |parts: Option<&Value>| -> Option<Value> {
        parts?
            .as_array()?
            .iter()
            .find_map(|p| p.pointer("/data/adcp_error").cloned())
    };
    let candidates = [
        response
            .pointer("/structuredContent/adcp_error")
            .filter(|_| is_error)
            .cloned(),
        response
            .get("artifacts")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find_map(|art| data_parts(art.get("parts")))),
        data_parts(response.pointer("/status/message/parts")),
        response.pointer("/error/data/adcp_error").cloned(),
        response
            .get("content")
            .and_then(Value::as_array)
            .filter(|_| is_error)
            .and_then(|c| {
                c.iter().find_map(|item| {
                    let text = item.get("text")?.as_str()?;
                    serde_json::from_slice::<Value>(text.as_bytes())
                        .ok()?
                        .get("adcp_error")
                        .cloned()
                })
            }),
    ];
    candidates.into_iter().flatten().find(|e| {
        e.get("code")
            .and_then(Value::as_str)
            .is_some_and(|c| !c.is_empty())
    })
}

/// What to do about an error: its own `recovery`, else the code's class in the spec, else a
/// human (an unknown class or code is not retried blindly).
pub fn action(error: Option<&Value>) -> Action {
    let Some(e) = error else {
        return Action::GenericError;
    };
    let recovery = match e.get("recovery").and_then(Value::as_str) {
        Some("transient") => Some(Recovery::Transient),
        Some("correctable") => Some(Recovery::Correctable),
        Some("terminal") => Some(Recovery::Terminal),
        Some(_) => None,
        None => e
            .get("code")
            .and_then(Value::as_str)
            .and_then(code_recovery),
    };
    match recovery {
        Some(Recovery::Transient) => Action::Retry,
        Some(Recovery::Correctable) => Action::SurfaceToCaller,
        Some(Recovery::Terminal) | None => Action::EscalateToHuman,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(path: &str) -> Value {
        let p = format!("{}/../../../shared/adcp/{path}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(p).expect("spec files beside the project"))
            .unwrap()
    }

    #[test]
    fn the_table_is_the_schema() {
        let schema = load("schemas-3.1.19/enums/error-code.json");
        let codes = schema["enum"].as_array().unwrap();
        assert_eq!(codes.len(), CODE_RECOVERY.len());
        for code in codes {
            let code = code.as_str().unwrap();
            let expected = match schema["enumMetadata"][code]["recovery"].as_str().unwrap() {
                "transient" => Recovery::Transient,
                "correctable" => Recovery::Correctable,
                _ => Recovery::Terminal,
            };
            assert_eq!(code_recovery(code), Some(expected), "{code}");
        }
    }

    #[test]
    fn transport_error_mapping_vectors() {
        let v = load("test-vectors/transport-error-mapping.json");
        let vectors = v["vectors"].as_array().unwrap();
        assert_eq!(vectors.len(), 32);
        for case in vectors {
            let found = find_error(&case["response"]);
            assert_eq!(
                found.clone().unwrap_or(Value::Null),
                case["expected_error"],
                "{}",
                case["id"]
            );
            assert_eq!(
                action(found.as_ref()).as_str(),
                case["expected_action"].as_str().unwrap(),
                "{}",
                case["id"]
            );
        }
    }
}
