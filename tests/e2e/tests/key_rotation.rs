//! Rotating `encryption_key` on the real components: after a restart with `NEW,OLD`, secrets
//! sealed under the old key still open (a stored operation is redispatched with the same
//! webhook token and HMAC secret, the seller's credentials still authenticate), new ones
//! are sealed under the new key (re-registering a seller re-seals its credentials), and
//! dropping the old key too early is reported, not hidden.

use e2e::fake_seller::{Answer, FakeSeller};
use e2e::{Api, ENCRYPTION_KEY, create_body, now_s, repo_root, variables};
use serde_json::{Value, json};
use spin_test_host::{HostOptions, TestHost};
use std::path::Path;

const NEW_KEY: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

async fn host(db: &Path, encryption_key: &str) -> TestHost {
    let mut vars = variables("https://orchestrator.example");
    vars.insert("encryption_key".into(), encryption_key.into());
    TestHost::start(HostOptions {
        manifest: repo_root().join("spin.toml"),
        state_file: db.to_path_buf(),
        variables: vars,
        ..HostOptions::default()
    })
    .await
    .expect("test host starts")
}

/// The `push_notification_config` of every `create_media_buy` the seller received.
fn sent_configs(seller: &FakeSeller) -> Vec<Value> {
    seller
        .calls()
        .into_iter()
        .filter(|(tool, _)| tool == "create_media_buy")
        .map(|(_, args)| args["push_notification_config"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_sealed_before_a_rotation_still_open_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kv.db");
    let seller = FakeSeller::start().await;

    // Before the rotation: a seller with credentials and an operation whose first attempt
    // gets no answer, so it waits in the store for a redispatch.
    let before = host(&db, ENCRYPTION_KEY).await;
    let api = Api::new(before.base_url());
    let key = api.tenant("Acme").await;
    let registration =
        json!({"mcp_url": seller.url, "credentials": "seller-token-1", "webhook_mode": "hmac"});
    api.register_seller(&key, registration.clone()).await;
    seller.answer(Answer::Http(503));
    let (s, op) = api
        .call(
            "POST",
            "/api/v1/operations",
            Some(&key),
            Some(create_body()),
        )
        .await;
    assert!(s == 201 || s == 202, "{s} {op}");
    assert_eq!(op["status"], "pending_dispatch", "{op}");
    let id = op["operation_id"].as_str().unwrap().to_string();
    drop(before);

    // Dropping the old key too early: the stored secrets cannot be opened, and the
    // operation says so instead of being sent without them.
    let too_early = host(&db, NEW_KEY).await;
    too_early.cron_tick(now_s() + 3_600).await.unwrap();
    let (_, op) = Api::new(too_early.base_url())
        .call("GET", &format!("/api/v1/operations/{id}"), Some(&key), None)
        .await;
    assert_eq!(op["error"]["code"], "SEALED_SECRET_UNREADABLE", "{op}");
    assert_eq!(
        sent_configs(&seller).len(),
        1,
        "nothing sent without its secrets"
    );
    drop(too_early);

    // Rotated properly (`NEW,OLD`): the redispatch carries the very same token and secret.
    let rotated = host(&db, &format!("{NEW_KEY},{ENCRYPTION_KEY}")).await;
    let api = Api::new(rotated.base_url());
    seller.answer(Answer::Payload(
        json!({"status": "submitted", "task_id": "task_1"}),
    ));
    rotated.cron_tick(now_s() + 7_200).await.unwrap();
    let (_, op) = api
        .call("GET", &format!("/api/v1/operations/{id}"), Some(&key), None)
        .await;
    assert_eq!(op["status"], "submitted", "{op}\n{}", rotated.output());
    let configs = sent_configs(&seller);
    assert_eq!(configs.len(), 2);
    assert_eq!(configs[0], configs[1], "a resend is byte-identical");
    assert!(configs[1]["authentication"]["credentials"].is_string());

    // The documented re-seal: registering the seller again seals its credentials under the
    // new key, so the old key can go; with the new key alone an operation is then sent.
    api.register_seller(&key, registration).await;
    drop(rotated);
    let new_only = host(&db, NEW_KEY).await;
    seller.answer(Answer::Payload(
        json!({"status": "submitted", "task_id": "task_2"}),
    ));
    let (s, op2) = Api::new(new_only.base_url())
        .call(
            "POST",
            "/api/v1/operations",
            Some(&key),
            Some(create_body()),
        )
        .await;
    assert_eq!((s, &op2["status"]), (201, &json!("submitted")), "{op2}");
}
