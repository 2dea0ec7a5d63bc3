//! Seller calls behind each seller's circuit breaker.

use super::error_mapping::code_recovery;
use super::port::{CallFailure, ListedTool, Recovery, SellerCalls};
use crate::foundation::clock::Clock;
use crate::foundation::store::Store;
use crate::records::seller::{self, Seller};
use crate::records::summary;
use crate::schedule::breaker::{Breaker, BreakerConfig, Decision, Permit, Snapshot};
use serde_json::Value;
use std::collections::HashMap;

/// [`SellerCalls`] behind the seller's circuit breaker: an open breaker defers the call
/// without sending it; no answer, or a transient error, counts as a failure.
pub struct Guarded<'a, S: Store, C: SellerCalls> {
    pub store: &'a S,
    pub clock: &'a dyn Clock,
    pub breaker: &'a BreakerConfig,
    pub inner: &'a C,
    /// Breaker readings kept while calls go well (`Default::default()` to start empty).
    pub seen: SeenBreakers,
}

/// The last breaker reading per seller, reused for [`BREAKER_READING_MS`] while it shows no
/// failures, so a sweep polling many tasks of a healthy seller reads it every few seconds, not per
/// call. Readings with failures are never kept (open or half-open is decided on the store), any
/// failure or probe here forgets the kept one, and a trip by another replica or an operator is seen
/// within [`BREAKER_READING_MS`] or at this instance's next failure.
#[derive(Debug, Default)]
pub struct SeenBreakers(std::cell::RefCell<HashMap<(String, String), (Snapshot, u64)>>);

/// How long a clean breaker reading is trusted.
pub const BREAKER_READING_MS: u64 = 3_000;

impl<S: Store, C: SellerCalls> SellerCalls for Guarded<'_, S, C> {
    async fn call(
        &self,
        seller: &Seller,
        tool: &str,
        arguments: Value,
    ) -> Result<Value, CallFailure> {
        let breaker = Breaker::new(self.breaker, &seller.tenant_id, &seller.seller_id);
        let (permit, read) = self.permit(seller, &breaker).await?;
        let result = self.inner.call(seller, tool, arguments).await;
        self.settle(seller, &breaker, &permit, read, &result).await;
        result
    }

    fn set_deadline(&self, until_ms: Option<u64>) {
        self.inner.set_deadline(until_ms);
    }

    async fn list_tools(&self, seller: &Seller) -> Result<Vec<ListedTool>, CallFailure> {
        let breaker = Breaker::new(self.breaker, &seller.tenant_id, &seller.seller_id);
        let (permit, read) = self.permit(seller, &breaker).await?;
        let result = self.inner.list_tools(seller).await;
        self.settle(seller, &breaker, &permit, read, &result).await;
        result
    }
}

fn seller_key(seller: &Seller) -> (String, String) {
    (seller.tenant_id.clone(), seller.seller_id.clone())
}

impl<'a, S: Store, C: SellerCalls> Guarded<'a, S, C> {
    pub fn new(
        store: &'a S,
        clock: &'a dyn Clock,
        breaker: &'a BreakerConfig,
        inner: &'a C,
    ) -> Self {
        Guarded {
            store,
            clock,
            breaker,
            inner,
            seen: SeenBreakers::default(),
        }
    }

    /// The breaker's permission for one call, decided on the kept reading if there is one,
    /// and whether the breaker was read from the store for it.
    async fn permit(
        &self,
        seller: &Seller,
        breaker: &Breaker<'_>,
    ) -> Result<(Permit, bool), CallFailure> {
        let now = self.clock.now_ms();
        // The breaker cannot be read: nothing is sent, and the operation is not failed over
        // our store (nor does the store's text reach its error); it is tried again shortly.
        let store_down = |_: crate::foundation::error::StoreError| CallFailure::Deferred {
            until_ms: now + 30_000,
        };
        let kept = self
            .seen
            .0
            .borrow()
            .get(&seller_key(seller))
            .filter(|(_, at)| now.saturating_sub(*at) < BREAKER_READING_MS)
            .map(|(s, _)| *s);
        let read = kept.is_none();
        let snap = match kept {
            Some(s) => s,
            None => {
                let s = breaker.read(self.store).await.map_err(store_down)?;
                let mut seen = self.seen.0.borrow_mut();
                if s.consecutive() == 0 {
                    seen.insert(seller_key(seller), (s, now));
                } else {
                    seen.remove(&seller_key(seller));
                }
                s
            }
        };
        match breaker
            .allow_on(self.store, &snap, now)
            .await
            .map_err(store_down)?
        {
            Decision::Allow(p) => Ok((p, read)),
            Decision::Deferred { until_ms } => Err(CallFailure::Deferred { until_ms }),
        }
    }

    /// Counts the call's error and feeds the breaker: no answer, or a transient error, is a
    /// failure; anything else shows the seller is up. A success is timestamped only when the
    /// breaker was `read` for the call, so healthy calls on a kept reading stay free and the
    /// time is at most [`BREAKER_READING_MS`] stale.
    async fn settle<V>(
        &self,
        seller: &Seller,
        breaker: &Breaker<'_>,
        permit: &Permit,
        read: bool,
        result: &Result<V, CallFailure>,
    ) {
        let unhealthy = match result {
            Err(CallFailure::Transport(_)) => true,
            Err(CallFailure::Seller(e)) => e.recovery == Recovery::Transient,
            _ => false,
        };
        let now = self.clock.now_ms();
        // Metric labels from a closed set: the spec's codes, `TRANSPORT` for no answer, and
        // `other` for whatever else a seller sends, so its input cannot grow the store.
        let code = match result {
            Err(CallFailure::Seller(e)) if code_recovery(&e.code).is_some() => {
                Some(e.code.as_str())
            }
            Err(CallFailure::Seller(_)) => Some("other"),
            Err(CallFailure::Transport(_)) => Some("TRANSPORT"),
            _ => None,
        };
        // Bookkeeping (counters, breaker) must not turn a seller's answer into an error.
        if let Some(code) = code {
            let _ = crate::records::metrics::seller_error(self.store, code).await;
            let _ = summary::seller_error(self.store, &seller.tenant_id, &seller.seller_id).await;
        } else if read && result.is_ok() {
            let _ = seller::called_ok(self.store, &seller.tenant_id, &seller.seller_id, now).await;
        }
        if unhealthy || !permit.is_clean() || permit.is_probe() {
            // The breaker's state moves (or may have): decide the next call on a new reading.
            self.seen.0.borrow_mut().remove(&seller_key(seller));
        }
        let _ = if unhealthy {
            breaker.record_failure(self.store, permit, now).await
        } else {
            breaker.record_success(self.store, permit, now).await
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::foundation::clock::FixedClock;
    use crate::foundation::store::MemoryStore;
    use crate::seller::port::SellerError;
    use crate::testing::FakeSeller;
    use futures::executor::block_on;

    #[test]
    fn error_codes_a_seller_invents_are_counted_as_other_and_add_no_keys() {
        let store = MemoryStore::new();
        let clock = FixedClock(1_000);
        let (config, calls) = (BreakerConfig::default(), FakeSeller::default());
        let guarded = Guarded::new(&store, &clock, &config, &calls);
        let seller = crate::testing::sample_seller();
        let refuse = |code: &str| {
            calls.answer(Err(CallFailure::Seller(SellerError {
                code: code.into(),
                message: "no".into(),
                recovery: Recovery::Correctable,
                retry_after_s: None,
                adcp: true,
            })))
        };
        refuse("BUDGET_TOO_LOW");
        for i in 0..50 {
            refuse(&format!("MADE_UP_{i}"));
        }
        for _ in 0..51 {
            let _ = block_on(guarded.call(&seller, "create_media_buy", Value::Null));
        }
        let metric_keys: Vec<String> = store
            .keys()
            .into_iter()
            .filter(|k| k.contains("seller_error"))
            .collect();
        assert!(
            metric_keys.iter().all(|k| !k.contains("MADE_UP")),
            "{metric_keys:?}"
        );
        let text = block_on(crate::records::metrics::render(&store, &config, 1_000)).unwrap();
        assert!(
            text.contains("adcp_seller_errors_total{code=\"other\"} 50"),
            "{text}"
        );
        assert!(
            text.contains("adcp_seller_errors_total{code=\"BUDGET_TOO_LOW\"} 1"),
            "{text}"
        );
    }
}
