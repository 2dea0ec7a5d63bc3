//! Sellers that deviate from the spec, one deviation at a time and all together, on the real
//! components: every operation still reaches the seller's truth (`completed` with its media
//! buy id), and the seller record shows what was refused. The deviations are those of a real
//! AdCP 3.1.1 sales agent on the Python SDK 6.6.0 ([`Deviations`]).

use e2e::task_seller::{Deviations, Task, TaskSeller};
use e2e::{Api, now_s, start};
use serde_json::{Value, json};

fn create_body() -> Value {
    json!({"seller_id": "ssp", "task": "create_media_buy", "webhook": true, "arguments": {
        "account": {"account_id": "acc_1"}, "brand": {"domain": "acme.example"},
        "start_time": "asap", "end_time": "2027-01-31T23:59:59Z",
        "packages": [{"product_id": "p1", "budget": 5000, "pricing_option_id": "cpm"}]}})
}

/// Creates an operation at a seller with `deviations`, completes its task at the seller and
/// lets the orchestrator find out: by the task's webhook when the seller's webhooks are
/// conformant, else by the poll the refused webhook brings forward (the backup poll is two
/// minutes away; only one tick, 11 s after the refusal, is fired). Returns the interop
/// defects the seller record shows.
struct World {
    _dir: tempfile::TempDir,
    host: spin_test_host::TestHost,
    api: Api,
    seller: TaskSeller,
    key: String,
    /// The operation created, and its task at the seller (`submitted` there).
    id: String,
    task: String,
}

/// A host, a tenant whose seller `ssp` has `deviations`, and one operation created there.
async fn world(deviations: Deviations) -> World {
    let dir = tempfile::tempdir().unwrap();
    let host = start(&dir.path().join("kv.db"), None).await;
    let api = Api::new(host.base_url());
    let seller = TaskSeller::start_with(deviations).await;
    let key = api.tenant("Acme").await;
    api.register_seller(&key, json!({"mcp_url": seller.url, "webhook_mode": "hmac"}))
        .await;
    let (s, op) = api
        .call(
            "POST",
            "/api/v1/operations",
            Some(&key),
            Some(create_body()),
        )
        .await;
    assert_eq!(
        (s, op["status"].as_str()),
        (201, Some("submitted")),
        "{op}\n{}",
        host.output()
    );
    let id = op["operation_id"].as_str().unwrap().to_string();
    let task = seller.tasks_for(&id)[0].task_id.clone();
    World {
        _dir: dir,
        host,
        api,
        seller,
        key,
        id,
        task,
    }
}

async fn converges(deviations: Deviations) -> Vec<String> {
    let World {
        _dir,
        host,
        api,
        seller,
        key,
        id,
        task,
    } = world(deviations).await;
    seller.set_status(&task, "completed");
    if deviations.list_tasks {
        // A task made at the seller with our credentials by another tool: reconciliation
        // finds it in the listing and adopts it (in the seller's words it is awaiting approval).
        seller.seed(Task {
            task_id: "task_foreign".into(),
            operation_id: String::new(),
            arguments: json!({}),
            status: "submitted".into(),
        });
    }

    let webhook_deviates = deviations.webhook_without_ids || deviations.hmac_over_compact;
    let delivered = seller
        .webhook(&task, "completed", "2026-11-22T10:00:02Z")
        .send(&api.http, &host.base_url())
        .await;
    if webhook_deviates {
        assert_eq!(delivered.status, 401, "{:?}", delivered.body);
        // Refused, and nothing changed.
        let (_, got) = api
            .call("GET", &format!("/api/v1/operations/{id}"), Some(&key), None)
            .await;
        assert_eq!(got["status"], "submitted", "{got}");
        // Filed due now, in the current 10 s due bucket, which the sweep reads once it ended.
        host.cron_tick(now_s() + 11).await.unwrap();
    } else {
        assert_eq!(delivered.status, 200, "{:?}", delivered.body);
        if deviations.list_tasks {
            // Reconciliation runs at the first tick of its epoch.
            host.cron_tick(now_s() + 11).await.unwrap();
        }
    }

    let (s, got) = api
        .call("GET", &format!("/api/v1/operations/{id}"), Some(&key), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(got["status"], "completed", "{got}\n{}", host.output());
    assert_eq!(got["result"]["media_buy_id"], format!("mb_{task}"), "{got}");

    let calls = seller.calls();
    if deviations.strict_arguments {
        // Discovery's first ask carried the version fields and was refused; nothing later did.
        assert_eq!(calls[0].0, "get_adcp_capabilities");
        for (tool, args) in &calls[1..] {
            assert!(
                args.get("adcp_version").is_none() && args.get("adcp_major_version").is_none(),
                "{tool}: {args}"
            );
        }
    }
    let polls: Vec<&Value> = calls
        .iter()
        .filter(|(t, _)| t == "get_task" || t == "get_task_status")
        .map(|(_, a)| a)
        .collect();
    if webhook_deviates {
        assert_eq!(
            polls.len(),
            1,
            "one poll, at the tick after the refusal: {calls:?}"
        );
    }
    if deviations.get_task {
        assert!(
            calls.iter().all(|(t, _)| t != "get_task_status"),
            "{calls:?}"
        );
        for args in &polls {
            assert_eq!(
                **args,
                json!({"task_id": task}),
                "only what get_task declares"
            );
        }
    }

    if deviations.list_tasks {
        assert_eq!(seller.calls_of("list_tasks").len(), 1, "{calls:?}");
        let (s, list) = api
            .call("GET", "/api/v1/operations", Some(&key), None)
            .await;
        assert_eq!(s, 200, "{list}");
        let tasks: Vec<&str> = list["operations"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o["task_id"].as_str())
            .collect();
        // Ours is tracked, so it is not adopted a second time; the foreign one is.
        let mut sorted = tasks.clone();
        sorted.sort();
        assert_eq!(sorted, [task.as_str(), "task_foreign"], "{list}");
    }

    let (s, record) = api
        .call("GET", "/api/v1/sellers/ssp", Some(&key), None)
        .await;
    assert_eq!(s, 200, "{record}");
    if deviations.strict_arguments {
        assert_eq!(
            record["version_envelope"],
            json!({"adcp_version": null, "adcp_major_version": null}),
            "{record}"
        );
    }
    let interop = record["interop"].as_array().cloned().unwrap_or_default();
    for entry in &interop {
        assert_eq!(entry["count"], 1, "{entry}");
        assert_eq!(entry["last"]["operation_id"], id.as_str(), "{entry}");
    }
    interop
        .iter()
        .map(|e| e["refused"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_seller_refusing_unknown_arguments() {
    let defects = converges(Deviations {
        strict_arguments: true,
        ..Deviations::default()
    })
    .await;
    assert!(defects.is_empty(), "{defects:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_seller_polled_by_get_task_with_its_own_statuses() {
    // Its conformant webhook completes the operation; polling alone is the next case.
    let defects = converges(Deviations {
        get_task: true,
        ..Deviations::default()
    })
    .await;
    assert!(defects.is_empty(), "{defects:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_get_task_seller_is_followed_by_polling_alone_through_its_own_statuses() {
    let w = world(Deviations {
        get_task: true,
        strict_arguments: true,
        ..Deviations::default()
    })
    .await;
    let get = || async {
        let (s, got) = w
            .api
            .call(
                "GET",
                &format!("/api/v1/operations/{}", w.id),
                Some(&w.key),
                None,
            )
            .await;
        assert_eq!(s, 200, "{got}");
        got
    };
    // No webhook: the backup poll (two minutes after creation) finds `requires_approval`.
    let mut at = now_s() + 130;
    w.host.cron_tick(at).await.unwrap();
    assert_eq!(
        w.seller.calls_of("get_task").len(),
        1,
        "{:?}",
        w.seller.calls()
    );
    assert_eq!(get().await["status"], "working");
    // The seller approves; a later poll finds it, with the buy.
    w.seller.set_status(&w.task, "completed");
    for _ in 0..20 {
        if get().await["status"] == "completed" {
            break;
        }
        at += 60;
        w.host.cron_tick(at).await.unwrap();
    }
    let got = get().await;
    assert_eq!(got["status"], "completed", "{got}\n{}", w.host.output());
    assert_eq!(
        got["result"]["media_buy_id"],
        format!("mb_{}", w.task),
        "{got}"
    );
    for args in w.seller.calls_of("get_task") {
        assert_eq!(
            args,
            json!({"task_id": w.task}),
            "only what get_task declares"
        );
    }
    // The seller's own words are on the events.
    let (s, ev) = w
        .api
        .call(
            "GET",
            &format!("/api/v1/operations/{}/events", w.id),
            Some(&w.key),
            None,
        )
        .await;
    assert_eq!(s, 200, "{ev}");
    let said: Vec<&str> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["seller_status"].as_str())
        .collect();
    assert_eq!(said, ["requires_approval", "approved"], "{ev}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_seller_whose_webhooks_echo_neither_operation_nor_token() {
    let defects = converges(Deviations {
        webhook_without_ids: true,
        ..Deviations::default()
    })
    .await;
    assert_eq!(defects, ["webhook_token_missing"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_seller_signing_another_serialization_than_it_sends() {
    let defects = converges(Deviations {
        hmac_over_compact: true,
        ..Deviations::default()
    })
    .await;
    assert_eq!(defects, ["hmac_over_reserialized_body"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_seller_answering_in_server_sent_events() {
    let defects = converges(Deviations {
        sse: true,
        ..Deviations::default()
    })
    .await;
    assert!(defects.is_empty(), "{defects:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_seller_listing_its_tasks_in_its_own_words() {
    let defects = converges(Deviations {
        list_tasks: true,
        get_task: true,
        ..Deviations::default()
    })
    .await;
    assert!(defects.is_empty(), "{defects:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_seller_with_every_deviation_at_once() {
    let defects = converges(Deviations {
        strict_arguments: true,
        get_task: true,
        webhook_without_ids: true,
        hmac_over_compact: true,
        sse: true,
        list_tasks: true,
    })
    .await;
    // The signature is checked first: that is what the seller is told and shown.
    assert_eq!(defects, ["hmac_over_reserialized_body"]);
}
