use super::*;
use crate::schedule::HOUR_MS;
use crate::testing::SeededEntropy;

#[test]
fn full_jitter_stays_within_floor_and_ceiling() {
    let e = SeededEntropy::new(1);
    let b = Backoff::POLL;
    for attempt in 0..70 {
        let ceiling = b.ceiling_ms(attempt);
        assert_eq!(
            ceiling,
            (5_000u64.saturating_mul(1u64.checked_shl(attempt).unwrap_or(u64::MAX))).min(900_000)
        );
        for _ in 0..200 {
            let d = b.delay_ms(attempt, &e);
            assert!(d >= b.floor_ms, "{attempt}: {d}");
            assert!(d <= ceiling.max(b.floor_ms), "{attempt}: {d}");
        }
    }
    assert_eq!(b.ceiling_ms(200), b.cap_ms);
    // A zero base never yields zero: the floor holds.
    let zero = Backoff {
        base_ms: 0,
        cap_ms: 0,
        floor_ms: 1_000,
    };
    assert_eq!(zero.delay_ms(3, &e), 1_000);
}

#[test]
fn full_jitter_is_spread_over_the_whole_range() {
    // Distribution sanity: at the cap, the mean is near cap/2 and every decile is hit.
    let e = SeededEntropy::new(42);
    let b = Backoff {
        base_ms: 1_000,
        cap_ms: 100_000,
        floor_ms: 1,
    };
    let n = 20_000u64;
    let mut deciles = [0u64; 10];
    let mut sum = 0u64;
    for _ in 0..n {
        let d = b.delay_ms(20, &e);
        sum += d;
        deciles[((d * 10 / 100_001) as usize).min(9)] += 1;
    }
    let mean = sum / n;
    assert!((47_000..=53_000).contains(&mean), "mean {mean}");
    for (i, c) in deciles.iter().enumerate() {
        assert!((1_600..=2_400).contains(c), "decile {i}: {c}");
    }
    // Early attempts stay small: attempt 0 never exceeds the base.
    assert!((0..1_000).all(|_| b.delay_ms(0, &e) <= 1_000));
}

#[test]
fn same_entropy_same_schedule() {
    let a: Vec<u64> = {
        let e = SeededEntropy::new(9);
        (0..10).map(|i| Backoff::POLL.delay_ms(i, &e)).collect()
    };
    let b: Vec<u64> = {
        let e = SeededEntropy::new(9);
        (0..10).map(|i| Backoff::POLL.delay_ms(i, &e)).collect()
    };
    assert_eq!(a, b);
}

#[test]
fn retry_after_is_rounded_up_clamped_and_never_undercut() {
    assert_eq!(clamp_retry_after_s(0.2), 1);
    assert_eq!(clamp_retry_after_s(-5.0), 1);
    assert_eq!(clamp_retry_after_s(f64::NAN), 1);
    assert_eq!(clamp_retry_after_s(2.1), 3);
    assert_eq!(clamp_retry_after_s(30.0), 30);
    assert_eq!(clamp_retry_after_s(1e12), 3_600);
    let e = SeededEntropy::new(3);
    for _ in 0..500 {
        let d = honour_retry_after(2_000, Some(30), &e);
        assert!((30_000..=33_000).contains(&d), "{d}");
    }
    // Our own longer delay wins; absurd hints are clamped.
    assert_eq!(honour_retry_after(90_000, Some(30), &e), 90_000);
    assert!(honour_retry_after(0, Some(99_999), &e) <= 3_960_000);
    assert!(honour_retry_after(0, Some(0), &e) >= 1_000);
    assert_eq!(honour_retry_after(7, None, &e), 7);
}

#[test]
fn retry_after_header_forms() {
    // 1994-11-06T08:49:37Z = 784111777.
    let now = 784_111_777_000;
    assert_eq!(parse_retry_after("120", now), Some(120));
    assert_eq!(parse_retry_after(" 0 ", now), Some(1));
    assert_eq!(
        parse_retry_after("99999999999999999999999", now),
        Some(3_600)
    );
    assert_eq!(
        parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now),
        Some(60)
    );
    assert_eq!(
        parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
        Some(1)
    );
    assert_eq!(
        parse_retry_after("Mon, 07 Nov 1994 08:49:37 GMT", now),
        Some(3_600)
    );
    assert_eq!(
        parse_retry_after("Thu, 29 Feb 2024 00:00:00 GMT", 1_709_164_800_000 - 10_000),
        Some(10)
    );
    for bad in [
        "",
        "soon",
        "-1",
        "1.5",
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 06 Foo 1994 08:49:37 GMT",
    ] {
        assert_eq!(parse_retry_after(bad, now), None, "{bad}");
    }
}

#[test]
fn poll_policy_with_and_without_webhook() {
    let e = SeededEntropy::new(5);
    let p = PollPolicy::default();
    let plain = |n| PollInput {
        attempts_since_change: n,
        ..Default::default()
    };
    assert!(p.delay_ms(plain(0), &e) <= 5_000);
    assert!(p.delay_ms(plain(30), &e) <= 15 * MINUTE_MS);
    let hooked = |n| PollInput {
        attempts_since_change: n,
        webhook_registered: true,
        retry_after_s: None,
    };
    assert_eq!(p.delay_ms(hooked(0), &e), 2 * MINUTE_MS);
    for n in 1..20 {
        let d = p.delay_ms(hooked(n), &e);
        assert!((MINUTE_MS..=30 * MINUTE_MS).contains(&d), "{n}: {d}");
    }
    // A status change resets the schedule: the cadence depends on the count alone.
    let hint = PollInput {
        retry_after_s: Some(600),
        ..plain(0)
    };
    assert!(p.delay_ms(hint, &e) >= 600_000);
    assert_eq!(p.next_poll_at_ms(1_000, hooked(0), &e), 121_000);
    let cfg: PollPolicy = serde_json::from_str(r#"{"webhook_first_ms": 60000}"#).unwrap();
    assert_eq!(cfg.webhook_first_ms, 60_000);
    assert_eq!(cfg.poll, Backoff::POLL);
}

#[test]
fn fixed_schedules() {
    let s = Schedule::BUYER_NOTIFICATIONS;
    assert_eq!(s.0, &[60, 300, 1_800, 7_200, 18_000, 36_000]);
    assert_eq!(s.delay_ms(0), None);
    assert_eq!(s.delay_ms(1), Some(60_000));
    assert_eq!(s.delay_ms(6), Some(36_000_000));
    assert_eq!(s.delay_ms(7), None);
    assert_eq!(s.next_attempt_at_ms(2, 1_000), Some(301_000));
}

#[test]
fn deadlines_per_task_with_defaults_and_overrides() {
    let d = Deadlines::default();
    assert_eq!(d.for_task_ms("create_media_buy"), 24 * HOUR_MS);
    assert_eq!(d.for_task_ms("update_media_buy"), 12 * HOUR_MS);
    assert_eq!(d.for_task_ms("sync_creatives"), 48 * HOUR_MS);
    assert_eq!(d.for_task_ms("activate_signal"), 24 * HOUR_MS);
    assert_eq!(d.deadline_at_ms("update_media_buy", 5), 5 + 12 * HOUR_MS);
    let cfg: Deadlines =
        serde_json::from_str(r#"{"default_ms": 3600000, "tasks": {"create_media_buy": 7200000}}"#)
            .unwrap();
    assert_eq!(cfg.for_task_ms("create_media_buy"), 2 * HOUR_MS);
    assert_eq!(cfg.for_task_ms("sync_creatives"), HOUR_MS);
    let round: Deadlines = serde_json::from_value(serde_json::to_value(&d).unwrap()).unwrap();
    assert_eq!(round, d);
}
