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
        let claims = join_all((0..16).map(|i| claim_operation(&s, &CFG, "op_1", 1_000 + i))).await;
        let held: Vec<Lease> = claims
            .into_iter()
            .filter_map(|c| c.unwrap().lease())
            .collect();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].expires_at_ms, 60_000);
        assert!(held[0].valid_at(54_999));
        assert!(!held[0].valid_at(55_000));
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
        // The crashed holder's counter is garbage until the auditor removes it.
        assert_eq!(s.keys(), vec!["lease:op:op_1:0"]);
    });
}

#[test]
fn a_lost_increment_answer_wedges_the_scope_for_one_slot_at_most() {
    let s = LossyStore::default();
    block_on(async {
        s.lose_nth_answer(1);
        assert!(claim_operation(&s, &CFG, "op_1", 1_000).await.is_err());
        // The increment applied, so nobody holds slot 0 and nobody can …
        let during = join_all((0..4).map(|i| claim_operation(&s, &CFG, "op_1", 10_000 + i))).await;
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
