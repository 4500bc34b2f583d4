//! What a variant flag serves by default, the evaluation argument order, and
//! the deprecated old names, which still compile and behave the same.

mod support;

use std::sync::Arc;
use std::time::Duration;

use resilience_flags::{Flag, FlagContext, FlagSet, FlagStore, Flags, Reason};

fn store() -> FlagStore {
    FlagStore::new(
        FlagSet::builder()
            .flag(Flag::variant("color", "blue", "green"))
            .flag(Flag::variant("layout", "old", "new").rollout(0.0))
            .flag(Flag::variant("font", "serif", "sans").enabled(false))
            .flag(
                Flag::variant("theme", "light", "dark")
                    .allow(["ann"])
                    .rollout(0.0),
            )
            .flag(Flag::boolean("beta"))
            .build()
            .unwrap(),
    )
}

#[test]
fn a_variant_flag_without_rollout_serves_its_on_value_to_everyone() {
    let store = store();
    for ctx in [
        FlagContext::new(),
        FlagContext::new().with_key("user-1"),
        FlagContext::new().with_key("user-2").with_path("/eu/cart"),
    ] {
        let eval = store.evaluate_variant("color", &ctx, "fallback");
        assert_eq!((&**eval.value(), eval.reason()), ("green", Reason::Static));
        // As a boolean flag serves `true`.
        let eval = store.evaluate_bool("beta", &ctx, false);
        assert_eq!((*eval.value(), eval.reason()), (true, Reason::Static));
    }
}

#[test]
fn a_variant_flag_serves_its_default_at_zero_rollout_or_when_off() {
    let store = store();
    let bob = FlagContext::new().with_key("bob");
    let layout = store.evaluate_variant("layout", &bob, "fallback");
    assert_eq!((&**layout.value(), layout.reason()), ("old", Reason::Split));
    let font = store.evaluate_variant("font", &bob, "fallback");
    assert_eq!(
        (&**font.value(), font.reason()),
        ("serif", Reason::Disabled)
    );
    // Allow-listed keys get the `on` value before the rollout applies.
    let ann = FlagContext::new().with_key("ann");
    assert_eq!(
        &*store.evaluate_variant("theme", &ann, "x").into_value(),
        "dark"
    );
    assert_eq!(
        &*store.evaluate_variant("theme", &bob, "x").into_value(),
        "light"
    );
}

#[test]
fn flags_and_the_store_take_name_then_default_with_the_context_between() {
    let store = store();
    let ctx = FlagContext::new().with_key("user-1");
    let flags = Flags::new(store.clone(), ctx.clone());
    for name in ["color", "layout", "font", "missing", "beta"] {
        assert_eq!(
            flags.evaluate_variant(name, "dflt").into_value(),
            store.evaluate_variant(name, &ctx, "dflt").into_value(),
            "{name}"
        );
        assert_eq!(
            *flags.evaluate_bool(name, true).value(),
            *store.evaluate_bool(name, &ctx, true).value(),
            "{name}"
        );
    }
}

#[test]
#[allow(deprecated)]
fn the_old_store_snapshot_is_the_flag_set() {
    let store = store();
    let old: Arc<FlagSet> = store.snapshot();
    assert!(Arc::ptr_eq(&old, &store.flag_set()));
    store.replace(FlagSet::empty());
    assert!(store.snapshot().is_empty());
    assert!(Arc::ptr_eq(&store.snapshot(), &store.flag_set()));
}

#[cfg(feature = "file")]
#[tokio::test(flavor = "current_thread", start_paused = true)]
#[allow(deprecated)]
async fn the_old_source_status_is_the_source_snapshot() {
    use resilience_flags::source::{FileSource, FlagSourceSnapshot, SourceStatus};

    let dir = support::TempDir::new("names");
    let path = dir.path().join("flags.toml");
    support::write_atomic(&path, "[flags.beta]\nenabled = true\n");
    let store = FlagStore::new(FlagSet::empty());
    let handle = FileSource::builder(&path)
        .interval(Duration::from_millis(100))
        .build()
        .unwrap()
        .spawn(store.clone());
    for _ in 0..50 {
        if store.is_active("beta", &FlagContext::new()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let old: SourceStatus = handle.status();
    let new: FlagSourceSnapshot = handle.snapshot();
    assert_eq!(old, new);
    assert_eq!((old.updates, old.errors), (1, 0));
    handle.stop();
}
