//! A TOML or JSON file, reloaded when it changes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use resilience_core::ConfigError;
use resilience_core::config::validate_positive_duration;
use tracing::Instrument;

use super::{SourceDocument, SourceHandle, SourceTarget, Status};
use crate::{FlagSet, FlagStore};

/// Flags from a TOML or JSON file (JSON when the name ends in `.json`),
/// reloaded when the file's modification time, size or inode changes.
///
/// Replace the file atomically (write a temporary file, then rename it over
/// the old one): a reader never sees half a file, and the new inode marks
/// the change even within the modification time's granularity.
///
/// The file is polled every [`interval`](FileSourceBuilder::interval) with
/// tokio time (the reads run on the blocking pool). A file that is missing
/// or does not parse leaves the store as it is; see the
/// [module docs](crate::source). The format is shown on [`FlagSet`].
///
/// ```no_run
/// # async fn run() -> Result<(), resilience_core::ConfigError> {
/// use resilience_flags::{FlagSet, FlagStore, source::FileSource};
/// let store = FlagStore::new(FlagSet::empty());
/// let source = FileSource::builder("/etc/shop/flags.toml").build()?;
/// source.load_into(&store)?; // fail at startup on a bad file
/// let handle = source.spawn(store.clone());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct FileSource {
    path: PathBuf,
    interval: Duration,
}

/// Builds a [`FileSource`]; see [`FileSource::builder`].
#[derive(Clone, Debug)]
#[must_use]
pub struct FileSourceBuilder {
    path: PathBuf,
    interval: Duration,
}

// === impl FileSource ===

impl FileSource {
    /// How often the file is checked: `1s`.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

    /// A builder for the file at `path`.
    pub fn builder(path: impl AsRef<Path>) -> FileSourceBuilder {
        FileSourceBuilder {
            path: path.as_ref().to_owned(),
            interval: Self::DEFAULT_INTERVAL,
        }
    }

    /// Reads and parses the file once, now.
    ///
    /// # Errors
    /// - the file cannot be read, or does not parse (field `flags`)
    pub fn load(&self) -> Result<FlagSet, ConfigError> {
        read(&self.path)
    }

    /// Reads the file once and replaces the store's set with it.
    ///
    /// # Errors
    /// - as [`load`](Self::load); the store is left as it was
    pub fn load_into(&self, store: &FlagStore) -> Result<(), ConfigError> {
        store.replace(self.load()?);
        Ok(())
    }

    /// Starts watching the file: a task on the current tokio runtime that
    /// applies the file now and every time it changes.
    ///
    /// # Panics
    /// - outside a tokio runtime
    pub fn spawn(self, store: FlagStore) -> SourceHandle {
        self.spawn_target(store)
    }

    /// Starts watching the file for any [`SourceTarget`]: a task on the
    /// current tokio runtime that hands the file's text to `target` now and
    /// every time the file changes. A text the target refuses is reported
    /// like a read that fails; the same text is not offered again until the
    /// file changes.
    ///
    /// # Panics
    /// - outside a tokio runtime
    pub fn spawn_target(self, target: impl SourceTarget) -> SourceHandle {
        let status = Status::new();
        let span =
            tracing::info_span!("file_source", name = %target.name(), path = %self.path.display());
        let task = tokio::spawn(self.run(target, status.clone()).instrument(span));
        SourceHandle::new(status, task.abort_handle())
    }

    async fn run(self, store: impl SourceTarget, status: Arc<Mutex<Status>>) {
        let mut seen: Option<(SystemTime, u64, u64)> = None;
        let mut interval = tokio::time::interval(self.interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let path = self.path.clone();
            let stamp = blocking(move || {
                let md = std::fs::metadata(&path)?;
                Ok::<_, std::io::Error>((md.modified()?, md.len(), inode(&md)))
            })
            .await;
            let stamp = match stamp {
                Ok(stamp) => stamp,
                Err(e) => {
                    seen = None;
                    Status::fail(&status, &store, "file", e);
                    continue;
                }
            };
            if seen == Some(stamp) {
                // Unchanged: still in step, unless its content was rejected.
                if !Status::with(&status, |s| s.failing) {
                    Status::ok(&status, false);
                }
                continue;
            }
            seen = Some(stamp);
            let path = self.path.clone();
            let text = blocking(move || {
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
            })
            .await;
            let applied = text.and_then(|text| {
                store.apply(SourceDocument::File {
                    path: &self.path,
                    text: &text,
                })
            });
            match applied {
                Ok(()) => Status::ok(&status, true),
                Err(e) => Status::fail(&status, &store, "file", e),
            }
        }
    }
}

async fn blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, String>
where
    T: Send + 'static,
    E: ToString + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// The inode, so that a file replaced by a rename within the modification
/// time's granularity is still seen as changed.
#[cfg(unix)]
fn inode(md: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(md)
}

#[cfg(not(unix))]
fn inode(_: &std::fs::Metadata) -> u64 {
    0
}

fn read(path: &Path) -> Result<FlagSet, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new("flags", format!("{}: {e}", path.display())))?;
    parse(path, &text)
}

/// A flag set from a file's text: JSON when the name ends in `.json`, else
/// TOML.
pub(crate) fn parse(path: &Path, text: &str) -> Result<FlagSet, ConfigError> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        FlagSet::from_json(text)
    } else {
        FlagSet::from_toml(text)
    }
}

// === impl FileSourceBuilder ===

impl FileSourceBuilder {
    /// How often to check the file (default
    /// [`FileSource::DEFAULT_INTERVAL`]).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Validates the source.
    ///
    /// # Errors
    /// - `interval` is zero or longer than
    ///   [`MAX_DURATION`](resilience_core::config::MAX_DURATION) (365 days)
    /// - `path` is empty
    pub fn build(self) -> Result<FileSource, ConfigError> {
        validate_positive_duration("interval", self.interval)?;
        if self.path.as_os_str().is_empty() {
            return Err(ConfigError::new("path", "must not be empty"));
        }
        Ok(FileSource {
            path: self.path,
            interval: self.interval,
        })
    }
}
