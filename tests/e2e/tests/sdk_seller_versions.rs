//! The real components against sales agents of each AdCP 3.x release, built on the official
//! Python SDK (`tests/peers/seller.py --adcp-version`). Per release: the version envelope
//! negotiated from the seller's declaration, on its record and on every call it receives; a
//! submitted create completed by the seller's signed webhook and another completed by polling
//! with the release's polling tool (3.0's `tasks/get` answers without a result, so the buy is
//! looked up by its context); every call each seller received is valid against its release's
//! request schemas. One host for the three sellers.

use e2e::proxy::Proxy;
use e2e::python_seller::PythonSeller;
use e2e::schema::{Direction, Schemas};
use e2e::{Api, start};
use serde_json::{Value, json};
use spin_test_host::TestHost;
use std::collections::BTreeSet;

/// What a seller of one release declares, and what the orchestrator must make of it.
struct Release {
    version: &'static str,
    /// `adcp.supported_versions` (3.0 has no such field).
    declared: &'static [&'static str],
    /// The version fields negotiated: the release we prefer among those declared (3.1 when
    /// none are), with major 3.
    envelope: Value,
    poll_tool: &'static str,
    /// The arguments a poll carries: what the polling tool declares, plus the envelope.
    poll_arguments: &'static [&'static str],
    /// Where a completed create's result puts the buy's status.
    buy_status: &'static [&'static str],
}

fn releases() -> [Release; 3] {
    let envelope = json!({"adcp_version": "3.1", "adcp_major_version": 3});
    let envelope_3_2 = json!({"adcp_version": "3.2", "adcp_major_version": 3});
    let get_task_status: &[&str] = &[
        "task_id",
        "include_result",
        "account",
        "adcp_version",
        "adcp_major_version",
    ];
    [
        Release {
            version: "3.0",
            declared: &[],
            envelope: envelope.clone(),
            poll_tool: "tasks/get",
            poll_arguments: &["task_id", "adcp_version", "adcp_major_version"],
            buy_status: &["status"],
        },
        Release {
            version: "3.1",
            declared: &["3.0", "3.1"],
            envelope: envelope.clone(),
            poll_tool: "get_task_status",
            poll_arguments: get_task_status,
            buy_status: &["media_buy_status", "status"],
        },
        Release {
            version: "3.2",
            declared: &["3.0", "3.1", "3.2"],
            envelope: envelope_3_2,
            poll_tool: "get_task_status",
            poll_arguments: get_task_status,
            buy_status: &["media_buy_status"],
        },
    ]
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A host reached by sellers through a proxy at its public base URL (so RFC 9421
/// `@target-uri` is the URL the seller signed), with one tenant.
struct World {
    host: TestHost,
    _proxy: Proxy,
    api: Api,
    key: String,
    _dir: tempfile::TempDir,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let proxy = Proxy::start().await;
        let host = start(&dir.path().join("kv.db"), Some(&proxy.url())).await;
        proxy.forward_to(host.addr());
        let api = Api::new(host.base_url());
        let key = api.tenant("Acme").await;
        World {
            host,
            _proxy: proxy,
            api,
            key,
            _dir: dir,
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.api.call(method, path, Some(&self.key), body).await
    }

    async fn create(&self, seller_id: &str, webhook: bool) -> Value {
        let body = json!({
            "seller_id": seller_id,
            "task": "create_media_buy",
            "webhook": webhook,
            "arguments": {
                "account": {"account_id": "acc_1"},
                "brand": {"domain": "acme.example"},
                "start_time": "asap",
                "end_time": "2027-01-31T23:59:59Z",
                "packages": [{"product_id": "p1", "budget": 5000, "pricing_option_id": "cpm"}]
            }
        });
        let (s, op) = self.call("POST", "/api/v1/operations", Some(body)).await;
        assert_eq!(s, 201, "{op}\n{}", self.host.output());
        assert_eq!(op["status"], "submitted", "{op}\n{}", self.host.output());
        op
    }

    async fn op(&self, id: &str) -> Value {
        let (s, op) = self
            .call("GET", &format!("/api/v1/operations/{id}"), None)
            .await;
        assert_eq!(s, 200, "{op}");
        op
    }
}

fn id(op: &Value) -> String {
    op["operation_id"].as_str().unwrap().to_string()
}

/// The seller's buy for an operation (exactly one).
async fn buy_for(seller: &PythonSeller, op: &str) -> Value {
    let all = seller.media_buys().await;
    let buys: Vec<&Value> = all["media_buys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["operation_id"] == op)
        .collect();
    assert_eq!(buys.len(), 1, "{all}");
    buys[0].clone()
}

/// One release's seller and its operation completed by polling.
struct Case {
    release: Release,
    seller: PythonSeller,
    polled: String,
}

#[tokio::test(flavor = "multi_thread")]
async fn sellers_of_each_release_negotiate_their_envelope_and_complete_async_buys() {
    // The sellers first: three SDK imports share the cores with the components' compilation
    // poorly, and each must be ready within its timeout.
    let sellers = futures::future::join_all(releases().into_iter().map(async |release| {
        let seller =
            PythonSeller::start(&["--create", "submitted", "--adcp-version", release.version])
                .await;
        (release, seller)
    }))
    .await;
    let w = World::new().await;

    let mut cases = Vec::new();
    for (release, seller) in sellers {
        let seller_id = format!("sdk-{}", release.version.replace('.', "-"));
        let (s, v) = w
            .call(
                "PUT",
                &format!("/api/v1/sellers/{seller_id}"),
                Some(json!({"mcp_url": seller.mcp_url, "credentials": "buyer-token"})),
            )
            .await;
        assert_eq!(s, 201, "{v}\n{}\n{}", w.host.output(), seller.log());
        let (_, view) = w
            .call("GET", &format!("/api/v1/sellers/{seller_id}"), None)
            .await;
        assert_eq!(
            (
                &view["capabilities"]["supported_versions"],
                &view["version_envelope"]
            ),
            (&json!(release.declared), &release.envelope),
            "{}: {view}",
            release.version
        );

        let polled = id(&w.create(&seller_id, false).await);
        let hooked = w.create(&seller_id, true).await;
        // Every release's capabilities can declare RFC 9421 webhook signing; these sellers do.
        assert_eq!(hooked["webhook_mode"], "rfc9421", "{hooked}");
        let hooked = id(&hooked);
        let poll_task = buy_for(&seller, &polled).await["task_id"].clone();
        seller
            .complete(poll_task.as_str().unwrap(), "completed", false)
            .await;

        let buy = buy_for(&seller, &hooked).await;
        let done = seller
            .complete(buy["task_id"].as_str().unwrap(), "completed", true)
            .await;
        let delivery = &done["deliveries"][0];
        let body: Value = serde_json::from_str(delivery["body"].as_str().unwrap_or("null"))
            .unwrap_or(Value::Null);
        assert_eq!(
            (delivery["status_code"].as_u64(), &body["outcome"]),
            (Some(200), &json!("applied")),
            "{}: {done}\n{}",
            release.version,
            w.host.output()
        );
        let got = w.op(&hooked).await;
        assert_eq!(got["status"], "completed", "{got}");
        let result = &got["result"];
        assert_eq!(result["media_buy_id"], buy["media_buy_id"], "{got}");
        // The seller's result is kept as it sent it, the buy's status where its release puts it.
        let placed: BTreeSet<&str> = ["status", "media_buy_status"]
            .into_iter()
            .filter(|f| result[*f] == "active")
            .collect();
        assert_eq!(
            placed,
            release.buy_status.iter().copied().collect(),
            "{}: {result}",
            release.version
        );
        cases.push(Case {
            release,
            seller,
            polled,
        });
    }

    let want: Vec<(&str, &str)> = cases
        .iter()
        .map(|c| (c.polled.as_str(), "completed"))
        .collect();
    tick_until(&w, &want, now_s(), 60).await;

    for c in &cases {
        let r = &c.release;
        let got = w.op(&c.polled).await;
        let buy = buy_for(&c.seller, &c.polled).await;
        assert_eq!(
            got["result"]["media_buy_id"], buy["media_buy_id"],
            "{}: {got}",
            r.version
        );
        let calls = c.seller.calls().await;
        let polls: Vec<&Value> = calls
            .iter()
            .filter(|call| call["arguments"]["task_id"] == buy["task_id"])
            .collect();
        assert!(!polls.is_empty(), "{}: never polled", r.version);
        for poll in &polls {
            let args: BTreeSet<&str> = poll["arguments"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(
                (poll["tool"].as_str(), args),
                (
                    Some(r.poll_tool),
                    r.poll_arguments.iter().copied().collect()
                ),
                "{}: {poll}",
                r.version
            );
        }
        if r.version == "3.0" {
            // `tasks/get` carries no result: the buy came from `get_media_buys` by context.
            assert!(
                calls.iter().any(|call| call["tool"] == "get_media_buys"
                    && call["arguments"]["context"]["operation_id"] == c.polled),
                "3.0: no look-up: {calls:#?}"
            );
        }
        // Discovery goes out with the pin used before anything is negotiated; every later
        // call carries the negotiated fields and no others.
        let undiscovered = json!({"adcp_version": "3.1", "adcp_major_version": 3});
        for call in &calls {
            let sent = json!({
                "adcp_version": call["arguments"].get("adcp_version"),
                "adcp_major_version": call["arguments"].get("adcp_major_version"),
            });
            let want = match call["tool"] == "get_adcp_capabilities" {
                true => &undiscovered,
                false => &r.envelope,
            };
            assert_eq!(&sent, want, "{}: {call}", r.version);
        }
        // Every call is valid against the seller's release's own request schema (3.0's
        // `tasks/get` is not a manifest tool: its request is `core/tasks-get-request.json`).
        let schemas = Schemas::open(r.version);
        for call in &calls {
            let (tool, args) = (call["tool"].as_str().unwrap_or(""), &call["arguments"]);
            let failed: Vec<String> = if tool == "tasks/get" {
                let report = schemas.check("core/tasks-get-request.json", args);
                (!report.is_valid())
                    .then(|| report.to_string())
                    .into_iter()
                    .collect()
            } else {
                assert!(schemas.has_tool(tool), "{}: {tool} is not AdCP", r.version);
                (schemas.check_tool(tool, Direction::Request, args).iter())
                    .map(|report| report.to_string())
                    .collect()
            };
            assert!(
                failed.is_empty(),
                "{} {tool} is not valid AdCP {}:\n{args:#}\n{}",
                r.version,
                schemas.version(),
                failed.join("")
            );
        }
        let tools: BTreeSet<&str> = calls.iter().filter_map(|c| c["tool"].as_str()).collect();
        assert!(
            tools.contains("get_adcp_capabilities") && tools.contains("create_media_buy"),
            "{}: {tools:?}",
            r.version
        );
    }
}

/// Fires ticks at `start + step * i` (i = 1..=12) until each `(operation, status)` holds.
async fn tick_until(w: &World, want: &[(&str, &str)], start: u64, step: u64) {
    for i in 1..=12 {
        w.host.cron_tick(start + step * i).await.unwrap();
        let mut done = true;
        for (id, status) in want {
            done &= w.op(id).await["status"] == *status;
        }
        if done {
            return;
        }
    }
    let mut states = Vec::new();
    for (id, _) in want {
        states.push(w.op(id).await);
    }
    panic!(
        "{want:?} not reached after 12 ticks: {states:#?}\n{}",
        w.host.output()
    );
}
