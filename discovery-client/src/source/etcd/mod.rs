//! etcd v3: a watched key prefix as a source, and registration under a
//! lease.
//!
//! # Why the JSON gateway
//!
//! This talks to etcd through its JSON gateway (grpc-gateway, built into
//! every etcd v3.4+ server) over plain HTTP/1.1, with the client shared by
//! the family, [`resilience_core::etcd`]: no `protoc` at build time and no
//! second gRPC stack for the handful of calls discovery needs (range, watch
//! with resume from a revision, lease grant/keep-alive/revoke, put). The
//! gateway has the same semantics as the gRPC API. See
//! [`resilience_core::etcd`] for the details (int64s as JSON strings, keys
//! and values in base64).
//!
//! # Layout in etcd
//!
//! Each instance is one key under a prefix (`/services/users/<id>`) whose
//! value is JSON: `{"address": "10.0.0.1:8080", "metadata": {"zone": "a"}}`
//! (optional `"weight"`). [`Registration`] writes such a key under a lease
//! and keeps the lease alive; [`EtcdSource`] reads the prefix, then watches
//! it from the next revision.
//!
//! # Rolling restarts
//!
//! [`RestartLock`] lets the instances of a service restart one at a time:
//! take a lease-backed lock, check that enough others are registered,
//! deregister, drain, restart, register again, release.

mod registration;
mod restart;

use std::collections::BTreeMap;
use std::time::Duration;

use resilience_core::ConfigError;
use resilience_core::config::{validate_name, validate_positive_duration};
use resilience_core::etcd::{EtcdClient, Event, WatchMessage};
use tokio::sync::mpsc;

pub use self::registration::Registration;
pub use self::restart::{
    RestartError, RestartErrorKind, RestartLock, RestartLockConfig, RestartLockConfigBuilder,
    RestartPermit,
};

use super::{Backoff, Emitter, SourceHealth, SourceStream, parse_entry};
use crate::endpoint::Endpoint;

/// Validated configuration of an etcd connection: where etcd is, how long
/// a call may take, how to back off.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use resilience_discovery::source::EtcdConfig;
///
/// let config = EtcdConfig::builder()
///     .endpoint("http://127.0.0.1:2379")
///     .request_timeout(Duration::from_secs(2))
///     .build()?;
/// # Ok::<_, resilience_core::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    endpoints: Vec<String>,
    name: String,
    request_timeout: Duration,
    backoff: Backoff,
}

/// Builds an [`EtcdConfig`]; see [`EtcdConfig::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct EtcdConfigBuilder {
    config: EtcdConfig,
}

/// The instances registered under a key prefix in etcd, watched.
///
/// Reads the prefix, then watches it from the next revision; after a lost
/// connection it resumes the watch from the last revision it saw (or reads
/// the prefix again if etcd compacted that revision away). While etcd is
/// unreachable, slow or answers garbage, the last good set stays, the
/// error is logged and counted, and the source retries with backoff and
/// jitter. An entry whose value is not valid JSON `{address, metadata}` is
/// skipped alone.
///
/// A watch that stays open but goes silent (a hung, not dead, server) is
/// not detected until TCP keepalive gives up on the connection; it keeps
/// the last set, as for any outage.
#[derive(Debug)]
pub struct EtcdSource {
    config: EtcdConfig,
    prefix: String,
}

// === impl EtcdConfig ===

impl EtcdConfig {
    /// The etcd client URL: `http://127.0.0.1:2379`.
    pub const DEFAULT_ENDPOINT: &'static str = "http://127.0.0.1:2379";
    /// The `name` metric label: `"etcd"`.
    pub const DEFAULT_NAME: &'static str = "etcd";
    /// Longest a call (or a watch's first answer) may take: `5s`.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

    /// A builder with the defaults.
    pub fn builder() -> EtcdConfigBuilder {
        EtcdConfigBuilder {
            config: EtcdConfig {
                endpoints: Vec::new(),
                name: Self::DEFAULT_NAME.to_owned(),
                request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
                backoff: Backoff::default(),
            },
        }
    }

    /// The etcd client URLs.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    fn client(&self) -> EtcdClient {
        EtcdClient::new(self.endpoints.clone(), self.request_timeout)
    }
}

impl Default for EtcdConfig {
    fn default() -> Self {
        Self::builder().build().expect("defaults are valid")
    }
}

// === impl EtcdConfigBuilder ===

impl EtcdConfigBuilder {
    /// Adds an etcd client URL (`http://host:port`); calls try them in turn.
    /// Default: [`EtcdConfig::DEFAULT_ENDPOINT`].
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.config.endpoints.push(url.into());
        self
    }

    /// Names the source: the `name` label of its metrics.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Longest a call may take (default
    /// [`EtcdConfig::DEFAULT_REQUEST_TIMEOUT`]).
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.config.request_timeout = d;
        self
    }

    /// The retry delays after a failure.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    /// - an endpoint is not an `http://` URL with a host
    /// - `name` is not 1 to 64 characters of `[A-Za-z0-9_.-]`
    /// - `request_timeout` is zero or longer than
    ///   [`MAX_DURATION`](resilience_core::config::MAX_DURATION) (365 days)
    pub fn build(mut self) -> Result<EtcdConfig, ConfigError> {
        if self.config.endpoints.is_empty() {
            self.config
                .endpoints
                .push(EtcdConfig::DEFAULT_ENDPOINT.to_owned());
        }
        for url in &self.config.endpoints {
            let ok = url
                .parse::<http::Uri>()
                .is_ok_and(|u| u.scheme_str() == Some("http") && u.host().is_some());
            if !ok {
                return Err(ConfigError::new(
                    "endpoint",
                    "must be an http:// URL with a host",
                ));
            }
        }
        validate_name("name", &self.config.name)?;
        validate_positive_duration("request_timeout", self.config.request_timeout)?;
        Ok(self.config)
    }
}

// === impl EtcdSource ===

impl EtcdSource {
    /// A source of the instances under `prefix` (e.g. `/services/users/`).
    pub fn new(config: EtcdConfig, prefix: impl Into<String>) -> Self {
        Self {
            config,
            prefix: prefix.into(),
        }
    }

    /// Starts reading and watching.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn into_stream(self) -> SourceStream {
        let status = SourceHealth::new(&self.config.name);
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(self, tx, status.clone()));
        status.set_task(task.abort_handle());
        SourceStream::new(rx, status)
    }
}

async fn run(source: EtcdSource, tx: mpsc::UnboundedSender<crate::Change>, status: SourceHealth) {
    let client = source.config.client();
    let backoff = source.config.backoff;
    let prefix = &source.prefix;
    let mut emitter = Emitter::default();
    let mut entries: BTreeMap<String, Endpoint> = BTreeMap::new();
    let mut failures = 0u32;
    let fail = |err: &(dyn std::error::Error + 'static), failures: &mut u32| {
        status.set_live(false);
        status.error(err);
        let d = backoff.delay(*failures);
        *failures = failures.saturating_add(1);
        d
    };
    'resync: loop {
        if tx.is_closed() {
            return;
        }
        // Read the whole prefix.
        let mut revision = match client.range_prefix(prefix).await {
            Ok((revision, kvs)) => {
                entries.clear();
                for kv in kvs {
                    // A key that is not UTF-8 cannot be ours: skipped.
                    if let Ok(key) = std::str::from_utf8(&kv.key) {
                        put(&mut entries, key, &kv.value, &status);
                    }
                }
                status.good();
                if !emitter.emit(&tx, entries.values().cloned()) {
                    return;
                }
                revision
            }
            Err(err) => {
                let d = fail(&*err, &mut failures);
                tokio::time::sleep(d).await;
                continue 'resync;
            }
        };
        // Watch from the next revision; resume after a reconnect.
        let mut attempt = 0usize;
        loop {
            let mut watch = match client
                .watch_prefix(prefix, revision.saturating_add(1), attempt)
                .await
            {
                Ok(w) => w,
                Err(err) => {
                    attempt += 1;
                    let d = fail(&*err, &mut failures);
                    tokio::time::sleep(d).await;
                    continue;
                }
            };
            let ended = loop {
                match watch.next().await {
                    Ok(Some(WatchMessage::Created)) => {
                        failures = 0;
                        status.good();
                        status.set_live(true);
                        tracing::debug!(%prefix, revision, "etcd watch established");
                    }
                    Ok(Some(WatchMessage::Events(events))) => {
                        for ev in events {
                            match ev {
                                Event::Put(kv) => {
                                    revision = revision.max(kv.mod_revision);
                                    if let Ok(key) = std::str::from_utf8(&kv.key) {
                                        put(&mut entries, key, &kv.value, &status);
                                    }
                                }
                                Event::Delete { key, mod_revision } => {
                                    revision = revision.max(mod_revision);
                                    if let Ok(key) = std::str::from_utf8(&key) {
                                        entries.remove(key);
                                    }
                                }
                                _ => {}
                            }
                        }
                        status.good();
                        if !emitter.emit(&tx, entries.values().cloned()) {
                            return;
                        }
                    }
                    Ok(Some(WatchMessage::Compacted)) => {
                        tracing::info!(%prefix, revision, "etcd compacted past the watch revision; reading again");
                        status.set_live(false);
                        continue 'resync;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break "etcd closed the watch".into(),
                    Err(err) => break err,
                }
            };
            attempt += 1;
            let d = fail(&*ended, &mut failures);
            tokio::time::sleep(d).await;
        }
    }
}

/// Applies one key's value; an invalid value is skipped alone (the key keeps
/// its last good value, if any).
fn put(entries: &mut BTreeMap<String, Endpoint>, key: &str, value: &[u8], status: &SourceHealth) {
    let parsed = serde_json::from_slice::<serde_json::Value>(value)
        .map_err(|e| e.to_string())
        .and_then(|v| parse_entry(&v));
    match parsed {
        Ok(ep) => {
            entries.insert(key.to_owned(), ep);
        }
        Err(why) => status.skipped(key, &why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validates_urls() {
        assert_eq!(EtcdConfig::default().endpoints(), ["http://127.0.0.1:2379"]);
        for bad in ["127.0.0.1:2379", "https://x:1", "http://"] {
            let err = EtcdConfig::builder().endpoint(bad).build().unwrap_err();
            assert_eq!(err.field(), "endpoint", "{bad}");
        }
        let err = EtcdConfig::builder()
            .request_timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "request_timeout");
        let err = EtcdConfig::builder()
            .request_timeout(resilience_core::config::MAX_DURATION + Duration::from_nanos(1))
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "request_timeout");
    }

    #[test]
    fn invalid_values_are_skipped_alone() {
        let status = SourceHealth::new("t");
        let mut entries = BTreeMap::new();
        put(&mut entries, "a", br#"{"address": "127.0.0.1:1"}"#, &status);
        put(&mut entries, "b", b"garbage", &status);
        put(&mut entries, "a", br#"{"address": "nope"}"#, &status);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries["a"].addr().port(), 1);
    }
}
