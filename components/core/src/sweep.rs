//! The sweep: one tick of the orchestrator's background work, run by the cron component
//! or by `POST /internal/sweep`. Ticks are idempotent and may overlap.

use crate::clock::Clock;
use crate::keys;
use crate::store::{Store, StoreResult, set_json};
use serde::{Deserialize, Serialize};

/// What one tick did, kept at `sweep:last` and returned to HTTP callers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TickReport {
    pub trigger: String,
    pub scheduled_at_ms: u64,
    pub started_at_ms: u64,
    pub finished_at_ms: u64,
}

/// Runs one tick. `scheduled_at_ms` is the trigger's own time (the cron metadata), which may
/// lag the clock.
pub async fn tick(
    store: &impl Store,
    clock: &dyn Clock,
    trigger: &str,
    scheduled_at_ms: u64,
) -> StoreResult<TickReport> {
    let started_at_ms = clock.now_ms();
    let report = TickReport {
        trigger: trigger.to_string(),
        scheduled_at_ms,
        started_at_ms,
        finished_at_ms: clock.now_ms(),
    };
    set_json(store, keys::SWEEP_LAST, &report).await?;
    Ok(report)
}
