//! Looking a media buy up at the seller by the `context.operation_id` its create carried,
//! and deciding an exhausted dispatch by what the look-up finds.

use super::{env::SweepEnv, memo::SellerMemo};
use crate::foundation::{store::Store, transport::Transport};
use crate::lifecycle::{effects, next::LOOKUP_EVERY_MS};
use crate::model::operation::{Observation, Operation, OperationError, Source};
use crate::model::payload::MEDIA_BUY_STATUSES;
use crate::model::status::TaskStatus;
use crate::model::task::OutcomeLookup;
use crate::records::journal::EntryKind;
use crate::records::journal::JournalResult;
use crate::records::seller;
use crate::schedule::poll::{PollState, schedule_at};
use crate::seller::port::SellerCalls;
use serde_json::{Value, json};

pub enum Lookup {
    Found(Box<Observation>),
    /// The seller answered and has no such buy.
    Absent,
    /// The seller lists more buys than one look-up reads, none of them ours so far.
    TooMany,
    /// No usable answer (seller down, breaker open): ask again later.
    Unknown,
    /// The task has no natural key to look it up by (only creates carry our context).
    Impossible,
}

/// Pages of `get_media_buys` per look-up (100 buys each); past them "too many", never "absent".
const LOOKUP_PAGES: usize = 20;

/// `get_media_buys` over the operation's account, every status, page by page; "absent" only
/// when the seller listed everything and none is ours.
pub async fn lookup_by_context<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    seller: &seller::Seller,
    op: &Operation,
) -> Lookup {
    if op.task.spec().lookup != OutcomeLookup::MediaBuyByContext {
        return Lookup::Impossible;
    }
    let mut args = json!({
        // Without a filter only `active` buys are listed; one just made is usually
        // `pending_creatives` or `pending_start`.
        "status_filter": MEDIA_BUY_STATUSES,
        "pagination": { "max_results": 100 },
        "context": { "operation_id": op.operation_id },
    });
    if let Some(account) = op.arguments.get("account") {
        args["account"] = account.clone();
    }
    for _ in 0..LOOKUP_PAGES {
        let Ok(payload) = env.calls.call(seller, "get_media_buys", args.clone()).await else {
            return Lookup::Unknown;
        };
        let Some(buys) = payload.get("media_buys").and_then(Value::as_array) else {
            return Lookup::Unknown;
        };
        if payload
            .get("errors")
            .and_then(Value::as_array)
            .is_some_and(|e| !e.is_empty())
        {
            // A partial answer (an account it could not read, say) proves no absence.
            return Lookup::Unknown;
        }
        let mine = buys.iter().find(|b| {
            b.pointer("/context/operation_id").and_then(Value::as_str)
                == Some(op.operation_id.as_str())
        });
        if let Some(buy) = mine {
            return Lookup::Found(Box::new(Observation {
                message: Some("found through get_media_buys by context.operation_id".into()),
                result: Some(buy.clone()),
                ..Observation::of(Source::Reconcile, TaskStatus::Completed)
            }));
        }
        let has_more = payload
            .pointer("/pagination/has_more")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if !has_more {
            return Lookup::Absent;
        }
        // More pages: follow the cursor; without one they cannot be reached.
        let Some(cursor) = payload
            .pointer("/pagination/cursor")
            .and_then(Value::as_str)
        else {
            return Lookup::Unknown;
        };
        args["pagination"]["cursor"] = json!(cursor);
    }
    Lookup::TooMany
}

/// How long to wait before asking again when a look-up got no answer.
pub const LOOKUP_RETRY_MS: u64 = 300_000;

/// The seller's `unknown`, recorded by us: nobody can tell what became of the request, and
/// reconciliation keeps looking.
pub fn unknown_outcome(why: &str) -> Observation {
    Observation {
        message: Some(why.into()),
        ..Observation::of(Source::Reconcile, TaskStatus::Unknown)
    }
}

pub async fn give_up_dispatch<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    memo: &SellerMemo,
    op: &Operation,
    error: OperationError,
) -> JournalResult<()> {
    let Some(seller) = memo.seller(env.store, &op.tenant_id, &op.seller_id).await? else {
        return Ok(());
    };
    let obs = match lookup_by_context(env, &seller, op).await {
        Lookup::Found(found) => *found,
        Lookup::Absent => Observation {
            message: Some(
                "dispatch attempts exhausted and the seller has no record of the request".into(),
            ),
            error: Some(error),
            ..Observation::of(Source::Reconcile, TaskStatus::Failed)
        },
        // Whatever reached the seller cannot be found: its outcome is unknown, not failed,
        // and reconciliation decides.
        Lookup::Impossible if op.outcome_unknown => unknown_outcome(
            "dispatch attempts exhausted after an unknown outcome; the task cannot be looked up",
        ),
        Lookup::Impossible => Observation {
            message: Some("dispatch attempts exhausted".into()),
            error: Some(error),
            ..Observation::of(Source::Reconcile, TaskStatus::Failed)
        },
        Lookup::Unknown => return look_again(env, op, LOOKUP_RETRY_MS).await,
        // Declare no unprovable failure; look hourly until the deadline makes it `timed_out`.
        Lookup::TooMany => return look_again(env, op, LOOKUP_EVERY_MS).await,
    };
    effects::record(
        env.cx(),
        "reconcile",
        &op.operation_id,
        None,
        EntryKind::Observed {
            observation: Box::new(obs),
        },
    )
    .await?;
    Ok(())
}

pub async fn look_again<S: Store, C: SellerCalls, T: Transport>(
    env: &SweepEnv<'_, S, C, T>,
    op: &Operation,
    wait_ms: u64,
) -> JournalResult<()> {
    let state = PollState {
        next_at_ms: env.clock.now_ms() + wait_ms,
        ..Default::default()
    };
    Ok(schedule_at(
        env.store,
        env.clock,
        &env.config.due,
        &op.operation_id,
        state,
    )
    .await?)
}
