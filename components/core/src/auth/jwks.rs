//! Finding a seller's webhook-signing keys: `/.well-known/brand.json` on the agent's origin,
//! its `agents[]` entry whose `url` equals the agent URL byte for byte, that entry's
//! `jwks_uri` (default `/.well-known/jwks.json`), cached in the store.
//!
//! Keys are refetched once they are older than [`TTL_MS`], and when an unknown `kid` shows
//! up; a refetch replaces the whole set, so a key the seller removed is refused from then on.
//! Whatever arrives, a seller's keys are fetched at most once per [`COOLDOWN_MS`] slot: the
//! fetch is claimed with an `increment` (`jwks:{tenant}:{seller}:claim:{slot}`), and the
//! last attempt's time is kept in the cache, failed attempts included.

use crate::auth::rfc9421::Jwk;
use crate::foundation::keys;
use crate::foundation::outbound_url;
use crate::foundation::store::{Store, StoreResult, get_json, set_json};
use crate::foundation::transport::{Limits, Transport};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How long fetched keys are trusted without refetching (the spec allows 1–30 min).
pub const TTL_MS: u64 = 10 * 60_000;
/// At most one fetch per seller per this long, however many requests need one.
pub const COOLDOWN_MS: u64 = 30_000;
/// While refetching fails, keys past their TTL are still trusted until this long after
/// their fetch: a seller's JWKS outage does not refuse its webhooks at once.
pub const STALE_IF_ERROR_MS: u64 = 60 * 60_000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedKeys {
    pub jwks_uri: String,
    pub keys: Vec<Jwk>,
    /// When `keys` were fetched (0: never, only failed attempts).
    pub fetched_at_ms: u64,
    /// When a fetch was last attempted, successful or not (caches of earlier releases:
    /// their fetch time).
    #[serde(default)]
    pub attempted_at_ms: u64,
}

impl CachedKeys {
    /// The key with this id, unless the set is too old to trust.
    pub fn key(&self, kid: &str, now_ms: u64) -> Option<Jwk> {
        if now_ms >= self.fetched_at_ms.saturating_add(STALE_IF_ERROR_MS) {
            return None;
        }
        self.keys.iter().find(|k| k.kid == kid).cloned()
    }

    fn last_attempt_ms(&self) -> u64 {
        self.attempted_at_ms.max(self.fetched_at_ms)
    }
}

/// Whether this request should fetch: nothing is cached, the keys are past their TTL, or the
/// signature's kid is unknown; and no fetch was attempted within the cooldown.
pub fn should_fetch(cached: Option<&CachedKeys>, unknown_kid: bool, now_ms: u64) -> bool {
    match cached {
        None => true,
        Some(c) => {
            let stale = now_ms >= c.fetched_at_ms.saturating_add(TTL_MS);
            (stale || unknown_kid) && now_ms >= c.last_attempt_ms().saturating_add(COOLDOWN_MS)
        }
    }
}

/// Claims the seller's one fetch of the current cooldown slot: `true` for exactly one
/// claimant per slot, however many race.
pub async fn claim_fetch(
    store: &impl Store,
    tenant: &str,
    seller: &str,
    now_ms: u64,
) -> StoreResult<bool> {
    let slot = now_ms / COOLDOWN_MS;
    Ok(store
        .increment(&keys::seller_jwks_claim(tenant, seller, slot), 1)
        .await?
        == 1)
}

/// The origin (`scheme://authority`) of a URL.
pub fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    (!authority.is_empty()).then(|| format!("{scheme}://{authority}"))
}

/// The `jwks_uri` that brand.json names for `agent_url`, or the default on its origin; `None`
/// when it breaks the URL rules (a brand.json pointing us at an internal address).
pub fn jwks_uri_from_brand(
    brand: &Value,
    agent_url: &str,
    allow_private_networks: bool,
) -> Option<String> {
    let origin = origin(agent_url)?;
    let agent = brand
        .get("agents")?
        .as_array()?
        .iter()
        .find(|a| a.get("url").and_then(Value::as_str) == Some(agent_url))?;
    let uri = match agent.get("jwks_uri").and_then(Value::as_str) {
        Some(u) if u.starts_with("https://") || u.starts_with("http://") => u.to_string(),
        Some(path) if path.starts_with('/') => format!("{origin}{path}"),
        _ => format!("{origin}/.well-known/jwks.json"),
    };
    outbound_url::check(&uri, allow_private_networks)
        .is_ok()
        .then_some(uri)
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

/// Fetches brand.json then the JWKS for `agent_url`: the `jwks_uri` and its keys, `None` when
/// discovery fails.
pub async fn discover(
    transport: &impl Transport,
    agent_url: &str,
    allow_private_networks: bool,
) -> Option<(String, Vec<Jwk>)> {
    let origin = origin(agent_url)?;
    let brand = fetch_json(transport, &format!("{origin}/.well-known/brand.json")).await?;
    let jwks_uri = jwks_uri_from_brand(&brand, agent_url, allow_private_networks)?;
    let jwks = fetch_json(transport, &jwks_uri).await?;
    Some((jwks_uri, parse_jwks(&jwks)))
}

/// Stores what an attempt at `now_ms` found: the new key set, or on failure the previous
/// one with the attempt's time (so the cooldown holds). Removes the claim of the previous
/// attempt's slot, so claims do not pile up.
pub async fn record_attempt(
    store: &impl Store,
    tenant: &str,
    seller: &str,
    previous: Option<CachedKeys>,
    found: Option<(String, Vec<Jwk>)>,
    now_ms: u64,
) -> StoreResult<CachedKeys> {
    let earlier = previous.as_ref().map(CachedKeys::last_attempt_ms);
    let next = match found {
        Some((jwks_uri, keys)) => CachedKeys {
            jwks_uri,
            keys,
            fetched_at_ms: now_ms,
            attempted_at_ms: now_ms,
        },
        None => CachedKeys {
            attempted_at_ms: now_ms,
            ..previous.unwrap_or_default()
        },
    };
    set_json(store, &keys::seller_jwks(tenant, seller), &next).await?;
    if let Some(earlier) = earlier.filter(|e| e / COOLDOWN_MS != now_ms / COOLDOWN_MS) {
        store
            .delete(&keys::seller_jwks_claim(
                tenant,
                seller,
                earlier / COOLDOWN_MS,
            ))
            .await?;
    }
    Ok(next)
}

/// Forgets the seller's keys (its registration changed or it was removed), with the claim
/// of the last attempt, so the next delivery fetches the new agent's keys at once.
pub async fn forget(store: &impl Store, tenant: &str, seller: &str) -> StoreResult<()> {
    if let Some(c) = cached(store, tenant, seller).await? {
        store
            .delete(&keys::seller_jwks_claim(
                tenant,
                seller,
                c.last_attempt_ms() / COOLDOWN_MS,
            ))
            .await?;
    }
    store.delete(&keys::seller_jwks(tenant, seller)).await
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
            jwks_uri_from_brand(&brand, "https://seller.example/mcp", false).as_deref(),
            Some("https://seller.example/keys.json")
        );
        let no_uri = json!({"agents": [{"url": "https://seller.example/mcp"}]});
        assert_eq!(
            jwks_uri_from_brand(&no_uri, "https://seller.example/mcp", false).as_deref(),
            Some("https://seller.example/.well-known/jwks.json")
        );
        assert_eq!(
            jwks_uri_from_brand(&brand, "https://seller.example/other", false),
            None
        );
    }

    #[test]
    fn brand_json_cannot_point_key_discovery_at_internal_addresses() {
        for uri in [
            "http://seller.example/jwks.json",
            "https://169.254.169.254/latest/meta-data",
            "https://u:p@keys.example/jwks.json",
        ] {
            let brand = json!({"agents": [{"url": "https://seller.example/mcp", "jwks_uri": uri}]});
            assert_eq!(
                jwks_uri_from_brand(&brand, "https://seller.example/mcp", false),
                None,
                "{uri}"
            );
        }
        let dev = json!({"agents": [{"url": "http://127.0.0.1:9/mcp"}]});
        assert_eq!(
            jwks_uri_from_brand(&dev, "http://127.0.0.1:9/mcp", true).as_deref(),
            Some("http://127.0.0.1:9/.well-known/jwks.json")
        );
    }

    #[test]
    fn refetch_policy_honours_ttl_and_cooldown() {
        let c = CachedKeys {
            fetched_at_ms: 1_000,
            attempted_at_ms: 1_000,
            ..Default::default()
        };
        assert!(should_fetch(None, false, 0));
        // Known kid: trusted until the TTL, then refetched (the TTL was dead code before).
        assert!(!should_fetch(Some(&c), false, 1_000 + TTL_MS - 1));
        assert!(should_fetch(Some(&c), false, 1_000 + TTL_MS));
        assert!(!should_fetch(Some(&c), true, 1_000 + COOLDOWN_MS - 1));
        assert!(should_fetch(Some(&c), true, 1_000 + COOLDOWN_MS));
        // A failed attempt counts for the cooldown, and stale keys are trusted only so long.
        let failed = CachedKeys {
            attempted_at_ms: 1_000 + TTL_MS,
            ..c.clone()
        };
        assert!(!should_fetch(
            Some(&failed),
            false,
            1_000 + TTL_MS + COOLDOWN_MS - 1
        ));
        assert!(should_fetch(
            Some(&failed),
            false,
            1_000 + TTL_MS + COOLDOWN_MS
        ));
        let with_key = CachedKeys {
            keys: vec![
                serde_json::from_value(
                    json!({"kid": "k", "kty": "OKP", "crv": "Ed25519", "x": "AA"}),
                )
                .unwrap(),
            ],
            ..c
        };
        assert!(with_key.key("k", 1_000 + STALE_IF_ERROR_MS - 1).is_some());
        assert!(with_key.key("k", 1_000 + STALE_IF_ERROR_MS).is_none());
    }

    #[test]
    fn one_claim_per_cooldown_slot_and_claims_do_not_pile_up() {
        futures::executor::block_on(async {
            let store = crate::foundation::store::MemoryStore::new();
            let t0 = 10 * COOLDOWN_MS;
            let wins = [
                claim_fetch(&store, "t", "s", t0).await.unwrap(),
                claim_fetch(&store, "t", "s", t0 + 1).await.unwrap(),
                claim_fetch(&store, "t", "s2", t0 + 1).await.unwrap(),
            ];
            assert_eq!(wins, [true, false, true]);
            let first = record_attempt(&store, "t", "s", None, None, t0)
                .await
                .unwrap();
            assert!(
                claim_fetch(&store, "t", "s", t0 + COOLDOWN_MS)
                    .await
                    .unwrap()
            );
            record_attempt(&store, "t", "s", Some(first), None, t0 + COOLDOWN_MS)
                .await
                .unwrap();
            let claims: Vec<String> = store
                .keys()
                .into_iter()
                .filter(|k| k.starts_with("jwks:t:s:claim"))
                .collect();
            assert_eq!(claims, [keys::seller_jwks_claim("t", "s", 11)]);
            forget(&store, "t", "s").await.unwrap();
            assert!(store.keys().iter().all(|k| !k.starts_with("jwks:t:s:")));
        });
    }
}
