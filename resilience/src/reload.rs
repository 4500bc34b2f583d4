//! Changing a stack's settings at run time, without losing its state.
//!
//! Every standard stack has a [`ReloadHandle`]
//! ([`ServerStackLayer::reload_handle`](crate::server::ServerStackLayer::reload_handle),
//! [`ClientHandles::reload`](crate::client::ClientHandles::reload)). Give it
//! a new configuration, or let it follow a file or an etcd key, and the
//! settings that can change apply to the next requests, in place: breaker
//! windows and states, retry budgets, throttle windows, queue contents and
//! endpoint health are kept (no new state is made).
//!
//! - **A setting that can change** is changed in the running layers; each
//!   decision reads it once (an atomic load, no lock on the request path).
//! - **A restart-only setting** (one whose change would lose state, or that
//!   names metrics: window sizes, names, removing or adding a part, the
//!   endpoint source...) keeps its old value: the change is logged at warn,
//!   counted in `resilience_config_restart_only_total{name, setting}`, and
//!   the rest of the new configuration is applied.
//! - **An invalid configuration** (it does not parse, or fails the
//!   validation a stack's configuration gets when it is built) is refused:
//!   logged at warn, counted in
//!   `resilience_config_reloads_total{name, result = "refused"}`, and the
//!   last good configuration stays.
//!
//! The tables of what can change are on [`ServerConfig`](crate::server::ServerConfig#changing-settings-at-run-time)
//! and [`ClientConfig`](crate::client::ClientConfig#changing-settings-at-run-time).
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "server")] {
//! use std::time::Duration;
//! use resilience::queue::BoundedQueueConfig;
//! use resilience::server::{ServerConfig, ServerStackLayer};
//!
//! let stack = ServerStackLayer::http(ServerConfig::default());
//! let reload = stack.reload_handle();
//! let wider = ServerConfig::builder()
//!     .queue(BoundedQueueConfig::builder().concurrency(500).build()?)
//!     .build()?;
//! let applied = reload.apply(wider)?;
//! assert!(applied.restart_only().is_empty());
//! assert_eq!(stack.queue_handle().unwrap().snapshot().limit, 500);
//! # }
//! # Ok::<_, resilience::ConfigError>(())
//! ```
//!
//! Following a file (feature `serde`; TOML, or JSON when the name ends in
//! `.json`) or an etcd key (features `serde` and `etcd`; the key's value is
//! JSON when it starts with `{`, else TOML), with the flags crate's
//! sources:
//!
//! ```ignore
//! use resilience::reload::{EtcdSource, FileSource};
//! let file = reload.follow_file(FileSource::builder("/etc/shop/server.toml").build()?);
//! let etcd = reload.follow_etcd(EtcdSource::builder("http://127.0.0.1:2379", "/config/shop").build()?);
//! ```
//!
//! # Metrics
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | [`resilience_config_reloads_total`](CONFIG_RELOADS_TOTAL) | counter | `name`, `result` = `applied`\|`refused` |
//! | [`resilience_config_restart_only_total`](CONFIG_RESTART_ONLY_TOTAL) | counter | `name`, `setting` |

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use resilience_core::ConfigError;

#[cfg(all(feature = "serde", feature = "etcd"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "serde", feature = "etcd"))))]
pub use resilience_flags::source::EtcdSource;
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub use resilience_flags::source::{
    FileSource, FlagSourceSnapshot as SourceSnapshot, SourceHandle,
};

/// Configurations offered to a stack, by result: `applied` or `refused`
/// (did not parse or failed validation).
pub const CONFIG_RELOADS_TOTAL: &str = "resilience_config_reloads_total";
/// Changes of restart-only settings, which kept their old values, by
/// setting.
pub const CONFIG_RESTART_ONLY_TOTAL: &str = "resilience_config_restart_only_total";

/// Changes a running stack's configuration; see the [module docs](self).
///
/// Cheap to clone; every clone changes the same stack.
pub struct ReloadHandle<C> {
    inner: Arc<Inner<C>>,
}

/// What applying a configuration did: see [`ReloadHandle::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Applied {
    restart_only: Vec<&'static str>,
}

/// A point-in-time view of a stack's reloads, from
/// [`ReloadHandle::snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReloadSnapshot {
    /// Configurations applied (restart-only settings aside).
    pub applied: u64,
    /// Configurations refused: they did not parse or were invalid.
    pub refused: u64,
    /// Changes of restart-only settings that kept their old values.
    pub restart_only: u64,
    /// Why the last configuration was refused, until one is applied.
    pub last_error: Option<String>,
}

/// Changes a stack's layers in place: given the configuration in force and
/// a new one, changes what can change and returns the configuration now in
/// force (restart-only settings at their old values) and the names of the
/// restart-only settings that differed.
pub(crate) type Reconfigure<C> = Box<dyn Fn(&C, &C) -> (C, Vec<&'static str>) + Send + Sync>;

struct Inner<C> {
    name: String,
    current: Mutex<C>,
    reconfigure: Reconfigure<C>,
    applied: AtomicU64,
    refused: AtomicU64,
    restart_only: AtomicU64,
    last_error: Mutex<Option<String>>,
}

// === impl ReloadHandle ===

impl<C: Clone + Send + 'static> ReloadHandle<C> {
    pub(crate) fn new(name: impl Into<String>, config: C, reconfigure: Reconfigure<C>) -> Self {
        #[cfg(feature = "metrics")]
        {
            metrics::describe_counter!(
                CONFIG_RELOADS_TOTAL,
                metrics::Unit::Count,
                "Configurations offered to a stack at run time, by result."
            );
            metrics::describe_counter!(
                CONFIG_RESTART_ONLY_TOTAL,
                metrics::Unit::Count,
                "Changes of restart-only settings at run time (kept at their old values)."
            );
        }
        Self {
            inner: Arc::new(Inner {
                name: name.into(),
                current: Mutex::new(config),
                reconfigure,
                applied: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                restart_only: AtomicU64::new(0),
                last_error: Mutex::new(None),
            }),
        }
    }

    /// The stack's name (the `name` label of the metrics above).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The configuration in force: the last one applied, with restart-only
    /// settings at the values the stack was built with.
    pub fn config(&self) -> C {
        self.inner
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Applies `config` to the next requests, in place; see the
    /// [module docs](self). A configuration built with the builders is
    /// already valid, so this applies it; the restart-only settings that
    /// differ are logged at warn, counted, kept at their old values and
    /// listed in the result.
    ///
    /// # Errors
    /// - none today for a built configuration; the `Result` leaves room for
    ///   rules across settings (a refusal is counted and logged like one
    ///   from [`apply_toml`](Self::apply_toml))
    pub fn apply(&self, config: C) -> Result<Applied, ConfigError> {
        let mut current = self
            .inner
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (in_force, restart_only) = (self.inner.reconfigure)(&current, &config);
        *current = in_force;
        drop(current);
        for setting in &restart_only {
            tracing::warn!(
                name = %self.inner.name,
                setting,
                "configuration: this setting changes only with a new stack; keeping its old value"
            );
            self.inner.restart_only.fetch_add(1, Ordering::Relaxed);
            #[cfg(feature = "metrics")]
            metrics::counter!(
                CONFIG_RESTART_ONLY_TOTAL,
                resilience_core::names::LABEL_NAME => self.inner.name.clone(),
                "setting" => *setting
            )
            .increment(1);
        }
        self.inner.applied.fetch_add(1, Ordering::Relaxed);
        *self
            .inner
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        #[cfg(feature = "metrics")]
        metrics::counter!(
            CONFIG_RELOADS_TOTAL,
            resilience_core::names::LABEL_NAME => self.inner.name.clone(),
            "result" => "applied"
        )
        .increment(1);
        tracing::info!(name = %self.inner.name, "configuration applied");
        Ok(Applied { restart_only })
    }

    /// Counts, logs and returns a refusal.
    #[cfg_attr(not(feature = "serde"), allow(dead_code))]
    fn refuse(&self, error: ConfigError) -> ConfigError {
        tracing::warn!(
            name = %self.inner.name,
            %error,
            "configuration refused; keeping the last good one"
        );
        self.inner.refused.fetch_add(1, Ordering::Relaxed);
        *self
            .inner
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(error.to_string());
        #[cfg(feature = "metrics")]
        metrics::counter!(
            CONFIG_RELOADS_TOTAL,
            resilience_core::names::LABEL_NAME => self.inner.name.clone(),
            "result" => "refused"
        )
        .increment(1);
        error
    }

    /// Applies the result of `parse`, or counts and logs its error.
    #[cfg_attr(not(feature = "serde"), allow(dead_code))]
    fn apply_parsed(&self, parse: Result<C, ConfigError>) -> Result<Applied, ConfigError> {
        match parse {
            Ok(config) => self.apply(config),
            Err(e) => Err(self.refuse(e)),
        }
    }

    /// The reloads so far.
    pub fn snapshot(&self) -> ReloadSnapshot {
        ReloadSnapshot {
            applied: self.inner.applied.load(Ordering::Relaxed),
            refused: self.inner.refused.load(Ordering::Relaxed),
            restart_only: self.inner.restart_only.load(Ordering::Relaxed),
            last_error: self
                .inner
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }
}

#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
impl<C> ReloadHandle<C>
where
    C: Clone + Send + Sync + serde::de::DeserializeOwned + 'static,
{
    /// Parses `text` as TOML (the stack's configuration format) and applies
    /// it.
    ///
    /// # Errors
    /// - `text` does not parse, or fails the configuration's validation
    ///   (field `config`): refused, logged at warn and counted; the last
    ///   good configuration stays
    pub fn apply_toml(&self, text: &str) -> Result<Applied, ConfigError> {
        self.apply_parsed(parse_toml(text))
    }

    /// Parses `text` as JSON and applies it.
    ///
    /// # Errors
    /// - as [`apply_toml`](Self::apply_toml)
    pub fn apply_json(&self, text: &str) -> Result<Applied, ConfigError> {
        self.apply_parsed(parse_json(text))
    }

    /// Follows a file: its configuration is applied now (once read) and
    /// every time the file changes (TOML, or JSON when the name ends in
    /// `.json`). A file that does not parse or is invalid is refused and the
    /// last good configuration stays; a file that cannot be read is reported
    /// in the returned handle's snapshot (and logged). Stop with
    /// [`SourceHandle::stop`].
    ///
    /// # Panics
    /// - outside a tokio runtime
    pub fn follow_file(&self, source: FileSource) -> SourceHandle {
        source.spawn_target(Follow {
            handle: self.clone(),
        })
    }

    /// Follows an etcd key, through the flags crate's etcd source: the
    /// source's prefix is the key, and its value (JSON when it starts with
    /// `{`, else TOML) is applied now and on every change. A value that does
    /// not parse or is invalid, or a key that is missing, is refused and the
    /// last good configuration stays; while etcd is unreachable the source
    /// retries and the stack keeps its configuration.
    ///
    /// # Panics
    /// - outside a tokio runtime
    #[cfg(feature = "etcd")]
    #[cfg_attr(docsrs, doc(cfg(all(feature = "serde", feature = "etcd"))))]
    pub fn follow_etcd(&self, source: EtcdSource) -> SourceHandle {
        source.spawn_target(Follow {
            handle: self.clone(),
        })
    }
}

#[cfg(feature = "serde")]
fn parse_toml<C: serde::de::DeserializeOwned>(text: &str) -> Result<C, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::new("config", e.message().to_owned()))
}

#[cfg(feature = "serde")]
fn parse_json<C: serde::de::DeserializeOwned>(text: &str) -> Result<C, ConfigError> {
    serde_json::from_str(text).map_err(|e| ConfigError::new("config", e.to_string()))
}

impl<C> Clone for ReloadHandle<C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<C> fmt::Debug for ReloadHandle<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadHandle")
            .field("name", &self.inner.name)
            .field("applied", &self.inner.applied.load(Ordering::Relaxed))
            .field("refused", &self.inner.refused.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

// === impl Applied ===

impl Applied {
    /// The restart-only settings that differed: they kept their old values
    /// (e.g. `"queue.name"`, `"breaker.window"`, `"endpoints"`).
    pub fn restart_only(&self) -> &[&'static str] {
        &self.restart_only
    }
}

/// Prefixes the restart-only settings of a part: `"window"` of the breaker
/// becomes `"breaker.window"`.
pub(crate) fn prefixed(part: &'static str, names: Vec<&'static str>) -> Vec<&'static str> {
    names
        .into_iter()
        .map(|n| match (part, n) {
            ("breaker", "name") => "breaker.name",
            ("breaker", "window") => "breaker.window",
            ("throttle", "name") => "throttle.name",
            ("throttle", "mode") => "throttle.mode",
            ("throttle", "window") => "throttle.window",
            ("throttle", "retry_after") => "throttle.retry_after",
            ("throttle", "max_wait") => "throttle.max_wait",
            ("queue", "name") => "queue.name",
            ("queue", "reserved") => "queue.reserved",
            ("queue", "adaptive") => "queue.adaptive",
            ("retry", "name") => "retry.name",
            ("retry", "max_replay_body") => "retry.max_replay_body",
            ("retry", "retryable") => "retry.retryable",
            ("retry", "grpc_methods") => "retry.grpc_methods",
            ("retry", "budget.window") => "retry.budget.window",
            (_, n) => n,
        })
        .collect()
}

/// A stack's [`ReloadHandle`] as the target of a flags source.
#[cfg(feature = "serde")]
struct Follow<C> {
    handle: ReloadHandle<C>,
}

#[cfg(feature = "serde")]
impl<C> resilience_flags::source::SourceTarget for Follow<C>
where
    C: Clone + Send + Sync + serde::de::DeserializeOwned + 'static,
{
    fn name(&self) -> &str {
        self.handle.name()
    }

    fn apply(&self, document: resilience_flags::source::SourceDocument<'_>) -> Result<(), String> {
        use resilience_flags::source::SourceDocument;
        let parsed = match document {
            SourceDocument::File { path, text } => {
                if path
                    .extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("json"))
                {
                    parse_json(text)
                } else {
                    parse_toml(text)
                }
            }
            #[cfg(feature = "etcd")]
            SourceDocument::Etcd { prefix, entries } => match entries.get(prefix) {
                Some(value) => match std::str::from_utf8(value) {
                    Ok(text) if text.trim_start().starts_with('{') => parse_json(text),
                    Ok(text) => parse_toml(text),
                    Err(_) => Err(ConfigError::new("config", "the value is not UTF-8")),
                },
                None => Err(ConfigError::new("config", format!("no key {prefix}"))),
            },
            _ => Err(ConfigError::new("config", "unknown source")),
        };
        self.handle
            .apply_parsed(parsed)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn record_error(&self) {
        // A refused configuration was counted by `apply_parsed`; a failed
        // read is in the source's own snapshot.
    }
}
