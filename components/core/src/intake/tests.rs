use super::*;
use crate::foundation::http::Request;
use crate::foundation::keys::{self};
use crate::foundation::seal::SealingKey;
use crate::model::operation::WebhookMode;
use crate::records::journal::{self, Effect};
use crate::records::metrics::{self};
use crate::schedule::due::DueConfig;
use http::{StatusCode, header};
use serde_json::{Value, json};

use crate::foundation::clock::FixedClock;
use crate::foundation::log::NoLog;
use crate::foundation::store::{MemoryStore, Store};
use crate::model::operation::WebhookRegistration;
use crate::model::status::OperationStatus;
use crate::model::status::TaskStatus;
use crate::testing::SeededEntropy;
use futures::executor::block_on;

const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const TOKEN: &str = "tok-0123456789abcdef";
const SECRET: &str = "bearer-secret-0123456789abcdef-0123456789";

struct World {
    store: MemoryStore,
    config: IntakeConfig,
    transport: crate::testing::ScriptedTransport,
}

impl World {
    fn new(mode: WebhookMode) -> World {
        let sealing = SealingKey::from_hex(KEY).unwrap();
        let e = SeededEntropy::new(2);
        let mut op = crate::testing::sample("op1");
        op.webhook = Some(WebhookRegistration {
            url: "https://orch.example/webhooks/adcp/op1".into(),
            mode,
            token: sealing.seal(&e, "webhook:op1:token", TOKEN.as_bytes()),
            secret: Some(sealing.seal(&e, "webhook:op1:secret", SECRET.as_bytes())),
        });
        let store = MemoryStore::new();
        block_on(journal::create(&store, &FixedClock(1_000), &op)).unwrap();
        World {
            store,
            config: IntakeConfig {
                public_base_url: "https://orch.example".into(),
                sealing,
                due: DueConfig::default(),
                allow_private_networks: false,
            },
            transport: Default::default(),
        }
    }

    /// The component's view, at 2 s.
    fn env(&self) -> IntakeEnv<'_, MemoryStore, crate::testing::ScriptedTransport> {
        IntakeEnv {
            store: &self.store,
            clock: &FixedClock(2_000),
            log: &NoLog,
            config: &self.config,
            transport: &self.transport,
        }
    }

    fn send(&self, req: Request) -> (StatusCode, Value) {
        let env = self.env();
        let a = block_on(handle(&env, req));
        // As the component does after answering.
        if let Some(op) = &a.settle {
            block_on(settle(&env, op));
        }
        let status = a.response.status();
        (
            status,
            serde_json::from_slice(a.response.body()).unwrap_or(Value::Null),
        )
    }

    fn status(&self) -> OperationStatus {
        block_on(journal::load(&self.store, &FixedClock(3_000), "op1"))
            .unwrap()
            .unwrap()
            .operation
            .status
    }
}

fn payload(status: &str, key: &str) -> Value {
    json!({"idempotency_key": key, "operation_id": "op1", "task_id": "task_1", "task_type": "create_media_buy",
           "status": status, "timestamp": "2026-11-22T10:00:00Z", "token": TOKEN,
           "result": {"media_buy_id": "mb_1"}})
}

fn bearer(body: &Value) -> Request {
    http::Request::post("/webhooks/adcp/op1")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {SECRET}"))
        .body(body.to_string().into_bytes())
        .unwrap()
}

#[test]
fn a_genuine_delivery_is_applied_once_and_repeats_change_nothing() {
    let w = World::new(WebhookMode::Bearer);
    let body = payload("completed", "whk_aaaaaaaaaaaaaaaa");
    let (s, b) = w.send(bearer(&body));
    assert_eq!(
        (s, b["outcome"].as_str()),
        (StatusCode::OK, Some("applied")),
        "{b}"
    );
    assert_eq!(w.status(), OperationStatus::Seller(TaskStatus::Completed));
    let entries = block_on(journal::history(&w.store, &FixedClock(3_000), "op1"))
        .unwrap()
        .len();
    let (s, b) = w.send(bearer(&body));
    assert_eq!(
        (s, b["outcome"].as_str()),
        (StatusCode::OK, Some("duplicate"))
    );
    assert_eq!(
        block_on(journal::history(&w.store, &FixedClock(3_000), "op1"))
            .unwrap()
            .len(),
        entries
    );
    // Same key, different payload: the sender must stop.
    let (s, b) = w.send(bearer(&payload("failed", "whk_aaaaaaaaaaaaaaaa")));
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::CONFLICT, Some("idempotency_conflict"))
    );
    // A new stale delivery is acknowledged without change.
    let (s, b) = w.send(bearer(&payload("working", "whk_bbbbbbbbbbbbbbbb")));
    assert_eq!((s, b["outcome"].as_str()), (StatusCode::OK, Some("stale")));
    assert_eq!(w.status(), OperationStatus::Seller(TaskStatus::Completed));
}

#[test]
fn twenty_concurrent_copies_change_the_state_once() {
    let w = World::new(WebhookMode::Bearer);
    let body = payload("completed", "whk_cccccccccccccccc");
    let env = w.env();
    let answers = block_on(futures::future::join_all(
        (0..20).map(|_| handle(&env, bearer(&body))),
    ));
    let mut applied = 0;
    for a in &answers {
        let s = a.response.status();
        assert!(
            s == StatusCode::OK || s == StatusCode::SERVICE_UNAVAILABLE,
            "{s}"
        );
        if s == StatusCode::SERVICE_UNAVAILABLE {
            assert!(a.response.headers().contains_key(header::RETRY_AFTER));
        }
        let v: Value = serde_json::from_slice(a.response.body()).unwrap();
        applied += usize::from(v["outcome"] == "applied");
    }
    assert_eq!(applied, 1);
    let history = block_on(journal::history(&w.store, &FixedClock(3_000), "op1")).unwrap();
    let changes = history
        .iter()
        .filter(|(_, e)| matches!(e, Effect::Applied(_)))
        .count();
    assert_eq!(changes, 1);
    // Retries of the 503s now answer 2xx.
    let (s, _) = w.send(bearer(&body));
    assert_eq!(s, StatusCode::OK);
}

#[test]
fn refusals_change_nothing_and_only_authenticated_ones_are_counted() {
    let w = World::new(WebhookMode::Bearer);
    let body = payload("completed", "whk_dddddddddddddddd");
    let before = w.store.keys();
    let post = |path: &str, ctype: &str, auth: Option<String>, body: Vec<u8>| {
        let mut b = http::Request::post(path).header("content-type", ctype);
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(body).unwrap()
    };
    let ok_auth = || Some(format!("Bearer {SECRET}"));
    let bytes = body.to_string().into_bytes();
    let mut tampered = body.clone();
    tampered["token"] = json!("tok-forged-forged-forged");
    let cases = vec![
        (
            http::Request::get("/webhooks/adcp/op1")
                .body(vec![])
                .unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            post("/webhooks/adcp/op1", "text/plain", ok_auth(), bytes.clone()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            post(
                "/webhooks/adcp/op1",
                "application/json",
                ok_auth(),
                vec![b' '; MAX_WEBHOOK_BYTES + 1],
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            post(
                "/webhooks/adcp/op_nope",
                "application/json",
                ok_auth(),
                bytes.clone(),
            ),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            post(
                "/webhooks/adcp/op1",
                "application/json",
                None,
                bytes.clone(),
            ),
            StatusCode::UNAUTHORIZED,
            "webhook_unauthenticated",
        ),
        (
            post(
                "/webhooks/adcp/op1",
                "application/json",
                Some("Bearer wrong".into()),
                bytes.clone(),
            ),
            StatusCode::UNAUTHORIZED,
            "webhook_bearer_invalid",
        ),
        (
            http::Request::post("/webhooks/adcp/op1")
                .header("content-type", "application/json")
                .header("x-adcp-signature", "sha256=00")
                .header("x-adcp-timestamp", "1")
                .body(bytes.clone())
                .unwrap(),
            StatusCode::UNAUTHORIZED,
            "webhook_mode_mismatch",
        ),
        (
            post(
                "/webhooks/adcp/op1",
                "application/json",
                ok_auth(),
                tampered.to_string().into_bytes(),
            ),
            StatusCode::UNAUTHORIZED,
            "webhook_token_mismatch",
        ),
        (
            post(
                "/webhooks/adcp/op1",
                "application/json",
                ok_auth(),
                b"[1,2]".to_vec(),
            ),
            StatusCode::UNAUTHORIZED,
            "webhook_token_missing",
        ),
    ];
    for (req, status, code) in cases {
        w.store.reset_counts();
        let (s, b) = w.send(req);
        assert_eq!((s, b["code"].as_str()), (status, Some(code)), "{b}");
        // Before the sender is authenticated a refusal costs at most the operation's read
        // and writes nothing; after it, the refusal is counted (two increments).
        let writes = w.store.total_ops() - w.store.count(crate::foundation::store::StoreOp::Get);
        match code {
            "webhook_token_mismatch" => assert_eq!(writes, 2, "{code}"),
            // An authenticated sender's spec violation is also recorded on the seller (two
            // writes) and files the operation's poll at once (three more).
            "webhook_token_missing" => assert_eq!(writes, 7, "{code}"),
            // An unknown id: its snapshot and its journal's counter.
            "not_found" => assert_eq!((writes, w.store.total_ops()), (0, 2), "{code}"),
            _ => {
                assert_eq!(writes, 0, "{code}");
                assert!(w.store.total_ops() <= 1, "{code}: {}", w.store.total_ops());
            }
        }
    }
    let mut after = w.store.keys();
    after.retain(|k| {
        !["m:", "sum:", "interop:", "poll:", "due:"]
            .iter()
            .any(|p| k.starts_with(p))
    });
    assert_eq!(
        after, before,
        "refusals write nothing but counters, diagnostics and the poll they bring forward"
    );
    // Only the refusals of authenticated senders are counted (forged traffic cannot write),
    // in the tenant's summary and in /metrics.
    let summary = block_on(crate::records::summary::read(&w.store, "t1", &[])).unwrap();
    assert_eq!(
        summary.webhook_rejections,
        [("unauthenticated".to_string(), 2)]
    );
    let text = block_on(metrics::render(&w.store, &Default::default(), 0)).unwrap();
    assert!(
        text.contains("adcp_webhook_rejections_total{reason=\"unauthenticated\"} 2"),
        "{text}"
    );
    assert!(text.contains("adcp_webhook_rejections_total{reason=\"mode_mismatch\"} 0"));
    assert!(text.contains("adcp_webhook_rejections_total{reason=\"unknown_operation\"} 0"));
}

/// A tenant callback on `w`'s tenant `t1`.
fn register_callback(w: &World) {
    let e = SeededEntropy::new(4);
    let cb = crate::records::notify::Callback {
        url: "https://buyer.example/hook".into(),
        secret: w.config.sealing.seal(
            &e,
            &crate::records::notify::secret_purpose("t1"),
            b"whsec_x",
        ),
        enabled: true,
        disabled_reason: None,
    };
    block_on(crate::foundation::store::set_json(
        &w.store,
        &keys::callback("t1"),
        &cb,
    ))
    .unwrap();
}

/// The seller's webhook comes before the sweep delivered the notification of the change
/// before it (the `submitted` a creation queues): that one is to be attempted first.
#[test]
fn a_webhooks_notification_follows_the_earlier_one_still_pending() {
    let w = World::new(WebhookMode::Bearer);
    register_callback(&w);
    let cx = crate::foundation::cx::Cx::new(&w.store, &FixedClock(1_500), &NoLog);
    let submitted = crate::testing::obs(TaskStatus::Submitted, Some("task_1"));
    let written = block_on(crate::lifecycle::effects::record(
        cx,
        "api",
        "op1",
        None,
        journal::EntryKind::Observed {
            observation: Box::new(submitted),
        },
    ))
    .unwrap();
    let earlier = written.notification.expect("submitted is queued");
    let env = w.env();
    let answer = block_on(handle(
        &env,
        bearer(&payload("completed", "whk_ffffffffffffffff")),
    ));
    assert_eq!(answer.response.status(), StatusCode::OK);
    let op = answer
        .settle
        .expect("the change is announced after the answer");
    let notifications = block_on(settle(&env, &op));
    assert_eq!(
        notifications,
        vec![
            earlier.clone(),
            crate::records::notify::notification_id("op1", op.version)
        ],
        "submitted first, then completed"
    );
    // Once the earlier one is delivered, it is not attempted again.
    let mut n: crate::records::notify::Notification = block_on(crate::foundation::store::get_json(
        &w.store,
        &keys::notification(&earlier),
    ))
    .unwrap()
    .unwrap();
    n.state = crate::records::notify::DeliveryState::Delivered;
    block_on(crate::foundation::store::set_json(
        &w.store,
        &keys::notification(&earlier),
        &n,
    ))
    .unwrap();
    assert_eq!(block_on(settle(&env, &op)).len(), 1);
}

#[test]
/// Before its answer an accepted webhook costs the record's read and three writes (seq,
/// entry, record) and its change is visible at once; settling it after the answer (here
/// with the tenant's callback: the notification queued and filed, the effects claim, the
/// counters) is the rest. A repeat then costs the record's read and the duplicate counter.
fn an_accepted_webhook_answers_after_three_writes_and_a_repeat_costs_two_calls() {
    let w = World::new(WebhookMode::Bearer);
    // A tenant callback is registered, so the notification path is included.
    register_callback(&w);
    // The usual case: the seller already answered `submitted` (the first status with a
    // task id also indexes the task for reconciliation; that is not the webhook's cost).
    let submitted = crate::testing::obs(TaskStatus::Submitted, Some("task_1"));
    block_on(crate::testing::record(
        &w.store,
        &FixedClock(1_500),
        "op1",
        journal::EntryKind::Observed {
            observation: Box::new(submitted),
        },
    ))
    .unwrap();
    let body = payload("completed", "whk_eeeeeeeeeeeeeeee");
    let env = w.env();
    w.store.reset_counts();
    let answer = block_on(handle(&env, bearer(&body)));
    assert_eq!(answer.response.status(), StatusCode::OK);
    let reads = w.store.count(crate::foundation::store::StoreOp::Get);
    let calls = w.store.total_ops();
    assert_eq!(
        (reads, calls - reads),
        (1, 3),
        "{calls} calls before the answer"
    );
    // Visible at once: the record already holds the change.
    let stored: crate::model::operation::Operation = block_on(crate::foundation::store::get_json(
        &w.store,
        &keys::operation("op1"),
    ))
    .unwrap()
    .unwrap();
    assert_eq!(
        stored.status,
        OperationStatus::Seller(TaskStatus::Completed)
    );
    let op = answer
        .settle
        .expect("the change is announced after the answer");
    w.store.reset_counts();
    let notifications = block_on(settle(&env, &op));
    assert_eq!(notifications.len(), 1, "the buyer notification to attempt");
    // The callback, the notification (read, write, filed due: 2), the one of the change
    // before (read: none, the test recorded `submitted` without effects).
    assert_eq!(w.store.total_ops(), 6, "calls to announce");
    // The sweep (or any later reader or writer) settles the rest: the claim (read, write),
    // the notification found queued (callback, record; filed due again: 2), transition,
    // left, outcome histogram (2), tenant summary.
    w.store.reset_counts();
    let cx = crate::foundation::cx::Cx::new(&w.store, &FixedClock(2_500), &NoLog);
    block_on(crate::lifecycle::effects::settle(cx, "sweep", &op)).unwrap();
    assert!(
        w.store.total_ops() <= 11,
        "{} calls to settle",
        w.store.total_ops()
    );
    // Settled once: a second settler finds the claim and does nothing.
    w.store.reset_counts();
    assert!(
        block_on(crate::lifecycle::effects::settle(cx, "sweep", &op))
            .unwrap()
            .is_empty()
    );
    assert_eq!(w.store.total_ops(), 1, "one read of the claim");
    w.store.reset_counts();
    let (s, b) = w.send(bearer(&body));
    assert_eq!(
        (s, b["outcome"].as_str()),
        (StatusCode::OK, Some("duplicate"))
    );
    assert_eq!(
        (
            w.store.total_ops(),
            w.store.count(crate::foundation::store::StoreOp::Get)
        ),
        (1, 1),
        "the record's read alone: a repeat writes nothing"
    );
}

#[test]
fn ten_thousand_distinct_deliveries_keep_the_record_bounded_and_every_one_deduplicated() {
    const DELIVERIES: usize = 10_000;
    /// The stated bound on the operation's stored record.
    const MAX_RECORD_BYTES: usize = 128 * 1024;
    let w = World::new(WebhookMode::Bearer);
    // The longest keys the envelope allows: the worst a seller can do to the record's size.
    let key = |i: usize| format!("whk_{i:0>251}");
    for i in 0..DELIVERIES {
        let (s, b) = w.send(bearer(&payload("working", &key(i))));
        assert_eq!(s, StatusCode::OK, "{i}: {b}");
    }
    let record = block_on(w.store.get(&keys::operation("op1")))
        .unwrap()
        .unwrap();
    assert!(
        record.len() < MAX_RECORD_BYTES,
        "the record is {} bytes",
        record.len()
    );
    for i in (0..DELIVERIES).rev() {
        let (s, b) = w.send(bearer(&payload("working", &key(i))));
        assert_eq!(
            (s, b["outcome"].as_str()),
            (StatusCode::OK, Some("duplicate")),
            "{i}: {b}"
        );
    }
    // A moved-out key reused with another payload is still a conflict.
    let (s, b) = w.send(bearer(&payload("failed", &key(0))));
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::CONFLICT, Some("idempotency_conflict"))
    );
    assert_eq!(w.status(), OperationStatus::Seller(TaskStatus::Working));
}

#[test]
fn a_store_failure_answers_webhook_senders_a_fixed_message_and_logs_the_detail() {
    let w = World::new(WebhookMode::Bearer);
    let log = crate::testing::Lines::default();
    let env = IntakeEnv {
        store: &w.store,
        clock: &FixedClock(2_000),
        log: &log,
        config: &w.config,
        transport: &crate::testing::ScriptedTransport::default(),
    };
    // Past authentication: the failure is in the journal write.
    w.store.fail_nth_call(3);
    let a = block_on(handle(
        &env,
        bearer(&payload("completed", "whk_hhhhhhhhhhhhhhhh")),
    ));
    assert_eq!(a.response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let b: Value = serde_json::from_slice(a.response.body()).unwrap();
    assert_eq!(
        b,
        json!({"code": "store_unavailable", "message": "the store is unavailable; retry"})
    );
    assert!(
        log.0.borrow().join("\n").contains("injected"),
        "the detail is logged"
    );
    assert_eq!(w.status(), OperationStatus::PendingDispatch);
}

#[test]
fn a_terminal_webhook_before_the_submitted_answer_is_kept_and_the_answer_moves_nothing() {
    use crate::model::operation::{Observation, Source};
    use crate::records::journal::EntryKind;
    let w = World::new(WebhookMode::Bearer);
    // The seller completed the task and said so before its `submitted` answer reached us:
    // the operation is still `pending_dispatch` (the API is waiting for that answer).
    assert_eq!(w.status(), OperationStatus::PendingDispatch);
    let (s, b) = w.send(bearer(&payload("completed", "whk_aaaaaaaaaaaaaaaa")));
    assert_eq!(
        (s, b["outcome"].as_str()),
        (StatusCode::OK, Some("applied")),
        "{b}"
    );
    // Then the answer arrives, naming the same task.
    let submitted = Observation {
        task_id: Some("task_1".into()),
        ..Observation::of(Source::Dispatch, TaskStatus::Submitted)
    };
    let effect = block_on(crate::testing::record(
        &w.store,
        &FixedClock(2_500),
        "op1",
        EntryKind::Observed {
            observation: Box::new(submitted),
        },
    ))
    .unwrap();
    assert_eq!(effect.effect, Some(Effect::Stale));
    let op = block_on(journal::load(&w.store, &FixedClock(3_000), "op1"))
        .unwrap()
        .unwrap()
        .operation;
    assert_eq!(op.status, OperationStatus::Seller(TaskStatus::Completed));
    assert_eq!(op.result.unwrap()["media_buy_id"], "mb_1");
}
