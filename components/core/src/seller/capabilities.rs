//! Fetching a seller's capabilities (`get_adcp_capabilities`).

use super::port::{CallFailure, SellerCalls};
use crate::records::capabilities::Capabilities;
use crate::records::seller::Seller;
use serde_json::json;

/// Why capabilities could not be had.
#[derive(Debug, Clone, PartialEq)]
pub enum FetchError {
    /// No usable answer (seller down, breaker open): worth retrying.
    Unavailable(String),
    /// The seller answered something that is not a capabilities document.
    Invalid(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Unavailable(m) => write!(f, "capabilities unavailable: {m}"),
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
            CallFailure::Transport(t) => FetchError::Unavailable(t.to_string()),
            CallFailure::Deferred { .. } => {
                FetchError::Unavailable("the seller's circuit breaker is open".into())
            }
            CallFailure::Seller(s) => FetchError::Unavailable(format!("{}: {}", s.code, s.message)),
        })?;
    Capabilities::parse(&payload, now_ms).map_err(FetchError::Invalid)
}
