use super::*;
use crate::foundation::clock::Clock;
use crate::foundation::clock::FixedClock;
use crate::foundation::cx::Cx;
use crate::foundation::log::NoLog;
use crate::foundation::store::MemoryStore;
use crate::foundation::transport::TransportError;
use crate::model::operation::WebhookRegistration;
use crate::records::journal;
use crate::schedule::breaker::{Breaker, BreakerConfig};
use crate::seller::guard::{BREAKER_READING_MS, Guarded};
use crate::seller::port::SellerError;
use crate::testing::{FakeSeller, SeededEntropy};
use futures::executor::block_on;

const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn setup(s: &MemoryStore, mode: WebhookMode) -> SealingKey {
    let sealing = SealingKey::from_hex(KEY).unwrap();
    let e = SeededEntropy::new(5);
    let mut op = crate::testing::sample("op1");
    op.webhook = Some(WebhookRegistration {
        url: "https://orch.example/webhooks/adcp/op1".into(),
        mode,
        token: sealing.seal(&e, "webhook:op1:token", b"tok-0123456789abcdef"),
        secret: (mode != WebhookMode::Rfc9421)
            .then(|| sealing.seal(&e, "webhook:op1:secret", &[b's'; 32])),
    });
    let seller = Seller {
        tenant_id: "t1".into(),
        seller_id: "s1".into(),
        mcp_url: "https://seller.example/mcp".into(),
        credentials: None,
        webhook_mode: Some(mode),
        auth_scheme: Default::default(),
        capabilities: None,
        version_envelope: Default::default(),
        capability_subscription: None,
        attention: None,
        created_at_ms: 0,
        updated_at_ms: 0,
    };
    block_on(async {
        seller::put(s, &seller).await.unwrap();
        journal::create(s, &FixedClock(1_000), &op).await.unwrap();
    });
    sealing
}

struct StepClock(std::cell::Cell<u64>);
impl Clock for StepClock {
    fn now_ms(&self) -> u64 {
        self.0.get()
    }
}

#[test]
fn a_kept_breaker_reading_saves_reads_while_calls_go_well_and_a_trip_elsewhere_is_seen() {
    // Seen at this instance's next failure, or once the reading is old, whichever first.
    for by_failure in [true, false] {
        let s = MemoryStore::new();
        setup(&s, WebhookMode::Hmac);
        let seller = block_on(seller::get(&s, "t1", "s1")).unwrap().unwrap();
        let fake = FakeSeller::default();
        let cfg = BreakerConfig::default();
        let clock = StepClock(std::cell::Cell::new(5_000));
        let guarded = Guarded {
            store: &s,
            clock: &clock,
            breaker: &cfg,
            inner: &fake,
            seen: Default::default(),
        };
        block_on(async {
            fake.answer(Ok(json!({})));
            guarded.call(&seller, "t", json!({})).await.unwrap();
            s.reset_counts();
            for _ in 0..3 {
                fake.answer(Ok(json!({})));
                guarded.call(&seller, "t", json!({})).await.unwrap();
            }
            assert_eq!(s.total_ops(), 0, "healthy calls decide on the kept reading");
            // Another replica (or an operator) trips the breaker.
            Breaker::new(&cfg, "t1", "s1")
                .trip(&s, 5_000)
                .await
                .unwrap();
            if by_failure {
                fake.answer(Err(CallFailure::Transport(TransportError::Connect(
                    "refused".into(),
                ))));
                assert!(matches!(
                    guarded.call(&seller, "t", json!({})).await,
                    Err(CallFailure::Transport(_))
                ));
            } else {
                clock.0.set(5_000 + BREAKER_READING_MS);
            }
            assert!(matches!(
                guarded.call(&seller, "t", json!({})).await,
                Err(CallFailure::Deferred { .. })
            ));
        });
        let sent = 4 + usize::from(by_failure);
        assert_eq!(
            fake.calls.borrow().len(),
            sent,
            "nothing sent once the trip is seen"
        );
    }
}

/// The operation's lease, as the sweep or the API takes it before dispatching.
fn lease_at(s: &MemoryStore, now_ms: u64) -> Lease {
    let claim = block_on(crate::schedule::lease::claim_operation(
        s,
        &Default::default(),
        "op1",
        now_ms,
    ));
    claim.unwrap().lease().expect("the lease is free")
}

fn run(s: &MemoryStore, sealing: &SealingKey, seller: &FakeSeller) -> Dispatched {
    let lease = lease_at(s, 2_000);
    let dispatched = block_on(dispatch(
        Cx::new(s, &FixedClock(2_000), &NoLog),
        &lease,
        sealing,
        seller,
        "op1",
        None,
    ));
    block_on(lease.release(s)).unwrap();
    dispatched.unwrap().unwrap()
}

#[test]
fn a_dispatcher_whose_lease_ran_out_starts_no_call() {
    let s = MemoryStore::new();
    let sealing = setup(&s, WebhookMode::Bearer);
    let seller = FakeSeller::default();
    seller.answer(Ok(
        serde_json::json!({"status": "submitted", "task_id": "t"}),
    ));
    let lease = lease_at(&s, 2_000);
    // Still ours, but within the safety margin of its end: the next holder may be calling.
    let late = lease.expires_at_ms - 1_000;
    let result = block_on(dispatch(
        Cx::new(&s, &FixedClock(late), &NoLog),
        &lease,
        &sealing,
        &seller,
        "op1",
        None,
    ));
    assert_eq!(
        result.unwrap(),
        Some(Dispatched::Deferred {
            until_ms: lease.expires_at_ms
        })
    );
    assert!(seller.calls.borrow().is_empty(), "nothing sent");
    assert_eq!(status(&s), OperationStatus::PendingDispatch);
}

fn status(s: &MemoryStore) -> OperationStatus {
    block_on(journal::load(s, &FixedClock(3_000), "op1"))
        .unwrap()
        .unwrap()
        .operation
        .status
}

#[test]
fn an_answer_echoing_another_operations_context_is_never_folded() {
    let s = MemoryStore::new();
    let sealing = setup(&s, WebhookMode::Hmac);
    let seller = FakeSeller::default();
    seller.answer(Ok(json!({"media_buy_id": "mb_other", "status": "active",
                            "context": {"operation_id": "op_someone_else"}})));
    let d = run(&s, &sealing, &seller);
    assert!(
        matches!(&d, Dispatched::Failed { error, retry_at_ms: Some(_) } if error.code == "MISROUTED_ANSWER"),
        "{d:?}"
    );
    assert_eq!(status(&s), OperationStatus::PendingDispatch);
    let op = block_on(journal::load(&s, &FixedClock(3_000), "op1"))
        .unwrap()
        .unwrap()
        .operation;
    assert!(op.outcome_unknown, "the seller may have acted on ours");
    assert_eq!(op.result, None);
}

#[test]
fn resends_are_byte_identical_and_carry_the_registration() {
    let s = MemoryStore::new();
    let sealing = setup(&s, WebhookMode::Hmac);
    let seller = FakeSeller::default();
    seller.answer(Err(CallFailure::Transport(TransportError::Timeout(
        "first byte".into(),
    ))));
    assert!(matches!(
        run(&s, &sealing, &seller),
        Dispatched::Failed {
            retry_at_ms: Some(_),
            ..
        }
    ));
    seller.answer(Ok(json!({"status": "submitted", "task_id": "task_9"})));
    assert!(matches!(
        run(&s, &sealing, &seller),
        Dispatched::Answered(_)
    ));
    let calls = seller.calls.borrow();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        serde_json::to_vec(&calls[0].1).unwrap(),
        serde_json::to_vec(&calls[1].1).unwrap()
    );
    let pnc = &calls[0].1["push_notification_config"];
    assert_eq!(pnc["operation_id"], "op1");
    assert_eq!(pnc["token"], "tok-0123456789abcdef");
    assert_eq!(pnc["authentication"]["schemes"], json!(["HMAC-SHA256"]));
    assert_eq!(calls[0].1["idempotency_key"], "k-0123456789abcdef");
    drop(calls);
    let op = block_on(journal::load(&s, &FixedClock(3_000), "op1"))
        .unwrap()
        .unwrap()
        .operation;
    assert_eq!(op.status, OperationStatus::Seller(TaskStatus::Submitted));
    assert_eq!(op.task_id.as_deref(), Some("task_9"));
    assert!(op.outcome_unknown);
    // No longer pending: a late redispatch does nothing.
    assert_eq!(run(&s, &sealing, &seller), Dispatched::NotPending);
    assert_eq!(seller.calls.borrow().len(), 2);
}

#[test]
fn rfc9421_registration_has_no_authentication_block() {
    let s = MemoryStore::new();
    let sealing = setup(&s, WebhookMode::Rfc9421);
    let seller = FakeSeller::default();
    seller.answer(Ok(
        json!({"status": "completed", "media_buy_id": "mb_1", "packages": []}),
    ));
    run(&s, &sealing, &seller);
    let calls = seller.calls.borrow();
    assert!(
        calls[0].1["push_notification_config"]
            .get("authentication")
            .is_none()
    );
    drop(calls);
    let op = block_on(journal::load(&s, &FixedClock(3_000), "op1"))
        .unwrap()
        .unwrap()
        .operation;
    assert_eq!(op.status, OperationStatus::Seller(TaskStatus::Completed));
    assert_eq!(op.result.unwrap()["media_buy_id"], "mb_1");
}

#[test]
fn every_answer_status_routes_through_the_state_machine() {
    for (answer, expect) in [
        (
            json!({"status": "working", "task_id": "t"}),
            OperationStatus::Seller(TaskStatus::Working),
        ),
        (
            json!({"status": "input-required", "message": "approve?"}),
            OperationStatus::Seller(TaskStatus::InputRequired),
        ),
        (
            json!({"status": "failed", "errors": [{"code": "X", "message": "m"}]}),
            OperationStatus::Seller(TaskStatus::Failed),
        ),
        (
            json!({"status": "rejected"}),
            OperationStatus::Seller(TaskStatus::Rejected),
        ),
        (
            json!({"status": "canceled"}),
            OperationStatus::Seller(TaskStatus::Canceled),
        ),
        (
            json!({"status": "auth-required"}),
            OperationStatus::Seller(TaskStatus::AuthRequired),
        ),
        (
            json!({"status": "unknown"}),
            OperationStatus::Seller(TaskStatus::Unknown),
        ),
        (
            json!({"media_buy_id": "mb"}),
            OperationStatus::Seller(TaskStatus::Completed),
        ),
        // AdCP 3.0: a media-buy status in `status` means the task completed.
        (
            json!({"status": "active", "media_buy_id": "mb"}),
            OperationStatus::Seller(TaskStatus::Completed),
        ),
    ] {
        let s = MemoryStore::new();
        let sealing = setup(&s, WebhookMode::Bearer);
        let seller = FakeSeller::default();
        seller.answer(Ok(answer.clone()));
        run(&s, &sealing, &seller);
        assert_eq!(status(&s), expect, "{answer}");
    }
}

#[test]
fn transient_errors_retry_after_the_hint_and_correctable_ones_fail() {
    let s = MemoryStore::new();
    let sealing = setup(&s, WebhookMode::Bearer);
    let seller = FakeSeller::default();
    let err = |code: &str, recovery, retry_after_s| {
        Err(CallFailure::Seller(SellerError {
            code: code.into(),
            message: "m".into(),
            recovery,
            retry_after_s,
            adcp: true,
        }))
    };
    seller.answer(err("RATE_LIMITED", Recovery::Transient, Some(600)));
    let Dispatched::Failed {
        retry_at_ms: Some(at),
        ..
    } = run(&s, &sealing, &seller)
    else {
        panic!()
    };
    assert_eq!(at, 2_000 + 600_000);
    assert_eq!(status(&s), OperationStatus::PendingDispatch);
    seller.answer(err("AUTH_INVALID", Recovery::Terminal, None));
    run(&s, &sealing, &seller);
    assert_eq!(status(&s), OperationStatus::Seller(TaskStatus::Failed));
    let seller_rec = block_on(seller::get(&s, "t1", "s1")).unwrap().unwrap();
    assert!(seller_rec.attention.unwrap().contains("AUTH_INVALID"));
}

#[test]
fn attempts_are_bounded() {
    let s = MemoryStore::new();
    let sealing = setup(&s, WebhookMode::Bearer);
    let seller = FakeSeller::default();
    let mut last = None;
    for _ in 0..MAX_DISPATCH_ATTEMPTS {
        seller.answer(Err(CallFailure::Transport(TransportError::Connect(
            "down".into(),
        ))));
        last = Some(run(&s, &sealing, &seller));
    }
    assert!(matches!(
        last,
        Some(Dispatched::Failed {
            retry_at_ms: None,
            ..
        })
    ));
    assert_eq!(
        status(&s),
        OperationStatus::PendingDispatch,
        "the sweep reconciles before failing it"
    );
}

#[test]
fn an_operation_whose_seller_was_removed_fails_unless_a_send_may_have_reached_it() {
    for may_have_reached in [false, true] {
        let s = MemoryStore::new();
        let sealing = setup(&s, WebhookMode::Bearer);
        if may_have_reached {
            let lost = EntryKind::DispatchFailed {
                error: OperationError::new("TRANSPORT", "connection reset"),
                retry_at_ms: Some(60_000),
                outcome_unknown: true,
                sent_digest: None,
                sent_at_ms: None,
                look_up: false,
            };
            block_on(crate::testing::record(&s, &FixedClock(1_500), "op1", lost)).unwrap();
        }
        block_on(seller::delete(&s, "t1", "s1")).unwrap();
        let seller = FakeSeller::default();
        let dispatched = run(&s, &sealing, &seller);
        assert!(seller.calls.borrow().is_empty());
        if may_have_reached {
            // Its buy may be live: kept open and looked at again.
            assert_eq!(
                dispatched,
                Dispatched::Deferred {
                    until_ms: 2_000 + SELLER_RECHECK_MS
                }
            );
            assert_eq!(status(&s), OperationStatus::PendingDispatch);
        } else {
            assert_eq!(status(&s), OperationStatus::Seller(TaskStatus::Failed));
            let op = block_on(journal::load(&s, &FixedClock(3_000), "op1"))
                .unwrap()
                .unwrap();
            assert_eq!(op.operation.error.unwrap().code, "SELLER_REMOVED");
        }
    }
}

#[test]
fn a_resend_whose_bytes_differ_from_a_possibly_delivered_request_is_not_sent() {
    let s = MemoryStore::new();
    let sealing = setup(&s, WebhookMode::Bearer);
    // An earlier attempt timed out after sending other bytes (e.g. another approval).
    let lost = EntryKind::DispatchFailed {
        error: OperationError::new("TRANSPORT", "timed out"),
        retry_at_ms: Some(1_500),
        outcome_unknown: true,
        sent_digest: Some("digest-of-other-bytes".into()),
        sent_at_ms: None,
        look_up: false,
    };
    block_on(crate::testing::record(&s, &FixedClock(1_500), "op1", lost)).unwrap();
    let seller = FakeSeller::default();
    let dispatched = run(&s, &sealing, &seller);
    assert!(seller.calls.borrow().is_empty(), "not sent");
    let Dispatched::Failed { retry_at_ms, error } = dispatched else {
        panic!("{dispatched:?}");
    };
    assert_eq!(
        (retry_at_ms, error.code.as_str()),
        (None, "REQUEST_CHANGED")
    );
}

/// Sets the version fields the seller's discovery established.
fn set_envelope(s: &MemoryStore, envelope: VersionEnvelope) {
    let mut seller = block_on(seller::get(s, "t1", "s1")).unwrap().unwrap();
    seller.version_envelope = envelope;
    block_on(seller::put(s, &seller)).unwrap();
}

fn timed_out() -> Result<Value, CallFailure> {
    Err(CallFailure::Transport(TransportError::Timeout(
        "first byte".into(),
    )))
}

#[test]
fn the_version_fields_discovery_established_are_part_of_the_resent_bytes() {
    let s = MemoryStore::new();
    let sealing = setup(&s, WebhookMode::Bearer);
    let declared = VersionEnvelope {
        adcp_version: Some("3.0".into()),
        adcp_major_version: Some(3),
    };
    set_envelope(&s, declared.clone());
    let seller = FakeSeller::default();
    seller.answer(timed_out());
    seller.answer(timed_out());
    run(&s, &sealing, &seller);
    run(&s, &sealing, &seller);
    {
        let calls = seller.calls.borrow();
        assert_eq!(calls[0].1["adcp_version"], "3.0");
        assert_eq!(calls[0].1["adcp_major_version"], 3);
        assert_eq!(
            serde_json::to_vec(&calls[0].1).unwrap(),
            serde_json::to_vec(&calls[1].1).unwrap()
        );
    }
    // Discovery now says envelope-less: the resend would differ from what may have arrived.
    set_envelope(&s, VersionEnvelope::none());
    let d = run(&s, &sealing, &seller);
    assert!(
        matches!(&d, Dispatched::Failed { error, .. } if error.code == "REQUEST_CHANGED"),
        "{d:?}"
    );
    assert_eq!(seller.calls.borrow().len(), 2, "not sent");
}

#[test]
fn an_envelope_less_seller_gets_no_version_fields() {
    let s = MemoryStore::new();
    let sealing = setup(&s, WebhookMode::Bearer);
    set_envelope(&s, VersionEnvelope::none());
    let seller = FakeSeller::default();
    seller.answer(Ok(json!({"status": "submitted", "task_id": "task_9"})));
    run(&s, &sealing, &seller);
    let calls = seller.calls.borrow();
    assert!(calls[0].1.get("adcp_version").is_none(), "{}", calls[0].1);
    assert!(calls[0].1.get("adcp_major_version").is_none());
}

#[test]
fn a_digest_recorded_before_the_envelope_was_digested_still_matches() {
    let s = MemoryStore::new();
    let sealing = setup(&s, WebhookMode::Bearer);
    let op = block_on(journal::load(&s, &FixedClock(1_500), "op1"))
        .unwrap()
        .unwrap()
        .operation;
    let bare = wire_arguments(&op, &sealing).unwrap();
    let lost = EntryKind::DispatchFailed {
        error: OperationError::new("TRANSPORT", "timed out"),
        retry_at_ms: Some(1_500),
        outcome_unknown: true,
        sent_digest: Some(digest_hex(&serde_json::to_vec(&bare).unwrap())),
        sent_at_ms: None,
        look_up: false,
    };
    block_on(crate::testing::record(&s, &FixedClock(1_500), "op1", lost)).unwrap();
    let seller = FakeSeller::default();
    seller.answer(Ok(json!({"status": "submitted", "task_id": "task_9"})));
    assert!(matches!(
        run(&s, &sealing, &seller),
        Dispatched::Answered(_)
    ));
    assert_eq!(seller.calls.borrow()[0].1["adcp_version"], "3.1");
}
