//! Webhook intake: `POST /webhooks/adcp/{operation_id}` from sellers.
//!
//! Order of work, cheapest and safest first: method, content type and size (before any
//! verification), then the operation, then authentication in the mode the operation
//! registered (a delivery in another mode is refused: the mode is a switch, never a
//! fallback), then the payload, then de-duplication and the state machine through the
//! journal. Nothing is written before authentication passes, and a refused delivery only
//! bumps a counter and writes a log line, so forged traffic cannot evict real history.
//!
//! De-duplication lives in the operation record itself ([`crate::model::operation::DeliveryLedger`]):
//! a repeat of an applied delivery answers 2xx, the same key with another payload 409, and a
//! delivery whose fold waits on an entry still in flight 503 with `Retry-After`.

mod auth;
mod env;
mod receive;
mod refusal;

pub use env::{Answer, IntakeConfig, IntakeEnv, MAX_WEBHOOK_BYTES};
pub use receive::{canonical_hash, handle};

#[cfg(test)]
mod hmac_tests;
#[cfg(test)]
mod rfc9421_tests;
#[cfg(test)]
mod tests;
