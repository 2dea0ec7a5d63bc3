//! The due index: which operations a sweep tick must look at, found in O(due work).
//!
//! # Layout
//!
//! Time is cut into buckets of [`DueConfig::bucket_ms`] (10 s). [`schedule`] files an operation
//! due at `t` in the bucket of `max(t, now)` ([`filing_bucket`]):
//!
//! ```text
//! n = increment("due:{bucket}:n", 1)      -- a fresh slot, atomic on every backend
//! set("due:{bucket}:{n}", op_id)          -- written once, by the slot's owner
//! ```
//!
//! No value has several writers and every value is tiny. An entry is only a **hint**: the
//! record's `next_poll_at_ms` decides whether it is due, so rescheduling files a new entry and
//! never deletes the old one (the caller skips stale hints), and duplicates are harmless (a
//! tick hands out one hint per operation).
//!
//! # Sweeping
//!
//! A bucket is *due* once it has ended (`end <= now`), so nothing read is early and nothing is
//! put back for being early, at the cost of up to one bucket of latency.
//!
//! The cursor (`sweep:cursor`, a small JSON [`Cursor`]) holds the first bucket not yet
//! *finished* and, for partly read buckets after it, how far they were read and which slots
//! were still empty ("holes"). A tick ([`Sweep::begin`]) reads each due bucket's count (a
//! `get`: [`crate::foundation::store::get_counter`]) and only entries not read before, plus
//! re-reads of holes.
//!
//! A writer may still append to a bucket whose time has just passed, and a slot's `increment`
//! may be visible before its `set`. So a bucket is **finished** only when it ended more than
//! [`DueConfig::grace_ms`] (60 s) ago, its count was read after that, all entries were read and
//! no hole remains; a hole past the grace is permanent (its writer crashed) and is skipped.
//! The **write guard** makes that sound: [`schedule`] checks the clock after writing and, if
//! that is later than [`DueConfig::write_guard_ms`] (20 s) after the bucket's end, files the
//! entry again in the current bucket. Replica clocks may differ by up to `grace - write_guard`
//! (40 s). So an entry is either visible before its bucket can finish, or filed again.
//!
//! The caller settles each [`Hint`] ([`Sweep::settle`]) or defers it ([`Sweep::defer`]: leased
//! by another sweep, a store failure), and [`Sweep::commit`] files deferred ones again at
//! their time before it moves the cursor past them. Hints the tick did not get to (out of
//! time), and deferred ones whose filing failed, are left **unread**: the cursor keeps them as
//! holes, so the next tick reads them again for a `get` each and no write. A crash before the
//! commit only means the next tick reads the same entries again.
//!
//! # Store failures
//!
//! Under a flaky store a tick must still make progress, or a backlog that needs many calls to
//! clear never clears: a failed entry read is a hole (read again next tick), a failed count
//! read skips that bucket (the cursor stays before it, later buckets are still read), a failed
//! requeue leaves its hint unread, a failed purge is retried next tick. Only the cursor's own
//! write failing loses the tick's progress.
//!
//! # Concurrent sweeps
//!
//! Overlapping ticks need no lock (a sweep lease only avoids duplicate reads): each moves the
//! cursor only past entries it handled and merges with the stored cursor ([`Cursor::merge`]).
//! The cursor is a plain `set`, so a concurrent commit may overwrite a newer cursor with an
//! older one; that only causes re-reads, which operation leases and records make harmless.
//!
//! # Retention
//!
//! Buckets finished more than [`DueConfig::retain_ms`] (10 min) ago are deleted, entries and
//! count (tracked by `Cursor::purged`).
//!
//! # Limits
//!
//! A tick reads at most [`DueConfig::max_buckets`] buckets and [`DueConfig::max_entries`]
//! entries and continues on the next tick ([`SweepReport::backlog`]). With no cursor yet,
//! sweeping starts [`DueConfig::initial_lookback_ms`] (1 h) in the past.

use crate::foundation::clock::Clock;
use crate::foundation::error::StoreError;
use crate::foundation::keys;
use crate::foundation::store::{Store, StoreResult, get_json, set_json};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DueConfig {
    pub bucket_ms: u64,
    /// How long after its end a bucket may still receive entries from slow writers.
    pub grace_ms: u64,
    /// A [`schedule`] call whose entry lands later than this after its bucket ended files
    /// it again. `grace_ms - write_guard_ms` is the clock skew tolerated between replicas.
    pub write_guard_ms: u64,
    /// Finished buckets are deleted this long after they end.
    pub retain_ms: u64,
    /// Buckets read (and purged) per tick at most; at least a grace period's buckets plus two.
    pub max_buckets: u64,
    pub max_entries: usize,
    /// Where sweeping starts when there is no cursor yet.
    pub initial_lookback_ms: u64,
}

impl Default for DueConfig {
    fn default() -> Self {
        DueConfig {
            bucket_ms: 10_000,
            grace_ms: 60_000,
            write_guard_ms: 20_000,
            retain_ms: 600_000,
            max_buckets: 360,
            max_entries: 1_000,
            initial_lookback_ms: 3_600_000,
        }
    }
}

impl DueConfig {
    pub fn bucket_of(&self, ms: u64) -> u64 {
        ms / self.bucket_ms.max(1)
    }

    /// The first instant after the bucket.
    pub fn bucket_end_ms(&self, bucket: u64) -> u64 {
        (bucket + 1).saturating_mul(self.bucket_ms.max(1))
    }

    /// The bucket ended more than the grace period ago: no writer appends to it any more.
    pub fn is_closed(&self, bucket: u64, now_ms: u64) -> bool {
        self.bucket_end_ms(bucket).saturating_add(self.grace_ms) <= now_ms
    }

    /// The last due bucket at `now_ms`, if any.
    pub fn last_due_bucket(&self, now_ms: u64) -> Option<u64> {
        self.bucket_of(now_ms).checked_sub(1)
    }
}

/// Where an operation due at `due_at_ms` is filed at `now_ms`: its own bucket, or the
/// current one if that time has passed (a past bucket may already be finished).
pub fn filing_bucket(cfg: &DueConfig, due_at_ms: u64, now_ms: u64) -> u64 {
    cfg.bucket_of(due_at_ms.max(now_ms))
}

/// Where an entry was filed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filed {
    pub bucket: u64,
    pub n: u64,
    /// How many times it was filed (more than once after exceeding the write guard).
    pub attempts: u32,
}

const MAX_FILING_ATTEMPTS: u32 = 3;

/// Files `op_id` as due at `due_at_ms`: two store calls, more only if the entry may have missed
/// its bucket. `clock` must be live, not a [`crate::foundation::clock::FixedClock`] captured at
/// request start, or the write guard cannot see a stall.
pub async fn schedule(
    store: &impl Store,
    cfg: &DueConfig,
    clock: &dyn Clock,
    op_id: &str,
    due_at_ms: u64,
) -> StoreResult<Filed> {
    for attempt in 1..=MAX_FILING_ATTEMPTS {
        let started = clock.now_ms();
        let bucket = filing_bucket(cfg, due_at_ms, started);
        let n = store.increment(&keys::due_count(bucket), 1).await?;
        let n = u64::try_from(n)
            .map_err(|_| StoreError::Corrupt(format!("due count {n} of bucket {bucket}")))?;
        store
            .set(&keys::due_entry(bucket, n), op_id.as_bytes())
            .await?;
        // A sweep closes the bucket no earlier than `end + grace` by its clock, which is
        // after `end + write_guard` by ours as long as the skew stays below
        // `grace - write_guard`. An entry written before that is seen; a later one may not be.
        let landed = clock.now_ms();
        if landed < cfg.bucket_end_ms(bucket).saturating_add(cfg.write_guard_ms) {
            return Ok(Filed {
                bucket,
                n,
                attempts: attempt,
            });
        }
    }
    Err(StoreError::Unavailable(format!(
        "due index: filing `{op_id}` exceeded the write guard {MAX_FILING_ATTEMPTS} times"
    )))
}

/// One entry read from the index: `op_id` was filed in `bucket` at slot `n`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hint {
    pub bucket: u64,
    pub n: u64,
    pub op_id: String,
}

pub async fn bucket_count(store: &impl Store, bucket: u64) -> StoreResult<u64> {
    let n = crate::foundation::store::get_counter(store, &keys::due_count(bucket)).await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

async fn read_entry(store: &impl Store, bucket: u64, n: u64) -> StoreResult<Option<String>> {
    Ok(store
        .get(&keys::due_entry(bucket, n))
        .await?
        .map(|v| String::from_utf8_lossy(&v).into_owned()))
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Slots `1..=read` were read (except `holes`).
    pub read: u64,
    /// Slots counted but still empty when read; read again until the bucket closes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holes: Vec<u64>,
}

impl Progress {
    fn unread(&self, n: u64) -> bool {
        n > self.read || self.holes.contains(&n)
    }

    fn is_empty(&self) -> bool {
        self.read == 0 && self.holes.is_empty()
    }

    /// What was read by either.
    fn union(&self, other: &Progress) -> Progress {
        let mut holes: Vec<u64> = self
            .holes
            .iter()
            .chain(&other.holes)
            .copied()
            .filter(|n| self.unread(*n) && other.unread(*n))
            .collect();
        holes.sort_unstable();
        holes.dedup();
        Progress {
            read: self.read.max(other.read),
            holes,
        }
    }
}

/// The sweep cursor, stored at `sweep:cursor`. Small: it lists only buckets between the
/// first unfinished one and the last one read, which the grace period keeps to a handful.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Every bucket before this one is finished.
    pub bucket: u64,
    /// Partial progress in buckets from `bucket` on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub open: BTreeMap<u64, Progress>,
    /// Every bucket before this one has been deleted.
    pub purged: u64,
}

impl Cursor {
    pub fn initial(cfg: &DueConfig, now_ms: u64) -> Cursor {
        let bucket = cfg.bucket_of(now_ms.saturating_sub(cfg.initial_lookback_ms));
        Cursor {
            bucket,
            open: BTreeMap::new(),
            purged: bucket,
        }
    }

    fn progress(&self, bucket: u64) -> Progress {
        if bucket < self.bucket {
            Progress {
                read: u64::MAX,
                holes: Vec::new(),
            }
        } else {
            self.open.get(&bucket).cloned().unwrap_or_default()
        }
    }

    /// Everything either cursor has read: what two overlapping sweeps together have done.
    /// Commutative, associative and idempotent, so the order of commits does not matter.
    pub fn merge(&self, other: &Cursor) -> Cursor {
        let bucket = self.bucket.max(other.bucket);
        // Extended, not collected: collecting into a B-tree sorts first, a sort routine in
        // the `.wasm` per element type.
        let mut open = BTreeMap::new();
        open.extend(
            (self.open.keys().chain(other.open.keys()))
                .filter(|b| **b >= bucket)
                .map(|b| (*b, self.progress(*b).union(&other.progress(*b))))
                .filter(|(_, p)| !p.is_empty()),
        );
        Cursor {
            bucket,
            open,
            purged: self.purged.max(other.purged),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepReport {
    /// Entries handed out.
    pub hints: usize,
    /// Further entries for operations already handed out, dropped.
    pub duplicates: usize,
    /// Deferred hints filed again.
    pub requeued: usize,
    /// Hints not worked (out of time) or whose requeue failed: read again next tick.
    pub unread: usize,
    /// Index reads that failed: their buckets or slots are read again next tick.
    pub read_failures: u64,
    pub buckets_read: u64,
    /// Empty slots in closed buckets, given up (their writer crashed before writing).
    pub holes_skipped: u64,
    /// First bucket not finished after this tick.
    pub cursor: u64,
    pub purged_buckets: u64,
    /// The tick stopped at a limit; more due work is waiting.
    pub backlog: bool,
}

/// One tick's pass over the index: [`Sweep::begin`], handle [`Sweep::hints`], settle them,
/// [`Sweep::commit`].
#[derive(Debug)]
pub struct Sweep {
    cfg: DueConfig,
    now_ms: u64,
    start: Cursor,
    /// The cursor was in the store (else the commit writes the initial one).
    stored: bool,
    progress: BTreeMap<u64, Progress>,
    counts: BTreeMap<u64, u64>,
    hints: Vec<Hint>,
    /// Operations already handed out this tick: later entries for them are dropped.
    seen: BTreeSet<String>,
    duplicates: usize,
    settled: BTreeSet<(u64, u64)>,
    deferred: BTreeMap<(u64, u64), u64>,
    holes_skipped: u64,
    read_failures: u64,
    backlog: bool,
}

impl Sweep {
    /// Reads the cursor and the due entries not read before. One `get`, one `increment`
    /// per bucket from the cursor to the last due bucket, one `get` per new entry or hole.
    pub async fn begin(store: &impl Store, cfg: &DueConfig, now_ms: u64) -> StoreResult<Sweep> {
        // A cursor that does not parse (a bug, a manual edit) would stop every tick; start
        // over from the lookback instead (re-reads are harmless) and overwrite it.
        let stored = match store.get(keys::SWEEP_CURSOR).await? {
            None => None,
            Some(bytes) => serde_json::from_slice::<Cursor>(&bytes).ok(),
        };
        let mut sweep = Sweep {
            cfg: *cfg,
            now_ms,
            stored: stored.is_some(),
            start: stored.unwrap_or_else(|| Cursor::initial(cfg, now_ms)),
            progress: BTreeMap::new(),
            counts: BTreeMap::new(),
            hints: Vec::new(),
            seen: BTreeSet::new(),
            duplicates: 0,
            settled: BTreeSet::new(),
            deferred: BTreeMap::new(),
            holes_skipped: 0,
            read_failures: 0,
            backlog: false,
        };
        let Some(last_due) = cfg.last_due_bucket(now_ms) else {
            return Ok(sweep);
        };
        // Buckets within their grace period are read on every tick, so the limit must leave
        // room beyond them or the sweep could never get past them.
        let max_buckets = cfg.max_buckets.max(cfg.grace_ms / cfg.bucket_ms.max(1) + 2);
        let mut bucket = sweep.start.bucket;
        let mut visited = 0;
        while bucket <= last_due {
            if visited >= max_buckets || sweep.hints.len() >= cfg.max_entries {
                sweep.backlog = true;
                break;
            }
            sweep.read_bucket(store, bucket).await;
            visited += 1;
            bucket += 1;
        }
        Ok(sweep)
    }

    /// Reads one bucket's new entries and holes. A failed count read skips the bucket (no
    /// count, so the cursor cannot pass it); a failed entry read keeps its slot a hole.
    async fn read_bucket(&mut self, store: &impl Store, bucket: u64) {
        let Ok(count) = bucket_count(store, bucket).await else {
            self.read_failures += 1;
            self.backlog = true;
            return;
        };
        self.counts.insert(bucket, count);
        let closed = self.cfg.is_closed(bucket, self.now_ms);
        let mut p = self.start.progress(bucket);
        let mut holes = Vec::new();
        let old_holes = std::mem::take(&mut p.holes);
        for (i, &n) in old_holes.iter().enumerate() {
            if self.hints.len() >= self.cfg.max_entries {
                self.backlog = true;
                holes.extend_from_slice(&old_holes[i..]);
                break;
            }
            self.take_entry(store, bucket, n, closed, &mut holes).await;
        }
        while p.read < count {
            if self.hints.len() >= self.cfg.max_entries {
                self.backlog = true;
                break;
            }
            let n = p.read + 1;
            self.take_entry(store, bucket, n, closed, &mut holes).await;
            p.read = n;
        }
        p.holes = holes;
        self.progress.insert(bucket, p);
    }

    /// Reads slot `n`: an entry is offered, an empty slot stays a hole until its bucket is
    /// closed (then its writer crashed), a failed read stays a hole.
    async fn take_entry(
        &mut self,
        store: &impl Store,
        bucket: u64,
        n: u64,
        closed: bool,
        holes: &mut Vec<u64>,
    ) {
        match read_entry(store, bucket, n).await {
            Ok(Some(op_id)) => self.offer(Hint { bucket, n, op_id }),
            Ok(None) if closed => self.holes_skipped += 1,
            Ok(None) => holes.push(n),
            Err(_) => {
                self.read_failures += 1;
                self.backlog = true;
                holes.push(n);
            }
        }
    }

    /// Hands a hint out, unless its operation already was this tick (a rescheduled
    /// operation has several entries; one look at its record settles them all).
    fn offer(&mut self, hint: Hint) {
        if self.seen.insert(hint.op_id.clone()) {
            self.hints.push(hint);
        } else {
            self.duplicates += 1;
            self.settled.insert((hint.bucket, hint.n));
        }
    }

    /// The entries to look at, in due order, one per operation; its record decides if it is due.
    pub fn hints(&self) -> &[Hint] {
        &self.hints
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The hint is dealt with: the operation was handled, or its record says it is not
    /// due (rescheduled, finished) and so the hint is stale.
    pub fn settle(&mut self, hint: &Hint) {
        self.deferred.remove(&(hint.bucket, hint.n));
        self.settled.insert((hint.bucket, hint.n));
    }

    /// The hint's operation could not be handled now; file it again as due at `due_at_ms`
    /// (e.g. when its lease ends). Hints neither settled nor deferred are left unread.
    pub fn defer(&mut self, hint: &Hint, due_at_ms: u64) {
        self.settled.remove(&(hint.bucket, hint.n));
        self.deferred.insert((hint.bucket, hint.n), due_at_ms);
    }

    /// Files deferred hints again, leaves the others not settled unread, moves the cursor
    /// past what was read, deletes buckets past retention, and stores the cursor merged with
    /// any concurrent sweep's. Fails only when that last write does.
    pub async fn commit(
        mut self,
        store: &impl Store,
        clock: &dyn Clock,
    ) -> StoreResult<SweepReport> {
        let cfg = self.cfg;
        let now = self.now_ms;
        let (mut requeued, mut unread) = (0, 0);
        let mut progress = std::mem::take(&mut self.progress);
        for h in &self.hints {
            let key = (h.bucket, h.n);
            if self.settled.contains(&key) {
                continue;
            }
            if let Some(&due_at) = self.deferred.get(&key)
                && schedule(store, &cfg, clock, &h.op_id, due_at).await.is_ok()
            {
                requeued += 1;
                continue;
            }
            let p = progress
                .entry(h.bucket)
                .or_insert_with(|| self.start.progress(h.bucket));
            p.holes.push(h.n);
            p.holes.sort_unstable();
            p.holes.dedup();
            unread += 1;
        }

        let mut mine = self.start.clone();
        for (b, p) in &progress {
            if p.is_empty() {
                mine.open.remove(b);
            } else {
                mine.open.insert(*b, p.clone());
            }
        }
        while let Some(count) = self.counts.get(&mine.bucket) {
            let p = mine.progress(mine.bucket);
            if !(cfg.is_closed(mine.bucket, now) && p.read >= *count && p.holes.is_empty()) {
                break;
            }
            mine.open.remove(&mine.bucket);
            mine.bucket += 1;
        }

        let purge_to = mine
            .bucket
            .min(cfg.bucket_of(now.saturating_sub(cfg.retain_ms)));
        let mut purged_buckets = 0;
        while mine.purged < purge_to && purged_buckets < cfg.max_buckets {
            if purge_bucket(store, mine.purged).await.is_err() {
                break;
            }
            mine.purged += 1;
            purged_buckets += 1;
        }

        if mine != self.start || !self.stored {
            let stored = get_json::<Cursor>(store, keys::SWEEP_CURSOR)
                .await
                .unwrap_or(None);
            let merged = match stored {
                Some(s) => s.merge(&mine),
                None => mine.clone(),
            };
            set_json(store, keys::SWEEP_CURSOR, &merged).await?;
        }
        Ok(SweepReport {
            hints: self.hints.len(),
            duplicates: self.duplicates,
            requeued,
            unread,
            read_failures: self.read_failures,
            buckets_read: self.counts.len() as u64,
            holes_skipped: self.holes_skipped,
            cursor: mine.bucket,
            purged_buckets,
            backlog: self.backlog,
        })
    }
}

async fn purge_bucket(store: &impl Store, bucket: u64) -> StoreResult<()> {
    for n in 1..=bucket_count(store, bucket).await? {
        store.delete(&keys::due_entry(bucket, n)).await?;
    }
    store.delete(&keys::due_count(bucket)).await
}

#[cfg(test)]
mod tests;
