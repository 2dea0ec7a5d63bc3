//! Storing a new operation, the one way every creator does it (the API, cancel follow-ups,
//! re-plans, tasks adopted from a seller): its creation entry, the indexes every operation
//! is listed in, and its first due time in the sweep's index.

use super::effects;
use crate::foundation::{cx::Cx, store::Store};
use crate::model::operation::Operation;
use crate::records::indexes;
use crate::records::journal::{self, JournalError, JournalResult};
use crate::schedule::due::DueConfig;
use crate::schedule::poll::{PollState, schedule_at};

/// What storing found.
#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    /// Newly stored, indexed and filed due.
    Created(Operation),
    /// The id was taken: the operation as it stands, or `None` while its first writer is
    /// still writing the creation entry.
    Existing(Option<Operation>),
}

/// Stores `op` under its id (idempotently: a taken id is not written again), lists it for
/// its tenant (and its seller task, if it has one), and files it due at `due_at_ms`.
pub async fn store_new(
    cx: Cx<'_, impl Store>,
    due: &DueConfig,
    op: &Operation,
    due_at_ms: u64,
) -> JournalResult<Stored> {
    let Cx { store, clock, .. } = cx;
    let created = match journal::create(store, clock, op).await {
        Ok(created) => created,
        Err(JournalError::Exists) => {
            let existing = effects::load_and_adopt(cx, &op.operation_id).await?;
            return Ok(Stored::Existing(existing.map(|l| l.operation)));
        }
        Err(e) => return Err(e),
    };
    indexes::count_and_list(store, &created).await?;
    indexes::track(store, &created).await?;
    let state = PollState {
        next_at_ms: due_at_ms,
        ..Default::default()
    };
    schedule_at(store, clock, due, &created.operation_id, state).await?;
    Ok(Stored::Created(created))
}
