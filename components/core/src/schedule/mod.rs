//! Scheduling primitives the poll sweep is built from.
//!
//! - [`due`]: the due index: time buckets, so a tick costs O(due work), never O(all keys).
//! - [`lease`]: exclusive, self-expiring claims on `increment` alone, so overlapping sweeps
//!   never work on one operation at once.
//! - [`backoff`]: retry and poll schedules as data.
//! - [`breaker`]: a per-seller circuit breaker whose transitions are one reviewable table.
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
//! sweep.commit()                                    (requeue the deferred, keep the rest
//!                                                    unread, move the cursor, purge)
//! ```
//!
//! `schedule/tests.rs` runs exactly this against the in-memory store: about 9 store calls per
//! due operation plus ~15 per tick, and overlapping ticks poll each operation once.
//!
//! Everything is sans-I/O: store, time and randomness are passed in. Nothing relies on
//! compare-and-swap (see [`crate::foundation::store`]); shared state is an `increment` counter
//! or a plain value whose lost updates only cost extra work.

pub mod backoff;
pub mod breaker;
pub mod due;
pub mod lease;
pub mod poll;
pub mod retention;

pub(crate) const SECOND_MS: u64 = 1_000;
pub(crate) const MINUTE_MS: u64 = 60 * SECOND_MS;
pub(crate) const HOUR_MS: u64 = 60 * MINUTE_MS;
pub(crate) const DAY_MS: u64 = 24 * HOUR_MS;

/// A uniformly distributed integer in `0..=hi` drawn from `entropy` (Lemire's widening
/// multiply; the bias is below 2^-64 per unit of `hi`, irrelevant for delays).
pub fn random_between(entropy: &dyn crate::foundation::clock::Entropy, lo: u64, hi: u64) -> u64 {
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
