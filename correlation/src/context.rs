//! The request context: what travels with a request from hop to hop.

use std::future::Future;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use resilience_core::{Deadline, Priority};

use crate::id::CorrelationId;
use crate::trace::TraceContext;

tokio::task_local! {
    static CURRENT: RequestContext;
}

/// Everything that travels with one request: correlation id, trace context,
/// priority, deadline, and headers other layers asked to forward.
///
/// The server layer ([`CorrelationLayer`](crate::CorrelationLayer)) builds it
/// and makes it available three ways: in the request's extensions, in a
/// task-local scope around the handler ([`RequestContext::current`]), and as
/// fields of a tracing span. The client layer
/// ([`PropagateContextLayer`](crate::PropagateContextLayer)) reads it back to
/// stamp outgoing calls.
///
/// Cloning is cheap: one reference-count increment.
#[derive(Clone, Debug)]
pub struct RequestContext {
    inner: Arc<Inner>,
}

#[derive(Clone, Debug)]
struct Inner {
    id: CorrelationId,
    trace: TraceContext,
    priority: Priority,
    deadline: Option<Deadline>,
    forward: Option<Arc<Vec<(HeaderName, HeaderValue)>>>,
}

// === impl RequestContext ===

impl RequestContext {
    /// A fresh context: a new id, a new trace, the default priority and no
    /// deadline. For work that starts here (a job, a synthetic client).
    pub fn new_root() -> Self {
        Self::new(CorrelationId::generate(), TraceContext::new_root())
    }

    /// A context with these ids, the default priority and no deadline.
    pub fn new(id: CorrelationId, trace: TraceContext) -> Self {
        Self::from_parts(id, trace, Priority::default(), None)
    }

    pub(crate) fn from_parts(
        id: CorrelationId,
        trace: TraceContext,
        priority: Priority,
        deadline: Option<Deadline>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                id,
                trace,
                priority,
                deadline,
                forward: None,
            }),
        }
    }

    /// Sets the priority.
    #[must_use]
    pub fn with_priority(mut self, priority: Priority) -> Self {
        Arc::make_mut(&mut self.inner).priority = priority;
        self
    }

    /// Sets the deadline.
    #[must_use]
    pub fn with_deadline(mut self, deadline: Option<Deadline>) -> Self {
        Arc::make_mut(&mut self.inner).deadline = deadline;
        self
    }

    /// Adds a header that the client layer forwards on every outgoing call
    /// (used, for instance, by the flags layer for trusted overrides).
    #[must_use]
    pub fn with_forwarded_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        let inner = Arc::make_mut(&mut self.inner);
        let mut list = inner.forward.as_deref().cloned().unwrap_or_default();
        list.retain(|(n, _)| n != name);
        list.push((name, value));
        inner.forward = Some(Arc::new(list));
        self
    }

    /// The correlation id.
    pub fn correlation_id(&self) -> &CorrelationId {
        &self.inner.id
    }

    /// The trace context of this hop.
    pub fn trace(&self) -> &TraceContext {
        &self.inner.trace
    }

    /// The priority, after the server's policy was applied.
    pub fn priority(&self) -> Priority {
        self.inner.priority
    }

    /// The deadline, if the request has one.
    pub fn deadline(&self) -> Option<Deadline> {
        self.inner.deadline
    }

    /// Headers to forward downstream.
    pub fn forwarded_headers(&self) -> &[(HeaderName, HeaderValue)] {
        self.inner.forward.as_deref().map_or(&[], Vec::as_slice)
    }

    /// The context of the request being handled on this task, if any.
    ///
    /// Set by the server layer around the inner service's future (and by
    /// [`RequestContext::scope`]). A task spawned from a handler does not
    /// inherit it: pass the context along and call `scope` there.
    pub fn current() -> Option<RequestContext> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// Runs `f` with a reference to the current context, without cloning it.
    pub fn with_current<R>(f: impl FnOnce(Option<&RequestContext>) -> R) -> R {
        let mut f = Some(f);
        match CURRENT.try_with(|ctx| (f.take().expect("called once"))(Some(ctx))) {
            Ok(r) => r,
            Err(_) => (f.take().expect("not called"))(None),
        }
    }

    /// Runs `fut` with `self` as the current context.
    pub fn scope<F: Future>(
        self,
        fut: F,
    ) -> tokio::task::futures::TaskLocalFuture<RequestContext, F> {
        CURRENT.scope(self, fut)
    }
}
