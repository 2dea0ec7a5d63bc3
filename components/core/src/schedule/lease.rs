//! Leases from `increment` alone: at most one holder at a time, and a crashed holder's lease
//! lapses on its own.
//!
//! Time is cut into slots of [`LeaseConfig::slot_ms`]. A lease on a scope (an operation, or the
//! sweep tick) for slot `s` is the counter `lease:{scope}:{s}`; a claimant increments it and
//! holds the slot iff the answer is 1. `increment` is atomic on every Spin backend, so exactly
//! one claimant per slot sees 1; no compare-and-swap is involved.
//!
//! A claim at `now` covers every slot from `now` to `now + min_hold_ms` (one, or two near a
//! slot's end), claimed in order; it succeeds only if it won all of them, and is valid until
//! the end of the last. **Exclusivity:** two holders valid at one instant `t` would both have
//! seen 1 from the counter of `t`'s slot, which `increment` rules out. A holder checks
//! [`Lease::valid_at`] (with a safety margin for replica clock skew) before each step.
//!
//! **Expiry.** Nothing needs cleaning up for a lease to end: the next slot is a fresh counter.
//! A holder that crashes, or whose `increment` answer is lost (applied, but the caller saw an
//! error; spin#3563), blocks the scope until its slot ends, never longer.
//!
//! **Release and garbage.** A finished holder deletes its keys ([`Lease::release`]), so a later
//! claimant in the same slot wins the fresh counter, rightly. A claim that wins its first slot
//! but loses the second deletes what it won. Keys survive only crashes and lost answers (8
//! bytes each); the invariant auditor (`sweep::audit`) deletes them once their slots ended.

use crate::foundation::keys;
use crate::foundation::store::{Store, StoreResult};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeaseConfig {
    /// Slot length: the longest a crashed holder can block a scope.
    pub slot_ms: u64,
    /// A fresh lease is valid at least this long (spilling into the next slot when claimed
    /// near a slot's end). At most `slot_ms`.
    pub min_hold_ms: u64,
    /// A holder stops acting this long before its lease ends (clock skew between replicas).
    pub margin_ms: u64,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            slot_ms: 60_000,
            min_hold_ms: 30_000,
            margin_ms: 5_000,
        }
    }
}

impl LeaseConfig {
    pub fn slot_of(&self, ms: u64) -> u64 {
        ms / self.slot_ms.max(1)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a lease should be released when the work is done"]
pub struct Lease {
    scope: String,
    first_slot: u64,
    last_slot: u64,
    /// The end of the last slot claimed.
    pub expires_at_ms: u64,
    margin_ms: u64,
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    Held(Lease),
    /// Someone else holds the scope; a new claim may succeed from `retry_at_ms` on (the end
    /// of the slot found taken), or earlier if the holder releases.
    Busy {
        retry_at_ms: u64,
    },
}

impl Claim {
    pub fn lease(self) -> Option<Lease> {
        match self {
            Claim::Held(l) => Some(l),
            Claim::Busy { .. } => None,
        }
    }
}

impl Lease {
    /// A lease no counter backs, for a scope nobody else may act on before `expires_at_ms`:
    /// a new operation before its first due time (the sweep claims the real one then).
    /// Releasing it deletes nothing.
    pub fn implicit(scope: String, expires_at_ms: u64, margin_ms: u64) -> Lease {
        Lease {
            scope,
            first_slot: 1,
            last_slot: 0,
            expires_at_ms,
            margin_ms,
        }
    }

    pub fn valid_at(&self, now_ms: u64) -> bool {
        now_ms.saturating_add(self.margin_ms) < self.expires_at_ms
    }

    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// Ends the lease now: deletes its counters, so the next claimant wins at once and no
    /// key is left behind. Call it only when the work is done (or abandoned).
    pub async fn release(self, store: &impl Store) -> StoreResult<()> {
        for slot in self.first_slot..=self.last_slot {
            delete_retried(store, &keys::lease(&self.scope, slot)).await?;
        }
        Ok(())
    }
}

/// Deletes a lease key, trying again on a store failure (a delete is idempotent): a key
/// left behind blocks its scope until the slot ends, which for the sweep lease is every
/// tick's due work.
async fn delete_retried(store: &impl Store, key: &str) -> StoreResult<()> {
    const TRIES: usize = 3;
    let mut tries = 1;
    loop {
        match store.delete(key).await {
            Err(_) if tries < TRIES => tries += 1,
            done => return done,
        }
    }
}

/// Claims `scope` at `now_ms`. One `increment` per slot covered (usually one).
pub async fn claim(
    store: &impl Store,
    cfg: &LeaseConfig,
    scope: &str,
    now_ms: u64,
) -> StoreResult<Claim> {
    let slot_ms = cfg.slot_ms.max(1);
    let first = cfg.slot_of(now_ms);
    let last = cfg.slot_of(now_ms.saturating_add(cfg.min_hold_ms.min(slot_ms)));
    for slot in first..=last {
        match store.increment(&keys::lease(scope, slot), 1).await {
            Ok(1) => {}
            Ok(_) => {
                // Taken: give back what we won (we are its only holder, so deleting it is
                // ours to do), and report when that slot ends.
                undo(store, scope, first, slot).await;
                return Ok(Claim::Busy {
                    retry_at_ms: (slot + 1).saturating_mul(slot_ms),
                });
            }
            Err(e) => {
                // The outcome of this increment is unknown: it may have applied, and the
                // key may be someone else's. Leave it; give back only what we surely won.
                undo(store, scope, first, slot).await;
                return Err(e);
            }
        }
    }
    Ok(Claim::Held(Lease {
        scope: scope.to_string(),
        first_slot: first,
        last_slot: last,
        expires_at_ms: (last + 1).saturating_mul(slot_ms),
        margin_ms: cfg.margin_ms,
    }))
}

/// Deletes the keys of slots `first..until` (won by this claimant). Best effort: a failure
/// only leaves a key that lapses with its slot.
async fn undo(store: &impl Store, scope: &str, first: u64, until: u64) {
    for slot in first..until {
        let _ = delete_retried(store, &keys::lease(scope, slot)).await;
    }
}

/// Scope `op:{op}`.
pub async fn claim_operation(
    store: &impl Store,
    cfg: &LeaseConfig,
    op: &str,
    now_ms: u64,
) -> StoreResult<Claim> {
    claim(store, cfg, &keys::lease_scope_operation(op), now_ms).await
}

/// Lets one of overlapping ticks (several replicas, a slow tick) do the work. Only saves
/// duplicate reads: the due index and operation leases stay correct without it.
pub async fn claim_sweep(store: &impl Store, cfg: &LeaseConfig, now_ms: u64) -> StoreResult<Claim> {
    claim(store, cfg, keys::LEASE_SCOPE_SWEEP, now_ms).await
}

#[cfg(test)]
mod tests;
