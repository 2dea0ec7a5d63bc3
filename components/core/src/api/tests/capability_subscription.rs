//! The `capabilities.changed` subscription made at registration and refresh (AdCP 3.2).

use super::*;
use crate::seller::port::{CallFailure, SellerError};

/// A 3.2 seller that signs with RFC 9421 and fires `capabilities.changed`.
fn announcing(registration_task: &str) -> Value {
    let mut c = crate::testing::conformant_capabilities();
    c["adcp"]["capability_changes"] = json!({"capabilities_version": "rev_1",
        "notifications": {"supported": true, "registration_task": registration_task,
                          "event_types": ["capabilities.changed"]}});
    c
}

fn register(w: &World, key: &str) -> (StatusCode, Value) {
    w.call(
        "PUT",
        "/api/v1/sellers/ssp",
        Some(key),
        Some(json!({"mcp_url": "https://seller.example/mcp", "credentials": "seller-token-123"})),
    )
}

fn subscription_calls(w: &World) -> Vec<Value> {
    w.seller
        .calls
        .borrow()
        .iter()
        .filter(|(tool, _)| tool == "sync_agent_notification_configs")
        .map(|(_, args)| args.clone())
        .collect()
}

#[test]
fn a_seller_that_announces_changes_is_subscribed_at_registration() {
    let w = World::new();
    let key = w.tenant("Acme");
    *w.seller.capabilities.borrow_mut() = Some(Ok(announcing("sync_agent_notification_configs")));
    w.seller
        .answer(Ok(json!({"status": "completed", "action": "updated"})));
    let (s, v) = register(&w, &key);
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let sub = &v["capability_subscription"];
    assert_eq!(sub["state"], "active", "{v}");
    let calls = subscription_calls(&w);
    assert_eq!(calls.len(), 1);
    let config = &calls[0]["notification_configs"][0];
    assert_eq!(config["url"], sub["url"]);
    assert!(
        sub["url"]
            .as_str()
            .unwrap()
            .starts_with("https://orch.example.com/webhooks/adcp/agent/"),
        "{sub}"
    );
    assert_eq!(config["event_types"], json!(["capabilities.changed"]));
    assert_eq!(calls[0]["idempotency_key"], sub["idempotency_key"]);
    assert_eq!(v["capabilities"]["capabilities_version"], "rev_1");

    // Active already: a refresh does not ask again.
    let (s, v) = w.call("POST", "/api/v1/sellers/ssp/capabilities", Some(&key), None);
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(subscription_calls(&w).len(), 1);
}

#[test]
fn a_refused_or_unreachable_subscription_is_shown_and_asked_again_with_the_same_key() {
    let w = World::new();
    let key = w.tenant("Acme");
    *w.seller.capabilities.borrow_mut() = Some(Ok(announcing("sync_agent_notification_configs")));
    w.seller.answer(Err(CallFailure::Transport(
        crate::foundation::transport::TransportError::Connect("refused".into()),
    )));
    let (s, v) = register(&w, &key);
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["capability_subscription"]["state"], "unavailable", "{v}");
    assert_eq!(v["capability_subscription"]["error"], "seller_unavailable");
    // Transport detail stays in the log.
    assert!(!v.to_string().contains("refused"), "{v}");

    w.seller.answer(Err(CallFailure::Seller(SellerError {
        code: "CHALLENGE_FAILED".into(),
        message: "no echo".into(),
        recovery: crate::seller::port::Recovery::Correctable,
        retry_after_s: None,
        adcp: true,
    })));
    let (s, v) = w.call("POST", "/api/v1/sellers/ssp/capabilities", Some(&key), None);
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["capability_subscription"]["state"], "refused", "{v}");
    assert_eq!(v["capability_subscription"]["error"], "CHALLENGE_FAILED");
    let calls = subscription_calls(&w);
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0], calls[1], "a retry repeats the same request");
}

#[test]
fn no_subscription_without_the_task_we_speak_or_rfc9421_signing() {
    for caps in [
        announcing("sync_principal"),
        {
            let mut c = announcing("sync_agent_notification_configs");
            c["webhook_signing"]["supported"] = json!(false);
            c
        },
        crate::testing::conformant_capabilities(),
    ] {
        let w = World::new();
        let key = w.tenant("Acme");
        *w.seller.capabilities.borrow_mut() = Some(Ok(caps));
        let (s, v) = register(&w, &key);
        assert_eq!(s, StatusCode::CREATED, "{v}");
        assert_eq!(v["capability_subscription"], Value::Null, "{v}");
        assert!(subscription_calls(&w).is_empty());
    }
}
