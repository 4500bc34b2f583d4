//! Hot reload from a real etcd (Debian's `etcd` binary), started here on free
//! loopback ports with a temporary data directory and killed at the end.
//!
//! Without the binary the test says why it did not run and passes, unless
//! `RESILIENCE_REQUIRE_SERVERS=1` (CI) makes that a failure.
#![cfg(feature = "etcd")]

mod support;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use resilience_flags::source::EtcdSource;
use resilience_flags::{ErrorCode, FlagContext, FlagSet, FlagStore};
use support::TempDir;

struct Etcd {
    child: Child,
    url: String,
    _dir: TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn etcd_binary() -> Option<&'static str> {
    let found = Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Some("etcd");
    }
    let required = std::env::var("RESILIENCE_REQUIRE_SERVERS").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "RESILIENCE_REQUIRE_SERVERS=1 but no `etcd` binary on PATH (apt-get install etcd-server)"
    );
    eprintln!("skipped: no `etcd` binary on PATH (apt-get install etcd-server to run this test)");
    None
}

fn start_etcd(bin: &str) -> Etcd {
    let dir = TempDir::new("etcd");
    let (client, peer) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new(bin)
        .arg("--name=flags-test")
        .arg(format!("--data-dir={}", dir.path().join("data").display()))
        .arg(format!("--listen-client-urls={url}"))
        .arg(format!("--advertise-client-urls={url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=flags-test={peer_url}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start etcd");
    Etcd {
        child,
        url,
        _dir: dir,
    }
}

fn b64(input: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in input.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            out.push(if i <= c.len() {
                char::from(A[(n >> (18 - 6 * i)) as usize & 63])
            } else {
                '='
            });
        }
    }
    out
}

struct Kv {
    client: Client<HttpConnector, Full<Bytes>>,
    url: String,
}

impl Kv {
    async fn call(&self, path: &str, body: String) -> Result<String, String> {
        let req = http::Request::post(format!("{}{path}", self.url))
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let rsp = self.client.request(req).await.map_err(|e| e.to_string())?;
        let ok = rsp.status().is_success();
        let body = rsp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let body = String::from_utf8_lossy(&body).into_owned();
        if ok { Ok(body) } else { Err(body) }
    }

    async fn put(&self, key: &str, value: &str) {
        let body = format!(
            r#"{{"key":"{}","value":"{}"}}"#,
            b64(key.as_bytes()),
            b64(value.as_bytes())
        );
        self.call("/v3/kv/put", body).await.expect("etcd put");
    }

    async fn delete(&self, key: &str) {
        let body = format!(r#"{{"key":"{}"}}"#, b64(key.as_bytes()));
        self.call("/v3/kv/deleterange", body)
            .await
            .expect("etcd delete");
    }
}

/// Polls `cond` every 20 ms for at most 10 s of real time (etcd is real).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_a_prefix_and_keeps_the_last_good_set() {
    let Some(bin) = etcd_binary() else { return };
    let mut etcd = start_etcd(bin);
    let kv = Kv {
        client: Client::builder(TokioExecutor::new()).build_http(),
        url: etcd.url.clone(),
    };
    // Wait for etcd to serve.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while kv
        .call("/v3/kv/range", format!(r#"{{"key":"{}"}}"#, b64(b"x")))
        .await
        .is_err()
    {
        assert!(tokio::time::Instant::now() < deadline, "etcd did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    kv.put("/flags/new-checkout", r#"{"rollout": 100}"#).await;
    kv.put("/other/ignored", "not json at all").await;
    let source = EtcdSource::builder(etcd.url.clone(), "/flags/")
        .retry_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    assert_eq!(source.load().await.unwrap().len(), 1);

    let store = FlagStore::new(FlagSet::empty());
    let handle = source.spawn(store.clone());
    let ctx = FlagContext::new().with_key("user-1");
    eventually("initial range", || store.is_active("new-checkout", &ctx)).await;

    // A put is seen through the watch.
    kv.put("/flags/new-checkout", r#"{"enabled": false}"#).await;
    eventually("update", || !store.is_active("new-checkout", &ctx)).await;
    kv.put("/flags/color", r#"{"default": "blue", "on": "green"}"#)
        .await;
    eventually("new key", || store.snapshot().len() == 2).await;
    assert_eq!(handle.status().errors, 0);
    eventually("three updates", || handle.status().updates == 3).await;

    // Garbage keeps the last good set.
    kv.put("/flags/new-checkout", r#"{"rollout": "lots"}"#)
        .await;
    eventually("garbage rejected", || handle.status().errors == 1).await;
    assert_eq!(store.snapshot().len(), 2);
    assert!(!store.snapshot().get("new-checkout").unwrap().is_enabled());
    assert!(handle.status().last_error.unwrap().contains("new-checkout"));

    // Fixed, then a delete.
    kv.put("/flags/new-checkout", r#"{}"#).await;
    eventually("fixed", || store.is_active("new-checkout", &ctx)).await;
    // The status is updated just after the store (another thread).
    eventually("fresh again", || {
        handle.status().staleness == Duration::ZERO
    })
    .await;
    assert_eq!(handle.status().last_error, None);
    kv.delete("/flags/color").await;
    eventually("delete", || store.snapshot().get("color").is_none()).await;
    let e = store.evaluate_variant("color", &ctx, "blue");
    assert_eq!(e.error_code(), Some(ErrorCode::FlagNotFound));

    // etcd goes away: the set stays, the source reports the failure.
    let _ = etcd.child.kill();
    let _ = etcd.child.wait();
    eventually("outage noticed", || handle.status().last_error.is_some()).await;
    eventually("staleness grows", || {
        handle.status().staleness >= Duration::from_millis(200)
    })
    .await;
    assert!(handle.status().errors >= 2);
    assert!(store.is_active("new-checkout", &ctx));
    handle.stop();
}
