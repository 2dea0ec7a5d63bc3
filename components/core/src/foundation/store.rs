//! The storage contract the core relies on, and an in-memory implementation for tests: the
//! weakest contract every Spin KV backend (SQLite, Redis, DynamoDB) honours: last-writer-wins
//! get/set/delete plus an atomic `increment`. Correctness never depends on compare-and-swap:
//! on Spin 4.0.2 SQLite CAS cannot create a key atomically and Redis CAS reports failure after
//! writing. CAS is exposed, with SQLite's semantics, only for optimisations that tolerate it.

use crate::foundation::error::StoreError;
use std::cell::RefCell;
use std::collections::BTreeMap;

pub type StoreResult<T> = Result<T, StoreError>;

/// An async key-value store (Spin's `spin:key-value` plus `wasi:keyvalue/atomics`). Futures
/// are not `Send`: components are single-threaded Wasm; tests interleave futures on one thread.
#[allow(async_fn_in_trait)]
pub trait Store {
    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>>;
    async fn set(&self, key: &str, value: &[u8]) -> StoreResult<()>;
    /// Deleting a missing key is not an error.
    async fn delete(&self, key: &str) -> StoreResult<()>;
    /// Atomically adds `delta` and returns the new value; a missing key counts from 0.
    /// Counters are opaque: read them with `increment(key, 0)`, never with `get`.
    async fn increment(&self, key: &str, delta: i64) -> StoreResult<i64>;
    /// Replaces the value if it still equals `expected`. With `expected == None` this is an
    /// unconditional upsert, as on Spin's SQLite backend: it does NOT create atomically.
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> StoreResult<bool>;
}

impl<S: Store + ?Sized> Store for &S {
    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        (**self).get(key).await
    }
    async fn set(&self, key: &str, value: &[u8]) -> StoreResult<()> {
        (**self).set(key, value).await
    }
    async fn delete(&self, key: &str) -> StoreResult<()> {
        (**self).delete(key).await
    }
    async fn increment(&self, key: &str, delta: i64) -> StoreResult<i64> {
        (**self).increment(key, delta).await
    }
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> StoreResult<bool> {
        (**self).compare_and_swap(key, expected, new).await
    }
}

/// Reads a counter kept by [`Store::increment`] with a `get`: a read, where `increment(key,
/// 0)` is a write transaction on SQLite (it takes the database's write lock) and a metered
/// write on hosted stores. 0 when absent.
pub async fn get_counter(store: &impl Store, key: &str) -> StoreResult<i64> {
    match store.get(key).await? {
        None => Ok(0),
        Some(v) => decode_counter(key, &v),
    }
}

/// A counter's stored value: Spin's SQLite store keeps it as 8 little-endian bytes, Redis
/// (`INCRBY`) as decimal text. Never ambiguous: a little-endian count whose 8 bytes are all
/// ASCII digits would be above 3.4 × 10^18.
pub fn decode_counter(key: &str, v: &[u8]) -> StoreResult<i64> {
    let decimal = v.strip_prefix(b"-").unwrap_or(v);
    if !decimal.is_empty()
        && decimal.iter().all(u8::is_ascii_digit)
        && let Some(n) = std::str::from_utf8(v).ok().and_then(|t| t.parse().ok())
    {
        return Ok(n);
    }
    match <[u8; 8]>::try_from(v) {
        Ok(b) => Ok(i64::from_le_bytes(b)),
        Err(_) => Err(StoreError::Corrupt(format!("`{key}` is not a counter"))),
    }
}

/// A number kept as decimal text (cursors, positions, times); `None` when absent or not one.
pub async fn get_decimal<T: std::str::FromStr>(
    store: &impl Store,
    key: &str,
) -> StoreResult<Option<T>> {
    Ok(store
        .get(key)
        .await?
        .and_then(|v| String::from_utf8(v).ok()?.parse().ok()))
}

/// Writes a number as decimal text (read back with [`get_decimal`]).
pub async fn set_decimal(store: &impl Store, key: &str, n: u64) -> StoreResult<()> {
    store.set(key, n.to_string().as_bytes()).await
}

/// Reads and writes JSON values through any [`Store`].
pub async fn get_json<T: serde::de::DeserializeOwned>(
    store: &impl Store,
    key: &str,
) -> StoreResult<Option<T>> {
    match store.get(key).await? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("at `{key}`: {e}"))),
    }
}

pub async fn set_json<T: serde::Serialize>(
    store: &impl Store,
    key: &str,
    value: &T,
) -> StoreResult<()> {
    let bytes = serde_json::to_vec(value)
        .map_err(|e| StoreError::Corrupt(format!("encode `{key}`: {e}")))?;
    store.set(key, &bytes).await
}

/// One call the in-memory store saw, for cost assertions in tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StoreOp {
    Get,
    Set,
    Delete,
    Increment,
    CompareAndSwap,
}

/// In-memory [`Store`] with SQLite's semantics (8-byte little-endian counters, value-compare
/// CAS that upserts a missing key), call counting and fault injection. Each call yields once
/// before taking effect, so futures joined on one thread interleave like concurrent requests.
#[derive(Default)]
pub struct MemoryStore {
    inner: RefCell<MemoryInner>,
}

#[derive(Default)]
struct MemoryInner {
    data: BTreeMap<String, Vec<u8>>,
    ops: BTreeMap<StoreOp, u64>,
    /// Fail the call that brings the total call count to this number.
    fail_at_call: Option<u64>,
    calls: u64,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of calls of each kind since creation or the last [`MemoryStore::reset_counts`].
    pub fn count(&self, op: StoreOp) -> u64 {
        self.inner.borrow().ops.get(&op).copied().unwrap_or(0)
    }

    pub fn total_ops(&self) -> u64 {
        self.inner.borrow().ops.values().sum()
    }

    pub fn reset_counts(&self) {
        self.inner.borrow_mut().ops.clear();
    }

    /// Makes the `n`-th call from now (1 = the next one) fail with a store error.
    pub fn fail_nth_call(&self, n: u64) {
        let mut inner = self.inner.borrow_mut();
        inner.fail_at_call = Some(inner.calls + n);
    }

    /// All keys currently present, in order (a test aid; the product never lists keys).
    pub fn keys(&self) -> Vec<String> {
        self.inner.borrow().data.keys().cloned().collect()
    }

    fn enter(&self, op: StoreOp) -> StoreResult<std::cell::RefMut<'_, MemoryInner>> {
        let mut inner = self.inner.borrow_mut();
        inner.calls += 1;
        *inner.ops.entry(op).or_default() += 1;
        if inner.fail_at_call == Some(inner.calls) {
            inner.fail_at_call = None;
            return Err(StoreError::Unavailable("injected fault".into()));
        }
        Ok(inner)
    }
}

impl Store for MemoryStore {
    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let inner = {
            yield_now().await;
            self.enter(StoreOp::Get)?
        };
        Ok(inner.data.get(key).cloned())
    }

    async fn set(&self, key: &str, value: &[u8]) -> StoreResult<()> {
        let mut inner = {
            yield_now().await;
            self.enter(StoreOp::Set)?
        };
        inner.data.insert(key.to_string(), value.to_vec());
        Ok(())
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        let mut inner = {
            yield_now().await;
            self.enter(StoreOp::Delete)?
        };
        inner.data.remove(key);
        Ok(())
    }

    async fn increment(&self, key: &str, delta: i64) -> StoreResult<i64> {
        let mut inner = {
            yield_now().await;
            self.enter(StoreOp::Increment)?
        };
        let current = match inner.data.get(key) {
            None => 0,
            Some(v) => i64::from_le_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt(format!("`{key}` is not a counter")))?,
            ),
        };
        let next = current.wrapping_add(delta);
        inner
            .data
            .insert(key.to_string(), next.to_le_bytes().to_vec());
        Ok(next)
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> StoreResult<bool> {
        let mut inner = {
            yield_now().await;
            self.enter(StoreOp::CompareAndSwap)?
        };
        match expected {
            None => {
                inner.data.insert(key.to_string(), new.to_vec());
                Ok(true)
            }
            Some(old) if inner.data.get(key).map(Vec::as_slice) == Some(old) => {
                inner.data.insert(key.to_string(), new.to_vec());
                Ok(true)
            }
            Some(_) => Ok(false),
        }
    }
}

/// Returns `Pending` once, waking itself: a cooperative yield point.
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;

    #[test]
    fn increment_counts_from_zero_and_stores_little_endian() {
        let s = MemoryStore::new();
        block_on(async {
            assert_eq!(s.increment("c", 1).await.unwrap(), 1);
            assert_eq!(s.increment("c", 5).await.unwrap(), 6);
            assert_eq!(s.increment("c", 0).await.unwrap(), 6);
            assert_eq!(s.get("c").await.unwrap().unwrap(), 6i64.to_le_bytes());
            s.set("text", b"hello").await.unwrap();
            assert!(s.increment("text", 1).await.is_err());
        });
    }

    /// Counters read with `get` decode both backends' encodings, whatever the value.
    #[test]
    fn counters_read_with_get_decode_sqlite_and_redis_values() {
        for n in [0i64, 1, 9, 10, 255, 12_345_678, 99_999_999, 1 << 40, -3] {
            assert_eq!(
                decode_counter("c", &n.to_le_bytes()).unwrap(),
                n,
                "SQLite {n}"
            );
            assert_eq!(
                decode_counter("c", n.to_string().as_bytes()).unwrap(),
                n,
                "Redis {n}"
            );
        }
        assert!(decode_counter("c", b"hello").is_err());
        assert!(decode_counter("c", b"").is_err());
        let s = MemoryStore::new();
        block_on(async {
            assert_eq!(get_counter(&s, "c").await.unwrap(), 0);
            s.increment("c", 7).await.unwrap();
            s.reset_counts();
            assert_eq!(get_counter(&s, "c").await.unwrap(), 7);
            assert_eq!(s.count(StoreOp::Get), s.total_ops(), "a read only");
        });
    }

    #[test]
    fn cas_on_a_missing_key_is_an_unconditional_upsert_like_sqlite() {
        let s = MemoryStore::new();
        block_on(async {
            assert!(s.compare_and_swap("k", None, b"a").await.unwrap());
            // A second "create if absent" also succeeds: CAS is no create primitive.
            assert!(s.compare_and_swap("k", None, b"b").await.unwrap());
            assert!(!s.compare_and_swap("k", Some(b"a"), b"c").await.unwrap());
            assert!(s.compare_and_swap("k", Some(b"b"), b"c").await.unwrap());
            assert_eq!(s.get("k").await.unwrap().unwrap(), b"c");
        });
    }

    #[test]
    fn faults_and_counts() {
        let s = MemoryStore::new();
        block_on(async {
            s.fail_nth_call(2);
            s.set("a", b"1").await.unwrap();
            assert!(s.get("a").await.is_err());
            assert_eq!(s.get("a").await.unwrap().unwrap(), b"1");
            assert_eq!(s.count(StoreOp::Get), 2);
            assert_eq!(s.count(StoreOp::Set), 1);
            s.delete("a").await.unwrap();
            s.delete("a").await.unwrap();
            assert_eq!(s.get("a").await.unwrap(), None);
            assert_eq!(s.total_ops(), 6);
        });
    }
}
