//! Retry and poll schedules as data. A Spin handler cannot sleep for minutes, so a "retry" is
//! a persisted `next_*_at_ms` computed here by a pure function and picked up through the due index.
//!
//! - [`Backoff`]: exponential backoff with **full jitter** (Brooker, "Exponential Backoff And
//!   Jitter", AWS 2015; Step Functions `JitterStrategy: FULL`):
//!   `delay = random_between(0, min(cap, base * 2^attempt))`, raised to a floor so polling never
//!   busy-loops. `attempt` counts polls (or failures) since the status last moved, so a status
//!   change resets the schedule.
//! - [`PollPolicy`]: an operation's poll cadence, slower *backup* cadence when the seller was
//!   asked to push webhooks (AdCP: "always implement polling as backup … e.g. every 2
//!   minutes"), and the seller's `retry_after` honoured.
//! - `retry_after`: AdCP `error.retry_after` (seconds, 3.2 producers send integers 1–3600) and
//!   HTTP `Retry-After` (delay-seconds or IMF-fixdate) are rounded up and clamped to 1..=3600 s
//!   ([`clamp_retry_after_s`]); the next attempt is never earlier.
//! - [`Schedule`]: fixed schedules (`&'static [u64]` seconds), e.g. buyer notifications.
//! - [`Deadlines`]: how long each task type may stay unresolved, configurable with serde.

use super::{DAY_MS, MINUTE_MS, SECOND_MS, random_between};
use crate::foundation::clock::Entropy;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    pub base_ms: u64,
    pub cap_ms: u64,
    /// The smallest delay ever returned (full jitter alone can return 0).
    pub floor_ms: u64,
}

impl Backoff {
    /// Polling an operation the seller holds, without a webhook: 5 s doubling up to 15 min.
    pub const POLL: Backoff = Backoff {
        base_ms: 5 * SECOND_MS,
        cap_ms: 15 * MINUTE_MS,
        floor_ms: SECOND_MS,
    };
    /// The backup cadence when a webhook is registered: 2 min doubling up to 30 min, floor 1 min.
    pub const BACKUP_POLL: Backoff = Backoff {
        base_ms: 2 * MINUTE_MS,
        cap_ms: 30 * MINUTE_MS,
        floor_ms: MINUTE_MS,
    };
    /// Redispatch after a failed attempt: 30 s doubling up to 30 min, without jitter
    /// ([`Backoff::ceiling_ms`]): per-operation attempt counts keep resends from lining up.
    pub const REDISPATCH: Backoff = Backoff {
        base_ms: 30 * SECOND_MS,
        cap_ms: 30 * MINUTE_MS,
        floor_ms: 30 * SECOND_MS,
    };

    /// `min(cap, base * 2^attempt)`, saturating.
    pub fn ceiling_ms(&self, attempt: u32) -> u64 {
        let factor = 1u64.checked_shl(attempt).unwrap_or(u64::MAX);
        self.base_ms.saturating_mul(factor).min(self.cap_ms)
    }

    /// The delay before the next attempt, `attempt` being the number of attempts since the
    /// last progress (0 for the first retry). Always within `floor..=max(cap, floor)`.
    pub fn delay_ms(&self, attempt: u32, entropy: &dyn Entropy) -> u64 {
        random_between(entropy, 0, self.ceiling_ms(attempt)).max(self.floor_ms)
    }
}

/// The smallest and largest `retry_after` we honour, in seconds (AdCP: "round fractional
/// values up, clamp to \[1,3600\]").
pub const RETRY_AFTER_MIN_S: u64 = 1;
pub const RETRY_AFTER_MAX_S: u64 = 3_600;

/// Rounds a seller's `retry_after` up and clamps it to 1..=3600 s; NaN or negative is the minimum.
pub fn clamp_retry_after_s(seconds: f64) -> u64 {
    if seconds.is_nan() || seconds <= RETRY_AFTER_MIN_S as f64 {
        return RETRY_AFTER_MIN_S;
    }
    if seconds >= RETRY_AFTER_MAX_S as f64 {
        return RETRY_AFTER_MAX_S;
    }
    seconds.ceil() as u64
}

/// Parses an HTTP `Retry-After` value (RFC 9110 §10.2.3): delay-seconds or an IMF-fixdate
/// (`Sun, 06 Nov 1994 08:49:37 GMT`), into clamped seconds from `now_ms`. A date in the
/// past yields the minimum; anything else unparseable yields `None`.
pub fn parse_retry_after(value: &str, now_ms: u64) -> Option<u64> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = v.parse().unwrap_or(u64::MAX);
        return Some(secs.clamp(RETRY_AFTER_MIN_S, RETRY_AFTER_MAX_S));
    }
    let at_s = parse_imf_fixdate(v)?;
    let now_s = now_ms / SECOND_MS;
    Some(
        at_s.saturating_sub(now_s)
            .clamp(RETRY_AFTER_MIN_S, RETRY_AFTER_MAX_S),
    )
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` → Unix seconds.
fn parse_imf_fixdate(v: &str) -> Option<u64> {
    let (_, rest) = v.split_once(", ")?;
    let parts: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| m == month)? as i64 + 1;
    let day: i64 = day.parse().ok()?;
    let year: i64 = year.parse().ok()?;
    let hms: Vec<u64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, s] = hms.as_slice() else {
        return None;
    };
    if !(1..=31).contains(&day) || *h > 23 || *m > 59 || *s > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + (*h * 3_600 + *m * 60 + *s) as i64;
    u64::try_from(secs).ok()
}

/// Our delay, but never earlier than the (clamped) hint; when the hint dominates, up to 10 % is
/// added so operations told the same `retry_after` do not return in one burst.
pub fn honour_retry_after(
    own_delay_ms: u64,
    retry_after_s: Option<u64>,
    entropy: &dyn Entropy,
) -> u64 {
    match retry_after_s {
        None => own_delay_ms,
        Some(s) => {
            let hint_ms = s.clamp(RETRY_AFTER_MIN_S, RETRY_AFTER_MAX_S) * SECOND_MS;
            if own_delay_ms >= hint_ms {
                own_delay_ms
            } else {
                hint_ms + random_between(entropy, 0, hint_ms / 10)
            }
        }
    }
}

/// What the poll cadence of one operation depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PollInput {
    /// Polls since the operation's status last moved (0 right after a change).
    pub attempts_since_change: u32,
    /// The seller was asked to push status webhooks: polling is only the backup.
    pub webhook_registered: bool,
    /// The seller's `retry_after`, in seconds, if its last answer carried one.
    pub retry_after_s: Option<u64>,
}

/// The poll cadence of operations the seller holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PollPolicy {
    /// Without a webhook.
    pub poll: Backoff,
    /// With a webhook: the first backup poll, this long after the status last moved.
    pub webhook_first_ms: u64,
    /// With a webhook: the cadence after the first backup poll.
    pub webhook: Backoff,
}

impl Default for PollPolicy {
    fn default() -> Self {
        PollPolicy {
            poll: Backoff::POLL,
            webhook_first_ms: 2 * MINUTE_MS,
            webhook: Backoff::BACKUP_POLL,
        }
    }
}

impl PollPolicy {
    pub fn delay_ms(&self, input: PollInput, entropy: &dyn Entropy) -> u64 {
        let own = match (input.webhook_registered, input.attempts_since_change) {
            (false, n) => self.poll.delay_ms(n, entropy),
            (true, 0) => self.webhook_first_ms,
            (true, n) => self.webhook.delay_ms(n - 1, entropy),
        };
        honour_retry_after(own, input.retry_after_s, entropy)
    }

    pub fn next_poll_at_ms(&self, now_ms: u64, input: PollInput, entropy: &dyn Entropy) -> u64 {
        now_ms.saturating_add(self.delay_ms(input, entropy))
    }
}

/// A fixed retry schedule: delays in seconds after the 1st, 2nd, … failure; then give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule(pub &'static [u64]);

impl Schedule {
    /// Buyer notifications: 1 min, 5 min, 30 min, 2 h, 5 h, 10 h, then give up.
    pub const BUYER_NOTIFICATIONS: Schedule = Schedule(&[60, 300, 1_800, 7_200, 18_000, 36_000]);

    /// The delay after `failed_attempts` failures (1 = the first), or `None` when exhausted
    /// (or nothing failed yet).
    pub fn delay_ms(&self, failed_attempts: u32) -> Option<u64> {
        let i = (failed_attempts as usize).checked_sub(1)?;
        self.0.get(i).map(|s| s * SECOND_MS)
    }

    pub fn next_attempt_at_ms(&self, failed_attempts: u32, failed_at_ms: u64) -> Option<u64> {
        self.delay_ms(failed_attempts)
            .map(|d| failed_at_ms.saturating_add(d))
    }
}

/// How long each task type may stay unresolved before we declare it `timed_out`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Deadlines {
    /// For task types without their own entry.
    pub default_ms: u64,
    /// By AdCP task name.
    pub tasks: BTreeMap<String, u64>,
}

impl Default for Deadlines {
    /// create_media_buy 24 h, update_media_buy 12 h, sync_creatives 48 h (AdCP's orchestrator
    /// guide, [`crate::model::task::default_deadline_ms`]); anything else 24 h.
    fn default() -> Self {
        // Extended, not collected: collecting into a B-tree sorts first, a sort routine in
        // the `.wasm` per element type.
        let mut tasks = BTreeMap::new();
        tasks.extend(crate::model::task::TaskKind::ALL.iter().map(|t| {
            (
                t.name().to_string(),
                crate::model::task::default_deadline_ms(*t),
            )
        }));
        Deadlines {
            default_ms: DAY_MS,
            tasks,
        }
    }
}

impl Deadlines {
    pub fn for_task_ms(&self, task: &str) -> u64 {
        self.tasks.get(task).copied().unwrap_or(self.default_ms)
    }

    pub fn deadline_at_ms(&self, task: &str, created_at_ms: u64) -> u64 {
        created_at_ms.saturating_add(self.for_task_ms(task))
    }
}

#[cfg(test)]
mod tests;
