//! Encryption at rest (XChaCha20-Poly1305, key from a secret Spin variable) for secrets we must
//! read back (seller credentials, webhook secrets); values only compared (API keys, webhook
//! tokens) are hashed ([`digest_hex`]). Rotation: `encryption_key` holds one key or several,
//! comma-separated, newest first (`NEW,OLD`); the first seals, each opens what it sealed, and
//! an old key goes once nothing sealed under it is left (README, "Rotating the encryption key").

use crate::foundation::clock::{Entropy, hex};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// The sealing keys, newest first: the first seals, any opens. Its `Debug` never shows a key.
#[derive(Clone)]
pub struct SealingKey(Vec<XChaCha20Poly1305>);

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealingKey(..)")
    }
}

/// Why a key or a sealed value was refused. Never carries secret material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealError {
    /// A configured key is not 64 hex characters (32 bytes), or none is configured.
    BadKey,
    /// Tampered, truncated, sealed under another key, or sealed for another purpose.
    Unreadable,
}

impl fmt::Display for SealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SealError::BadKey => f.write_str("encryption_key must be 64 hex characters (32 bytes)"),
            SealError::Unreadable => f.write_str("sealed value cannot be opened"),
        }
    }
}

impl std::error::Error for SealError {}

/// A sealed secret as stored: random 24-byte nonce and ciphertext, both hex.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    pub nonce: String,
    pub ciphertext: String,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealed(..)")
    }
}

impl SealingKey {
    /// One key, or several separated by commas, newest first.
    pub fn from_hex(keys: &str) -> Result<SealingKey, SealError> {
        keys.split(',')
            .map(|key| {
                let bytes = unhex(key.trim()).filter(|b| b.len() == 32);
                XChaCha20Poly1305::new_from_slice(&bytes.ok_or(SealError::BadKey)?)
                    .map_err(|_| SealError::BadKey)
            })
            .collect::<Result<Vec<_>, _>>()
            .map(SealingKey)
    }

    /// Seals `secret`, bound to `purpose` (e.g. `"seller:t1:s1"`) so a sealed value copied
    /// to another record does not open there.
    pub fn seal(&self, entropy: &dyn Entropy, purpose: &str, secret: &[u8]) -> Sealed {
        let mut nonce = [0u8; 24];
        entropy.fill(&mut nonce);
        let ciphertext = self.0[0]
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: secret,
                    aad: purpose.as_bytes(),
                },
            )
            // Encryption only fails for messages beyond 256 GiB.
            .unwrap_or_default();
        Sealed {
            nonce: hex(&nonce),
            ciphertext: hex(&ciphertext),
        }
    }

    pub fn open(&self, purpose: &str, sealed: &Sealed) -> Result<Vec<u8>, SealError> {
        let nonce = unhex(&sealed.nonce)
            .filter(|n| n.len() == 24)
            .ok_or(SealError::Unreadable)?;
        let ct = unhex(&sealed.ciphertext).ok_or(SealError::Unreadable)?;
        let payload = || Payload {
            msg: &ct,
            aad: purpose.as_bytes(),
        };
        self.0
            .iter()
            .find_map(|k| k.decrypt(XNonce::from_slice(&nonce), payload()).ok())
            .ok_or(SealError::Unreadable)
    }

    pub fn open_string(&self, purpose: &str, sealed: &Sealed) -> Result<String, SealError> {
        String::from_utf8(self.open(purpose, sealed)?).map_err(|_| SealError::Unreadable)
    }
}

/// SHA-256 of `value`, hex: how API keys and webhook tokens are stored.
pub fn digest_hex(value: &[u8]) -> String {
    hex(&Sha256::digest(value))
}

/// Constant-time equality of two byte strings (length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::SeededEntropy;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn seal_round_trips_and_binds_the_purpose() {
        let key = SealingKey::from_hex(KEY).unwrap();
        let e = SeededEntropy::new(1);
        let sealed = key.seal(&e, "seller:t1:s1", b"s3cret-token");
        assert!(!sealed.ciphertext.contains(&hex(b"s3cret-token")));
        assert_eq!(key.open("seller:t1:s1", &sealed).unwrap(), b"s3cret-token");
        assert_eq!(
            key.open("seller:t1:s2", &sealed),
            Err(SealError::Unreadable)
        );
        let other = SealingKey::from_hex(&KEY.replace("00", "ff")).unwrap();
        assert_eq!(
            other.open("seller:t1:s1", &sealed),
            Err(SealError::Unreadable)
        );
        let mut tampered = sealed.clone();
        tampered.ciphertext.replace_range(0..2, "00");
        assert_eq!(
            key.open("seller:t1:s1", &tampered),
            Err(SealError::Unreadable)
        );
        assert_eq!(format!("{sealed:?} {key:?}"), "Sealed(..) SealingKey(..)");
    }

    #[test]
    fn a_rotated_key_seals_while_the_old_one_still_opens() {
        let e = SeededEntropy::new(2);
        let new = KEY.replace("00", "ee");
        let old = SealingKey::from_hex(KEY).unwrap();
        let before = old.seal(&e, "webhook:op1:secret", b"made before");
        let rotated = SealingKey::from_hex(&format!("{new}, {KEY}")).unwrap();
        assert_eq!(
            rotated.open("webhook:op1:secret", &before).unwrap(),
            b"made before"
        );
        let after = rotated.seal(&e, "webhook:op1:secret", b"made after");
        let only_new = SealingKey::from_hex(&new).unwrap();
        assert_eq!(
            only_new.open("webhook:op1:secret", &after).unwrap(),
            b"made after"
        );
        assert_eq!(
            old.open("webhook:op1:secret", &after),
            Err(SealError::Unreadable)
        );
        assert_eq!(
            only_new.open("webhook:op1:secret", &before),
            Err(SealError::Unreadable),
            "dropping the old key too early makes its values unreadable"
        );
    }

    #[test]
    fn bad_keys_are_refused() {
        for k in [
            "",
            "zz",
            &KEY[..62],
            &format!("{KEY}00"),
            &format!("{KEY},"),
            &format!("{KEY},zz"),
        ] {
            assert_eq!(SealingKey::from_hex(k).unwrap_err(), SealError::BadKey);
        }
    }

    #[test]
    fn constant_time_equality() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert_eq!(
            digest_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
