use super::*;
use crate::auth::hmac_signature::{self};
use crate::foundation::{clock::FixedClock, log::NoLog, seal::SealingKey, store::MemoryStore};
use crate::model::operation::WebhookMode;
use crate::records::journal::{self};
use crate::schedule::due::DueConfig;
use http::StatusCode;
use serde_json::Value;

use crate::model::operation::WebhookRegistration;
use crate::testing::SeededEntropy;
use futures::executor::block_on;

const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const SECRET: &str = "hmac-secret-0123456789abcdef-0123456789";

fn world() -> (MemoryStore, IntakeConfig) {
    let sealing = SealingKey::from_hex(KEY).unwrap();
    let e = SeededEntropy::new(2);
    let mut op = crate::testing::sample("op1");
    op.webhook = Some(WebhookRegistration {
        url: "https://orch.example/webhooks/adcp/op1".into(),
        mode: WebhookMode::Hmac,
        token: sealing.seal(&e, "webhook:op1:token", b"tok-0123456789abcdef"),
        secret: Some(sealing.seal(&e, "webhook:op1:secret", SECRET.as_bytes())),
    });
    let store = MemoryStore::new();
    block_on(journal::create(&store, &FixedClock(1_000), &op)).unwrap();
    (
        store,
        IntakeConfig {
            public_base_url: "https://orch.example".into(),
            sealing,
            due: DueConfig::default(),
            allow_private_networks: false,
        },
    )
}

fn send(
    store: &MemoryStore,
    config: &IntakeConfig,
    body: &str,
    ts: &str,
    sig: &str,
) -> (StatusCode, Value) {
    let req = http::Request::post("/webhooks/adcp/op1")
        .header("content-type", "application/json")
        .header("X-AdCP-Timestamp", ts)
        .header("X-AdCP-Signature", sig)
        .body(body.as_bytes().to_vec())
        .unwrap();
    let env = IntakeEnv {
        store,
        clock: &FixedClock(1_700_000_000_000),
        log: &NoLog,
        config,
        transport: &crate::testing::ScriptedTransport::default(),
    };
    let a = block_on(handle(&env, req));
    (
        a.response.status(),
        serde_json::from_slice(a.response.body()).unwrap_or(Value::Null),
    )
}

#[test]
fn legacy_hmac_deliveries_are_verified_over_the_raw_bytes() {
    let (store, config) = world();
    // Spaced JSON, as the Python SDK sends it: verified as received, never re-serialised.
    let body = r#"{"idempotency_key": "whk_0123456789abcdef", "operation_id": "op1", "task_id": "t1", "task_type": "create_media_buy", "status": "working", "timestamp": "2026-11-22T10:00:00Z", "token": "tok-0123456789abcdef"}"#;
    let ts = "1700000000";
    let good = hmac_signature::sign(SECRET.as_bytes(), ts, body.as_bytes());
    let tampered = body.replace("working", "completed");
    assert_eq!(
        send(&store, &config, &tampered, ts, &good).1["code"],
        "webhook_signature_invalid"
    );
    let stale = hmac_signature::sign(SECRET.as_bytes(), "1699999000", body.as_bytes());
    assert_eq!(
        send(&store, &config, body, "1699999000", &stale).1["code"],
        "webhook_timestamp_out_of_window"
    );
    let dup = r#"{"status":"working","status":"completed"}"#;
    let dup_sig = hmac_signature::sign(SECRET.as_bytes(), ts, dup.as_bytes());
    assert_eq!(
        send(&store, &config, dup, ts, &dup_sig),
        (
            StatusCode::BAD_REQUEST,
            send(&store, &config, dup, ts, &dup_sig).1
        )
    );
    assert_eq!(
        send(&store, &config, dup, ts, &dup_sig).1["code"],
        "webhook_body_malformed"
    );
    let (s, b) = send(&store, &config, body, ts, &good);
    assert_eq!(
        (s, b["outcome"].as_str()),
        (StatusCode::OK, Some("applied")),
        "{b}"
    );
}

#[test]
fn an_authenticated_sellers_spec_violations_are_refused_recorded_and_bring_its_poll_forward() {
    use crate::foundation::store::StoreOp;
    use crate::records::interop::{self, Defect};
    use crate::schedule::poll::{PollState, schedule_at};
    let (store, config) = world();
    let now = 1_700_000_000_000;
    let ts = "1700000000";
    // The backup poll an hour away, as the schedule left it.
    let later = PollState {
        next_at_ms: now + 3_600_000,
        ..PollState::default()
    };
    block_on(schedule_at(
        &store,
        &FixedClock(now),
        &config.due,
        "op1",
        later,
    ))
    .unwrap();
    let next_poll = || {
        block_on(crate::foundation::store::get_json::<PollState>(
            &store, "poll:op1",
        ))
        .unwrap()
        .unwrap()
        .next_at_ms
    };
    let writes = || {
        store.count(StoreOp::Set) + store.count(StoreOp::Increment) + store.count(StoreOp::Delete)
    };
    let envelope = |status: &str, token: bool| {
        let token = if token {
            r#", "token": "tok-0123456789abcdef""#
        } else {
            ""
        };
        format!(
            r#"{{"idempotency_key": "whk_0123456789abcdef", "task_id": "t1", "task_type": "create_media_buy", "status": "{status}", "timestamp": "2026-11-22T10:00:00Z"{token}}}"#
        )
    };

    // A forgery (another secret) stays one read and no write, whatever it claims.
    store.reset_counts();
    let no_token = envelope("completed", false);
    let forged = hmac_signature::sign(
        b"forger-secret-0123456789abcdef-01234",
        ts,
        no_token.as_bytes(),
    );
    assert_eq!(
        send(&store, &config, &no_token, ts, &forged).0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(writes(), 0);
    assert!(
        block_on(interop::read(&store, "t1", "s1"))
            .unwrap()
            .is_empty()
    );

    // Signed, but the token is not echoed (a seller that echoes `context` instead).
    let signed = hmac_signature::sign(SECRET.as_bytes(), ts, no_token.as_bytes());
    let (s, b) = send(&store, &config, &no_token, ts, &signed);
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("webhook_token_missing"))
    );
    assert_eq!(next_poll(), now, "polled at the next tick, not in an hour");

    // Signed over the compact form, sent spaced.
    let spaced = envelope("completed", true);
    // Compact in the body's own key order (what a Python signer's `separators=(",", ":")` makes).
    let compact = spaced.replace("\", \"", "\",\"").replace("\": ", "\":");
    assert_ne!(compact, spaced);
    let over_compact = hmac_signature::sign(SECRET.as_bytes(), ts, compact.as_bytes());
    let (s, b) = send(&store, &config, &spaced, ts, &over_compact);
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("webhook_signature_invalid"))
    );
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("another serialization"),
        "{b}"
    );

    // A status outside the task enum.
    let unlisted = envelope("requires_approval", true);
    let sig = hmac_signature::sign(SECRET.as_bytes(), ts, unlisted.as_bytes());
    let (s, b) = send(&store, &config, &unlisted, ts, &sig);
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_envelope_status"))
    );

    let seen = block_on(interop::read(&store, "t1", "s1")).unwrap();
    let kinds: Vec<(Defect, i64, String)> = seen
        .iter()
        .map(|e| (e.refused, e.count, e.last.as_ref().unwrap().detail.clone()))
        .collect();
    assert_eq!(
        kinds,
        [
            (
                Defect::WebhookTokenMissing,
                1,
                "webhook_token_missing".to_string()
            ),
            (
                Defect::HmacOverReserializedBody,
                1,
                "webhook_signature_invalid".to_string()
            ),
            (
                Defect::WebhookEnvelopeInvalid,
                1,
                "invalid_envelope_status".to_string()
            ),
        ]
    );
    // None of them changed the operation.
    let op = block_on(journal::load(&store, &FixedClock(now), "op1"))
        .unwrap()
        .unwrap();
    assert_eq!(
        op.operation.status,
        crate::model::status::OperationStatus::PendingDispatch
    );
}
