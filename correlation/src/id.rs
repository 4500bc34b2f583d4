//! Correlation ids: validated on the way in, generated when missing.

use std::fmt;

use http::HeaderValue;

/// The longest correlation id accepted: 128 bytes.
pub const MAX_ID_LEN: usize = 128;

/// A correlation id: 1 to [`MAX_ID_LEN`] characters of `[A-Za-z0-9._:-]`.
///
/// One id names a whole operation across every service it touches. It is
/// kept as a `HeaderValue`, so cloning it and writing it to a header costs no
/// copy.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CorrelationId(HeaderValue);

/// An inbound id that was not valid (too long, empty, or a character outside
/// `[A-Za-z0-9._:-]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidCorrelationId(());

// === impl CorrelationId ===

impl CorrelationId {
    /// A new, unique, time-ordered id (UUIDv7: 48 bits of Unix time in
    /// milliseconds, then 74 random bits).
    pub fn generate() -> Self {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let random = crate::rng::bytes::<10>();
        let id = uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid();
        let mut buf = [0u8; 36];
        id.hyphenated().encode_lower(&mut buf);
        // A slice of a shared per-thread buffer: cloning the id never
        // copies it, and most ids allocate nothing.
        Self(crate::value::carve(&buf))
    }

    /// Validates an inbound header value.
    ///
    /// # Errors
    /// - empty, longer than [`MAX_ID_LEN`], or with a character outside
    ///   `[A-Za-z0-9._:-]`
    pub fn from_header(value: &HeaderValue) -> Result<Self, InvalidCorrelationId> {
        if is_valid(value.as_bytes()) {
            Ok(Self(value.clone()))
        } else {
            Err(InvalidCorrelationId(()))
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        // Validated to be ASCII.
        self.0.to_str().unwrap_or_default()
    }

    /// The id as a header value (a cheap clone).
    pub fn to_header_value(&self) -> HeaderValue {
        self.0.clone()
    }
}

impl std::str::FromStr for CorrelationId {
    type Err = InvalidCorrelationId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let value = HeaderValue::from_str(s).map_err(|_| InvalidCorrelationId(()))?;
        Self::from_header(&value)
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
    fn generated_ids_are_valid_and_unique() {
        let a = CorrelationId::generate();
        let b = CorrelationId::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 36);
        assert!(CorrelationId::from_header(&a.to_header_value()).is_ok());
        assert_eq!(a.to_string(), a.as_str());
    }
}
