//! A Spin-faithful test host.
//!
//! Runs the application described by a `spin.toml` on a loopback port with wasmtime 44 (the
//! engine Spin 4.0.2 embeds), so integration tests can drive the real `.wasm` components
//! over real HTTP without the `spin` binary, which cannot be installed here. It follows
//! Spin 4.0.2 where the product can observe a difference:
//!
//! - **Manifest v2**: HTTP routes with Spin's matching ([`routes`]), private routes,
//!   application variables (defaults, `required`, values from `SPIN_VARIABLE_*` or the test)
//!   and component variable templates, `key_value_stores` permissions, `allowed_outbound_hosts`
//!   with Spin's syntax and load-time validation of templated entries, `[[trigger.cron]]` with
//!   6-field expressions. Components are built with their `[component.x.build]` command when
//!   the `.wasm` is missing or older than its sources.
//! - **Interfaces**: `wasi:http` 0.3 rc (incoming handler; outgoing client with real network
//!   calls, the allow-list and request-option timeouts), Spin's `spin-*` request headers and
//!   absolute request URI, `spin:key-value@3.0.0`, `wasi:keyvalue` store, atomics and batch,
//!   `spin:variables@3.0.0`, WASI 0.2 and 0.3 clocks, random and stdio (output captured), and the
//!   `spin:cron@3.0.0` export.
//! - **Key-value** on SQLite with Spin's table and quirks ([`kv`]); several hosts may share one
//!   state file. Like `spin up`, which runs each trigger type as its own process, HTTP
//!   requests and cron ticks use two separate connections to the file. Or on a Redis server
//!   with Spin's Redis commands ([`HostOptions::redis_url`]), which several hosts may share.
//! - **Instances**: reused between requests by default (up to 128 requests, idle 1 s), or
//!   fresh per request.
//!
//! Test facilities beyond Spin: key-value call counts and injected store faults ([`kv`]);
//! outbound faults; cron ticks at a chosen fire time; a wall clock shifted by a chosen offset
//! ([`HostOptions::clock_offset_ms`], [`TestHost::advance_clock`]: the time a host restarted
//! a while after a crash lives in); and **crash points** ([`TestHost::crash_at_kv_call`]): at
//! the Nth key-value call the calling instance traps, before or after the call is applied,
//! and the whole host behaves as a killed process from then on (every key-value call traps,
//! outbound requests and in-flight requests get no answer) until the test calls
//! [`TestHost::kill`] and starts a new host on the same state file.
//!
//! Deliberately not implemented (the product imports none of it): `fermyon:spin@2.0.0` and
//! older interfaces, the SQLite/Postgres/MySQL/Redis/MQTT/LLM guest interfaces, `wasi:config`,
//! `wasi:otel`, static responses, `files`, service chaining (`*.spin.internal`, `self`),
//! runtime-config files (the Redis store is chosen by [`HostOptions::redis_url`]),
//! `block_networks`, and concurrent use of one instance by several requests (Spin
//! allows 16; here a busy instance is never shared, so per-instance state is never shared
//! between concurrent requests).

pub mod bindings;
pub mod cron;
pub mod host;
pub mod kv;
pub mod manifest;
pub mod outbound;
pub mod routes;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use host::{Ctx, OutboundFaults, OutboundHooks, SpinData, SpinState};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
pub use kv::{CrashPoint, CrashWhen, KvCall, KvCounts, KvOp};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi_http::WasiHttpCtx;
use wasmtime_wasi_http::p3::bindings::Service;
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;

/// Spin 4.0.2's instance reuse limits for WASIp3 components.
const MAX_REUSE: u32 = 128;
const IDLE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long an instance keeps running after its response was read, so work the guest
/// spawned after responding can finish (Spin keeps an idle instance's event loop alive).
const LINGER: Duration = Duration::from_millis(200);
/// An instance whose guest called the store or sent a request after answering (it spawned
/// work) keeps running until that work has been quiet this long, at most [`LINGER_MAX`].
/// Spin lets such work finish; a shorter quiet period cut it short on a loaded machine
/// between a buyer notification's send and its record (measured: the fault storm's
/// notifications sent twice), which Spin would not.
const LINGER_QUIET: Duration = Duration::from_secs(1);
/// The quiet period of an instance that did nothing after answering (work it spawned has
/// not reached the store yet).
const LINGER_QUIET_IDLE: Duration = Duration::from_millis(100);
const LINGER_MAX: Duration = Duration::from_secs(30);

/// How to start a host.
#[derive(Debug, Clone)]
pub struct HostOptions {
    pub manifest: PathBuf,
    /// The SQLite file of the `default` store; several hosts may share one.
    pub state_file: PathBuf,
    /// The `default` store on this Redis server instead (`redis://127.0.0.1:6379/0`), as a
    /// runtime config with `type = "redis"` gives it; several hosts may share it.
    pub redis_url: Option<String>,
    /// Application variable values, as `SPIN_VARIABLE_<NAME>` would give them.
    pub variables: BTreeMap<String, String>,
    /// Reuse instances like Spin 4.0.2 does for p3 components (default), or use a fresh
    /// instance per request.
    pub instance_reuse: bool,
    /// Build components whose `.wasm` is missing or stale before loading.
    pub build: bool,
    /// Where to listen (`spin up --listen`); an ephemeral loopback port when `None`.
    pub listen: Option<SocketAddr>,
    /// How far ahead of the real time the components' wall clock runs (`wasi:clocks`), e.g.
    /// for a host restarted a minute after a crash; 0 (the real time) by default.
    pub clock_offset_ms: u64,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            manifest: PathBuf::from("spin.toml"),
            state_file: PathBuf::from(".spin/sqlite_key_value.db"),
            redis_url: None,
            variables: BTreeMap::new(),
            instance_reuse: true,
            build: true,
            listen: None,
            clock_offset_ms: 0,
        }
    }
}

struct Prepared {
    id: String,
    component: Component,
    allowed: outbound::AllowList,
    stores: Vec<String>,
    variables: Arc<HashMap<String, String>>,
}

struct Pooled {
    store: Store<Ctx>,
    service: Service,
    uses: u32,
    idle_since: Instant,
    pipes: Pipes,
}

/// An instance's stdout and stderr, and how much of each was already captured: a reused
/// instance keeps writing to the same pipes, and Spin logs its lines on every request.
struct Pipes {
    out: MemoryOutputPipe,
    err: MemoryOutputPipe,
    seen: [usize; 2],
}

struct Shared {
    engine: Engine,
    linker: Linker<Ctx>,
    components: HashMap<String, Prepared>,
    router: routes::Router,
    cron: Vec<manifest::CronTrigger>,
    /// The HTTP trigger's connection.
    kv: Arc<kv::Kv>,
    /// The cron trigger's connection (its own process under `spin up`).
    kv_cron: Arc<kv::Kv>,
    faults: Arc<Mutex<OutboundFaults>>,
    output: Arc<Mutex<String>>,
    reuse: bool,
    pool: Mutex<HashMap<String, Vec<Pooled>>>,
    tasks: Mutex<tokio::task::JoinSet<()>>,
    /// The wall clock's offset from the real time, in ms.
    clock_offset: Arc<std::sync::atomic::AtomicU64>,
    /// HTTP-triggered instances still running (answering, or working after their answer).
    busy: std::sync::atomic::AtomicUsize,
    /// The HTTP trigger's key-value counts when the last response was produced: with one
    /// request at a time, what a request cost before its answer (its spawned work runs on).
    counts_at_answer: Mutex<Option<kv::KvCounts>>,
}

/// Counts an instance as busy while it lives.
struct Busy<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Busy<'a> {
    fn enter(n: &'a std::sync::atomic::AtomicUsize) -> Busy<'a> {
        n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Busy(n)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The components' wall clock: the real time plus the host's offset.
struct OffsetClock(Arc<std::sync::atomic::AtomicU64>);

impl wasmtime_wasi::HostWallClock for OffsetClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        let real = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        real + Duration::from_millis(self.0.load(std::sync::atomic::Ordering::SeqCst))
    }
}

/// A running application.
pub struct TestHost {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

fn engine() -> Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut config = Config::new();
            config.wasm_component_model_async(true);
            Engine::new(&config).expect("wasmtime engine")
        })
        .clone()
}

impl TestHost {
    /// Loads the manifest, builds what is stale, compiles the components and starts serving
    /// on `127.0.0.1` (an ephemeral port).
    pub async fn start(opts: HostOptions) -> Result<TestHost> {
        let manifest = manifest::load(&opts.manifest, &opts.variables)?;
        if opts.build {
            build::ensure_built(&manifest).await?;
        }
        let engine = engine();
        let mut linker = Linker::<Ctx>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        // Spin 4 links WASI 0.3 too; components use its clocks (`monotonic-clock.wait-for`).
        wasmtime_wasi::p3::add_to_linker(&mut linker)?;
        wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
        bindings::Imports::add_to_linker::<_, SpinData>(&mut linker, |c: &mut Ctx| &mut c.spin)?;
        let mut components = HashMap::new();
        for (id, c) in &manifest.components {
            let component = compiled(&engine, &c.source)?;
            let allowed =
                outbound::AllowList::resolve(&c.allowed_outbound_hosts, &manifest.app_variables)
                    .with_context(|| format!("component `{id}`: allowed_outbound_hosts"))?;
            components.insert(
                id.clone(),
                Prepared {
                    id: id.clone(),
                    component,
                    allowed,
                    stores: c.key_value_stores.clone(),
                    variables: Arc::new(c.variables.clone()),
                },
            );
        }
        if let Some(parent) = opts.state_file.parent() {
            std::fs::create_dir_all(parent).ok();
        }
        let kv = match &opts.redis_url {
            Some(url) => kv::Kv::open_redis(url)?,
            None => kv::Kv::open(&opts.state_file)?,
        };
        let kv_cron = kv.connect_again()?;
        let shared = Arc::new(Shared {
            engine,
            linker,
            components,
            router: routes::Router::build(&manifest.http)?,
            cron: manifest.cron.clone(),
            kv,
            kv_cron,
            faults: Arc::default(),
            output: Arc::default(),
            reuse: opts.instance_reuse,
            pool: Mutex::default(),
            tasks: Mutex::default(),
            clock_offset: Arc::new(opts.clock_offset_ms.into()),
            busy: Default::default(),
            counts_at_answer: Default::default(),
        });
        let listener = TcpListener::bind(
            opts.listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
        )
        .await?;
        let addr = listener.local_addr()?;
        let s = shared.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, client)) = listener.accept().await else {
                    return;
                };
                let svc_shared = s.clone();
                let conn = async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let s = svc_shared.clone();
                        async move {
                            let response = handle(s.clone(), req, client, addr).await;
                            if s.kv.crashed() {
                                // A killed process answers nothing: the connection just drops.
                                return Err(std::io::Error::other("the process was killed"));
                            }
                            Ok(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                };
                if let Ok(mut tasks) = s.tasks.lock() {
                    tasks.spawn(conn);
                }
            }
        });
        Ok(TestHost {
            addr,
            shared,
            server,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Fires every cron trigger now, as the cron plugin does, with this fire time (Unix
    /// seconds). Each call gets a fresh instance. Errors if any component returns an error.
    pub async fn cron_tick(&self, timestamp: u64) -> Result<()> {
        let triggers = self.shared.cron.clone();
        for t in triggers {
            self.cron_tick_component(&t.component, timestamp).await?;
        }
        Ok(())
    }

    /// The components' wall clock now (Unix ms): the real time plus the clock offset.
    pub fn now_ms(&self) -> u64 {
        let real = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        real + self.clock_offset_ms()
    }

    /// How far ahead of the real time the components' wall clock runs.
    pub fn clock_offset_ms(&self) -> u64 {
        self.shared
            .clock_offset
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Moves the components' wall clock forward by `ms` (running instances included).
    pub fn advance_clock(&self, ms: u64) {
        self.shared
            .clock_offset
            .fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }

    /// The HTTP trigger's key-value counts (since the last [`TestHost::reset_kv_counts`]) as
    /// each outbound request started (with its URL): what a request cost before calling out.
    pub fn kv_counts_at_outbound(&self) -> Vec<(String, KvCounts)> {
        self.shared.kv.counts_at_outbound()
    }

    /// The HTTP trigger's key-value counts (since the last [`TestHost::reset_kv_counts`]) when
    /// the last response was produced: sent one at a time, a request's calls before its answer.
    pub fn kv_counts_at_last_answer(&self) -> Option<KvCounts> {
        self.shared
            .counts_at_answer
            .lock()
            .ok()
            .and_then(|c| c.clone())
    }

    /// Waits (up to `within`) until no HTTP-triggered instance is running: every request
    /// answered and the work components do after answering (Spin keeps an instance's event
    /// loop alive for it) finished. `false` if some were still running.
    pub async fn wait_idle(&self, within: Duration) -> bool {
        let until = Instant::now() + within;
        while self.shared.busy.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Fires every cron trigger at the components' current time ([`TestHost::now_ms`]).
    pub async fn cron_tick_now(&self) -> Result<()> {
        self.cron_tick(self.now_ms() / 1000).await
    }

    /// Fires the cron trigger of one component.
    pub async fn cron_tick_component(&self, component: &str, timestamp: u64) -> Result<()> {
        let shared = self.shared.clone();
        let p = shared
            .components
            .get(component)
            .ok_or_else(|| anyhow!("no component `{component}`"))?;
        let (mut store, out, err) = shared.new_store(p, &shared.kv_cron);
        let cron =
            bindings::cron::Cron::instantiate_async(&mut store, &p.component, &shared.linker)
                .await?;
        let result = store
            .run_concurrent(async |accessor| {
                cron.call_handle_cron_event(
                    accessor,
                    bindings::cron::spin::cron::cron_types::Metadata { timestamp },
                )
                .await
            })
            .await;
        let mut pipes = Pipes {
            out,
            err,
            seen: [0, 0],
        };
        shared.capture(component, &mut pipes);
        match result?? {
            Ok(()) => Ok(()),
            Err(bindings::cron::spin::cron::cron_types::Error::Other(e)) => {
                bail!("cron handler of `{component}` failed: {e}")
            }
        }
    }

    /// Key-value calls made by guests since start or the last reset.
    pub fn kv_counts(&self) -> KvCounts {
        self.shared.kv.counts()
    }

    pub fn reset_kv_counts(&self) {
        self.shared.kv.reset_counts();
        if let Ok(mut c) = self.shared.counts_at_answer.lock() {
            *c = None;
        }
    }

    /// Makes the `nth` key-value call from now (optionally only counting `kind`) fail.
    pub fn fail_kv_call(&self, nth: u64, kind: Option<KvOp>) {
        self.shared.kv.fail_call(nth, kind);
    }

    /// Makes the `nth` key-value call from now take effect and then fail (its answer lost).
    pub fn lose_kv_answer(&self, nth: u64, kind: Option<KvOp>) {
        self.shared.kv.lose_answer(nth, kind);
    }

    /// Arms a crash point: the `point.nth` key-value call from now (data calls only, not
    /// `open`; optionally only those of `point.component` and/or of `point.kind`) kills the
    /// calling instance, before or after the call is applied (`point.when`): the host's
    /// key-value function returns a trap, so wasmtime tears the instance down mid-request as
    /// a process kill would. From then on the host is dead: every key-value call of any
    /// instance traps before being applied, outbound requests fail, an HTTP request in
    /// flight gets no answer (its connection is dropped) and a cron tick returns an error.
    /// The test then calls [`TestHost::kill`] and starts a new host on the same file.
    /// Counting is per call, in arrival order, so the same run crashes at the same call.
    pub fn crash_at_kv_call(&self, point: CrashPoint) {
        self.shared.kv.crash_at(point);
    }

    /// Starts (afresh) or stops recording each key-value data call's component and kind, in
    /// the order and numbering [`TestHost::crash_at_kv_call`] counts them.
    pub fn trace_kv_calls(&self, on: bool) {
        self.shared.kv.trace_calls(on);
    }

    /// The key-value calls recorded since [`TestHost::trace_kv_calls`] started it.
    pub fn kv_call_trace(&self) -> Vec<KvCall> {
        self.shared.kv.call_trace()
    }

    /// Whether an armed crash point fired.
    pub fn crashed(&self) -> bool {
        self.shared.kv.crashed()
    }

    /// Fails key-value calls at random, of both kinds (see [`kv::Kv::random_faults`]).
    pub fn random_kv_faults(&self, per_million: u64, seed: u64) {
        self.shared.kv.random_faults(per_million, seed);
    }

    /// Key-value faults injected so far.
    pub fn kv_faults_injected(&self) -> u64 {
        self.shared.kv.injected()
    }

    /// Fails outbound requests whose URL contains `pattern` (connection refused).
    pub fn fail_outbound_matching(&self, pattern: &str) {
        if let Ok(mut f) = self.shared.faults.lock() {
            f.url_contains.push(pattern.to_string());
        }
    }

    /// Fails the `nth` outbound request from now.
    pub fn fail_outbound_nth(&self, nth: u64) {
        if let Ok(mut f) = self.shared.faults.lock() {
            f.nth = Some(nth.max(1));
        }
    }

    pub fn clear_outbound_faults(&self) {
        if let Ok(mut f) = self.shared.faults.lock() {
            *f = OutboundFaults::default();
        }
    }

    /// Everything the components wrote to stdout and stderr, prefixed by component id.
    pub fn output(&self) -> String {
        self.shared
            .output
            .lock()
            .map(|o| o.clone())
            .unwrap_or_default()
    }

    /// Stops abruptly: the listener and every in-flight request are dropped mid-flight, as
    /// when the process is killed. The state file keeps whatever was committed.
    pub fn kill(self) {
        self.server.abort();
        if let Ok(mut t) = self.shared.tasks.lock() {
            t.abort_all();
        }
        if let Ok(mut p) = self.shared.pool.lock() {
            p.clear();
        }
    }

    /// Stops accepting connections and waits briefly for in-flight requests.
    pub async fn stop(self) {
        self.server.abort();
        let tasks = self
            .shared
            .tasks
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .ok();
        if let Some(mut tasks) = tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                while tasks.join_next().await.is_some() {}
            })
            .await;
        }
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Compiled components are cached per file content, so many hosts in one test binary
/// compile each `.wasm` once.
fn compiled(engine: &Engine, path: &Path) -> Result<Component> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, (std::time::SystemTime, Component)>>> =
        OnceLock::new();
    let mtime = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .with_context(|| format!("component {}", path.display()))?;
    let cache = CACHE.get_or_init(Mutex::default);
    if let Some((t, c)) = cache.lock().ok().and_then(|c| c.get(path).cloned())
        && t == mtime
    {
        return Ok(c);
    }
    let component = Component::from_file(engine, path)
        .map_err(|e| anyhow!("loading {}: {e:?}", path.display()))?;
    if let Ok(mut c) = cache.lock() {
        c.insert(path.to_path_buf(), (mtime, component.clone()));
    }
    Ok(component)
}

impl Shared {
    fn new_store(
        &self,
        p: &Prepared,
        kv: &Arc<kv::Kv>,
    ) -> (Store<Ctx>, MemoryOutputPipe, MemoryOutputPipe) {
        let out = MemoryOutputPipe::new(1 << 20);
        let err = MemoryOutputPipe::new(1 << 20);
        let wasi = WasiCtxBuilder::new()
            .stdout(out.clone())
            .stderr(err.clone())
            .wall_clock(OffsetClock(self.clock_offset.clone()))
            .build();
        let activity = Arc::new(host::Activity::default());
        let ctx = Ctx {
            table: ResourceTable::new(),
            wasi,
            http: WasiHttpCtx::new(),
            hooks: OutboundHooks {
                allowed: p.allowed.clone(),
                faults: self.faults.clone(),
                kv: kv.clone(),
                activity: activity.clone(),
            },
            spin: SpinState::new(
                kv.clone(),
                activity,
                p.id.clone(),
                p.stores.clone(),
                p.variables.clone(),
            ),
        };
        (Store::new(&self.engine, ctx), out, err)
    }

    /// What the instance wrote since the last capture.
    fn capture(&self, component: &str, pipes: &mut Pipes) {
        let mut text = String::new();
        for (pipe, seen) in [&pipes.out, &pipes.err].into_iter().zip(&mut pipes.seen) {
            let contents = pipe.contents();
            let new = contents.get(*seen..).unwrap_or_default();
            *seen = contents.len();
            for line in String::from_utf8_lossy(new).lines() {
                text.push_str(&format!("[{component}] {line}\n"));
            }
        }
        if !text.is_empty() {
            // Shown by the test harness when a test fails.
            eprint!("{text}");
            if let Ok(mut o) = self.output.lock() {
                o.push_str(&text);
            }
        }
    }

    async fn instance(&self, id: &str, p: &Prepared) -> Result<(Store<Ctx>, Service, u32, Pipes)> {
        if self.reuse {
            let pooled = self.pool.lock().ok().and_then(|mut pool| {
                let list = pool.entry(id.to_string()).or_default();
                list.retain(|i| i.idle_since.elapsed() < IDLE_TIMEOUT);
                list.pop()
            });
            if let Some(i) = pooled {
                return Ok((i.store, i.service, i.uses, i.pipes));
            }
        }
        let (mut store, out, err) = self.new_store(p, &self.kv);
        let service = Service::instantiate_async(&mut store, &p.component, &self.linker).await?;
        let pipes = Pipes {
            out,
            err,
            seen: [0, 0],
        };
        Ok((store, service, 0, pipes))
    }
}

fn text_response(status: u16, text: &str) -> http::Response<Full<Bytes>> {
    let mut r = http::Response::new(Full::new(Bytes::from(text.to_string())));
    *r.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    r
}

async fn handle(
    shared: Arc<Shared>,
    req: hyper::Request<Incoming>,
    client: SocketAddr,
    listen: SocketAddr,
) -> http::Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let Some(m) = shared.router.route(&path) else {
        return text_response(404, "Not Found");
    };
    match execute(shared, req, &m, client, listen).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("[spin-test-host] {} failed: {e:#}", m.component);
            text_response(500, "Internal Server Error")
        }
    }
}

/// The request as Spin hands it to a component: absolute URI, and Spin's `spin-*` headers.
fn prepare(
    req: hyper::Request<Incoming>,
    m: &routes::RouteMatch,
    client: SocketAddr,
    listen: SocketAddr,
) -> Result<http::Request<http_body_util::combinators::UnsyncBoxBody<Bytes, ErrorCode>>> {
    let (mut parts, body) = req.into_parts();
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| listen.to_string());
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let full_url = format!("http://{host}{path_and_query}");
    parts.uri = full_url.parse().context("request URI")?;
    let mut spin = vec![
        ("spin-path-info".to_string(), m.path_info.clone()),
        ("spin-full-url".to_string(), full_url.clone()),
        ("spin-matched-route".to_string(), m.raw_route.clone()),
        ("spin-base-path".to_string(), "/".to_string()),
        ("spin-raw-component-route".to_string(), m.raw_route.clone()),
        (
            "spin-component-route".to_string(),
            m.route_or_prefix.clone(),
        ),
        ("spin-client-addr".to_string(), client.to_string()),
    ];
    for (name, value) in &m.named {
        spin.push((
            format!(
                "spin-path-match-{}",
                name.to_ascii_lowercase().replace('_', "-")
            ),
            value.clone(),
        ));
    }
    for (k, v) in spin {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(&v),
        ) {
            parts.headers.insert(k, v);
        }
    }
    let body = body
        .map_err(|_| ErrorCode::HttpProtocolError)
        .boxed_unsync();
    Ok(http::Request::from_parts(parts, body))
}

async fn execute(
    shared: Arc<Shared>,
    req: hyper::Request<Incoming>,
    m: &routes::RouteMatch,
    client: SocketAddr,
    listen: SocketAddr,
) -> Result<http::Response<Full<Bytes>>> {
    let request = prepare(req, m, client, listen)?;
    let (request, request_io) = wasmtime_wasi_http::p3::Request::from_http(request);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let id = m.component.clone();
    let s = shared.clone();
    let task = async move {
        let _busy = Busy::enter(&s.busy);
        let Some(p) = s.components.get(&id) else {
            return;
        };
        let (mut store, service, uses, mut pipes) = match s.instance(&id, p).await {
            Ok(i) => i,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        let activity = store.data().spin.activity.clone();
        let result = store
            .run_concurrent(async |accessor| -> wasmtime::Result<()> {
                let response = service.handle(accessor, request).await?;
                let answered = Instant::now();
                // The guest returned its answer: what it cost so far (its spawned work runs on).
                if let Ok(mut c) = s.counts_at_answer.lock() {
                    *c = Some(s.kv.counts());
                }
                let response = match response {
                    Ok(r) => r,
                    Err(code) => {
                        let _ = tx.send(Err(anyhow!("guest returned error code {code:?}")));
                        return Ok(());
                    }
                };
                let response = accessor.with(|mut a| response.into_http(&mut a, request_io))?;
                let (parts, body) = response.into_parts();
                match body.collect().await {
                    Ok(b) => {
                        let _ = tx.send(Ok(http::Response::from_parts(
                            parts,
                            Full::new(b.to_bytes()),
                        )));
                    }
                    Err(code) => {
                        let _ = tx.send(Err(anyhow!("response body failed: {code:?}")));
                    }
                }
                tokio::time::sleep(LINGER).await;
                while answered.elapsed() < LINGER_MAX {
                    let quiet = if activity.active_since(answered) {
                        LINGER_QUIET
                    } else {
                        LINGER_QUIET_IDLE
                    };
                    if activity.quiet_for(quiet) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(())
            })
            .await;
        s.capture(&id, &mut pipes);
        let healthy = matches!(result, Ok(Ok(())));
        if s.kv.crashed() {
            eprintln!("[spin-test-host] {id}: instance killed (crash point)");
        } else if !healthy {
            eprintln!("[spin-test-host] {id}: {result:?}");
        }
        if s.reuse
            && healthy
            && uses + 1 < MAX_REUSE
            && let Ok(mut pool) = s.pool.lock()
        {
            pool.entry(id.clone()).or_default().push(Pooled {
                store,
                service,
                uses: uses + 1,
                idle_since: Instant::now(),
                pipes,
            });
        }
    };
    if let Ok(mut tasks) = shared.tasks.lock() {
        tasks.spawn(task);
    }
    rx.await
        .map_err(|_| anyhow!("instance dropped the request"))?
}

mod build {
    //! Building components with their manifest build commands, once per process.

    use super::*;

    static BUILT: OnceLock<tokio::sync::Mutex<std::collections::HashSet<PathBuf>>> =
        OnceLock::new();

    fn newest_source(dir: &Path, watch: &[String]) -> Option<std::time::SystemTime> {
        let mut newest = None;
        for pattern in watch {
            let full = dir.join(pattern);
            for path in glob::glob(&full.to_string_lossy())
                .into_iter()
                .flatten()
                .flatten()
            {
                if let Ok(t) = std::fs::metadata(&path).and_then(|m| m.modified()) {
                    newest = newest.max(Some(t));
                }
            }
        }
        newest
    }

    pub async fn ensure_built(manifest: &manifest::Manifest) -> Result<()> {
        let lock = BUILT.get_or_init(Default::default);
        let mut built = lock.lock().await;
        for c in manifest.components.values() {
            let Some(b) = &c.build else { continue };
            if built.contains(&c.source) {
                continue;
            }
            let workdir = manifest.dir.join(b.workdir.as_deref().unwrap_or("."));
            let wasm_time = std::fs::metadata(&c.source).and_then(|m| m.modified()).ok();
            let stale = match (wasm_time, newest_source(&workdir, &b.watch)) {
                (None, _) => true,
                (Some(w), Some(src)) => src > w,
                (Some(_), None) => false,
            };
            if stale {
                let commands = match &b.command {
                    manifest::BuildCommand::One(c) => vec![c.clone()],
                    manifest::BuildCommand::Many(c) => c.clone(),
                };
                for cmd in commands {
                    let status = tokio::process::Command::new("sh")
                        .arg("-c")
                        .arg(&cmd)
                        .current_dir(&workdir)
                        // Build where the manifest says the artifact is, whatever the test's own target dir.
                        .env_remove("CARGO_TARGET_DIR")
                        .status()
                        .await
                        .with_context(|| format!("running `{cmd}`"))?;
                    if !status.success() {
                        bail!("build of component `{}` failed: `{cmd}`", c.id);
                    }
                }
            }
            built.insert(c.source.clone());
        }
        Ok(())
    }
}
