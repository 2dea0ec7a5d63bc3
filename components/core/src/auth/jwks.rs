//! Finding a seller's webhook-signing keys: `/.well-known/brand.json` on the agent's origin,
//! its `agents[]` entry whose `url` equals the agent URL byte for byte, that entry's
//! `jwks_uri` (default `/.well-known/jwks.json`), cached in the store with a TTL and
//! refetched at most once per cooldown when an unknown `kid` shows up.

use crate::auth::rfc9421::Jwk;
use crate::foundation::keys;
use crate::foundation::store::{Store, StoreResult, get_json, set_json};
use crate::foundation::transport::{Limits, Transport};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How long fetched keys are trusted without refetching (the spec allows 1–30 min).
pub const TTL_MS: u64 = 10 * 60_000;
/// At most one refetch per this long, however many unknown kids arrive.
pub const COOLDOWN_MS: u64 = 30_000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedKeys {
    pub jwks_uri: String,
    pub keys: Vec<Jwk>,
    pub fetched_at_ms: u64,
}

impl CachedKeys {
    pub fn key(&self, kid: &str) -> Option<Jwk> {
        self.keys.iter().find(|k| k.kid == kid).cloned()
    }
}

/// Whether to go to the network: the cache is stale, or a kid is unknown and the last fetch
/// is older than the cooldown.
pub fn should_fetch(cached: Option<&CachedKeys>, unknown_kid: bool, now_ms: u64) -> bool {
    match cached {
        None => true,
        Some(c) => {
            let age = now_ms.saturating_sub(c.fetched_at_ms);
            age >= TTL_MS || (unknown_kid && age >= COOLDOWN_MS)
        }
    }
}

/// The origin (`scheme://authority`) of a URL.
pub fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    (!authority.is_empty()).then(|| format!("{scheme}://{authority}"))
}

/// The `jwks_uri` that brand.json names for `agent_url`, or the default on its origin.
pub fn jwks_uri_from_brand(brand: &Value, agent_url: &str) -> Option<String> {
    let origin = origin(agent_url)?;
    let agent = brand
        .get("agents")?
        .as_array()?
        .iter()
        .find(|a| a.get("url").and_then(Value::as_str) == Some(agent_url))?;
    Some(match agent.get("jwks_uri").and_then(Value::as_str) {
        Some(u) if u.starts_with("https://") || u.starts_with("http://") => u.to_string(),
        Some(path) if path.starts_with('/') => format!("{origin}{path}"),
        _ => format!("{origin}/.well-known/jwks.json"),
    })
}

/// Keeps the keys that parse.
pub fn parse_jwks(v: &Value) -> Vec<Jwk> {
    v.get("keys")
        .and_then(Value::as_array)
        .map(|ks| {
            ks.iter()
                .filter_map(|k| serde_json::from_value(k.clone()).ok())
                .collect()
        })
        .unwrap_or_default()
}

pub async fn cached(
    store: &impl Store,
    tenant: &str,
    seller: &str,
) -> StoreResult<Option<CachedKeys>> {
    get_json(store, &keys::seller_jwks(tenant, seller)).await
}

/// Fetches brand.json then the JWKS for `agent_url` and caches them. `None` when discovery
/// fails (the caller answers as for an unknown key; nothing is cached).
pub async fn refresh(
    store: &impl Store,
    transport: &impl Transport,
    tenant: &str,
    seller: &str,
    agent_url: &str,
    now_ms: u64,
) -> StoreResult<Option<CachedKeys>> {
    let Some(origin) = origin(agent_url) else {
        return Ok(None);
    };
    let Some(brand) = fetch_json(transport, &format!("{origin}/.well-known/brand.json")).await
    else {
        return Ok(None);
    };
    let Some(jwks_uri) = jwks_uri_from_brand(&brand, agent_url) else {
        return Ok(None);
    };
    let Some(jwks) = fetch_json(transport, &jwks_uri).await else {
        return Ok(None);
    };
    let cached = CachedKeys {
        jwks_uri,
        keys: parse_jwks(&jwks),
        fetched_at_ms: now_ms,
    };
    set_json(store, &keys::seller_jwks(tenant, seller), &cached).await?;
    Ok(Some(cached))
}

async fn fetch_json(transport: &impl Transport, url: &str) -> Option<Value> {
    let req = http::Request::get(url)
        .header("accept", "application/json")
        .body(Vec::new())
        .ok()?;
    let resp = transport.send(req, Limits::KEY_DISCOVERY).await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    serde_json::from_slice(resp.body()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn brand_json_names_the_jwks_of_the_exact_agent_url() {
        let brand = json!({"agents": [
            {"url": "https://seller.example/mcp/", "jwks_uri": "https://keys.example/other.json"},
            {"url": "https://seller.example/mcp", "jwks_uri": "/keys.json"},
        ]});
        assert_eq!(
            jwks_uri_from_brand(&brand, "https://seller.example/mcp").as_deref(),
            Some("https://seller.example/keys.json")
        );
        let no_uri = json!({"agents": [{"url": "https://seller.example/mcp"}]});
        assert_eq!(
            jwks_uri_from_brand(&no_uri, "https://seller.example/mcp").as_deref(),
            Some("https://seller.example/.well-known/jwks.json")
        );
        assert_eq!(
            jwks_uri_from_brand(&brand, "https://seller.example/other"),
            None
        );
    }

    #[test]
    fn refetch_policy_honours_ttl_and_cooldown() {
        let c = CachedKeys {
            fetched_at_ms: 1_000,
            ..Default::default()
        };
        assert!(should_fetch(None, false, 0));
        assert!(!should_fetch(Some(&c), false, 1_000 + TTL_MS - 1));
        assert!(should_fetch(Some(&c), false, 1_000 + TTL_MS));
        assert!(!should_fetch(Some(&c), true, 1_000 + COOLDOWN_MS - 1));
        assert!(should_fetch(Some(&c), true, 1_000 + COOLDOWN_MS));
    }
}
