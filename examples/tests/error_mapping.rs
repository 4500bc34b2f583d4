//! One `HandleErrorLayer` function maps the family's errors to responses in
//! axum: a timeout is a 504, a refusal a 503 or 429 with `Retry-After`, and
//! nothing else leaks.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::routing::get;
use http::Request;
use resilience_core::{Rejected, RejectionKind, TimeoutLayer};
use tower::{ServiceBuilder, ServiceExt};

async fn body_text(rsp: axum::response::Response) -> String {
    let bytes = axum::body::to_bytes(rsp.into_body(), 1024).await.unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_slow_handler_becomes_a_504() {
    let app = Router::new()
        .route(
            "/",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                "too late"
            }),
        )
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(resilience_core::http::handle_error))
                .layer(TimeoutLayer::new(Duration::from_millis(300))),
        );
    let start = tokio::time::Instant::now();
    let rsp = app
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(rsp.status(), 504);
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    assert_eq!(body_text(rsp).await, "request timed out\n");
}

#[tokio::test]
async fn refusals_carry_retry_after() {
    for (kind, status) in [
        (RejectionKind::Overloaded, 503),
        (RejectionKind::Throttled, 429),
    ] {
        let refuse = ServiceBuilder::new()
            .layer(HandleErrorLayer::new(resilience_core::http::handle_error))
            .filter(move |_: Request<Body>| {
                Err::<Request<Body>, _>(
                    Rejected::new(kind, "").with_retry_after(Duration::from_millis(1500)),
                )
            });
        let app = Router::new()
            .route("/", get(|| async { "ok" }))
            .layer(refuse);
        let rsp = app
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(rsp.status(), status);
        assert_eq!(rsp.headers()["retry-after"], "2");
    }
}
