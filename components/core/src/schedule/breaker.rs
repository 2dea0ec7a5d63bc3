//! A per-seller circuit breaker kept in the store (Fowler/Nygard: closed → open → half-open),
//! so the sweep and the dispatcher stop hammering a seller that is down.
//!
//! # The machine
//!
//! [`TRANSITIONS`] lists one [`Rule`] per (state, event) pair; [`transition`] is that lookup
//! plus the rule's arithmetic, and a test walks every edge:
//! - **closed**: calls go through; the `failure_threshold`-th consecutive failure trips the
//!   breaker; a success clears the count.
//! - **open** for `reset_timeout_ms` after the trip: calls are deferred to the end of it.
//! - **half-open** afterwards: one probe per `probe_window_ms`; its success closes the breaker,
//!   its failure reopens it (timer restarted). Late answers of calls started before the trip
//!   change nothing while open or half-open.
//!
//! # Persistence without lost-update hazards
//!
//! Sweeps and handlers update one breaker concurrently and the store has no usable
//! compare-and-swap, so the state is never read-modified-written as a whole:
//! - `breaker:{t}:{s}:failures` counts every failure ever, with `increment` (atomic);
//! - `breaker:{t}:{s}:mark` (plain) is the failure count at the last closing success, so
//!   consecutive failures are `failures - mark`;
//! - `breaker:{t}:{s}:opened` (plain) is the last trip time, written by the one recorder whose
//!   (unique) increment crossed the threshold, or by a failed probe;
//! - half-open probes are claimed with `increment` on `…:probe:{half_open_since}:{window}`:
//!   the first claimant probes, so a probe that never reports (crash) blocks one window only.
//!
//! Every race is harmless: a lost `opened` write reads as half-open (one early probe, whose
//! failure rewrites it); a lost or stale `mark` trips the breaker a few failures early or
//! late; a success racing a failure may absorb it. None can wedge the breaker: the next probe
//! window always comes. Unlike per-window failure keys, one monotonic counter plus a mark gives
//! *consecutive* failures and leaves no garbage.
//!
//! Costs: [`Breaker::allow`] is 2 store calls while closed, 3–4 when open or half-open; a
//! success of a clean call is free; a failure is 2–3 calls.

use crate::foundation::keys;
use crate::foundation::store::{Store, StoreResult};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    pub reset_timeout_ms: u64,
    /// One probe is let through per window while half-open.
    pub probe_window_ms: u64,
}

impl Default for BreakerConfig {
    /// 5 failures, 60 s: the defaults of `@adcp/sdk` and the Python `adcp` client.
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            reset_timeout_ms: 60_000,
            probe_window_ms: 60_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed {
        failures: u64,
    },
    Open {
        opened_at_ms: u64,
        until_ms: u64,
    },
    /// Probing since `since_ms` (0 when the trip time is unknown: its write was lost).
    HalfOpen {
        since_ms: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateClass {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn class(&self) -> StateClass {
        match self {
            State::Closed { .. } => StateClass::Closed,
            State::Open { .. } => StateClass::Open,
            State::HalfOpen { .. } => StateClass::HalfOpen,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A call is about to be made.
    Request,
    /// An ordinary call's answer.
    Success,
    Failure,
    /// The half-open probe's answer.
    ProbeSuccess,
    ProbeFailure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Let the call through.
    Allow,
    /// Let it through if it wins this window's probe claim; defer it otherwise.
    Probe,
    /// Refuse until the open period ends.
    Defer,
    /// Count the failure; trip on reaching the threshold.
    Count,
    /// Clear the failure count (closed stays closed).
    Reset,
    /// Close: clear the failures and the trip.
    Close,
    /// Trip again, restarting the open period.
    Reopen,
    /// Change nothing (late answers of calls started before the trip).
    Ignore,
}

/// The whole machine. Every (state, event) pair appears exactly once; a test enforces it.
pub const TRANSITIONS: &[(StateClass, Event, Rule)] = {
    use Event::*;
    use Rule::*;
    use StateClass::{Closed, HalfOpen, Open};
    &[
        (Closed, Request, Allow),
        (Closed, Success, Reset),
        (Closed, Failure, Count),
        (Closed, ProbeSuccess, Reset),
        (Closed, ProbeFailure, Count),
        (Open, Request, Defer),
        (Open, Success, Ignore),
        (Open, Failure, Ignore),
        (Open, ProbeSuccess, Close),
        (Open, ProbeFailure, Reopen),
        (HalfOpen, Request, Probe),
        (HalfOpen, Success, Ignore),
        (HalfOpen, Failure, Ignore),
        (HalfOpen, ProbeSuccess, Close),
        (HalfOpen, ProbeFailure, Reopen),
    ]
};

pub fn rule(class: StateClass, event: Event) -> Rule {
    TRANSITIONS
        .iter()
        .find(|(c, e, _)| *c == class && *e == event)
        .map(|(_, _, r)| *r)
        .expect("TRANSITIONS covers every pair")
}

/// What the store must do after a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    None,
    /// The call may proceed.
    Allow,
    /// The call may proceed if it wins the probe claim for this window.
    ClaimProbe {
        window_base_ms: u64,
        window: u64,
    },
    /// The call must wait.
    Defer {
        until_ms: u64,
    },
    /// Set the mark to the failure count and forget the trip time.
    ClearFailures,
    /// Record `now` as the trip time.
    Trip,
}

/// The machine as a pure function: the next state and what to persist.
pub fn transition(cfg: &BreakerConfig, state: State, event: Event, now_ms: u64) -> (State, Effect) {
    let open = |now: u64| State::Open {
        opened_at_ms: now,
        until_ms: now.saturating_add(cfg.reset_timeout_ms),
    };
    match rule(state.class(), event) {
        Rule::Allow => (state, Effect::Allow),
        Rule::Probe => {
            let State::HalfOpen { since_ms } = state else {
                unreachable!("Probe is the half-open rule")
            };
            let w = cfg.probe_window_ms.max(1);
            let window = now_ms.saturating_sub(since_ms) / w;
            (
                state,
                Effect::ClaimProbe {
                    window_base_ms: since_ms,
                    window,
                },
            )
        }
        Rule::Defer => {
            let State::Open { until_ms, .. } = state else {
                unreachable!("Defer is the open rule")
            };
            (state, Effect::Defer { until_ms })
        }
        Rule::Count => {
            let State::Closed { failures } = state else {
                unreachable!("Count is the closed rule")
            };
            if failures + 1 >= u64::from(cfg.failure_threshold) {
                (open(now_ms), Effect::Trip)
            } else {
                (
                    State::Closed {
                        failures: failures + 1,
                    },
                    Effect::None,
                )
            }
        }
        Rule::Reset | Rule::Close => {
            let effect = match state {
                State::Closed { failures: 0 } => Effect::None,
                _ => Effect::ClearFailures,
            };
            (State::Closed { failures: 0 }, effect)
        }
        Rule::Reopen => (open(now_ms), Effect::Trip),
        Rule::Ignore => (state, Effect::None),
    }
}

/// What the store holds for one seller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Failures ever recorded.
    pub failures: i64,
    /// `failures` at the last closing success.
    pub mark: i64,
    /// The last trip, if known.
    pub opened_at_ms: Option<u64>,
}

impl Snapshot {
    pub fn consecutive(&self) -> u64 {
        u64::try_from(self.failures.saturating_sub(self.mark)).unwrap_or(0)
    }
}

/// The state a snapshot means at `now_ms`.
pub fn derive(cfg: &BreakerConfig, snap: &Snapshot, now_ms: u64) -> State {
    let failures = snap.consecutive();
    if failures < u64::from(cfg.failure_threshold) {
        return State::Closed { failures };
    }
    match snap.opened_at_ms {
        // Tripped, but the trip time was lost or is not written yet: probe.
        None => State::HalfOpen { since_ms: 0 },
        Some(opened) => {
            let until = opened.saturating_add(cfg.reset_timeout_ms);
            if now_ms < until {
                State::Open {
                    opened_at_ms: opened,
                    until_ms: until,
                }
            } else {
                State::HalfOpen { since_ms: until }
            }
        }
    }
}

/// The breaker's answer to "may I call the seller now?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(Permit),
    Deferred { until_ms: u64 },
}

/// Permission for one call; hand it back with the call's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permit {
    /// The probe claim this call holds, when it is the half-open probe.
    probe_key: Option<String>,
    /// No failures were counted when the call was allowed: a success needs no write.
    clean: bool,
}

impl Permit {
    pub fn is_probe(&self) -> bool {
        self.probe_key.is_some()
    }

    pub fn is_clean(&self) -> bool {
        self.clean
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerView {
    pub state: StateClass,
    pub consecutive_failures: u64,
    pub failure_threshold: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_at_ms: Option<u64>,
    /// When calls are let through again (open), or the next probe window (half-open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
pub struct Breaker<'a> {
    pub cfg: &'a BreakerConfig,
    pub tenant: &'a str,
    pub seller: &'a str,
}

fn parse_decimal<T: std::str::FromStr>(v: Option<Vec<u8>>) -> Option<T> {
    std::str::from_utf8(&v?).ok()?.trim().parse().ok()
}

impl<'a> Breaker<'a> {
    pub fn new(cfg: &'a BreakerConfig, tenant: &'a str, seller: &'a str) -> Self {
        Breaker {
            cfg,
            tenant,
            seller,
        }
    }

    /// Reads the snapshot; the trip time only when the count says it matters.
    async fn snapshot(&self, store: &impl Store, failures: Option<i64>) -> StoreResult<Snapshot> {
        let failures = match failures {
            Some(f) => f,
            // A read, not `increment(_, 0)`: a creation's seller call reads the breaker
            // before it is sent, and that must not cost a write.
            None => {
                crate::foundation::store::get_counter(
                    store,
                    &keys::breaker_failures(self.tenant, self.seller),
                )
                .await?
            }
        };
        let mark = parse_decimal(
            store
                .get(&keys::breaker_mark(self.tenant, self.seller))
                .await?,
        )
        .unwrap_or(0);
        let mut snap = Snapshot {
            failures,
            mark,
            opened_at_ms: None,
        };
        if snap.consecutive() >= u64::from(self.cfg.failure_threshold) {
            snap.opened_at_ms = parse_decimal(
                store
                    .get(&keys::breaker_opened(self.tenant, self.seller))
                    .await?,
            );
        }
        Ok(snap)
    }

    /// Persists an effect. `seen` is the snapshot the decision was made on, if any: its
    /// failure count becomes the mark (failures recorded since then count as consecutive,
    /// which is what they are), and the trip time is deleted only if it was tripped.
    async fn apply(
        &self,
        store: &impl Store,
        effect: Effect,
        now_ms: u64,
        seen: Option<&Snapshot>,
    ) -> StoreResult<()> {
        match effect {
            Effect::ClearFailures => {
                let f = match seen {
                    Some(s) => s.failures,
                    None => {
                        store
                            .increment(&keys::breaker_failures(self.tenant, self.seller), 0)
                            .await?
                    }
                };
                store
                    .set(
                        &keys::breaker_mark(self.tenant, self.seller),
                        f.to_string().as_bytes(),
                    )
                    .await?;
                let tripped =
                    seen.is_none_or(|s| s.consecutive() >= u64::from(self.cfg.failure_threshold));
                if tripped {
                    store
                        .delete(&keys::breaker_opened(self.tenant, self.seller))
                        .await?;
                }
                Ok(())
            }
            Effect::Trip => {
                store
                    .set(
                        &keys::breaker_opened(self.tenant, self.seller),
                        now_ms.to_string().as_bytes(),
                    )
                    .await
            }
            Effect::None | Effect::Allow | Effect::ClaimProbe { .. } | Effect::Defer { .. } => {
                Ok(())
            }
        }
    }

    pub async fn allow(&self, store: &impl Store, now_ms: u64) -> StoreResult<Decision> {
        let snap = self.read(store).await?;
        self.allow_on(store, &snap, now_ms).await
    }

    /// The breaker as stored, for a caller that decides several calls on one reading
    /// ([`Breaker::allow_on`]).
    pub async fn read(&self, store: &impl Store) -> StoreResult<Snapshot> {
        self.snapshot(store, None).await
    }

    /// [`Breaker::allow`] on a snapshot the caller holds. A probe is still claimed in the
    /// store, so at most one caller probes a window whatever snapshot it decided on.
    pub async fn allow_on(
        &self,
        store: &impl Store,
        snap: &Snapshot,
        now_ms: u64,
    ) -> StoreResult<Decision> {
        let state = derive(self.cfg, snap, now_ms);
        match transition(self.cfg, state, Event::Request, now_ms).1 {
            Effect::Allow => Ok(Decision::Allow(Permit {
                probe_key: None,
                clean: snap.consecutive() == 0,
            })),
            Effect::Defer { until_ms } => Ok(Decision::Deferred { until_ms }),
            Effect::ClaimProbe {
                window_base_ms,
                window,
            } => {
                let key = keys::breaker_probe(self.tenant, self.seller, window_base_ms, window);
                if store.increment(&key, 1).await? == 1 {
                    Ok(Decision::Allow(Permit {
                        probe_key: Some(key),
                        clean: false,
                    }))
                } else {
                    let w = self.cfg.probe_window_ms.max(1);
                    Ok(Decision::Deferred {
                        until_ms: window_base_ms.saturating_add((window + 1).saturating_mul(w)),
                    })
                }
            }
            other => unreachable!("a request never yields {other:?}"),
        }
    }

    /// The permitted call succeeded. Free for a call allowed while there were no failures.
    pub async fn record_success(
        &self,
        store: &impl Store,
        permit: &Permit,
        now_ms: u64,
    ) -> StoreResult<State> {
        if permit.clean && !permit.is_probe() {
            return Ok(State::Closed { failures: 0 });
        }
        let event = if permit.is_probe() {
            Event::ProbeSuccess
        } else {
            Event::Success
        };
        let snap = self.snapshot(store, None).await?;
        let (next, effect) = transition(self.cfg, derive(self.cfg, &snap, now_ms), event, now_ms);
        self.apply(store, effect, now_ms, Some(&snap)).await?;
        if let Some(key) = &permit.probe_key {
            store.delete(key).await?;
        }
        Ok(next)
    }

    /// The permitted call failed in a way that counts against the seller (no answer, 5xx,
    /// 429; not a 4xx about our request).
    pub async fn record_failure(
        &self,
        store: &impl Store,
        permit: &Permit,
        now_ms: u64,
    ) -> StoreResult<State> {
        let event = if permit.is_probe() {
            Event::ProbeFailure
        } else {
            Event::Failure
        };
        let k = store
            .increment(&keys::breaker_failures(self.tenant, self.seller), 1)
            .await?;
        // The state just before this failure: its increment is unique, so exactly one
        // recorder sees the count cross the threshold.
        let before = self.snapshot(store, Some(k - 1)).await?;
        let (next, effect) = transition(self.cfg, derive(self.cfg, &before, now_ms), event, now_ms);
        self.apply(store, effect, now_ms, Some(&before)).await?;
        if let Some(key) = &permit.probe_key {
            store.delete(key).await?;
        }
        Ok(next)
    }

    pub async fn state(&self, store: &impl Store, now_ms: u64) -> StoreResult<BreakerView> {
        let snap = self.snapshot(store, None).await?;
        let state = derive(self.cfg, &snap, now_ms);
        let (opened_at_ms, retry_at_ms) = match state {
            State::Closed { .. } => (None, None),
            State::Open {
                opened_at_ms,
                until_ms,
            } => (Some(opened_at_ms), Some(until_ms)),
            State::HalfOpen { since_ms } => {
                let w = self.cfg.probe_window_ms.max(1);
                let next = since_ms + (now_ms.saturating_sub(since_ms) / w + 1) * w;
                (snap.opened_at_ms, Some(next))
            }
        };
        Ok(BreakerView {
            state: state.class(),
            consecutive_failures: snap.consecutive(),
            failure_threshold: self.cfg.failure_threshold,
            opened_at_ms,
            retry_at_ms,
        })
    }

    /// Manual reset (an operator's "the seller is back").
    pub async fn reset(&self, store: &impl Store) -> StoreResult<()> {
        self.apply(store, Effect::ClearFailures, 0, None).await
    }

    /// Manual trip (an operator's "stop calling this seller" for one reset period).
    pub async fn trip(&self, store: &impl Store, now_ms: u64) -> StoreResult<()> {
        let f = store
            .increment(&keys::breaker_failures(self.tenant, self.seller), 0)
            .await?;
        let mark = f - i64::from(self.cfg.failure_threshold);
        store
            .set(
                &keys::breaker_mark(self.tenant, self.seller),
                mark.to_string().as_bytes(),
            )
            .await?;
        self.apply(store, Effect::Trip, now_ms, None).await
    }
}

#[cfg(test)]
mod tests;
