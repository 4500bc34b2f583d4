//! Configuration of the [`FlagsLayer`](crate::FlagsLayer).

use std::fmt;
use std::sync::Arc;

use http::HeaderName;
use http::request::Parts;
use resilience_core::ConfigError;

type KeyFn = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;
type TrustFn = Arc<dyn Fn(&Parts) -> bool + Send + Sync>;

/// Validated configuration of a [`FlagsLayer`](crate::FlagsLayer): where the
/// targeting key comes from and which requests may override flags.
///
/// ```
/// use resilience_flags::FlagsConfig;
/// let config = FlagsConfig::builder()
///     .targeting_key_header("x-tenant-id")
///     // Only staff traffic may switch overridable flags with x-flag-* headers.
///     .trust_overrides(|req| req.headers.get("x-staff-token").is_some_and(|t| t == "s3cret"))
///     .build()?;
/// # Ok::<_, resilience_core::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct FlagsConfig {
    pub(crate) key_header: HeaderName,
    pub(crate) key_fn: Option<KeyFn>,
    pub(crate) trust: Option<TrustFn>,
    pub(crate) max_overrides: usize,
    pub(crate) propagate: bool,
}

/// Builds a [`FlagsConfig`]; see [`FlagsConfig::builder`].
#[derive(Clone)]
#[must_use]
pub struct FlagsConfigBuilder {
    key_header: String,
    key_fn: Option<KeyFn>,
    trust: Option<TrustFn>,
    max_overrides: usize,
    propagate: bool,
}

// === impl FlagsConfig ===

impl FlagsConfig {
    /// The header holding the targeting key: `x-user-id`.
    pub const DEFAULT_TARGETING_KEY_HEADER: &'static str = "x-user-id";
    /// Most overrides taken from one request: `16`; more are ignored.
    pub const DEFAULT_MAX_OVERRIDES: usize = 16;
    /// Longest targeting key taken from a header: `256` bytes; a longer one
    /// is ignored.
    pub const MAX_KEY_LEN: usize = 256;
    /// Whether accepted overrides are forwarded downstream: `true`.
    pub const DEFAULT_PROPAGATE_OVERRIDES: bool = true;
    /// The prefix of override headers: `x-flag-` (then the flag's name).
    pub const OVERRIDE_PREFIX: &'static str = "x-flag-";

    /// A builder with the defaults: key from `x-user-id`, no request
    /// trusted to override flags.
    pub fn builder() -> FlagsConfigBuilder {
        FlagsConfigBuilder {
            key_header: Self::DEFAULT_TARGETING_KEY_HEADER.to_owned(),
            key_fn: None,
            trust: None,
            max_overrides: Self::DEFAULT_MAX_OVERRIDES,
            propagate: Self::DEFAULT_PROPAGATE_OVERRIDES,
        }
    }

    pub(crate) fn key(&self, parts: &Parts) -> Option<Box<str>> {
        if let Some(f) = &self.key_fn {
            return f(parts).map(String::into_boxed_str);
        }
        let value = parts.headers.get(&self.key_header)?;
        let bytes = value.as_bytes();
        if bytes.is_empty()
            || bytes.len() > Self::MAX_KEY_LEN
            || !bytes.iter().all(u8::is_ascii_graphic)
        {
            tracing::debug!("ignoring an invalid targeting key header");
            return None;
        }
        // Visible ASCII is valid UTF-8.
        value.to_str().ok().map(Box::from)
    }

    pub(crate) fn trusted(&self, parts: &Parts) -> bool {
        self.trust.as_ref().is_some_and(|f| f(parts))
    }
}

impl Default for FlagsConfig {
    fn default() -> Self {
        Self::builder().build().expect("defaults are valid")
    }
}

impl fmt::Debug for FlagsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlagsConfig")
            .field("key_header", &self.key_header)
            .field("key_fn", &self.key_fn.is_some())
            .field("trust", &self.trust.is_some())
            .field("max_overrides", &self.max_overrides)
            .field("propagate", &self.propagate)
            .finish()
    }
}

// === impl FlagsConfigBuilder ===

impl FlagsConfigBuilder {
    /// Takes the targeting key from this header (default
    /// [`FlagsConfig::DEFAULT_TARGETING_KEY_HEADER`]). Values that are empty,
    /// longer than [`FlagsConfig::MAX_KEY_LEN`] or not visible ASCII are
    /// ignored.
    pub fn targeting_key_header(mut self, name: &str) -> Self {
        self.key_header = name.to_owned();
        self
    }

    /// Computes the targeting key from the request instead (a claim of an
    /// authenticated principal in the extensions, a cookie, ...).
    pub fn targeting_key_fn<F>(mut self, f: F) -> Self
    where
        F: Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    {
        self.key_fn = Some(Arc::new(f));
        self
    }

    /// Decides which requests may override flags with `x-flag-<name>`
    /// headers (default: none). Only flags declared
    /// [overridable](crate::FlagBuilder::overridable) are ever overridden.
    pub fn trust_overrides<F>(mut self, f: F) -> Self
    where
        F: Fn(&Parts) -> bool + Send + Sync + 'static,
    {
        self.trust = Some(Arc::new(f));
        self
    }

    /// Most overrides taken from one request (default
    /// [`FlagsConfig::DEFAULT_MAX_OVERRIDES`]).
    pub fn max_overrides(mut self, n: usize) -> Self {
        self.max_overrides = n;
        self
    }

    /// Whether accepted overrides are forwarded on outgoing calls through
    /// the correlation crate's `PropagateContextLayer` (default
    /// [`FlagsConfig::DEFAULT_PROPAGATE_OVERRIDES`]).
    pub fn propagate_overrides(mut self, yes: bool) -> Self {
        self.propagate = yes;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    /// - `targeting_key_header` is not a valid header name
    /// - `max_overrides` is more than 64
    pub fn build(self) -> Result<FlagsConfig, ConfigError> {
        let key_header = HeaderName::try_from(self.key_header.as_str())
            .map_err(|_| ConfigError::new("targeting_key_header", "must be a valid header name"))?;
        if self.max_overrides > 64 {
            return Err(ConfigError::new("max_overrides", "must be at most 64"));
        }
        Ok(FlagsConfig {
            key_header,
            key_fn: self.key_fn,
            trust: self.trust,
            max_overrides: self.max_overrides,
            propagate: self.propagate,
        })
    }
}

impl fmt::Debug for FlagsConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlagsConfigBuilder")
            .field("key_header", &self.key_header)
            .field("max_overrides", &self.max_overrides)
            .finish_non_exhaustive()
    }
}
