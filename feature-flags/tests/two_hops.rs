//! Overrides travel over two hops on loopback: two axum services behind
//! `CorrelationLayer` + `FlagsLayer`, the first calling the second through a
//! hyper client wrapped in `PropagateContextLayer`.
#![cfg(feature = "axum")]

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use resilience_correlation::{CorrelationLayer, PropagateContextLayer};
use resilience_flags::{Flag, FlagSet, FlagStore, Flags, FlagsConfig, FlagsLayer};
use tower::{Layer, ServiceExt};

fn store() -> FlagStore {
    FlagStore::new(
        FlagSet::builder()
            .flag(Flag::boolean("new-checkout").rollout(0.0).overridable(true))
            .flag(Flag::boolean("payments-v2").rollout(0.0))
            .build()
            .unwrap(),
    )
}

fn flags_of(flags: &Flags) -> String {
    format!(
        "new-checkout={} payments-v2={}",
        flags.is_active("new-checkout"),
        flags.is_active("payments-v2")
    )
}

async fn back(flags: Flags) -> String {
    flags_of(&flags)
}

async fn front(State(next): State<String>, flags: Flags) -> Result<String, String> {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let client = PropagateContextLayer::new().layer(client);
    let req = http::Request::get(&next).body(Empty::new()).unwrap();
    let rsp = client.oneshot(req).await.map_err(|e| e.to_string())?;
    let body = rsp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(format!(
        "front: {} | back: {}",
        flags_of(&flags),
        String::from_utf8_lossy(&body)
    ))
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn start() -> SocketAddr {
    // The back end is internal: it trusts what its callers forward.
    let back_config = FlagsConfig::builder()
        .trust_overrides(|_| true)
        .build()
        .unwrap();
    let back = serve(
        Router::new()
            .route("/", get(back))
            .layer(FlagsLayer::with_config(store(), back_config))
            .layer(CorrelationLayer::new()),
    )
    .await;
    // The front trusts only staff traffic.
    let front_config = FlagsConfig::builder()
        .trust_overrides(|p| {
            p.headers
                .get("x-staff-token")
                .is_some_and(|v| v == "s3cret")
        })
        .build()
        .unwrap();
    serve(
        Router::new()
            .route("/", get(front))
            .with_state(format!("http://{back}/"))
            .layer(FlagsLayer::with_config(store(), front_config))
            .layer(CorrelationLayer::new()),
    )
    .await
}

async fn get_front(addr: SocketAddr, headers: &[(&str, &str)]) -> String {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::get(format!("http://{addr}/"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let rsp = client
        .request(req.body(Empty::new()).unwrap())
        .await
        .unwrap();
    assert!(rsp.status().is_success(), "{}", rsp.status());
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_override_reaches_the_second_hop() {
    let front = start().await;
    let body = get_front(
        front,
        &[
            ("x-staff-token", "s3cret"),
            ("x-flag-new-checkout", "1"),
            ("x-flag-payments-v2", "1"),
        ],
    )
    .await;
    assert_eq!(
        body,
        "front: new-checkout=true payments-v2=false | back: new-checkout=true payments-v2=false"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_override_goes_nowhere() {
    let front = start().await;
    let body = get_front(
        front,
        &[("x-flag-new-checkout", "1"), ("x-flag-payments-v2", "1")],
    )
    .await;
    assert_eq!(
        body,
        "front: new-checkout=false payments-v2=false | back: new-checkout=false payments-v2=false"
    );
    let body = get_front(
        front,
        &[("x-staff-token", "guess"), ("x-flag-new-checkout", "1")],
    )
    .await;
    assert!(body.starts_with("front: new-checkout=false"), "{body}");
    assert!(body.contains("back: new-checkout=false"), "{body}");
}

#[tokio::test]
async fn extractor_without_the_layer_is_a_server_error() {
    async fn optional(flags: Option<Flags>) -> String {
        format!("{}", flags.is_some())
    }
    let app = Router::new().route("/", get(optional));
    let rsp = app
        .oneshot(
            http::Request::get("/")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"false");

    let app = Router::new().route("/", get(back));
    let rsp = app
        .oneshot(
            http::Request::get("/")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(rsp.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
}
