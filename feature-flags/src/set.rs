//! A set of flags: what a store holds and what sources produce.

use std::collections::HashMap;
use std::sync::Arc;

use resilience_core::ConfigError;

use crate::flag::{Flag, FlagBuilder};
use crate::hash::NameBuildHasher;

/// An immutable set of validated flags, looked up by name.
///
/// Built in code with [`FlagSet::builder`] or, with the `file` feature,
/// parsed from TOML or JSON ([`FlagSet::from_toml`], [`FlagSet::from_json`]):
///
/// ```toml
/// [flags.new-checkout]
/// rollout = 20.0             # percent of targeting keys
/// allow = ["alice"]          # always on
/// deny = ["mallory"]         # always off
/// overridable = true         # trusted requests may send x-flag-new-checkout
///
/// [[flags.new-checkout.rules]]
/// header = "x-beta"
/// value = "1"
/// serve = true
///
/// [flags.checkout-color]
/// default = "blue"           # a variant flag: default and on are strings
/// on = "green"
/// enabled = false            # switched off: everyone gets "blue"
///                            # (enabled, with no rollout or rule: everyone
///                            # gets "green", the `on` value)
///
/// [[flags.checkout-color.rules]]
/// path_prefix = "/eu/"
/// serve = "red"
/// ```
#[derive(Clone, Debug, Default)]
pub struct FlagSet {
    flags: HashMap<Arc<str>, Flag, NameBuildHasher>,
    header_rules: bool,
}

/// Builds a [`FlagSet`]; see [`FlagSet::builder`].
#[derive(Debug, Default)]
#[must_use]
pub struct FlagSetBuilder {
    flags: Vec<FlagBuilder>,
}

// === impl FlagSet ===

impl FlagSet {
    /// A builder for a set defined in code.
    pub fn builder() -> FlagSetBuilder {
        FlagSetBuilder::default()
    }

    /// A set with no flags: every evaluation serves its default.
    pub fn empty() -> Self {
        Self::default()
    }

    /// A set of already built flags.
    ///
    /// # Errors
    /// - two flags have the same name
    pub fn from_flags(flags: impl IntoIterator<Item = Flag>) -> Result<Self, ConfigError> {
        let mut map = HashMap::with_hasher(NameBuildHasher::default());
        let mut header_rules = false;
        for flag in flags {
            header_rules |= flag.has_header_rules();
            let name: Arc<str> = Arc::from(flag.name());
            if map.insert(name, flag).is_some() {
                return Err(ConfigError::new("flags", "two flags have the same name"));
            }
        }
        Ok(Self {
            flags: map,
            header_rules,
        })
    }

    /// The flag called `name`.
    #[inline]
    pub fn get(&self, name: &str) -> Option<&Flag> {
        self.flags.get(name)
    }

    /// How many flags the set holds.
    pub fn len(&self) -> usize {
        self.flags.len()
    }

    /// Whether the set holds no flag.
    pub fn is_empty(&self) -> bool {
        self.flags.is_empty()
    }

    /// The flags, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Flag> {
        self.flags.values()
    }

    /// Whether some flag has a header rule (so requests' headers are kept in
    /// the evaluation context).
    pub(crate) fn has_header_rules(&self) -> bool {
        self.header_rules
    }

    /// Parses a set from TOML (the format shown above).
    ///
    /// # Errors
    /// - the text is not valid TOML of that shape, or a flag is invalid
    ///   (see [`FlagBuilder::build`])
    #[cfg(feature = "file")]
    #[cfg_attr(docsrs, doc(cfg(feature = "file")))]
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let spec: spec::SetSpec =
            toml::from_str(text).map_err(|e| ConfigError::new("flags", e.message().to_owned()))?;
        spec.into_set()
    }

    /// Parses a set from JSON (`{"flags": {"name": {...}}}`, same fields as
    /// the TOML form).
    ///
    /// # Errors
    /// - the text is not valid JSON of that shape, or a flag is invalid
    #[cfg(feature = "file")]
    #[cfg_attr(docsrs, doc(cfg(feature = "file")))]
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let spec: spec::SetSpec =
            serde_json::from_str(text).map_err(|e| ConfigError::new("flags", e.to_string()))?;
        spec.into_set()
    }
}

// === impl FlagSetBuilder ===

impl FlagSetBuilder {
    /// Adds a flag.
    pub fn flag(mut self, flag: FlagBuilder) -> Self {
        self.flags.push(flag);
        self
    }

    /// Validates every flag.
    ///
    /// # Errors
    /// - a flag is invalid (see [`FlagBuilder::build`])
    /// - two flags have the same name
    pub fn build(self) -> Result<FlagSet, ConfigError> {
        let flags = self
            .flags
            .into_iter()
            .map(FlagBuilder::build)
            .collect::<Result<Vec<_>, _>>()?;
        FlagSet::from_flags(flags)
    }
}

#[cfg(feature = "file")]
pub(crate) mod spec {
    //! The serialized form of flags (TOML, JSON, etcd values).

    use std::collections::BTreeMap;

    use resilience_core::ConfigError;
    use serde::Deserialize;

    use super::FlagSet;
    use crate::flag::{Flag, FlagValue};

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct SetSpec {
        #[serde(default)]
        flags: BTreeMap<String, FlagSpec>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct FlagSpec {
        #[serde(default = "yes")]
        enabled: bool,
        default: Option<SpecValue>,
        on: Option<SpecValue>,
        rollout: Option<f64>,
        #[serde(default)]
        allow: Vec<String>,
        #[serde(default)]
        deny: Vec<String>,
        #[serde(default)]
        rules: Vec<RuleSpec>,
        #[serde(default)]
        overridable: bool,
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum SpecValue {
        Bool(bool),
        Str(String),
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RuleSpec {
        header: Option<String>,
        value: Option<String>,
        path_prefix: Option<String>,
        serve: SpecValue,
    }

    fn yes() -> bool {
        true
    }

    impl From<SpecValue> for FlagValue {
        fn from(v: SpecValue) -> Self {
            match v {
                SpecValue::Bool(b) => FlagValue::Bool(b),
                SpecValue::Str(s) => FlagValue::Variant(s.into()),
            }
        }
    }

    impl SetSpec {
        pub(crate) fn into_set(self) -> Result<FlagSet, ConfigError> {
            let flags = self
                .flags
                .into_iter()
                .map(|(name, spec)| spec.into_flag(&name))
                .collect::<Result<Vec<_>, _>>()?;
            FlagSet::from_flags(flags)
        }
    }

    impl FlagSpec {
        pub(crate) fn into_flag(self, name: &str) -> Result<Flag, ConfigError> {
            let mut b = match (self.default, self.on) {
                (None | Some(SpecValue::Bool(false)), None | Some(SpecValue::Bool(true))) => {
                    Flag::boolean(name)
                }
                (Some(SpecValue::Str(d)), Some(SpecValue::Str(on))) => Flag::variant(name, &d, &on),
                (Some(SpecValue::Str(_)), None) => {
                    return Err(ConfigError::new(
                        "flags",
                        format!("{name}: a variant flag needs `on`"),
                    ));
                }
                _ => {
                    return Err(ConfigError::new(
                        "flags",
                        format!(
                            "{name}: a boolean flag has default = false and on = true; \
                             a variant flag has two strings"
                        ),
                    ));
                }
            };
            b = b
                .enabled(self.enabled)
                .allow(self.allow)
                .deny(self.deny)
                .overridable(self.overridable);
            if let Some(p) = self.rollout {
                b = b.rollout(p);
            }
            for rule in self.rules {
                b = match (rule.header, rule.value, rule.path_prefix) {
                    (Some(h), Some(v), None) => b.when_header(&h, &v, FlagValue::from(rule.serve)),
                    (None, None, Some(p)) => b.when_path_prefix(&p, FlagValue::from(rule.serve)),
                    _ => {
                        return Err(ConfigError::new(
                            "flags",
                            format!("{name}: a rule has `header` and `value`, or `path_prefix`"),
                        ));
                    }
                };
            }
            b.build()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_duplicates() {
        let err = FlagSet::builder()
            .flag(Flag::boolean("a"))
            .flag(Flag::boolean("a"))
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("same name"));
        assert!(FlagSet::builder().flag(Flag::boolean("A")).build().is_err());
    }

    #[cfg(feature = "file")]
    #[test]
    fn parses_toml_and_json() {
        use crate::flag::FlagValue;
        let set = FlagSet::from_toml(
            r#"
            [flags.new-checkout]
            rollout = 20.0
            allow = ["alice"]
            overridable = true
            [[flags.new-checkout.rules]]
            header = "x-beta"
            value = "1"
            serve = true
            [flags.color]
            default = "blue"
            on = "green"
            enabled = false
            [[flags.color.rules]]
            path_prefix = "/eu/"
            serve = "red"
            "#,
        )
        .unwrap();
        assert_eq!(set.len(), 2);
        assert!(set.has_header_rules());
        let f = set.get("new-checkout").unwrap();
        assert_eq!(f.rollout_buckets(), Some(20_000));
        assert!(f.is_overridable());
        let c = set.get("color").unwrap();
        assert!(!c.is_enabled());
        assert_eq!(c.parse_override(b"red"), Some(FlagValue::from("red")));

        let json = FlagSet::from_json(r#"{"flags": {"a": {"enabled": false}}}"#).unwrap();
        assert!(!json.get("a").unwrap().is_enabled());
        assert!(FlagSet::from_json("{}").unwrap().is_empty());
    }

    #[cfg(feature = "file")]
    #[test]
    fn rejects_bad_files() {
        for bad in [
            "flags = 3",
            "[flags.a]\nrollout = 101",
            "[flags.a]\nunknown = 1",
            "[flags.a]\ndefault = \"x\"",
            "[flags.a]\ndefault = true",
            "[flags.a]\ndefault = \"x\"\non = true",
            "[flags.A]",
            "[[flags.a.rules]]\nheader = \"x\"\nserve = true",
            "[[flags.a.rules]]\npath_prefix = \"/\"\nheader = \"x\"\nvalue = \"1\"\nserve = true",
            "not toml at all [",
        ] {
            assert!(FlagSet::from_toml(bad).is_err(), "{bad}");
        }
        assert!(FlagSet::from_json("{\"flags\": ").is_err());
    }
}
