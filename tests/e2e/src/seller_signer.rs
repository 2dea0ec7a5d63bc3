//! A seller's RFC 9421 webhook signature (AdCP's webhook profile, Ed25519), for fakes that
//! send agent-level webhooks.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer;
use orchestrator_core::auth::rfc9421;
use serde_json::{Value, json};

pub const KEYID: &str = "fake-seller-key";

fn signing_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[11u8; 32])
}

/// The published form of the key, for `adcp_use: request-signing` (AdCP 3.2's name).
pub fn jwk() -> Value {
    let x = URL_SAFE_NO_PAD.encode(signing_key().verifying_key().as_bytes());
    json!({"kid": KEYID, "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
           "key_ops": ["verify"], "adcp_use": "request-signing", "x": x})
}

/// A POST of the JSON `body` to `url`, signed for exactly that URL.
pub fn signed_post(client: &reqwest::Client, url: &str, body: &Value) -> reqwest::RequestBuilder {
    static SENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nth = SENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let body = body.to_string();
    let authority = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let digest = rfc9421::content_digest(body.as_bytes());
    let params = format!(
        "(\"@method\" \"@target-uri\" \"@authority\" \"content-type\" \"content-digest\");created={created};expires={};nonce=\"agent-{nth}-{created}\";keyid=\"{KEYID}\";alg=\"ed25519\";tag=\"adcp/webhook-signing/v1\"",
        created + 300
    );
    let base = format!(
        "\"@method\": POST\n\"@target-uri\": {url}\n\"@authority\": {authority}\n\"content-type\": application/json\n\"content-digest\": {digest}\n\"@signature-params\": {params}"
    );
    let sig = URL_SAFE_NO_PAD.encode(signing_key().sign(base.as_bytes()).to_bytes());
    client
        .post(url)
        .header("content-type", "application/json")
        .header("content-digest", digest)
        .header("signature-input", format!("sig1={params}"))
        .header("signature", format!("sig1=:{sig}:"))
        .body(body)
}
