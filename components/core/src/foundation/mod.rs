//! What every layer builds on: errors, the injected clock and randomness, logging, the
//! key-value store and its key layout, outbound transport and the rules for URLs it calls,
//! sealing, and the HTTP types shared by the API and the webhook intake.

pub mod clock;
pub mod cx;
pub mod error;
pub mod http;
pub mod keys;
pub mod log;
pub mod outbound_url;
pub mod seal;
pub mod store;
pub mod transport;
