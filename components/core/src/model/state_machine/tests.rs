use super::*;
use OperationStatus as O;
use TaskStatus as T;

const STATES: [StateClass; 6] = [
    StateClass::Pending,
    StateClass::Held,
    StateClass::Active,
    StateClass::TimedOut,
    StateClass::LocallyCanceled,
    StateClass::Terminal,
];
const EVENTS: [EventClass; 6] = [
    EventClass::SellerProgress,
    EventClass::SellerTerminal,
    EventClass::DeadlineExpired,
    EventClass::GovernanceHold,
    EventClass::Approved,
    EventClass::CancelRequested,
];

fn seller(status: TaskStatus, at_ms: Option<u64>) -> Event {
    Event::Seller { status, at_ms }
}

#[test]
fn table_is_total_and_unambiguous() {
    for s in STATES {
        for e in EVENTS {
            let n = TRANSITIONS
                .iter()
                .filter(|(ts, te, _)| *ts == s && *te == e)
                .count();
            assert_eq!(n, 1, "{s:?} x {e:?}");
        }
    }
    assert_eq!(TRANSITIONS.len(), STATES.len() * EVENTS.len());
}

#[test]
fn pending_accepts_whatever_the_seller_says_first() {
    for t in T::ALL {
        assert_eq!(
            decide(O::PendingDispatch, None, seller(t, None)),
            Outcome::Applied(O::Seller(t))
        );
    }
    assert_eq!(
        decide(O::PendingDispatch, None, Event::DeadlineExpired),
        Outcome::Applied(O::TimedOut)
    );
}

#[test]
fn active_moves_forward_on_newer_progress() {
    let sub = O::Seller(T::Submitted);
    assert_eq!(
        decide(sub, Some(100), seller(T::Working, Some(200))),
        Outcome::Applied(O::Seller(T::Working))
    );
    // No timestamps to compare: apply (arrival order is all we have).
    assert_eq!(
        decide(sub, None, seller(T::Working, None)),
        Outcome::Applied(O::Seller(T::Working))
    );
    assert_eq!(
        decide(sub, Some(100), seller(T::Working, None)),
        Outcome::Applied(O::Seller(T::Working))
    );
    // `unknown` is progress, never an outcome.
    assert_eq!(
        decide(sub, None, seller(T::Unknown, None)),
        Outcome::Applied(O::Seller(T::Unknown))
    );
}

#[test]
fn an_untimed_report_never_moves_the_lifecycle_back() {
    let ir = O::Seller(T::InputRequired);
    for last in [None, Some(200)] {
        assert_eq!(decide(ir, last, seller(T::Working, None)), Outcome::Stale);
        assert_eq!(decide(ir, last, seller(T::Submitted, None)), Outcome::Stale);
        assert_eq!(
            decide(O::Seller(T::AuthRequired), last, seller(T::Working, None)),
            Outcome::Stale
        );
        assert_eq!(
            decide(O::Seller(T::Working), last, seller(T::Submitted, None)),
            Outcome::Stale
        );
        // Forward, sideways, and to or from `unknown` (unordered): applied.
        assert_eq!(
            decide(O::Seller(T::Working), last, seller(T::InputRequired, None)),
            Outcome::Applied(ir)
        );
        assert_eq!(
            decide(ir, last, seller(T::AuthRequired, None)),
            Outcome::Applied(O::Seller(T::AuthRequired))
        );
        assert_eq!(
            decide(ir, last, seller(T::Unknown, None)),
            Outcome::Applied(O::Seller(T::Unknown))
        );
        assert_eq!(
            decide(O::Seller(T::Unknown), last, seller(T::Submitted, None)),
            Outcome::Applied(O::Seller(T::Submitted))
        );
    }
    // A timestamp newer than the last applied one still moves it back: the seller says so.
    assert_eq!(
        decide(ir, Some(200), seller(T::Working, Some(300))),
        Outcome::Applied(O::Seller(T::Working))
    );
}

#[test]
fn active_ignores_out_of_order_and_duplicate_progress() {
    let working = O::Seller(T::Working);
    assert_eq!(
        decide(working, Some(200), seller(T::Submitted, Some(100))),
        Outcome::Stale
    );
    assert_eq!(
        decide(working, Some(200), seller(T::Working, Some(300))),
        Outcome::Duplicate
    );
    assert_eq!(
        decide(working, Some(200), seller(T::Working, Some(100))),
        Outcome::Duplicate
    );
    // Same second: `submitted` cannot follow `working`; other moves can.
    assert_eq!(
        decide(working, Some(200), seller(T::Submitted, Some(200))),
        Outcome::Stale
    );
    assert_eq!(
        decide(working, Some(200), seller(T::InputRequired, Some(200))),
        Outcome::Applied(O::Seller(T::InputRequired))
    );
    assert_eq!(
        decide(
            O::Seller(T::InputRequired),
            Some(200),
            seller(T::Working, Some(200))
        ),
        Outcome::Applied(working)
    );
}

#[test]
fn terminal_wins_from_any_active_state_even_when_older() {
    for from in [
        T::Submitted,
        T::Working,
        T::InputRequired,
        T::AuthRequired,
        T::Unknown,
    ] {
        for to in [T::Completed, T::Failed, T::Canceled, T::Rejected] {
            // A terminal carrying an older timestamp still ends the task: terminal is final.
            assert_eq!(
                decide(O::Seller(from), Some(500), seller(to, Some(100))),
                Outcome::Applied(O::Seller(to)),
                "{from} -> {to}"
            );
        }
        assert_eq!(
            decide(O::Seller(from), None, Event::DeadlineExpired),
            Outcome::Applied(O::TimedOut)
        );
    }
}

#[test]
fn first_terminal_wins_and_later_ones_are_duplicates_or_conflicts() {
    let terminals = [T::Completed, T::Failed, T::Canceled, T::Rejected];
    for first in terminals {
        for later in terminals {
            let expect = if first == later {
                Outcome::Duplicate
            } else {
                Outcome::Conflict
            };
            assert_eq!(decide(O::Seller(first), None, seller(later, None)), expect);
        }
        for progress in [
            T::Submitted,
            T::Working,
            T::InputRequired,
            T::AuthRequired,
            T::Unknown,
        ] {
            assert_eq!(
                decide(O::Seller(first), None, seller(progress, Some(u64::MAX))),
                Outcome::Stale
            );
        }
        assert_eq!(
            decide(O::Seller(first), None, Event::DeadlineExpired),
            Outcome::Stale
        );
    }
}

#[test]
fn seller_terminal_overrides_local_timeout_but_progress_does_not() {
    for t in [T::Completed, T::Failed, T::Canceled, T::Rejected] {
        assert_eq!(
            decide(O::TimedOut, None, seller(t, None)),
            Outcome::Overrode(O::Seller(t))
        );
    }
    for t in [
        T::Submitted,
        T::Working,
        T::InputRequired,
        T::AuthRequired,
        T::Unknown,
    ] {
        assert_eq!(
            decide(O::TimedOut, None, seller(t, None)),
            Outcome::Recorded
        );
    }
    assert_eq!(
        decide(O::TimedOut, None, Event::DeadlineExpired),
        Outcome::Duplicate
    );
}

#[test]
fn every_status_and_event_gets_a_verdict_consistent_with_its_class() {
    let mut events: Vec<Event> = T::ALL.into_iter().map(|t| seller(t, Some(1))).collect();
    events.extend([
        Event::DeadlineExpired,
        Event::GovernanceHold,
        Event::Approved,
        Event::CancelRequested,
    ]);
    for from in OperationStatus::all() {
        for &ev in &events {
            let out = decide(from, Some(1), ev);
            if from.is_authoritative_terminal() {
                assert!(
                    out.new_status().is_none(),
                    "{from} must not change on {ev:?}"
                );
            }
            if let Some(to) = out.new_status() {
                assert_ne!(to, from, "a change must change something");
            }
        }
    }
}

#[test]
fn a_governance_hold_leaves_only_by_approval_cancel_or_deadline() {
    let held = O::AwaitingDecision;
    assert_eq!(
        decide(O::PendingDispatch, None, Event::GovernanceHold),
        Outcome::Applied(held)
    );
    assert_eq!(
        decide(held, None, Event::GovernanceHold),
        Outcome::Duplicate
    );
    assert_eq!(
        decide(held, None, Event::Approved),
        Outcome::Applied(O::PendingDispatch)
    );
    assert_eq!(
        decide(held, None, Event::CancelRequested),
        Outcome::Applied(O::CanceledLocally)
    );
    assert_eq!(
        decide(held, None, Event::DeadlineExpired),
        Outcome::Applied(O::TimedOut)
    );
    // Approval means nothing outside a hold.
    for s in [
        O::PendingDispatch,
        O::Seller(T::Working),
        O::TimedOut,
        O::CanceledLocally,
    ] {
        assert_eq!(decide(s, None, Event::Approved), Outcome::Stale, "{s}");
        if s != O::PendingDispatch {
            // Governance is asked before dispatch only.
            assert_eq!(
                decide(s, None, Event::GovernanceHold),
                Outcome::Stale,
                "{s}"
            );
        }
    }
}

#[test]
fn a_local_cancel_is_reconciled_and_a_seller_terminal_replaces_it() {
    for from in [
        O::PendingDispatch,
        O::Seller(T::Submitted),
        O::Seller(T::InputRequired),
        O::TimedOut,
    ] {
        assert_eq!(
            decide(from, None, Event::CancelRequested),
            Outcome::Applied(O::CanceledLocally),
            "{from}"
        );
    }
    let c = O::CanceledLocally;
    assert_eq!(decide(c, None, Event::CancelRequested), Outcome::Duplicate);
    assert_eq!(decide(c, None, Event::DeadlineExpired), Outcome::Stale);
    for t in [T::Completed, T::Failed, T::Canceled, T::Rejected] {
        assert_eq!(
            decide(c, None, seller(t, None)),
            Outcome::Overrode(O::Seller(t))
        );
        // A seller terminal is final: a late cancel changes nothing.
        assert_eq!(
            decide(O::Seller(t), None, Event::CancelRequested),
            Outcome::Stale
        );
    }
    assert_eq!(decide(c, None, seller(T::Working, None)), Outcome::Recorded);
}
