//! The quickstart's services on loopback: the id crosses both, 4xx stays the
//! caller's, and the page degrades instead of failing.

use std::time::Duration;

use resilience_examples::quickstart::{inventory, shop};
use resilience_examples::{get_text, http_client, serve};
use tower::ServiceExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shop_calls_inventory_with_the_same_id() {
    let inv = serve(inventory()).await.unwrap();
    let shop_addr = serve(shop(
        http_client(Duration::from_millis(500)),
        format!("http://{inv}"),
    ))
    .await
    .unwrap();

    let plain = http_client(Duration::from_secs(5));
    let (status, body) = get_text(&plain, &format!("http://{shop_addr}/item/cd"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "cd: 12 in stock");

    let req = http::Request::get(format!("http://{shop_addr}/item/vinyl"))
        .header("x-correlation-id", "124-xyz")
        .body(Default::default())
        .unwrap();
    let rsp = plain.clone().oneshot(req).await.unwrap();
    assert_eq!(
        rsp.status(),
        404,
        "inventory's 404 is passed on, not turned into a 5xx"
    );
    assert_eq!(rsp.headers()["x-correlation-id"], "124-xyz");

    // Inventory seen directly: it echoes the id it was given.
    let req = http::Request::get(format!("http://{inv}/stock/cd"))
        .header("x-correlation-id", "direct-1")
        .body(Default::default())
        .unwrap();
    let rsp = plain.oneshot(req).await.unwrap();
    assert_eq!(rsp.headers()["x-correlation-id"], "direct-1");
}
