//! Where flag sets come from, besides code: a file and etcd.
//!
//! A source runs as a background task that replaces the whole set in a
//! [`FlagStore`](crate::FlagStore) when its input changes. A source that
//! breaks or reads garbage keeps the last good set, logs a warning, counts
//! the failure in `resilience_flags_source_errors_total` and reports its
//! staleness through its [`SourceHandle`].

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio::time::Instant;

#[cfg(feature = "etcd")]
mod etcd;
#[cfg(feature = "file")]
mod file;

#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
pub use self::etcd::{EtcdSource, EtcdSourceBuilder};
#[cfg(feature = "file")]
#[cfg_attr(docsrs, doc(cfg(feature = "file")))]
pub use self::file::{FileSource, FileSourceBuilder};

/// The old name of [`FlagSourceSnapshot`] (distinct from the discovery
/// sources' live `SourceHealth`).
#[deprecated(since = "0.1.0", note = "use `FlagSourceSnapshot`")]
pub type SourceStatus = FlagSourceSnapshot;

/// Controls a running source and reports its health.
///
/// Dropping the handle leaves the source running (like a
/// `tokio::task::JoinHandle`); call [`stop`](Self::stop) to end it.
#[derive(Clone)]
pub struct SourceHandle {
    status: Arc<Mutex<Status>>,
    task: AbortHandle,
}

/// A point-in-time view of a flag source's health, from
/// [`SourceHandle::snapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlagSourceSnapshot {
    /// Flag sets applied to the store since the source started.
    pub updates: u64,
    /// Failed or rejected reads since the source started.
    pub errors: u64,
    /// The last error, while the source is failing.
    pub last_error: Option<String>,
    /// How long the store has been out of step with the source: zero while
    /// reads succeed; since the last good read (or the start) while failing.
    pub staleness: Duration,
}

#[derive(Debug)]
pub(crate) struct Status {
    started: Instant,
    last_ok: Option<Instant>,
    failing: bool,
    updates: u64,
    errors: u64,
    last_error: Option<String>,
}

// === impl SourceHandle ===

impl SourceHandle {
    pub(crate) fn new(status: Arc<Mutex<Status>>, task: AbortHandle) -> Self {
        Self { status, task }
    }

    /// The source's health now.
    pub fn snapshot(&self) -> FlagSourceSnapshot {
        let s = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        let staleness = if s.failing {
            Instant::now().saturating_duration_since(s.last_ok.unwrap_or(s.started))
        } else {
            Duration::ZERO
        };
        FlagSourceSnapshot {
            updates: s.updates,
            errors: s.errors,
            last_error: s.last_error.clone(),
            staleness,
        }
    }

    /// The source's health now.
    #[deprecated(since = "0.1.0", note = "use `SourceHandle::snapshot`")]
    pub fn status(&self) -> FlagSourceSnapshot {
        self.snapshot()
    }

    /// Stops the source. The store keeps the last set it applied.
    pub fn stop(&self) {
        self.task.abort();
    }

    /// Whether the source's task is still running.
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

impl fmt::Debug for SourceHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceHandle")
            .field("status", &self.snapshot())
            .finish()
    }
}

// === impl Status ===

impl Status {
    pub(crate) fn new() -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(Self {
            started: Instant::now(),
            last_ok: None,
            failing: true,
            updates: 0,
            errors: 0,
            last_error: None,
        }))
    }

    pub(crate) fn with<R>(status: &Mutex<Self>, f: impl FnOnce(&mut Self) -> R) -> R {
        f(&mut status.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// A good read; `applied` if it changed the store.
    pub(crate) fn ok(status: &Mutex<Self>, applied: bool) {
        Self::with(status, |s| {
            s.last_ok = Some(Instant::now());
            s.failing = false;
            s.last_error = None;
            s.updates += u64::from(applied);
        });
    }

    /// A failed or rejected read. The same error twice in a row is logged
    /// and counted once.
    pub(crate) fn fail(
        status: &Mutex<Self>,
        store: &crate::FlagStore,
        source: &str,
        error: String,
    ) {
        if Self::with(status, |s| {
            s.failing && s.last_error.as_ref() == Some(&error)
        }) {
            return;
        }
        tracing::warn!(name = %store.name(), source, %error, "flag source failed; keeping the last good flag set");
        store.record_source_error();
        Self::with(status, |s| {
            s.failing = true;
            s.errors += 1;
            s.last_error = Some(error);
        });
    }
}
