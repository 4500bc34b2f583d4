//! The stable rollout hash.
//!
//! A percentage rollout puts every targeting key into one of
//! [`BUCKETS`] buckets and turns the flag on for the buckets below the
//! threshold. The bucket depends only on the flag name and the key, through a
//! hash that is fixed here and never seeded: the same key gets the same answer
//! in every process, on every machine and after every restart, and raising a
//! rollout from 20% to 30% keeps every key that was on at 20% on.
//!
//! The hash is 64-bit FNV-1a over `flag name`, a `0xFF` separator (a byte that
//! never occurs in UTF-8, so `("ab", "c")` and `("a", "bc")` differ) and the
//! key, followed by the MurmurHash3 `fmix64` finalizer so that keys differing
//! in one character spread over all buckets. The bucket is the result modulo
//! [`BUCKETS`]. Changing any of this reshuffles every rollout, so it is part
//! of the crate's stable contract.

/// Number of rollout buckets: `100_000`, so rollouts have a resolution of
/// 0.001%.
pub const BUCKETS: u32 = 100_000;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The bucket, in `0..BUCKETS`, of `key` for the flag `flag`.
///
/// ```
/// use resilience_flags::hash::{bucket, BUCKETS};
/// let b = bucket("new-checkout", "user-42");
/// assert!(b < BUCKETS);
/// assert_eq!(b, bucket("new-checkout", "user-42")); // stable
/// ```
#[inline]
pub fn bucket(flag: &str, key: &str) -> u32 {
    bucket_with(prefix(flag), key)
}

/// The FNV-1a state after the flag name and the separator, computed once
/// per flag when it is built.
#[inline]
pub(crate) fn prefix(flag: &str) -> u64 {
    let h = fnv(FNV_OFFSET, flag.as_bytes());
    (h ^ 0xFF).wrapping_mul(FNV_PRIME)
}

/// [`bucket`] from a precomputed [`prefix`].
#[inline]
pub(crate) fn bucket_with(prefix: u64, key: &str) -> u32 {
    let mut h = fnv(prefix, key.as_bytes());
    // MurmurHash3 fmix64.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    // `h % BUCKETS` fits in u32.
    (h % u64::from(BUCKETS)) as u32
}

#[inline]
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// A fixed, word-at-a-time hasher (the rustc `FxHasher` scheme) for the
/// flag-name maps: fast on short names and not seeded. Lookups of
/// request-chosen names (override headers) in a map whose contents the
/// operator chose cannot be turned into a collision attack. Not part of the
/// rollout contract: only [`bucket`] is.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct NameHasher(u64);

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl NameHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl std::hash::Hasher for NameHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, b: u8) {
        self.add(u64::from(b));
    }
}

pub(crate) type NameBuildHasher = std::hash::BuildHasherDefault<NameHasher>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_never_change() {
        // Pinned: a change here reshuffles every rollout in production.
        let pinned = [
            bucket("new-checkout", "user-1"),
            bucket("new-checkout", "user-2"),
            bucket("", ""),
            bucket("a", "bc"),
            bucket("ab", "c"),
        ];
        assert_eq!(pinned, PINNED);
        assert_ne!(bucket("a", "bc"), bucket("ab", "c"));
    }

    const PINNED: [u32; 5] = [9608, 48354, 62295, 93216, 25411];
}
