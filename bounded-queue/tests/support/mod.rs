//! Shared helpers for the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use resilience_bounded_queue::{BoundedQueueConfigBuilder, BoundedQueueLayer};
use resilience_core::{BoxError, Deadline, Priority, Rejected};

/// A test request: a priority, an optional deadline and an id.
#[derive(Debug, Clone, PartialEq)]
pub struct Req {
    pub id: u32,
    pub priority: Priority,
    pub deadline: Option<Deadline>,
}

pub fn req(id: u32) -> Req {
    Req {
        id,
        priority: Priority::Critical,
        deadline: None,
    }
}

pub fn req_p(id: u32, priority: Priority) -> Req {
    Req {
        id,
        priority,
        deadline: None,
    }
}

pub fn req_d(id: u32, within: Duration) -> Req {
    Req {
        id,
        priority: Priority::Critical,
        deadline: Some(Deadline::after(within)),
    }
}

pub type ReadP = fn(&Req) -> Priority;
pub type ReadD = fn(&Req) -> Option<Deadline>;

/// A layer reading the test request's priority and deadline.
pub fn layer(builder: BoundedQueueConfigBuilder) -> BoundedQueueLayer<ReadP, ReadD> {
    BoundedQueueLayer::new(builder.build().expect("valid config"))
        .with_priority((|r: &Req| r.priority) as ReadP)
        .with_deadline((|r: &Req| r.deadline) as ReadD)
}

/// The rejection inside `err`, which must be one.
pub fn rejection(err: &BoxError) -> &Rejected {
    err.downcast_ref::<Rejected>()
        .unwrap_or_else(|| panic!("not a rejection: {err}"))
}

/// The reason of a rejection `err`.
pub fn reason(err: &BoxError) -> &'static str {
    rejection(err).reason()
}
