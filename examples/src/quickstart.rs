//! The quickstart's two services: `shop` calls `inventory`.
//!
//! One correlation id crosses both, the deadline shrinks on the way, a 404
//! from `inventory` stays the caller's problem, and a hung `inventory` call
//! times out and degrades the page instead of hanging it.

use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use resilience_core::TimeoutLayer;
use resilience_correlation::{CorrelationLayer, RequestContext};
use tower::ServiceBuilder;
use tracing::Instrument;

use crate::{HttpClient, get_text};

/// `inventory`: answers how many of an item are in stock. Item `slow` hangs.
pub fn inventory() -> Router {
    async fn stock(Path(item): Path<String>) -> Result<String, StatusCode> {
        lookup(item)
            .instrument(tracing::info_span!("inventory"))
            .await
    }
    async fn lookup(item: String) -> Result<String, StatusCode> {
        let ctx = RequestContext::current().expect("inside CorrelationLayer");
        let left = ctx.deadline().map(|d| d.remaining().as_millis());
        tracing::info!(item, deadline_left_ms = ?left, priority = %ctx.priority(), "stock lookup");
        match item.as_str() {
            "slow" => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok("0".into())
            }
            "cd" => Ok("12".into()),
            _ => {
                tracing::warn!("unknown item");
                Err(StatusCode::NOT_FOUND)
            }
        }
    }
    Router::new()
        .route("/stock/{item}", get(stock))
        .layer(CorrelationLayer::new())
}

/// `shop`: renders an item page, asking `inventory` for the stock. Its own
/// callers get a 504 if the whole request takes more than 1 s.
pub fn shop(client: HttpClient, inventory: String) -> Router {
    async fn page(
        State((client, inventory)): State<(HttpClient, String)>,
        Path(item): Path<String>,
    ) -> (StatusCode, String) {
        render(client, inventory, item)
            .instrument(tracing::info_span!("shop"))
            .await
    }
    async fn render(client: HttpClient, inventory: String, item: String) -> (StatusCode, String) {
        tracing::info!(item, "rendering page");
        // No id passed by hand: the client layer takes it from the context.
        match get_text(&client, &format!("{inventory}/stock/{item}")).await {
            Ok((StatusCode::OK, n)) => (StatusCode::OK, format!("{item}: {n} in stock")),
            Ok((status, _)) => {
                tracing::warn!(%status, "inventory refused the request");
                (status, format!("{item}: not sold here"))
            }
            Err(err) => {
                tracing::warn!(error = %err, "inventory call failed");
                (StatusCode::OK, format!("{item}: stock unknown right now"))
            }
        }
    }
    Router::new()
        .route("/item/{item}", get(page))
        .with_state((client, inventory))
        .layer(
            ServiceBuilder::new()
                .layer(CorrelationLayer::new())
                .layer(HandleErrorLayer::new(resilience_core::http::handle_error))
                .layer(TimeoutLayer::new(Duration::from_secs(1))),
        )
}
