//! Leases from `increment` alone: at most one holder at a time, and a crashed holder's
//! lease lapses on its own.
//!
//! Time is cut into slots of [`LeaseConfig::slot_ms`]. A lease on a scope (an operation, or
//! the sweep tick) for slot `s` is the counter `lease:{scope}:{s}`; a claimant increments
//! it and holds the slot iff the answer is 1. `increment` is atomic on every Spin backend,
//! so exactly one claimant per slot sees 1; no compare-and-swap is involved.
//!
//! A claim made at `now` covers every slot from `now` to `now + min_hold_ms` (one slot, or
//! two near a slot's end), claimed in order; it succeeds only if it won all of them, and it
//! is valid until the end of the last one. **Exclusivity:** if two holders were valid at the
//! same instant `t`, both claims cover the slot containing `t`, so both saw 1 from the same
//! counter, which `increment` rules out. A holder checks [`Lease::valid_at`] (which keeps a
//! safety margin for clock skew between replicas) before each step it takes.
//!
//! **Expiry.** Nothing needs to be cleaned up for a lease to end: the next slot is a fresh
//! counter. A holder that crashes, or whose `increment` answer is lost (the increment
//! applied, the caller saw an error; spin#3563), blocks the scope until its slot ends, never
//! longer.
//!
//! **Release and garbage.** A holder that is done deletes its keys ([`Lease::release`]);
//! a claimant arriving later in the same slot then wins the fresh counter, which is right:
//! the previous holder has stopped. A claim that wins its first slot but loses the second
//! deletes what it won. Keys survive only crashes and lost answers (8 bytes each);
//! [`purge`] deletes a scope's keys over a range of past slots.

use crate::foundation::keys;
use crate::foundation::store::{Store, StoreResult};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeaseConfig {
    /// Slot length: the longest a crashed holder can block a scope.
    pub slot_ms: u64,
    /// A fresh lease is valid for at least this long (it spills into the next slot when
    /// claimed near a slot's end). At most `slot_ms`.
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

/// A held lease.
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
    /// The holder may still act at `now_ms`.
    pub fn valid_at(&self, now_ms: u64) -> bool {
        now_ms.saturating_add(self.margin_ms) < self.expires_at_ms
    }

    /// How long the holder may still act.
    pub fn remaining_ms(&self, now_ms: u64) -> u64 {
        self.expires_at_ms
            .saturating_sub(self.margin_ms)
            .saturating_sub(now_ms)
    }

    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// Ends the lease now: deletes its counters, so the next claimant wins at once and no
    /// key is left behind. Call it only when the work is done (or abandoned).
    pub async fn release(self, store: &impl Store) -> StoreResult<()> {
        for slot in self.first_slot..=self.last_slot {
            store.delete(&keys::lease(&self.scope, slot)).await?;
        }
        Ok(())
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
        let _ = store.delete(&keys::lease(scope, slot)).await;
    }
}

/// Claims the operation `op` (scope `op:{op}`).
pub async fn claim_operation(
    store: &impl Store,
    cfg: &LeaseConfig,
    op: &str,
    now_ms: u64,
) -> StoreResult<Claim> {
    claim(store, cfg, &keys::lease_scope_operation(op), now_ms).await
}

/// Claims the sweep tick, so that overlapping ticks (several replicas, a slow tick) leave
/// the work to one of them. The due index and operation leases stay correct without it;
/// it only saves duplicate reads.
pub async fn claim_sweep(store: &impl Store, cfg: &LeaseConfig, now_ms: u64) -> StoreResult<Claim> {
    claim(store, cfg, keys::LEASE_SCOPE_SWEEP, now_ms).await
}

/// Deletes a scope's lease counters for `slots` (retention for keys left by crashed
/// holders or lost answers). Only pass slots that have ended: deleting the current slot's
/// counter would let a second claimant in.
pub async fn purge(
    store: &impl Store,
    scope: &str,
    slots: std::ops::Range<u64>,
) -> StoreResult<()> {
    for slot in slots {
        store.delete(&keys::lease(scope, slot)).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::foundation::store::MemoryStore;
    use crate::testing::LossyStore;
    use futures::executor::block_on;
    use futures::future::join_all;

    const CFG: LeaseConfig = LeaseConfig {
        slot_ms: 60_000,
        min_hold_ms: 30_000,
        margin_ms: 5_000,
    };

    #[test]
    fn exactly_one_of_many_concurrent_claimants_holds() {
        let s = MemoryStore::new();
        block_on(async {
            let claims =
                join_all((0..16).map(|i| claim_operation(&s, &CFG, "op_1", 1_000 + i))).await;
            let held: Vec<Lease> = claims
                .into_iter()
                .filter_map(|c| c.unwrap().lease())
                .collect();
            assert_eq!(held.len(), 1);
            assert_eq!(held[0].expires_at_ms, 60_000);
            assert!(held[0].valid_at(54_999));
            assert!(!held[0].valid_at(55_000));
            assert_eq!(held[0].remaining_ms(50_000), 5_000);
            // Another scope is independent.
            assert!(matches!(
                claim_operation(&s, &CFG, "op_2", 1_000).await.unwrap(),
                Claim::Held(_)
            ));
            // One increment per claimant, nothing else.
            assert_eq!(s.total_ops(), 17);
        });
    }

    #[test]
    fn holders_are_never_valid_at_the_same_instant() {
        // Claimants spread over three slot boundaries, all interleaved, none releasing.
        let s = MemoryStore::new();
        block_on(async {
            let times: Vec<u64> = (0..200).map(|i| 20_000 + i * 997).collect();
            let claims = join_all(times.iter().map(|t| claim(&s, &CFG, "x", *t))).await;
            let mut held: Vec<(u64, u64)> = times
                .iter()
                .zip(claims)
                .filter_map(|(t, c)| c.unwrap().lease().map(|l| (*t, l.expires_at_ms)))
                .collect();
            assert!(held.len() >= 3, "{held:?}");
            held.sort();
            for w in held.windows(2) {
                assert!(w[0].1 <= w[1].0, "overlap: {w:?}");
            }
            // Every lease lasts at least min_hold.
            assert!(held.iter().all(|(t, e)| e - t >= CFG.min_hold_ms));
        });
    }

    #[test]
    fn near_a_slot_end_the_lease_spans_the_next_slot() {
        let s = MemoryStore::new();
        block_on(async {
            let l = claim(&s, &CFG, "x", 50_000).await.unwrap().lease().unwrap();
            assert_eq!(l.expires_at_ms, 120_000);
            assert_eq!(s.keys(), vec!["lease:x:0", "lease:x:1"]);
            // A claimant in the next slot is refused while it lasts.
            assert_eq!(
                claim(&s, &CFG, "x", 70_000).await.unwrap(),
                Claim::Busy {
                    retry_at_ms: 120_000
                }
            );
            l.release(&s).await.unwrap();
            assert!(s.keys().is_empty());
        });
    }

    #[test]
    fn a_claim_that_loses_its_second_slot_gives_back_the_first() {
        let s = MemoryStore::new();
        block_on(async {
            // A holder of slot 1 (clock slightly ahead of ours).
            let other = claim(&s, &CFG, "x", 61_000).await.unwrap().lease().unwrap();
            assert_eq!(
                claim(&s, &CFG, "x", 50_000).await.unwrap(),
                Claim::Busy {
                    retry_at_ms: 120_000
                }
            );
            // Slot 0 was given back: a claimant needing only slot 0 wins it.
            let l = claim(&s, &CFG, "x", 10_000).await.unwrap().lease().unwrap();
            l.release(&s).await.unwrap();
            other.release(&s).await.unwrap();
            assert!(s.keys().is_empty(), "{:?}", s.keys());
        });
    }

    #[test]
    fn release_lets_the_next_claimant_in_and_leaves_no_key() {
        let s = MemoryStore::new();
        block_on(async {
            let a = claim_sweep(&s, &CFG, 1_000).await.unwrap().lease().unwrap();
            assert!(matches!(
                claim_sweep(&s, &CFG, 2_000).await.unwrap(),
                Claim::Busy { .. }
            ));
            a.release(&s).await.unwrap();
            let b = claim_sweep(&s, &CFG, 3_000).await.unwrap().lease().unwrap();
            b.release(&s).await.unwrap();
            assert!(s.keys().is_empty());
        });
    }

    #[test]
    fn a_crashed_holder_blocks_only_until_its_slot_ends() {
        let s = MemoryStore::new();
        block_on(async {
            let crashed = claim_operation(&s, &CFG, "op_1", 1_000).await.unwrap();
            assert!(matches!(crashed, Claim::Held(_)));
            drop(crashed); // never released
            for t in [2_000, 30_000, 59_999] {
                assert_eq!(
                    claim_operation(&s, &CFG, "op_1", t).await.unwrap(),
                    Claim::Busy {
                        retry_at_ms: 60_000
                    }
                );
            }
            let next = claim_operation(&s, &CFG, "op_1", 60_000)
                .await
                .unwrap()
                .lease()
                .unwrap();
            next.release(&s).await.unwrap();
            // The crashed holder's counter is garbage until purged.
            assert_eq!(s.keys(), vec!["lease:op:op_1:0"]);
            purge(&s, &keys::lease_scope_operation("op_1"), 0..1)
                .await
                .unwrap();
            assert!(s.keys().is_empty());
        });
    }

    #[test]
    fn a_lost_increment_answer_wedges_the_scope_for_one_slot_at_most() {
        let s = LossyStore::default();
        block_on(async {
            s.lose_nth_answer(1);
            assert!(claim_operation(&s, &CFG, "op_1", 1_000).await.is_err());
            // The increment applied, so nobody holds slot 0 and nobody can …
            let during =
                join_all((0..4).map(|i| claim_operation(&s, &CFG, "op_1", 10_000 + i))).await;
            assert!(
                during
                    .into_iter()
                    .all(|c| matches!(c.unwrap(), Claim::Busy { .. }))
            );
            // … until the slot ends.
            let l = claim_operation(&s, &CFG, "op_1", 60_001)
                .await
                .unwrap()
                .lease()
                .unwrap();
            l.release(&s).await.unwrap();
        });
    }

    #[test]
    fn a_lost_answer_on_the_second_slot_keeps_the_unknown_key_and_frees_the_first() {
        let s = LossyStore::default();
        block_on(async {
            s.lose_nth_answer(2);
            assert!(claim(&s, &CFG, "x", 50_000).await.is_err());
            // Slot 0 was surely ours and is given back; slot 1's counter is left alone.
            assert_eq!(s.inner.keys(), vec!["lease:x:1"]);
            let l = claim(&s, &CFG, "x", 10_000).await.unwrap().lease().unwrap();
            l.release(&s).await.unwrap();
            assert!(matches!(
                claim(&s, &CFG, "x", 70_000).await.unwrap(),
                Claim::Busy { .. }
            ));
            assert!(matches!(
                claim(&s, &CFG, "x", 120_000).await.unwrap(),
                Claim::Held(_)
            ));
        });
    }
}
