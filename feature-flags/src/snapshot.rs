//! [`LayerSnapshot`] for [`FlagStore`] (feature `snapshot`), so a
//! [`SnapshotRegistry`](resilience_core::snapshot::SnapshotRegistry) serves
//! the flag definitions.
//!
//! A store's `state` object (kind `flags`), flags sorted by name:
//!
//! ```json
//! { "version": 2, "count": 2,
//!   "flags": [
//!     { "name": "beta", "kind": "boolean", "state": "percentage",
//!       "rollout_percent": 25.0, "default": false, "overridable": true },
//!     { "name": "color", "kind": "variant", "state": "off",
//!       "rollout_percent": null, "default": "blue", "overridable": false } ] }
//! ```

use std::sync::Arc;

use resilience_core::snapshot::LayerSnapshot;
use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::flag::{Flag, FlagKind, FlagValue};
use crate::hash::BUCKETS;
use crate::set::FlagSet;
use crate::store::FlagStore;

/// The kind of a flag store in the snapshot document.
pub(crate) const FLAGS: &str = "flags";

/// A flag store's definitions at one version, from the store's
/// [`LayerSnapshot`] implementation.
///
/// Serialized as `{version, count, flags}`, each flag as `{name, kind,
/// state, rollout_percent, default, overridable}`: `kind` is `boolean` or
/// `variant`; `state` is `off` (switched off: everyone gets the default),
/// `percentage` (a rollout: `rollout_percent` of the keys get the `on`
/// value) or `on` (everyone not excluded by an allow/deny list or a rule);
/// `default` is the value served when off (a boolean or a string);
/// `overridable` says whether trusted requests may override it with a
/// header.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FlagStoreSnapshot {
    /// The store's [`version`](FlagStore::version) when the snapshot was
    /// taken (the set may be newer, never older).
    pub version: u64,
    /// The flag set.
    pub flags: Arc<FlagSet>,
}

// === impl FlagStore ===

impl LayerSnapshot for FlagStore {
    type Snapshot = FlagStoreSnapshot;

    fn kind(&self) -> &'static str {
        FLAGS
    }

    fn name(&self) -> &str {
        FlagStore::name(self)
    }

    /// Reads the version, then loads the set (lock-free).
    fn snapshot(&self) -> FlagStoreSnapshot {
        let version = self.version();
        FlagStoreSnapshot {
            version,
            flags: self.flag_set(),
        }
    }
}

// === impl FlagStoreSnapshot ===

impl Serialize for FlagStoreSnapshot {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut flags: Vec<FlagSummary<'_>> = self.flags.iter().map(FlagSummary).collect();
        flags.sort_unstable_by(|a, b| a.0.name().cmp(b.0.name()));
        let mut s = serializer.serialize_struct("FlagStoreSnapshot", 3)?;
        s.serialize_field("version", &self.version)?;
        s.serialize_field("count", &flags.len())?;
        s.serialize_field("flags", &flags)?;
        s.end()
    }
}

struct FlagSummary<'a>(&'a Flag);

impl Serialize for FlagSummary<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let flag = self.0;
        let kind = match flag.kind() {
            FlagKind::Boolean => "boolean",
            FlagKind::Variant => "variant",
        };
        let rollout = flag.rollout_buckets();
        let state = match (flag.is_enabled(), rollout) {
            (false, _) => "off",
            (true, Some(_)) => "percentage",
            (true, None) => "on",
        };
        let rollout_percent = rollout.map(|b| f64::from(b) * 100.0 / f64::from(BUCKETS));
        let mut s = serializer.serialize_struct("Flag", 6)?;
        s.serialize_field("name", flag.name())?;
        s.serialize_field("kind", kind)?;
        s.serialize_field("state", state)?;
        s.serialize_field("rollout_percent", &rollout_percent)?;
        match flag.default_value() {
            FlagValue::Bool(b) => s.serialize_field("default", b)?,
            FlagValue::Variant(v) => s.serialize_field("default", &**v)?,
        }
        s.serialize_field("overridable", &flag.is_overridable())?;
        s.end()
    }
}

#[cfg(test)]
mod tests {
    use resilience_core::snapshot::SnapshotRegistry;

    use crate::{Flag, FlagSet, FlagStore};

    #[test]
    fn flags_after_a_replace() {
        let store = FlagStore::named(
            "checkout",
            FlagSet::builder()
                .flag(Flag::boolean("old"))
                .build()
                .unwrap(),
        )
        .unwrap();
        let registry = SnapshotRegistry::new("shop");
        registry.register(store.clone());

        let doc = registry.to_json();
        assert_eq!(doc["layers"][0]["kind"], "flags");
        assert_eq!(doc["layers"][0]["name"], "checkout");
        assert_eq!(doc["layers"][0]["state"]["version"], 1);
        assert_eq!(doc["layers"][0]["state"]["flags"][0]["name"], "old");
        assert_eq!(doc["layers"][0]["state"]["flags"][0]["state"], "on");

        store.replace(
            FlagSet::builder()
                .flag(Flag::variant("color", "blue", "green").enabled(false))
                .flag(Flag::boolean("beta").rollout(25.0).overridable(true))
                .build()
                .unwrap(),
        );
        let doc = registry.to_json();
        let state = &doc["layers"][0]["state"];
        assert_eq!(state["version"], 2);
        assert_eq!(state["count"], 2);
        let beta = &state["flags"][0];
        assert_eq!(beta["name"], "beta");
        assert_eq!(beta["kind"], "boolean");
        assert_eq!(beta["state"], "percentage");
        assert_eq!(beta["rollout_percent"], 25.0);
        assert_eq!(beta["default"], false);
        assert_eq!(beta["overridable"], true);
        let color = &state["flags"][1];
        assert_eq!(color["name"], "color");
        assert_eq!(color["kind"], "variant");
        assert_eq!(color["state"], "off");
        assert!(color["rollout_percent"].is_null());
        assert_eq!(color["default"], "blue");
        assert_eq!(color["overridable"], false);
    }
}
