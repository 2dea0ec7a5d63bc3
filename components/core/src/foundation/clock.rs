//! Time and randomness, injected so that every decision in the core is reproducible.

/// Wall-clock time in Unix milliseconds. Components read the host clock; tests pass a fixed one.
pub trait Clock {
    fn now_ms(&self) -> u64;
}

/// Cryptographically secure random bytes (in components: `wasi:random`).
pub trait Entropy {
    fn fill(&self, buf: &mut [u8]);
}

/// Always the same instant: what a handler captured at its start, or a test's chosen time.
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub u64);

impl Clock for FixedClock {
    fn now_ms(&self) -> u64 {
        self.0
    }
}

/// Lower-case hex of `n` random bytes: identifiers, idempotency keys, secrets.
pub fn random_hex(entropy: &dyn Entropy, n: usize) -> String {
    let mut buf = vec![0u8; n];
    entropy.fill(&mut buf);
    hex(&buf)
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

/// A fresh AdCP `idempotency_key` (UUID v4 from the injected entropy).
pub fn uuid_v4(entropy: &dyn Entropy) -> String {
    let mut b = [0u8; 16];
    entropy.fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_encodes_lowercase() {
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
    }

    #[test]
    fn seeded_entropy_is_reproducible() {
        let a = crate::testing::SeededEntropy::new(7);
        let b = crate::testing::SeededEntropy::new(7);
        assert_eq!(random_hex(&a, 16), random_hex(&b, 16));
        assert_ne!(random_hex(&a, 16), random_hex(&a, 16));
    }
}
