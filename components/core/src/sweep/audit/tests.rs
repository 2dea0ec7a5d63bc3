//! Each invariant planted broken in a store written directly, then found and repaired; and a
//! pass over 10,000 operations within 20 ticks' budgets.

use super::*;
use crate::config::SweepConfig;
use crate::foundation::clock::Clock;
use crate::foundation::cx::Cx;
use crate::foundation::log::NoLog;
use crate::foundation::seal::SealingKey;
use crate::foundation::store::MemoryStore;
use crate::lifecycle::create::{Filing, store_new};
use crate::records::metrics;
use crate::testing::{
    FakeSeller, ScriptedTransport, SeededEntropy, TestClock, sample, sample_seller,
};
use futures::executor::block_on;

struct World {
    store: MemoryStore,
    clock: TestClock,
    config: SweepConfig,
}

impl World {
    /// A registered seller and `n` operations stored as the API stores them.
    fn new(n: usize) -> World {
        let w = World {
            store: MemoryStore::new(),
            clock: TestClock::new(100 * 86_400_000),
            config: SweepConfig::default(),
        };
        block_on(async {
            let s = sample_seller();
            seller::put(&w.store, &s).await.unwrap();
            seller::index(&w.store, &s.tenant_id, &s.seller_id)
                .await
                .unwrap();
            for i in 0..n {
                let mut op = sample(&format!("op{i}"));
                op.deadline_at_ms = w.clock.now_ms() + 86_400_000;
                let cx = Cx::new(&w.store, &w.clock as &dyn Clock, &NoLog);
                store_new(
                    cx,
                    &w.config.due,
                    &op,
                    w.clock.now_ms() + 60_000,
                    Filing::Complete,
                )
                .await
                .unwrap();
            }
        });
        w
    }

    fn audit(&self) -> Audited {
        let (entropy, transport, calls) = (
            SeededEntropy::new(1),
            ScriptedTransport::default(),
            FakeSeller::default(),
        );
        let sealing = SealingKey::from_hex(&"ab".repeat(32)).unwrap();
        let env = SweepEnv {
            store: &self.store,
            clock: &self.clock,
            entropy: &entropy,
            log: &NoLog,
            sealing: &sealing,
            calls: &calls,
            transport: &transport,
            config: &self.config,
        };
        block_on(run(&env, true))
    }

    fn repairs(&self, invariant: &str) -> u64 {
        let text = block_on(metrics::render(&self.store, &Default::default(), 0)).unwrap();
        let series = format!("adcp_audit_repairs_total{{invariant=\"{invariant}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series)?.parse().ok())
            .unwrap()
    }
}

#[test]
fn a_clean_store_needs_no_repair() {
    let w = World::new(3);
    let a = w.audit();
    assert_eq!((a.checked, a.repaired, a.passed), (3, 0, true));
    for invariant in metrics::AUDIT_INVARIANTS {
        assert_eq!(w.repairs(invariant), 0, "{invariant}");
    }
}

/// `(status, count)` of the tenant's summary and of the task gauge, for pending_dispatch.
fn pending_counts(w: &World) -> (i64, i64) {
    let pending = |readings: Vec<(OperationStatus, gauges::Reading)>| {
        readings
            .into_iter()
            .find(|(s, _)| *s == OperationStatus::PendingDispatch)
            .map_or(0, |(_, r)| r.value)
    };
    block_on(async {
        (
            pending(gauges::read_tenant(&w.store, "t1").await.unwrap()),
            pending(
                gauges::read_task(&w.store, "create_media_buy")
                    .await
                    .unwrap(),
            ),
        )
    })
}

#[test]
fn status_gauges_a_lost_count_left_off_are_set_to_the_stored_operations_by_a_quiet_pass() {
    let w = World::new(3);
    assert_eq!(pending_counts(&w), (3, 3));
    // A creation whose counters were lost after its claim, and a lost answer counted twice.
    block_on(async {
        let op = sample("op9");
        let cx = Cx::new(&w.store, &w.clock as &dyn Clock, &NoLog);
        store_new(
            cx,
            &w.config.due,
            &op,
            w.clock.now_ms() + 60_000,
            Filing::Complete,
        )
        .await
        .unwrap();
        w.store
            .increment(&keys::summary_created("t1", "pending_dispatch"), -1)
            .await
            .unwrap();
        w.store
            .increment("m:created:create_media_buy", 2)
            .await
            .unwrap();
    });
    assert_eq!(pending_counts(&w), (3, 6));
    // A pass with no change during it sets both to the four stored.
    let first = w.audit();
    assert!(first.passed);
    assert_eq!(pending_counts(&w), (4, 4), "set to the four stored");
    assert_eq!(w.repairs("counters"), 2);
    assert_eq!(w.audit().repaired, 0, "a second pass finds nothing");
}

#[test]
fn a_gauge_that_moved_during_the_pass_is_left_to_the_next_one() {
    let w = World::new(600);
    block_on(
        w.store
            .increment(&keys::summary_created("t1", "pending_dispatch"), 5),
    )
    .unwrap();
    assert!(!w.audit().passed, "500 of 600 checked");
    // A creation during the pass moves the gauge: its count may have missed it.
    block_on(async {
        let cx = Cx::new(&w.store, &w.clock as &dyn Clock, &NoLog);
        store_new(
            cx,
            &w.config.due,
            &sample("op_new"),
            w.clock.now_ms(),
            Filing::Complete,
        )
        .await
        .unwrap();
    });
    let end = w.audit();
    assert!(end.passed);
    assert_eq!(w.repairs("counters"), 0);
    assert_eq!(pending_counts(&w).0, 606);
    // The next pass is quiet, but counts only 10 minutes after the last count began.
    while !w.audit().passed {}
    assert_eq!(w.repairs("counters"), 0);
    w.clock.advance(COUNT_EVERY_MS);
    while !w.audit().passed {}
    while !w.audit().passed {}
    assert_eq!(w.repairs("counters"), 1);
    assert_eq!(pending_counts(&w).0, 601);
}

#[test]
fn an_operation_never_filed_is_filed_for_now() {
    let w = World::new(2);
    block_on(w.store.delete(&keys::poll_state("op1"))).unwrap();
    assert_eq!(w.audit().repaired, 1);
    assert_eq!(w.repairs("due"), 1);
    let state: PollState = block_on(get_json(&w.store, &keys::poll_state("op1")))
        .unwrap()
        .unwrap();
    assert_eq!(state.next_at_ms, w.clock.now_ms());
    assert_eq!(w.audit().repaired, 0, "repaired for good");
}

#[test]
fn an_operation_filed_past_its_deadline_or_long_overdue_is_filed_again() {
    let w = World::new(2);
    let late = PollState {
        next_at_ms: w.clock.now_ms() + 2 * 86_400_000,
        ..Default::default()
    };
    block_on(set_json(&w.store, &keys::poll_state("op0"), &late)).unwrap();
    let lost = PollState {
        next_at_ms: w.clock.now_ms() - OVERDUE_MS - 1,
        ..Default::default()
    };
    block_on(set_json(&w.store, &keys::poll_state("op1"), &lost)).unwrap();
    assert_eq!(w.audit().repaired, 2);
    assert_eq!(w.repairs("due"), 2);
}

#[test]
fn a_missing_listing_position_of_an_earlier_releases_operation_is_recorded() {
    let w = World::new(1);
    // Records of earlier releases keep the position under its own key, not in the record.
    let mut op: Operation = block_on(get_json(&w.store, &keys::operation("op0")))
        .unwrap()
        .unwrap();
    op.listed_at = None;
    block_on(set_json(&w.store, &keys::operation("op0"), &op)).unwrap();
    block_on(w.store.delete(&keys::operation_listed("op0"))).unwrap();
    assert_eq!(w.audit().repaired, 1);
    assert_eq!(w.repairs("listed"), 1);
    let n = block_on(w.store.get(&keys::operation_listed("op0"))).unwrap();
    assert_eq!(n.as_deref(), Some(b"1".as_slice()));
}

#[test]
fn a_seller_left_out_of_the_registry_is_indexed() {
    let w = World::new(1);
    // Registered, but the write that indexes it failed.
    let mut other = sample_seller();
    other.seller_id = "s2".into();
    block_on(seller::put(&w.store, &other)).unwrap();
    let mut op = sample("op_s2");
    op.seller_id = "s2".into();
    let cx = Cx::new(&w.store, &w.clock as &dyn Clock, &NoLog);
    block_on(store_new(
        cx,
        &w.config.due,
        &op,
        w.clock.now_ms(),
        Filing::Complete,
    ))
    .unwrap();
    assert_eq!(w.audit().repaired, 1);
    assert_eq!(w.repairs("seller_index"), 1);
    let registered = block_on(seller::registry(&w.store)).unwrap();
    assert!(registered.contains(&("t1".to_string(), "s2".to_string())));
}

#[test]
fn a_lease_left_by_a_holder_that_died_is_removed_once_its_slot_ended() {
    let w = World::new(1);
    let state: PollState = block_on(get_json(&w.store, &keys::poll_state("op0")))
        .unwrap()
        .unwrap();
    let lease = &w.config.lease;
    let key = keys::lease(
        &keys::lease_scope_operation("op0"),
        lease.slot_of(state.next_at_ms),
    );
    block_on(w.store.increment(&key, 1)).unwrap();
    assert_eq!(
        w.audit().repaired,
        0,
        "its slot has not ended: it may be held"
    );
    w.clock.advance(3 * lease.slot_ms);
    assert_eq!(w.audit().repaired, 1);
    assert_eq!(w.repairs("lease"), 1);
    assert!(block_on(w.store.get(&key)).unwrap().is_none());
}

#[test]
fn a_lease_left_by_a_holder_that_died_before_its_successor_filed_the_operation_is_removed() {
    let w = World::new(1);
    let lease = w.config.lease;
    // A sweep claims op0 at a time far from its due time (a backlog) and dies.
    w.clock.advance(7 * lease.slot_ms);
    let key = keys::lease(
        &keys::lease_scope_operation("op0"),
        lease.slot_of(w.clock.now_ms()),
    );
    block_on(w.store.increment(&key, 1)).unwrap();
    // The next tick's holder polls it and files it for two hours later.
    w.clock.advance(lease.slot_ms);
    let later = PollState {
        next_at_ms: w.clock.now_ms() + 7_200_000,
        ..Default::default()
    };
    block_on(schedule_at(&w.store, &w.clock, &w.config.due, "op0", later)).unwrap();
    w.clock.advance(lease.slot_ms);
    assert_eq!(w.audit().repaired, 1);
    assert_eq!(w.repairs("lease"), 1);
    assert!(block_on(w.store.get(&key)).unwrap().is_none());
}

#[test]
fn a_pass_over_ten_thousand_operations_takes_at_most_twenty_ticks() {
    let w = World::new(10_000);
    let mut ticks = 0;
    let mut checked = 0;
    loop {
        ticks += 1;
        let a = w.audit();
        checked += a.checked;
        assert_eq!(a.repaired, 0);
        if a.passed {
            break;
        }
        assert!(ticks < 20, "no pass after {ticks} ticks");
    }
    assert_eq!(checked, 10_000);
    assert!(ticks <= 20);
}
