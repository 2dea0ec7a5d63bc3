//! The only place that touches Spin: the core's [`Store`] over Spin key-value and
//! `wasi:keyvalue` atomics, the host clock and CSPRNG, variables, and HTTP response helpers.
//!
//! Kept thin on purpose: anything that decides something belongs in `orchestrator-core`.

use orchestrator_core::clock::{Clock, Entropy};
use orchestrator_core::error::StoreError;
use orchestrator_core::store::{Store, StoreResult};
use spin_sdk::experimental::wasi::keyvalue::{atomics, store as wasi_store};
use spin_sdk::http::{HeaderValue, Response, StatusCode};
use spin_sdk::key_value;

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
    StoreError(format!("{e:?}"))
}

impl Store for SpinStore {
    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.kv.get(key).await.map_err(kv_err)
    }

    async fn set(&self, key: &str, value: &[u8]) -> StoreResult<()> {
        self.kv.set(key, value).await.map_err(kv_err)
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.kv.delete(key).await.map_err(kv_err)
    }

    async fn increment(&self, key: &str, delta: i64) -> StoreResult<i64> {
        atomics::increment(&self.bucket, key, delta).map_err(kv_err)
    }

    async fn compare_and_swap(&self, key: &str, expected: Option<&[u8]>, new: &[u8]) -> StoreResult<bool> {
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

/// The host CSPRNG (`wasi:random`).
pub struct HostEntropy;

impl Entropy for HostEntropy {
    fn fill(&self, buf: &mut [u8]) {
        // wasi:random cannot fail; a failure here means a broken host, not bad input.
        getrandom::fill(buf).expect("wasi:random is available")
    }
}

/// A Spin component variable, `None` when it is unset or empty.
pub async fn variable(name: &str) -> Option<String> {
    spin_sdk::variables::get(name).await.ok().filter(|v| !v.is_empty())
}

/// A JSON response with the given status.
pub fn json(status: StatusCode, body: &serde_json::Value) -> Response<String> {
    let mut resp = Response::new(body.to_string());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    resp
}

/// The JSON error every component answers bad input with: `{"code": …, "message": …}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<String> {
    json(status, &serde_json::json!({ "code": code, "message": message }))
}
