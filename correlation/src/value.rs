//! Header values the request path makes (generated ids, outgoing
//! `traceparent`s), carved from a per-thread buffer.
//!
//! A `HeaderValue` owns its bytes through `Bytes`, so a fresh one is an
//! allocation, and a value copied from a slice allocates again on its first
//! clone. Carving values out of one 4 KiB buffer, as hyper carves inbound
//! headers out of its read buffer, makes that one allocation per 70-odd
//! values: every value is a reference-counted slice, and the buffer is
//! freed with the last value cut from it. So a value kept for a long time
//! keeps its 4 KiB alive: only values that live as long as their request
//! come from here. What a caller may keep (a cloned or generated
//! [`CorrelationId`](crate::CorrelationId), a `traceparent` from
//! [`TraceContext::to_traceparent`](crate::TraceContext::to_traceparent))
//! owns exactly its bytes instead.

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};
use http::HeaderValue;

const CHUNK: usize = 4096;

thread_local! {
    static BUF: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// A header value holding `bytes`, which must be a valid header value (the
/// callers write hex digits, dashes and id characters).
pub(crate) fn carve(bytes: &[u8]) -> HeaderValue {
    debug_assert!(bytes.len() <= CHUNK);
    let shared = BUF
        .try_with(|buf| {
            let mut buf = buf.borrow_mut();
            if buf.capacity() - buf.len() < bytes.len() {
                *buf = BytesMut::with_capacity(CHUNK);
            }
            buf.extend_from_slice(bytes);
            buf.split().freeze()
        })
        // Thread-local storage is being torn down: one allocation.
        .unwrap_or_else(|_| Bytes::from_owner(bytes.to_vec()));
    HeaderValue::from_maybe_shared(shared).expect("callers write valid header values")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_independent_slices() {
        let a = carve(b"first");
        let b = carve(b"second");
        assert_eq!(a.as_bytes(), b"first");
        assert_eq!(b.as_bytes(), b"second");
        let a2 = a.clone();
        drop(a);
        assert_eq!(a2.as_bytes(), b"first");
    }

    #[test]
    fn a_full_buffer_is_replaced() {
        let values: Vec<_> = (0..200u8)
            .map(|i| carve(format!("{i:055}").as_bytes()))
            .collect();
        for (i, v) in values.iter().enumerate() {
            assert_eq!(v.as_bytes(), format!("{i:055}").as_bytes());
        }
    }
}
