//! Flags under an etcd key prefix, watched through etcd's JSON gateway.
//!
//! Why the JSON gateway (`/v3/kv/range`, `/v3/watch` over plain HTTP/1)
//! rather than a gRPC etcd client: the gateway is part of every etcd v3.4+
//! server, and talking to it needs only hyper, which the HTTP side of a
//! service already has, instead of tonic, prost and generated protobuf code
//! for two calls. The client is the family's shared one,
//! [`resilience_core::etcd`] (base64 keys and values, int64s as strings).
//! The whole backend sits behind the `etcd` cargo feature so the default
//! build stays lean.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Uri;
use resilience_core::ConfigError;
use resilience_core::config::validate_positive_duration;
use resilience_core::etcd::{EtcdClient, Event, WatchMessage};
use tracing::Instrument;

use super::{SourceDocument, SourceHandle, SourceTarget, Status};
use crate::set::spec::FlagSpec;
use crate::{FlagSet, FlagStore};

/// Flags stored in etcd, one key per flag under a prefix, watched for
/// changes: the fleet-wide store.
///
/// The key `<prefix><name>` holds the flag `<name>` as JSON, with the fields
/// of one flag in the [`FlagSet`] file format, e.g.
/// `/flags/new-checkout` = `{"rollout": 20, "overridable": true}`. The
/// source reads the prefix, applies it, then watches it from the next
/// revision; every change rebuilds the whole set. When any key does not
/// parse, the update is rejected and the store keeps the last good set. When
/// etcd is unreachable, the source retries every
/// [`retry_interval`](EtcdSourceBuilder::retry_interval) and its
/// [staleness](super::FlagSourceSnapshot::staleness) grows.
///
/// ```no_run
/// # async fn run() -> Result<(), resilience_core::ConfigError> {
/// use resilience_flags::{FlagSet, FlagStore, source::EtcdSource};
/// let store = FlagStore::new(FlagSet::empty());
/// let handle = EtcdSource::builder("http://127.0.0.1:2379", "/flags/")
///     .build()?
///     .spawn(store.clone());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct EtcdSource {
    endpoint: Uri,
    prefix: String,
    retry: Duration,
    timeout: Duration,
}

/// Builds an [`EtcdSource`]; see [`EtcdSource::builder`].
#[derive(Clone, Debug)]
#[must_use]
pub struct EtcdSourceBuilder {
    endpoint: String,
    prefix: String,
    retry: Duration,
    timeout: Duration,
}

// === impl EtcdSource ===

impl EtcdSource {
    /// Wait between reconnection attempts: `1s`.
    pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(1);
    /// Timeout of a range request and of opening a watch: `5s`.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

    /// A builder for the flags under `prefix` in the etcd at `endpoint`
    /// (`http://host:port`).
    pub fn builder(endpoint: impl Into<String>, prefix: impl Into<String>) -> EtcdSourceBuilder {
        EtcdSourceBuilder {
            endpoint: endpoint.into(),
            prefix: prefix.into(),
            retry: Self::DEFAULT_RETRY_INTERVAL,
            timeout: Self::DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// Reads the prefix once, now.
    ///
    /// # Errors
    /// - etcd cannot be reached or answers with an error (field `endpoint`)
    /// - a key does not hold a valid flag (field `flags`)
    pub async fn load(&self) -> Result<FlagSet, ConfigError> {
        let (_, kvs) = self
            .client()
            .range_prefix(&self.prefix)
            .await
            .map_err(|e| ConfigError::new("endpoint", e.to_string()))?;
        let map = decode_kvs(kvs).map_err(|e| ConfigError::new("flags", e))?;
        to_set(&self.prefix, &map)
    }

    /// Reads the prefix once, now: every key under it (whole) with its value.
    ///
    /// # Errors
    /// - etcd cannot be reached or answers with an error (field `endpoint`)
    /// - a key is not UTF-8 (field `prefix`)
    pub async fn load_entries(&self) -> Result<BTreeMap<String, Vec<u8>>, ConfigError> {
        let (_, kvs) = self
            .client()
            .range_prefix(&self.prefix)
            .await
            .map_err(|e| ConfigError::new("endpoint", e.to_string()))?;
        decode_kvs(kvs).map_err(|e| ConfigError::new("prefix", e))
    }

    /// The prefix watched.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Starts watching the prefix: a task on the current tokio runtime that
    /// applies the flags now and on every change.
    ///
    /// # Panics
    /// - outside a tokio runtime
    pub fn spawn(self, store: FlagStore) -> SourceHandle {
        self.spawn_target(store)
    }

    /// Starts watching the prefix for any [`SourceTarget`]: a task on the
    /// current tokio runtime that hands every key under the prefix, with its
    /// value, to `target` now and on every change. A document the target
    /// refuses is reported like a read that fails.
    ///
    /// # Panics
    /// - outside a tokio runtime
    pub fn spawn_target(self, target: impl SourceTarget) -> SourceHandle {
        let status = Status::new();
        let span = tracing::info_span!("etcd_source", name = %target.name(), prefix = %self.prefix);
        let task = tokio::spawn(self.run(target, status.clone()).instrument(span));
        SourceHandle::new(status, task.abort_handle())
    }

    async fn run(self, store: impl SourceTarget, status: Arc<Mutex<Status>>) {
        let client = self.client();
        loop {
            if let Err(e) = self.sync_and_watch(&client, &store, &status).await {
                Status::fail(&status, &store, "etcd", e);
            }
            tokio::time::sleep(self.retry).await;
        }
    }

    fn client(&self) -> EtcdClient {
        EtcdClient::new(vec![self.endpoint.to_string()], self.timeout)
    }

    async fn sync_and_watch(
        &self,
        client: &EtcdClient,
        store: &dyn SourceTarget,
        status: &Mutex<Status>,
    ) -> Result<(), String> {
        let (revision, kvs) = client
            .range_prefix(&self.prefix)
            .await
            .map_err(|e| e.to_string())?;
        let mut map = decode_kvs(kvs)?;
        self.apply(&map, store, status);
        self.watch(client, revision.saturating_add(1), &mut map, store, status)
            .await
    }

    fn apply(
        &self,
        map: &BTreeMap<String, Vec<u8>>,
        store: &dyn SourceTarget,
        status: &Mutex<Status>,
    ) {
        let document = SourceDocument::Etcd {
            prefix: &self.prefix,
            entries: map,
        };
        match store.apply(document) {
            Ok(()) => Status::ok(status, true),
            Err(e) => Status::fail(status, store, "etcd", e),
        }
    }

    async fn watch(
        &self,
        client: &EtcdClient,
        start: i64,
        map: &mut BTreeMap<String, Vec<u8>>,
        store: &dyn SourceTarget,
        status: &Mutex<Status>,
    ) -> Result<(), String> {
        let mut watch = client
            .watch_prefix(&self.prefix, start, 0)
            .await
            .map_err(|e| e.to_string())?;
        while let Some(msg) = watch.next().await.map_err(|e| e.to_string())? {
            match msg {
                WatchMessage::Created => {
                    tracing::debug!("etcd watch created");
                    Status::ok(status, false);
                }
                WatchMessage::Events(events) => {
                    if events.is_empty() {
                        continue;
                    }
                    for event in events {
                        match event {
                            Event::Put(kv) => {
                                map.insert(decode_key(kv.key)?, kv.value);
                            }
                            Event::Delete { key, .. } => {
                                map.remove(&decode_key(key)?);
                            }
                            _ => {}
                        }
                    }
                    self.apply(map, store, status);
                }
                // Read the prefix again, from the retry loop.
                WatchMessage::Compacted => return Err("etcd watch: canceled".to_owned()),
                _ => {}
            }
        }
        Err("etcd watch: stream ended".to_owned())
    }
}

/// The flag set of the keys under `prefix`: `<prefix><name>` holds the
/// flag `<name>` as JSON.
pub(crate) fn to_set(
    prefix: &str,
    map: &BTreeMap<String, Vec<u8>>,
) -> Result<FlagSet, ConfigError> {
    let flags = map
        .iter()
        .map(|(key, value)| {
            let name = key.strip_prefix(prefix).unwrap_or(key);
            let spec: FlagSpec = serde_json::from_slice(value)
                .map_err(|e| ConfigError::new("flags", format!("{key}: {e}")))?;
            spec.into_flag(name)
        })
        .collect::<Result<Vec<_>, _>>()?;
    FlagSet::from_flags(flags)
}

fn decode_key(key: Vec<u8>) -> Result<String, String> {
    String::from_utf8(key).map_err(|_| "etcd: key is not UTF-8".to_owned())
}

fn decode_kvs(
    kvs: impl IntoIterator<Item = resilience_core::etcd::Kv>,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    kvs.into_iter()
        .map(|kv| Ok((decode_key(kv.key)?, kv.value)))
        .collect()
}

// === impl EtcdSourceBuilder ===

impl EtcdSourceBuilder {
    /// Wait between reconnection attempts (default
    /// [`EtcdSource::DEFAULT_RETRY_INTERVAL`]).
    pub fn retry_interval(mut self, retry: Duration) -> Self {
        self.retry = retry;
        self
    }

    /// Timeout of a range request and of opening a watch (default
    /// [`EtcdSource::DEFAULT_REQUEST_TIMEOUT`]).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Validates the source.
    ///
    /// # Errors
    /// - `endpoint` is not an `http://host[:port]` URL (TLS is not supported)
    /// - `prefix` is empty
    /// - `retry_interval` or `request_timeout` is zero or longer than
    ///   [`MAX_DURATION`](resilience_core::config::MAX_DURATION) (365 days)
    pub fn build(self) -> Result<EtcdSource, ConfigError> {
        let endpoint: Uri = self
            .endpoint
            .parse()
            .map_err(|_| ConfigError::new("endpoint", "must be an http://host:port URL"))?;
        if endpoint.scheme_str() != Some("http") || endpoint.authority().is_none() {
            return Err(ConfigError::new(
                "endpoint",
                "must be an http://host:port URL",
            ));
        }
        if self.prefix.is_empty() {
            return Err(ConfigError::new("prefix", "must not be empty"));
        }
        validate_positive_duration("retry_interval", self.retry)?;
        validate_positive_duration("request_timeout", self.timeout)?;
        Ok(EtcdSource {
            endpoint,
            prefix: self.prefix,
            retry: self.retry,
            timeout: self.timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates() {
        let b = |e: &str, p: &str| {
            EtcdSource::builder(e, p)
                .build()
                .map(|_| ())
                .map_err(|e| e.field())
        };
        assert_eq!(b("http://127.0.0.1:2379", "/flags/"), Ok(()));
        assert_eq!(b("https://127.0.0.1:2379", "/f/"), Err("endpoint"));
        assert_eq!(b("not a url", "/f/"), Err("endpoint"));
        assert_eq!(b("/relative", "/f/"), Err("endpoint"));
        assert_eq!(b("http://h:1", ""), Err("prefix"));
        let zero = EtcdSource::builder("http://h:1", "/f/")
            .retry_interval(Duration::ZERO)
            .build();
        assert_eq!(zero.unwrap_err().field(), "retry_interval");
        let zero = EtcdSource::builder("http://h:1", "/f/")
            .request_timeout(Duration::ZERO)
            .build();
        assert_eq!(zero.unwrap_err().field(), "request_timeout");
    }

    #[test]
    fn durations_are_at_most_365_days() {
        let long = resilience_core::config::MAX_DURATION + Duration::from_secs(1);
        let b = || EtcdSource::builder("http://h:1", "/f/");
        let err = b().retry_interval(long).build().unwrap_err();
        assert_eq!(
            (err.field(), err.reason()),
            ("retry_interval", "must be at most 365 days")
        );
        let err = b().request_timeout(Duration::MAX).build().unwrap_err();
        assert_eq!(
            (err.field(), err.reason()),
            ("request_timeout", "must be at most 365 days")
        );
        let max = resilience_core::config::MAX_DURATION;
        assert!(b().retry_interval(max).request_timeout(max).build().is_ok());
    }

    #[test]
    fn keys_must_be_utf8() {
        assert_eq!(decode_key(b"/flags/a".to_vec()).as_deref(), Ok("/flags/a"));
        assert!(decode_key(vec![0xff, 0xfe]).is_err());
        assert!(decode_kvs(Vec::new()).unwrap().is_empty());
    }
}
