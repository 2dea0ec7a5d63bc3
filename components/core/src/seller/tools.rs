//! Which seller tools poll a task and list tasks, discovered from `tools/list`.

use super::port::{ListedTool, SellerCalls};
use crate::foundation::clock::Clock;
use crate::foundation::keys;
use crate::foundation::store::{Store, StoreResult, get_json, set_json};
use crate::records::seller;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Polling tools in order of preference: AdCP 3.1's tool, the names 3.0 sellers used, and
/// `get_task`, which sellers built on older SDKs expose. A name alone is not enough: the
/// tool must take a `task_id` and, if it declares what it returns, return a `status`.
pub const POLL_TOOLS: [&str; 4] = ["get_task_status", "tasks_get", "tasks/get", "get_task"];
/// How long a discovered polling tool is trusted before `tools/list` is asked again.
pub const POLL_TOOL_TTL_MS: u64 = 24 * 3_600_000;

/// What `tools/list` told us about a seller, cached per seller for [`POLL_TOOL_TTL_MS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SellerTools {
    /// The polling tool; `None`: the seller offers none.
    pub poll: Option<String>,
    /// The arguments the polling tool declares; `None`: it declares none, so it gets all of
    /// ours (a seller that refuses unknown arguments would refuse the rest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_takes: Option<Vec<String>>,
    /// The seller offers `list_tasks` (reconciliation runs only then).
    #[serde(default)]
    pub list_tasks: bool,
    pub at_ms: u64,
    /// Not discovered: `tools/list` had no answer and the 3.1 defaults were assumed.
    #[serde(skip)]
    pub assumed: bool,
}

impl SellerTools {
    /// `args` for the polling tool: without the ones it does not declare.
    pub fn poll_arguments(&self, mut args: Value) -> Value {
        if let (Some(takes), Some(map)) = (&self.poll_takes, args.as_object_mut()) {
            map.retain(|k, _| takes.iter().any(|t| t == k));
        }
        args
    }
}

/// The polling tool among the listed ones, by name and schema.
fn poll_tool(listed: &[ListedTool]) -> Option<&ListedTool> {
    let polls = |t: &&ListedTool| {
        let takes_task = t
            .takes
            .as_ref()
            .is_none_or(|p| p.iter().any(|f| f == "task_id"));
        let gives_status = t
            .returns
            .as_ref()
            .is_none_or(|p| p.iter().any(|f| f == "status"));
        takes_task && gives_status
    };
    POLL_TOOLS
        .iter()
        .find_map(|name| listed.iter().filter(polls).find(|t| t.name == *name))
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
    let Ok(listed) = calls.list_tools(seller).await else {
        return Ok(SellerTools {
            poll: Some(POLL_TOOLS[0].to_string()),
            poll_takes: None,
            list_tasks: false,
            at_ms: now,
            assumed: true,
        });
    };
    let poll = poll_tool(&listed);
    let tools = SellerTools {
        poll: poll.map(|t| t.name.clone()),
        poll_takes: poll.and_then(|t| t.takes.clone()),
        list_tasks: listed.iter().any(|t| t.name == "list_tasks"),
        at_ms: now,
        assumed: false,
    };
    set_json(store, &key, &tools).await?;
    Ok(tools)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str, takes: Option<&[&str]>, returns: Option<&[&str]>) -> ListedTool {
        let list = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        ListedTool {
            name: name.into(),
            takes: takes.map(list),
            returns: returns.map(list),
        }
    }

    #[test]
    fn the_polling_tool_is_found_by_name_and_schema() {
        let get_task = tool("get_task", Some(&["task_id"]), Some(&["task_id", "status"]));
        assert_eq!(poll_tool(std::slice::from_ref(&get_task)), Some(&get_task));
        // The 3.1 tool is preferred to `get_task` wherever it is listed.
        let status = tool("get_task_status", None, None);
        assert_eq!(
            poll_tool(&[get_task.clone(), status.clone()]),
            Some(&status)
        );
        // A `get_task` that takes no task id, or returns no status, polls nothing.
        assert_eq!(poll_tool(&[tool("get_task", Some(&["id"]), None)]), None);
        assert_eq!(
            poll_tool(&[tool("get_task", Some(&["task_id"]), Some(&["task"]))]),
            None
        );
        // Taking a task id is not enough without the name.
        assert_eq!(
            poll_tool(&[tool("get_media_buys", Some(&["task_id"]), None)]),
            None
        );
    }

    #[test]
    fn a_polling_tool_gets_only_the_arguments_it_declares() {
        let args = serde_json::json!({"task_id": "t1", "include_result": true, "account": {"account_id": "a"}});
        let strict = SellerTools {
            poll: Some("get_task".into()),
            poll_takes: Some(vec!["task_id".into(), "account".into()]),
            list_tasks: false,
            at_ms: 0,
            assumed: false,
        };
        assert_eq!(
            strict.poll_arguments(args.clone()),
            serde_json::json!({"task_id": "t1", "account": {"account_id": "a"}})
        );
        let open = SellerTools {
            poll_takes: None,
            ..strict
        };
        assert_eq!(open.poll_arguments(args.clone()), args);
    }

    #[test]
    fn a_cached_entry_stored_before_schemas_were_read_sends_every_argument() {
        let old: SellerTools =
            serde_json::from_str(r#"{"poll":"get_task_status","list_tasks":true,"at_ms":5}"#)
                .unwrap();
        assert_eq!(old.poll_takes, None);
    }
}
