//! Reading every AdCP answer shape into an [`Observation`]: a tool call's answer
//! ([`observation_from_payload`]), a task-status poll ([`observation_from_task_status`]) and a
//! webhook ([`observation_from_webhook`]; AdCP `webhooks.mdx`, "Format detection" and "Payload
//! anatomy"). [`error_of`] is the one reading of an AdCP `{code, message}` error.

use crate::model::operation::{Observation, OperationError, Source};
use crate::model::status::TaskStatus;
use serde_json::Value;

/// How a webhook body is shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// AdCP's MCP webhook envelope: `status` is a string beside `task_id`.
    Mcp,
    /// A native A2A `Task` / `TaskStatusUpdateEvent`: `status` is an object with `state`.
    A2a,
    Unknown,
}

pub fn detect(payload: &Value) -> Format {
    match payload.get("status") {
        Some(Value::Object(s)) if s.contains_key("state") => Format::A2a,
        Some(Value::String(_)) if payload.get("task_id").is_some() => Format::Mcp,
        _ => Format::Unknown,
    }
}

/// Why an MCP envelope cannot be dispatched (the receiver-envelope vectors' codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeError {
    /// Not an envelope at all (e.g. a bare delivery report).
    MissingEnvelopeFields,
    MissingIdempotencyKey,
    /// `idempotency_key` outside `^[A-Za-z0-9_.:-]{16,255}$`.
    InvalidIdempotencyKey,
    /// `status` is not an AdCP task status (e.g. a media-buy lifecycle value).
    InvalidEnvelopeStatus,
    InvalidTimestamp,
}

impl EnvelopeError {
    pub fn code(self) -> &'static str {
        match self {
            EnvelopeError::MissingEnvelopeFields => "missing_envelope_fields",
            EnvelopeError::MissingIdempotencyKey => "missing_idempotency_key",
            EnvelopeError::InvalidIdempotencyKey => "invalid_idempotency_key",
            EnvelopeError::InvalidEnvelopeStatus => "invalid_envelope_status",
            EnvelopeError::InvalidTimestamp => "invalid_timestamp",
        }
    }
}

/// A dispatchable MCP task webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub idempotency_key: String,
    /// Required from AdCP 3.1; 3.0 sellers may omit it (then the URL identifies the operation).
    pub operation_id: Option<String>,
    pub task_id: String,
    pub task_type: String,
    pub status: TaskStatus,
    /// The payload `timestamp`, Unix ms: the order of events of one task.
    pub at_ms: u64,
    pub message: Option<String>,
    pub context_id: Option<String>,
    pub token: Option<String>,
    pub result: Option<Value>,
}

impl Envelope {
    /// A delivery report (`task_type: media_buy_delivery`) rather than a task status change.
    pub fn is_delivery_report(&self) -> bool {
        self.task_type == "media_buy_delivery"
    }
}

pub fn envelope(payload: &Value) -> Result<Envelope, EnvelopeError> {
    let obj = payload
        .as_object()
        .ok_or(EnvelopeError::MissingEnvelopeFields)?;
    let text = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
    let (Some(task_id), Some(task_type), Some(status), Some(timestamp)) = (
        text("task_id"),
        text("task_type"),
        obj.get("status"),
        text("timestamp"),
    ) else {
        return Err(EnvelopeError::MissingEnvelopeFields);
    };
    let key = text("idempotency_key").ok_or(EnvelopeError::MissingIdempotencyKey)?;
    let key_ok = (16..=255).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if !key_ok {
        return Err(EnvelopeError::InvalidIdempotencyKey);
    }
    let status = status
        .as_str()
        .and_then(TaskStatus::parse)
        .ok_or(EnvelopeError::InvalidEnvelopeStatus)?;
    let at_ms = rfc3339_ms(&timestamp).ok_or(EnvelopeError::InvalidTimestamp)?;
    Ok(Envelope {
        idempotency_key: key,
        operation_id: text("operation_id"),
        task_id,
        task_type,
        status,
        at_ms,
        message: text("message"),
        context_id: text("context_id"),
        token: text("token"),
        result: obj.get("result").filter(|r| !r.is_null()).cloned(),
    })
}

/// Unix milliseconds of an RFC 3339 date-time.
pub fn rfc3339_ms(s: &str) -> Option<u64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// The task data a webhook carries: MCP `result`; A2A the last DataPart of the first
/// artifact for final states, else the first DataPart of the status message.
pub fn data(payload: &Value) -> Option<Value> {
    match detect(payload) {
        Format::Mcp => payload.get("result").filter(|r| !r.is_null()).cloned(),
        Format::A2a => {
            let state = payload
                .pointer("/status/state")
                .and_then(Value::as_str)
                .unwrap_or("");
            let final_state = matches!(state, "completed" | "failed" | "canceled" | "rejected");
            let data_parts = |parts: Option<&Value>| -> Vec<Value> {
                parts
                    .and_then(Value::as_array)
                    .map(|ps| {
                        ps.iter()
                            .filter(|p| {
                                p.get("kind").and_then(Value::as_str) == Some("data")
                                    || p.get("data").is_some()
                            })
                            .filter_map(|p| p.get("data").cloned())
                            .collect()
                    })
                    .unwrap_or_default()
            };
            if final_state {
                data_parts(payload.pointer("/artifacts/0/parts")).pop()
            } else {
                data_parts(payload.pointer("/status/message/parts"))
                    .into_iter()
                    .next()
            }
        }
        Format::Unknown => None,
    }
}

/// An AdCP error object's `{code, message}` (a missing message reads as empty).
pub fn error_of(e: &Value) -> Option<OperationError> {
    Some(OperationError {
        code: e.get("code")?.as_str()?.to_string(),
        message: e
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    })
}

/// Every media-buy lifecycle status (`enums/media-buy-status.json`). AdCP 3.0 put one in
/// `status` of a sync success; `get_media_buys` filters on them.
pub(crate) const MEDIA_BUY_STATUSES: [&str; 7] = [
    "pending_creatives",
    "pending_start",
    "active",
    "paused",
    "completed",
    "rejected",
    "canceled",
];

/// What a tool's answer says about the task (AdCP flat MCP shape).
pub fn observation_from_payload(payload: &Value, source: Source) -> Observation {
    let text = |k: &str| payload.get(k).and_then(Value::as_str).map(str::to_string);
    // No `status` means completed (flat wire rule), and so does a 3.0 media-buy status (e.g.
    // "active"). In a success branch (a buy, no task handle, no errors) `status` is the
    // buy's: 3.0 put it there, 3.1 mirrors `media_buy_status` there (deprecated). `canceled`
    // there is a canceled *buy*, a completed task.
    let buy_status = payload.get("media_buy_status").and_then(Value::as_str);
    let buy_success = payload.get("media_buy_id").is_some()
        && payload.get("task_id").is_none()
        && payload.get("errors").is_none();
    let status = match payload.get("status").and_then(Value::as_str) {
        None => TaskStatus::Completed,
        Some(s)
            if buy_success
                && MEDIA_BUY_STATUSES.contains(&s)
                && buy_status.is_none_or(|b| b == s) =>
        {
            TaskStatus::Completed
        }
        Some(s) => TaskStatus::parse(s).unwrap_or(if MEDIA_BUY_STATUSES.contains(&s) {
            TaskStatus::Completed
        } else {
            // Neither a task status nor a 3.0 media-buy status: never guess an outcome.
            TaskStatus::Unknown
        }),
    };
    let error = payload
        .get("errors")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
        .and_then(error_of)
        .filter(|_| status != TaskStatus::Completed);
    Observation {
        source,
        status,
        at_ms: None,
        task_id: text("task_id"),
        context_id: text("context_id"),
        message: text("message"),
        result: (status == TaskStatus::Completed).then(|| payload.clone()),
        error,
        delivery: None,
        seller_status: None,
    }
}

/// The observation in a polling tool's answer (flat: `status`, `result`, `error`). A status
/// outside AdCP's enum (`requires_approval`, `approved`: sellers built on older SDKs) is kept
/// verbatim and read conservatively: completed only when the answer proves it with a media
/// buy and its buy status, otherwise still being worked on.
pub fn observation_from_task_status(payload: &Value) -> Option<Observation> {
    let said = payload.get("status")?.as_str()?;
    let (status, seller_status) = match TaskStatus::parse(said) {
        Some(s) => (s, None),
        None => (unlisted_status(payload), Some(said.to_string())),
    };
    let error = payload.get("error").and_then(error_of);
    let result = match (payload.get("result"), seller_status.is_some()) {
        (Some(r), _) => Some(r.clone()),
        // A seller that does not speak the enum may put the buy beside its status.
        (None, true) => Some(payload.clone()),
        (None, false) => None,
    };
    Some(Observation {
        source: Source::Poll,
        status,
        // The seller's `updated_at` orders this report against webhooks and other polls: a
        // poll answered before a webhook but read after it must not move the status back.
        at_ms: payload
            .get("updated_at")
            .and_then(Value::as_str)
            .and_then(rfc3339_ms),
        task_id: payload
            .get("task_id")
            .and_then(Value::as_str)
            .map(str::to_string),
        context_id: None,
        message: payload
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string),
        // `include_result` (AdCP 3.2) also returns a failed or rejected task's payload: the
        // seller's account of why, recorded with the outcome.
        result: result.filter(|_| {
            matches!(
                status,
                TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Rejected
            )
        }),
        error,
        delivery: None,
        seller_status,
    })
}

/// Our reading of a status word outside AdCP's task enum: `completed` only when the answer
/// (or its `result`) names a media buy and gives it a buy status; never another terminal.
fn unlisted_status(payload: &Value) -> TaskStatus {
    let proves_a_buy = |v: &Value| {
        let buy_status = v
            .get("media_buy_status")
            .or_else(|| v.get("status"))
            .and_then(Value::as_str);
        v.get("media_buy_id").and_then(Value::as_str).is_some()
            && buy_status.is_some_and(|s| MEDIA_BUY_STATUSES.contains(&s))
    };
    let in_result = payload.get("result").is_some_and(proves_a_buy);
    let beside = payload.get("media_buy_id").is_some()
        && payload
            .get("media_buy_status")
            .and_then(Value::as_str)
            .is_some_and(|s| MEDIA_BUY_STATUSES.contains(&s));
    if in_result || beside {
        TaskStatus::Completed
    } else {
        TaskStatus::Working
    }
}

/// The fields of an MCP task webhook the orchestrator acts on.
pub struct Webhook {
    pub idempotency_key: String,
    pub operation_id: Option<String>,
    pub delivery_report: bool,
    pub observation: Observation,
}

/// The observation an MCP task webhook carries, with the fields de-duplication needs.
pub fn observation_from_webhook(p: &Value) -> Result<Webhook, EnvelopeError> {
    let e = envelope(p)?;
    let error = p.get("error").and_then(error_of);
    Ok(Webhook {
        delivery_report: e.is_delivery_report(),
        idempotency_key: e.idempotency_key,
        operation_id: e.operation_id,
        observation: Observation {
            source: Source::Webhook,
            status: e.status,
            at_ms: Some(e.at_ms),
            task_id: Some(e.task_id),
            context_id: e.context_id,
            message: e.message,
            result: e.result,
            error,
            delivery: None,
            seller_status: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::adcp::{read_json, shared, vector_sets};

    #[test]
    fn payload_extraction_vectors() {
        // Not shipped in 3.2.4: the 3.1.19 set is the only one.
        let v = read_json(&shared().join("test-vectors/webhook-payload-extraction.json"));
        let list = v["vectors"].as_array().unwrap();
        assert_eq!(list.len(), 12);
        for case in list {
            let id = case["id"].as_str().unwrap();
            let expected_format = match case["expected_format"].as_str().unwrap() {
                "mcp" => Format::Mcp,
                "a2a" => Format::A2a,
                other => panic!("{other}"),
            };
            assert_eq!(detect(&case["payload"]), expected_format, "{id}");
            let expected = case["expected_data"].clone();
            assert_eq!(
                data(&case["payload"]).unwrap_or(Value::Null),
                expected,
                "{id}"
            );
        }
    }

    #[test]
    fn receiver_envelope_vectors() {
        for (release, dir) in vector_sets() {
            let v = read_json(&dir.join("webhook-receiver-envelope.json"));
            let positive = v["positive"].as_array().unwrap();
            assert_eq!(positive.len(), 2, "{release}");
            let mut keys = Vec::new();
            for case in positive {
                let id = format!("{release} {}", case["id"]);
                let e = envelope(&case["payload"]).unwrap_or_else(|err| panic!("{id}: {err:?}"));
                // Delivery reports are classified, not task transitions.
                assert!(e.is_delivery_report(), "{id}");
                assert!(
                    e.result
                        .as_ref()
                        .unwrap()
                        .get("notification_type")
                        .is_some(),
                    "{id}"
                );
                keys.push(e.idempotency_key);
            }
            // The retry carries the same key as the original event.
            assert_eq!(keys[0], keys[1], "{release}");
            let negative = v["negative"].as_array().unwrap();
            assert_eq!(negative.len(), 3, "{release}");
            for case in negative {
                let expected = case["expected_error"].as_str().unwrap();
                assert_eq!(
                    envelope(&case["payload"])
                        .map(|_| ())
                        .map_err(EnvelopeError::code),
                    Err(expected),
                    "{release} {}",
                    case["id"]
                );
            }
        }
    }

    #[test]
    fn timestamps_order_events() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(
            rfc3339_ms("2026-05-26T09:00:44.582Z"),
            Some(1_779_786_044_582)
        );
        assert_eq!(
            rfc3339_ms("2026-05-26T11:00:44.582+02:00"),
            rfc3339_ms("2026-05-26T09:00:44.582Z")
        );
        assert_eq!(rfc3339_ms("yesterday"), None);
    }
}

#[cfg(test)]
mod call_answer_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_task_statuses_and_3_0_media_buy_statuses_are_read_as_outcomes() {
        let read =
            |s: &str| observation_from_payload(&json!({"status": s}), Source::Dispatch).status;
        assert_eq!(read("active"), TaskStatus::Completed);
        assert_eq!(read("pending_creatives"), TaskStatus::Completed);
        assert_eq!(read("working"), TaskStatus::Working);
        assert_eq!(read("finished"), TaskStatus::Unknown);
        assert_eq!(read("input_required"), TaskStatus::Unknown);
    }
}

#[cfg(test)]
mod status_reading {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_3_0_buy_status_in_a_success_branch_is_a_completed_task() {
        let read = |v: Value| observation_from_payload(&v, Source::Dispatch).status;
        assert_eq!(
            read(json!({"media_buy_id": "mb", "status": "canceled"})),
            TaskStatus::Completed
        );
        assert_eq!(
            read(json!({"media_buy_id": "mb", "status": "active"})),
            TaskStatus::Completed
        );
        // With a task handle, or without a buy, `canceled` is the task's status.
        assert_eq!(
            read(json!({"media_buy_id": "mb", "task_id": "t", "status": "canceled"})),
            TaskStatus::Canceled
        );
        assert_eq!(read(json!({"status": "canceled"})), TaskStatus::Canceled);
    }

    #[test]
    fn a_3_1_update_success_with_a_canceled_buy_is_a_completed_task_with_its_result() {
        let answer = json!({"media_buy_id": "mb", "media_buy_status": "canceled",
                            "status": "canceled", "revision": 4});
        let obs = observation_from_payload(&answer, Source::Dispatch);
        assert_eq!(obs.status, TaskStatus::Completed);
        assert_eq!(obs.result.unwrap()["media_buy_status"], "canceled");
        // A `status` that is not the buy's mirror stays the task's.
        let other =
            json!({"media_buy_id": "mb", "media_buy_status": "active", "status": "canceled"});
        assert_eq!(
            observation_from_payload(&other, Source::Dispatch).status,
            TaskStatus::Canceled
        );
    }

    #[test]
    fn an_unlisted_poll_status_is_kept_verbatim_and_never_a_terminal_it_does_not_prove() {
        for (answer, want) in [
            (
                json!({"task_id": "t", "status": "requires_approval"}),
                TaskStatus::Working,
            ),
            (
                json!({"task_id": "t", "status": "approved"}),
                TaskStatus::Working,
            ),
            // A buy id alone, or a buy status alone, proves nothing.
            (
                json!({"task_id": "t", "status": "approved", "result": {"media_buy_id": "mb"}}),
                TaskStatus::Working,
            ),
            (
                json!({"task_id": "t", "status": "approved", "result": {"status": "active"}}),
                TaskStatus::Working,
            ),
            // A rejection word outside the enum is not read as `rejected`.
            (
                json!({"task_id": "t", "status": "declined"}),
                TaskStatus::Working,
            ),
        ] {
            let obs = observation_from_task_status(&answer).unwrap();
            assert_eq!(obs.status, want, "{answer}");
            assert_eq!(obs.seller_status.as_deref(), answer["status"].as_str());
            assert_eq!(obs.result, None, "{answer}");
        }
        // A media buy with its buy status proves the task completed, in `result` or beside.
        for answer in [
            json!({"task_id": "t", "status": "approved",
                   "result": {"media_buy_id": "mb_1", "status": "active"}}),
            json!({"task_id": "t", "status": "approved",
                   "media_buy_id": "mb_1", "media_buy_status": "pending_start"}),
        ] {
            let obs = observation_from_task_status(&answer).unwrap();
            assert_eq!(obs.status, TaskStatus::Completed, "{answer}");
            assert_eq!(obs.seller_status.as_deref(), Some("approved"));
            let result = obs.result.unwrap();
            assert_eq!(result["media_buy_id"], "mb_1", "{answer}");
        }
        // Spec statuses are not marked.
        let spec = observation_from_task_status(&json!({"task_id": "t", "status": "working"}));
        assert_eq!(spec.unwrap().seller_status, None);
    }

    #[test]
    fn a_polled_failure_or_rejection_keeps_the_payload_include_result_returned() {
        for status in ["failed", "rejected"] {
            let answer = json!({"task_id": "t", "status": status,
                "error": {"code": "POLICY_VIOLATION", "message": "brand not allowed"},
                "result": {"errors": [{"code": "POLICY_VIOLATION", "message": "brand not allowed"}]}});
            let obs = observation_from_task_status(&answer).unwrap();
            assert_eq!(obs.result.unwrap()["errors"][0]["code"], "POLICY_VIOLATION");
            assert_eq!(obs.error.unwrap().code, "POLICY_VIOLATION");
        }
        // A task still working carries no result, whatever the seller put there.
        let working = json!({"task_id": "t", "status": "working", "result": {"partial": true}});
        assert_eq!(observation_from_task_status(&working).unwrap().result, None);
    }
}
