//! Whether a webhook delivery was already folded into its operation: the marks in the record,
//! then, once some moved out of it, the mark under its own key.

use crate::foundation::keys;
use crate::foundation::store::{Store, StoreResult};
use crate::model::operation::{DeliveryCheck, Operation};

pub async fn check(
    store: &impl Store,
    op: &Operation,
    idempotency_key: &str,
    payload_hash: &str,
) -> StoreResult<DeliveryCheck> {
    let in_record = op.deliveries.check(idempotency_key, payload_hash);
    if in_record != DeliveryCheck::New || op.deliveries.moved_out == 0 {
        return Ok(in_record);
    }
    let moved = store
        .get(&keys::delivery_mark(&op.operation_id, idempotency_key))
        .await?;
    Ok(match moved {
        None => DeliveryCheck::New,
        Some(hash) => DeliveryCheck::of(hash == payload_hash.as_bytes()),
    })
}
