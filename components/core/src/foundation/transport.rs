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
    /// The whole call, from sending to the last body byte: a peer that trickles its answer
    /// a byte at a time passes every other timeout, and is cut off here.
    pub total_ms: u64,
}

impl Limits {
    /// Tool calls to a seller: a sync answer is expected within ~30 s.
    pub const SELLER: Limits = Limits {
        connect_timeout_ms: 5_000,
        first_byte_timeout_ms: 30_000,
        between_bytes_timeout_ms: 10_000,
        max_body_bytes: 8 * 1024 * 1024,
        total_ms: 30_000,
    };
    /// Buyer notification callbacks: Standard Webhooks suggests a 15–30 s budget.
    pub const CALLBACK: Limits = Limits {
        connect_timeout_ms: 5_000,
        first_byte_timeout_ms: 15_000,
        between_bytes_timeout_ms: 5_000,
        max_body_bytes: 64 * 1024,
        total_ms: 15_000,
    };
    /// Key discovery (brand.json, JWKS): small documents, short timeouts.
    pub const KEY_DISCOVERY: Limits = Limits {
        connect_timeout_ms: 3_000,
        first_byte_timeout_ms: 5_000,
        between_bytes_timeout_ms: 5_000,
        max_body_bytes: 1024 * 1024,
        total_ms: 8_000,
    };

    /// These limits, none longer than `remaining_ms`.
    pub fn within(self, remaining_ms: u64) -> Limits {
        Limits {
            connect_timeout_ms: self.connect_timeout_ms.min(remaining_ms),
            first_byte_timeout_ms: self.first_byte_timeout_ms.min(remaining_ms),
            between_bytes_timeout_ms: self.between_bytes_timeout_ms.min(remaining_ms),
            total_ms: self.total_ms.min(remaining_ms),
            ..self
        }
    }
}

/// A time by which calls must be over (a sweep tick's share of its budget), or none.
#[derive(Debug, Default)]
pub struct Deadline(std::cell::Cell<Option<u64>>);

impl Deadline {
    pub fn set(&self, until_ms: Option<u64>) {
        self.0.set(until_ms);
    }

    /// `limits` cut to the time left at `now_ms`; an error (nothing sent, so the outcome is
    /// known) once none is left.
    pub fn limits(&self, limits: Limits, now_ms: u64) -> Result<Limits, TransportError> {
        match self.0.get() {
            None => Ok(limits),
            Some(until) if until > now_ms => Ok(limits.within(until - now_ms)),
            Some(_) => Err(TransportError::Connect(
                "no time left for this call in the sweep tick; not sent".into(),
            )),
        }
    }
}

/// A [`Transport`] whose calls end by a [`Deadline`].
pub struct Bounded<'a, T: Transport> {
    pub inner: &'a T,
    pub clock: &'a dyn crate::foundation::clock::Clock,
    pub deadline: Deadline,
}

impl<T: Transport> Transport for Bounded<'_, T> {
    async fn send(
        &self,
        req: OutboundRequest,
        limits: Limits,
    ) -> Result<InboundResponse, TransportError> {
        let limits = self.deadline.limits(limits, self.clock.now_ms())?;
        self.inner.send(req, limits).await
    }
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
