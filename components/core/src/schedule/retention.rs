//! How long things are kept: a pure policy answering "expired?" from timestamps.
//!
//! - Webhook de-duplication records: at least 24 h and at least the seller's retry horizon
//!   (AdCP allows senders to retry for 24 h to 7 days), so a late retry is still recognised.
//! - RFC 9421 nonces: ~360 s (the 300 s signature window plus a minute of clock skew), or
//!   the signature's own `expires` when it is later.
//! - Operations in a terminal status: 30 days after they finished.
//!
//! The due index ([`super::due`]) and leases (removed by the invariant auditor once their slots ended) have their own, shorter.

use super::{DAY_MS, HOUR_MS, SECOND_MS};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    /// The floor for webhook de-duplication records.
    pub dedup_min_ms: u64,
    /// How long sellers may retry a delivery.
    pub seller_retry_horizon_ms: u64,
    /// How long a seen nonce is remembered when its signature carries no later expiry.
    pub nonce_ms: u64,
    /// How long an operation is kept after reaching a terminal status.
    pub terminal_operation_ms: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            dedup_min_ms: 24 * HOUR_MS,
            seller_retry_horizon_ms: crate::model::operation::DELIVERY_RETENTION_MS,
            nonce_ms: 360 * SECOND_MS,
            terminal_operation_ms: 30 * DAY_MS,
        }
    }
}

/// `recorded_at + keep <= now`; a sum beyond `u64` is never reached.
fn past(recorded_at_ms: u64, keep_ms: u64, now_ms: u64) -> bool {
    recorded_at_ms
        .checked_add(keep_ms)
        .is_some_and(|end| end <= now_ms)
}

impl Retention {
    pub fn dedup_window_ms(&self) -> u64 {
        self.dedup_min_ms.max(self.seller_retry_horizon_ms)
    }

    pub fn dedup_expired(&self, recorded_at_ms: u64, now_ms: u64) -> bool {
        past(recorded_at_ms, self.dedup_window_ms(), now_ms)
    }

    /// A nonce first seen at `seen_at_ms` (signature expiring at `expires_at_ms`, if given)
    /// may be forgotten: both the cache window and the signature's validity are over.
    pub fn nonce_expired(&self, seen_at_ms: u64, expires_at_ms: Option<u64>, now_ms: u64) -> bool {
        past(seen_at_ms, self.nonce_ms, now_ms) && expires_at_ms.is_none_or(|e| e < now_ms)
    }

    pub fn terminal_expired(&self, finished_at_ms: u64, now_ms: u64) -> bool {
        past(finished_at_ms, self.terminal_operation_ms, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_window_is_the_longer_of_24h_and_the_seller_horizon() {
        let r = Retention::default();
        assert_eq!(r.dedup_window_ms(), 7 * DAY_MS);
        let short = Retention {
            seller_retry_horizon_ms: HOUR_MS,
            ..r
        };
        assert_eq!(short.dedup_window_ms(), DAY_MS);
        assert!(!short.dedup_expired(0, DAY_MS - 1));
        assert!(short.dedup_expired(0, DAY_MS));
        assert!(!r.dedup_expired(0, DAY_MS));
        assert!(r.dedup_expired(10, 7 * DAY_MS + 10));
        assert!(!r.dedup_expired(u64::MAX - 5, u64::MAX));
    }

    #[test]
    fn nonces_last_about_six_minutes_or_until_their_signature_expires() {
        let r = Retention::default();
        assert!(!r.nonce_expired(1_000, None, 360_999));
        assert!(r.nonce_expired(1_000, None, 361_000));
        assert!(!r.nonce_expired(1_000, Some(900_000), 800_000));
        assert!(r.nonce_expired(1_000, Some(900_000), 900_001));
    }

    #[test]
    fn terminal_operations_kept_thirty_days_configurable() {
        let r = Retention::default();
        assert!(!r.terminal_expired(0, 30 * DAY_MS - 1));
        assert!(r.terminal_expired(0, 30 * DAY_MS));
        let r: Retention = serde_json::from_str(r#"{"terminal_operation_ms": 1000}"#).unwrap();
        assert!(r.terminal_expired(0, 1_000));
        assert_eq!(r.nonce_ms, 360_000);
    }
}
