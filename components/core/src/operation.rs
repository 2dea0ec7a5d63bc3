//! The operation record: one buyer request to one seller, from storage to outcome.

use crate::state_machine::{self, Event, Outcome};
use crate::status::{OperationStatus, TaskStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One AdCP task the orchestrator is responsible for.
///
/// It is the fold of the operation's journal ([`crate::journal`]): `version` is the
/// sequence number of the last entry folded in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    pub operation_id: String,
    pub tenant_id: String,
    pub seller_id: String,
    /// The AdCP tool, e.g. `create_media_buy`.
    pub task: String,
    /// The tool arguments exactly as (re)sent to the seller, including our
    /// `idempotency_key`, `context` and `push_notification_config`.
    pub arguments: Value,
    /// The AdCP request `idempotency_key`: the same on every resend of this operation.
    pub idempotency_key: String,
    /// The seller's task handle, once the seller returned or announced one.
    pub task_id: Option<String>,
    pub context_id: Option<String>,
    pub status: OperationStatus,
    /// The seller's result payload (e.g. `CreateMediaBuySuccess` with `media_buy_id`).
    pub result: Option<Value>,
    pub error: Option<OperationError>,
    /// The seller's last human-readable message (untrusted text).
    pub message: Option<String>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// When the sweep should next look at it (poll, redispatch, deadline), if ever.
    pub next_poll_at_ms: Option<u64>,
    pub deadline_at_ms: u64,
    /// The seller timestamp of the last applied seller status, for ordering.
    pub seller_at_ms: Option<u64>,
    /// How the seller was asked to announce progress, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookRegistration>,
    /// Digest of the buyer's API request, to tell a retry from a different request that
    /// reuses its `Idempotency-Key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_digest: Option<String>,
    pub version: u64,
}

/// The webhook authentication a seller must use for one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookMode {
    /// RFC 9421 signatures with the seller's published keys (AdCP's default).
    Rfc9421,
    /// Legacy `X-ADCP-Signature` HMAC-SHA256 with a per-operation secret.
    Hmac,
    /// `Authorization: Bearer` with a per-operation secret.
    Bearer,
}

/// What we registered in `push_notification_config` for one operation. The token and
/// secret are sealed ([`crate::seal`]); they are re-inserted into the arguments only when
/// the request is sent, so stored arguments hold no secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookRegistration {
    pub url: String,
    pub mode: WebhookMode,
    /// The `token` the seller echoes in every payload.
    pub token: crate::seal::Sealed,
    /// The legacy HMAC or Bearer credential (`authentication.credentials`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<crate::seal::Sealed>,
}

/// Why an operation failed or what went wrong last, with AdCP's error `code` when the
/// seller gave one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationError {
    pub code: String,
    pub message: String,
}

/// Where an observation came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The seller's answer to our `tools/call`.
    Dispatch,
    /// A verified seller webhook.
    Webhook,
    /// A `get_task_status` (or equivalent) answer.
    Poll,
    /// Found through reconciliation (`list_tasks`, `get_media_buys`).
    Reconcile,
}

/// A seller status report, whatever channel carried it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub source: Source,
    pub status: TaskStatus,
    /// The seller's timestamp for this status, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<OperationError>,
}

impl Operation {
    /// Folds a seller observation in. Returns the state machine's verdict; the record
    /// changes only as the verdict says (plus binding a first `task_id`/`context_id`,
    /// which is identity, not state).
    pub fn observe(&mut self, obs: &Observation, recorded_at_ms: u64) -> Outcome {
        if let (Some(bound), Some(seen)) = (&self.task_id, &obs.task_id)
            && bound != seen
        {
            // "A different explicit AdCP task_id for the same operation is a protocol conflict."
            return Outcome::Conflict;
        }
        if self.task_id.is_none() {
            self.task_id = obs.task_id.clone();
        }
        if self.context_id.is_none() {
            self.context_id = obs.context_id.clone();
        }
        let outcome = state_machine::decide(
            self.status,
            self.seller_at_ms,
            Event::Seller {
                status: obs.status,
                at_ms: obs.at_ms,
            },
        );
        if let Some(status) = outcome.new_status() {
            self.status = status;
            self.updated_at_ms = recorded_at_ms;
            if obs.at_ms.is_some() {
                self.seller_at_ms = obs.at_ms;
            }
            if obs.message.is_some() {
                self.message = obs.message.clone();
            }
            if obs.result.is_some() {
                self.result = obs.result.clone();
            }
            self.error = obs.error.clone();
            if status.is_authoritative_terminal() {
                self.next_poll_at_ms = None;
            }
        }
        outcome
    }

    /// Folds in our own deadline expiry.
    pub fn expire(&mut self, recorded_at_ms: u64) -> Outcome {
        let outcome = state_machine::decide(self.status, self.seller_at_ms, Event::DeadlineExpired);
        if let Some(status) = outcome.new_status() {
            self.status = status;
            self.updated_at_ms = recorded_at_ms;
            self.error = Some(OperationError {
                code: "DEADLINE_EXCEEDED".into(),
                message: format!(
                    "no seller outcome for `{}` before its deadline; still reconciling with the seller",
                    self.task
                ),
            });
        }
        outcome
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub fn sample(op: &str) -> Operation {
        Operation {
            operation_id: op.into(),
            tenant_id: "t1".into(),
            seller_id: "s1".into(),
            task: "create_media_buy".into(),
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
        }
    }

    #[test]
    fn a_task_id_is_bound_once_and_a_different_one_is_a_conflict() {
        let mut op = sample("op1");
        assert_eq!(
            op.observe(&obs(TaskStatus::Submitted, Some("task_1")), 2_000),
            Outcome::Applied(OperationStatus::Seller(TaskStatus::Submitted))
        );
        assert_eq!(op.task_id.as_deref(), Some("task_1"));
        assert_eq!(
            op.observe(&obs(TaskStatus::Completed, Some("task_2")), 3_000),
            Outcome::Conflict
        );
        assert_eq!(op.status, OperationStatus::Seller(TaskStatus::Submitted));
    }

    #[test]
    fn completion_stores_the_result_and_stops_polling() {
        let mut op = sample("op1");
        let mut done = obs(TaskStatus::Completed, Some("task_1"));
        done.result = Some(json!({"media_buy_id": "mb_1"}));
        op.observe(&done, 5_000);
        assert_eq!(op.result, Some(json!({"media_buy_id": "mb_1"})));
        assert_eq!(op.next_poll_at_ms, None);
        assert_eq!(op.updated_at_ms, 5_000);
        // A later different terminal does not touch the result.
        let mut failed = obs(TaskStatus::Failed, Some("task_1"));
        failed.result = Some(json!({"errors": []}));
        assert_eq!(op.observe(&failed, 6_000), Outcome::Conflict);
        assert_eq!(op.result, Some(json!({"media_buy_id": "mb_1"})));
    }

    #[test]
    fn timeout_is_replaced_by_a_later_seller_outcome() {
        let mut op = sample("op1");
        op.observe(&obs(TaskStatus::Submitted, Some("task_1")), 2_000);
        assert_eq!(
            op.expire(90_000_000),
            Outcome::Applied(OperationStatus::TimedOut)
        );
        assert_eq!(op.error.as_ref().unwrap().code, "DEADLINE_EXCEEDED");
        let out = op.observe(&obs(TaskStatus::Completed, Some("task_1")), 91_000_000);
        assert_eq!(
            out,
            Outcome::Overrode(OperationStatus::Seller(TaskStatus::Completed))
        );
        assert_eq!(op.error, None);
    }
}
