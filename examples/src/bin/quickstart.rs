//! Two services on loopback, `shop` -> `inventory`, showing one correlation
//! id crossing both, with the deadline shrinking on the way and a timeout
//! turned into a degraded answer instead of a hung page.
//!
//! Run: `cargo run -p resilience-examples --bin quickstart`

use std::time::Duration;

use resilience_examples::quickstart::{inventory, shop};
use resilience_examples::{http_client, serve};

#[tokio::main]
async fn main() -> Result<(), resilience_core::BoxError> {
    resilience_examples::init_logging("quickstart");
    let inventory_addr = serve(inventory()).await?;
    let client = http_client(Duration::from_millis(500));
    let shop_addr = serve(shop(client, format!("http://{inventory_addr}"))).await?;
    println!("inventory on {inventory_addr}, shop on {shop_addr}\n");

    // The edge's caller: a plain client with an id and a 900 ms budget.
    let caller = resilience_examples::http_client(Duration::from_secs(5));
    for (id, item) in [("123-gda", "cd"), ("124-xyz", "vinyl"), ("125-slo", "slow")] {
        let req = http::Request::get(format!("http://{shop_addr}/item/{item}"))
            .header("x-correlation-id", id)
            .header("x-deadline-ms", "900")
            .body(Default::default())?;
        let rsp = tower::ServiceExt::oneshot(caller.clone(), req).await?;
        let echoed = rsp.headers().get("x-correlation-id").cloned();
        let status = rsp.status();
        let body = http_body_util::BodyExt::collect(rsp.into_body())
            .await?
            .to_bytes();
        println!(
            "-> GET /item/{item} [{id}]: {status} {:?} (id returned: {:?})\n",
            String::from_utf8_lossy(&body),
            echoed
        );
    }
    Ok(())
}
