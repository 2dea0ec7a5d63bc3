//! The sweep's tunables (the `sweep_config` Spin variable) and their validation.

use crate::schedule::backoff::{Deadlines, PollPolicy};
use crate::schedule::breaker::BreakerConfig;
use crate::schedule::due::DueConfig;
use crate::schedule::lease::LeaseConfig;
use crate::schedule::retention::Retention;
use serde::{Deserialize, Serialize};

/// All with production defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SweepConfig {
    pub due: DueConfig,
    pub lease: LeaseConfig,
    pub poll: PollPolicy,
    pub deadlines: Deadlines,
    pub breaker: BreakerConfig,
    pub retention: Retention,
    /// Stop taking new work after this long in one tick (the rest waits for the next).
    pub budget_ms: u64,
    /// The longest one due operation's seller calls may take in a tick (0: 15 s), and never
    /// past its seller's share of the budget.
    pub call_deadline_ms: u64,
}

impl SweepConfig {
    pub fn budget_ms(&self) -> u64 {
        if self.budget_ms == 0 {
            20_000
        } else {
            self.budget_ms
        }
    }

    pub fn call_deadline_ms(&self) -> u64 {
        if self.call_deadline_ms == 0 {
            15_000
        } else {
            self.call_deadline_ms
        }
    }
}

impl SweepConfig {
    /// `sweep_config` is JSON overriding any defaults (`{}` keeps all), e.g.
    /// `{"deadlines": {"tasks": {"create_media_buy": 7200000}}, "breaker": {"failure_threshold": 3}}`.
    /// Unknown fields and values that would stop the sweep from working are refused.
    pub fn parse(json: &str) -> Result<SweepConfig, String> {
        let json = json.trim();
        let c: SweepConfig = if json.is_empty() {
            SweepConfig::default()
        } else {
            // From bytes, as every other read: one JSON reader in the `.wasm`.
            serde_json::from_slice(json.as_bytes()).map_err(|e| format!("sweep_config: {e}"))?
        };
        let mut wrong = Vec::new();
        let mut need = |ok: bool, what: &str| {
            if !ok {
                wrong.push(what.to_string());
            }
        };
        // The index layout is shared by every component (the webhook component and buyer
        // notifications file hints with the defaults): only the per-tick limits may change.
        let limits_only = DueConfig {
            max_buckets: c.due.max_buckets,
            max_entries: c.due.max_entries,
            initial_lookback_ms: c.due.initial_lookback_ms,
            ..Default::default()
        };
        need(
            c.due == limits_only,
            "due: only max_buckets, max_entries and initial_lookback_ms may be set",
        );
        need(c.lease.slot_ms > 0, "lease.slot_ms must be positive");
        need(
            c.lease.margin_ms < c.lease.min_hold_ms && c.lease.min_hold_ms <= c.lease.slot_ms,
            "lease: margin_ms < min_hold_ms <= slot_ms",
        );
        need(
            c.breaker.failure_threshold > 0,
            "breaker.failure_threshold must be positive",
        );
        need(
            c.deadlines.default_ms > 0 && c.deadlines.tasks.values().all(|d| *d > 0),
            "deadlines must be positive",
        );
        need(
            c.retention.terminal_operation_ms >= c.retention.dedup_window_ms(),
            "retention.terminal_operation_ms must cover the webhook de-duplication window",
        );
        // De-duplication and nonce windows are the webhook component's, kept per delivery.
        let kept = Retention {
            terminal_operation_ms: c.retention.terminal_operation_ms,
            ..Default::default()
        };
        need(
            c.retention == kept,
            "retention: only terminal_operation_ms may be set",
        );
        if wrong.is_empty() {
            Ok(c)
        } else {
            Err(format!("sweep_config: {}", wrong.join("; ")))
        }
    }
}
