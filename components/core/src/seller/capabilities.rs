//! Fetching a seller's capabilities (`get_adcp_capabilities`).

use super::port::{CallFailure, SellerCalls, SellerError};
use crate::records::capabilities::{Capabilities, VersionEnvelope};
use crate::records::seller::Seller;
use serde_json::json;

/// What discovery established: the declaration, and the version fields later calls carry.
#[derive(Debug, Clone, PartialEq)]
pub struct Discovered {
    pub capabilities: Capabilities,
    pub envelope: VersionEnvelope,
}

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

/// Calls the seller's `get_adcp_capabilities` (exempt from idempotency keys) with our
/// version fields; a seller that refuses them as unexpected arguments is asked once more
/// without, and is then called without them from now on.
pub async fn fetch(
    calls: &impl SellerCalls,
    seller: &Seller,
    now_ms: u64,
) -> Result<Discovered, FetchError> {
    let probe = |envelope: VersionEnvelope| Seller {
        version_envelope: envelope,
        ..seller.clone()
    };
    let first = calls
        .call(
            &probe(VersionEnvelope::default()),
            "get_adcp_capabilities",
            json!({}),
        )
        .await;
    let (payload, envelope_less) = match first {
        Err(CallFailure::Seller(e)) if refuses_unknown_arguments(&e) => {
            let bare = probe(VersionEnvelope::none());
            (
                calls.call(&bare, "get_adcp_capabilities", json!({})).await,
                true,
            )
        }
        other => (other, false),
    };
    let payload = payload.map_err(|e| match e {
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
    let capabilities = Capabilities::parse(&payload, now_ms).map_err(FetchError::Invalid)?;
    let envelope = if envelope_less {
        VersionEnvelope::none()
    } else {
        VersionEnvelope::for_capabilities(&capabilities)
    };
    Ok(Discovered {
        capabilities,
        envelope,
    })
}

/// A validation refusal of an argument the seller does not know (an SDK that checks tool
/// arguments strictly, e.g. `VALIDATION_ERROR: Unexpected keyword argument`).
fn refuses_unknown_arguments(e: &SellerError) -> bool {
    let m = e.message.to_ascii_lowercase();
    matches!(e.code.as_str(), "VALIDATION_ERROR" | "INVALID_REQUEST")
        && ((m.contains("unexpected") && m.contains("argument"))
            || m.contains("extra inputs are not permitted")
            || m.contains("adcp_version")
            || m.contains("adcp_major_version"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seller::port::Recovery;
    use crate::testing::{conformant_capabilities, sample_seller};
    use futures::executor::block_on;
    use serde_json::Value;
    use std::cell::RefCell;

    /// A seller that validates arguments strictly when `strict`: any version field is refused.
    struct Strict {
        strict: bool,
        declared: Value,
        sent: RefCell<Vec<VersionEnvelope>>,
    }

    impl SellerCalls for Strict {
        async fn call(&self, s: &Seller, _: &str, _: Value) -> Result<Value, CallFailure> {
            self.sent.borrow_mut().push(s.version_envelope.clone());
            if self.strict && s.version_envelope != VersionEnvelope::none() {
                return Err(CallFailure::Seller(SellerError {
                    code: "VALIDATION_ERROR".into(),
                    message: "Unexpected keyword argument".into(),
                    recovery: Recovery::Correctable,
                    retry_after_s: None,
                    adcp: true,
                }));
            }
            Ok(self.declared.clone())
        }
    }

    fn discover(strict: bool, declared: Value) -> (Result<Discovered, FetchError>, usize) {
        let seller = Strict {
            strict,
            declared,
            sent: Default::default(),
        };
        let out = block_on(fetch(&seller, &sample_seller(), 5));
        (out, seller.sent.borrow().len())
    }

    #[test]
    fn a_seller_refusing_the_version_fields_is_asked_once_more_without_them() {
        let (got, calls) = discover(true, conformant_capabilities());
        assert_eq!(calls, 2);
        let got = got.unwrap();
        assert_eq!(got.envelope, VersionEnvelope::none());
        assert_eq!(got.capabilities.major_versions, vec![3]);
    }

    #[test]
    fn a_seller_taking_the_version_fields_gets_those_it_declares() {
        let mut declared = conformant_capabilities();
        declared["adcp"]["supported_versions"] = serde_json::json!(["3.0"]);
        let (got, calls) = discover(false, declared);
        assert_eq!(calls, 1);
        assert_eq!(
            got.unwrap().envelope,
            VersionEnvelope {
                adcp_version: Some("3.0".into()),
                adcp_major_version: Some(3)
            }
        );
    }

    #[test]
    fn other_refusals_are_not_retried() {
        struct Refuses;
        impl SellerCalls for Refuses {
            async fn call(&self, _: &Seller, _: &str, _: Value) -> Result<Value, CallFailure> {
                Err(CallFailure::Seller(SellerError {
                    code: "VALIDATION_ERROR".into(),
                    message: "account is required".into(),
                    recovery: Recovery::Correctable,
                    retry_after_s: None,
                    adcp: true,
                }))
            }
        }
        let got = block_on(fetch(&Refuses, &sample_seller(), 5));
        assert!(
            matches!(got, Err(FetchError::Unavailable { .. })),
            "{got:?}"
        );
    }
}
