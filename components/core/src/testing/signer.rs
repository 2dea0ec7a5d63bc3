//! A seller that signs its webhooks with the AdCP RFC 9421 profile, for the intake's tests.

use crate::auth::rfc9421;
use crate::foundation::http::Request;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer;
use serde_json::{Value, json};

pub fn signing_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[7u8; 32])
}

/// The published key `seller-key-1`.
pub fn jwk() -> Value {
    let x = URL_SAFE_NO_PAD.encode(signing_key().verifying_key().as_bytes());
    json!({"kid": "seller-key-1", "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
           "key_ops": ["verify"], "adcp_use": "request-signing", "x": x})
}

/// A POST of `body` signed for `https://orch.example{path}` with [`signing_key`] under
/// `keyid`, reaching us through a proxy (the listener's own address is not what was signed).
pub fn signed_post(path: &str, body: &str, nonce: &str, keyid: &str, created_s: u64) -> Request {
    let digest = rfc9421::content_digest(body.as_bytes());
    let params = format!(
        "(\"@method\" \"@target-uri\" \"@authority\" \"content-type\" \"content-digest\");created={created_s};expires={};nonce=\"{nonce}\";keyid=\"{keyid}\";alg=\"ed25519\";tag=\"adcp/webhook-signing/v1\"",
        created_s + 300
    );
    let base = format!(
        "\"@method\": POST\n\"@target-uri\": https://orch.example{path}\n\"@authority\": orch.example\n\"content-type\": application/json\n\"content-digest\": {digest}\n\"@signature-params\": {params}"
    );
    let sig = URL_SAFE_NO_PAD.encode(signing_key().sign(base.as_bytes()).to_bytes());
    http::Request::post(format!("http://10.0.0.7:3000{path}"))
        .header("content-type", "application/json")
        .header("content-digest", digest)
        .header("signature-input", format!("sig1={params}"))
        .header("signature", format!("sig1=:{sig}:"))
        .body(body.as_bytes().to_vec())
        .unwrap()
}
