//! Structured logs: one JSON object per line, one line per event, never a secret.
//!
//! Fields are typed so that nothing secret can be passed by accident: there is no free-form
//! map, idempotency keys go through [`key_prefix`], and seller text is length-capped.

use serde::Serialize;

/// Where log lines go (components: stderr, which Spin collects; tests: a buffer).
pub trait Log {
    fn line(&self, line: &str);
}

/// Discards everything (for callers that have nowhere to log).
pub struct NoLog;

impl Log for NoLog {
    fn line(&self, _: &str) {}
}

#[derive(Debug, Default, Serialize)]
pub struct Event<'a> {
    pub ts_ms: u64,
    /// What happened, e.g. `webhook.accepted`, `operation.created`, `dispatch.failed`.
    pub event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seller_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<&'a str>,
    /// The outcome or effect, e.g. `applied`, `duplicate`, a rejection code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'a str>,
    /// First 8 characters of an idempotency key (the full key is a secret while valid).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key_prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

pub fn key_prefix(key: &str) -> String {
    key.chars().take(8).collect()
}

/// Caps untrusted text (seller messages, error details) before it reaches a log line.
pub fn capped(text: &str) -> String {
    const MAX: usize = 200;
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

pub fn emit(log: &dyn Log, event: &Event<'_>) {
    if let Ok(line) = serde_json::to_string(event) {
        log.line(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_json_line_per_event_without_empty_fields() {
        let lines = crate::testing::Lines::default();
        emit(
            &lines,
            &Event {
                ts_ms: 5,
                event: "webhook.accepted",
                operation_id: Some("op_1"),
                idempotency_key_prefix: Some(key_prefix("9b2f6c1e-4a5d-4f1b-8c3e-2d7a1b0c9e11")),
                detail: Some(capped(&"x".repeat(500))),
                ..Default::default()
            },
        );
        let lines = lines.0.borrow();
        assert_eq!(lines.len(), 1);
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["idempotency_key_prefix"], "9b2f6c1e");
        assert!(v.get("tenant_id").is_none());
        assert!(v["detail"].as_str().unwrap().chars().count() <= 201);
        assert!(!lines[0].contains('\n'));
    }
}
