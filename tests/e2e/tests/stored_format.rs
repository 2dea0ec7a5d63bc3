//! A store written by the landed release keeps working: the fixture (written by that
//! release's own components, see `release_fixture.rs`) is loaded into a SQLite file, this
//! release's components start on it, and every operation is driven to its seller's outcome
//! with no second media buy.

use base64::Engine;
use e2e::task_seller::{Task, TaskSeller};
use e2e::{Api, start};
use serde_json::{Value, json};
use spin_test_host::kv::Kv;
use std::path::Path;

const FIXTURE: &str = "fixtures/store-dd73147.json";

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Writes the fixture's keys into a new store file, byte for byte.
fn load_store(fixture: &Value, db: &Path) {
    let kv = Kv::open(db).unwrap();
    kv.open_store().unwrap();
    for (k, v) in fixture["store"].as_object().unwrap() {
        let bytes = match (v.get("text"), v.get("base64")) {
            (Some(t), _) => t.as_str().unwrap().as_bytes().to_vec(),
            (_, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b.as_str().unwrap())
                .unwrap(),
            _ => panic!("fixture value of {k} has no encoding"),
        };
        kv.set("default", k, &bytes).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_written_by_the_landed_release_is_driven_to_completion() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE);
    let fixture: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kv.db");
    load_store(&fixture, &db);
    let ops = fixture["operations"].as_object().unwrap().clone();
    let id = |name: &str| ops[name].as_str().unwrap().to_string();

    // The seller finished its tasks while we were away; the buyer's cancel was honoured.
    let seller = TaskSeller::start().await;
    for t in fixture["seller_tasks"].as_array().unwrap() {
        let operation_id = t["operation_id"].as_str().unwrap().to_string();
        let status = if operation_id == id("canceled_locally") {
            "canceled"
        } else {
            "completed"
        };
        seller.seed(Task {
            task_id: t["task_id"].as_str().unwrap().into(),
            operation_id,
            arguments: t["arguments"].clone(),
            status: status.into(),
        });
    }
    let host = start(&db, None).await;
    let api = Api::new(host.base_url());
    let key = fixture["tenant_api_key"].as_str().unwrap().to_string();
    // The seller moved (the fixture's one is gone with its process): the operator's update.
    let (s, b) = api
        .call(
            "PUT",
            "/api/v1/sellers/ssp",
            Some(&key),
            Some(json!({"mcp_url": seller.url, "webhook_mode": "hmac"})),
        )
        .await;
    assert!((200..300).contains(&s), "{s} {b}");

    let expected = |name: &str| match name {
        "canceled_locally" => "canceled",
        _ => "completed",
    };
    let mut statuses = serde_json::Map::new();
    for step in 1..=48u64 {
        host.cron_tick(now_s() + step * 1_800).await.unwrap();
        // A redispatched create is accepted `submitted`; the seller then completes it.
        for t in seller.tasks_for(&id("pending_dispatch")) {
            seller.set_status(&t.task_id, "completed");
        }
        for name in ops.keys() {
            let (s, op) = api
                .call(
                    "GET",
                    &format!("/api/v1/operations/{}", id(name)),
                    Some(&key),
                    None,
                )
                .await;
            assert_eq!(s, 200, "{name}: {op}");
            statuses.insert(name.clone(), op["status"].clone());
        }
        let done = ops.keys().all(|name| {
            let st = statuses[name].as_str().unwrap_or("");
            st == expected(name) || (name == "pending_dispatch" && st == "timed_out")
        });
        if done {
            break;
        }
    }
    for name in ops.keys() {
        let st = statuses[name].as_str().unwrap();
        if name == "pending_dispatch" && st == "timed_out" {
            // Read past its deadline (the fixture is older than a day): never sent, no buy.
            assert!(seller.tasks_for(&id(name)).is_empty(), "{statuses:?}");
            continue;
        }
        assert_eq!(st, expected(name), "{name}: {statuses:?}");
        assert_eq!(seller.tasks_for(&id(name)).len(), 1, "{name}: one buy");
        let (s, ev) = api
            .call(
                "GET",
                &format!("/api/v1/operations/{}/events", id(name)),
                Some(&key),
                None,
            )
            .await;
        assert_eq!(s, 200, "{ev}");
    }
    // A resend of the stored create carried the stored key: the seller replayed, no new buy.
    for args in seller.calls_of("create_media_buy") {
        let op = args["context"]["operation_id"].as_str().unwrap();
        assert_eq!(op, id("pending_dispatch"), "only the unsent one was sent");
    }
    let (s, ready) = api.call("GET", "/readyz", None, None).await;
    assert_eq!(s, 200, "{ready}");
    host.kill();
    let kv = Kv::open(&db).unwrap();
    assert_eq!(
        kv.get("default", "meta:format").unwrap().as_deref(),
        Some(b"2".as_slice()),
        "the sweep stamped the store with its format"
    );
}
