//! Which seller tools poll a task and list tasks, discovered from `tools/list`.

use super::port::SellerCalls;
use crate::foundation::clock::Clock;
use crate::foundation::keys;
use crate::foundation::store::{Store, StoreResult, get_json, set_json};
use crate::records::seller;
use serde::{Deserialize, Serialize};

/// Polling tools in order of preference: AdCP 3.1's tool, then the names 3.0 sellers used.
pub const POLL_TOOLS: [&str; 3] = ["get_task_status", "tasks_get", "tasks/get"];
/// How long a discovered polling tool is trusted before `tools/list` is asked again.
pub const POLL_TOOL_TTL_MS: u64 = 24 * 3_600_000;

/// What `tools/list` told us about a seller, cached per seller for [`POLL_TOOL_TTL_MS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SellerTools {
    /// The polling tool; `None`: the seller offers none.
    pub poll: Option<String>,
    /// The seller offers `list_tasks` (reconciliation runs only then).
    #[serde(default)]
    pub list_tasks: bool,
    pub at_ms: u64,
    /// Not discovered: `tools/list` had no answer and the 3.1 defaults were assumed.
    #[serde(skip)]
    pub assumed: bool,
}

/// Cached per seller; when `tools/list` has no answer now, the 3.1 defaults are assumed, uncached.
pub async fn seller_tools(
    store: &impl Store,
    clock: &dyn Clock,
    calls: &impl SellerCalls,
    seller: &seller::Seller,
) -> StoreResult<SellerTools> {
    let key = keys::poll_tool(&seller.tenant_id, &seller.seller_id);
    let now = clock.now_ms();
    let cached: Option<SellerTools> = get_json(store, &key).await?;
    if let Some(c) = cached.filter(|c| now.saturating_sub(c.at_ms) < POLL_TOOL_TTL_MS) {
        return Ok(c);
    }
    let Ok(names) = calls.list_tools(seller).await else {
        return Ok(SellerTools {
            poll: Some(POLL_TOOLS[0].to_string()),
            list_tasks: false,
            at_ms: now,
            assumed: true,
        });
    };
    let tools = SellerTools {
        poll: POLL_TOOLS
            .iter()
            .find(|t| names.iter().any(|n| n == *t))
            .map(|t| t.to_string()),
        list_tasks: names.iter().any(|n| n == "list_tasks"),
        at_ms: now,
        assumed: false,
    };
    set_json(store, &key, &tools).await?;
    Ok(tools)
}
