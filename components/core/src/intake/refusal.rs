//! A refused delivery: its HTTP answer and the counted reason.

use crate::foundation::http::ApiError;
use crate::records::{interop::Defect, journal, metrics::Rejection};
use http::StatusCode;

pub struct Refusal {
    pub error: ApiError,
    pub reason: Rejection,
    pub www_authenticate: Option<String>,
    /// The tenant whose operation the delivery was for, once known (for its summary).
    pub tenant_id: Option<String>,
    /// The sender was authenticated: only then is the refusal counted (a write).
    pub authenticated: bool,
    /// An authenticated seller's spec violation: recorded on the seller, and the operation
    /// is polled at once instead of waiting for the backup poll.
    pub violation: Option<Defect>,
}

impl Refusal {
    pub fn new(
        reason: Rejection,
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Refusal {
            error: ApiError::new(status, code, message),
            reason,
            www_authenticate: None,
            tenant_id: None,
            authenticated: false,
            violation: None,
        }
    }

    /// Refused for a spec violation by a sender that proved who it is.
    pub fn violation(mut self, defect: Defect) -> Self {
        self.authenticated = true;
        self.violation = Some(defect);
        self
    }

    pub fn unauthenticated(code: &'static str, message: impl Into<String>) -> Self {
        Refusal::new(
            Rejection::Unauthenticated,
            StatusCode::UNAUTHORIZED,
            code,
            message,
        )
    }
}

impl From<crate::foundation::error::StoreError> for Refusal {
    fn from(e: crate::foundation::error::StoreError) -> Self {
        // A 503 the sender will retry, not counted as its fault: the reason only labels the log.
        Refusal {
            error: e.into(),
            reason: Rejection::BadRequest,
            www_authenticate: None,
            tenant_id: None,
            authenticated: false,
            violation: None,
        }
    }
}

impl From<journal::JournalError> for Refusal {
    fn from(e: journal::JournalError) -> Self {
        Refusal {
            error: e.into(),
            reason: Rejection::BadRequest,
            www_authenticate: None,
            tenant_id: None,
            authenticated: false,
            violation: None,
        }
    }
}

/// The same `idempotency_key` delivered with another payload.
pub fn key_conflict() -> Refusal {
    Refusal::new(
        Rejection::Conflict,
        StatusCode::CONFLICT,
        "idempotency_conflict",
        "this idempotency_key was already delivered with a different payload",
    )
}
