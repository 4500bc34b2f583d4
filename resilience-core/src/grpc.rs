//! Turns the family's errors into gRPC statuses (`grpc` feature).
//!
//! | error | code |
//! |---|---|
//! | [`Rejected`]: overloaded, throttled | `RESOURCE_EXHAUSTED` |
//! | [`Rejected`]: circuit open, no healthy endpoint | `UNAVAILABLE` |
//! | [`Rejected`]: disabled by flag | `NOT_FOUND` |
//! | [`Elapsed`] | `DEADLINE_EXCEEDED` |
//! | a `tonic::Status`, anything else | unchanged (`tonic::Status::from_error`) |
//!
//! A retry-after travels as `grpc-retry-pushback-ms` metadata, the key gRPC's
//! retry design uses for server pushback.
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

use crate::error::{BoxError, ErrorClass, Rejected, RejectionKind, find_in_chain};
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

/// The `Status` for an error of the family, or `None` for any other error.
pub fn try_status(err: &(dyn Error + 'static)) -> Option<Status> {
    if let Some(r) = find_in_chain::<Rejected>(err) {
        let code = match r.kind() {
            RejectionKind::Disabled => Code::NotFound,
            k => match k.error_class() {
                ErrorClass::Overloaded => Code::ResourceExhausted,
                _ => Code::Unavailable,
            },
        };
        let mut status = Status::new(code, r.to_string());
        if let Some(after) = crate::Classify::retry_after(r) {
            let ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
            status.metadata_mut().insert(RETRY_PUSHBACK_KEY, ms.into());
        }
        return Some(status);
    }
    find_in_chain::<Elapsed>(err).map(|e| Status::new(Code::DeadlineExceeded, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
