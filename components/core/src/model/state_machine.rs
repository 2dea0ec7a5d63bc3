//! The operation state machine: one table, reviewed as a whole.
//!
//! [`TRANSITIONS`] gives exactly one [`Rule`] per ([`StateClass`], [`EventClass`]) pair, and
//! [`decide`] is a lookup in it plus the rule's comparison. The spec's normative rules (AdCP
//! async-identity and convergence) are all in the table:
//! - the first authoritative terminal status wins; a different terminal afterwards is a
//!   protocol conflict, recorded but not applied;
//! - a non-terminal status after a terminal one is acknowledged as stale;
//! - non-terminal statuses are ordered by the seller's `timestamp`; an older one is stale;
//!   a report without one (a poll answer lacking `updated_at`) never moves the lifecycle
//!   back (`input-required` to `working`, `working` to `submitted`);
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventClass {
    /// The seller reported a non-terminal status (including `unknown`).
    SellerProgress,
    /// The seller reported a terminal status.
    SellerTerminal,
    DeadlineExpired,
    /// Governance answered `conditions`: hold for a human.
    GovernanceHold,
    Approved,
    CancelRequested,
}

/// How an event is treated in a given state class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Move to the event's status.
    Apply,
    /// Same status → duplicate; older seller timestamp, or no timestamp and an earlier
    /// lifecycle stage → stale; otherwise apply.
    ApplyIfNewer,
    /// Same terminal status → duplicate; a different one → conflict (never applied).
    SameOrConflict,
    /// A seller terminal status replacing our local `timed_out`.
    Override,
    /// Keep the state; the event is history only (seller progress after our timeout).
    Record,
    /// Acknowledged, no change.
    Stale,
    Duplicate,
}

/// The whole state machine. Every (state class, event class) pair appears exactly once (tested).
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A seller status with the seller's timestamp (payload `timestamp` or poll `updated_at`,
    /// Unix ms), if given.
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
                // Untimed, it may be older than what we have: only the lifecycle orders it.
                (Event::Seller { at_ms: None, .. }, _) => {
                    matches!((stage(current), stage(target)), (Some(c), Some(t)) if t < c)
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

/// Where a non-terminal status stands in a task's lifecycle (`unknown` stands nowhere: it
/// neither follows nor precedes the others).
fn stage(status: OperationStatus) -> Option<u8> {
    match status {
        OperationStatus::Seller(TaskStatus::Submitted) => Some(0),
        OperationStatus::Seller(TaskStatus::Working) => Some(1),
        OperationStatus::Seller(TaskStatus::InputRequired | TaskStatus::AuthRequired) => Some(2),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
