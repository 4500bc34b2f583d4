//! Correlation ids: validated on the way in, generated when missing.

use std::fmt;

use http::HeaderValue;

/// The longest correlation id accepted: 128 bytes.
pub const MAX_ID_LEN: usize = 128;

/// A correlation id: 1 to [`MAX_ID_LEN`] characters of `[A-Za-z0-9._:-]`.
///
/// One id names a whole operation across every service it touches.
///
/// # What a clone and a kept id cost
///
/// An id is a `HeaderValue`, so writing it to a header never copies it. On
/// the request path it is never copied either: the id of an inbound request
/// is a slice of the buffer its headers were read into, and an id the server
/// layer generates is cut from a per-thread 4 KiB buffer (one allocation per
/// 100-odd ids). Such a slice keeps its whole buffer alive, so an id that
/// leaves the request path owns exactly its bytes:
///
/// - `clone()` of an id from a request copies its bytes into one allocation
///   of their length (36 bytes for a generated id, at most
///   [`MAX_ID_LEN`]); a kept clone keeps those bytes and, once it is cloned
///   or written to a header in turn, a 24-byte shared header: 60 bytes for a
///   generated id, never the buffer it came from. Clones of that clone share
///   it (a reference count).
/// - [`generate`](Self::generate) and [`str::parse`] make an id that owns
///   exactly its bytes; [`from_header`](Self::from_header) shares the value
///   it is given, as `HeaderValue::clone` does.
/// - [`to_header_value`](Self::to_header_value) shares the id's bytes: it is
///   for a header sent now. To keep an id, keep a clone of the id.
///
/// The id held by a [`RequestContext`](crate::RequestContext) is the request
/// path's: a context kept after its request keeps its buffers (see there).
///
/// ```
/// use std::collections::HashSet;
/// use resilience_correlation::RequestContext;
///
/// let mut seen = HashSet::new(); // e.g. an idempotency record
/// let ctx = RequestContext::new_root();
/// // A copy of 36 bytes, not a share of the buffer it was cut from.
/// seen.insert(ctx.correlation_id().clone());
/// assert!(seen.contains(ctx.correlation_id()));
/// ```
pub struct CorrelationId {
    value: HeaderValue,
    /// Whether `value` owns exactly its bytes (as opposed to a slice of a
    /// larger shared buffer).
    exact: bool,
}

/// An inbound id that was not valid (too long, empty, or a character outside
/// `[A-Za-z0-9._:-]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidCorrelationId(());

// === impl CorrelationId ===

impl CorrelationId {
    /// A new, unique, time-ordered id (UUIDv7: 48 bits of Unix time in
    /// milliseconds, then 74 random bits). It owns its 36 bytes (one
    /// allocation), so it can be kept for as long as needed.
    pub fn generate() -> Self {
        Self {
            value: HeaderValue::from_bytes(&Self::uuid_v7()).expect("a UUID is a header value"),
            exact: true,
        }
    }

    /// A new id for the request path: cut from a shared per-thread buffer,
    /// so most ids allocate nothing (see the type's docs for what that
    /// means when it is kept).
    pub(crate) fn generate_shared() -> Self {
        Self {
            value: crate::value::carve(&Self::uuid_v7()),
            exact: false,
        }
    }

    fn uuid_v7() -> [u8; 36] {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let random = crate::rng::bytes::<10>();
        let id = uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid();
        let mut buf = [0u8; 36];
        id.hyphenated().encode_lower(&mut buf);
        buf
    }

    /// Validates an inbound header value.
    ///
    /// # Errors
    /// - empty, longer than [`MAX_ID_LEN`], or with a character outside
    ///   `[A-Za-z0-9._:-]`
    ///
    /// The id shares `value`'s bytes (no copy), as the server layer needs;
    /// a value sliced from a larger buffer keeps that buffer alive until the
    /// id is dropped or cloned (a clone owns its bytes).
    pub fn from_header(value: &HeaderValue) -> Result<Self, InvalidCorrelationId> {
        if is_valid(value.as_bytes()) {
            Ok(Self {
                value: value.clone(),
                exact: false,
            })
        } else {
            Err(InvalidCorrelationId(()))
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        // Validated to be ASCII.
        self.value.to_str().unwrap_or_default()
    }

    /// The id as a header value, for a header sent now: it shares the id's
    /// bytes (a reference count, no copy), and so whatever buffer they are
    /// in. To keep an id, keep a clone of the [`CorrelationId`].
    pub fn to_header_value(&self) -> HeaderValue {
        self.value.clone()
    }

    /// A clone sharing the same bytes, for the request path (a context's
    /// copy-on-write), where the buffer is alive anyway.
    pub(crate) fn share(&self) -> Self {
        Self {
            value: self.value.clone(),
            exact: self.exact,
        }
    }
}

impl Clone for CorrelationId {
    /// Shares the bytes of an id that owns exactly its bytes; copies those
    /// of an id that is a slice of a larger buffer (a request's), so the
    /// clone never keeps that buffer alive. See the type's docs.
    fn clone(&self) -> Self {
        if self.exact {
            return self.share();
        }
        Self {
            value: HeaderValue::from_bytes(self.value.as_bytes())
                .expect("a valid id is a header value"),
            exact: true,
        }
    }
}

impl PartialEq for CorrelationId {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl Eq for CorrelationId {}

impl std::hash::Hash for CorrelationId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.value.as_bytes().hash(state);
    }
}

impl std::str::FromStr for CorrelationId {
    type Err = InvalidCorrelationId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // A fresh value of exactly its bytes.
        let value = HeaderValue::from_str(s).map_err(|_| InvalidCorrelationId(()))?;
        let mut id = Self::from_header(&value)?;
        id.exact = true;
        Ok(id)
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CorrelationId")
            .field(&self.as_str())
            .finish()
    }
}

// === impl InvalidCorrelationId ===

impl fmt::Display for InvalidCorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid correlation id: expected 1 to 128 characters of [A-Za-z0-9._:-]")
    }
}

impl std::error::Error for InvalidCorrelationId {}

/// Branch-free per byte, so the check vectorizes.
fn is_valid(b: &[u8]) -> bool {
    if b.is_empty() || b.len() > MAX_ID_LEN {
        return false;
    }
    b.iter().fold(true, |ok, &c| {
        let digit = c.wrapping_sub(b'0') < 10;
        let letter = (c | 0x20).wrapping_sub(b'a') < 26;
        let punct = (c == b'.') | (c == b'_') | (c == b':') | (c == b'-');
        ok & (digit | letter | punct)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates() {
        for ok in ["123-gda", "a", "A.b_c:d-e", &"x".repeat(128)] {
            assert!(ok.parse::<CorrelationId>().is_ok(), "{ok}");
        }
        for bad in [
            "",
            " ",
            "a b",
            "a\tb",
            "é",
            "a/b",
            "a;b",
            "<script>",
            &"x".repeat(129),
        ] {
            assert!(bad.parse::<CorrelationId>().is_err(), "{bad:?}");
        }
        let obs_text = HeaderValue::from_bytes(b"id\xff").unwrap();
        assert!(CorrelationId::from_header(&obs_text).is_err());
    }

    #[test]
    fn a_clone_of_a_request_path_id_owns_its_bytes() {
        let shared = CorrelationId::generate_shared();
        let kept = shared.clone();
        assert_eq!(kept, shared);
        assert_ne!(
            kept.as_str().as_ptr(),
            shared.as_str().as_ptr(),
            "copied out of the per-thread buffer"
        );
        // A clone of an id that owns its bytes shares them.
        let again = kept.clone();
        assert_eq!(again.as_str().as_ptr(), kept.as_str().as_ptr());
        let parsed: CorrelationId = "parsed-1".parse().unwrap();
        assert_eq!(parsed.clone().as_str().as_ptr(), parsed.as_str().as_ptr());
        // Equal ids hash alike whatever they share.
        use std::hash::BuildHasher;
        let state = std::hash::RandomState::new();
        assert_eq!(state.hash_one(&kept), state.hash_one(&shared));
    }

    #[test]
    fn generated_ids_are_valid_and_unique() {
        let a = CorrelationId::generate();
        let b = CorrelationId::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 36);
        assert!(CorrelationId::from_header(&a.to_header_value()).is_ok());
        assert_eq!(a.to_string(), a.as_str());
    }
}
