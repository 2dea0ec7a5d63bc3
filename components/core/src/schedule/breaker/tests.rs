use super::*;
use crate::foundation::store::MemoryStore;
use futures::executor::block_on;
use futures::future::join_all;

const CFG: BreakerConfig = BreakerConfig {
    failure_threshold: 3,
    reset_timeout_ms: 60_000,
    probe_window_ms: 30_000,
};

const EVENTS: [Event; 5] = [
    Event::Request,
    Event::Success,
    Event::Failure,
    Event::ProbeSuccess,
    Event::ProbeFailure,
];

#[test]
fn the_table_has_exactly_one_rule_per_pair() {
    for class in [StateClass::Closed, StateClass::Open, StateClass::HalfOpen] {
        for event in EVENTS {
            let n = TRANSITIONS
                .iter()
                .filter(|(c, e, _)| *c == class && *e == event)
                .count();
            assert_eq!(n, 1, "{class:?} × {event:?}");
        }
    }
    assert_eq!(TRANSITIONS.len(), 15);
}

#[test]
fn every_edge_of_the_table() {
    use Effect as F;
    use Event::*;
    let now = 1_000_000;
    let closed = |failures| State::Closed { failures };
    let open = State::Open {
        opened_at_ms: now - 10_000,
        until_ms: now + 50_000,
    };
    let half = State::HalfOpen {
        since_ms: now - 40_000,
    };
    let reopened = State::Open {
        opened_at_ms: now,
        until_ms: now + 60_000,
    };
    let cases: &[(State, Event, State, Effect)] = &[
        (closed(1), Request, closed(1), F::Allow),
        (closed(2), Success, closed(0), F::ClearFailures),
        (closed(0), Success, closed(0), F::None),
        (closed(1), Failure, closed(2), F::None),
        (closed(2), Failure, reopened, F::Trip),
        (closed(1), ProbeSuccess, closed(0), F::ClearFailures),
        (closed(0), ProbeFailure, closed(1), F::None),
        (
            open,
            Request,
            open,
            F::Defer {
                until_ms: now + 50_000,
            },
        ),
        (open, Success, open, F::None),
        (open, Failure, open, F::None),
        (open, ProbeSuccess, closed(0), F::ClearFailures),
        (open, ProbeFailure, reopened, F::Trip),
        (
            half,
            Request,
            half,
            F::ClaimProbe {
                window_base_ms: now - 40_000,
                window: 1,
            },
        ),
        (half, Success, half, F::None),
        (half, Failure, half, F::None),
        (half, ProbeSuccess, closed(0), F::ClearFailures),
        (half, ProbeFailure, reopened, F::Trip),
    ];
    let mut covered = std::collections::BTreeSet::new();
    for (state, event, next, effect) in cases {
        assert_eq!(
            transition(&CFG, *state, *event, now),
            (*next, *effect),
            "{state:?} × {event:?}"
        );
        covered.insert(format!("{:?}{:?}", state.class(), event));
    }
    assert_eq!(covered.len(), TRANSITIONS.len(), "every edge exercised");
}

#[test]
fn derived_states() {
    let snap = |failures, mark, opened| Snapshot {
        failures,
        mark,
        opened_at_ms: opened,
    };
    assert_eq!(
        derive(&CFG, &snap(7, 5, None), 0),
        State::Closed { failures: 2 }
    );
    assert_eq!(
        derive(&CFG, &snap(8, 5, Some(100)), 100),
        State::Open {
            opened_at_ms: 100,
            until_ms: 60_100
        }
    );
    assert_eq!(
        derive(&CFG, &snap(8, 5, Some(100)), 60_100),
        State::HalfOpen { since_ms: 60_100 }
    );
    // Tripped but the trip time is missing (lost write): probe rather than wedge.
    assert_eq!(
        derive(&CFG, &snap(9, 5, None), 5),
        State::HalfOpen { since_ms: 0 }
    );
    // A mark above the count (a racing reset) reads as no failures.
    assert_eq!(
        derive(&CFG, &snap(4, 6, None), 0),
        State::Closed { failures: 0 }
    );
}

async fn fail(b: &Breaker<'_>, s: &MemoryStore, now: u64) -> State {
    match b.allow(s, now).await.unwrap() {
        Decision::Allow(p) => b.record_failure(s, &p, now).await.unwrap(),
        d => panic!("refused at {now}: {d:?}"),
    }
}

#[test]
fn closed_open_half_open_closed_through_the_store() {
    let s = MemoryStore::new();
    let b = Breaker::new(&CFG, "t1", "s1");
    block_on(async {
        // Healthy: allow costs two reads, a clean success nothing.
        let Decision::Allow(p) = b.allow(&s, 0).await.unwrap() else {
            panic!()
        };
        assert_eq!(s.total_ops(), 2);
        b.record_success(&s, &p, 0).await.unwrap();
        assert_eq!(s.total_ops(), 2);

        assert_eq!(fail(&b, &s, 1_000).await, State::Closed { failures: 1 });
        assert_eq!(fail(&b, &s, 2_000).await, State::Closed { failures: 2 });
        assert!(matches!(fail(&b, &s, 3_000).await, State::Open { .. }));
        assert_eq!(
            b.allow(&s, 4_000).await.unwrap(),
            Decision::Deferred { until_ms: 63_000 }
        );
        let view = b.state(&s, 4_000).await.unwrap();
        assert_eq!(view.state, StateClass::Open);
        assert_eq!(view.opened_at_ms, Some(3_000));
        assert_eq!(view.retry_at_ms, Some(63_000));
        assert_eq!(view.consecutive_failures, 3);

        // Half-open: one probe; the others wait for the next window.
        let Decision::Allow(probe) = b.allow(&s, 63_000).await.unwrap() else {
            panic!()
        };
        assert!(probe.is_probe());
        assert_eq!(
            b.allow(&s, 64_000).await.unwrap(),
            Decision::Deferred { until_ms: 93_000 }
        );
        assert_eq!(
            b.state(&s, 64_000).await.unwrap().state,
            StateClass::HalfOpen
        );
        assert_eq!(
            b.record_success(&s, &probe, 65_000).await.unwrap(),
            State::Closed { failures: 0 }
        );
        let view = b.state(&s, 65_000).await.unwrap();
        assert_eq!(
            (view.state, view.consecutive_failures),
            (StateClass::Closed, 0)
        );
        assert!(matches!(
            b.allow(&s, 65_000).await.unwrap(),
            Decision::Allow(_)
        ));
        // No probe or trip key left behind.
        assert_eq!(s.keys(), ["breaker:t1:s1:failures", "breaker:t1:s1:mark"]);
    });
}

#[test]
fn a_failed_probe_reopens_with_a_fresh_timer() {
    let s = MemoryStore::new();
    let b = Breaker::new(&CFG, "t1", "s1");
    block_on(async {
        for t in 0..3 {
            fail(&b, &s, t).await;
        }
        let Decision::Allow(probe) = b.allow(&s, 60_002).await.unwrap() else {
            panic!()
        };
        assert_eq!(
            b.record_failure(&s, &probe, 61_000).await.unwrap(),
            State::Open {
                opened_at_ms: 61_000,
                until_ms: 121_000
            }
        );
        assert_eq!(
            b.allow(&s, 100_000).await.unwrap(),
            Decision::Deferred { until_ms: 121_000 }
        );
        assert!(b.allow(&s, 121_000).await.unwrap() != Decision::Deferred { until_ms: 0 });
    });
}

#[test]
fn a_probe_that_never_reports_blocks_one_window_only() {
    let s = MemoryStore::new();
    let b = Breaker::new(&CFG, "t1", "s1");
    block_on(async {
        for t in 0..3 {
            fail(&b, &s, t).await;
        }
        let lost = b.allow(&s, 60_002).await.unwrap();
        assert!(matches!(lost, Decision::Allow(ref p) if p.is_probe()));
        drop(lost); // the prober crashed
        assert_eq!(
            b.allow(&s, 80_000).await.unwrap(),
            Decision::Deferred { until_ms: 90_002 }
        );
        let Decision::Allow(p) = b.allow(&s, 90_002).await.unwrap() else {
            panic!()
        };
        assert!(p.is_probe());
    });
}

#[test]
fn exactly_one_probe_among_concurrent_callers() {
    let s = MemoryStore::new();
    let b = Breaker::new(&CFG, "t1", "s1");
    block_on(async {
        for t in 0..3 {
            fail(&b, &s, t).await;
        }
        let all = join_all((0..12).map(|i| b.allow(&s, 60_002 + i))).await;
        let allowed = all
            .iter()
            .filter(|d| matches!(d, Ok(Decision::Allow(_))))
            .count();
        assert_eq!(allowed, 1);
    });
}

#[test]
fn concurrent_failures_trip_once() {
    let s = MemoryStore::new();
    let b = Breaker::new(&CFG, "t1", "s1");
    block_on(async {
        let permits: Vec<Permit> = join_all((0..10).map(|_| b.allow(&s, 1_000)))
            .await
            .into_iter()
            .map(|d| match d.unwrap() {
                Decision::Allow(p) => p,
                d => panic!("{d:?}"),
            })
            .collect();
        s.reset_counts();
        let states = join_all(
            permits
                .iter()
                .enumerate()
                .map(|(i, p)| b.record_failure(&s, p, 2_000 + i as u64)),
        )
        .await;
        let closed = states
            .into_iter()
            .filter(|st| matches!(st, Ok(State::Closed { .. })))
            .count();
        assert_eq!(
            closed, 2,
            "two counted, the third trips, the rest find it open"
        );
        assert_eq!(
            s.count(crate::foundation::store::StoreOp::Set),
            1,
            "only the threshold-crossing failure writes the trip"
        );
        assert_eq!(b.state(&s, 3_000).await.unwrap().state, StateClass::Open);
    });
}

#[test]
fn a_lost_trip_write_is_harmless() {
    let s = MemoryStore::new();
    let b = Breaker::new(&CFG, "t1", "s1");
    block_on(async {
        fail(&b, &s, 0).await;
        fail(&b, &s, 1).await;
        let Decision::Allow(p) = b.allow(&s, 2).await.unwrap() else {
            panic!()
        };
        // increment, get mark, set opened: the third call fails.
        s.fail_nth_call(3);
        assert!(b.record_failure(&s, &p, 2).await.is_err());
        // The count says tripped, the time is missing: half-open, one probe goes through.
        assert_eq!(b.state(&s, 3).await.unwrap().state, StateClass::HalfOpen);
        let Decision::Allow(probe) = b.allow(&s, 3).await.unwrap() else {
            panic!()
        };
        assert!(matches!(
            b.allow(&s, 4).await.unwrap(),
            Decision::Deferred { .. }
        ));
        // Its failure writes the trip time after all.
        assert!(matches!(
            b.record_failure(&s, &probe, 5).await.unwrap(),
            State::Open {
                opened_at_ms: 5,
                ..
            }
        ));
    });
}

#[test]
fn late_answers_of_calls_started_before_the_trip_change_nothing() {
    let s = MemoryStore::new();
    let b = Breaker::new(&CFG, "t1", "s1");
    block_on(async {
        let Decision::Allow(straggler) = b.allow(&s, 0).await.unwrap() else {
            panic!()
        };
        let Decision::Allow(straggler2) = b.allow(&s, 0).await.unwrap() else {
            panic!()
        };
        for t in 1..4 {
            fail(&b, &s, t).await;
        }
        // A success allowed while clean is not evidence about the current outage …
        b.record_success(&s, &straggler, 10).await.unwrap();
        // … and neither is a failure: the open period is not extended.
        b.record_failure(&s, &straggler2, 10).await.unwrap();
        let view = b.state(&s, 10).await.unwrap();
        assert_eq!(view.state, StateClass::Open);
        assert_eq!(view.retry_at_ms, Some(60_003));
    });
}

#[test]
fn a_success_while_closed_resets_the_count() {
    let s = MemoryStore::new();
    let b = Breaker::new(&CFG, "t1", "s1");
    block_on(async {
        fail(&b, &s, 0).await;
        fail(&b, &s, 1).await;
        let Decision::Allow(p) = b.allow(&s, 2).await.unwrap() else {
            panic!()
        };
        b.record_success(&s, &p, 2).await.unwrap();
        assert_eq!(b.state(&s, 2).await.unwrap().consecutive_failures, 0);
        // Two more failures do not trip: the count restarted.
        assert_eq!(fail(&b, &s, 3).await, State::Closed { failures: 1 });
        assert_eq!(fail(&b, &s, 4).await, State::Closed { failures: 2 });
    });
}

#[test]
fn manual_trip_and_reset_and_independent_sellers() {
    let s = MemoryStore::new();
    let b = Breaker::new(&CFG, "t1", "s1");
    let other = Breaker::new(&CFG, "t1", "s2");
    block_on(async {
        b.trip(&s, 1_000).await.unwrap();
        assert_eq!(
            b.allow(&s, 2_000).await.unwrap(),
            Decision::Deferred { until_ms: 61_000 }
        );
        assert!(matches!(
            other.allow(&s, 2_000).await.unwrap(),
            Decision::Allow(_)
        ));
        b.reset(&s).await.unwrap();
        assert!(matches!(
            b.allow(&s, 2_000).await.unwrap(),
            Decision::Allow(_)
        ));
    });
}

#[test]
fn view_and_config_serialise() {
    let v = BreakerView {
        state: StateClass::HalfOpen,
        consecutive_failures: 5,
        failure_threshold: 5,
        opened_at_ms: Some(1),
        retry_at_ms: Some(2),
    };
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(json["state"], "half_open");
    assert_eq!(serde_json::from_value::<BreakerView>(json).unwrap(), v);
    let cfg: BreakerConfig = serde_json::from_str(r#"{"failure_threshold": 2}"#).unwrap();
    assert_eq!(cfg.reset_timeout_ms, 60_000);
    assert_eq!(BreakerConfig::default().failure_threshold, 5);
}
