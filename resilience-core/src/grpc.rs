//! Turns the family's errors into gRPC statuses (`grpc` feature).
//!
//! The statuses are tonic 0.14's `tonic::Status`: a tonic server or channel
//! of another minor version needs its own conversion (see the crate docs'
//! [public dependencies](crate#public-dependencies)).
//!
//! | error | code |
//! |---|---|
//! | [`Rejected`]: overloaded, throttled | `RESOURCE_EXHAUSTED` |
//! | [`Rejected`]: circuit open, no healthy endpoint | `UNAVAILABLE` |
//! | [`Rejected`]: disabled by flag | `NOT_FOUND` |
//! | [`Elapsed`] | `DEADLINE_EXCEEDED` |
//! | any other [`Classify`](crate::Classify) error [`find`](crate::error::find) knows (`ChaosError`, your own in a [`Classified`](crate::error::Classified)), by its [`ErrorClass`] | `Client`: `NOT_FOUND`; `Overloaded`: `RESOURCE_EXHAUSTED`; `Unavailable`: `UNAVAILABLE`; `Timeout`: `DEADLINE_EXCEEDED` |
//! | a `tonic::Status`, anything else | unchanged (`tonic::Status::from_error`) |
//!
//! The first error of the chain that [`find`](crate::error::find) knows
//! decides. A retry-after travels as `grpc-retry-pushback-ms` metadata, the
//! key gRPC's retry design uses for server pushback. The message is the
//! family's own static text; for your own errors it is fixed by the class
//! (your error's message may hold request data and is never sent).
//!
//! Which statuses count against the callee (for a breaker, a throttle,
//! ejection) is the other direction, answered by
//! [`GrpcOutcome`](crate::GrpcOutcome) (table there): `UNAVAILABLE`,
//! `DEADLINE_EXCEEDED`, `INTERNAL`, `UNKNOWN`, `RESOURCE_EXHAUSTED` and
//! `DATA_LOSS` do; `NOT_FOUND`, `INVALID_ARGUMENT` and the other
//! caller's-error codes never do.
//!
//! # Example
//!
//! With a tonic server, map errors once, outside the other layers:
//!
//! ```ignore
//! Server::builder()
//!     .layer(ServiceBuilder::new()
//!         .map_err(resilience_core::grpc::into_status)
//!         .layer(TimeoutLayer::new(Duration::from_secs(1))))
//!     .add_service(svc)
//! ```
//!
//! ```
//! use resilience_core::{Rejected, RejectionKind, grpc::into_status};
//! let status = into_status(Rejected::new(RejectionKind::Overloaded, "queue full").into());
//! assert_eq!(status.code(), tonic::Code::ResourceExhausted);
//! ```

use std::error::Error;

use tonic::{Code, Status};

#[cfg(doc)]
use crate::error::Rejected;
use crate::error::{BoxError, ErrorClass, find_classified};
#[cfg(doc)]
use crate::timeout::error::Elapsed;

/// The metadata key carrying a retry-after, in milliseconds.
pub const RETRY_PUSHBACK_KEY: &str = "grpc-retry-pushback-ms";

/// Converts any error into a `Status`: the family's errors per the table in
/// the [module docs](self), others through `Status::from_error`.
pub fn into_status(err: BoxError) -> Status {
    match try_status(&*err) {
        Some(status) => status,
        None => Status::from_error(err),
    }
}

/// The `Status` for an error of the family (or yours, in a
/// [`Classified`](crate::error::Classified)), or `None` for any other error.
pub fn try_status(err: &(dyn Error + 'static)) -> Option<Status> {
    let found = find_classified(err)?;
    let code = match found.class.error_class() {
        ErrorClass::Client => Code::NotFound,
        ErrorClass::Overloaded => Code::ResourceExhausted,
        ErrorClass::Unavailable => Code::Unavailable,
        ErrorClass::Timeout => Code::DeadlineExceeded,
    };
    let mut status = Status::new(code, found.public_message());
    if let Some(after) = found.class.retry_after() {
        let ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
        status.metadata_mut().insert(RETRY_PUSHBACK_KEY, ms.into());
    }
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Rejected, RejectionKind};
    use crate::timeout::error::Elapsed;
    use std::time::Duration;

    #[test]
    fn table() {
        let cases: Vec<(BoxError, Code)> = vec![
            (
                Rejected::new(RejectionKind::Overloaded, "").into(),
                Code::ResourceExhausted,
            ),
            (
                Rejected::new(RejectionKind::Throttled, "").into(),
                Code::ResourceExhausted,
            ),
            (
                Rejected::new(RejectionKind::CircuitOpen, "").into(),
                Code::Unavailable,
            ),
            (
                Rejected::new(RejectionKind::NoHealthyEndpoint, "").into(),
                Code::Unavailable,
            ),
            (
                Rejected::new(RejectionKind::Disabled, "").into(),
                Code::NotFound,
            ),
            (Elapsed::new().into(), Code::DeadlineExceeded),
            (
                Status::permission_denied("no").into(),
                Code::PermissionDenied,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(into_status(err).code(), code);
        }
        let s = into_status(
            Rejected::new(RejectionKind::CircuitOpen, "")
                .with_retry_after(Duration::from_millis(1500))
                .into(),
        );
        assert_eq!(s.metadata().get(RETRY_PUSHBACK_KEY).unwrap(), "1500");
        assert!(try_status(&std::io::Error::other("x")).is_none());
    }

    /// A user's own error.
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
        let cases = [
            (ErrorClass::Client, Code::NotFound),
            (ErrorClass::Overloaded, Code::ResourceExhausted),
            (ErrorClass::Unavailable, Code::Unavailable),
            (ErrorClass::Timeout, Code::DeadlineExceeded),
        ];
        for (class, code) in cases {
            let s = into_status(Classified::boxed(Mine(class, None)));
            assert_eq!(s.code(), code, "{class:?}");
            assert!(!s.message().contains("secret"), "{class:?}");
            assert!(s.metadata().get(RETRY_PUSHBACK_KEY).is_none());
        }
        let s = into_status(Classified::boxed(Mine(
            ErrorClass::Overloaded,
            Some(Duration::from_millis(250)),
        )));
        assert_eq!(s.metadata().get(RETRY_PUSHBACK_KEY).unwrap(), "250");
        // boxed bare, it is an error the family does not know
        assert!(try_status(&Mine(ErrorClass::Overloaded, None)).is_none());
    }
}
