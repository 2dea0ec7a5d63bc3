//! Tenants: the buyer organisations sharing one orchestrator, each with its own API key, shown
//! once at creation and stored only as a SHA-256 digest.

use crate::foundation::clock::{Clock, Entropy, random_hex};
use crate::foundation::keys;
use crate::foundation::seal::digest_hex;
use crate::foundation::store::{Store, StoreResult, get_json, set_json};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub tenant_id: String,
    pub name: String,
    pub created_at_ms: u64,
}

/// Prefix of every tenant API key, so leaked keys are recognisable by secret scanners.
pub const API_KEY_PREFIX: &str = "adcpo_";

/// The public part of an API key that names it in the event history: the prefix and the
/// first 8 of its 64 random hex digits (32 bits, useless for guessing the rest).
pub fn key_label(api_key: &str) -> String {
    api_key.chars().take(API_KEY_PREFIX.len() + 8).collect()
}

/// Creates a tenant; returns it with its API key (the only time the key is visible).
pub async fn create(
    store: &impl Store,
    clock: &dyn Clock,
    entropy: &dyn Entropy,
    name: &str,
) -> StoreResult<(Tenant, String)> {
    let tenant = Tenant {
        tenant_id: format!("tn_{}", random_hex(entropy, 8)),
        name: name.to_string(),
        created_at_ms: clock.now_ms(),
    };
    let api_key = format!("{API_KEY_PREFIX}{}", random_hex(entropy, 32));
    // Record first, key mapping second: a key never points at a missing tenant.
    set_json(store, &keys::tenant(&tenant.tenant_id), &tenant).await?;
    store
        .set(
            &keys::api_key(&digest_hex(api_key.as_bytes())),
            tenant.tenant_id.as_bytes(),
        )
        .await?;
    Ok((tenant, api_key))
}

/// The tenant an API key belongs to. Lookup is by digest, so the key itself is never compared
/// (no timing leak).
pub async fn authenticate(store: &impl Store, api_key: &str) -> StoreResult<Option<Tenant>> {
    if !api_key.starts_with(API_KEY_PREFIX) {
        return Ok(None);
    }
    let Some(id) = store
        .get(&keys::api_key(&digest_hex(api_key.as_bytes())))
        .await?
    else {
        return Ok(None);
    };
    let id = String::from_utf8_lossy(&id).into_owned();
    get_json(store, &keys::tenant(&id)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::foundation::store::MemoryStore;
    use crate::{foundation::clock::FixedClock, testing::SeededEntropy};
    use futures::executor::block_on;

    #[test]
    fn keys_authenticate_their_tenant_only_and_are_stored_hashed() {
        let s = MemoryStore::new();
        let e = SeededEntropy::new(3);
        block_on(async {
            let (a, key_a) = create(&s, &FixedClock(1), &e, "Acme").await.unwrap();
            let (b, key_b) = create(&s, &FixedClock(1), &e, "Beta").await.unwrap();
            assert_eq!(authenticate(&s, &key_a).await.unwrap().unwrap(), a);
            assert_eq!(authenticate(&s, &key_b).await.unwrap().unwrap(), b);
            assert_eq!(authenticate(&s, "adcpo_nope").await.unwrap(), None);
            assert_eq!(authenticate(&s, "").await.unwrap(), None);
            for k in s.keys() {
                let v = s.get(&k).await.unwrap().unwrap();
                let v = String::from_utf8_lossy(&v);
                assert!(!k.contains(&key_a[6..]) && !v.contains(&key_a[6..]), "{k}");
            }
        });
    }
}
