use super::*;
use crate::foundation::clock::FixedClock;
use crate::foundation::store::{MemoryStore, StoreOp};
use crate::testing::TestClock;
use futures::executor::block_on;
use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;

/// A bucket-aligned start time.
const T0: u64 = 1_800_000_000_000;

fn cfg() -> DueConfig {
    DueConfig {
        initial_lookback_ms: 0,
        ..DueConfig::default()
    }
}

/// One tick that handles every hint.
async fn tick(store: &impl Store, cfg: &DueConfig, now: u64) -> (Vec<Hint>, SweepReport) {
    let mut sweep = Sweep::begin(store, cfg, now).await.unwrap();
    let hints = sweep.hints().to_vec();
    hints.iter().for_each(|h| sweep.settle(h));
    let report = sweep.commit(store, &FixedClock(now)).await.unwrap();
    (hints, report)
}

/// Every entry of buckets `from..=to`, read without a cursor.
async fn scan(store: &MemoryStore, from_bucket: u64, to_bucket: u64) -> StoreResult<Vec<Hint>> {
    let mut hints = Vec::new();
    for bucket in from_bucket..=to_bucket {
        for n in 1..=bucket_count(store, bucket).await? {
            if let Some(op_id) = read_entry(store, bucket, n).await? {
                hints.push(Hint { bucket, n, op_id });
            }
        }
    }
    Ok(hints)
}

fn ids(hints: &[Hint]) -> Vec<String> {
    hints.iter().map(|h| h.op_id.clone()).collect()
}

#[test]
fn bucket_arithmetic() {
    let c = cfg();
    assert_eq!(c.bucket_of(T0 + 9_999), T0 / 10_000);
    assert_eq!(c.bucket_end_ms(T0 / 10_000), T0 + 10_000);
    assert!(!c.is_closed(T0 / 10_000, T0 + 69_999));
    assert!(c.is_closed(T0 / 10_000, T0 + 70_000));
    assert_eq!(c.last_due_bucket(T0 + 5), Some(T0 / 10_000 - 1));
    assert_eq!(c.last_due_bucket(5), None);
    // Scheduled in the past: the current bucket, never a past one.
    assert_eq!(
        filing_bucket(&c, T0 - 3_600_000, T0 + 12_000),
        T0 / 10_000 + 1
    );
    assert_eq!(
        filing_bucket(&c, T0 + 3_600_000, T0),
        (T0 + 3_600_000) / 10_000
    );
}

#[test]
fn entries_are_handed_out_once_their_bucket_has_ended() {
    let s = MemoryStore::new();
    let c = cfg();
    block_on(async {
        tick(&s, &c, T0).await; // creates the cursor at T0's bucket
        let clock = FixedClock(T0 + 1_000);
        let f = schedule(&s, &c, &clock, "op_past", T0 - 50_000)
            .await
            .unwrap();
        assert_eq!((f.bucket, f.n, f.attempts), (T0 / 10_000, 1, 1));
        schedule(&s, &c, &clock, "op_now", clock.now_ms())
            .await
            .unwrap();
        schedule(&s, &c, &clock, "op_soon", T0 + 15_000)
            .await
            .unwrap();
        schedule(&s, &c, &clock, "op_later", T0 + 3_600_000)
            .await
            .unwrap();
        assert_eq!(s.total_ops(), 3 + 2 * 4, "two store calls per filing");

        assert!(tick(&s, &c, T0 + 9_999).await.0.is_empty());
        assert_eq!(
            ids(&tick(&s, &c, T0 + 10_000).await.0),
            ["op_past", "op_now"]
        );
        // Read once: not again on the next tick.
        assert!(tick(&s, &c, T0 + 15_000).await.0.is_empty());
        assert_eq!(ids(&tick(&s, &c, T0 + 25_000).await.0), ["op_soon"]);
        assert!(tick(&s, &c, T0 + 3_000_000).await.0.is_empty());
        assert_eq!(ids(&tick(&s, &c, T0 + 3_610_000).await.0), ["op_later"]);
    });
}

#[test]
fn duplicates_and_stale_hints_are_just_hints() {
    let s = MemoryStore::new();
    let c = cfg();
    block_on(async {
        tick(&s, &c, T0).await;
        let clock = FixedClock(T0);
        schedule(&s, &c, &clock, "op_1", T0 + 1_000).await.unwrap();
        // Rescheduled later: the old entry stays; the record will call it stale.
        schedule(&s, &c, &clock, "op_1", T0 + 31_000).await.unwrap();
        schedule(&s, &c, &clock, "op_1", T0 + 2_000).await.unwrap();
        // One hint per operation and tick; the duplicate is dropped.
        let (hints, r) = tick(&s, &c, T0 + 10_000).await;
        assert_eq!((ids(&hints), r.duplicates), (vec!["op_1".to_string()], 1));
        assert_eq!(ids(&tick(&s, &c, T0 + 40_000).await.0), ["op_1"]);
    });
}

#[test]
fn unsettled_hints_are_read_again_and_deferred_ones_filed_at_their_time() {
    let s = MemoryStore::new();
    let c = cfg();
    block_on(async {
        tick(&s, &c, T0).await;
        let clock = FixedClock(T0);
        for op in ["op_a", "op_b", "op_c"] {
            schedule(&s, &c, &clock, op, T0).await.unwrap();
        }
        let now = T0 + 10_000;
        let mut sweep = Sweep::begin(&s, &c, now).await.unwrap();
        let hints = sweep.hints().to_vec();
        assert_eq!(ids(&hints), ["op_a", "op_b", "op_c"]);
        sweep.settle(&hints[0]);
        sweep.defer(&hints[2], T0 + 45_000);
        // op_b left unsettled (the tick ran out of time): no write, the cursor keeps it.
        s.reset_counts();
        let report = sweep.commit(&s, &FixedClock(now)).await.unwrap();
        assert_eq!((report.requeued, report.unread), (1, 1));
        assert_eq!(s.count(StoreOp::Increment), 1, "only op_c is filed again");
        assert_eq!(ids(&tick(&s, &c, T0 + 20_000).await.0), ["op_b"]);
        assert!(tick(&s, &c, T0 + 45_000).await.0.is_empty());
        assert_eq!(ids(&tick(&s, &c, T0 + 50_000).await.0), ["op_c"]);
    });
}

/// Six operations over three buckets; a tick settles some, defers one and does not get to
/// another. Returns what it settled and whether its commit succeeded.
async fn storm_tick(store: &impl Store, c: &DueConfig, now: u64) -> (BTreeSet<String>, bool) {
    let Ok(mut sweep) = Sweep::begin(store, c, now).await else {
        return (BTreeSet::new(), false);
    };
    let mut settled = BTreeSet::new();
    for h in sweep.hints().to_vec() {
        match h.op_id.as_str() {
            "op_2" => sweep.defer(&h, now + 30_000),
            "op_4" => {} // out of time
            id => {
                settled.insert(id.to_string());
                sweep.settle(&h);
            }
        }
    }
    let ok = sweep.commit(store, &FixedClock(now)).await.is_ok();
    (settled, ok)
}

async fn storm_setup(store: &impl Store, c: &DueConfig) {
    tick(store, c, T0).await;
    for i in 0..6u64 {
        let at = T0 + 1_000 + (i % 3) * 10_000;
        schedule(store, c, &FixedClock(at), &format!("op_{i}"), at)
            .await
            .unwrap();
    }
}

#[test]
fn every_failed_call_of_a_tick_loses_no_hint_and_keeps_the_progress_of_the_others() {
    let c = cfg();
    let now = T0 + 40_000;
    block_on(async {
        let clean = MemoryStore::new();
        storm_setup(&clean, &c).await;
        clean.reset_counts();
        storm_tick(&clean, &c, now).await;
        let calls = clean.total_ops();
        assert!(calls > 10, "the tick makes {calls} calls");
        for n in 1..=calls {
            for lose in [false, true] {
                let s = crate::testing::LossyStore::default();
                storm_setup(&s, &c).await;
                if lose {
                    s.lose_nth_answer(n);
                } else {
                    s.inner.fail_nth_call(n);
                }
                let (mut settled, ok) = storm_tick(&s, &c, now).await;
                let faulty = settled.clone();
                // The next ticks, clean and working everything, until op_2's time has come.
                for (k, at) in [now + 1, now + 31_000, now + 120_000]
                    .into_iter()
                    .enumerate()
                {
                    let (hints, _) = tick(&s.inner, &c, at).await;
                    let again: Vec<_> = ids(&hints)
                        .into_iter()
                        .filter(|id| faulty.contains(id))
                        .collect();
                    assert!(
                        k > 0 || !ok || again.is_empty(),
                        "call {n} (lost answer: {lose}): the commit succeeded but the next \
                         tick hands out again {again:?}"
                    );
                    settled.extend(ids(&hints));
                }
                let all: BTreeSet<String> = (0..6).map(|i| format!("op_{i}")).collect();
                assert_eq!(settled, all, "call {n} (lost answer: {lose})");
            }
        }
    });
}

#[test]
fn holes_are_waited_for_during_the_grace_period_then_skipped() {
    let s = MemoryStore::new();
    let c = cfg();
    let b = T0 / 10_000;
    block_on(async {
        tick(&s, &c, T0).await;
        // Writer 1 got slot 1 and has not written yet; writer 2 wrote slot 2; writer 3
        // crashed after taking slot 3.
        s.increment(&keys::due_count(b), 1).await.unwrap();
        schedule(&s, &c, &FixedClock(T0), "op_2", T0).await.unwrap();
        s.increment(&keys::due_count(b), 1).await.unwrap();
        let (hints, r) = tick(&s, &c, T0 + 10_000).await;
        assert_eq!(ids(&hints), ["op_2"]);
        assert_eq!(r.cursor, b);
        let cur: Cursor = get_json(&s, keys::SWEEP_CURSOR).await.unwrap().unwrap();
        assert_eq!(
            cur.open[&b],
            Progress {
                read: 3,
                holes: vec![1, 3]
            }
        );
        // Writer 1 lands within its write guard; only the holes are read again.
        s.set(&keys::due_entry(b, 1), b"op_1").await.unwrap();
        s.reset_counts();
        let (hints, r) = tick(&s, &c, T0 + 20_000).await;
        assert_eq!(ids(&hints), ["op_1"]);
        assert_eq!(
            s.count(StoreOp::Get),
            2 + 2 + 2,
            "cursor twice, two holes, the two due buckets' counts"
        );
        assert_eq!(r.holes_skipped, 0);
        // Once the bucket is closed, the remaining hole is given up and the cursor moves on.
        let (hints, r) = tick(&s, &c, T0 + 70_000).await;
        assert!(hints.is_empty());
        assert_eq!(r.holes_skipped, 1);
        assert_eq!(r.cursor, b + 1);
    });
}

/// A clock that jumps forward by `step` on each of its first `stalls` readings: a writer
/// stalled between its calls.
struct StallingClock {
    now: Cell<u64>,
    step: u64,
    stalls: Cell<u32>,
}

impl StallingClock {
    fn new(step: u64, stalls: u32) -> Self {
        StallingClock {
            now: Cell::new(T0),
            step,
            stalls: Cell::new(stalls),
        }
    }
}

impl Clock for StallingClock {
    fn now_ms(&self) -> u64 {
        let t = self.now.get();
        if self.stalls.get() > 0 {
            self.stalls.set(self.stalls.get() - 1);
            self.now.set(t + self.step);
        }
        t
    }
}

#[test]
fn a_writer_slower_than_the_write_guard_files_again_in_the_current_bucket() {
    let s = MemoryStore::new();
    let c = cfg();
    block_on(async {
        // Landing 25 s after the start, 15 s after the bucket's end: within the guard.
        let clock = StallingClock::new(25_000, 1);
        assert_eq!(
            schedule(&s, &c, &clock, "op_0", T0).await.unwrap().attempts,
            1
        );
        // Landing 35 s after the start, 25 s after the bucket's end: filed again.
        let clock = StallingClock::new(35_000, 1);
        let f = schedule(&s, &c, &clock, "op_1", T0).await.unwrap();
        assert_eq!(f.attempts, 2);
        assert_eq!(f.bucket, (T0 + 35_000) / 10_000);
        assert_eq!(
            ids(&scan(&s, T0 / 10_000, f.bucket).await.unwrap()),
            ["op_0", "op_1", "op_1"]
        );
        // Far-future entries are never at risk and are filed once.
        let clock = StallingClock::new(25_000, 1);
        assert_eq!(
            schedule(&s, &c, &clock, "op_2", T0 + 3_600_000)
                .await
                .unwrap()
                .attempts,
            1
        );
        // A writer stalled every time gives up with an error.
        let clock = StallingClock::new(100_000, 100);
        assert!(schedule(&s, &c, &clock, "op_3", T0).await.is_err());
    });
}

#[test]
fn cursor_merge_is_the_union_of_what_was_read() {
    let a = Cursor {
        bucket: 10,
        open: BTreeMap::from([
            (
                10,
                Progress {
                    read: 5,
                    holes: vec![2, 4],
                },
            ),
            (
                11,
                Progress {
                    read: 1,
                    holes: vec![],
                },
            ),
        ]),
        purged: 3,
    };
    let b = Cursor {
        bucket: 10,
        open: BTreeMap::from([(
            10,
            Progress {
                read: 3,
                holes: vec![3],
            },
        )]),
        purged: 5,
    };
    let m = a.merge(&b);
    assert_eq!(
        m.open[&10],
        Progress {
            read: 5,
            holes: vec![4]
        }
    );
    assert_eq!(
        m.open[&11],
        Progress {
            read: 1,
            holes: vec![]
        }
    );
    assert_eq!(m.purged, 5);
    assert_eq!(m, b.merge(&a));
    assert_eq!(m.merge(&m), m);
    // A cursor past bucket 10 has finished it: the merge drops it.
    let c = Cursor {
        bucket: 11,
        open: BTreeMap::new(),
        purged: 0,
    };
    let m2 = m.merge(&c);
    assert_eq!(m2.bucket, 11);
    assert_eq!(m2.open.keys().copied().collect::<Vec<_>>(), [11]);
    assert_eq!(a.merge(&b).merge(&c), a.merge(&b.merge(&c)));
    // Small on the wire.
    let json = serde_json::to_string(&m).unwrap();
    assert!(json.len() < 100, "{json}");
    assert_eq!(serde_json::from_str::<Cursor>(&json).unwrap(), m);
}

/// Store ops of one tick over 100 due operations, with `pending` more filed in future
/// buckets.
fn measure(pending: usize) -> (u64, u64, u64) {
    let s = MemoryStore::new();
    let c = cfg();
    block_on(async {
        tick(&s, &c, T0).await;
        let clock = FixedClock(T0);
        for i in 0..100u64 {
            schedule(&s, &c, &clock, &format!("due_{i}"), T0 + i * 600)
                .await
                .unwrap();
        }
        for i in 0..pending as u64 {
            let at = T0 + 3_600_000 + i * 7_919 % (10 * 86_400_000);
            schedule(&s, &c, &clock, &format!("pending_{i}"), at)
                .await
                .unwrap();
        }
        // Steady state: a tick a minute. This one sees all 100.
        s.reset_counts();
        let (hints, _) = tick(&s, &c, T0 + 60_000).await;
        assert_eq!(hints.len(), 100);
        let due_tick = s.total_ops();
        // Idle minutes until the 100 entries are purged.
        s.reset_counts();
        let mut t = T0 + 60_000;
        while t < T0 + 60_000 + c.retain_ms + 2 * c.grace_ms {
            t += 60_000;
            assert!(tick(&s, &c, t).await.0.is_empty());
        }
        let later = s.total_ops();
        assert!(
            s.count(StoreOp::Delete) > 100,
            "every entry and count purged"
        );
        let due_keys = s.keys().iter().filter(|k| k.starts_with("due:")).count() as u64;
        (due_tick, later, due_keys)
    })
}

#[test]
fn a_tick_costs_o_due_work_not_o_pending() {
    let (small, small_later, small_keys) = measure(1_000);
    let (big, big_later, big_keys) = measure(10_000);
    println!(
        "due tick: {small} ops among 1,000 pending, {big} among 10,000; \
         later idle ticks incl. purge: {small_later} / {big_later}; due keys left {small_keys} / {big_keys}"
    );
    assert!(big as f64 <= 1.2 * small as f64);
    assert!(big_later as f64 <= 1.2 * small_later as f64);
    // Index cost of the due tick per due operation.
    assert!(big <= 3 * 100, "{big}");
    // Reading plus purging each entry, over its whole life, stays within 3 per entry plus a
    // fixed cost per bucket of time (a count read, its purge read and delete).
    let buckets = (60_000 + 600_000 + 2 * 60_000) / 10_000 + 6;
    assert!(
        big + big_later <= 2 * 100 + 3 * buckets + 3 * 14,
        "{}",
        big + big_later
    );
    // Only the future's entries and counts remain (plus the recent buckets).
    assert!(big_keys <= 2 * 10_000 + 2 * 10_000 + 100, "{big_keys}");
}

#[test]
fn the_index_stays_bounded_over_time() {
    let s = MemoryStore::new();
    let c = cfg();
    block_on(async {
        let mut t = T0;
        let mut at_2h = 0;
        for minute in 0..240u64 {
            if minute == 120 {
                at_2h = s.keys().iter().filter(|k| k.starts_with("due:")).count();
            }
            for i in 0..5 {
                let op = format!("op_{minute}_{i}");
                schedule(&s, &c, &FixedClock(t), &op, t + i * 20_000)
                    .await
                    .unwrap();
            }
            tick(&s, &c, t).await;
            t += 60_000;
        }
        let due_keys = s.keys().iter().filter(|k| k.starts_with("due:")).count();
        // The retention window (10 min: 60 counts and 50 entries) plus the grace period
        // and the near future: flat over time.
        assert!(due_keys <= 150, "{due_keys} due keys after 4 h");
        assert!(
            due_keys.abs_diff(at_2h) <= 10,
            "{at_2h} after 2 h, {due_keys} after 4 h"
        );
    });
}

#[test]
fn limits_leave_a_backlog_for_the_next_tick() {
    let s = MemoryStore::new();
    let c = DueConfig {
        max_entries: 30,
        max_buckets: 4,
        ..cfg()
    };
    block_on(async {
        tick(&s, &c, T0).await;
        for i in 0..100u64 {
            schedule(&s, &c, &FixedClock(T0), &format!("op_{i}"), T0 + i * 1_000)
                .await
                .unwrap();
        }
        let mut seen = Vec::new();
        let mut t = T0 + 200_000;
        loop {
            let (hints, r) = tick(&s, &c, t).await;
            assert!(hints.len() <= 30);
            seen.extend(ids(&hints));
            t += 1_000;
            if !r.backlog {
                break;
            }
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 100);
    });
}

#[test]
fn a_fresh_index_starts_the_lookback_in_the_past() {
    let s = MemoryStore::new();
    let c = DueConfig::default();
    block_on(async {
        // Filed before any sweep ever ran.
        schedule(&s, &c, &FixedClock(T0), "op_early", T0)
            .await
            .unwrap();
        let (hints, r) = tick(&s, &c, T0 + 1_800_000).await;
        assert_eq!(ids(&hints), ["op_early"]);
        assert!(!r.backlog);
    });
}

#[test]
fn concurrent_writers_and_overlapping_sweeps_lose_nothing() {
    let s = MemoryStore::new();
    let c = cfg();
    let clock = TestClock::new(T0);
    let seen = RefCell::new(BTreeSet::new());
    let filed = RefCell::new(BTreeSet::new());
    let writers_done = Cell::new(0);
    block_on(async {
        tick(&s, &c, T0).await;
        let writer = |w: u64| {
            let (s, c, clock, filed, writers_done) = (&s, &c, &clock, &filed, &writers_done);
            async move {
                for i in 0..150u64 {
                    let op = format!("op_{w}_{i}");
                    let now = clock.0.get();
                    // Due in the past, now, or up to 40 s ahead.
                    let due = (now + (i * 7_919 + w * 104_729) % 60_000).saturating_sub(20_000);
                    schedule(s, c, clock, &op, due).await.unwrap();
                    filed.borrow_mut().insert(op);
                }
                writers_done.set(writers_done.get() + 1);
            }
        };
        let sweeper = |id: u64| {
            let (s, c, clock, seen, writers_done) = (&s, &c, &clock, &seen, &writers_done);
            async move {
                let mut quiet_ticks = 0;
                while quiet_ticks < 40 {
                    // Two sweepers overlap: each reads, then handles hints one store call apart.
                    let now = clock.0.get();
                    let mut sweep = Sweep::begin(s, c, now).await.unwrap();
                    for h in sweep.hints().to_vec() {
                        seen.borrow_mut().insert(h.op_id.clone());
                        // Simulated record read.
                        s.get("op:x").await.unwrap();
                        sweep.settle(&h);
                    }
                    sweep.commit(s, clock).await.unwrap();
                    if id == 0 {
                        clock.advance(3_000);
                    }
                    if writers_done.get() == 4 {
                        quiet_ticks += 1;
                    }
                }
            }
        };
        futures::join!(
            writer(0),
            writer(1),
            writer(2),
            writer(3),
            sweeper(0),
            sweeper(1)
        );
    });
    let filed = filed.into_inner();
    let seen = seen.into_inner();
    assert_eq!(filed.len(), 600);
    let missing: Vec<_> = filed.difference(&seen).collect();
    assert!(missing.is_empty(), "never handed out: {missing:?}");
}

#[test]
fn a_failed_cursor_write_hands_the_same_entries_out_again() {
    let s = MemoryStore::new();
    let c = cfg();
    block_on(async {
        tick(&s, &c, T0).await;
        let clock = FixedClock(T0);
        schedule(&s, &c, &clock, "op_1", T0).await.unwrap();
        schedule(&s, &c, &clock, "op_2", T0).await.unwrap();
        let now = T0 + 10_000;
        let mut sweep = Sweep::begin(&s, &c, now).await.unwrap();
        assert_eq!(sweep.hints().len(), 2);
        let all = sweep.hints().to_vec();
        all.iter().for_each(|h| sweep.settle(h));
        // The commit's re-read works, its cursor write fails.
        s.fail_nth_call(2);
        assert!(sweep.commit(&s, &FixedClock(now)).await.is_err());
        assert_eq!(ids(&tick(&s, &c, now + 1).await.0), ["op_1", "op_2"]);
        assert!(tick(&s, &c, now + 2).await.0.is_empty());
        // A requeue that fails leaves its hint unread: the next tick reads it again.
        schedule(&s, &c, &clock, "op_3", T0).await.unwrap();
        let mut sweep = Sweep::begin(&s, &c, now + 3).await.unwrap();
        assert_eq!(ids(sweep.hints()), ["op_3"]);
        let h = sweep.hints()[0].clone();
        sweep.defer(&h, T0 + 40_000);
        s.fail_nth_call(1);
        let report = sweep.commit(&s, &FixedClock(now + 3)).await.unwrap();
        assert_eq!((report.requeued, report.unread), (0, 1));
        assert_eq!(ids(&tick(&s, &c, now + 4).await.0), ["op_3"]);
    });
}

#[test]
fn a_corrupt_cursor_restarts_from_the_lookback() {
    let s = MemoryStore::new();
    let c = DueConfig {
        initial_lookback_ms: 120_000,
        ..cfg()
    };
    block_on(async {
        schedule(&s, &c, &FixedClock(T0), "op_1", T0).await.unwrap();
        s.set(keys::SWEEP_CURSOR, b"{not json").await.unwrap();
        assert_eq!(ids(&tick(&s, &c, T0 + 60_000).await.0), ["op_1"]);
        let cur: Cursor = get_json(&s, keys::SWEEP_CURSOR).await.unwrap().unwrap();
        assert!(cur.bucket <= T0 / 10_000 + 1);
    });
}

#[test]
fn a_store_failure_while_reading_the_index_hands_out_what_was_read_and_rereads_the_rest() {
    let s = MemoryStore::new();
    let c = cfg();
    block_on(async {
        tick(&s, &c, T0).await;
        let clock = FixedClock(T0 + 1_000);
        schedule(&s, &c, &clock, "op_a", T0 + 1_000).await.unwrap();
        schedule(&s, &c, &clock, "op_b", T0 + 31_000).await.unwrap();
        let later = T0 + 120_000;
        // Fail the first call into op_b's bucket: count how many calls reach it.
        s.reset_counts();
        let clean = Sweep::begin(&s, &c, later).await.unwrap();
        assert_eq!(ids(clean.hints()), ["op_a", "op_b"]);
        let mut failing_at = None;
        for n in 1..=s.total_ops() {
            s.fail_nth_call(n);
            let sweep = Sweep::begin(&s, &c, later).await;
            if let Ok(sweep) = sweep
                && ids(sweep.hints()) == ["op_a"]
            {
                failing_at = Some(n);
                // Working op_a and committing leaves op_b to the next tick.
                let mut sweep = sweep;
                let hints = sweep.hints().to_vec();
                hints.iter().for_each(|h| sweep.settle(h));
                sweep.commit(&s, &FixedClock(later)).await.unwrap();
                let (next, _) = tick(&s, &c, later + 1_000).await;
                assert_eq!(ids(&next), ["op_b"]);
                break;
            }
        }
        assert!(
            failing_at.is_some(),
            "a failure inside op_b's bucket still hands out op_a"
        );
    });
}
