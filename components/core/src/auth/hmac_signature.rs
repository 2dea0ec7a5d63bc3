//! AdCP's legacy webhook HMAC-SHA256 (deprecated, removed in AdCP 4): `X-ADCP-Signature:
//! sha256=<lowercase hex>` over `"{X-ADCP-Timestamp}.{raw body}"`, keyed with the secret's
//! UTF-8 string bytes (never hex-decoded), within ±300 s, compared in constant time, and a
//! body with duplicate JSON keys refused even when the signature is valid.

use hmac::{Hmac, Mac};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use sha2::Sha256;
use std::collections::HashSet;
use std::fmt;

/// Allowed sender/receiver clock difference.
pub const WINDOW_S: i64 = 300;
/// Shortest secret accepted (AdCP: at least 32 bytes).
pub const MIN_SECRET_BYTES: usize = 32;

/// Why a delivery failed verification, in the spec's check order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HmacError {
    MissingHeader,
    BadTimestamp,
    OutsideWindow,
    BadSignature,
    /// Valid signature over a body with duplicate object keys (`webhook_body_malformed`).
    MalformedBody,
}

impl HmacError {
    pub fn code(self) -> &'static str {
        match self {
            HmacError::MissingHeader => "webhook_signature_missing",
            HmacError::BadTimestamp => "webhook_timestamp_invalid",
            HmacError::OutsideWindow => "webhook_timestamp_out_of_window",
            HmacError::BadSignature => "webhook_signature_invalid",
            HmacError::MalformedBody => "webhook_body_malformed",
        }
    }
}

/// Refuses secrets too short to be strong, or without any variety.
pub fn acceptable_secret(secret: &str) -> bool {
    let bytes = secret.as_bytes();
    bytes.len() >= MIN_SECRET_BYTES && bytes.iter().any(|b| *b != bytes[0])
}

/// `sha256=<hex>` for a timestamp and body (what a sender puts in `X-ADCP-Signature`).
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "sha256={}",
        crate::foundation::clock::hex(&mac.finalize().into_bytes())
    )
}

/// Verifies a delivery against any of `secrets` (current, then previous during rotation).
/// `signature`/`timestamp` are the header values, if present (the caller matches names
/// case-insensitively).
pub fn verify(
    secrets: &[&[u8]],
    signature: Option<&str>,
    timestamp: Option<&str>,
    body: &[u8],
    now_s: i64,
) -> Result<(), HmacError> {
    let signature = signature
        .filter(|s| !s.is_empty())
        .ok_or(HmacError::MissingHeader)?;
    let timestamp = timestamp
        .filter(|t| !t.is_empty())
        .ok_or(HmacError::MissingHeader)?;
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| HmacError::BadTimestamp)?;
    if (now_s - ts).abs() > WINDOW_S {
        return Err(HmacError::OutsideWindow);
    }
    let hex = signature
        .strip_prefix("sha256=")
        .ok_or(HmacError::BadSignature)?;
    let presented = unhex(hex)
        .filter(|b| b.len() == 32)
        .ok_or(HmacError::BadSignature)?;
    if !signed(secrets, timestamp, body, &presented) {
        return Err(HmacError::BadSignature);
    }
    if has_duplicate_keys(body) {
        return Err(HmacError::MalformedBody);
    }
    Ok(())
}

fn signed(secrets: &[&[u8]], timestamp: &str, body: &[u8], presented: &[u8]) -> bool {
    secrets.iter().any(|secret| {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts any key length");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        // `verify_slice` compares in constant time.
        mac.verify_slice(presented).is_ok()
    })
}

/// After [`verify`] answered `BadSignature`: whether the signature is over another
/// serialization of the same JSON than the bytes sent (compact, or Python's default spaced
/// separators, in the body's key order): a seller holding the secret whose signer
/// re-serialized. Still refused (the spec's `signer-spaced-wire-compact` vector); this only
/// tells a seller's interop defect from a forgery.
pub fn signed_another_serialization(
    secrets: &[&[u8]],
    signature: Option<&str>,
    timestamp: Option<&str>,
    body: &[u8],
) -> bool {
    let (Some(signature), Some(timestamp)) = (signature, timestamp) else {
        return false;
    };
    let Some(presented) = signature
        .strip_prefix("sha256=")
        .and_then(unhex)
        .filter(|b| b.len() == 32)
    else {
        return false;
    };
    [
        reserialized(body, serde_json::ser::CompactFormatter),
        spaced(body),
    ]
    .into_iter()
    .flatten()
    .any(|other| other != body && signed(secrets, timestamp, &other, &presented))
}

/// The JSON in `body` as Python's `json.dumps` writes it by default (`", "` and `": "`), in
/// its own key order; `None` if it is not JSON.
pub fn spaced(body: &[u8]) -> Option<Vec<u8>> {
    reserialized(body, PythonSpaced)
}

fn reserialized<F: serde_json::ser::Formatter>(body: &[u8], formatter: F) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(body);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    serde_transcode::transcode(&mut de, &mut ser).ok()?;
    de.end().ok()?;
    Some(out)
}

/// `json.dumps`' default separators: `", "` and `": "`.
struct PythonSpaced;

impl serde_json::ser::Formatter for PythonSpaced {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// True when some JSON object in `body` repeats a key (the parser-divergence attack class
/// the spec forbids). Non-JSON bodies are not this check's business.
pub fn has_duplicate_keys(body: &[u8]) -> bool {
    let mut de = serde_json::Deserializer::from_slice(body);
    matches!(de.deserialize_any(DupCheck), Err(e) if e.to_string().starts_with(DUPLICATE))
}

const DUPLICATE: &str = "duplicate key";

struct DupCheck;

impl<'de> Visitor<'de> for DupCheck {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format!("{DUPLICATE} `{key}`")));
            }
            map.next_value_seed(DupSeed)?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(DupSeed)?.is_some() {}
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

struct DupSeed;

impl<'de> de::DeserializeSeed<'de> for DupSeed {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(DupCheck)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// 3.1.19's; the 3.2.4 set ships no HMAC vectors.
    fn vectors() -> Value {
        crate::testing::adcp::read_json(
            &crate::testing::adcp::shared().join("test-vectors/webhook-hmac-sha256.json"),
        )
    }

    #[test]
    fn every_positive_vector_signs_and_verifies_and_duplicate_keys_are_malformed() {
        let v = vectors();
        let secret = v["secret"].as_str().unwrap().as_bytes();
        let list = v["vectors"].as_array().unwrap();
        assert_eq!(list.len(), 15);
        for case in list {
            let id = case["id"].as_str().unwrap();
            let ts = case["timestamp"].as_i64().unwrap().to_string();
            let body = case["raw_body"].as_str().unwrap().as_bytes();
            let expected = case["expected_signature"].as_str().unwrap();
            assert_eq!(sign(secret, &ts, body), expected, "{id}");
            let now = ts.parse::<i64>().unwrap();
            let result = verify(&[secret], Some(expected), Some(&ts), body, now);
            match case.get("expected_verifier_action").and_then(Value::as_str) {
                Some("reject-malformed") => {
                    assert_eq!(result, Err(HmacError::MalformedBody), "{id}")
                }
                _ => assert_eq!(result, Ok(()), "{id}"),
            }
        }
    }

    #[test]
    fn every_rejection_vector_is_rejected_for_its_reason() {
        let v = vectors();
        let secret = v["secret"].as_str().unwrap().as_bytes();
        let list = v["rejection_vectors"].as_array().unwrap();
        assert_eq!(list.len(), 10);
        for case in list {
            let id = case["id"].as_str().unwrap();
            let ts = match &case["timestamp"] {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                _ => String::new(),
            };
            let now = case
                .get("current_time")
                .and_then(Value::as_i64)
                .unwrap_or(1_700_000_000);
            let body = case["raw_body"].as_str().unwrap().as_bytes();
            let sig = case["signature"].as_str();
            let expected = match id {
                "missing-signature" | "empty-signature" => HmacError::MissingHeader,
                "non-numeric-timestamp" => HmacError::BadTimestamp,
                "timestamp-too-old" | "timestamp-too-future" => HmacError::OutsideWindow,
                _ => HmacError::BadSignature,
            };
            assert_eq!(
                verify(&[secret], sig, Some(&ts), body, now),
                Err(expected),
                "{id}"
            );
        }
    }

    #[test]
    fn a_signature_over_another_serialization_is_refused_and_told_from_a_forgery() {
        let v = vectors();
        let secret = v["secret"].as_str().unwrap().as_bytes();
        let case = v["rejection_vectors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == "signer-spaced-wire-compact")
            .unwrap();
        let (body, sig) = (
            case["raw_body"].as_str().unwrap().as_bytes(),
            case["signature"].as_str(),
        );
        let ts = Some("1700000000");
        // Signed spaced, sent compact: the vector's case.
        assert_eq!(
            verify(&[secret], sig, ts, body, 1_700_000_000),
            Err(HmacError::BadSignature)
        );
        assert!(signed_another_serialization(&[secret], sig, ts, body));
        // Signed compact, sent spaced (a seller on an older SDK): the other way round.
        let spaced =
            br#"{"task_id": "t1", "status": "completed", "result": {"media_buy_id": "mb"}}"#;
        let compact = br#"{"task_id":"t1","status":"completed","result":{"media_buy_id":"mb"}}"#;
        let over_compact = sign(secret, "1700000000", compact);
        assert!(signed_another_serialization(
            &[secret],
            Some(&over_compact),
            ts,
            spaced
        ));
        // Neither a tampered body nor another key is mistaken for it.
        let tampered =
            br#"{"task_id": "t1", "status": "failed", "result": {"media_buy_id": "mb"}}"#;
        assert!(!signed_another_serialization(
            &[secret],
            Some(&over_compact),
            ts,
            tampered
        ));
        let other = b"another-secret-0123456789abcdef-0123".as_slice();
        assert!(!signed_another_serialization(
            &[other],
            Some(&over_compact),
            ts,
            spaced
        ));
        assert!(!signed_another_serialization(
            &[secret],
            Some("sha256=00"),
            ts,
            spaced
        ));
    }

    #[test]
    fn weak_secrets_are_refused_and_the_previous_secret_still_verifies() {
        let v = vectors();
        for case in v["secret_rejection_vectors"].as_array().unwrap() {
            let s = case["secret"].as_str().unwrap();
            // All-zero *bytes* given as ASCII '0' characters have no variety either.
            assert!(!acceptable_secret(s), "{s:?}");
        }
        assert!(acceptable_secret(v["secret"].as_str().unwrap()));
        let (old, new) = (
            b"old-secret-0123456789abcdef-0123456789".as_slice(),
            b"new-secret-0123456789abcdef-0123456789".as_slice(),
        );
        let sig = sign(old, "100", b"{}");
        assert_eq!(
            verify(&[new, old], Some(&sig), Some("100"), b"{}", 100),
            Ok(())
        );
        assert_eq!(
            verify(&[new], Some(&sig), Some("100"), b"{}", 100),
            Err(HmacError::BadSignature)
        );
    }
}
