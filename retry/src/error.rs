//! The crate's error type.

use std::fmt;

use resilience_core::{Classify, ErrorClass};

/// A request body could not be replayed for an attempt.
///
/// The layer checks that a body can be replayed before it schedules a
/// retry, so the caller of the layer does not see this error in normal
/// operation: it is the error of an attempt's body that lost its right to
/// the original body (a newer attempt took over, or the body went over the
/// replay cap), seen by whatever still polls that stale body. An attempt
/// that fails with it is never retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryError {
    kind: RetryErrorKind,
}

/// What went wrong; see [`RetryError::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetryErrorKind {
    /// The body grew over the replay cap after this copy of it was made.
    Capped,
    /// A newer attempt owns the rest of the original body.
    Superseded,
    /// Another attempt is still reading the original body.
    InUse,
}

// === impl RetryError ===

impl RetryError {
    pub(crate) const fn new(kind: RetryErrorKind) -> Self {
        Self { kind }
    }

    /// What went wrong.
    pub const fn kind(&self) -> RetryErrorKind {
        self.kind
    }
}

impl fmt::Display for RetryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            RetryErrorKind::Capped => "request body cannot be replayed: over the replay cap",
            RetryErrorKind::Superseded => {
                "request body cannot be replayed: a newer attempt took it over"
            }
            RetryErrorKind::InUse => "request body cannot be replayed: another attempt holds it",
        })
    }
}

impl std::error::Error for RetryError {}

/// Class [`Unavailable`](ErrorClass::Unavailable): the request could not
/// be sent (again) now.
impl Classify for RetryError {
    fn error_class(&self) -> ErrorClass {
        ErrorClass::Unavailable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_lowercase_without_period() {
        for kind in [
            RetryErrorKind::Capped,
            RetryErrorKind::Superseded,
            RetryErrorKind::InUse,
        ] {
            let e = RetryError::new(kind);
            let s = e.to_string();
            assert!(s.starts_with("request body cannot be replayed: "), "{s}");
            assert!(!s.ends_with('.'));
            assert_eq!(e.kind(), kind);
            assert_eq!(e.error_class(), ErrorClass::Unavailable);
        }
    }
}
