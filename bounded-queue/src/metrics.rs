//! Metric handles, created once per queue.

#[cfg(feature = "metrics")]
mod enabled {
    use metrics::{Counter, Gauge, Histogram, Unit};
    use resilience_core::Priority;
    use resilience_core::names::{
        BOUNDED_QUEUE_DEPTH, BOUNDED_QUEUE_IN_SERVICE, BOUNDED_QUEUE_LIMIT,
        BOUNDED_QUEUE_REJECTED_TOTAL, BOUNDED_QUEUE_WAIT_SECONDS, LABEL_NAME, LABEL_PRIORITY,
        LABEL_REASON,
    };

    use crate::state::Reason;

    #[derive(Debug)]
    pub(crate) struct Metrics {
        pub(crate) depth: Gauge,
        pub(crate) in_service: Gauge,
        pub(crate) limit: Gauge,
        pub(crate) wait: Histogram,
        rejected: [[Counter; 4]; Reason::COUNT],
    }

    impl Metrics {
        pub(crate) fn new(name: &str) -> Self {
            describe();
            let name = name.to_owned();
            let rejected = std::array::from_fn(|r| {
                std::array::from_fn(|p| {
                    metrics::counter!(
                        BOUNDED_QUEUE_REJECTED_TOTAL,
                        LABEL_NAME => name.clone(),
                        LABEL_REASON => Reason::ALL[r].as_str(),
                        LABEL_PRIORITY => Priority::ALL[p].as_str(),
                    )
                })
            });
            Self {
                depth: metrics::gauge!(BOUNDED_QUEUE_DEPTH, LABEL_NAME => name.clone()),
                in_service: metrics::gauge!(BOUNDED_QUEUE_IN_SERVICE, LABEL_NAME => name.clone()),
                limit: metrics::gauge!(BOUNDED_QUEUE_LIMIT, LABEL_NAME => name.clone()),
                wait: metrics::histogram!(BOUNDED_QUEUE_WAIT_SECONDS, LABEL_NAME => name),
                rejected,
            }
        }

        pub(crate) fn rejected(&self, reason: Reason, priority: Priority) {
            self.rejected[reason as usize][priority.index()].increment(1);
        }
    }

    fn describe() {
        metrics::describe_gauge!(
            BOUNDED_QUEUE_DEPTH,
            Unit::Count,
            "Requests waiting in the queue."
        );
        metrics::describe_gauge!(
            BOUNDED_QUEUE_IN_SERVICE,
            Unit::Count,
            "Requests in service, as of the last contended admission, hand-off, rejection or snapshot (zero once idle)."
        );
        metrics::describe_gauge!(
            BOUNDED_QUEUE_LIMIT,
            Unit::Count,
            "The current concurrency limit."
        );
        metrics::describe_histogram!(
            BOUNDED_QUEUE_WAIT_SECONDS,
            Unit::Seconds,
            "Time requests admitted from the queue spent waiting for a slot."
        );
        metrics::describe_counter!(
            BOUNDED_QUEUE_REJECTED_TOTAL,
            Unit::Count,
            "Requests refused, by reason and priority."
        );
    }
}

#[cfg(feature = "metrics")]
pub(crate) use enabled::Metrics;

#[cfg(not(feature = "metrics"))]
mod disabled {
    use resilience_core::Priority;

    use crate::state::Reason;

    #[derive(Debug)]
    pub(crate) struct Noop;

    impl Noop {
        pub(crate) fn set(&self, _: f64) {}
        pub(crate) fn record(&self, _: f64) {}
    }

    #[derive(Debug)]
    pub(crate) struct Metrics {
        pub(crate) depth: Noop,
        pub(crate) in_service: Noop,
        pub(crate) limit: Noop,
        pub(crate) wait: Noop,
    }

    impl Metrics {
        pub(crate) fn new(_: &str) -> Self {
            Self {
                depth: Noop,
                in_service: Noop,
                limit: Noop,
                wait: Noop,
            }
        }

        pub(crate) fn rejected(&self, _: Reason, _: Priority) {}
    }
}

#[cfg(not(feature = "metrics"))]
pub(crate) use disabled::Metrics;
