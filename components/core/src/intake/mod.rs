//! Webhook intake: `POST /webhooks/adcp/{operation_id}` from sellers. Cheapest and safest first:
//! method, content type and size (before any verification), the operation, authentication in the
//! mode the operation registered (another mode is refused: a switch, never a fallback), payload,
//! then de-duplication and the state machine through the journal. Nothing is written before
//! authentication passes: a refusal before it reads the operation (an unknown id also its
//! journal's counter, RFC 9421 the seller's cached keys) and only logs, so forged traffic
//! costs no write and cannot evict real history. A sender that authenticated but broke the
//! spec (no token echoed, an HMAC over re-serialized bytes, an invalid envelope) is refused
//! all the same, recorded on the seller's `interop` diagnostic, and its operation is polled at
//! the next tick ([`interop`]). An accepted delivery answers after three
//! writes; its effects are settled after the answer ([`settle`]). De-duplication lives in the operation record
//! ([`crate::model::operation::DeliveryLedger`]): a repeat of an applied delivery answers 2xx, the
//! same key with another payload 409, one whose fold awaits an in-flight entry 503 + `Retry-After`.
//! Agent-level webhooks (a seller's `capabilities.changed`) are [`agent`]'s.

pub mod agent;
mod auth;
mod env;
mod interop;
mod receive;
mod refusal;

pub use env::{Answer, IntakeConfig, IntakeEnv, MAX_WEBHOOK_BYTES};
pub use receive::{canonical_hash, handle, settle};

#[cfg(test)]
mod agent_tests;
#[cfg(test)]
mod hmac_tests;
#[cfg(test)]
mod rfc9421_tests;
#[cfg(test)]
mod tests;
