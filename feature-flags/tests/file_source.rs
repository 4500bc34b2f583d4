//! Hot reload from a file, with paused tokio time (the file system is real).
#![cfg(feature = "file")]

mod support;

use std::time::Duration;

use resilience_flags::source::FileSource;
use resilience_flags::{FlagContext, FlagSet, FlagStore};
use support::{TempDir, write_atomic};

const TICK: Duration = Duration::from_millis(100);

/// Waits (in paused time) for `cond`, for at most 50 ticks.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..50 {
        if cond() {
            return;
        }
        tokio::time::sleep(TICK).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn reloads_on_change_and_keeps_the_last_good_set_on_garbage() {
    let dir = TempDir::new("file");
    let path = dir.path().join("flags.toml");
    write_atomic(&path, "[flags.beta]\nenabled = true\n");

    let store = FlagStore::new(FlagSet::empty());
    let handle = FileSource::builder(&path)
        .interval(TICK)
        .build()
        .unwrap()
        .spawn(store.clone());
    let ctx = FlagContext::new().with_key("user-1");
    eventually("first load", || store.is_active("beta", &ctx)).await;
    assert_eq!(handle.snapshot().updates, 1);
    assert_eq!(handle.snapshot().staleness, Duration::ZERO);

    // A change is picked up.
    write_atomic(&path, "[flags.beta]\nenabled = false\n[flags.other]\n");
    eventually("reload", || !store.is_active("beta", &ctx)).await;
    assert!(store.is_active("other", &ctx));

    // Garbage: the last good set stays, the error is reported, staleness grows.
    write_atomic(&path, "[flags.beta\nthis is not toml");
    eventually("error", || handle.snapshot().errors == 1).await;
    assert!(handle.snapshot().last_error.is_some());
    assert!(store.is_active("other", &ctx));
    assert!(!store.is_active("beta", &ctx));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let status = handle.snapshot();
    assert!(status.staleness >= Duration::from_secs(5), "{status:?}");
    assert_eq!(status.errors, 1, "the same error is counted once");

    // A valid flag with an invalid value is garbage too.
    write_atomic(&path, "[flags.beta]\nrollout = 250\n");
    eventually("second error", || handle.snapshot().errors == 2).await;
    assert!(store.is_active("other", &ctx));

    // Fixed: recovers.
    write_atomic(&path, "[flags.beta]\n");
    eventually("recovery", || store.is_active("beta", &ctx)).await;
    assert!(!store.is_active("other", &ctx));
    let status = handle.snapshot();
    assert_eq!(
        (status.staleness, status.last_error),
        (Duration::ZERO, None)
    );

    handle.stop();
    tokio::task::yield_now().await;
    assert!(!handle.is_running());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn json_files_and_a_missing_file() {
    let dir = TempDir::new("json");
    let path = dir.path().join("flags.json");
    let store = FlagStore::new(
        FlagSet::builder()
            .flag(resilience_flags::Flag::boolean("kept"))
            .build()
            .unwrap(),
    );
    let handle = FileSource::builder(&path)
        .interval(TICK)
        .build()
        .unwrap()
        .spawn(store.clone());
    eventually("missing file error", || handle.snapshot().errors == 1).await;
    assert!(
        store.is_active("kept", &FlagContext::new()),
        "missing file keeps the set"
    );

    write_atomic(
        &path,
        r#"{"flags": {"json-flag": {"default": "a", "on": "b"}}}"#,
    );
    eventually("json load", || store.flag_set().get("json-flag").is_some()).await;
    assert_eq!(
        &**store
            .evaluate_variant("json-flag", &FlagContext::new(), "z")
            .value(),
        "b"
    );
    handle.stop();
}

#[test]
fn load_reports_errors() {
    let dir = TempDir::new("load");
    let path = dir.path().join("flags.toml");
    let source = FileSource::builder(&path).build().unwrap();
    assert!(source.load().is_err());
    let store = FlagStore::default();
    std::fs::write(&path, "[flags.a]\n").unwrap();
    source.load_into(&store).unwrap();
    assert!(store.is_active("a", &FlagContext::new()));
    std::fs::write(&path, "garbage = [").unwrap();
    assert!(source.load_into(&store).is_err());
    assert!(store.is_active("a", &FlagContext::new()));
    assert_eq!(
        FileSource::builder(&path)
            .interval(Duration::ZERO)
            .build()
            .unwrap_err()
            .field(),
        "interval"
    );
    assert_eq!(FileSource::builder("").build().unwrap_err().field(), "path");
    // At most the family's longest duration, 365 days.
    let long = resilience_core::config::MAX_DURATION + Duration::from_secs(1);
    let err = FileSource::builder(&path)
        .interval(long)
        .build()
        .unwrap_err();
    assert_eq!(
        (err.field(), err.reason()),
        ("interval", "must be at most 365 days")
    );
    assert!(
        FileSource::builder(&path)
            .interval(resilience_core::config::MAX_DURATION)
            .build()
            .is_ok()
    );
}
