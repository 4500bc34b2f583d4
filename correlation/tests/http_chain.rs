//! Three axum services on loopback, edge -> A -> B, each behind
//! `CorrelationLayer`, calling the next through `PropagateContextLayer`.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use resilience_core::{Priority, PriorityPolicy, TimeoutLayer};
use resilience_correlation::{CorrelationConfig, CorrelationLayer, PropagateContextLayer};
use support::{Log, assert_chain, assert_deadline_shrinks};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

type HttpClient = BoxCloneSyncService<
    http::Request<Empty<Bytes>>,
    http::Response<hyper::body::Incoming>,
    resilience_core::BoxError,
>;

#[derive(Clone)]
struct Hop {
    name: &'static str,
    log: Log,
    next: Option<(HttpClient, String)>,
}

fn client() -> HttpClient {
    let hyper: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let svc = ServiceBuilder::new()
        .layer(PropagateContextLayer::new())
        .layer(TimeoutLayer::new(Duration::from_secs(5)))
        .service(hyper);
    BoxCloneSyncService::new(svc)
}

async fn handler(State(hop): State<Hop>, headers: HeaderMap) -> Result<String, String> {
    let wire = headers
        .get("x-deadline-ms")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    hop.log.record(hop.name, wire);
    tracing::info!("hop {} handling", hop.name);
    match hop.next {
        None => Ok(format!("{} done", hop.name)),
        Some((client, url)) => {
            let req = http::Request::get(url).body(Empty::new()).unwrap();
            let rsp = client.oneshot(req).await.map_err(|e| e.to_string())?;
            let body = rsp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok(format!(
                "{} <- {}",
                hop.name,
                String::from_utf8_lossy(&body)
            ))
        }
    }
}

fn app(hop: Hop, config: CorrelationConfig) -> Router {
    Router::new()
        .route("/", get(handler))
        .with_state(hop)
        .layer(CorrelationLayer::with_config(config))
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Starts B, then A calling B, then the edge calling A; returns the edge.
async fn chain(log: &Log, config: impl Fn() -> CorrelationConfig) -> SocketAddr {
    let b = serve(app(
        Hop {
            name: "b",
            log: log.clone(),
            next: None,
        },
        config(),
    ))
    .await;
    let a = serve(app(
        Hop {
            name: "a",
            log: log.clone(),
            next: Some((client(), format!("http://{b}/"))),
        },
        config(),
    ))
    .await;
    serve(app(
        Hop {
            name: "edge",
            log: log.clone(),
            next: Some((client(), format!("http://{a}/"))),
        },
        config(),
    ))
    .await
}

async fn get_edge(edge: SocketAddr, headers: &[(&str, &str)]) -> http::Response<Bytes> {
    let plain: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::get(format!("http://{edge}/"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let rsp = plain
        .request(req.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let (parts, body) = rsp.into_parts();
    http::Response::from_parts(parts, body.collect().await.unwrap().to_bytes())
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_id_trace_and_priority_across_three_hops() {
    let log = Log::default();
    let edge = chain(&log, CorrelationConfig::default).await;

    let rsp = get_edge(
        edge,
        &[
            ("x-correlation-id", "123-gda"),
            ("traceparent", TRACEPARENT),
            ("x-priority", "critical-plus"), // untrusted: capped at critical
            ("x-deadline-ms", "2000"),
        ],
    )
    .await;
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.body(), "edge <- a <- b done");
    assert_eq!(rsp.headers()["x-correlation-id"], "123-gda");

    let seen = log.take();
    assert_chain(
        &seen,
        Some("123-gda"),
        Some("00f067aa0ba902b7"),
        Priority::Critical,
    );
    assert_eq!(seen[0].trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_deadline_shrinks(&seen, 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_id_and_lowered_priority_travel() {
    let log = Log::default();
    let edge = chain(&log, CorrelationConfig::default).await;

    let rsp = get_edge(edge, &[("x-priority", "sheddable")]).await;
    assert_eq!(rsp.status(), 200);
    let seen = log.take();
    assert_chain(&seen, None, None, Priority::Sheddable);
    assert_eq!(rsp.headers()["x-correlation-id"], seen[0].id.as_str());
    assert!(
        seen.iter().all(|s| s.wire_deadline.is_none()),
        "no deadline was set"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_edge_may_raise_priority_but_downstream_caps_it_again() {
    // The edge trusts its internal gateway; A and B trust nobody.
    let log = Log::default();
    let b = serve(app(
        Hop {
            name: "b",
            log: log.clone(),
            next: None,
        },
        CorrelationConfig::default(),
    ))
    .await;
    let a = serve(app(
        Hop {
            name: "a",
            log: log.clone(),
            next: Some((client(), format!("http://{b}/"))),
        },
        CorrelationConfig::default(),
    ))
    .await;
    let trusting = CorrelationConfig::builder()
        .trust(|head| head.headers().get("x-internal-gateway").is_some())
        .build()
        .unwrap();
    let edge = serve(app(
        Hop {
            name: "edge",
            log: log.clone(),
            next: Some((client(), format!("http://{a}/"))),
        },
        trusting,
    ))
    .await;

    get_edge(
        edge,
        &[("x-priority", "critical-plus"), ("x-internal-gateway", "1")],
    )
    .await;
    let seen = log.take();
    assert_eq!(seen[0].priority, Priority::CriticalPlus);
    assert_eq!(seen[1].priority, Priority::Critical);
    assert_eq!(seen[2].priority, Priority::Critical);

    // Without the trusted marker, even the edge caps it.
    get_edge(edge, &[("x-priority", "critical-plus")]).await;
    assert_eq!(log.take()[0].priority, Priority::Critical);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stricter_policy_caps_lower() {
    let log = Log::default();
    let strict = || {
        CorrelationConfig::builder()
            .priority_policy(PriorityPolicy::new().untrusted_ceiling(Priority::SheddablePlus))
            .build()
            .unwrap()
    };
    let edge = chain(&log, strict).await;
    get_edge(edge, &[("x-priority", "critical")]).await;
    let seen = log.take();
    assert!(
        seen.iter().all(|s| s.priority == Priority::SheddablePlus),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_inbound_values_are_replaced_not_echoed() {
    let log = Log::default();
    let edge = chain(&log, CorrelationConfig::default).await;
    let long = "a".repeat(10 * 1024);
    let cases: Vec<(&str, String)> = vec![
        ("x-correlation-id", long.clone()),
        ("x-correlation-id", "evil id with spaces".into()),
        ("x-correlation-id", "<script>".into()),
        ("traceparent", "00-zzzz-00f067aa0ba902b7-01".into()),
        ("x-priority", "urgent".into()),
        ("x-deadline-ms", "-5".into()),
        ("x-deadline-ms", "99999999999999999999".into()),
    ];
    for (name, value) in &cases {
        let rsp = get_edge(edge, &[(name, value.as_str())]).await;
        assert_eq!(rsp.status(), 200, "{name}: {value:.40}");
        let echoed = rsp.headers()["x-correlation-id"].to_str().unwrap();
        assert_ne!(echoed, value, "never echoed");
        assert_eq!(echoed.len(), 36, "replaced by a generated id");
        let seen = log.take();
        assert_chain(&seen, Some(echoed), None, Priority::Critical);
        assert!(seen.iter().all(|s| s.wire_deadline.is_none()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_injection_attempts_do_not_crash_the_server() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let log = Log::default();
    let edge = chain(&log, CorrelationConfig::default).await;
    for raw in [
        &b"GET / HTTP/1.1\r\nhost: x\r\nx-correlation-id: ab\rcd\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nhost: x\r\nx-correlation-id: ab\ncd: x\r\nconnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: x\r\nx-correlation-id: \xff\xfe\r\nconnection: close\r\n\r\n",
    ] {
        let mut s = tokio::net::TcpStream::connect(edge).await.unwrap();
        s.write_all(raw).await.unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        let text = String::from_utf8_lossy(&buf);
        assert!(
            !text.contains("ab\rcd") && !text.contains("\u{fffd}\u{fffd}"),
            "{text}"
        );
    }
    // The server still works.
    let rsp = get_edge(edge, &[("x-correlation-id", "still-ok")]).await;
    assert_eq!(rsp.headers()["x-correlation-id"], "still-ok");
}
