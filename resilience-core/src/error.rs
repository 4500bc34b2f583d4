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
//! responses, and [`ClassifyErrors`](crate::ClassifyErrors) counts them for
//! breakers and ejection.
//!
//! # Your own errors
//!
//! An error of yours can say what it means too: implement [`Classify`] for
//! it and box it into a [`Classified`]. [`find`], the mapping helpers and the
//! classifiers then treat it as one of the family's own (a trait cannot be
//! found through a `dyn Error` by downcasting, so [`find`] recognises the
//! family's types and this one wrapper).
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

use std::any::Any;
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
/// Implemented by [`Rejected`], [`Elapsed`], `ChaosError` (feature `chaos`)
/// and [`Classified`]. Modelled on Polly's `ExecutionRejectedException`: a
/// class, and an optional hint of when to retry.
///
/// Implement it for your own error type and return the error boxed into a
/// [`Classified`]: [`find`] finds it, [`ClassifyErrors`](crate::ClassifyErrors)
/// counts it by its class, and the [`http`](crate::http) and
/// [`grpc`](crate::grpc) adapters answer with its class's status and its
/// retry-after.
///
/// ```
/// use std::time::Duration;
/// use resilience_core::{BoxError, Classify, ErrorClass, Outcome};
/// use resilience_core::error::Classified;
///
/// #[derive(Debug)]
/// struct QuotaExceeded;
/// impl std::fmt::Display for QuotaExceeded {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("quota exceeded")
///     }
/// }
/// impl std::error::Error for QuotaExceeded {}
/// impl Classify for QuotaExceeded {
///     fn error_class(&self) -> ErrorClass { ErrorClass::Overloaded }
///     fn retry_after(&self) -> Option<Duration> { Some(Duration::from_secs(3)) }
/// }
///
/// let err: BoxError = Classified::boxed(QuotaExceeded);
/// assert_eq!(resilience_core::error::find(&*err).unwrap().error_class(), ErrorClass::Overloaded);
/// // Refused on the caller's side: not the callee's failure.
/// assert_eq!(resilience_core::classify::classify_error(&err), Outcome::CallerError);
/// let rsp = resilience_core::http::error_response(&*err);
/// assert_eq!(rsp.status(), 503);
/// assert_eq!(rsp.headers()["retry-after"], "3");
/// ```
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

    /// A fixed text for the class, sent in place of a message that may not
    /// be shown to a peer.
    pub(crate) const fn text(self) -> &'static str {
        match self {
            ErrorClass::Client => "request refused",
            ErrorClass::Overloaded => "service overloaded",
            ErrorClass::Unavailable => "service unavailable",
            ErrorClass::Timeout => "request timed out",
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

/// Your own error, made known to the family: a type-erased box around any
/// error that implements [`Classify`].
///
/// [`find`] recognises it (as it does [`Rejected`], [`Elapsed`] and
/// `ChaosError`), so the error counts by its class in
/// [`ClassifyErrors`](crate::ClassifyErrors) and maps to its class's status
/// in the [`http`](crate::http) and [`grpc`](crate::grpc) adapters. It is
/// transparent: it displays as the error it holds, its
/// [`source`](Error::source) is that error's source, and [`find_in_chain`]
/// sees the error inside (or use [`Classified::downcast_ref`]).
///
/// The adapters never send your error's message to the peer (it may hold
/// request data): the answer's text is fixed by the class.
///
/// See [`Classify`] for an example.
pub struct Classified {
    inner: Box<dyn ErasedClassify>,
}

/// What [`Classified`] keeps of an error: the error and its class, as trait
/// objects (no trait upcasting needed).
trait ErasedClassify: Classify + Send + Sync + 'static {
    fn as_error(&self) -> &(dyn Error + Send + Sync + 'static);
    fn as_any(&self) -> &dyn Any;
    fn into_error(self: Box<Self>) -> BoxError;
}

impl<E: Classify + Send + Sync + 'static> ErasedClassify for E {
    fn as_error(&self) -> &(dyn Error + Send + Sync + 'static) {
        self
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn into_error(self: Box<Self>) -> BoxError {
        self
    }
}

// === impl Classified ===

impl Classified {
    /// Wraps `err`.
    pub fn new<E: Classify + Send + Sync + 'static>(err: E) -> Self {
        Self {
            inner: Box::new(err),
        }
    }

    /// Wraps `err` and boxes the wrapper: what a service returns
    /// (`.map_err(Classified::boxed)`).
    pub fn boxed<E: Classify + Send + Sync + 'static>(err: E) -> BoxError {
        Box::new(Self::new(err))
    }

    /// The error inside.
    pub fn get_ref(&self) -> &(dyn Error + Send + Sync + 'static) {
        self.inner.as_error()
    }

    /// The error inside, if it is a `T`.
    pub fn downcast_ref<T: Error + 'static>(&self) -> Option<&T> {
        self.inner.as_any().downcast_ref::<T>()
    }

    /// Unwraps the error inside.
    pub fn into_inner(self) -> BoxError {
        self.inner.into_error()
    }
}

impl fmt::Debug for Classified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Classified").field(&self.inner).finish()
    }
}

impl fmt::Display for Classified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.inner, f)
    }
}

impl Error for Classified {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.inner.source()
    }
}

impl Classify for Classified {
    fn error_class(&self) -> ErrorClass {
        self.inner.error_class()
    }

    fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after()
    }
}

/// Finds the first error of the family in `err`'s chain (itself, then its
/// sources), as a [`Classify`]: a [`Rejected`], an [`Elapsed`], a
/// `ChaosError` (feature `chaos`), or your own error in a [`Classified`].
///
/// Returns `None` for errors the family does not know.
pub fn find<'a>(err: &'a (dyn Error + 'static)) -> Option<&'a (dyn Classify + 'static)> {
    find_classified(err).map(|found| found.class)
}

/// What [`find`] found: the error of the chain, and the same as a
/// [`Classify`].
#[derive(Clone, Copy)]
pub(crate) struct Found<'a> {
    pub(crate) error: &'a (dyn Error + 'static),
    pub(crate) class: &'a (dyn Classify + 'static),
}

/// [`find`], keeping the error itself (to tell a [`Rejected`]'s kind).
pub(crate) fn find_classified<'a>(err: &'a (dyn Error + 'static)) -> Option<Found<'a>> {
    chain(err).find_map(|error| classify_of(error).map(|class| Found { error, class }))
}

impl Found<'_> {
    /// The text the adapters send to the peer: the family's own errors
    /// carry static texts; a user's error (in a [`Classified`]) may hold
    /// request data, so it is replaced by one fixed by its class.
    pub(crate) fn public_message(&self) -> String {
        if self.error.is::<Classified>() {
            return self.class.error_class().text().to_owned();
        }
        self.error.to_string()
    }
}

/// `err` as a [`Classify`], if it is one of the types [`find`] knows.
pub(crate) fn classify_of<'a>(
    err: &'a (dyn Error + 'static),
) -> Option<&'a (dyn Classify + 'static)> {
    if let Some(r) = err.downcast_ref::<Rejected>() {
        return Some(r);
    }
    if let Some(t) = err.downcast_ref::<Elapsed>() {
        return Some(t);
    }
    if let Some(c) = err.downcast_ref::<Classified>() {
        return Some(c);
    }
    #[cfg(feature = "chaos")]
    if let Some(c) = err.downcast_ref::<crate::chaos::ChaosError>() {
        return Some(c);
    }
    None
}

/// Finds the first error of type `T` in `err`'s chain (itself, then its
/// sources), looking inside a [`Classified`] too.
pub fn find_in_chain<'a, T: Error + 'static>(err: &'a (dyn Error + 'static)) -> Option<&'a T> {
    chain(err).find_map(|e| e.downcast_ref::<T>())
}

/// `err`, then its sources; the error inside a [`Classified`] comes right
/// after the wrapper.
pub(crate) fn chain<'a>(
    err: &'a (dyn Error + 'static),
) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    let mut next = Some(err);
    let mut inside = None;
    std::iter::from_fn(move || {
        if let Some(e) = inside.take() {
            return Some(e);
        }
        let e = next?;
        next = e.source();
        if let Some(c) = e.downcast_ref::<Classified>() {
            inside = Some(c.get_ref() as &(dyn Error + 'static));
        }
        Some(e)
    })
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

    /// A user's own error, classified.
    #[derive(Debug)]
    struct Quota(u32);
    impl fmt::Display for Quota {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "quota {} exceeded", self.0)
        }
    }
    impl Error for Quota {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&Cause)
        }
    }
    impl Classify for Quota {
        fn error_class(&self) -> ErrorClass {
            ErrorClass::Overloaded
        }
        fn retry_after(&self) -> Option<Duration> {
            Some(Duration::from_secs(3))
        }
    }
    #[derive(Debug)]
    struct Cause;
    impl fmt::Display for Cause {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("cause")
        }
    }
    impl Error for Cause {}

    #[test]
    fn find_sees_users_errors_through_classified() {
        let err = Classified::boxed(Quota(7));
        let found = find(&*err).expect("a classified error");
        assert_eq!(found.error_class(), ErrorClass::Overloaded);
        assert_eq!(found.retry_after(), Some(Duration::from_secs(3)));
        // transparent: the message, the source, the error inside
        assert_eq!(err.to_string(), "quota 7 exceeded");
        assert!(err.source().unwrap().is::<Cause>());
        assert_eq!(find_in_chain::<Quota>(&*err).unwrap().0, 7);
        assert!(find_in_chain::<Cause>(&*err).is_some());
        let classified = err.downcast_ref::<Classified>().unwrap();
        assert_eq!(classified.downcast_ref::<Quota>().unwrap().0, 7);
        assert!(classified.downcast_ref::<Cause>().is_none());
        assert!(classified.get_ref().is::<Quota>());
        assert_eq!(format!("{classified:?}"), "Classified(Quota(7))");
        // deeper in a chain
        let wrapped = Wrapper(Classified::boxed(Quota(8)));
        assert_eq!(
            find(&wrapped).unwrap().error_class(),
            ErrorClass::Overloaded
        );
        assert_eq!(find_in_chain::<Quota>(&wrapped).unwrap().0, 8);
        // unwrapped again
        let inner = err
            .downcast::<Classified>()
            .unwrap()
            .into_inner()
            .downcast::<Quota>()
            .unwrap();
        assert_eq!(inner.0, 7);
        // Boxed directly, a user's type is not seen (there is no way to find
        // a trait through `dyn Error`): that is what `Classified` is for.
        let bare: BoxError = Box::new(Quota(1));
        assert!(find(&*bare).is_none());
    }

    #[cfg(feature = "chaos")]
    #[test]
    fn find_sees_chaos_errors() {
        let err: BoxError = crate::chaos::ChaosError::new().into();
        assert_eq!(
            find(&*err).map(|c| c.error_class()),
            Some(ErrorClass::Unavailable)
        );
        assert!(find(&Wrapper(err)).is_some());
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
