//! The cost of one sweep tick with many operations pending and a few due.
//!
//! Webhook-mode operations are first looked at 60 s after creation (the redispatch safety
//! net, a stale hint by then) and first polled at 120 s, so "10,000 pending, 100 due" is a
//! state in which the pending operations were created within the minute before the tick.
//! The API on this VM is far too slow to create them within a minute, so they are created
//! by the same handler natively ([`crate::seed`]) with the clock set to that minute, on a
//! tmpfs copy of the state, which the host then runs from a disk copy. The ticks are real
//! cron events to the sweep component, fired at that future time.

use crate::app::{self, App, create_body};
use e2e::fake_seller::Answer;
use serde_json::{Value, json};
use spin_test_host::KvCounts;
use spin_test_host::kv::Kv;
use std::time::{Duration, Instant};

pub struct Tick {
    pub wall: Duration,
    pub kv: KvCounts,
    /// The tick's own report (`sweep:last`).
    pub report: Value,
}

pub struct SweepRun {
    pub pending: usize,
    pub due: usize,
    pub seeding: Duration,
    pub state_bytes: u64,
    /// A tick with nothing due (one bucket to read).
    pub idle: Tick,
    pub busy: Tick,
}

async fn tick(app: &App, at_ms: u64) -> Tick {
    app.host.reset_kv_counts();
    let started = Instant::now();
    app.host
        .cron_tick(at_ms / 1000)
        .await
        .unwrap_or_else(|e| panic!("tick failed: {e:#}\n{}", app.host.output()));
    let wall = started.elapsed();
    let kv = app.host.kv_counts();
    let report = Kv::open(&app.state_file())
        .ok()
        .and_then(|k| k.get("default", "sweep:last").ok().flatten())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    Tick { wall, kv, report }
}

pub async fn run(pending: usize, due: usize) -> SweepRun {
    let app = App::start_in("hmac", app::scratch()).await;
    // The measured tick's time: far enough ahead for any seeding, on a due-bucket boundary,
    // 50 s into a lease slot: the worst case, where every operation lease taken during the
    // tick spans two slots (two more KV calls per due operation than early in a slot).
    let slot = orchestrator_core::schedule::lease::LeaseConfig::default().slot_ms;
    let t = (app::now_ms() / slot + 60) * slot + 50_000;
    for i in 0..pending {
        app.seller.answer(Answer::Payload(
            json!({"status": "submitted", "task_id": format!("task_sweep_{i}")}),
        ));
    }
    let seeder = app.seeder();
    let started = Instant::now();
    let bulk = pending - due;
    for i in 0..bulk {
        // Created over [T-55 s, T-31 s]: safety-net hints at T+5 s or later, polls at T+65 s.
        seeder
            .clock
            .0
            .set(t - 55_000 + (i as u64 * 24_000) / bulk as u64);
        let (s, op) = seeder.create(&create_body(true)).await;
        assert!(s == 201 && op["status"] == "submitted", "{s} {op}");
    }
    // Without a webhook they are polled 1-5 s after creation: due at T, not at T-30 s.
    seeder.clock.0.set(t - 30_000);
    for _ in 0..due {
        let (s, op) = seeder.create(&create_body(false)).await;
        assert!(s == 201 && op["status"] == "submitted", "{s} {op}");
    }
    let seeding = started.elapsed();
    drop(seeder);
    let app = app.move_to(tempfile::tempdir().expect("temp dir")).await;
    let (s, list) = app
        .api
        .call("GET", "/api/v1/operations?limit=1", Some(&app.key), None)
        .await;
    assert!(
        s == 200 && list["operations"][0]["status"] == "submitted",
        "seeded operations read back through the API: {s} {list}"
    );
    // The first tick reads an hour of empty buckets to place the sweep cursor; it also begins
    // the auditor's count of the status gauges, which ends with its pass (the second tick
    // among 1,000 pending). Neither measured tick then holds a count's reads.
    tick(&app, t - 40_000).await;
    tick(&app, t - 35_000).await;
    // Both measured ticks walk the auditor's same 500 listing entries (its share of a tick
    // costs what those entries hold), so their difference is the due work alone.
    let audit_cursor = stored(&app, orchestrator_core::foundation::keys::AUDIT_CURSOR);
    let idle = tick(&app, t - 30_000).await;
    assert_eq!(idle.report["due"], 0, "{}", idle.report);
    for i in 0..due {
        app.seller.answer(Answer::Payload(
            json!({"task_id": format!("task_sweep_{}", bulk + i),
            "task_type": "create_media_buy", "status": "submitted",
            "created_at": "2026-11-22T10:00:00Z", "updated_at": "2026-11-22T10:00:00Z"}),
        ));
    }
    let polls_before = polls(&app);
    if let Some(cursor) = audit_cursor {
        let kv = Kv::open(&app.state_file()).expect("the state file opens");
        kv.set(
            "default",
            orchestrator_core::foundation::keys::AUDIT_CURSOR,
            &cursor,
        )
        .expect("the audit cursor restored");
    }
    let busy = tick(&app, t).await;
    assert_eq!(busy.report["touched"], due, "{}", busy.report);
    assert_eq!(
        polls(&app) - polls_before,
        due,
        "one poll per due operation"
    );
    SweepRun {
        state_bytes: std::fs::metadata(app.state_file()).map_or(0, |m| m.len()),
        pending,
        due,
        seeding,
        idle,
        busy,
    }
}

fn stored(app: &App, key: &str) -> Option<Vec<u8>> {
    Kv::open(&app.state_file())
        .ok()
        .and_then(|k| k.get("default", key).ok().flatten())
}

fn polls(app: &App) -> usize {
    app.seller
        .calls()
        .iter()
        .filter(|(tool, _)| tool == "get_task_status")
        .count()
}
