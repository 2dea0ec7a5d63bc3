//! Seller registrations: which AdCP agent a tenant buys from and how we talk to it.

use crate::keys;
use crate::operation::WebhookMode;
use crate::seal::Sealed;
use crate::store::{Store, StoreResult, get_json, set_json};
use serde::{Deserialize, Serialize};

/// One seller agent as registered by one tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seller {
    pub tenant_id: String,
    pub seller_id: String,
    /// The agent's MCP endpoint, e.g. `https://seller.example/mcp`.
    pub mcp_url: String,
    /// The credential we send in `Authorization: Bearer …`, sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Sealed>,
    /// The webhook authentication to request; `None` lets capabilities decide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_mode: Option<WebhookMode>,
    /// Set when the seller answered `auth-required`: our credentials need a human.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention: Option<String>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
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

/// The sealing purpose of a seller's credentials: bound to the record's identity.
pub fn credentials_purpose(tenant: &str, seller: &str) -> String {
    format!("seller-credentials:{tenant}:{seller}")
}
