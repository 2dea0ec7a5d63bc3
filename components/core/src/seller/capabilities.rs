//! Fetching a seller's capabilities (`get_adcp_capabilities`).

use super::port::{CallFailure, SellerCalls};
use crate::records::{capabilities::Capabilities, seller::Seller};
use serde_json::json;

#[derive(Debug, Clone, PartialEq)]
pub enum FetchError {
    /// No usable answer (seller down, breaker open): worth retrying. The message is safe
    /// to show the tenant; for a transport failure it is a fixed category, and what the
    /// network said is in `detail`, for logs only (it would reveal which addresses answer).
    Unavailable {
        message: String,
        detail: Option<String>,
    },
    /// The seller answered something that is not a capabilities document.
    Invalid(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Unavailable { message, .. } => {
                write!(f, "capabilities unavailable: {message}")
            }
            FetchError::Invalid(m) => write!(f, "invalid capabilities: {m}"),
        }
    }
}

/// Calls the seller's `get_adcp_capabilities` (exempt from idempotency keys).
pub async fn fetch(
    calls: &impl SellerCalls,
    seller: &Seller,
    now_ms: u64,
) -> Result<Capabilities, FetchError> {
    let payload = calls
        .call(seller, "get_adcp_capabilities", json!({}))
        .await
        .map_err(|e| match e {
            CallFailure::Transport(t) => FetchError::Unavailable {
                message: "the seller could not be reached".into(),
                detail: Some(t.to_string()),
            },
            CallFailure::Deferred { .. } => FetchError::Unavailable {
                message: "the seller's circuit breaker is open".into(),
                detail: None,
            },
            // The seller's own AdCP answer: its tenant may see it.
            CallFailure::Seller(s) => FetchError::Unavailable {
                message: format!("{}: {}", s.code, s.message),
                detail: None,
            },
        })?;
    Capabilities::parse(&payload, now_ms).map_err(FetchError::Invalid)
}
