//! Whether a redispatch after an unknown outcome may resend under the same key.
//!
//! The seller replays a request by its `idempotency_key` only within its declared replay
//! window (`replay_ttl_seconds`, from when it first saw the key); after that a resend is a new
//! request, a second media buy. So once the window is about to close (less [`margin_ms`]), or
//! the seller answered `IDEMPOTENCY_EXPIRED`, nothing is resent under that key: the request is
//! looked up by its natural key (a create's `context.operation_id`). Found: its outcome is
//! recorded. Provably absent: the key is renewed (recorded, so the history shows the path)
//! and the request sent anew. No answer: asked again later. A task without a natural key is
//! recorded `unknown` for reconciliation, never sent under a fresh key. Inside the window,
//! a look-up is made first only when the last attempt was refused by something other than
//! the seller's AdCP answer; then a buy found settles it and anything else resends the key.

use super::env::SweepEnv;
use super::lookup::{LOOKUP_RETRY_MS, Lookup, look_again, lookup_by_context, unknown_outcome};
use super::memo::SellerMemo;
use crate::foundation::clock::uuid_v4;
use crate::foundation::{store::Store, transport::Transport};
use crate::lifecycle::{dispatch::IDEMPOTENCY_EXPIRED, effects};
use crate::model::operation::{LocalChange, Observation, Operation};
use crate::records::capabilities::REPLAY_TTL_MIN_S;
use crate::records::journal::{EntryKind, JournalResult};
use crate::records::seller::Seller;
use crate::seller::port::SellerCalls;

/// What the redispatch may do.
#[derive(Debug, PartialEq, Eq)]
pub enum Resend {
    /// Dispatch as stored (the same key, or a renewed one).
    Send,
    /// A look-up decided it (recorded): nothing is sent; file it for what comes next.
    Decided,
    /// Nothing is sent now; it is filed for the next look-up.
    Filed,
}

/// How long before the window's end resends stop: a tenth of the window, at least 5 min
/// (clock skew, and the time a send takes to reach the seller).
pub fn margin_ms(window_ms: u64) -> u64 {
    (window_ms / 10).max(300_000)
}

/// The window closes for resends at this time, if a send may have reached the seller.
pub fn resends_end_ms(op: &Operation, seller: &Seller) -> Option<u64> {
    let window_s = seller
        .capabilities
        .as_ref()
        .and_then(|c| c.replay_ttl_seconds)
        .unwrap_or(REPLAY_TTL_MIN_S);
    let window_ms = window_s.saturating_mul(1000);
    let sent = op.key_sent_at_ms?;
    Some((sent + window_ms).saturating_sub(margin_ms(window_ms)))
}

pub async fn before_resend<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    memo: &SellerMemo,
    op: &Operation,
    now: u64,
) -> JournalResult<Resend> {
    if !op.outcome_unknown {
        return Ok(Resend::Send);
    }
    // A removed seller is dispatch's to handle.
    let Some(seller) = memo.seller(env.store, &op.tenant_id, &op.seller_id).await? else {
        return Ok(Resend::Send);
    };
    let expired = op
        .error
        .as_ref()
        .is_some_and(|e| e.code == IDEMPOTENCY_EXPIRED);
    let closed = expired || resends_end_ms(op, &seller).is_some_and(|end| now >= end);
    if !closed && !op.look_up_first {
        return Ok(Resend::Send);
    }
    match lookup_by_context(env, &seller, op).await {
        Lookup::Found(found) => {
            record(env, op, EntryKind::Observed { observation: found }).await?;
            Ok(Resend::Decided)
        }
        Lookup::Absent if closed => {
            let change = LocalChange::KeyRenewed {
                idempotency_key: uuid_v4(env.entropy),
                why: "the seller's replay window for the key closed, and get_media_buys has \
                      no buy for this operation"
                    .into(),
            };
            record(env, op, EntryKind::Local { change, by: None }).await?;
            Ok(Resend::Send)
        }
        Lookup::Impossible if closed => {
            let obs = unknown_outcome(
                "the seller's replay window for the request closed and the task cannot be \
                 looked up; not resent",
            );
            record(env, op, observed(obs)).await?;
            Ok(Resend::Decided)
        }
        Lookup::Unknown | Lookup::TooMany if closed => {
            look_again(env, op, LOOKUP_RETRY_MS).await?;
            Ok(Resend::Filed)
        }
        // Inside the window nothing was found to settle it: the same key is still safe.
        _ => Ok(Resend::Send),
    }
}

fn observed(obs: Observation) -> EntryKind {
    EntryKind::Observed {
        observation: Box::new(obs),
    }
}

async fn record<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    op: &Operation,
    kind: EntryKind,
) -> JournalResult<()> {
    effects::record(env.cx(), "redispatch", &op.operation_id, None, kind).await?;
    Ok(())
}
