//! A seller's interoperability record: its authenticated deliveries refused for a spec
//! violation, by kind, how often and the last time (shown on the seller record). Only senders
//! that proved who they are get here, so forged traffic writes nothing.

use crate::foundation::keys;
use crate::foundation::store::{Store, StoreResult, get_counter, get_json, set_json};
use serde::{Deserialize, Serialize};

/// A spec violation by a seller whose delivery was authenticated, and refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Defect {
    /// Signed (or bearer-authenticated), but the registration's `token` was not echoed.
    WebhookTokenMissing,
    /// The legacy HMAC verifies only over another serialization of the body than the bytes
    /// sent (a signer that re-serialized): the wire bytes are what is signed.
    HmacOverReserializedBody,
    /// Not a valid AdCP webhook envelope (e.g. a status outside the task enum).
    WebhookEnvelopeInvalid,
}

impl Defect {
    pub const ALL: [Defect; 3] = [
        Defect::WebhookTokenMissing,
        Defect::HmacOverReserializedBody,
        Defect::WebhookEnvelopeInvalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Defect::WebhookTokenMissing => "webhook_token_missing",
            Defect::HmacOverReserializedBody => "hmac_over_reserialized_body",
            Defect::WebhookEnvelopeInvalid => "webhook_envelope_invalid",
        }
    }
}

/// The last refusal of one kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Last {
    pub at_ms: u64,
    /// What exactly was refused (the refusal's code), never the payload.
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<String>,
}

/// One kind of violation as the seller record shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub refused: Defect,
    pub count: i64,
    pub last: Option<Last>,
}

/// Counts one refusal (two writes: the count, the last one).
pub async fn record(
    store: &impl Store,
    tenant: &str,
    seller: &str,
    defect: Defect,
    last: &Last,
) -> StoreResult<()> {
    store
        .increment(&keys::interop_count(tenant, seller, defect.as_str()), 1)
        .await?;
    set_json(
        store,
        &keys::interop_last(tenant, seller, defect.as_str()),
        last,
    )
    .await
}

/// The kinds of violation seen from the seller (none seen: empty).
pub async fn read(store: &impl Store, tenant: &str, seller: &str) -> StoreResult<Vec<Entry>> {
    let mut out = Vec::new();
    for defect in Defect::ALL {
        let count =
            get_counter(store, &keys::interop_count(tenant, seller, defect.as_str())).await?;
        if count == 0 {
            continue;
        }
        let last = get_json(store, &keys::interop_last(tenant, seller, defect.as_str())).await?;
        out.push(Entry {
            refused: defect,
            count,
            last,
        });
    }
    Ok(out)
}

/// Forgets the seller's record (a registration that may point at another agent).
pub async fn forget(store: &impl Store, tenant: &str, seller: &str) -> StoreResult<()> {
    for defect in Defect::ALL {
        store
            .delete(&keys::interop_count(tenant, seller, defect.as_str()))
            .await?;
        store
            .delete(&keys::interop_last(tenant, seller, defect.as_str()))
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::foundation::store::MemoryStore;

    #[test]
    fn refusals_are_counted_by_kind_with_the_last_one_and_forgotten_on_request() {
        futures::executor::block_on(async {
            let store = MemoryStore::new();
            assert!(read(&store, "t1", "s1").await.unwrap().is_empty());
            for at_ms in [10, 20] {
                let last = Last {
                    at_ms,
                    detail: "webhook_token_mismatch".into(),
                    operation_id: Some("op_1".into()),
                };
                record(&store, "t1", "s1", Defect::WebhookTokenMissing, &last)
                    .await
                    .unwrap();
            }
            let seen = read(&store, "t1", "s1").await.unwrap();
            assert_eq!(seen.len(), 1);
            assert_eq!(seen[0].refused, Defect::WebhookTokenMissing);
            assert_eq!(seen[0].count, 2);
            assert_eq!(seen[0].last.as_ref().unwrap().at_ms, 20);
            // Another seller of the tenant is untouched.
            assert!(read(&store, "t1", "s2").await.unwrap().is_empty());
            forget(&store, "t1", "s1").await.unwrap();
            assert!(read(&store, "t1", "s1").await.unwrap().is_empty());
        });
    }
}
