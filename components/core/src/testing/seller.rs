//! A scripted seller.

use crate::foundation::transport::TransportError;
use crate::records::seller::Seller;
use crate::seller::port::{CallFailure, SellerCalls};
use serde_json::{Value, json};
use std::cell::RefCell;
use std::collections::VecDeque;

/// Scripted seller answers; records every call's tool and arguments.
/// `get_adcp_capabilities` is answered from `capabilities` (a conformant declaration
/// unless replaced) and counted apart, outside the script.
#[derive(Default)]
pub struct FakeSeller {
    pub answers: RefCell<VecDeque<Result<Value, CallFailure>>>,
    pub calls: RefCell<Vec<(String, Value)>>,
    pub capabilities: RefCell<Option<Result<Value, CallFailure>>>,
    pub capability_calls: std::cell::Cell<u32>,
}

/// What a conformant AdCP 3.1 seller declares.
pub fn conformant_capabilities() -> Value {
    json!({
        "adcp": {"major_versions": [3],
                 "idempotency": {"supported": true, "replay_ttl_seconds": 86400}},
        "supported_protocols": ["media_buy"],
        "webhook_signing": {"supported": true, "legacy_hmac_fallback": true}
    })
}

impl FakeSeller {
    pub fn answer(&self, a: Result<Value, CallFailure>) {
        self.answers.borrow_mut().push_back(a);
    }
}

impl SellerCalls for FakeSeller {
    async fn call(&self, _: &Seller, tool: &str, arguments: Value) -> Result<Value, CallFailure> {
        if tool == "get_adcp_capabilities" {
            self.capability_calls.set(self.capability_calls.get() + 1);
            return self
                .capabilities
                .borrow()
                .clone()
                .unwrap_or_else(|| Ok(conformant_capabilities()));
        }
        self.calls.borrow_mut().push((tool.to_string(), arguments));
        self.answers
            .borrow_mut()
            .pop_front()
            .unwrap_or(Err(CallFailure::Transport(TransportError::Connect(
                "no answer scripted".into(),
            ))))
    }
}
