use super::*;
use crate::foundation::clock::FixedClock;
use crate::foundation::store::{MemoryStore, StoreOp};
use crate::model::status::{OperationStatus, TaskStatus};
use crate::testing::{obs, sample};
use futures::executor::block_on;

fn observed(status: TaskStatus) -> EntryKind {
    EntryKind::Observed {
        observation: Box::new(obs(status, Some("task_1"))),
    }
}

#[test]
fn create_then_load_round_trips() {
    let s = MemoryStore::new();
    let clock = FixedClock(5_000);
    block_on(async {
        let op = create(&s, &clock, &sample("op1")).await.unwrap();
        assert_eq!(op.version, 1);
        let loaded = load(&s, &clock, "op1").await.unwrap().unwrap();
        assert_eq!(loaded.operation, op);
        assert_eq!(loaded.head, 1);
        assert!(load(&s, &clock, "nope").await.unwrap().is_none());
        // The id cannot be created twice.
        assert_eq!(
            create(&s, &clock, &sample("op1")).await,
            Err(JournalError::Exists)
        );
    });
}

#[test]
fn a_dispatch_failure_recorded_after_the_outcome_changes_nothing() {
    let s = MemoryStore::new();
    let clock = FixedClock(5_000);
    block_on(async {
        create(&s, &clock, &sample("op1")).await.unwrap();
        let mut done = obs(TaskStatus::Completed, Some("task_1"));
        done.result = Some(serde_json::json!({"media_buy_id": "mb_1"}));
        let kind = EntryKind::Observed {
            observation: Box::new(done),
        };
        let completed = record(&s, &clock, "op1", kind)
            .await
            .unwrap()
            .operation
            .unwrap();
        // A slow dispatcher's transport error lands after the seller's completion.
        let failed = EntryKind::DispatchFailed {
            error: crate::model::operation::OperationError::new("TRANSPORT", "connection reset"),
            retry_at_ms: Some(60_000),
            outcome_unknown: true,
            sent_digest: None,
            sent_at_ms: None,
            look_up: false,
        };
        let r = record(&s, &clock, "op1", failed).await.unwrap();
        assert_eq!(r.effect, Some(Effect::Recorded));
        let after = r.operation.unwrap();
        assert_eq!(after.status, completed.status);
        assert_eq!(after.result, completed.result);
        assert_eq!(after.error, None);
        assert_eq!(after.next_poll_at_ms, completed.next_poll_at_ms);
        assert_eq!(after.dispatch_attempts, completed.dispatch_attempts);
        assert!(!after.outcome_unknown);
    });
}

#[test]
fn record_applies_in_sequence_and_first_terminal_wins() {
    let s = MemoryStore::new();
    let clock = FixedClock(5_000);
    block_on(async {
        create(&s, &clock, &sample("op1")).await.unwrap();
        let r = record(&s, &clock, "op1", observed(TaskStatus::Submitted))
            .await
            .unwrap();
        let (op, eff) = (r.operation, r.effect);
        assert_eq!(
            eff,
            Some(Effect::Applied(OperationStatus::Seller(
                TaskStatus::Submitted
            )))
        );
        assert_eq!(op.unwrap().version, 2);
        let r = record(&s, &clock, "op1", observed(TaskStatus::Completed))
            .await
            .unwrap();
        let (_, eff) = (r.operation, r.effect);
        assert_eq!(
            eff,
            Some(Effect::Applied(OperationStatus::Seller(
                TaskStatus::Completed
            )))
        );
        let r = record(&s, &clock, "op1", observed(TaskStatus::Failed))
            .await
            .unwrap();
        let (_, eff) = (r.operation, r.effect);
        assert_eq!(eff, Some(Effect::Conflict));
        let r = record(&s, &clock, "op1", observed(TaskStatus::Working))
            .await
            .unwrap();
        let (op, eff) = (r.operation, r.effect);
        assert_eq!(eff, Some(Effect::Stale));
        assert_eq!(
            op.unwrap().status,
            OperationStatus::Seller(TaskStatus::Completed)
        );
        let h = history(&s, &clock, "op1").await.unwrap();
        let effects: Vec<_> = h.iter().map(|(_, e)| *e).collect();
        assert_eq!(
            effects,
            [
                Effect::Created,
                Effect::Applied(OperationStatus::Seller(TaskStatus::Submitted)),
                Effect::Applied(OperationStatus::Seller(TaskStatus::Completed)),
                Effect::Conflict,
                Effect::Stale
            ]
        );
    });
}

#[test]
fn concurrent_conflicting_terminals_reach_one_verdict_for_every_reader() {
    let s = MemoryStore::new();
    let clock = FixedClock(5_000);
    block_on(async {
        create(&s, &clock, &sample("op1")).await.unwrap();
        // Interleaved on one thread: both read the snapshot before either appends.
        let (a, b) = futures::join!(
            record(&s, &clock, "op1", observed(TaskStatus::Completed)),
            record(&s, &clock, "op1", observed(TaskStatus::Rejected)),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        let winners = [a.effect, b.effect]
            .iter()
            .filter(|e| matches!(e, Some(Effect::Applied(_))))
            .count();
        assert_eq!(winners, 1, "exactly one terminal applies: {a:?} {b:?}");
        let loaded = load(&s, &clock, "op1").await.unwrap().unwrap();
        // Sequence order decides: whichever got seq 2.
        let first: Entry = get_json(&s, &keys::operation_entry("op1", 2))
            .await
            .unwrap()
            .unwrap();
        let EntryKind::Observed { observation } = first.kind else {
            panic!()
        };
        assert_eq!(
            loaded.operation.status,
            OperationStatus::Seller(observation.status)
        );
        assert_eq!(loaded.operation.version, 3);
    });
}

#[test]
fn a_stale_snapshot_write_costs_reads_not_correctness() {
    let s = MemoryStore::new();
    let clock = FixedClock(5_000);
    block_on(async {
        let created = create(&s, &clock, &sample("op1")).await.unwrap();
        record(&s, &clock, "op1", observed(TaskStatus::Submitted))
            .await
            .unwrap();
        record(&s, &clock, "op1", observed(TaskStatus::Completed))
            .await
            .unwrap();
        // A slow writer overwrites the snapshot with an old version.
        set_json(&s, &keys::operation("op1"), &created)
            .await
            .unwrap();
        let loaded = load(&s, &clock, "op1").await.unwrap().unwrap();
        assert_eq!(
            loaded.operation.status,
            OperationStatus::Seller(TaskStatus::Completed)
        );
        assert_eq!(loaded.operation.version, 3);
    });
}

#[test]
fn an_in_flight_entry_blocks_the_fold_until_it_is_old_enough_to_be_a_hole() {
    let s = MemoryStore::new();
    block_on(async {
        create(&s, &FixedClock(1_000), &sample("op1"))
            .await
            .unwrap();
        // A writer allocates seq 2 and dies before writing it.
        s.increment(&keys::operation_seq("op1"), 1).await.unwrap();
        let r = record(
            &s,
            &FixedClock(2_000),
            "op1",
            observed(TaskStatus::Completed),
        )
        .await
        .unwrap();
        let (op, eff) = (r.operation, r.effect);
        assert_eq!(eff, None, "effect unknown while seq 2 may still arrive");
        assert_eq!(op.unwrap().status, OperationStatus::PendingDispatch);
        let young = load(&s, &FixedClock(2_000 + HOLE_AGE_MS - 1), "op1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(young.operation.status, OperationStatus::PendingDispatch);
        assert_eq!(young.head, 3);
        let old = load(&s, &FixedClock(2_000 + HOLE_AGE_MS), "op1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            old.operation.status,
            OperationStatus::Seller(TaskStatus::Completed)
        );
        assert_eq!(old.operation.version, 3);
    });
}

#[test]
fn a_slow_writer_abandons_its_allocation() {
    struct Slow(std::cell::Cell<u64>);
    impl Clock for Slow {
        fn now_ms(&self) -> u64 {
            let t = self.0.get();
            self.0.set(t + WRITE_GUARD_MS + 1);
            t
        }
    }
    let s = MemoryStore::new();
    block_on(async {
        create(&s, &FixedClock(1_000), &sample("op1"))
            .await
            .unwrap();
        let r = append(
            &s,
            &Slow(std::cell::Cell::new(2_000)),
            "op1",
            observed(TaskStatus::Completed),
        )
        .await;
        assert_eq!(r, Err(JournalError::Abandoned));
        assert_eq!(
            get_json::<Entry>(&s, &keys::operation_entry("op1", 2))
                .await
                .unwrap(),
            None
        );
    });
}

#[test]
fn a_failed_entry_write_is_retried_as_a_new_entry() {
    let s = MemoryStore::new();
    let clock = FixedClock(1_000);
    block_on(async {
        create(&s, &clock, &sample("op1")).await.unwrap();
        // get snapshot, increment, then the entry `set` fails.
        s.fail_nth_call(3);
        assert!(
            record(&s, &clock, "op1", observed(TaskStatus::Completed))
                .await
                .is_err()
        );
        // The retry lands at seq 3 behind the hole at 2; once the hole is old it settles.
        let later = FixedClock(1_000 + HOLE_AGE_MS);
        record(&s, &later, "op1", observed(TaskStatus::Completed))
            .await
            .unwrap();
        let loaded = load(&s, &FixedClock(1_000 + 2 * HOLE_AGE_MS), "op1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            loaded.operation.status,
            OperationStatus::Seller(TaskStatus::Completed)
        );
    });
}

#[test]
fn recording_an_observation_costs_four_store_calls() {
    let s = MemoryStore::new();
    let clock = FixedClock(1_000);
    block_on(async {
        create(&s, &clock, &sample("op1")).await.unwrap();
        s.reset_counts();
        let recorded = record(&s, &clock, "op1", observed(TaskStatus::Submitted))
            .await
            .unwrap();
        // The writer saves the fold once the entry's effects ran.
        save(&s, recorded.operation.as_ref().unwrap())
            .await
            .unwrap();
        assert_eq!(s.count(StoreOp::Get), 1);
        assert_eq!(s.count(StoreOp::Increment), 1);
        assert_eq!(s.count(StoreOp::Set), 2);
        assert_eq!(s.total_ops(), 4);
    });
}

#[test]
fn no_local_event_changes_the_outcome_of_a_terminal_record() {
    let local_events = [
        EntryKind::DeadlineExpired,
        EntryKind::DispatchFailed {
            error: crate::model::operation::OperationError::new("TRANSPORT", "connection reset"),
            retry_at_ms: Some(60_000),
            outcome_unknown: true,
            sent_digest: None,
            sent_at_ms: None,
            look_up: false,
        },
        EntryKind::Local {
            change: crate::model::operation::LocalChange::GovernanceHold {
                explanation: Some("needs review".into()),
                conditions: None,
            },
            by: None,
        },
        EntryKind::Local {
            change: crate::model::operation::LocalChange::Approved,
            by: None,
        },
        EntryKind::Local {
            change: crate::model::operation::LocalChange::CancelRequested {
                reason: Some("late".into()),
                superseded_by: None,
            },
            by: None,
        },
    ];
    let terminals = TaskStatus::ALL
        .into_iter()
        .filter(|s| OperationStatus::Seller(*s).is_authoritative_terminal());
    for status in terminals {
        let mut outcome = obs(status, Some("task_1"));
        outcome.result = Some(serde_json::json!({"media_buy_id": "mb_1"}));
        outcome.message = Some("seller's last word".into());
        let mut op = Some(sample("op1"));
        fold(
            &mut op,
            &Entry {
                seq: 2,
                recorded_at_ms: 10,
                kind: EntryKind::Observed {
                    observation: Box::new(outcome),
                },
            },
        );
        let terminal = op.clone().unwrap();
        assert_eq!(terminal.status, OperationStatus::Seller(status));
        for (i, kind) in local_events.iter().enumerate() {
            let mut after = op.clone();
            let entry = Entry {
                seq: 3 + i as u64,
                recorded_at_ms: 20,
                kind: kind.clone(),
            };
            fold(&mut after, &entry);
            let after = after.unwrap();
            let outcome_of = |o: &crate::model::operation::Operation| {
                (
                    o.status,
                    o.result.clone(),
                    o.error.clone(),
                    o.message.clone(),
                )
            };
            assert_eq!(
                outcome_of(&after),
                outcome_of(&terminal),
                "{status:?} then {kind:?}"
            );
        }
    }
}

#[test]
fn the_first_governance_approval_stands_so_every_resend_has_the_same_bytes() {
    let mut op = sample("op1");
    op.governance = Some(crate::model::operation::Governance {
        agent_id: "gov".into(),
        plan_id: "plan".into(),
        ..Default::default()
    });
    let approval = |seq, ctx: &str| Entry {
        seq,
        recorded_at_ms: 10,
        kind: EntryKind::Local {
            change: crate::model::operation::LocalChange::GovernanceApproved {
                governance_context: Some(ctx.into()),
            },
            by: None,
        },
    };
    let mut folded = Some(op);
    // Two dispatchers each asked governance and recorded its answer.
    fold(&mut folded, &approval(2, "ctx_first"));
    fold(&mut folded, &approval(3, "ctx_second"));
    let g = folded.unwrap().governance.unwrap();
    assert!(g.approved);
    assert_eq!(g.governance_context.as_deref(), Some("ctx_first"));
}

#[test]
fn a_writer_that_fails_to_write_its_entry_seals_it_so_the_next_writer_settles_at_once() {
    let s = MemoryStore::new();
    let clock = FixedClock(5_000);
    block_on(async {
        create(&s, &clock, &sample("op1")).await.unwrap();
        // The increment is call 1, the entry's write call 2: it fails.
        s.fail_nth_call(2);
        assert!(
            append(&s, &clock, "op1", observed(TaskStatus::Working))
                .await
                .is_err()
        );
        // At once (no hole age to wait): the next change folds and takes effect.
        let next = record(&s, &clock, "op1", observed(TaskStatus::Completed))
            .await
            .unwrap();
        assert!(next.effect.is_some(), "{next:?}");
        assert_eq!(
            next.operation.unwrap().status,
            OperationStatus::Seller(TaskStatus::Completed)
        );
        let kinds: Vec<_> = history(&s, &clock, "op1")
            .await
            .unwrap()
            .into_iter()
            .map(|(e, _)| (e.seq, e.kind))
            .collect();
        assert_eq!(kinds[1], (3, EntryKind::Sealed { abandoned: 2 }));
    });
}
