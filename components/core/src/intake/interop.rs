//! After refusing an authenticated seller's delivery for a spec violation: the violation is
//! recorded on the seller (`records::interop`) and the operation is polled at the sweep's next
//! tick instead of waiting for the backup poll, since the refused delivery likely carried news.

use super::env::IntakeEnv;
use crate::foundation::keys;
use crate::foundation::log;
use crate::foundation::store::{Store, StoreResult, get_json};
use crate::foundation::transport::Transport;
use crate::records::interop::{self, Defect, Last};
use crate::schedule::poll::{PollState, schedule_at};

/// An operation already due this soon is not filed again (a seller retrying the refused
/// delivery costs the two diagnostic writes, not two more each time).
const SOON_MS: u64 = 30_000;

/// Records the violation and brings the operation's poll forward. A store failure here is
/// logged and leaves the refusal as it is: the backup poll still comes.
pub async fn violated<S: Store, T: Transport>(
    env: &IntakeEnv<'_, S, T>,
    tenant: &str,
    seller: &str,
    op_id: &str,
    open: bool,
    defect: Defect,
    code: &str,
) {
    let now = env.clock.now_ms();
    let outcome = async {
        let last = Last {
            at_ms: now,
            detail: code.to_string(),
            operation_id: Some(op_id.to_string()),
        };
        interop::record(env.store, tenant, seller, defect, &last).await?;
        if open {
            poll_soon(env, op_id, now).await?;
        }
        StoreResult::Ok(())
    }
    .await;
    log::emit(
        env.log,
        &log::Event {
            ts_ms: now,
            event: "webhook.interop_violation",
            operation_id: Some(op_id),
            tenant_id: Some(tenant),
            seller_id: Some(seller),
            outcome: Some(defect.as_str()),
            detail: outcome.err().map(|e| log::capped(&e.to_string())),
            ..Default::default()
        },
    );
}

async fn poll_soon<S: Store, T: Transport>(
    env: &IntakeEnv<'_, S, T>,
    op_id: &str,
    now: u64,
) -> StoreResult<()> {
    let state: PollState = get_json(env.store, &keys::poll_state(op_id))
        .await?
        .unwrap_or_default();
    if state.next_at_ms != 0 && state.next_at_ms <= now + SOON_MS {
        return Ok(());
    }
    let state = PollState {
        next_at_ms: now,
        retry_after_s: None,
        ..state
    };
    schedule_at(env.store, env.clock, &env.config.due, op_id, state).await
}
