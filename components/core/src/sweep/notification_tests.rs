use super::*;
use crate::config::SweepConfig;
use crate::foundation::clock::Clock;
use crate::foundation::cx::Cx;
use crate::foundation::keys;
use crate::foundation::log::NoLog;
use crate::foundation::seal::SealingKey;
use crate::foundation::store::MemoryStore;
use crate::foundation::store::{get_json, set_json};
use crate::lifecycle::effects;
use crate::model::status::TaskStatus;
use crate::records::journal::{self, EntryKind};
use crate::records::notify;
use crate::records::seller;
use crate::seller::port::{CallFailure, SellerCalls};
use crate::testing::{ScriptedTransport, SeededEntropy};
use futures::executor::block_on;
use serde_json::Value;
use std::cell::Cell;

struct Clock2(Cell<u64>);
impl Clock for Clock2 {
    fn now_ms(&self) -> u64 {
        self.0.get()
    }
}

struct NoSeller;
impl SellerCalls for NoSeller {
    async fn call(&self, _: &seller::Seller, _: &str, _: Value) -> Result<Value, CallFailure> {
        Err(CallFailure::Transport(
            crate::foundation::transport::TransportError::Connect("none".into()),
        ))
    }
}

#[test]
fn queued_notifications_are_delivered_by_the_sweep_after_the_receiver_returns() {
    let store = MemoryStore::new();
    let clock = Clock2(Cell::new(1_000_000_000));
    let sealing =
        SealingKey::from_hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
            .unwrap();
    let e = SeededEntropy::new(1);
    let secret = notify::new_secret(&e);
    let cb = notify::Callback {
        url: "https://buyer.example/hooks".into(),
        secret: sealing.seal(&e, &notify::secret_purpose("t1"), secret.as_bytes()),
        enabled: true,
        disabled_reason: None,
    };
    block_on(set_json(&store, &keys::callback("t1"), &cb)).unwrap();
    let op = crate::testing::sample("op1");
    block_on(journal::create(&store, &clock, &op)).unwrap();
    let obs = crate::testing::obs(TaskStatus::Completed, Some("task_1"));
    let id = block_on(effects::record(
        Cx::new(&store, &clock, &NoLog),
        "test",
        "op1",
        None,
        EntryKind::Observed {
            observation: Box::new(obs),
        },
    ))
    .unwrap()
    .notification
    .unwrap();
    let transport = ScriptedTransport::default();
    let config = SweepConfig::default();
    let env = SweepEnv {
        store: &store,
        clock: &clock,
        entropy: &e,
        log: &NoLog,
        sealing: &sealing,
        calls: &NoSeller,
        transport: &transport,
        config: &config,
    };
    transport.reply(503, "");
    clock.0.set(clock.0.get() + 60_000);
    let report = block_on(tick(&env, "t", 0)).unwrap();
    assert_eq!(
        transport.requests.borrow().len(),
        1,
        "first attempt by the sweep: {report:?} {:?}",
        store.keys()
    );
    transport.reply(204, "");
    for _ in 0..5 {
        clock.0.set(clock.0.get() + 60_000);
        block_on(tick(&env, "t", 0)).unwrap();
    }
    assert_eq!(
        transport.requests.borrow().len(),
        2,
        "one retry, then delivered"
    );
    let n: notify::Notification = block_on(get_json(&store, &keys::notification(&id)))
        .unwrap()
        .unwrap();
    assert_eq!(n.state, notify::DeliveryState::Delivered);
}
