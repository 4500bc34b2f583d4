//! Outcome classification: did a call succeed, fail because of the callee,
//! or fail because of the caller?
//!
//! Every layer that counts failures (circuit breaker, adaptive throttle,
//! passive ejection) asks a [`ClassifyOutcome`] and nothing else, so that a
//! storm of `404`s never opens a breaker or ejects an endpoint, while `5xx`,
//! timeouts, transport errors and failing gRPC statuses (in the headers or
//! in the trailers) do.
//!
//! | input | default [`Outcome`] |
//! |---|---|
//! | HTTP 1xx/2xx/3xx | `Success` |
//! | HTTP 4xx (429 configurable) | `CallerError` |
//! | HTTP 5xx | `Failure` |
//! | gRPC `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `INTERNAL`, `UNKNOWN`, `RESOURCE_EXHAUSTED`, `DATA_LOSS` | `Failure` |
//! | other gRPC codes | `CallerError` (`OK`: `Success`) |
//! | an error (transport, timeout, circuit open, no endpoint) | `Failure` |
//! | our own layers refused it (throttled, overloaded, flag off) | `CallerError` (configurable: [`ClassifyErrors`]) |
//!
//! # Streaming bodies
//!
//! A layer's response future ends when the response's *headers* arrive; the
//! body streams after that. Most outcomes are known then (the HTTP status, a
//! trailers-only gRPC error), but a gRPC status sent after the messages, in
//! trailers, is known only at the end of the body. So the layers that count
//! outcomes ask [`ClassifyOutcome::classify_or_defer`], and [`GrpcOutcome`]
//! answers at the end of the stream when the status is in trailers (the
//! body types it can watch, and how a body that fails or is dropped early
//! counts, are in its docs). What each layer covers:
//!
//! | layer | counts the outcome | holds its resource until |
//! |---|---|---|
//! | circuit breaker | at the end of the stream when the status is in trailers, else at the headers; a half-open probe resolves then too | the outcome (a probe's slot) |
//! | circuit breaker, slow calls | the duration is measured to the headers | |
//! | adaptive throttle | as the breaker | |
//! | round robin, passive ejection | as the breaker | |
//! | bounded queue | (does not classify) | the headers: a streaming body no longer holds its concurrency slot |
//! | [`TimeoutLayer`](crate::TimeoutLayer) | (does not classify) | the headers: it bounds the time to the first answer, not a slow body (bound the body with a timeout of its own, e.g. the gRPC client's deadline) |
//!
//! # Example
//!
//! ```
//! use http::{Response, StatusCode};
//! use resilience_core::classify::{ClassifyOutcome, HttpOutcome, Outcome, classify_fn};
//!
//! let classify = HttpOutcome::new();
//! let rsp = |s: u16| Response::builder().status(s).body(()).unwrap();
//! assert_eq!(classify.classify(Ok(&rsp(200))), Outcome::Success);
//! assert_eq!(classify.classify(Ok(&rsp(404))), Outcome::CallerError);
//! assert_eq!(classify.classify(Ok(&rsp(503))), Outcome::Failure);
//! assert_eq!(classify.classify(Ok(&rsp(429))), Outcome::CallerError);
//! assert_eq!(HttpOutcome::new().rate_limited_is_failure(true).classify(Ok(&rsp(429))), Outcome::Failure);
//!
//! // Your own rule, as a closure:
//! let slow_is_bad = classify_fn(|res: Result<&u32, &resilience_core::BoxError>| match res {
//!     Ok(ms) if *ms > 100 => Outcome::Failure,
//!     Ok(_) => Outcome::Success,
//!     Err(_) => Outcome::Failure,
//! });
//! assert_eq!(slow_is_bad.classify(Ok(&250)), Outcome::Failure);
//! ```

use std::error::Error;
use std::fmt;

use http::{HeaderMap, Response};

use crate::error::{BoxError, ErrorClass};

#[cfg(any(feature = "grpc", feature = "axum"))]
mod trailers;

/// The header (or trailer) that carries a gRPC status.
const GRPC_STATUS: &str = "grpc-status";

/// The outcome of one call, as far as the callee's health is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The callee did its job.
    Success,
    /// The callee failed: counts against it (5xx, timeout, transport error).
    Failure,
    /// The caller did something wrong (4xx): not the callee's fault. Health
    /// tracking treats it as a success.
    CallerError,
}

/// Reports an outcome that was known only after the response: what a layer
/// hands to [`ClassifyOutcome::classify_or_defer`]. Called exactly once.
pub type OnOutcome = Box<dyn FnOnce(Outcome) + Send + 'static>;

/// Decides the [`Outcome`] of a call from its result.
///
/// Implementations are cheap and shared (`&self`): layers call them on every
/// response. Use [`classify_fn`] to plug in a closure.
///
/// A layer that counts outcomes asks [`classify_or_defer`](Self::classify_or_defer)
/// for a response (so that an outcome only known at the end of the body, a
/// gRPC status in trailers, is counted then) and [`classify`](Self::classify)
/// for an error. A classifier that wraps another forwards both.
pub trait ClassifyOutcome<Res> {
    /// Classifies a response or an error.
    fn classify(&self, result: Result<&Res, &BoxError>) -> Outcome;

    /// Classifies a response now, or arranges for its outcome to be
    /// reported when it is known.
    ///
    /// Returns `Some(outcome)` when the response tells it now. Returns
    /// `None` when the outcome comes later (with the body): the classifier
    /// has then called `later` once, for the callback to report it with, and
    /// calls that callback exactly once, however the body ends (see
    /// [`GrpcOutcome`]). `later` is called only when deferring, so that a
    /// response classified at once costs nothing more.
    ///
    /// The default classifies now, with [`classify`](Self::classify).
    ///
    /// ```
    /// use resilience_core::classify::{ClassifyOutcome, HttpOutcome, OnOutcome, Outcome};
    ///
    /// let mut rsp = http::Response::builder().status(503).body(()).unwrap();
    /// let mut later = || -> OnOutcome { unreachable!("an HTTP status is known at once") };
    /// assert_eq!(HttpOutcome::new().classify_or_defer(&mut rsp, &mut later), Some(Outcome::Failure));
    /// ```
    fn classify_or_defer(
        &self,
        rsp: &mut Res,
        later: &mut dyn FnMut() -> OnOutcome,
    ) -> Option<Outcome> {
        let _ = later;
        Some(self.classify(Ok(rsp)))
    }
}

/// A [`ClassifyOutcome`] made from a closure; see [`classify_fn`].
#[derive(Clone, Copy)]
pub struct ClassifyFn<F> {
    f: F,
}

/// Turns a closure into a [`ClassifyOutcome`].
pub fn classify_fn<F, Res>(f: F) -> ClassifyFn<F>
where
    F: Fn(Result<&Res, &BoxError>) -> Outcome,
{
    ClassifyFn { f }
}

/// The default classifier for HTTP responses.
///
/// 5xx and errors are failures, 4xx are the caller's; whether `429 Too Many
/// Requests` counts against the callee is configurable (default: no, it is a
/// 4xx).
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpOutcome {
    rate_limited_is_failure: bool,
    errors: ClassifyErrors,
}

/// The default classifier for gRPC.
///
/// Reads `grpc-status` from the response headers (a trailers-only response,
/// which is how gRPC servers report an error without a body) or, when it is
/// not there, from the trailers at the end of the body (every response that
/// sends headers first: streaming responses, and unary ones from most
/// servers). The set of failure codes is configurable.
///
/// # Status in trailers
///
/// [`classify_or_defer`](ClassifyOutcome::classify_or_defer) on a `200`
/// response without `grpc-status` wraps the body in place, when it is a
/// body it can replace: a `tonic::body::Body` (feature `grpc`: what a tonic
/// `Channel` returns, and what a tonic server's inner service returns) or an
/// `axum::body::Body` (feature `axum`). The wrapper reports, once:
///
/// | the body | [`Outcome`] |
/// |---|---|
/// | ends with trailers holding `grpc-status` | that code's, as in the table below |
/// | ends without `grpc-status` (no trailers, or trailers without it) | as `INTERNAL` (a failure by default): what gRPC clients report for a stream the server closed without a status (grpc-go: "server closed the stream without sending trailers") |
/// | fails (a reset stream, a broken connection) | the code of the `tonic::Status` in the error's chain (tonic maps a reset `CANCEL` to `CANCELLED`, `REFUSED_STREAM` to `UNAVAILABLE`, most others to `INTERNAL`), else as any error: see [`ClassifyErrors`] |
/// | is dropped before its end by the caller | `CallerError`: the caller gave up, the callee is not to blame |
///
/// Other body types cannot be replaced in place: such a response is
/// classified at its headers, a success unless `grpc-status` is there (as
/// [`classify`](ClassifyOutcome::classify) always does; it never sees the
/// body). To have trailers seen, turn the body into a `tonic::body::Body`
/// below the layers (`map_response(|r| r.map(tonic::body::Body::new))`).
///
/// Deferring costs two allocations (the callback, and the boxed wrapping
/// body); a response classified at its headers costs none.
///
/// # tonic and axum versions
///
/// A `tonic::Status` error and the `tonic::body::Body` / `axum::body::Body`
/// whose trailers are watched are recognised by their type: only those of
/// **tonic 0.14** and **axum 0.8**, the versions this crate is built with.
/// With another tonic, a status error is classified as any other error
/// (see [`ClassifyErrors`]) and a body at its headers; the `grpc-status`
/// header is read whatever the version. See the crate docs'
/// [public dependencies](crate#public-dependencies).
///
/// # Codes
///
/// | status | default [`Outcome`] | why |
/// |---|---|---|
/// | `OK` | `Success` | |
/// | `UNAVAILABLE` | `Failure` | the callee is down or refusing: counts |
/// | `DEADLINE_EXCEEDED` | `Failure` | too slow: without a timeout, slow and dead look alike |
/// | `INTERNAL`, `UNKNOWN`, `DATA_LOSS` | `Failure` | the callee broke |
/// | `RESOURCE_EXHAUSTED` | `Failure` | overloaded (drop it with `without_failure` to leave overload to a throttle) |
/// | `INVALID_ARGUMENT`, `NOT_FOUND`, `ALREADY_EXISTS`, `PERMISSION_DENIED`, `UNAUTHENTICATED`, `FAILED_PRECONDITION`, `OUT_OF_RANGE`, `UNIMPLEMENTED` | `CallerError` | the caller asked for something wrong: never opens a breaker or ejects |
/// | `CANCELLED`, `ABORTED` | `CallerError` | the caller gave up, or a conflict to retry at a higher level |
/// | an error instead of a response: a `tonic::Status` (feature `grpc`) | as its code above | |
/// | any other error (transport, timeout, circuit open, no endpoint) | `Failure` | see [`ClassifyErrors`] |
/// | a non-`200` HTTP status (not a gRPC answer at all) | as [`HttpOutcome`] | |
///
/// ```
/// use resilience_core::classify::{GrpcCode, GrpcOutcome, Outcome};
/// let c = GrpcOutcome::new();
/// assert_eq!(c.classify_code(GrpcCode::NotFound), Outcome::CallerError);
/// assert_eq!(c.classify_code(GrpcCode::Unavailable), Outcome::Failure);
/// let lenient = GrpcOutcome::new().without_failure(GrpcCode::ResourceExhausted);
/// assert_eq!(lenient.classify_code(GrpcCode::ResourceExhausted), Outcome::CallerError);
/// ```
#[derive(Clone, Copy)]
pub struct GrpcOutcome {
    failures: u32,
    errors: ClassifyErrors,
}

/// gRPC status codes, as numbered by the gRPC specification.
///
/// Defined here so that classification needs no gRPC dependency; with the
/// `grpc` feature it converts from and to `tonic::Code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)]
#[repr(u8)]
pub enum GrpcCode {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

/// A classifier for any response type: every response is a success, and
/// errors are classified by [`classify_error`] with the defaults: failures,
/// except errors of class [`Client`](crate::ErrorClass::Client) and our own
/// layers' throttled / overloaded rejections, which are the caller's (see
/// [`ClassifyErrors`]).
///
/// The default classifier of the breakers and the round robin for responses
/// that are not `http::Response`s; every crate of the family names it
/// `ErrorsAsFailures` (re-exported as
/// `resilience_circuit_breaker::ErrorsAsFailures` and
/// `resilience_discovery::ErrorsAsFailures`).
///
/// ```
/// use resilience_core::classify::{ClassifyOutcome, ErrorsAsFailures, Outcome};
/// use resilience_core::BoxError;
///
/// let ok: Result<&u16, &BoxError> = Ok(&500);
/// assert_eq!(ErrorsAsFailures.classify(ok), Outcome::Success); // any response succeeds
/// let err: BoxError = "connection refused".into();
/// assert_eq!(ErrorsAsFailures.classify(Err::<&u16, _>(&err)), Outcome::Failure);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ErrorsAsFailures;

/// Classifies an error with the defaults: see [`ClassifyErrors`].
pub fn classify_error(err: &BoxError) -> Outcome {
    ClassifyErrors::new().classify_error(err)
}

/// How errors (as opposed to responses) are classified.
///
/// The first error of the chain that [`error::find`](crate::error::find)
/// knows decides, by its [`ErrorClass`]: a [`Rejected`](crate::Rejected),
/// an [`Elapsed`](crate::Elapsed), a `ChaosError`, or your own error boxed
/// into a [`Classified`](crate::error::Classified).
///
/// - transport errors and errors the family does not know:
///   [`Outcome::Failure`];
/// - class `Timeout` ([`Elapsed`](crate::Elapsed)) and `Unavailable`
///   (circuit open, no healthy endpoint, an injected `ChaosError`):
///   [`Outcome::Failure`];
/// - class `Overloaded`: refused by one of *our own* limiters on the
///   caller's side (throttled, overloaded): [`Outcome::CallerError`], since
///   the callee never saw the request. Set
///   [`ClassifyErrors::local_rejections_are_failures`] to count them;
/// - class `Client` (a flag refused it): [`Outcome::CallerError`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassifyErrors {
    local_rejections_are_failures: bool,
}

impl ClassifyErrors {
    /// The defaults above.
    pub const fn new() -> Self {
        Self {
            local_rejections_are_failures: false,
        }
    }

    /// Whether throttled and overloaded rejections from our own layers count
    /// against the callee (default `false`).
    #[must_use]
    pub const fn local_rejections_are_failures(mut self, yes: bool) -> Self {
        self.local_rejections_are_failures = yes;
        self
    }

    /// Classifies an error.
    pub fn classify_error(&self, err: &BoxError) -> Outcome {
        self.classify_dyn(&**err)
    }

    fn classify_dyn(&self, err: &(dyn Error + 'static)) -> Outcome {
        match crate::error::find(err).map(|c| c.error_class()) {
            Some(ErrorClass::Client) => Outcome::CallerError,
            Some(ErrorClass::Overloaded) if !self.local_rejections_are_failures => {
                Outcome::CallerError
            }
            _ => Outcome::Failure,
        }
    }
}

// === impl ErrorsAsFailures ===

impl<T> ClassifyOutcome<T> for ErrorsAsFailures {
    #[inline]
    fn classify(&self, result: Result<&T, &BoxError>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(e) => classify_error(e),
        }
    }
}

// === impl Outcome ===

impl Outcome {
    /// `true` for [`Outcome::Failure`].
    pub const fn is_failure(self) -> bool {
        matches!(self, Outcome::Failure)
    }

    /// The outcome as a bounded, lowercase label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::CallerError => "caller_error",
        }
    }
}

// === impl ClassifyFn ===

impl<F, Res> ClassifyOutcome<Res> for ClassifyFn<F>
where
    F: Fn(Result<&Res, &BoxError>) -> Outcome,
{
    fn classify(&self, result: Result<&Res, &BoxError>) -> Outcome {
        (self.f)(result)
    }
}

impl<F> fmt::Debug for ClassifyFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClassifyFn").finish_non_exhaustive()
    }
}

// === impl HttpOutcome ===

impl HttpOutcome {
    /// The default: 5xx and errors fail, 4xx (429 included) are the caller's.
    pub const fn new() -> Self {
        Self {
            rate_limited_is_failure: false,
            errors: ClassifyErrors::new(),
        }
    }

    /// How errors are classified (see [`ClassifyErrors`]).
    #[must_use]
    pub const fn errors(mut self, errors: ClassifyErrors) -> Self {
        self.errors = errors;
        self
    }

    /// Whether `429 Too Many Requests` counts against the callee.
    #[must_use]
    pub const fn rate_limited_is_failure(mut self, yes: bool) -> Self {
        self.rate_limited_is_failure = yes;
        self
    }

    /// Classifies a status code.
    pub const fn classify_status(&self, status: http::StatusCode) -> Outcome {
        let code = status.as_u16();
        if code >= 500 || (code == 429 && self.rate_limited_is_failure) {
            Outcome::Failure
        } else if code >= 400 {
            Outcome::CallerError
        } else {
            Outcome::Success
        }
    }
}

impl<B> ClassifyOutcome<Response<B>> for HttpOutcome {
    fn classify(&self, result: Result<&Response<B>, &BoxError>) -> Outcome {
        match result {
            Ok(rsp) => self.classify_status(rsp.status()),
            Err(e) => self.errors.classify_error(e),
        }
    }
}

// === impl GrpcOutcome ===

impl GrpcOutcome {
    const DEFAULT_FAILURES: u32 = GrpcCode::Unavailable.bit()
        | GrpcCode::DeadlineExceeded.bit()
        | GrpcCode::Internal.bit()
        | GrpcCode::Unknown.bit()
        | GrpcCode::ResourceExhausted.bit()
        | GrpcCode::DataLoss.bit();

    /// The default failure set: `UNAVAILABLE`, `DEADLINE_EXCEEDED`,
    /// `INTERNAL`, `UNKNOWN`, `RESOURCE_EXHAUSTED`, `DATA_LOSS`.
    pub const fn new() -> Self {
        Self {
            failures: Self::DEFAULT_FAILURES,
            errors: ClassifyErrors::new(),
        }
    }

    /// How errors that are not a `tonic::Status` are classified (see
    /// [`ClassifyErrors`]).
    #[must_use]
    pub const fn errors(mut self, errors: ClassifyErrors) -> Self {
        self.errors = errors;
        self
    }

    /// Counts `code` as a failure of the callee.
    #[must_use]
    pub const fn with_failure(mut self, code: GrpcCode) -> Self {
        self.failures |= code.bit();
        self
    }

    /// Counts `code` as the caller's error, not the callee's.
    #[must_use]
    pub const fn without_failure(mut self, code: GrpcCode) -> Self {
        self.failures &= !code.bit();
        self
    }

    /// Classifies a status code.
    pub const fn classify_code(&self, code: GrpcCode) -> Outcome {
        if matches!(code, GrpcCode::Ok) {
            Outcome::Success
        } else if self.failures & code.bit() != 0 {
            Outcome::Failure
        } else {
            Outcome::CallerError
        }
    }

    /// Classifies from response headers (or trailers): `grpc-status`, if
    /// present and valid. An unparsable `grpc-status` is `UNKNOWN`.
    pub fn classify_headers(&self, headers: &HeaderMap) -> Option<Outcome> {
        let value = headers.get(GRPC_STATUS)?;
        let code = GrpcCode::from_bytes(value.as_bytes()).unwrap_or(GrpcCode::Unknown);
        Some(self.classify_code(code))
    }

    /// A response body that ended without `grpc-status`: `INTERNAL`, as
    /// gRPC clients report it.
    #[cfg(any(feature = "grpc", feature = "axum"))]
    const fn missing_status(&self) -> Outcome {
        self.classify_code(GrpcCode::Internal)
    }

    /// A response body that failed: the code of a `tonic::Status` in the
    /// error's chain, else as any error.
    #[cfg(any(feature = "grpc", feature = "axum"))]
    fn classify_body_error(&self, err: &(dyn Error + 'static)) -> Outcome {
        #[cfg(feature = "grpc")]
        if let Some(status) = crate::error::find_in_chain::<tonic::Status>(err) {
            return self.classify_code(status.code().into());
        }
        self.errors.classify_dyn(err)
    }
}

impl Default for GrpcOutcome {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for GrpcOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let codes: Vec<GrpcCode> = GrpcCode::ALL
            .into_iter()
            .filter(|c| self.failures & c.bit() != 0)
            .collect();
        f.debug_struct("GrpcOutcome")
            .field("failures", &codes)
            .field("errors", &self.errors)
            .finish()
    }
}

impl<B: 'static> ClassifyOutcome<Response<B>> for GrpcOutcome {
    fn classify_or_defer(
        &self,
        rsp: &mut Response<B>,
        later: &mut dyn FnMut() -> OnOutcome,
    ) -> Option<Outcome> {
        if rsp.status() != http::StatusCode::OK || rsp.headers().contains_key(GRPC_STATUS) {
            return Some(self.classify(Ok(rsp)));
        }
        // The status comes in trailers.
        #[cfg(any(feature = "grpc", feature = "axum"))]
        match trailers::watch(rsp.body_mut(), *self, later) {
            trailers::Watch::Watching => return None,
            trailers::Watch::Ended => return Some(self.missing_status()),
            trailers::Watch::Unknown => {}
        }
        #[cfg(not(any(feature = "grpc", feature = "axum")))]
        let _ = later;
        Some(Outcome::Success)
    }

    fn classify(&self, result: Result<&Response<B>, &BoxError>) -> Outcome {
        match result {
            Ok(rsp) if !rsp.status().is_success() => {
                HttpOutcome::new().classify_status(rsp.status())
            }
            Ok(rsp) => self
                .classify_headers(rsp.headers())
                .unwrap_or(Outcome::Success),
            Err(e) => {
                #[cfg(feature = "grpc")]
                if let Some(status) = e.downcast_ref::<tonic::Status>() {
                    return self.classify_code(status.code().into());
                }
                self.errors.classify_error(e)
            }
        }
    }
}

// === impl GrpcCode ===

impl GrpcCode {
    /// Every code, in numeric order.
    pub const ALL: [GrpcCode; 17] = [
        GrpcCode::Ok,
        GrpcCode::Cancelled,
        GrpcCode::Unknown,
        GrpcCode::InvalidArgument,
        GrpcCode::DeadlineExceeded,
        GrpcCode::NotFound,
        GrpcCode::AlreadyExists,
        GrpcCode::PermissionDenied,
        GrpcCode::ResourceExhausted,
        GrpcCode::FailedPrecondition,
        GrpcCode::Aborted,
        GrpcCode::OutOfRange,
        GrpcCode::Unimplemented,
        GrpcCode::Internal,
        GrpcCode::Unavailable,
        GrpcCode::DataLoss,
        GrpcCode::Unauthenticated,
    ];

    const fn bit(self) -> u32 {
        1 << (self as u8)
    }

    /// The code with this number, if it is one (0 to 16).
    pub const fn from_u8(n: u8) -> Option<Self> {
        if n < 17 {
            Some(Self::ALL[n as usize])
        } else {
            None
        }
    }

    /// Parses the decimal `grpc-status` value.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        match b {
            [d @ b'0'..=b'9'] => Self::from_u8(d - b'0'),
            [b'1', d @ b'0'..=b'6'] => Self::from_u8(10 + (d - b'0')),
            _ => None,
        }
    }
}

#[cfg(feature = "grpc")]
impl From<tonic::Code> for GrpcCode {
    fn from(code: tonic::Code) -> Self {
        u8::try_from(code as i32)
            .ok()
            .and_then(GrpcCode::from_u8)
            .unwrap_or(GrpcCode::Unknown)
    }
}

#[cfg(feature = "grpc")]
impl From<GrpcCode> for tonic::Code {
    fn from(code: GrpcCode) -> Self {
        tonic::Code::from_i32(code as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Rejected, RejectionKind};
    use http::StatusCode;

    fn rsp(status: u16) -> Response<()> {
        Response::builder().status(status).body(()).unwrap()
    }

    #[test]
    fn http_default_table() {
        let table: &[(u16, Outcome)] = &[
            (100, Outcome::Success),
            (200, Outcome::Success),
            (204, Outcome::Success),
            (301, Outcome::Success),
            (304, Outcome::Success),
            (400, Outcome::CallerError),
            (401, Outcome::CallerError),
            (403, Outcome::CallerError),
            (404, Outcome::CallerError),
            (409, Outcome::CallerError),
            (422, Outcome::CallerError),
            (429, Outcome::CallerError),
            (499, Outcome::CallerError),
            (500, Outcome::Failure),
            (502, Outcome::Failure),
            (503, Outcome::Failure),
            (504, Outcome::Failure),
            (599, Outcome::Failure),
        ];
        let c = HttpOutcome::new();
        for &(status, want) in table {
            assert_eq!(c.classify(Ok(&rsp(status))), want, "status {status}");
        }
        let strict = HttpOutcome::new().rate_limited_is_failure(true);
        assert_eq!(strict.classify(Ok(&rsp(429))), Outcome::Failure);
        assert_eq!(strict.classify(Ok(&rsp(404))), Outcome::CallerError);
        assert_eq!(
            c.classify_status(StatusCode::GATEWAY_TIMEOUT),
            Outcome::Failure
        );
    }

    #[test]
    fn errors_are_failures_unless_client_class() {
        let c = HttpOutcome::new();
        let transport: BoxError = std::io::Error::other("connection reset").into();
        assert_eq!(
            ClassifyOutcome::<Response<()>>::classify(&c, Err(&transport)),
            Outcome::Failure
        );
        let timeout: BoxError = crate::timeout::error::Elapsed::new().into();
        assert_eq!(
            ClassifyOutcome::<Response<()>>::classify(&c, Err(&timeout)),
            Outcome::Failure
        );
        let open: BoxError = Rejected::new(RejectionKind::CircuitOpen, "").into();
        assert_eq!(
            ClassifyOutcome::<Response<()>>::classify(&c, Err(&open)),
            Outcome::Failure
        );
        let refused: BoxError = Rejected::new(RejectionKind::Disabled, "").into();
        assert_eq!(
            ClassifyOutcome::<Response<()>>::classify(&c, Err(&refused)),
            Outcome::CallerError
        );
        let none: BoxError = Rejected::new(RejectionKind::NoHealthyEndpoint, "").into();
        assert_eq!(
            ClassifyOutcome::<Response<()>>::classify(&c, Err(&none)),
            Outcome::Failure
        );
        // Our own limiters refused: the callee never saw the request.
        for kind in [RejectionKind::Throttled, RejectionKind::Overloaded] {
            let local: BoxError = Rejected::new(kind, "").into();
            assert_eq!(
                ClassifyOutcome::<Response<()>>::classify(&c, Err(&local)),
                Outcome::CallerError,
                "{kind:?}"
            );
            let strict = HttpOutcome::new()
                .errors(ClassifyErrors::new().local_rejections_are_failures(true));
            assert_eq!(
                ClassifyOutcome::<Response<()>>::classify(&strict, Err(&local)),
                Outcome::Failure,
                "{kind:?}"
            );
        }
    }

    /// A user's own error.
    #[derive(Debug)]
    struct Mine(ErrorClass);
    impl fmt::Display for Mine {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("mine")
        }
    }
    impl std::error::Error for Mine {}
    impl crate::Classify for Mine {
        fn error_class(&self) -> ErrorClass {
            self.0
        }
    }

    #[test]
    fn users_errors_classify_by_class() {
        use crate::error::Classified;
        let table = [
            (
                ErrorClass::Client,
                Outcome::CallerError,
                Outcome::CallerError,
            ),
            (
                ErrorClass::Overloaded,
                Outcome::CallerError,
                Outcome::Failure,
            ),
            (ErrorClass::Unavailable, Outcome::Failure, Outcome::Failure),
            (ErrorClass::Timeout, Outcome::Failure, Outcome::Failure),
        ];
        let strict = ClassifyErrors::new().local_rejections_are_failures(true);
        for (class, want, want_strict) in table {
            let err = Classified::boxed(Mine(class));
            assert_eq!(classify_error(&err), want, "{class:?}");
            assert_eq!(strict.classify_error(&err), want_strict, "{class:?}");
            assert_eq!(
                ClassifyOutcome::<Response<()>>::classify(&HttpOutcome::new(), Err(&err)),
                want,
                "{class:?}"
            );
            assert_eq!(
                ClassifyOutcome::<Response<()>>::classify(
                    &HttpOutcome::new().errors(strict),
                    Err(&err)
                ),
                want_strict,
                "{class:?}"
            );
            assert_eq!(
                ClassifyOutcome::<Response<()>>::classify(&GrpcOutcome::new(), Err(&err)),
                want,
                "{class:?}"
            );
        }
        // boxed bare, it is an error the family does not know: a failure
        let bare: BoxError = Box::new(Mine(ErrorClass::Client));
        assert_eq!(classify_error(&bare), Outcome::Failure);
    }

    #[test]
    fn grpc_default_table() {
        use GrpcCode::*;
        let table = [
            (Ok, Outcome::Success),
            (Unavailable, Outcome::Failure),
            (DeadlineExceeded, Outcome::Failure),
            (Internal, Outcome::Failure),
            (Unknown, Outcome::Failure),
            (ResourceExhausted, Outcome::Failure),
            (DataLoss, Outcome::Failure),
            (InvalidArgument, Outcome::CallerError),
            (NotFound, Outcome::CallerError),
            (AlreadyExists, Outcome::CallerError),
            (PermissionDenied, Outcome::CallerError),
            (Unauthenticated, Outcome::CallerError),
            (FailedPrecondition, Outcome::CallerError),
            (OutOfRange, Outcome::CallerError),
            (Unimplemented, Outcome::CallerError),
            (Cancelled, Outcome::CallerError),
            (Aborted, Outcome::CallerError),
        ];
        assert_eq!(table.len(), GrpcCode::ALL.len());
        let c = GrpcOutcome::new();
        for (code, want) in table {
            assert_eq!(c.classify_code(code), want, "{code:?}");
            // and through a trailers-only response
            let r = Response::builder()
                .header("grpc-status", (code as u8).to_string())
                .body(())
                .unwrap();
            assert_eq!(c.classify(Result::Ok(&r)), want, "{code:?} via header");
        }
        let custom = GrpcOutcome::new()
            .with_failure(Aborted)
            .without_failure(ResourceExhausted);
        assert_eq!(custom.classify_code(Aborted), Outcome::Failure);
        assert_eq!(
            custom.classify_code(ResourceExhausted),
            Outcome::CallerError
        );
    }

    #[test]
    fn grpc_status_parsing() {
        assert_eq!(GrpcCode::from_bytes(b"0"), Some(GrpcCode::Ok));
        assert_eq!(GrpcCode::from_bytes(b"14"), Some(GrpcCode::Unavailable));
        assert_eq!(GrpcCode::from_bytes(b"16"), Some(GrpcCode::Unauthenticated));
        for bad in [&b""[..], b"17", b"99", b"-1", b"01", b"1x", b"abc", b"140"] {
            assert_eq!(GrpcCode::from_bytes(bad), None, "{bad:?}");
        }
        // garbage grpc-status counts as UNKNOWN, a failure
        let r = Response::builder()
            .header("grpc-status", "zz")
            .body(())
            .unwrap();
        assert_eq!(GrpcOutcome::new().classify(Ok(&r)), Outcome::Failure);
        // no grpc-status header: `classify` sees no trailers, a success
        // (`classify_or_defer` reads them: tests/grpc_trailers.rs)
        assert_eq!(GrpcOutcome::new().classify(Ok(&rsp(200))), Outcome::Success);
        // a non-200 HTTP status on a gRPC call is classified as HTTP
        assert_eq!(GrpcOutcome::new().classify(Ok(&rsp(503))), Outcome::Failure);
    }

    #[test]
    fn closures_classify() {
        let c = classify_fn(|r: Result<&bool, &BoxError>| match r {
            Ok(true) => Outcome::Success,
            Ok(false) => Outcome::CallerError,
            Err(_) => Outcome::Failure,
        });
        assert_eq!(c.classify(Ok(&true)), Outcome::Success);
        assert_eq!(c.classify(Ok(&false)), Outcome::CallerError);
        let e: BoxError = "x".into();
        assert_eq!(c.classify(Err(&e)), Outcome::Failure);
    }
}
