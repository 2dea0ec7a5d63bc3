//! Instances and the host side of Spin's interfaces.

use crate::bindings::spin::key_value::key_value as spin_kv;
use crate::bindings::spin::variables::variables as spin_vars;
use crate::bindings::wasi::keyvalue::{atomics, batch, store as wasi_store};
use crate::kv::{CrashWhen, Kv, KvOp};
use crate::outbound::AllowList;
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::component::{Accessor, FutureReader, HasData, Resource, ResourceTable, StreamReader};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::WasiHttpCtx;
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::p3::{RequestOptions, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// Everything one component instance sees.
pub struct Ctx {
    pub table: ResourceTable,
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub hooks: OutboundHooks,
    pub spin: SpinState,
}

impl WasiView for Ctx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Ctx {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            hooks: &mut self.hooks,
            table: &mut self.table,
            ctx: &mut self.http,
        }
    }
}

/// Faults a test asks outbound HTTP to produce.
#[derive(Debug, Clone, Default)]
pub struct OutboundFaults {
    /// Fail requests whose URL contains this text.
    pub url_contains: Vec<String>,
    /// Fail the n-th outbound request from now (1 = next).
    pub nth: Option<u64>,
}

/// Outbound HTTP as Spin does it: the component's `allowed_outbound_hosts` first (a denied
/// request gets `HttpRequestDenied`), Spin's 600 s default timeouts, then a real network call.
pub struct OutboundHooks {
    pub allowed: AllowList,
    pub faults: Arc<Mutex<OutboundFaults>>,
    /// The host's store, asked whether a crash point killed the "process" (a dead process
    /// sends nothing more).
    pub kv: Arc<Kv>,
    pub activity: Arc<Activity>,
}

/// What an instance is doing: when it last called the store and how many outbound requests
/// it has in flight. An instance that answered keeps running while this shows work going on
/// (the guest's spawned tasks), as Spin keeps an instance's event loop alive for them.
#[derive(Debug, Default)]
pub struct Activity {
    last_call: Mutex<Option<std::time::Instant>>,
    outbound: std::sync::atomic::AtomicUsize,
}

impl Activity {
    fn touch(&self) {
        if let Ok(mut t) = self.last_call.lock() {
            *t = Some(std::time::Instant::now());
        }
    }

    /// Whether it called the store, or had an outbound request in flight, after `t`: the
    /// guest has work of its own going on (spawned before or after its answer).
    pub fn active_since(&self, t: std::time::Instant) -> bool {
        self.outbound.load(std::sync::atomic::Ordering::SeqCst) > 0
            || self
                .last_call
                .lock()
                .map(|c| c.is_some_and(|c| c > t))
                .unwrap_or(false)
    }

    /// No outbound request in flight and no store call for `quiet`.
    pub fn quiet_for(&self, quiet: Duration) -> bool {
        self.outbound.load(std::sync::atomic::Ordering::SeqCst) == 0
            && self
                .last_call
                .lock()
                .map(|t| t.is_none_or(|t| t.elapsed() >= quiet))
                .unwrap_or(true)
    }
}

/// Counts an outbound request in flight while it lives.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn enter(a: &Arc<Activity>) -> InFlight {
        a.outbound.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InFlight(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .outbound
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.0.touch();
    }
}

/// Spin's default for each outbound timeout the guest leaves unset.
const DEFAULT_OUTBOUND_TIMEOUT: Duration = Duration::from_secs(600);

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<UnsyncBoxBody<Bytes, ErrorCode>>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), ErrorCode>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<UnsyncBoxBody<Bytes, ErrorCode>>,
                        Box<dyn Future<Output = Result<(), ErrorCode>> + Send>,
                    ),
                    wasmtime_wasi::TrappableError<ErrorCode>,
                >,
            > + Send,
    > {
        drop(fut);
        self.kv.mark_outbound(request.uri().to_string());
        let crashed = self.kv.crashed();
        let allowed = self.allowed.allows_url(request.uri());
        let injected = self.faults.lock().ok().is_some_and(|mut f| {
            let by_url = f
                .url_contains
                .iter()
                .any(|s| request.uri().to_string().contains(s));
            let by_count = match f.nth {
                Some(1) => {
                    f.nth = None;
                    true
                }
                Some(n) => {
                    f.nth = Some(n - 1);
                    false
                }
                None => false,
            };
            by_url || by_count
        });
        let options = options.unwrap_or_default();
        let options = RequestOptions {
            connect_timeout: options.connect_timeout.or(Some(DEFAULT_OUTBOUND_TIMEOUT)),
            first_byte_timeout: options
                .first_byte_timeout
                .or(Some(DEFAULT_OUTBOUND_TIMEOUT)),
            between_bytes_timeout: options
                .between_bytes_timeout
                .or(Some(DEFAULT_OUTBOUND_TIMEOUT)),
        };
        let in_flight = InFlight::enter(&self.activity);
        Box::new(async move {
            use http_body_util::BodyExt;
            let _in_flight = in_flight;
            if crashed {
                return Err(wasmtime_wasi::TrappableError::trap(wasmtime::format_err!(
                    "spin-test-host: the process was killed"
                )));
            }
            if !allowed {
                return Err(ErrorCode::HttpRequestDenied.into());
            }
            if injected {
                return Err(ErrorCode::ConnectionRefused.into());
            }
            let (res, io) =
                wasmtime_wasi_http::p3::default_send_request(request, Some(options)).await?;
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// Key-value stores and variables of one instance.
pub struct SpinState {
    pub kv: Arc<Kv>,
    /// The instance's host calls, shared with its [`OutboundHooks`].
    pub activity: Arc<Activity>,
    /// The component's id, for crash points counting one component's calls.
    pub component: String,
    /// The component's `key_value_stores`.
    pub allowed_stores: Vec<String>,
    /// Component variables (already resolved).
    pub variables: Arc<HashMap<String, String>>,
    stores: HashMap<u32, String>,
    cas: HashMap<u32, (String, String, Option<Vec<u8>>)>,
    next_rep: u32,
}

/// Spin's per-instance limit on open stores (`DEFAULT_STORE_TABLE_CAPACITY`).
const STORE_TABLE_CAPACITY: usize = 256;

impl SpinState {
    pub fn new(
        kv: Arc<Kv>,
        activity: Arc<Activity>,
        component: String,
        allowed_stores: Vec<String>,
        variables: Arc<HashMap<String, String>>,
    ) -> Self {
        SpinState {
            kv,
            activity,
            component,
            allowed_stores,
            variables,
            stores: HashMap::new(),
            cas: HashMap::new(),
            next_rep: 1,
        }
    }

    fn open(&mut self, label: &str) -> wasmtime::Result<Result<u32, spin_kv::Error>> {
        if self
            .kv
            .crash_point(&self.component, KvOp::Open, label)
            .is_some()
        {
            return Err(killed(
                &self.component,
                KvOp::Open,
                CrashWhen::BeforeApplied,
            ));
        }
        Ok(self.open_unguarded(label))
    }

    fn open_unguarded(&mut self, label: &str) -> Result<u32, spin_kv::Error> {
        if !self.allowed_stores.iter().any(|s| s == label) {
            return Err(spin_kv::Error::AccessDenied);
        }
        if self.stores.len() >= STORE_TABLE_CAPACITY {
            return Err(spin_kv::Error::StoreTableFull);
        }
        self.kv.open_store().map_err(spin_kv::Error::Other)?;
        let rep = self.next_rep;
        self.next_rep += 1;
        self.stores.insert(rep, label.to_string());
        Ok(rep)
    }

    fn label(&self, rep: u32) -> Option<String> {
        self.stores.get(&rep).cloned()
    }
}

/// The trap a crash point raises: wasmtime tears the instance down, as a killed process
/// loses it; the in-flight request gets no answer.
fn killed(component: &str, op: KvOp, when: CrashWhen) -> wasmtime::Error {
    wasmtime::format_err!("spin-test-host: crash point: `{component}` killed at {op:?} ({when:?})")
}

/// Runs one key-value call under the armed crash point ([`Kv::crash_point`]): a trap before
/// it is applied, or after (the write landed, the answer never given).
fn guarded<T>(
    activity: &Activity,
    kv: &Kv,
    component: &str,
    op: KvOp,
    key: &str,
    call: impl FnOnce() -> T,
) -> wasmtime::Result<T> {
    activity.touch();
    let when = kv.crash_point(component, op, key);
    if when == Some(CrashWhen::BeforeApplied) {
        return Err(killed(component, op, CrashWhen::BeforeApplied));
    }
    let out = call();
    match when {
        Some(w) => Err(killed(component, op, w)),
        None => Ok(out),
    }
}

/// Marker for the `*WithStore` traits: its data is the instance's [`SpinState`].
pub struct SpinData;

impl HasData for SpinData {
    type Data<'a> = &'a mut SpinState;
}

fn label_of<T: Send>(
    accessor: &Accessor<T, SpinData>,
    store: &Resource<spin_kv::Store>,
) -> Result<(Arc<Kv>, String, String, Arc<Activity>), spin_kv::Error> {
    accessor.with(|mut a| {
        let s = a.get();
        s.label(store.rep())
            .map(|l| (s.kv.clone(), l, s.component.clone(), s.activity.clone()))
            .ok_or(spin_kv::Error::NoSuchStore)
    })
}

/// One `spin:key-value` call on the store's label, under the crash point.
fn spin_call<T: Send, R>(
    accessor: &Accessor<T, SpinData>,
    store: &Resource<spin_kv::Store>,
    op: KvOp,
    key: &str,
    call: impl FnOnce(&Kv, &str) -> crate::kv::KvResult<R>,
) -> wasmtime::Result<Result<R, spin_kv::Error>> {
    match label_of(accessor, store) {
        Err(e) => Ok(Err(e)),
        Ok((kv, label, component, activity)) => {
            guarded(&activity, &kv, &component, op, key, || {
                call(&kv, &label).map_err(spin_kv::Error::Other)
            })
        }
    }
}

impl spin_kv::HostStoreWithStore for SpinData {
    async fn open<T: Send>(
        accessor: &Accessor<T, Self>,
        label: String,
    ) -> wasmtime::Result<Result<Resource<spin_kv::Store>, spin_kv::Error>> {
        Ok(accessor
            .with(|mut a| a.get().open(&label))?
            .map(Resource::new_own))
    }

    async fn get<T: Send>(
        accessor: &Accessor<T, Self>,
        store: Resource<spin_kv::Store>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, spin_kv::Error>> {
        spin_call(accessor, &store, KvOp::Get, &key, |kv, l| kv.get(l, &key))
    }

    async fn set<T: Send>(
        accessor: &Accessor<T, Self>,
        store: Resource<spin_kv::Store>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), spin_kv::Error>> {
        spin_call(accessor, &store, KvOp::Set, &key, |kv, l| {
            kv.set(l, &key, &value)
        })
    }

    async fn delete<T: Send>(
        accessor: &Accessor<T, Self>,
        store: Resource<spin_kv::Store>,
        key: String,
    ) -> wasmtime::Result<Result<(), spin_kv::Error>> {
        spin_call(accessor, &store, KvOp::Delete, &key, |kv, l| {
            kv.delete(l, &key)
        })
    }

    async fn exists<T: Send>(
        accessor: &Accessor<T, Self>,
        store: Resource<spin_kv::Store>,
        key: String,
    ) -> wasmtime::Result<Result<bool, spin_kv::Error>> {
        spin_call(accessor, &store, KvOp::Exists, &key, |kv, l| {
            kv.exists(l, &key)
        })
    }

    async fn get_keys<T: Send>(
        accessor: &Accessor<T, Self>,
        store: Resource<spin_kv::Store>,
    ) -> wasmtime::Result<(
        StreamReader<String>,
        FutureReader<Result<(), spin_kv::Error>>,
    )> {
        let (keys, result) =
            match spin_call(accessor, &store, KvOp::GetKeys, "", |kv, l| kv.keys(l))? {
                Ok(keys) => (keys, Ok(())),
                Err(e) => (Vec::new(), Err(e)),
            };
        accessor.with(|mut a| {
            let keys = StreamReader::new(&mut a, keys)?;
            let done = FutureReader::new(&mut a, async move {
                wasmtime::Result::<_, wasmtime::Error>::Ok(result)
            })?;
            Ok((keys, done))
        })
    }
}

impl spin_kv::HostStore for SpinState {
    async fn drop(&mut self, rep: Resource<spin_kv::Store>) -> wasmtime::Result<()> {
        self.stores.remove(&rep.rep());
        Ok(())
    }
}

impl spin_kv::Host for SpinState {}

impl spin_vars::HostWithStore for SpinData {
    async fn get<T: Send>(
        accessor: &Accessor<T, Self>,
        name: String,
    ) -> wasmtime::Result<Result<String, spin_vars::Error>> {
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Ok(Err(spin_vars::Error::InvalidName(format!(
                "invalid variable name `{name}`"
            ))));
        }
        Ok(accessor.with(|mut a| {
            a.get()
                .variables
                .get(&name)
                .cloned()
                .ok_or_else(|| spin_vars::Error::Undefined(format!("no variable for \"{name}\"")))
        }))
    }
}

impl spin_vars::Host for SpinState {}

fn wasi_err(e: String) -> wasi_store::Error {
    wasi_store::Error::Other(e)
}

impl SpinState {
    fn bucket(&self, b: &Resource<wasi_store::Bucket>) -> Result<String, wasi_store::Error> {
        self.label(b.rep()).ok_or(wasi_store::Error::NoSuchStore)
    }
}

impl wasi_store::Host for SpinState {
    async fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<wasi_store::Bucket>, wasi_store::Error>> {
        Ok(self
            .open(&identifier)?
            .map(Resource::new_own)
            .map_err(|e| match e {
                spin_kv::Error::AccessDenied => wasi_store::Error::AccessDenied,
                spin_kv::Error::NoSuchStore => wasi_store::Error::NoSuchStore,
                spin_kv::Error::StoreTableFull => {
                    wasi_store::Error::Other("store table full".into())
                }
                spin_kv::Error::Other(m) => wasi_store::Error::Other(m),
            }))
    }
}

impl wasi_store::HostBucket for SpinState {
    async fn get(
        &mut self,
        b: Resource<wasi_store::Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, wasi_store::Error>> {
        guarded(
            &self.activity,
            &self.kv,
            &self.component,
            KvOp::Get,
            &key,
            || {
                self.bucket(&b)
                    .and_then(|l| self.kv.get(&l, &key).map_err(wasi_err))
            },
        )
    }

    async fn set(
        &mut self,
        b: Resource<wasi_store::Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), wasi_store::Error>> {
        guarded(
            &self.activity,
            &self.kv,
            &self.component,
            KvOp::Set,
            &key,
            || {
                self.bucket(&b)
                    .and_then(|l| self.kv.set(&l, &key, &value).map_err(wasi_err))
            },
        )
    }

    async fn delete(
        &mut self,
        b: Resource<wasi_store::Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<(), wasi_store::Error>> {
        guarded(
            &self.activity,
            &self.kv,
            &self.component,
            KvOp::Delete,
            &key,
            || {
                self.bucket(&b)
                    .and_then(|l| self.kv.delete(&l, &key).map_err(wasi_err))
            },
        )
    }

    async fn exists(
        &mut self,
        b: Resource<wasi_store::Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<bool, wasi_store::Error>> {
        guarded(
            &self.activity,
            &self.kv,
            &self.component,
            KvOp::Exists,
            &key,
            || {
                self.bucket(&b)
                    .and_then(|l| self.kv.exists(&l, &key).map_err(wasi_err))
            },
        )
    }

    async fn list_keys(
        &mut self,
        b: Resource<wasi_store::Bucket>,
        cursor: Option<String>,
    ) -> wasmtime::Result<Result<wasi_store::KeyResponse, wasi_store::Error>> {
        if cursor.is_some() {
            return Ok(Err(wasi_store::Error::Other(
                "list_keys: cursor not supported".into(),
            )));
        }
        guarded(
            &self.activity,
            &self.kv,
            &self.component,
            KvOp::GetKeys,
            "",
            || {
                self.bucket(&b)
                    .and_then(|l| self.kv.keys(&l).map_err(wasi_err))
                    .map(|keys| wasi_store::KeyResponse { keys, cursor: None })
            },
        )
    }

    async fn drop(&mut self, rep: Resource<wasi_store::Bucket>) -> wasmtime::Result<()> {
        self.stores.remove(&rep.rep());
        Ok(())
    }
}

impl atomics::HostCas for SpinState {
    async fn new(
        &mut self,
        b: Resource<atomics::Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Resource<atomics::Cas>, atomics::Error>> {
        let label = match self.label(b.rep()) {
            Some(l) => l,
            None => return Ok(Err(atomics::Error::NoSuchStore)),
        };
        let rep = self.next_rep;
        self.next_rep += 1;
        self.cas.insert(rep, (label, key, None));
        Ok(Ok(Resource::new_own(rep)))
    }

    async fn current(
        &mut self,
        cas: Resource<atomics::Cas>,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, atomics::Error>> {
        let Some((label, key, _)) = self.cas.get(&cas.rep()).cloned() else {
            return Ok(Err(atomics::Error::Other(
                "compare and swap not found".into(),
            )));
        };
        let value = match guarded(
            &self.activity,
            &self.kv,
            &self.component,
            KvOp::CasCurrent,
            &key,
            || self.kv.cas_current(&label, &key),
        )? {
            Ok(v) => v,
            Err(e) => return Ok(Err(atomics::Error::Other(e))),
        };
        if let Some(entry) = self.cas.get_mut(&cas.rep()) {
            entry.2.clone_from(&value);
        }
        Ok(Ok(value))
    }

    async fn drop(&mut self, rep: Resource<atomics::Cas>) -> wasmtime::Result<()> {
        self.cas.remove(&rep.rep());
        Ok(())
    }
}

impl atomics::Host for SpinState {
    async fn increment(
        &mut self,
        b: Resource<atomics::Bucket>,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, atomics::Error>> {
        guarded(
            &self.activity,
            &self.kv,
            &self.component,
            KvOp::Increment,
            &key,
            || {
                self.bucket(&b)
                    .and_then(|l| self.kv.increment(&l, &key, delta).map_err(wasi_err))
            },
        )
    }

    async fn swap(
        &mut self,
        cas: Resource<atomics::Cas>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let Some((label, key, old)) = self.cas.remove(&cas.rep()) else {
            return Ok(Err(atomics::CasError::StoreError(atomics::Error::Other(
                "compare and swap not found".into(),
            ))));
        };
        match guarded(
            &self.activity,
            &self.kv,
            &self.component,
            KvOp::CasSwap,
            &key,
            || self.kv.cas_swap(&label, &key, old.as_deref(), &value),
        )? {
            Ok(true) => Ok(Ok(())),
            Ok(false) => {
                // Like Spin: hand back a fresh CAS handle on the same key, already read.
                let current = self.kv.cas_current(&label, &key).ok().flatten();
                let rep = self.next_rep;
                self.next_rep += 1;
                self.cas.insert(rep, (label, key, current));
                Ok(Err(atomics::CasError::CasFailed(Resource::new_own(rep))))
            }
            Err(e) => Ok(Err(atomics::CasError::StoreError(atomics::Error::Other(e)))),
        }
    }
}

impl batch::Host for SpinState {
    async fn get_many(
        &mut self,
        b: Resource<batch::Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<(String, Option<Vec<u8>>)>, batch::Error>> {
        guarded(
            &self.activity,
            &self.kv,
            &self.component,
            KvOp::GetMany,
            keys.first().map_or("", |k| k),
            || {
                self.bucket(&b)
                    .and_then(|l| self.kv.get_many(&l, &keys).map_err(wasi_err))
            },
        )
    }

    async fn set_many(
        &mut self,
        b: Resource<batch::Bucket>,
        kvs: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), batch::Error>> {
        guarded(
            &self.activity,
            &self.kv,
            &self.component,
            KvOp::SetMany,
            kvs.first().map_or("", |(k, _)| k),
            || {
                self.bucket(&b)
                    .and_then(|l| self.kv.set_many(&l, &kvs).map_err(wasi_err))
            },
        )
    }

    async fn delete_many(
        &mut self,
        b: Resource<batch::Bucket>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), batch::Error>> {
        guarded(
            &self.activity,
            &self.kv,
            &self.component,
            KvOp::DeleteMany,
            keys.first().map_or("", |k| k),
            || {
                self.bucket(&b)
                    .and_then(|l| self.kv.delete_many(&l, &keys).map_err(wasi_err))
            },
        )
    }
}
