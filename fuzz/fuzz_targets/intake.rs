//! The whole webhook receiver (`POST /webhooks/adcp/{operation_id}`) on an in-memory store
//! with a fixed clock: authentication in each mode, payload validation, de-duplication and
//! the state machine, over up to four deliveries in a row.
//!
//! Input: one control byte, then up to four requests in the seed text format separated by
//! `----` lines (target defaults to `/webhooks/adcp/op1`). Control bits: 0-1 the registered
//! mode (bearer, hmac, rfc9421, rfc9421); 2 set the payload `token` to the registered one;
//! 3 add valid credentials for the mode (RFC 9421: a fresh signature); 4 bind the operation
//! to task `task_456`; 5 start from `submitted` rather than `pending_dispatch`; 6 sign with
//! the P-256 key; 7 no cached seller keys (discovery is attempted and fails).
#![no_main]

use libfuzzer_sys::fuzz_target;
use orchestrator_core::auth::hmac_signature;
use orchestrator_core::auth::jwks::CachedKeys;
use orchestrator_core::foundation::clock::FixedClock;
use orchestrator_core::foundation::keys;
use orchestrator_core::foundation::log::NoLog;
use orchestrator_core::foundation::seal::SealingKey;
use orchestrator_core::foundation::store::{MemoryStore, set_json};
use orchestrator_core::intake::{IntakeConfig, IntakeEnv, handle};
use orchestrator_core::model::operation::{
    NewOperation, Operation, WebhookMode, WebhookRegistration,
};
use orchestrator_core::model::status::{OperationStatus, TaskStatus};
use orchestrator_core::records::journal;
use orchestrator_core::records::seller::{self, Seller};
use orchestrator_core::schedule::due::DueConfig;
use orchestrator_fuzz::{
    CounterEntropy, NOW_MS, NOW_S, Raw, ScriptedTransport, assert_error_contract, block_on,
    sections, set_header, sign_fresh, signers,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::cell::Cell;

const SEAL_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const TOKEN: &str = "tok-0123456789abcdef";
const SECRET: &str = "bearer-secret-0123456789abcdef-0123456789";
const BASE: &str = "https://orch.example";

fn world(control: u8, store: &MemoryStore, sealing: &SealingKey) {
    let mode = [
        WebhookMode::Bearer,
        WebhookMode::Hmac,
        WebhookMode::Rfc9421,
        WebhookMode::Rfc9421,
    ][usize::from(control & 3)];
    let e = CounterEntropy(Cell::new(1));
    let new = NewOperation {
        operation_id: "op1".into(),
        tenant_id: "t1".into(),
        seller_id: "s1".into(),
        task: orchestrator_core::model::task::TaskKind::CreateMediaBuy,
        arguments: json!({"idempotency_key": "k-0123456789abcdef"}),
        idempotency_key: "k-0123456789abcdef".into(),
        status: if control & 32 != 0 {
            OperationStatus::Seller(TaskStatus::Submitted)
        } else {
            OperationStatus::PendingDispatch
        },
        task_id: (control & 16 != 0).then(|| "task_456".into()),
        message: None,
        deadline_ms: 86_400_000 + 60_000,
        linked_from: None,
    };
    let mut op = Operation::new(new, NOW_MS - 60_000);
    op.next_poll_at_ms = Some(NOW_MS);
    op.webhook = Some(WebhookRegistration {
        url: format!("{BASE}/webhooks/adcp/op1"),
        mode,
        token: sealing.seal(&e, "webhook:op1:token", TOKEN.as_bytes()),
        secret: Some(sealing.seal(&e, "webhook:op1:secret", SECRET.as_bytes())),
    });
    let clock = FixedClock(NOW_MS - 60_000);
    block_on(journal::create(store, &clock, &op)).expect("the operation is stored");
    let s: Seller = serde_json::from_value(json!({
        "tenant_id": "t1", "seller_id": "s1", "mcp_url": "https://seller.example/mcp",
        "webhook_mode": mode, "created_at_ms": 0, "updated_at_ms": 0}))
    .expect("a valid seller record");
    block_on(seller::put(store, &s)).expect("the seller is stored");
    if control & 128 == 0 {
        let cached = CachedKeys {
            jwks_uri: "https://seller.example/.well-known/jwks.json".into(),
            keys: signers().iter().map(|s| s.jwk()).collect(),
            fetched_at_ms: NOW_MS,
            attempted_at_ms: NOW_MS,
        };
        block_on(set_json(store, &keys::seller_jwks("t1", "s1"), &cached))
            .expect("the keys are cached");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let store = MemoryStore::new();
    let sealing = SealingKey::from_hex(SEAL_KEY).expect("a valid key");
    world(control, &store, &sealing);
    let config = IntakeConfig {
        public_base_url: BASE.into(),
        sealing,
        due: DueConfig::default(),
        allow_private_networks: false,
    };
    let clock = FixedClock(NOW_MS);
    let transport = ScriptedTransport::default();
    let env = IntakeEnv {
        store: &store,
        clock: &clock,
        log: &NoLog,
        config: &config,
        transport: &transport,
    };
    let signers = signers();
    for section in sections(rest, 4) {
        let mut raw = Raw::parse(section);
        if control & 4 != 0
            && let Ok(Value::Object(mut payload)) = serde_json::from_slice::<Value>(&raw.body)
        {
            payload.insert("token".into(), json!(TOKEN));
            raw.body = serde_json::to_vec(&payload).expect("a JSON object serialises");
        }
        let Some(mut req) = raw.to_request("/webhooks/adcp/op1") else {
            continue;
        };
        if control & 8 != 0 {
            let method = req.method().as_str().to_string();
            let target = format!(
                "{BASE}{}",
                req.uri().path_and_query().map_or("/", |p| p.as_str())
            );
            let (mut parts, body) = req.into_parts();
            match control & 3 {
                0 => set_header(
                    &mut parts.headers,
                    "authorization",
                    &format!("Bearer {SECRET}"),
                ),
                1 => {
                    let ts = NOW_S.to_string();
                    let sig = hmac_signature::sign(SECRET.as_bytes(), &ts, &body);
                    set_header(&mut parts.headers, "x-adcp-timestamp", &ts);
                    set_header(&mut parts.headers, "x-adcp-signature", &sig);
                }
                _ => {
                    // Identical bodies share a nonce, so repeats exercise replay refusal.
                    let nonce =
                        orchestrator_core::foundation::clock::hex(&Sha256::digest(&body)[..12]);
                    let signer = &signers[usize::from(control & 64 != 0)];
                    sign_fresh(&method, &target, &mut parts.headers, &body, signer, &nonce);
                }
            }
            req = http::Request::from_parts(parts, body);
        }
        let answer = block_on(handle(&env, req));
        assert_error_contract(&answer.response);
    }
    // Whatever was accepted, the journal still folds into a record.
    let loaded = block_on(journal::load(&store, &clock, "op1"));
    assert!(
        matches!(loaded, Ok(Some(_))),
        "the operation no longer loads: {:?}",
        loaded.err()
    );
});
