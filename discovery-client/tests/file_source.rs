//! The file source: reload on change, keep the last good set on garbage.
#![cfg(feature = "file")]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use resilience_core::BoxError;
use resilience_discovery::source::{Backoff, FileSource, FileSourceConfig};
use resilience_discovery::{Endpoint, RoundRobinBuilder};
use tower::{Service, ServiceExt, service_fn};

type Counts = Arc<Mutex<HashMap<u16, usize>>>;

fn maker(
    counts: &Counts,
) -> impl Fn(&Endpoint) -> tower::util::BoxCloneSyncService<(), (), BoxError> + Send + Sync + 'static
{
    let counts = counts.clone();
    move |ep: &Endpoint| {
        let counts = counts.clone();
        let port = ep.addr().port();
        tower::util::BoxCloneSyncService::new(service_fn(move |()| {
            *counts.lock().unwrap().entry(port).or_default() += 1;
            async { Ok::<_, BoxError>(()) }
        }))
    }
}

async fn spread<S: Service<(), Response = (), Error = BoxError>>(
    svc: &mut S,
    counts: &Counts,
    n: usize,
) -> HashMap<u16, usize> {
    counts.lock().unwrap().clear();
    for _ in 0..n {
        svc.ready().await.unwrap().call(()).await.unwrap();
    }
    counts.lock().unwrap().clone()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn reloads_on_change_and_keeps_the_last_good_set() {
    let dir =
        std::env::temp_dir().join(format!("resilience-discovery-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("endpoints.toml");
    let write = |s: &str| std::fs::write(&path, s).unwrap();
    write(
        r#"
        [[endpoints]]
        address = "127.0.0.1:1"
        [[endpoints]]
        address = "127.0.0.1:2"
        [[endpoints]]
        address = "127.0.0.1:3"
        "#,
    );
    let config = FileSourceConfig::builder(&path)
        .name("file-test")
        .poll_interval(Duration::from_secs(1))
        .backoff(Backoff::new(Duration::from_millis(100), Duration::from_millis(400)).unwrap())
        .build()
        .unwrap();
    let source = FileSource::new(config).into_stream();
    let status = source.health();
    let counts = Counts::default();
    let mut rr = RoundRobinBuilder::new().build_with_source(source, maker(&counts));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        spread(&mut rr, &counts, 30).await,
        HashMap::from([(1, 10), (2, 10), (3, 10)])
    );

    // A changed file, with one invalid entry skipped alone.
    write(
        r#"
        [[endpoints]]
        address = "127.0.0.1:2"
        [[endpoints]]
        address = "no port"
        [[endpoints]]
        address = "127.0.0.1:4"
        "#,
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        spread(&mut rr, &counts, 30).await,
        HashMap::from([(2, 15), (4, 15)])
    );
    assert_eq!(status.errors(), 0);

    // Garbage: the last good set stays, errors are counted, staleness grows.
    write("[[endpoints]\naddress = ");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(status.errors() >= 2, "{status:?}");
    assert!(status.last_error().is_some());
    assert!(status.staleness() >= Duration::from_secs(4), "{status:?}");
    assert_eq!(
        spread(&mut rr, &counts, 30).await,
        HashMap::from([(2, 15), (4, 15)])
    );

    // The file gone: same.
    std::fs::remove_file(&path).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        spread(&mut rr, &counts, 30).await,
        HashMap::from([(2, 15), (4, 15)])
    );

    // Back: picked up, the error clears.
    write(r#"endpoints = [{ address = "127.0.0.1:5" }]"#);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(spread(&mut rr, &counts, 10).await, HashMap::from([(5, 10)]));
    assert!(status.last_error().is_none());
    assert!(status.staleness() < Duration::from_secs(2));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
#[allow(deprecated)]
async fn the_old_status_names_still_give_the_live_health() {
    use resilience_discovery::source::{SourceHealth, SourceStatus};

    let dir = std::env::temp_dir().join(format!(
        "resilience-discovery-file-old-names-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("endpoints.toml");
    std::fs::write(&path, "[[endpoints]\naddress = ").unwrap(); // garbage
    let config = FileSourceConfig::builder(&path)
        .name("old-names")
        .poll_interval(Duration::from_secs(1))
        .build()
        .unwrap();
    let source = FileSource::new(config).into_stream();
    let old: SourceStatus = source.status();
    let new: SourceHealth = source.health();
    let counts = Counts::default();
    let _rr = RoundRobinBuilder::new().build_with_source(source, maker(&counts));
    tokio::time::sleep(Duration::from_millis(10)).await;
    // One source behind both names: the same name, the same live errors.
    assert_eq!(old.name(), "old-names");
    assert_eq!(new.name(), old.name());
    assert!(old.errors() >= 1, "{old:?}");
    assert_eq!(old.errors(), new.errors());
    assert_eq!(old.last_error(), new.last_error());
    std::fs::remove_dir_all(&dir).unwrap();
}
