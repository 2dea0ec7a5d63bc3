//! Sample operations and observations.

use crate::model::operation::{DeliveryLedger, Observation, Operation, Source};
use crate::model::status::{OperationStatus, TaskStatus};
use crate::model::task::TaskKind;
use serde_json::json;

pub fn sample(op: &str) -> Operation {
    Operation {
        operation_id: op.into(),
        tenant_id: "t1".into(),
        seller_id: "s1".into(),
        task: TaskKind::CreateMediaBuy,
        arguments: json!({"idempotency_key": "k-0123456789abcdef"}),
        idempotency_key: "k-0123456789abcdef".into(),
        task_id: None,
        context_id: None,
        status: OperationStatus::PendingDispatch,
        result: None,
        error: None,
        message: None,
        created_at_ms: 1_000,
        updated_at_ms: 1_000,
        next_poll_at_ms: Some(1_000),
        deadline_at_ms: 86_401_000,
        seller_at_ms: None,
        webhook: None,
        request_digest: None,
        dispatch_attempts: 0,
        outcome_unknown: false,
        deliveries: DeliveryLedger::default(),
        governance: None,
        cancel: None,
        linked_from: None,
        version: 0,
    }
}

pub fn obs(status: TaskStatus, task_id: Option<&str>) -> Observation {
    Observation {
        source: Source::Webhook,
        status,
        at_ms: None,
        task_id: task_id.map(str::to_string),
        context_id: None,
        message: None,
        result: None,
        error: None,
        delivery: None,
    }
}
