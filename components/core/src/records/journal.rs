//! The operation journal: an append-only log per operation, and the operation record as its fold.
//!
//! Writers never rewrite a shared value: each change is a new entry at `op:{op}:ev:{seq}`,
//! `seq` from an atomic `increment` of `op:{op}:seq`. The record at `op:{op}` only caches the
//! fold: readers fold entries beyond its version, so a lost or stale snapshot write costs
//! reads, never correctness. The fold decides (e.g. which terminal came first) in sequence
//! order, so every reader reaches the same verdict.
//!
//! **Holes.** A writer crashing between allocating a seq and writing its entry leaves a hole.
//! Writers abandon an allocation older than [`WRITE_GUARD_MS`] (answering "retry" rather than
//! writing late), so once a *later* entry is older than [`HOLE_AGE_MS`] the hole can never fill
//! and the fold skips it. Until then the fold stops before it, showing the last settled state.

use crate::foundation::clock::Clock;
use crate::foundation::error::StoreError;
use crate::foundation::keys;
use crate::foundation::store::{Store, StoreResult, get_json, set_json};
use crate::model::operation::{Observation, Observed, Operation};
use crate::model::state_machine::Outcome;
use crate::model::status::OperationStatus;
use serde::Serialize;
use std::fmt;

/// A writer slower than this between allocating a seq and writing its entry abandons it.
pub const WRITE_GUARD_MS: u64 = 10_000;
/// A missing entry followed by an entry at least this old is a permanent hole. Leaves a wide
/// margin over `2 * WRITE_GUARD_MS` for clock skew between replicas.
pub const HOLE_AGE_MS: u64 = 60_000;

/// `Deserialize` is written out in `de`: the derived one kept a second copy of the operation's
/// deserializer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    pub seq: u64,
    /// Our clock when the writer started the append.
    pub recorded_at_ms: u64,
    #[serde(flatten)]
    pub kind: EntryKind,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EntryKind {
    /// The operation as first stored, before anything was sent.
    Created { operation: Box<Operation> },
    /// A seller status report.
    Observed { observation: Box<Observation> },
    /// Our deadline for the task passed.
    DeadlineExpired,
    /// The writer of entry `abandoned` failed to write it: readers skip that hole at once
    /// (a seal follows its hole, never fills it: a write whose answer was lost may be there).
    Sealed { abandoned: u64 },
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
        /// With an unknown outcome: the digest of the bytes that may have been delivered.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sent_digest: Option<String>,
        /// With an unknown outcome: when the attempt started (absent in entries of earlier
        /// releases; the entry's own time stands in).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sent_at_ms: Option<u64>,
        /// Refused by something other than the seller's AdCP answer after an unknown outcome:
        /// look the request up before resending.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        look_up: bool,
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
    Exists,
    /// An earlier writer of this operation's first entries may still be writing; retry.
    InFlight,
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalError::Store(e) => e.fmt(f),
            JournalError::Abandoned => {
                f.write_str("journal write abandoned after the write guard; retry")
            }
            JournalError::Exists => f.write_str("operation id already in use"),
            JournalError::InFlight => {
                f.write_str("an earlier write of this operation is in flight")
            }
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
            JournalError::Abandoned | JournalError::InFlight => true,
            JournalError::Exists => false,
        }
    }
}

pub type JournalResult<T> = Result<T, JournalError>;

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
        (Some(_), EntryKind::Sealed { .. }) => Effect::Recorded,
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
                sent_digest,
                sent_at_ms,
                look_up,
            },
        ) => {
            o.dispatch_attempts += 1;
            o.outcome_unknown |= *outcome_unknown;
            if o.sent_digest.is_none() {
                o.sent_digest.clone_from(sent_digest);
            }
            if *outcome_unknown && o.key_sent_at_ms.is_none() {
                o.key_sent_at_ms = Some(sent_at_ms.unwrap_or(entry.recorded_at_ms));
            }
            o.look_up_first = *look_up;
            o.error = Some(error.clone());
            o.next_poll_at_ms = *retry_at_ms;
            o.updated_at_ms = entry.recorded_at_ms;
            Effect::Recorded
        }
    };
    if let Some(o) = op {
        o.version = entry.seq;
        if matches!(
            effect,
            Effect::Created | Effect::Applied(_) | Effect::Overrode(_)
        ) {
            o.status_seq = entry.seq;
        }
    }
    effect
}

/// Stores a new operation: its creation entry, then its snapshot.
pub async fn create(
    store: &impl Store,
    clock: &dyn Clock,
    operation: &Operation,
) -> JournalResult<Operation> {
    let op = create_entry(store, clock, operation).await?;
    save(store, &op).await?;
    Ok(op)
}

/// Stores a new operation's creation entry only: readers fold it until a later write stores
/// a snapshot (the API creates this way, to reach the seller in fewer writes).
///
/// The first creation entry in sequence order creates the operation; later ones fold as
/// duplicates. Each creator writes its entry at the seq it got, so a retry never leaves a
/// hole of its own. A creator whose seq is not 1 is the creator only if every earlier seq is
/// a permanent hole (its writer died): until a later entry proves that (see [`HOLE_AGE_MS`])
/// it answers [`JournalError::InFlight`], and a retry after that finds its entry and gets
/// [`JournalError::Exists`]. So an id whose first writer died is usable again, never bricked.
pub async fn create_entry(
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
    let mut op = None;
    if entry.seq > 1 {
        let reach = catch_up(store, clock, id, &mut op, entry.seq - 1, 0, |_, _, _, _| {}).await?;
        if op.is_some() {
            return Err(JournalError::Exists);
        }
        if reach != Reach::Head {
            return Err(JournalError::InFlight);
        }
    }
    fold(&mut op, &entry);
    let Some(op) = op else {
        return Err(StoreError::Corrupt(format!("creation entry of {id} yields no record")).into());
    };
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
        seal(store, clock, op_id, seq).await;
        return Err(JournalError::Abandoned);
    }
    let entry = Entry {
        seq,
        recorded_at_ms: started,
        kind,
    };
    if let Err(e) = set_json(store, &keys::operation_entry(op_id, seq), &entry).await {
        seal(store, clock, op_id, seq).await;
        return Err(e.into());
    }
    Ok(entry)
}

/// Records, in an entry after it, that this writer gave up entry `abandoned`, so readers need
/// not wait [`HOLE_AGE_MS`] to skip it. Best effort: if this fails too, the hole just ages.
async fn seal(store: &impl Store, clock: &dyn Clock, op_id: &str, abandoned: u64) {
    let Ok(seq) = store.increment(&keys::operation_seq(op_id), 1).await else {
        return;
    };
    let entry = Entry {
        seq: seq.max(0) as u64,
        recorded_at_ms: clock.now_ms(),
        kind: EntryKind::Sealed { abandoned },
    };
    let _ = set_json(store, &keys::operation_entry(op_id, entry.seq), &entry).await;
}

#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub operation: Operation,
    /// The highest allocated seq; above `operation.version` while an entry is in flight.
    pub head: u64,
    /// Status changes folded from entries beyond the snapshot (see [`Recorded::adopted`]).
    pub adopted: Vec<Recorded>,
    /// The fold got past the stored snapshot: [`save`] it once the adopted effects ran.
    pub behind: bool,
}

/// Reads an operation: the snapshot plus newer entries, folded. Does not write: the caller
/// runs the effects of what it adopted, then [`save`]s, so a failure in between leaves the
/// entries for the next reader to adopt again.
pub async fn load(
    store: &impl Store,
    clock: &dyn Clock,
    op_id: &str,
) -> JournalResult<Option<Loaded>> {
    Ok(look(store, clock, op_id).await?.loaded())
}

/// What [`look`] finds under an id.
#[derive(Debug, Clone, PartialEq)]
pub enum Look {
    /// Nothing written (at most seqs allocated by creators that wrote no entry).
    Absent,
    /// A creation entry is written, but seqs before it are missing and not yet provably
    /// holes (see [`create_entry`]): the operation appears once that entry is old enough. A
    /// creator retrying meanwhile need not append another: it would prove nothing sooner.
    Unproven,
    Found(Box<Loaded>),
}

impl Look {
    /// The operation, if it can be read yet.
    pub fn loaded(self) -> Option<Loaded> {
        match self {
            Look::Found(loaded) => Some(*loaded),
            Look::Absent | Look::Unproven => None,
        }
    }
}

/// [`load`], telling an id nobody wrote from one whose creation awaits its proof.
pub async fn look(store: &impl Store, clock: &dyn Clock, op_id: &str) -> JournalResult<Look> {
    let snapshot: Option<Operation> = get_json(store, &keys::operation(op_id)).await?;
    // The head is read with `get`, not `increment(_, 0)`: a read leaves no key behind for
    // unknown ids (random webhook URLs, say) and takes no write lock. Without a snapshot the
    // seq tells whether the id exists (not entry 1, which a creator that died after
    // allocating it never wrote: see [`create`]).
    let head = match (&snapshot, store.get(&keys::operation_seq(op_id)).await?) {
        (None, None) => return Ok(Look::Absent),
        (_, None) => 0,
        (_, Some(v)) => crate::foundation::store::decode_counter(&keys::operation_seq(op_id), &v)?,
    }
    .max(0) as u64;
    let start = snapshot.as_ref().map_or(0, |o| o.version);
    let mut op = snapshot;
    let mut adopted = Vec::new();
    let reach = catch_up(
        store,
        clock,
        op_id,
        &mut op,
        head,
        start,
        adopter(&mut adopted),
    )
    .await?;
    Ok(match op {
        Some(operation) => Look::Found(Box::new(Loaded {
            behind: operation.version > start,
            operation,
            head,
            adopted,
        })),
        None if reach == Reach::Unproven => Look::Unproven,
        None => Look::Absent,
    })
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
                behind: false,
            });
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub operation: Option<Operation>,
    /// The status just before the new entry was folded in.
    pub previous: Option<crate::model::status::OperationStatus>,
    /// The new entry's effect; `None` while an earlier entry is still in flight (the entry
    /// is durable either way and the next reader folds it).
    pub effect: Option<Effect>,
    pub seq: u64,
    /// Status changes of earlier entries beyond the snapshot, first folded here as far as this
    /// writer knows. Their own writer normally runs their effects; if it crashed after
    /// appending, this is how the change still gets counted and announced.
    /// [`crate::lifecycle::effects`] claims each change once, whoever sees it.
    pub adopted: Vec<Recorded>,
    /// The fold got past the snapshot the writer started from: [`save`] it after the effects.
    pub behind: bool,
}

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
    .await?
        == Reach::Head;
    let previous = op.as_ref().map(|o| o.status);
    let effect = settled.then(|| fold(&mut op, &entry));
    Ok(Recorded {
        behind: op.as_ref().is_some_and(|o| o.version > start),
        operation: op,
        previous,
        effect,
        seq: entry.seq,
        adopted,
    })
}

/// Every entry with its effect, folded from the start.
pub async fn history(
    store: &impl Store,
    clock: &dyn Clock,
    op_id: &str,
) -> JournalResult<Vec<(Entry, Effect)>> {
    Ok(history_page(store, clock, op_id, 0, u64::MAX).await?.0)
}

/// One page of the history for the events API: the entries after sequence number `after`,
/// up to sequence `after + limit`, each with its effect, and whether the journal goes on.
/// The fold starts at the beginning (an effect depends on what came before) and stops at
/// the page's end: a page never holds more than `limit` entries, nor reads past them.
pub async fn history_page(
    store: &impl Store,
    clock: &dyn Clock,
    op_id: &str,
    after: u64,
    limit: u64,
) -> JournalResult<(Vec<(Entry, Effect)>, bool)> {
    let head = crate::foundation::store::get_counter(store, &keys::operation_seq(op_id))
        .await?
        .max(0) as u64;
    let end = head.min(after.saturating_add(limit));
    let mut op = None;
    let mut out = Vec::new();
    let reached = catch_up(store, clock, op_id, &mut op, end, 0, |e, eff, _, _| {
        if e.seq > after {
            out.push((e.clone(), eff))
        }
    })
    .await?;
    Ok((out, reached == Reach::Head && end < head))
}

/// How far [`catch_up`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    Head,
    /// Stopped at a written entry: entries before it are missing, and it is too young to
    /// prove them holes.
    Unproven,
    /// The last entries are missing: in flight, as far as anyone can tell.
    InFlight,
}

/// Folds entries `start+1 ..= head` into `op`, skipping permanent holes and stopping at an
/// entry still in flight.
async fn catch_up(
    store: &impl Store,
    clock: &dyn Clock,
    op_id: &str,
    op: &mut Option<Operation>,
    head: u64,
    start: u64,
    mut seen: impl FnMut(&Entry, Effect, Option<OperationStatus>, &Option<Operation>),
) -> JournalResult<Reach> {
    let mut entries: Vec<Option<Entry>> = Vec::new();
    for seq in start + 1..=head {
        entries.push(get_json(store, &keys::operation_entry(op_id, seq)).await?);
    }
    // Extended, not collected: collecting into a B-tree sorts first, a sort routine in the
    // `.wasm` per element type.
    let mut sealed = std::collections::BTreeSet::new();
    sealed.extend((entries.iter().flatten()).filter_map(|e| match e.kind {
        EntryKind::Sealed { abandoned } => Some(abandoned),
        _ => None,
    }));
    let mut missing: Vec<u64> = Vec::new();
    for (seq, entry) in (start + 1..).zip(&entries) {
        match entry {
            // Its writer gave it up and said so.
            None if sealed.contains(&seq) => {}
            None => missing.push(seq),
            Some(entry) => {
                if !missing.is_empty() {
                    // Entries before this one are missing: holes only if this one is old enough.
                    if clock.now_ms().saturating_sub(entry.recorded_at_ms) < HOLE_AGE_MS {
                        return Ok(Reach::Unproven);
                    }
                    missing.clear();
                }
                let previous = op.as_ref().map(|o| o.status);
                let effect = fold(op, entry);
                seen(entry, effect, previous, op);
            }
        }
    }
    // Trailing missing entries are in flight: nothing later proves them to be holes.
    Ok(if missing.is_empty() {
        Reach::Head
    } else {
        Reach::InFlight
    })
}

/// Stores the fold as the operation's snapshot: the version its readers start from. Delivery
/// marks the fold moved out of the record are written under their own keys first, so a
/// snapshot never drops a mark that is nowhere else (rewriting them is harmless).
pub async fn save(store: &impl Store, op: &Operation) -> StoreResult<()> {
    for m in &op.deliveries.moving_out {
        store
            .set(
                &keys::delivery_mark(&op.operation_id, &m.idempotency_key),
                m.payload_hash.as_bytes(),
            )
            .await?;
    }
    set_json(store, &keys::operation(&op.operation_id), op).await
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

mod de;
#[cfg(test)]
mod tests;
