//! Our subscription to a seller's agent-level `capabilities.changed` webhooks (AdCP 3.2,
//! `sync_agent_notification_configs`), kept in the seller's record, and the last change
//! notice applied.

use serde::{Deserialize, Serialize};

/// The one subscriber we register per seller registration (the set is scoped to our
/// credentials, so one entry is the whole set).
pub const SUBSCRIBER_ID: &str = "adcp-orchestrator";
/// The only agent-level event we subscribe to.
pub const EVENT: &str = "capabilities.changed";
/// The registration task we speak (`sync_principal`, the broader alternative, is not).
pub const REGISTRATION_TASK: &str = "sync_agent_notification_configs";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionState {
    /// Stored before the call: the seller may have it, and may be challenging our URL.
    Requested,
    /// The seller answered `updated` or `unchanged`.
    Active,
    /// The seller answered `failed` or an error: `error` says why.
    Refused,
    /// The seller could not be asked; the next registration or refresh asks again.
    Unavailable,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilitySubscription {
    /// Where the seller sends the notices: ours, from [`path`].
    pub url: String,
    /// The replacement's key: asking again for the same URL repeats it (same bytes, as the
    /// task requires of retries).
    pub idempotency_key: String,
    pub state: SubscriptionState,
    /// The seller's error code, or our category when it could not be asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub updated_at_ms: u64,
    /// The last authenticated `capabilities.changed` received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_notice: Option<ChangeNotice>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeNotice {
    pub notification_id: String,
    pub capabilities_version: String,
    pub received_at_ms: u64,
    /// Whether the refetched capabilities carried the notified revision.
    pub refreshed: bool,
}

/// The path of a seller registration's agent-level webhooks.
pub fn path(tenant: &str, seller: &str) -> String {
    format!("{PREFIX}{tenant}/{seller}")
}

const PREFIX: &str = "/webhooks/adcp/agent/";

/// `(tenant, seller)` of an agent-level webhook path; `None` for any other path.
pub fn parse_path(path: &str) -> Option<(&str, &str)> {
    path.strip_prefix(PREFIX)?.split_once('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip_and_operation_paths_are_not_agent_paths() {
        assert_eq!(parse_path(&path("t1", "s1")), Some(("t1", "s1")));
        assert_eq!(parse_path("/webhooks/adcp/op_1"), None);
        assert_eq!(parse_path("/webhooks/adcp/agent/t1"), None);
    }
}
