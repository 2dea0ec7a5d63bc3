//! What the last sweep tick did, kept at `sweep:last` for `/metrics` and HTTP callers.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TickReport {
    pub trigger: String,
    pub scheduled_at_ms: u64,
    pub started_at_ms: u64,
    pub finished_at_ms: u64,
    /// Due hints read from the index.
    pub due: usize,
    /// Operations acted on (dispatched, polled, expired).
    pub touched: usize,
    /// Hints skipped because another sweep held the operation.
    pub busy: usize,
    pub notifications: usize,
    pub backlog: bool,
    /// Seller tasks listed by reconciliation in this tick (0 when it was not this tick's turn).
    #[serde(default)]
    pub reconciled_tasks: usize,
    /// Untracked seller tasks adopted as operations.
    #[serde(default)]
    pub adopted: usize,
    /// Tracked open tasks the sellers no longer list, filed for an immediate poll.
    #[serde(default)]
    pub repolled: usize,
    /// Closed operations removed by retention.
    #[serde(default)]
    pub purged: usize,
    /// Listed operations the invariant auditor checked, and the repairs it made.
    #[serde(default)]
    pub audited: usize,
    #[serde(default)]
    pub audit_repairs: usize,
    /// Another tick held the sweep: this one did nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overlapped: bool,
}
