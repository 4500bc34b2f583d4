//! Turns the family's errors into HTTP responses.
//!
//! One function for axum's `HandleErrorLayer`:
//!
//! | error | status |
//! |---|---|
//! | [`Rejected`]: overloaded, circuit open, no healthy endpoint | `503` + `Retry-After` |
//! | [`Rejected`]: throttled | `429` + `Retry-After` |
//! | [`Rejected`]: disabled by flag | `404` |
//! | [`Elapsed`] | `504` (`408` with [`ErrorResponder::serving`]) |
//! | any other [`Classify`](crate::Classify) error [`find`](crate::error::find) knows (`ChaosError`, your own in a [`Classified`](crate::error::Classified)), by its [`ErrorClass`] | `Client`: `404`; `Overloaded`, `Unavailable`: `503`; `Timeout`: as [`Elapsed`]; `Retry-After` if it has one |
//! | anything else | `500`, without its message |
//!
//! The first error of the chain that [`find`](crate::error::find) knows decides. `Retry-After`
//! is in whole seconds, rounded up, at least 1. Bodies are short, fixed
//! texts: nothing from the request is ever echoed (the family's own errors
//! carry static texts; for your own errors the text is fixed by the class).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use resilience_core::{BoxError, Rejected, RejectionKind, http::error_response};
//!
//! let err: BoxError = Rejected::new(RejectionKind::Overloaded, "queue full")
//!     .with_retry_after(Duration::from_millis(1200))
//!     .into();
//! let rsp = error_response(&*err);
//! assert_eq!(rsp.status(), 503);
//! assert_eq!(rsp.headers()["retry-after"], "2");
//! ```
//!
//! In axum:
//!
//! ```ignore
//! let app = Router::new().route("/", get(handler)).layer(
//!     ServiceBuilder::new()
//!         .layer(HandleErrorLayer::new(resilience_core::http::handle_error))
//!         .layer(TimeoutLayer::new(Duration::from_secs(2))),
//! );
//! ```

use std::error::Error;
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use crate::error::{BoxError, ErrorClass, Rejected, RejectionKind, find_classified};
#[cfg(doc)]
use crate::timeout::error::Elapsed;

/// Maps errors to responses; the statuses are configurable.
#[derive(Debug, Clone, Copy)]
pub struct ErrorResponder {
    overloaded: StatusCode,
    throttled: StatusCode,
    unavailable: StatusCode,
    timeout: StatusCode,
    client: StatusCode,
    unknown: StatusCode,
}

/// Maps `err` with the default [`ErrorResponder`]; errors the family does not
/// own become a bare `500`.
pub fn error_response(err: &(dyn Error + 'static)) -> Response<String> {
    ErrorResponder::new().respond(err)
}

/// [`error_response`] as an async function, to hand to axum's
/// `HandleErrorLayer::new` as it is.
pub async fn handle_error(err: BoxError) -> Response<String> {
    error_response(&*err)
}

// === impl ErrorResponder ===

impl ErrorResponder {
    /// The defaults of the table in the [module docs](self).
    pub const fn new() -> Self {
        Self {
            overloaded: StatusCode::SERVICE_UNAVAILABLE,
            throttled: StatusCode::TOO_MANY_REQUESTS,
            unavailable: StatusCode::SERVICE_UNAVAILABLE,
            timeout: StatusCode::GATEWAY_TIMEOUT,
            client: StatusCode::NOT_FOUND,
            unknown: StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// For a server answering its own clients: a timeout is `408 Request
    /// Timeout` rather than `504 Gateway Timeout`.
    #[must_use]
    pub const fn serving(mut self) -> Self {
        self.timeout = StatusCode::REQUEST_TIMEOUT;
        self
    }

    /// Status for overload (queue full, shed): `503` by default; `429` is the
    /// other common choice.
    #[must_use]
    pub const fn overloaded_status(mut self, status: StatusCode) -> Self {
        self.overloaded = status;
        self
    }

    /// Status for a flag refusing the request: `404` by default (`403` is
    /// the other choice).
    #[must_use]
    pub const fn disabled_status(mut self, status: StatusCode) -> Self {
        self.client = status;
        self
    }

    /// Status for errors the family does not own: `500` by default (`502`
    /// when proxying).
    #[must_use]
    pub const fn unknown_status(mut self, status: StatusCode) -> Self {
        self.unknown = status;
        self
    }

    /// The response for an error of the family (or yours, in a
    /// [`Classified`](crate::error::Classified)), or `None` for any other
    /// error (so you can handle it yourself).
    pub fn try_respond(&self, err: &(dyn Error + 'static)) -> Option<Response<String>> {
        let found = find_classified(err)?;
        let class = found.class.error_class();
        let status = match found.error.downcast_ref::<Rejected>().map(Rejected::kind) {
            Some(RejectionKind::Throttled) => self.throttled,
            _ => match class {
                ErrorClass::Client => self.client,
                ErrorClass::Overloaded => self.overloaded,
                ErrorClass::Unavailable => self.unavailable,
                ErrorClass::Timeout => self.timeout,
            },
        };
        Some(build(
            status,
            &found.public_message(),
            found.class.retry_after(),
        ))
    }

    /// The response for any error: [`Self::try_respond`], else the unknown
    /// status with a generic body (the error is logged at debug, never sent).
    pub fn respond(&self, err: &(dyn Error + 'static)) -> Response<String> {
        self.try_respond(err).unwrap_or_else(|| {
            tracing::debug!(error = %err, "unhandled error mapped to a generic response");
            build(self.unknown, "internal error", None)
        })
    }
}

impl Default for ErrorResponder {
    fn default() -> Self {
        Self::new()
    }
}

/// `Retry-After` in whole seconds, rounded up, at least 1.
pub fn retry_after_value(after: Duration) -> HeaderValue {
    let secs = after
        .as_secs()
        .saturating_add(u64::from(after.subsec_nanos() > 0));
    HeaderValue::from(secs.max(1))
}

fn build(status: StatusCode, msg: &str, retry_after: Option<Duration>) -> Response<String> {
    let mut rsp = Response::new(format!("{msg}\n"));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some(after) = retry_after {
        rsp.headers_mut()
            .insert(header::RETRY_AFTER, retry_after_value(after));
    }
    rsp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeout::error::Elapsed;

    #[test]
    fn retry_after_rounds_up_and_saturates() {
        assert_eq!(retry_after_value(Duration::ZERO), "1");
        assert_eq!(retry_after_value(Duration::from_millis(1001)), "2");
        assert_eq!(retry_after_value(Duration::from_secs(5)), "5");
        assert_eq!(
            retry_after_value(Duration::MAX),
            u64::MAX.to_string().as_str()
        );
    }

    #[test]
    fn table() {
        let cases: Vec<(BoxError, u16, Option<&str>)> = vec![
            (
                Rejected::new(RejectionKind::Overloaded, "queue full")
                    .with_retry_after(Duration::from_secs(1))
                    .into(),
                503,
                Some("1"),
            ),
            (
                Rejected::new(RejectionKind::Throttled, "")
                    .with_retry_after(Duration::from_millis(2500))
                    .into(),
                429,
                Some("3"),
            ),
            (
                Rejected::new(RejectionKind::CircuitOpen, "")
                    .with_retry_after(Duration::from_millis(1))
                    .into(),
                503,
                Some("1"),
            ),
            (
                Rejected::new(RejectionKind::NoHealthyEndpoint, "").into(),
                503,
                None,
            ),
            (Rejected::new(RejectionKind::Disabled, "").into(), 404, None),
            (Elapsed::new().into(), 504, None),
            (std::io::Error::other("secret detail").into(), 500, None),
        ];
        for (err, status, retry) in cases {
            let rsp = error_response(&*err);
            assert_eq!(rsp.status(), status, "{err}");
            assert_eq!(
                rsp.headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap()),
                retry,
                "{err}"
            );
            assert!(!rsp.body().contains("secret"));
        }
    }

    #[test]
    fn configurable() {
        let r = ErrorResponder::new()
            .serving()
            .overloaded_status(StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.respond(&Elapsed::new()).status(), 408);
        assert_eq!(
            r.respond(&Rejected::new(RejectionKind::Overloaded, ""))
                .status(),
            429
        );
        assert!(r.try_respond(&std::io::Error::other("x")).is_none());
        assert_eq!(
            ErrorResponder::new()
                .unknown_status(StatusCode::BAD_GATEWAY)
                .respond(&std::io::Error::other("x"))
                .status(),
            502
        );
    }

    /// A user's own error: its class, a retry-after, and a message that
    /// must not reach the peer.
    #[derive(Debug)]
    struct Mine(ErrorClass, Option<Duration>);
    impl std::fmt::Display for Mine {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("secret user data")
        }
    }
    impl Error for Mine {}
    impl crate::Classify for Mine {
        fn error_class(&self) -> ErrorClass {
            self.0
        }
        fn retry_after(&self) -> Option<Duration> {
            self.1
        }
    }

    #[test]
    fn users_errors_map_by_class() {
        use crate::error::Classified;
        let secs = |s| Some(Duration::from_secs(s));
        let cases = [
            (
                Mine(ErrorClass::Client, None),
                404,
                None,
                "request refused\n",
            ),
            (
                Mine(ErrorClass::Overloaded, secs(2)),
                503,
                Some("2"),
                "service overloaded\n",
            ),
            (
                Mine(ErrorClass::Unavailable, secs(7)),
                503,
                Some("7"),
                "service unavailable\n",
            ),
            (
                Mine(ErrorClass::Timeout, None),
                504,
                None,
                "request timed out\n",
            ),
        ];
        for (mine, status, retry, body) in cases {
            let class = mine.0;
            let err = Classified::boxed(mine);
            let rsp = error_response(&*err);
            assert_eq!(rsp.status(), status, "{class:?}");
            assert_eq!(
                rsp.headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap()),
                retry,
                "{class:?}"
            );
            assert_eq!(rsp.body(), body, "{class:?}");
        }
        // the responder's settings apply to them too
        let err = Classified::boxed(Mine(ErrorClass::Timeout, None));
        assert_eq!(ErrorResponder::new().serving().respond(&*err).status(), 408);
        let err = Classified::boxed(Mine(ErrorClass::Client, None));
        let r = ErrorResponder::new().disabled_status(StatusCode::FORBIDDEN);
        assert_eq!(r.respond(&*err).status(), 403);
        // boxed bare, it is an error the family does not know
        let bare: BoxError = Box::new(Mine(ErrorClass::Overloaded, None));
        assert!(ErrorResponder::new().try_respond(&*bare).is_none());
    }

    #[tokio::test]
    async fn handle_error_fn() {
        let rsp = handle_error(Rejected::new(RejectionKind::CircuitOpen, "").into()).await;
        assert_eq!(rsp.status(), 503);
        assert_eq!(rsp.body(), "circuit open\n");
    }
}
