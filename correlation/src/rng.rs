//! Fast random bytes for ids.
//!
//! Trace, span and correlation ids need uniqueness, not secrecy: a
//! per-thread small PRNG (xoshiro), seeded once per thread from the OS-seeded
//! `rand::rng()`, costs a few nanoseconds instead of a ChaCha block.

use std::cell::RefCell;

use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

thread_local! {
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_rng(&mut rand::rng()));
}

/// `N` random bytes.
pub(crate) fn bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    RNG.with(|rng| {
        let mut rng = rng.borrow_mut();
        for chunk in out.chunks_mut(8) {
            let word = rng.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    });
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn differs_between_calls() {
        assert_ne!(super::bytes::<16>(), super::bytes::<16>());
    }
}
