//! Evaluation context and results.

use std::fmt;

use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Uri};

/// What a flag is evaluated against: the targeting key and the request
/// attributes that rules can match (headers, path).
///
/// [`FlagsLayer`](crate::FlagsLayer) builds one per request; build one by
/// hand for code outside a request (jobs, tests).
///
/// ```
/// use resilience_flags::FlagContext;
/// let ctx = FlagContext::new().with_key("user-42").with_path("/beta/cart");
/// assert_eq!(ctx.key(), Some("user-42"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct FlagContext {
    key: Option<Box<str>>,
    path: Option<PathAndQuery>,
    headers: HeaderMap,
}

/// Why a flag evaluated to its value (after OpenFeature's resolution
/// reasons).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The flag is on for everyone: no rule or rollout applied.
    Static,
    /// An allow/deny list or an attribute rule matched.
    TargetingMatch,
    /// A percentage rollout decided, by the key's bucket.
    Split,
    /// The flag is switched off: its default was served.
    Disabled,
    /// A trusted request overrode the flag with a header.
    Override,
    /// Evaluation failed; the default was served.
    Error(ErrorCode),
}

/// Why an evaluation failed (it still returns the default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// No flag by that name in the current set.
    FlagNotFound,
    /// The flag exists but holds the other type (boolean vs variant).
    TypeMismatch,
    /// The flag has a percentage rollout and the context has no key.
    TargetingKeyMissing,
}

/// The result of evaluating a flag: its value and why (OpenFeature's
/// resolution details). Evaluation never fails: on error `value` is the
/// default and [`reason`](Self::reason) says what went wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlagEvaluation<T> {
    value: T,
    reason: Reason,
}

// === impl FlagContext ===

impl FlagContext {
    /// An empty context: no key, no path, no headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the targeting key (a user, tenant or session id).
    #[must_use]
    pub fn with_key(mut self, key: impl Into<Box<str>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the request path that `path_prefix` rules match. A string that is
    /// not a valid URI path (and query) is ignored.
    #[must_use]
    pub fn with_path(mut self, path: &str) -> Self {
        self.path = path
            .parse::<PathAndQuery>()
            .ok()
            .filter(|p| p.path().starts_with('/'));
        self
    }

    /// Adds a header that `header` rules match.
    #[must_use]
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    pub(crate) fn from_parts(key: Option<Box<str>>, uri: &Uri, headers: HeaderMap) -> Self {
        Self {
            key,
            path: uri.path_and_query().cloned(),
            headers,
        }
    }

    /// The targeting key, if any.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The request path, if known.
    pub fn path(&self) -> Option<&str> {
        self.path.as_ref().map(PathAndQuery::path)
    }

    /// The headers rules can match.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }
}

// === impl Reason ===

impl Reason {
    /// The reason as a bounded, lowercase label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Static => "static",
            Reason::TargetingMatch => "targeting_match",
            Reason::Split => "split",
            Reason::Disabled => "disabled",
            Reason::Override => "override",
            Reason::Error(_) => "error",
        }
    }

    #[cfg(feature = "metrics")]
    pub(crate) const fn index(self) -> usize {
        match self {
            Reason::Static => 0,
            Reason::TargetingMatch => 1,
            Reason::Split => 2,
            Reason::Disabled => 3,
            Reason::Override => 4,
            Reason::Error(_) => 5,
        }
    }

    #[cfg(feature = "metrics")]
    pub(crate) const ALL: [Reason; 6] = [
        Reason::Static,
        Reason::TargetingMatch,
        Reason::Split,
        Reason::Disabled,
        Reason::Override,
        Reason::Error(ErrorCode::FlagNotFound),
    ];
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Error(code) => write!(f, "error: {code}"),
            other => f.write_str(other.as_str()),
        }
    }
}

// === impl ErrorCode ===

impl ErrorCode {
    /// The code as a lowercase string.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::FlagNotFound => "flag_not_found",
            ErrorCode::TypeMismatch => "type_mismatch",
            ErrorCode::TargetingKeyMissing => "targeting_key_missing",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl FlagEvaluation ===

impl<T> FlagEvaluation<T> {
    pub(crate) fn new(value: T, reason: Reason) -> Self {
        Self { value, reason }
    }

    /// The value (the default when evaluation failed).
    pub fn value(&self) -> &T {
        &self.value
    }

    /// Consumes the evaluation, returning the value.
    pub fn into_value(self) -> T {
        self.value
    }

    /// Why the flag has this value.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// The error, if evaluation failed and the default was served.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self.reason {
            Reason::Error(code) => Some(code),
            _ => None,
        }
    }
}

impl FlagEvaluation<bool> {
    /// The variant served: `"on"` or `"off"`.
    pub fn variant(&self) -> &'static str {
        if self.value { "on" } else { "off" }
    }
}
