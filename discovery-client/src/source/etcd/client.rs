//! A minimal client of etcd v3's JSON gateway (grpc-gateway) over HTTP/1.1.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use resilience_core::BoxError;
use serde_json::{Value, json};

/// A key and its value, decoded.
#[derive(Debug, Clone)]
pub(crate) struct Kv {
    pub(crate) key: String,
    pub(crate) value: Vec<u8>,
    pub(crate) mod_revision: i64,
}

/// One event of a watch.
#[derive(Debug, Clone)]
pub(crate) enum Event {
    Put(Kv),
    Delete { key: String, mod_revision: i64 },
}

/// One response of a watch stream.
#[derive(Debug)]
pub(crate) enum WatchMessage {
    Created,
    Events(Vec<Event>),
    /// The start revision was compacted away: resync from a range.
    Compacted,
}

#[derive(Clone)]
pub(crate) struct EtcdClient {
    bases: Vec<String>,
    timeout: Duration,
    http: Client<HttpConnector, Full<Bytes>>,
}

pub(crate) struct Watch {
    body: Incoming,
    buf: Vec<u8>,
}

impl EtcdClient {
    pub(crate) fn new(bases: Vec<String>, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        // A watch is one long request: TCP keepalive notices a peer that
        // vanished without closing the connection.
        connector.set_keepalive(Some(Duration::from_secs(30)));
        Self {
            bases,
            timeout,
            http: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    fn base(&self, attempt: usize) -> &str {
        &self.bases[attempt % self.bases.len()]
    }

    async fn send(
        &self,
        path: &str,
        body: &Value,
        attempt: usize,
    ) -> Result<http::Response<Incoming>, BoxError> {
        let uri = format!("{}{}", self.base(attempt).trim_end_matches('/'), path);
        let req = http::Request::post(uri)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(serde_json::to_vec(body)?)))?;
        let rsp = tokio::time::timeout(self.timeout, self.http.request(req))
            .await
            .map_err(|_| format!("etcd {path}: no answer within {:?}", self.timeout))??;
        Ok(rsp)
    }

    /// One unary call; tries each configured endpoint in turn.
    pub(crate) async fn call(&self, path: &str, body: Value) -> Result<Value, BoxError> {
        let mut last = None;
        for attempt in 0..self.bases.len() {
            match self.call_once(path, &body, attempt).await {
                Ok(v) => return Ok(v),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| "no etcd endpoint configured".into()))
    }

    async fn call_once(&self, path: &str, body: &Value, attempt: usize) -> Result<Value, BoxError> {
        let fut = async {
            let rsp = self.send(path, body, attempt).await?;
            let status = rsp.status();
            let bytes = rsp.into_body().collect().await?.to_bytes();
            let v: Value = serde_json::from_slice(&bytes)
                .map_err(|e| format!("etcd {path}: garbage answer ({status}): {e}"))?;
            if !status.is_success() || v.get("error").is_some() {
                return Err(format!("etcd {path}: {status}: {v}").into());
            }
            // Streaming endpoints (keepalive) wrap their answer in "result".
            Ok::<_, BoxError>(v.get("result").cloned().unwrap_or(v))
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| format!("etcd {path}: no answer within {:?}", self.timeout))?
    }

    /// Every key under `prefix`, and the store revision they were read at.
    pub(crate) async fn range_prefix(&self, prefix: &str) -> Result<(i64, Vec<Kv>), BoxError> {
        let v = self
            .call(
                "/v3/kv/range",
                json!({"key": B64.encode(prefix), "range_end": B64.encode(prefix_end(prefix))}),
            )
            .await?;
        let revision =
            int(v.pointer("/header/revision")).ok_or("etcd range: no header.revision")?;
        let kvs = match v.get("kvs") {
            None => Vec::new(),
            Some(Value::Array(kvs)) => kvs.iter().filter_map(parse_kv).collect(),
            Some(_) => return Err("etcd range: kvs is not a list".into()),
        };
        Ok((revision, kvs))
    }

    /// Opens a watch of `prefix` from `start_revision`.
    pub(crate) async fn watch_prefix(
        &self,
        prefix: &str,
        start_revision: i64,
        attempt: usize,
    ) -> Result<Watch, BoxError> {
        let body = json!({"create_request": {
            "key": B64.encode(prefix),
            "range_end": B64.encode(prefix_end(prefix)),
            "start_revision": start_revision.to_string(),
        }});
        let rsp = self.send("/v3/watch", &body, attempt).await?;
        if !rsp.status().is_success() {
            return Err(format!("etcd watch: {}", rsp.status()).into());
        }
        Ok(Watch {
            body: rsp.into_body(),
            buf: Vec::new(),
        })
    }

    pub(crate) async fn grant(&self, ttl: Duration) -> Result<i64, BoxError> {
        let v = self
            .call(
                "/v3/lease/grant",
                json!({"TTL": ttl.as_secs().max(1).to_string()}),
            )
            .await?;
        int(v.get("ID")).ok_or_else(|| format!("etcd lease grant: no ID in {v}").into())
    }

    /// Refreshes a lease; `Ok(None)` when the lease is gone.
    pub(crate) async fn keepalive(&self, id: i64) -> Result<Option<i64>, BoxError> {
        let v = self
            .call("/v3/lease/keepalive", json!({"ID": id.to_string()}))
            .await?;
        Ok(int(v.get("TTL")).filter(|ttl| *ttl > 0))
    }

    pub(crate) async fn revoke(&self, id: i64) -> Result<(), BoxError> {
        self.call("/v3/lease/revoke", json!({"ID": id.to_string()}))
            .await
            .map(drop)
    }

    pub(crate) async fn put(&self, key: &str, value: &[u8], lease: i64) -> Result<(), BoxError> {
        self.call(
            "/v3/kv/put",
            json!({"key": B64.encode(key), "value": B64.encode(value), "lease": lease.to_string()}),
        )
        .await
        .map(drop)
    }
}

impl Watch {
    /// The next message; `Ok(None)` when the server closed the stream.
    pub(crate) async fn next(&mut self) -> Result<Option<WatchMessage>, BoxError> {
        loop {
            let mut it = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
            match it.next() {
                Some(Ok(v)) => {
                    let used = it.byte_offset();
                    self.buf.drain(..used);
                    return parse_watch(&v).map(Some);
                }
                Some(Err(e)) if e.is_eof() => {}
                Some(Err(e)) => return Err(format!("etcd watch: garbage: {e}").into()),
                None => self.buf.clear(),
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

fn parse_watch(v: &Value) -> Result<WatchMessage, BoxError> {
    if let Some(err) = v.get("error") {
        return Err(format!("etcd watch: {err}").into());
    }
    let r = v.get("result").ok_or("etcd watch: no result")?;
    if int(r.get("compact_revision")).is_some_and(|c| c > 0) {
        return Ok(WatchMessage::Compacted);
    }
    if r.get("canceled").and_then(Value::as_bool) == Some(true) {
        return Err(format!("etcd watch canceled: {r}").into());
    }
    if r.get("created").and_then(Value::as_bool) == Some(true) {
        return Ok(WatchMessage::Created);
    }
    let mut events = Vec::new();
    if let Some(Value::Array(evs)) = r.get("events") {
        for ev in evs {
            let Some(kv) = ev.get("kv") else { continue };
            if ev.get("type").and_then(Value::as_str) == Some("DELETE") {
                let key = kv
                    .get("key")
                    .and_then(Value::as_str)
                    .and_then(|k| B64.decode(k).ok())
                    .and_then(|k| String::from_utf8(k).ok());
                if let Some(key) = key {
                    events.push(Event::Delete {
                        key,
                        mod_revision: int(kv.get("mod_revision")).unwrap_or(0),
                    });
                }
            } else if let Some(kv) = parse_kv(kv) {
                events.push(Event::Put(kv));
            }
        }
    }
    Ok(WatchMessage::Events(events))
}

fn parse_kv(kv: &Value) -> Option<Kv> {
    let key = B64.decode(kv.get("key")?.as_str()?).ok()?;
    let value = match kv.get("value") {
        Some(v) => B64.decode(v.as_str()?).ok()?,
        None => Vec::new(),
    };
    Some(Kv {
        key: String::from_utf8(key).ok()?,
        value,
        mod_revision: int(kv.get("mod_revision")).unwrap_or(0),
    })
}

/// An int64 from the gateway: a JSON string (or, leniently, a number).
pub(crate) fn int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// The end of the range of keys starting with `prefix` (etcd's
/// `GetPrefixRangeEnd`).
pub(crate) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int64s_come_as_strings() {
        assert_eq!(int(Some(&json!("42"))), Some(42));
        assert_eq!(int(Some(&json!(42))), Some(42));
        assert_eq!(int(Some(&json!("x"))), None);
        assert_eq!(int(None), None);
    }

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end("svc/"), b"svc0".to_vec());
        assert_eq!(prefix_end(""), vec![0]);
    }

    #[test]
    fn parses_watch_messages() {
        let created = json!({"result": {"header": {"revision": "3"}, "created": true}});
        assert!(matches!(
            parse_watch(&created).unwrap(),
            WatchMessage::Created
        ));
        let events = json!({"result": {"events": [
            {"kv": {"key": B64.encode("svc/a"), "value": B64.encode("{}"), "mod_revision": "4"}},
            {"type": "DELETE", "kv": {"key": B64.encode("svc/b"), "mod_revision": "5"}},
            {"kv": {"key": "!!not base64"}}
        ]}});
        let WatchMessage::Events(evs) = parse_watch(&events).unwrap() else {
            panic!("events")
        };
        assert_eq!(evs.len(), 2);
        assert!(matches!(&evs[1], Event::Delete { key, mod_revision: 5 } if key == "svc/b"));
        let compacted = json!({"result": {"compact_revision": "7", "canceled": true}});
        assert!(matches!(
            parse_watch(&compacted).unwrap(),
            WatchMessage::Compacted
        ));
        assert!(parse_watch(&json!({"error": {"code": 14}})).is_err());
        assert!(parse_watch(&json!([1])).is_err());
    }
}
