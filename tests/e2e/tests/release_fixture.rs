//! Writes the store fixture that `stored_format.rs` drives to completion: a SQLite store as a
//! release's own components left it, with open operations of several statuses, a webhook
//! delivery ledger, queued buyer notifications, a crashed holder's lease and the due index.
//!
//! Run against the release whose format is to stay readable, from a checkout of it (this file
//! uses only what that release's test crate has):
//!
//! ```text
//! git worktree add ../release <commit>
//! cp tests/e2e/tests/release_fixture.rs ../release/tests/e2e/tests/
//! (cd ../release && FIXTURE_OUT=$PWD/../main/tests/e2e/fixtures/store-<commit>.json \
//!     cargo test -p e2e --test release_fixture -- --ignored)
//! ```

use base64::Engine;
use e2e::task_seller::{HoldAt, TaskSeller};
use e2e::{Api, start};
use serde_json::{Value, json};
use spin_test_host::kv::Kv;

fn create_body() -> Value {
    json!({"seller_id": "ssp", "task": "create_media_buy", "webhook": true, "arguments": {
        "account": {"account_id": "acc_1"}, "brand": {"domain": "acme.example"},
        "start_time": "asap", "end_time": "2027-01-31T23:59:59Z",
        "packages": [{"product_id": "p1", "budget": 5000, "pricing_option_id": "cpm"}]}})
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "writes a fixture from a release checkout; see the module doc"]
async fn write_release_fixture() {
    let out = std::env::var("FIXTURE_OUT").expect("FIXTURE_OUT: where to write the fixture");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kv.db");
    let seller = TaskSeller::start().await;
    let host = start(&db, None).await;
    let api = Api::new(host.base_url());
    let key = api.tenant("Acme").await;
    let (s, b) = api
        .call(
            "PUT",
            "/api/v1/sellers/ssp",
            Some(&key),
            Some(json!({"mcp_url": seller.url, "webhook_mode": "hmac"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    // Notifications queue and retry: the buyer's receiver is not listening.
    let (s, b) = api
        .call(
            "PUT",
            "/api/v1/callback",
            Some(&key),
            Some(json!({"url": "http://127.0.0.1:9/hook"})),
        )
        .await;
    assert!((200..300).contains(&s), "{s} {b}");

    let mut ops = serde_json::Map::new();
    // What the seller told each one: a webhook, or nothing more than `submitted`.
    for (name, webhook) in [
        ("submitted", None),
        ("working", Some("working")),
        ("input_required", Some("input-required")),
        ("completed", Some("completed")),
        ("canceled_locally", None),
    ] {
        let (s, op) = api
            .call(
                "POST",
                "/api/v1/operations",
                Some(&key),
                Some(create_body()),
            )
            .await;
        assert_eq!(s, 201, "{op}");
        assert_eq!(op["status"], "submitted", "{op}");
        let id = op["operation_id"].as_str().unwrap().to_string();
        let task_id = op["task_id"].as_str().unwrap().to_string();
        if let Some(status) = webhook {
            let delivered = seller
                .webhook(&task_id, status, "2026-11-22T10:00:01Z")
                .send(&api.http, &host.base_url())
                .await;
            assert!(delivered.status < 300, "{delivered:?}");
        }
        if name == "canceled_locally" {
            let (s, b) = api
                .call(
                    "POST",
                    &format!("/api/v1/operations/{id}/cancel"),
                    Some(&key),
                    None,
                )
                .await;
            assert!((200..300).contains(&s), "{s} {b}");
        }
        ops.insert(name.into(), json!(id));
    }
    // Stored, then the host died while the seller had not yet seen the call.
    let mut hold = seller.hold("create_media_buy", HoldAt::Before);
    let post = api
        .http
        .post(format!("{}/api/v1/operations", host.base_url()))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(create_body().to_string())
        .send();
    let post = tokio::spawn(post);
    let args = hold.reached().await;
    let pending = args["context"]["operation_id"]
        .as_str()
        .unwrap()
        .to_string();
    host.kill();
    drop(hold);
    let _ = post.await;
    ops.insert("pending_dispatch".into(), json!(pending));

    let kv = Kv::open(&db).unwrap();
    // A holder that crashed mid-work leaves its lease counter behind.
    let first = ops["submitted"].as_str().unwrap();
    kv.increment("default", &format!("lease:op:{first}:1"), 1)
        .unwrap();
    let mut store = serde_json::Map::new();
    for k in kv.keys("default").unwrap() {
        let v = kv.get("default", &k).unwrap().unwrap();
        let encoded = match String::from_utf8(v.clone()) {
            Ok(text) => json!({ "text": text }),
            Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(&v) }),
        };
        store.insert(k, encoded);
    }
    let tasks: Vec<Value> = ops
        .values()
        .flat_map(|id| seller.tasks_for(id.as_str().unwrap()))
        .map(|t| {
            json!({"task_id": t.task_id, "operation_id": t.operation_id,
                        "arguments": t.arguments, "status": t.status})
        })
        .collect();
    let fixture = json!({
        "written_by": env!("CARGO_PKG_VERSION"),
        "tenant_api_key": key,
        "operations": ops,
        "seller_tasks": tasks,
        "store": store,
    });
    std::fs::write(&out, serde_json::to_string_pretty(&fixture).unwrap()).unwrap();
}
