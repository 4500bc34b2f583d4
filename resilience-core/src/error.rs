//! The shared rejection vocabulary.
//!
//! Every layer in the family that refuses a request on purpose fails with a
//! [`Rejected`] (queue full, circuit open, throttled, no healthy endpoint,
//! flag off), and the timeout fails with [`Elapsed`].
//! Both implement [`Classify`], which says what kind of failure it is
//! ([`ErrorClass`]) and, where it is known, when trying again makes sense.
//!
//! Services return `BoxError`; inner errors pass through unchanged, so a
//! caller tests `err.is::<Rejected>()` or walks the chain with [`find`]. The
//! [`http`](crate::http) and [`grpc`](crate::grpc) adapters turn these into
//! responses.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use resilience_core::{BoxError, ErrorClass, Rejected, RejectionKind};
//!
//! let err: BoxError = Rejected::new(RejectionKind::CircuitOpen, "failure rate above threshold")
//!     .with_retry_after(Duration::from_secs(5))
//!     .into();
//! let found = resilience_core::error::find(&*err).unwrap();
//! assert_eq!(found.error_class(), ErrorClass::Unavailable);
//! assert_eq!(found.retry_after(), Some(Duration::from_secs(5)));
//! assert_eq!(err.to_string(), "circuit open: failure rate above threshold");
//! ```

use std::error::Error;
use std::fmt;
use std::time::Duration;

use crate::timeout::error::Elapsed;

/// A boxed error, the error type of every service in the family.
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// What kind of failure an error is, for mapping and for counting.
///
/// | class | HTTP | gRPC |
/// |---|---|---|
/// | `Client` | 404 | `NOT_FOUND` |
/// | `Overloaded` | 503 (429 when throttled) + `Retry-After` | `RESOURCE_EXHAUSTED` |
/// | `Unavailable` | 503 + `Retry-After` | `UNAVAILABLE` |
/// | `Timeout` | 504 (408 when serving) | `DEADLINE_EXCEEDED` |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorClass {
    /// The caller asked for something it may not have (a flag that is off).
    Client,
    /// Too much work: a queue is full, the caller is throttled, or the
    /// request was shed for one of higher priority.
    Overloaded,
    /// The dependency cannot be called now: circuit open, no endpoint.
    Unavailable,
    /// The request ran out of time.
    Timeout,
}

/// An error whose meaning the family knows.
///
/// Implemented by [`Rejected`] and [`Elapsed`]. Modelled on Polly's
/// `ExecutionRejectedException`: a class, and an optional hint of when to
/// retry.
pub trait Classify: Error {
    /// What kind of failure this is.
    fn error_class(&self) -> ErrorClass;

    /// When trying again makes sense, if known.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

/// Why a layer refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectionKind {
    /// More work than the service can take: queue full, queue time exceeded,
    /// shed for a higher priority, deadline cannot be met.
    Overloaded,
    /// A circuit breaker is open (or half-open with all probes taken).
    CircuitOpen,
    /// A client-side throttle refused the call.
    Throttled,
    /// The balancer has no healthy, ready endpoint.
    NoHealthyEndpoint,
    /// A feature flag refused the request.
    Disabled,
}

/// A request refused on purpose by one of the family's layers.
///
/// Cheap to build (no allocation until boxed), `Clone`, and carries the kind,
/// a static reason and an optional retry-after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    kind: RejectionKind,
    reason: &'static str,
    retry_after: Option<Duration>,
}

// === impl ErrorClass ===

impl ErrorClass {
    /// The class as a bounded, lowercase label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Client => "client",
            ErrorClass::Overloaded => "overloaded",
            ErrorClass::Unavailable => "unavailable",
            ErrorClass::Timeout => "timeout",
        }
    }
}

// === impl RejectionKind ===

impl RejectionKind {
    /// The kind as a bounded, lowercase label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            RejectionKind::Overloaded => "overloaded",
            RejectionKind::CircuitOpen => "circuit_open",
            RejectionKind::Throttled => "throttled",
            RejectionKind::NoHealthyEndpoint => "no_healthy_endpoint",
            RejectionKind::Disabled => "disabled",
        }
    }

    /// The class of failure this kind of rejection is.
    pub const fn error_class(self) -> ErrorClass {
        match self {
            RejectionKind::Overloaded | RejectionKind::Throttled => ErrorClass::Overloaded,
            RejectionKind::CircuitOpen | RejectionKind::NoHealthyEndpoint => {
                ErrorClass::Unavailable
            }
            RejectionKind::Disabled => ErrorClass::Client,
        }
    }

    fn message(self) -> &'static str {
        match self {
            RejectionKind::Overloaded => "service overloaded",
            RejectionKind::CircuitOpen => "circuit open",
            RejectionKind::Throttled => "request throttled",
            RejectionKind::NoHealthyEndpoint => "no healthy endpoint",
            RejectionKind::Disabled => "disabled by flag",
        }
    }
}

impl fmt::Display for RejectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

// === impl Rejected ===

impl Rejected {
    /// A rejection of `kind`, with a short lowercase `reason` (may be empty).
    pub const fn new(kind: RejectionKind, reason: &'static str) -> Self {
        Self {
            kind,
            reason,
            retry_after: None,
        }
    }

    /// Sets when trying again makes sense.
    #[must_use]
    pub const fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// Why the request was refused.
    pub const fn kind(&self) -> RejectionKind {
        self.kind
    }

    /// The detailed reason, e.g. `"queue full"`.
    pub const fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.message())?;
        if !self.reason.is_empty() {
            write!(f, ": {}", self.reason)?;
        }
        Ok(())
    }
}

impl Error for Rejected {}

impl Classify for Rejected {
    fn error_class(&self) -> ErrorClass {
        self.kind.error_class()
    }

    fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

/// Finds the first error of the family in `err`'s chain (itself, then its
/// sources), as a [`Classify`].
///
/// Returns `None` for errors the family does not own.
pub fn find<'a>(err: &'a (dyn Error + 'static)) -> Option<&'a (dyn Classify + 'static)> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<Rejected>() {
            return Some(r);
        }
        if let Some(t) = e.downcast_ref::<Elapsed>() {
            return Some(t);
        }
        cur = e.source();
    }
    None
}

/// Finds the first error of type `T` in `err`'s chain (itself, then its
/// sources).
pub fn find_in_chain<'a, T: Error + 'static>(err: &'a (dyn Error + 'static)) -> Option<&'a T> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(BoxError);
    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapper")
        }
    }
    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn kinds_map_to_classes() {
        let table = [
            (RejectionKind::Overloaded, ErrorClass::Overloaded),
            (RejectionKind::Throttled, ErrorClass::Overloaded),
            (RejectionKind::CircuitOpen, ErrorClass::Unavailable),
            (RejectionKind::NoHealthyEndpoint, ErrorClass::Unavailable),
            (RejectionKind::Disabled, ErrorClass::Client),
        ];
        for (kind, class) in table {
            assert_eq!(Rejected::new(kind, "").error_class(), class, "{kind:?}");
        }
    }

    #[test]
    fn display_is_lowercase_without_period() {
        let r = Rejected::new(RejectionKind::Overloaded, "queue full");
        assert_eq!(r.to_string(), "service overloaded: queue full");
        assert_eq!(
            Rejected::new(RejectionKind::CircuitOpen, "").to_string(),
            "circuit open"
        );
    }

    #[test]
    fn find_walks_the_chain() {
        let inner: BoxError = Rejected::new(RejectionKind::Throttled, "").into();
        let outer = Wrapper(inner);
        let found = find(&outer).expect("found in source chain");
        assert_eq!(found.error_class(), ErrorClass::Overloaded);

        let foreign = std::io::Error::other("boom");
        assert!(find(&foreign).is_none());
        let wrapped_foreign = Wrapper(Box::new(std::io::Error::other("boom")));
        assert!(find(&wrapped_foreign).is_none());
    }

    #[test]
    fn retry_after_is_carried() {
        let r = Rejected::new(RejectionKind::CircuitOpen, "")
            .with_retry_after(Duration::from_millis(1500));
        assert_eq!(r.retry_after(), Some(Duration::from_millis(1500)));
        assert_eq!(
            Rejected::new(RejectionKind::CircuitOpen, "").retry_after(),
            None
        );
    }
}
