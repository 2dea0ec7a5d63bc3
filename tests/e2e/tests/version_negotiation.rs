//! A seller that refuses AdCP's version fields as unknown arguments (an AdCP 3.1.1 seller on
//! the Python SDK 6.6.0) is discovered without them, recorded envelope-less, and every later
//! call to it is sent without them: operations are created and completed there.

use e2e::fake_seller::{Answer, FakeSeller};
use e2e::{Api, start};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn an_operation_completes_at_a_seller_that_refuses_the_version_fields() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(
        &dir.path().join("kv.db"),
        Some("https://orchestrator.example"),
    )
    .await;
    let api = Api::new(host.base_url());
    let seller = FakeSeller::start().await;
    seller.refuse_version_fields();
    let key = api.tenant("Acme").await;

    let (s, b) = api
        .call(
            "PUT",
            "/api/v1/sellers/strict",
            Some(&key),
            Some(json!({"mcp_url": seller.url, "webhook_mode": "bearer"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["capabilities_error"], json!(null), "{b}");
    let (s, got) = api
        .call("GET", "/api/v1/sellers/strict", Some(&key), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        got["version_envelope"],
        json!({"adcp_version": null, "adcp_major_version": null}),
        "{got}"
    );

    seller.answer(Answer::Payload(json!({
        "media_buy_id": "mb_strict", "media_buy_status": "pending_creatives",
        "packages": [{"package_id": "pkg_1"}], "confirmed_at": "2026-11-22T10:00:00Z", "revision": 1
    })));
    let (s, op) = api
        .call(
            "POST",
            "/api/v1/operations",
            Some(&key),
            Some(json!({
                "seller_id": "strict",
                "task": "create_media_buy",
                "arguments": {
                    "account": {"account_id": "acc_1"},
                    "brand": {"domain": "acme.example"},
                    "start_time": "asap",
                    "end_time": "2027-01-31T23:59:59Z",
                    "packages": [{"product_id": "p1", "budget": 5000, "pricing_option_id": "cpm"}]
                }
            })),
        )
        .await;
    assert_eq!(s, 201, "{op}\n{}", host.output());
    assert_eq!(op["status"], "completed", "{op}");
    assert_eq!(op["result"]["media_buy_id"], "mb_strict", "{op}");

    // Discovery's first ask carried the fields and was refused; nothing after it did.
    let calls = seller.calls();
    assert_eq!(calls[0].0, "get_adcp_capabilities");
    assert!(calls[0].1.get("adcp_version").is_some());
    for (tool, args) in &calls[1..] {
        assert!(
            args.get("adcp_version").is_none() && args.get("adcp_major_version").is_none(),
            "{tool}: {args}"
        );
    }
    assert!(calls.iter().any(|(t, _)| t == "create_media_buy"));
}
