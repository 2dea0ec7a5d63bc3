//! AdCP 3.2's `capabilities.changed` on the real components: a seller that offers it is
//! subscribed at registration, proves our URL with a signed challenge the intake echoes, and
//! its later notice of a new revision refreshes the capabilities before the 2xx; repeats
//! change nothing, forgeries are refused.

use e2e::fake_seller::FakeSeller;
use e2e::proxy::Proxy;
use e2e::schema::{Direction, Schemas};
use e2e::{Api, start};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn a_subscribed_seller_announces_a_change_and_its_capabilities_are_refreshed() {
    let dir = tempfile::tempdir().unwrap();
    // The seller signs the URL it was given, our public one: a proxy stands in for it.
    let proxy = Proxy::start().await;
    let host = start(&dir.path().join("kv.db"), Some(&proxy.url())).await;
    proxy.forward_to(host.addr());
    let api = Api::new(host.base_url());
    let key = api.tenant("Acme").await;
    let seller = FakeSeller::start().await;
    seller.announce_changes("rev_1");

    let (s, v) = api
        .call(
            "PUT",
            "/api/v1/sellers/ssp",
            Some(&key),
            Some(json!({"mcp_url": seller.url, "credentials": "seller-token-1"})),
        )
        .await;
    assert_eq!(s, 201, "{v}\n{}", host.output());
    let sub = &v["capability_subscription"];
    assert_eq!(sub["state"], "active", "{v}\n{}", host.output());
    assert_eq!(v["version_envelope"]["adcp_version"], "3.2", "{v}");
    let challenges = seller.challenges();
    assert_eq!(challenges.len(), 1, "{challenges:?}");
    assert_eq!(challenges[0].0, 200, "{challenges:?}");
    let url = sub["url"].as_str().unwrap().to_string();
    assert!(url.contains("/webhooks/adcp/agent/"), "{url}");

    // What was said is AdCP 3.2.4: the seller's declaration, our subscription request (as
    // the seller received it), our answer to its challenge.
    let schemas = Schemas::open("3.2");
    let caps = json!({"status": "completed"})
        .as_object()
        .cloned()
        .map(|mut m| {
            m.extend(seller.capabilities().as_object().unwrap().clone());
            Value::Object(m)
        });
    schemas.assert_tool(
        "capabilities",
        "get_adcp_capabilities",
        Direction::Response,
        &caps.unwrap(),
    );
    let sync: Vec<Value> = seller
        .calls()
        .into_iter()
        .filter(|(t, _)| t == "sync_agent_notification_configs")
        .map(|(_, a)| a)
        .collect();
    assert_eq!(sync.len(), 1);
    schemas.assert_tool(
        "subscription",
        "sync_agent_notification_configs",
        Direction::Request,
        &sync[0],
    );
    schemas.assert_valid(
        "challenge answer",
        "core/webhook-challenge-response.json",
        &challenges[0].1,
    );

    let capabilities_version = |v: &Value| v["capabilities"]["capabilities_version"].clone();
    let view = || async {
        let (s, v) = api
            .call("GET", "/api/v1/sellers/ssp", Some(&key), None)
            .await;
        assert_eq!(s, 200, "{v}");
        v
    };
    assert_eq!(capabilities_version(&view().await), "rev_1");

    let (s, answer) = seller.change_capabilities("rev_2", "capchg_1").await;
    assert_eq!(
        (s, &answer),
        (200, &json!({"outcome": "refreshed"})),
        "{}",
        host.output()
    );
    let v = view().await;
    assert_eq!(capabilities_version(&v), "rev_2", "{v}");
    let notice = &v["capability_subscription"]["last_notice"];
    assert_eq!(
        (&notice["notification_id"], &notice["refreshed"]),
        (&json!("capchg_1"), &json!(true)),
        "{v}"
    );

    // The seller's retry of the same notice: the revision is held, nothing is refetched.
    let fetches = |s: &FakeSeller| {
        s.calls()
            .iter()
            .filter(|(t, _)| t == "get_adcp_capabilities")
            .count()
    };
    let before = fetches(&seller);
    let (s, answer) = seller.change_capabilities("rev_2", "capchg_1").await;
    assert_eq!((s, &answer), (200, &json!({"outcome": "unchanged"})));
    assert_eq!(fetches(&seller), before);

    // What the seller sent is valid 3.2.4 too: the fixtures are honest.
    let sent = seller.agent_webhooks();
    assert_eq!(sent.len(), 3);
    schemas.assert_valid("challenge", "core/agent-webhook-challenge.json", &sent[0]);
    for notice in &sent[1..] {
        schemas.assert_valid("notice", "core/capabilities-changed-webhook.json", notice);
    }

    // Unsigned, it is refused and changes nothing.
    let forged = json!({"notification_type": "capabilities.changed", "subscriber_id": "adcp-orchestrator",
        "notification_id": "capchg_9", "capabilities_version": "rev_9"});
    let r = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .body(forged.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(fetches(&seller), before);
    assert_eq!(capabilities_version(&view().await), "rev_2");
}
