//! What a flag store reports through the `metrics` facade: evaluations made
//! through the layer, by reason, and a file source's failed reads.
#![cfg(feature = "metrics")]

mod support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use http::{Request, Response};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use resilience_flags::{Flag, FlagSet, FlagStore, Flags, FlagsConfig, FlagsLayer};
use tower::{Layer, ServiceExt, service_fn};

/// `(metric, reason label) -> count` of the counters named `store`.
fn counts(snapshotter: &Snapshotter, store: &str) -> BTreeMap<(String, String), u64> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| {
            key.key()
                .labels()
                .any(|l| l.key() == "name" && l.value() == store)
        })
        .map(|(key, _, _, value)| {
            let reason = key
                .key()
                .labels()
                .find(|l| l.key() == "reason")
                .map_or("", |l| l.value())
                .to_owned();
            let DebugValue::Counter(n) = value else {
                panic!("{key:?} is not a counter")
            };
            ((key.key().name().to_owned(), reason), n)
        })
        .collect()
}

const EVALUATIONS: &str = "resilience_flags_evaluations_total";
const SOURCE_ERRORS: &str = "resilience_flags_source_errors_total";

#[tokio::test]
async fn evaluations_through_the_layer_are_counted_by_reason() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let store = FlagStore::named(
        "shop",
        FlagSet::builder()
            .flag(Flag::boolean("on"))
            .flag(Flag::boolean("vip").rollout(0.0).allow(["ann"]))
            .flag(Flag::boolean("half").rollout(50.0))
            .flag(Flag::boolean("off").enabled(false))
            .flag(Flag::boolean("open").rollout(0.0).overridable(true))
            .build()
            .unwrap(),
    )
    .unwrap();
    let config = FlagsConfig::builder()
        .trust_overrides(|_| true)
        .build()
        .unwrap();
    let svc =
        FlagsLayer::with_config(store, config).layer(service_fn(|req: Request<()>| async move {
            let flags = req.extensions().get::<Flags>().cloned().unwrap();
            for name in ["on", "vip", "half", "off", "open", "missing"] {
                flags.is_active(name);
            }
            Ok::<_, Infallible>(Response::new(()))
        }));
    let req = Request::builder()
        .uri("/cart")
        .header("x-user-id", "ann")
        .header("x-flag-open", "1")
        .body(())
        .unwrap();
    svc.clone().oneshot(req).await.unwrap();
    let req = Request::builder()
        .uri("/cart")
        .header("x-user-id", "bob")
        .body(())
        .unwrap();
    svc.oneshot(req).await.unwrap();

    let got = counts(&snapshotter, "shop");
    let want: BTreeMap<(String, String), u64> = [
        ("static", 2),
        ("targeting_match", 1), // vip: ann is allowed
        ("split", 4),           // half twice; vip and open for bob
        ("disabled", 2),
        ("override", 1),
        ("error", 2),
    ]
    .into_iter()
    .map(|(r, n)| ((EVALUATIONS.to_owned(), r.to_owned()), n))
    .chain([((SOURCE_ERRORS.to_owned(), String::new()), 0)])
    .collect();
    assert_eq!(got, want);
}

#[cfg(feature = "file")]
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_file_source_counts_failed_reads_on_its_store() {
    use resilience_flags::FlagContext;
    use resilience_flags::source::FileSource;
    use support::{TempDir, write_atomic};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let dir = TempDir::new("metrics");
    let path = dir.path().join("flags.toml");
    write_atomic(&path, "[flags.beta]\nenabled = true\n");
    let store = FlagStore::named("edge", FlagSet::empty()).unwrap();
    let handle = FileSource::builder(&path)
        .interval(Duration::from_millis(100))
        .build()
        .unwrap()
        .spawn(store.clone());
    let errors = async |n: u64| {
        for _ in 0..50 {
            if handle.snapshot().errors == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("never saw {n} errors");
    };
    errors(0).await;
    while !store.is_active("beta", &FlagContext::new()) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    write_atomic(&path, "[flags.beta\nnot toml");
    errors(1).await;
    // The same error again is not counted twice; a different one is.
    tokio::time::sleep(Duration::from_secs(1)).await;
    write_atomic(&path, "[flags.beta]\nrollout = 250\n");
    errors(2).await;

    let got = counts(&snapshotter, "edge");
    assert_eq!(
        got.get(&(SOURCE_ERRORS.to_owned(), String::new())),
        Some(&2),
        "{got:?}"
    );
}
