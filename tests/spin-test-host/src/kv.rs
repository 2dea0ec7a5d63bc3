//! The key-value store with Spin 4.0.2's SQLite behaviour (`key-value-spin`): one table
//! `spin_key_value(store, key, value)`, one connection per host process behind a mutex,
//! `increment` as an 8-byte little-endian integer in a transaction, and compare-and-swap
//! that compares the old value's bytes and upserts unconditionally when the key was absent.
//! Every call is counted by kind, and calls can be made to fail on purpose: before they are
//! applied, or after (the answer lost), chosen by position or at random. A call can also be
//! made a **crash point** ([`Kv::crash_at`]): the host's key-value functions then trap the
//! calling instance before or after applying it, and every later call of the host traps too,
//! as when the process dies there (see [`crate::TestHost::crash_at_kv_call`]).
//!
//! `spin up` runs each trigger type as its own process, each with its own connection to the
//! same file: [`Kv::connect_again`] opens such a second connection (sharing the counts and
//! faults), so lock conflicts between the HTTP and cron "processes" happen as on Spin.
//! `Connection::open` applies rusqlite's 5 s busy timeout and `transaction()` is deferred,
//! exactly as in Spin's `key-value-spin`: a deferred transaction that must upgrade its read
//! lock while the other connection writes gets `database is locked` at once.
//!
//! With a Redis URL ([`Kv::open_redis`]) the store is Spin's `key-value-redis` instead: the
//! same commands (`GET`, `SET`, `DEL`, `EXISTS`, `KEYS *`, `INCRBY`, `MSET`), the store label
//! ignored (a label is a database), and its compare-and-swap as measured on Spin 4.0.2: an
//! uncontended swap writes the new value and then reports failure (contention is not
//! emulated; the product uses no CAS).

use rusqlite::{Connection, OptionalExtension, named_params, params};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The kinds of key-value call a guest can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KvOp {
    Open,
    Get,
    Set,
    Delete,
    Exists,
    GetKeys,
    Increment,
    CasCurrent,
    CasSwap,
    GetMany,
    SetMany,
    DeleteMany,
}

impl KvOp {
    /// Whether the call can change the store (`Increment` even by 0 creates a missing key).
    pub fn writes(self) -> bool {
        matches!(
            self,
            KvOp::Set
                | KvOp::Delete
                | KvOp::Increment
                | KvOp::CasSwap
                | KvOp::SetMany
                | KvOp::DeleteMany
        )
    }
}

/// Counts of key-value calls by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvCounts(pub BTreeMap<KvOp, u64>);

impl KvCounts {
    pub fn get(&self, op: KvOp) -> u64 {
        self.0.get(&op).copied().unwrap_or(0)
    }

    /// Calls that can change the store ([`KvOp::writes`]).
    pub fn writes(&self) -> u64 {
        self.0
            .iter()
            .filter(|(k, _)| k.writes())
            .map(|(_, v)| v)
            .sum()
    }

    /// Data calls (everything but opening a store).
    pub fn total(&self) -> u64 {
        self.0
            .iter()
            .filter(|(k, _)| **k != KvOp::Open)
            .map(|(_, v)| v)
            .sum()
    }
}

/// A pending injected fault: fail the `nth` matching call from now, before it is applied
/// or (`lose`) after, its answer lost.
#[derive(Debug, Clone)]
struct Fault {
    remaining: u64,
    kind: Option<KvOp>,
    lose: bool,
}

/// Where a crash point kills the instance making the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrashWhen {
    /// The call is not applied: the process dies as the call arrives.
    BeforeApplied,
    /// The call is applied (committed to the file), then the process dies before answering.
    AfterApplied,
}

/// One data call as traced: who made it, its kind and key (the first, for batches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvCall {
    pub component: String,
    pub op: KvOp,
    pub key: String,
    /// Outbound HTTP requests (of any component) sent since the previous traced call: a
    /// crash before this call differs from one before the previous call by those requests.
    pub outbound_before: u64,
}

/// An armed crash point: the `nth` data call from arming (optionally only counting calls of
/// one component and/or one kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashPoint {
    pub nth: u64,
    /// Count only calls made by this component (its id in `spin.toml`).
    pub component: Option<String>,
    /// Count only calls of this kind.
    pub kind: Option<KvOp>,
    pub when: CrashWhen,
}

/// Faults drawn at random: each data call fails with probability `per_million` / 10⁶, half of
/// them before being applied and half after (the answer lost).
#[derive(Debug, Clone, Copy)]
struct RandomFaults {
    per_million: u64,
    state: u64,
}

/// One connection to the store (one per trigger "process" of a host).
pub struct Kv {
    backend: Backend,
    stats: Arc<Stats>,
}

enum Backend {
    Sqlite {
        path: PathBuf,
        conn: Mutex<Connection>,
    },
    Redis {
        client: redis::Client,
        conn: Mutex<redis::Connection>,
    },
}

/// Counts and injected faults, shared by every connection of one host.
#[derive(Default)]
struct Stats {
    counts: Mutex<BTreeMap<KvOp, u64>>,
    /// The counts when each outbound request (its URL) started, since the counts were reset:
    /// what a request cost before it called a peer.
    at_outbound: Mutex<Vec<(String, KvCounts)>>,
    faults: Mutex<Vec<Fault>>,
    random: Mutex<Option<RandomFaults>>,
    calls: AtomicU64,
    injected: AtomicU64,
    /// The armed crash point, with the calls still to count before it fires.
    crash: Mutex<Option<CrashPoint>>,
    /// A crash point fired: the "process" is dead and every call traps.
    crashed: std::sync::atomic::AtomicBool,
    /// When tracing: every data call's component and kind, in the order crash points count.
    trace: Mutex<Option<Vec<KvCall>>>,
    /// Outbound requests since the last traced call.
    outbound_untraced: AtomicU64,
}

pub type KvResult<T> = Result<T, String>;

fn poisoned<T>(_: T) -> String {
    "key-value connection poisoned".to_string()
}

impl Kv {
    pub fn open(path: &Path) -> anyhow::Result<Arc<Kv>> {
        Kv::connect(path, Arc::default())
    }

    /// The `default` store on a Redis server, as a runtime config with `type = "redis"`.
    pub fn open_redis(url: &str) -> anyhow::Result<Arc<Kv>> {
        Kv::connect_redis(redis::Client::open(url)?, Arc::default())
    }

    fn connect_redis(client: redis::Client, stats: Arc<Stats>) -> anyhow::Result<Arc<Kv>> {
        let conn = client.get_connection()?;
        Ok(Arc::new(Kv {
            backend: Backend::Redis {
                client,
                conn: Mutex::new(conn),
            },
            stats,
        }))
    }

    /// Another connection to the same store, as a second trigger process has.
    pub fn connect_again(&self) -> anyhow::Result<Arc<Kv>> {
        match &self.backend {
            Backend::Sqlite { path, .. } => Kv::connect(path, self.stats.clone()),
            Backend::Redis { client, .. } => Kv::connect_redis(client.clone(), self.stats.clone()),
        }
    }

    fn connect(path: &Path, stats: Arc<Stats>) -> anyhow::Result<Arc<Kv>> {
        let conn = Connection::open(path)?;
        conn.execute(
            "CREATE TABLE IF NOT EXISTS spin_key_value (
                           store TEXT NOT NULL,
                           key   TEXT NOT NULL,
                           value BLOB NOT NULL,

                           PRIMARY KEY (store, key)
                        )",
            [],
        )?;
        Ok(Arc::new(Kv {
            backend: Backend::Sqlite {
                path: path.to_path_buf(),
                conn: Mutex::new(conn),
            },
            stats,
        }))
    }

    pub fn counts(&self) -> KvCounts {
        KvCounts(
            self.stats
                .counts
                .lock()
                .map(|c| c.clone())
                .unwrap_or_default(),
        )
    }

    pub fn reset_counts(&self) {
        if let Ok(mut c) = self.stats.counts.lock() {
            c.clear();
        }
        if let Ok(mut o) = self.stats.at_outbound.lock() {
            o.clear();
        }
    }

    /// Records the counts as an outbound request to `url` starts.
    pub fn mark_outbound(&self, url: String) {
        self.stats.outbound_untraced.fetch_add(1, Ordering::SeqCst);
        let counts = self.counts();
        if let Ok(mut o) = self.stats.at_outbound.lock() {
            o.push((url, counts));
        }
    }

    /// The counts at each outbound request since the last reset, in order.
    pub fn counts_at_outbound(&self) -> Vec<(String, KvCounts)> {
        self.stats
            .at_outbound
            .lock()
            .map(|o| o.clone())
            .unwrap_or_default()
    }

    /// Makes the `nth` call from now (1 = the next one), optionally only counting calls of
    /// `kind`, fail with `other("injected fault")`.
    pub fn fail_call(&self, nth: u64, kind: Option<KvOp>) {
        self.push_fault(nth, kind, false);
    }

    /// Makes the `nth` call from now take effect and then fail, as when a remote store's
    /// answer is lost.
    pub fn lose_answer(&self, nth: u64, kind: Option<KvOp>) {
        self.push_fault(nth, kind, true);
    }

    /// Fails data calls at random (seeded, so a failing run can be repeated), half before and
    /// half after they are applied; `per_million = 0` stops it.
    pub fn random_faults(&self, per_million: u64, seed: u64) {
        if let Ok(mut r) = self.stats.random.lock() {
            *r = (per_million > 0).then_some(RandomFaults {
                per_million,
                state: seed,
            });
        }
    }

    /// Arms a crash point (replacing any armed one): the `nth` matching data call from now
    /// (`Open` is not counted) is where the process dies, before or after the call is
    /// applied. [`Kv::crash_point`] is what the host's key-value functions ask on each call.
    pub fn crash_at(&self, point: CrashPoint) {
        if let Ok(mut c) = self.stats.crash.lock() {
            *c = Some(CrashPoint {
                nth: point.nth.max(1),
                ..point
            });
        }
    }

    /// Starts (afresh) or stops recording every data call's component and kind, in the order
    /// and with the numbering crash points use.
    pub fn trace_calls(&self, on: bool) {
        if let Ok(mut t) = self.stats.trace.lock() {
            *t = on.then(Vec::new);
        }
        self.stats.outbound_untraced.store(0, Ordering::SeqCst);
    }

    /// The calls recorded since [`Kv::trace_calls`] started it.
    pub fn call_trace(&self) -> Vec<KvCall> {
        self.stats
            .trace
            .lock()
            .ok()
            .and_then(|t| t.clone())
            .unwrap_or_default()
    }

    /// Whether an armed crash point fired (on any connection of this host).
    pub fn crashed(&self) -> bool {
        self.stats.crashed.load(Ordering::SeqCst)
    }

    /// Asked by the host before each call of `component`: `Some` when the instance must die
    /// at this call, before or after applying it. Once a crash point fired, every call of
    /// every instance dies before being applied (the process is gone). Deterministic: calls
    /// are counted one by one under a lock, in the order they reach the host.
    pub fn crash_point(&self, component: &str, op: KvOp, key: &str) -> Option<CrashWhen> {
        if self.crashed() {
            return Some(CrashWhen::BeforeApplied);
        }
        if op == KvOp::Open {
            return None;
        }
        if let Ok(mut t) = self.stats.trace.lock()
            && let Some(t) = t.as_mut()
        {
            t.push(KvCall {
                component: component.to_string(),
                op,
                key: key.to_string(),
                outbound_before: self.stats.outbound_untraced.swap(0, Ordering::SeqCst),
            });
        }
        let mut armed = self.stats.crash.lock().ok()?;
        let point = armed.as_mut()?;
        if point.component.as_deref().is_some_and(|c| c != component)
            || point.kind.is_some_and(|k| k != op)
        {
            return None;
        }
        point.nth -= 1;
        if point.nth > 0 {
            return None;
        }
        let when = point.when;
        *armed = None;
        self.stats.crashed.store(true, Ordering::SeqCst);
        Some(when)
    }

    /// Faults injected so far (scheduled and random).
    pub fn injected(&self) -> u64 {
        self.stats.injected.load(Ordering::Relaxed)
    }

    fn push_fault(&self, nth: u64, kind: Option<KvOp>, lose: bool) {
        if let Ok(mut f) = self.stats.faults.lock() {
            f.push(Fault {
                remaining: nth.max(1),
                kind,
                lose,
            });
        }
    }

    /// Runs one call under the injected faults: refused before it is applied, or applied with
    /// its answer replaced by an error.
    fn lossy<T>(&self, op: KvOp, call: impl FnOnce() -> KvResult<T>) -> KvResult<T> {
        let lose = self.enter(op)?;
        let result = call();
        if lose && result.is_ok() {
            return Err("injected fault: answer lost".into());
        }
        result
    }

    /// Counts the call and decides whether an injected fault fires: `Err` before the call,
    /// `Ok(true)` to lose its answer.
    fn enter(&self, op: KvOp) -> KvResult<bool> {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut c) = self.stats.counts.lock() {
            *c.entry(op).or_default() += 1;
        }
        let mut fire = None;
        if let Ok(mut faults) = self.stats.faults.lock() {
            faults.retain_mut(|f| {
                if fire.is_some() || f.kind.is_some_and(|k| k != op) {
                    return true;
                }
                f.remaining -= 1;
                if f.remaining == 0 {
                    fire = Some(f.lose);
                    false
                } else {
                    true
                }
            });
        }
        if fire.is_none()
            && op != KvOp::Open
            && let Ok(mut random) = self.stats.random.lock()
            && let Some(r) = random.as_mut()
        {
            // SplitMix64: a draw per call.
            r.state = r.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = r.state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            if z % 1_000_000 < r.per_million {
                fire = Some(z & (1 << 40) != 0);
            }
        }
        match fire {
            None => Ok(false),
            Some(lose) => {
                self.stats.injected.fetch_add(1, Ordering::Relaxed);
                if lose {
                    Ok(true)
                } else {
                    Err("injected fault".into())
                }
            }
        }
    }

    /// Runs the call on SQLite (`sqlite`) or Redis (`redis`), whichever backs this store.
    fn on<T>(
        &self,
        sqlite: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
        redis: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> KvResult<T> {
        match &self.backend {
            Backend::Sqlite { conn, .. } => {
                sqlite(&mut *conn.lock().map_err(poisoned)?).map_err(|e| e.to_string())
            }
            Backend::Redis { conn, .. } => {
                redis(&mut *conn.lock().map_err(poisoned)?).map_err(|e| e.to_string())
            }
        }
    }

    pub fn open_store(&self) -> KvResult<()> {
        self.enter(KvOp::Open).map(drop)
    }

    pub fn get(&self, store: &str, key: &str) -> KvResult<Option<Vec<u8>>> {
        self.lossy(KvOp::Get, || {
            self.on(
                |c| {
                    c.prepare_cached("SELECT value FROM spin_key_value WHERE store=$1 AND key=$2")?
                        .query_row([store, key], |r| r.get(0))
                        .optional()
                },
                |r| redis::cmd("GET").arg(key).query(r),
            )
        })
    }

    pub fn set(&self, store: &str, key: &str, value: &[u8]) -> KvResult<()> {
        self.lossy(KvOp::Set, || {
            self.on(
                |c| {
                    c.prepare_cached(
                        "INSERT INTO spin_key_value (store, key, value) VALUES ($1, $2, $3)
                         ON CONFLICT(store, key) DO UPDATE SET value=$3",
                    )?
                    .execute(params![store, key, value])
                    .map(drop)
                },
                |r| redis::cmd("SET").arg(key).arg(value).exec(r),
            )
        })
    }

    pub fn delete(&self, store: &str, key: &str) -> KvResult<()> {
        self.lossy(KvOp::Delete, || {
            self.on(
                |c| {
                    c.prepare_cached("DELETE FROM spin_key_value WHERE store=$1 AND key=$2")?
                        .execute([store, key])
                        .map(drop)
                },
                |r| redis::cmd("DEL").arg(key).exec(r),
            )
        })
    }

    pub fn exists(&self, store: &str, key: &str) -> KvResult<bool> {
        self.lossy(KvOp::Exists, || {
            self.on(
                |c| {
                    c.prepare_cached("SELECT value FROM spin_key_value WHERE store=$1 AND key=$2")?
                        .query_row([store, key], |_| Ok(()))
                        .optional()
                        .map(|o| o.is_some())
                },
                |r| redis::cmd("EXISTS").arg(key).query(r),
            )
        })
    }

    pub fn keys(&self, store: &str) -> KvResult<Vec<String>> {
        self.lossy(KvOp::GetKeys, || {
            self.on(
                |c| {
                    c.prepare_cached("SELECT key FROM spin_key_value WHERE store=$1")?
                        .query_map([store], |r| r.get(0))?
                        .collect()
                },
                |r| redis::cmd("KEYS").arg("*").query(r),
            )
        })
    }

    /// Spin panics the host thread on a non-8-byte value (`expect("incorrect length")`); a
    /// test host must not crash, so that case is an error here, reported loudly.
    pub fn increment(&self, store: &str, key: &str, delta: i64) -> KvResult<i64> {
        self.lossy(KvOp::Increment, || {
            let conn = match &self.backend {
                Backend::Redis { conn, .. } => {
                    let mut r = conn.lock().map_err(poisoned)?;
                    return redis::cmd("INCRBY")
                        .arg(key)
                        .arg(delta)
                        .query(&mut *r)
                        .map_err(|e| e.to_string());
                }
                Backend::Sqlite { conn, .. } => conn,
            };
            let mut conn = conn.lock().map_err(poisoned)?;
            let tx = conn.transaction().map_err(|e| e.to_string())?;
            let current: Option<Vec<u8>> = tx
                .prepare_cached("SELECT value FROM spin_key_value WHERE store=$1 AND key=$2")
                .and_then(|mut s| s.query_row([store, key], |r| r.get(0)).optional())
                .map_err(|e| e.to_string())?;
            let current = match current {
                None => 0,
                Some(v) => i64::from_le_bytes(v.as_slice().try_into().map_err(|_| {
                    format!("SPIN WOULD PANIC: increment of `{key}` whose value is not 8 bytes (incorrect length)")
                })?),
            };
            let new = current.wrapping_add(delta);
            tx.prepare_cached(
                "INSERT INTO spin_key_value (store, key, value) VALUES ($1, $2, $3)
                         ON CONFLICT(store, key) DO UPDATE SET value=$3",
            )
            .and_then(|mut s| s.execute(params![store, key, new.to_le_bytes()]))
            .map_err(|e| e.to_string())?;
            tx.commit().map_err(|e| e.to_string())?;
            Ok(new)
        })
    }

    /// `Cas::current`: reads the value the swap will compare against.
    pub fn cas_current(&self, store: &str, key: &str) -> KvResult<Option<Vec<u8>>> {
        self.lossy(KvOp::CasCurrent, || {
            self.on(
                |c| {
                    c.prepare_cached("SELECT value FROM spin_key_value WHERE store=$1 AND key=$2")?
                        .query_row([store, key], |r| r.get(0))
                        .optional()
                },
                |r| redis::cmd("GET").arg(key).query(r),
            )
        })
    }

    /// `swap`: `Ok(true)` when exactly one row changed. With no old value (the key was
    /// absent, or `current` was never called) it is an unconditional upsert.
    pub fn cas_swap(
        &self,
        store: &str,
        key: &str,
        old: Option<&[u8]>,
        new: &[u8],
    ) -> KvResult<bool> {
        self.lossy(KvOp::CasSwap, || {
            // Spin 4.0.2 on Redis: the swap's transaction applies, then its reply fails to
            // convert, so every uncontended swap reports `CasFailed` after writing.
            let redis_swap =
                |r: &mut redis::Connection| redis::cmd("SET").arg(key).arg(new).exec(r).map(|()| false);
            self.on(|c| {
                let rows = match old {
                    Some(old) => c
                        .prepare_cached(
                            "UPDATE spin_key_value SET value=:new_value WHERE store=:name and key=:key and value=:old_value",
                        )?
                        .execute(named_params! {":name": store, ":key": key, ":old_value": old, ":new_value": new})?,
                    None => {
                        let tx = c.transaction()?;
                        let rows = tx
                            .prepare_cached(
                                "INSERT INTO spin_key_value (store, key, value) VALUES ($1, $2, $3)
                         ON CONFLICT(store, key) DO UPDATE SET value=$3",
                            )?
                            .execute(params![store, key, new])?;
                        tx.commit()?;
                        rows
                    }
                };
                Ok(rows == 1)
            }, redis_swap)
        })
    }

    pub fn get_many(
        &self,
        store: &str,
        keys: &[String],
    ) -> KvResult<Vec<(String, Option<Vec<u8>>)>> {
        self.lossy(KvOp::GetMany, || {
            self.on(
                |c| {
                    let mut out = Vec::new();
                    for k in keys {
                        let v: Option<Vec<u8>> = c
                            .prepare_cached(
                                "SELECT value FROM spin_key_value WHERE store=$1 AND key=$2",
                            )?
                            .query_row([store, k], |r| r.get(0))
                            .optional()?;
                        // Spin's query returns only keys that exist.
                        if v.is_some() {
                            out.push((k.clone(), v));
                        }
                    }
                    Ok(out)
                },
                |r| {
                    // Spin 4.0.2 sends `KEYS k1 k2 …` here (not `MGET`); Redis refuses the arity.
                    redis::cmd("KEYS")
                        .arg(keys)
                        .query::<Vec<String>>(r)
                        .map(|_| Vec::new())
                },
            )
        })
    }

    pub fn set_many(&self, store: &str, kvs: &[(String, Vec<u8>)]) -> KvResult<()> {
        self.lossy(KvOp::SetMany, || {
            self.on(
                |c| {
                    let tx = c.transaction()?;
                    for (k, v) in kvs {
                        tx.prepare_cached(
                            "INSERT INTO spin_key_value (store, key, value) VALUES ($1, $2, $3)
                         ON CONFLICT(store, key) DO UPDATE SET value=$3",
                        )?
                        .execute(params![store, k, v])?;
                    }
                    tx.commit()
                },
                |r| {
                    let mut cmd = redis::cmd("MSET");
                    for (k, v) in kvs {
                        cmd.arg(k).arg(v);
                    }
                    cmd.exec(r)
                },
            )
        })
    }

    pub fn delete_many(&self, store: &str, keys: &[String]) -> KvResult<()> {
        self.lossy(KvOp::DeleteMany, || {
            self.on(
                |c| {
                    let tx = c.transaction()?;
                    for k in keys {
                        tx.prepare_cached("DELETE FROM spin_key_value WHERE store=$1 AND key=$2")?
                            .execute([store, k])?;
                    }
                    tx.commit()
                },
                |r| redis::cmd("DEL").arg(keys).exec(r),
            )
        })
    }
}
