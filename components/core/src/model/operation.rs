//! The operation record: one buyer request to one seller, from storage to outcome.

use crate::model::state_machine::{self, Event, Outcome};
use crate::model::status::{OperationStatus, TaskStatus};
use crate::model::task::TaskKind;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// One AdCP task the orchestrator is responsible for: the fold of its journal
/// ([`crate::records::journal`]), `version` being the seq of the last entry folded in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    pub operation_id: String,
    pub tenant_id: String,
    pub seller_id: String,
    /// The AdCP tool, e.g. `create_media_buy`.
    pub task: TaskKind,
    /// Exactly as (re)sent, including our `idempotency_key`, `context` and
    /// `push_notification_config`.
    pub arguments: Value,
    /// The same on every resend of this operation.
    pub idempotency_key: String,
    /// The seller's task handle, once the seller returned or announced one.
    pub task_id: Option<String>,
    pub context_id: Option<String>,
    pub status: OperationStatus,
    /// The seller's result payload (e.g. `CreateMediaBuySuccess` with `media_buy_id`).
    pub result: Option<Value>,
    /// Where `result` came from: a later report of the same outcome is compared with it only
    /// when both are the task's own value (a webhook's or a poll's), not a look-up's record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_source: Option<Source>,
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
    /// Digest of the buyer's API request: a retry vs a different request reusing its
    /// `Idempotency-Key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_digest: Option<String>,
    /// Dispatch attempts that got no usable answer.
    #[serde(default)]
    pub dispatch_attempts: u32,
    /// Some attempt may have reached the seller without us seeing the answer.
    #[serde(default)]
    pub outcome_unknown: bool,
    /// The digest of the bytes the first such attempt sent: every resend must match it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_digest: Option<String>,
    /// When the first such attempt started: the seller's replay window for the key runs
    /// from about then, and no resend under it may come after the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_sent_at_ms: Option<u64>,
    /// The last attempt after an unknown outcome was refused by something other than the
    /// seller's AdCP answer (a proxy, a gateway): look the request up before resending.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub look_up_first: bool,
    /// Webhook deliveries already folded in: the durable de-duplication state.
    #[serde(default)]
    pub deliveries: DeliveryLedger,
    /// The governance plan checked (`check_governance`) before the seller is called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub governance: Option<Governance>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel: Option<Cancel>,
    /// The operation this one was derived from (a re-plan, or a cancel of its media buy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linked_from: Option<String>,
    /// Its creation was counted in the tenant's summary, so its status changes are too.
    /// Operations stored by earlier releases were not, and stay out of it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_tenant_summary: bool,
    /// Status changes folded into this record whose effects (buyer notification, task index,
    /// counters) may still be owed: the webhook intake stores the fold before answering and
    /// runs them after (`lifecycle::effects::settle`). Absent in records of earlier
    /// releases, which stored a fold only after its effects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unsettled: Vec<Unsettled>,
    /// Its position in the tenant's listing, allocated before its creation entry was
    /// written (so every creator of the id lists it there). Absent in records of earlier
    /// releases, which kept it under `op:{id}:listed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listed_at: Option<u64>,
    /// The journal entry that gave it its current status (its creation entry until a change).
    /// 0 in records of earlier releases: unknown.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub status_seq: u64,
    pub version: u64,
}

/// A status change whose effects may still be owed (see [`Operation::unsettled`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsettled {
    /// The journal entry that made it.
    pub seq: u64,
    pub from: OperationStatus,
    pub to: OperationStatus,
    /// The entry's time: when the change was recorded.
    pub at_ms: u64,
    /// The entry of the status change before it, if known: its buyer notification goes
    /// first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Governance {
    /// The registered agent (a seller registration) that answers `check_governance`.
    pub agent_id: String,
    pub plan_id: String,
    /// Our agent URL, sent as `caller`.
    pub caller: String,
    /// Approved by the governance agent or by a human.
    #[serde(default)]
    pub approved: bool,
    /// The token to attach to the seller call, from an approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub governance_context: Option<String>,
    /// The agent's verdict explanation and conditions, when it held the operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancel {
    pub requested_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The re-planned operation that replaces this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
    /// The `update_media_buy` (`canceled: true`) operation canceling the buy at the seller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_up: Option<String>,
}

/// A change the orchestrator itself (or a human through it) makes to an operation.
/// `Deserialize` is written out in `de`: the derived one kept a second deserializer of its
/// fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum LocalChange {
    /// The governance agent approved: call the seller with this context.
    GovernanceApproved { governance_context: Option<String> },
    /// The governance agent answered `conditions`: hold for a human.
    GovernanceHold {
        explanation: Option<String>,
        conditions: Option<Value>,
    },
    /// A human approved the held operation.
    Approved,
    /// The buyer canceled (or re-planned, superseding it).
    CancelRequested {
        reason: Option<String>,
        superseded_by: Option<String>,
    },
    /// A cancel of the seller's media buy was started as operation `operation_id`.
    CancelFollowUp { operation_id: String },
    /// The seller's replay window for the old key closed and a look-up proved the request
    /// never took effect: it is sent anew under this key (`why` says which look-up).
    KeyRenewed {
        idempotency_key: String,
        why: String,
    },
}

/// How long delivery marks are kept: AdCP's longest seller retry horizon (7 days, above the
/// 24 h floor).
pub const DELIVERY_RETENTION_MS: u64 = 7 * 24 * 3_600_000;

/// Most delivery marks, and most nonces, the record keeps: whatever a seller sends, the
/// ledger stays under about 70 KB (keys are at most 255 characters, long nonces are kept as
/// digests). Older marks move to their own keys when the record is saved.
pub const LEDGER_WINDOW: usize = 128;

/// Webhook deliveries and RFC 9421 nonces already folded into an operation. Kept in the record
/// by the journal fold, so it is as durable and shared as the operation, and two racing copies
/// of a delivery apply once: the first entry with a key applies, later ones are repeats.
/// Scoped to the operation, whose sender is its one seller.
///
/// Past [`LEDGER_WINDOW`] marks the oldest moves out: the fold lists it in `moving_out`, and
/// the save that drops it from the record first writes it under its own key
/// (`op:{op}:dlv:{digest}`), where the intake looks once `moved_out` is non-zero. Nonces past
/// the window are forgotten: a replayed request repeats its delivery, which the marks catch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryLedger {
    pub deliveries: Vec<DeliveryMark>,
    pub nonces: Vec<NonceMark>,
    /// Marks ever moved out of the record.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub moved_out: u64,
    /// Marks this fold moved out, not yet written under their own keys.
    #[serde(skip)]
    pub moving_out: Vec<DeliveryMark>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A nonce or key id as the ledger keeps it: long ones as their digest, so a seller's
/// choice of length does not grow the record.
fn compact(s: &str) -> String {
    if s.len() > 64 {
        format!(
            "sha256:{}",
            crate::foundation::seal::digest_hex(s.as_bytes())
        )
    } else {
        s.to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryMark {
    /// The payload's `idempotency_key` (the sender's delivery identity).
    pub idempotency_key: String,
    /// Digest of the canonical payload, to tell a retry from a conflicting reuse of a key.
    pub payload_hash: String,
    pub seq: u64,
    pub at_ms: u64,
}

/// An RFC 9421 `(keyid, nonce)` pair seen on an accepted delivery, until its signature expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NonceMark {
    pub keyid: String,
    pub nonce: String,
    pub expires_at_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryCheck {
    New,
    /// Same key, same payload: acknowledge, change nothing.
    Repeat,
    /// Same key, different payload: the sender must stop (409).
    Conflict,
}

impl DeliveryCheck {
    /// A key seen before: a repeat if its payload is the same.
    pub fn of(same_payload: bool) -> DeliveryCheck {
        if same_payload {
            DeliveryCheck::Repeat
        } else {
            DeliveryCheck::Conflict
        }
    }
}

impl DeliveryLedger {
    /// Against the marks in the record (and those this fold moved out); the intake also
    /// looks under the moved marks' own keys (`records::deliveries`).
    pub fn check(&self, idempotency_key: &str, payload_hash: &str) -> DeliveryCheck {
        match (self.deliveries.iter().chain(&self.moving_out))
            .find(|d| d.idempotency_key == idempotency_key)
        {
            None => DeliveryCheck::New,
            Some(d) => DeliveryCheck::of(d.payload_hash == payload_hash),
        }
    }

    pub fn nonce_seen(&self, keyid: &str, nonce: &str, now_ms: u64) -> bool {
        let (keyid, nonce) = (compact(keyid), compact(nonce));
        self.nonces
            .iter()
            .any(|n| n.keyid == keyid && n.nonce == nonce && n.expires_at_ms >= now_ms)
    }

    fn record(&mut self, delivery: &Delivery, seq: u64, at_ms: u64) {
        self.deliveries
            .retain(|d| d.at_ms.saturating_add(DELIVERY_RETENTION_MS) > at_ms);
        self.nonces.retain(|n| n.expires_at_ms >= at_ms);
        self.deliveries.push(DeliveryMark {
            idempotency_key: delivery.idempotency_key.clone(),
            payload_hash: delivery.payload_hash.clone(),
            seq,
            at_ms,
        });
        if self.deliveries.len() > LEDGER_WINDOW {
            let oldest = self.deliveries.remove(0);
            self.moving_out.push(oldest);
            self.moved_out += 1;
        }
        if let Some(n) = &delivery.nonce {
            self.nonces.push(NonceMark {
                keyid: compact(&n.keyid),
                nonce: compact(&n.nonce),
                expires_at_ms: n.expires_at_ms,
            });
            if self.nonces.len() > LEDGER_WINDOW {
                self.nonces.remove(0);
            }
        }
    }
}

/// Identity of one webhook delivery, carried by its journal entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub idempotency_key: String,
    pub payload_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<NonceMark>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    State(Outcome),
    /// A delivery already folded in (same key and payload): nothing changes.
    RepeatedDelivery,
    /// A delivery reusing a folded key with a different payload: nothing changes.
    DeliveryConflict,
}

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

/// What we registered in `push_notification_config`. Token and secret are sealed
/// ([`crate::foundation::seal`]) and put into the arguments only when sending, so stored
/// arguments hold no secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookRegistration {
    pub url: String,
    pub mode: WebhookMode,
    /// The `token` the seller echoes in every payload.
    pub token: crate::foundation::seal::Sealed,
    /// The legacy HMAC or Bearer credential (`authentication.credentials`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<crate::foundation::seal::Sealed>,
}

impl WebhookRegistration {
    /// Sealing purposes the token and secret are bound to.
    pub fn token_purpose(operation_id: &str) -> String {
        format!("webhook:{operation_id}:token")
    }

    pub fn secret_purpose(operation_id: &str) -> String {
        format!("webhook:{operation_id}:secret")
    }
}

/// Why an operation failed or what went wrong last, with AdCP's error `code` when the
/// seller gave one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationError {
    pub code: String,
    pub message: String,
}

impl OperationError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        OperationError {
            code: code.into(),
            message: message.into(),
        }
    }
}

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
    /// The governance agent's verdict (`check_governance`), before the seller was called.
    Governance,
}

/// A seller status report, whatever the channel.
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
    /// Set for webhook deliveries: their identity for de-duplication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Delivery>,
    /// The seller's own status word, verbatim, when it is none of AdCP's task statuses
    /// (`status` is then our conservative reading of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seller_status: Option<String>,
}

impl Observation {
    /// A report of `status` from `source` that carries nothing else (yet).
    pub fn of(source: Source, status: TaskStatus) -> Self {
        Observation {
            source,
            status,
            at_ms: None,
            task_id: None,
            context_id: None,
            message: None,
            result: None,
            error: None,
            delivery: None,
            seller_status: None,
        }
    }
}

/// What a new operation is made of; everything else starts empty.
#[derive(Debug, Clone)]
pub struct NewOperation {
    pub operation_id: String,
    pub tenant_id: String,
    pub seller_id: String,
    pub task: TaskKind,
    /// See [`sent_arguments`].
    pub arguments: Value,
    pub idempotency_key: String,
    /// `pending_dispatch`, or the seller's status of a task adopted from it.
    pub status: OperationStatus,
    pub task_id: Option<String>,
    pub message: Option<String>,
    /// How long the seller may take (a duration, not an instant).
    pub deadline_ms: u64,
    pub linked_from: Option<String>,
}

/// The tool arguments as sent: the buyer's plus our AdCP `idempotency_key` and
/// `context.operation_id`, the natural key the buy can be looked up by.
pub fn sent_arguments(
    mut arguments: Map<String, Value>,
    idempotency_key: &str,
    operation_id: &str,
) -> Value {
    arguments.insert("idempotency_key".into(), json!(idempotency_key));
    let context = arguments
        .entry("context")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(ctx) = context {
        ctx.insert("operation_id".into(), json!(operation_id));
    }
    Value::Object(arguments)
}

impl Operation {
    /// The one way an operation comes into being, created at `now`.
    pub fn new(new: NewOperation, now: u64) -> Operation {
        Operation {
            operation_id: new.operation_id,
            tenant_id: new.tenant_id,
            seller_id: new.seller_id,
            task: new.task,
            arguments: new.arguments,
            idempotency_key: new.idempotency_key,
            task_id: new.task_id,
            context_id: None,
            status: new.status,
            result: None,
            result_source: None,
            error: None,
            message: new.message,
            created_at_ms: now,
            updated_at_ms: now,
            next_poll_at_ms: Some(now),
            deadline_at_ms: now.saturating_add(new.deadline_ms),
            seller_at_ms: None,
            webhook: None,
            request_digest: None,
            dispatch_attempts: 0,
            outcome_unknown: false,
            sent_digest: None,
            key_sent_at_ms: None,
            look_up_first: false,
            deliveries: DeliveryLedger::default(),
            governance: None,
            cancel: None,
            linked_from: new.linked_from,
            in_tenant_summary: true,
            unsettled: Vec::new(),
            listed_at: None,
            status_seq: 0,
            version: 0,
        }
    }

    /// Folds journal entry `seq`'s observation: first its delivery identity (a repeat or a
    /// conflicting key reuse changes nothing), then its status.
    pub fn fold_observation(
        &mut self,
        obs: &Observation,
        seq: u64,
        recorded_at_ms: u64,
    ) -> Observed {
        if let Some(d) = &obs.delivery {
            match self.deliveries.check(&d.idempotency_key, &d.payload_hash) {
                DeliveryCheck::Repeat => return Observed::RepeatedDelivery,
                DeliveryCheck::Conflict => return Observed::DeliveryConflict,
                DeliveryCheck::New => self.deliveries.record(d, seq, recorded_at_ms),
            }
        }
        Observed::State(self.observe(obs, recorded_at_ms))
    }

    /// Folds a seller observation in; the record changes only as the verdict says (plus
    /// binding a first `task_id`/`context_id`, which is identity, not state).
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
                self.result_source = Some(obs.source);
            }
            self.error = obs.error.clone();
            if status.is_authoritative_terminal() {
                self.next_poll_at_ms = None;
            }
        }
        // A completion recorded without its result (the look-up found nothing) is filled in
        // by a later report of the same completion that carries it: history, not a transition.
        if outcome == Outcome::Duplicate
            && self.status == OperationStatus::Seller(TaskStatus::Completed)
            && self.result.is_none()
            && obs.result.is_some()
        {
            self.result = obs.result.clone();
            self.result_source = Some(obs.source);
            self.updated_at_ms = recorded_at_ms;
            return Outcome::Recorded;
        }
        // AdCP 3.2: a task's first authoritative terminal is final, and a later report of it
        // repeats it only with the same `{task_type, status, value}`; the same status with
        // another value is a conflict, recorded and not applied.
        let task_value = |s: Source| matches!(s, Source::Webhook | Source::Poll);
        if outcome == Outcome::Duplicate
            && self.status.is_authoritative_terminal()
            && task_value(obs.source)
            && self.result_source.is_some_and(task_value)
            && let (Some(have), Some(seen)) = (&self.result, &obs.result)
            && have != seen
        {
            return Outcome::Conflict;
        }
        outcome
    }

    /// Folds in a local change; returns its state-machine verdict (`None`: bookkeeping only).
    pub fn apply_local(&mut self, change: &LocalChange, recorded_at_ms: u64) -> Option<Outcome> {
        let event = match change {
            LocalChange::GovernanceApproved { governance_context } => {
                // The first approval stands: a second dispatcher's context must not change
                // the bytes already sent under this operation's `idempotency_key`.
                if let Some(g) = self.governance.as_mut().filter(|g| !g.approved) {
                    g.approved = true;
                    g.governance_context = governance_context.clone();
                }
                return None;
            }
            LocalChange::CancelFollowUp { operation_id } => {
                if let Some(c) = &mut self.cancel {
                    c.follow_up.get_or_insert_with(|| operation_id.clone());
                }
                return None;
            }
            LocalChange::KeyRenewed {
                idempotency_key, ..
            } => {
                // Only an operation still waiting for dispatch is sent anew.
                if self.status == OperationStatus::PendingDispatch {
                    self.renew_key(idempotency_key);
                }
                return None;
            }
            LocalChange::GovernanceHold { .. } => Event::GovernanceHold,
            LocalChange::Approved => Event::Approved,
            LocalChange::CancelRequested { .. } => Event::CancelRequested,
        };
        let outcome = state_machine::decide(self.status, self.seller_at_ms, event);
        match change {
            LocalChange::GovernanceHold {
                explanation,
                conditions,
            } if outcome.new_status().is_some() => {
                if let Some(g) = &mut self.governance {
                    g.explanation = explanation.clone();
                    g.conditions = conditions.clone();
                }
                self.message = explanation.clone();
            }
            LocalChange::Approved if outcome.new_status().is_some() => {
                if let Some(g) = &mut self.governance {
                    g.approved = true;
                }
                self.next_poll_at_ms = Some(recorded_at_ms);
            }
            // The request is recorded even when the cancel changes nothing (a seller outcome
            // already came): the buyer asked, and a media buy may still need canceling.
            LocalChange::CancelRequested {
                reason,
                superseded_by,
            } if self.cancel.is_none() => {
                self.cancel = Some(Cancel {
                    requested_at_ms: recorded_at_ms,
                    reason: reason.clone(),
                    superseded_by: superseded_by.clone(),
                    follow_up: None,
                });
            }
            _ => {}
        }
        if let Some(status) = outcome.new_status() {
            self.status = status;
            self.updated_at_ms = recorded_at_ms;
        }
        Some(outcome)
    }

    /// A new request under a new key: nothing of the old key's attempts applies to it.
    fn renew_key(&mut self, key: &str) {
        self.idempotency_key = key.to_string();
        if let Some(args) = self.arguments.as_object_mut()
            && args.contains_key("idempotency_key")
        {
            args.insert("idempotency_key".into(), Value::String(key.to_string()));
        }
        self.dispatch_attempts = 0;
        self.outcome_unknown = false;
        self.sent_digest = None;
        self.key_sent_at_ms = None;
        self.look_up_first = false;
        self.error = None;
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

mod de;

#[cfg(test)]
mod tests {
    use crate::testing::{obs, sample};
    #[test]
    fn a_delivery_is_folded_once_and_a_reused_key_with_another_payload_changes_nothing() {
        let mut op = sample("op1");
        let mut o = obs(TaskStatus::Completed, Some("task_1"));
        o.delivery = Some(Delivery {
            idempotency_key: "whk_0123456789abcdef".into(),
            payload_hash: "h1".into(),
            nonce: None,
        });
        assert_eq!(
            op.fold_observation(&o, 2, 10),
            Observed::State(Outcome::Applied(OperationStatus::Seller(
                TaskStatus::Completed
            )))
        );
        assert_eq!(op.fold_observation(&o, 3, 11), Observed::RepeatedDelivery);
        let mut other = o.clone();
        other.delivery.as_mut().unwrap().payload_hash = "h2".into();
        other.status = TaskStatus::Failed;
        assert_eq!(
            op.fold_observation(&other, 4, 12),
            Observed::DeliveryConflict
        );
        assert_eq!(op.deliveries.deliveries.len(), 1);
        // Marks outlive the 24 h floor and go after the longest retry horizon.
        let mut late = obs(TaskStatus::Working, Some("task_1"));
        late.delivery = Some(Delivery {
            idempotency_key: "whk_fedcba9876543210".into(),
            payload_hash: "h3".into(),
            nonce: None,
        });
        op.fold_observation(&late, 5, 10 + DELIVERY_RETENTION_MS - 1);
        assert_eq!(op.deliveries.deliveries.len(), 2);
        let mut later = late.clone();
        later.delivery.as_mut().unwrap().idempotency_key = "whk_aaaaaaaaaaaaaaaa".into();
        op.fold_observation(&later, 6, 12 + DELIVERY_RETENTION_MS);
        let keys: Vec<_> = op
            .deliveries
            .deliveries
            .iter()
            .map(|d| d.idempotency_key.as_str())
            .collect();
        assert_eq!(keys, ["whk_fedcba9876543210", "whk_aaaaaaaaaaaaaaaa"]);
    }

    #[test]
    fn nonces_are_remembered_until_their_signature_expires() {
        let mut op = sample("op1");
        let mut o = obs(TaskStatus::Working, Some("task_1"));
        o.delivery = Some(Delivery {
            idempotency_key: "whk_0123456789abcdef".into(),
            payload_hash: "h".into(),
            nonce: Some(NonceMark {
                keyid: "k1".into(),
                nonce: "n1".into(),
                expires_at_ms: 500,
            }),
        });
        op.fold_observation(&o, 2, 100);
        assert!(op.deliveries.nonce_seen("k1", "n1", 500));
        assert!(!op.deliveries.nonce_seen("k1", "n1", 501));
        assert!(!op.deliveries.nonce_seen("k2", "n1", 100));
    }

    use super::*;
    use serde_json::json;

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
    fn a_completion_recorded_without_its_result_is_filled_in_by_a_later_one() {
        let mut op = sample("op1");
        op.observe(&obs(TaskStatus::Completed, Some("task_1")), 5_000);
        assert_eq!(op.result, None);
        let mut with = obs(TaskStatus::Completed, Some("task_1"));
        with.result = Some(json!({"media_buy_id": "mb_1"}));
        assert_eq!(op.observe(&with, 6_000), Outcome::Recorded);
        assert_eq!(op.result, Some(json!({"media_buy_id": "mb_1"})));
        assert_eq!(op.updated_at_ms, 6_000);
        // Once there, a result is never replaced: another value is a conflict (AdCP 3.2).
        let mut other = obs(TaskStatus::Completed, Some("task_1"));
        other.result = Some(json!({"media_buy_id": "mb_2"}));
        assert_eq!(op.observe(&other, 7_000), Outcome::Conflict);
        assert_eq!(op.result, Some(json!({"media_buy_id": "mb_1"})));
    }

    #[test]
    fn a_later_report_of_the_first_terminal_repeats_it_only_with_the_same_value() {
        let mut op = sample("op1");
        let report = |source: Source, buy: &str| Observation {
            source,
            result: Some(json!({"media_buy_id": buy, "status": "active"})),
            ..obs(TaskStatus::Completed, Some("task_1"))
        };
        assert!(matches!(
            op.observe(&report(Source::Webhook, "mb_1"), 5_000),
            Outcome::Applied(_)
        ));
        // The same value by poll: a repeat, whatever the key order on the wire.
        let mut same = report(Source::Poll, "mb_1");
        same.result = Some(json!({"status": "active", "media_buy_id": "mb_1"}));
        assert_eq!(op.observe(&same, 6_000), Outcome::Duplicate);
        // Another value for the same status: a conflict, and the first stands.
        assert_eq!(
            op.observe(&report(Source::Poll, "mb_2"), 7_000),
            Outcome::Conflict
        );
        assert_eq!(op.result.as_ref().unwrap()["media_buy_id"], "mb_1");
        // A look-up's record of the buy is not the task's value: never compared.
        let mut looked_up = sample("op2");
        looked_up.observe(&report(Source::Reconcile, "mb_1"), 5_000);
        assert_eq!(
            looked_up.observe(&report(Source::Webhook, "mb_9"), 6_000),
            Outcome::Duplicate
        );
        // Nor is a result stored before its source was (an older record).
        let mut older = sample("op3");
        older.observe(&report(Source::Webhook, "mb_1"), 5_000);
        older.result_source = None;
        assert_eq!(
            older.observe(&report(Source::Webhook, "mb_9"), 6_000),
            Outcome::Duplicate
        );
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
