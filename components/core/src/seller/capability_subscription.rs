//! Registering our `capabilities.changed` subscriber with `sync_agent_notification_configs`
//! (AdCP 3.2). The submitted array is our credentials' whole agent-level set: one entry,
//! delivered with the seller's RFC 9421 webhook profile (no legacy `authentication`).

use super::port::{CallFailure, SellerCalls};
use crate::records::capability_subscription::{EVENT, REGISTRATION_TASK, SUBSCRIBER_ID};
use crate::records::seller::Seller;
use serde_json::{Value, json};

/// What the seller made of the replacement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscribed {
    /// `updated` or `unchanged`: the seller proved our URL and fires to it.
    Active,
    /// No outcome yet (a task still running): it stays requested.
    Pending,
    /// `failed`, or an AdCP error: the code.
    Refused(String),
}

/// The task's arguments: the same for every retry under `idempotency_key`.
pub fn arguments(url: &str, idempotency_key: &str) -> Value {
    json!({
        "idempotency_key": idempotency_key,
        "notification_configs": [{
            "subscriber_id": SUBSCRIBER_ID,
            "url": url,
            "event_types": [EVENT],
            "active": true,
        }],
    })
}

/// Asks the seller to fire `capabilities.changed` at `url`. `Err` when it could not be asked
/// (transport, breaker): worth asking again with the same key.
pub async fn subscribe(
    calls: &impl SellerCalls,
    seller: &Seller,
    url: &str,
    idempotency_key: &str,
) -> Result<Subscribed, CallFailure> {
    match calls
        .call(seller, REGISTRATION_TASK, arguments(url, idempotency_key))
        .await
    {
        Ok(answer) => Ok(outcome(&answer)),
        Err(CallFailure::Seller(e)) => Ok(Subscribed::Refused(e.code)),
        Err(other) => Err(other),
    }
}

fn outcome(answer: &Value) -> Subscribed {
    let first_error = || {
        answer["errors"][0]["code"]
            .as_str()
            .unwrap_or("failed")
            .to_string()
    };
    match answer.get("action").and_then(Value::as_str) {
        Some("updated" | "unchanged") => Subscribed::Active,
        Some(_) => Subscribed::Refused(first_error()),
        None if answer.get("errors").is_some() => Subscribed::Refused(first_error()),
        None => Subscribed::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_to_outcomes() {
        for (answer, want) in [
            (
                json!({"status": "completed", "action": "updated"}),
                Subscribed::Active,
            ),
            (json!({"action": "unchanged"}), Subscribed::Active),
            (
                json!({"action": "failed", "errors": [{"code": "CHALLENGE_FAILED", "message": "no echo"}]}),
                Subscribed::Refused("CHALLENGE_FAILED".into()),
            ),
            (
                json!({"action": "cleared"}),
                Subscribed::Refused("failed".into()),
            ),
            (
                json!({"status": "submitted", "task_id": "t"}),
                Subscribed::Pending,
            ),
        ] {
            assert_eq!(outcome(&answer), want, "{answer}");
        }
    }

    #[test]
    fn the_arguments_name_one_subscriber_for_capabilities_changed() {
        let a = arguments(
            "https://orch.example/webhooks/adcp/agent/t1/s1",
            "k-0123456789abcdef",
        );
        assert_eq!(a["notification_configs"][0]["event_types"], json!([EVENT]));
        assert!(a["notification_configs"][0].get("authentication").is_none());
    }
}
