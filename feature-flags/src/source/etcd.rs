//! Flags under an etcd key prefix, watched through etcd's JSON gateway.
//!
//! Why the JSON gateway (`/v3/kv/range`, `/v3/watch` over plain HTTP/1)
//! rather than a gRPC etcd client: the gateway is part of every etcd v3.4+
//! server, and talking to it needs only hyper, which the HTTP side of a
//! service already has, instead of tonic, prost and generated protobuf code
//! for two calls. Keys and values travel base64-encoded in JSON and 64-bit
//! integers as strings; both are handled here. The whole backend sits behind
//! the `etcd` cargo feature so the default build stays lean.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use resilience_core::ConfigError;
use serde::Deserialize;
use tracing::Instrument;

use super::base64;
use super::{SourceHandle, Status};
use crate::set::spec::FlagSpec;
use crate::{FlagSet, FlagStore};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

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
/// [staleness](super::SourceStatus::staleness) grows.
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

#[derive(Deserialize)]
struct RangeResponse {
    header: Header,
    #[serde(default)]
    kvs: Vec<Kv>,
}

#[derive(Deserialize)]
struct Header {
    #[serde(default, deserialize_with = "int64")]
    revision: i64,
}

#[derive(Deserialize)]
struct Kv {
    key: String,
    #[serde(default)]
    value: String,
}

#[derive(Deserialize)]
struct WatchMessage {
    result: Option<WatchResult>,
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct WatchResult {
    #[serde(default)]
    created: bool,
    #[serde(default)]
    canceled: bool,
    #[serde(default, deserialize_with = "int64")]
    compact_revision: i64,
    #[serde(default)]
    events: Vec<Event>,
}

#[derive(Deserialize)]
struct Event {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    kv: Kv,
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
        let client = client();
        let (kvs, _) = self
            .range(&client)
            .await
            .map_err(|e| ConfigError::new("endpoint", e))?;
        let map = decode_kvs(kvs).map_err(|e| ConfigError::new("flags", e))?;
        self.to_set(&map)
    }

    /// Starts watching the prefix: a task on the current tokio runtime that
    /// applies the flags now and on every change.
    ///
    /// # Panics
    /// - outside a tokio runtime
    pub fn spawn(self, store: FlagStore) -> SourceHandle {
        let status = Status::new();
        let span =
            tracing::info_span!("flags_etcd_source", name = %store.name(), prefix = %self.prefix);
        let task = tokio::spawn(self.run(store, status.clone()).instrument(span));
        SourceHandle::new(status, task.abort_handle())
    }

    async fn run(self, store: FlagStore, status: Arc<Mutex<Status>>) {
        let client = client();
        loop {
            if let Err(e) = self.sync_and_watch(&client, &store, &status).await {
                Status::fail(&status, &store, "etcd", e);
            }
            tokio::time::sleep(self.retry).await;
        }
    }

    async fn sync_and_watch(
        &self,
        client: &HttpClient,
        store: &FlagStore,
        status: &Mutex<Status>,
    ) -> Result<(), String> {
        let (kvs, revision) = self.range(client).await?;
        let mut map = decode_kvs(kvs)?;
        self.apply(&map, store, status);
        self.watch(client, revision + 1, &mut map, store, status)
            .await
    }

    fn apply(&self, map: &BTreeMap<String, Vec<u8>>, store: &FlagStore, status: &Mutex<Status>) {
        match self.to_set(map) {
            Ok(set) => {
                store.replace(set);
                Status::ok(status, true);
            }
            Err(e) => Status::fail(status, store, "etcd", e.to_string()),
        }
    }

    fn to_set(&self, map: &BTreeMap<String, Vec<u8>>) -> Result<FlagSet, ConfigError> {
        let flags = map
            .iter()
            .map(|(key, value)| {
                let name = key.strip_prefix(&self.prefix).unwrap_or(key);
                let spec: FlagSpec = serde_json::from_slice(value)
                    .map_err(|e| ConfigError::new("flags", format!("{key}: {e}")))?;
                spec.into_flag(name)
            })
            .collect::<Result<Vec<_>, _>>()?;
        FlagSet::from_flags(flags)
    }

    fn post(&self, path: &str, body: serde_json::Value) -> Result<Request<Full<Bytes>>, String> {
        let uri = format!("{}{path}", self.endpoint.to_string().trim_end_matches('/'));
        Request::post(uri)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| e.to_string())
    }

    fn range_body(&self) -> serde_json::Value {
        serde_json::json!({
            "key": base64::encode(self.prefix.as_bytes()),
            "range_end": base64::encode(&prefix_end(self.prefix.as_bytes())),
        })
    }

    async fn range(&self, client: &HttpClient) -> Result<(Vec<Kv>, i64), String> {
        let req = self.post("/v3/kv/range", self.range_body())?;
        let fut = async {
            let rsp = client
                .request(req)
                .await
                .map_err(|e| format!("etcd range: {e}"))?;
            let status = rsp.status();
            let body = rsp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("etcd range: {e}"))?
                .to_bytes();
            if status != StatusCode::OK {
                return Err(format!("etcd range: status {status}"));
            }
            let rsp: RangeResponse =
                serde_json::from_slice(&body).map_err(|e| format!("etcd range: {e}"))?;
            Ok((rsp.kvs, rsp.header.revision))
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| "etcd range: timed out".to_owned())?
    }

    async fn watch(
        &self,
        client: &HttpClient,
        start: i64,
        map: &mut BTreeMap<String, Vec<u8>>,
        store: &FlagStore,
        status: &Mutex<Status>,
    ) -> Result<(), String> {
        let mut create = self.range_body();
        create["start_revision"] = serde_json::Value::String(start.to_string());
        let req = self.post("/v3/watch", serde_json::json!({ "create_request": create }))?;
        let rsp = tokio::time::timeout(self.timeout, client.request(req))
            .await
            .map_err(|_| "etcd watch: timed out".to_owned())?
            .map_err(|e| format!("etcd watch: {e}"))?;
        if rsp.status() != StatusCode::OK {
            return Err(format!("etcd watch: status {}", rsp.status()));
        }
        let mut body = rsp.into_body();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("etcd watch: {e}"))?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            buf.extend_from_slice(data);
            let mut messages = Vec::new();
            let mut consumed = 0;
            let mut stream = serde_json::Deserializer::from_slice(&buf).into_iter::<WatchMessage>();
            while let Some(msg) = stream.next() {
                match msg {
                    Ok(msg) => {
                        messages.push(msg);
                        consumed = stream.byte_offset();
                    }
                    Err(e) if e.is_eof() => break,
                    Err(e) => return Err(format!("etcd watch: {e}")),
                }
            }
            buf.drain(..consumed);
            for msg in messages {
                if let Some(err) = msg.error {
                    return Err(format!("etcd watch: {err}"));
                }
                let Some(result) = msg.result else { continue };
                if result.canceled || result.compact_revision > 0 {
                    return Err("etcd watch: canceled".to_owned());
                }
                if result.created {
                    tracing::debug!("etcd watch created");
                    Status::ok(status, false);
                }
                if result.events.is_empty() {
                    continue;
                }
                for event in result.events {
                    let key = decode_str(&event.kv.key)?;
                    if event.kind.as_deref() == Some("DELETE") {
                        map.remove(&key);
                    } else {
                        let value = base64::decode(&event.kv.value)
                            .ok_or_else(|| format!("etcd watch: bad base64 value of {key}"))?;
                        map.insert(key, value);
                    }
                }
                self.apply(map, store, status);
            }
        }
        Err("etcd watch: stream ended".to_owned())
    }
}

fn client() -> HttpClient {
    // TCP keepalive so a watch on a peer that vanished without closing the
    // connection fails (and the source reports staleness) instead of
    // waiting forever.
    let mut connector = HttpConnector::new();
    connector.set_keepalive(Some(Duration::from_secs(30)));
    Client::builder(TokioExecutor::new()).build(connector)
}

/// The end of etcd's range for a prefix: the prefix with its last byte
/// below 0xFF incremented (`"\0"`, everything, for an empty prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn decode_str(b64: &str) -> Result<String, String> {
    base64::decode(b64)
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| "etcd: bad base64 key".to_owned())
}

fn decode_kvs(kvs: Vec<Kv>) -> Result<BTreeMap<String, Vec<u8>>, String> {
    kvs.into_iter()
        .map(|kv| {
            let key = decode_str(&kv.key)?;
            let value = base64::decode(&kv.value)
                .ok_or_else(|| format!("etcd: bad base64 value of {key}"))?;
            Ok((key, value))
        })
        .collect()
}

/// etcd's gateway writes int64 as a JSON string; accept a number too.
fn int64<'de, D: serde::Deserializer<'de>>(de: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        Num(i64),
        Str(String),
    }
    match Int::deserialize(de)? {
        Int::Num(n) => Ok(n),
        Int::Str(s) => s.parse().map_err(serde::de::Error::custom),
    }
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
    /// - `retry_interval` or `request_timeout` is zero
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
        if self.retry.is_zero() {
            return Err(ConfigError::new(
                "retry_interval",
                "must be greater than zero",
            ));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::new(
                "request_timeout",
                "must be greater than zero",
            ));
        }
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
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/flags/"), b"/flags0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }

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
    }

    #[test]
    fn parses_gateway_json() {
        let r: RangeResponse = serde_json::from_str(
            r#"{"header":{"cluster_id":"1","revision":"42"},"kvs":[{"key":"L2ZsYWdzL2E=","value":"e30=","mod_revision":"3"}],"count":"1"}"#,
        )
        .unwrap();
        assert_eq!(r.header.revision, 42);
        let map = decode_kvs(r.kvs).unwrap();
        assert_eq!(map.get("/flags/a").map(Vec::as_slice), Some(&b"{}"[..]));
        let w: WatchMessage = serde_json::from_str(
            r#"{"result":{"header":{"revision":"5"},"events":[{"type":"DELETE","kv":{"key":"L2ZsYWdzL2E="}}]}}"#,
        )
        .unwrap();
        let events = w.result.unwrap().events;
        assert_eq!(events[0].kind.as_deref(), Some("DELETE"));
    }
}
