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
