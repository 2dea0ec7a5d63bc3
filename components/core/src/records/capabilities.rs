//! A seller's `get_adcp_capabilities`, kept in its record, and what we decide from it: whether
//! mutating calls are safe to retry (the replay window; AdCP clients MUST fail closed when it
//! is undeclared) and which webhook authentication to request.

use crate::model::operation::WebhookMode;
use crate::records::capability_subscription::EVENT;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The replay window bounds the spec allows (`replay_ttl_seconds`: 1 h to 7 days).
pub const REPLAY_TTL_MIN_S: u64 = 3_600;
const REPLAY_TTL_MAX_S: u64 = 604_800;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub major_versions: Vec<u64>,
    #[serde(default)]
    pub supported_versions: Vec<String>,
    #[serde(default)]
    pub supported_protocols: Vec<String>,
    /// `None` when the seller declares no replay protection (or an out-of-range window):
    /// mutating calls are then refused.
    pub replay_ttl_seconds: Option<u64>,
    /// The seller signs webhooks with the AdCP RFC 9421 profile.
    pub webhook_signing: bool,
    /// The seller can fall back to legacy HMAC-SHA256 webhooks.
    pub legacy_hmac_fallback: bool,
    /// How long the seller keeps retrying a webhook delivery, when declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_retry_horizon_seconds: Option<u64>,
    /// `adcp.capability_changes.capabilities_version` (AdCP 3.2): the document's revision, the
    /// fence a `capabilities.changed` notice is compared with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities_version: Option<String>,
    /// The task that registers `capabilities.changed` subscribers, when the seller fires them
    /// (`adcp.capability_changes.notifications`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_notifications: Option<String>,
    pub fetched_at_ms: u64,
}

impl Capabilities {
    /// Reads a `get_adcp_capabilities` response; `Err` names what is missing.
    pub fn parse(payload: &Value, now_ms: u64) -> Result<Capabilities, String> {
        let adcp = payload
            .get("adcp")
            .and_then(Value::as_object)
            .ok_or("no `adcp` block")?;
        let major_versions: Vec<u64> = adcp
            .get("major_versions")
            .and_then(Value::as_array)
            .map(|v| v.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        if major_versions.is_empty() {
            return Err("no `adcp.major_versions`".into());
        }
        let strings = |v: Option<&Value>| -> Vec<String> {
            v.and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        let idem = adcp.get("idempotency");
        let replay_ttl_seconds = idem
            .filter(|i| i.get("supported").and_then(Value::as_bool) == Some(true))
            .and_then(|i| i.get("replay_ttl_seconds"))
            .and_then(Value::as_u64)
            .filter(|t| (REPLAY_TTL_MIN_S..=REPLAY_TTL_MAX_S).contains(t));
        let changes = adcp.get("capability_changes");
        let notifications = changes
            .and_then(|c| c.get("notifications"))
            .filter(|n| n.get("supported").and_then(Value::as_bool) == Some(true))
            .filter(|n| {
                n.get("event_types").is_none()
                    || strings(n.get("event_types")).iter().any(|e| e == EVENT)
            });
        let signing = payload.get("webhook_signing");
        let flag = |k: &str| {
            signing
                .and_then(|s| s.get(k))
                .and_then(Value::as_bool)
                .unwrap_or(false)
        };
        Ok(Capabilities {
            major_versions,
            supported_versions: strings(adcp.get("supported_versions")),
            supported_protocols: strings(payload.get("supported_protocols")),
            replay_ttl_seconds,
            webhook_signing: flag("supported"),
            legacy_hmac_fallback: flag("legacy_hmac_fallback"),
            delivery_retry_horizon_seconds: signing
                .and_then(|s| s.get("delivery_retry_horizon_seconds"))
                .and_then(Value::as_u64),
            capabilities_version: changes
                .and_then(|c| c.get("capabilities_version"))
                .and_then(Value::as_str)
                .map(str::to_string),
            change_notifications: notifications
                .and_then(|n| n.get("registration_task"))
                .and_then(Value::as_str)
                .map(str::to_string),
            fetched_at_ms: now_ms,
        })
    }

    /// When the registration does not force one: AdCP's default RFC 9421 if the seller signs,
    /// else legacy HMAC (a per-operation secret that also authenticates the body), which every
    /// legacy sender supports.
    pub fn webhook_mode(&self) -> WebhookMode {
        if self.webhook_signing {
            WebhookMode::Rfc9421
        } else {
            WebhookMode::Hmac
        }
    }

    /// `Some(reason)` when mutating calls must be refused.
    pub fn refuses_mutations(&self) -> Option<&'static str> {
        if !self.major_versions.contains(&3) {
            return Some("the seller does not speak AdCP 3");
        }
        if self.replay_ttl_seconds.is_none() {
            return Some(
                "the seller declares no idempotency replay window (adcp.idempotency); AdCP clients must fail closed before mutating",
            );
        }
        None
    }
}

/// The AdCP releases we speak, preferred first: 3.2 is the reference.
const RELEASES: [&str; 3] = ["3.2", "3.1", "3.0"];

/// The release pinned for a seller that declares none (3.0 has no `supported_versions`) and
/// before discovery: the pin every call carried before 3.2, so records stored then keep
/// sending the same bytes.
const UNDECLARED_RELEASE: &str = "3.1";

/// The AdCP version fields sent with every call to a seller, as discovery established them;
/// both `None` for a seller that refuses them (an SDK that rejects unknown arguments).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionEnvelope {
    pub adcp_version: Option<String>,
    pub adcp_major_version: Option<u64>,
}

impl Default for VersionEnvelope {
    /// What a seller not yet discovered gets, and what every call carried before discovery
    /// negotiated it (so records stored then keep sending the same bytes).
    fn default() -> Self {
        VersionEnvelope {
            adcp_version: Some(UNDECLARED_RELEASE.into()),
            adcp_major_version: Some(3),
        }
    }
}

impl VersionEnvelope {
    /// For a seller that refused the fields.
    pub fn none() -> Self {
        VersionEnvelope {
            adcp_version: None,
            adcp_major_version: None,
        }
    }

    /// The fields a seller's declaration allows: major 3 if it declares it, and our most
    /// preferred release among its `supported_versions` (ours when it lists none; none
    /// when it lists only releases we do not speak, leaving the choice to the seller).
    pub fn for_capabilities(c: &Capabilities) -> Self {
        if !c.major_versions.contains(&3) {
            return Self::none();
        }
        let declared: Vec<&str> = c.supported_versions.iter().map(|v| release(v)).collect();
        let adcp_version = if declared.is_empty() {
            Some(UNDECLARED_RELEASE)
        } else {
            RELEASES.into_iter().find(|r| declared.contains(r))
        };
        VersionEnvelope {
            adcp_version: adcp_version.map(str::to_string),
            adcp_major_version: Some(3),
        }
    }

    /// Sets the fields on a call's arguments (an object; anything else is left alone).
    pub fn apply(&self, args: &mut Value) {
        let Value::Object(map) = args else { return };
        let mut set = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                map.insert(k.to_string(), v);
            }
        };
        set("adcp_version", self.adcp_version.as_ref().map(|v| json!(v)));
        set(
            "adcp_major_version",
            self.adcp_major_version.map(|v| json!(v)),
        );
    }

    /// `args` without the envelope's fields.
    pub fn strip(args: &Value) -> Value {
        let mut map: Map<String, Value> = args.as_object().cloned().unwrap_or_default();
        map.remove("adcp_version");
        map.remove("adcp_major_version");
        Value::Object(map)
    }
}

/// A declared version at release precision: `3.1.1` and `3.1` are both release `3.1`.
fn release(v: &str) -> &str {
    match v.match_indices('.').nth(1) {
        Some((i, _)) if !v[..i].contains('-') => &v[..i],
        _ => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn caps(v: Value) -> Result<Capabilities, String> {
        Capabilities::parse(&v, 5)
    }

    #[test]
    fn a_conformant_declaration_allows_mutations_and_picks_rfc9421() {
        let c = caps(json!({
            "adcp": {"major_versions": [3], "supported_versions": ["3.0", "3.1"],
                     "idempotency": {"supported": true, "replay_ttl_seconds": 86400}},
            "supported_protocols": ["media_buy"],
            "webhook_signing": {"supported": true, "legacy_hmac_fallback": true,
                                "delivery_retry_horizon_seconds": 172800}
        }))
        .unwrap();
        assert_eq!(c.replay_ttl_seconds, Some(86400));
        assert_eq!(c.refuses_mutations(), None);
        assert_eq!(c.webhook_mode(), WebhookMode::Rfc9421);
        assert_eq!(c.delivery_retry_horizon_seconds, Some(172800));
        assert_eq!(c.fetched_at_ms, 5);
    }

    #[test]
    fn no_replay_window_fails_closed() {
        for idem in [
            json!(null),
            json!({"supported": false}),
            json!({"supported": true}),
            json!({"supported": true, "replay_ttl_seconds": 60}),
            json!({"supported": true, "replay_ttl_seconds": 9_999_999}),
            json!({"supported": "yes", "replay_ttl_seconds": 86400}),
        ] {
            let c = caps(json!({"adcp": {"major_versions": [3], "idempotency": idem}})).unwrap();
            assert!(c.refuses_mutations().is_some(), "{idem}");
        }
    }

    #[test]
    fn unsigned_sellers_get_hmac_and_non_v3_sellers_are_refused() {
        let c = caps(json!({"adcp": {"major_versions": [3],
            "idempotency": {"supported": true, "replay_ttl_seconds": 3600}}}))
        .unwrap();
        assert_eq!(c.webhook_mode(), WebhookMode::Hmac);
        let c = caps(json!({"adcp": {"major_versions": [2],
            "idempotency": {"supported": true, "replay_ttl_seconds": 3600}}}))
        .unwrap();
        assert!(c.refuses_mutations().is_some());
    }

    #[test]
    fn capability_change_notifications_are_read_from_the_3_2_block() {
        let with = |changes: Value| {
            caps(json!({"adcp": {"major_versions": [3], "capability_changes": changes}})).unwrap()
        };
        let c = with(json!({"capabilities_version": "rev_7", "notifications": {
            "supported": true, "registration_task": "sync_agent_notification_configs",
            "event_types": ["capabilities.changed"]}}));
        assert_eq!(c.capabilities_version.as_deref(), Some("rev_7"));
        assert_eq!(
            c.change_notifications.as_deref(),
            Some("sync_agent_notification_configs")
        );
        let off =
            with(json!({"capabilities_version": "rev_7", "notifications": {"supported": false}}));
        assert_eq!(off.change_notifications, None);
        assert_eq!(off.capabilities_version.as_deref(), Some("rev_7"));
        let none = caps(json!({"adcp": {"major_versions": [3]}})).unwrap();
        assert_eq!(
            (none.capabilities_version, none.change_notifications),
            (None, None)
        );
    }

    #[test]
    fn the_envelope_follows_the_declared_versions() {
        let env = |v: Value| VersionEnvelope::for_capabilities(&caps(v).unwrap());
        let pair = |v: Option<&str>, m: Option<u64>| VersionEnvelope {
            adcp_version: v.map(str::to_string),
            adcp_major_version: m,
        };
        for (declared, want) in [
            (json!(["3.0", "3.1"]), pair(Some("3.1"), Some(3))),
            (json!(["3.1"]), pair(Some("3.1"), Some(3))),
            (json!(["3.1.1"]), pair(Some("3.1"), Some(3))),
            (json!(["3.0"]), pair(Some("3.0"), Some(3))),
            (json!(["3.2"]), pair(Some("3.2"), Some(3))),
            (json!(["3.0", "3.1", "3.2"]), pair(Some("3.2"), Some(3))),
            (json!(["3.2.4"]), pair(Some("3.2"), Some(3))),
            (json!(["3.3"]), pair(None, Some(3))),
            (json!(["3.1-beta"]), pair(None, Some(3))),
            (json!([]), pair(Some("3.1"), Some(3))),
        ] {
            let got = env(json!({"adcp": {"major_versions": [3], "supported_versions": declared}}));
            assert_eq!(got, want, "{declared}");
        }
        assert_eq!(
            env(json!({"adcp": {"major_versions": [2], "supported_versions": ["2.5"]}})),
            VersionEnvelope::none()
        );
        let mut args = json!({"k": 1});
        pair(Some("3.0"), Some(3)).apply(&mut args);
        assert_eq!(
            args,
            json!({"k": 1, "adcp_version": "3.0", "adcp_major_version": 3})
        );
        assert_eq!(VersionEnvelope::strip(&args), json!({"k": 1}));
        let mut args = json!({"k": 1});
        VersionEnvelope::none().apply(&mut args);
        assert_eq!(args, json!({"k": 1}));
    }

    #[test]
    fn malformed_documents_are_invalid() {
        for bad in [
            json!({}),
            json!({"adcp": {}}),
            json!({"adcp": {"major_versions": []}}),
            json!({"adcp": {"major_versions": ["3"]}}),
            json!([]),
        ] {
            assert!(caps(bad.clone()).is_err(), "{bad}");
        }
    }
}
