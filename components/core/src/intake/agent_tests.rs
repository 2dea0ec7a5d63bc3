//! Agent-level webhooks: the seller's proof-of-control challenge and `capabilities.changed`.

use super::agent::handle;
use super::env::{IntakeConfig, IntakeEnv};
use crate::foundation::clock::FixedClock;
use crate::foundation::http::Request;
use crate::foundation::log::NoLog;
use crate::foundation::seal::SealingKey;
use crate::foundation::store::MemoryStore;
use crate::foundation::transport::TransportError;
use crate::records::capabilities::Capabilities;
use crate::records::capability_subscription::{CapabilitySubscription, SubscriptionState, path};
use crate::records::seller::{self, Seller};
use crate::schedule::due::DueConfig;
use crate::seller::port::CallFailure;
use crate::testing::signer::{jwk, signed_post};
use crate::testing::{FakeSeller, ScriptedTransport, conformant_capabilities, sample_seller};
use futures::executor::block_on;
use http::StatusCode;
use serde_json::{Value, json};

const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const NOW_S: u64 = 1_776_520_800;
const CHALLENGE: &str = "ch_0123456789abcdef0123456789abcdef";

/// The seller's capabilities at revision `rev`, announcing changes.
fn capabilities(rev: &str) -> Value {
    let mut c = conformant_capabilities();
    c["adcp"]["capability_changes"] = json!({"capabilities_version": rev,
        "notifications": {"supported": true, "registration_task": "sync_agent_notification_configs"}});
    c
}

struct World {
    store: MemoryStore,
    config: IntakeConfig,
    transport: ScriptedTransport,
    seller: FakeSeller,
}

impl World {
    /// A registration at revision `rev_1`, subscribed (`subscribed`) or not.
    fn new(subscribed: bool) -> World {
        let mut s = sample_seller();
        s.capabilities = Some(Capabilities::parse(&capabilities("rev_1"), 0).unwrap());
        s.capability_subscription = subscribed.then(|| CapabilitySubscription {
            url: format!("https://orch.example{}", path("t1", "s1")),
            idempotency_key: "k-0123456789abcdef".into(),
            state: SubscriptionState::Requested,
            error: None,
            updated_at_ms: 0,
            last_notice: None,
        });
        let store = MemoryStore::new();
        block_on(seller::put(&store, &s)).unwrap();
        let transport = ScriptedTransport::default();
        transport.reply(200, &json!({"agents": [{"url": "https://seller.example/mcp", "jwks_uri": "https://seller.example/jwks.json"}]}).to_string());
        transport.reply(200, &json!({"keys": [jwk()]}).to_string());
        World {
            store,
            config: IntakeConfig {
                public_base_url: "https://orch.example".into(),
                sealing: SealingKey::from_hex(KEY).unwrap(),
                due: DueConfig::default(),
                allow_private_networks: false,
            },
            transport,
            seller: FakeSeller::default(),
        }
    }

    fn send(&self, req: Request) -> (StatusCode, Value, Option<String>) {
        let env = IntakeEnv {
            store: &self.store,
            clock: &FixedClock(NOW_S * 1000),
            log: &NoLog,
            config: &self.config,
            transport: &self.transport,
        };
        let r = block_on(handle(&env, &self.seller, req));
        let retry = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let body = serde_json::from_slice(r.body()).unwrap_or(Value::Null);
        (r.status(), body, retry)
    }

    fn record(&self) -> Seller {
        block_on(seller::get(&self.store, "t1", "s1"))
            .unwrap()
            .unwrap()
    }
}

fn signed(body: &Value, nonce: &str) -> Request {
    signed_post(
        &path("t1", "s1"),
        &body.to_string(),
        nonce,
        "seller-key-1",
        NOW_S,
    )
}

fn challenge() -> Value {
    json!({"type": "webhook.challenge", "scope": "agent", "challenge": CHALLENGE,
           "subscriber_id": "adcp-orchestrator", "seller_agent_url": "https://seller.example/mcp",
           "delivery_auth": {"mode": "rfc9421"}})
}

fn notice(rev: &str) -> Value {
    json!({"idempotency_key": "whk_0123456789abcdef", "notification_id": "capchg_1",
           "notification_type": "capabilities.changed", "fired_at": "2026-04-18T14:00:00Z",
           "subscriber_id": "adcp-orchestrator", "agent_url": "https://seller.example/mcp",
           "changed_at": "2026-04-18T13:59:00Z", "reason": "capability_enabled",
           "capabilities_version": rev})
}

#[test]
fn a_signed_challenge_is_echoed_and_changes_nothing() {
    let w = World::new(true);
    let before = w.record();
    let (s, body, _) = w.send(signed(&challenge(), "n1"));
    assert_eq!(
        (s, &body),
        (StatusCode::OK, &json!({"challenge": CHALLENGE}))
    );
    assert_eq!(w.record(), before);
    assert_eq!(w.seller.capability_calls.get(), 0);
}

#[test]
fn unsigned_forged_misaddressed_or_malformed_challenges_are_not_echoed() {
    let w = World::new(true);
    let mut unsigned = signed(&challenge(), "n1");
    unsigned.headers_mut().remove("signature");
    let (s, body, _) = w.send(unsigned);
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    assert!(!body.to_string().contains(CHALLENGE));

    let mut tampered = challenge();
    tampered["challenge"] = json!("ch_ffffffffffffffffffffffffffffffff");
    let mut forged = signed(&challenge(), "n2");
    *forged.body_mut() = tampered.to_string().into_bytes();
    let (s, body, _) = w.send(forged);
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");

    for (field, value) in [
        ("subscriber_id", json!("someone-else")),
        ("challenge", json!("short")),
        ("scope", json!("account")),
    ] {
        let mut c = challenge();
        c[field] = value;
        let (s, body, _) = w.send(signed(&c, &format!("n-{field}")));
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{field}: {body}");
        assert_eq!(body["code"], "invalid_payload");
    }

    // A registration that never asked for notices has no such URL.
    let w = World::new(false);
    let (s, body, _) = w.send(signed(&challenge(), "n1"));
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
}

#[test]
fn a_notice_of_a_new_revision_refreshes_the_capabilities_before_the_answer() {
    let w = World::new(true);
    *w.seller.capabilities.borrow_mut() = Some(Ok(capabilities("rev_2")));
    let (s, body, _) = w.send(signed(&notice("rev_2"), "n1"));
    assert_eq!(
        (s, &body),
        (StatusCode::OK, &json!({"outcome": "refreshed"}))
    );
    let r = w.record();
    let caps = r.capabilities.unwrap();
    assert_eq!(caps.capabilities_version.as_deref(), Some("rev_2"));
    assert_eq!(caps.fetched_at_ms, NOW_S * 1000);
    let last = r.capability_subscription.unwrap().last_notice.unwrap();
    assert_eq!(
        (last.notification_id.as_str(), last.refreshed),
        ("capchg_1", true)
    );
    assert_eq!(w.seller.capability_calls.get(), 1);

    // The same notice again (a retry, a replay): the revision is held, nothing is fetched.
    let (s, body, _) = w.send(signed(&notice("rev_2"), "n2"));
    assert_eq!(
        (s, &body),
        (StatusCode::OK, &json!({"outcome": "unchanged"}))
    );
    assert_eq!(w.seller.capability_calls.get(), 1);
}

#[test]
fn a_refresh_that_cannot_see_the_revision_answers_503_so_the_seller_retries() {
    let w = World::new(true);
    w.seller
        .capabilities
        .replace(Some(Err(CallFailure::Transport(TransportError::Connect(
            "10.1.2.3 refused".into(),
        )))));
    let before = w.record();
    let (s, body, retry) = w.send(signed(&notice("rev_2"), "n1"));
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "capabilities_unavailable");
    assert!(!body.to_string().contains("10.1.2.3"), "{body}");
    assert_eq!(retry.as_deref(), Some("60"));
    assert_eq!(w.record(), before);

    // The seller announced a revision it does not publish yet: what it shows is kept, and
    // the notice is answered 503 until it does.
    w.seller
        .capabilities
        .replace(Some(Ok(capabilities("rev_1b"))));
    let (s, body, _) = w.send(signed(&notice("rev_2"), "n2"));
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "revision_not_published");
    let r = w.record();
    assert_eq!(
        r.capabilities.unwrap().capabilities_version.as_deref(),
        Some("rev_1b")
    );
    assert!(
        !r.capability_subscription
            .unwrap()
            .last_notice
            .unwrap()
            .refreshed
    );
}

#[test]
fn notices_of_other_kinds_or_without_a_revision_are_refused() {
    let w = World::new(true);
    let mut other = notice("rev_2");
    other["notification_type"] = json!("principal.changed");
    let mut bare = notice("rev_2");
    bare.as_object_mut().unwrap().remove("capabilities_version");
    for (i, n) in [other, bare].iter().enumerate() {
        let (s, body, _) = w.send(signed(n, &format!("n{i}")));
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }
    assert_eq!(w.seller.capability_calls.get(), 0);
}

#[test]
fn a_notice_naming_a_made_up_seller_writes_nothing() {
    use crate::foundation::store::StoreOp;
    let w = World::new(true);
    w.store.reset_counts();
    let req = signed_post(
        &path("t9", "s9"),
        &notice("rev_2").to_string(),
        "n1",
        "seller-key-1",
        NOW_S,
    );
    let (s, body, _) = w.send(req);
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(
        w.store.total_ops(),
        w.store.count(StoreOp::Get),
        "reads only"
    );
    assert_eq!(w.seller.capability_calls.get(), 0);
}
