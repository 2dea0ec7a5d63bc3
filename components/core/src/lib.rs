//! The orchestrator's domain logic, free of any Spin dependency.
//!
//! Everything here is a pure function over data or an `async` function over the
//! [`store::Store`] trait, with the clock and randomness passed in
//! ([`clock::Clock`], [`clock::Entropy`]). The Spin components are thin adapters
//! that supply a real store, clock and HTTP client; native tests supply
//! [`store::MemoryStore`] and fixed clocks.

pub mod api;
pub mod capabilities;
pub mod clock;
pub mod dispatch;
pub mod effects;
pub mod error;
pub mod error_mapping;
pub mod hmac_signature;
pub mod intake;
pub mod journal;
pub mod jwks;
pub mod keys;
pub mod linked;
pub mod log;
pub mod metrics;
pub mod notify;
pub mod operation;
pub mod purge;
pub mod reconcile;
pub mod rfc9421;
pub mod schedule;
pub mod seal;
pub mod seller;
pub mod seller_client;
pub mod state_machine;
pub mod status;
pub mod store;
pub mod sweep;
pub mod task;
pub mod tenant;
pub mod transport;
pub mod webhook_payload;
