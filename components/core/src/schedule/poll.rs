//! An operation's poll state and the one way to file an operation (or a buyer
//! notification) due in the index.

use crate::foundation::clock::Clock;
use crate::foundation::keys;
use crate::foundation::store::{Store, StoreResult, set_json};
use crate::model::status::OperationStatus;
use crate::schedule::due::{self, DueConfig};
use serde::{Deserialize, Serialize};

/// Per-operation poll state, kept beside the journal (polls that change nothing are not
/// history).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollState {
    /// When the operation is next due; a hint for an earlier time is stale.
    pub next_at_ms: u64,
    pub attempts_since_change: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<OperationStatus>,
    /// The seller's `retry_after` from the last poll, honoured by the next scheduling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
    /// When this state was written (set by [`schedule_at`]): its writer held the operation's
    /// lease just before, so a lease left by a holder that died is in a slot near this time
    /// or near `next_at_ms` (the auditor looks there).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub filed_at_ms: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Files an operation (or a notification, by its `ntf_` id) as due at `state.next_at_ms` and
/// records that time in its poll state, so earlier hints become stale. The hint goes first: a
/// crash in between leaves the old state, which the new (or an older) hint still acts on; the
/// other order could name a time no hint brings, and nobody would look at the operation again.
pub async fn schedule_at(
    store: &impl Store,
    clock: &dyn Clock,
    cfg: &DueConfig,
    id: &str,
    mut state: PollState,
) -> StoreResult<()> {
    state.filed_at_ms = clock.now_ms();
    due::schedule(store, cfg, clock, id, state.next_at_ms).await?;
    set_json(store, &keys::poll_state(id), &state).await
}
