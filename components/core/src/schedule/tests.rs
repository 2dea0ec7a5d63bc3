//! The primitives composed the way a sweep tick uses them, with the whole tick's store
//! cost measured. Operation records are stand-ins (`rec:{op}` holding `next_poll_at_ms`).

use super::backoff::{PollInput, PollPolicy};
use super::breaker::{Breaker, BreakerConfig, Decision};
use super::due::{self, DueConfig, Sweep};
use super::lease::{self, LeaseConfig};
use crate::foundation::clock::FixedClock;
use crate::foundation::store::{MemoryStore, get_json, set_json};
use crate::testing::SeededEntropy;
use futures::executor::block_on;
use std::cell::RefCell;
use std::collections::BTreeMap;

const T0: u64 = 1_800_000_000_000;

fn rec(op: &str) -> String {
    format!("rec:{op}")
}

/// One tick: sweep lease, due hints, per-operation lease, record check, breaker, "poll",
/// next poll time, reschedule. Returns the operations polled.
async fn tick(store: &MemoryStore, now: u64, polls: &RefCell<BTreeMap<String, u32>>) -> usize {
    tick_with(store, now, polls, true).await
}

async fn tick_with(
    store: &MemoryStore,
    now: u64,
    polls: &RefCell<BTreeMap<String, u32>>,
    sweep_lease: bool,
) -> usize {
    let due_cfg = DueConfig {
        initial_lookback_ms: 0,
        ..DueConfig::default()
    };
    let lease_cfg = LeaseConfig::default();
    let breaker_cfg = BreakerConfig::default();
    let policy = PollPolicy::default();
    let entropy = SeededEntropy::new(now);
    let clock = FixedClock(now);

    let tick_lease = if sweep_lease {
        match lease::claim_sweep(store, &lease_cfg, now).await.unwrap() {
            lease::Claim::Held(l) => Some(l),
            lease::Claim::Busy { .. } => return 0,
        }
    } else {
        None
    };
    let mut sweep = Sweep::begin(store, &due_cfg, now).await.unwrap();
    let mut polled = 0;
    for hint in sweep.hints().to_vec() {
        let lease = match lease::claim_operation(store, &lease_cfg, &hint.op_id, now)
            .await
            .unwrap()
        {
            lease::Claim::Held(l) => l,
            lease::Claim::Busy { retry_at_ms } => {
                sweep.defer(&hint, retry_at_ms);
                continue;
            }
        };
        let next: Option<u64> = get_json(store, &rec(&hint.op_id)).await.unwrap();
        if next.is_some_and(|at| at <= now) && lease.valid_at(now) {
            let breaker = Breaker::new(&breaker_cfg, "t1", "seller");
            let at = match breaker.allow(store, now).await.unwrap() {
                Decision::Allow(permit) => {
                    // The poll itself (not a store call) succeeded.
                    breaker.record_success(store, &permit, now).await.unwrap();
                    polled += 1;
                    let mut polls = polls.borrow_mut();
                    let n = polls.entry(hint.op_id.clone()).or_default();
                    *n += 1;
                    let input = PollInput {
                        attempts_since_change: *n,
                        webhook_registered: true,
                        retry_after_s: None,
                    };
                    policy.next_poll_at_ms(now, input, &entropy)
                }
                Decision::Deferred { until_ms } => until_ms,
            };
            set_json(store, &rec(&hint.op_id), &at).await.unwrap();
            due::schedule(store, &due_cfg, &clock, &hint.op_id, at)
                .await
                .unwrap();
        }
        lease.release(store).await.unwrap();
        sweep.settle(&hint);
    }
    sweep.commit(store, &clock).await.unwrap();
    if let Some(l) = tick_lease {
        l.release(store).await.unwrap();
    }
    polled
}

#[test]
fn a_whole_tick_costs_a_handful_of_store_calls_per_due_operation() {
    let s = MemoryStore::new();
    let polls = RefCell::new(BTreeMap::new());
    let due_cfg = DueConfig {
        initial_lookback_ms: 0,
        ..DueConfig::default()
    };
    block_on(async {
        tick(&s, T0, &polls).await;
        // 100 operations due within the next minute, 5,000 due in a day or more.
        let clock = FixedClock(T0);
        for i in 0..5_100u64 {
            let op = format!("op_{i}");
            let at = if i < 100 {
                T0 + i * 500
            } else {
                T0 + 86_400_000 + i * 1_000
            };
            set_json(&s, &rec(&op), &at).await.unwrap();
            due::schedule(&s, &due_cfg, &clock, &op, at).await.unwrap();
        }
        s.reset_counts();
        let polled = tick(&s, T0 + 60_000, &polls).await;
        let ops = s.total_ops();
        println!("whole tick: {polled} due operations polled with {ops} store calls");
        assert_eq!(polled, 100);
        // Per due operation: lease claim + release, record get + set, breaker 2 reads,
        // due read + reschedule 2 = 9; plus a fixed ~15 per tick.
        assert!(ops <= 9 * 100 + 20, "{ops}");
        // The backup cadence brings every operation back, at most once per tick.
        let mut t = T0 + 60_000;
        for _ in 0..5 {
            t += 60_000;
            let before = polls.borrow().clone();
            tick(&s, t, &polls).await;
            for (op, n) in polls.borrow().iter() {
                assert!(*n <= before.get(op).copied().unwrap_or(0) + 1, "{op}");
            }
        }
        assert!(polls.borrow().values().all(|n| *n >= 2));
    });
}

#[test]
fn overlapping_ticks_never_poll_one_operation_twice_at_once() {
    let s = MemoryStore::new();
    let polls = RefCell::new(BTreeMap::new());
    let due_cfg = DueConfig {
        initial_lookback_ms: 0,
        ..DueConfig::default()
    };
    block_on(async {
        tick(&s, T0, &polls).await;
        let clock = FixedClock(T0);
        for i in 0..50u64 {
            let op = format!("op_{i}");
            set_json(&s, &rec(&op), &T0).await.unwrap();
            due::schedule(&s, &due_cfg, &clock, &op, T0).await.unwrap();
        }
        // Three replicas tick at once: the sweep lease lets one in.
        let (a, b, c) = futures::join!(
            tick(&s, T0 + 20_000, &polls),
            tick(&s, T0 + 20_001, &polls),
            tick(&s, T0 + 20_002, &polls)
        );
        assert_eq!(
            (a + b + c, [a, b, c].iter().filter(|n| **n > 0).count()),
            (50, 1)
        );
        // Without the sweep lease, overlapping ticks share the work through operation
        // leases and the records: still one poll per operation.
        for i in 50..100u64 {
            let op = format!("op_{i}");
            set_json(&s, &rec(&op), &(T0 + 30_000)).await.unwrap();
            due::schedule(&s, &due_cfg, &clock, &op, T0 + 30_000)
                .await
                .unwrap();
        }
        let (a, b, c) = futures::join!(
            tick_with(&s, T0 + 40_000, &polls, false),
            tick_with(&s, T0 + 40_001, &polls, false),
            tick_with(&s, T0 + 40_002, &polls, false)
        );
        assert!(
            [a, b, c].iter().filter(|n| **n > 0).count() > 1,
            "{a} {b} {c}"
        );
        assert_eq!(a + b + c, 50);
        assert_eq!(polls.borrow().len(), 100);
        assert!(polls.borrow().values().all(|n| *n == 1));
        // Nothing is left in the store but records, the due index, the cursor and the
        // breaker's counter.
        assert!(
            s.keys().iter().all(|k| !k.starts_with("lease:")),
            "{:?}",
            s.keys()
        );
    });
}
