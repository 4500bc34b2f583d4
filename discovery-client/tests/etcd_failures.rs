//! A registry that fails: unreachable, slow, answering garbage. Against a
//! fake etcd JSON gateway, so each failure can be produced on demand.
#![cfg(feature = "etcd")]

mod support;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use resilience_discovery::source::{Backoff, EtcdConfig, EtcdSource};
use resilience_discovery::{EndpointState, RoundRobinBuilder};
use support::wait_until;

const GOOD: u8 = 0;
const GARBAGE: u8 = 1;
const SLOW: u8 = 2;

#[derive(Clone, Default)]
struct Fake {
    mode: Arc<AtomicU8>,
    watches: Arc<Mutex<Vec<serde_json::Value>>>,
}

async fn slow_or_garbage(fake: &Fake) -> Option<&'static str> {
    match fake.mode.load(Ordering::Relaxed) {
        GARBAGE => Some("<html>bad gateway</html>"),
        SLOW => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Some("{}")
        }
        _ => None,
    }
}

async fn range(fake: Fake) -> Body {
    if let Some(body) = slow_or_garbage(&fake).await {
        return Body::from(body);
    }
    let kv = |key: &str, value: &str| serde_json::json!({"key": B64.encode(key), "value": B64.encode(value), "mod_revision": "3"});
    Body::from(
        serde_json::json!({
            "header": {"revision": "5"},
            "kvs": [
                kv("/svc/a", r#"{"address": "127.0.0.1:1001"}"#),
                kv("/svc/b", r#"{"address": "127.0.0.1:1002", "metadata": {"zone": "b"}}"#),
                kv("/svc/bad", "not json"),
            ],
        })
        .to_string(),
    )
}

async fn watch(fake: Fake, body: Bytes) -> Body {
    fake.watches
        .lock()
        .unwrap()
        .push(serde_json::from_slice(&body).unwrap_or_default());
    if let Some(body) = slow_or_garbage(&fake).await {
        return Body::from(body);
    }
    let created = r#"{"result":{"header":{"revision":"5"},"created":true}}"#;
    // Stays open while the fake is good, then ends (the server went away).
    let rest = futures_util::stream::unfold(fake, |fake| async move {
        while fake.mode.load(Ordering::Relaxed) == GOOD {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None::<(Result<Bytes, std::io::Error>, Fake)>
    });
    let first = futures_util::stream::once(async move { Ok(Bytes::from(created)) });
    Body::from_stream(futures_util::StreamExt::chain(first, rest))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_the_last_good_set_through_garbage_slowness_and_outage() {
    let fake = Fake::default();
    let app = Router::new()
        .route(
            "/v3/kv/range",
            post({
                let f = fake.clone();
                move || range(f.clone())
            }),
        )
        .route(
            "/v3/watch",
            post({
                let f = fake.clone();
                move |body: Bytes| watch(f.clone(), body)
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let config = EtcdConfig::builder()
        .endpoint(format!("http://{addr}"))
        .name("flaky")
        .request_timeout(Duration::from_millis(300))
        .backoff(Backoff::new(Duration::from_millis(50), Duration::from_millis(200)).unwrap())
        .build()
        .unwrap();
    let source = EtcdSource::new(config, "/svc/").into_stream();
    let status = source.health();
    let rr =
        RoundRobinBuilder::new().build_with_source(source, |_: &resilience_discovery::Endpoint| {
            tower::service_fn(|()| async { Ok::<_, resilience_core::BoxError>(()) })
        });
    let handle = rr.handle();
    let two = async || handle.snapshot().count(EndpointState::Healthy) == 2;
    // The invalid entry is skipped alone.
    wait_until("two endpoints", Duration::from_secs(5), two).await;
    assert_eq!(
        handle.snapshot().endpoints[1].endpoint.metadata()["zone"],
        "b"
    );
    wait_until("watching", Duration::from_secs(5), async || {
        status.staleness().is_zero()
    })
    .await;
    assert_eq!(status.errors(), 0);

    for mode in [GARBAGE, SLOW] {
        let before = status.errors();
        fake.mode.store(mode, Ordering::Relaxed);
        wait_until("errors counted", Duration::from_secs(5), async || {
            status.errors() >= before + 2
        })
        .await;
        assert!(status.last_error().is_some());
        assert!(!status.staleness().is_zero(), "{status:?}");
        assert_eq!(handle.snapshot().endpoints.len(), 2, "last good set kept");
    }

    // Back: the watch resumes from the revision after the last one seen.
    fake.mode.store(GOOD, Ordering::Relaxed);
    wait_until("recovered", Duration::from_secs(5), async || {
        status.last_error().is_none() && status.staleness().is_zero()
    })
    .await;
    let watches = fake.watches.lock().unwrap().clone();
    assert!(watches.len() >= 3, "{watches:?}");
    for w in &watches {
        assert_eq!(w["create_request"]["start_revision"], "6", "{w}");
        assert_eq!(w["create_request"]["key"], B64.encode("/svc/"));
    }

    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_from_the_start_counts_errors_and_has_no_endpoints() {
    let port = support::free_port(); // nothing listens there
    let config = EtcdConfig::builder()
        .endpoint(format!("http://127.0.0.1:{port}"))
        .request_timeout(Duration::from_millis(300))
        .backoff(Backoff::new(Duration::from_millis(50), Duration::from_millis(100)).unwrap())
        .build()
        .unwrap();
    let source = EtcdSource::new(config, "/svc/").into_stream();
    let status = source.health();
    let mut rr =
        RoundRobinBuilder::new().build_with_source(source, |_: &resilience_discovery::Endpoint| {
            tower::service_fn(|()| async { Ok::<_, resilience_core::BoxError>(()) })
        });
    wait_until("errors", Duration::from_secs(5), async || {
        status.errors() >= 3
    })
    .await;
    assert!(!status.has_read());
    use tower::{Service, ServiceExt};
    let err = rr.ready().await.unwrap().call(()).await.unwrap_err();
    assert!(err.is::<resilience_core::Rejected>());
}
