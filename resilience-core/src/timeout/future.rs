//! Future types.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};

use super::error::Elapsed;
use crate::error::BoxError;

pin_project! {
    /// Response future of [`Timeout`](super::Timeout).
    ///
    /// Holds its timer inline (no allocation); the timer is armed only if the
    /// inner future does not complete at its first poll.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        #[pin]
        sleep: Option<Sleep>,
        timeout: Duration,
        deadline: Option<Instant>,
        by_deadline: bool,
        name: Option<Arc<str>>,
    }
}

// === impl ResponseFuture ===

impl<F> ResponseFuture<F> {
    pub(crate) fn new(
        inner: F,
        timeout: Duration,
        deadline: Option<Instant>,
        name: Option<Arc<str>>,
    ) -> Self {
        Self {
            inner: Some(inner),
            sleep: None,
            timeout,
            deadline,
            by_deadline: false,
            name,
        }
    }

    pub(crate) fn expired(name: Option<Arc<str>>) -> Self {
        Self {
            inner: None,
            sleep: None,
            timeout: Duration::ZERO,
            deadline: None,
            by_deadline: true,
            name,
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(Err(elapsed(true, this.name.as_deref())));
        };
        if let Poll::Ready(result) = inner.poll(cx) {
            return Poll::Ready(result.map_err(Into::into));
        }
        if this.sleep.is_none() {
            // First `Pending`: only now read the clock and arm the timer.
            let by_timeout = Instant::now().checked_add(*this.timeout);
            let (at, by_deadline) = match (by_timeout, *this.deadline) {
                (Some(t), Some(d)) if d < t => (d, true),
                (Some(t), _) => (t, false),
                (None, Some(d)) => (d, true),
                // A timeout too large to represent never fires.
                (None, None) => return Poll::Pending,
            };
            *this.by_deadline = by_deadline;
            this.sleep.set(Some(sleep_until(at)));
        }
        let sleep = this.sleep.as_pin_mut().expect("armed above");
        ready!(sleep.poll(cx));
        Poll::Ready(Err(elapsed(*this.by_deadline, this.name.as_deref())))
    }
}

#[cold]
fn elapsed(by_deadline: bool, name: Option<&str>) -> BoxError {
    let err = if by_deadline {
        Elapsed::deadline_exceeded()
    } else {
        Elapsed::new()
    };
    tracing::debug!(name = name.unwrap_or(""), by_deadline, "request timed out");
    #[cfg(feature = "metrics")]
    if let Some(name) = name {
        metrics::counter!(crate::names::TIMEOUT_ELAPSED_TOTAL, crate::names::LABEL_NAME => name.to_owned())
            .increment(1);
    }
    err.into()
}
