//! The operation state machine: one table, reviewed as a whole.
//!
//! States are grouped into classes (see [`StateClass`]); events into [`EventClass`]. The
//! [`TRANSITIONS`] table gives exactly one [`Rule`] for every (state class, event class)
//! pair, and [`decide`] is nothing but a lookup in it plus the rule's comparison. The spec's
//! normative rules (AdCP async-identity and convergence) are all in the table:
//! - the first authoritative terminal status wins; a different terminal afterwards is a
//!   protocol conflict, recorded but not applied;
//! - a non-terminal status after a terminal one is acknowledged as stale;
//! - non-terminal statuses are ordered by the seller's `timestamp`; an older one is stale;
//! - `timed_out` is ours, not the seller's: a seller terminal status replaces it;
//! - so is `canceled_locally` (the buyer canceled before the seller resolved the task): the
//!   sweep keeps reconciling, and a seller terminal status replaces it;
//! - `awaiting_decision` (a governance hold) leaves only by a human approval (back to
//!   `pending_dispatch`), a cancel, or the deadline.

use crate::model::status::{OperationStatus, TaskStatus};

/// What an operation's current status means for incoming events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateClass {
    /// Stored, not yet accepted by the seller (`pending_dispatch`).
    Pending,
    /// Governance asked for a human decision before dispatch (`awaiting_decision`).
    Held,
    /// The seller holds it and it can still move (`submitted`, `working`, `input-required`,
    /// `auth-required`, `unknown`).
    Active,
    /// Our deadline passed without a seller outcome (`timed_out`).
    TimedOut,
    /// The buyer canceled before the seller resolved the task (`canceled_locally`).
    LocallyCanceled,
    /// The seller reported `completed`, `failed`, `canceled` or `rejected`.
    Terminal,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventClass {
    /// The seller reported a non-terminal status (including `unknown`).
    SellerProgress,
    /// The seller reported a terminal status.
    SellerTerminal,
    /// Our deadline for the task passed.
    DeadlineExpired,
    /// Governance answered `conditions`: hold for a human.
    GovernanceHold,
    /// A human approved a held operation.
    Approved,
    /// The buyer canceled the operation.
    CancelRequested,
}

/// How an event is treated in a given state class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Move to the event's status.
    Apply,
    /// Same status → duplicate; older seller timestamp → stale; otherwise apply.
    ApplyIfNewer,
    /// Same terminal status → duplicate; a different one → conflict (never applied).
    SameOrConflict,
    /// A seller terminal status replacing our local `timed_out`.
    Override,
    /// Keep the state; the event is history only (seller progress after our timeout).
    Record,
    /// Acknowledged, no change.
    Stale,
    /// Already in this state.
    Duplicate,
}

/// The whole state machine. Every (state class, event class) pair appears exactly once;
/// a test enforces it.
pub const TRANSITIONS: &[(StateClass, EventClass, Rule)] = {
    use EventClass::*;
    use Rule::*;
    use StateClass::*;
    &[
        (Pending, SellerProgress, Apply),
        (Pending, SellerTerminal, Apply),
        (Pending, DeadlineExpired, Apply),
        (Pending, GovernanceHold, Apply),
        (Pending, Approved, Stale),
        (Pending, CancelRequested, Apply),
        (Held, SellerProgress, Apply),
        (Held, SellerTerminal, Apply),
        (Held, DeadlineExpired, Apply),
        (Held, GovernanceHold, Duplicate),
        (Held, Approved, Apply),
        (Held, CancelRequested, Apply),
        (Active, SellerProgress, ApplyIfNewer),
        (Active, SellerTerminal, Apply),
        (Active, DeadlineExpired, Apply),
        (Active, GovernanceHold, Stale),
        (Active, Approved, Stale),
        (Active, CancelRequested, Apply),
        (TimedOut, SellerProgress, Record),
        (TimedOut, SellerTerminal, Override),
        (TimedOut, DeadlineExpired, Duplicate),
        (TimedOut, GovernanceHold, Stale),
        (TimedOut, Approved, Stale),
        (TimedOut, CancelRequested, Apply),
        (LocallyCanceled, SellerProgress, Record),
        (LocallyCanceled, SellerTerminal, Override),
        (LocallyCanceled, DeadlineExpired, Stale),
        (LocallyCanceled, GovernanceHold, Stale),
        (LocallyCanceled, Approved, Stale),
        (LocallyCanceled, CancelRequested, Duplicate),
        (Terminal, SellerProgress, Stale),
        (Terminal, SellerTerminal, SameOrConflict),
        (Terminal, DeadlineExpired, Stale),
        (Terminal, GovernanceHold, Stale),
        (Terminal, Approved, Stale),
        (Terminal, CancelRequested, Stale),
    ]
};

/// An event as the state machine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A seller status with the seller's own timestamp (payload `timestamp` or the poll's
    /// `updated_at`), in Unix milliseconds, when it gave one.
    Seller {
        status: TaskStatus,
        at_ms: Option<u64>,
    },
    DeadlineExpired,
    GovernanceHold,
    Approved,
    CancelRequested,
}

/// The verdict for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The status changes to this one.
    Applied(OperationStatus),
    /// A seller terminal status replaced `timed_out`.
    Overrode(OperationStatus),
    /// Kept in the history, status unchanged.
    Recorded,
    Duplicate,
    Stale,
    /// A different terminal status after the first one: recorded as a conflict, not applied.
    Conflict,
}

impl Outcome {
    /// The status after the event, if it changed.
    pub fn new_status(self) -> Option<OperationStatus> {
        match self {
            Outcome::Applied(s) | Outcome::Overrode(s) => Some(s),
            _ => None,
        }
    }
}

pub fn class_of(status: OperationStatus) -> StateClass {
    match status {
        OperationStatus::PendingDispatch => StateClass::Pending,
        OperationStatus::TimedOut => StateClass::TimedOut,
        OperationStatus::AwaitingDecision => StateClass::Held,
        OperationStatus::CanceledLocally => StateClass::LocallyCanceled,
        OperationStatus::Seller(s) if s.is_terminal() => StateClass::Terminal,
        OperationStatus::Seller(_) => StateClass::Active,
    }
}

pub fn event_class(event: Event) -> EventClass {
    match event {
        Event::Seller { status, .. } if status.is_terminal() => EventClass::SellerTerminal,
        Event::Seller { .. } => EventClass::SellerProgress,
        Event::DeadlineExpired => EventClass::DeadlineExpired,
        Event::GovernanceHold => EventClass::GovernanceHold,
        Event::Approved => EventClass::Approved,
        Event::CancelRequested => EventClass::CancelRequested,
    }
}

pub fn rule(state: StateClass, event: EventClass) -> Rule {
    TRANSITIONS
        .iter()
        .find(|(s, e, _)| *s == state && *e == event)
        .map(|(_, _, r)| *r)
        // The table is total (tested); Stale is the safe reading of a gap nonetheless.
        .unwrap_or(Rule::Stale)
}

/// Decides what `event` does to an operation in `current`, whose last applied seller
/// timestamp was `last_seller_at_ms`.
pub fn decide(current: OperationStatus, last_seller_at_ms: Option<u64>, event: Event) -> Outcome {
    let target = match event {
        Event::Seller { status, .. } => OperationStatus::Seller(status),
        Event::DeadlineExpired => OperationStatus::TimedOut,
        Event::GovernanceHold => OperationStatus::AwaitingDecision,
        Event::Approved => OperationStatus::PendingDispatch,
        Event::CancelRequested => OperationStatus::CanceledLocally,
    };
    match rule(class_of(current), event_class(event)) {
        Rule::Apply => Outcome::Applied(target),
        Rule::ApplyIfNewer => {
            // Older than the last applied report: stale. On a tie (timestamps in whole
            // seconds make them common) `submitted`, the first status, cannot follow another.
            let older = match (event, last_seller_at_ms) {
                (
                    Event::Seller {
                        at_ms: Some(at), ..
                    },
                    Some(last),
                ) => {
                    at < last
                        || (at == last && target == OperationStatus::Seller(TaskStatus::Submitted))
                }
                _ => false,
            };
            if target == current {
                Outcome::Duplicate
            } else if older {
                Outcome::Stale
            } else {
                Outcome::Applied(target)
            }
        }
        Rule::SameOrConflict if target == current => Outcome::Duplicate,
        Rule::SameOrConflict => Outcome::Conflict,
        Rule::Override => Outcome::Overrode(target),
        Rule::Record => Outcome::Recorded,
        Rule::Stale => Outcome::Stale,
        Rule::Duplicate => Outcome::Duplicate,
    }
}

#[cfg(test)]
mod tests {
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

    fn all_statuses() -> Vec<OperationStatus> {
        let mut v: Vec<_> = T::ALL.into_iter().map(O::Seller).collect();
        v.push(O::PendingDispatch);
        v.push(O::TimedOut);
        v.push(O::AwaitingDecision);
        v.push(O::CanceledLocally);
        v
    }

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
        for from in all_statuses() {
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
}
