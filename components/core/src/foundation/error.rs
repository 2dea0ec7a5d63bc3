//! Errors the core reports, split the way callers must react to them.

use std::fmt;

/// A key-value store failure, split by what the caller can do. (A conflict with what is
/// stored, such as a taken operation id, is the journal's `JournalError::Exists`.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The store failed, did not answer, or a concurrent writer held the way. Retryable:
    /// nothing the core writes is left half-applied in a way a retry cannot finish.
    Unavailable(String),
    /// A stored value is not what the code expects (not JSON of its type, not a counter).
    /// Retrying reads the same bytes: the value needs an operator, the caller moves on.
    Corrupt(String),
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Unavailable(m) => write!(f, "key-value store: {m}"),
            StoreError::Corrupt(m) => write!(f, "key-value store: corrupt value: {m}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// One failing input field, for 422 answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}
