//! The operations console in a real headless Chromium, against the real `.wasm` components:
//! signing in, the operations list, an operation's timeline after a webhook completes it,
//! approving a held operation, sellers and health, and a seller's markup shown as text.

use e2e::browser::Browser;
use e2e::fake_seller::{Answer, FakeSeller};
use e2e::{Api, repo_root, start};
use serde_json::{Value, json};
use std::time::Duration;

/// Longer than one auto-refresh period (5 s) plus a slow machine's margin.
const REFRESHED: Duration = Duration::from_secs(20);
const XSS: &str = "<script>window.__xss=1</script>";

fn create_body(governed: bool) -> Value {
    let mut b = json!({
        "seller_id": "ssp",
        "task": "create_media_buy",
        "arguments": {
            "account": {"account_id": "acc_1"},
            "brand": {"domain": "acme.example"},
            "start_time": "asap",
            "end_time": "2027-01-31T23:59:59Z",
            "packages": [{"product_id": "p1", "budget": 5000, "pricing_option_id": "cpm"}]
        }
    });
    if governed {
        b["governance"] = json!({"agent_id": "gov", "plan_id": "plan_1"});
    }
    b
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_signs_in_lists_shows_timelines_and_decides() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(
        &dir.path().join("kv.db"),
        Some("https://orchestrator.example"),
    )
    .await;
    let base = host.base_url();
    let api = Api::new(&base);
    let key = api.tenant("Acme").await;
    let seller = FakeSeller::start().await;
    let gov = FakeSeller::start().await;
    for (id, s) in [("ssp", &seller), ("gov", &gov)] {
        let (st, b) = api
            .call(
                "PUT",
                &format!("/api/v1/sellers/{id}"),
                Some(&key),
                Some(json!({"mcp_url": s.url, "webhook_mode": "bearer"})),
            )
            .await;
        assert_eq!(st, 201, "{b}");
    }
    // The seller's message carries markup: the console must show it as text.
    seller.answer(Answer::Payload(
        json!({"status": "submitted", "task_id": "task_1",
        "message": format!("{XSS} awaiting IO")}),
    ));
    let (st, op) = api
        .call(
            "POST",
            "/api/v1/operations",
            Some(&key),
            Some(create_body(false)),
        )
        .await;
    assert_eq!(st, 201, "{op}\n{}", host.output());
    let id = op["operation_id"].as_str().unwrap().to_string();

    // The real component serves the page with its security headers.
    let page = reqwest::get(format!("{base}/console/")).await.unwrap();
    let header = |name: &str| {
        page.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    assert!(header("content-security-policy").contains("frame-ancestors 'none'"));
    assert_eq!(header("x-content-type-options"), "nosniff");

    let browser = Browser::start().await;
    browser.goto(&format!("{base}/console/")).await;

    // A wrong key shows the API's own error.
    browser.type_into("#api-key", "adcpo_not-a-key").await;
    browser.click("#sign-in-button").await;
    let error = browser
        .wait_for_text("#sign-in-error", "unauthorized", REFRESHED)
        .await;
    assert!(error.contains("unauthorized"), "{error}");

    browser.type_into("#api-key", &key).await;
    browser.click("#sign-in-button").await;
    browser
        .wait_for_text("#operations-rows", &id, REFRESHED)
        .await;
    let counts = browser
        .wait_for_text("#status-counts", "1 submitted", REFRESHED)
        .await;
    assert!(counts.contains("1 submitted"), "{counts}");
    let where_kept = browser
        .script(
            "return [location.href, document.cookie, \
             sessionStorage.getItem('adcp-console-api-key')]",
        )
        .await;
    assert!(
        !where_kept[0].as_str().unwrap().contains(&key[6..]),
        "{where_kept}"
    );
    assert_eq!(where_kept[1], "", "no cookie");
    assert_eq!(where_kept[2], json!(key), "kept in sessionStorage");

    // Open it: the seller's markup is text, and never ran.
    browser.click(&format!("a[href='#/operations/{id}']")).await;
    let summary = browser
        .wait_for_text("#operation-summary", "awaiting IO", REFRESHED)
        .await;
    assert!(summary.contains(XSS), "{summary}");
    let ran = browser
        .script("return [typeof window.__xss, document.querySelectorAll('#view script').length]")
        .await;
    assert_eq!(
        ran,
        json!(["undefined", 0]),
        "the seller's script never ran"
    );
    assert!(browser.text("#timeline-rows").await.contains("submitted"));

    // The seller completes it by webhook; the open page shows it on its next refresh.
    let calls = seller.calls();
    let (_, sent) = calls.iter().find(|(t, _)| t == "create_media_buy").unwrap();
    let pnc = &sent["push_notification_config"];
    let webhook = json!({
        "idempotency_key": "whk_console_0000000001", "operation_id": id, "task_id": "task_1",
        "task_type": "create_media_buy", "status": "completed",
        "timestamp": "2026-11-22T10:00:00Z", "token": pnc["token"],
        "result": {"media_buy_id": "mb_console_1", "packages": []}
    });
    let r = reqwest::Client::new()
        .post(format!("{base}/webhooks/adcp/{id}"))
        .bearer_auth(pnc["authentication"]["credentials"].as_str().unwrap())
        .header("content-type", "application/json")
        .body(webhook.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let timeline = browser
        .wait_for_text("#timeline-rows", "webhook", REFRESHED)
        .await;
    assert!(timeline.contains("completed"), "{timeline}");
    browser
        .wait_for_text("#operation-summary", "mb_console_1", REFRESHED)
        .await;

    // A governance hold: approved from its page, the result shown, the decider recorded.
    gov.answer(Answer::Payload(
        json!({"check_id": "c1", "verdict": "conditions",
        "plan_id": "plan_1", "explanation": "needs a second signature"}),
    ));
    let (st, held) = api
        .call(
            "POST",
            "/api/v1/operations",
            Some(&key),
            Some(create_body(true)),
        )
        .await;
    assert_eq!(
        (st, held["status"].as_str()),
        (201, Some("awaiting_decision")),
        "{held}"
    );
    let held_id = held["operation_id"].as_str().unwrap().to_string();
    browser
        .goto(&format!("{base}/console/#/operations/{held_id}"))
        .await;
    browser
        .wait_for_text("#operation-summary", "needs a second signature", REFRESHED)
        .await;
    seller.answer(Answer::Payload(json!({"media_buy_id": "mb_console_2",
        "status": "active", "packages": [], "context": {"operation_id": held_id}})));
    browser.click("#action-approve").await;
    browser
        .wait_for_text("#actions", "Approve this operation?", REFRESHED)
        .await;
    browser.click("#confirm-action").await;
    let result = browser
        .wait_for_text("#action-result", "completed", REFRESHED)
        .await;
    assert!(result.contains("approve"), "{result}");
    browser
        .wait_for_text("#timeline-rows", &key[..14], REFRESHED)
        .await;
    assert!(
        !browser.page_text().await.contains(&key[14..]),
        "the key itself is never shown"
    );

    // The list filters by status and keeps the filter across auto-refreshes.
    browser.goto(&format!("{base}/console/#/operations")).await;
    browser
        .wait_for_text("#operations-rows", &held_id, REFRESHED)
        .await;
    browser
        .click("#filter-status option[value='awaiting_decision']")
        .await;
    browser.click("#filters button").await;
    browser
        .wait_for_text("#operations-rows", "No operations match", REFRESHED)
        .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let rows = browser.text("#operations-rows").await;
    assert!(rows.contains("No operations match"), "{rows}");
    let kept = browser
        .script("return document.getElementById('filter-status').value")
        .await;
    assert_eq!(kept, "awaiting_decision");

    // More to look at: one still with the seller, one held for a decision.
    seller.answer(Answer::Payload(
        json!({"status": "submitted", "task_id": "task_3"}),
    ));
    api.call(
        "POST",
        "/api/v1/operations",
        Some(&key),
        Some(create_body(false)),
    )
    .await;
    gov.answer(Answer::Payload(
        json!({"check_id": "c2", "verdict": "conditions",
        "plan_id": "plan_1", "explanation": "over the monthly cap"}),
    ));
    api.call(
        "POST",
        "/api/v1/operations",
        Some(&key),
        Some(create_body(true)),
    )
    .await;

    // Sellers and health.
    browser.goto(&format!("{base}/console/#/sellers")).await;
    let sellers = browser
        .wait_for_text("#sellers-rows", "ssp", REFRESHED)
        .await;
    assert!(
        sellers.contains("gov") && sellers.contains("closed"),
        "{sellers}"
    );
    browser
        .click("tr[data-seller-id='ssp'] .refresh-capabilities")
        .await;
    browser
        .wait_for_text("#seller-result", "Capabilities of ssp refreshed", REFRESHED)
        .await;
    browser.goto(&format!("{base}/console/#/health")).await;
    let health = browser
        .wait_for_text("#health", "open operations", REFRESHED)
        .await;
    assert!(health.contains("completed"), "{health}");

    // A picture of the list for the README.
    browser.goto(&format!("{base}/console/#/operations")).await;
    browser
        .wait_for_text("#operations-rows", &held_id, REFRESHED)
        .await;
    let shot = repo_root().join("target/console-screenshot.png");
    let _ = std::fs::remove_file(&shot);
    browser.screenshot(&shot).await;
    let png = std::fs::read(&shot).expect("screenshot saved");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
}
