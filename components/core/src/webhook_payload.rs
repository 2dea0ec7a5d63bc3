//! Reading a webhook body: which format it is (MCP envelope or A2A task), whether the MCP
//! envelope is complete, and the task data it carries (AdCP `webhooks.mdx`, "Format
//! detection" and "Payload anatomy").

use crate::status::TaskStatus;
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

/// Validates an MCP envelope.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn vectors(name: &str) -> Value {
        let path = format!(
            "{}/../../../shared/adcp/test-vectors/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(
            &std::fs::read_to_string(path).expect("spec vectors beside the project"),
        )
        .unwrap()
    }

    #[test]
    fn payload_extraction_vectors() {
        let v = vectors("webhook-payload-extraction.json");
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
        let v = vectors("webhook-receiver-envelope.json");
        let positive = v["positive"].as_array().unwrap();
        assert_eq!(positive.len(), 2);
        let mut keys = Vec::new();
        for case in positive {
            let e =
                envelope(&case["payload"]).unwrap_or_else(|err| panic!("{}: {err:?}", case["id"]));
            // Delivery reports are classified, not task transitions.
            assert!(e.is_delivery_report());
            assert!(
                e.result
                    .as_ref()
                    .unwrap()
                    .get("notification_type")
                    .is_some()
            );
            keys.push(e.idempotency_key);
        }
        // The retry carries the same key as the original event.
        assert_eq!(keys[0], keys[1]);
        for case in v["negative"].as_array().unwrap() {
            let expected = case["expected_error"].as_str().unwrap();
            assert_eq!(
                envelope(&case["payload"])
                    .map(|_| ())
                    .map_err(EnvelopeError::code),
                Err(expected),
                "{}",
                case["id"]
            );
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
