//! AdCP task statuses and the orchestrator's own operation states.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An AdCP task status, spelled exactly as `enums/task-status.json` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskStatus {
    Submitted,
    Working,
    InputRequired,
    Completed,
    Canceled,
    Failed,
    Rejected,
    AuthRequired,
    Unknown,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 9] = [
        TaskStatus::Submitted,
        TaskStatus::Working,
        TaskStatus::InputRequired,
        TaskStatus::Completed,
        TaskStatus::Canceled,
        TaskStatus::Failed,
        TaskStatus::Rejected,
        TaskStatus::AuthRequired,
        TaskStatus::Unknown,
    ];

    /// `completed`, `failed`, `canceled` and `rejected` are the spec's terminal set.
    /// `unknown` is indeterminate and never terminal: it must be reconciled.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed
                | TaskStatus::Canceled
                | TaskStatus::Failed
                | TaskStatus::Rejected
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Submitted => "submitted",
            TaskStatus::Working => "working",
            TaskStatus::InputRequired => "input-required",
            TaskStatus::Completed => "completed",
            TaskStatus::Canceled => "canceled",
            TaskStatus::Failed => "failed",
            TaskStatus::Rejected => "rejected",
            TaskStatus::AuthRequired => "auth-required",
            TaskStatus::Unknown => "unknown",
        }
    }

    /// Parses the exact spec spelling; anything else (e.g. MCP's `input_required`,
    /// British `cancelled`) is refused rather than guessed.
    pub fn parse(s: &str) -> Option<TaskStatus> {
        TaskStatus::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an operation stands for the orchestrator: a seller task status or a local state the
/// seller never reports: `pending_dispatch` (not yet accepted by the seller),
/// `awaiting_decision` (governance answered `conditions`: a human decides), `timed_out` and
/// `canceled_locally`; the last two are not authoritative: a later seller terminal replaces them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum OperationStatus {
    PendingDispatch,
    AwaitingDecision,
    Seller(TaskStatus),
    TimedOut,
    CanceledLocally,
}

impl OperationStatus {
    /// Every status an operation can be in, in the order the console shows them.
    pub fn all() -> Vec<OperationStatus> {
        [
            OperationStatus::PendingDispatch,
            OperationStatus::AwaitingDecision,
        ]
        .into_iter()
        .chain(TaskStatus::ALL.map(OperationStatus::Seller))
        .chain([OperationStatus::TimedOut, OperationStatus::CanceledLocally])
        .collect()
    }

    pub const PENDING_DISPATCH: &'static str = "pending_dispatch";
    pub const TIMED_OUT: &'static str = "timed_out";
    pub const AWAITING_DECISION: &'static str = "awaiting_decision";
    pub const CANCELED_LOCALLY: &'static str = "canceled_locally";

    pub fn as_str(self) -> &'static str {
        match self {
            OperationStatus::PendingDispatch => Self::PENDING_DISPATCH,
            OperationStatus::Seller(s) => s.as_str(),
            OperationStatus::TimedOut => Self::TIMED_OUT,
            OperationStatus::AwaitingDecision => Self::AWAITING_DECISION,
            OperationStatus::CanceledLocally => Self::CANCELED_LOCALLY,
        }
    }

    pub fn parse(s: &str) -> Option<OperationStatus> {
        match s {
            Self::PENDING_DISPATCH => Some(OperationStatus::PendingDispatch),
            Self::TIMED_OUT => Some(OperationStatus::TimedOut),
            Self::AWAITING_DECISION => Some(OperationStatus::AwaitingDecision),
            Self::CANCELED_LOCALLY => Some(OperationStatus::CanceledLocally),
            other => TaskStatus::parse(other).map(OperationStatus::Seller),
        }
    }

    /// A seller-authoritative terminal status: nothing but a conflict record can follow.
    pub fn is_authoritative_terminal(self) -> bool {
        matches!(self, OperationStatus::Seller(s) if s.is_terminal())
    }

    /// Closed from the buyer's point of view: a seller outcome, or our own `timed_out` /
    /// `canceled_locally` (which a later seller outcome may still replace).
    pub fn is_closed(self) -> bool {
        self.is_authoritative_terminal()
            || matches!(
                self,
                OperationStatus::TimedOut | OperationStatus::CanceledLocally
            )
    }
}

impl fmt::Display for OperationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<OperationStatus> for String {
    fn from(s: OperationStatus) -> String {
        s.as_str().to_string()
    }
}

impl TryFrom<String> for OperationStatus {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        OperationStatus::parse(&s).ok_or_else(|| format!("unknown operation status `{s}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_status_spelling_matches_the_spec_enum() {
        let spec = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/adcp/schemas-3.1.19/enums/task-status.json"
        ))
        .expect("spec enum present beside the project");
        let spec: serde_json::Value = serde_json::from_str(&spec).unwrap();
        let spec: Vec<&str> = spec["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let ours: Vec<&str> = TaskStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(ours, spec);
        for s in TaskStatus::ALL {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<TaskStatus>(&json).unwrap(), s);
        }
    }

    #[test]
    fn terminal_set_is_exactly_the_four_spec_statuses() {
        let terminal: Vec<_> = TaskStatus::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(
            terminal,
            [
                TaskStatus::Completed,
                TaskStatus::Canceled,
                TaskStatus::Failed,
                TaskStatus::Rejected
            ]
        );
    }

    #[test]
    fn near_miss_spellings_are_refused() {
        for s in [
            "input_required",
            "cancelled",
            "Completed",
            "auth_required",
            "",
        ] {
            assert_eq!(TaskStatus::parse(s), None, "{s}");
        }
    }

    #[test]
    fn operation_status_round_trips_through_json() {
        let all = TaskStatus::ALL
            .into_iter()
            .map(OperationStatus::Seller)
            .chain([
                OperationStatus::PendingDispatch,
                OperationStatus::TimedOut,
                OperationStatus::AwaitingDecision,
                OperationStatus::CanceledLocally,
            ]);
        for s in all {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(serde_json::from_str::<OperationStatus>(&json).unwrap(), s);
        }
        assert!(serde_json::from_str::<OperationStatus>("\"bogus\"").is_err());
        assert!(!OperationStatus::TimedOut.is_authoritative_terminal());
        assert!(OperationStatus::Seller(TaskStatus::Rejected).is_authoritative_terminal());
    }
}
