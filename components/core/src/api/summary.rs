//! `GET /api/v1/summary`: the tenant's health at a glance, from counters kept as things
//! happen (see `records::summary`).

use super::env::Env;
use crate::foundation::http::{ApiResult, json_response};
use crate::foundation::store::Store;
use crate::foundation::transport::Transport;
use crate::records::seller;
use crate::records::summary;
use crate::records::tenant::Tenant;
use crate::seller::port::SellerCalls;
use http::StatusCode;
use serde_json::{Value, json};

/// Sellers whose error counts one summary reports (the newest registrations).
const MAX_SELLERS: usize = 200;

pub async fn get<S: Store, C: SellerCalls, T: Transport>(
    env: &Env<'_, S, C, T>,
    tenant: &Tenant,
) -> ApiResult {
    let tid = &tenant.tenant_id;
    let (sellers, _) = seller::listed_ids(env.store, tid, None, MAX_SELLERS).await?;
    let s = summary::read(env.store, tid, &sellers).await?;
    let pairs = |v: &[(String, i64)], name: &str| -> Vec<Value> {
        v.iter()
            .map(|(k, n)| json!({ name: k, "count": n }))
            .collect()
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "operations_by_status": s.operations_by_status,
            "open_operations": s.operations_by_status.iter().filter(|c| c.open).map(|c| c.count).sum::<i64>(),
            "webhook_rejections": pairs(&s.webhook_rejections, "reason"),
            "seller_errors": pairs(&s.seller_errors, "seller_id"),
            "at_ms": env.clock.now_ms(),
        }),
    ))
}
