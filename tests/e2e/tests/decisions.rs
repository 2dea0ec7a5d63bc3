//! Capabilities, governance, decisions and cancels through the real components: what the
//! seller and the governance agent receive, and where the operations end.

use e2e::fake_seller::{Answer, FakeSeller};
use e2e::{Api, start};
use serde_json::{Value, json};

fn create_body(seller: &str, po: &str) -> Value {
    json!({
        "seller_id": seller,
        "task": "create_media_buy",
        "webhook": false,
        "arguments": {
            "account": {"account_id": "acc_1"},
            "brand": {"domain": "acme.example"},
            "start_time": "asap",
            "end_time": "2027-01-31T23:59:59Z",
            "po_number": po,
            "packages": [{"product_id": "p1", "budget": 5000, "pricing_option_id": "cpm"}]
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn capabilities_governance_decisions_and_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(
        &dir.path().join("kv.db"),
        Some("https://orchestrator.example"),
    )
    .await;
    let api = Api::new(host.base_url());
    let key = api.tenant("Acme").await;
    let seller = FakeSeller::start().await;
    let gov = FakeSeller::start().await;
    let unsafe_seller = FakeSeller::start().await;
    unsafe_seller.set_capabilities(json!({"adcp": {"major_versions": [3],
        "idempotency": {"supported": false}}, "supported_protocols": ["media_buy"]}));
    for (id, s) in [("ssp", &seller), ("gov", &gov), ("unsafe", &unsafe_seller)] {
        let (st, b) = api
            .call(
                "PUT",
                &format!("/api/v1/sellers/{id}"),
                Some(&key),
                Some(json!({"mcp_url": s.url})),
            )
            .await;
        assert_eq!(st, 201, "{b}");
    }
    let (_, ssp) = api
        .call("GET", "/api/v1/sellers/ssp", Some(&key), None)
        .await;
    assert_eq!(ssp["capabilities"]["replay_ttl_seconds"], 86400, "{ssp}");

    // No replay window: refused before anything is stored or sent.
    let (st, b) = api
        .call(
            "POST",
            "/api/v1/operations",
            Some(&key),
            Some(create_body("unsafe", "PO-0")),
        )
        .await;
    assert_eq!(
        (st, b["code"].as_str()),
        (409, Some("seller_not_safe_to_mutate")),
        "{b}"
    );
    assert!(
        unsafe_seller
            .calls()
            .iter()
            .all(|(t, _)| t == "get_adcp_capabilities")
    );

    // Governance holds; a human approves; the seller gets the call.
    gov.answer(Answer::Payload(
        json!({"check_id": "c1", "verdict": "conditions",
        "plan_id": "plan_1", "explanation": "needs a second signature"}),
    ));
    let mut body = create_body("ssp", "PO-1");
    body["governance"] = json!({"agent_id": "gov", "plan_id": "plan_1"});
    let (st, held) = api
        .call("POST", "/api/v1/operations", Some(&key), Some(body))
        .await;
    assert_eq!(st, 201, "{held}\n{}", host.output());
    assert_eq!(held["status"], "awaiting_decision", "{held}");
    assert!(seller.calls().iter().all(|(t, _)| t != "create_media_buy"));
    let id = held["operation_id"].as_str().unwrap().to_string();
    seller.answer(Answer::Payload(
        json!({"media_buy_id": "mb_1", "status": "active",
        "packages": [], "context": {"operation_id": id}}),
    ));
    let (st, b) = api
        .call(
            "POST",
            &format!("/api/v1/operations/{id}/decision"),
            Some(&key),
            Some(json!({"action": "approve"})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["operation"]["status"], "completed", "{b}");
    assert_eq!(b["operation"]["result"]["media_buy_id"], "mb_1");

    // Cancel the live buy: a linked update_media_buy with canceled: true.
    seller.answer(Answer::Payload(
        json!({"media_buy_id": "mb_1", "status": "canceled"}),
    ));
    let (st, b) = api
        .call(
            "POST",
            &format!("/api/v1/operations/{id}/cancel"),
            Some(&key),
            Some(json!({"reason": "campaign pulled"})),
        )
        .await;
    assert_eq!(st, 202, "{b}");
    assert_eq!(b["cancel_operation"]["status"], "completed", "{b}");
    let calls = seller.calls();
    let (_, update) = calls
        .iter()
        .find(|(t, _)| t == "update_media_buy")
        .expect("sent");
    assert_eq!(update["media_buy_id"], "mb_1");
    assert_eq!(update["canceled"], true);
    assert_eq!(update["cancellation_reason"], "campaign pulled");

    // An open task is canceled locally.
    seller.answer(Answer::Payload(
        json!({"status": "submitted", "task_id": "task_2"}),
    ));
    let (_, open) = api
        .call(
            "POST",
            "/api/v1/operations",
            Some(&key),
            Some(create_body("ssp", "PO-2")),
        )
        .await;
    let id2 = open["operation_id"].as_str().unwrap();
    let (st, b) = api
        .call(
            "POST",
            &format!("/api/v1/operations/{id2}/cancel"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["operation"]["status"], "canceled_locally");
}

/// Starts the application with `sweep_config` set.
async fn start_configured(dir: &std::path::Path, sweep_config: &str) -> spin_test_host::TestHost {
    let mut vars = e2e::variables("https://orchestrator.example");
    vars.insert("sweep_config".into(), sweep_config.into());
    spin_test_host::TestHost::start(spin_test_host::HostOptions {
        manifest: e2e::repo_root().join("spin.toml"),
        state_file: dir.join("kv.db"),
        variables: vars,
        ..spin_test_host::HostOptions::default()
    })
    .await
    .expect("test host starts")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sweep_config_variable_reaches_the_api_and_the_cron_sweep() {
    // A one-minute deadline for creates: the API stores it, the cron sweep enforces it.
    let dir = tempfile::tempdir().unwrap();
    let host = start_configured(
        dir.path(),
        r#"{"deadlines": {"tasks": {"create_media_buy": 60000}}}"#,
    )
    .await;
    let api = Api::new(host.base_url());
    let key = api.tenant("Acme").await;
    let seller = FakeSeller::start().await;
    let (st, b) = api
        .call(
            "PUT",
            "/api/v1/sellers/ssp",
            Some(&key),
            Some(json!({"mcp_url": seller.url})),
        )
        .await;
    assert_eq!(st, 201, "{b}");
    seller.answer(Answer::Payload(
        json!({"status": "submitted", "task_id": "task_1"}),
    ));
    let (st, op) = api
        .call(
            "POST",
            "/api/v1/operations",
            Some(&key),
            Some(create_body("ssp", "PO-9")),
        )
        .await;
    assert_eq!(st, 201, "{op}");
    let created = op["created_at_ms"].as_u64().unwrap();
    assert_eq!(op["deadline_at_ms"].as_u64().unwrap() - created, 60_000);
    for _ in 0..4 {
        seller.answer(Answer::Payload(
            json!({"task_id": "task_1", "status": "submitted"}),
        ));
    }
    // Ticks 30 s apart until past the deadline.
    for i in 1..=4u64 {
        host.cron_tick((created + i * 30_000) / 1000 + 1)
            .await
            .unwrap_or_else(|e| panic!("tick: {e:#}\n{}", host.output()));
    }
    let id = op["operation_id"].as_str().unwrap();
    let (_, now) = api
        .call("GET", &format!("/api/v1/operations/{id}"), Some(&key), None)
        .await;
    assert_eq!(now["status"], "timed_out", "{now}");
    drop(host);

    // A misspelt field is refused by both components, saying why; nothing is stored.
    let dir = tempfile::tempdir().unwrap();
    let host = start_configured(dir.path(), r#"{"breaker": {"failure_treshold": 2}}"#).await;
    let api = Api::new(host.base_url());
    let (st, b) = api
        .call(
            "POST",
            "/api/v1/tenants",
            Some(e2e::ADMIN_KEY),
            Some(json!({"name": "Acme"})),
        )
        .await;
    assert_eq!(
        (st, b["code"].as_str()),
        (500, Some("misconfigured")),
        "{b}"
    );
    assert!(
        b["message"].as_str().unwrap().contains("failure_treshold"),
        "{b}"
    );
    let tick = host.cron_tick(created / 1000).await;
    assert!(tick.is_err(), "the cron sweep refuses to run misconfigured");
}
