//! Reference service 2 on loopback: a shop ordering from three inventory
//! instances found through discovery. A scripted scenario: all healthy; the
//! caller's mistakes (4xx) count against nobody; one instance answers 500
//! and is ejected; one hangs and is cut off by the timeout; one fails its
//! health check; a fourth instance joins; every instance fails, their
//! breakers open and the shop answers 503 at once; everything recovers. A
//! synthetic customer checks all along that people can order CDs. Each
//! step prints the answers, which instance served them, and each
//! instance's state and breaker; the log lines of an order, in the shop and in the
//! instance, carry the order's correlation id.
//!
//! Run: `cargo run -p resilience-examples --bin shop`, or with `--grpc`
//! to have the instances serve, and the shop call, `inventory.v1` over gRPC
//! (a failing instance answers `UNAVAILABLE` instead of `500`, a draining
//! one `NOT_SERVING` to `grpc.health.v1` checks instead of `503` to
//! `GET /health`).

use std::time::Duration;

use resilience_circuit_breaker::CircuitState;
use resilience_core::BoxError;
use resilience_discovery::EndpointState;
use resilience_examples::grpc::GrpcServerSettings;
use resilience_examples::shop::{
    Demo, Inventory, Mode, OrderResponse, ShopSettings, SyntheticMonitor, client_config,
};
use tokio::time::Instant;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    resilience_examples::init_logging("demo");
    let started = Instant::now();
    let settings = ShopSettings::DEMO;
    let grpc = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--grpc") => true,
        Some(other) => return Err(format!("unknown argument {other:?} (try --grpc)").into()),
    };
    // The shop's client from its file (examples/config/shop.toml), which
    // holds the values of ShopSettings::DEMO (printed below).
    let mut demo = if grpc {
        Demo::start_grpc(client_config(), &GrpcServerSettings::DEMO).await?
    } else {
        Demo::start(client_config()).await?
    };
    let (failure, health) = if grpc {
        ("UNAVAILABLE", "grpc.health.v1 answers NOT_SERVING")
    } else {
        ("500", "/health answers 503")
    };
    println!(
        "shop on {} (inventory over {}); inventory timeout {:?}, each instance's breaker decides after {} calls and opens for {:?}, \
         health checks every {:?}, ejection after {} failures in a row for {:?}\n",
        demo.url,
        if grpc { "gRPC" } else { "HTTP" },
        settings.timeout,
        settings.window,
        settings.open_for,
        settings.health_interval,
        settings.ejection_failures,
        settings.ejection_time
    );
    let monitor = demo.monitor(Duration::from_millis(200));
    // The breakers of the three instances (inventory-4 joins later).
    let mut transitions: Vec<_> = demo
        .shop
        .instance_breakers()
        .into_iter()
        .map(|(name, b)| (name, b.subscribe()))
        .collect();

    title("1. all healthy: orders go round robin");
    for n in 1..=3 {
        show(&demo.order("cd", "DE", &format!("demo-1.{n}")).await?);
    }
    status(&demo, &monitor);

    title("2. the caller's mistakes: 400 and 404 are passed on and count against nobody");
    show(&demo.order("cd", "XX", "123-gda").await?);
    show(&demo.order("vinyl", "DE", "124-gda").await?);
    for n in 1..=10 {
        let (item, country) = if n % 2 == 0 {
            ("vinyl", "DE")
        } else {
            ("cd", "ZZ")
        };
        demo.order(item, country, &format!("demo-2.{n}")).await?;
    }
    println!("   ... and 10 more: the breakers count them as successes, nobody is ejected");
    status(&demo, &monitor);

    title(&format!(
        "3. inventory-2 answers {failure}: it is ejected, the others take its orders"
    ));
    demo.instance("inventory-2").set_mode(Mode::Failing);
    let mut n = 0;
    while demo.shop.instance_state("inventory-2") != Some(EndpointState::Ejected) && n < 20 {
        n += 1;
        show(&demo.order("cd", "DE", &format!("demo-3.{n}")).await?);
    }
    status(&demo, &monitor);
    let before = demo.instance("inventory-2").orders();
    for m in 1..=3 {
        show(&demo.order("cd", "DE", &format!("demo-3.{}", n + m)).await?);
    }
    println!(
        "   orders that reached inventory-2: {before} before, {} after\n",
        demo.instance("inventory-2").orders()
    );
    demo.instance("inventory-2").set_mode(Mode::Healthy);
    // The ejection ends by itself; the next pick after it brings it back.
    tokio::time::sleep(settings.ejection_time).await;

    title(
        "4. inventory-3 hangs: the timeout cuts each order off and counts it, then it is ejected",
    );
    demo.instance("inventory-3").set_mode(Mode::Hanging);
    let mut n = 0;
    while demo.shop.instance_state("inventory-3") != Some(EndpointState::Ejected) && n < 20 {
        n += 1;
        show(&demo.order("cd", "DE", &format!("demo-4.{n}")).await?);
    }
    show(&demo.order("cd", "DE", &format!("demo-4.{}", n + 1)).await?);
    status(&demo, &monitor);
    demo.instance("inventory-3").set_mode(Mode::Healthy);
    tokio::time::sleep(settings.ejection_time).await;

    title(&format!(
        "5. inventory-1's {health}: its health check takes it out of rotation"
    ));
    demo.instance("inventory-1").set_mode(Mode::Draining);
    let took = wait_for("inventory-1 is unhealthy", || {
        demo.shop.instance_state("inventory-1") == Some(EndpointState::Unhealthy)
    })
    .await?;
    println!(
        "   unhealthy after {} ms, without a failed order",
        took.as_millis()
    );
    for n in 1..=3 {
        show(&demo.order("cd", "DE", &format!("demo-5.{n}")).await?);
    }
    status(&demo, &monitor);
    demo.instance("inventory-1").set_mode(Mode::Healthy);
    wait_for("every instance is healthy", || {
        demo.shop.instances_in(EndpointState::Healthy) == Demo::INSTANCES
    })
    .await?;

    title("6. elasticity: inventory-4 starts and is inserted into the balancer");
    let fourth = Inventory::new("inventory-4");
    demo.add_instance(fourth.clone()).await?;
    println!("   just inserted: {}", demo.shop.status());
    let took = wait_for("inventory-4 is healthy", || {
        demo.shop.instance_state("inventory-4") == Some(EndpointState::Healthy)
    })
    .await?;
    println!("   first health check passed after {} ms", took.as_millis());
    for n in 1..=4 {
        show(&demo.order("cd", "DE", &format!("demo-6.{n}")).await?);
    }
    println!("   orders that reached inventory-4: {}", fourth.orders());
    status(&demo, &monitor);

    title(&format!(
        "7. every instance answers {failure}: their breakers open, the shop answers 503 at once"
    ));
    for inventory in demo.instances() {
        inventory.set_mode(Mode::Failing);
    }
    // Until the shop has no instance left to call (every circuit open, or
    // the instance ejected) and refuses at once.
    let mut n = 0;
    while n < 40 {
        n += 1;
        let order = demo.order("cd", "DE", &format!("demo-7.{n}")).await?;
        show(&order);
        if matches!(
            order.degraded.as_deref(),
            Some("inventory=circuit open" | "inventory=no healthy instance")
        ) {
            break;
        }
    }
    for m in 1..=2 {
        show(&demo.order("cd", "DE", &format!("demo-7.{}", n + m)).await?);
    }
    println!(
        "   the shop itself is up: GET /health -> {}",
        demo.shop_health().await?.as_u16()
    );
    wait_for("the synthetic check is red", || {
        monitor.latest().is_some_and(|c| !c.passed)
    })
    .await?;
    status(&demo, &monitor);

    title("8. inventory recovers: each breaker lets one probe through, closes, and CDs sell again");
    for inventory in demo.instances() {
        inventory.set_mode(Mode::Healthy);
    }
    let took = wait_for("the synthetic check is green", || {
        demo.shop
            .instance_breakers()
            .iter()
            .all(|(_, b)| b.state() == CircuitState::Closed)
            && monitor.latest().is_some_and(|c| c.passed)
    })
    .await?;
    println!("   green again after {} ms", took.as_millis());
    show(&demo.order("cd", "DE", "demo-8.1").await?);
    status(&demo, &monitor);

    println!("breaker transitions:");
    for (name, events) in &mut transitions {
        while let Ok(t) = events.try_recv() {
            println!("   {name}: {} -> {} ({})", t.from(), t.to(), t.reason());
        }
    }
    println!("synthetic checks, when the verdict changed:");
    let mut last = None;
    for check in monitor.history() {
        if last != Some(check.passed) {
            println!("   {check}");
            last = Some(check.passed);
        }
    }
    println!("\ndone in {} ms", started.elapsed().as_millis());
    Ok(())
}

fn title(text: &str) {
    println!("== {text}");
}

fn show(order: &OrderResponse) {
    println!(
        "   [{}] -> {} in {} ms by {}: {}{}",
        order.correlation_id.as_deref().unwrap_or("-"),
        order.status.as_u16(),
        order.elapsed.as_millis(),
        order.served_by.as_deref().unwrap_or("-"),
        order.body.trim_end(),
        order
            .retry_after
            .as_deref()
            .map(|s| format!(" (Retry-After: {s})"))
            .unwrap_or_default()
    );
}

fn status(demo: &Demo, monitor: &SyntheticMonitor) {
    println!("   {}", demo.shop.status());
    println!("   {}\n", monitor.status());
}

/// Polls `check` every 10 ms until it holds; gives up after 10 s.
async fn wait_for(what: &str, mut check: impl FnMut() -> bool) -> Result<Duration, BoxError> {
    let started = Instant::now();
    while !check() {
        if started.elapsed() > Duration::from_secs(10) {
            return Err(format!("gave up waiting until {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(started.elapsed())
}
