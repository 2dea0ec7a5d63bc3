//! Subscribing a registration to its seller's `capabilities.changed` notices (AdCP 3.2), at
//! registration and on refresh, when the seller offers them with the task we speak and signs
//! with RFC 9421 (the seller's proof-of-control challenge and every notice are verified with
//! its published keys). The outcome is on the seller record; it never fails the registration.

use super::env::Env;
use crate::foundation::clock::uuid_v4;
use crate::foundation::log;
use crate::foundation::store::{Store, StoreResult};
use crate::foundation::transport::Transport;
use crate::records::capability_subscription::{
    CapabilitySubscription, REGISTRATION_TASK, SubscriptionState, path,
};
use crate::records::seller::{self, Seller};
use crate::seller::capability_subscription::{Subscribed, subscribe};
use crate::seller::port::SellerCalls;

pub async fn ensure<S: Store, C: SellerCalls, T: Transport>(
    env: &Env<'_, S, C, T>,
    record: &mut Seller,
) -> StoreResult<()> {
    let offered = record.capabilities.as_ref().is_some_and(|c| {
        c.webhook_signing && c.change_notifications.as_deref() == Some(REGISTRATION_TASK)
    });
    if !offered {
        return Ok(());
    }
    let url = format!(
        "{}{}",
        env.config.public_base_url.trim_end_matches('/'),
        path(&record.tenant_id, &record.seller_id)
    );
    let now = env.clock.now_ms();
    let mut sub = match record.capability_subscription.clone() {
        Some(s) if s.url == url && s.state == SubscriptionState::Active => return Ok(()),
        // Asked before for this URL: the same key, so the seller sees one request.
        Some(s) if s.url == url => s,
        _ => CapabilitySubscription {
            url: url.clone(),
            idempotency_key: uuid_v4(env.entropy),
            state: SubscriptionState::Requested,
            error: None,
            updated_at_ms: now,
            last_notice: None,
        },
    };
    sub.state = SubscriptionState::Requested;
    sub.updated_at_ms = now;
    // Stored before the call: the challenge the seller sends during it finds the request.
    let Some(requested) = amend(env, record, sub.clone()).await? else {
        return Ok(());
    };
    *record = requested;
    let (state, error) = match subscribe(env.calls, record, &url, &sub.idempotency_key).await {
        Ok(Subscribed::Active) => (SubscriptionState::Active, None),
        Ok(Subscribed::Pending) => (SubscriptionState::Requested, None),
        Ok(Subscribed::Refused(code)) => (SubscriptionState::Refused, Some(code)),
        Err(e) => {
            log::emit(
                env.log,
                &log::Event {
                    ts_ms: now,
                    event: "seller.capability_subscription_unavailable",
                    tenant_id: Some(&record.tenant_id),
                    seller_id: Some(&record.seller_id),
                    detail: Some(log::capped(&format!("{e:?}"))),
                    ..Default::default()
                },
            );
            (
                SubscriptionState::Unavailable,
                Some("seller_unavailable".into()),
            )
        }
    };
    sub.state = state;
    sub.error = error;
    sub.updated_at_ms = env.clock.now_ms();
    if let Some(done) = amend(env, record, sub).await? {
        *record = done;
    }
    Ok(())
}

/// Sets the subscription on the record as stored now, keeping a notice recorded meanwhile.
async fn amend<S: Store, C: SellerCalls, T: Transport>(
    env: &Env<'_, S, C, T>,
    record: &Seller,
    mut sub: CapabilitySubscription,
) -> StoreResult<Option<Seller>> {
    seller::amend(env.store, record, |s| {
        if let Some(current) = &s.capability_subscription {
            sub.last_notice = current.last_notice.clone().or(sub.last_notice.take());
        }
        s.capability_subscription = Some(sub);
    })
    .await
}
