//! The URL rules on the real components: without `allow_private_networks` a seller or
//! callback URL that is plain http, carries credentials or names an internal address is
//! refused with `422` and nothing is stored; the e2e tests' own setting allows loopback.

use e2e::fake_seller::FakeSeller;
use e2e::{Api, repo_root, variables};
use serde_json::json;
use spin_test_host::{HostOptions, TestHost};

#[tokio::test(flavor = "multi_thread")]
async fn internal_and_plain_http_urls_are_refused_unless_the_development_switch_is_on() {
    let dir = tempfile::tempdir().unwrap();
    let seller = FakeSeller::start().await;
    let mut vars = variables("https://orchestrator.example");
    vars.remove("allow_private_networks");
    let host = TestHost::start(HostOptions {
        manifest: repo_root().join("spin.toml"),
        state_file: dir.path().join("kv.db"),
        variables: vars,
        ..HostOptions::default()
    })
    .await
    .expect("test host starts");
    let api = Api::new(host.base_url());
    let key = api.tenant("Acme").await;
    for url in [
        seller.url.clone(),
        "https://127.0.0.1:9/mcp".into(),
        "https://169.254.169.254/latest".into(),
        "https://user:pw@seller.example/mcp".into(),
    ] {
        let (s, b) = api
            .call(
                "PUT",
                "/api/v1/sellers/s1",
                Some(&key),
                Some(json!({"mcp_url": url})),
            )
            .await;
        assert_eq!(s, 422, "{url}: {b}");
        assert_eq!(b["code"], "validation_failed");
        assert!(b["message"].is_string());
        let (s, _) = api
            .call(
                "PUT",
                "/api/v1/callback",
                Some(&key),
                Some(json!({"url": url})),
            )
            .await;
        assert_eq!(s, 422, "{url}");
    }
    let (s, _) = api
        .call("GET", "/api/v1/sellers/s1", Some(&key), None)
        .await;
    assert_eq!(s, 404, "nothing was registered");
    assert!(seller.calls().is_empty(), "the seller was never called");
    drop(host);

    // The suite's setting: the same loopback seller registers.
    let dir = tempfile::tempdir().unwrap();
    let host = e2e::start(&dir.path().join("kv.db"), None).await;
    let api = Api::new(host.base_url());
    let key = api.tenant("Acme").await;
    let (s, b) = api
        .call(
            "PUT",
            "/api/v1/sellers/s1",
            Some(&key),
            Some(json!({"mcp_url": seller.url})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
}
