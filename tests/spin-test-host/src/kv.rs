//! The key-value store with Spin 4.0.2's SQLite behaviour (`key-value-spin`): one table
//! `spin_key_value(store, key, value)`, one connection per host process behind a mutex,
//! `increment` as an 8-byte little-endian integer in a transaction, and compare-and-swap
//! that compares the old value's bytes and upserts unconditionally when the key was absent.
//! Every call is counted by kind, and a call can be made to fail on purpose.

use rusqlite::{Connection, OptionalExtension, named_params, params};
use std::collections::BTreeMap;
use std::path::Path;
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

/// Counts of key-value calls by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvCounts(pub BTreeMap<KvOp, u64>);

impl KvCounts {
    pub fn get(&self, op: KvOp) -> u64 {
        self.0.get(&op).copied().unwrap_or(0)
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

/// A pending injected fault: fail the `nth` matching call from now.
#[derive(Debug, Clone)]
struct Fault {
    remaining: u64,
    kind: Option<KvOp>,
}

/// The SQLite database shared by every component of one host.
pub struct Kv {
    conn: Mutex<Connection>,
    counts: Mutex<BTreeMap<KvOp, u64>>,
    faults: Mutex<Vec<Fault>>,
    calls: AtomicU64,
}

pub type KvResult<T> = Result<T, String>;

impl Kv {
    pub fn open(path: &Path) -> anyhow::Result<Arc<Kv>> {
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
            conn: Mutex::new(conn),
            counts: Mutex::default(),
            faults: Mutex::default(),
            calls: AtomicU64::new(0),
        }))
    }

    pub fn counts(&self) -> KvCounts {
        KvCounts(self.counts.lock().map(|c| c.clone()).unwrap_or_default())
    }

    pub fn reset_counts(&self) {
        if let Ok(mut c) = self.counts.lock() {
            c.clear();
        }
    }

    /// Makes the `nth` call from now (1 = the next one), optionally only counting calls of
    /// `kind`, fail with `other("injected fault")`.
    pub fn fail_call(&self, nth: u64, kind: Option<KvOp>) {
        if let Ok(mut f) = self.faults.lock() {
            f.push(Fault {
                remaining: nth.max(1),
                kind,
            });
        }
    }

    /// Counts the call and decides whether an injected fault fires.
    fn enter(&self, op: KvOp) -> KvResult<()> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut c) = self.counts.lock() {
            *c.entry(op).or_default() += 1;
        }
        let mut fire = false;
        if let Ok(mut faults) = self.faults.lock() {
            faults.retain_mut(|f| {
                if f.kind.is_some_and(|k| k != op) {
                    return true;
                }
                f.remaining -= 1;
                if f.remaining == 0 {
                    fire = true;
                    false
                } else {
                    true
                }
            });
        }
        if fire {
            Err("injected fault".into())
        } else {
            Ok(())
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> KvResult<T> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| "key-value connection poisoned".to_string())?;
        f(&mut conn).map_err(|e| e.to_string())
    }

    pub fn open_store(&self) -> KvResult<()> {
        self.enter(KvOp::Open)
    }

    pub fn get(&self, store: &str, key: &str) -> KvResult<Option<Vec<u8>>> {
        self.enter(KvOp::Get)?;
        self.with(|c| {
            c.prepare_cached("SELECT value FROM spin_key_value WHERE store=$1 AND key=$2")?
                .query_row([store, key], |r| r.get(0))
                .optional()
        })
    }

    pub fn set(&self, store: &str, key: &str, value: &[u8]) -> KvResult<()> {
        self.enter(KvOp::Set)?;
        self.with(|c| {
            c.prepare_cached(
                "INSERT INTO spin_key_value (store, key, value) VALUES ($1, $2, $3)
                     ON CONFLICT(store, key) DO UPDATE SET value=$3",
            )?
            .execute(params![store, key, value])
            .map(drop)
        })
    }

    pub fn delete(&self, store: &str, key: &str) -> KvResult<()> {
        self.enter(KvOp::Delete)?;
        self.with(|c| {
            c.prepare_cached("DELETE FROM spin_key_value WHERE store=$1 AND key=$2")?
                .execute([store, key])
                .map(drop)
        })
    }

    pub fn exists(&self, store: &str, key: &str) -> KvResult<bool> {
        self.enter(KvOp::Exists)?;
        self.with(|c| {
            c.prepare_cached("SELECT value FROM spin_key_value WHERE store=$1 AND key=$2")?
                .query_row([store, key], |_| Ok(()))
                .optional()
                .map(|o| o.is_some())
        })
    }

    pub fn keys(&self, store: &str) -> KvResult<Vec<String>> {
        self.enter(KvOp::GetKeys)?;
        self.with(|c| {
            c.prepare_cached("SELECT key FROM spin_key_value WHERE store=$1")?
                .query_map([store], |r| r.get(0))?
                .collect()
        })
    }

    /// Spin panics the host thread on a non-8-byte value (`expect("incorrect length")`); a
    /// test host must not crash, so that case is an error here, reported loudly.
    pub fn increment(&self, store: &str, key: &str, delta: i64) -> KvResult<i64> {
        self.enter(KvOp::Increment)?;
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| "key-value connection poisoned".to_string())?;
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
    }

    /// `Cas::current`: reads the value the swap will compare against.
    pub fn cas_current(&self, store: &str, key: &str) -> KvResult<Option<Vec<u8>>> {
        self.enter(KvOp::CasCurrent)?;
        self.with(|c| {
            c.prepare_cached("SELECT value FROM spin_key_value WHERE store=$1 AND key=$2")?
                .query_row([store, key], |r| r.get(0))
                .optional()
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
        self.enter(KvOp::CasSwap)?;
        self.with(|c| {
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
        })
    }

    pub fn get_many(
        &self,
        store: &str,
        keys: &[String],
    ) -> KvResult<Vec<(String, Option<Vec<u8>>)>> {
        self.enter(KvOp::GetMany)?;
        self.with(|c| {
            let mut out = Vec::new();
            for k in keys {
                let v: Option<Vec<u8>> = c
                    .prepare_cached("SELECT value FROM spin_key_value WHERE store=$1 AND key=$2")?
                    .query_row([store, k], |r| r.get(0))
                    .optional()?;
                // Spin's query returns only keys that exist.
                if v.is_some() {
                    out.push((k.clone(), v));
                }
            }
            Ok(out)
        })
    }

    pub fn set_many(&self, store: &str, kvs: &[(String, Vec<u8>)]) -> KvResult<()> {
        self.enter(KvOp::SetMany)?;
        self.with(|c| {
            let tx = c.transaction()?;
            for (k, v) in kvs {
                tx.prepare_cached(
                    "INSERT INTO spin_key_value (store, key, value) VALUES ($1, $2, $3)
                     ON CONFLICT(store, key) DO UPDATE SET value=$3",
                )?
                .execute(params![store, k, v])?;
            }
            tx.commit()
        })
    }

    pub fn delete_many(&self, store: &str, keys: &[String]) -> KvResult<()> {
        self.enter(KvOp::DeleteMany)?;
        self.with(|c| {
            let tx = c.transaction()?;
            for k in keys {
                tx.prepare_cached("DELETE FROM spin_key_value WHERE store=$1 AND key=$2")?
                    .execute([store, k])?;
            }
            tx.commit()
        })
    }
}
