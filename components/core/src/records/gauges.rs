//! The status gauges, operations by task and status (`adcp_operations` in `/metrics`) and a
//! tenant's operations by status (`GET /api/v1/summary`), and how the auditor makes them
//! equal to the stored operations.
//!
//! A gauge is read from `increment` counters bumped as changes are applied (what entered the
//! status, what left it), so it is live but counts **at most once**: a crash or a lost answer
//! between an entry's effects claim and its increments leaves it off. Each gauge also has an
//! adjustment counter. Over a full pass the auditor counts the stored operations per gauge;
//! when none of a gauge's counters moved during the pass (nothing entered or left it), that
//! count is exact, and the auditor adds the difference to the adjustment. So every gauge
//! equals the stored operations after the first full pass in which its status saw no change;
//! operations removed by retention leave it at that pass too.

use crate::foundation::keys;
use crate::foundation::store::{Store, StoreResult};
use crate::model::status::OperationStatus;
use crate::model::task::TaskKind;
use std::collections::BTreeMap;

/// A gauge's value, and the sum of the monotonic counters it is derived from: equal sums at
/// two times mean nothing entered or left it in between.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reading {
    pub value: i64,
    pub moves: i64,
}

/// The gauge of `task` operations in `status`.
pub fn task_gauge(task: &str, status: OperationStatus) -> String {
    format!("task:{task}:{status}")
}

/// The gauge of the tenant's operations in `status`.
pub fn tenant_gauge(tenant: &str, status: OperationStatus) -> String {
    format!("tenant:{tenant}:{status}")
}

/// The gauges an operation counts in, as stored now.
pub fn gauges_of(
    task: &str,
    tenant: &str,
    status: OperationStatus,
    in_summary: bool,
) -> Vec<String> {
    let mut out = vec![task_gauge(task, status)];
    if in_summary {
        out.push(tenant_gauge(tenant, status));
    }
    out
}

/// Every status gauge of `task`, in [`OperationStatus::all`] order.
pub async fn read_task(
    store: &impl Store,
    task: &str,
) -> StoreResult<Vec<(OperationStatus, Reading)>> {
    let mut out = Vec::new();
    for status in OperationStatus::all() {
        let st = status.as_str();
        let entered = if status == OperationStatus::PendingDispatch {
            store
                .increment(&keys::metric("created", &[task]), 0)
                .await?
        } else {
            store
                .increment(&keys::metric("transitions", &[task, st]), 0)
                .await?
        };
        let left = store
            .increment(&keys::metric("left", &[task, st]), 0)
            .await?;
        let adjust = store
            .increment(&keys::metric("adjust", &[task, st]), 0)
            .await?;
        let reading = Reading {
            value: entered - left + adjust,
            moves: entered + left,
        };
        out.push((status, reading));
    }
    Ok(out)
}

/// Every status gauge of the tenant, in [`OperationStatus::all`] order. One read per (from, to) pair
/// the state machine can take.
pub async fn read_tenant(
    store: &impl Store,
    tenant: &str,
) -> StoreResult<Vec<(OperationStatus, Reading)>> {
    let statuses = OperationStatus::all();
    let mut readings = Vec::with_capacity(statuses.len());
    for s in &statuses {
        let created = store
            .increment(&keys::summary_created(tenant, s.as_str()), 0)
            .await?;
        let adjust = store
            .increment(&keys::summary_adjust(tenant, s.as_str()), 0)
            .await?;
        readings.push(Reading {
            value: created + adjust,
            moves: created,
        });
    }
    for (i, from) in statuses.iter().enumerate() {
        // A seller's terminal status is final: nothing moves out of it.
        if from.is_authoritative_terminal() {
            continue;
        }
        for (j, to) in statuses.iter().enumerate() {
            if i == j {
                continue;
            }
            let key = keys::summary_moved(tenant, from.as_str(), to.as_str());
            let n = store.increment(&key, 0).await?;
            readings[i].value -= n;
            readings[i].moves += n;
            readings[j].value += n;
            readings[j].moves += n;
        }
    }
    Ok(statuses.into_iter().zip(readings).collect())
}

/// Every task gauge and every gauge of `tenants`, by gauge name.
pub async fn read_all(
    store: &impl Store,
    tenants: &[String],
) -> StoreResult<BTreeMap<String, Reading>> {
    let mut out = BTreeMap::new();
    for task in TaskKind::ALL {
        for (status, r) in read_task(store, task.name()).await? {
            out.insert(task_gauge(task.name(), status), r);
        }
    }
    for tenant in tenants {
        for (status, r) in read_tenant(store, tenant).await? {
            out.insert(tenant_gauge(tenant, status), r);
        }
    }
    Ok(out)
}

/// Adds `delta` to a gauge's adjustment. Names not made by this module are ignored.
pub async fn adjust(store: &impl Store, gauge: &str, delta: i64) -> StoreResult<()> {
    let (kind, rest) = gauge.split_once(':').unwrap_or_default();
    let Some((owner, status)) = rest.rsplit_once(':') else {
        return Ok(());
    };
    let key = match kind {
        "task" => keys::metric("adjust", &[owner, status]),
        "tenant" => keys::summary_adjust(owner, status),
        _ => return Ok(()),
    };
    store.increment(&key, delta).await.map(drop)
}

/// Makes each gauge whose counters did not move since `start` equal `counted` (the stored
/// operations the auditor's pass found in it). Returns the gauges corrected.
pub async fn correct(
    store: &impl Store,
    start: &BTreeMap<String, i64>,
    end: &BTreeMap<String, Reading>,
    counted: &BTreeMap<String, i64>,
) -> StoreResult<Vec<String>> {
    let mut corrected = Vec::new();
    for (gauge, reading) in end {
        if start.get(gauge) != Some(&reading.moves) {
            continue;
        }
        let truth = counted.get(gauge).copied().unwrap_or(0);
        if reading.value != truth {
            adjust(store, gauge, truth - reading.value).await?;
            corrected.push(gauge.clone());
        }
    }
    Ok(corrected)
}
