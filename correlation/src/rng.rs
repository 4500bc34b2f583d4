//! Fast random bytes for ids.
//!
//! Trace, span and correlation ids need uniqueness, not secrecy: a
//! per-thread wyrand generator, seeded once per thread from the OS-seeded
//! `rand::rng()`, costs a couple of nanoseconds instead of a ChaCha block.

use std::cell::Cell;

use rand::RngCore;

thread_local! {
    static STATE: Cell<u64> = const { Cell::new(0) };
}

fn next_u64() -> u64 {
    STATE.with(|state| {
        let mut s = state.get();
        if s == 0 {
            s = rand::rng().next_u64() | 1;
        }
        s = s.wrapping_add(0xa076_1d64_78bd_642f);
        state.set(s);
        let t = u128::from(s) * u128::from(s ^ 0xe703_7ed1_a0b4_28db);
        (t >> 64) as u64 ^ t as u64
    })
}

/// `N` random bytes.
pub(crate) fn bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    for chunk in out.chunks_mut(8) {
        let word = next_u64().to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn differs_between_calls() {
        assert_ne!(super::bytes::<16>(), super::bytes::<16>());
        assert_ne!(super::bytes::<8>(), [0; 8]);
    }

    #[test]
    fn threads_get_different_streams() {
        let a = std::thread::spawn(super::bytes::<16>).join().unwrap();
        let b = std::thread::spawn(super::bytes::<16>).join().unwrap();
        assert_ne!(a, b);
    }
}
