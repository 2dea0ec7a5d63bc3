//! Seller registrations: which AdCP agent a tenant buys from and how we talk to it.

use crate::foundation::keys;
use crate::foundation::seal::Sealed;
use crate::foundation::store::{Store, StoreResult, get_json, set_json};
use crate::model::operation::WebhookMode;
use crate::records::capabilities::Capabilities;
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

pub async fn delete(store: &impl Store, tenant: &str, seller: &str) -> StoreResult<()> {
    store.delete(&keys::seller(tenant, seller)).await
}

/// Appends a new seller to the seller index (for per-seller metrics); deleted sellers' entries
/// stay and readers skip them.
pub async fn index(store: &impl Store, tenant: &str, seller: &str) -> StoreResult<()> {
    let n = store.increment(keys::SELLERS_COUNT, 1).await?;
    store
        .set(
            &keys::sellers_entry(n.max(0) as u64),
            format!("{tenant}\n{seller}").as_bytes(),
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

/// Every (tenant, seller) pair ever registered and still present.
pub async fn all(store: &impl Store) -> StoreResult<Vec<Seller>> {
    let n = store.increment(keys::SELLERS_COUNT, 0).await?.max(0) as u64;
    let mut out = Vec::new();
    for i in 1..=n {
        let Some(entry) = store.get(&keys::sellers_entry(i)).await? else {
            continue;
        };
        let entry = String::from_utf8_lossy(&entry).into_owned();
        if let Some((t, s)) = entry.split_once('\n')
            && let Some(record) = get(store, t, s).await?
            && !out
                .iter()
                .any(|o: &Seller| o.tenant_id == t && o.seller_id == s)
        {
            out.push(record);
        }
    }
    Ok(out)
}

/// The sealing purpose of a seller's credentials: bound to the record's identity.
pub fn credentials_purpose(tenant: &str, seller: &str) -> String {
    format!("seller-credentials:{tenant}:{seller}")
}
