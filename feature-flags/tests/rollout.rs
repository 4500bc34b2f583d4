//! Percentage rollouts: share, stability across stores, monotonic raises, and
//! evaluation never panicking on arbitrary input.

use proptest::prelude::*;
use resilience_flags::{Flag, FlagContext, FlagSet, FlagStore, Reason};

fn store(percent: f64) -> FlagStore {
    FlagStore::new(
        FlagSet::builder()
            .flag(Flag::boolean("new-checkout").rollout(percent))
            .build()
            .unwrap(),
    )
}

fn on_keys(store: &FlagStore, n: usize) -> Vec<bool> {
    (0..n)
        .map(|i| {
            store.is_active(
                "new-checkout",
                &FlagContext::new().with_key(format!("user-{i}")),
            )
        })
        .collect()
}

#[test]
fn twenty_percent_of_ten_thousand_keys() {
    let on = on_keys(&store(20.0), 10_000).iter().filter(|b| **b).count();
    let share = on as f64 / 10_000.0;
    println!("rollout 20%: {on} of 10000 keys on ({:.2}%)", share * 100.0);
    assert!((0.19..=0.21).contains(&share), "share {share}");
}

#[test]
fn same_answer_from_two_independent_stores() {
    // Built separately (own HashMaps, own random SipHash keys): the bucket
    // must not depend on anything but the flag name and the key.
    let a = on_keys(&store(37.5), 10_000);
    let b = on_keys(&store(37.5), 10_000);
    assert_eq!(a, b);
    assert!(a.iter().any(|x| *x) && a.iter().any(|x| !*x));
}

#[test]
fn raising_twenty_to_thirty_keeps_every_key_on() {
    let at20 = on_keys(&store(20.0), 10_000);
    let at30 = on_keys(&store(30.0), 10_000);
    for (i, (a, b)) in at20.iter().zip(&at30).enumerate() {
        assert!(!a || *b, "user-{i} was on at 20% and off at 30%");
    }
    let gained = at30.iter().filter(|b| **b).count() - at20.iter().filter(|b| **b).count();
    assert!((900..=1100).contains(&gained), "gained {gained}");
}

#[test]
fn edges_zero_and_hundred() {
    assert!(on_keys(&store(0.0), 1000).iter().all(|b| !b));
    assert!(on_keys(&store(100.0), 1000).iter().all(|b| *b));
}

proptest! {
    #[test]
    fn evaluation_never_panics(
        percent in proptest::num::f64::ANY,
        key in any::<String>(),
        path in any::<String>(),
        name in any::<String>(),
        over in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        let built = FlagSet::builder()
            .flag(Flag::boolean("f").rollout(percent).overridable(true))
            .flag(Flag::variant("v", "a", "b").rollout(percent))
            .build();
        let valid = percent.is_finite() && (0.0..=100.0).contains(&percent);
        prop_assert_eq!(built.is_ok(), valid);
        let set = built.unwrap_or_default();
        let store = FlagStore::new(set.clone());
        let ctx = FlagContext::new().with_key(key.as_str()).with_path(&path);
        let e = store.evaluate_bool("f", &ctx, false);
        if valid {
            prop_assert_eq!(e.reason(), Reason::Split);
        }
        let _ = store.evaluate_bool(&name, &ctx, true);
        let _ = store.evaluate_variant("v", &ctx, "a");
        let _ = store.evaluate_variant(&name, &FlagContext::new(), "z");
        if let Some(flag) = set.get("f") {
            let _ = flag.parse_override(&over);
        }
        prop_assert!(resilience_flags::hash::bucket(&name, &key) < resilience_flags::hash::BUCKETS);
    }

    #[test]
    fn rollout_is_monotonic(key in any::<String>(), lo in 0.0f64..=100.0, hi in 0.0f64..=100.0) {
        let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
        let ctx = FlagContext::new().with_key(key);
        let at_lo = store(lo).is_active("new-checkout", &ctx);
        let at_hi = store(hi).is_active("new-checkout", &ctx);
        prop_assert!(!at_lo || at_hi);
    }
}
