//! The AdCP tasks the orchestrator runs as operations, and what each requires.

use crate::foundation::error::FieldError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// A seller tool the orchestrator tracks as an operation (stored and sent as its tool name).
/// Declared in [`TASKS`]' order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    CreateMediaBuy,
    UpdateMediaBuy,
    SyncCreatives,
    AcceptProposal,
    BuildCreative,
    BuyProducts,
    ControlMediaBuy,
    DeclineProposals,
    GetCreativeFeatures,
    GetProducts,
    RefineProposals,
    RequestProposals,
    SyncCatalogs,
}

/// How a task's outcome can be found when no answer, webhook or poll tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeLookup {
    /// `get_media_buys` finds the buy by the `context.operation_id` we sent.
    MediaBuyByContext,
    /// Nothing carries a natural key to find it by: reconciliation decides.
    Impossible,
}

/// What the orchestrator knows of one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskSpec {
    pub kind: TaskKind,
    pub name: &'static str,
    /// How long we wait for its outcome before declaring `timed_out`.
    pub deadline_ms: u64,
    pub lookup: OutcomeLookup,
    /// The request schema's required fields, beside the `idempotency_key` we add.
    pub required: &'static [&'static str],
}

const HOUR_MS: u64 = 3_600_000;

/// A task without guidance of its own waits the longest any task does: timing out early
/// would stop tracking a task the seller may still complete.
const UNGUIDED_DEADLINE_MS: u64 = 48 * HOUR_MS;

const fn task(kind: TaskKind, name: &'static str, required: &'static [&'static str]) -> TaskSpec {
    TaskSpec {
        kind,
        name,
        deadline_ms: UNGUIDED_DEADLINE_MS,
        lookup: OutcomeLookup::Impossible,
        required,
    }
}

/// Every AdCP 3.2 mutating task with an asynchronous response (the manifest's tools with
/// `mutating` and `async_response_schemas`; `task_table_tests.rs` checks it against the
/// installed 3.2 manifest). Deadlines of the first three follow AdCP's orchestrator guide
/// (create 24 h, update 12 h, creative approval 48 h).
pub const TASKS: [TaskSpec; 13] = [
    TaskSpec {
        deadline_ms: 24 * HOUR_MS,
        lookup: OutcomeLookup::MediaBuyByContext,
        ..task(
            TaskKind::CreateMediaBuy,
            "create_media_buy",
            &["account", "brand", "start_time", "end_time"],
        )
    },
    TaskSpec {
        deadline_ms: 12 * HOUR_MS,
        ..task(
            TaskKind::UpdateMediaBuy,
            "update_media_buy",
            &["account", "media_buy_id"],
        )
    },
    task(TaskKind::SyncCreatives, "sync_creatives", &["account"]),
    task(
        TaskKind::AcceptProposal,
        "accept_proposal",
        &["account", "proposal_id", "proposal_terms_digest"],
    ),
    task(TaskKind::BuildCreative, "build_creative", &[]),
    task(
        TaskKind::BuyProducts,
        "buy_products",
        &[
            "account",
            "feed_version",
            "purchases",
            "start_time",
            "end_time",
        ],
    ),
    task(
        TaskKind::ControlMediaBuy,
        "control_media_buy",
        &["account", "media_buy_id", "revision"],
    ),
    task(
        TaskKind::DeclineProposals,
        "decline_proposals",
        &["declines"],
    ),
    task(
        TaskKind::GetCreativeFeatures,
        "get_creative_features",
        &["creative_manifest"],
    ),
    task(TaskKind::GetProducts, "get_products", &["buying_mode"]),
    task(
        TaskKind::RefineProposals,
        "refine_proposals",
        &["refinements"],
    ),
    task(TaskKind::RequestProposals, "request_proposals", &["brief"]),
    task(TaskKind::SyncCatalogs, "sync_catalogs", &["account"]),
];

impl TaskKind {
    pub const ALL: [TaskKind; TASKS.len()] = {
        let mut all = [TaskKind::CreateMediaBuy; TASKS.len()];
        let mut i = 0;
        while i < TASKS.len() {
            all[i] = TASKS[i].kind;
            i += 1;
        }
        all
    };

    pub fn spec(self) -> &'static TaskSpec {
        &TASKS[self as usize]
    }

    pub fn name(self) -> &'static str {
        self.spec().name
    }

    pub fn parse(s: &str) -> Option<TaskKind> {
        TASKS.iter().find(|t| t.name == s).map(|t| t.kind)
    }

    pub fn names() -> Vec<&'static str> {
        TASKS.iter().map(|t| t.name).collect()
    }
}

impl fmt::Display for TaskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How long we wait for a seller outcome before declaring `timed_out`.
pub fn default_deadline_ms(task: TaskKind) -> u64 {
    task.spec().deadline_ms
}

/// Fields the orchestrator owns and adds itself; a buyer supplying them is an error.
const RESERVED: [&str; 5] = [
    "idempotency_key",
    "push_notification_config",
    "adcp_version",
    "adcp_major_version",
    "governance_context",
];

/// Checks the spec's required fields and JSON types of a task's arguments, before anything is
/// stored or sent.
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
    let account = "`{account_id}` or `{brand, operator, sandbox?}` (core/account-ref.json)";
    match task {
        TaskKind::CreateMediaBuy => {
            require("account", account_ref, account);
            require("brand", brand_ref, "an object with a lower-case `domain`");
            require(
                "start_time",
                start_time,
                "\"asap\" or an RFC 3339 date-time",
            );
            require("end_time", date_time, "an RFC 3339 date-time");
            let has_proposal =
                args.contains_key("proposal_id") && args.contains_key("total_budget");
            match args.get("packages") {
                Some(Value::Array(p)) if !p.is_empty() => {
                    for (i, pkg) in p.iter().enumerate() {
                        for (field, why) in package_request(pkg) {
                            errors.push(FieldError::new(
                                format!("arguments.packages[{i}]{field}"),
                                why,
                            ));
                        }
                    }
                }
                _ if has_proposal => {
                    if !args.get("total_budget").is_some_and(total_budget) {
                        errors.push(FieldError::new(
                            "arguments.total_budget",
                            "must be {amount (number >= 0), currency}",
                        ));
                    }
                }
                _ => errors.push(FieldError::new(
                    "arguments.packages",
                    "required: a non-empty array of packages, or `proposal_id` with `total_budget`",
                )),
            }
        }
        TaskKind::UpdateMediaBuy => {
            require("account", account_ref, account);
            require("media_buy_id", Value::is_string, "a string");
        }
        TaskKind::SyncCreatives => {
            require("account", account_ref, account);
            creatives(args, &mut errors);
        }
        // The other tasks' arguments go to the seller as given, once the schema's required
        // fields are present (the seller validates the rest).
        _ => {
            for field in task.spec().required {
                if !args.contains_key(*field) {
                    errors.push(FieldError::new(format!("arguments.{field}"), "required"));
                }
            }
        }
    }
    if let Some(ctx) = args.get("context")
        && !ctx.is_object()
    {
        errors.push(FieldError::new("arguments.context", "must be an object"));
    }
    errors
}

/// `sync_creatives`' `creatives`: 1 to 100 creatives with their assets.
fn creatives(args: &Map<String, Value>, errors: &mut Vec<FieldError>) {
    match args.get("creatives") {
        Some(Value::Array(c)) if (1..=100).contains(&c.len()) => {
            for (i, creative) in c.iter().enumerate() {
                if let Some(why) = creative_asset(creative) {
                    errors.push(FieldError::new(format!("arguments.creatives[{i}]"), why));
                }
            }
        }
        _ => errors.push(FieldError::new(
            "arguments.creatives",
            "required: an array of 1-100 creatives",
        )),
    }
}

/// `core/account-ref.json`: exactly `{account_id}`, or the natural key
/// `{brand, operator, sandbox?}` (closed objects both).
fn account_ref(v: &Value) -> bool {
    let Some(o) = v.as_object() else {
        return false;
    };
    let only = |allowed: &[&str]| o.keys().all(|k| allowed.contains(&k.as_str()));
    if o.contains_key("account_id") {
        return o["account_id"].is_string() && only(&["account_id"]);
    }
    o.get("brand").is_some_and(brand_ref)
        && o.get("operator")
            .and_then(Value::as_str)
            .is_some_and(is_domain)
        && o.get("sandbox").is_none_or(Value::is_boolean)
        && only(&["brand", "operator", "sandbox"])
}

/// `core/brand-ref.json`: an object whose `domain` is a lower-case domain name.
fn brand_ref(v: &Value) -> bool {
    v.get("domain")
        .and_then(Value::as_str)
        .is_some_and(is_domain)
        && v.get("brand_id").is_none_or(Value::is_string)
}

/// The schema's domain pattern: dot-separated lower-case `[a-z0-9-]` labels, no edge hyphen.
fn is_domain(d: &str) -> bool {
    !d.is_empty()
        && d.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

fn date_time(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
    })
}

fn start_time(v: &Value) -> bool {
    v.as_str() == Some("asap") || date_time(v)
}

/// `media-buy/package-request.json`'s required fields and the 3.1 constraints on them.
fn package_request(p: &Value) -> Vec<(&'static str, &'static str)> {
    let Some(o) = p.as_object() else {
        return vec![("", "must be an object")];
    };
    let mut out = Vec::new();
    if !o.get("product_id").is_some_and(Value::is_string) {
        out.push((".product_id", "required: a string"));
    }
    if !o
        .get("budget")
        .and_then(Value::as_f64)
        .is_some_and(|b| b >= 0.0)
    {
        out.push((".budget", "required: a number >= 0"));
    }
    if !o.get("pricing_option_id").is_some_and(Value::is_string) {
        out.push((".pricing_option_id", "required: a string"));
    }
    if o.contains_key("capability_ids") {
        out.push((".capability_ids", "not allowed in a package request"));
    }
    if o.get("start_time").is_some_and(|t| !date_time(t)) {
        out.push((
            ".start_time",
            "must be an RFC 3339 date-time (not \"asap\")",
        ));
    }
    out
}

fn total_budget(v: &Value) -> bool {
    v.as_object().is_some_and(|o| {
        o.get("amount")
            .and_then(Value::as_f64)
            .is_some_and(|a| a >= 0.0)
            && o.get("currency").is_some_and(Value::is_string)
            && o.keys().all(|k| k == "amount" || k == "currency")
    })
}

/// A creative needs `creative_id`, `name`, `assets`, and exactly one of `format_id`/`format_kind`.
fn creative_asset(c: &Value) -> Option<&'static str> {
    let o = c.as_object()?;
    let ok = o.get("creative_id").is_some_and(Value::is_string)
        && o.get("name").is_some_and(Value::is_string)
        && o.contains_key("assets")
        && (o.contains_key("format_id") != o.contains_key("format_kind"));
    (!ok).then_some("needs creative_id, name, assets and exactly one of format_id/format_kind")
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
        let proposal = json!({"account": {"brand": {"domain": "acme.com"}, "operator": "agency.example"},
                              "brand": {"domain": "acme.com"}, "start_time": "2026-12-01T00:00:00Z",
                              "end_time": "2026-12-31T00:00:00Z", "proposal_id": "p",
                              "total_budget": {"amount": 5000, "currency": "USD"}});
        assert!(fields(TaskKind::CreateMediaBuy, proposal).is_empty());
    }

    #[test]
    fn shapes_follow_the_schemas() {
        let bad = json!({"account": {"account_id": "a", "extra": 1}, "brand": {"domain": "Acme.COM"},
                         "start_time": "tomorrow", "end_time": "x",
                         "packages": [{"product_id": "p", "budget": "1000", "capability_ids": [],
                                       "start_time": "asap"}]});
        assert_eq!(
            fields(TaskKind::CreateMediaBuy, bad),
            [
                "arguments.account",
                "arguments.brand",
                "arguments.start_time",
                "arguments.end_time",
                "arguments.packages[0].budget",
                "arguments.packages[0].pricing_option_id",
                "arguments.packages[0].capability_ids",
                "arguments.packages[0].start_time",
            ]
        );
        assert_eq!(
            fields(
                TaskKind::CreateMediaBuy,
                json!({"account": {"account_id": "a"}, "brand": {"domain": "a.com"},
                "start_time": "asap", "end_time": "2026-12-31T00:00:00Z", "proposal_id": "p",
                "total_budget": {"amount": -1, "currency": "USD"}})
            ),
            ["arguments.total_budget"]
        );
        assert_eq!(
            fields(
                TaskKind::SyncCreatives,
                json!({"account": {"account_id": "a"},
                "creatives": [{"creative_id": "c", "name": "n", "assets": {}, "format_id": {}, "format_kind": "x"}]})
            ),
            ["arguments.creatives[0]"]
        );
        assert!(fields(TaskKind::SyncCreatives, json!({"account": {"account_id": "a"},
            "creatives": [{"creative_id": "c", "name": "n", "assets": {}, "format_id": {"id": "f"}}]}))
        .is_empty());
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
        assert_eq!(
            fields(TaskKind::SyncCreatives, json!({"account": {}})),
            ["arguments.account", "arguments.creatives"]
        );
    }
}
