use super::*;
use crate::foundation::http::Request;
use crate::foundation::seal::SealingKey;
use crate::model::operation::WebhookMode;
use crate::records::journal::{self};
use crate::schedule::due::DueConfig;
use http::StatusCode;
use serde_json::{Value, json};

use crate::foundation::clock::FixedClock;
use crate::foundation::log::NoLog;
use crate::foundation::store::MemoryStore;
use crate::model::operation::WebhookRegistration;
use crate::testing::{ScriptedTransport, SeededEntropy};
use futures::executor::block_on;

const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const NOW_S: u64 = 1_776_520_800;

use crate::testing::signer::{jwk, signed_post};

fn world() -> (MemoryStore, IntakeConfig) {
    let sealing = SealingKey::from_hex(KEY).unwrap();
    let e = SeededEntropy::new(2);
    let mut op = crate::testing::sample("op1");
    op.webhook = Some(WebhookRegistration {
        url: "https://orch.example/webhooks/adcp/op1".into(),
        mode: WebhookMode::Rfc9421,
        token: sealing.seal(&e, "webhook:op1:token", b"tok-0123456789abcdef"),
        secret: None,
    });
    let store = MemoryStore::new();
    block_on(async {
        journal::create(&store, &FixedClock(1_000), &op)
            .await
            .unwrap();
        crate::records::seller::put(&store, &crate::testing::sample_seller())
            .await
            .unwrap();
    });
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

/// Signs like a seller that addressed `https://orch.example/webhooks/adcp/op1`.
fn signed(body: &str, nonce: &str) -> Request {
    signed_by(body, nonce, "seller-key-1", NOW_S)
}

fn signed_by(body: &str, nonce: &str, keyid: &str, created_s: u64) -> Request {
    signed_post("/webhooks/adcp/op1", body, nonce, keyid, created_s)
}

fn seller_keys(t: &ScriptedTransport) {
    t.reply(200, &json!({"agents": [{"url": "https://seller.example/mcp", "jwks_uri": "https://seller.example/jwks.json"}]}).to_string());
    t.reply(200, &json!({"keys": [jwk()]}).to_string());
}

fn send(
    store: &MemoryStore,
    config: &IntakeConfig,
    t: &ScriptedTransport,
    req: Request,
) -> (StatusCode, Value, Option<String>) {
    send_at(store, config, t, req, NOW_S * 1000)
}

fn send_at(
    store: &MemoryStore,
    config: &IntakeConfig,
    t: &ScriptedTransport,
    req: Request,
    now_ms: u64,
) -> (StatusCode, Value, Option<String>) {
    let env = IntakeEnv {
        store,
        clock: &FixedClock(now_ms),
        log: &NoLog,
        config,
        transport: t,
    };
    let a = block_on(handle(&env, req));
    let www = a
        .response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    (
        a.response.status(),
        serde_json::from_slice(a.response.body()).unwrap_or(Value::Null),
        www,
    )
}

fn body(key: &str, status: &str) -> String {
    json!({"idempotency_key": key, "operation_id": "op1", "task_id": "t1", "task_type": "create_media_buy",
           "status": status, "timestamp": "2026-04-18T14:00:00Z", "token": "tok-0123456789abcdef"}).to_string()
}

#[test]
fn signed_deliveries_verify_against_discovered_keys_and_replays_are_refused() {
    let (store, config) = world();
    let t = ScriptedTransport::default();
    seller_keys(&t);
    let b = body("whk_aaaaaaaaaaaaaaaa", "working");
    let (s, v, _) = send(&store, &config, &t, signed(&b, "nonce-0000000001"));
    assert_eq!(
        (s, v["outcome"].as_str()),
        (StatusCode::OK, Some("applied")),
        "{v}"
    );
    assert_eq!(t.requests.borrow().len(), 2, "brand.json then JWKS");
    // Keys are cached: the next delivery fetches nothing.
    let b2 = body("whk_bbbbbbbbbbbbbbbb", "completed");
    let (s, _, _) = send(&store, &config, &t, signed(&b2, "nonce-0000000002"));
    assert_eq!(s, StatusCode::OK);
    assert_eq!(t.requests.borrow().len(), 2);
    // The same signed request again: the nonce is known.
    let (s, v, www) = send(&store, &config, &t, signed(&b2, "nonce-0000000002"));
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("webhook_signature_replayed"))
    );
    assert_eq!(
        www.as_deref(),
        Some("Signature error=\"webhook_signature_replayed\"")
    );
    // A genuine re-delivery with a fresh signature is a duplicate: 2xx, no change, and
    // no write (the signer's cached keys and the operation read, issue #17's 2 calls).
    store.reset_counts();
    let (s, v, _) = send(&store, &config, &t, signed(&b2, "nonce-0000000003"));
    assert_eq!(
        (s, v["outcome"].as_str()),
        (StatusCode::OK, Some("duplicate"))
    );
    assert_eq!(
        (
            store.count(crate::foundation::store::StoreOp::Get),
            store.total_ops()
        ),
        (2, 2)
    );
}

#[test]
fn tampered_and_wrong_mode_deliveries_are_refused_without_change() {
    let (store, config) = world();
    let t = ScriptedTransport::default();
    seller_keys(&t);
    let mut req = signed(
        &body("whk_cccccccccccccccc", "completed"),
        "nonce-0000000004",
    );
    *req.body_mut() = body("whk_cccccccccccccccc", "failed").into_bytes();
    let (s, v, www) = send(&store, &config, &t, req);
    assert_eq!(
        (s, v["code"].as_str()),
        (
            StatusCode::UNAUTHORIZED,
            Some("webhook_signature_digest_mismatch")
        ),
        "{v}"
    );
    assert!(www.unwrap().contains("webhook_signature_digest_mismatch"));
    let hmac = http::Request::post("/webhooks/adcp/op1")
        .header("content-type", "application/json")
        .header("x-adcp-signature", "sha256=00")
        .header("x-adcp-timestamp", NOW_S.to_string())
        .body(body("whk_dddddddddddddddd", "completed").into_bytes())
        .unwrap();
    let (s, v, _) = send(&store, &config, &t, hmac);
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("webhook_mode_mismatch"))
    );
    let op = block_on(journal::load(&store, &FixedClock(NOW_S * 1000), "op1"))
        .unwrap()
        .unwrap()
        .operation;
    assert_eq!(
        op.status,
        crate::model::status::OperationStatus::PendingDispatch
    );
}

#[test]
fn a_key_removed_from_the_sellers_jwks_is_refused_once_the_cached_keys_are_past_their_ttl() {
    let (store, config) = world();
    let t = ScriptedTransport::default();
    seller_keys(&t);
    let b = body("whk_eeeeeeeeeeeeeeee", "working");
    let (s, _, _) = send(&store, &config, &t, signed(&b, "nonce-0000000011"));
    assert_eq!(s, StatusCode::OK);
    // The seller revokes the key; within the TTL the cache answers without a fetch.
    let later_s = NOW_S + crate::auth::jwks::TTL_MS / 1000;
    t.reply(200, &json!({"agents": [{"url": "https://seller.example/mcp", "jwks_uri": "https://seller.example/jwks.json"}]}).to_string());
    t.reply(200, &json!({"keys": []}).to_string());
    let b2 = body("whk_ffffffffffffffff", "completed");
    let (s, v, _) = send_at(
        &store,
        &config,
        &t,
        signed_by(&b2, "nonce-0000000012", "seller-key-1", later_s),
        later_s * 1000,
    );
    assert_eq!(
        (s, v["code"].as_str()),
        (
            StatusCode::UNAUTHORIZED,
            Some("webhook_signature_key_unknown")
        ),
        "{v}"
    );
    assert_eq!(t.requests.borrow().len(), 4, "refetched once past the TTL");
    let op = block_on(journal::load(&store, &FixedClock(later_s * 1000), "op1"))
        .unwrap()
        .unwrap()
        .operation;
    assert_ne!(
        op.status,
        crate::model::status::OperationStatus::Seller(crate::model::status::TaskStatus::Completed)
    );
}

#[test]
fn forged_deliveries_fetch_the_sellers_keys_at_most_once_per_cooldown() {
    use crate::auth::jwks::COOLDOWN_MS;
    let (store, config) = world();
    let t = ScriptedTransport::default();
    // Discovery fails (nothing scripted): nothing is cached, yet every forgery must not fetch.
    let start_s = NOW_S;
    for i in 0..50u64 {
        let b = body(&format!("whk_forged{i:010}"), "completed");
        let (s, _, _) = send_at(
            &store,
            &config,
            &t,
            signed_by(
                &b,
                &format!("nonce-forged-{i:04}"),
                &format!("kid-{i}"),
                start_s,
            ),
            start_s * 1000 + i * 100,
        );
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(t.requests.borrow().len(), 1, "one brand.json attempt");
    // Keys known: unknown kids still fetch once per cooldown, never per request.
    let (store, config) = world();
    let t = ScriptedTransport::default();
    seller_keys(&t);
    let (s, _, _) = send(
        &store,
        &config,
        &t,
        signed(&body("whk_gggggggggggggggg", "working"), "nonce-0000000013"),
    );
    assert_eq!(s, StatusCode::OK);
    for i in 0..50u64 {
        let at_ms = NOW_S * 1000 + i * (2 * COOLDOWN_MS / 50);
        let b = body(&format!("whk_forged{i:010}"), "completed");
        let req = signed_by(
            &b,
            &format!("nonce-forged-{i:04}"),
            "kid-forged",
            at_ms / 1000,
        );
        let (s, _, _) = send_at(&store, &config, &t, req, at_ms);
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        t.requests.borrow().len(),
        2 + 1,
        "one more attempt, a cooldown after the first fetch"
    );
}

/// The path an RFC 9421 operation is registered with now: it names the signer.
const SIGNER_PATH: &str = "/webhooks/adcp/op1/t1/s1";

#[test]
fn at_a_path_naming_the_signer_a_forgery_costs_one_read_and_a_replay_is_still_refused() {
    use crate::foundation::store::StoreOp;
    let (store, config) = world();
    let t = ScriptedTransport::default();
    seller_keys(&t);
    let b = body("whk_gggggggggggggggg", "working");
    let genuine = || signed_post(SIGNER_PATH, &b, "nonce-0000000021", "seller-key-1", NOW_S);
    let (s, v, _) = send(&store, &config, &t, genuine());
    assert_eq!(s, StatusCode::OK, "{v}");

    // The seller's keys are cached now. A forgery (right keyid, wrong body under the
    // signature) is refused after reading them alone: the operation is never read.
    store.reset_counts();
    let mut forged = signed_post(SIGNER_PATH, &b, "nonce-0000000022", "seller-key-1", NOW_S);
    *forged.body_mut() = body("whk_gggggggggggggggg", "completed").into_bytes();
    let (s, v, _) = send(&store, &config, &t, forged);
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(
        (store.count(StoreOp::Get), store.total_ops()),
        (1, 1),
        "a forgery costs one read"
    );

    // The same signed request again: its nonce is in the operation's ledger.
    let (s, v, www) = send(&store, &config, &t, genuine());
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("webhook_signature_replayed")),
        "{v}"
    );
    assert!(www.unwrap().contains("webhook_signature_replayed"));

    // A genuine signature for this path, but another seller's operation: not found.
    let mut other = crate::testing::sample("op2");
    other.seller_id = "s2".into();
    other.webhook = Some(WebhookRegistration {
        url: "https://orch.example/webhooks/adcp/op2".into(),
        mode: WebhookMode::Rfc9421,
        token: config.sealing.seal(
            &SeededEntropy::new(3),
            "webhook:op2:token",
            b"tok-0123456789abcdef",
        ),
        secret: None,
    });
    block_on(journal::create(&store, &FixedClock(1_000), &other)).unwrap();
    let wrong = signed_post(
        "/webhooks/adcp/op2/t1/s1",
        &body("whk_hhhhhhhhhhhhhhhh", "working").replace("op1", "op2"),
        "nonce-0000000023",
        "seller-key-1",
        NOW_S,
    );
    let (s, v, _) = send(&store, &config, &t, wrong);
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found")),
        "{v}"
    );
}

#[test]
fn a_forgery_naming_a_made_up_signer_claims_no_key_fetch_and_writes_nothing() {
    use crate::foundation::store::StoreOp;
    let (store, config) = world();
    let t = ScriptedTransport::default();
    store.reset_counts();
    let b = body("whk_iiiiiiiiiiiiiiii", "working");
    let forged = signed_post(
        "/webhooks/adcp/op1/t9/s9",
        &b,
        "nonce-0000000031",
        "k",
        NOW_S,
    );
    let (s, v, _) = send(&store, &config, &t, forged);
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found")),
        "{v}"
    );
    assert_eq!(store.total_ops(), store.count(StoreOp::Get), "reads only");
    assert!(t.requests.borrow().is_empty(), "no key discovery");
}
