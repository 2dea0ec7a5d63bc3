//! Scheduling primitives the poll sweep is built from.
//!
//! - [`due`]: the due index. Operations are filed under time buckets; a sweep tick reads
//!   only the buckets whose time has come, so it costs O(due work), never O(all keys).
//! - [`lease`]: exclusive, self-expiring claims built on `increment` alone, so that
//!   overlapping sweeps never work on the same operation at once.
//! - [`backoff`]: retry and poll schedules as data (full-jitter exponential backoff,
//!   `retry_after` handling, fixed schedules, per-task deadlines).
//! - [`breaker`]: a per-seller circuit breaker kept in the store, whose transitions are one
//!   reviewable table.
//! - [`retention`]: how long de-duplication records, nonces and finished operations are kept.
//!
//! # How a sweep tick uses them
//!
//! ```text
//! tick lease   = lease::claim_sweep(now)            (optional: saves duplicate reads)
//! sweep        = due::Sweep::begin(now)             (cursor, counts, new entries)
//! for hint in sweep.hints():
//!     lease::claim_operation(hint.op_id, now)       Busy → sweep.defer(hint, retry_at)
//!     read the record; not due (stale hint) → release, sweep.settle(hint)
//!     breaker.allow(now)                            Deferred → reschedule at `until`
//!     poll / redispatch; breaker.record_success | record_failure
//!     next = PollPolicy::next_poll_at_ms(…) or Backoff/Schedule; write the record
//!     due::schedule(op, next); lease.release(); sweep.settle(hint)
//! sweep.commit()                                    (requeue the unsettled, move the cursor,
//!                                                    purge old buckets)
//! ```
//!
//! `schedule/tests.rs` runs exactly this against the in-memory store: about 9 store calls per
//! due operation plus ~15 per tick, and overlapping ticks poll each operation once.
//!
//! Everything is sans-I/O: the store, the time and the randomness are passed in. None of it
//! relies on compare-and-swap (see [`crate::store`]); shared state is either an `increment`
//! counter or a plain value whose lost updates only cost extra work.

pub mod backoff;
pub mod breaker;
pub mod due;
pub mod lease;
pub mod retention;

pub(crate) const SECOND_MS: u64 = 1_000;
pub(crate) const MINUTE_MS: u64 = 60 * SECOND_MS;
pub(crate) const HOUR_MS: u64 = 60 * MINUTE_MS;
pub(crate) const DAY_MS: u64 = 24 * HOUR_MS;

/// A uniformly distributed integer in `0..=hi` drawn from `entropy` (Lemire's widening
/// multiply; the bias is below 2^-64 per unit of `hi`, irrelevant for delays).
pub fn random_between(entropy: &dyn crate::clock::Entropy, lo: u64, hi: u64) -> u64 {
    if hi <= lo {
        return lo;
    }
    let mut b = [0u8; 8];
    entropy.fill(&mut b);
    let r = u64::from_le_bytes(b);
    let span = (hi - lo) as u128 + 1;
    lo + ((r as u128 * span) >> 64) as u64
}

#[cfg(test)]
mod tests;

#[cfg(test)]
pub(crate) mod testing {
    use crate::error::StoreError;
    use crate::store::{MemoryStore, Store, StoreResult};
    use std::cell::Cell;

    /// A clock the test moves.
    pub struct TestClock(pub Cell<u64>);

    impl TestClock {
        pub fn new(ms: u64) -> Self {
            TestClock(Cell::new(ms))
        }
        pub fn advance(&self, ms: u64) {
            self.0.set(self.0.get() + ms);
        }
    }

    impl crate::clock::Clock for TestClock {
        fn now_ms(&self) -> u64 {
            self.0.get()
        }
    }

    /// A [`MemoryStore`] whose chosen call takes effect but then reports an error: the
    /// "lost answer" of a remote `increment` (spin#3563).
    pub struct LossyStore {
        pub inner: MemoryStore,
        calls: Cell<u64>,
        lose_at: Cell<Option<u64>>,
    }

    impl LossyStore {
        pub fn new() -> Self {
            LossyStore {
                inner: MemoryStore::new(),
                calls: Cell::new(0),
                lose_at: Cell::new(None),
            }
        }
        /// The `n`-th call from now (1 = the next) is applied, then answers an error.
        pub fn lose_nth_answer(&self, n: u64) {
            self.lose_at.set(Some(self.calls.get() + n));
        }
        fn after<T>(&self, r: StoreResult<T>) -> StoreResult<T> {
            self.calls.set(self.calls.get() + 1);
            if self.lose_at.get() == Some(self.calls.get()) {
                self.lose_at.set(None);
                return Err(StoreError("answer lost".into()));
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
}
