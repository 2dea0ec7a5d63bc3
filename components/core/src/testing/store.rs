//! A store that loses answers.

use crate::foundation::error::StoreError;
use crate::foundation::store::{MemoryStore, Store, StoreResult};
use std::cell::Cell;

/// A [`MemoryStore`] whose chosen call takes effect but then reports an error: the
/// "lost answer" of a remote `increment` (spin#3563).
#[derive(Default)]
pub struct LossyStore {
    pub inner: MemoryStore,
    calls: Cell<u64>,
    lose_at: Cell<Option<u64>>,
}

impl LossyStore {
    /// The `n`-th call from now (1 = the next) is applied, then answers an error.
    pub fn lose_nth_answer(&self, n: u64) {
        self.lose_at.set(Some(self.calls.get() + n));
    }
    fn after<T>(&self, r: StoreResult<T>) -> StoreResult<T> {
        self.calls.set(self.calls.get() + 1);
        if self.lose_at.get() == Some(self.calls.get()) {
            self.lose_at.set(None);
            return Err(StoreError::Unavailable("answer lost".into()));
        }
        r
    }
}

impl Store for LossyStore {
    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let r = self.inner.get(key).await;
        self.after(r)
    }
    async fn set(&self, key: &str, value: &[u8]) -> StoreResult<()> {
        let r = self.inner.set(key, value).await;
        self.after(r)
    }
    async fn delete(&self, key: &str) -> StoreResult<()> {
        let r = self.inner.delete(key).await;
        self.after(r)
    }
    async fn increment(&self, key: &str, delta: i64) -> StoreResult<i64> {
        let r = self.inner.increment(key, delta).await;
        self.after(r)
    }
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> StoreResult<bool> {
        let r = self.inner.compare_and_swap(key, expected, new).await;
        self.after(r)
    }
}
