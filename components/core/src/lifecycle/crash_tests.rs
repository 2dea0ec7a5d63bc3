//! Multi-write steps failed at each store call in turn, with both kinds of fault: a call
//! that fails before it is applied, and one applied whose answer is lost. Whoever touches
//! the operation next (a retry, a reader) must finish the job: nothing lost, nothing twice.

use super::create::{Filing, Stored, store_new};
use super::effects;
use crate::foundation::clock::Clock;
use crate::foundation::cx::Cx;
use crate::foundation::keys;
use crate::foundation::log::NoLog;
use crate::foundation::store::{Store, get_json, set_json};
use crate::model::status::{OperationStatus, TaskStatus};
use crate::records::journal::{self, EntryKind, HOLE_AGE_MS};
use crate::records::{metrics, notify};
use crate::schedule::due::DueConfig;
use crate::testing::{LossyStore, SeededEntropy, TestClock, obs, sample};
use futures::executor::block_on;

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// The call fails and changes nothing.
    Before,
    /// The call is applied, then reports an error.
    After,
}

fn inject(store: &LossyStore, fault: Fault, n: u64) {
    match fault {
        Fault::Before => store.inner.fail_nth_call(n),
        Fault::After => store.lose_nth_answer(n),
    }
}

/// How many store calls `step` makes on a clean run over a fresh `setup`.
fn calls_of(
    setup: impl Fn(&LossyStore, &TestClock),
    step: impl Fn(&LossyStore, &TestClock),
) -> u64 {
    let (store, clock) = (LossyStore::default(), TestClock::new(1_000_000));
    setup(&store, &clock);
    store.inner.reset_counts();
    step(&store, &clock);
    store.inner.total_ops()
}

fn values_equal_to(store: &LossyStore, prefix: &str, value: &str) -> usize {
    store
        .inner
        .keys()
        .into_iter()
        .filter(|k| k.starts_with(prefix))
        .filter(|k| block_on(store.inner.get(k)).unwrap().as_deref() == Some(value.as_bytes()))
        .count()
}

fn metric(store: &LossyStore, series: &str) -> u64 {
    let text = block_on(metrics::render(&store.inner, &Default::default(), 0)).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

fn create(store: &LossyStore, clock: &TestClock) -> Option<Stored> {
    let cx = Cx::new(store, clock as &dyn Clock, &NoLog);
    block_on(store_new(
        cx,
        &DueConfig::default(),
        &sample("op1"),
        clock.now_ms() + 5_000,
        Filing::Complete,
    ))
    .ok()
}

#[test]
fn a_creation_failed_at_any_write_is_finished_by_a_retry_listed_once_and_filed() {
    let total = calls_of(
        |_, _| {},
        |s, c| {
            create(s, c);
        },
    );
    assert!(total >= 8, "the creation makes {total} store calls");
    for fault in [Fault::Before, Fault::After] {
        for n in 1..=total {
            let (store, clock) = (LossyStore::default(), TestClock::new(1_000_000));
            inject(&store, fault, n);
            let first = create(&store, &clock);
            // Retries until the id answers; the first writer may have left a hole before
            // its entry, which only time proves permanent.
            let mut stored = None;
            for _ in 0..3 {
                match create(&store, &clock) {
                    Some(Stored::Existing(Some(op)) | Stored::Created(op)) => {
                        stored = Some(op);
                        break;
                    }
                    _ => clock.advance(HOLE_AGE_MS + 1),
                }
            }
            let what = format!("{fault:?} at call {n} of {total} (first: {first:?})");
            let op = stored.unwrap_or_else(|| panic!("{what}: the id never became usable"));
            assert_eq!(op.status, OperationStatus::PendingDispatch, "{what}");
            let listing = format!("tenant:{}:ops:", op.tenant_id);
            assert_eq!(
                values_equal_to(&store, &listing, "op1"),
                1,
                "{what}: listed once"
            );
            assert_eq!(
                values_equal_to(&store, "due:", "op1").min(1),
                1,
                "{what}: filed due"
            );
            let state = block_on(store.inner.get(&keys::poll_state("op1"))).unwrap();
            assert!(state.is_some(), "{what}: poll state");
            // The created counter follows the listing: at most once (a failure between the
            // two costs a count).
            let created = metric(
                &store,
                "adcp_operations_created_total{task=\"create_media_buy\"}",
            );
            assert!(created <= 1, "{what}: counted {created} times");
        }
    }
}

#[test]
fn an_id_whose_first_entry_never_landed_is_usable_once_the_hole_is_provably_permanent() {
    let (store, clock) = (LossyStore::default(), TestClock::new(1_000_000));
    // A creator allocated seq 1 and died before writing its entry.
    block_on(store.inner.increment(&keys::operation_seq("op1"), 1)).unwrap();
    assert_eq!(
        create(&store, &clock),
        Some(Stored::Existing(None)),
        "in flight for now"
    );
    let cx = Cx::new(&store, &clock as &dyn Clock, &NoLog);
    assert!(
        block_on(effects::load_and_adopt(cx, "op1"))
            .unwrap()
            .is_none()
    );
    clock.advance(HOLE_AGE_MS + 1);
    let Some(Stored::Existing(Some(op))) = create(&store, &clock) else {
        panic!("the retry finds the second creator's entry");
    };
    // Seq 1 was skipped as a hole, seq 2 created it, the retry's own entry is a duplicate.
    let history = block_on(journal::history(&store.inner, &clock, "op1")).unwrap();
    let effects: Vec<_> = history.iter().map(|(e, fx)| (e.seq, *fx)).collect();
    assert_eq!(
        effects,
        [
            (2, journal::Effect::Created),
            (3, journal::Effect::Duplicate)
        ]
    );
    assert_eq!(op.version, 3);
    let loaded = block_on(effects::load_and_adopt(cx, "op1"))
        .unwrap()
        .unwrap();
    assert_eq!(loaded.operation.operation_id, "op1");
    // Unknown ids stay unknown and leave no keys behind.
    let before = store.inner.keys().len();
    assert!(
        block_on(effects::load_and_adopt(cx, "nope"))
            .unwrap()
            .is_none()
    );
    assert_eq!(store.inner.keys().len(), before);
}

/// A tenant callback, so status changes queue buyer notifications.
fn with_callback(store: &LossyStore, clock: &TestClock) {
    let sealing = crate::foundation::seal::SealingKey::from_hex(&"ab".repeat(32)).unwrap();
    let callback = notify::Callback {
        url: "https://buyer.example/hook".into(),
        secret: sealing.seal(&SeededEntropy::new(1), "p", b"s"),
        enabled: true,
        disabled_reason: None,
    };
    block_on(async {
        set_json(
            &store.inner,
            &keys::callback(&sample("op1").tenant_id),
            &callback,
        )
        .await
        .unwrap();
        journal::create(&store.inner, clock, &sample("op1"))
            .await
            .unwrap();
    });
}

fn complete(store: &LossyStore, clock: &TestClock) -> bool {
    let cx = Cx::new(store, clock as &dyn Clock, &NoLog);
    let kind = EntryKind::Observed {
        observation: Box::new(obs(TaskStatus::Completed, Some("task_1"))),
    };
    block_on(effects::record(cx, "webhook", "op1", None, kind)).is_ok()
}

#[test]
fn a_status_change_failed_at_any_write_is_announced_exactly_once_by_the_next_reader() {
    let total = calls_of(with_callback, |s, c| {
        assert!(complete(s, c));
    });
    for fault in [Fault::Before, Fault::After] {
        for n in 1..=total {
            let (store, clock) = (LossyStore::default(), TestClock::new(1_000_000));
            with_callback(&store, &clock);
            inject(&store, fault, n);
            let first = complete(&store, &clock);
            clock.advance(HOLE_AGE_MS + 1);
            let cx = Cx::new(&store, &clock as &dyn Clock, &NoLog);
            let what = format!("{fault:?} at call {n} of {total} (writer ok: {first})");
            let op = match block_on(effects::load_and_adopt(cx, "op1")).unwrap() {
                Some(l) => l.operation,
                None => panic!("{what}: the operation vanished"),
            };
            if op.status != OperationStatus::Seller(TaskStatus::Completed) {
                // The entry itself never landed: the seller's retry brings it again.
                assert!(!first, "{what}: acknowledged but not applied");
                continue;
            }
            let ntf = notify::notification_id("op1", 2);
            let queued: Option<notify::Notification> =
                block_on(get_json(&store.inner, &keys::notification(&ntf))).unwrap();
            assert!(queued.is_some(), "{what}: the buyer notification was lost");
            // Filed due (a second hint is harmless: the notification's state decides).
            assert!(values_equal_to(&store, "due:", &ntf) >= 1, "{what}: filed");
            assert!(
                values_equal_to(&store, "sellertasks:", "op1") >= 1,
                "{what}: the task indexed"
            );
            // A later reader finds nothing left to do.
            store.inner.reset_counts();
            let again = block_on(effects::load_and_adopt(cx, "op1"))
                .unwrap()
                .unwrap();
            assert!(again.adopted.is_empty(), "{what}: {:?}", again.adopted);
        }
    }
}
