//! Operation creation: `POST /api/v1/operations` against a local seller that completes a
//! `create_media_buy` synchronously.

use crate::app::App;
use crate::stats::{self, Run};
use e2e::fake_seller::Answer;
use serde_json::json;

pub struct CreateRun {
    pub run: Run,
    pub kv_per_op: f64,
    /// Seller `tools/call`s per creation (the create itself, plus any capability look-ups).
    pub seller_calls_per_op: f64,
}

/// The key-value calls of one creation until its first call to the seller (after a warm-up
/// creation, which makes the capability handshake).
pub async fn before_the_seller(app: &App) -> spin_test_host::KvCounts {
    let answer =
        Answer::Payload(json!({"status": "completed", "media_buy_id": "mb_first", "packages": []}));
    app.seller.answer(answer.clone());
    app.create(true).await;
    app.seller.answer(answer);
    app.host.reset_kv_counts();
    app.host.trace_kv_calls(true);
    app.create(true).await;
    if std::env::var_os("BENCH_TRACE").is_some() {
        for c in app.host.kv_call_trace() {
            eprintln!("TRACE {} {:?} {}", c.component, c.op, c.key);
        }
    }
    app.host.trace_kv_calls(false);
    let marks = app.host.kv_counts_at_outbound();
    marks.into_iter().next().expect("the seller was called").1
}

/// Creates `count` operations `concurrency` at a time (after one warm-up creation, which
/// also makes the capability handshake) and checks each completed.
pub async fn run(app: &App, count: usize, concurrency: usize) -> CreateRun {
    let answer = |i: usize| {
        Answer::Payload(
            json!({"status": "completed", "media_buy_id": format!("mb_{i}"), "packages": []}),
        )
    };
    app.seller.answer(answer(0));
    app.create(true).await;
    for i in 1..=count {
        app.seller.answer(answer(i));
    }
    let calls_before = app.seller.calls().len();
    app.host.reset_kv_counts();
    let run = stats::drive((0..count).collect(), concurrency, |_| async {
        let op = app.create(true).await;
        assert_eq!(op["status"], "completed", "{op}");
    })
    .await;
    CreateRun {
        kv_per_op: app.host.kv_counts().total() as f64 / count as f64,
        seller_calls_per_op: (app.seller.calls().len() - calls_before) as f64 / count as f64,
        run,
    }
}
