//! Storing a new operation, the one way every creator does it (the API, cancel follow-ups,
//! re-plans, tasks adopted from a seller): its creation entry, the indexes every operation
//! is listed in, and its first due time in the sweep's index.

use super::effects;
use crate::foundation::{cx::Cx, keys, store::Store, store::StoreResult};
use crate::model::operation::Operation;
use crate::records::indexes;
use crate::records::journal::{self, JournalError, JournalResult};
use crate::schedule::due::{self, DueConfig};
use crate::schedule::poll::{PollState, schedule_at};

/// What storing found.
#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    /// Newly stored, indexed and filed due.
    Created(Operation),
    /// The id was taken: the operation as it stands (its indexing and filing finished if its
    /// creator died before them), or `None` while an earlier creator may still be writing.
    Existing(Option<Operation>),
}

/// How much of a new operation's filing happens now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filing {
    /// Everything: snapshot, listing, creation counters, poll state and due time.
    Complete,
    /// Only what must precede the seller call, in five writes: the listing position, the
    /// creation entry (seq and entry), the listing entry, the due time (the redispatch safety
    /// net). The caller dispatches, then counts the creation ([`indexes::count_created`]);
    /// the dispatch's own record stores the first snapshot and the poll state.
    BeforeDispatch,
}

/// Stores `op` under its id (idempotently: a taken id is not written again), lists it for
/// its tenant (and its seller task, if it has one), and files it due at `due_at_ms`. Every
/// step can be re-run: a retry, or any creator of the same id, finishes what a failure left.
pub async fn store_new(
    cx: Cx<'_, impl Store>,
    due: &DueConfig,
    op: &Operation,
    due_at_ms: u64,
    filing: Filing,
) -> JournalResult<Stored> {
    let Cx { store, clock, .. } = cx;
    let mut op = op.clone();
    if op.listed_at.is_none() {
        op.listed_at = Some(indexes::allocate_position(store, &op.tenant_id).await?);
    }
    let created = match filing {
        Filing::Complete => journal::create(store, clock, &op).await,
        Filing::BeforeDispatch => journal::create_entry(store, clock, &op).await,
    };
    match created {
        Ok(created) => {
            match filing {
                Filing::Complete => file(cx, due, &created, due_at_ms, true).await?,
                Filing::BeforeDispatch => {
                    indexes::list(store, &created, true).await?;
                    due::schedule(store, due, clock, &created.operation_id, due_at_ms).await?;
                }
            }
            Ok(Stored::Created(created))
        }
        Err(JournalError::Exists) => {
            let existing = effects::load_and_adopt(cx, &op.operation_id).await?;
            let existing = existing.map(|l| l.operation);
            if let Some(existing) = &existing {
                file(cx, due, existing, due_at_ms, false).await?;
            }
            Ok(Stored::Existing(existing))
        }
        Err(JournalError::InFlight) => Ok(Stored::Existing(None)),
        Err(e) => Err(e),
    }
}

/// Finishes what storing `op` may have left undone (its creator died after the creation
/// entry): listing, task index and filing, each only if missing.
pub async fn finish_filing(
    cx: Cx<'_, impl Store>,
    due: &DueConfig,
    op: &Operation,
    due_at_ms: u64,
) -> StoreResult<()> {
    file(cx, due, op, due_at_ms, false).await
}

/// Lists, tracks and files a stored operation. `fresh`: just created, so nothing of this was
/// done yet; otherwise each step checks first and does only what is missing.
async fn file(
    cx: Cx<'_, impl Store>,
    due: &DueConfig,
    op: &Operation,
    due_at_ms: u64,
    fresh: bool,
) -> StoreResult<()> {
    let Cx { store, clock, .. } = cx;
    if indexes::list(store, op, fresh).await? {
        indexes::count_created(store, op).await?;
    }
    indexes::track(store, op).await?;
    // `schedule_at` writes the poll state last: once it exists, the operation was filed.
    if fresh
        || store
            .get(&keys::poll_state(&op.operation_id))
            .await?
            .is_none()
    {
        let state = PollState {
            next_at_ms: due_at_ms,
            ..Default::default()
        };
        schedule_at(store, clock, due, &op.operation_id, state).await?;
    }
    Ok(())
}
