//! A refused delivery: its HTTP answer and the counted reason.

use crate::foundation::http::ApiError;
use crate::records::journal::{self};
use crate::records::metrics::Rejection;
use http::StatusCode;

/// A refused delivery: the HTTP answer and the counted reason.
pub struct Refusal {
    pub error: ApiError,
    pub reason: Rejection,
    pub www_authenticate: Option<String>,
    /// The tenant whose operation the delivery was for, once known (for its summary).
    pub tenant_id: Option<String>,
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
        }
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
        // Not the sender's fault: a 503 it will retry. Counted as a bad request would be
        // wrong; the reason here only labels the log line.
        Refusal {
            error: e.into(),
            reason: Rejection::BadRequest,
            www_authenticate: None,
            tenant_id: None,
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
