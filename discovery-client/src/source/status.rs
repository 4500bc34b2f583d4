use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio::time::Instant;

/// The health of a discovery source: how stale its endpoint set is, and its
/// errors; from [`SourceStream::health`](super::SourceStream::health).
///
/// A live view, not a snapshot: cheap to clone, and every clone reads the
/// same source's current state.
#[derive(Clone)]
pub struct SourceHealth {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    created: Instant,
    state: Mutex<State>,
    errors: AtomicU64,
    live: std::sync::atomic::AtomicBool,
    #[cfg(feature = "metrics")]
    metrics: crate::metrics::SourceMetrics,
}

#[derive(Default)]
struct State {
    last_good: Option<Instant>,
    last_error: Option<String>,
    tasks: Vec<AbortHandle>,
}

// === impl SourceHealth ===

impl SourceHealth {
    #[cfg_attr(
        not(any(feature = "file", feature = "dns", feature = "etcd")),
        allow(dead_code)
    )]
    pub(crate) fn new(name: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                created: Instant::now(),
                state: Mutex::new(State::default()),
                errors: AtomicU64::new(0),
                live: std::sync::atomic::AtomicBool::new(false),
                #[cfg(feature = "metrics")]
                metrics: crate::metrics::SourceMetrics::new(name),
            }),
        }
    }

    /// The source's name (the `name` metric label).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// How long since the last good read: the age of the endpoint set. Before
    /// any good read, the time since the source started.
    ///
    /// While a watch is connected (etcd), the set is current: zero.
    pub fn staleness(&self) -> Duration {
        if self.inner.live.load(Ordering::Acquire) {
            return Duration::ZERO;
        }
        let last = self.lock().last_good.unwrap_or(self.inner.created);
        Instant::now().saturating_duration_since(last)
    }

    /// Whether the source has read the registry successfully at least once.
    pub fn has_read(&self) -> bool {
        self.lock().last_good.is_some()
    }

    /// Failed reads so far.
    pub fn errors(&self) -> u64 {
        self.inner.errors.load(Ordering::Relaxed)
    }

    /// The last error, if the last read failed.
    pub fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn good(&self) {
        let mut s = self.lock();
        let recovered = s.last_error.take().is_some();
        s.last_good = Some(Instant::now());
        drop(s);
        if recovered {
            tracing::info!(name = %self.inner.name, "discovery source recovered");
        }
        #[cfg(feature = "metrics")]
        self.inner.metrics.staleness.set(0.0);
    }

    pub(crate) fn error(&self, err: &(dyn std::error::Error + 'static)) {
        self.inner.errors.fetch_add(1, Ordering::Relaxed);
        self.lock().last_error = Some(err.to_string());
        let staleness = self.staleness();
        tracing::warn!(name = %self.inner.name, error = %err, ?staleness, "discovery source failed; keeping the last good endpoint set");
        #[cfg(feature = "metrics")]
        {
            self.inner.metrics.errors.increment(1);
            self.inner.metrics.staleness.set(staleness.as_secs_f64());
        }
    }

    #[cfg_attr(not(any(feature = "file", feature = "etcd")), allow(dead_code))]
    /// Counts an invalid entry that was skipped (not a failed read).
    pub(crate) fn skipped(&self, what: &str, why: &dyn fmt::Display) {
        tracing::warn!(name = %self.inner.name, entry = %what, reason = %why, "skipping invalid endpoint entry");
    }

    /// Marks a watch connected (the set is current) or lost.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub(crate) fn set_live(&self, live: bool) {
        if !live && self.inner.live.swap(false, Ordering::AcqRel) {
            // Staleness counts from the moment the watch was lost.
            self.lock().last_good = Some(Instant::now());
        } else if live {
            self.inner.live.store(true, Ordering::Release);
        }
    }

    pub(crate) fn set_task(&self, task: AbortHandle) {
        self.lock().tasks.push(task);
    }

    pub(crate) fn stop(&self) {
        for t in self.lock().tasks.drain(..) {
            t.abort();
        }
    }
}

impl fmt::Debug for SourceHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceHealth")
            .field("name", &self.inner.name)
            .field("staleness", &self.staleness())
            .field("errors", &self.errors())
            .field("last_error", &self.last_error())
            .finish()
    }
}
