//! The seller-call port: how the core asks a seller (or a governance agent) to run a tool.

use crate::foundation::transport::TransportError;
use crate::records::seller::Seller;
use serde_json::Value;

/// How a seller call can fail, split by what the caller must do next.
#[derive(Debug, Clone, PartialEq)]
pub enum CallFailure {
    /// No usable HTTP answer.
    Transport(TransportError),
    /// The seller answered with an AdCP error.
    Seller(SellerError),
    /// Not sent: the seller's circuit breaker is open until then.
    Deferred { until_ms: u64 },
}

/// An AdCP error from the seller, classified by its `recovery`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SellerError {
    pub code: String,
    pub message: String,
    pub recovery: Recovery,
    pub retry_after_s: Option<u32>,
    /// The seller's own AdCP error about this request; `false` for an HTTP or JSON-RPC
    /// failure without one, which a proxy or gateway in front of the seller can produce.
    pub adcp: bool,
}

/// AdCP's recovery classes (`enums/error-code.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Retry later with the same key and bytes.
    Transient,
    /// The request must change: never resent unchanged.
    Correctable,
    /// Needs a human.
    Terminal,
}

/// Calls a seller's tool and returns the extracted AdCP payload (MCP `structuredContent`
/// or its text equivalent). Implemented over MCP by [`crate::seller::mcp::McpSellerCalls`].
#[allow(async_fn_in_trait)]
pub trait SellerCalls {
    async fn call(
        &self,
        seller: &Seller,
        tool: &str,
        arguments: Value,
    ) -> Result<Value, CallFailure>;

    /// Calls from now on must be over by `until_ms` (a sweep tick's share for the seller),
    /// or, with `None`, only by each call's own limits.
    fn set_deadline(&self, _until_ms: Option<u64>) {}

    /// The seller's tools (MCP `tools/list`); if it cannot list, the 3.1 polling tool.
    async fn list_tools(&self, _seller: &Seller) -> Result<Vec<ListedTool>, CallFailure> {
        Ok(vec![ListedTool::named("get_task_status")])
    }
}

/// A tool as `tools/list` describes it: its name and the properties its schemas declare.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListedTool {
    pub name: String,
    /// `inputSchema.properties`; `None`: none declared.
    pub takes: Option<Vec<String>>,
    /// `outputSchema.properties`; `None`: no output schema.
    pub returns: Option<Vec<String>>,
}

impl ListedTool {
    pub fn named(name: &str) -> ListedTool {
        ListedTool {
            name: name.to_string(),
            ..ListedTool::default()
        }
    }

    /// Read from one entry of `tools/list`'s `tools`; `None` without a name.
    pub fn from_listing(tool: &Value) -> Option<ListedTool> {
        let properties = |schema: &str| {
            let props = tool.get(schema)?.get("properties")?.as_object()?;
            Some(props.keys().cloned().collect::<Vec<_>>())
        };
        Some(ListedTool {
            name: tool.get("name")?.as_str()?.to_string(),
            takes: properties("inputSchema"),
            returns: properties("outputSchema"),
        })
    }
}
