//! RFC 9421 webhook verification (`Signature-Input`, `Signature`, `Content-Digest`,
//! `@target-uri` canonicalization) with a fixed key set and clock.
//!
//! Input: a request in the seed text format whose target is the absolute URI the sender
//! signed. A method prefixed with `!` is re-signed with our key of the same `keyid` first
//! (so mutations reach the digest and replay checks); `!!` also sets a matching
//! `Content-Digest`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orchestrator_core::auth::rfc9421::{self, Jwk, SignatureError, Trust};
use orchestrator_fuzz::{NOW_S, Raw, append_headers, resign, set_header, signers};
use std::sync::OnceLock;

struct FixedTrust(Vec<Jwk>);

impl Trust for FixedTrust {
    fn key(&self, keyid: &str) -> Option<Jwk> {
        self.0.iter().find(|k| k.kid == keyid).cloned()
    }
    fn revoked(&self, keyid: &str) -> Result<bool, SignatureError> {
        match keyid {
            "revoked-kid" => Ok(true),
            "stale-revocation-kid" => Err(SignatureError::RevocationStale),
            _ => Ok(false),
        }
    }
    fn over_cap(&self, keyid: &str) -> bool {
        keyid == "over-cap-kid"
    }
    fn nonce_seen(&self, _keyid: &str, nonce: &str) -> bool {
        nonce == "seen-nonce"
    }
}

fn trust() -> &'static FixedTrust {
    static TRUST: OnceLock<FixedTrust> = OnceLock::new();
    TRUST.get_or_init(|| {
        let signers = signers();
        let mut keys: Vec<Jwk> = signers.iter().map(|s| s.jwk()).collect();
        let ed = signers[0].jwk();
        for kid in ["revoked-kid", "stale-revocation-kid", "over-cap-kid"] {
            keys.push(Jwk {
                kid: kid.into(),
                ..ed.clone()
            });
        }
        keys.push(Jwk {
            kid: "test-wrong-purpose-2026".into(),
            adcp_use: Some("request-signing".into()),
            ..ed.clone()
        });
        keys.push(Jwk {
            kid: "sign-only-kid".into(),
            key_ops: Some(vec!["sign".into()]),
            ..ed
        });
        FixedTrust(keys)
    })
}

fuzz_target!(|data: &[u8]| {
    let raw = Raw::parse(data);
    let fix_digest = raw.method.starts_with("!!");
    let resigned = raw.method.starts_with('!');
    let method = raw.method.trim_start_matches('!');
    let _ = rfc9421::canonical_target_uri(&raw.target);
    let mut headers = http::HeaderMap::new();
    append_headers(&mut headers, &raw.headers);
    if fix_digest {
        set_header(
            &mut headers,
            "content-digest",
            &rfc9421::content_digest(&raw.body),
        );
    }
    if resigned {
        resign(method, &raw.target, &mut headers, &raw.body, signers());
    }
    let req = rfc9421::Request {
        method,
        target_uri: &raw.target,
        headers: &headers,
        body: &raw.body,
        now_s: NOW_S,
    };
    if let Ok(v) = rfc9421::verify(&req, trust()) {
        // Step 5 held: whatever was accepted expires inside the window.
        assert!(v.expires_s >= NOW_S - rfc9421::SKEW_S, "{v:?}");
    }
});
