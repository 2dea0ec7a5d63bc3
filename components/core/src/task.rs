//! The AdCP tasks the orchestrator runs as operations, and what each requires.

use crate::api::FieldError;
use serde_json::{Map, Value};

/// A seller tool the orchestrator tracks as an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    CreateMediaBuy,
    UpdateMediaBuy,
    SyncCreatives,
}

impl TaskKind {
    pub const ALL: [TaskKind; 3] = [
        TaskKind::CreateMediaBuy,
        TaskKind::UpdateMediaBuy,
        TaskKind::SyncCreatives,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TaskKind::CreateMediaBuy => "create_media_buy",
            TaskKind::UpdateMediaBuy => "update_media_buy",
            TaskKind::SyncCreatives => "sync_creatives",
        }
    }

    pub fn parse(s: &str) -> Option<TaskKind> {
        TaskKind::ALL.into_iter().find(|t| t.name() == s)
    }

    pub fn names() -> Vec<&'static str> {
        TaskKind::ALL.iter().map(|t| t.name()).collect()
    }
}

const HOUR_MS: u64 = 3_600_000;

/// How long we wait for a seller outcome before declaring `timed_out` (AdCP's orchestrator
/// guide: create 24 h, update 12 h, creative approval 48 h).
pub fn default_deadline_ms(task: TaskKind) -> u64 {
    match task {
        TaskKind::CreateMediaBuy => 24 * HOUR_MS,
        TaskKind::UpdateMediaBuy => 12 * HOUR_MS,
        TaskKind::SyncCreatives => 48 * HOUR_MS,
    }
}

/// Fields the orchestrator owns and adds itself; a buyer supplying them is an error.
const RESERVED: [&str; 3] = [
    "idempotency_key",
    "push_notification_config",
    "adcp_version",
];

/// Checks what the spec requires of a task's arguments (required fields and their JSON
/// types), before anything is stored or sent.
pub fn validate_arguments(task: TaskKind, args: &Map<String, Value>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for r in RESERVED {
        if args.contains_key(r) {
            errors.push(FieldError::new(
                format!("arguments.{r}"),
                "set by the orchestrator; do not supply it",
            ));
        }
    }
    let mut require = |field: &str, ok: fn(&Value) -> bool, what: &str| match args.get(field) {
        Some(v) if ok(v) => {}
        Some(_) => errors.push(FieldError::new(
            format!("arguments.{field}"),
            format!("must be {what}"),
        )),
        None => errors.push(FieldError::new(
            format!("arguments.{field}"),
            format!("required ({what})"),
        )),
    };
    require("account", Value::is_object, "an account reference object");
    match task {
        TaskKind::CreateMediaBuy => {
            require("brand", Value::is_object, "a brand reference object");
            require(
                "start_time",
                Value::is_string,
                "\"asap\" or an ISO 8601 date-time",
            );
            require("end_time", Value::is_string, "an ISO 8601 date-time");
            let has_packages = args
                .get("packages")
                .and_then(Value::as_array)
                .is_some_and(|p| !p.is_empty());
            let has_proposal =
                args.contains_key("proposal_id") && args.contains_key("total_budget");
            if !has_packages && !has_proposal {
                errors.push(FieldError::new(
                    "arguments.packages",
                    "required: a non-empty array of packages, or `proposal_id` with `total_budget`",
                ));
            }
        }
        TaskKind::UpdateMediaBuy => require("media_buy_id", Value::is_string, "a string"),
        TaskKind::SyncCreatives => {}
    }
    if let Some(ctx) = args.get("context")
        && !ctx.is_object()
    {
        errors.push(FieldError::new("arguments.context", "must be an object"));
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(task: TaskKind, args: Value) -> Vec<String> {
        let Value::Object(m) = args else { panic!() };
        validate_arguments(task, &m)
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn create_media_buy_requires_the_spec_fields() {
        assert_eq!(
            fields(TaskKind::CreateMediaBuy, json!({})),
            [
                "arguments.account",
                "arguments.brand",
                "arguments.start_time",
                "arguments.end_time",
                "arguments.packages"
            ]
        );
        let ok = json!({"account": {"account_id": "a"}, "brand": {"domain": "acme.com"}, "start_time": "asap",
                        "end_time": "2026-12-31T00:00:00Z", "packages": [{"product_id": "p", "budget": 1, "pricing_option_id": "x"}]});
        assert!(fields(TaskKind::CreateMediaBuy, ok).is_empty());
        let proposal = json!({"account": {}, "brand": {}, "start_time": "asap", "end_time": "x", "proposal_id": "p", "total_budget": {}});
        assert!(fields(TaskKind::CreateMediaBuy, proposal).is_empty());
    }

    #[test]
    fn reserved_fields_and_wrong_types_are_reported() {
        assert_eq!(
            fields(
                TaskKind::UpdateMediaBuy,
                json!({"account": "a", "media_buy_id": 3, "idempotency_key": "x", "context": []})
            ),
            [
                "arguments.idempotency_key",
                "arguments.account",
                "arguments.media_buy_id",
                "arguments.context"
            ]
        );
        assert!(fields(TaskKind::SyncCreatives, json!({"account": {}})).is_empty());
    }
}
