//! Outbound HTTP as the core sees it: a request in, a response (or a classified transport
//! failure) out. Components implement [`Transport`] with Spin's outbound HTTP; tests with
//! scripted responses.

use std::fmt;

pub type OutboundRequest = http::Request<Vec<u8>>;
pub type InboundResponse = http::Response<Vec<u8>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub connect_timeout_ms: u64,
    /// Time to the first response byte (the seller's processing time).
    pub first_byte_timeout_ms: u64,
    pub between_bytes_timeout_ms: u64,
    /// Response bodies beyond this are refused (a seller's `tools/list` can exceed 1 MB).
    pub max_body_bytes: usize,
}

impl Limits {
    /// Tool calls to a seller: a sync answer is expected within ~30 s.
    pub const SELLER: Limits = Limits {
        connect_timeout_ms: 5_000,
        first_byte_timeout_ms: 30_000,
        between_bytes_timeout_ms: 10_000,
        max_body_bytes: 8 * 1024 * 1024,
    };
    /// Buyer notification callbacks: Standard Webhooks suggests a 15–30 s budget.
    pub const CALLBACK: Limits = Limits {
        connect_timeout_ms: 5_000,
        first_byte_timeout_ms: 15_000,
        between_bytes_timeout_ms: 5_000,
        max_body_bytes: 64 * 1024,
    };
    /// Key discovery (brand.json, JWKS): small documents, short timeouts.
    pub const KEY_DISCOVERY: Limits = Limits {
        connect_timeout_ms: 3_000,
        first_byte_timeout_ms: 5_000,
        between_bytes_timeout_ms: 5_000,
        max_body_bytes: 1024 * 1024,
    };
}

/// Why no HTTP response came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// The host refused the destination (not in `allowed_outbound_hosts`, or a blocked network).
    Denied(String),
    /// Connection could not be made (DNS, refused, TLS).
    Connect(String),
    /// A timeout fired; whether the seller acted is unknown.
    Timeout(String),
    /// The response body exceeded [`Limits::max_body_bytes`].
    TooLarge,
    /// The connection broke after the request was sent; whether the seller acted is unknown.
    Broken(String),
}

impl TransportError {
    /// True when the seller may have received and acted on the request.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            TransportError::Timeout(_) | TransportError::Broken(_) | TransportError::TooLarge
        )
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Denied(e) => write!(f, "outbound request denied: {e}"),
            TransportError::Connect(e) => write!(f, "connection failed: {e}"),
            TransportError::Timeout(e) => write!(f, "timed out: {e}"),
            TransportError::TooLarge => f.write_str("response body too large"),
            TransportError::Broken(e) => write!(f, "connection broken: {e}"),
        }
    }
}

impl std::error::Error for TransportError {}

#[allow(async_fn_in_trait)]
pub trait Transport {
    async fn send(
        &self,
        req: OutboundRequest,
        limits: Limits,
    ) -> Result<InboundResponse, TransportError>;
}
