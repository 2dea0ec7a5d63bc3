//! Time and randomness, injected so that every decision in the core is reproducible.

/// Wall-clock time in Unix milliseconds. Components read the host clock; tests pass a fixed one.
pub trait Clock {
    fn now_ms(&self) -> u64;
}

/// Cryptographically secure random bytes (in components: `wasi:random`).
pub trait Entropy {
    fn fill(&self, buf: &mut [u8]);
}

/// A clock that always answers the same instant: the value a handler captured at its start,
/// or a test's chosen time.
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

/// Lower-case hex encoding.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

#[cfg(test)]
pub mod testing {
    use super::Entropy;
    use std::cell::Cell;

    /// Deterministic "randomness" for tests: a counter run through SplitMix64.
    pub struct SeededEntropy(pub Cell<u64>);

    impl SeededEntropy {
        pub fn new(seed: u64) -> Self {
            SeededEntropy(Cell::new(seed))
        }
    }

    impl Entropy for SeededEntropy {
        fn fill(&self, buf: &mut [u8]) {
            for chunk in buf.chunks_mut(8) {
                let mut z = self.0.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
                self.0.set(z);
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
            }
        }
    }
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
        let a = testing::SeededEntropy::new(7);
        let b = testing::SeededEntropy::new(7);
        assert_eq!(random_hex(&a, 16), random_hex(&b, 16));
        assert_ne!(random_hex(&a, 16), random_hex(&a, 16));
    }
}
