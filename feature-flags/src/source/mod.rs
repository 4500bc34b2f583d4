//! Where flag sets come from, besides code: a file and etcd.
//!
//! A source runs as a background task that replaces the whole set in a
//! [`FlagStore`](crate::FlagStore) when its input changes. A source that
//! breaks or reads garbage keeps the last good set, logs a warning, counts
//! the failure in `resilience_flags_source_errors_total` and reports its
//! staleness through its [`SourceHandle`].
//!
//! The same watching feeds other documents than flag sets: a
//! [`SourceTarget`] takes each new [`SourceDocument`] (the file's text, or
//! the values under the etcd prefix) and accepts or refuses it; the
//! `resilience` facade's stacks follow their configuration this way.

#[cfg(feature = "etcd")]
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio::time::Instant;

#[cfg(feature = "etcd")]
mod etcd;
mod file;

#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
pub use self::etcd::{EtcdSource, EtcdSourceBuilder};
pub use self::file::{FileSource, FileSourceBuilder};

/// The old name of [`FlagSourceSnapshot`] (distinct from the discovery
/// sources' live `SourceHealth`).
#[deprecated(since = "0.1.0", note = "use `FlagSourceSnapshot`")]
pub type SourceStatus = FlagSourceSnapshot;

/// What a source feeds: a [`FlagStore`](crate::FlagStore), or any other
/// consumer of whole documents (the `resilience` facade's stacks follow
/// their configuration through one).
///
/// The source calls [`apply`](Self::apply) with each new document, on its
/// task. A refused document (`Err`) leaves the target as it was: the source
/// logs the error at warn, calls [`record_error`](Self::record_error) and
/// reports it in its [`SourceHandle`]'s snapshot, as it does for a read that
/// fails.
pub trait SourceTarget: Send + Sync + 'static {
    /// The target's name, in the source's logs.
    fn name(&self) -> &str;

    /// Applies a new document, or refuses it with the reason.
    ///
    /// # Errors
    /// - the document does not parse or is not valid for the target
    fn apply(&self, document: SourceDocument<'_>) -> Result<(), String>;

    /// Counts a failed read or a refused document (e.g. in a metric).
    fn record_error(&self);
}

/// A document a source read, handed to [`SourceTarget::apply`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum SourceDocument<'a> {
    /// The whole text of a [`FileSource`]'s file.
    File {
        /// The file's path (its extension tells the format).
        path: &'a Path,
        /// Its text.
        text: &'a str,
    },
    /// Every key under an [`EtcdSource`]'s prefix, with its value.
    #[cfg(feature = "etcd")]
    #[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
    Etcd {
        /// The prefix watched.
        prefix: &'a str,
        /// The keys (whole, prefix included) and their values.
        entries: &'a BTreeMap<String, Vec<u8>>,
    },
}

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

// === impl SourceTarget for FlagStore ===

impl SourceTarget for crate::FlagStore {
    fn name(&self) -> &str {
        crate::FlagStore::name(self)
    }

    fn apply(&self, document: SourceDocument<'_>) -> Result<(), String> {
        let set = match document {
            SourceDocument::File { path, text } => file::parse(path, text),
            #[cfg(feature = "etcd")]
            SourceDocument::Etcd { prefix, entries } => etcd::to_set(prefix, entries),
        };
        self.replace(set.map_err(|e| e.to_string())?);
        Ok(())
    }

    fn record_error(&self) {
        self.record_source_error();
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
        target: &dyn SourceTarget,
        source: &str,
        error: String,
    ) {
        if Self::with(status, |s| {
            s.failing && s.last_error.as_ref() == Some(&error)
        }) {
            return;
        }
        tracing::warn!(name = %target.name(), source, %error, "source failed or refused; keeping the last good document");
        target.record_error();
        Self::with(status, |s| {
            s.failing = true;
            s.errors += 1;
            s.last_error = Some(error);
        });
    }
}
