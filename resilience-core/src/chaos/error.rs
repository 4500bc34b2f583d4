//! Error types.

use std::fmt;

use crate::error::{Classify, ErrorClass};

/// A request failed on purpose by the [chaos layer](super): the inner
/// service was never called.
///
/// It stands for the dependency failing on its own, so it counts against the
/// callee:
///
/// - [`Classify::error_class`] is [`ErrorClass::Unavailable`], and
///   [`ClassifyErrors`](crate::ClassifyErrors) counts it as a
///   [`Failure`](crate::Outcome::Failure): a circuit breaker above the chaos
///   layer opens on injected errors as it would on real ones;
/// - [`error::find`](crate::error::find) knows it, so it maps by its class:
///   over HTTP, [`error_response`](crate::http::error_response) answers
///   `503` (no `Retry-After`: it carries none) with the body
///   `injected fault`; over gRPC, `grpc::into_status` gives `UNAVAILABLE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChaosError {
    _priv: (),
}

// === impl ChaosError ===

impl ChaosError {
    /// An injected error.
    pub const fn new() -> Self {
        Self { _priv: () }
    }
}

impl fmt::Display for ChaosError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("injected fault")
    }
}

impl std::error::Error for ChaosError {}

impl Classify for ChaosError {
    fn error_class(&self) -> ErrorClass {
        ErrorClass::Unavailable
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BoxError;

    #[test]
    fn display_class_and_box() {
        let err = ChaosError::new();
        assert_eq!(err.to_string(), "injected fault");
        assert_eq!(err.error_class(), ErrorClass::Unavailable);
        assert_eq!(err.retry_after(), None);
        let boxed: BoxError = err.into();
        assert!(boxed.is::<ChaosError>());
    }
}
