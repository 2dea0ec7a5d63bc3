//! Seller key discovery: brand.json (`agents[].jwks_uri`), the JWKS, the cache round trip,
//! and every parsed key used to verify a signature (key material decoding).
//!
//! Input: a brand.json body, a `----` line, a JWKS body. Discovery fetches them in that
//! order.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use orchestrator_core::auth::jwks;
use orchestrator_core::auth::rfc9421::{self, Jwk, Trust};
use orchestrator_core::foundation::outbound_url;
use orchestrator_core::foundation::store::MemoryStore;
use orchestrator_fuzz::{
    NOW_MS, NOW_S, ScriptedTransport, block_on, sections, sign_fresh, signers,
};
use serde_json::Value;
use std::sync::OnceLock;

const AGENT_URL: &str = "https://seller.example/mcp";
const TARGET: &str = "https://orch.example/webhooks/adcp/op1";
const BODY: &[u8] = br#"{"task_id":"t","status":"completed"}"#;

/// Trusts whatever key the input supplied, under any key id.
struct Only<'a>(&'a Jwk);

impl Trust for Only<'_> {
    fn key(&self, _keyid: &str) -> Option<Jwk> {
        Some(self.0.clone())
    }
    fn nonce_seen(&self, _keyid: &str, _nonce: &str) -> bool {
        false
    }
}

/// One request signed by each of our keys.
fn signed() -> &'static [http::HeaderMap] {
    static SIGNED: OnceLock<Vec<http::HeaderMap>> = OnceLock::new();
    SIGNED.get_or_init(|| {
        signers()
            .iter()
            .map(|s| {
                let mut h = http::HeaderMap::new();
                h.insert(
                    "content-type",
                    http::HeaderValue::from_static("application/json"),
                );
                sign_fresh("POST", TARGET, &mut h, BODY, s, "fuzz-nonce");
                h
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let parts = sections(data, 2);
    let brand = parts[0];
    let jwks_body = parts.get(1).copied().unwrap_or_default();

    if let Ok(b) = serde_json::from_slice::<Value>(brand) {
        for allow_private in [false, true] {
            // Whatever brand.json says, discovery is never pointed outside the URL rules.
            if let Some(uri) = jwks::jwks_uri_from_brand(&b, AGENT_URL, allow_private) {
                assert!(outbound_url::check(&uri, allow_private).is_ok(), "{uri}");
            }
            for url in b["agents"].as_array().into_iter().flatten() {
                if let Some(url) = url["url"].as_str() {
                    let _ = jwks::origin(url);
                    let _ = jwks::jwks_uri_from_brand(&b, url, allow_private);
                }
            }
        }
    }
    if let Ok(j) = serde_json::from_slice::<Value>(jwks_body) {
        let ours = signers();
        for key in jwks::parse_jwks(&j).iter().take(8) {
            for (headers, signer) in signed().iter().zip(ours) {
                let req = rfc9421::Request {
                    method: "POST",
                    target_uri: TARGET,
                    headers,
                    body: BODY,
                    now_s: NOW_S,
                };
                if rfc9421::verify(&req, &Only(key)).is_ok() {
                    // Only the signer's own public key can verify its signature.
                    let ours = signer.jwk();
                    let decode = |s: &str| URL_SAFE_NO_PAD.decode(s).ok();
                    assert_eq!(decode(&key.x), decode(&ours.x), "{key:?}");
                }
            }
        }
    }

    let store = MemoryStore::new();
    let transport = ScriptedTransport::default();
    transport.push(200, &[], brand);
    transport.push(200, &[], jwks_body);
    let found = block_on(jwks::discover(&transport, AGENT_URL, false));
    let recorded = block_on(jwks::record_attempt(
        &store, "t1", "s1", None, found, NOW_MS,
    ))
    .expect("the in-memory store does not fail");
    let cached = block_on(jwks::cached(&store, "t1", "s1")).expect("the cache reads back");
    assert_eq!(Some(&recorded), cached.as_ref());
    // Fetched or failed, the next fetch waits for the cooldown.
    assert!(!jwks::should_fetch(cached.as_ref(), true, NOW_MS));
});
