//! One tick, under the sweep lease: the due hints worked one by one, then reconciliation
//! once per epoch and the auditor, and the tick's report.

use super::work::{Done, Leasing, work_on};
use super::{env::SweepEnv, lanes, memo::SellerMemo};
use crate::foundation::keys;
use crate::foundation::log;
use crate::foundation::store::{Store, get_decimal, get_json, set_decimal, set_json};
use crate::foundation::transport::{Bounded, Deadline, Transport};
use crate::lifecycle::next::LOOKUP_EVERY_MS;
use crate::model::operation::Operation;
use crate::records::{format, journal::JournalResult, notify, tick_report::TickReport};
use crate::schedule::due;
use crate::schedule::lease::{self, Claim};
use crate::schedule::poll::{PollState, schedule_at};
use crate::seller::{guard::Guarded, port::SellerCalls};

/// `scheduled_at_ms` is the trigger's own time (cron metadata). Seller calls go through breakers.
/// A tick that fails is logged (`sweep.tick_failed`): the cron trigger only counts it.
pub async fn tick<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    trigger: &str,
    scheduled_at_ms: u64,
) -> JournalResult<TickReport> {
    let ticked = run(env, trigger, scheduled_at_ms).await;
    if let Err(e) = &ticked {
        log::emit(
            env.log,
            &log::Event {
                ts_ms: env.clock.now_ms(),
                event: "sweep.tick_failed",
                outcome: Some(trigger),
                detail: Some(log::capped(&e.to_string())),
                ..Default::default()
            },
        );
    }
    ticked
}

async fn run<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    trigger: &str,
    scheduled_at_ms: u64,
) -> JournalResult<TickReport> {
    let guarded = Guarded::new(env.store, env.clock, &env.config.breaker, env.calls);
    let bounded = Bounded {
        inner: env.transport,
        clock: env.clock,
        deadline: Deadline::default(),
    };
    let env = &SweepEnv {
        store: env.store,
        clock: env.clock,
        entropy: env.entropy,
        log: env.log,
        sealing: env.sealing,
        calls: &guarded,
        transport: &bounded,
        config: env.config,
    };
    // Never work on a store whose records this release does not know.
    format::adopt(env.store).await?;
    let started = env.clock.now_ms();
    let mut report = TickReport {
        trigger: trigger.into(),
        scheduled_at_ms,
        started_at_ms: started,
        ..Default::default()
    };
    // One tick at a time does the work (the replicas' triggers fire together): the others
    // end here. The lease also stands in for per-operation leases on polls, which would
    // cost two store calls per due operation; dispatches still take the operation's lease
    // (the API's immediate dispatch takes it too).
    match lease::claim_sweep(env.store, &env.config.lease, started).await? {
        Claim::Held(lease) => {
            set_decimal(env.store, keys::SWEEP_HOLDER, started).await?;
            let worked = sweep(env, &bounded, Some(&lease), &mut report).await;
            // Failures of these two leave the holder to look alive, or the lease held,
            // until the next tick's fallback below or the slot's end.
            let _ = set_decimal(env.store, keys::SWEEP_HOLDER, 0).await;
            let _ = lease.release(env.store).await;
            worked?;
        }
        Claim::Busy { .. } if holder_alive(env, started).await? => {
            report.overlapped = true;
            report.finished_at_ms = env.clock.now_ms();
            return Ok(report);
        }
        // Held, but by no tick that is running: one that died, or a claim whose answer was
        // lost. Until its slot ends this tick works without the sweep lease, each operation
        // under its own, as concurrent ticks safely can.
        Claim::Busy { .. } => sweep(env, &bounded, None, &mut report).await?,
    }
    report.finished_at_ms = env.clock.now_ms();
    set_json(env.store, keys::SWEEP_LAST, &report).await?;
    Ok(report)
}

/// Whether the sweep lease's holder is a tick still running: it announced its start and
/// not its end, within the longest a tick's due work lasts.
async fn holder_alive<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    now: u64,
) -> JournalResult<bool> {
    let since: u64 = get_decimal(env.store, keys::SWEEP_HOLDER)
        .await?
        .unwrap_or(0);
    let longest = env.config.budget_ms() + env.config.call_deadline_ms();
    Ok(since != 0 && now.saturating_sub(since) < longest)
}

/// The tick's work: the due hints, then reconciliation and the auditor. With the sweep
/// `lease`, polls, deadlines and waits take no operation lease; without it, every step does.
async fn sweep<S: Store, C: SellerCalls, T: Transport, U: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    bounded: &Bounded<'_, U>,
    lease: Option<&lease::Lease>,
    report: &mut TickReport,
) -> JournalResult<()> {
    let started = report.started_at_ms;
    let memo = SellerMemo::default();
    let mut sweep = due::Sweep::begin(env.store, &env.config.due, started).await?;
    let hints = sweep.hints().to_vec();
    report.due = hints.len();
    // Due work stops while the sweep lease is still certainly held.
    let held_ms = lease.map_or(u64::MAX, |l| {
        (l.expires_at_ms)
            .saturating_sub(env.config.lease.margin_ms)
            .saturating_sub(started)
    });
    let budget = env.config.budget_ms().min(held_ms);
    let leased = if lease.is_some() {
        Leasing::UnderSweep
    } else {
        Leasing::EachStep
    };
    let mut lanes = lanes::split(env.store, &hints, started, budget).await;
    while let Some(turn) = lanes.next(env.clock.now_ms()) {
        // Every call of this hint's work ends by its lane's share of the budget.
        let now = env.clock.now_ms();
        let until = turn.until_ms.min(now + env.config.call_deadline_ms());
        env.calls.set_deadline(Some(until));
        bounded.deadline.set(Some(until));
        let hint = &turn.hint;
        let worked = due_hint(env, &memo, &hint.op_id, turn.snapshot, leased, now, report).await;
        lanes.spent(turn.lane, env.clock.now_ms().saturating_sub(now));
        match worked {
            Ok(Worked::Busy { retry_at_ms }) => {
                report.busy += 1;
                sweep.defer(hint, retry_at_ms);
            }
            Ok(Worked::Settled) => sweep.settle(hint),
            Err(e) => {
                log::emit(
                    env.log,
                    &log::Event {
                        ts_ms: env.clock.now_ms(),
                        event: "sweep.error",
                        operation_id: Some(&hint.op_id),
                        detail: Some(log::capped(&e.to_string())),
                        ..Default::default()
                    },
                );
                // A store that failed is tried again soon; a value that cannot be read reads
                // the same next time, so it waits for an operator's look (hourly).
                let wait = if e.is_retryable() {
                    30_000
                } else {
                    LOOKUP_EVERY_MS
                };
                sweep.defer(hint, now + wait);
            }
        }
    }
    // Hints not reached are left unread by the commit: the next tick reads them again.
    report.backlog = lanes.left() > 0;
    // Reconciliation and the auditor: each call bounded by its own limits only.
    env.calls.set_deadline(None);
    bounded.deadline.set(None);
    let index = sweep.commit(env.store, env.clock).await?;
    if let Some(r) =
        super::reconcile::run_if_due(env.cx(), env.entropy, env.config, env.calls).await?
    {
        report.reconciled_tasks = r.listed;
        report.adopted = r.adopted.len();
        report.repolled = r.repolled.len();
        report.purged = r.purged;
    }
    report.backlog |= index.backlog;
    let audited = super::audit::run(env, !report.backlog).await;
    report.audited = audited.checked;
    report.audit_repairs = audited.repaired;
    Ok(())
}

/// What became of one due hint.
enum Worked {
    /// Another sweep holds the operation.
    Busy { retry_at_ms: u64 },
    /// Acted on, or found rescheduled later.
    Settled,
}

/// One due hint. A store failure anywhere in it costs this hint (deferred by the caller),
/// never the rest of the tick.
async fn due_hint<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    memo: &SellerMemo,
    id: &str,
    snapshot: Option<Operation>,
    leased: Leasing,
    now: u64,
    report: &mut TickReport,
) -> JournalResult<Worked> {
    if id.starts_with("ntf_") {
        // The notification's lease: the webhook component's first attempt takes it too.
        let lease = match lease::claim_operation(env.store, &env.config.lease, id, now).await? {
            Claim::Held(l) => l,
            Claim::Busy { retry_at_ms } => return Ok(Worked::Busy { retry_at_ms }),
        };
        let worked = notification_hint(env, id, now, report).await;
        // A release that fails leaves a counter its slot's end makes harmless (and the
        // auditor removes): not worth failing the work that was done.
        let _ = lease.release(env.store).await;
        return worked;
    }
    let Some(state) = current_state(env, id, now).await? else {
        return Ok(Worked::Settled);
    };
    match work_on(env, memo, id, snapshot, state, leased, now).await? {
        Done::Acted(touched) => {
            report.touched += usize::from(touched);
            Ok(Worked::Settled)
        }
        Done::Busy { retry_at_ms } => Ok(Worked::Busy { retry_at_ms }),
    }
}

/// The hint's poll state; `None` when it was rescheduled later (a newer hint exists).
async fn current_state<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    id: &str,
    now: u64,
) -> JournalResult<Option<PollState>> {
    let state: Option<PollState> = get_json(env.store, &keys::poll_state(id)).await?;
    Ok(match state {
        Some(s) if s.next_at_ms > now => None,
        s => Some(s.unwrap_or_default()),
    })
}

async fn notification_hint<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    id: &str,
    now: u64,
    report: &mut TickReport,
) -> JournalResult<Worked> {
    if current_state(env, id, now).await?.is_none() {
        return Ok(Worked::Settled);
    }
    report.notifications += 1;
    report.touched += usize::from(retry_notification(env, id).await?);
    Ok(Worked::Settled)
}

async fn retry_notification<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    id: &str,
) -> JournalResult<bool> {
    let n = notify::attempt(env.store, env.clock, env.transport, env.sealing, id).await?;
    if let Some(at) = n.and_then(|n| n.next_attempt_at_ms) {
        let state = PollState {
            next_at_ms: at,
            ..Default::default()
        };
        schedule_at(env.store, env.clock, &env.config.due, id, state).await?;
    }
    Ok(true)
}
