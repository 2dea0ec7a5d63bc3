//! Creating operations natively: the product's own request handler
//! (`orchestrator_core::api::handle`, as the operations component runs it) on the test
//! host's SQLite table, with the real MCP client calling the same local seller. Only the
//! clock is chosen, so thousands of operations can be "created within the last minute"
//! however long writing them takes, and the store is a second connection to the state file.

use orchestrator_core::api::{self, ApiConfig, Env};
use orchestrator_core::config::SweepConfig;
use orchestrator_core::foundation::clock::{Clock, Entropy};
use orchestrator_core::foundation::error::StoreError;
use orchestrator_core::foundation::log::NoLog;
use orchestrator_core::foundation::seal::SealingKey;
use orchestrator_core::foundation::store::{Store, StoreResult};
use orchestrator_core::foundation::transport::{
    InboundResponse, Limits, OutboundRequest, Transport, TransportError,
};
use orchestrator_core::seller::mcp::McpSellerCalls;
use serde_json::Value;
use spin_test_host::kv::Kv;
use std::cell::Cell;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const STORE: &str = "default";

/// The `default` store in the test host's SQLite file, as the core's [`Store`] (the same
/// calls `spin-adapter` makes against Spin).
pub struct KvStore(Arc<Kv>);

impl KvStore {
    pub fn open(state_file: &Path) -> KvStore {
        KvStore(Kv::open(state_file).expect("state file opens"))
    }
}

impl Store for KvStore {
    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.0.get(STORE, key).map_err(StoreError::Unavailable)
    }
    async fn set(&self, key: &str, value: &[u8]) -> StoreResult<()> {
        self.0
            .set(STORE, key, value)
            .map_err(StoreError::Unavailable)
    }
    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.0.delete(STORE, key).map_err(StoreError::Unavailable)
    }
    async fn increment(&self, key: &str, delta: i64) -> StoreResult<i64> {
        self.0
            .increment(STORE, key, delta)
            .map_err(StoreError::Unavailable)
    }
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> StoreResult<bool> {
        let current = self
            .0
            .cas_current(STORE, key)
            .map_err(StoreError::Unavailable)?;
        if current.as_deref() != expected {
            return Ok(false);
        }
        self.0
            .cas_swap(STORE, key, current.as_deref(), new)
            .map_err(StoreError::Unavailable)
    }
}

/// Outbound HTTP with reqwest, bounded like Spin's request options.
struct HttpTransport(reqwest::Client);

impl Transport for HttpTransport {
    async fn send(
        &self,
        req: OutboundRequest,
        limits: Limits,
    ) -> Result<InboundResponse, TransportError> {
        let (parts, body) = req.into_parts();
        let resp = self
            .0
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .timeout(Duration::from_millis(limits.first_byte_timeout_ms))
            .send()
            .await
            .map_err(|e| TransportError::Connect(e.to_string()))?;
        let mut out = http::Response::builder().status(resp.status());
        for (k, v) in resp.headers() {
            out = out.header(k, v);
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| TransportError::Broken(e.to_string()))?;
        if bytes.len() > limits.max_body_bytes {
            return Err(TransportError::TooLarge);
        }
        out.body(bytes.to_vec())
            .map_err(|e| TransportError::Broken(e.to_string()))
    }
}

/// The operating system's CSPRNG.
struct OsEntropy(Mutex<std::fs::File>);

impl Entropy for OsEntropy {
    fn fill(&self, buf: &mut [u8]) {
        self.0
            .lock()
            .expect("entropy")
            .read_exact(buf)
            .expect("/dev/urandom");
    }
}

/// A clock the caller sets.
pub struct SetClock(pub Cell<u64>);

impl Clock for SetClock {
    fn now_ms(&self) -> u64 {
        self.0.get()
    }
}

/// Creates operations for one tenant, at the time [`Seeder::clock`] says.
pub struct Seeder {
    pub clock: SetClock,
    store: KvStore,
    config: ApiConfig,
    entropy: OsEntropy,
    transport: HttpTransport,
    tenant_key: String,
}

impl Seeder {
    pub fn new(state_file: &Path, tenant_key: &str, public_base_url: &str) -> Seeder {
        Seeder {
            clock: SetClock(Cell::new(0)),
            store: KvStore::open(state_file),
            config: ApiConfig {
                admin_api_key: e2e::ADMIN_KEY.into(),
                public_base_url: public_base_url.into(),
                sweep_token: e2e::SWEEP_TOKEN.into(),
                metrics_token: e2e::METRICS_TOKEN.into(),
                sealing: SealingKey::from_hex(e2e::ENCRYPTION_KEY).expect("encryption key"),
                // The bench's sellers are plain HTTP on loopback.
                allow_private_networks: true,
            },
            entropy: OsEntropy(Mutex::new(
                std::fs::File::open("/dev/urandom").expect("/dev/urandom"),
            )),
            transport: HttpTransport(reqwest::Client::new()),
            tenant_key: tenant_key.into(),
        }
    }

    /// `POST /api/v1/operations` with `body`, through the core; returns status and answer.
    pub async fn create(&self, body: &Value) -> (u16, Value) {
        let env = Env {
            store: &self.store,
            clock: &self.clock,
            entropy: &self.entropy,
            config: &self.config,
            log: &NoLog,
            calls: &McpSellerCalls {
                store: &self.store,
                transport: &self.transport,
                sealing: &self.config.sealing,
                clock: &self.clock,
                entropy: &self.entropy,
                sessions: Default::default(),
                deadline: Default::default(),
            },
            transport: &self.transport,
            sweep: &SweepConfig::default(),
        };
        let req = http::Request::post("/api/v1/operations")
            .header("authorization", format!("Bearer {}", self.tenant_key))
            .header("content-type", "application/json")
            .body(body.to_string().into_bytes())
            .expect("request");
        let resp = api::handle(&env, req).await;
        let status = resp.status().as_u16();
        (
            status,
            serde_json::from_slice(resp.body()).unwrap_or(Value::Null),
        )
    }
}
