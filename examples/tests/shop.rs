//! Reference service 2 over real loopback HTTP: a shop ordering from
//! several inventory instances through discovery, the standard client
//! stack (a breaker per instance, a timeout per try). 4xx counts against
//! nobody; 5xx and timeouts count against the instance, eject it and, when
//! every instance fails, open every breaker; the correlation id reaches the
//! instance that served; a new instance takes load; the synthetic check
//! turns red and green.
//!
//! Real sockets, so real time: health checks every 50 ms, and every wait
//! for a state is a bounded poll, never a fixed sleep.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use resilience::client::ClientConfig;
use resilience_circuit_breaker::{CircuitBreakerSnapshot, CircuitState};
use resilience_discovery::EndpointState;
use resilience_examples::shop::{
    Demo, Inventory, Mode, OrderResponse, ShopSettings, client_config,
};
use tokio::time::Instant;

/// Settings for tests: a breaker that decides after 6 calls and never
/// half-opens during a test, ejections that last the whole test. Tests
/// where no call should time out use a 2 s timeout: far above a loopback
/// call, even on a loaded machine.
fn settings(timeout_ms: u64) -> ShopSettings {
    ShopSettings {
        timeout: Duration::from_millis(timeout_ms),
        attempts: 3,
        window: 6,
        open_for: Duration::from_secs(30),
        health_interval: Duration::from_millis(50),
        health_timeout: Duration::from_secs(1),
        ejection_failures: 3,
        ejection_time: Duration::from_secs(30),
    }
}

fn config(settings: ShopSettings) -> ClientConfig {
    settings.client_config().unwrap()
}

/// The breaker of the instance called `name`, as it is now.
fn breaker(demo: &Demo, name: &str) -> CircuitBreakerSnapshot {
    demo.shop
        .breaker_of(name)
        .unwrap_or_else(|| panic!("no breaker for {name}: {}", demo.shop.status()))
        .snapshot()
}

/// Failures in the windows of every instance's breaker.
fn failures(demo: &Demo) -> u64 {
    let snapshot = demo.shop.breakers().unwrap().snapshot();
    snapshot.iter().map(|(_, b)| b.failures()).sum()
}

/// Polls `check` every 10 ms until it holds; fails the test after 10 s.
async fn wait_until<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    resilience_examples::wait_until(what, Duration::from_millis(10), check).await;
}

/// Places `n` orders for a CD, one after the other, and counts who served
/// them; every order must be placed.
async fn orders_placed(demo: &Demo, n: usize, id: &str) -> BTreeMap<String, usize> {
    let mut served = BTreeMap::new();
    for i in 1..=n {
        let order = demo.order("cd", "DE", &format!("{id}-{i}")).await.unwrap();
        assert_eq!(order.status, 200, "{}", order.body);
        *served.entry(order.served_by.unwrap()).or_default() += 1;
    }
    served
}

fn spread(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_go_round_robin_over_the_instances() {
    let demo = Demo::start(config(settings(2_000))).await.unwrap();

    let order = demo.order("cd", "de", "rr-0").await.unwrap();
    assert_eq!(order.status, 200);
    assert_eq!(order.body, "order placed: 1 cd to DE\n");

    let served = orders_placed(&demo, 6, "rr").await;
    assert_eq!(
        served.values().copied().collect::<Vec<_>>(),
        [2, 2, 2],
        "{served:?}"
    );
    for inventory in demo.instances() {
        assert!(inventory.health_checks() >= 1, "{}", inventory.name());
    }
    let total: u64 = demo.instances().iter().map(Inventory::orders).sum();
    assert_eq!(total, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_mistakes_count_against_nobody() {
    let demo = Demo::start(config(settings(2_000))).await.unwrap();

    for n in 1..=30 {
        let id = format!("4xx-{n}");
        let order = if n % 2 == 0 {
            let order = demo.order("vinyl", "DE", &id).await.unwrap();
            assert_eq!(order.status, 404, "{}", order.body);
            assert_eq!(order.body, "no such item: vinyl\n");
            order
        } else {
            let order = demo.order("cd", "XX", &id).await.unwrap();
            assert_eq!(order.status, 400, "{}", order.body);
            assert_eq!(order.body, "cannot ship to XX: invalid country code\n");
            order
        };
        assert!(order.served_by.is_some(), "an instance answered");
        assert_eq!(order.degraded, None, "a 4xx is not a degradation");
    }

    // Recorded as successes: a full window per instance, no failure, no
    // instance ejected.
    for inventory in demo.instances() {
        let s = breaker(&demo, inventory.name());
        assert_eq!(
            (s.state(), s.calls(), s.failures()),
            (CircuitState::Closed, 6, 0),
            "{}",
            inventory.name()
        );
    }
    assert_eq!(demo.shop.instances_in(EndpointState::Healthy), 3);
    for inventory in demo.instances() {
        assert_eq!(inventory.orders(), 10, "{}", inventory.name());
    }
    orders_placed(&demo, 3, "4xx-then-ok").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_answering_500_is_ejected_and_its_orders_are_tried_on_another() {
    let demo = Demo::start(config(settings(2_000))).await.unwrap();
    let failing = demo.instance("inventory-2");
    failing.set_mode(Mode::Failing);

    // Nine orders: none fails. Each one inventory-2 gets answers 500 and is
    // tried again on another instance, with the same order id (its
    // `Idempotency-Key`); the third failure in a row ejects it.
    for n in 1..=9 {
        let id = format!("500-{n}");
        let order = demo.order("cd", "DE", &id).await.unwrap();
        assert_eq!(order.status, 200, "{order:?}");
        let served_by = order.served_by.unwrap();
        assert_ne!(served_by, "inventory-2");
        let seen = demo.instance(&served_by).seen(&id).unwrap();
        assert_eq!(seen.order_id.as_deref(), Some(id.as_str()));
        if let Some(tried) = failing.seen(&id) {
            assert_eq!(tried.order_id.as_deref(), Some(id.as_str()));
        }
    }
    assert_eq!(
        demo.shop.instance_state("inventory-2"),
        Some(EndpointState::Ejected)
    );
    assert_eq!(failing.orders(), 3);
    assert_eq!(demo.shop.retry().snapshot().retries_total(), 3);
    // Its own breaker counted the three failures (under its minimum of 6
    // calls: closed); the others' saw none.
    let s = breaker(&demo, "inventory-2");
    assert_eq!((s.state(), s.failures()), (CircuitState::Closed, 3));
    assert_eq!(failures(&demo), 3);

    let served = orders_placed(&demo, 6, "500-after").await;
    assert!(!served.contains_key("inventory-2"), "{served:?}");
    assert_eq!(failing.orders(), 3, "an ejected instance gets no orders");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_retries_an_instance_answering_500_fails_its_orders_until_ejected() {
    let settings = ShopSettings {
        attempts: 1,
        ..settings(2_000)
    };
    let demo = Demo::start(config(settings)).await.unwrap();
    let failing = demo.instance("inventory-2");
    failing.set_mode(Mode::Failing);

    // Nine orders, three per instance: inventory-2's three fail, the third
    // ejects it.
    let mut failed = 0;
    for n in 1..=9 {
        let order = demo.order("cd", "DE", &format!("500-{n}")).await.unwrap();
        if order.status == 503 {
            failed += 1;
            assert_eq!(order.served_by.as_deref(), Some("inventory-2"));
            assert_eq!(
                order.degraded.as_deref(),
                Some("inventory=error (HTTP 500)")
            );
            assert_eq!(order.retry_after.as_deref(), Some("1"));
            assert!(
                order.body.starts_with("orders are paused"),
                "{}",
                order.body
            );
        } else {
            assert_eq!(order.status, 200, "{}", order.body);
        }
    }
    assert_eq!(failed, 3);
    assert_eq!(
        demo.shop.instance_state("inventory-2"),
        Some(EndpointState::Ejected)
    );
    assert_eq!(failing.orders(), 3);
    // Counted by inventory-2's own breaker (closed: under its minimum of 6
    // calls), by no other.
    let s = breaker(&demo, "inventory-2");
    assert_eq!((s.state(), s.failures()), (CircuitState::Closed, 3));
    assert_eq!(failures(&demo), 3);

    let served = orders_placed(&demo, 6, "500-after").await;
    assert!(!served.contains_key("inventory-2"), "{served:?}");
    assert_eq!(failing.orders(), 3, "an ejected instance gets no orders");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_failing_its_health_check_gets_no_orders_until_it_passes_again() {
    let demo = Demo::start(config(settings(2_000))).await.unwrap();
    let draining = demo.instance("inventory-1");
    draining.set_mode(Mode::Draining);
    let shop = &demo.shop;
    wait_until("inventory-1 is unhealthy", || async move {
        shop.instance_state("inventory-1") == Some(EndpointState::Unhealthy)
    })
    .await;

    let before = draining.orders();
    let served = orders_placed(&demo, 6, "draining").await;
    assert!(!served.contains_key("inventory-1"), "{served:?}");
    assert_eq!(draining.orders(), before);
    assert_eq!(failures(&demo), 0, "no order failed");

    draining.set_mode(Mode::Healthy);
    wait_until("inventory-1 is healthy", || async move {
        shop.instance_state("inventory-1") == Some(EndpointState::Healthy)
    })
    .await;
    let served = orders_placed(&demo, 6, "back").await;
    assert_eq!(
        served,
        spread(&[("inventory-1", 2), ("inventory-2", 2), ("inventory-3", 2)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_instance_is_cut_off_by_the_timeout_counted_and_ejected() {
    let timeout = Duration::from_secs(1);
    let demo = Demo::start(config(settings(1_000))).await.unwrap();
    let hanging = demo.instance("inventory-3");
    hanging.set_mode(Mode::Hanging);

    // Each order inventory-3 takes costs the timeout, then is served by
    // another instance: no order fails.
    let mut timed_out = 0;
    for n in 1..=9 {
        let id = format!("hang-{n}");
        let order = demo.order("cd", "DE", &id).await.unwrap();
        assert_eq!(order.status, 200, "{order:?}");
        assert_ne!(order.served_by.as_deref(), Some("inventory-3"));
        if hanging.saw_correlation_id(&id) {
            timed_out += 1;
            assert!(order.elapsed >= timeout, "{:?}", order.elapsed);
            // Generous margin: without the timeout the order would hang.
            assert!(
                order.elapsed < timeout + Duration::from_secs(2),
                "{:?}",
                order.elapsed
            );
        }
    }
    assert_eq!(timed_out, 3);
    assert_eq!(demo.shop.retry().snapshot().retries_total(), 3);
    assert_eq!(hanging.orders(), 3);
    assert_eq!(
        demo.shop.instance_state("inventory-3"),
        Some(EndpointState::Ejected),
        "three timeouts in a row eject, like three 500s"
    );
    // Counted as failures by its breaker too (closed: under its minimum of
    // 6 calls), by no other.
    let s = breaker(&demo, "inventory-3");
    assert_eq!(
        (s.state(), s.failures()),
        (CircuitState::Closed, 3),
        "{}",
        demo.shop.status()
    );
    assert_eq!(failures(&demo), 3);

    let served = orders_placed(&demo, 6, "hang-after").await;
    assert!(!served.contains_key("inventory-3"), "{served:?}");
    assert_eq!(hanging.orders(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_instance_down_the_shop_answers_503_at_once() {
    let timeout = Duration::from_secs(1);
    // One try per order: the breaker's story, without retries in the way.
    let settings = ShopSettings {
        attempts: 1,
        ..settings(1_000)
    };
    let demo = Arc::new(Demo::start(config(settings)).await.unwrap());
    for inventory in demo.instances() {
        inventory.set_mode(Mode::Hanging);
    }

    // Eighteen orders at once, six per instance: eighteen timeouts fill
    // every instance's breaker window, and cost one timeout, not eighteen.
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..18 {
        let demo = demo.clone();
        tasks.spawn(async move { demo.order("cd", "DE", &format!("down-{n}")).await });
    }
    let orders: Vec<OrderResponse> = tasks
        .join_all()
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(started.elapsed() < timeout * 3, "{:?}", started.elapsed());
    for order in &orders {
        assert_eq!(order.status, 503);
        assert_eq!(order.degraded.as_deref(), Some("inventory=timeout"));
    }
    for inventory in demo.instances() {
        assert_eq!(
            breaker(&demo, inventory.name()).state(),
            CircuitState::Open,
            "{}",
            demo.shop.status()
        );
    }

    // Open: no call, no wait. The shop answers at once and says when to
    // come back; it is up itself.
    for n in 1..=5 {
        let order = demo.order("cd", "DE", &format!("open-{n}")).await.unwrap();
        assert_eq!(order.status, 503);
        assert_eq!(order.degraded.as_deref(), Some("inventory=circuit open"));
        assert!(
            order.body.contains("inventory unavailable (circuit open)"),
            "{}",
            order.body
        );
        let retry_after: u64 = order.retry_after.as_deref().unwrap().parse().unwrap();
        assert!((1..=30).contains(&retry_after), "{retry_after}");
        assert!(order.elapsed < timeout / 2, "{:?}", order.elapsed);
    }
    let total: u64 = demo.instances().iter().map(Inventory::orders).sum();
    assert_eq!(total, 18, "an open breaker does not call inventory");
    assert_eq!(demo.shop_health().await.unwrap(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_correlation_id_reaches_the_instance_that_served_the_order() {
    let demo = Demo::start(config(settings(2_000))).await.unwrap();

    for (country, status) in [("DE", 200), ("XX", 400)] {
        let id = format!("123-gda-{country}");
        let order = demo.order("cd", country, &id).await.unwrap();
        assert_eq!(order.status, status);
        assert_eq!(order.correlation_id.as_deref(), Some(id.as_str()));
        let served_by = order.served_by.unwrap();
        for inventory in demo.instances() {
            assert_eq!(
                inventory.saw_correlation_id(&id),
                inventory.name() == served_by,
                "{}",
                inventory.name()
            );
        }
    }

    // Without an id, the shop makes one, and passes that one on.
    let req = demo
        .order_request("cd", "DE")
        .body(Default::default())
        .unwrap();
    let order = demo.fetch(req).await.unwrap();
    let id = order
        .correlation_id
        .expect("the shop returns the id it made");
    let served_by = order.served_by.unwrap();
    assert!(demo.instance(&served_by).saw_correlation_id(&id));
}

/// The log lines of one order, in the shop and in the instance, carry the
/// order's id. A current-thread runtime, so that a scoped subscriber sees
/// every task (servers, health checks) of the test.
#[tokio::test(flavor = "current_thread")]
async fn shop_and_inventory_log_lines_carry_the_same_id() {
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let logs = Capture::default();
    let writer = logs.clone();
    let format = resilience_correlation::fmt::CorrelationFormat::new("test")
        .with_time(false)
        .with_span_names(true);
    let subscriber = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .event_format(format)
                .with_writer(move || writer.clone()),
        )
        .with(tracing_subscriber::filter::LevelFilter::INFO);
    let _guard = tracing::subscriber::set_default(subscriber);

    let demo = Demo::start(config(settings(2_000))).await.unwrap();
    let order = demo.order("cd", "XX", "log-123-gda").await.unwrap();
    assert_eq!(order.status, 400);

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let served_by = order.served_by.unwrap();
    for expected in [
        "[invoice] WARN [log-123-gda] Unknown country code country=XX".to_owned(),
        format!(
            "[warehouse] ERROR [log-123-gda] Invalid country code country=XX instance={served_by}"
        ),
    ] {
        assert!(
            logs.lines().any(|l| l == expected),
            "no line {expected:?} in\n{logs}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_instance_takes_orders_once_its_first_health_check_passes() {
    let mut demo = Demo::start(config(settings(2_000))).await.unwrap();

    // It joins failing its health check: pending, then unhealthy, and no
    // orders meanwhile.
    let fourth = Inventory::new("inventory-4");
    fourth.set_mode(Mode::Draining);
    demo.add_instance(fourth.clone()).await.unwrap();
    let shop = &demo.shop;
    let joined = &fourth;
    wait_until("inventory-4 was checked", || async move {
        joined.health_checks() >= 1
    })
    .await;
    assert!(
        matches!(
            shop.instance_state("inventory-4"),
            Some(EndpointState::Pending | EndpointState::Unhealthy)
        ),
        "{}",
        shop.status()
    );
    let served = orders_placed(&demo, 6, "before").await;
    assert!(!served.contains_key("inventory-4"), "{served:?}");
    assert_eq!(fourth.orders(), 0);

    fourth.set_mode(Mode::Healthy);
    wait_until("inventory-4 is healthy", || async move {
        shop.instance_state("inventory-4") == Some(EndpointState::Healthy)
    })
    .await;
    let served = orders_placed(&demo, 8, "after").await;
    assert_eq!(
        served,
        spread(&[
            ("inventory-1", 2),
            ("inventory-2", 2),
            ("inventory-3", 2),
            ("inventory-4", 2)
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_synthetic_check_turns_red_in_an_outage_and_green_after_recovery() {
    let settings = ShopSettings {
        open_for: Duration::from_millis(300),
        ejection_time: Duration::from_millis(200),
        ..settings(2_000)
    };
    let demo = Demo::start(config(settings)).await.unwrap();
    let monitor = demo.monitor(Duration::from_millis(50));
    let green_since = |t: SystemTime| {
        let latest = monitor.latest();
        async move { latest.is_some_and(|c| c.passed && c.at >= t) }
    };
    let red_since = |t: SystemTime| {
        let latest = monitor.latest();
        async move { latest.is_some_and(|c| !c.passed && c.at >= t) }
    };
    wait_until("people can order CDs", || {
        green_since(SystemTime::UNIX_EPOCH)
    })
    .await;

    let outage = SystemTime::now();
    for inventory in demo.instances() {
        inventory.set_mode(Mode::Failing);
    }
    wait_until("the check is red", || red_since(outage)).await;
    let shop = &demo.shop;
    wait_until("a breaker is open", || async move {
        shop.instance_breakers()
            .iter()
            .any(|(_, b)| b.state().is_open())
    })
    .await;
    let red = monitor.latest().unwrap();
    assert_eq!(red.status.map(|s| s.as_u16()), Some(503), "{red}");
    assert!(red.correlation_id.starts_with("synthetic-"), "{red}");
    assert_eq!(demo.shop_health().await.unwrap(), 200, "the shop is up");

    let recovery = SystemTime::now();
    for inventory in demo.instances() {
        inventory.set_mode(Mode::Healthy);
    }
    wait_until("the check is green again", || green_since(recovery)).await;
    wait_until("every breaker is closed", || async move {
        shop.instance_breakers()
            .iter()
            .all(|(_, b)| b.state() == CircuitState::Closed)
    })
    .await;

    let history = monitor.history();
    let red_during_outage = history
        .iter()
        .filter(|c| !c.passed && c.at >= outage && c.at < recovery)
        .count();
    assert!(red_during_outage >= 1, "{history:?}");
    assert!(
        history.iter().all(|c| c.passed || c.at >= outage),
        "no red check before the outage: {history:?}"
    );
    let (passed, failed) = monitor.totals();
    assert!(
        passed >= 2 && failed >= 1,
        "{passed} passed, {failed} failed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_that_is_not_plain_is_refused_before_any_call() {
    let demo = Demo::start(config(settings(2_000))).await.unwrap();
    for (item, country) in [
        ("c%20d", "DE"),
        ("..%2Fadmin", "DE"),
        ("cd", "D"),
        ("cd", "DEU"),
        ("cd", "D%26x%3D1"),
        ("cd", ""),
    ] {
        let order = demo.order(item, country, "bad-order").await.unwrap();
        assert_eq!(order.status, 400, "{item} {country}");
        assert_eq!(order.body, "invalid order\n");
    }
    let total: u64 = demo.instances().iter().map(Inventory::orders).sum();
    assert_eq!(total, 0);
}

/// The shop's file and [`ShopSettings::DEMO`] describe the same client.
#[test]
fn the_shops_file_holds_the_demo_settings() {
    let file = client_config();
    let code = ShopSettings::DEMO.client_config().unwrap();
    assert_eq!(file.name(), code.name());
    assert_eq!(file.deadline(), code.deadline());
    assert_eq!(file.attempt_timeout(), code.attempt_timeout());
    assert_eq!(file.retry(), code.retry());
    assert_eq!(file.throttle(), code.throttle());
    assert_eq!(file.breaker(), code.breaker());
    assert_eq!(file.balancer(), code.balancer());
    assert_eq!(file.health_check(), code.health_check());
    assert!(
        file.endpoints().is_empty(),
        "the instances come from discovery"
    );
}

#[test]
fn the_tries_per_order_are_checked() {
    for attempts in [0, 11] {
        let settings = ShopSettings {
            attempts,
            ..ShopSettings::DEMO
        };
        assert!(settings.retry_config().is_err(), "{attempts}");
        assert!(settings.client_config().is_err(), "{attempts}");
    }
    let config = ShopSettings::DEMO.retry_config().unwrap();
    assert_eq!(config.max_attempts(), 3);
    assert_eq!(
        ShopSettings::DEMO.call_timeout(),
        Duration::from_millis(900)
    );
}
