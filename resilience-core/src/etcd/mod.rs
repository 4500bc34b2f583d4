//! A minimal etcd v3 client over etcd's JSON gateway, shared by the crates
//! that read or write etcd (discovery sources and registration, flag
//! sources).
//!
//! # Why the JSON gateway
//!
//! Every etcd v3 server (3.4 and later) serves a JSON translation of its gRPC
//! API (grpc-gateway) on its client port: `POST /v3/kv/range`, `/v3/kv/put`,
//! `/v3/watch`, `/v3/lease/grant`, `/v3/lease/keepalive`, `/v3/lease/revoke`.
//! It has the same semantics as the gRPC API (revisions, watches that resume
//! from a revision, leases). Talking to it needs only a hyper HTTP/1.1
//! client, which services already have, whereas the gRPC client
//! (`etcd-client`) needs `protoc` at build time and pulls a second gRPC stack
//! (and its build time) into every user, for a handful of calls.
//!
//! Two things about the gateway's JSON, both handled here:
//!
//! - 64-bit integers (revisions, lease ids, TTLs) are JSON strings
//!   (`"revision": "42"`); the client reads them (and, leniently, numbers).
//! - Keys and values are base64 (standard alphabet, padded). [`Kv`] and
//!   [`Event`] hold them decoded; requests are encoded for you.
//!
//! # Errors
//!
//! Calls fail with a [`BoxError`] whose message names the gateway path: the
//! endpoint is unreachable, does not answer within the request timeout,
//! answers with an error status or an `error` object, or answers something
//! that is not the gateway's JSON (HTML from a proxy, a truncated body,
//! invalid base64, a missing revision). A garbage answer is always an error,
//! never a panic.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use resilience_core::etcd::{EtcdClient, Event, WatchMessage};
//!
//! # async fn run() -> Result<(), resilience_core::BoxError> {
//! let client = EtcdClient::new(vec!["http://127.0.0.1:2379".into()], Duration::from_secs(5));
//! let (revision, kvs) = client.range_prefix("/services/").await?;
//! println!("{} keys at revision {revision}", kvs.len());
//! let mut watch = client.watch_prefix("/services/", revision + 1, 0).await?;
//! while let Some(message) = watch.next().await? {
//!     if let WatchMessage::Events(events) = message {
//!         for event in events {
//!             if let Event::Put(kv) = event {
//!                 println!("{:?} = {} bytes", kv.key, kv.value.len());
//!             }
//!         }
//!     }
//! }
//! # Ok(()) }
//! ```

use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
pub use serde_json::Value;
use serde_json::json;

use crate::BoxError;
use crate::config::{ConfigError, validate_positive_duration};

#[cfg(test)]
mod tests;

/// The largest answer (a unary answer, or one message of a watch) the
/// client accepts: 64 MiB. Anything larger is treated as garbage.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// A key and its value, decoded from base64.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Kv {
    /// The key's bytes (etcd keys need not be UTF-8).
    pub key: Vec<u8>,
    /// The value's bytes (empty when the gateway omits it).
    pub value: Vec<u8>,
    /// The revision of the last change to this key (`0` when absent).
    pub mod_revision: i64,
}

/// One change seen by a [`Watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The key was created or changed.
    Put(Kv),
    /// The key was deleted.
    Delete {
        /// The deleted key's bytes.
        key: Vec<u8>,
        /// The revision of the deletion (`0` when absent).
        mod_revision: i64,
    },
}

/// One message of a [`Watch`] stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchMessage {
    /// The watch is established; changes follow.
    Created,
    /// Changes, in revision order (empty for progress notifications).
    Events(Vec<Event>),
    /// The start revision was compacted away: read the prefix again
    /// ([`EtcdClient::range_prefix`]) and watch from the new revision.
    Compacted,
}

/// A client of etcd's JSON gateway at one or more endpoints.
///
/// Cloning is cheap and shares the connection pool.
#[derive(Clone)]
pub struct EtcdClient {
    bases: Vec<String>,
    timeout: Duration,
    http: Client<HttpConnector, Full<Bytes>>,
}

/// An open watch: the messages of one `/v3/watch` stream, read with
/// [`next`](Watch::next).
pub struct Watch {
    body: Incoming,
    buf: Vec<u8>,
}

// === impl EtcdClient ===

impl EtcdClient {
    /// A client of the etcd endpoints `bases` (`http://host:port`, tried in
    /// turn), each call bounded by `timeout` (connecting, and the whole
    /// answer of a unary call or the first answer of a watch).
    ///
    /// Connections use TCP keepalive (30s), so a watch on a peer that
    /// vanished without closing the connection eventually fails.
    ///
    /// With no endpoint, every call fails. The timeout is taken as given
    /// (a zero timeout fails every call); [`EtcdClient::try_new`] checks a
    /// timeout that comes from configuration.
    pub fn new(bases: Vec<String>, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        connector.set_keepalive(Some(Duration::from_secs(30)));
        Self {
            bases,
            timeout,
            http: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// [`EtcdClient::new`], with the timeout checked by the family's rule
    /// for configured durations.
    ///
    /// # Errors
    /// - `timeout` is zero or longer than
    ///   [`MAX_DURATION`](crate::config::MAX_DURATION) (365 days)
    ///
    /// ```
    /// use std::time::Duration;
    /// use resilience_core::etcd::EtcdClient;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let bases = vec!["http://127.0.0.1:2379".to_owned()];
    /// assert!(EtcdClient::try_new(bases.clone(), Duration::from_secs(5)).is_ok());
    /// let err = EtcdClient::try_new(bases, Duration::ZERO).unwrap_err();
    /// assert_eq!(err.field(), "timeout");
    /// # }
    /// ```
    pub fn try_new(bases: Vec<String>, timeout: Duration) -> Result<Self, ConfigError> {
        validate_positive_duration("timeout", timeout)?;
        Ok(Self::new(bases, timeout))
    }

    /// The endpoints this client calls.
    pub fn endpoints(&self) -> &[String] {
        &self.bases
    }

    fn base(&self, attempt: usize) -> Result<&str, BoxError> {
        match self.bases.len() {
            0 => Err("etcd: no endpoint configured".into()),
            n => Ok(&self.bases[attempt % n]),
        }
    }

    async fn send(
        &self,
        path: &str,
        body: &Value,
        attempt: usize,
    ) -> Result<http::Response<Incoming>, BoxError> {
        let uri = format!("{}{}", self.base(attempt)?.trim_end_matches('/'), path);
        let req = http::Request::post(uri)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(serde_json::to_vec(body)?)))
            .map_err(|e| format!("etcd {path}: {e}"))?;
        let rsp = tokio::time::timeout(self.timeout, self.http.request(req))
            .await
            .map_err(|_| format!("etcd {path}: no answer within {:?}", self.timeout))?
            .map_err(|e| format!("etcd {path}: {e}"))?;
        Ok(rsp)
    }

    /// One unary call of the gateway at `path` (e.g. `/v3/kv/range`) with a
    /// JSON `body`; tries each endpoint in turn until one answers.
    ///
    /// Returns the answer's JSON; the answers of streaming endpoints
    /// (`/v3/lease/keepalive`), wrapped in `{"result": …}`, are unwrapped.
    /// The gateway writes 64-bit integers as JSON strings (`"42"`), and keys
    /// and values in base64.
    ///
    /// [`Value`] is `serde_json::Value` (serde_json 1), re-exported here so
    /// that a caller needs no dependency of its own on serde_json.
    ///
    /// # Errors
    ///
    /// When no endpoint answers in time with a success status and JSON
    /// without an `error` field; the error is the last endpoint's.
    pub async fn call(&self, path: &str, body: Value) -> Result<Value, BoxError> {
        let mut last = None;
        for attempt in 0..self.bases.len() {
            match self.call_once(path, &body, attempt).await {
                Ok(v) => return Ok(v),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| "etcd: no endpoint configured".into()))
    }

    async fn call_once(&self, path: &str, body: &Value, attempt: usize) -> Result<Value, BoxError> {
        let fut = async {
            let rsp = self.send(path, body, attempt).await?;
            let status = rsp.status();
            let bytes = Limited::new(rsp.into_body(), MAX_MESSAGE_BYTES)
                .collect()
                .await
                .map_err(|e| format!("etcd {path}: reading the answer: {e}"))?
                .to_bytes();
            let v: Value = serde_json::from_slice(&bytes)
                .map_err(|e| format!("etcd {path}: garbage answer ({status}): {e}"))?;
            if !status.is_success() || v.get("error").is_some() {
                return Err(format!("etcd {path}: {status}: {v}").into());
            }
            // Streaming endpoints (keepalive) wrap their answer in "result".
            Ok::<_, BoxError>(match v {
                Value::Object(mut map) if map.contains_key("result") => {
                    map.remove("result").unwrap_or_default()
                }
                v => v,
            })
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| format!("etcd {path}: no answer within {:?}", self.timeout))?
    }

    /// Every key under `prefix`, and the store revision they were read at.
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call), and when the answer has no
    /// `header.revision`, `kvs` is not a list, or an entry has no key or is
    /// not valid base64.
    pub async fn range_prefix(&self, prefix: &str) -> Result<(i64, Vec<Kv>), BoxError> {
        let v = self
            .call(
                "/v3/kv/range",
                json!({"key": B64.encode(prefix), "range_end": B64.encode(prefix_end(prefix.as_bytes()))}),
            )
            .await?;
        let revision =
            int(v.pointer("/header/revision")).ok_or("etcd /v3/kv/range: no header.revision")?;
        let kvs = match v.get("kvs") {
            None => Vec::new(),
            Some(Value::Array(kvs)) => kvs
                .iter()
                .map(|kv| parse_kv(kv).ok_or_else(|| format!("etcd /v3/kv/range: bad kv {kv}")))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("etcd /v3/kv/range: kvs is not a list".into()),
        };
        Ok((revision, kvs))
    }

    /// Opens a watch of every key under `prefix`, from `start_revision`
    /// (changes at that revision and later; pass the revision of a
    /// [`range_prefix`](Self::range_prefix) plus one).
    ///
    /// `attempt` picks the endpoint (`attempt % endpoints`): a caller that
    /// counts its reconnections moves on to the next endpoint each time.
    ///
    /// # Errors
    ///
    /// When the endpoint cannot be reached, does not answer within the
    /// timeout, or answers with an error status.
    pub async fn watch_prefix(
        &self,
        prefix: &str,
        start_revision: i64,
        attempt: usize,
    ) -> Result<Watch, BoxError> {
        let body = json!({"create_request": {
            "key": B64.encode(prefix),
            "range_end": B64.encode(prefix_end(prefix.as_bytes())),
            "start_revision": start_revision.to_string(),
        }});
        let rsp = self.send("/v3/watch", &body, attempt).await?;
        if !rsp.status().is_success() {
            return Err(format!("etcd /v3/watch: {}", rsp.status()).into());
        }
        Ok(Watch {
            body: rsp.into_body(),
            buf: Vec::new(),
        })
    }

    /// Grants a lease of `ttl` (rounded down to seconds, at least one);
    /// returns its id.
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call), and when the answer has no `ID`.
    pub async fn grant(&self, ttl: Duration) -> Result<i64, BoxError> {
        let v = self
            .call(
                "/v3/lease/grant",
                json!({"TTL": ttl.as_secs().max(1).to_string()}),
            )
            .await?;
        int(v.get("ID")).ok_or_else(|| format!("etcd /v3/lease/grant: no ID in {v}").into())
    }

    /// Refreshes the lease `id`; returns its new TTL in seconds, or
    /// `Ok(None)` when the lease is gone (expired or revoked).
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call).
    pub async fn keepalive(&self, id: i64) -> Result<Option<i64>, BoxError> {
        let v = self
            .call("/v3/lease/keepalive", json!({"ID": id.to_string()}))
            .await?;
        Ok(int(v.get("TTL")).filter(|ttl| *ttl > 0))
    }

    /// Revokes the lease `id`, which deletes the keys attached to it.
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call).
    pub async fn revoke(&self, id: i64) -> Result<(), BoxError> {
        self.call("/v3/lease/revoke", json!({"ID": id.to_string()}))
            .await
            .map(drop)
    }

    /// Deletes `key`.
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call).
    pub async fn delete(&self, key: &str) -> Result<(), BoxError> {
        self.call("/v3/kv/deleterange", json!({"key": B64.encode(key)}))
            .await
            .map(drop)
    }

    /// Stores `value` as `key`, attached to the lease `lease` (`0`: none).
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call).
    pub async fn put(&self, key: &str, value: &[u8], lease: i64) -> Result<(), BoxError> {
        self.call(
            "/v3/kv/put",
            json!({"key": B64.encode(key), "value": B64.encode(value), "lease": lease.to_string()}),
        )
        .await
        .map(drop)
    }
}

impl fmt::Debug for EtcdClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdClient")
            .field("endpoints", &self.bases)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

// === impl Watch ===

impl Watch {
    /// The next message; `Ok(None)` when the server closed the stream.
    ///
    /// Waits as long as the server sends nothing: a silent but open watch
    /// is only noticed when TCP keepalive gives up on the connection.
    ///
    /// # Errors
    ///
    /// When the connection fails, the stream is not the gateway's JSON (or
    /// a message exceeds [`MAX_MESSAGE_BYTES`]), etcd reports an error, or
    /// etcd canceled the watch (other than for compaction, which is
    /// [`WatchMessage::Compacted`]).
    pub async fn next(&mut self) -> Result<Option<WatchMessage>, BoxError> {
        loop {
            let mut it = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
            match it.next() {
                Some(Ok(v)) => {
                    let used = it.byte_offset();
                    self.buf.drain(..used);
                    return parse_watch(&v).map(Some);
                }
                Some(Err(e)) if e.is_eof() => {}
                Some(Err(e)) => return Err(format!("etcd /v3/watch: garbage: {e}").into()),
                None => self.buf.clear(),
            }
            if self.buf.len() > MAX_MESSAGE_BYTES {
                return Err("etcd /v3/watch: message too large".into());
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(format!("etcd /v3/watch: {e}").into()),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

impl fmt::Debug for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watch")
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

// === helpers ===

fn parse_watch(v: &Value) -> Result<WatchMessage, BoxError> {
    if let Some(err) = v.get("error") {
        return Err(format!("etcd /v3/watch: {err}").into());
    }
    let r = v.get("result").ok_or("etcd /v3/watch: no result")?;
    if int(r.get("compact_revision")).is_some_and(|c| c > 0) {
        return Ok(WatchMessage::Compacted);
    }
    if r.get("canceled").and_then(Value::as_bool) == Some(true) {
        return Err(format!("etcd /v3/watch: canceled: {r}").into());
    }
    if r.get("created").and_then(Value::as_bool) == Some(true) {
        return Ok(WatchMessage::Created);
    }
    let mut events = Vec::new();
    match r.get("events") {
        None => {}
        Some(Value::Array(evs)) => {
            for ev in evs {
                events.push(
                    parse_event(ev).ok_or_else(|| format!("etcd /v3/watch: bad event {ev}"))?,
                );
            }
        }
        Some(_) => return Err("etcd /v3/watch: events is not a list".into()),
    }
    Ok(WatchMessage::Events(events))
}

fn parse_event(ev: &Value) -> Option<Event> {
    let kv = ev.get("kv")?;
    match ev.get("type").and_then(Value::as_str) {
        Some("DELETE") => Some(Event::Delete {
            key: B64.decode(kv.get("key")?.as_str()?).ok()?,
            mod_revision: int(kv.get("mod_revision")).unwrap_or(0),
        }),
        None | Some("PUT") => parse_kv(kv).map(Event::Put),
        Some(_) => None,
    }
}

fn parse_kv(kv: &Value) -> Option<Kv> {
    let key = B64.decode(kv.get("key")?.as_str()?).ok()?;
    let value = match kv.get("value") {
        Some(v) => B64.decode(v.as_str()?).ok()?,
        None => Vec::new(),
    };
    Some(Kv {
        key,
        value,
        mod_revision: int(kv.get("mod_revision")).unwrap_or(0),
    })
}

/// An int64 from the gateway, which writes them as JSON strings
/// (`"42"`); accepts a JSON integer too. `None` when absent or not an
/// int64.
pub(crate) fn int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// The end of the range of keys starting with `prefix`: the prefix with its
/// last byte below `0xff` incremented, or `"\0"` (every key) when there is
/// none (etcd's `GetPrefixRangeEnd`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}
