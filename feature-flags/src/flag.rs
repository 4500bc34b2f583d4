//! Flag definitions: values, rules and their validation.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use resilience_core::ConfigError;

use crate::eval::{ErrorCode, FlagContext, Reason};
use crate::hash::{BUCKETS, NameBuildHasher, bucket_with, prefix};

/// A value a flag serves: a boolean, or a string variant.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FlagValue {
    /// A boolean flag's value.
    Bool(bool),
    /// A variant flag's value.
    Variant(Arc<str>),
}

/// Whether a flag is a boolean or a string variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlagKind {
    /// `true` / `false`.
    Boolean,
    /// One of a few named strings.
    Variant,
}

/// A request attribute a rule matches.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Condition {
    /// The request has this header with exactly this value.
    Header(HeaderName, HeaderValue),
    /// The request path starts with this prefix.
    PathPrefix(Arc<str>),
}

/// One runtime flag, validated; see [`Flag::boolean`] and [`Flag::variant`].
///
/// Evaluation order: switched off → default ([`Reason::Disabled`]); key in
/// the deny list → default, in the allow list → the `on` value; the first
/// matching rule → its value ([`Reason::TargetingMatch`]); a percentage
/// rollout → the `on` value for keys whose [bucket](crate::hash) is below
/// the threshold, else the default ([`Reason::Split`]); otherwise the `on`
/// value for everyone ([`Reason::Static`]). So an enabled flag with no
/// rollout, rule or list serves its `on` value to everyone, a variant flag
/// as a boolean one (see [`Flag::variant`]).
#[derive(Clone, Debug)]
pub struct Flag {
    name: Arc<str>,
    hash_prefix: u64,
    enabled: bool,
    default: FlagValue,
    on: FlagValue,
    rollout: Option<u32>,
    allow: HashSet<Box<str>, NameBuildHasher>,
    deny: HashSet<Box<str>, NameBuildHasher>,
    rules: Vec<(Condition, FlagValue)>,
    overridable: bool,
}

/// Builds a [`Flag`]; see [`Flag::boolean`] and [`Flag::variant`].
#[derive(Clone, Debug)]
#[must_use]
pub struct FlagBuilder {
    flag: Flag,
    error: Option<ConfigError>,
    rollout_percent: Option<f64>,
}

// === impl FlagValue ===

impl FlagValue {
    /// The kind of this value.
    pub fn kind(&self) -> FlagKind {
        match self {
            FlagValue::Bool(_) => FlagKind::Boolean,
            FlagValue::Variant(_) => FlagKind::Variant,
        }
    }

    /// The value as it is written in an override header (`1`, `0`, or the
    /// variant).
    pub fn as_header_str(&self) -> &str {
        match self {
            FlagValue::Bool(true) => "1",
            FlagValue::Bool(false) => "0",
            FlagValue::Variant(v) => v,
        }
    }
}

impl From<bool> for FlagValue {
    fn from(v: bool) -> Self {
        FlagValue::Bool(v)
    }
}

impl From<&str> for FlagValue {
    fn from(v: &str) -> Self {
        FlagValue::Variant(Arc::from(v))
    }
}

impl fmt::Display for FlagValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlagValue::Bool(b) => write!(f, "{b}"),
            FlagValue::Variant(v) => f.write_str(v),
        }
    }
}

// === impl Condition ===

impl Condition {
    fn matches(&self, ctx: &FlagContext) -> bool {
        match self {
            Condition::Header(name, value) => ctx.headers().get(name) == Some(value),
            Condition::PathPrefix(prefix) => ctx.path().is_some_and(|p| p.starts_with(&**prefix)),
        }
    }
}

// === impl Flag ===

impl Flag {
    /// Longest variant string accepted: `64` bytes.
    pub const MAX_VARIANT_LEN: usize = 64;

    /// A boolean flag, on for everyone until rules say otherwise; its default
    /// (served when off, denied, outside the rollout or on error) is `false`.
    pub fn boolean(name: impl Into<Arc<str>>) -> FlagBuilder {
        FlagBuilder::new(name.into(), FlagValue::Bool(false), FlagValue::Bool(true))
    }

    /// A string-variant flag serving `on` (e.g. `"treatment"`) when on and
    /// `default` (e.g. `"control"`) when off, denied, outside the rollout or
    /// on error.
    ///
    /// Like a [boolean](Self::boolean) flag, a variant flag is on for
    /// everyone until rules say otherwise: **with no rollout, no rule and no
    /// list, it serves `on` (the second variant) to every request**
    /// ([`Reason::Static`]), not `default`. To start an experiment with
    /// everyone on `default`, give it `.rollout(0.0)` and raise the share
    /// (or switch it off with `.enabled(false)`); a flag file does the same
    /// with `rollout = 0.0` or `enabled = false`.
    ///
    /// ```
    /// use resilience_flags::{Flag, FlagContext, FlagSet, FlagStore};
    /// let store = FlagStore::new(FlagSet::builder()
    ///     .flag(Flag::variant("color", "blue", "green")) // on for everyone
    ///     .flag(Flag::variant("layout", "old", "new").rollout(0.0)) // nobody yet
    ///     .build()?);
    /// let ctx = FlagContext::new().with_key("user-1");
    /// assert_eq!(&*store.evaluate_variant("color", &ctx, "blue").into_value(), "green");
    /// assert_eq!(&*store.evaluate_variant("layout", &ctx, "old").into_value(), "old");
    /// # Ok::<_, resilience_core::ConfigError>(())
    /// ```
    pub fn variant(name: impl Into<Arc<str>>, default: &str, on: &str) -> FlagBuilder {
        FlagBuilder::new(name.into(), default.into(), on.into())
    }

    /// The flag's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Boolean or variant.
    pub fn kind(&self) -> FlagKind {
        self.default.kind()
    }

    /// Whether the flag is switched on.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Whether trusted requests may override it with a header.
    pub fn is_overridable(&self) -> bool {
        self.overridable
    }

    /// The value served when off, denied, outside the rollout or on error.
    pub fn default_value(&self) -> &FlagValue {
        &self.default
    }

    /// The rollout threshold in buckets out of [`BUCKETS`], if any.
    pub fn rollout_buckets(&self) -> Option<u32> {
        self.rollout
    }

    pub(crate) fn has_header_rules(&self) -> bool {
        self.rules
            .iter()
            .any(|(c, _)| matches!(c, Condition::Header(..)))
    }

    /// Evaluates the flag. Never panics; allocation-free.
    pub(crate) fn evaluate<'a>(
        &'a self,
        ctx: &FlagContext,
        overridden: Option<&'a FlagValue>,
    ) -> (&'a FlagValue, Reason) {
        if let Some(v) = overridden {
            if self.overridable && v.kind() == self.kind() {
                return (v, Reason::Override);
            }
        }
        if !self.enabled {
            return (&self.default, Reason::Disabled);
        }
        let key = ctx.key();
        if let Some(key) = key {
            if !self.deny.is_empty() && self.deny.contains(key) {
                return (&self.default, Reason::TargetingMatch);
            }
            if !self.allow.is_empty() && self.allow.contains(key) {
                return (&self.on, Reason::TargetingMatch);
            }
        }
        for (cond, value) in &self.rules {
            if cond.matches(ctx) {
                return (value, Reason::TargetingMatch);
            }
        }
        match (self.rollout, key) {
            (None, _) => (&self.on, Reason::Static),
            (Some(threshold), Some(key)) => {
                if bucket_with(self.hash_prefix, key) < threshold {
                    (&self.on, Reason::Split)
                } else {
                    (&self.default, Reason::Split)
                }
            }
            (Some(_), None) => (&self.default, Reason::Error(ErrorCode::TargetingKeyMissing)),
        }
    }

    /// Parses an override header value: `1|true|on` / `0|false|off` for a
    /// boolean flag, one of the flag's own variants for a variant flag.
    /// Anything else is `None` (ignored).
    pub fn parse_override(&self, raw: &[u8]) -> Option<FlagValue> {
        match self.kind() {
            FlagKind::Boolean => match raw {
                b"1" | b"true" | b"on" => Some(FlagValue::Bool(true)),
                b"0" | b"false" | b"off" => Some(FlagValue::Bool(false)),
                _ => None,
            },
            FlagKind::Variant => std::iter::once(&self.default)
                .chain(std::iter::once(&self.on))
                .chain(self.rules.iter().map(|(_, v)| v))
                .find(|v| v.as_header_str().as_bytes() == raw)
                .cloned(),
        }
    }
}

// === impl FlagBuilder ===

impl FlagBuilder {
    fn new(name: Arc<str>, default: FlagValue, on: FlagValue) -> Self {
        Self {
            flag: Flag {
                hash_prefix: prefix(&name),
                name,
                enabled: true,
                default,
                on,
                rollout: None,
                allow: HashSet::default(),
                deny: HashSet::default(),
                rules: Vec::new(),
                overridable: false,
            },
            error: None,
            rollout_percent: None,
        }
    }

    fn fail(&mut self, reason: String) {
        if self.error.is_none() {
            self.error = Some(ConfigError::new("flags", reason));
        }
    }

    /// Switches the flag on or off (default on). Off serves the default to
    /// everyone, whatever the rules say (a kill switch).
    pub fn enabled(mut self, on: bool) -> Self {
        self.flag.enabled = on;
        self
    }

    /// Serves the `on` value to `percent` % of targeting keys (0 to 100,
    /// resolution 0.001), chosen by the stable [hash](crate::hash).
    pub fn rollout(mut self, percent: f64) -> Self {
        self.rollout_percent = Some(percent);
        self
    }

    /// Keys that always get the `on` value (unless denied).
    pub fn allow<I, K>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<Box<str>>,
    {
        self.flag.allow.extend(keys.into_iter().map(Into::into));
        self
    }

    /// Keys that always get the default.
    pub fn deny<I, K>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<Box<str>>,
    {
        self.flag.deny.extend(keys.into_iter().map(Into::into));
        self
    }

    /// Serves `value` to requests carrying header `name: value`.
    pub fn when_header(mut self, name: &str, value: &str, serve: impl Into<FlagValue>) -> Self {
        match (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            (Ok(n), Ok(v)) => self
                .flag
                .rules
                .push((Condition::Header(n, v), serve.into())),
            _ => {
                let reason = format!("{}: invalid header rule {name:?}", self.flag.name);
                self.fail(reason);
            }
        }
        self
    }

    /// Serves `value` to requests whose path starts with `prefix`.
    pub fn when_path_prefix(mut self, prefix: &str, serve: impl Into<FlagValue>) -> Self {
        self.flag
            .rules
            .push((Condition::PathPrefix(Arc::from(prefix)), serve.into()));
        self
    }

    /// Lets trusted requests override the flag with an `x-flag-<name>`
    /// header (default `false`: protected).
    pub fn overridable(mut self, yes: bool) -> Self {
        self.flag.overridable = yes;
        self
    }

    /// Validates the flag.
    ///
    /// # Errors
    /// - the name is not 1 to 64 characters of `[a-z0-9_.-]` (it becomes a
    ///   header name)
    /// - the rollout is not a number within 0 to 100
    /// - a rule serves a value of the other kind
    /// - a variant is empty, longer than [`Flag::MAX_VARIANT_LEN`], or not
    ///   visible ASCII (it must fit in a header)
    /// - a header rule has an invalid header name or value
    pub fn build(mut self) -> Result<Flag, ConfigError> {
        let name = self.flag.name.clone();
        if let Err(e) = resilience_core::config::validate_name("flags", &name) {
            return Err(ConfigError::new(
                "flags",
                format!("{name:?}: {}", e.reason()),
            ));
        }
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            self.fail(format!("{name}: name must be lowercase"));
        }
        if let Some(p) = self.rollout_percent {
            if p.is_finite() && (0.0..=100.0).contains(&p) {
                // In 0..=100_000 after the range check.
                self.flag.rollout = Some((p * f64::from(BUCKETS) / 100.0).round() as u32);
            } else {
                self.fail(format!("{name}: rollout must be within 0 to 100"));
            }
        }
        let kind = self.flag.kind();
        let values = std::iter::once(&self.flag.on).chain(self.flag.rules.iter().map(|(_, v)| v));
        for v in values {
            if v.kind() != kind {
                let reason = format!("{name}: every value must be the same kind as the default");
                self.fail(reason);
                break;
            }
        }
        let variants = std::iter::once(&self.flag.default)
            .chain(std::iter::once(&self.flag.on))
            .chain(self.flag.rules.iter().map(|(_, v)| v));
        for v in variants {
            if let FlagValue::Variant(s) = v {
                let ok = !s.is_empty()
                    && s.len() <= Flag::MAX_VARIANT_LEN
                    && s.bytes().all(|b| b.is_ascii_graphic());
                if !ok {
                    let reason =
                        format!("{name}: a variant must be 1 to 64 visible ASCII characters");
                    self.fail(reason);
                    break;
                }
            }
        }
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.flag),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(key: &str) -> FlagContext {
        FlagContext::new().with_key(key)
    }

    #[test]
    fn evaluation_order() {
        let flag = Flag::boolean("f")
            .rollout(0.0)
            .allow(["alice", "mallory"])
            .deny(["mallory"])
            .when_header("x-beta", "1", true)
            .when_path_prefix("/beta", true)
            .build()
            .unwrap();
        assert_eq!(
            flag.evaluate(&ctx("bob"), None),
            (&false.into(), Reason::Split)
        );
        assert_eq!(
            flag.evaluate(&ctx("alice"), None),
            (&true.into(), Reason::TargetingMatch)
        );
        assert_eq!(
            flag.evaluate(&ctx("mallory"), None),
            (&false.into(), Reason::TargetingMatch)
        );
        let beta = ctx("bob").with_header(
            HeaderName::from_static("x-beta"),
            HeaderValue::from_static("1"),
        );
        assert_eq!(flag.evaluate(&beta, None).1, Reason::TargetingMatch);
        let wrong = ctx("bob").with_header(
            HeaderName::from_static("x-beta"),
            HeaderValue::from_static("2"),
        );
        assert_eq!(flag.evaluate(&wrong, None).1, Reason::Split);
        assert_eq!(
            flag.evaluate(&ctx("bob").with_path("/beta/x"), None).0,
            &true.into()
        );
        assert_eq!(
            flag.evaluate(&ctx("bob").with_path("/alpha"), None).0,
            &false.into()
        );
        assert_eq!(
            flag.evaluate(&FlagContext::new(), None).1,
            Reason::Error(ErrorCode::TargetingKeyMissing)
        );
    }

    #[test]
    fn disabled_wins_over_everything_but_overrides() {
        let flag = Flag::boolean("f")
            .enabled(false)
            .allow(["alice"])
            .build()
            .unwrap();
        assert_eq!(
            flag.evaluate(&ctx("alice"), None),
            (&false.into(), Reason::Disabled)
        );
        let on = FlagValue::Bool(true);
        // Not overridable: the override is ignored.
        assert_eq!(flag.evaluate(&ctx("alice"), Some(&on)).1, Reason::Disabled);
        let flag = Flag::boolean("f")
            .enabled(false)
            .overridable(true)
            .build()
            .unwrap();
        assert_eq!(flag.evaluate(&ctx("a"), Some(&on)), (&on, Reason::Override));
        // An override of the wrong kind is ignored.
        let v = FlagValue::from("x");
        assert_eq!(flag.evaluate(&ctx("a"), Some(&v)).1, Reason::Disabled);
    }

    #[test]
    fn paths_must_be_paths() {
        assert_eq!(FlagContext::new().with_path("/a?b=1").path(), Some("/a"));
        assert_eq!(FlagContext::new().with_path("abc").path(), None);
        assert_eq!(FlagContext::new().with_path("/a b").path(), None);
        let flag = Flag::boolean("f")
            .rollout(0.0)
            .when_path_prefix("/", true)
            .build()
            .unwrap();
        assert_eq!(
            flag.evaluate(&FlagContext::new().with_key("k"), None).1,
            Reason::Split
        );
    }

    #[test]
    fn static_on() {
        let flag = Flag::variant("color", "blue", "green").build().unwrap();
        assert_eq!(
            flag.evaluate(&FlagContext::new(), None),
            (&"green".into(), Reason::Static)
        );
    }

    #[test]
    fn parses_overrides() {
        let b = Flag::boolean("b").build().unwrap();
        assert_eq!(b.parse_override(b"1"), Some(true.into()));
        assert_eq!(b.parse_override(b"off"), Some(false.into()));
        assert_eq!(b.parse_override(b"yes"), None);
        assert_eq!(b.parse_override(b""), None);
        let v = Flag::variant("v", "blue", "green")
            .when_path_prefix("/r", "red")
            .build()
            .unwrap();
        assert_eq!(v.parse_override(b"red"), Some("red".into()));
        assert_eq!(v.parse_override(b"green"), Some("green".into()));
        assert_eq!(v.parse_override(b"purple"), None);
    }

    #[test]
    fn rejects_invalid_flags() {
        let err = |b: FlagBuilder| b.build().unwrap_err().to_string();
        assert!(err(Flag::boolean("")).contains("1 to 64"));
        assert!(err(Flag::boolean("New")).contains("lowercase"));
        assert!(err(Flag::boolean("a b")).contains("may only contain"));
        assert!(err(Flag::boolean("f").rollout(100.5)).contains("rollout"));
        assert!(err(Flag::boolean("f").rollout(-1.0)).contains("rollout"));
        assert!(err(Flag::boolean("f").rollout(f64::NAN)).contains("rollout"));
        assert!(err(Flag::boolean("f").when_path_prefix("/", "x")).contains("same kind"));
        assert!(err(Flag::variant("f", "a", "")).contains("variant"));
        assert!(err(Flag::variant("f", "a", "b c")).contains("variant"));
        assert!(err(Flag::boolean("f").when_header("bad header", "1", true)).contains("header"));
        assert_eq!(
            Flag::boolean("f")
                .rollout(20.0)
                .build()
                .unwrap()
                .rollout_buckets(),
            Some(20_000)
        );
        assert_eq!(
            Flag::boolean("f")
                .rollout(0.001)
                .build()
                .unwrap()
                .rollout_buckets(),
            Some(1)
        );
    }
}
