//! The operation journal: an append-only log per operation, and the operation record as
//! its fold.
//!
//! Writers never rewrite a shared value. Each change is a new entry at
//! `op:{op}:ev:{seq}`, where `seq` comes from an atomic `increment` of `op:{op}:seq` (atomic
//! on every Spin backend). The record at `op:{op}` is only a cache of the fold: a reader
//! folds whatever entries lie beyond the cached version, so a lost or stale snapshot write
//! costs reads, never correctness. Decisions (which terminal status came first) are made by
//! the fold, in sequence order, so every reader reaches the same verdict.
//!
//! **Holes.** A writer that crashes between allocating a sequence number and writing its
//! entry leaves a hole. Writers give up on an allocation older than [`WRITE_GUARD_MS`]
//! (they answer "retry" instead of writing late), so once a *later* entry is older than
//! [`HOLE_AGE_MS`] the hole can never fill and the fold skips it. Until then the fold stops
//! before it, and the operation shows its state as of the last settled entry.

use crate::foundation::clock::Clock;
use crate::foundation::error::StoreError;
use crate::foundation::keys;
use crate::foundation::store::{Store, get_json, set_json};
use crate::model::operation::{Observation, Observed, Operation};
use crate::model::state_machine::Outcome;
use crate::model::status::OperationStatus;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A writer that needed longer than this between allocating a sequence number and writing
/// its entry abandons the entry.
pub const WRITE_GUARD_MS: u64 = 10_000;
/// A missing entry followed by an entry at least this old is a permanent hole. Leaves a wide
/// margin over `2 * WRITE_GUARD_MS` for clock skew between replicas.
pub const HOLE_AGE_MS: u64 = 60_000;

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    /// Our clock when the writer started the append.
    pub recorded_at_ms: u64,
    #[serde(flatten)]
    pub kind: EntryKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EntryKind {
    /// The operation as first stored, before anything was sent.
    Created { operation: Box<Operation> },
    /// A seller status report.
    Observed { observation: Box<Observation> },
    /// Our deadline for the task passed.
    DeadlineExpired,
    /// A change made by the orchestrator or a human: governance, approval, cancel.
    Local {
        change: crate::model::operation::LocalChange,
        /// Who decided, when a person did through the API: the acting API key's public
        /// prefix (never the key). Absent in entries of earlier releases.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// A dispatch (or redispatch) got no usable answer; the operation stays where it was.
    DispatchFailed {
        error: crate::model::operation::OperationError,
        /// When to try again, or `None` to stop retrying (the sweep then reconciles).
        retry_at_ms: Option<u64>,
        /// The seller may have acted (timeout, broken connection): resend only with the
        /// same key and bytes, and look the task up before giving up.
        outcome_unknown: bool,
    },
}

/// What folding an entry did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "effect", content = "status", rename_all = "snake_case")]
pub enum Effect {
    Created,
    Applied(crate::model::status::OperationStatus),
    Overrode(crate::model::status::OperationStatus),
    Recorded,
    Duplicate,
    Stale,
    Conflict,
    /// A webhook delivery already folded in (same key, same payload).
    RepeatedDelivery,
    /// A webhook delivery reusing a folded key with another payload.
    DeliveryConflict,
    /// An entry for an operation whose creation entry is missing; ignored.
    Orphaned,
}

impl From<Outcome> for Effect {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Applied(s) => Effect::Applied(s),
            Outcome::Overrode(s) => Effect::Overrode(s),
            Outcome::Recorded => Effect::Recorded,
            Outcome::Duplicate => Effect::Duplicate,
            Outcome::Stale => Effect::Stale,
            Outcome::Conflict => Effect::Conflict,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalError {
    Store(StoreError),
    /// The writer was too slow to write its allocated entry and abandoned it; retry.
    Abandoned,
    /// The operation id is already taken.
    Exists,
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalError::Store(e) => e.fmt(f),
            JournalError::Abandoned => {
                f.write_str("journal write abandoned after the write guard; retry")
            }
            JournalError::Exists => f.write_str("operation id already in use"),
        }
    }
}

impl std::error::Error for JournalError {}

impl From<StoreError> for JournalError {
    fn from(e: StoreError) -> Self {
        JournalError::Store(e)
    }
}

impl JournalError {
    /// Whether the same step may succeed if tried again (an id already taken never will).
    pub fn is_retryable(&self) -> bool {
        match self {
            JournalError::Store(e) => e.is_retryable(),
            JournalError::Abandoned => true,
            JournalError::Exists => false,
        }
    }
}

pub type JournalResult<T> = Result<T, JournalError>;

/// Folds one entry into the record.
pub fn fold(op: &mut Option<Operation>, entry: &Entry) -> Effect {
    let effect = match (&mut *op, &entry.kind) {
        (None, EntryKind::Created { operation }) => {
            *op = Some((**operation).clone());
            Effect::Created
        }
        (Some(_), EntryKind::Created { .. }) => Effect::Duplicate,
        (None, _) => Effect::Orphaned,
        (Some(o), EntryKind::Observed { observation }) => {
            match o.fold_observation(observation, entry.seq, entry.recorded_at_ms) {
                Observed::State(outcome) => outcome.into(),
                Observed::RepeatedDelivery => Effect::RepeatedDelivery,
                Observed::DeliveryConflict => Effect::DeliveryConflict,
            }
        }
        (Some(o), EntryKind::DeadlineExpired) => o.expire(entry.recorded_at_ms).into(),
        (Some(o), EntryKind::Local { change, .. }) => o
            .apply_local(change, entry.recorded_at_ms)
            .map_or(Effect::Recorded, Effect::from),
        // A failed attempt that reports after the seller's outcome is history, not state: a
        // completed operation must never show a transport error.
        (Some(o), EntryKind::DispatchFailed { .. }) if o.status.is_authoritative_terminal() => {
            Effect::Recorded
        }
        (
            Some(o),
            EntryKind::DispatchFailed {
                error,
                retry_at_ms,
                outcome_unknown,
            },
        ) => {
            o.dispatch_attempts += 1;
            o.outcome_unknown |= *outcome_unknown;
            o.error = Some(error.clone());
            o.next_poll_at_ms = *retry_at_ms;
            o.updated_at_ms = entry.recorded_at_ms;
            Effect::Recorded
        }
    };
    if let Some(o) = op {
        o.version = entry.seq;
    }
    effect
}

/// Stores a new operation: its creation entry (sequence 1), then its snapshot.
///
/// Operation ids are fresh random values, so a non-1 sequence means the id was used before.
pub async fn create(
    store: &impl Store,
    clock: &dyn Clock,
    operation: &Operation,
) -> JournalResult<Operation> {
    let id = &operation.operation_id;
    let entry = append(
        store,
        clock,
        id,
        EntryKind::Created {
            operation: Box::new(operation.clone()),
        },
    )
    .await?;
    if entry.seq != 1 {
        return Err(JournalError::Exists);
    }
    let mut op = None;
    fold(&mut op, &entry);
    let op = op.expect("a creation entry always yields a record");
    set_json(store, &keys::operation(id), &op).await?;
    Ok(op)
}

/// Appends an entry and returns it. Does not fold.
pub async fn append(
    store: &impl Store,
    clock: &dyn Clock,
    op_id: &str,
    kind: EntryKind,
) -> JournalResult<Entry> {
    let started = clock.now_ms();
    let seq = store.increment(&keys::operation_seq(op_id), 1).await?;
    let seq = u64::try_from(seq)
        .map_err(|_| StoreError::Corrupt(format!("negative sequence for {op_id}")))?;
    if clock.now_ms().saturating_sub(started) > WRITE_GUARD_MS {
        return Err(JournalError::Abandoned);
    }
    let entry = Entry {
        seq,
        recorded_at_ms: started,
        kind,
    };
    set_json(store, &keys::operation_entry(op_id, seq), &entry).await?;
    Ok(entry)
}

/// The result of reading an operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub operation: Operation,
    /// The highest allocated sequence number; greater than `operation.version` while an
    /// entry is in flight.
    pub head: u64,
    /// Status changes this read folded from entries beyond the snapshot (see
    /// [`Recorded::adopted`]).
    pub adopted: Vec<Recorded>,
}

/// Reads an operation: the cached snapshot plus any newer entries, folded. Refreshes the
/// snapshot when the fold got further than it.
pub async fn load(
    store: &impl Store,
    clock: &dyn Clock,
    op_id: &str,
) -> JournalResult<Option<Loaded>> {
    let snapshot: Option<Operation> = get_json(store, &keys::operation(op_id)).await?;
    // Reading a counter creates it: look for the creation entry first, so probing unknown
    // ids (random webhook URLs, say) leaves no keys behind.
    if snapshot.is_none() && store.get(&keys::operation_entry(op_id, 1)).await?.is_none() {
        return Ok(None);
    }
    let head = store
        .increment(&keys::operation_seq(op_id), 0)
        .await?
        .max(0) as u64;
    let start = snapshot.as_ref().map_or(0, |o| o.version);
    let mut op = snapshot;
    let mut adopted = Vec::new();
    catch_up(
        store,
        clock,
        op_id,
        &mut op,
        head,
        start,
        adopter(&mut adopted),
    )
    .await?;
    Ok(op.map(|operation| Loaded {
        operation,
        head,
        adopted,
    }))
}

/// Collects the status changes of folded entries: their writer may have died before their
/// snapshot and effects (see [`Recorded::adopted`]).
fn adopter(
    out: &mut Vec<Recorded>,
) -> impl FnMut(&Entry, Effect, Option<OperationStatus>, &Option<Operation>) + '_ {
    |entry, effect, previous, op| {
        if matches!(effect, Effect::Applied(_) | Effect::Overrode(_)) {
            out.push(Recorded {
                operation: op.clone(),
                previous,
                effect: Some(effect),
                seq: entry.seq,
                adopted: Vec::new(),
            });
        }
    }
}

/// What [`record`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// The record after folding as far as possible.
    pub operation: Option<Operation>,
    /// The status just before the new entry was folded in.
    pub previous: Option<crate::model::status::OperationStatus>,
    /// The new entry's effect; `None` while an earlier entry is still in flight (the entry
    /// is durable either way and the next reader folds it).
    pub effect: Option<Effect>,
    pub seq: u64,
    /// Status changes made by earlier entries beyond the snapshot, folded here for the first
    /// time as far as this writer knows. Their own writer normally runs their effects; if it
    /// crashed after appending, these are how the change still gets counted and announced.
    /// [`crate::lifecycle::effects`] claims each change once, whoever sees it.
    pub adopted: Vec<Recorded>,
}

/// Appends an entry and folds the operation up to and including it.
pub async fn record(
    store: &impl Store,
    clock: &dyn Clock,
    op_id: &str,
    kind: EntryKind,
) -> JournalResult<Recorded> {
    let snapshot: Option<Operation> = get_json(store, &keys::operation(op_id)).await?;
    record_from(store, clock, op_id, snapshot, kind).await
}

/// [`record`] for a caller that already holds a recent fold of the operation (saves a read).
pub async fn record_from(
    store: &impl Store,
    clock: &dyn Clock,
    op_id: &str,
    mut op: Option<Operation>,
    kind: EntryKind,
) -> JournalResult<Recorded> {
    let entry = append(store, clock, op_id, kind).await?;
    let start = op.as_ref().map_or(0, |o| o.version);
    let mut adopted = Vec::new();
    let settled = catch_up(
        store,
        clock,
        op_id,
        &mut op,
        entry.seq - 1,
        start,
        adopter(&mut adopted),
    )
    .await?;
    let previous = op.as_ref().map(|o| o.status);
    let mut effect = None;
    if settled {
        effect = Some(fold(&mut op, &entry));
        if let Some(o) = &op {
            set_json(store, &keys::operation(op_id), o).await?;
        }
    }
    Ok(Recorded {
        operation: op,
        previous,
        effect,
        seq: entry.seq,
        adopted,
    })
}

/// The whole history with each entry's effect, folded from the start (for the events API).
pub async fn history(
    store: &impl Store,
    clock: &dyn Clock,
    op_id: &str,
) -> JournalResult<Vec<(Entry, Effect)>> {
    let head = store
        .increment(&keys::operation_seq(op_id), 0)
        .await?
        .max(0) as u64;
    let mut op = None;
    let mut out = Vec::new();
    catch_up(store, clock, op_id, &mut op, head, 0, |e, eff, _, _| {
        out.push((e.clone(), eff))
    })
    .await?;
    Ok(out)
}

/// Folds entries `start+1 ..= head` into `op`, skipping permanent holes and stopping at an
/// entry still in flight. Writes the snapshot if it advanced past `start`.
async fn catch_up(
    store: &impl Store,
    clock: &dyn Clock,
    op_id: &str,
    op: &mut Option<Operation>,
    head: u64,
    start: u64,
    mut seen: impl FnMut(&Entry, Effect, Option<OperationStatus>, &Option<Operation>),
) -> JournalResult<bool> {
    let mut seq = start + 1;
    let mut missing: Vec<u64> = Vec::new();
    let mut folded_to = start;
    while seq <= head {
        let entry: Option<Entry> = get_json(store, &keys::operation_entry(op_id, seq)).await?;
        match entry {
            None => missing.push(seq),
            Some(entry) => {
                if !missing.is_empty() {
                    // Entries before this one are missing: holes only if this one is old enough.
                    if clock.now_ms().saturating_sub(entry.recorded_at_ms) < HOLE_AGE_MS {
                        return finish(store, op_id, op, start, folded_to, false).await;
                    }
                    missing.clear();
                }
                let previous = op.as_ref().map(|o| o.status);
                let effect = fold(op, &entry);
                seen(&entry, effect, previous, op);
                folded_to = seq;
            }
        }
        seq += 1;
    }
    // Trailing missing entries are in flight: nothing later proves them to be holes.
    finish(store, op_id, op, start, folded_to, missing.is_empty()).await
}

/// Saves the snapshot if the fold advanced, and reports whether it reached the head.
async fn finish(
    store: &impl Store,
    op_id: &str,
    op: &Option<Operation>,
    start: u64,
    folded_to: u64,
    settled: bool,
) -> JournalResult<bool> {
    if folded_to > start
        && let Some(o) = op
    {
        set_json(store, &keys::operation(op_id), o).await?;
    }
    Ok(settled)
}

/// The journal's errors reach API callers as themselves: a store failure is retryable, a
/// writer race is `busy`.
impl From<JournalError> for crate::foundation::http::ApiError {
    fn from(e: JournalError) -> Self {
        match e {
            JournalError::Store(e) => e.into(),
            other => {
                let mut err = crate::foundation::http::ApiError::new(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "a concurrent write to this operation is in progress; retry",
                );
                err.retry_after_secs = Some(1);
                err.internal = Some(other.to_string());
                err
            }
        }
    }
}

#[cfg(test)]
mod tests;
