//! Metrics: `increment` counters bumped as things happen, rendered for `GET /metrics` in
//! Prometheus text. Nothing scans the store. Only the writer whose own journal entry the fold
//! applied bumps a transition, so duplicates and re-runs never count twice. Labels come from
//! closed sets (task kinds, statuses, rejection reasons) or a small registry of seller error
//! codes, so rendering knows every key to read.

use crate::foundation::keys;
use crate::foundation::store::{Store, StoreResult, get_json};
use crate::model::status::{OperationStatus, TaskStatus};
use crate::model::task::TaskKind;
use crate::records::tick_report::TickReport;
use std::fmt::Write;

/// Upper bounds (seconds) of the submitted-to-terminal histogram: 1 min … 7 days.
pub const APPROVAL_BUCKETS_S: [u64; 9] = [
    60, 300, 900, 3_600, 14_400, 43_200, 86_400, 259_200, 604_800,
];

/// Why a webhook was refused (a closed set: the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    UnknownOperation,
    BadRequest,
    Unauthenticated,
    ModeMismatch,
    Replayed,
    Conflict,
}

impl Rejection {
    pub const ALL: [Rejection; 6] = [
        Rejection::UnknownOperation,
        Rejection::BadRequest,
        Rejection::Unauthenticated,
        Rejection::ModeMismatch,
        Rejection::Replayed,
        Rejection::Conflict,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::UnknownOperation => "unknown_operation",
            Rejection::BadRequest => "bad_request",
            Rejection::Unauthenticated => "unauthenticated",
            Rejection::ModeMismatch => "mode_mismatch",
            Rejection::Replayed => "replayed",
            Rejection::Conflict => "conflict",
        }
    }
}

pub async fn operation_created(store: &impl Store, task: &str) -> StoreResult<()> {
    store
        .increment(&keys::metric("created", &[task]), 1)
        .await
        .map(drop)
}

/// The writer that applied `from → to` reports it: two increments (into `to`, out of
/// `from`), plus two for a seller outcome (histogram bucket and sum).
pub async fn transition(
    store: &impl Store,
    task: &str,
    from: OperationStatus,
    to: OperationStatus,
    created_at_ms: u64,
    now_ms: u64,
) -> StoreResult<()> {
    store
        .increment(&keys::metric("transitions", &[task, to.as_str()]), 1)
        .await?;
    store
        .increment(&keys::metric("left", &[task, from.as_str()]), 1)
        .await?;
    if to.is_authoritative_terminal() {
        let secs = now_ms.saturating_sub(created_at_ms) / 1000;
        let le = APPROVAL_BUCKETS_S
            .iter()
            .find(|le| secs <= **le)
            .map_or_else(|| "inf".to_string(), u64::to_string);
        store
            .increment(&keys::metric("approval_bucket", &[task, &le]), 1)
            .await?;
        store
            .increment(&keys::metric("approval_sum_s", &[task]), secs as i64)
            .await?;
    }
    Ok(())
}

pub async fn webhook_rejected(store: &impl Store, reason: Rejection) -> StoreResult<()> {
    store
        .increment(&keys::metric("webhook_rejected", &[reason.as_str()]), 1)
        .await
        .map(drop)
}

/// A seller call failed with this label: an AdCP error code, `TRANSPORT` or `other` (the
/// caller keeps the set closed, see `seller::guard`). Each label is recorded once in a small
/// registry that rendering reads.
pub async fn seller_error(store: &impl Store, code: &str) -> StoreResult<()> {
    let code: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect();
    if store
        .increment(&keys::metric("seller_error_seen", &[&code]), 1)
        .await?
        == 1
    {
        let n = store
            .increment(&keys::metric("seller_error_codes", &[]), 1)
            .await?;
        store
            .set(
                &keys::metric("seller_error_code", &[&n.to_string()]),
                code.as_bytes(),
            )
            .await?;
    }
    store
        .increment(&keys::metric("seller_errors", &[&code]), 1)
        .await
        .map(drop)
}

/// A repair the invariant auditor made (`invariant` from a closed set).
pub async fn audit_repair(store: &impl Store, invariant: &str) -> StoreResult<()> {
    store
        .increment(&keys::metric("audit_repairs", &[invariant]), 1)
        .await
        .map(drop)
}

/// The invariants the sweep's auditor checks (`sweep::audit`).
pub const AUDIT_INVARIANTS: [&str; 5] = ["due", "listed", "seller_index", "lease", "counters"];

pub async fn render(
    store: &impl Store,
    breaker: &crate::schedule::breaker::BreakerConfig,
    now_ms: u64,
) -> StoreResult<String> {
    let mut out = Exposition::default();
    let read = |k: String| async move { store.increment(&k, 0).await };
    let tasks: Vec<&str> = TaskKind::ALL.iter().map(|t| t.name()).collect();
    let statuses: Vec<&str> = TaskStatus::ALL
        .iter()
        .map(|s| s.as_str())
        .chain([
            OperationStatus::PENDING_DISPATCH,
            OperationStatus::AWAITING_DECISION,
            OperationStatus::TIMED_OUT,
            OperationStatus::CANCELED_LOCALLY,
        ])
        .collect();

    out.family(
        "adcp_operations_created_total",
        "counter",
        "Operations stored, by task.",
    );
    for t in &tasks {
        out.sample(
            "adcp_operations_created_total",
            &[("task", t)],
            read(keys::metric("created", &[t])).await?,
        );
    }
    out.family(
        "adcp_operation_transitions_total",
        "counter",
        "Applied status changes, by task and new status.",
    );
    for t in &tasks {
        for s in &statuses {
            let v = read(keys::metric("transitions", &[t, s])).await?;
            out.sample(
                "adcp_operation_transitions_total",
                &[("task", t), ("status", s)],
                v,
            );
        }
    }
    let mut gauges = Vec::new();
    for t in &tasks {
        gauges.push((*t, crate::records::gauges::read_task(store, t).await?));
    }
    out.family(
        "adcp_operations",
        "gauge",
        "Operations stored in each status, by task (corrected by the auditor's passes).",
    );
    for (t, readings) in &gauges {
        for (status, r) in readings {
            out.sample(
                "adcp_operations",
                &[("task", t), ("status", status.as_str())],
                r.value,
            );
        }
    }
    out.family(
        "adcp_operations_open",
        "gauge",
        "Operations without an outcome yet (pending), by task.",
    );
    for (t, readings) in &gauges {
        let open = readings
            .iter()
            .filter(|(status, _)| !status.is_closed())
            .map(|(_, r)| r.value)
            .sum();
        out.sample("adcp_operations_open", &[("task", t)], open);
    }
    out.family(
        "adcp_operation_outcome_seconds",
        "histogram",
        "Time from creation to the seller's terminal status.",
    );
    for t in &tasks {
        let mut cumulative = 0;
        for le in APPROVAL_BUCKETS_S {
            cumulative += read(keys::metric("approval_bucket", &[t, &le.to_string()])).await?;
            out.sample(
                "adcp_operation_outcome_seconds_bucket",
                &[("task", t), ("le", &le.to_string())],
                cumulative,
            );
        }
        let count = cumulative + read(keys::metric("approval_bucket", &[t, "inf"])).await?;
        out.sample(
            "adcp_operation_outcome_seconds_bucket",
            &[("task", t), ("le", "+Inf")],
            count,
        );
        out.sample(
            "adcp_operation_outcome_seconds_sum",
            &[("task", t)],
            read(keys::metric("approval_sum_s", &[t])).await?,
        );
        out.sample(
            "adcp_operation_outcome_seconds_count",
            &[("task", t)],
            count,
        );
    }
    out.family(
        "adcp_webhook_rejections_total",
        "counter",
        "Webhooks refused, by reason.",
    );
    for r in Rejection::ALL {
        let v = read(keys::metric("webhook_rejected", &[r.as_str()])).await?;
        out.sample(
            "adcp_webhook_rejections_total",
            &[("reason", r.as_str())],
            v,
        );
    }
    out.family(
        "adcp_audit_repairs_total",
        "counter",
        "Broken invariants the auditor found and repaired, by invariant.",
    );
    for invariant in AUDIT_INVARIANTS {
        out.sample(
            "adcp_audit_repairs_total",
            &[("invariant", invariant)],
            read(keys::metric("audit_repairs", &[invariant])).await?,
        );
    }
    out.family(
        "adcp_seller_errors_total",
        "counter",
        "Failed seller calls, by AdCP error code (TRANSPORT: no answer).",
    );
    let codes = read(keys::metric("seller_error_codes", &[])).await?;
    for n in 1..=codes.max(0) {
        if let Some(code) = store
            .get(&keys::metric("seller_error_code", &[&n.to_string()]))
            .await?
        {
            let code = String::from_utf8_lossy(&code).into_owned();
            let v = read(keys::metric("seller_errors", &[&code])).await?;
            out.sample("adcp_seller_errors_total", &[("code", &code)], v);
        }
    }

    out.family(
        "adcp_seller_breaker_state",
        "gauge",
        "Circuit breaker per seller: 0 closed, 1 half-open, 2 open.",
    );
    for s in crate::records::seller::all(store).await? {
        let view = crate::schedule::breaker::Breaker::new(breaker, &s.tenant_id, &s.seller_id)
            .state(store, now_ms)
            .await?;
        let v = match view.state {
            crate::schedule::breaker::StateClass::Closed => 0,
            crate::schedule::breaker::StateClass::HalfOpen => 1,
            crate::schedule::breaker::StateClass::Open => 2,
        };
        out.sample(
            "adcp_seller_breaker_state",
            &[("tenant", &s.tenant_id), ("seller", &s.seller_id)],
            v,
        );
    }

    let last: Option<TickReport> = get_json(store, keys::SWEEP_LAST).await?;
    let last = last.unwrap_or_default();
    out.family(
        "adcp_sweep_last_finished_seconds",
        "gauge",
        "Unix time the last sweep tick finished.",
    );
    out.sample(
        "adcp_sweep_last_finished_seconds",
        &[],
        (last.finished_at_ms / 1000) as i64,
    );
    out.family(
        "adcp_sweep_last_duration_seconds",
        "gauge",
        "Duration of the last sweep tick.",
    );
    let ms = last.finished_at_ms.saturating_sub(last.started_at_ms);
    let _ = writeln!(
        out.0,
        "adcp_sweep_last_duration_seconds {}.{:03}",
        ms / 1000,
        ms % 1000
    );
    out.family(
        "adcp_sweep_last_touched",
        "gauge",
        "Operations acted on by the last sweep tick.",
    );
    out.sample("adcp_sweep_last_touched", &[], last.touched as i64);
    out.family(
        "adcp_sweep_last_due",
        "gauge",
        "Due entries read by the last sweep tick.",
    );
    out.sample("adcp_sweep_last_due", &[], last.due as i64);
    Ok(out.0)
}

/// The Prometheus text exposition, written family by family.
#[derive(Default)]
struct Exposition(String);

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: i64) {
        let out = &mut self.0;
        out.push_str(name);
        if !labels.is_empty() {
            out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(out, "{k}=\"{v}\"");
            }
            out.push('}');
        }
        let _ = writeln!(out, " {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::foundation::store::MemoryStore;
    use futures::executor::block_on;

    #[test]
    fn counts_render_as_prometheus_text() {
        let s = MemoryStore::new();
        block_on(async {
            operation_created(&s, "create_media_buy").await.unwrap();
            operation_created(&s, "create_media_buy").await.unwrap();
            let sub = OperationStatus::Seller(TaskStatus::Submitted);
            let done = OperationStatus::Seller(TaskStatus::Completed);
            transition(
                &s,
                "create_media_buy",
                OperationStatus::PendingDispatch,
                sub,
                0,
                1_000,
            )
            .await
            .unwrap();
            transition(&s, "create_media_buy", sub, done, 0, 120_000)
                .await
                .unwrap();
            webhook_rejected(&s, Rejection::Unauthenticated)
                .await
                .unwrap();
            let text = render(&s, &Default::default(), 0).await.unwrap();
            for line in [
                "adcp_operations_created_total{task=\"create_media_buy\"} 2",
                "adcp_operations_open{task=\"create_media_buy\"} 1",
                "adcp_operations{task=\"create_media_buy\",status=\"pending_dispatch\"} 1",
                "adcp_operations{task=\"create_media_buy\",status=\"completed\"} 1",
                "adcp_operations{task=\"create_media_buy\",status=\"submitted\"} 0",
                "adcp_operation_transitions_total{task=\"create_media_buy\",status=\"completed\"} 1",
                "adcp_operation_outcome_seconds_bucket{task=\"create_media_buy\",le=\"60\"} 0",
                "adcp_operation_outcome_seconds_bucket{task=\"create_media_buy\",le=\"300\"} 1",
                "adcp_operation_outcome_seconds_bucket{task=\"create_media_buy\",le=\"+Inf\"} 1",
                "adcp_operation_outcome_seconds_sum{task=\"create_media_buy\"} 120",
                "adcp_webhook_rejections_total{reason=\"unauthenticated\"} 1",
            ] {
                assert!(text.contains(line), "missing `{line}` in\n{text}");
            }
        });
    }
}
