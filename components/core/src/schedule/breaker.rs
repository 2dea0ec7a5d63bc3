//! The circuit breaker (in progress).
