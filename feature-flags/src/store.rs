//! The flag store: a lock-free snapshot of the current flag set.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use resilience_core::ConfigError;

use crate::eval::{ErrorCode, FlagContext, FlagEvaluation, Reason};
use crate::flag::FlagValue;
use crate::set::FlagSet;

/// The current flags, shared by the layer, the handlers and the sources.
///
/// Reads take a lock-free snapshot ([`arc_swap`]); a source swaps in a whole
/// new [`FlagSet`] at once, so one evaluation never sees half an update.
/// Evaluating a boolean flag takes no lock and allocates nothing.
///
/// # Clone semantics
///
/// Cloning is cheap and shares the flags: a set replaced through one clone
/// is seen by all of them.
#[derive(Clone)]
pub struct FlagStore {
    shared: Arc<Shared>,
}

struct Shared {
    set: ArcSwap<FlagSet>,
    /// Bumped after every swap of `set`; see [`FlagStore::version`].
    version: AtomicU64,
    name: Arc<str>,
    #[cfg(feature = "metrics")]
    metrics: Metrics,
}

#[cfg(feature = "metrics")]
struct Metrics {
    evaluations: [metrics::Counter; 6],
    source_errors: metrics::Counter,
}

// === impl FlagStore ===

impl FlagStore {
    /// The `name` label of an unnamed store's metrics: `"default"`.
    pub const DEFAULT_NAME: &'static str = "default";

    /// A store holding `set`, named [`DEFAULT_NAME`](Self::DEFAULT_NAME).
    pub fn new(set: FlagSet) -> Self {
        Self::build(Arc::from(Self::DEFAULT_NAME), set)
    }

    /// A store named `name` (the `name` label of its metrics).
    ///
    /// # Errors
    /// - `name` is not 1 to 64 characters of `[A-Za-z0-9_.-]`
    pub fn named(name: &str, set: FlagSet) -> Result<Self, ConfigError> {
        resilience_core::config::validate_name("name", name)?;
        Ok(Self::build(Arc::from(name), set))
    }

    fn build(name: Arc<str>, set: FlagSet) -> Self {
        #[cfg(feature = "metrics")]
        let metrics = Metrics::new(&name);
        Self {
            shared: Arc::new(Shared {
                set: ArcSwap::from_pointee(set),
                version: AtomicU64::new(1),
                name,
                #[cfg(feature = "metrics")]
                metrics,
            }),
        }
    }

    /// The store's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The current flag set (lock-free).
    pub fn flag_set(&self) -> Arc<FlagSet> {
        self.shared.set.load_full()
    }

    /// The current flag set.
    ///
    /// Deprecated because every other handle's `snapshot()` returns its
    /// `*Snapshot` type: with the `snapshot` feature, the store's is a
    /// `FlagStoreSnapshot`, through `resilience_core::snapshot::LayerSnapshot`.
    #[deprecated(since = "0.1.0", note = "use `FlagStore::flag_set`")]
    pub fn snapshot(&self) -> Arc<FlagSet> {
        self.flag_set()
    }

    /// How many flag sets the store has held: `1` for the one it was built
    /// with, plus one per [`replace`](Self::replace). Bumped after the swap,
    /// so a [`flag_set`](Self::flag_set) taken after reading the version is
    /// at least that new.
    pub fn version(&self) -> u64 {
        self.shared.version.load(Ordering::Acquire)
    }

    /// Replaces the whole flag set at once.
    pub fn replace(&self, set: FlagSet) {
        let flags = set.len();
        self.shared.set.store(Arc::new(set));
        self.shared.version.fetch_add(1, Ordering::Release);
        tracing::info!(name = %self.shared.name, flags, "flag set replaced");
    }

    #[cfg_attr(not(feature = "file"), allow(dead_code))] // used by the sources
    pub(crate) fn record_source_error(&self) {
        #[cfg(feature = "metrics")]
        self.shared.metrics.source_errors.increment(1);
    }

    #[inline]
    fn count(&self, reason: Reason) {
        #[cfg(feature = "metrics")]
        self.shared.metrics.evaluations[reason.index()].increment(1);
        #[cfg(not(feature = "metrics"))]
        let _ = reason;
    }

    /// Whether the boolean flag `name` is on for `ctx` (`false` if it does
    /// not exist or is not boolean).
    ///
    /// ```
    /// use resilience_flags::{Flag, FlagContext, FlagSet, FlagStore};
    /// let store = FlagStore::new(FlagSet::builder().flag(Flag::boolean("beta").allow(["ann"])
    ///     .rollout(0.0)).build()?);
    /// assert!(store.is_active("beta", &FlagContext::new().with_key("ann")));
    /// assert!(!store.is_active("beta", &FlagContext::new().with_key("bob")));
    /// assert!(!store.is_active("no-such-flag", &FlagContext::new()));
    /// # Ok::<_, resilience_core::ConfigError>(())
    /// ```
    #[inline]
    pub fn is_active(&self, name: &str, ctx: &FlagContext) -> bool {
        self.evaluate_bool(name, ctx, false).into_value()
    }

    /// Evaluates the boolean flag `name` for `ctx`, serving `default` when it
    /// does not exist or is not boolean. Never fails, never allocates.
    ///
    /// The arguments are in the family's one order: what is evaluated
    /// (`name`), for whom (`ctx`), then the fallback (`default`).
    /// [`Flags::evaluate_bool(name, default)`](crate::Flags::evaluate_bool)
    /// is the same call for a request whose context the [`Flags`](crate::Flags)
    /// already holds, so it has no `ctx`.
    #[inline]
    pub fn evaluate_bool(
        &self,
        name: &str,
        ctx: &FlagContext,
        default: bool,
    ) -> FlagEvaluation<bool> {
        self.evaluate_bool_with(name, ctx, &[], default)
    }

    pub(crate) fn evaluate_bool_with(
        &self,
        name: &str,
        ctx: &FlagContext,
        overrides: &[(Arc<str>, FlagValue)],
        default: bool,
    ) -> FlagEvaluation<bool> {
        let set = self.shared.set.load();
        let eval = match set.get(name) {
            None => FlagEvaluation::new(default, Reason::Error(ErrorCode::FlagNotFound)),
            Some(flag) => match flag.evaluate(ctx, find(overrides, name)) {
                (FlagValue::Bool(v), reason) => FlagEvaluation::new(*v, reason),
                (FlagValue::Variant(_), _) => {
                    FlagEvaluation::new(default, Reason::Error(ErrorCode::TypeMismatch))
                }
            },
        };
        self.count(eval.reason());
        eval
    }

    /// Evaluates the variant flag `name` for `ctx`, serving `default` when it
    /// does not exist or is not a variant flag. Never fails; allocates only
    /// to return `default` on error.
    /// Arguments as in [`evaluate_bool`](Self::evaluate_bool): `name`,
    /// `ctx`, `default`.
    ///
    /// ```
    /// use resilience_flags::{Flag, FlagContext, FlagSet, FlagStore, Reason};
    /// let store = FlagStore::new(FlagSet::builder()
    ///     .flag(Flag::variant("color", "blue", "green").when_path_prefix("/eu/", "red"))
    ///     .build()?);
    /// let eu = FlagContext::new().with_path("/eu/cart");
    /// let eval = store.evaluate_variant("color", &eu, "blue");
    /// assert_eq!(&**eval.value(), "red");
    /// assert_eq!(eval.reason(), Reason::TargetingMatch);
    /// # Ok::<_, resilience_core::ConfigError>(())
    /// ```
    pub fn evaluate_variant(
        &self,
        name: &str,
        ctx: &FlagContext,
        default: &str,
    ) -> FlagEvaluation<Arc<str>> {
        self.evaluate_variant_with(name, ctx, &[], default)
    }

    pub(crate) fn evaluate_variant_with(
        &self,
        name: &str,
        ctx: &FlagContext,
        overrides: &[(Arc<str>, FlagValue)],
        default: &str,
    ) -> FlagEvaluation<Arc<str>> {
        let set = self.shared.set.load();
        let eval = match set.get(name) {
            None => FlagEvaluation::new(Arc::from(default), Reason::Error(ErrorCode::FlagNotFound)),
            Some(flag) => match flag.evaluate(ctx, find(overrides, name)) {
                (FlagValue::Variant(v), reason) => FlagEvaluation::new(v.clone(), reason),
                (FlagValue::Bool(_), _) => {
                    FlagEvaluation::new(Arc::from(default), Reason::Error(ErrorCode::TypeMismatch))
                }
            },
        };
        self.count(eval.reason());
        eval
    }
}

#[inline]
fn find<'a>(overrides: &'a [(Arc<str>, FlagValue)], name: &str) -> Option<&'a FlagValue> {
    overrides.iter().find(|(n, _)| &**n == name).map(|(_, v)| v)
}

impl fmt::Debug for FlagStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlagStore")
            .field("name", &self.shared.name)
            .field("flags", &self.shared.set.load().len())
            .finish()
    }
}

impl Default for FlagStore {
    fn default() -> Self {
        Self::new(FlagSet::empty())
    }
}

// === impl Metrics ===

#[cfg(feature = "metrics")]
impl Metrics {
    fn new(name: &Arc<str>) -> Self {
        use resilience_core::names::{
            FLAGS_EVALUATIONS_TOTAL, FLAGS_SOURCE_ERRORS_TOTAL, LABEL_NAME, LABEL_REASON,
        };
        metrics::describe_counter!(
            FLAGS_EVALUATIONS_TOTAL,
            metrics::Unit::Count,
            "Flag evaluations, by reason."
        );
        metrics::describe_counter!(
            FLAGS_SOURCE_ERRORS_TOTAL,
            metrics::Unit::Count,
            "Failed or rejected reads from a flag source (the last good set is kept)."
        );
        let name = name.to_string();
        Self {
            evaluations: Reason::ALL.map(|r| {
                metrics::counter!(FLAGS_EVALUATIONS_TOTAL, LABEL_NAME => name.clone(), LABEL_REASON => r.as_str())
            }),
            source_errors: metrics::counter!(FLAGS_SOURCE_ERRORS_TOTAL, LABEL_NAME => name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flag::Flag;

    fn store() -> FlagStore {
        FlagStore::new(
            FlagSet::builder()
                .flag(Flag::boolean("on"))
                .flag(Flag::boolean("half").rollout(50.0))
                .flag(Flag::variant("color", "blue", "green"))
                .build()
                .unwrap(),
        )
    }

    #[test]
    fn errors_serve_the_default() {
        let s = store();
        let ctx = FlagContext::new();
        let e = s.evaluate_bool("missing", &ctx, true);
        assert_eq!(
            (*e.value(), e.error_code()),
            (true, Some(ErrorCode::FlagNotFound))
        );
        let e = s.evaluate_bool("color", &ctx, true);
        assert_eq!(
            (*e.value(), e.error_code()),
            (true, Some(ErrorCode::TypeMismatch))
        );
        let e = s.evaluate_variant("on", &ctx, "x");
        assert_eq!((&*e.into_value(),), ("x",));
        let e = s.evaluate_bool("half", &ctx, false);
        assert_eq!(e.error_code(), Some(ErrorCode::TargetingKeyMissing));
        assert_eq!(e.variant(), "off");
        assert_eq!(&**s.evaluate_variant("color", &ctx, "x").value(), "green");
    }

    #[test]
    fn replace_is_seen_by_clones() {
        let s = store();
        let clone = s.clone();
        assert!(clone.is_active("on", &FlagContext::new()));
        s.replace(FlagSet::empty());
        assert!(!clone.is_active("on", &FlagContext::new()));
        assert_eq!((s.version(), clone.version()), (2, 2));
        assert!(FlagStore::named("bad name", FlagSet::empty()).is_err());
        assert_eq!(
            FlagStore::named("shop", FlagSet::empty()).unwrap().name(),
            "shop"
        );
    }

    #[cfg(feature = "metrics")]
    #[test]
    fn counts_evaluations_by_reason() {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let s = store();
            s.is_active("on", &FlagContext::new());
            s.is_active("on", &FlagContext::new());
            s.is_active("missing", &FlagContext::new());
            s.record_source_error();
        });
        let counts: Vec<_> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter_map(|(key, _, _, v)| match v {
                DebugValue::Counter(n) if n > 0 => {
                    let reason = key
                        .key()
                        .labels()
                        .find(|l| l.key() == "reason")
                        .map(|l| l.value().to_owned());
                    Some((key.key().name().to_owned(), reason, n))
                }
                _ => None,
            })
            .collect();
        assert!(counts.contains(&(
            "resilience_flags_evaluations_total".into(),
            Some("static".into()),
            2
        )));
        assert!(counts.contains(&(
            "resilience_flags_evaluations_total".into(),
            Some("error".into()),
            1
        )));
        assert!(counts.contains(&("resilience_flags_source_errors_total".into(), None, 1)));
    }
}
