use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// A one-shot HTTP/1.1 server on loopback: reads one request, writes `raw`
/// (status line, headers and body, as given), then closes.
async fn serve(raw: &'static [u8]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                read_request(&mut conn).await;
                let _ = conn.write_all(raw).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

async fn read_request(conn: &mut tokio::net::TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Ok(n) = conn.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return;
            }
        }
    }
}

fn ok(body: &str) -> &'static [u8] {
    let raw = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    Box::leak(raw.into_bytes().into_boxed_slice())
}

fn client(base: String) -> EtcdClient {
    EtcdClient::new(vec![base], Duration::from_secs(2))
}

#[test]
fn int64s_come_as_strings() {
    assert_eq!(int(Some(&json!("42"))), Some(42));
    assert_eq!(int(Some(&json!(42))), Some(42));
    assert_eq!(int(Some(&json!("x"))), None);
    assert_eq!(int(Some(&json!("99999999999999999999"))), None);
    assert_eq!(int(Some(&json!(1.5))), None);
    assert_eq!(int(Some(&json!(null))), None);
    assert_eq!(int(None), None);
}

#[test]
fn prefix_end_increments_the_last_byte() {
    assert_eq!(prefix_end(b"svc/"), b"svc0".to_vec());
    assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
    assert_eq!(prefix_end(b"\xff"), vec![0]);
    assert_eq!(prefix_end(b""), vec![0]);
}

#[test]
fn parses_watch_messages() {
    let created = json!({"result": {"header": {"revision": "3"}, "created": true}});
    assert_eq!(parse_watch(&created).unwrap(), WatchMessage::Created);
    let events = json!({"result": {"events": [
        {"kv": {"key": B64.encode("svc/a"), "value": B64.encode("{}"), "mod_revision": "4"}},
        {"type": "DELETE", "kv": {"key": B64.encode("svc/b"), "mod_revision": "5"}},
        {"type": "PUT", "kv": {"key": B64.encode("svc/c")}},
    ]}});
    let WatchMessage::Events(evs) = parse_watch(&events).unwrap() else {
        panic!("events")
    };
    assert_eq!(evs.len(), 3);
    assert!(
        matches!(&evs[0], Event::Put(kv) if kv.key == b"svc/a" && kv.value == b"{}" && kv.mod_revision == 4)
    );
    assert!(matches!(&evs[1], Event::Delete { key, mod_revision: 5 } if key == b"svc/b"));
    assert!(matches!(&evs[2], Event::Put(kv) if kv.value.is_empty() && kv.mod_revision == 0));
    let progress = json!({"result": {"header": {"revision": "9"}}});
    assert_eq!(
        parse_watch(&progress).unwrap(),
        WatchMessage::Events(Vec::new())
    );
    let compacted = json!({"result": {"compact_revision": "7", "canceled": true}});
    assert_eq!(parse_watch(&compacted).unwrap(), WatchMessage::Compacted);
}

#[test]
fn garbage_watch_messages_are_errors() {
    for garbage in [
        json!({"error": {"code": 14}}),
        json!([1]),
        json!("x"),
        json!({"result": {"canceled": true}}),
        json!({"result": {"events": {}}}),
        json!({"result": {"events": [{"kv": {"key": "!!not base64"}}]}}),
        json!({"result": {"events": [{"kv": {"key": B64.encode("k"), "value": 7}}]}}),
        json!({"result": {"events": [{"type": "DELETE"}]}}),
        json!({"result": {"events": [{"type": "WHAT", "kv": {"key": B64.encode("k")}}]}}),
    ] {
        assert!(parse_watch(&garbage).is_err(), "{garbage}");
    }
}

#[tokio::test]
async fn range_reads_keys_and_revision() {
    let body = json!({"header": {"revision": "12"}, "kvs": [
        {"key": B64.encode("/p/a"), "value": B64.encode("1"), "mod_revision": "3"},
        {"key": B64.encode("/p/b"), "mod_revision": 4},
    ]})
    .to_string();
    let base = serve(ok(&body)).await;
    let (revision, kvs) = client(base).range_prefix("/p/").await.unwrap();
    assert_eq!(revision, 12);
    assert_eq!(kvs.len(), 2);
    assert_eq!(
        (&kvs[0].key[..], &kvs[0].value[..]),
        (&b"/p/a"[..], &b"1"[..])
    );
    assert_eq!(kvs[1].mod_revision, 4);

    // No kvs: an empty prefix.
    let base = serve(ok(r#"{"header":{"revision":"5"}}"#)).await;
    assert_eq!(
        client(base).range_prefix("/p/").await.unwrap(),
        (5, Vec::new())
    );
}

#[tokio::test]
async fn garbage_answers_are_errors_not_panics() {
    let kv = |key: &str| json!({"header": {"revision": "1"}, "kvs": [{"key": key}]}).to_string();
    for raw in [
        ok("<html>bad gateway</html>"),
        ok(""),
        ok("{"),
        ok("[]"),
        ok(r#"{"header":{}}"#),
        ok(r#"{"header":{"revision":"not a number"}}"#),
        ok(r#"{"header":{"revision":"99999999999999999999"}}"#),
        ok(r#"{"header":{"revision":"1"},"kvs":{}}"#),
        ok(r#"{"header":{"revision":"1"},"kvs":[7]}"#),
        ok(&kv("!!not base64")),
        ok(r#"{"error":"etcdserver: request timed out","code":14}"#),
        b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\nconnection: close\r\n\r\n{\"header\":",
        b"not http at all\r\n\r\n",
        b"",
    ] {
        let base = serve(raw).await;
        let err = client(base).range_prefix("/p/").await.unwrap_err();
        assert!(err.to_string().contains("etcd"), "{err}");
    }
}

#[tokio::test]
async fn lease_calls_check_their_answers() {
    let c = client(serve(ok(r#"{"header":{}}"#)).await);
    assert!(c.grant(Duration::from_secs(5)).await.is_err());
    let c = client(serve(ok(r#"{"ID":"7587","TTL":"5"}"#)).await);
    assert_eq!(c.grant(Duration::from_secs(5)).await.unwrap(), 7587);
    // keepalive answers are wrapped in "result"; no TTL: the lease is gone.
    let c = client(serve(ok(r#"{"result":{"ID":"1","TTL":"5"}}"#)).await);
    assert_eq!(c.keepalive(1).await.unwrap(), Some(5));
    let c = client(serve(ok(r#"{"result":{"ID":"1"}}"#)).await);
    assert_eq!(c.keepalive(1).await.unwrap(), None);
    let c = client(serve(ok(r#"{"result":"garbage"}"#)).await);
    assert_eq!(c.keepalive(1).await.unwrap(), None);
    let c = client(serve(ok("nope")).await);
    assert!(c.keepalive(1).await.is_err());
    assert!(c.revoke(1).await.is_err());
    assert!(c.put("k", b"v", 0).await.is_err());
}

#[tokio::test]
async fn try_new_checks_the_timeout() {
    let bases = || vec!["http://127.0.0.1:1".to_owned()];
    assert!(EtcdClient::try_new(bases(), Duration::from_secs(2)).is_ok());
    assert!(EtcdClient::try_new(bases(), crate::config::MAX_DURATION).is_ok());
    let err = EtcdClient::try_new(bases(), Duration::ZERO).unwrap_err();
    assert_eq!(err.field(), "timeout");
    let long = crate::config::MAX_DURATION + Duration::from_secs(1);
    let err = EtcdClient::try_new(bases(), long).unwrap_err();
    assert_eq!(
        (err.field(), err.reason()),
        ("timeout", "must be at most 365 days")
    );
}

#[tokio::test]
async fn no_endpoint_is_an_error() {
    let c = EtcdClient::new(Vec::new(), Duration::from_secs(1));
    assert!(c.range_prefix("/p/").await.is_err());
    assert!(c.watch_prefix("/p/", 1, 3).await.is_err());
    assert!(c.grant(Duration::from_secs(1)).await.is_err());
}

#[tokio::test]
async fn unreachable_and_slow_endpoints_fail_in_time() {
    // A port nobody listens on.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let c = EtcdClient::new(vec![format!("http://{addr}")], Duration::from_secs(1));
    assert!(c.range_prefix("/p/").await.is_err());

    // Accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            held.push(conn);
        }
    });
    let c = EtcdClient::new(vec![format!("http://{addr}")], Duration::from_millis(200));
    let started = tokio::time::Instant::now();
    let err = c.range_prefix("/p/").await.unwrap_err();
    assert!(err.to_string().contains("no answer within"), "{err}");
    assert!(c.watch_prefix("/p/", 1, 0).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn calls_fall_over_to_the_next_endpoint() {
    let bad = serve(ok("<html>")).await;
    let good = serve(ok(r#"{"header":{"revision":"2"}}"#)).await;
    let c = EtcdClient::new(vec![bad, good], Duration::from_secs(2));
    assert_eq!(c.range_prefix("/p/").await.unwrap().0, 2);
}

#[tokio::test]
async fn watch_streams_then_reports_garbage() {
    let put = json!({"result": {"events": [
        {"kv": {"key": B64.encode("/p/a"), "value": B64.encode("x"), "mod_revision": "6"}},
    ]}})
    .to_string();
    let body = format!(r#"{{"result":{{"created":true}}}}{put}{{"result":"#);
    // Chunked: the last message is cut in two, then garbage follows.
    let tail = "{}}x";
    let raw = format!(
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{body}\r\n{:x}\r\n{tail}\r\n0\r\n\r\n",
        body.len(),
        tail.len()
    );
    let base = serve(Box::leak(raw.into_bytes().into_boxed_slice())).await;
    let mut watch = client(base).watch_prefix("/p/", 6, 0).await.unwrap();
    assert_eq!(watch.next().await.unwrap(), Some(WatchMessage::Created));
    let Some(WatchMessage::Events(evs)) = watch.next().await.unwrap() else {
        panic!("events");
    };
    assert!(matches!(&evs[..], [Event::Put(kv)] if kv.mod_revision == 6));
    // `{"result":{}}`, joined across chunks: a progress notification.
    assert_eq!(
        watch.next().await.unwrap(),
        Some(WatchMessage::Events(Vec::new()))
    );
    assert!(watch.next().await.is_err());
}

#[tokio::test]
async fn watch_end_and_error_status() {
    let base = serve(ok(r#"{"result":{"created":true}}"#)).await;
    let mut watch = client(base).watch_prefix("/p/", 1, 0).await.unwrap();
    assert_eq!(watch.next().await.unwrap(), Some(WatchMessage::Created));
    assert_eq!(watch.next().await.unwrap(), None);

    // A cut message at the end of the stream is the end of the stream.
    let base = serve(ok(r#"{"result":{"crea"#)).await;
    let mut watch = client(base).watch_prefix("/p/", 1, 0).await.unwrap();
    assert_eq!(watch.next().await.unwrap(), None);

    let base = serve(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n").await;
    assert!(client(base).watch_prefix("/p/", 1, 0).await.is_err());
}
