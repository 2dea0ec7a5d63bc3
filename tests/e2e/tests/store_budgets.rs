//! The store budgets of the hot paths (issue #17), counted on the real `.wasm` by the test
//! host: a creation reaches its seller after at most 6 writes; an accepted webhook answers
//! after at most 3 writes and 5 calls, is visible to `GET` at once and announced to the
//! buyer within 5 s; a duplicate costs at most 2 calls and no write, a forged delivery 1
//! read and no write. (The sweep's budget per due poll is counted by the core's tests and
//! the bench.)

use e2e::task_seller::TaskSeller;
use e2e::{Api, create_body, start};
use serde_json::json;
use spin_test_host::{KvCounts, KvOp};
use std::time::{Duration, Instant};

fn shown(c: &KvCounts) -> String {
    format!("{:?} ({} writes, {} calls)", c.0, c.writes(), c.total())
}

#[tokio::test(flavor = "multi_thread")]
async fn creations_and_webhooks_stay_within_their_store_budgets() {
    let dir = tempfile::tempdir().unwrap();
    let seller = TaskSeller::start().await;
    let host = start(&dir.path().join("kv.db"), None).await;
    let api = Api::new(host.base_url());
    let key = api.tenant("Acme").await;
    api.register_seller(&key, json!({"mcp_url": seller.url, "webhook_mode": "hmac"}))
        .await;
    let (callback, notified) = e2e::receiver::start().await;
    api.register_callback(&key, &callback).await;
    let create = || async {
        let (s, op) = api
            .call(
                "POST",
                "/api/v1/operations",
                Some(&key),
                Some(create_body()),
            )
            .await;
        assert_eq!((s, op["status"].as_str()), (201, Some("submitted")), "{op}");
        op["operation_id"].as_str().unwrap().to_string()
    };
    // The first creation makes the seller's capability handshake.
    create().await;

    host.reset_kv_counts();
    let id = create().await;
    let marks = host.kv_counts_at_outbound();
    let (_, before_seller) = marks.first().expect("the seller was called");
    assert!(
        before_seller.writes() <= 6,
        "a creation before its seller call: {}",
        shown(before_seller)
    );

    let task = seller.tasks_for(&id)[0].task_id.clone();
    seller.set_status(&task, "completed");
    let webhook = seller.webhook(&task, "completed", "2026-11-22T10:00:02Z");
    assert!(host.wait_idle(Duration::from_secs(10)).await);
    let received_before = notified.lock().unwrap().len();
    host.reset_kv_counts();
    let answer = webhook.send(&api.http, &host.base_url()).await;
    let answered = Instant::now();
    let before_answer = host
        .kv_counts_at_last_answer()
        .expect("counted at the answer");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        before_answer.writes() <= 3 && before_answer.total() <= 5,
        "an accepted webhook before its answer: {}",
        shown(&before_answer)
    );
    // Visible at once (the record holds the change when the 2xx leaves).
    let (s, op) = api
        .call("GET", &format!("/api/v1/operations/{id}"), Some(&key), None)
        .await;
    assert_eq!((s, op["status"].as_str()), (200, Some("completed")), "{op}");
    assert!(answered.elapsed() < Duration::from_secs(1));
    // Announced within 5 s: the creation's `submitted` (still waiting for the sweep) first,
    // then `completed`, by the webhook component's work after its answer.
    while notified.lock().unwrap().len() < received_before + 2 {
        assert!(
            answered.elapsed() < Duration::from_secs(5),
            "notifications after 5 s: {:?}\n{}",
            notified.lock().unwrap(),
            host.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(host.wait_idle(Duration::from_secs(10)).await);

    // The seller resends it.
    host.reset_kv_counts();
    let again = webhook.send(&api.http, &host.base_url()).await;
    assert_eq!(
        (again.status, again.body["outcome"].as_str()),
        (200, Some("duplicate")),
        "{}",
        again.body
    );
    assert!(host.wait_idle(Duration::from_secs(10)).await);
    let duplicate = host.kv_counts();
    assert!(
        duplicate.total() <= 2 && duplicate.writes() == 0,
        "a duplicate, in all: {}",
        shown(&duplicate)
    );

    // A forgery: the right body under a wrong secret.
    let mut forged = webhook.clone();
    forged.secret = "not-the-secret-0123456789abcdef0123456789".into();
    host.reset_kv_counts();
    let refused = forged.send(&api.http, &host.base_url()).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(host.wait_idle(Duration::from_secs(10)).await);
    let forgery = host.kv_counts();
    assert!(
        forgery.writes() == 0 && forgery.get(KvOp::Get) <= 1,
        "a forged delivery, in all: {}",
        shown(&forgery)
    );
}
