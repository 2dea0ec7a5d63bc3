//! Buyer notifications: every status change of a tenant's operations, sent from a store outbox
//! to the tenant's callback URL, signed with Standard Webhooks. The outbox entry is written
//! first (idempotently: its id derives from the journal entry), so nothing is lost while the
//! callback is down. Retries follow [`RETRY_SCHEDULE`]; a 2xx stops, a 410 disables the
//! callback, and exhausting the schedule records the failure.

use crate::foundation::clock::{Clock, Entropy};
use crate::foundation::keys;
use crate::foundation::seal::{Sealed, SealingKey, digest_hex};
use crate::foundation::store::{Store, StoreResult, get_json, set_json};
use crate::foundation::transport::{Limits, Transport};
use crate::schedule::backoff::Schedule;
use crate::schedule::lease::{self, Claim, LeaseConfig};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

pub const RETRY_SCHEDULE: Schedule = Schedule::BUYER_NOTIFICATIONS;

/// Standard Webhooks' tolerance for the timestamp, used by receivers.
pub const TOLERANCE_S: u64 = 300;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Callback {
    pub url: String,
    /// The `whsec_…` secret, sealed.
    pub secret: Sealed,
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
}

impl Callback {
    /// Which registration this is: a new `PUT` seals its secret afresh, so it differs.
    pub fn identity(&self) -> String {
        let sealed = serde_json::to_vec(&self.secret).unwrap_or_default();
        digest_hex(&[self.url.as_bytes(), b"\n", &sealed].concat())
    }
}

/// Whether the buyer's receiver answered 410 Gone to this registration. Kept beside it at
/// `callback:{tenant}:gone`, so marking it never rewrites a registration the buyer may have
/// replaced meanwhile.
pub async fn gone(store: &impl Store, tenant: &str, callback: &Callback) -> StoreResult<bool> {
    let marked = store.get(&keys::callback_gone(tenant)).await?;
    Ok(marked.is_some_and(|m| m == callback.identity().as_bytes()))
}

pub fn secret_purpose(tenant: &str) -> String {
    format!("callback-secret:{tenant}")
}

/// A fresh Standard Webhooks secret: `whsec_` and 32 random bytes in base64.
pub fn new_secret(entropy: &dyn Entropy) -> String {
    let mut b = [0u8; 32];
    entropy.fill(&mut b);
    format!("whsec_{}", B64.encode(b))
}

/// Parses a `whsec_…` secret into its key bytes (24–64 bytes, per the spec).
pub fn secret_key(secret: &str) -> Option<Vec<u8>> {
    let key = B64.decode(secret.strip_prefix("whsec_")?).ok()?;
    (24..=64).contains(&key.len()).then_some(key)
}

/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.
pub fn sign(key: &[u8], msg_id: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(format!("{msg_id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Delivered,
    /// Given up (schedule exhausted, callback gone or disabled).
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub id: String,
    pub tenant_id: String,
    pub operation_id: String,
    pub body: Value,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Stable per journal entry, so re-running the enqueuing writer cannot make a second one.
pub fn notification_id(operation_id: &str, seq: u64) -> String {
    format!("ntf_{operation_id}_{seq}")
}

/// Stores a notification unless the tenant has no enabled callback or it is stored already.
/// Returns it as stored.
pub async fn enqueue(
    store: &impl Store,
    clock: &dyn Clock,
    tenant_id: &str,
    operation_id: &str,
    seq: u64,
    body: Value,
) -> StoreResult<Option<Notification>> {
    let callback: Option<Callback> = get_json(store, &keys::callback(tenant_id)).await?;
    if !callback.is_some_and(|c| c.enabled) {
        return Ok(None);
    }
    let id = notification_id(operation_id, seq);
    // Effects are re-run until the snapshot moves past their entry: never queue twice, and
    // never revive a delivered notification.
    if let Some(existing) = get_json::<Notification>(store, &keys::notification(&id)).await? {
        return Ok(Some(existing));
    }
    let n = Notification {
        id,
        tenant_id: tenant_id.to_string(),
        operation_id: operation_id.to_string(),
        body,
        state: DeliveryState::Pending,
        attempts: 0,
        next_attempt_at_ms: Some(clock.now_ms()),
        last_error: None,
    };
    set_json(store, &keys::notification(&n.id), &n).await?;
    Ok(Some(n))
}

/// Whether notification `id` exists and is still to be delivered.
pub async fn pending(store: &impl Store, id: &str) -> StoreResult<bool> {
    let n: Option<Notification> = get_json(store, &keys::notification(id)).await?;
    Ok(n.is_some_and(|n| n.state == DeliveryState::Pending))
}

/// Makes one delivery attempt if the notification is due, and records the result.
pub async fn attempt(
    store: &impl Store,
    clock: &dyn Clock,
    transport: &impl Transport,
    sealing: &SealingKey,
    id: &str,
) -> StoreResult<Option<Notification>> {
    let Some(mut n) = get_json::<Notification>(store, &keys::notification(id)).await? else {
        return Ok(None);
    };
    let now = clock.now_ms();
    if n.state != DeliveryState::Pending || n.next_attempt_at_ms.is_some_and(|t| t > now) {
        return Ok(Some(n));
    }
    // The record may say pending after it was settled: a settler that read it absent wrote
    // it back as queued (`enqueue` cannot be atomic). The final marker is never cleared.
    if let Some(state) = final_state(store, id).await? {
        n.state = state;
        n.next_attempt_at_ms = None;
        return Ok(Some(n));
    }
    let callback: Option<Callback> = get_json(store, &keys::callback(&n.tenant_id)).await?;
    let callback = match callback {
        Some(c) if c.enabled && !gone(store, &n.tenant_id, &c).await? => Some(c),
        _ => None,
    };
    let key = callback.as_ref().and_then(|c| {
        let secret = sealing
            .open_string(&secret_purpose(&n.tenant_id), &c.secret)
            .ok()?;
        Some((c.url.clone(), secret_key(&secret)?))
    });
    let Some((url, key)) = key else {
        n.state = DeliveryState::Failed;
        n.last_error = Some("callback missing or disabled".into());
        n.next_attempt_at_ms = None;
        record(store, &n).await?;
        return Ok(Some(n));
    };
    let body = serde_json::to_vec(&n.body).unwrap_or_default();
    let ts = now / 1000;
    let req = http::Request::post(&url)
        .header("content-type", "application/json")
        .header("webhook-id", &n.id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sign(&key, &n.id, ts, &body))
        .body(body);
    n.attempts += 1;
    // `Err((message, retry))`: whether the schedule may still retry this failure.
    let outcome: Result<(), (String, bool)> = match req {
        Err(e) => Err((format!("invalid callback request: {e}"), false)),
        Ok(req) => match transport.send(req, Limits::CALLBACK).await {
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) if resp.status() == http::StatusCode::GONE => {
                if let Some(c) = &callback {
                    let marker = keys::callback_gone(&n.tenant_id);
                    store.set(&marker, c.identity().as_bytes()).await?;
                }
                Err(("callback answered 410 Gone; disabled".to_string(), false))
            }
            Ok(resp) => Err((format!("callback answered {}", resp.status()), true)),
            Err(e) => Err((e.to_string(), true)),
        },
    };
    match outcome {
        Ok(()) => {
            n.state = DeliveryState::Delivered;
            n.next_attempt_at_ms = None;
            n.last_error = None;
        }
        Err((e, retry)) => {
            n.last_error = Some(e);
            match RETRY_SCHEDULE
                .next_attempt_at_ms(n.attempts, now)
                .filter(|_| retry)
            {
                Some(at) => n.next_attempt_at_ms = Some(at),
                None => {
                    n.state = DeliveryState::Failed;
                    n.next_attempt_at_ms = None;
                }
            }
        }
    }
    record(store, &n).await?;
    Ok(Some(n))
}

/// One attempt, under the notification's lease (the scope the sweep holds while it retries
/// one), so the webhook component's first attempt and a sweep never both send it. `Ok(None)`
/// also when someone else holds it: they attempt it.
pub async fn attempt_alone(
    store: &impl Store,
    clock: &dyn Clock,
    lease_cfg: &LeaseConfig,
    transport: &impl Transport,
    sealing: &SealingKey,
    id: &str,
) -> StoreResult<Option<Notification>> {
    let Claim::Held(held) = lease::claim_operation(store, lease_cfg, id, clock.now_ms()).await?
    else {
        return Ok(None);
    };
    let attempted = attempt(store, clock, transport, sealing, id).await;
    // A release that fails leaves a counter that lapses with its slot.
    let _ = held.release(store).await;
    attempted
}

/// Writes of an attempt's result before giving up on it.
const RECORD_TRIES: usize = 3;

/// Records an attempt's result. The request has reached the callback by now, so a store
/// failure here would mean sending it again: each write (a `set`, idempotent) is retried in
/// place. A final state is marked first, in a key no enqueuer writes. Only a crash between
/// the send and the marker resends, with the same `webhook-id`, which receivers
/// de-duplicate.
async fn record(store: &impl Store, n: &Notification) -> StoreResult<()> {
    let settled = match n.state {
        DeliveryState::Pending => None,
        DeliveryState::Delivered => Some(DELIVERED),
        DeliveryState::Failed => Some(FAILED),
    };
    if let Some(marker) = settled {
        let key = keys::notification_final(&n.id);
        retried(|| store.set(&key, marker)).await?;
    }
    let key = keys::notification(&n.id);
    retried(|| set_json(store, &key, n)).await
}

/// A write, tried up to [`RECORD_TRIES`] times in place.
async fn retried<F: Future<Output = StoreResult<()>>>(
    mut write: impl FnMut() -> F,
) -> StoreResult<()> {
    let mut tries = 1;
    loop {
        match write().await {
            Err(_) if tries < RECORD_TRIES => tries += 1,
            written => return written,
        }
    }
}

const DELIVERED: &[u8] = b"delivered";
const FAILED: &[u8] = b"failed";

/// The state notification `id` was settled in, if it was.
async fn final_state(store: &impl Store, id: &str) -> StoreResult<Option<DeliveryState>> {
    Ok(
        match store.get(&keys::notification_final(id)).await?.as_deref() {
            Some(DELIVERED) => Some(DeliveryState::Delivered),
            Some(_) => Some(DeliveryState::Failed),
            None => None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer vectors of the Standard Webhooks reference libraries
    /// (../shared/reference/webhooks-and-anchors.md §1.5, SW-1 and SW-2).
    #[test]
    fn standard_webhooks_known_answers() {
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            sign(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        let key = secret_key("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        assert_eq!(
            sign(
                &key,
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1649367553,
                br#"{"email":"test@example.com","username":"test_user"}"#
            ),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn secrets_must_be_whsec_base64_of_24_to_64_bytes() {
        assert!(secret_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_none());
        assert!(secret_key("whsec_!!!").is_none());
        assert!(secret_key(&format!("whsec_{}", B64.encode([0u8; 16]))).is_none());
        let e = crate::testing::SeededEntropy::new(1);
        assert_eq!(secret_key(&new_secret(&e)).unwrap().len(), 32);
    }
}

#[cfg(test)]
mod delivery_tests {
    use super::*;
    use crate::foundation::clock::FixedClock;
    use crate::foundation::store::MemoryStore;
    use crate::foundation::transport::TransportError;
    use crate::testing::ScriptedTransport;
    use crate::testing::SeededEntropy;
    use futures::executor::block_on;
    use serde_json::json;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn setup(s: &MemoryStore, sealing: &SealingKey) -> String {
        let e = SeededEntropy::new(9);
        let secret = new_secret(&e);
        let cb = Callback {
            url: "https://buyer.example/hooks".into(),
            secret: sealing.seal(&e, &secret_purpose("t1"), secret.as_bytes()),
            enabled: true,
            disabled_reason: None,
        };
        block_on(set_json(s, &keys::callback("t1"), &cb)).unwrap();
        secret
    }

    #[test]
    fn delivered_once_signed_and_verifiable() {
        let s = MemoryStore::new();
        let sealing = SealingKey::from_hex(KEY).unwrap();
        let secret = setup(&s, &sealing);
        let t = ScriptedTransport::default();
        t.reply(204, "");
        block_on(async {
            let n = enqueue(
                &s,
                &FixedClock(10_000),
                "t1",
                "op1",
                3,
                json!({"status": "completed"}),
            )
            .await
            .unwrap()
            .unwrap();
            let done = attempt(&s, &FixedClock(10_000), &t, &sealing, &n.id)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(done.state, DeliveryState::Delivered);
            // Delivered notifications are not sent again.
            attempt(&s, &FixedClock(99_000), &t, &sealing, &n.id)
                .await
                .unwrap();
        });
        let reqs = t.requests.borrow();
        assert_eq!(reqs.len(), 1);
        let r = &reqs[0];
        let h = |k: &str| r.headers()[k].to_str().unwrap().to_string();
        assert_eq!(h("webhook-id"), "ntf_op1_3");
        assert_eq!(h("webhook-timestamp"), "10");
        let expected = sign(&secret_key(&secret).unwrap(), "ntf_op1_3", 10, r.body());
        assert_eq!(h("webhook-signature"), expected);
    }

    #[test]
    fn a_store_failure_recording_a_delivery_does_not_send_it_again() {
        let s = MemoryStore::new();
        let sealing = SealingKey::from_hex(KEY).unwrap();
        setup(&s, &sealing);
        let t = ScriptedTransport::default();
        let clock = FixedClock(10_000);
        block_on(async {
            // The attempt reads the notification, its final marker, the callback and its
            // gone marker, sends, then writes the marker (call 5) and the result (call 6):
            // each write fails once, for a notification of its own.
            for (seq, failing_call) in [(3, 5), (4, 6)] {
                let n = enqueue(&s, &clock, "t1", "op1", seq, json!({}))
                    .await
                    .unwrap()
                    .unwrap();
                t.reply(204, "");
                s.fail_nth_call(failing_call);
                let done = attempt(&s, &clock, &t, &sealing, &n.id)
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(done.state, DeliveryState::Delivered);
                attempt(&s, &FixedClock(99_000), &t, &sealing, &n.id)
                    .await
                    .unwrap();
            }
        });
        assert_eq!(t.requests.borrow().len(), 2, "each sent once");
    }

    /// Two settlers of one change both read the notification absent; one queues, sends and
    /// records it delivered before the other's write of it as queued lands. It stays sent.
    #[test]
    fn a_late_enqueuer_cannot_revive_a_delivered_notification() {
        let s = MemoryStore::new();
        let sealing = SealingKey::from_hex(KEY).unwrap();
        setup(&s, &sealing);
        let t = ScriptedTransport::default();
        t.reply(204, "");
        let clock = FixedClock(10_000);
        block_on(async {
            let queued = enqueue(&s, &clock, "t1", "op1", 3, json!({}))
                .await
                .unwrap()
                .unwrap();
            let sent = attempt(&s, &clock, &t, &sealing, &queued.id).await.unwrap();
            assert_eq!(sent.unwrap().state, DeliveryState::Delivered);
            // The other settler's write, from its read before the delivery.
            set_json(&s, &keys::notification(&queued.id), &queued)
                .await
                .unwrap();
            let again = attempt(&s, &FixedClock(20_000), &t, &sealing, &queued.id)
                .await
                .unwrap();
            assert_eq!(again.unwrap().state, DeliveryState::Delivered);
        });
        assert_eq!(t.requests.borrow().len(), 1, "sent once");
    }

    #[test]
    fn a_first_attempt_sends_nothing_while_a_sweep_holds_the_notification() {
        let s = MemoryStore::new();
        let sealing = SealingKey::from_hex(KEY).unwrap();
        setup(&s, &sealing);
        let t = ScriptedTransport::default();
        t.reply(204, "");
        let (clock, cfg) = (FixedClock(10_000), LeaseConfig::default());
        block_on(async {
            let n = enqueue(&s, &clock, "t1", "op1", 3, json!({}))
                .await
                .unwrap()
                .unwrap();
            let sweep = lease::claim_operation(&s, &cfg, &n.id, 10_000)
                .await
                .unwrap();
            let held = sweep.lease().unwrap();
            let first = attempt_alone(&s, &clock, &cfg, &t, &sealing, &n.id).await;
            assert_eq!(first.unwrap(), None);
            assert!(t.requests.borrow().is_empty());
            held.release(&s).await.unwrap();
            let sent = attempt_alone(&s, &clock, &cfg, &t, &sealing, &n.id).await;
            assert_eq!(sent.unwrap().unwrap().state, DeliveryState::Delivered);
        });
        assert_eq!(t.requests.borrow().len(), 1);
    }

    #[test]
    fn retried_on_the_schedule_then_given_up() {
        let s = MemoryStore::new();
        let sealing = SealingKey::from_hex(KEY).unwrap();
        setup(&s, &sealing);
        let t = ScriptedTransport::default();
        block_on(async {
            let n = enqueue(&s, &FixedClock(0), "t1", "op1", 2, json!({}))
                .await
                .unwrap()
                .unwrap();
            let mut now = 0;
            for (i, delay) in RETRY_SCHEDULE.0.iter().enumerate() {
                t.fail(TransportError::Connect("down".into()));
                let n = attempt(&s, &FixedClock(now), &t, &sealing, &n.id)
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(
                    (n.state, n.attempts),
                    (DeliveryState::Pending, i as u32 + 1)
                );
                assert_eq!(n.next_attempt_at_ms, Some(now + delay * 1000));
                // Not due yet: no attempt.
                attempt(&s, &FixedClock(now + delay * 1000 - 1), &t, &sealing, &n.id)
                    .await
                    .unwrap();
                now += delay * 1000;
            }
            t.reply(500, "");
            let n = attempt(&s, &FixedClock(now), &t, &sealing, &n.id)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(n.state, DeliveryState::Failed);
            assert_eq!(t.requests.borrow().len(), RETRY_SCHEDULE.0.len() + 1);
        });
    }

    #[test]
    fn gone_disables_the_callback_and_later_changes_are_not_queued() {
        let s = MemoryStore::new();
        let sealing = SealingKey::from_hex(KEY).unwrap();
        setup(&s, &sealing);
        let t = ScriptedTransport::default();
        t.reply(410, "");
        block_on(async {
            let n = enqueue(&s, &FixedClock(0), "t1", "op1", 2, json!({}))
                .await
                .unwrap()
                .unwrap();
            let n = attempt(&s, &FixedClock(0), &t, &sealing, &n.id)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(n.state, DeliveryState::Failed);
            let cb: Callback = get_json(&s, &keys::callback("t1")).await.unwrap().unwrap();
            assert!(gone(&s, "t1", &cb).await.unwrap());
            // Later changes are not sent to the receiver that is gone.
            let later = enqueue(&s, &FixedClock(1), "t1", "op1", 3, json!({}))
                .await
                .unwrap()
                .unwrap();
            let later = attempt(&s, &FixedClock(1), &t, &sealing, &later.id)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(later.state, DeliveryState::Failed);
            assert_eq!(t.requests.borrow().len(), 1);
        });
    }

    /// The buyer replaces its callback while an attempt to the old one is answered 410: the
    /// new registration stays as the buyer wrote it, and is used.
    #[test]
    fn a_410_never_overwrites_a_registration_replaced_meanwhile() {
        struct ReplacedThenGone<'a>(&'a MemoryStore, &'a SealingKey);
        impl Transport for ReplacedThenGone<'_> {
            async fn send(
                &self,
                _: crate::foundation::transport::OutboundRequest,
                _: Limits,
            ) -> Result<crate::foundation::transport::InboundResponse, TransportError> {
                let e = SeededEntropy::new(77);
                let fresh = Callback {
                    url: "https://buyer.example/new-hooks".into(),
                    secret: self
                        .1
                        .seal(&e, &secret_purpose("t1"), new_secret(&e).as_bytes()),
                    enabled: true,
                    disabled_reason: None,
                };
                set_json(self.0, &keys::callback("t1"), &fresh)
                    .await
                    .unwrap();
                Ok(http::Response::builder()
                    .status(410)
                    .body(Vec::new())
                    .unwrap())
            }
        }
        let s = MemoryStore::new();
        let sealing = SealingKey::from_hex(KEY).unwrap();
        setup(&s, &sealing);
        block_on(async {
            let n = enqueue(&s, &FixedClock(0), "t1", "op1", 2, json!({}))
                .await
                .unwrap()
                .unwrap();
            attempt(
                &s,
                &FixedClock(0),
                &ReplacedThenGone(&s, &sealing),
                &sealing,
                &n.id,
            )
            .await
            .unwrap();
            let cb: Callback = get_json(&s, &keys::callback("t1")).await.unwrap().unwrap();
            assert_eq!(cb.url, "https://buyer.example/new-hooks");
            assert!(cb.enabled);
            assert!(
                !gone(&s, "t1", &cb).await.unwrap(),
                "only the old one is gone"
            );
        });
    }
}
