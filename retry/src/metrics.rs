//! Metric handles, created once per layer.

use resilience_core::Priority;

use crate::classify::Reason;

#[cfg(feature = "metrics")]
use resilience_core::names::{
    LABEL_NAME, LABEL_PRIORITY, LABEL_REASON, RETRY_ATTEMPTS_TOTAL, RETRY_DECLINED_TOTAL,
    RETRY_RETRIES_TOTAL,
};

/// Why a retryable failure was returned without a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decline {
    /// The budget had nothing left for the request's priority.
    Budget,
    /// The next attempt could not start before the request's deadline.
    Deadline,
    /// The server asked not to retry (a negative or malformed gRPC
    /// pushback), or to wait longer than `max_pushback`.
    Pushback,
    /// The request body cannot be replayed.
    Body,
    /// The request had all its attempts.
    MaxAttempts,
}

/// The layer's metric handles (no-ops without the `metrics` feature).
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    #[cfg(feature = "metrics")]
    attempts: metrics::Counter,
    #[cfg(feature = "metrics")]
    retries: [metrics::Counter; 4],
    #[cfg(feature = "metrics")]
    declined: [[metrics::Counter; 4]; 5],
}

// === impl Decline ===

impl Decline {
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) const ALL: [Decline; 5] = [
        Decline::Budget,
        Decline::Deadline,
        Decline::Pushback,
        Decline::Body,
        Decline::MaxAttempts,
    ];

    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Decline::Budget => "budget_exhausted",
            Decline::Deadline => "deadline",
            Decline::Pushback => "pushback",
            Decline::Body => "body",
            Decline::MaxAttempts => "max_attempts",
        }
    }

    #[cfg(feature = "metrics")]
    const fn index(self) -> usize {
        self as usize
    }
}

// === impl Metrics ===

impl Metrics {
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn new(name: &str) -> Self {
        #[cfg(feature = "metrics")]
        {
            metrics::describe_counter!(
                RETRY_ATTEMPTS_TOTAL,
                metrics::Unit::Count,
                "Attempts sent by a retry layer: first attempts and retries."
            );
            metrics::describe_counter!(
                RETRY_RETRIES_TOTAL,
                metrics::Unit::Count,
                "Retries scheduled, by the reason the attempt failed."
            );
            metrics::describe_counter!(
                RETRY_DECLINED_TOTAL,
                metrics::Unit::Count,
                "Retryable failures returned without a retry, by reason and priority."
            );
            let name = name.to_owned();
            Self {
                attempts: metrics::counter!(RETRY_ATTEMPTS_TOTAL, LABEL_NAME => name.clone()),
                retries: Reason::ALL.map(|r| {
                    metrics::counter!(RETRY_RETRIES_TOTAL, LABEL_NAME => name.clone(), LABEL_REASON => r.as_str())
                }),
                declined: Decline::ALL.map(|d| {
                    Priority::ALL.map(|p| {
                        metrics::counter!(
                            RETRY_DECLINED_TOTAL,
                            LABEL_NAME => name.clone(),
                            LABEL_REASON => d.as_str(),
                            LABEL_PRIORITY => p.as_str()
                        )
                    })
                }),
            }
        }
        #[cfg(not(feature = "metrics"))]
        Self {}
    }

    /// Counts one attempt sent.
    #[inline]
    pub(crate) fn attempt(&self) {
        #[cfg(feature = "metrics")]
        self.attempts.increment(1);
    }

    /// Counts a retry scheduled (its attempt is counted when it is sent).
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn retry(&self, reason: Reason) {
        #[cfg(feature = "metrics")]
        self.retries[reason.index()].increment(1);
    }

    /// Counts a retryable failure returned without a retry.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn declined(&self, why: Decline, priority: Priority) {
        #[cfg(feature = "metrics")]
        self.declined[why.index()][priority.index()].increment(1);
    }
}
