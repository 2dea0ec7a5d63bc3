//! RFC 9421 HTTP message signatures, AdCP's webhook profile (`adcp/webhook-signing/v1`): the
//! security guide's verifier checklist, step by step, with its `webhook_signature_*` codes.
//!
//! Profile: covered components `("@method" "@target-uri" "@authority" "content-type"
//! "content-digest")`; parameters `created`, `expires`, `nonce`, `keyid`, `alg`, `tag`;
//! algorithms `ed25519` and `ecdsa-p256-sha256` (IEEE P1363 `r||s`); a window ≤ 300 s with 60 s
//! skew; `Signature` in unpadded base64url (the profile's legacy encoding, *not* an RFC 8941
//! byte sequence, so that header is split by hand; `Signature-Input` and `Content-Digest` use
//! `sfv`).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Deserialize;
use sfv::{BareItem, Dictionary, FieldType, List, ListEntry, Parser};
use sha2::{Digest, Sha256};

pub const TAG: &str = "adcp/webhook-signing/v1";
pub const REQUIRED_COMPONENTS: [&str; 5] = [
    "@method",
    "@target-uri",
    "@authority",
    "content-type",
    "content-digest",
];
pub const MAX_WINDOW_S: i64 = 300;
pub const SKEW_S: i64 = 60;

/// The spec's error codes, in checklist order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    HeaderMalformed,
    ParamsIncomplete,
    TagInvalid,
    AlgNotAllowed,
    WindowInvalid,
    ComponentsIncomplete,
    KeyUnknown,
    KeyPurposeInvalid,
    KeyRevoked,
    RateAbuse,
    RevocationStale,
    Invalid,
    DigestMismatch,
    Replayed,
}

impl SignatureError {
    pub fn code(self) -> &'static str {
        match self {
            SignatureError::HeaderMalformed => "webhook_signature_header_malformed",
            SignatureError::ParamsIncomplete => "webhook_signature_params_incomplete",
            SignatureError::TagInvalid => "webhook_signature_tag_invalid",
            SignatureError::AlgNotAllowed => "webhook_signature_alg_not_allowed",
            SignatureError::WindowInvalid => "webhook_signature_window_invalid",
            SignatureError::ComponentsIncomplete => "webhook_signature_components_incomplete",
            SignatureError::KeyUnknown => "webhook_signature_key_unknown",
            SignatureError::KeyPurposeInvalid => "webhook_signature_key_purpose_invalid",
            SignatureError::KeyRevoked => "webhook_signature_key_revoked",
            SignatureError::RateAbuse => "webhook_signature_rate_abuse",
            SignatureError::RevocationStale => "webhook_signature_revocation_stale",
            SignatureError::Invalid => "webhook_signature_invalid",
            SignatureError::DigestMismatch => "webhook_signature_digest_mismatch",
            SignatureError::Replayed => "webhook_signature_replayed",
        }
    }

    /// The `WWW-Authenticate` value of a 401 carrying this error.
    pub fn www_authenticate(self) -> String {
        format!("Signature error=\"{}\"", self.code())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct Jwk {
    pub kid: String,
    pub kty: String,
    #[serde(default)]
    pub crv: Option<String>,
    #[serde(default)]
    pub alg: Option<String>,
    #[serde(default, rename = "use")]
    pub use_: Option<String>,
    #[serde(default)]
    pub key_ops: Option<Vec<String>>,
    #[serde(default)]
    pub adcp_use: Option<String>,
    pub x: String,
    #[serde(default)]
    pub y: Option<String>,
}

/// What the verifier needs to know about keys and history, supplied by the caller.
pub trait Trust {
    fn key(&self, keyid: &str) -> Option<Jwk>;
    /// Revocation state of a key; the spec defines no transport for the list, so callers
    /// without one answer `Ok(false)`.
    fn revoked(&self, keyid: &str) -> Result<bool, SignatureError> {
        let _ = keyid;
        Ok(false)
    }
    /// Per-key cap of the replay cache reached.
    fn over_cap(&self, keyid: &str) -> bool {
        let _ = keyid;
        false
    }
    fn nonce_seen(&self, keyid: &str, nonce: &str) -> bool;
}

/// A request to verify. `target_uri` is the URI the sender addressed (the registered public
/// webhook URL), not the address the request reached us on.
pub struct Request<'a> {
    pub method: &'a str,
    pub target_uri: &'a str,
    pub headers: &'a http::HeaderMap,
    pub body: &'a [u8],
    pub now_s: i64,
}

/// A verified signature: what the caller must remember to refuse replays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub keyid: String,
    pub nonce: String,
    pub expires_s: i64,
}

fn header(h: &http::HeaderMap, name: &str) -> Option<String> {
    let values: Vec<&str> = h
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

pub fn verify(req: &Request<'_>, trust: &dyn Trust) -> Result<Verified, SignatureError> {
    use SignatureError::*;
    // Step 1: both headers, well formed, the `sig1` label (else the first) in both.
    let input = header(req.headers, "signature-input").ok_or(HeaderMalformed)?;
    let signature = header(req.headers, "signature").ok_or(HeaderMalformed)?;
    let inputs: Dictionary = Parser::new(&input).parse().map_err(|_| HeaderMalformed)?;
    let (label, entry) = inputs
        .get_key_value("sig1")
        .or_else(|| inputs.first())
        .ok_or(HeaderMalformed)?;
    let ListEntry::InnerList(covered) = entry else {
        return Err(HeaderMalformed);
    };
    let sig_bytes = signature_value(&signature, label.as_str()).ok_or(HeaderMalformed)?;

    // Step 2: the parameters.
    let param = |k: &str| covered.params.get(k);
    let int = |k: &str| param(k).and_then(BareItem::as_integer).map(i64::from);
    let text = |k: &str| {
        param(k).and_then(|v| {
            v.as_string()
                .map(|s| s.as_str().to_string())
                .or_else(|| v.as_token().map(|t| t.as_str().to_string()))
        })
    };
    let (Some(created), Some(expires), Some(nonce), Some(keyid), Some(alg), Some(tag)) = (
        int("created"),
        int("expires"),
        text("nonce"),
        text("keyid"),
        text("alg"),
        text("tag"),
    ) else {
        return Err(ParamsIncomplete);
    };
    // Step 3, 4.
    if tag != TAG {
        return Err(TagInvalid);
    }
    if alg != "ed25519" && alg != "ecdsa-p256-sha256" {
        return Err(AlgNotAllowed);
    }
    // Step 5: the validity window.
    if expires <= created
        || expires - created > MAX_WINDOW_S
        || created > req.now_s + SKEW_S
        || expires < req.now_s - SKEW_S
    {
        return Err(WindowInvalid);
    }
    // Step 6: every required component covered.
    let names: Vec<&str> = covered
        .items
        .iter()
        .filter_map(|i| i.bare_item.as_string().map(|s| s.as_str()))
        .collect();
    if names.len() != covered.items.len() || REQUIRED_COMPONENTS.iter().any(|c| !names.contains(c))
    {
        return Err(ComponentsIncomplete);
    }
    // Step 7, 8: the key and its purpose.
    let jwk = trust.key(&keyid).ok_or(KeyUnknown)?;
    let purpose_ok = jwk.use_.as_deref().is_none_or(|u| u == "sig")
        && jwk
            .key_ops
            .as_ref()
            .is_some_and(|ops| ops.iter().any(|o| o == "verify"))
        && matches!(
            jwk.adcp_use.as_deref(),
            Some("request-signing" | "webhook-signing")
        );
    if !purpose_ok {
        return Err(KeyPurposeInvalid);
    }
    // Step 9: revocation and the per-key cap.
    if trust.revoked(&keyid)? {
        return Err(KeyRevoked);
    }
    if trust.over_cap(&keyid) {
        return Err(RateAbuse);
    }
    // Step 10: the signature over the signature base.
    let base = signature_base(req, &names, covered)?;
    verify_signature(&jwk, &alg, base.as_bytes(), &sig_bytes)?;
    // Step 11: the body matches its digest.
    let digest = header(req.headers, "content-digest").ok_or(DigestMismatch)?;
    if !digest_matches(&digest, req.body) {
        return Err(DigestMismatch);
    }
    // Step 12: replay.
    if trust.nonce_seen(&keyid, &nonce) {
        return Err(Replayed);
    }
    Ok(Verified {
        keyid,
        nonce,
        expires_s: expires,
    })
}

/// The `Signature` member for `label`: `label=:<unpadded base64url>:`. Mixed alphabets,
/// padding or stray characters are malformed.
fn signature_value(header: &str, label: &str) -> Option<Vec<u8>> {
    header.split(',').map(str::trim).find_map(|member| {
        let (name, value) = member.split_once('=')?;
        if name.trim() != label {
            return None;
        }
        let token = value.trim().strip_prefix(':')?.strip_suffix(':')?;
        if token.bytes().any(|b| matches!(b, b'+' | b'/' | b'=')) {
            return None;
        }
        URL_SAFE_NO_PAD.decode(token).ok()
    })
}

/// The signature base (RFC 9421 §2.5) for the covered components.
pub fn signature_base(
    req: &Request<'_>,
    names: &[&str],
    covered: &sfv::InnerList,
) -> Result<String, SignatureError> {
    let mut base = String::new();
    let target = canonical_target_uri(req.target_uri).ok_or(SignatureError::HeaderMalformed)?;
    for name in names {
        let value = match *name {
            "@method" => req.method.to_ascii_uppercase(),
            "@target-uri" => target.clone(),
            "@authority" => authority(&target).ok_or(SignatureError::HeaderMalformed)?,
            h if !h.starts_with('@') => header(req.headers, h)
                .ok_or(SignatureError::ComponentsIncomplete)?
                .trim()
                .to_string(),
            _ => return Err(SignatureError::ComponentsIncomplete),
        };
        base.push_str(&format!("\"{name}\": {value}\n"));
    }
    let params = List::from([ListEntry::InnerList(covered.clone())])
        .serialize()
        .ok_or(SignatureError::HeaderMalformed)?;
    base.push_str(&format!("\"@signature-params\": {params}"));
    Ok(base)
}

fn verify_signature(jwk: &Jwk, alg: &str, base: &[u8], sig: &[u8]) -> Result<(), SignatureError> {
    use SignatureError::*;
    let b64 = |s: &str| URL_SAFE_NO_PAD.decode(s).map_err(|_| KeyPurposeInvalid);
    match (alg, jwk.kty.as_str(), jwk.crv.as_deref()) {
        ("ed25519", "OKP", Some("Ed25519")) => {
            let x: [u8; 32] = b64(&jwk.x)?.try_into().map_err(|_| KeyPurposeInvalid)?;
            let key = ed25519_dalek::VerifyingKey::from_bytes(&x).map_err(|_| KeyPurposeInvalid)?;
            let sig = ed25519_dalek::Signature::from_slice(sig).map_err(|_| Invalid)?;
            key.verify_strict(base, &sig).map_err(|_| Invalid)
        }
        ("ecdsa-p256-sha256", "EC", Some("P-256")) => {
            use p256::ecdsa::signature::Verifier;
            let (x, y) = (
                b64(&jwk.x)?,
                b64(jwk.y.as_deref().ok_or(KeyPurposeInvalid)?)?,
            );
            let mut point = vec![4u8];
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                .map_err(|_| KeyPurposeInvalid)?;
            let sig = p256::ecdsa::Signature::from_slice(sig).map_err(|_| Invalid)?;
            key.verify(base, &sig).map_err(|_| Invalid)
        }
        // The key cannot produce signatures of this algorithm.
        _ => Err(KeyPurposeInvalid),
    }
}

/// `Content-Digest` holds a `sha-256` entry equal to the body's digest.
pub fn digest_matches(header: &str, body: &[u8]) -> bool {
    let Ok(dict) = Parser::new(header).parse::<Dictionary>() else {
        return false;
    };
    let Some(ListEntry::Item(item)) = dict.get("sha-256") else {
        return false;
    };
    let expected = Sha256::digest(body);
    item.bare_item
        .as_byte_sequence()
        .is_some_and(|b| b == expected.as_slice())
}

/// `sha-256=:<base64>:` for a body (what a signer sends).
pub fn content_digest(body: &[u8]) -> String {
    format!("sha-256=:{}:", STANDARD.encode(Sha256::digest(body)))
}

/// Canonical `@target-uri`: lower-case scheme and host, default port removed, dot segments
/// removed, percent-encodings upper-cased (and decoded for unreserved characters), the query
/// kept byte for byte.
pub fn canonical_target_uri(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let (authority, path_query) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (path, query) = match path_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_query, None),
    };
    let authority = authority.to_ascii_lowercase();
    let default = match scheme.as_str() {
        "https" => ":443",
        "http" => ":80",
        _ => "",
    };
    let authority =
        if !default.is_empty() && authority.ends_with(default) && !authority.ends_with(']') {
            authority[..authority.len() - default.len()].to_string()
        } else {
            authority
        };
    if authority.is_empty() {
        return None;
    }
    let path = normalize_path(if path.is_empty() { "/" } else { path })?;
    Some(match query {
        Some(q) => format!("{scheme}://{authority}{path}?{q}"),
        None => format!("{scheme}://{authority}{path}"),
    })
}

fn authority(canonical: &str) -> Option<String> {
    let rest = canonical.split_once("://")?.1;
    Some(rest[..rest.find(['/', '?']).unwrap_or(rest.len())].to_string())
}

fn normalize_path(path: &str) -> Option<String> {
    // Percent-encodings: decode unreserved characters, upper-case the rest.
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = path.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(hex, 16).ok()?;
            if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
                out.push(v as char);
            } else {
                out.push('%');
                out.push_str(&hex.to_ascii_uppercase());
            }
            i += 3;
        } else {
            out.push(bytes[i] as char);
            i += 1;
        }
    }
    // Dot segments (RFC 3986 §5.2.4).
    let mut segments: Vec<&str> = Vec::new();
    let trailing = out.ends_with('/') || out.ends_with("/.") || out.ends_with("/..");
    for seg in out.split('/').skip(1) {
        match seg {
            "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut p = format!("/{}", segments.join("/"));
    if trailing && !p.ends_with('/') {
        p.push('/');
    }
    Some(p)
}

#[cfg(test)]
mod tests;
