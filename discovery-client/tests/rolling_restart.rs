//! Rolling restarts one instance at a time, against a real etcd (Debian
//! `etcd-server`): mutual exclusion, a dead holder, and no failed request
//! under load through round robin.
#![cfg(feature = "etcd")]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use resilience_discovery::source::etcd::{
    RestartErrorKind, RestartLock, RestartLockConfig, RestartPermit,
};
use resilience_discovery::source::{Backoff, EtcdConfig, EtcdSource, Registration};
use resilience_discovery::{Endpoint, RoundRobinBuilder, RoundRobinConfig};
use support::{Etcd, http_maker, wait_until};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

const PREFIX: &str = "/services/orders/";
const LOCK: &str = "/locks/restart/orders";

fn etcd_config(etcd: &Etcd) -> EtcdConfig {
    EtcdConfig::builder()
        .endpoint(etcd.url())
        .name("restart-test")
        .request_timeout(Duration::from_secs(2))
        .backoff(Backoff::new(Duration::from_millis(100), Duration::from_millis(500)).unwrap())
        .build()
        .unwrap()
}

fn lock(etcd: &EtcdConfig, min_healthy: usize, ttl: Duration) -> RestartLock {
    RestartLock::new(
        etcd,
        RestartLockConfig::builder()
            .registry_prefix(PREFIX)
            .lock_key(LOCK)
            .min_healthy(min_healthy)
            .lease_ttl(ttl)
            .wait_timeout(Duration::from_secs(30))
            .poll(Duration::from_millis(20))
            .build()
            .unwrap(),
    )
}

fn key(i: usize) -> String {
    format!("{PREFIX}instance-{i}")
}

async fn register(etcd: &EtcdConfig, i: usize, addr: SocketAddr) -> Registration {
    Registration::register(etcd, key(i), &Endpoint::new(addr), Duration::from_secs(5))
        .await
        .unwrap()
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_asking_at_once_go_one_at_a_time() {
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let config = etcd_config(&etcd);
    let mut regs = Vec::new();
    for i in 0..3 {
        regs.push(register(&config, i, addr(9000 + i as u16)).await);
    }
    let inside = Arc::new(AtomicUsize::new(0));
    let max_inside = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (i, reg) in regs.into_iter().enumerate() {
        let (config, inside, max_inside, done) = (
            config.clone(),
            inside.clone(),
            max_inside.clone(),
            done.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let lock = lock(&config, 2, Duration::from_secs(5));
            let permit = lock
                .acquire(&format!("instance-{i}"), &key(i))
                .await
                .unwrap();
            assert_eq!(
                lock.holder().await.unwrap().as_deref(),
                Some(&*format!("instance-{i}"))
            );
            let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
            max_inside.fetch_max(n, Ordering::SeqCst);
            permit.deregister(reg).await.unwrap();
            permit
                .drain(|| 0, Duration::from_millis(50), Duration::from_secs(1))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await; // "restarting"
            let reg = register(&config, i, addr(9100 + i as u16)).await;
            inside.fetch_sub(1, Ordering::SeqCst);
            permit
                .release_when_registered(&key(i), Duration::from_secs(5))
                .await
                .unwrap();
            done.fetch_add(1, Ordering::SeqCst);
            reg
        }));
    }
    let mut regs = Vec::new();
    for t in tasks {
        regs.push(t.await.unwrap());
    }
    assert_eq!(done.load(Ordering::SeqCst), 3, "all got through");
    assert_eq!(max_inside.load(Ordering::SeqCst), 1, "never two inside");
    let lock = lock(&config, 2, Duration::from_secs(5));
    assert_eq!(lock.holder().await.unwrap(), None, "released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holder_frees_the_lock_within_the_lease_ttl() {
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let config = etcd_config(&etcd);
    let _a = register(&config, 0, addr(9200)).await;
    let _b = register(&config, 1, addr(9201)).await;
    let ttl = Duration::from_secs(2);
    let holder: RestartPermit = lock(&config, 1, ttl)
        .acquire("instance-0", &key(0))
        .await
        .unwrap();
    // A second instance cannot get in while the holder lives.
    let quick = RestartLock::new(
        &config,
        RestartLockConfig::builder()
            .registry_prefix(PREFIX)
            .lock_key(LOCK)
            .lease_ttl(ttl)
            .wait_timeout(Duration::from_millis(300))
            .poll(Duration::from_millis(20))
            .build()
            .unwrap(),
    );
    let err = quick.acquire("instance-1", &key(1)).await.unwrap_err();
    assert_eq!(err.kind(), RestartErrorKind::LockTimeout);
    // The holder dies mid-restart: its keep-alive stops, nothing is revoked.
    drop(holder);
    let died = Instant::now();
    let permit = lock(&config, 1, ttl)
        .acquire("instance-1", &key(1))
        .await
        .unwrap();
    let freed_after = died.elapsed();
    println!("lock freed {freed_after:?} after the holder died (ttl {ttl:?})");
    assert!(
        freed_after <= ttl + Duration::from_millis(1500),
        "freed within the lease ttl: {freed_after:?}"
    );
    permit.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_gate_waits_for_enough_others() {
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let config = etcd_config(&etcd);
    let _a = register(&config, 0, addr(9300)).await;
    let quick = RestartLock::new(
        &config,
        RestartLockConfig::builder()
            .registry_prefix(PREFIX)
            .lock_key(LOCK)
            .min_healthy(1)
            .wait_timeout(Duration::from_millis(300))
            .poll(Duration::from_millis(20))
            .build()
            .unwrap(),
    );
    // Alone: nobody else would serve while it restarts.
    let err = quick.acquire("instance-0", &key(0)).await.unwrap_err();
    assert_eq!(err.kind(), RestartErrorKind::Unhealthy);
    assert_eq!(
        quick.holder().await.unwrap(),
        None,
        "the lock was given back"
    );
    let _b = register(&config, 1, addr(9301)).await;
    let permit = quick.acquire("instance-0", &key(0)).await.unwrap();
    // A request that never finishes: the drain gives up at its bound.
    let start = Instant::now();
    let err = permit
        .drain(|| 1, Duration::from_millis(50), Duration::from_millis(200))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), RestartErrorKind::DrainTimeout);
    assert!(start.elapsed() < Duration::from_secs(1));
    // Not back in the registry in time: an error, and the lock is freed.
    let err = permit
        .release_when_registered(&key(7), Duration::from_millis(200))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), RestartErrorKind::NotRegistered);
    assert_eq!(quick.holder().await.unwrap(), None);
}

/// An instance that counts its requests in flight.
struct Server {
    addr: SocketAddr,
    in_flight: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let n = in_flight.clone();
        let app = Router::new().route(
            "/",
            get(move || {
                let n = n.clone();
                async move {
                    n.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    n.fetch_sub(1, Ordering::SeqCst);
                    addr.port().to_string()
                }
            }),
        );
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            addr,
            in_flight,
            task,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_all_three_fails_no_request() {
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let config = etcd_config(&etcd);
    let mut servers = Vec::new();
    let mut regs = Vec::new();
    for i in 0..3 {
        let s = Server::start().await;
        regs.push(Some(register(&config, i, s.addr).await));
        servers.push(s);
    }
    let source = EtcdSource::new(config.clone(), PREFIX).into_stream();
    let rr = RoundRobinBuilder::new()
        .config(RoundRobinConfig::builder().name("orders").build().unwrap())
        .build_with_source(source, http_maker());
    let handle = rr.handle();
    wait_until("three endpoints", Duration::from_secs(10), async || {
        handle.snapshot().endpoints.len() == 3
    })
    .await;

    // Steady load through round robin: two clients, back to back.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for _ in 0..2 {
        let (mut rr, stop, ok, failed) = (rr.clone(), stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match rr.ready().await {
                    Ok(svc) => match svc.call(()).await {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            eprintln!("request failed: {e}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    },
                    Err(e) => {
                        eprintln!("not ready: {e}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }

    let lock = lock(&config, 2, Duration::from_secs(5));
    for i in 0..3 {
        let permit = lock
            .acquire(&format!("instance-{i}"), &key(i))
            .await
            .unwrap();
        permit.deregister(regs[i].take().unwrap()).await.unwrap();
        let in_flight = servers[i].in_flight.clone();
        permit
            .drain(
                || in_flight.load(Ordering::SeqCst),
                Duration::from_millis(300),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        // Restart: the old process goes, a new one comes up and registers.
        servers[i].task.abort();
        let s = Server::start().await;
        regs[i] = Some(register(&config, i, s.addr).await);
        servers[i] = s;
        permit
            .release_when_registered(&key(i), Duration::from_secs(5))
            .await
            .unwrap();
        let before = ok.load(Ordering::Relaxed);
        wait_until(
            "traffic flows after the restart",
            Duration::from_secs(5),
            async || ok.load(Ordering::Relaxed) > before + 50,
        )
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("rolling restart of 3 under load: {ok} requests ok, {failed} failed");
    assert!(ok > 150, "load ran: {ok}");
    assert_eq!(failed, 0, "no client request failed");
    // Every new instance serves.
    let ports: std::collections::BTreeSet<u16> = handle
        .snapshot()
        .endpoints
        .iter()
        .map(|e| e.endpoint.addr().port())
        .collect();
    let expected: std::collections::BTreeSet<u16> = servers.iter().map(|s| s.addr.port()).collect();
    assert_eq!(ports, expected);
}

/// A drain or re-registration wait too long to represent waits without a
/// deadline rather than panicking on `Instant` overflow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_wait_is_no_panic() {
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let config = etcd_config(&etcd);
    let _other = register(&config, 1, addr(9301)).await;
    let own = register(&config, 0, addr(9300)).await;
    let permit = lock(&config, 1, Duration::from_secs(5))
        .acquire("instance-0", &key(0))
        .await
        .unwrap();
    permit
        .drain(|| 0, Duration::ZERO, Duration::MAX)
        .await
        .unwrap();
    permit
        .release_when_registered(&key(0), Duration::MAX)
        .await
        .unwrap();
    drop(own);
}
