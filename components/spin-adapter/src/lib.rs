//! The only place that touches Spin: the core's [`Store`] over Spin key-value and
//! `wasi:keyvalue` atomics, the host clock and CSPRNG, variables, and HTTP response helpers.
//! Kept thin on purpose: anything that decides something belongs in `orchestrator-core`.

use futures::StreamExt;
use orchestrator_core::foundation::clock::{Clock, Entropy};
use orchestrator_core::foundation::error::StoreError;
use orchestrator_core::foundation::seal::SealingKey;
use orchestrator_core::foundation::store::{Store, StoreResult};
use orchestrator_core::foundation::transport::{
    InboundResponse, Limits, OutboundRequest, Transport, TransportError,
};
use orchestrator_core::seller::mcp::McpSellerCalls;
use spin_sdk::experimental::wasi::keyvalue::{atomics, store as wasi_store};
use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{HeaderValue, Response, StatusCode};
use spin_sdk::key_value;
use spin_sdk::wasip3::http::types::{ErrorCode, RequestOptions};
use spin_sdk::wasip3::http_compat::RequestOptionsExtension;

/// The store label every component uses (listed in each component's `key_value_stores`).
pub const STORE_LABEL: &str = "default";

/// The Spin key-value store plus the `wasi:keyvalue` bucket of the same label for atomics.
pub struct SpinStore {
    kv: key_value::Store,
    bucket: wasi_store::Bucket,
}

impl SpinStore {
    pub async fn open() -> anyhow::Result<SpinStore> {
        let kv = key_value::Store::open(STORE_LABEL)
            .await
            .map_err(|e| anyhow::anyhow!("open key-value store `{STORE_LABEL}`: {e}"))?;
        let bucket = wasi_store::open(STORE_LABEL)
            .map_err(|e| anyhow::anyhow!("open wasi:keyvalue bucket `{STORE_LABEL}`: {e:?}"))?;
        Ok(SpinStore { kv, bucket })
    }
}

fn kv_err(e: impl std::fmt::Debug) -> StoreError {
    StoreError::Unavailable(format!("{e:?}"))
}

/// Pauses (full jitter) before retrying a call SQLite refused as locked: about 0.5 s in all, far
/// inside the journal's write guard (`WRITE_GUARD_MS`, 10 s), so no retried write looks abandoned.
const BUSY_BACKOFF_MS: [u64; 8] = [2, 4, 8, 16, 32, 64, 128, 256];

/// `spin up` runs the HTTP and cron triggers as two processes on one SQLite file, which refuses
/// one of two concurrent writers at once ("database is locked": a deferred transaction cannot
/// upgrade its lock; no busy timeout). The refused call rolled back: resend it, `increment` too.
fn is_busy(e: &impl std::fmt::Debug) -> bool {
    let text = format!("{e:?}");
    text.contains("database is locked") || text.contains("DatabaseBusy")
}

async fn riding_out_locks<T, E: std::fmt::Debug, F: Future<Output = Result<T, E>>>(
    mut call: impl FnMut() -> F,
) -> StoreResult<T> {
    for pause_ms in BUSY_BACKOFF_MS {
        match call().await {
            Err(e) if is_busy(&e) => sleep_ms(jitter(pause_ms)),
            other => return other.map_err(kv_err),
        }
    }
    call().await.map_err(kv_err)
}

/// A uniformly drawn pause in `1..=max_ms`.
fn jitter(max_ms: u64) -> u64 {
    let mut b = [0u8; 8];
    HostEntropy.fill(&mut b);
    1 + u64::from_le_bytes(b) % max_ms
}

fn sleep_ms(ms: u64) {
    wasip2::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
}

impl Store for SpinStore {
    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        riding_out_locks(|| self.kv.get(key)).await
    }

    async fn set(&self, key: &str, value: &[u8]) -> StoreResult<()> {
        riding_out_locks(|| self.kv.set(key, value)).await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        riding_out_locks(|| self.kv.delete(key)).await
    }

    async fn increment(&self, key: &str, delta: i64) -> StoreResult<i64> {
        riding_out_locks(|| async { atomics::increment(&self.bucket, key, delta) }).await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> StoreResult<bool> {
        let cas = atomics::Cas::new(&self.bucket, key).map_err(kv_err)?;
        let current = cas.current().map_err(kv_err)?;
        if current.as_deref() != expected {
            return Ok(false);
        }
        match atomics::swap(cas, new) {
            Ok(()) => Ok(true),
            Err(atomics::CasError::CasFailed(_)) => Ok(false),
            Err(atomics::CasError::StoreError(e)) => Err(kv_err(e)),
        }
    }
}

/// Wall-clock time from the host (`wasi:clocks/wall-clock`).
pub struct HostClock;

impl Clock for HostClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// Log lines to stderr, which Spin collects per component.
pub struct StderrLog;

impl orchestrator_core::foundation::log::Log for StderrLog {
    fn line(&self, line: &str) {
        eprintln!("{line}");
    }
}

/// The host CSPRNG (`wasi:random`).
pub struct HostEntropy;

impl Entropy for HostEntropy {
    fn fill(&self, buf: &mut [u8]) {
        // wasi:random cannot fail; a failure here means a broken host, not bad input.
        getrandom::fill(buf).expect("wasi:random is available")
    }
}

/// Outbound HTTP through Spin (`wasi:http` client), subject to `allowed_outbound_hosts`.
pub struct SpinTransport;

/// The MCP client a component calls sellers with: Spin's store and outbound HTTP, the host's
/// randomness, no sessions known yet and no deadline but each call's own.
pub fn seller_calls<'a>(
    store: &'a SpinStore,
    sealing: &'a SealingKey,
    clock: &'a dyn Clock,
) -> McpSellerCalls<'a, SpinStore, SpinTransport> {
    McpSellerCalls {
        store,
        transport: &SpinTransport,
        sealing,
        clock,
        entropy: &HostEntropy,
        sessions: Default::default(),
        deadline: Default::default(),
    }
}

impl Transport for SpinTransport {
    async fn send(
        &self,
        req: OutboundRequest,
        limits: Limits,
    ) -> Result<InboundResponse, TransportError> {
        // The whole call races a timer: a peer that trickles its answer a byte at a time
        // passes the host's per-phase timeouts but not this.
        let call = std::pin::pin!(exchange(req, limits));
        let total_ns = limits.total_ms.saturating_mul(1_000_000);
        let timer = std::pin::pin!(spin_sdk::wasip3::clocks::monotonic_clock::wait_for(
            total_ns
        ));
        match futures::future::select(call, timer).await {
            futures::future::Either::Left((answer, _)) => answer,
            futures::future::Either::Right(_) => Err(TransportError::Timeout(format!(
                "the whole call took over {} ms",
                limits.total_ms
            ))),
        }
    }
}

/// One request and its whole response body, within the host's per-phase timeouts.
async fn exchange(req: OutboundRequest, limits: Limits) -> Result<InboundResponse, TransportError> {
    let (parts, body) = req.into_parts();
    let mut req = http::Request::from_parts(
        parts,
        spin_sdk::http::FullBody::new(bytes::Bytes::from(body)),
    );
    let options = RequestOptions::new();
    let ns = |ms: u64| Some(ms.saturating_mul(1_000_000));
    // Hosts may refuse to let a guest set a timeout; the default (600 s) then applies.
    let _ = options.set_connect_timeout(ns(limits.connect_timeout_ms));
    let _ = options.set_first_byte_timeout(ns(limits.first_byte_timeout_ms));
    let _ = options.set_between_bytes_timeout(ns(limits.between_bytes_timeout_ms));
    req.extensions_mut()
        .insert(RequestOptionsExtension(options));
    let resp = spin_sdk::http::send(req).await.map_err(classify)?;
    let (parts, body) = resp.into_parts();
    let mut stream = body.stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(classify)?;
        if buf.len() + chunk.len() > limits.max_body_bytes {
            return Err(TransportError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(http::Response::from_parts(parts, buf))
}

fn classify(e: ErrorCode) -> TransportError {
    let text = format!("{e:?}");
    match e {
        ErrorCode::HttpRequestDenied | ErrorCode::DestinationIpProhibited => TransportError::Denied(text),
        ErrorCode::DnsTimeout
        | ErrorCode::DnsError(_)
        | ErrorCode::DestinationNotFound
        | ErrorCode::DestinationUnavailable
        | ErrorCode::DestinationIpUnroutable
        | ErrorCode::ConnectionRefused
        | ErrorCode::TlsProtocolError
        | ErrorCode::TlsCertificateError
        | ErrorCode::TlsAlertReceived(_)
        | ErrorCode::HttpRequestUriInvalid
        | ErrorCode::ConfigurationError
        // Raised while connecting: the request never reached the seller.
        | ErrorCode::ConnectionTimeout => TransportError::Connect(text),
        ErrorCode::ConnectionReadTimeout
        | ErrorCode::ConnectionWriteTimeout
        | ErrorCode::HttpResponseTimeout => TransportError::Timeout(text),
        _ => TransportError::Broken(text),
    }
}

/// A Spin component variable, `None` when it is unset or empty.
pub async fn variable(name: &str) -> Option<String> {
    spin_sdk::variables::get(name)
        .await
        .ok()
        .filter(|v| !v.is_empty())
}

#[derive(Debug)]
pub enum BodyError {
    /// More than the cap arrived; reading stopped there.
    TooLarge,
    Transport(String),
}

/// Reads at most `cap` body bytes: a larger body is refused without buffering it whole.
pub async fn read_request(
    req: spin_sdk::http::Request,
    cap: usize,
) -> Result<http::Request<Vec<u8>>, BodyError> {
    let (parts, body) = req.into_parts();
    let mut stream = body.stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| BodyError::Transport(format!("{e:?}")))?;
        if buf.len() + chunk.len() > cap {
            return Err(BodyError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(http::Request::from_parts(parts, buf))
}

/// Every HTTP component's first steps: check its configuration, read at most `cap` body bytes,
/// open the store. A failure is the JSON error to send; transport/store details go to the log.
pub async fn accept<C>(
    req: spin_sdk::http::Request,
    cap: usize,
    config: Result<C, String>,
) -> Result<(C, http::Request<Vec<u8>>, SpinStore), Response<String>> {
    let config =
        config.map_err(|m| error(StatusCode::INTERNAL_SERVER_ERROR, "misconfigured", &m))?;
    let req = read_request(req, cap).await.map_err(|e| match e {
        BodyError::TooLarge => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            &format!("request body exceeds {cap} bytes"),
        ),
        BodyError::Transport(e) => {
            eprintln!("request.unreadable: {e}");
            error(
                StatusCode::BAD_REQUEST,
                "body_unreadable",
                "the request body could not be read",
            )
        }
    })?;
    let store = SpinStore::open().await.map_err(|e| {
        eprintln!("store.unavailable: {e:#}");
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the store is unavailable",
        )
    })?;
    Ok((config, req, store))
}

/// The `encryption_key` variable: the key that seals, then any older keys that still open.
pub async fn sealing_key() -> Result<SealingKey, String> {
    SealingKey::from_hex(&variable("encryption_key").await.unwrap_or_default())
        .map_err(|e| e.to_string())
}

/// The `allow_private_networks` variable: `"true"` relaxes the URL rules for development and
/// tests; anything else (the default) keeps them.
pub async fn allow_private_networks() -> bool {
    variable("allow_private_networks").await.as_deref() == Some("true")
}

/// The `public_base_url` variable, which webhook URLs and signature targets are built from.
pub async fn public_base_url() -> Result<String, String> {
    variable("public_base_url")
        .await
        .ok_or_else(|| "public_base_url is not set".into())
}

pub fn into_spin_response(resp: http::Response<Vec<u8>>) -> Response<String> {
    let (parts, body) = resp.into_parts();
    // Every body the core produces is JSON or Prometheus text.
    Response::from_parts(parts, String::from_utf8_lossy(&body).into_owned())
}

pub fn json(status: StatusCode, body: &serde_json::Value) -> Response<String> {
    let mut resp = Response::new(body.to_string());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    resp
}

/// The JSON error every component answers bad input with: `{"code": …, "message": …}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<String> {
    json(
        status,
        &serde_json::json!({ "code": code, "message": message }),
    )
}
