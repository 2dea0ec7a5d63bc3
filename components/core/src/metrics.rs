//! `GET /metrics`: Prometheus text exposition.

use crate::keys;
use crate::store::{Store, StoreResult, get_json};
use crate::sweep::TickReport;
use std::fmt::Write;

/// Renders the metrics page.
pub async fn render(store: &impl Store) -> StoreResult<String> {
    let mut out = String::new();
    let last: Option<TickReport> = get_json(store, keys::SWEEP_LAST).await?;
    let _ = writeln!(
        out,
        "# HELP adcp_sweep_last_finished_seconds Unix time the last sweep tick finished."
    );
    let _ = writeln!(out, "# TYPE adcp_sweep_last_finished_seconds gauge");
    let finished = last.map_or(0.0, |r| r.finished_at_ms as f64 / 1000.0);
    let _ = writeln!(out, "adcp_sweep_last_finished_seconds {finished}");
    Ok(out)
}
