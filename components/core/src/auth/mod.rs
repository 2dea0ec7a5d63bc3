//! Webhook authentication: the AdCP RFC 9421 profile, legacy HMAC, and JWKS discovery.

pub mod hmac_signature;
pub mod jwks;
pub mod rfc9421;
