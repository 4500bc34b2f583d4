//! Error types.

use std::fmt;
use std::time::Duration;

use crate::error::{Classify, ErrorClass};

/// The request timed out: the layer's timeout or the request's deadline,
/// whichever came first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Elapsed {
    deadline: bool,
}

// === impl Elapsed ===

impl Elapsed {
    /// A timeout of the layer's own duration.
    pub const fn new() -> Self {
        Self { deadline: false }
    }

    /// The request's own deadline passed.
    pub const fn deadline_exceeded() -> Self {
        Self { deadline: true }
    }

    /// Whether it was the request's deadline (not the layer's timeout).
    pub const fn is_deadline(&self) -> bool {
        self.deadline
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.deadline {
            "request deadline exceeded"
        } else {
            "request timed out"
        })
    }
}

impl std::error::Error for Elapsed {}

impl Classify for Elapsed {
    fn error_class(&self) -> ErrorClass {
        ErrorClass::Timeout
    }

    fn retry_after(&self) -> Option<Duration> {
        None
    }
}
