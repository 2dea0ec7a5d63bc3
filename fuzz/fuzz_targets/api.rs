//! The buyer API router (`api::handle`: tenants, sellers, callback, operations, sweep,
//! metrics, health) on an in-memory store, driven by a script of requests.
//!
//! Input: one control byte, then up to eight sections separated by `----` lines. A section
//! is a request in the seed text format, or a line that scripts the seller or the clock:
//! `@seller <JSON object>` (its next tool answer), `@seller-error <recovery> <CODE>`,
//! `@seller-timeout`, `@advance <ms>`. In requests `$ADMIN`, `$TENANT`, `$SWEEP`,
//! `$METRICS` stand for the credentials and `$OP` for the last `operation_id` answered.
//! Before the script runs, tenant `Fuzz` and seller `s1` exist; control bits 0-1 pick the
//! seller's webhook mode (none, rfc9421, hmac, bearer); bit 2 makes buyer-notification
//! deliveries succeed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orchestrator_core::api::{ApiConfig, Env, handle};
use orchestrator_core::config::SweepConfig;
use orchestrator_core::foundation::log::NoLog;
use orchestrator_core::foundation::seal::SealingKey;
use orchestrator_core::foundation::store::MemoryStore;
use orchestrator_core::foundation::transport::TransportError;
use orchestrator_core::records::seller::Seller;
use orchestrator_core::seller::port::CallFailure;
use orchestrator_core::seller::port::Recovery;
use orchestrator_core::seller::port::SellerCalls;
use orchestrator_core::seller::port::SellerError;
use orchestrator_fuzz::{
    CounterEntropy, NOW_MS, Raw, ScriptedTransport, StepClock, assert_error_contract, block_on,
    first_line, sections,
};
use serde_json::{Value, json};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

const SEAL_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const ADMIN: &str = "admin-key-0123456789";
const SWEEP: &str = "sweep-token-0123456789";
const METRICS: &str = "metrics-token-0123456789";

/// The seller's answers, in order; a connect failure when none is left.
#[derive(Default)]
struct ScriptedSeller(RefCell<VecDeque<Result<Value, CallFailure>>>);

impl SellerCalls for ScriptedSeller {
    async fn call(&self, _: &Seller, _: &str, _: Value) -> Result<Value, CallFailure> {
        self.0.borrow_mut().pop_front().unwrap_or_else(|| {
            Err(CallFailure::Transport(TransportError::Connect(
                "no scripted answer".into(),
            )))
        })
    }
}

fn capabilities() -> Value {
    json!({"adcp": {"major_versions": [3], "supported_versions": ["3.0", "3.1"],
                    "idempotency": {"supported": true, "replay_ttl_seconds": 86400}},
           "supported_protocols": ["media_buy"],
           "webhook_signing": {"supported": true, "legacy_hmac_fallback": true}})
}

fn replace_all(data: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    out
}

struct World {
    store: MemoryStore,
    clock: StepClock,
    entropy: CounterEntropy,
    config: ApiConfig,
    seller: ScriptedSeller,
    transport: ScriptedTransport,
    sweep: SweepConfig,
    notifications_succeed: bool,
}

impl World {
    fn send(&self, req: http::Request<Vec<u8>>) -> http::Response<Vec<u8>> {
        if self.notifications_succeed {
            for _ in 0..4 {
                self.transport.push(200, &[], b"");
            }
        }
        let env = Env {
            store: &self.store,
            clock: &self.clock,
            entropy: &self.entropy,
            config: &self.config,
            log: &NoLog,
            calls: &self.seller,
            transport: &self.transport,
            sweep: &self.sweep,
        };
        let resp = block_on(handle(&env, req));
        self.transport.replies.borrow_mut().clear();
        resp
    }

    fn json(&self, method: &str, path: &str, key: &str, body: Value) -> (u16, Value) {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(body.to_string().into_bytes())
            .expect("a valid request");
        let resp = self.send(req);
        let v = serde_json::from_slice(resp.body()).unwrap_or(Value::Null);
        (resp.status().as_u16(), v)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, script)) = data.split_first() else {
        return;
    };
    let w = World {
        store: MemoryStore::new(),
        clock: StepClock(Cell::new(NOW_MS)),
        entropy: CounterEntropy(Cell::new(42)),
        config: ApiConfig {
            admin_api_key: ADMIN.into(),
            public_base_url: "https://orch.example".into(),
            sweep_token: SWEEP.into(),
            metrics_token: METRICS.into(),
            sealing: SealingKey::from_hex(SEAL_KEY).expect("a valid key"),
            allow_private_networks: false,
        },
        seller: ScriptedSeller::default(),
        transport: ScriptedTransport::default(),
        sweep: SweepConfig {
            budget_ms: 60_000,
            ..SweepConfig::default()
        },
        notifications_succeed: control & 4 != 0,
    };
    let (s, tenant) = w.json("POST", "/api/v1/tenants", ADMIN, json!({"name": "Fuzz"}));
    assert_eq!(s, 201, "tenant setup: {tenant}");
    let tenant_key = tenant["api_key"].as_str().expect("an api key").to_string();
    let mut seller =
        json!({"mcp_url": "https://seller.example/mcp", "credentials": "seller-token-123"});
    if let Some(mode) =
        [None, Some("rfc9421"), Some("hmac"), Some("bearer")][usize::from(control & 3)]
    {
        seller["webhook_mode"] = json!(mode);
    }
    w.seller.0.borrow_mut().push_back(Ok(capabilities()));
    let (s, body) = w.json("PUT", "/api/v1/sellers/s1", &tenant_key, seller);
    assert_eq!(s, 201, "seller setup: {body}");

    let mut last_op = String::from("op-none");
    for section in sections(script, 8) {
        let (first, rest) = first_line(section);
        if let Some(arg) = first.strip_prefix(b"@seller ") {
            let answer = [arg, b"\n", rest].concat();
            if let Ok(v @ Value::Object(_)) = serde_json::from_slice::<Value>(&answer) {
                w.seller.0.borrow_mut().push_back(Ok(v));
            }
            continue;
        }
        if let Some(arg) = first.strip_prefix(b"@seller-error ") {
            let arg = String::from_utf8_lossy(arg);
            let (recovery, code) = arg.split_once(' ').unwrap_or((&arg, "SERVICE_UNAVAILABLE"));
            let recovery = match recovery {
                "correctable" => Recovery::Correctable,
                "terminal" => Recovery::Terminal,
                _ => Recovery::Transient,
            };
            w.seller
                .0
                .borrow_mut()
                .push_back(Err(CallFailure::Seller(SellerError {
                    code: code.to_string(),
                    message: "scripted".into(),
                    recovery,
                    retry_after_s: None,
                    adcp: true,
                })));
            continue;
        }
        if first == b"@seller-timeout" {
            w.seller
                .0
                .borrow_mut()
                .push_back(Err(CallFailure::Transport(TransportError::Timeout(
                    "scripted".into(),
                ))));
            continue;
        }
        if let Some(arg) = first.strip_prefix(b"@advance ") {
            let ms: u64 = String::from_utf8_lossy(arg).trim().parse().unwrap_or(0);
            let c = &w.clock.0;
            c.set(c.get() + ms.min(30 * 86_400_000));
            continue;
        }
        let mut text = section.to_vec();
        for (from, to) in [
            (&b"$ADMIN"[..], ADMIN.as_bytes()),
            (b"$TENANT", tenant_key.as_bytes()),
            (b"$SWEEP", SWEEP.as_bytes()),
            (b"$METRICS", METRICS.as_bytes()),
            (b"$OP", last_op.as_bytes()),
        ] {
            text = replace_all(&text, from, to);
        }
        let Some(req) = Raw::parse(&text).to_request("/") else {
            continue;
        };
        let resp = w.send(req);
        assert_error_contract(&resp);
        if let Ok(v) = serde_json::from_slice::<Value>(resp.body())
            && let Some(op) = v["operation_id"].as_str()
        {
            last_op = op.to_string();
        }
    }
});
