//! `BoundedQueueLayer::default()` is the layer of the default configuration.

use resilience_bounded_queue::{BoundedQueueConfig, BoundedQueueLayer};
use resilience_core::BoxError;
use tower::{Layer, ServiceExt, service_fn};

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn default_layer_uses_the_default_config() {
    let layer = BoundedQueueLayer::default();
    let config = BoundedQueueConfig::default();
    let handle = layer.handle();
    assert_eq!(handle.name(), config.name());
    assert_eq!(handle.snapshot().capacity, config.capacity());
    let svc = layer.layer(service_fn(|_: http::Request<()>| async {
        Ok::<_, BoxError>("served")
    }));
    assert_eq!(svc.oneshot(http::Request::new(())).await.unwrap(), "served");
    assert_eq!(handle.snapshot().in_service, 0);
}
