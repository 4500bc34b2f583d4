//! The request context: what travels with a request from hop to hop.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderName, HeaderValue};
use pin_project_lite::pin_project;
use resilience_core::carried::Carried;
use resilience_core::{Deadline, Priority};

use crate::id::CorrelationId;
use crate::trace::TraceContext;

thread_local! {
    /// The context of the request being polled on this thread. Set only for
    /// the duration of a poll of a [`Scoped`] future, so it follows the
    /// request from thread to thread like a task-local.
    static CURRENT: Cell<Option<RequestContext>> = const { Cell::new(None) };
}

pin_project! {
    /// A future run with a [`RequestContext`] as the current one; see
    /// [`RequestContext::scope`].
    ///
    /// The context is current while the future is polled and while it is
    /// dropped (as with tokio's `task_local!`), so code in the `Drop` of a
    /// cancelled handler's state still sees it.
    #[derive(Debug)]
    pub struct Scoped<F> {
        ctx: Option<RequestContext>,
        // `Some` until dropped in place, inside the scope, by `drop`.
        #[pin]
        fut: Option<F>,
    }

    impl<F> PinnedDrop for Scoped<F> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            // Without a context (taken back after completion), the future
            // drops as it would anyway.
            if this.ctx.is_some() {
                enter(this.ctx, || this.fut.set(None));
            }
        }
    }
}

/// Everything that travels with one request: correlation id, trace context,
/// priority, deadline, and headers other layers asked to forward.
///
/// The server layer ([`CorrelationLayer`](crate::CorrelationLayer)) builds it
/// and makes it available three ways: in the request's extensions, in a
/// task-local scope around the handler ([`RequestContext::current`]), and as
/// fields of a tracing span. The client layer
/// ([`PropagateContextLayer`](crate::PropagateContextLayer)) reads it back to
/// stamp outgoing calls. Its priority and deadline are what the other
/// layers of the family read for the request
/// ([`Priority::from_extensions`], [`Deadline::from_extensions`]: see
/// [`resilience_core::carried`]), so the context is the request's only
/// extension of ours.
///
/// Cloning is cheap and never allocates: the context is a plain value
/// (about 170 bytes: ids, priority and deadline are copied; the id, an
/// inbound `tracestate` and the forwarded headers are shared, a
/// reference-count increment each).
///
/// A context made by the server layer holds values of the request path,
/// which share larger buffers: its id is a slice of the buffer the request's
/// headers were read into or of a per-thread 4 KiB buffer, and so is the
/// `traceparent` it sends. A context kept after its request (in a spawned
/// task, say) keeps those buffers while it lives; to keep the id, keep a
/// clone of the [`CorrelationId`], which owns just its bytes (see
/// [its costs](CorrelationId#what-a-clone-and-a-kept-id-cost)).
#[derive(Debug)]
pub struct RequestContext {
    id: CorrelationId,
    trace: TraceContext,
    priority: Priority,
    deadline: Option<Deadline>,
    forward: Option<Arc<[(HeaderName, HeaderValue)]>>,
}

// === impl RequestContext ===

impl Clone for RequestContext {
    /// Shares the id's bytes (a clone of the context stays on the request
    /// path; a clone of the [`CorrelationId`] copies them, see there).
    fn clone(&self) -> Self {
        Self {
            id: self.id.share(),
            trace: self.trace.clone(),
            priority: self.priority,
            deadline: self.deadline,
            forward: self.forward.clone(),
        }
    }
}

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
            id,
            trace,
            priority,
            deadline,
            forward: None,
        }
    }

    /// Sets the priority.
    #[must_use]
    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the deadline.
    #[must_use]
    pub fn with_deadline(mut self, deadline: Option<Deadline>) -> Self {
        self.deadline = deadline;
        self
    }

    /// Adds a header that the client layer forwards on every outgoing call
    /// (used, for instance, by the flags layer for trusted overrides).
    #[must_use]
    pub fn with_forwarded_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        let mut list = self
            .forward
            .as_deref()
            .map(<[_]>::to_vec)
            .unwrap_or_default();
        list.retain(|(n, _)| n != name);
        list.push((name, value));
        self.forward = Some(list.into());
        self
    }

    /// The correlation id.
    pub fn correlation_id(&self) -> &CorrelationId {
        &self.id
    }

    /// The trace context of this hop.
    pub fn trace(&self) -> &TraceContext {
        &self.trace
    }

    /// Replaces the trace context (with the one of the OpenTelemetry span
    /// the server layer opened).
    #[cfg(feature = "opentelemetry")]
    pub(crate) fn set_trace(&mut self, trace: TraceContext) {
        self.trace = trace;
    }

    /// The priority, after the server's policy was applied.
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// The deadline, if the request has one.
    pub fn deadline(&self) -> Option<Deadline> {
        self.deadline
    }

    /// The `traceparent` to send on outgoing calls: this hop's trace
    /// context, cut from the per-thread buffer.
    pub(crate) fn outgoing_traceparent(&self) -> HeaderValue {
        self.trace.to_traceparent_shared()
    }

    /// Headers to forward downstream.
    pub fn forwarded_headers(&self) -> &[(HeaderName, HeaderValue)] {
        self.forward.as_deref().unwrap_or(&[])
    }

    /// The context of the request being handled on this task, if any.
    ///
    /// Set by the server layer around the inner service's future (and by
    /// [`RequestContext::scope`]). A task spawned from a handler does not
    /// inherit it: pass the context along and call `scope` there.
    pub fn current() -> Option<RequestContext> {
        CURRENT
            .try_with(|slot| {
                let ctx = slot.take();
                let copy = ctx.clone();
                slot.set(ctx);
                copy
            })
            .ok()
            .flatten()
    }

    /// Runs `f` with a reference to the current context.
    pub fn with_current<R>(f: impl FnOnce(Option<&RequestContext>) -> R) -> R {
        f(Self::current().as_ref())
    }

    /// Runs `fut` with `self` as the current context: while `fut` is being
    /// polled, and while it is dropped, [`RequestContext::current`] returns
    /// it.
    pub fn scope<F: Future>(self, fut: F) -> Scoped<F> {
        register_reader();
        Scoped {
            ctx: Some(self),
            fut: Some(fut),
        }
    }
}

// === impl Scoped ===

impl<F> Scoped<F> {
    /// Takes the context back out (after the future completed).
    pub fn take_context(self: Pin<&mut Self>) -> Option<RequestContext> {
        self.project().ctx.take()
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let fut = this
            .fut
            .as_pin_mut()
            .expect("the future is only taken by drop");
        enter(this.ctx, || fut.poll(cx))
    }
}

/// Lets the readers of `resilience-core` find the priority and deadline of
/// a context in a request's extensions or in scope (once per process).
pub(crate) fn register_reader() {
    static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if DONE.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    DONE.store(true, std::sync::atomic::Ordering::Relaxed);
    resilience_core::carried::register(resilience_core::carried::ContextReader {
        extensions: |ext| ext.get::<RequestContext>().map(RequestContext::carried),
        current: || {
            CURRENT
                .try_with(|slot| {
                    let ctx = slot.take();
                    let carried = ctx.as_ref().map(RequestContext::carried);
                    slot.set(ctx);
                    carried
                })
                .ok()
                .flatten()
        },
    });
}

impl RequestContext {
    fn carried(&self) -> Carried {
        Carried {
            priority: self.priority,
            deadline: self.deadline,
        }
    }
}

/// Runs `f` with the context in `slot` as the current one, then puts it
/// back in `slot` and the previous one back in place, even if `f` panics.
pub(crate) fn enter<R>(slot: &mut Option<RequestContext>, f: impl FnOnce() -> R) -> R {
    /// Puts the previous context back, even if `f` panics.
    struct Restore<'a> {
        slot: &'a mut Option<RequestContext>,
        prev: Option<RequestContext>,
    }
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            let prev = self.prev.take();
            if let Ok(ours) = CURRENT.try_with(|c| c.replace(prev)) {
                *self.slot = ours;
            }
        }
    }
    let Ok(prev) = CURRENT.try_with(|c| c.replace(slot.take())) else {
        // Thread-local storage is being torn down: run without a scope.
        return f();
    };
    let _restore = Restore { slot, prev };
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(id: &str) -> RequestContext {
        RequestContext::new(id.parse().unwrap(), TraceContext::new_root())
    }

    fn current_id() -> Option<String> {
        RequestContext::current().map(|c| c.correlation_id().to_string())
    }

    #[test]
    fn a_context_is_a_small_plain_value() {
        // What the type's docs say: about 170 bytes, no `Arc` of its own.
        let size = std::mem::size_of::<RequestContext>();
        assert!((120..=192).contains(&size), "{size}");
    }

    #[tokio::test]
    async fn scopes_nest_and_restore() {
        assert_eq!(current_id(), None);
        root("outer")
            .scope(async {
                assert_eq!(current_id().as_deref(), Some("outer"));
                root("inner")
                    .scope(async { assert_eq!(current_id().as_deref(), Some("inner")) })
                    .await;
                assert_eq!(current_id().as_deref(), Some("outer"));
                tokio::task::yield_now().await; // across a pending poll
                assert_eq!(current_id().as_deref(), Some("outer"));
            })
            .await;
        assert_eq!(current_id(), None);
    }

    #[test]
    fn a_panicking_poll_restores_the_previous_context() {
        let result = std::panic::catch_unwind(|| {
            let fut = root("boom").scope(async { panic!("handler panicked") });
            futures_lite_block_on(fut)
        });
        assert!(result.is_err());
        assert_eq!(current_id(), None);
    }

    #[test]
    fn take_context_returns_it_after_completion() {
        let mut fut = Box::pin(root("kept").scope(async {}));
        futures_lite_block_on(fut.as_mut());
        let ctx = fut.as_mut().take_context().unwrap();
        assert_eq!(ctx.correlation_id().as_str(), "kept");
    }

    fn futures_lite_block_on<F: Future>(fut: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(fut)
    }
}
