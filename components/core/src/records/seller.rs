//! Seller registrations: which AdCP agent a tenant buys from and how we talk to it.

use crate::foundation::keys;
use crate::foundation::seal::Sealed;
use crate::foundation::store::{Store, StoreResult, get_decimal, get_json, set_json};
use crate::model::operation::WebhookMode;
use crate::records::capabilities::{Capabilities, VersionEnvelope};
use crate::records::capability_subscription::CapabilitySubscription;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seller {
    pub tenant_id: String,
    pub seller_id: String,
    /// The agent's MCP endpoint, e.g. `https://seller.example/mcp`.
    pub mcp_url: String,
    /// The credential we send in `Authorization`, sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Sealed>,
    #[serde(default)]
    pub auth_scheme: AuthScheme,
    /// The webhook authentication to request; `None` lets capabilities decide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_mode: Option<WebhookMode>,
    /// Set when the seller answered `auth-required`: our credentials need a human.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention: Option<String>,
    /// What the seller declared in `get_adcp_capabilities`, once fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    /// The version fields every call carries, as discovery established them (records from
    /// before discovery negotiated them read as the envelope that was sent then).
    #[serde(default)]
    pub version_envelope: VersionEnvelope,
    /// Our `capabilities.changed` subscription, at sellers that offer one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability_subscription: Option<CapabilitySubscription>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthScheme {
    /// `Authorization: Bearer <credentials>`.
    #[default]
    Bearer,
    /// `Authorization: Basic base64(<credentials>)`, credentials being `user:password`.
    Basic,
}

pub async fn get(store: &impl Store, tenant: &str, seller: &str) -> StoreResult<Option<Seller>> {
    get_json(store, &keys::seller(tenant, seller)).await
}

pub async fn put(store: &impl Store, seller: &Seller) -> StoreResult<()> {
    set_json(
        store,
        &keys::seller(&seller.tenant_id, &seller.seller_id),
        seller,
    )
    .await
}

/// Changes the record as stored now, never a copy read before an outbound call: `before` is
/// the registration the caller acted on, and the change is dropped (`None`) when that
/// record is gone or was registered again meanwhile (another agent, credentials or scheme:
/// what was learned of the old registration does not apply to the new one).
pub async fn amend(
    store: &impl Store,
    before: &Seller,
    change: impl FnOnce(&mut Seller),
) -> StoreResult<Option<Seller>> {
    let Some(mut fresh) = get(store, &before.tenant_id, &before.seller_id).await? else {
        return Ok(None);
    };
    let same = fresh.mcp_url == before.mcp_url
        && fresh.credentials == before.credentials
        && fresh.auth_scheme == before.auth_scheme;
    if !same {
        return Ok(None);
    }
    change(&mut fresh);
    put(store, &fresh).await?;
    Ok(Some(fresh))
}

pub async fn delete(store: &impl Store, tenant: &str, seller: &str) -> StoreResult<()> {
    store.delete(&keys::seller(tenant, seller)).await
}

/// Records a newly registered seller in the append-only seller index (for per-seller
/// metrics) and, once per seller id, in its tenant's listing. Entries of deleted sellers
/// stay and are skipped by readers.
pub async fn index(store: &impl Store, tenant: &str, seller: &str) -> StoreResult<()> {
    let n = store.increment(keys::SELLERS_COUNT, 1).await?;
    store
        .set(
            &keys::sellers_entry(n.max(0) as u64),
            format!("{tenant}\n{seller}").as_bytes(),
        )
        .await?;
    if store
        .increment(&keys::tenant_seller_listed(tenant, seller), 1)
        .await?
        == 1
    {
        let n = store
            .increment(&keys::tenant_sellers_count(tenant), 1)
            .await?;
        store
            .set(
                &keys::tenant_sellers_entry(tenant, n.max(0) as u64),
                seller.as_bytes(),
            )
            .await?;
    }
    Ok(())
}

/// One page of the tenant's listing: up to `limit` seller ids from entry `cursor` down
/// (newest first; `None` starts at the newest), and the cursor of the next page. Ids of
/// deleted sellers are included; readers skip them.
pub async fn listed_ids(
    store: &impl Store,
    tenant: &str,
    cursor: Option<u64>,
    limit: usize,
) -> StoreResult<(Vec<String>, Option<u64>)> {
    let newest = store
        .increment(&keys::tenant_sellers_count(tenant), 0)
        .await?
        .max(0) as u64;
    let mut n = cursor.unwrap_or(newest).min(newest);
    let mut out = Vec::new();
    while n > 0 && out.len() < limit {
        if let Some(id) = store.get(&keys::tenant_sellers_entry(tenant, n)).await? {
            out.push(String::from_utf8_lossy(&id).into_owned());
        }
        n -= 1;
    }
    Ok((out, (n > 0).then_some(n)))
}

/// A call to the seller succeeded at `now_ms` (plain write: the latest writer wins, which is
/// what "last success" means).
pub async fn called_ok(
    store: &impl Store,
    tenant: &str,
    seller: &str,
    now_ms: u64,
) -> StoreResult<()> {
    store
        .set(
            &keys::seller_last_ok(tenant, seller),
            now_ms.to_string().as_bytes(),
        )
        .await
}

/// Every (tenant, seller) pair ever registered, removed ones included (the index keeps them):
/// the tenants that may have operations, and the pairs already indexed.
pub async fn registry(
    store: &impl Store,
) -> StoreResult<std::collections::BTreeSet<(String, String)>> {
    let n = store.increment(keys::SELLERS_COUNT, 0).await?.max(0) as u64;
    let mut out = std::collections::BTreeSet::new();
    for i in 1..=n {
        if let Some(entry) = store.get(&keys::sellers_entry(i)).await?
            && let Some((t, s)) = String::from_utf8_lossy(&entry).split_once('\n')
        {
            out.insert((t.to_string(), s.to_string()));
        }
    }
    Ok(out)
}

/// When a call to the seller last succeeded, if one ever did (since this was recorded).
pub async fn last_ok(store: &impl Store, tenant: &str, seller: &str) -> StoreResult<Option<u64>> {
    get_decimal(store, &keys::seller_last_ok(tenant, seller)).await
}

/// Every seller ever registered and still present, by tenant and seller id.
pub async fn all(store: &impl Store) -> StoreResult<Vec<Seller>> {
    let mut out = Vec::new();
    for (t, s) in registry(store).await? {
        if let Some(record) = get(store, &t, &s).await? {
            out.push(record);
        }
    }
    Ok(out)
}

/// The sealing purpose of a seller's credentials: bound to the record's identity.
pub fn credentials_purpose(tenant: &str, seller: &str) -> String {
    format!("seller-credentials:{tenant}:{seller}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_stored_before_version_negotiation_reads_as_the_envelope_sent_then() {
        let old = serde_json::json!({"tenant_id": "t", "seller_id": "s",
            "mcp_url": "https://s.example/mcp", "created_at_ms": 1, "updated_at_ms": 1});
        let s: Seller = serde_json::from_value(old).unwrap();
        assert_eq!(s.version_envelope, VersionEnvelope::default());
        let none = Seller {
            version_envelope: VersionEnvelope::none(),
            capability_subscription: None,
            ..s
        };
        let back: Seller = serde_json::from_slice(&serde_json::to_vec(&none).unwrap()).unwrap();
        assert_eq!(back.version_envelope, VersionEnvelope::none());
    }
}
